"""Data contracts: a valid table passes each suite, and every rule catches a table crafted to break it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from data_contracts import (  # noqa: E402
    RATING_RANGE,
    ContractResult,
    ExpectationFailure,
    validate_interaction_splits,
    validate_items,
    validate_raw_interactions,
)

NOW = 1_700_000_000
T0 = 1_600_000_000


# ---------------------------------------------------------------- builders of valid tables


def make_raw(n_users: int = 10, events_per_user: int = 7, n_items: int = 7, seed: int = 0) -> pd.DataFrame:
    """A raw_interactions frame in the canonical dtypes: every user rates every item once (10 events each)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for j in range(events_per_user):
            rows.append((f"u{u}", f"i{(u + 3 * j) % n_items}", T0 + 1000 * u + 100 * j))
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    df["rating"] = rng.integers(1, 6, len(df)).astype("float64")
    df.loc[::5, "rating"] = np.nan  # sources without ratings give NaN, which is allowed
    return df.astype({"user_id": "string", "item_id": "string", "timestamp": "int64"})


def make_items(n_items: int = 10) -> pd.DataFrame:
    ids = [f"i{i}" for i in range(n_items)]
    df = pd.DataFrame({
        "item_id": ids,
        "title": [f"Item {i}" for i in range(n_items)],
        "description": ["" for _ in ids],
        "categories": ["Lab > Glassware" for _ in ids],
        "brand": ["" for _ in ids],
        "image_url": [f"http://img/{i}.jpg" if i % 2 else None for i in range(n_items)],
    })
    return df.astype("string")


def leave_one_out(raw: pd.DataFrame) -> pd.DataFrame:
    """Reference split: chronological positions per user; test = last, valid = second to last."""
    df = raw.sort_values(["user_id", "timestamp", "item_id"], kind="stable").reset_index(drop=True)
    df["position"] = df.groupby("user_id").cumcount().astype("int64")
    n = df.groupby("user_id")["position"].transform("size")
    df["split"] = np.where(df["position"] == n - 1, "test",
                           np.where(df["position"] == n - 2, "valid", "train"))
    return df.astype({"split": "string"})


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return make_raw()


@pytest.fixture(scope="module")
def items() -> pd.DataFrame:
    return make_items()


@pytest.fixture(scope="module")
def splits(raw: pd.DataFrame) -> pd.DataFrame:
    return leave_one_out(raw)


def failure(result: ContractResult, expectation: str, column: str) -> ExpectationFailure:
    """The one failure of ``expectation`` on ``column``; fails the test when absent or ambiguous."""
    assert not result.success, result.summary()
    found = [f for f in result.failures if f.expectation == expectation and f.column == column]
    assert len(found) == 1, f"want one {expectation} on {column}, got:\n{result.summary()}"
    return found[0]


def rows_of(df: pd.DataFrame, mask: pd.Series) -> list[int]:
    return list(np.flatnonzero(mask.to_numpy()))


def user_rows(df: pd.DataFrame, user: str, split: str) -> list[int]:
    return rows_of(df, (df["user_id"] == user) & (df["split"] == split))


# ---------------------------------------------------------------- raw_interactions


def test_valid_raw_interactions_pass(raw: pd.DataFrame, items: pd.DataFrame) -> None:
    result = validate_raw_interactions(raw, now=NOW, items=items)
    assert result.success, result.summary()
    assert result.failures == []
    assert result.table == "raw_interactions"
    assert result.evaluated >= 15  # schema + row rules + known items all ran
    assert validate_raw_interactions(raw, now=NOW).evaluated == result.evaluated - 1


def test_raw_interactions_as_object_strings_pass(raw: pd.DataFrame) -> None:
    # frames read back from DuckDB carry object-dtype strings
    result = validate_raw_interactions(raw.astype({"user_id": object, "item_id": object}), now=NOW)
    assert result.success, result.summary()


