"""Slices (cold items, popularity deciles, history length) against hand-computed examples."""

import math

import numpy as np
import pandas as pd
import pytest

from evaluation.slices import (
    HISTORY_LABELS,
    history_bucket,
    popularity_deciles,
    slice_metrics,
    slices_from_splits,
    user_slices,
)
from metrics.ranking import evaluate_rankings

# 10 items a..j with train counts 10..1; x has no entry and y a count of 0 (both cold)
COUNTS = {"a": 10, "b": 9, "c": 8, "d": 7, "e": 6, "f": 5, "g": 4, "h": 3, "i": 2, "j": 1, "y": 0}
# 9 users, 8 with a target; history lengths sit on the bucket edges
USERS = ["u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "u9"]
TARGETS = ["a", "d", "j", "x", "e", None, "h", "y", "b"]
HISTORY = [4, 5, 9, 10, 19, 3, 20, 49, 50]


def _slices(n_deciles=5):
    return user_slices(USERS, TARGETS, HISTORY, COUNTS, n_deciles=n_deciles)


def test_user_slices_by_hand():
    # 5 deciles over 10 warm items: two items each -> a,b:1  c,d:2  e,f:3  g,h:4  i,j:5
    s = _slices()
    assert list(s.columns) == ["user_id", "target", "cold", "popularity_decile", "history_bucket"]
    assert s["user_id"].tolist() == ["u1", "u2", "u3", "u4", "u5", "u7", "u8", "u9"]  # u6 (no target) dropped
    assert s["target"].tolist() == ["a", "d", "j", "x", "e", "h", "y", "b"]
    assert s["cold"].tolist() == [False, False, False, True, False, False, True, False]
    assert s["popularity_decile"].tolist() == [1, 2, 5, 0, 3, 4, 0, 1]
    assert s["history_bucket"].tolist() == ["1-4", "5-9", "5-9", "10-19", "10-19", "20-49", "20-49", "50+"]
    assert s["cold"].dtype == bool and s["popularity_decile"].dtype == np.int64


def test_ten_deciles_one_item_each():
    s = _slices(n_deciles=10)
    # a=1, d=4, j=10, e=5, h=8, b=2; cold stay 0
    assert s["popularity_decile"].tolist() == [1, 4, 10, 0, 5, 8, 0, 2]


@pytest.mark.parametrize(("length", "bucket"), [
    (1, "1-4"), (4, "1-4"), (5, "5-9"), (9, "5-9"), (10, "10-19"), (19, "10-19"),
    (20, "20-49"), (49, "20-49"), (50, "50+"), (500, "50+"),
])
def test_history_bucket_edges(length, bucket):
    assert history_bucket(length) == bucket
    assert HISTORY_LABELS == ("1-4", "5-9", "10-19", "20-49", "50+")


def test_decile_ties_broken_by_item_id_and_cut_by_item_count():
    # warm items sorted by (-count, id): p(5) q(3) r(3) s(3) t(1) u(1); z (0) is cold and not ranked.
    # 6 items in 4 groups -> sizes 2,2,1,1: {p,q}=1 {r,s}=2 {t}=3 {u}=4; the tie q/r/s straddles a boundary.
    counts = {"s": 3, "r": 3, "q": 3, "u": 1, "t": 1, "p": 5, "z": 0}
    assert popularity_deciles(counts, 4) == {"p": 1, "q": 1, "r": 2, "s": 2, "t": 3, "u": 4}
    # the same whatever order the mapping lists its items in
    assert popularity_deciles(dict(reversed(list(counts.items()))), 4) == popularity_deciles(counts, 4)
    # 10 items in 3 groups -> 4, 3, 3
    ten = {k: v for k, v in COUNTS.items() if v > 0}
    assert [popularity_deciles(ten, 3)[i] for i in "abcdefghij"] == [1, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    # fewer items than deciles: the last groups are empty
    assert popularity_deciles({"m": 2, "n": 2}, 10) == {"m": 1, "n": 2}


def _splits_frame():
    rows = [
        # user, item, position, split
        ("u1", "a", 0, "train"), ("u1", "b", 1, "train"), ("u1", "c", 2, "train"),
        ("u1", "d", 3, "valid"), ("u1", "e", 4, "test"),   # e only ever in a test row -> cold
        ("u2", "a", 0, "train"), ("u2", "b", 1, "train"), ("u2", "c", 2, "train"), ("u2", "d", 3, "train"),
        ("u2", "a", 4, "valid"), ("u2", "z", 5, "test"),   # z only in valid/test rows -> cold
        ("u3", "a", 0, "train"), ("u3", "z", 1, "valid"),  # no test row
        ("u0", "a", 0, "train"), ("u0", "d", 1, "valid"), ("u0", "c", 2, "test"),
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "position", "split"])
    return frame.sample(frac=1.0, random_state=3).reset_index(drop=True)  # row order must not matter


def test_slices_from_splits_test():
    # train counts: a=4 (u0,u1,u2,u3) b=2 c=2 d=1 (u2 only; the valid d's of u0/u1 do not count)
    # 2 deciles over a,b,c,d -> {a,b}=1 {c,d}=2. If valid rows counted, d=3 would be in decile 1.
    s = slices_from_splits(_splits_frame(), "test", n_deciles=2)
    assert s["user_id"].tolist() == ["u0", "u1", "u2"]
    assert s["target"].tolist() == ["c", "e", "z"]
    assert s["cold"].tolist() == [False, True, True]
    assert s["popularity_decile"].tolist() == [2, 0, 0]
    # test history = train + the valid item: u0 1+1=2, u1 3+1=4, u2 4+1=5 (the 4/5 edge)
    assert s["history_bucket"].tolist() == ["1-4", "1-4", "5-9"]


def test_slices_from_splits_valid():
    s = slices_from_splits(_splits_frame(), "valid", n_deciles=2)
    assert s["user_id"].tolist() == ["u0", "u1", "u2", "u3"]
    assert s["target"].tolist() == ["d", "d", "a", "z"]
    assert s["cold"].tolist() == [False, False, False, True]
    assert s["popularity_decile"].tolist() == [2, 2, 1, 0]
    # valid history = train items before the target: 1, 3, 4, 1
    assert s["history_bucket"].tolist() == ["1-4"] * 4


def test_slices_from_splits_history_edge_five():
    # one user with 4 train rows: valid sees 4 ("1-4"), test sees 4 + 1 = 5 ("5-9")
    rows = [("u", f"i{p}", p, "train") for p in range(4)] + [("u", "v", 4, "valid"), ("u", "t", 5, "test")]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "position", "split"])
    assert slices_from_splits(frame, "valid")["history_bucket"].tolist() == ["1-4"]
    assert slices_from_splits(frame, "test")["history_bucket"].tolist() == ["5-9"]


