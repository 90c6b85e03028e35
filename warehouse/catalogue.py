"""Catalogue reads shared by the mining, embedding and benchmark code: the active items and their captions."""

from __future__ import annotations

import pandas as pd


def active_items(warehouse) -> pd.DataFrame:
    """Items that survive filtering (appear in ``interaction_splits``): the catalogue that is mined,
    embedded and given semantic IDs, so cost follows the active catalogue rather than the raw one.

    ``warehouse`` is anything with a ``connect()`` context manager yielding a DuckDB connection."""
    with warehouse.connect() as con:
        return con.execute(
            "SELECT * FROM items WHERE item_id IN (SELECT DISTINCT item_id FROM interaction_splits) ORDER BY item_id"
        ).df()


def with_captions(warehouse, items: pd.DataFrame) -> pd.DataFrame:
    """``items`` with a ``caption`` column from ``item_captions`` (None where an item has no caption)."""
    if not warehouse.exists("item_captions"):
        return items.assign(caption=None)
    captions = warehouse.read("item_captions")
    return items.merge(captions[["item_id", "caption"]], on="item_id", how="left")
