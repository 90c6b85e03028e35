"""k-core and leave-one-out split against hand-computed cases."""

import pandas as pd
import pytest
from pydantic import ValidationError

from ingestion.splits import SplitSettings, split_interactions


def frame(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"]).astype(
        {"user_id": "string", "item_id": "string", "timestamp": "int64", "rating": "float64"})


def test_leave_one_out_is_chronological_with_source_order_tiebreak():
    df = frame([
        ("u1", "c", 30, 5), ("u1", "a", 10, 4), ("u1", "b", 20, 3), ("u1", "d", 40, 2),
        ("u2", "b", 5, 1), ("u2", "a", 5, 1), ("u2", "c", 7, 1),  # b and a tie at t=5 → b (listed first) first
    ])
    out, stats = split_interactions(df, k_core=1)
    got = {u: list(zip(g["item_id"], g["split"], g["position"], strict=True))
           for u, g in out.groupby("user_id")}
    assert got["u1"] == [("a", "train", 0), ("b", "train", 1), ("c", "valid", 2), ("d", "test", 3)]
    assert got["u2"] == [("b", "train", 0), ("a", "valid", 1), ("c", "test", 2)]
    assert stats.users == 2 and stats.items == 4 and stats.interactions == 7
    assert stats.density == pytest.approx(7 / 8)


def test_iterative_kcore_cascades():
    # k=3. Item "x" has 2 events → removed; that pushes u3 under 3 → u3 removed; that pushes item "z"
    # under 3 → removed; then u1 and u2 still have 3 items (a, b, c) each... hand-computed below.
    rows = []
    for u in ("u1", "u2", "u4"):
        rows += [(u, "a", 1, 5), (u, "b", 2, 5), (u, "c", 3, 5)]
    rows += [("u1", "x", 4, 5), ("u3", "x", 1, 5), ("u3", "z", 2, 5), ("u3", "a", 3, 5),
             ("u2", "z", 5, 5), ("u4", "z", 6, 5)]
    out, stats = split_interactions(frame(rows), k_core=3)
    # round 1: x (2) removed; z has 3 (u3,u2,u4), u3 has 3 → after removal u3 has z,a = 2
    # round 2: u3 removed → z has 2 → round 3: z removed → a,b,c have 3 each; users have 3 each
    assert sorted(out["item_id"].unique()) == ["a", "b", "c"]
    assert sorted(out["user_id"].unique()) == ["u1", "u2", "u4"]
    assert stats.kcore_rounds >= 3
    assert stats.kcore_removed == len(rows) - 9
    assert (out.groupby("item_id").size() >= 3).all() and (out.groupby("user_id").size() >= 3).all()


def test_dedup_keeps_first_user_item_interaction():
    df = frame([("u", "a", 1, 2), ("u", "b", 2, 5), ("u", "a", 3, 4), ("u", "c", 4, 5)])
    out, stats = split_interactions(df, k_core=1)
    assert list(out["item_id"]) == ["a", "b", "c"]
    assert list(out["timestamp"]) == [1, 2, 4]
    assert stats.duplicates_removed == 1
    out_ev, stats_ev = split_interactions(df, k_core=1, dedup="event")
    assert list(out_ev["item_id"]) == ["a", "b", "a", "c"] and stats_ev.duplicates_removed == 0


def test_unknown_items_removed_and_counted():
    df = frame([("u", "a", 1, 5), ("u", "b", 2, 5), ("u", "ghost", 3, 5), ("u", "c", 4, 5)])
    out, stats = split_interactions(df, k_core=1, known_items=pd.Series(["a", "b", "c"]))
    assert "ghost" not in set(out["item_id"]) and stats.unknown_items_removed == 1


def test_users_too_short_to_split_are_dropped_even_with_k1():
    df = frame([("u", "a", 1, 5), ("u", "b", 2, 5), ("v", "a", 1, 5), ("v", "b", 2, 5), ("v", "c", 3, 5)])
    out, _ = split_interactions(df, k_core=1)
    assert set(out["user_id"]) == {"v"}


def test_nothing_survives_gives_clear_error():
    df = frame([("u", "a", 1, 5), ("u", "b", 2, 5), ("u", "c", 3, 5)])
    with pytest.raises(ValueError, match="5-core"):
        split_interactions(df, k_core=5)


def test_missing_columns_named():
    with pytest.raises(KeyError, match="timestamp"):
        split_interactions(pd.DataFrame({"user_id": ["u"], "item_id": ["a"], "rating": [1.0]}))


def test_split_settings_are_the_one_definition_and_refuse_bad_values():
    assert SplitSettings() == SplitSettings(k_core=5, dedup="user_item", tie_warning_share=0.05)
    df = frame([("u", "a", 1, 5), ("u", "a", 2, 5), ("u", "b", 3, 5), ("u", "c", 4, 5)])
    by_settings, _ = split_interactions(df, SplitSettings(k_core=1, dedup="event"))
    by_keywords, _ = split_interactions(df, k_core=1, dedup="event")
    pd.testing.assert_frame_equal(by_settings, by_keywords)
    assert len(by_settings) == 4  # "event" keeps the repeat purchase of a
    overridden, _ = split_interactions(df, SplitSettings(k_core=1, dedup="event"), dedup="user_item")
    assert len(overridden) == 3
    with pytest.raises(ValidationError, match="k_core"):
        split_interactions(df, k_core=0)
    with pytest.raises(ValidationError, match="dedup"):
        SplitSettings(dedup="none")
    with pytest.raises(ValidationError, match="max_history"):
        SplitSettings(max_history=20)  # the history cap is the generator's setting
