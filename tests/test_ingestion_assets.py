"""Ingestion assets materialised for real: DuckDB file, Dagster instance, blocking contracts, atomic swap."""

import gzip
import json

import dagster as dg
import duckdb
import pytest

from assets.ingestion import ingest_source, interaction_splits
from digr_dagster.resources.warehouse import Warehouse


def _materialize(instance, run_config=None, selection=None):
    return dg.materialize(
        [ingest_source, interaction_splits],
        instance=instance,
        resources={"warehouse": Warehouse()},
        run_config=run_config or {},
        selection=selection,
        raise_on_error=False,
    )


def _tables(digr_env):
    con = duckdb.connect(str(digr_env / "warehouse.duckdb"), read_only=True)
    try:
        return {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchall()[0][0]
                for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    finally:
        con.close()


def _check_evals(result):
    return {(e.asset_check_evaluation_data.asset_key.to_user_string(),
             e.asset_check_evaluation_data.check_name): e.asset_check_evaluation_data
            for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}


@pytest.fixture
def instance(digr_env):
    with dg.DagsterInstance.get() as inst:
        yield inst


def test_demo_ingestion_and_split(instance, digr_env):
    result = _materialize(instance)
    assert result.success
    tables = _tables(digr_env)
    assert tables["items"] > 100 and tables["raw_interactions"] > 1000 and tables["interaction_splits"] > 1000
    assert not any(t.endswith("__staging") for t in tables)
    checks = _check_evals(result)
    assert {k for k, v in checks.items() if v.passed} == {
        ("items", "data_contract"), ("raw_interactions", "data_contract"), ("interaction_splits", "data_contract")}
    md = result.asset_materializations_for_node("interaction_splits")[0].metadata
    assert md["users"].value > 100 and md["k_core"].value == 5
    assert set(md["rows_per_split"].value) == {"train", "valid", "test"}
    assert md["rows_per_split"].value["test"] == md["users"].value
    assert 0 < md["density"].value < 1
    # the run is in the persistent instance: the UI would show it
    assert instance.get_run_by_id(result.run_id) is not None


def _write_amazon(folder, reviews, meta):
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / "Shop.json.gz", "wt") as f:
        for r in reviews:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    with gzip.open(folder / "meta_Shop.json.gz", "wt") as f:
        for m in meta:
            f.write(json.dumps(m) + "\n")


def test_bad_input_fails_clearly_and_keeps_previous_tables(instance, digr_env, tmp_path):
    assert _materialize(instance).success
    before = _tables(digr_env)

    bad = tmp_path / "bad"
    meta = [{"asin": f"I{i}", "title": f"thing {i}"} for i in range(3)]
    reviews = [{"reviewerID": "U1", "asin": "I0", "overall": 5.0, "unixReviewTime": 1500000000},
               "{not json at all"]
    _write_amazon(bad, reviews, meta)
    cfg = {"ops": {"ingest_source": {"config": {"kind": "amazon2018", "path": str(bad)}}}}
    result = _materialize(instance, cfg, selection=["items", "raw_interactions"])
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.event_specific_data.error)
    assert "Shop.json.gz" in message and "line 2" in message
    assert _tables(digr_env) == before


def test_contract_violation_blocks_swap_and_reports_expectation(instance, digr_env, tmp_path):
    assert _materialize(instance).success
    before = _tables(digr_env)
    bad = tmp_path / "future"
    meta = [{"asin": f"I{i}", "title": f"thing {i}"} for i in range(3)]
    reviews = [{"reviewerID": "U1", "asin": "I0", "overall": 5.0, "unixReviewTime": 1500000000},
               {"reviewerID": "U1", "asin": "I1", "overall": 4.0, "unixReviewTime": 4102444800}]  # year 2100
    _write_amazon(bad, reviews, meta)
    cfg = {"ops": {"ingest_source": {"config": {"kind": "amazon2018", "path": str(bad)}}}}
    result = _materialize(instance, cfg, selection=["items", "raw_interactions"])
    assert not result.success
    checks = _check_evals(result)
    failed = checks[("raw_interactions", "data_contract")]
    assert not failed.passed
    text = json.dumps({k: str(v.value) for k, v in failed.metadata.items()})
    assert "timestamp" in text and "4102444800" in text
    assert _tables(digr_env) == before
