"""Batch scoring: every user's top-K from a tiny trained champion (real MLflow store), the table's contract, the
lookup with its online fallback, the Dagster asset and `digr recommend --user --precomputed`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import mlflow
import pandas as pd
import pytest

from digr_dagster.resources.mlflow_tracking import MlflowTracking
from digr_dagster.resources.warehouse import Warehouse
from serving.batch_scoring import (
    NO_KNOWN_ITEM,
    TABLE,
    ModelRef,
    RecommendationsContractError,
    lookup_recommendations,
    recommend_user,
    resolve_model,
    score_users,
    user_histories,
    validate_user_recommendations,
    write_recommendations,
)
from serving.pyfunc_model import log_recommender
from serving.registry import promote
from tests.helpers import toy_splits
from tests.test_pyfunc_model import BEAM, TITLES, K, local_mlflow_store, train_tiny_recommender

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL = "digr-batch"


def splits_with_a_stranger() -> pd.DataFrame:
    """Six toy users (u0..u5) plus u9, whose items the model has never seen (new since it was trained)."""
    splits = toy_splits(n_users=6, length=8)
    stranger = pd.DataFrame({"user_id": "u9", "item_id": [f"new{p}" for p in range(5)], "timestamp": range(5),
                             "rating": 1.0, "position": range(5),
                             "split": ["train", "train", "train", "valid", "test"]})
    return pd.concat([splits, stranger], ignore_index=True).sample(frac=1.0, random_state=0)  # any row order


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny_recommender(tmp_path_factory.mktemp("ckpt"))


def register(ckpt: Path, user_prefix: dict, name: str) -> ModelRef:
    mv = log_recommender(ckpt, TITLES, name=name, k=K, beam_width=BEAM, metrics={"val_ndcg@10": 0.3},
                         user_prefix=user_prefix, user_interests={"u0": ["astronomy at night"]})
    assert promote(mlflow.MlflowClient(), name, mv.version).alias == "champion"
    return resolve_model(mlflow.MlflowClient(), name, "champion")


@pytest.fixture(scope="module")
def champion(trained, tmp_path_factory):
    """(ModelRef, loaded pyfunc) of MODEL@champion in a sqlite store of its own."""
    ckpt, user_prefix = trained
    with local_mlflow_store(tmp_path_factory.mktemp("mlflow")):
        ref = register(ckpt, user_prefix, MODEL)
        yield ref, mlflow.pyfunc.load_model(ref.uri)


@pytest.fixture(scope="module")
def scored(champion):
    ref, model = champion
    return score_users(model, user_histories(splits_with_a_stranger()), ref=ref, batch_users=4)


def test_histories_are_the_whole_known_history_in_position_order():
    histories = user_histories(splits_with_a_stranger())
    assert list(histories) == sorted(histories)
    assert histories["u2"] == [f"i{(2 + p) % 8}" for p in range(8)]  # train, valid and test, oldest first
    with pytest.raises(ValueError, match=r"lacks columns \['position'\]"):
        user_histories(pd.DataFrame({"user_id": ["u"], "item_id": ["i"]}))


def test_batch_scores_equal_the_pyfunc_per_user(champion, scored):
    ref, model = champion
    frame = scored.frame
    assert list(frame.columns) == ["user_id", "rank", "item_id", "score", "model_name", "model_version",
                                   "model_run_id", "exclude_seen"]
    assert scored.skipped == {"u9": NO_KNOWN_ITEM} and scored.users == 7 and scored.users_scored == 6
    assert scored.predict_calls == 2  # 6 users, 4 per call
    assert set(frame["model_version"]) == {ref.version} and set(frame["model_run_id"]) == {ref.run_id}
    histories = user_histories(splits_with_a_stranger())
    for user in [f"u{i}" for i in range(6)]:
        alone = model.predict(pd.DataFrame([{"history": histories[user], "user_id": user}])).iloc[0]
        rows = frame[frame["user_id"] == user]
        assert rows["rank"].tolist() == list(range(1, K + 1))
        assert rows["item_id"].tolist() == list(alone["item_ids"])  # exact item lists
        assert rows["score"].tolist() == pytest.approx(list(alone["scores"]), abs=1e-5)
    again = score_users(model, histories, ref=ref, batch_users=4)
    pd.testing.assert_frame_equal(again.frame, frame)  # deterministic
    seen = score_users(model, histories, ref=ref, batch_users=64, exclude_seen=True).frame
    for user, rows in seen.groupby("user_id"):
        assert not set(rows["item_id"]) & set(histories[user])
    assert validate_user_recommendations(frame, expected_users=scored.scored_users, k=K).success


def test_the_contract_refuses_bad_tables_and_keeps_the_previous_one(scored, tmp_path):
    warehouse = Warehouse(database=str(tmp_path / "w.duckdb"))
    rows, result = write_recommendations(warehouse, scored.frame, expected_users=scored.scored_users, k=K)
    assert rows == len(scored.frame) == 6 * K and result.success
    good = warehouse.read(TABLE, order_by="user_id, rank")

    duplicate = scored.frame.copy()
    duplicate.loc[1, "rank"] = 1  # u0 has two rank-1 rows (and no rank 2)
    missing = scored.frame[scored.frame["user_id"] != "u3"]
    mixed = scored.frame.copy()
    mixed.loc[mixed["user_id"] == "u5", "model_version"] = "999"
    cases = [(duplicate, r"\(user_id, rank\) appears more than once"),
             (missing, r"1 expected users are missing from the table.*u3"),
             (mixed, "the table mixes 2 \\(model, version, exclude_seen\\) combinations")]
    for bad, message in cases:
        with pytest.raises(RecommendationsContractError, match=message) as info:
            write_recommendations(warehouse, bad, expected_users=scored.scored_users, k=K)
        assert "previous table kept" in str(info.value) and not info.value.result.success
        pd.testing.assert_frame_equal(warehouse.read(TABLE, order_by="user_id, rank"), good)
    extra = validate_user_recommendations(scored.frame, expected_users=scored.scored_users[:-1], k=K)
    assert "1 users in the table were not to be scored" in extra.summary()
    no_column = validate_user_recommendations(scored.frame.drop(columns=["score"]), expected_users=[], k=K)
    assert "column 'score' is missing" in no_column.summary()


def test_lookup_serves_the_table_and_falls_back_to_online(champion, scored, tmp_path):
    ref, model = champion
    warehouse = Warehouse(database=str(tmp_path / "w.duckdb"))
    with warehouse.connect() as con:
        assert lookup_recommendations(con, "u1") is None  # no table yet
    write_recommendations(warehouse, scored.frame, expected_users=scored.scored_users, k=K)

    def no_model():
        raise AssertionError("a table hit must not load the model")

    with warehouse.connect() as con:
        hit = recommend_user(con, "u1", model=no_model, history=no_model, model_version=ref.version)
        assert hit.source == "table" and hit.model_version == ref.version
        assert hit.item_ids == scored.frame[scored.frame["user_id"] == "u1"]["item_id"].tolist()
        assert lookup_recommendations(con, "u1", k=2)["rank"].tolist() == [1, 2]
        assert lookup_recommendations(con, "u1", model_version="999") is None  # scored by another champion
        assert lookup_recommendations(con, "u1", exclude_seen=True) is None  # scored with the model's default
        newcomer = ["i3", "i4", "i5"]
        miss = recommend_user(con, "new-user", model=lambda: model, history=lambda: newcomer,
                              model_version=ref.version)
    assert miss.source == "online"
    alone = model.predict(pd.DataFrame([{"history": newcomer, "user_id": "new-user"}])).iloc[0]
    assert miss.item_ids == list(alone["item_ids"]) and miss.explanations == list(alone["explanations"])


@pytest.mark.slow  # materialises the asset and runs the CLI in a subprocess
def test_asset_writes_the_table_with_a_blocking_check_and_the_cli_serves_it(trained, digr_env):
    from assets.serving import user_recommendations
    from digr_dagster.automation import nightly_retrain_job
    from digr_dagster.definitions import defs

    nightly = defs.resolve_job_def(nightly_retrain_job.name)
    assert dg.AssetKey(TABLE) in nightly.asset_layer.executable_asset_keys  # rescored every night
    ckpt, user_prefix = trained
    warehouse = Warehouse(database=str(digr_env / "warehouse.duckdb"))  # DIGR_HOME's warehouse, as the CLI reads
    warehouse.replace({"interaction_splits": splits_with_a_stranger()})
    with local_mlflow_store(digr_env) as uri:  # the store MLFLOW_TRACKING_URI names outside this block
        ref = register(ckpt, user_prefix, "deepinterestgr")
        tracking = MlflowTracking(tracking_uri=uri, experiment_name="digr-batch-asset",
                                  artifact_location=str(digr_env / "artifacts"))
        resources = {"warehouse": warehouse, "mlflow_tracking": tracking}
        instance = dg.DagsterInstance.ephemeral()
        result = dg.materialize([user_recommendations], instance=instance, resources=resources)
        assert result.success
        meta = result.asset_materializations_for_node(TABLE)[0].metadata
        assert meta["users_scored"].value == 6 and meta["users_skipped"].value == 1
        assert meta["model_version"].value == ref.version and meta["users_per_s"].value > 0
        assert meta["dagster/row_count"].value == 6 * K and "u0" in meta["preview"].value
        checks = [e.asset_check_evaluation_data for e in result.all_events
                  if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        assert [(c.check_name, c.passed) for c in checks] == [("data_contract", True)]
        spec = next(iter(user_recommendations.check_specs))
        assert spec.blocking
        table = warehouse.read(TABLE, order_by="user_id, rank")

        failed = dg.materialize([user_recommendations], instance=instance, resources=resources, raise_on_error=False,
                                run_config={"ops": {TABLE: {"config": {"model_name": "no-such-model"}}}})
        assert not failed.success
        errors = [str(e.event_specific_data.error) for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
        assert "'no-such-model' has no version aliased 'champion'" in errors[0]
        pd.testing.assert_frame_equal(warehouse.read(TABLE, order_by="user_id, rank"), table)  # kept

    # the module's other store set MLFLOW_REGISTRY_URI in this process (mlflow.set_registry_uri): name both here
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri,
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "digr_dagster.cli", "recommend", "--user", "u2", "--precomputed"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "batch-scored table user_recommendations" in proc.stdout and f"v{ref.version}" in proc.stdout
    listed = [line.split()[1] for line in proc.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert listed == table[table["user_id"] == "u2"]["item_id"].tolist()