def test_null_user_id_fails(raw: pd.DataFrame) -> None:
    bad = raw.copy()
    bad.loc[3, "user_id"] = pd.NA
    f = failure(validate_raw_interactions(bad, now=NOW), "expect_column_values_to_not_be_null", "user_id")
    assert f.unexpected_count == 1
    assert f.examples[0]["user_id"] is None
    assert f.examples[0]["item_id"] == raw.loc[3, "item_id"]
    assert "user_id is null for 1 rows" == f.description


def test_future_timestamp_fails(raw: pd.DataFrame) -> None:
    bad = raw.copy()
    bad.loc[[2, 9], "timestamp"] = NOW + 3600
    result = validate_raw_interactions(bad, now=NOW)
    f = failure(result, "expect_column_values_to_be_between", "timestamp")
    assert f.unexpected_count == 2
    assert [e["timestamp"] for e in f.examples] == [NOW + 3600, NOW + 3600]
    assert "future" in f.description and str(NOW) in f.description
    assert len(result.failures) == 1


def test_now_defaults_to_the_current_time(raw: pd.DataFrame) -> None:
    bad = raw.copy()
    tomorrow = int(time.time()) + 86_400
    bad.loc[0, "timestamp"] = tomorrow
    f = failure(validate_raw_interactions(bad), "expect_column_values_to_be_between", "timestamp")
    assert f.unexpected_count == 1
    assert f.examples[0]["timestamp"] == tomorrow


def test_non_positive_timestamp_fails(raw: pd.DataFrame) -> None:
    bad = raw.copy()
    bad.loc[4, "timestamp"] = 0
    f = failure(validate_raw_interactions(bad, now=NOW), "expect_column_values_to_be_between", "timestamp")
    assert f.unexpected_count == 1
    assert f.examples[0]["timestamp"] == 0
    assert "<= 0" in f.description


def test_rating_out_of_range_fails(raw: pd.DataFrame) -> None:
    bad = raw.copy()
    bad.loc[1, "rating"] = RATING_RANGE[1] + 2
    f = failure(validate_raw_interactions(bad, now=NOW), "expect_column_values_to_be_between", "rating")
    assert f.unexpected_count == 1
    assert f.examples[0]["rating"] == RATING_RANGE[1] + 2


def test_duplicate_event_fails(raw: pd.DataFrame) -> None:
    bad = pd.concat([raw, raw.iloc[[6]]], ignore_index=True)
    f = failure(validate_raw_interactions(bad, now=NOW), "expect_compound_columns_to_be_unique", "user_id")
    assert f.unexpected_count == 2  # both copies of the event
    key = {c: raw.loc[6, c] for c in ("user_id", "item_id")}
    assert all({c: e[c] for c in key} == key for e in f.examples)
    assert f.examples[0]["timestamp"] == int(raw.loc[6, "timestamp"])


def test_unknown_item_fails(raw: pd.DataFrame, items: pd.DataFrame) -> None:
    bad = raw.copy()
    bad.loc[[0, 5], "item_id"] = "ghost"
    f = failure(validate_raw_interactions(bad, now=NOW, items=items),
                "expect_column_values_to_be_in_set", "item_id")
    assert f.unexpected_count == 1  # distinct unknown ids
    assert f.examples == [{"item_id": "ghost", "known_item": False, "n_events": 2}]


def test_missing_column_reports_only_the_schema(raw: pd.DataFrame) -> None:
    result = validate_raw_interactions(raw.drop(columns=["rating"]), now=NOW)
    f = failure(result, "expect_column_to_exist", "rating")
    assert f.unexpected_count == len(raw)
    assert "'rating' is missing" in f.description
    assert len(result.failures) == 1
    assert result.evaluated < validate_raw_interactions(raw, now=NOW).evaluated


def test_wrong_column_dtype_fails(raw: pd.DataFrame) -> None:
    f = failure(validate_raw_interactions(raw.astype({"timestamp": "float64"}), now=NOW),
                "expect_column_values_to_be_in_type_list", "timestamp")
    assert f.examples == ["float64"]
    assert f.unexpected_count == len(raw)


