"""Deduplication, iterative k-core filtering and the chronological leave-one-out split.

The work runs in an in-process DuckDB database over the pandas frame, so it stays vectorised
and scales to millions of interactions.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Annotated, Literal

import duckdb
import numpy as np
import pandas as pd
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

SPLIT_COLUMNS = ["user_id", "item_id", "timestamp", "rating", "position", "split"]


Dedup = Literal["user_item", "event"]
#: the optional input column that breaks timestamp ties; without it the frame's row order does
SOURCE_ORDER = "source_order"


class TimestampTieWarning(UserWarning):
    """Many users' valid and test items share a timestamp, so their order is the source's row order."""


def _share(value: float) -> float:
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise ValueError(f"tie_warning_share must be a share in [0, 1], got {value!r}")
    return value


class SplitSettings(BaseModel):
    """The settings of the split (the ``interaction_splits`` launchpad config is derived from this class)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    k_core: int = Field(5, ge=1, description="Iterative k-core on users and items.")
    dedup: Dedup = Field("user_item", description="user_item: keep each user's first interaction with an item; "
                                                  "event: drop only exact repeats of (user, item, timestamp).")
    tie_warning_share: Annotated[float, AfterValidator(_share)] = Field(
        0.05, description="Warn when more than this share of users have valid and test items with the same "
                          "timestamp (their order then comes from the source's row order, not from time).")


