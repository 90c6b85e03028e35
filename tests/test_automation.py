"""The nightly schedule and the new-files sensor, through Dagster's test contexts."""

import datetime as dt
import json
import os

import dagster as dg
import pytest

from digr_dagster.automation import new_files_sensor, nightly_schedule
from ingestion.loaders import UnknownSourceKind, loader_for


def test_nightly_schedule_runs_everything_but_the_ablations_at_two(digr_env):
    from digr_dagster.definitions import defs

    assert nightly_schedule.cron_schedule == "0 2 * * *"
    ctx = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 11, 26, 2, 0, tzinfo=dt.UTC))
    data = nightly_schedule.evaluate_tick(ctx)
    assert len(data.run_requests) == 1
    job = defs.resolve_job_def(nightly_schedule.job_name)
    planned = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    graph = defs.resolve_asset_graph()
    every = {k.to_user_string() for k in graph.get_all_asset_keys()}
    ablations = {k.to_user_string() for k in graph.get_all_asset_keys()
                 if graph.get(k).group_name == "ablations"}
    assert ablations == {"ablation_no_item_interests", "ablation_no_user_tokens", "ablation_no_q_term"}
    assert planned == every - ablations
    assert {"items", "interaction_splits", "tiger_baseline", "evaluation_report", "champion_model"} <= planned
    # the full study (what make demo runs) has everything
    study = defs.resolve_job_def("full_study")
    assert {k.to_user_string() for k in study.asset_layer.executable_asset_keys} == every


def _tick(cursor):
    ctx = dg.build_sensor_context(cursor=cursor)
    return ctx, new_files_sensor(ctx)


def test_sensor_requests_ingestion_for_new_and_changed_files(digr_env, tmp_path, monkeypatch):
    inbox = tmp_path / "inbox"
    monkeypatch.setenv("DIGR_INPUT_DIR", str(inbox))
    monkeypatch.setenv("DIGR_INPUT_KIND", "amazon2018")

    ctx, res = _tick(None)
    assert isinstance(res, dg.SkipReason) and "no new" in res.skip_message

    inbox.mkdir()
    (inbox / "Shop.json.gz").write_bytes(b"x")
    (inbox / "notes.txt").write_text("ignored: not a data file")
    ctx, res = _tick(None)
    assert isinstance(res, dg.RunRequest)
    cfg = res.run_config["ops"]["ingest_source"]["config"]
    assert cfg == {"kind": "amazon2018", "path": str(inbox.resolve())}
    assert res.tags["digr/changed_files"] == "Shop.json.gz"
    cursor = ctx.cursor
    assert set(json.loads(cursor)) == {"Shop.json.gz"}

    _, again = _tick(cursor)
    assert isinstance(again, dg.SkipReason)

    (inbox / "meta_Shop.json.gz").write_bytes(b"y")
    ctx2, res2 = _tick(cursor)
    assert isinstance(res2, dg.RunRequest) and res2.tags["digr/changed_files"] == "meta_Shop.json.gz"
    assert res2.run_key != res.run_key

    path = inbox / "Shop.json.gz"
    path.write_bytes(b"xx")
    os.utime(path, ns=(1, 1))
    _, res3 = _tick(ctx2.cursor)
    assert isinstance(res3, dg.RunRequest) and res3.tags["digr/changed_files"] == "Shop.json.gz"


def test_sensor_passes_a_registered_kind_and_watches_its_loaders_files(digr_env, tmp_path, monkeypatch):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    monkeypatch.setenv("DIGR_INPUT_DIR", str(inbox))
    monkeypatch.setenv("DIGR_INPUT_KIND", "recbole")
    (inbox / "Shop.json.gz").write_bytes(b"x")  # an Amazon file: not what a recbole source reads
    _, res = _tick(None)
    assert isinstance(res, dg.SkipReason)
    (inbox / "Shop.item2index").write_text("A1\t0\n")
    _, res = _tick(None)
    assert isinstance(res, dg.RunRequest) and res.tags["digr/changed_files"] == "Shop.item2index"
    assert res.run_config["ops"]["ingest_source"]["config"] == {"kind": "recbole", "path": str(inbox.resolve())}
    assert ".item2index" in loader_for("recbole").suffixes

    monkeypatch.setenv("DIGR_INPUT_KIND", "csv")
    with pytest.raises(UnknownSourceKind, match=r"DIGR_INPUT_KIND='csv'.*registered: \[.*'tabular'"):
        _tick(None)