def test_non_string_value_in_object_column_fails(raw: pd.DataFrame) -> None:
    bad = raw.astype({"item_id": object})
    bad.loc[2, "item_id"] = 42
    f = failure(validate_raw_interactions(bad, now=NOW), "expect_column_values_to_be_in_type_list", "item_id")
    assert f.unexpected_count == 1
    assert f.examples == [{"item_id": 42}]


def test_empty_table_fails(raw: pd.DataFrame) -> None:
    f = failure(validate_raw_interactions(raw.iloc[:0], now=NOW),
                "expect_table_row_count_to_be_between", None)
    assert f.unexpected_count == 0
    assert f.examples == [0]


def test_raw_interactions_bad_arguments(raw: pd.DataFrame, items: pd.DataFrame) -> None:
    with pytest.raises(TypeError, match="raw_interactions.*DataFrame.*list"):
        validate_raw_interactions([1, 2], now=NOW)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="now must be a positive int"):
        validate_raw_interactions(raw, now=-5)
    with pytest.raises(ValueError, match="items has no 'item_id' column"):
        validate_raw_interactions(raw, now=NOW, items=items.drop(columns=["item_id"]))


# ---------------------------------------------------------------- items


def test_valid_items_pass(items: pd.DataFrame) -> None:
    result = validate_items(items)
    assert result.success, result.summary()
    assert result.evaluated >= 10


def test_null_item_id_fails(items: pd.DataFrame) -> None:
    bad = items.copy()
    bad.loc[4, "item_id"] = pd.NA
    f = failure(validate_items(bad), "expect_column_values_to_not_be_null", "item_id")
    assert f.unexpected_count == 1
    assert f.examples == [{"item_id": None, "title": "Item 4"}]


def test_duplicate_item_id_fails(items: pd.DataFrame) -> None:
    bad = items.copy()
    bad.loc[7, "item_id"] = "i2"
    f = failure(validate_items(bad), "expect_column_values_to_be_unique", "item_id")
    assert f.unexpected_count == 2
    assert [e["item_id"] for e in f.examples] == ["i2", "i2"]


def test_null_title_fails(items: pd.DataFrame) -> None:
    bad = items.copy()
    bad.loc[1, "title"] = pd.NA
    f = failure(validate_items(bad), "expect_column_values_to_not_be_null", "title")
    assert f.unexpected_count == 1
    assert f.examples == [{"item_id": "i1", "title": None}]


@pytest.mark.parametrize("title", ["", "   ", "\t"])
def test_blank_title_fails(items: pd.DataFrame, title: str) -> None:
    bad = items.copy()
    bad.loc[3, "title"] = title
    f = failure(validate_items(bad), "expect_column_values_to_match_regex", "title")
    assert f.unexpected_count == 1
    assert f.examples == [{"item_id": "i3", "title": title}]


def test_items_missing_column_and_bad_argument(items: pd.DataFrame) -> None:
    f = failure(validate_items(items.drop(columns=["title"])), "expect_column_to_exist", "title")
    assert "'title' is missing" in f.description
    with pytest.raises(TypeError, match="items: expected a pandas DataFrame"):
        validate_items({"item_id": ["a"]})  # type: ignore[arg-type]


# ---------------------------------------------------------------- interaction_splits


def test_valid_splits_pass(splits: pd.DataFrame, items: pd.DataFrame) -> None:
    result = validate_interaction_splits(splits, items=items, k_core=5, now=NOW)
    assert result.success, result.summary()
    assert result.table == "interaction_splits"
    assert result.evaluated >= 30


def test_null_user_id_in_splits_fails(splits: pd.DataFrame) -> None:
    bad = splits.copy()
    bad.loc[10, "user_id"] = pd.NA
    result = validate_interaction_splits(bad, now=NOW)
    f = failure(result, "expect_column_values_to_not_be_null", "user_id")
    assert f.unexpected_count == 1
    assert f.examples[0]["user_id"] is None and f.examples[0]["position"] == splits.loc[10, "position"]


