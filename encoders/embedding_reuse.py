"""Incremental item embeddings: encode only the items whose text is new or changed since the last table.

A vector is reused only when the same encoder embedded exactly the same text (the previous table keeps each
item's text beside its vector), so the result equals a full re-encode up to the encoder's own batch effects; the
nightly cost then grows with the new and changed items, not with the catalogue.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Reuse:
    """The vectors in ``item_ids`` order and how many were reused vs encoded now."""

    vectors: np.ndarray
    reused: int
    encoded: int

    def metadata(self) -> dict:
        total = self.reused + self.encoded
        return {"embeddings_reused": self.reused, "embeddings_encoded": self.encoded,
                "reused_share": round(self.reused / total, 4) if total else 0.0}


def encode_reusing(item_ids: Sequence[str], texts: Sequence[str], encode: Callable[[list[str]], np.ndarray],
                   previous: pd.DataFrame | None) -> Reuse:
    """Vectors for ``texts``: from ``previous`` (item_id, text, embedding — the last table written by the same
    encoder; the caller checks that) where an item's text is unchanged, from ``encode`` for the rest."""
    ids = [str(i) for i in item_ids]
    texts = [str(t) for t in texts]
    if len(ids) != len(texts):
        raise ValueError(f"{len(ids)} item ids for {len(texts)} texts")
    old: dict[str, tuple[str, object]] = {}
    if previous is not None and len(previous):
        missing = [c for c in ("item_id", "text", "embedding") if c not in previous.columns]
        if missing:
            raise ValueError(f"previous embeddings: missing column(s) {missing}")
        old = {str(i): (t, v) for i, t, v in zip(previous["item_id"], previous["text"], previous["embedding"],
                                                  strict=True)}
    fresh = [k for k, (i, t) in enumerate(zip(ids, texts, strict=True)) if old.get(i, (None,))[0] != t]
    encoded = np.asarray(encode([texts[k] for k in fresh]), dtype=np.float32) if fresh else None
    dim = encoded.shape[1] if encoded is not None else len(next(iter(old.values()))[1]) if old else 0
    vectors = np.empty((len(ids), dim), dtype=np.float32)
    if encoded is not None:
        vectors[fresh] = encoded
    kept = sorted(set(range(len(ids))) - set(fresh))
    for k in kept:
        vector = np.asarray(old[ids[k]][1], dtype=np.float32)
        if vector.shape != (dim,):
            raise ValueError(f"previous embedding of item {ids[k]!r} has shape {vector.shape}, the encoder's is "
                             f"({dim},): was the table written by another encoder?")
        vectors[k] = vector
    return Reuse(vectors, reused=len(kept), encoded=len(fresh))
