"""The evaluation protocol every model in the report shares, and the report's own settings.

``exclude_seen`` (off by default: the published protocols, Amazon Scientific's included, keep repeats) removes
each user's history from every model's ranking. It is implemented once, here: :func:`seen_items` says what a
user has seen before a held-out target (the whole prefix before it, not only the window a model reads), and
:func:`exclude_seen_items` drops those items from ranked item-index lists; the baselines' shared path
(``evaluation.baselines.registry.split_result``), the generators' (``training.generator.rank_loader``) and the
served pyfunc all go through it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

PROTOCOL = ("leave-one-out per user; full ranking over every item of the filtered catalogue; seen items are not "
            "excluded; HR@K and NDCG@K; valid history = train prefix, test history = train prefix + valid item, "
            "both cut to the shipped generator's history cap (from its checkpoint); identical for every model")

PROTOCOL_EXCLUDING_SEEN = PROTOCOL.replace(
    "seen items are not excluded",
    "seen items are excluded (every item of the user's whole prefix before the target is removed from every "
    "model's ranking; a target the user had already seen is a miss for every model)")


def protocol(exclude_seen: bool = False) -> str:
    """The protocol sentence of the report for the given ``exclude_seen`` setting."""
    return PROTOCOL_EXCLUDING_SEEN if exclude_seen else PROTOCOL


@dataclass(frozen=True)
class EvaluationSettings:
    """Settings of the evaluation report (each baseline's own settings nest beside these)."""

    examples: int = field(default=5, metadata={"description": "example users shown with their recommendations"})
    seed: int = field(default=0, metadata={"description": "seeds the baselines' training and the example users"})
    exclude_seen: bool = field(default=False, metadata={
        "description": "remove each user's history (every item before the target) from every model's ranking; "
                       "off keeps repeats, as the published protocols (Amazon Scientific) do"})

    def __post_init__(self) -> None:
        if self.examples < 0:
            raise ValueError(f"EvaluationSettings.examples must be >= 0, got {self.examples}")


# --------------------------------------------------------------------------- seen items


def seen_items(splits: pd.DataFrame, split: str) -> dict[str, tuple[str, ...]]:
    """Per user with a ``split`` ("valid" or "test") target, the items interacted with before it, oldest
    first: the train prefix for valid, the train prefix + the valid item for test (the whole prefix, not cut
    to any model's history cap; repeats kept as they occur)."""
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    before = ("train",) if split == "valid" else ("train", "valid")
    frame = splits[["user_id", "item_id", "position", "split"]]
    users = frame.loc[frame["split"] == split, "user_id"].astype(str)
    prior = frame[frame["split"].isin(before)].sort_values(["user_id", "position"], kind="stable")
    prior = prior.assign(user_id=prior["user_id"].astype(str), item_id=prior["item_id"].astype(str))
    grouped = prior.groupby("user_id", sort=False)["item_id"].agg(tuple)
    return {u: tuple(grouped.get(u, ())) for u in users}


def split_targets(splits: pd.DataFrame, split: str) -> dict[str, str]:
    """Per user, the held-out ``split`` target item."""
    rows = splits[splits["split"] == split]
    return dict(zip(rows["user_id"].astype(str), rows["item_id"].astype(str), strict=True))


def targets_in_history(splits: pd.DataFrame, split: str) -> int:
    """How many users' ``split`` target is an item they had already seen (with ``exclude_seen`` those targets
    can never be hit: the cost of the setting on this split)."""
    seen = seen_items(splits, split)
    return sum(target in set(seen.get(user, ())) for user, target in split_targets(splits, split).items())


def seen_indices(seen: Mapping[str, Iterable[str]], users: Sequence[str],
                 index: Mapping[str, int]) -> list[np.ndarray]:
    """``seen`` (item ids per user) as item-index arrays aligned with ``users``: unique, items outside
    ``index`` left out (a model cannot rank an item it does not know), users without an entry empty."""
    out = []
    for user in users:
        rows = {index[i] for i in seen.get(str(user), ()) if i in index}
        out.append(np.fromiter(sorted(rows), dtype=np.int64, count=len(rows)))
    return out


# --------------------------------------------------------------------------- exclusion


def seen_mask(ranked: np.ndarray, seen: Sequence[Iterable[int]]) -> np.ndarray:
    """Boolean [n, width]: which entries of each row of ``ranked`` (item indices, -1 padding) are in that row's
    ``seen`` items. One sorted-key membership test over the whole array (no loop over rows or items)."""
    ranked = np.asarray(ranked)
    if ranked.ndim != 2 or not np.issubdtype(ranked.dtype, np.integer):
        raise ValueError(f"ranked must be a 2-D integer array of item indices, got {ranked.dtype} {ranked.shape}")
    n = ranked.shape[0]
    if len(seen) != n:
        raise ValueError(f"seen has {len(seen)} rows, the ranking {n}: one seen set per ranked row")
    arrays = [np.asarray(s if isinstance(s, np.ndarray) else list(s), dtype=np.int64).ravel() for s in seen]
    items = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    if (items < 0).any():
        raise ValueError("seen items must be item indices (>= 0)")
    # one key per (row, item): row * base + item, with base above every index, so rows cannot collide
    base = max(int(ranked.max(initial=-1)), int(items.max(initial=-1))) + 1
    rows = np.repeat(np.arange(n, dtype=np.int64), [a.size for a in arrays])
    keys = np.unique(rows * base + items)
    ranked_keys = np.arange(n, dtype=np.int64)[:, None] * base + ranked.astype(np.int64)
    return np.isin(ranked_keys, keys) & (ranked >= 0)


def kept_columns(ranked: np.ndarray, seen: Sequence[Iterable[int]], k: int | None = None) -> np.ndarray:
    """Per row, the columns of ``ranked`` that survive the exclusion, in their order, cut or padded (-1) to
    ``k`` columns (default: the width of ``ranked``). Dropped: the row's seen items and padding (-1).
    Gather any array aligned with ``ranked`` (e.g. beam scores) with it."""
    ranked = np.asarray(ranked)
    drop = seen_mask(ranked, seen) | (ranked < 0)
    k = ranked.shape[1] if k is None else int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    order = np.argsort(drop, axis=1, kind="stable")  # kept columns first, in rank order
    kept = np.take_along_axis(~drop, order, axis=1)
    cols = np.where(kept, order, -1)[:, :k]
    if cols.shape[1] < k:
        cols = np.pad(cols, ((0, 0), (0, k - cols.shape[1])), constant_values=-1)
    return cols


def exclude_seen_items(ranked: np.ndarray, seen: Sequence[Iterable[int]], k: int | None = None) -> np.ndarray:
    """``ranked`` [n, width] (item indices best first, -1 pads) with each row's ``seen`` items removed: the
    remaining items move up in order, -1 fills the end, cut or padded to ``k`` columns (default ``width``).
    A target among a row's seen items is therefore never in its row: a miss."""
    ranked = np.asarray(ranked)
    cols = kept_columns(ranked, seen, k)
    return np.where(cols >= 0, np.take_along_axis(ranked, np.maximum(cols, 0), axis=1), -1).astype(ranked.dtype)