def test_unknown_split_label_fails(splits: pd.DataFrame) -> None:
    bad = splits.copy()
    bad.loc[0, "split"] = "holdout"
    f = failure(validate_interaction_splits(bad, now=NOW), "expect_column_values_to_be_in_set", "split")
    assert f.unexpected_count == 1
    assert f.examples[0]["split"] == "holdout"


def test_duplicate_event_in_splits_fails(splits: pd.DataFrame) -> None:
    bad = splits.copy()
    first, second = user_rows(bad, "u1", "train")[:2]
    bad.loc[second, ["item_id", "timestamp"]] = bad.loc[first, ["item_id", "timestamp"]].to_numpy()
    f = failure(validate_interaction_splits(bad, now=NOW), "expect_compound_columns_to_be_unique", "user_id")
    assert f.unexpected_count == 2
    assert {e["position"] for e in f.examples} == {0, 1}


def test_unknown_item_in_splits_fails(splits: pd.DataFrame, items: pd.DataFrame) -> None:
    result = validate_interaction_splits(splits, items=items.iloc[1:], now=NOW)
    f = failure(result, "expect_column_values_to_be_in_set", "item_id")
    assert f.unexpected_count == 1
    assert f.examples[0]["item_id"] == "i0"
    assert f.examples[0]["n_events"] == int((splits["item_id"] == "i0").sum())


def test_user_below_k_core_fails(splits: pd.DataFrame) -> None:
    raw = make_raw()
    keep = ~((raw["user_id"] == "u2") & (raw["timestamp"] < T0 + 2000 + 300))  # u2 keeps 4 events
    bad = leave_one_out(raw[keep])
    result = validate_interaction_splits(bad, k_core=5, now=NOW)
    f = failure(result, "expect_column_values_to_be_between", "user_id")
    assert f.unexpected_count == 1
    assert f.examples == [{"user_id": "u2", "n_events": 4}]
    assert "fewer than 5 events" in f.description
    assert validate_interaction_splits(bad, k_core=4, now=NOW).success


def test_item_below_k_core_fails(splits: pd.DataFrame) -> None:
    bad = splits.copy()
    bad.loc[[rows_of(bad, bad["user_id"] == u)[0] for u in ("u0", "u1", "u2", "u3")], "item_id"] = "rare"
    f = failure(validate_interaction_splits(bad, k_core=5, now=NOW),
                "expect_column_values_to_be_between", "item_id")
    assert f.unexpected_count == 1
    assert f.examples == [{"item_id": "rare", "n_events": 4}]


def test_test_event_not_last_fails(splits: pd.DataFrame) -> None:
    bad = splits.copy()
    test_row, train_row = user_rows(bad, "u3", "test")[0], user_rows(bad, "u3", "train")[0]
    bad.loc[[test_row, train_row], "split"] = ["train", "test"]
    result = validate_interaction_splits(bad, now=NOW)
    f = failure(result, "expect_column_pair_values_to_be_equal", "position")
    assert f.unexpected_count == 1
    assert f.examples[0]["user_id"] == "u3"
    assert f.examples[0]["position"] == 0 and f.examples[0]["max_position"] == 6
    ts = failure(result, "expect_column_pair_values_to_be_equal", "timestamp")
    assert ts.examples[0]["timestamp"] == int(splits.loc[train_row, "timestamp"])


def test_test_event_not_latest_timestamp_fails(splits: pd.DataFrame) -> None:
    bad = splits.copy()
    test_row = user_rows(bad, "u4", "test")[0]
    bad.loc[test_row, "timestamp"] = T0 + 4000 + 50  # earlier than the user's later train events
    result = validate_interaction_splits(bad, now=NOW)
    f = failure(result, "expect_column_pair_values_to_be_equal", "timestamp")
    assert f.unexpected_count == 1
    assert f.examples[0] == {"user_id": "u4", "item_id": splits.loc[test_row, "item_id"],
                             "timestamp": T0 + 4050, "last_timestamp": T0 + 4500}


