"""Leave-one-out ranking metrics: HR@K and NDCG@K with one held-out target per user.

Protocol: full ranking. Each row of ``ranked`` is the model's top of the *whole* item catalogue
(item indices, best first; ``-1`` pads rows that have fewer candidates). A target outside the first
``k`` entries is a miss. With a single relevant item the ideal DCG is 1, so NDCG@K is
``1 / log2(rank + 2)`` for the 0-based rank of the target, 0 on a miss.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def _check(ranked: np.ndarray, targets: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    ranked = np.asarray(ranked)
    targets = np.asarray(targets)
    if ranked.ndim != 2:
        raise ValueError(f"ranked must be 2-D [n_users, n_ranked], got shape {ranked.shape}")
    if targets.ndim != 1 or targets.shape[0] != ranked.shape[0]:
        raise ValueError(
            f"targets must be 1-D with one entry per ranked row ({ranked.shape[0]}), "
            f"got shape {targets.shape}"
        )
    if not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if ranked.shape[1] < k:
        raise ValueError(f"ranked has {ranked.shape[1]} columns, fewer than k={k}")
    if ranked.shape[0] == 0:
        raise ValueError("no rows to evaluate")
    if not np.issubdtype(ranked.dtype, np.integer) or not np.issubdtype(targets.dtype, np.integer):
        raise TypeError(
            f"ranked and targets must hold integer item indices, got {ranked.dtype}, {targets.dtype}"
        )
    if (targets < 0).any():
        raise ValueError("targets must be valid item indices (>= 0)")
    return ranked, targets


def target_ranks(ranked: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
    """0-based rank of each target within the first ``k`` entries of its row, ``-1`` when absent."""
    ranked, targets = _check(ranked, targets, k)
    hits = ranked[:, :k] == targets[:, None]
    return np.where(hits.any(axis=1), hits.argmax(axis=1), -1)


def hit_rate_at_k(ranked: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Fraction of rows whose target is among the first ``k`` ranked items."""
    return float((target_ranks(ranked, targets, k) >= 0).mean())


def ndcg_at_k(ranked: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Mean NDCG@K with one relevant item per row: ``1/log2(rank+2)`` on a hit, 0 on a miss."""
    ranks = target_ranks(ranked, targets, k)
    gains = np.where(ranks >= 0, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)
    return float(gains.mean())


def evaluate_rankings(
    ranked: np.ndarray, targets: np.ndarray, ks: Iterable[int] = (5, 10)
) -> dict[str, float]:
    """HR@K and NDCG@K for every K in ``ks``, keyed ``"hr@K"`` and ``"ndcg@K"``."""
    out: dict[str, float] = {}
    for k in ks:
        out[f"hr@{k}"] = hit_rate_at_k(ranked, targets, k)
        out[f"ndcg@{k}"] = ndcg_at_k(ranked, targets, k)
    return out
