"""The growth benchmark's own logic: the synthetic catalogue at a multiple of Scientific, the child-process
outcomes, and the report with its extrapolation. (The benchmark itself runs outside the test suite.)"""

import json
import math
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench import growth
from bench.synthetic_scale import MANIFEST, SCIENTIFIC, STEM, target_counts, write_scaled_dataset
from ingestion.recbole import find_recbole_files, iter_recbole_interactions, iter_recbole_items
from ingestion.splits import split_interactions

SCALE = 0.02  # 169 users, 88 items, 1,189 interactions


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("synthetic") / "a"
    write_scaled_dataset(folder, SCALE, seed=0)
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_same_seed_same_files_other_seed_other_files(tiny, tmp_path):
    write_scaled_dataset(tmp_path / "again", SCALE, seed=0)
    write_scaled_dataset(tmp_path / "other", SCALE, seed=1)
    assert _files(tmp_path / "again") == _files(tiny)
    other = _files(tmp_path / "other")
    assert other[f"{STEM}.train.inter"] != _files(tiny)[f"{STEM}.train.inter"]


def test_counts_are_the_scale_times_scientific(tiny):
    manifest = json.loads((tiny / MANIFEST).read_text())
    target = {k: round(v * SCALE) for k, v in SCIENTIFIC.items()}
    assert target == {"users": 169, "items": 88, "interactions": 1189} == target_counts(SCALE)
    # users and interactions exactly; items within 1% (the module's stated tolerance)
    assert manifest["users"] == target["users"] and manifest["interactions"] == target["interactions"]
    assert abs(manifest["items"] - target["items"]) <= max(1, 0.01 * target["items"])
    text = pd.read_csv(tiny / f"{STEM}.text", sep="\t", dtype=str, quoting=3)
    assert len(text) == manifest["items"] and text["text:token_seq"].is_unique and text["item_id:token"].is_unique


def test_the_recbole_loader_reads_it_into_a_leave_one_out_split(tiny):
    files = find_recbole_files(tiny, STEM)
    interactions = pd.concat(iter_recbole_interactions(files), ignore_index=True)
    items = pd.concat(iter_recbole_items(files), ignore_index=True)
    assert len(interactions) == 1189 and interactions["user_id"].nunique() == 169
    assert set(items["item_id"]) == set(interactions["item_id"])  # every item is bought, none is unknown
    assert (items["title"].str.len() > 0).all() and items["title"].is_unique
    splits, _ = split_interactions(interactions, k_core=1, dedup="event")
    per_user = splits.groupby("user_id")["split"].value_counts().unstack(fill_value=0)
    assert (per_user["valid"] == 1).all() and (per_user["test"] == 1).all() and (per_user["train"] >= 3).all()
    last = splits.sort_values("position").groupby("user_id").tail(1)
    assert (last["split"] == "test").all()
    assert len(splits) == 1189


@pytest.mark.parametrize("scale", [0, -1.0, math.nan, math.inf, 1e-6])
def test_a_scale_without_users_or_items_is_refused(scale, tmp_path):
    with pytest.raises(ValueError, match="scale"):
        write_scaled_dataset(tmp_path / "bad", scale)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("text", ["ten", "1x", "", "0", "-3", "inf", "nan"])
def test_an_unknown_scale_string_names_itself(text, capsys):
    with pytest.raises(growth.GrowthError, match=re.escape(repr(text))):
        growth.parse_scale(text)
    with pytest.raises(SystemExit):
        growth.main(["run", "--scales", "1", text])
    assert f"{text!r}" in capsys.readouterr().err
    assert growth.parse_scale("0.5") == 0.5 and growth.parse_scale("100") == 100.0


# --------------------------------------------------------------------------- child processes


def _child(tmp_path: Path, code: str, timeout_s: float = 30) -> dict:
    return growth.run_child([sys.executable, "-c", code], log=tmp_path / "log", result_file=tmp_path / "result.json",
                            env={"PATH": "/usr/bin:/bin"}, timeout_s=timeout_s)


def test_child_outcomes_ok_failed_oom_timeout(tmp_path):
    result = str(tmp_path / "result.json")
    ok = _child(tmp_path, f"import json; json.dump({{'ok': True, 'step_s': 1.5, 'error': None}}, "
                          f"open({result!r}, 'w'))")
    assert ok["outcome"] == "ok" and ok["step_s"] == 1.5 and ok["error"] is None and ok["peak_rss_mib"] > 0
    failed = _child(tmp_path, "raise SystemExit('the warehouse is locked')")
    assert failed["outcome"] == "failed" and failed["error"] == "the warehouse is locked"
    oom = _child(tmp_path, "raise MemoryError('Unable to allocate 40.0 GiB')")
    assert oom["outcome"] == "oom" and "MemoryError" in oom["error"]
    timeout = _child(tmp_path, "import time; time.sleep(60)", timeout_s=0.5)
    assert timeout["outcome"] == "timeout" and timeout["step_s"] is None and timeout["process_s"] < 20