def test_user_with_two_test_rows_fails(splits: pd.DataFrame) -> None:
    bad = splits.copy()
    bad.loc[user_rows(bad, "u5", "train")[-1], "split"] = "test"
    result = validate_interaction_splits(bad, now=NOW)
    f = failure(result, "expect_column_values_to_be_between", "split")
    assert f.unexpected_count == 1
    assert f.examples == [{"user_id": "u5", "n_test": 2}]
    assert "exactly one test event" in f.description


def test_user_without_valid_row_fails(splits: pd.DataFrame) -> None:
    bad = splits.copy()
    bad.loc[user_rows(bad, "u6", "valid"), "split"] = "train"
    f = failure(validate_interaction_splits(bad, now=NOW), "expect_column_values_to_be_between", "split")
    assert f.examples == [{"user_id": "u6", "n_valid": 0}]


def test_valid_event_not_second_to_last_fails(splits: pd.DataFrame) -> None:
    bad = splits.copy()
    valid_row, train_row = user_rows(bad, "u7", "valid")[0], user_rows(bad, "u7", "train")[1]
    bad.loc[[valid_row, train_row], "split"] = ["train", "valid"]
    result = validate_interaction_splits(bad, now=NOW)
    f = failure(result, "expect_column_pair_values_to_be_equal", "position")
    assert f.unexpected_count == 1
    assert f.examples[0]["position"] == 1 and f.examples[0]["second_last_position"] == 5
    earlier = failure(result, "expect_column_pair_values_a_to_be_greater_than_b", "timestamp")
    assert earlier.examples[0]["max_train_timestamp"] == T0 + 7000 + 500


def test_gap_in_positions_fails(splits: pd.DataFrame) -> None:
    bad = splits.copy()
    last_two = user_rows(bad, "u1", "valid") + user_rows(bad, "u1", "test")
    bad.loc[last_two, "position"] += 1  # positions 0..4, 6, 7
    result = validate_interaction_splits(bad, now=NOW)
    f = failure(result, "expect_column_pair_values_to_be_equal", "position")
    assert f.unexpected_count == 1
    assert f.examples == [{"user_id": "u1", "max_position": 7, "contiguous_max_position": 6, "n_events": 7}]
    assert len(result.failures) == 1


def test_positions_not_starting_at_zero_fail(splits: pd.DataFrame) -> None:
    bad = splits.copy()
    bad.loc[bad["user_id"] == "u0", "position"] += 1
    result = validate_interaction_splits(bad, now=NOW)
    starts = [f for f in result.failures if "do not start at 0" in f.description]
    assert len(starts) == 1 and starts[0].examples == [{"user_id": "u0", "min_position": 1}]
    assert starts[0].expectation == "expect_column_values_to_be_between"


def test_event_in_two_splits_fails(splits: pd.DataFrame) -> None:
    bad = splits.copy()
    valid_row = user_rows(bad, "u2", "valid")[0]
    bad.loc[user_rows(bad, "u2", "train")[-1], "position"] = bad.loc[valid_row, "position"]
    result = validate_interaction_splits(bad, now=NOW)
    f = failure(result, "expect_compound_columns_to_be_unique", "position")
    assert f.unexpected_count == 2
    assert {e["split"] for e in f.examples} == {"train", "valid"}
    assert {e["position"] for e in f.examples} == {5}


def test_future_timestamp_in_splits_fails(splits: pd.DataFrame) -> None:
    bad = splits.copy()
    bad.loc[0, "timestamp"] = NOW + 1
    f = failure(validate_interaction_splits(bad, now=NOW), "expect_column_values_to_be_between", "timestamp")
    assert f.examples[0]["timestamp"] == NOW + 1


def test_splits_schema_failure_stops_early(splits: pd.DataFrame) -> None:
    result = validate_interaction_splits(splits.drop(columns=["position"]), now=NOW)
    failure(result, "expect_column_to_exist", "position")
    assert len(result.failures) == 1
    assert result.evaluated < 15