@dataclass(frozen=True)
class SplitStats:
    """What filtering and splitting did; shown as asset metadata."""

    input_interactions: int
    duplicates_removed: int
    unknown_items_removed: int
    kcore_rounds: int
    kcore_removed: int
    users: int
    items: int
    interactions: int
    density: float
    seq_len_quantiles: dict[str, float]
    #: share of users whose valid and test items have the same timestamp (ordered by source row only)
    tied_valid_test_share: float = 0.0
    #: share of users whose last train item and valid item have the same timestamp
    tied_train_valid_share: float = 0.0
    #: the warning text when ``tied_valid_test_share`` is above ``tie_warning_share``, else None
    tie_warning: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def split_interactions(
    interactions: pd.DataFrame,
    settings: SplitSettings | None = None,
    *,
    k_core: int | None = None,
    dedup: Dedup | None = None,
    known_items: pd.Series | None = None,
    max_kcore_rounds: int = 100,
    warn: bool = True,
) -> tuple[pd.DataFrame, SplitStats]:
    """Filter and split interactions per user, chronologically, leave-one-out.

    ``settings`` defaults to ``SplitSettings()``; ``k_core`` / ``dedup`` given here override it.

    - ``dedup="user_item"`` keeps each user's earliest interaction with an item (repeat purchases
      would let a model "predict" an item the user already has); ``"event"`` drops only exact
      repeats of (user, item, timestamp).
    - iterative k-core: users and items with fewer than ``k_core`` interactions are removed until
      none remain (removing items can push users under ``k``, and back again).
    - order: timestamp, ties broken by source order: the ``source_order`` column when present, else the
      frame's row order (Amazon 2018 timestamps have day resolution; MovieLens has many same-second
      ratings). Never by item id: "b10" < "b9" as text says nothing about which came first.
    - split: per user, ``test`` = last, ``valid`` = second to last, ``train`` = the rest. Users left
      with fewer than 3 interactions (only possible when ``k_core < 3``) are dropped.
    - ties: the stats report the share of users whose valid and test (and last train and valid) items share
      a timestamp; above ``settings.tie_warning_share`` a :class:`TimestampTieWarning` is issued (with
      ``warn=True``) and its text is ``stats.tie_warning`` either way.
    """
    overrides = {name: value for name, value in (("k_core", k_core), ("dedup", dedup)) if value is not None}
    settings = SplitSettings(**{**(settings or SplitSettings()).model_dump(), **overrides})  # validates
    k_core, dedup = settings.k_core, settings.dedup
    required = {"user_id", "item_id", "timestamp", "rating"}
    missing = required - set(interactions.columns)
    if missing:
        raise KeyError(f"interactions lack columns {sorted(missing)}")

    src = interactions[["user_id", "item_id", "timestamp", "rating"]].reset_index(drop=True)
    src[SOURCE_ORDER] = (interactions[SOURCE_ORDER].to_numpy() if SOURCE_ORDER in interactions.columns
                         else np.arange(len(interactions), dtype="int64"))
    con = duckdb.connect(":memory:")
    try:
        con.register("src", src)
        n_in = len(interactions)
        if dedup == "user_item":
            con.execute(
                f"""CREATE TABLE t AS SELECT user_id, item_id, timestamp, rating, {SOURCE_ORDER} FROM (
                     SELECT *, row_number() OVER (PARTITION BY user_id, item_id
                                                  ORDER BY timestamp, rating DESC NULLS LAST, {SOURCE_ORDER}) AS rn
                     FROM src) WHERE rn = 1"""
            )
        elif dedup == "event":
            con.execute(
                f"""CREATE TABLE t AS SELECT user_id, item_id, timestamp, max(rating) AS rating,
                          min({SOURCE_ORDER}) AS {SOURCE_ORDER}
                   FROM src GROUP BY user_id, item_id, timestamp"""
            )
        else:
            raise ValueError(f"dedup must be 'user_item' or 'event', got {dedup!r}")
        n_dedup = _count(con, "t")

        unknown_removed = 0
        if known_items is not None:
            con.register("known", pd.DataFrame({"item_id": known_items.astype("string").unique()}))
            con.execute("DELETE FROM t WHERE item_id NOT IN (SELECT item_id FROM known)")
            unknown_removed = n_dedup - _count(con, "t")

        rounds = 0
        before_kcore = _count(con, "t")
        min_len = max(k_core, 3)
        while True:
            n = _count(con, "t")
            con.execute(
                f"""DELETE FROM t WHERE user_id IN (
                        SELECT user_id FROM t GROUP BY user_id HAVING count(*) < {min_len})
                    OR item_id IN (SELECT item_id FROM t GROUP BY item_id HAVING count(*) < {k_core})"""
            )
            rounds += 1
            if _count(con, "t") == n:
                break
            if rounds >= max_kcore_rounds:
                raise RuntimeError(f"k-core did not converge in {max_kcore_rounds} rounds")
        after = _count(con, "t")
        if after == 0:
            raise ValueError(
                f"no interactions survive {k_core}-core filtering "
                f"({before_kcore} before); lower k_core or provide more data"
            )

        out = con.execute(
            f"""SELECT user_id, item_id, timestamp, rating,
                      (row_number() OVER w - 1)::BIGINT AS position,
                      CASE row_number() OVER (PARTITION BY user_id ORDER BY timestamp DESC, {SOURCE_ORDER} DESC)
                           WHEN 1 THEN 'test' WHEN 2 THEN 'valid' ELSE 'train' END AS split
               FROM t
               WINDOW w AS (PARTITION BY user_id ORDER BY timestamp, {SOURCE_ORDER})
               ORDER BY user_id, position"""
        ).df()
    finally:
        con.close()

    out["user_id"] = out["user_id"].astype("string")
    out["item_id"] = out["item_id"].astype("string")
    out["timestamp"] = out["timestamp"].astype("int64")
    out["rating"] = out["rating"].astype("float64")
    out["position"] = out["position"].astype("int64")
    out["split"] = out["split"].astype("string")

    lengths = out.groupby("user_id", sort=False).size().to_numpy()
    n_users, n_items = int(out["user_id"].nunique()), int(out["item_id"].nunique())
    quantiles = {
        f"p{int(q * 100)}": float(np.quantile(lengths, q)) for q in (0.1, 0.25, 0.5, 0.75, 0.9)
    }
    quantiles["min"] = float(lengths.min())
    quantiles["max"] = float(lengths.max())
    quantiles["mean"] = float(lengths.mean())
    tied_valid_test, tied_train_valid = tie_shares(out)
    tie_warning = None
    if tied_valid_test > settings.tie_warning_share:
        tie_warning = (f"{tied_valid_test:.1%} of users have valid and test items with the same timestamp "
                       f"(above tie_warning_share={settings.tie_warning_share:g}): their order is the source's "
                       "row order, not time; coarse timestamps make the split partly arbitrary")
        if warn:
            warnings.warn(tie_warning, TimestampTieWarning, stacklevel=2)
    stats = SplitStats(
        input_interactions=n_in,
        duplicates_removed=n_in - n_dedup,
        unknown_items_removed=unknown_removed,
        kcore_rounds=rounds,
        kcore_removed=before_kcore - after,
        users=n_users,
        items=n_items,
        interactions=len(out),
        density=len(out) / (n_users * n_items),
        seq_len_quantiles=quantiles,
        tied_valid_test_share=tied_valid_test,
        tied_train_valid_share=tied_train_valid,
        tie_warning=tie_warning,
    )
    return out[SPLIT_COLUMNS], stats


def tie_shares(splits: pd.DataFrame) -> tuple[float, float]:
    """Shares of users whose (valid, test) and (last train, valid) items have the same timestamp.

    ``splits`` has one row per interaction with ``user_id``, ``timestamp`` and ``split``; every user has
    one valid and one test row and at least one train row."""
    if splits.empty:
        return 0.0, 0.0
    by_split = splits.groupby(["user_id", "split"], sort=False)["timestamp"].max().unstack("split")
    valid, test, train = by_split["valid"], by_split["test"], by_split["train"]  # train: its latest row
    return float((valid == test).mean()), float((train == valid).mean())


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return int(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])
