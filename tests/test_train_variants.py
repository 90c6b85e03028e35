"""bench.train_variants: a variant trained from exported tables becomes a result record the report reads."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bench import report
from bench.results import load, read_split
from bench.train_variants import main
from tests.helpers import toy_sid_frame, toy_splits


@pytest.mark.slow
def test_a_variant_run_is_recorded_with_per_user_ranks_and_reported(tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    splits = toy_splits(n_users=6, length=9)
    splits.to_parquet(tables / "interaction_splits.parquet", index=False)
    for name in ("semantic_ids", "semantic_ids_plain"):
        toy_sid_frame().to_parquet(tables / f"{name}.parquet", index=False)
    pd.DataFrame({"item_id": [f"i{i}" for i in range(8)], "q": np.linspace(0, 1, 8)}).to_parquet(
        tables / "item_quality.parquet", index=False)
    vectors = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    pd.DataFrame({"item_id": [f"i{i}" for i in range(8)], "embedding": list(vectors)}).to_parquet(
        tables / "item_embeddings_plain.parquet", index=False)
    results = tmp_path / "results"
    log = tmp_path / "log.jsonl"
    assert main([str(tables), "--out", str(log), "--variants", "tiger", "tiger_items_text", "--seeds", "0",
                 "--codebook-seed", "3", "--results-dir", str(results), "--work", str(tmp_path / "work")]) == 0

    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(logged) == 2 and all("error" not in r for r in logged), logged
    records = {r.model: r for r in load([results / "scientific.jsonl"])}
    item = records["TIGER-style (item-level) + history text"]
    assert item.config["arch"] == "item_causal" and len(item.ranks["test"]) == 6
    record = records["TIGER-style"]
    assert (record.model, record.profile, record.seed, record.codebook_seed) == ("TIGER-style", "cpu", 0, 3)
    assert record.stopped in ("early_stopping", "cap") and record.max_epochs == 60
    users = read_split(record.split_hash, results)["users"]
    assert len(record.ranks["test"]) == len(users) == 6
    # the recorded metrics are the ones the per-user ranks give
    test = np.asarray(record.ranks["test"])
    hits = (test >= 1) & (test <= 10)
    assert record.metrics["test"]["hr@10"] == pytest.approx(hits.mean())
    assert record.metrics["test"]["ndcg@10"] == pytest.approx(
        np.where(hits, 1 / np.log2(np.maximum(test, 1) + 1), 0).mean())
    rendered = report.render(results)
    assert "TIGER-style (1 run)" in rendered
