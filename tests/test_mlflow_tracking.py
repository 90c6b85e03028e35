"""The MLflow resource: one closed MLflow run per asset materialisation, tagged with the Dagster run."""

import dagster as dg
import mlflow
import pytest

from digr_dagster.resources.mlflow_tracking import MlflowTracking


@dg.asset
def good_asset(context: dg.AssetExecutionContext, mlflow_res: MlflowTracking):
    with mlflow_res.asset_run(context, params={"alpha": 0.5}) as run:
        mlflow.log_metric("loss", 1.25)
        return dg.MaterializeResult(metadata=run.metadata())


@dg.asset(deps=[good_asset])
def second_asset(context: dg.AssetExecutionContext, mlflow_res: MlflowTracking):
    with mlflow_res.asset_run(context) as run:
        return dg.MaterializeResult(metadata=run.metadata())


@dg.asset
def failing_asset(context: dg.AssetExecutionContext, mlflow_res: MlflowTracking):
    with mlflow_res.asset_run(context):
        mlflow.log_metric("progress", 1)
        raise ValueError("training diverged")


def _runs(res: MlflowTracking, dagster_run_id: str):
    client = mlflow.MlflowClient(res.tracking_uri)
    exp = client.get_experiment_by_name(res.experiment_name)
    return client.search_runs([exp.experiment_id], f"tags.dagster_run_id = '{dagster_run_id}'")


def test_each_asset_gets_its_own_closed_run(digr_env):
    res = MlflowTracking()
    result = dg.materialize([good_asset, second_asset], resources={"mlflow_res": res})
    assert result.success
    runs = _runs(res, result.run_id)
    by_name = {r.info.run_name: r for r in runs}
    assert {"good_asset", "second_asset"} <= set(by_name)
    assert all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    child = by_name["good_asset"]
    assert child.data.params == {"config.alpha": "0.5"}
    assert child.data.metrics["loss"] == 1.25
    assert child.data.tags["dagster_asset_key"] == "good_asset"
    parent_id = child.data.tags["mlflow.parentRunId"]
    assert by_name["second_asset"].data.tags["mlflow.parentRunId"] == parent_id  # one parent per Dagster run
    mat = result.asset_materializations_for_node("good_asset")[0]
    assert mat.metadata["mlflow_run_id"].value == child.info.run_id
    assert mlflow.active_run() is None


def test_failed_asset_closes_its_run_as_failed(digr_env):
    res = MlflowTracking()
    result = dg.materialize([failing_asset], resources={"mlflow_res": res}, raise_on_error=False)
    assert not result.success
    runs = _runs(res, result.run_id)
    assert runs and all(r.info.status == "FAILED" for r in runs)
    assert mlflow.active_run() is None


def test_unreachable_store_fails_fast_naming_it(digr_env, tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    res = MlflowTracking(tracking_uri=f"sqlite:///{blocker}/sub/mlflow.db")
    with pytest.raises(RuntimeError, match="not_a_dir"):
        res.configure_client()
