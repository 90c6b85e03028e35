"""Referential integrity: every item an interaction table mentions is in the items table."""

from __future__ import annotations

import pandas as pd

from data_contracts.expectation_runner import Check, Frame


def known_items_frame(table: str, interactions: pd.DataFrame, items: pd.DataFrame) -> Frame:
    """One row per distinct item id of ``interactions`` with its event count and whether ``items`` has it.

    GE's in-set expectation with the whole catalogue as its value set is far too slow (it serialises
    the set many times), so membership is computed with pandas and GE checks the flag.
    """
    import great_expectations as gx

    if not isinstance(items, pd.DataFrame):
        raise TypeError(f"{table}: items must be a pandas DataFrame, got {type(items).__name__}")
    if "item_id" not in items.columns:
        raise ValueError(f"{table}: items has no 'item_id' column (have {list(items.columns)})")
    counts = interactions["item_id"].value_counts(sort=False)
    counts = counts[counts > 0]  # a categorical counts unused categories too
    derived = pd.DataFrame({"item_id": counts.index.to_numpy(), "n_events": counts.to_numpy()})
    derived["known_item"] = derived["item_id"].isin(items["item_id"].dropna())
    check = Check(gx.expectations.ExpectColumnValuesToBeInSet(column="known_item", value_set=[True]),
                  "{n} distinct item ids are not in the items table", column="item_id",
                  example_columns=("n_events",))
    return Frame(f"{table}.known_items", derived, [check], key_columns=("item_id",))
