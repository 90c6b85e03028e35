"""Merge the descriptors of several miners per item: normalised-text duplicates, then near-synonyms by embedding."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from mining.item_mining import ItemMiningSettings
from mining.parsing import normalise_descriptor

MERGED_COLUMNS = ["item_id", "rank", "descriptor", "confidence", "support", "miners"]
_REQUIRED = ["item_id", "miner", "rank", "descriptor", "confidence"]


def merge_miners(interests: pd.DataFrame, embed: Callable[[list[str]], np.ndarray] | None, *,
                 similarity: float = ItemMiningSettings.merge_similarity) -> pd.DataFrame:
    """One ranked descriptor list per item over all miners.

    Descriptors equal after normalisation (lowercase, no punctuation, no articles) form one group; with
    ``embed``, groups whose representatives have cosine similarity >= ``similarity`` are merged too (the
    stage setting ``ItemMiningSettings.merge_similarity``).
    confidence = mean over supporting miners (each miner's best confidence in the group); support = number
    of miners; ranked by support, then confidence, then the miners' own ranks.
    """
    missing = [c for c in _REQUIRED if c not in interests.columns]
    if missing:
        raise ValueError(f"interests is missing columns {missing}")
    if not 0.0 < similarity <= 1.0:
        raise ValueError(f"similarity must be in (0, 1], got {similarity}")
    if interests.empty:
        return pd.DataFrame(columns=MERGED_COLUMNS).astype({"rank": "int64", "confidence": "float64",
                                                            "support": "int64"})
    frame = interests[_REQUIRED].copy()
    frame["norm"] = frame["descriptor"].map(normalise_descriptor)
    frame = frame[frame["norm"] != ""]

    # text groups: one per (item, normalised text); representative = the most confident member
    frame = frame.sort_values(["confidence", "rank", "miner", "descriptor"], ascending=[False, True, True, True],
                              kind="mergesort")
    item_order = {item: k for k, item in enumerate(dict.fromkeys(interests["item_id"].tolist()))}
    groups: dict[tuple, dict] = {}
    for row in frame.itertuples(index=False):
        group = groups.setdefault((row.item_id, row.norm), {"descriptor": row.descriptor, "best": {},
                                                           "min_rank": row.rank})
        group["best"][row.miner] = max(group["best"].get(row.miner, 0.0), float(row.confidence))
        group["min_rank"] = min(group["min_rank"], row.rank)

    by_item: dict[object, list[dict]] = {}
    for (item_id, _norm), group in groups.items():
        by_item.setdefault(item_id, []).append(group)

    if embed is not None:
        texts = [g["descriptor"] for gs in by_item.values() for g in gs]
        vectors = np.asarray(embed(texts), dtype=np.float64)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise ValueError(f"embed returned shape {vectors.shape} for {len(texts)} texts")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms == 0, 1.0, norms)
        offset = 0
        for item_id, gs in by_item.items():
            for k, g in enumerate(gs):
                g["vector"] = vectors[offset + k]
            offset += len(gs)
            by_item[item_id] = _merge_similar(gs, similarity)

    out = []
    for item_id in sorted(by_item, key=item_order.__getitem__):
        merged = [(g["descriptor"], float(np.mean(list(g["best"].values()))), len(g["best"]),
                   ",".join(sorted(g["best"])), g["min_rank"]) for g in by_item[item_id]]
        merged.sort(key=lambda m: (-m[2], -m[1], m[4], m[0]))
        for rank, (descriptor, confidence, support, miners, _r) in enumerate(merged):
            out.append((item_id, rank, descriptor, confidence, support, miners))
    result = pd.DataFrame(out, columns=MERGED_COLUMNS)
    return result.astype({"rank": "int64", "confidence": "float64", "support": "int64"})


def _merge_similar(groups: list[dict], similarity: float) -> list[dict]:
    """Greedy clustering: strongest groups first; each joins the first kept group it is similar enough to."""
    order = sorted(groups, key=lambda g: (-len(g["best"]), -max(g["best"].values()), g["min_rank"], g["descriptor"]))
    kept: list[dict] = []
    for g in order:
        target = next((k for k in kept if float(k["vector"] @ g["vector"]) >= similarity), None)
        if target is None:
            kept.append({**g, "best": dict(g["best"])})
            continue
        for miner, confidence in g["best"].items():
            target["best"][miner] = max(target["best"].get(miner, 0.0), confidence)
        target["min_rank"] = min(target["min_rank"], g["min_rank"])
    return kept
