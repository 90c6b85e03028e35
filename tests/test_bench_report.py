"""bench.report: the BENCHMARKS.md tables from raw result records, with the arithmetic checked by hand.

The fixture: 6 users (u1..u6), test targets a, b, c, d (train counts 10, 5, 3, 1) and x, y (never in train:
cold); with the valid items v1-v6 (train counts 2, 2, 1, 1, 1, 1) the ten train items rank a, b, c, v1, v2, d,
v3, ... so a, b, c, d fall in popularity deciles 1, 2, 3, 6; test history lengths (train + the valid item)
2, 4, 6, 10, 20, 61. Three models: TIGER-style and DeepInterestGR with the same three (seed, codebook seed)
pairs, SASRec with one run. NDCG@10 of a rank: 1 -> 1, 2 -> 1/log2(3) = 0.63093, 3 -> 0.5, 7 -> 1/3,
15 (beyond 10) -> 0, 0 (miss) -> 0.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from bench import report
from bench.results import ResultRecord, ResultsError, append

L3 = 1 / math.log2(3)  # NDCG of rank 2
SPLIT = "fixture0000split"
SPLIT_FILE = {
    "users": ["u1", "u2", "u3", "u4", "u5", "u6"],
    "valid_target": ["v1", "v2", "v3", "v4", "v5", "v6"],
    "test_target": ["a", "b", "c", "d", "x", "y"],
    "train_length": [1, 3, 5, 9, 19, 60],
    "train_counts": {"a": 10, "b": 5, "c": 3, "d": 1, "v1": 2, "v2": 2, "v3": 1, "v4": 1, "v5": 1, "v6": 1},
}
TEST_RANKS = {
    ("TIGER-style", 0): [1, 0, 3, 0, 0, 2],
    ("TIGER-style", 1): [1, 2, 0, 0, 0, 2],
    ("TIGER-style", 2): [3, 0, 0, 15, 0, 1],
    ("DeepInterestGR", 0): [1, 1, 0, 0, 7, 0],
    ("DeepInterestGR", 1): [0, 1, 0, 0, 0, 0],
    ("DeepInterestGR", 2): [1, 1, 1, 0, 0, 0],
    ("SASRec", 0): [2, 2, 2, 2, 2, 2],
}
STOPPED = {("TIGER-style", 0): "cap", ("TIGER-style", 1): "cap"}


def _metrics(ranks: list[int]) -> dict[str, float]:
    def ndcg(r: int, k: int) -> float:
        return 1 / math.log2(r + 1) if 1 <= r <= k else 0.0

    n = len(ranks)
    return {"hr@5": sum(1 <= r <= 5 for r in ranks) / n, "hr@10": sum(1 <= r <= 10 for r in ranks) / n,
            "ndcg@5": sum(ndcg(r, 5) for r in ranks) / n, "ndcg@10": sum(ndcg(r, 10) for r in ranks) / n}


def _record(model: str, seed: int, test: list[int] | None = None, **changes) -> ResultRecord:
    test = TEST_RANKS[(model, seed)] if test is None else test
    valid = test[::-1]
    rec = ResultRecord(
        dataset="Scientific", model=model, profile="gpu", seed=seed,
        codebook_seed=None if model == "SASRec" else seed,
        metrics={"valid": _metrics(valid), "test": _metrics(test)}, ranks={"valid": valid, "test": test},
        split_hash=SPLIT, epochs=20 if STOPPED.get((model, seed)) == "cap" else 12 + seed, max_epochs=20,
        stopped=STOPPED.get((model, seed), "early_stopping"), wall_s=100.0, device="cuda",
        machine="x86_64 16 cores, Linux, NVIDIA H200", commit="0123456789abcdef0123",
        config_hash="c0ffee", recorded_at=f"2026-11-26T10:0{seed}:00+00:00")
    return replace(rec, **changes) if changes else rec


@pytest.fixture
def results_dir(tmp_path):
    directory = tmp_path / "results"
    (directory / "splits").mkdir(parents=True)
    (directory / "splits" / f"{SPLIT}.json").write_text(json.dumps(SPLIT_FILE))
    for model, seed in TEST_RANKS:
        append(_record(model, seed), "gpu", directory)
    # an earlier run of DeepInterestGR seed 0 in another file: superseded by the later record
    stale = _record("DeepInterestGR", 0, ranks={"valid": [0] * 6, "test": [0] * 6},
                    metrics={"valid": _metrics([0] * 6), "test": _metrics([0] * 6)},
                    recorded_at="2026-11-25T09:00:00+00:00")
    append(stale, "a_earlier", directory)
    return directory


def _section(text: str, title: str) -> str:
    start = text.index(title)
    end = text.find("\n#### ", start + 1)
    return text[start:end if end != -1 else None]


def _row(table: str, first_cell: str, second_cell: str | None = None) -> list[str]:
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == first_cell and (second_cell is None or cells[1] == second_cell):
            return cells
    raise AssertionError(f"no row {first_cell!r} in\n{table}")


# --------------------------------------------------------------------------- arithmetic


def test_ndcg_and_hits_from_ranks():
    ranks = np.array([0, 1, 2, 3, 7, 10, 11, 15, 20])
    expected = [0, 1, L3, 0.5, 1 / 3, 1 / math.log2(11), 0, 0, 0]
    assert np.allclose(report.ndcg_from_ranks(ranks), expected)
    assert report.hits_from_ranks(ranks).tolist() == [0, 1, 1, 1, 1, 1, 0, 0, 0]


def test_mean_and_sample_std():
    mean, std = report.mean_std([0.1, 0.2, 0.6])
    assert mean == pytest.approx(0.3)
    # ddof=1: deviations -0.2, -0.1, 0.3 -> (0.04 + 0.01 + 0.09) / 2 = 0.07
    assert std == pytest.approx(math.sqrt(0.07))
    assert report.mean_std([0.25]) == (0.25, None)


def test_bootstrap_interval_contains_the_mean_and_is_deterministic():
    diff = np.array([-1 / 6, 0.78969, 1 / 6, 0.0, 1 / 9, -0.753953])
    low, high = report.paired_bootstrap(diff)
    assert low < diff.mean() < high
    assert report.paired_bootstrap(diff) == (low, high)
    assert report.paired_bootstrap(diff, seed=1) != (low, high)
    assert report.paired_bootstrap(np.full(5, 0.02)) == pytest.approx((0.02, 0.02))
    low, high = report.paired_bootstrap(np.array([0.1, 0.2, 0.15, 0.3]))
    assert 0 < low <= high


def test_compare_by_hand(results_dir):
    results = report.load_results(results_dir)
    models = {m.model: m for m in report._models(list(results.runs))}
    c = report.compare(models["DeepInterestGR"], models["TIGER-style"], "test", SPLIT_FILE)
    # per-user NDCG@10 averaged over runs
    digr = np.array([2 / 3, 1, 1 / 3, 0, 1 / 9, 0])
    tiger = np.array([2.5 / 3, L3 / 3, 0.5 / 3, 0, 0, (2 * L3 + 1) / 3])
    assert c.users == 6 and c.runs == (3, 3)
    assert c.model_mean == pytest.approx(digr.mean())
    assert c.reference_mean == pytest.approx(tiger.mean())
    assert c.diff == pytest.approx((digr - tiger).mean())  # 0.024475
    assert c.relative == pytest.approx((digr - tiger).mean() / tiger.mean())
    assert c.low < c.diff < c.high and not c.excludes_zero
    assert (c.low, c.high) == pytest.approx(report.paired_bootstrap(digr - tiger))
    # paired by seed: per-run NDCG@10 differences 0.388889 - 0.355155, 0.166667 - 0.376977, 0.5 - 0.25
    pairs = [(2 + 1 / 3) / 6 - (1.5 + L3) / 6, 1 / 6 - (1 + 2 * L3) / 6, 3 / 6 - 1.5 / 6]
    mean, std, n = c.by_seed
    assert n == 3 and mean == pytest.approx(np.mean(pairs)) and std == pytest.approx(np.std(pairs, ddof=1))


# --------------------------------------------------------------------------- the rendered tables


def test_quality_table_by_hand(results_dir):
    text = report.render(results_dir)
    quality = _section(text, "#### Quality")
    tiger = _row(quality, "TIGER-style")
    # test NDCG@10 per run: (1 + 0.5 + L3)/6 = 0.355155, (1 + 2 L3)/6 = 0.376977, 1.5/6 = 0.25
    # mean 0.327377, sample std 0.067894; test HR@10: 0.5, 0.5, 1/3 (rank 15 is a miss) -> 0.4444 ± 0.0962
    assert tiger[1:3] == ["3", "0/0 1/1 2/2"]
    assert tiger[5] == "0.4444 ± 0.0962"
    assert tiger[6] == "0.3274 ± 0.0679"
    assert tiger[7] == "early stop 1/3, hit cap 2/3"
    assert tiger[8] == "20, 20, 14 (cap 20)"
    assert tiger[9] == "0123456789" and tiger[10] == "x86_64 16 cores, Linux, NVIDIA H200"
    # the later DeepInterestGR seed-0 record wins over the stale one: 0.388889, 0.166667, 0.5
    digr = _row(quality, "DeepInterestGR")
    vals = [(2 + 1 / 3) / 6, 1 / 6, 0.5]
    assert digr[6] == f"{np.mean(vals):.4f} ± {np.std(vals, ddof=1):.4f}"
    assert digr[7] == "early stop 3/3"
    # valid ranks are the test ranks reversed: same multiset per run, so the same per-run means
    assert digr[4] == digr[6]
    # a single run: labelled, no ±
    sasrec = _row(quality, "SASRec (1 run)")
    assert sasrec[1:3] == ["1", "0/–"]
    assert sasrec[6] == f"{L3:.4f}" and "±" not in "".join(sasrec[3:7])
    assert "1 earlier record(s) of the same runs superseded" in quality
    assert "`a_earlier.jsonl`" not in quality and "`gpu.jsonl`" in quality
    assert "recorded 2026-11-26T10:00:00+00:00 to 2026-11-26T10:02:00+00:00" in quality
    assert "disagree" not in text


def test_comparisons_exclude_single_runs_from_mean_comparisons(results_dir):
    text = report.render(results_dir)
    test = _section(text, "#### Paired comparisons, test")
    row = _row(test, "DeepInterestGR", "TIGER-style")
    assert row[2:4] == ["3 vs 3", "6"]
    assert row[6] == "+0.0245" and row[7] == "+7.5%" and row[9] == "no"
    assert row[10].startswith("+0.0245 ± 0.2303 (3 pairs)")
    low, high = row[8].strip("[]").split(", ")
    assert float(low.replace("\u2212", "-")) < 0.0245 < float(high.replace("\u2212", "-"))
    # SASRec has one run: never compared with a mean, in either direction
    for line in test.splitlines():
        if line.startswith("| "):
            assert "SASRec" not in line
    assert "DeepInterestGR vs SASRec: SASRec has a single run, not compared with a mean" in test
    assert "SASRec vs TIGER-style: SASRec has a single run, not compared with a mean" in test
    assert "#### Paired comparisons, valid" in text


def test_single_runs_are_compared_with_single_runs(results_dir):
    for model in ("TIGER-style", "DeepInterestGR"):
        append(_record(model, 0, profile="cpu"), "cpu", results_dir)
    text = report.render(results_dir)
    cpu = text[text.index("### Scientific · profile `cpu`"):text.index("### Scientific · profile `gpu`")]
    assert "DeepInterestGR (1 run)" in _section(cpu, "#### Quality")
    row = _row(_section(cpu, "#### Paired comparisons, test"), "DeepInterestGR", "TIGER-style")
    # seed 0: 0.388889 vs 0.355155 on every user; one pair of seeds, so no ± there
    assert row[2] == "1 vs 1" and row[6] == "+0.0337" and row[10] == "+0.0337 (1 pair)"


def test_each_pair_of_references_once_and_no_seed_pairs_without_a_codebook(results_dir):
    for seed in (1, 2):
        append(_record("SASRec", seed, test=[2, 2, 2, 2, 2, 1]), "gpu", results_dir)
    table = _section(report.render(results_dir), "#### Paired comparisons, test")
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    assert [tuple(c.strip() for c in r.strip("|").split("|")[:2]) for r in rows] == [
        ("DeepInterestGR", "TIGER-style"), ("SASRec", "TIGER-style"), ("DeepInterestGR", "SASRec")]
    # SASRec has no codebook seed: no (seed, codebook seed) pair matches a generator's
    assert _row(table, "SASRec", "TIGER-style")[10] == "–"
    assert "not compared" not in table


def test_slices_counts_and_values(results_dir):
    text = report.render(results_dir)
    slices = _section(text, "#### Slices, test")
    counts = {"all users": "6", "cold target item (no train interaction)": "2", "warm target item": "4",
              "popularity decile 0 (cold)": "2", "popularity decile 1 (most popular)": "1",
              "popularity decile 2": "1", "popularity decile 3": "1", "popularity decile 6": "1",
              "history 1-4": "2", "history 5-9": "1", "history 10-19": "1",
              "history 20-49": "1", "history 50+": "1"}
    head = [c.strip() for c in slices.splitlines()[2].strip("|").split("|")]
    assert head == ["slice", "users", "DeepInterestGR", "SASRec (1 run)", "TIGER-style"]
    for label, users in counts.items():
        assert _row(slices, label)[1] == users
    assert "popularity decile 4" not in slices  # a value no user has gets no row
    cold = _row(slices, "cold target item (no train interaction)")
    # cold users u5, u6: TIGER per-user means 0 and (2 L3 + 1)/3 -> NDCG 0.376977; hits 0 and 1 -> 0.5
    assert cold[4] == f"{(2 * L3 + 1) / 6:.4f} / 0.5000"
    # DeepInterestGR: u5 (1/3)/3 = 1/9, u6 0 -> 1/18; hits 1/3 and 0 -> 1/6
    assert cold[2] == f"{1 / 18:.4f} / {1 / 6:.4f}"
    assert _row(slices, "history 50+")[3] == f"{L3:.4f} / 1.0000"


def test_render_is_deterministic_and_writes_between_markers(results_dir, tmp_path):
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n\nHand-written prose with 0.0553.\n")
    text = report.render(results_dir)
    assert report.render(results_dir) == text
    assert report.write(doc, text)
    first = doc.read_text()
    assert first.startswith("# Benchmarks\n\nHand-written prose with 0.0553.\n\n" + report.BEGIN + "\n")
    assert first.endswith(report.END + "\n")
    # hand-written text after the block, then a rerun: the outside is kept and nothing changes
    doc.write_text(first + "\n## Notes\n\nMore prose.\n")
    before = doc.read_text()
    assert not report.write(doc, report.render(results_dir))
    assert doc.read_text() == before
    # new content replaces only the inside
    assert report.write(doc, "new body")
    assert doc.read_text() == ("# Benchmarks\n\nHand-written prose with 0.0553.\n\n" + report.BEGIN
                               + "\nnew body\n" + report.END + "\n\n## Notes\n\nMore prose.\n")
    with pytest.raises(ValueError, match="expected one"):
        report.replace_generated(report.END + "\n" + report.BEGIN, "x")


def test_cli_writes_the_file_and_a_rerun_leaves_it_unchanged(results_dir, tmp_path, monkeypatch, capsys):
    from bench import scientific

    monkeypatch.setattr(scientific, "use_bench_home", lambda: None)
    doc = tmp_path / "B.md"
    doc.write_text("# B\n")
    argv = ["report", "--results", str(results_dir), "--write", str(doc), "--bootstrap", "200"]
    assert scientific.main(argv) == 0
    written = doc.read_text()
    assert "#### Quality" in written and written.startswith("# B\n\n" + report.BEGIN)
    assert scientific.main(argv) == 0
    assert doc.read_text() == written
    assert "unchanged" in capsys.readouterr().err
    assert scientific.main(["report", "--results", str(results_dir), "--bootstrap", "200"]) == 0
    assert capsys.readouterr().out == report.render(results_dir, n_boot=200)
    with pytest.raises(SystemExit, match="report: results directory .*missing.* does not exist"):
        scientific.main(["report", "--results", str(tmp_path / "missing")])


def test_disagreeing_metrics_are_noted(results_dir):
    bad = _record("TIGER-style", 2, recorded_at="2026-11-27T00:00:00+00:00")
    bad = replace(bad, metrics={**bad.metrics, "test": {**bad.metrics["test"], "ndcg@10": 0.9}})
    append(bad, "gpu", results_dir)
    text = report.render(results_dir)
    assert "gpu.jsonl:8 (TIGER-style, test ndcg@10): recorded 0.9000, from ranks 0.2500" in text


def test_no_records(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "_No result records yet._" in report.render(tmp_path / "empty")


# --------------------------------------------------------------------------- malformed input


def test_malformed_line_names_file_and_line(results_dir):
    path = results_dir / "bad.jsonl"
    path.write_text(_record("SASRec", 0).to_json() + "\n\n{not json\n")
    with pytest.raises(ResultsError, match=r"bad\.jsonl:3"):
        report.render(results_dir)
    fields = asdict(_record("SASRec", 0))
    del fields["metrics"]
    path.write_text(json.dumps(fields) + "\n")
    with pytest.raises(ResultsError, match=r"bad\.jsonl:1"):
        report.render(results_dir)


def test_ranks_not_aligned_with_the_split_name_file_and_line(results_dir):
    short = replace(_record("SASRec", 0), model="Pop", ranks={"valid": [1] * 5, "test": [1] * 5})
    path = results_dir / "short.jsonl"
    path.write_text("\n" + short.to_json() + "\n")
    with pytest.raises(ResultsError, match=r"short\.jsonl:2: 'Pop' seed 0 has 5 valid ranks but split .* 6 users"):
        report.render(results_dir)


def test_missing_split_file_is_an_error(results_dir):
    (results_dir / "splits" / f"{SPLIT}.json").unlink()
    with pytest.raises(ResultsError, match="split file .* is missing"):
        report.render(results_dir)


def test_recipe_baselines_are_shown_beside_every_budget_profile(tmp_path):
    """A baseline trained under its own fixed recipe (SASRec's published recipe, most-popular) is compared with
    the models of each budget profile; alone, it gets one section of its own."""
    directory = tmp_path / "results"
    (directory / "splits").mkdir(parents=True)
    (directory / "splits" / f"{SPLIT}.json").write_text(json.dumps(SPLIT_FILE))
    append(_record("SASRec", 0, profile="published-recipe"), "r", directory)
    only_baselines = report.render(directory)
    assert "profile `published-recipe`" in only_baselines and "profile `cpu`" not in only_baselines
    for seed in (0, 1, 2):
        append(_record("TIGER-style", seed, profile="cpu"), "r", directory)
    text = report.render(directory)
    assert "profile `cpu`" in text and "profile `published-recipe`" not in text
    compared = _section(text, "#### Paired comparisons, test")
    assert "TIGER-style" in compared and "SASRec" in compared


def test_benchmarks_md_is_what_the_committed_results_render():
    """BENCHMARKS.md's results section is regenerated, never hand-edited: it equals the render of the committed
    raw results (rerun `python -m bench.scientific report --write` after adding records)."""
    path = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
    text = path.read_text(encoding="utf-8")
    assert report.replace_generated(text, report.render()) == text


def test_a_deterministic_model_is_compared_with_a_mean(tmp_path):
    """An untrained model (most-popular) has one exact run: it is labelled deterministic and compared."""
    directory = tmp_path / "results"
    (directory / "splits").mkdir(parents=True)
    (directory / "splits" / f"{SPLIT}.json").write_text(json.dumps(SPLIT_FILE))
    for seed in (0, 1, 2):
        append(_record("TIGER-style", seed), "r", directory)
    append(_record("most-popular", 0, test=[1, 0, 0, 2, 0, 0], stopped="not_trained", epochs=None), "r", directory)
    text = report.render(directory)
    assert "most-popular (deterministic)" in text
    compared = _section(text, "#### Paired comparisons, test")
    assert _row(compared, "most-popular", "TIGER-style")  # a row, not a "not compared" note


def test_variance_sources_by_hand(results_dir):
    # the fixture pairs seed = codebook seed: nothing varies alone, so no variance table
    assert "#### Variance sources" not in report.render(results_dir)
    # TIGER-style generator seed 0 on codebooks 1 and 2 too
    append(_record("TIGER-style", 0, test=[1, 1, 0, 0, 0, 0], codebook_seed=1), "gpu", results_dir)
    append(_record("TIGER-style", 0, test=[0, 0, 0, 0, 0, 0], codebook_seed=2), "gpu", results_dir)
    table = _section(report.render(results_dir), "#### Variance sources")
    # codebooks 0, 1, 2 under generator 0: (1 + 0.5 + L3)/6 = 0.355155, 2/6, 0 -> mean 0.229496
    values = [(1.5 + L3) / 6, 2 / 6, 0.0]
    row = _row(table, "TIGER-style", "codebook seed 0,1,2")
    assert row[2:] == ["generator 0", "3", f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}",
                       f"0.0000 – {values[0]:.4f}", f"{100 * values[0] / np.mean(values):.1f}%"]
    # generators 0, 1 under codebook 1: 2/6 and (1 + 2 L3)/6; generators 0, 2 under codebook 2: 0 and 0.25
    row = _row(table, "TIGER-style", "generator seed 0,1")
    pair = [2 / 6, (1 + 2 * L3) / 6]
    assert row[2:5] == ["codebook 1", "2", f"{np.mean(pair):.4f} ± {np.std(pair, ddof=1):.4f}"]
    assert _row(table, "TIGER-style", "generator seed 0,2")[2] == "codebook 2"
    assert "DeepInterestGR" not in table and "SASRec" not in table
