"""HR@K / NDCG@K against hand-computed values."""

import math

import numpy as np
import pytest

from metrics.ranking import evaluate_rankings, hit_rate_at_k, ndcg_at_k, target_ranks

# targets sit at 0-based ranks 0, 1, 4 and nowhere (miss)
RANKED = np.array(
    [
        [7, 1, 2, 3, 4, 5],
        [1, 7, 2, 3, 4, 5],
        [1, 2, 3, 4, 7, 5],
        [1, 2, 3, 4, 5, 6],
    ]
)
TARGETS = np.array([7, 7, 7, 7])


def test_target_ranks():
    assert target_ranks(RANKED, TARGETS, 6).tolist() == [0, 1, 4, -1]
    assert target_ranks(RANKED, TARGETS, 2).tolist() == [0, 1, -1, -1]


def test_hit_rate_by_hand():
    assert hit_rate_at_k(RANKED, TARGETS, 1) == pytest.approx(1 / 4)
    assert hit_rate_at_k(RANKED, TARGETS, 2) == pytest.approx(2 / 4)
    assert hit_rate_at_k(RANKED, TARGETS, 5) == pytest.approx(3 / 4)


def test_ndcg_by_hand():
    # rank 0 -> 1, rank 1 -> 1/log2(3), rank 4 -> 1/log2(6), miss -> 0
    assert ndcg_at_k(RANKED, TARGETS, 5) == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 4)
    assert ndcg_at_k(RANKED, TARGETS, 4) == pytest.approx((1 + 1 / math.log2(3)) / 4)
    assert ndcg_at_k(RANKED, TARGETS, 1) == pytest.approx(1 / 4)


def test_padding_minus_one_never_hits():
    ranked = np.array([[-1, -1], [3, -1]])
    assert hit_rate_at_k(ranked, np.array([0, 3]), 2) == pytest.approx(0.5)


def test_evaluate_rankings_keys_and_values():
    out = evaluate_rankings(RANKED, TARGETS, ks=(1, 5))
    assert set(out) == {"hr@1", "ndcg@1", "hr@5", "ndcg@5"}
    assert out["hr@5"] == pytest.approx(0.75)
    assert out["ndcg@1"] == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("ranked", "targets", "k", "err", "match"),
    [
        (np.array([1, 2, 3]), np.array([1]), 1, ValueError, "2-D"),
        (RANKED, np.array([7, 7]), 1, ValueError, "one entry per ranked row"),
        (RANKED, TARGETS, 0, ValueError, "positive integer"),
        (RANKED, TARGETS, 7, ValueError, "fewer than k=7"),
        (RANKED.astype(float), TARGETS, 1, TypeError, "integer item indices"),
        (RANKED, np.array([7, 7, -1, 7]), 1, ValueError, ">= 0"),
    ],
)
def test_bad_input(ranked, targets, k, err, match):
    with pytest.raises(err, match=match):
        hit_rate_at_k(ranked, targets, k)