# model A's ranks per slices row (u1 u2 u3 u4 u5 u7 u8 u9); 11 > k=10 is a miss. gains: 1->1, 3->1/2, 7->1/3
RANKS_A = np.array([1, 3, 0, 7, 11, 3, 0, 1])
RANKS_B = np.array([0, 0, 0, 1, 0, 0, 0, 0])


def test_slice_metrics_by_hand():
    out = slice_metrics(_slices(), {"A": RANKS_A, "B": RANKS_B}, k=10)
    assert list(out.columns) == ["slice", "value", "users", "A HR@10", "A NDCG@10", "B HR@10", "B NDCG@10"]
    got = {(r.slice, r.value): (r.users, r._4, r._5, r._6, r._7) for r in out.itertuples()}
    expected = {
        ("all", "all"): (8, 5 / 8, (1 + 1 / 2 + 1 / 3 + 1 / 2 + 1) / 8, 1 / 8, 1 / 8),
        ("cold", "cold"): (2, 1 / 2, (1 / 3) / 2, 1 / 2, 1 / 2),        # u4 (7), u8 (0)
        ("cold", "warm"): (6, 4 / 6, (1 + 1 / 2 + 1 / 2 + 1) / 6, 0, 0),
        ("popularity_decile", "0"): (2, 1 / 2, 1 / 6, 1 / 2, 1 / 2),
        ("popularity_decile", "1"): (2, 1, 1, 0, 0),                      # u1 (1), u9 (1)
        ("popularity_decile", "2"): (1, 1, 1 / 2, 0, 0),                  # u2 (3)
        ("popularity_decile", "3"): (1, 0, 0, 0, 0),                      # u5 (11 > k)
        ("popularity_decile", "4"): (1, 1, 1 / 2, 0, 0),                  # u7 (3)
        ("popularity_decile", "5"): (1, 0, 0, 0, 0),                      # u3 (0)
        ("history", "1-4"): (1, 1, 1, 0, 0),                              # u1
        ("history", "5-9"): (2, 1 / 2, 1 / 4, 0, 0),                      # u2, u3
        ("history", "10-19"): (2, 1 / 2, 1 / 6, 1 / 2, 1 / 2),            # u4, u5
        ("history", "20-49"): (2, 1 / 2, 1 / 4, 0, 0),                    # u7, u8
        ("history", "50+"): (1, 1, 1, 0, 0),                              # u9
    }
    assert list(got) == list(expected)  # row order too
    for key, values in expected.items():
        assert got[key][0] == values[0], key
        assert got[key][1:] == pytest.approx(values[1:]), key
    assert out["value"].map(type).eq(str).all()
    assert (expected[("all", "all")][2]) == pytest.approx(5 / 12)


