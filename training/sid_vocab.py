"""Token vocabulary of semantic IDs (SIDs): specials, one code block per level, the collision suffix.

Token layout: ``0`` pad (also T5's decoder start), ``1`` eos, ``2`` unk, ``3..n_special-1`` reserved
specials, then the level-``l`` code ``c`` at ``level_offsets[l] + c``, then suffix ``s`` at
``suffix_offset + s``, then any extra blocks added with :meth:`SidVocab.add_block`.
An item's token sequence is its level codes, its suffix when it has one, then eos, so SIDs have
length ``levels + 1`` or ``levels + 2`` with eos.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2
_MIN_SPECIAL = 3
_CODE_COLUMN = re.compile(r"^c(\d+)$")


class SidVocabError(ValueError):
    """Semantic IDs that cannot form a vocabulary (missing columns, bad codes, duplicate SIDs...)."""


class SidVocab:
    """Maps items to SID token sequences and back; see the module docstring for the token layout."""

    pad_id: int = PAD_ID
    eos_id: int = EOS_ID
    unk_id: int = UNK_ID

    def __init__(
        self,
        item_ids: Sequence[str],
        codes: np.ndarray,
        suffix: np.ndarray,
        *,
        n_special: int = 8,
        level_sizes: Sequence[int] | None = None,
        suffix_size: int | None = None,
        blocks: dict[str, tuple[int, int]] | None = None,
    ) -> None:
        """Build from ``codes`` [n, L] (ints ≥ 0) and ``suffix`` [n] (−1 = no suffix).

        ``level_sizes``/``suffix_size`` default to the largest code/suffix seen + 1; pass them to keep the
        vocabulary stable across catalogue versions (e.g. the RQ-VAE codebook sizes).
        """
        codes = np.asarray(codes)
        suffix = np.asarray(suffix)
        if n_special < _MIN_SPECIAL:
            raise SidVocabError(f"n_special must be >= {_MIN_SPECIAL} (pad, eos, unk), got {n_special}")
        if codes.ndim != 2 or codes.shape[1] < 1:
            raise SidVocabError(f"codes must be a 2-D array [n_items, levels >= 1], got shape {codes.shape}")
        n_items, levels = codes.shape
        if n_items == 0:
            raise SidVocabError("no items: a SID vocabulary needs at least one item")
        if len(item_ids) != n_items or suffix.shape != (n_items,):
            raise SidVocabError(
                f"item_ids ({len(item_ids)}), codes ({n_items}) and suffix {suffix.shape} disagree in length"
            )
        if not np.issubdtype(codes.dtype, np.integer) or not np.issubdtype(suffix.dtype, np.integer):
            raise SidVocabError(f"codes and suffix must be integers, got {codes.dtype} and {suffix.dtype}")
        if (codes < 0).any():
            raise SidVocabError("level codes must be >= 0")
        if (suffix < -1).any():
            raise SidVocabError("suffix values must be >= 0 (or missing)")
        self.item_ids: list[str] = [str(i) for i in item_ids]
        self._index: dict[str, int] = {item: i for i, item in enumerate(self.item_ids)}
        if len(self._index) != n_items:
            dupes = pd.Series(self.item_ids)
            raise SidVocabError(f"duplicate item ids: {sorted(set(dupes[dupes.duplicated()]))[:5]}")

        seen_max = codes.max(axis=0) + 1
        sizes = list(seen_max) if level_sizes is None else list(level_sizes)
        if len(sizes) != levels:
            raise SidVocabError(f"level_sizes has {len(sizes)} entries for {levels} levels")
        too_big = [lvl for lvl in range(levels) if seen_max[lvl] > sizes[lvl]]
        if too_big:
            lvl = too_big[0]
            raise SidVocabError(f"level {lvl} has code {seen_max[lvl] - 1} >= level size {sizes[lvl]}")
        seen_suffix = int(suffix.max()) + 1
        suffix_size = seen_suffix if suffix_size is None else int(suffix_size)
        if seen_suffix > suffix_size:
            raise SidVocabError(f"suffix {seen_suffix - 1} >= suffix_size {suffix_size}")

        self.n_special = int(n_special)
        self.levels = int(levels)
        self.level_sizes: list[int] = [int(s) for s in sizes]
        self.suffix_size = suffix_size
        self.max_suffix = suffix_size - 1  # largest suffix with a token; -1 when no item collides
        offsets = np.cumsum([self.n_special, *self.level_sizes])
        self.level_offsets: list[int] = [int(o) for o in offsets[:-1]]
        self.suffix_offset = int(offsets[-1])
        self._codes = codes.astype(np.int64)
        self._suffix = suffix.astype(np.int64)
        self.blocks: dict[str, tuple[int, int]] = {}
        self.vocab_size = self.suffix_offset + self.suffix_size
        for name, (offset, size) in (blocks or {}).items():
            if self.add_block(name, size) != offset:
                raise SidVocabError(f"block {name!r} would move from offset {offset}: blocks out of order")

        has_suffix = self._suffix >= 0
        self.max_len = self.levels + int(has_suffix.any()) + 1
        tokens = np.full((n_items, self.max_len), PAD_ID, dtype=np.int64)
        tokens[:, : self.levels] = self._codes + np.asarray(self.level_offsets)
        tokens[:, self.levels] = np.where(has_suffix, self.suffix_offset + self._suffix, EOS_ID)
        if has_suffix.any():
            tokens[:, self.levels + 1] = np.where(has_suffix, EOS_ID, PAD_ID)
        tokens.setflags(write=False)
        self._tokens = tokens
        self._by_tokens: dict[tuple[int, ...], int] = {}
        for i, row in enumerate(tokens.tolist()):
            key = tuple(row[: row.index(EOS_ID)])
            if key in self._by_tokens:
                other = self.item_ids[self._by_tokens[key]]
                raise SidVocabError(
                    f"items {other!r} and {self.item_ids[i]!r} share the SID {self._sid_text(i)}: "
                    "colliding codes need distinct suffixes"
                )
            self._by_tokens[key] = i

    # construction ---------------------------------------------------------------------------------
    @classmethod
    def from_frame(
        cls,
        sid_frame: pd.DataFrame,
        n_special: int = 8,
        *,
        level_sizes: Sequence[int] | None = None,
        suffix_size: int | None = None,
    ) -> SidVocab:
        """Build from a frame with ``item_id``, ``c0..c{L-1}`` (int) and optional ``suffix`` (nullable Int64)."""
        if "item_id" not in sid_frame.columns:
            raise SidVocabError(f"sid_frame lacks the 'item_id' column; columns: {list(sid_frame.columns)}")
        numbers = sorted(int(m.group(1)) for c in sid_frame.columns if (m := _CODE_COLUMN.match(str(c))))
        if not numbers or numbers != list(range(len(numbers))):
            raise SidVocabError(f"sid_frame needs code columns c0..c{{L-1}}, found c{numbers}")
        code_cols = [f"c{n}" for n in numbers]
        code_frame = sid_frame[code_cols]
        if code_frame.isna().any().any():
            bad = sid_frame.loc[code_frame.isna().any(axis=1), "item_id"].tolist()[:5]
            raise SidVocabError(f"missing level codes for items {bad}")
        try:
            as_float = code_frame.to_numpy(dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise SidVocabError(f"level codes must be integers: {exc}") from None
        if not np.all(np.mod(as_float, 1) == 0):
            raise SidVocabError("level codes must be integers, found fractional values")
        codes = code_frame.to_numpy(dtype=np.int64)
        if "suffix" in sid_frame.columns:
            try:
                suffix = pd.array(sid_frame["suffix"], dtype="Int64").fillna(-1).to_numpy(dtype=np.int64)
            except (TypeError, ValueError) as exc:
                raise SidVocabError(f"suffix must be a nullable integer column: {exc}") from None
        else:
            suffix = np.full(len(sid_frame), -1, dtype=np.int64)
        return cls(
            sid_frame["item_id"].astype(str).tolist(),
            codes,
            suffix,
            n_special=n_special,
            level_sizes=level_sizes,
            suffix_size=suffix_size,
        )

    @classmethod
    def from_sids(
        cls,
        item_ids: Sequence[str],
        sids: Sequence[Sequence[int]],
        levels: int | None = None,
        n_special: int = 8,
        **sizes: Any,
    ) -> SidVocab:
        """Build from one int tuple per item: ``levels`` codes, optionally followed by the suffix.

        ``levels`` defaults to the shortest tuple's length.
        """
        if len(sids) == 0:
            raise SidVocabError("no items: a SID vocabulary needs at least one item")
        levels = min(len(s) for s in sids) if levels is None else levels
        bad = [i for i, s in enumerate(sids) if len(s) not in (levels, levels + 1)]
        if bad:
            raise SidVocabError(f"SID of item {item_ids[bad[0]]!r} has length {len(sids[bad[0]])}, "
                                f"expected {levels} or {levels + 1}")
        codes = np.array([list(s[:levels]) for s in sids], dtype=np.int64)
        suffix = np.array([s[levels] if len(s) > levels else -1 for s in sids], dtype=np.int64)
        return cls(item_ids, codes, suffix, n_special=n_special, **sizes)

    def add_block(self, name: str, size: int) -> int:
        """Append a block of ``size`` extra tokens (e.g. interest tokens) and return its first token id."""
        if name in self.blocks:
            raise SidVocabError(f"token block {name!r} already exists")
        if int(size) < 1:
            raise SidVocabError(f"token block {name!r} needs size >= 1, got {size}")
        offset = self.vocab_size
        self.blocks[name] = (offset, int(size))
        self.vocab_size = offset + int(size)
        return offset

    # lookups ----------------------------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def sid_tokens(self) -> np.ndarray:
        """Read-only [n_items, max_len] token matrix (SID + eos, pad after) in ``item_ids`` order."""
        return self._tokens

    def item_index(self, item_id: str) -> int:
        """Row of ``item_id`` in ``item_ids`` (raises KeyError for an unknown item)."""
        try:
            return self._index[str(item_id)]
        except KeyError:
            raise KeyError(f"unknown item id {item_id!r}: not in the SID vocabulary") from None

    def item_tokens(self, item_id: str) -> list[int]:
        """SID tokens of one item followed by eos."""
        row = self._tokens[self.item_index(item_id)].tolist()
        return row[: row.index(EOS_ID) + 1]

    def items_tokens(self, item_ids: Iterable[str]) -> np.ndarray:
        """[n, max_len] token matrix of several items (eos included, padded with pad_id)."""
        rows = [self.item_index(i) for i in item_ids]
        return self._tokens[np.asarray(rows, dtype=np.int64)].copy()

    def item_of_tokens(self, tokens: Iterable[int]) -> str | None:
        """Item whose SID is ``tokens`` up to the first eos; None if there is no eos or no such item.

        Tokens after the first eos are ignored.
        """
        values = [int(t) for t in (tokens.tolist() if hasattr(tokens, "tolist") else tokens)]
        if EOS_ID not in values:
            return None
        index = self._by_tokens.get(tuple(values[: values.index(EOS_ID)]))
        return None if index is None else self.item_ids[index]

    def _sid_text(self, index: int) -> str:
        codes = self._codes[index].tolist()
        return str(codes if self._suffix[index] < 0 else [*codes, f"s{self._suffix[index]}"])

    # persistence ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description, to be saved beside the model."""
        return {
            "n_special": self.n_special,
            "level_sizes": self.level_sizes,
            "suffix_size": self.suffix_size,
            "blocks": {name: list(spec) for name, spec in self.blocks.items()},
            "item_ids": self.item_ids,
            "codes": self._codes.tolist(),
            "suffix": [None if s < 0 else int(s) for s in self._suffix.tolist()],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SidVocab:
        """Inverse of :meth:`to_dict`."""
        missing = {"n_special", "level_sizes", "suffix_size", "item_ids", "codes", "suffix"} - set(d)
        if missing:
            raise SidVocabError(f"SID vocabulary dict lacks keys {sorted(missing)}")
        return cls(
            d["item_ids"],
            np.asarray(d["codes"], dtype=np.int64).reshape(len(d["item_ids"]), len(d["level_sizes"])),
            np.array([-1 if s is None else s for s in d["suffix"]], dtype=np.int64),
            n_special=d["n_special"],
            level_sizes=d["level_sizes"],
            suffix_size=d["suffix_size"],
            blocks={name: (int(o), int(s)) for name, (o, s) in d.get("blocks", {}).items()},
        )

    def __repr__(self) -> str:
        return (f"SidVocab(n_items={self.n_items}, levels={self.levels}, level_sizes={self.level_sizes}, "
                f"suffix_size={self.suffix_size}, vocab_size={self.vocab_size})")
