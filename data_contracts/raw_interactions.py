"""Contract of ``raw_interactions``: typed ids and times, valid ratings, unique events, known items."""

from __future__ import annotations

import time

import pandas as pd

from data_contracts.expectation_runner import Check, Frame, compact_strings, run_frames
from data_contracts.known_items import known_items_frame
from data_contracts.result import ContractResult
from data_contracts.table_schema import RAW_INTERACTIONS_TYPES, require_frame, schema_frame

TABLE = "raw_interactions"
#: inclusive bounds of an explicit rating (MovieLens and Amazon both rate 1-5)
RATING_RANGE: tuple[float, float] = (0.0, 5.0)
#: one interaction event; no two rows may share it
EVENT_KEY: tuple[str, ...] = ("user_id", "item_id", "timestamp")


def resolve_now(now: int | None) -> int:
    """``now`` (Unix seconds) checked, or the current time when None."""
    if now is None:
        return int(time.time())
    if isinstance(now, bool) or not isinstance(now, int) or now <= 0:
        raise ValueError(f"now must be a positive int of Unix seconds, got {now!r}")
    return now


def interaction_checks(now: int) -> list[Check]:
    """Row-level rules shared by every interaction table: ids and time present and valid, ratings in range."""
    import great_expectations as gx

    e = gx.expectations
    low, high = RATING_RANGE
    checks = [Check(e.ExpectColumnValuesToNotBeNull(column=col), f"{col} is null for {{n}} rows")
              for col in EVENT_KEY]
    return checks + [
        Check(e.ExpectColumnValuesToBeBetween(column="timestamp", min_value=1),
              "timestamp is not a valid Unix time (<= 0) for {n} rows"),
        Check(e.ExpectColumnValuesToBeBetween(column="timestamp", max_value=now),
              f"timestamp is in the future (after {now}) for {{n}} rows"),
        # NaN ratings (sources without ratings) are skipped by GE's map expectations, as intended
        Check(e.ExpectColumnValuesToBeBetween(column="rating", min_value=low, max_value=high),
              f"rating is outside [{low:g}, {high:g}] for {{n}} rows"),
        # "never" skips GE's null-row filter, which copies the frame; nulls are reported above
        Check(e.ExpectCompoundColumnsToBeUnique(column_list=list(EVENT_KEY), ignore_row_if="never"),
              "(user_id, item_id, timestamp) is duplicated for {n} rows", column="user_id"),
    ]


def validate_raw_interactions(df: pd.DataFrame, *, now: int | None = None,
                              items: pd.DataFrame | None = None) -> ContractResult:
    """Validate a ``raw_interactions`` frame; ``now`` bounds timestamps, ``items`` enables the known-item rule.

    When columns are missing or mistyped only the schema failures are reported: the row rules would
    not be meaningful.
    """
    df = require_frame(df, TABLE)
    now = resolve_now(now)
    schema = run_frames(TABLE, [schema_frame(TABLE, df, RAW_INTERACTIONS_TYPES)])
    if not schema.success:
        return schema
    rows = compact_strings(df, ["user_id", "item_id"])
    frames = [Frame(TABLE, rows, interaction_checks(now), key_columns=EVENT_KEY)]
    if items is not None:
        frames.append(known_items_frame(TABLE, rows, items))
    return run_frames(TABLE, frames, before=schema)
