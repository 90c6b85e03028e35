"""Most-popular baseline against a hand-computed case, directly and through the baseline registry."""

import math

import pandas as pd
import pytest

from evaluation.baselines import (
    BaselineError,
    BaselineInputs,
    evaluate_popularity,
    metrics_from_ranks,
    popularity_ranking,
    registered_baselines,
)


def splits():
    rows = [("u1", "a", "train"), ("u1", "b", "train"), ("u1", "c", "valid"), ("u1", "a2", "test"),
            ("u2", "a", "train"), ("u2", "c", "valid"), ("u2", "b", "test"),
            ("u3", "a", "train"), ("u3", "b", "train"), ("u3", "d", "valid"), ("u3", "c", "test")]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "split"])


def test_popularity_counts_train_only_and_breaks_ties_by_id():
    items = ["a", "a2", "b", "c", "d"]
    # train counts: a=3, b=2; c appears only in valid/test and must not count
    top = popularity_ranking(splits(), items, 4)
    assert [items[i] for i in top[:2]] == ["a", "b"]
    assert list(top[2:]) == [-1, -1]


def test_popularity_metrics_hand_computed():
    items = ["a", "a2", "b", "c", "d"]
    m = evaluate_popularity(splits(), items, "test", ks=(1, 2))
    # ranking [a, b]; test targets a2 (miss), b (rank 1), c (miss)
    assert m["hr@1"] == 0 and m["hr@2"] == pytest.approx(1 / 3)
    assert m["ndcg@2"] == pytest.approx((1 / math.log2(3)) / 3)
    with pytest.raises(ValueError, match="not in the item list"):
        evaluate_popularity(splits(), ["a", "b"], "valid")


def protocol_splits():
    """The same users with positions and timestamps, as ``interaction_splits`` has them."""
    frame = splits()
    frame["position"] = frame.groupby("user_id").cumcount()
    frame["timestamp"] = 1000 + frame["position"]
    frame["rating"] = 5.0
    return frame


def test_popularity_baseline_matches_evaluate_popularity_and_ranks_per_user():
    items = ["a", "a2", "b", "c", "d"]
    baseline = registered_baselines()["popularity"]
    assert baseline.name == "most-popular" and baseline.configurable_fields() == []
    result = baseline.evaluate(BaselineInputs(protocol_splits(), items, max_history=20, ks=(1, 2)))
    for split in ("valid", "test"):
        assert result.metrics[split] == pytest.approx(evaluate_popularity(splits(), items, split, ks=(1, 2)))
        assert result.metrics[split] == pytest.approx(metrics_from_ranks(result.ranks[split], ks=(1, 2)))
    # ranking [a, b]: test targets a2 (miss), b (rank 2), c (miss); valid targets c, c, d all miss
    assert result.user_ids["test"] == ("u1", "u2", "u3")
    assert result.ranks["test"].tolist() == [0, 2, 0]
    assert result.ranks["valid"].tolist() == [0, 0, 0]
    assert result.cutoff == 2 and result.info["top_items"] == ["a", "b"]
    with pytest.raises(BaselineError, match="not in the item list"):
        baseline.evaluate(BaselineInputs(protocol_splits(), ["a", "b"], max_history=20))