def test_slice_metrics_smaller_k_and_rank_two():
    # k=3: rank 7 is now a miss; rank 2 gains 1/log2(3)
    ranks = np.array([2, 3, 0, 7, 11, 3, 0, 1])
    out = slice_metrics(_slices(), {"A": ranks}, k=3).set_index(["slice", "value"])
    assert out.loc[("all", "all"), "A HR@3"] == pytest.approx(4 / 8)
    assert out.loc[("all", "all"), "A NDCG@3"] == pytest.approx((1 / math.log2(3) + 1 / 2 + 1 / 2 + 1) / 8)
    assert out.loc[("cold", "cold"), "A HR@3"] == 0


def test_slice_metrics_empty_groups_have_no_row():
    s = user_slices(["u"], ["a"], [7], {"a": 1})
    out = slice_metrics(s, {"M": np.array([1])})
    assert list(zip(out["slice"], out["value"], strict=True)) == [
        ("all", "all"), ("cold", "warm"), ("popularity_decile", "1"), ("history", "5-9")]


def test_slice_metrics_all_row_matches_metrics_ranking():
    # rebuild full rankings from the ranks and check the "all" row against metrics.ranking
    rng = np.random.default_rng(0)
    n, k, target = 8, 10, 999
    ranked = rng.integers(0, 100, size=(n, 20))
    for row, r in enumerate(RANKS_A):
        if r:
            ranked[row, r - 1] = target
    ref = evaluate_rankings(ranked, np.full(n, target), ks=(k,))
    row = slice_metrics(_slices(), {"A": RANKS_A}, k=k).iloc[0]
    assert (row["slice"], row["value"]) == ("all", "all")
    assert row["A HR@10"] == pytest.approx(ref["hr@10"])
    assert row["A NDCG@10"] == pytest.approx(ref["ndcg@10"])


@pytest.mark.parametrize(("call", "match"), [
    (lambda: user_slices(["u1", "u2"], ["a"], [1, 2], COUNTS), "differ in length"),
    (lambda: user_slices(["u1"], ["a"], [1, 2], COUNTS), "differ in length"),
    (lambda: user_slices(["u1"], ["a"], [3], {"a": -1}), "negative count"),
    (lambda: user_slices(["u1"], ["a"], [-2], COUNTS), "history_lengths must be >= 0"),
    (lambda: user_slices(["u1"], ["a"], [0], COUNTS), "history length 0"),
    (lambda: user_slices(["u1"], ["a"], [2.5], COUNTS), "must be an integer"),
    (lambda: user_slices(["u1"], ["a"], [3], COUNTS, n_deciles=0), "n_deciles must be >= 1"),
    (lambda: history_bucket(0), "must be >= 1"),
    (lambda: slices_from_splits(_splits_frame(), "train"), "split must be one of"),
    (lambda: slices_from_splits(_splits_frame(), "tst"), "split must be one of"),
    (lambda: slices_from_splits(_splits_frame().drop(columns="position"), "test"), r"lacks column\(s\) \['position'\]"),
    (lambda: slices_from_splits(_splits_frame().replace({"split": {"valid": "val"}}), "test"), "unknown split label"),
    (lambda: slices_from_splits(pd.concat([_splits_frame(), pd.DataFrame(
        [("u1", "q", 9, "test")], columns=["user_id", "item_id", "position", "split"])]), "test"),
     "more than one 'test' row for user 'u1'"),
    (lambda: slice_metrics(_slices(), {"A": RANKS_A[:-1]}), r"model 'A' have shape \(7,\); expected \(8,\)"),
    (lambda: slice_metrics(_slices(), {"A": RANKS_A.reshape(2, 4)}), "model 'A' have shape"),
    (lambda: slice_metrics(_slices(), {"A": RANKS_A.astype(float)}), "must be integers"),
    (lambda: slice_metrics(_slices(), {"A": RANKS_A - 2}), "must be >= 0"),
    (lambda: slice_metrics(_slices(), {"A": RANKS_A}, k=0), "k must be a positive integer"),
    (lambda: slice_metrics(_slices().drop(columns="cold"), {"A": RANKS_A}), r"lacks column\(s\) \['cold'\]"),
    (lambda: slice_metrics(_slices().iloc[:0], {}), "no rows"),
    (lambda: slice_metrics(_slices().assign(history_bucket="0"), {"A": RANKS_A}), "unknown history_bucket"),
])
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()
