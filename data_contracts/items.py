"""Contract of ``items``: unique non-null ids and a non-blank title for every item."""

from __future__ import annotations

import pandas as pd

from data_contracts.expectation_runner import Check, Frame, run_frames
from data_contracts.result import ContractResult
from data_contracts.table_schema import ITEMS_TYPES, require_frame, schema_frame

TABLE = "items"


def validate_items(df: pd.DataFrame) -> ContractResult:
    """Validate an ``items`` frame (schema first; row rules only when the schema holds)."""
    import great_expectations as gx

    e = gx.expectations
    df = require_frame(df, TABLE)
    schema = run_frames(TABLE, [schema_frame(TABLE, df, ITEMS_TYPES)])
    if not schema.success:
        return schema
    checks = [
        Check(e.ExpectColumnValuesToNotBeNull(column="item_id"), "item_id is null for {n} rows"),
        Check(e.ExpectColumnValuesToBeUnique(column="item_id"), "item_id is duplicated for {n} rows"),
        Check(e.ExpectColumnValuesToNotBeNull(column="title"), "title is null for {n} rows"),
        Check(e.ExpectColumnValuesToMatchRegex(column="title", regex=r"\S"),
              "title is empty or blank for {n} rows"),
    ]
    return run_frames(TABLE, [Frame(TABLE, df, checks, key_columns=("item_id", "title"))], before=schema)
