"""Contract of ``interaction_splits``: k-core holds and each user's sequence is a clean leave-one-out split.

Rules over several rows (k-core, one test/valid event per user, test last, valid second to last,
contiguous positions) are checked with GE expectations on small frames derived with pandas: one row
per user, per item, per test event and per valid event.
"""

from __future__ import annotations

import pandas as pd

from data_contracts.expectation_runner import Check, Frame, compact_strings, run_frames
from data_contracts.known_items import known_items_frame
from data_contracts.raw_interactions import EVENT_KEY, interaction_checks, resolve_now
from data_contracts.result import ContractResult
from data_contracts.table_schema import INTERACTION_SPLITS_TYPES, require_frame, schema_frame

TABLE = "interaction_splits"
SPLITS: tuple[str, ...] = ("train", "valid", "test")


def validate_interaction_splits(df: pd.DataFrame, *, items: pd.DataFrame | None = None, k_core: int = 5,
                                now: int | None = None) -> ContractResult:
    """Validate an ``interaction_splits`` frame built with ``k_core``-core filtering and leave-one-out.

    ``items`` enables the known-item rule; ``now`` bounds timestamps (default: the current time).
    When columns are missing or mistyped only the schema failures are reported.
    """
    df = require_frame(df, TABLE)
    if isinstance(k_core, bool) or not isinstance(k_core, int) or k_core < 1:
        raise ValueError(f"k_core must be an int >= 1, got {k_core!r}")
    now = resolve_now(now)
    schema = run_frames(TABLE, [schema_frame(TABLE, df, INTERACTION_SPLITS_TYPES)])
    if not schema.success:
        return schema
    rows = compact_strings(df, ["user_id", "item_id", "split"])
    frames = [_rows_frame(rows, now), *_sequence_frames(rows, k_core)]
    if items is not None:
        frames.append(known_items_frame(TABLE, rows, items))
    return run_frames(TABLE, frames, before=schema)


def _rows_frame(df: pd.DataFrame, now: int) -> Frame:
    import great_expectations as gx

    e = gx.expectations
    checks = interaction_checks(now) + [
        Check(e.ExpectColumnValuesToNotBeNull(column=col), f"{col} is null for {{n}} rows")
        for col in ("position", "split")
    ] + [
        Check(e.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
              f"split is not one of {list(SPLITS)} for {{n}} rows"),
        Check(e.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "position"], ignore_row_if="never"),
              "(user_id, position) appears more than once (an event in two splits) for {n} rows",
              column="position", example_columns=("split",)),
    ]
    return Frame(TABLE, df, checks, key_columns=(*EVENT_KEY, "position", "split"))


def _sequence_frames(df: pd.DataFrame, k_core: int) -> list[Frame]:
    import great_expectations as gx

    e = gx.expectations
    split = df["split"]
    train_ts = df["timestamp"].astype("Int64").where(split.eq("train"))  # NA, not float NaN, off train
    per_user = (
        pd.DataFrame({"user_id": df["user_id"], "position": df["position"], "timestamp": df["timestamp"],
                      "is_test": split.eq("test").fillna(False).astype("int64"),
                      "is_valid": split.eq("valid").fillna(False).astype("int64"), "train_ts": train_ts})
        .groupby("user_id", sort=False, observed=True)
        .agg(n_events=("position", "size"), n_test=("is_test", "sum"), n_valid=("is_valid", "sum"),
             min_position=("position", "min"), max_position=("position", "max"),
             last_timestamp=("timestamp", "max"), max_train_timestamp=("train_ts", "max"))
        .reset_index()
    )
    per_user["contiguous_max_position"] = per_user["n_events"] - 1
    user_checks = [
        Check(e.ExpectColumnValuesToBeBetween(column="n_events", min_value=k_core),
              f"{{n}} users have fewer than {k_core} events (k-core)", column="user_id"),
        Check(e.ExpectColumnValuesToBeBetween(column="n_test", min_value=1, max_value=1),
              "{n} users do not have exactly one test event", column="split"),
        Check(e.ExpectColumnValuesToBeBetween(column="n_valid", min_value=1, max_value=1),
              "{n} users do not have exactly one valid event", column="split"),
        Check(e.ExpectColumnValuesToBeBetween(column="min_position", min_value=0, max_value=0),
              "{n} users have positions that do not start at 0", column="position"),
        Check(e.ExpectColumnPairValuesToBeEqual(column_A="max_position", column_B="contiguous_max_position"),
              "{n} users have a gap in positions (not 0..n-1)", column="position",
              example_columns=("n_events",)),
    ]

    item_counts = df["item_id"].value_counts(sort=False)
    item_counts = item_counts[item_counts > 0]  # a categorical counts unused categories too
    per_item = pd.DataFrame({"item_id": item_counts.index.to_numpy(), "n_events": item_counts.to_numpy()})
    item_checks = [Check(e.ExpectColumnValuesToBeBetween(column="n_events", min_value=k_core),
                         f"{{n}} items have fewer than {k_core} events (k-core)", column="item_id")]

    last = per_user[["user_id", "max_position", "last_timestamp", "max_train_timestamp"]]
    event_columns = ["user_id", "item_id", "position", "timestamp"]
    test = df.loc[split.eq("test").fillna(False), event_columns].merge(last, on="user_id", how="left")
    test_checks = [
        Check(e.ExpectColumnPairValuesToBeEqual(column_A="position", column_B="max_position"),
              "{n} test events are not at the user's last position", column="position"),
        Check(e.ExpectColumnPairValuesToBeEqual(column_A="timestamp", column_B="last_timestamp"),
              "{n} test events are not the user's latest event", column="timestamp"),
    ]
    valid = df.loc[split.eq("valid").fillna(False), event_columns].merge(last, on="user_id", how="left")
    valid["second_last_position"] = valid["max_position"] - 1
    valid_checks = [
        Check(e.ExpectColumnPairValuesToBeEqual(column_A="position", column_B="second_last_position"),
              "{n} valid events are not at the user's second-to-last position", column="position"),
        # users with no train event (possible only when k_core < 3) have nothing to compare against
        Check(e.ExpectColumnPairValuesAToBeGreaterThanB(column_A="timestamp", column_B="max_train_timestamp",
                                                         or_equal=True, ignore_row_if="either_value_is_missing"),
              "{n} valid events are earlier than one of the user's train events", column="timestamp"),
    ]
    return [
        Frame(f"{TABLE}.per_user", per_user, user_checks, key_columns=("user_id",)),
        Frame(f"{TABLE}.per_item", per_item, item_checks, key_columns=("item_id",)),
        Frame(f"{TABLE}.test_events", test, test_checks, key_columns=("user_id", "item_id")),
        Frame(f"{TABLE}.valid_events", valid, valid_checks, key_columns=("user_id", "item_id")),
    ]
