"""Non-learned baselines evaluated on the same split and metrics as the generator."""

from __future__ import annotations

import numpy as np
import pandas as pd

from metrics.ranking import evaluate_rankings


def popularity_ranking(splits: pd.DataFrame, item_ids: list[str], k: int) -> np.ndarray:
    """Indices (into ``item_ids``) of the ``k`` items bought most often in the TRAIN split.

    Ties break by item id so the ranking is deterministic. Only train rows count, so valid/test
    targets never inflate their own popularity.
    """
    train = splits[splits["split"] == "train"]
    counts = train["item_id"].astype(str).value_counts()
    index = {item: i for i, item in enumerate(item_ids)}
    order = sorted(((-int(c), item) for item, c in counts.items() if item in index))
    top = [index[item] for _, item in order[:k]]
    top += [-1] * (k - len(top))
    return np.asarray(top, dtype=np.int64)


def evaluate_popularity(splits: pd.DataFrame, item_ids: list[str], split: str,
                        ks: tuple[int, ...] = (5, 10)) -> dict[str, float]:
    """HR@K / NDCG@K of most-popular on the ``split`` ("valid" or "test") targets."""
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    index = {item: i for i, item in enumerate(item_ids)}
    targets_ids = splits.loc[splits["split"] == split, "item_id"].astype(str)
    missing = sorted(set(targets_ids) - set(index))
    if missing:
        raise ValueError(f"{len(missing)} {split} target(s) are not in the item list, e.g. {missing[:3]}")
    targets = targets_ids.map(index).to_numpy(dtype=np.int64)
    top = popularity_ranking(splits, item_ids, max(ks))
    ranked = np.tile(top, (len(targets), 1))
    return evaluate_rankings(ranked, targets, ks=ks)
