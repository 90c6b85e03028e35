"""Semantic IDs for new items from the existing codebook, without retraining it (the incremental nightly path).

A trained generator has learned its items' SIDs, so an increment must leave every existing SID exactly as it is
and keep the set prefix-free (no SID may be the start of another: the constrained decoder stops at a complete
SID). A new item is encoded by the frozen RQ-VAE; its leading levels are the RQ-VAE's choice, and its last level
is the nearest last-level codeword whose full code is not taken yet (under a full prefix, the next-nearest
second-to-last codeword with a free last-level code), so it gets a fresh, unsuffixed SID. Items are
placed in item-id order (reproducible). ``moved_share`` (new items that did not get their first-choice code) and
the extra distance say how crowded the codebook has become: past ``CodebookCapacity``'s limits the codebook
should be retrained (a slower schedule than the nightly run, or when its health degrades).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from training.semantic_ids import NO_SUFFIX, SemanticIdError, SemanticIdTable


@dataclass(frozen=True)
class Extension:
    """The extended table and how the new items were placed."""

    table: SemanticIdTable
    new_items: int
    moved: int  # new items whose first-choice code was taken
    mean_extra_distance: float  # over moved items: how much larger their quantisation error is

    @property
    def moved_share(self) -> float:
        return self.moved / self.new_items if self.new_items else 0.0

    def metadata(self) -> dict:
        return {"new_items": self.new_items, "moved_to_a_free_code": self.moved,
                "moved_share": round(self.moved_share, 4),
                "mean_extra_distance": round(self.mean_extra_distance, 6)}


@dataclass(frozen=True)
class CodebookCapacity:
    """When an increment says the codebook should be retrained rather than extended again (the pipeline's values
    are ``RQVAEConfig.refresh_max_moved_share`` and ``refresh_max_fill``)."""

    max_moved_share: float
    max_fill: float

    def reasons(self, extension: Extension) -> list[str]:
        """Why the codebook needs retraining (empty: extending is still fine)."""
        out = []
        if extension.moved_share > self.max_moved_share:
            out.append(f"{extension.moved_share:.0%} of the new items had to move to a free code "
                       f"(over {self.max_moved_share:.0%})")
        fill = fullest_prefix_fill(extension.table)
        if fill > self.max_fill:
            out.append(f"the fullest prefix uses {fill:.0%} of its last-level codes (over {self.max_fill:.0%})")
        return out


def fullest_prefix_fill(table: SemanticIdTable, codebook_size: int | None = None) -> float:
    """Share of the last-level codes in use under the most crowded prefix (levels 0..L-2)."""
    codes = table.codes
    size = codebook_size or int(codes[:, -1].max()) + 1
    prefixes = pd.Series(map(tuple, codes[:, :-1].tolist()))
    used = pd.DataFrame({"p": prefixes, "c": codes[:, -1]}).drop_duplicates().groupby("p").size()
    return float(used.max() / size) if len(used) else 0.0


def extend_semantic_ids(rqvae: torch.nn.Module, existing: SemanticIdTable, new_item_ids: Sequence[object],
                        embeddings: np.ndarray) -> Extension:
    """``existing`` plus one fresh, unsuffixed SID per new item (see the module docstring).

    ``rqvae`` is the trained ``training.rqvae.RQVAE`` the existing SIDs came from and ``embeddings`` [n_new, dim]
    the new items' vectors from the same text encoder. Raises ``SemanticIdError`` for an item that already has a
    SID, duplicate new ids, a shape mismatch, or a prefix whose last two levels' codes are all taken.
    """
    ids = [str(i) for i in new_item_ids]
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != len(ids):
        raise SemanticIdError(f"embeddings must be [n_new_items, dim] for {len(ids)} new items, got {x.shape}")
    if len(set(ids)) != len(ids):
        dup = pd.Series(ids)
        raise SemanticIdError(f"duplicate new item ids: {sorted(set(dup[dup.duplicated()]))[:5]}")
    known = set(existing.item_ids) & set(ids)
    if known:
        raise SemanticIdError(f"{len(known)} new item(s) already have a semantic ID, e.g. {sorted(known)[:3]}: "
                              "changed items keep theirs until the codebook is retrained")
    levels = existing.codes.shape[1]
    if getattr(rqvae.config, "n_levels", levels) != levels:
        raise SemanticIdError(f"the RQ-VAE has {rqvae.config.n_levels} levels, the SID table {levels}")
    if not ids:
        return Extension(existing, 0, 0, 0.0)
    head, residual = _encode_head(rqvae, x)
    books = [b.detach() for b in rqvae.codebooks]
    taken = {tuple(row) for row in existing.codes.tolist()}
    codes = np.empty((len(ids), levels), np.int64)
    moved, extra = 0, []
    for i in sorted(range(len(ids)), key=ids.__getitem__):
        tail, first_error, error = _free_tail(residual[i], books, tuple(head[i].tolist()), taken)
        if tail is None:
            raise SemanticIdError(f"every code under prefix {'-'.join(map(str, head[i].tolist())) or '(root)'} is "
                                  f"taken (new item {ids[i]!r}): retrain the codebook")
        codes[i] = (*head[i].tolist(), *tail)
        taken.add(tuple(codes[i].tolist()))
        if error > first_error:
            moved += 1
            extra.append(error - first_error)
    table = SemanticIdTable([*existing.item_ids, *ids], np.vstack([existing.codes, codes]),
                            np.concatenate([existing.suffix, np.full(len(ids), NO_SUFFIX, np.int64)]))
    return Extension(table, len(ids), moved, float(np.mean(extra)) if extra else 0.0)


@torch.no_grad()
def _encode_head(rqvae: torch.nn.Module, x: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
    """The codes of every level but the last two as the RQ-VAE quantises them [n, max(L-2, 0)], and the residual
    left for the last two levels [n, latent]."""
    was_training = rqvae.training
    rqvae.eval()
    try:
        residual = rqvae.encode(torch.as_tensor(x, device=rqvae.device))
        head = []
        for level in range(max(len(rqvae.codebooks) - 2, 0)):
            book = rqvae.codebooks[level]
            idx = torch.cdist(residual, book).argmin(dim=-1)
            head.append(idx)
            residual = residual - book[idx]
    finally:
        rqvae.train(was_training)
    codes = torch.stack(head, dim=-1) if head else torch.zeros((x.shape[0], 0), dtype=torch.long)
    return codes.cpu().numpy().astype(np.int64), residual.detach()


def _free_tail(residual: torch.Tensor, books: list[torch.Tensor], head: tuple[int, ...],
               taken: set[tuple[int, ...]]) -> tuple[tuple[int, ...] | None, float, float]:
    """The last one or two levels' codes nearest to ``residual`` whose full code is free: the last level moves
    first (its nearest free codeword), the second-to-last only when every last-level code under it is taken.
    Returns (codes, the first choice's quantisation error, the chosen codes' error); codes None when all taken."""
    last = books[-1]
    penultimates = [None] if len(books) == 1 else torch.cdist(residual[None], books[-2])[0].argsort(stable=True)
    first_error = None
    for pen in penultimates:
        rest = residual if pen is None else residual - books[-2][pen]
        dist = torch.cdist(rest[None], last)[0]
        order = dist.argsort(stable=True).tolist()
        if first_error is None:
            first_error = float(dist[order[0]])
        prefix = head if pen is None else (*head, int(pen))
        for code in order:
            if (*prefix, code) not in taken:
                return (*prefix[len(head):], code), first_error, float(dist[code])
    return None, first_error or 0.0, 0.0
