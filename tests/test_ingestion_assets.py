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
    assert md["users"].value > 100 and md["k_core"].value == 5 and md["dedup"].value == "user_item"
    assert md["split_settings"].value == {"k_core": 5, "dedup": "user_item", "tie_warning_share": 0.05}
    assert "max_history" not in md and 0 <= md["tied_valid_test_share"].value <= 1
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


# ---------------------------------------------------------------- settings defined once


def _launchpad_fields(asset) -> dict:
    """{name: (default, required)} of an asset's config schema, as the launchpad offers it."""
    fields = asset.op.config_schema.config_type.fields
    return {name: (f.default_value if f.default_provided else None, f.is_required) for name, f in fields.items()}


@pytest.mark.parametrize(("asset", "config_class", "library_class"), [
    ("ingest_source", "SourceConfig", "SourceSpec"), ("interaction_splits", "SplitConfig", "SplitSettings")])
def test_launchpad_config_is_the_library_settings(asset, config_class, library_class):
    """Parity per stage: every library field in the launchpad with the same default and constraints."""
    import assets.ingestion as module
    from config_schema import settings_fields
    from ingestion.sources import SourceSpec
    from ingestion.splits import SplitSettings

    library = {"SourceSpec": SourceSpec, "SplitSettings": SplitSettings}[library_class]
    config = getattr(module, config_class)
    assert config.library_classes() == (library,)
    expected = {f.name: f.default for f in settings_fields(library)}
    assert {name: (f.default_factory() if f.default_factory else f.default)
            for name, f in config.model_fields.items()} == expected
    assert {n: f.metadata for n, f in config.model_fields.items()} == {
        n: f.metadata for n, f in library.model_fields.items()}  # ge=..., the registered-kind check
    launchpad = _launchpad_fields(getattr(module, asset))
    assert set(launchpad) == set(expected) and not any(required for _, required in launchpad.values())
    # plain defaults are in the schema; a {} default is a factory the config applies when the key is left out
    assert {n: d for n, (d, _) in launchpad.items() if d is not None} == {
        n: d for n, d in expected.items() if d is not None and not isinstance(d, dict)}
    required = {"path": "."} if library is SourceSpec else {}  # the library has no demo folder of its own
    assert config(**required).build(library) == library(**required)


def test_split_settings_have_no_history_cap():
    from assets.ingestion import SplitConfig
    from ingestion.splits import SplitSettings

    assert set(SplitConfig.model_fields) == set(SplitSettings.model_fields) == {"k_core", "dedup", "tie_warning_share"}


@pytest.mark.parametrize(("op", "config", "key"), [
    ("ingest_source", {"kind": "demo", "typo": 1}, "typo"),
    ("interaction_splits", {"k_core": 1, "max_history": 50}, "max_history"),  # removed: the generator owns it
])
def test_unknown_run_config_keys_fail_the_launch_naming_the_key(instance, op, config, key):
    with pytest.raises(dg.DagsterInvalidConfigError, match=rf'unexpected config entry "{key}"'):
        _materialize(instance, {"ops": {op: {"config": config}}})


def test_launchpad_refuses_what_the_library_refuses(instance):
    from assets.ingestion import SourceConfig

    with pytest.raises(Exception, match=r"unknown source kind 'csv'; registered: \[.*'recbole'"):
        SourceConfig(kind="csv")
    with pytest.raises(Exception, match="greater than or equal to 1"):
        SourceConfig(n_users=0)
    result = _materialize(instance, {"ops": {"ingest_source": {"config": {"kind": "csv"}}}},
                          selection=["items", "raw_interactions"])
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "registered: ['amazon2018'" in str(failure.event_specific_data.error)
    with pytest.raises(dg.DagsterInvalidConfigError, match="dedup not in enum"):  # a Literal is an enum there
        _materialize(instance, {"ops": {"interaction_splits": {"config": {"dedup": "none"}}}})
    with pytest.raises(dg.DagsterInvalidConfigError, match="timestamp_format not in enum"):
        _materialize(instance, {"ops": {"ingest_source": {"config": {"timestamp_format": "days"}}}})


def test_source_without_a_path_fails_naming_it(instance):
    result = _materialize(instance, {"ops": {"ingest_source": {"config": {"kind": "amazon2018"}}}},
                          selection=["items", "raw_interactions"])
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "source kind 'amazon2018' needs `path`" in str(failure.event_specific_data.error)


def test_run_configs_in_use_still_build_their_specs(digr_env, tmp_path):
    """The demo block of deploy/demo_run_config.yaml, the README's recbole block, the sensor's amazon2018 one."""
    from pathlib import Path

    import yaml

    from assets.ingestion import SourceConfig, source_spec
    from digr_dagster import settings

    deploy = yaml.safe_load((Path(__file__).resolve().parents[1] / "deploy" / "demo_run_config.yaml").read_text())
    demo = deploy["ops"]["ingest_source"]["config"]
    assert demo == {"kind": "demo", "n_users": 300, "n_motivations": 6, "seed": 7}
    spec = source_spec(SourceConfig(**demo))
    assert (spec.kind, spec.path, spec.n_users, spec.n_motivations, spec.seed) == (
        "demo", settings.demo_data_dir(), 300, 6, 7)
    spec = source_spec(SourceConfig(kind="recbole", path=str(tmp_path), dataset="Scientific"))
    assert (spec.kind, spec.path, spec.dataset, spec.interaction_columns) == (
        "recbole", str(tmp_path), "Scientific", {})
    spec = source_spec(SourceConfig(kind="amazon2018", path=str(tmp_path)))
    assert (spec.kind, spec.dataset, spec.max_bad_lines) == ("amazon2018", None, 0)
    job = dg.Definitions(assets=[ingest_source, interaction_splits],
                         resources={"warehouse": Warehouse()}).resolve_implicit_global_asset_job_def()
    for config in (demo, {"kind": "recbole", "path": str(tmp_path), "dataset": "Scientific"},
                   {"kind": "amazon2018", "path": str(tmp_path)}):
        assert dg.validate_run_config(job, {"ops": {"ingest_source": {"config": config},
                                                    "interaction_splits": {"config": {"k_core": 1, "dedup": "event"}}}})