# --------------------------------------------------------------------------- the report

STAGES = [growth.stage_name(s) for s in growth.stages()]


def _record(scale: float, stage: str, step_s: float | None, *, outcome: str = "ok", rss: int = 500,
            run: str = "2026-12-08T00:00:00+00:00") -> dict:
    return {"run": run, "scale": scale, "users": round(8442 * scale), "items": round(4385 * scale),
            "interactions": round(59427 * scale), "stage": stage, "outcome": outcome, "step_s": step_s,
            "process_s": (step_s or 100.0) + 10.0, "peak_rss_mib": rss, "error": None if outcome == "ok" else "x",
            "machine": "x86_64 2 cores, Linux", "commit": "abcdef1234567", "recorded_at": run, "llm": "fake",
            "stage_timeout_s": 1800, "caps": {"recommender_sft": {"max_epochs": 3}}, "data_write_s": 0.5,
            "data_mib": 2.4 * scale, "omp_threads": "1"}


def _fixture(path: Path) -> Path:
    """Scales 1 and 10 fully ok; at 100 everything up to item_embeddings ok, then semantic_ids times out.
    item_embeddings follows t = 10 s × (items / 4,385) ^ 1.5 exactly; every other stage 2 s × scale."""
    rows = [_record(1.0, s, 99.0, run="2026-12-01T00:00:00+00:00") for s in STAGES]  # an older run: superseded
    for scale in (1.0, 10.0, 100.0):
        for stage in STAGES:
            if scale == 100.0 and stage == "semantic_ids":
                rows.append(_record(scale, stage, None, outcome="timeout", rss=2000))
                break
            step = 10.0 * scale**1.5 if stage == "item_embeddings" else 2.0 * scale
            rss = {1.0: 500, 10.0: 950, 100.0: 5450}[scale] if stage == "item_embeddings" else 500
            rows.append(_record(scale, stage, step, rss=rss))
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _row(text: str, start: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(start))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_fits_on_a_known_power_law_and_a_straight_line():
    sizes = [4385, 43850, 438500]
    assert growth.fit_exponent(sizes, [10.0 * (s / 4385) ** 1.5 for s in sizes]) == pytest.approx(1.5)
    assert growth.fit_exponent([4385], [10.0]) is None
    # (4,385, 500 MiB), (43,850, 950 MiB): 450 MiB + 450 / 39,465 MiB per item
    assert growth.fit_memory([4385, 43850], [500, 950], 10_000_000) == pytest.approx(450 + 450 / 39465 * 1e7)
    assert growth.fit_memory([4385], [500], 1e7) is None


def test_report_ratios_breaks_and_extrapolation(tmp_path):
    text = growth.render(_fixture(tmp_path / "growth.jsonl"))
    embed = _row(text, "| `item_embeddings` | items | 10.0 |")
    assert embed == ["`item_embeddings`", "items", "10.0", "500", "316.2 (× 31.62)", "950", "10000.0 (× 1000.00)",
                     "5450"]
    sft = _row(text, "| `recommender_sft` | interactions | 2.0 |")  # the older run's 99 s is superseded
    assert sft[2:6] == ["2.0", "500", "20.0 (× 10.00)", "500"] and sft[6:] == ["not reached", "–"]
    assert _row(text, "| `semantic_ids` | items | 2.0 |")[6] == "**timeout** > 1800 s"
    assert "First to break as the data grows: `semantic_ids` at 100× (timeout)." in text
    assert "- 1×: none (all 11 stages ok)" in text
    assert "- 100×: `semantic_ids` — timeout (x); 7 stage(s) before it ok" in text
    # on paper: 10,000 s × (10M / 438,500) ^ 1.5 = 1.089e6 s ≈ 12.6 days; memory on the line of all three points
    paper = _row(text, "| `item_embeddings` | items | 438,500 |")
    assert paper[3] == "1.50" and paper[4] == "13 d"
    assert paper[6] == growth.ENGINES["item_embeddings"]
    # a stage measured at two scales, linear: 20 s × (1B / 594,270) = 33,654 s ≈ 9.3 h
    sft_paper = _row(text, "| `recommender_sft` | interactions | 594,270 |")
    assert sft_paper[3] == "1.00" and sft_paper[4] == "9.3 h" and growth.CAPPED["recommender_sft"] in sft_paper[7]
    llm = _row(text, "| ↳ the LLM itself")
    assert llm[4] == "77 d"  # 10M items / 1.5 items/s = 6.67e6 s
    assert "semantic_ids" in _row(text, "| `semantic_ids` | items | 43,850 |")[0]
    assert "timeout at 100×" in _row(text, "| `semantic_ids` | items | 43,850 |")[7]