def test_splits_bad_arguments(splits: pd.DataFrame) -> None:
    for k in (0, -1, "5", 2.5, True):
        with pytest.raises(ValueError, match="k_core must be an int >= 1"):
            validate_interaction_splits(splits, k_core=k, now=NOW)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="interaction_splits: expected a pandas DataFrame"):
        validate_interaction_splits(splits.to_dict(), now=NOW)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="items must be a pandas DataFrame"):
        validate_interaction_splits(splits, items=["i0"], now=NOW)  # type: ignore[arg-type]


@pytest.mark.slow
@settings(max_examples=4, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(st.lists(st.integers(min_value=3, max_value=9), min_size=2, max_size=6), st.integers(0, 10_000))
def test_any_leave_one_out_split_passes(events_per_user: list[int], seed: int) -> None:
    """Splits built the canonical way pass, with timestamp ties and uneven sequence lengths.

    k is the largest k-core the data satisfies (the least active user or item); shrinking is off
    because each example runs whole GE suites.
    """
    rng = np.random.default_rng(seed)
    rows = [(f"u{u}", f"i{j}", T0 + int(rng.integers(0, 4)) * 60)
            for u, n in enumerate(events_per_user) for j in range(n)]
    raw = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).assign(rating=np.nan)
    k = int(min(raw["user_id"].value_counts().min(), raw["item_id"].value_counts().min()))
    splits = leave_one_out(raw.astype({"user_id": "string", "item_id": "string"}))
    result = validate_interaction_splits(splits, k_core=k, now=NOW)
    assert result.success, result.summary()
    # k is some user's or item's event count, so k + 1 must break the k-core
    assert not validate_interaction_splits(splits, k_core=k + 1, now=NOW).success


# ---------------------------------------------------------------- result object and runtime behaviour


def test_metadata_and_summary(splits: pd.DataFrame) -> None:
    bad = splits.copy()
    bad.loc[0, "split"] = "holdout"
    bad.loc[1, "rating"] = 9.0
    result = validate_interaction_splits(bad, now=NOW)
    meta = result.to_metadata()
    assert json.loads(json.dumps(meta)) == meta  # plain JSON types only
    assert meta["success"] is False and meta["failed"] == len(result.failures) >= 2
    assert meta["evaluated"] == result.evaluated
    lines = result.summary().splitlines()
    assert len(lines) == len(result.failures)
    assert all(line.startswith("interaction_splits: ") for line in lines)
    assert any("holdout" in line for line in lines)
    ok = validate_interaction_splits(splits, now=NOW)
    assert ok.to_metadata()["failures"] == [] and "passed" in ok.summary()


def test_results_are_deterministic(splits: pd.DataFrame) -> None:
    bad = splits.copy()
    bad.loc[[0, 3], "timestamp"] = NOW + 10
    first = validate_interaction_splits(bad, now=NOW).to_metadata()
    assert first == validate_interaction_splits(bad, now=NOW).to_metadata()


def test_input_frame_is_not_modified(splits: pd.DataFrame, items: pd.DataFrame) -> None:
    before = splits.copy()
    validate_interaction_splits(splits, items=items, now=NOW)
    pd.testing.assert_frame_equal(splits, before)


def test_no_files_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raw: pd.DataFrame) -> None:
    monkeypatch.chdir(tmp_path)
    assert validate_raw_interactions(raw, now=NOW).success
    assert list(tmp_path.iterdir()) == []


def test_unevaluable_expectation_raises_a_named_error() -> None:
    import great_expectations as gx

    from data_contracts.expectation_runner import Check, ContractEvaluationError, Frame, run_frame

    check = Check(gx.expectations.ExpectColumnValuesToNotBeNull(column="nope"), "nope is null for {n} rows")
    with pytest.raises(ContractEvaluationError, match="demo: expect_column_values_to_not_be_null.*nope"):
        run_frame(Frame("demo", pd.DataFrame({"a": [1, 2]}), [check]))


def test_great_expectations_is_imported_lazily() -> None:
    code = "import sys, data_contracts; print('great_expectations' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False"
