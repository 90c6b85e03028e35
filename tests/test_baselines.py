"""Most-popular baseline against a hand-computed case."""

import math

import pandas as pd
import pytest

from evaluation.baselines import evaluate_popularity, popularity_ranking


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