def test_report_write_is_idempotent_and_keeps_the_rest(tmp_path):
    results = _fixture(tmp_path / "growth.jsonl")
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n\nhand-written text\n")
    assert growth.main(["report", "--results", str(results), "--write", str(doc)]) == 0
    first = doc.read_text()
    assert first.startswith("# Benchmarks\n\nhand-written text\n\n## Growth beyond Scientific\n\n" + growth.BEGIN)
    assert growth.main(["report", "--results", str(results), "--write", str(doc)]) == 0
    assert doc.read_text() == first
    doc.write_text(first + "\n## Later section\n\nmore text\n")
    growth.main(["report", "--results", str(results), "--write", str(doc)])
    assert doc.read_text() == first + "\n## Later section\n\nmore text\n"


def test_bad_results_name_the_problem(tmp_path, capsys):
    missing = tmp_path / "none.jsonl"
    with pytest.raises(SystemExit, match=r"results file .*none\.jsonl does not exist"):
        growth.main(["report", "--results", str(missing)])
    record = _record(1.0, "semantic_ids", 2.0)
    del record["machine"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(_record(1.0, "interaction_splits", 2.0)) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(growth.GrowthError, match=r"bad\.jsonl:2: record lacks field\(s\) \['machine'\]"):
        growth.render(bad)
    bad.write_text("{not json\n")
    with pytest.raises(growth.GrowthError, match=r"bad\.jsonl:1: not a JSON line"):
        growth.render(bad)
    bad.write_text(json.dumps(_record(1.0, "warp_drive", 2.0)) + "\n")
    with pytest.raises(growth.GrowthError, match=r"bad\.jsonl:1: unknown stage 'warp_drive'"):
        growth.render(bad)
    bad.write_text(json.dumps(_record(1.0, "semantic_ids", 2.0, outcome="exploded")) + "\n")
    with pytest.raises(growth.GrowthError, match=r"unknown outcome 'exploded'"):
        growth.render(bad)


def test_quality_report_ignores_the_growth_records(tmp_path):
    from bench import report

    _fixture(tmp_path / "growth.jsonl")
    assert report.load_results(tmp_path).runs == ()


def test_a_run_records_each_stage_and_stops_at_the_first_broken_one(tmp_path, monkeypatch):
    outcomes = iter(["ok", "ok", "ok", "timeout", "ok"])
    seen_env = []

    def fake_stage(assets, *, home, data, env, timeout_s):
        seen_env.append((env["DIGR_BENCH_HOME"], env.get("DIGR_MINERS")))
        assert (data / f"{STEM}.train.inter").is_file()
        outcome = next(outcomes)
        return {"outcome": outcome, "step_s": 1.0 if outcome == "ok" else None, "process_s": 2.0,
                "peak_rss_mib": 300, "error": None if outcome == "ok" else "killed after the stage timeout of 5 s"}

    monkeypatch.setattr(growth, "run_stage", fake_stage)
    results = tmp_path / "growth.jsonl"
    context = {"run": "2026-12-08T01:00:00+00:00", "llm": "fake", "stage_timeout_s": 5.0, "seed": 0,
               "omp_threads": "1", "machine": "m", "commit": "c"}
    growth.run_scale(SCALE, tmp_path / "home", results, miners='[{"name": "x"}]', context=context, timeout_s=5.0)
    records = growth.load_records(results)
    assert [r["stage"] for r in records] == STAGES[:4]
    assert [r["outcome"] for r in records] == ["ok", "ok", "ok", "timeout"]
    assert records[0]["users"] == 169 and records[0]["caps"]["recommender_sft"]["max_batches_per_epoch"] == 128
    assert all(isinstance(r["load_1min_before"], float) for r in records)
    assert set(seen_env) == {(str(tmp_path / "home"), '[{"name": "x"}]')}
    assert "First to break as the data grows: `item_interests` at 0.02× (timeout)." in growth.render(results)


def test_a_dagster_error_is_reported_by_its_innermost_cause():
    from types import SimpleNamespace as Info

    wrapped = Info(cls_name="DagsterExecutionStepExecutionError", message="Error occurred while executing op",
                   cause=Info(cls_name="_ArrayMemoryError", message="Unable to allocate 40.0 GiB for an array\n",
                              cause=None))
    assert growth._innermost(wrapped) == "_ArrayMemoryError: Unable to allocate 40.0 GiB for an array"
    assert growth._OOM.search(growth._innermost(wrapped))  # recorded as oom, not failed
    assert growth._innermost(Info(cls_name="Failure", message="contract failed: coverage 0.4", cause=None)) == \
        "Failure: contract failed: coverage 0.4"
