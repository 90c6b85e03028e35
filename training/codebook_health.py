"""Codebook health of an RQ-VAE catalogue: per-level usage and entropy, collisions, SID uniqueness.

Usage is the fraction of a level's codes that at least one item uses; entropy is that of the items'
code distribution at the level, in nats and divided by log(K). Collisions are counted on the full code
tuple, before the suffix; uniqueness is measured on the final SIDs (codes + suffix) and must be 1.0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from training.semantic_ids import NO_SUFFIX, SemanticIdTable, as_code_array, assign_suffixes, collision_groups


@dataclass(frozen=True)
class CodebookHealth:
    """Health numbers of one set of semantic IDs (lists are per level)."""

    n_items: int
    n_levels: int
    codebook_sizes: list[int]
    used_codes: list[int]
    usage: list[float]
    entropy_nats: list[float]
    entropy_normalised: list[float]
    n_unique_codes: int
    collision_rate: float  # share of items whose full codes collide, before the suffix
    n_collision_groups: int
    largest_collision_group: int  # size of the largest full-code group; 1 when nothing collides
    max_suffix: int  # -1 when nothing collides
    uniqueness_after_suffix: float  # distinct SIDs / items; must be 1.0

    @property
    def sids_unique(self) -> bool:
        """True when every item has a distinct SID after the suffix."""
        return self.uniqueness_after_suffix == 1.0

    def to_metadata(self) -> dict[str, Any]:
        """Plain JSON types (int, float, list), for asset metadata and MLflow."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if isinstance(value, list):
                out[key] = [v.item() if isinstance(v, np.generic) else v for v in value]
            else:
                out[key] = value.item() if isinstance(value, np.generic) else value
        out["sids_unique"] = self.sids_unique
        return out


def _entropy_nats(counts: np.ndarray) -> float:
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum())


def codebook_health(
    codes: np.ndarray,
    codebook_size: int | Sequence[int],
    *,
    suffix: np.ndarray | None = None,
    item_ids: Sequence[object] | None = None,
) -> CodebookHealth:
    """Measure usage, entropy and collisions of ``codes`` [n_items, L] with ``codebook_size`` codes per level.

    ``suffix`` (−1 = none) is the one the SIDs carry; when omitted it is assigned as
    :class:`~training.semantic_ids.SemanticIdTable` would (needs nothing but the codes).
    """
    arr = as_code_array(codes)
    n_items, n_levels = arr.shape
    if n_items == 0:
        raise ValueError("codebook health needs at least one item")
    sizes = [int(codebook_size)] * n_levels if np.isscalar(codebook_size) else [int(k) for k in codebook_size]
    if len(sizes) != n_levels:
        raise ValueError(f"{len(sizes)} codebook sizes for {n_levels} levels")
    if any(k < 1 for k in sizes):
        raise ValueError(f"codebook sizes must be >= 1, got {sizes}")
    too_big = [(lvl, int(arr[:, lvl].max()), k) for lvl, k in enumerate(sizes) if arr[:, lvl].max() >= k]
    if too_big:
        lvl, code, k = too_big[0]
        raise ValueError(f"level {lvl} uses code {code}, outside a codebook of size {k}")

    used, usage, entropy, entropy_norm = [], [], [], []
    for level, k in enumerate(sizes):
        counts = np.bincount(arr[:, level], minlength=k).astype(np.float64)
        n_used = int((counts > 0).sum())
        h = _entropy_nats(counts)
        used.append(n_used)
        usage.append(n_used / k)
        entropy.append(h)
        entropy_norm.append(h / math.log(k) if k > 1 else 0.0)

    group, size = collision_groups(arr)
    colliding = size > 1
    n_unique = int(group.max()) + 1
    group_sizes = np.bincount(group)
    if suffix is None:
        ids = item_ids if item_ids is not None else [str(i) for i in range(n_items)]
        suffix = assign_suffixes(arr, ids)
    suf = np.asarray(suffix, dtype=np.int64).reshape(-1)
    if suf.shape[0] != n_items:
        raise ValueError(f"{suf.shape[0]} suffixes for {n_items} items")
    full = np.concatenate([arr, suf[:, None]], axis=1)
    n_distinct_sids = int(np.unique(full, axis=0).shape[0])
    return CodebookHealth(
        n_items=int(n_items),
        n_levels=int(n_levels),
        codebook_sizes=sizes,
        used_codes=used,
        usage=usage,
        entropy_nats=entropy,
        entropy_normalised=entropy_norm,
        n_unique_codes=n_unique,
        collision_rate=float(colliding.mean()),
        n_collision_groups=int((group_sizes > 1).sum()),
        largest_collision_group=int(group_sizes.max()),
        max_suffix=int(suf.max()) if (suf != NO_SUFFIX).any() else NO_SUFFIX,
        uniqueness_after_suffix=n_distinct_sids / n_items,
    )


def table_health(table: SemanticIdTable, codebook_size: int | Sequence[int]) -> CodebookHealth:
    """:func:`codebook_health` of a built :class:`~training.semantic_ids.SemanticIdTable`."""
    return codebook_health(table.codes, codebook_size, suffix=table.suffix)
