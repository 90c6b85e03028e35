"""Most-popular: every user gets the items bought most often in the TRAIN split, in the same order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from evaluation.baselines.registry import (
    EVAL_SPLITS,
    Baseline,
    BaselineError,
    BaselineInputs,
    BaselineResult,
    register,
    split_result,
)
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
    if split not in EVAL_SPLITS:
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


@dataclass(frozen=True)
class PopularitySettings:
    """Most-popular has no settings: the ranking is fixed by the train split."""


def run(inputs: BaselineInputs, settings: PopularitySettings) -> BaselineResult:
    """Rank the train-popular items for every valid and test user (the users of the generator's protocol)."""
    from training.sequence_data import build_samples

    splits = inputs.interaction_splits
    samples = build_samples(splits, max_history=inputs.max_history)
    index = inputs.item_index()
    # rank_depth: the cut-off, deeper when seen items are excluded so the cut still has that many
    top = popularity_ranking(splits, list(inputs.item_ids), inputs.rank_depth)
    metrics, ranks, users = {}, {}, {}
    for split in EVAL_SPLITS:
        rows = samples[split]
        if not rows:
            raise BaselineError(f"popularity: no {split} samples in interaction_splits")
        missing = sorted({s.target for s in rows} - set(index))
        if missing:
            raise BaselineError(f"popularity: {len(missing)} {split} target(s) are not in the item list, "
                                f"e.g. {missing[:3]}")
        targets = np.asarray([index[s.target] for s in rows], dtype=np.int64)
        users[split] = tuple(s.user_id for s in rows)
        metrics[split], ranks[split] = split_result(np.tile(top, (len(rows), 1)), targets, inputs, split=split,
                                                    users=users[split])
    return BaselineResult(metrics=metrics, ranks=ranks, user_ids=users, cutoff=inputs.cutoff,
                          info={"top_items": [inputs.item_ids[i] for i in top[: inputs.cutoff] if i >= 0]})


BASELINE = register(Baseline(
    key="popularity", name="most-popular", settings=PopularitySettings, run=run, order=10,
    description="the items bought most often in the train split, the same list for every user",
))
