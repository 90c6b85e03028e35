"""Semantic IDs: suffix only on collisions, deterministic ordering, lookups both ways, frame round trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.semantic_ids import (
    SemanticIdError,
    SemanticIdTable,
    assign_suffixes,
    format_sid,
    parse_sid,
)

ITEMS = ["a", "b", "c", "d", "e", "f"]
CODES = np.array([[1, 2], [1, 2], [3, 4], [1, 2], [5, 6], [5, 6]])
DIST = np.array([0.5, 0.1, 0.9, 0.3, 0.2, 0.2])


def test_suffix_only_where_codes_collide() -> None:
    table = SemanticIdTable.from_codes(ITEMS, CODES, DIST)
    # group (1,2): b (0.1) < d (0.3) < a (0.5); group (5,6): tie on distance -> item id e < f; c is unique
    assert table.sid_of("b") == (1, 2, 0)
    assert table.sid_of("d") == (1, 2, 1)
    assert table.sid_of("a") == (1, 2, 2)
    assert table.sid_of("c") == (3, 4)
    assert table.sid_of("e") == (5, 6, 0)
    assert table.sid_of("f") == (5, 6, 1)
    assert table.max_suffix == 2
    assert len(set(table.sid_strings())) == len(ITEMS)


def test_without_distances_items_order_by_id() -> None:
    table = SemanticIdTable.from_codes(ITEMS, CODES)
    assert [table.sid_of(i)[-1] for i in ("a", "b", "d")] == [0, 1, 2]


def test_lookup_both_ways() -> None:
    table = SemanticIdTable.from_codes(ITEMS, CODES, DIST)
    for item in ITEMS:
        assert table.item_of(table.sid_of(item)) == item
        assert table.item_of(format_sid(table.sid_of(item))) == item
    assert table.item_of("3-4") == "c"
    with pytest.raises(KeyError, match="no item has semantic ID 1-2"):
        table.item_of((1, 2))  # the bare codes of a collision group name no single item
    with pytest.raises(KeyError, match="unknown item id 'zz'"):
        table.sid_of("zz")
    assert "a" in table and "zz" not in table


def test_frame_layout_and_round_trip() -> None:
    table = SemanticIdTable.from_codes(ITEMS, CODES, DIST)
    frame = table.to_frame()
    assert list(frame.columns) == ["item_id", "sid", "c0", "c1", "suffix"]
    assert str(frame["suffix"].dtype) == "Int64"
    assert frame.set_index("item_id").loc["c", "sid"] == "3-4"
    assert pd.isna(frame.set_index("item_id").loc["c", "suffix"])
    assert frame.set_index("item_id").loc["a", "sid"] == "1-2-2"
    again = SemanticIdTable.from_frame(frame)
    assert again.to_frame().equals(frame)
    assert [again.sid_of(i) for i in ITEMS] == [table.sid_of(i) for i in ITEMS]


def test_no_collisions_means_no_suffix() -> None:
    table = SemanticIdTable.from_codes(["x", "y"], np.array([[0, 1], [1, 0]]))
    assert table.max_suffix == -1
    assert table.to_frame()["suffix"].isna().all()
    assert table.sid_strings() == ["0-1", "1-0"]


def _reference_suffixes(codes: np.ndarray, ids: list[str], dist: np.ndarray) -> list[int]:
    """Slow, obvious reference: group by code tuple in a dict, sort each group by (distance, id)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for row, code in enumerate(map(tuple, codes.tolist())):
        groups.setdefault(code, []).append(row)
    out = [-1] * len(ids)
    for rows in groups.values():
        if len(rows) > 1:
            for rank, row in enumerate(sorted(rows, key=lambda r: (dist[r], ids[r]))):
                out[row] = rank
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_suffix_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 500
    codes = rng.integers(0, 4, size=(n, 3))  # 64 possible codes for 500 items: many collisions
    ids = [f"item{k:04d}" for k in rng.permutation(n)]
    dist = rng.integers(0, 5, size=n).astype(float)  # ties on distance exercise the id tie-break
    assert assign_suffixes(codes, ids, dist).tolist() == _reference_suffixes(codes, ids, dist)


def test_row_order_does_not_change_sids() -> None:
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 3, size=(200, 2))
    ids = [f"i{k}" for k in range(200)]
    dist = rng.random(200)
    perm = rng.permutation(200)
    one = SemanticIdTable.from_codes(ids, codes, dist)
    two = SemanticIdTable.from_codes([ids[p] for p in perm], codes[perm], dist[perm])
    assert all(one.sid_of(i) == two.sid_of(i) for i in ids)


def test_parse_and_format() -> None:
    assert parse_sid("12-200-7-1") == (12, 200, 7, 1)
    assert format_sid((12, 200, 7)) == "12-200-7"
    with pytest.raises(SemanticIdError, match="not a semantic ID string"):
        parse_sid("12-x-7")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SemanticIdTable.from_codes(["a", "a"], np.array([[0], [1]])), "duplicate item ids"),
        (lambda: SemanticIdTable.from_codes(["a", "b"], np.array([[0], [-1]])), ">= 0"),
        (lambda: SemanticIdTable.from_codes(["a"], np.array([[0], [1]])), "1 item ids for 2 rows"),
        (lambda: SemanticIdTable.from_codes(["a", "b"], np.array([0, 1])), "2-D"),
        (lambda: SemanticIdTable.from_codes(["a"], np.array([[0.5]])), "integers"),
        (lambda: SemanticIdTable(["a", "b"], np.array([[0], [0]]), np.array([-1, -1])), "not unique"),
        (lambda: SemanticIdTable.from_frame(pd.DataFrame({"item_id": ["a"]})), "code columns"),
        (lambda: SemanticIdTable.from_frame(pd.DataFrame({"c0": [1]})), "'item_id'"),
        (
            lambda: SemanticIdTable.from_frame(pd.DataFrame({"item_id": ["a"], "sid": ["9"], "c0": [1]})),
            "sid column disagrees",
        ),
    ],
)
def test_bad_input_is_refused(make: object, message: str) -> None:
    with pytest.raises(SemanticIdError, match=message):
        make()  # type: ignore[operator]
