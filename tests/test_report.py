"""Evaluation report (table, markdown, best), example users, and the PNG plots."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from evaluation.plots import PlotError, plot_codebook_usage, plot_metrics, plot_reward_curves
from evaluation.report import (
    EvaluationReport,
    ModelResult,
    ReportError,
    build_report,
    example_users,
    examples_markdown,
)
from training.codebook_health import codebook_health

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def results() -> list[ModelResult]:
    return [
        ModelResult("digr", "valid", {"ndcg@10": 0.30, "hr@10": 0.50, "hr@5": 0.40, "ndcg@5": 0.25}, "main"),
        ModelResult("digr", "test", {"ndcg@10": 0.28, "hr@10": 0.45, "hr@5": 0.35, "ndcg@5": 0.22}, "main"),
        ModelResult("no_interests", "valid", {"ndcg@10": 0.31, "hr@10": 0.48}, "ablation", notes="no MLIM text"),
        ModelResult("popularity", "valid", {"ndcg@10": 0.05, "hr@10": 0.10, "hr@5": 0.06, "ndcg@5": 0.04},
                    "baseline"),
        ModelResult("popularity", "test", {"ndcg@10": 0.04, "hr@10": 0.09, "hr@5": 0.05, "ndcg@5": 0.03},
                    "baseline"),
    ]


def is_png(path) -> bool:
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == PNG_MAGIC


def test_long_and_wide_tables_hold_every_value():
    report = build_report(results())
    long = report.table()
    assert list(long.columns) == ["model", "kind", "split", "metric", "value", "notes"]
    assert len(long) == sum(len(r.metrics) for r in results())
    got = long.set_index(["model", "split", "metric"])["value"]
    for r in results():
        for m, v in r.metrics.items():
            assert got[(r.model, r.split, m)] == v
    wide = report.table(wide=True)
    # rows keep model insertion order, valid before test; metric columns ordered numerically by K
    assert list(zip(wide["model"], wide["split"], strict=True)) == [
        ("digr", "valid"), ("digr", "test"), ("no_interests", "valid"), ("popularity", "valid"), ("popularity", "test")]
    assert list(wide.columns) == ["model", "kind", "split", "hr@5", "hr@10", "ndcg@5", "ndcg@10"]
    ablation = wide[wide["model"] == "no_interests"].iloc[0]
    assert ablation["ndcg@10"] == 0.31 and math.isnan(ablation["hr@5"])


def test_markdown_and_best():
    report = build_report(results())
    md = report.to_markdown(digits=3)
    lines = md.splitlines()
    assert lines[0].startswith("| model") and "ndcg@10" in lines[0]
    assert len(lines) == 2 + 5  # header, separator, one line per (model, split)
    assert any("popularity" in ln and "0.04" in ln for ln in lines)
    assert report.best().model == "no_interests"
    assert report.best("ndcg@10", "test").model == "digr"
    assert report.best("hr@5", "valid").model == "digr"
    with pytest.raises(ReportError, match="no model reports 'mrr' on split 'valid'"):
        report.best("mrr")


def test_bad_results_are_rejected():
    with pytest.raises(ReportError, match="split must be one of"):
        ModelResult("m", "train", {"ndcg@10": 0.1}, "main")
    with pytest.raises(ReportError, match="kind must be one of"):
        ModelResult("m", "valid", {"ndcg@10": 0.1}, "champion")
    with pytest.raises(ReportError, match="'ndcg@10' must be a finite number"):
        ModelResult("m", "valid", {"ndcg@10": float("nan")}, "main")
    with pytest.raises(ReportError, match="no metrics"):
        ModelResult("m", "valid", {}, "main")
    with pytest.raises(ReportError, match="duplicate result for model 'digr' on split 'valid'"):
        build_report(results() + [results()[0]])
    with pytest.raises(ReportError, match="both 'main' and 'baseline'"):
        build_report([results()[0], ModelResult("digr", "test", {"ndcg@10": 0.1}, "baseline")])
    with pytest.raises(ReportError, match="no model results"):
        build_report([])


def example_data():
    rows = []
    for u in range(8):
        seq = [f"i{(u + t) % 6}" for t in range(5)]
        for p, item in enumerate(seq):
            rows.append((f"u{u}", item, p, "train" if p < 3 else ("valid" if p == 3 else "test")))
    splits = pd.DataFrame(rows, columns=["user_id", "item_id", "position", "split"])
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(6)],
                          "title": [f"Title {i}" for i in range(5)] + [None]})
    interests = pd.DataFrame({"user_id": ["u1", "u1", "u2"], "rank": [1, 0, 0],
                              "interest": ["second", "first", "only"]})
    # every user gets the same 6 recommendations, so hits depend on the user's own target
    recs = {f"u{u}": [f"i{i}" for i in range(6)] for u in range(8)}
    recs["u9"] = ["i0"]  # no target for this user: never picked
    return splits, items, interests, recs


def test_example_users_are_deterministic_and_explain_the_user():
    splits, items, interests, recs = example_data()
    a = example_users(splits, items, interests, recs, n=8, seed=1)
    assert [e["user_id"] for e in a] == [f"u{u}" for u in range(8)]  # all 8 eligible, u9 excluded
    b = example_users(splits, items, interests, recs, n=3, seed=1)
    c = example_users(splits, items, interests, recs, n=3, seed=1)
    assert b == c and len(b) == 3
    assert {tuple(e["user_id"] for e in example_users(splits, items, interests, recs, n=3, seed=s))
            for s in range(6)} != {tuple(e["user_id"] for e in b)}
    by_user = {e["user_id"]: e for e in a}
    u1 = by_user["u1"]
    assert u1["history"] == ["Title 1", "Title 2", "Title 3"]  # train prefix only, titles
    assert u1["interests"] == ["first", "second"]  # ordered by rank
    assert u1["target"] == {"item_id": "i5", "title": "i5"}  # no title: falls back to the id
    assert [r["item_id"] for r in u1["recommendations"]] == ["i0", "i1", "i2", "i3", "i4"]
    assert not u1["hit"] and not any(r["is_target"] for r in u1["recommendations"])
    u0 = by_user["u0"]  # target i4 is 5th in the list
    assert u0["hit"] and [r["is_target"] for r in u0["recommendations"]] == [False] * 4 + [True]
    assert by_user["u3"]["interests"] == []
    valid = example_users(splits, items, interests, recs, n=8, split="valid")
    assert {e["user_id"]: e["target"]["item_id"] for e in valid}["u1"] == "i4"


def test_examples_markdown_renders_every_part():
    splits, items, interests, recs = example_data()
    md = examples_markdown(example_users(splits, items, interests, recs, n=8))
    assert md.count("### User") == 8
    assert "### User `u0` (hit)" in md and "### User `u1` (miss)" in md
    assert "**Mined interests:** first; second" in md
    assert "5. Title 4 ✅ (target)" in md
    with pytest.raises(ReportError, match="no example users"):
        examples_markdown([])


def test_example_users_bad_input():
    splits, items, interests, recs = example_data()
    with pytest.raises(ReportError, match="items: missing column\\(s\\) \\['title'\\]"):
        example_users(splits, items.drop(columns=["title"]), interests, recs)
    with pytest.raises(ReportError, match="user_interests: missing column"):
        example_users(splits, items, interests.drop(columns=["rank"]), recs)
    with pytest.raises(ReportError, match="no user has both recommendations and a 'test' target"):
        example_users(splits, items, interests, {"nobody": ["i0"]})
    with pytest.raises(ReportError, match="split must be one of"):
        example_users(splits, items, interests, recs, split="train")


def test_plot_metrics_writes_png(tmp_path):
    path = plot_metrics(build_report(results()), tmp_path / "sub" / "metrics.png")
    assert path == tmp_path / "sub" / "metrics.png" and is_png(path)
    with pytest.raises(PlotError, match="needs an EvaluationReport"):
        plot_metrics(results(), tmp_path / "x.png")
    assert isinstance(build_report(results()), EvaluationReport)


def test_plot_codebook_usage_from_real_health(tmp_path):
    codes = [[0, 1, 2], [1, 1, 0], [2, 0, 1], [0, 1, 2]]
    meta = codebook_health(codes, 4).to_metadata()
    path = plot_codebook_usage(meta, tmp_path / "codebook.png")
    assert is_png(path)
    with pytest.raises(PlotError, match="lacks \\['entropy_normalised'\\]"):
        plot_codebook_usage({"usage": [0.5]}, tmp_path / "bad.png")
    with pytest.raises(PlotError, match="usage has 2 levels but entropy_normalised has 1"):
        plot_codebook_usage({"usage": [0.5, 0.2], "entropy_normalised": [0.1]}, tmp_path / "bad.png")
    with pytest.raises(PlotError, match="usage must be a list of numbers"):
        plot_codebook_usage({"usage": ["x"], "entropy_normalised": [0.1]}, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_plot_reward_curves_skips_missing_keys(tmp_path):
    history = [
        {"epoch": 0, "grpo/reward_total_epoch": 0.2, "grpo/reward_exact_epoch": 0.1, "grpo/kl_step": 9.0,
         "val_ndcg@10": 0.1},
        {"epoch": 1, "grpo/reward_total_epoch": 0.3, "val_ndcg@10": 0.12},  # no exact/kl this epoch
        {"epoch": 2, "grpo/reward_total": 0.35, "grpo/kl": 0.01},
    ]
    assert is_png(plot_reward_curves(history, tmp_path / "rewards.png"))
    assert is_png(plot_reward_curves([{"val_ndcg@10": 0.2}], tmp_path / "val_only.png"))
    with pytest.raises(PlotError, match="empty"):
        plot_reward_curves([], tmp_path / "bad.png")
    with pytest.raises(PlotError, match="none of grpo/reward_"):
        plot_reward_curves([{"epoch": 0, "loss": 1.0}], tmp_path / "bad.png")
