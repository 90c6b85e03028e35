"""Accepted column dtypes per table, and the checks that a frame has those columns with those dtypes.

Names are the ones GE's ``ExpectColumnValuesToBeInTypeList`` understands for pandas: numpy dtype
names, pandas extension dtype classes, and Python type names (checked value by value when the column
has dtype ``object``, e.g. strings read back from DuckDB).
"""

from __future__ import annotations

import pandas as pd

from data_contracts.expectation_runner import Check, Frame

STRING_TYPES: tuple[str, ...] = ("StringDtype", "str")
INT_TYPES: tuple[str, ...] = ("int64", "int32", "Int64Dtype", "Int32Dtype")
FLOAT_TYPES: tuple[str, ...] = ("float64", "float32", "Float64Dtype")

RAW_INTERACTIONS_TYPES: dict[str, tuple[str, ...]] = {
    "user_id": STRING_TYPES,
    "item_id": STRING_TYPES,
    "timestamp": INT_TYPES,
    "rating": FLOAT_TYPES,
}
ITEMS_TYPES: dict[str, tuple[str, ...]] = {
    "item_id": STRING_TYPES,
    "title": STRING_TYPES,
    "description": STRING_TYPES,
    "categories": STRING_TYPES,
    "brand": STRING_TYPES,
    "image_url": STRING_TYPES,  # nulls (no image) are allowed: type checks skip missing values
}
INTERACTION_SPLITS_TYPES: dict[str, tuple[str, ...]] = {
    **RAW_INTERACTIONS_TYPES,
    "position": INT_TYPES,
    "split": STRING_TYPES,
}


def require_frame(df: object, table: str) -> pd.DataFrame:
    """``df`` itself when it is a pandas DataFrame; else a TypeError naming the table."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{table}: expected a pandas DataFrame, got {type(df).__name__}")
    return df


def schema_frame(table: str, df: pd.DataFrame, types: dict[str, tuple[str, ...]]) -> Frame:
    """Checks that the table has rows and every column of ``types`` exists with an accepted dtype."""
    import great_expectations as gx

    checks = [Check(gx.expectations.ExpectTableRowCountToBeBetween(min_value=1), "the table has no rows")]
    checks += [
        Check(gx.expectations.ExpectColumnToExist(column=col),
              f"column {col!r} is missing (have {list(df.columns)})")
        for col in types
    ]
    checks += [
        Check(gx.expectations.ExpectColumnValuesToBeInTypeList(column=col, type_list=list(accepted)),
              f"{col} has the wrong type (expected one of {list(accepted)}) for {{n}} rows")
        for col, accepted in types.items()
        if col in df.columns  # a missing column already fails its existence check
    ]
    return Frame(f"{table}.schema", df, checks)

