"""Canonical table schemas shared by every loader, the warehouse and the data contracts.

Every source format is converted to these two frames before it reaches the warehouse, so the
rest of the pipeline never sees a source-specific column.
"""

from __future__ import annotations

import pandas as pd

#: interactions: one row per (user, item, time) event.
INTERACTION_COLUMNS: dict[str, str] = {
    "user_id": "string",  # source user id, as text
    "item_id": "string",  # source item id (ASIN, movie id, ...), as text
    "timestamp": "int64",  # Unix seconds (UTC); sources without time get their sequence order
    "rating": "float64",  # explicit rating when the source has one, else NaN
}

#: items: one row per item.
ITEM_COLUMNS: dict[str, str] = {
    "item_id": "string",
    "title": "string",
    "description": "string",  # free text, "" when the source has none
    "categories": "string",  # category path joined with " > " (most general first), "" when none
    "brand": "string",  # "" when none
    "image_url": "string",  # first image URL or local path, <NA> when none
}


def empty_interactions() -> pd.DataFrame:
    """An empty interactions frame with the canonical dtypes."""
    return conform(pd.DataFrame(columns=list(INTERACTION_COLUMNS)), INTERACTION_COLUMNS)


def empty_items() -> pd.DataFrame:
    """An empty items frame with the canonical dtypes."""
    return conform(pd.DataFrame(columns=list(ITEM_COLUMNS)), ITEM_COLUMNS)


def conform(df: pd.DataFrame, schema: dict[str, str]) -> pd.DataFrame:
    """Return ``df`` with exactly the schema's columns, in order, cast to the schema's dtypes.

    Raises ``KeyError`` naming the missing columns rather than filling them silently.
    """
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise KeyError(f"missing columns {missing}; have {list(df.columns)}")
    out = df[list(schema)].copy()
    for col, dtype in schema.items():
        out[col] = out[col].astype(dtype)
    return out.reset_index(drop=True)
