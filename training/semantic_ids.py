"""Semantic IDs: each item's RQ-VAE level codes, plus one suffix token only where full codes collide.

Inside a collision group (items sharing all level codes) the suffix is 0, 1, 2, ... in order of the item's
quantisation distance, then item id, so the assignment is deterministic. Items whose codes are unique get
no suffix. Collision detection and suffix assignment are vectorised with numpy.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

NO_SUFFIX = -1
_CODE_COLUMN = re.compile(r"^c(\d+)$")


class SemanticIdError(ValueError):
    """Semantic IDs that are inconsistent: bad shapes, negative codes, duplicate items or duplicate SIDs."""


def as_code_array(codes: np.ndarray) -> np.ndarray:
    """Validate level codes [n_items, L] (non-negative integers) and return them as int64."""
    arr = np.asarray(codes)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise SemanticIdError(f"codes must be a 2-D array [n_items, levels >= 1], got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(np.mod(arr, 1) == 0):
            raise SemanticIdError(f"codes must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if (arr < 0).any():
        raise SemanticIdError("codes must be >= 0")
    return arr


def collision_groups(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each item, the index of its full-code group and that group's size (both int64 [n_items])."""
    arr = as_code_array(codes)
    if arr.shape[0] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    _, inverse, counts = np.unique(arr, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    return inverse.astype(np.int64), counts[inverse].astype(np.int64)


def assign_suffixes(
    codes: np.ndarray, item_ids: Sequence[object], distances: np.ndarray | None = None
) -> np.ndarray:
    """Suffix per item: rank inside its collision group by (distance, item_id); ``NO_SUFFIX`` if unique."""
    arr = as_code_array(codes)
    n = arr.shape[0]
    ids = np.asarray([str(i) for i in item_ids], dtype=str)
    if ids.shape[0] != n:
        raise SemanticIdError(f"{ids.shape[0]} item ids for {n} rows of codes")
    dist = np.zeros(n) if distances is None else np.asarray(distances, dtype=np.float64).reshape(-1)
    if dist.shape[0] != n:
        raise SemanticIdError(f"{dist.shape[0]} distances for {n} rows of codes")
    if n == 0:
        return np.zeros(0, np.int64)
    group, size = collision_groups(arr)
    order = np.lexsort((ids, dist, group))  # last key sorts first: group, then distance, then item id
    sorted_group = group[order]
    starts = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]])
    lengths = np.diff(np.r_[starts, n])
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - np.repeat(starts, lengths)
    return np.where(size > 1, rank, NO_SUFFIX).astype(np.int64)


def format_sid(sid: Sequence[int]) -> str:
    """``(12, 200, 7)`` → ``"12-200-7"``."""
    return "-".join(str(int(c)) for c in sid)


def parse_sid(text: str) -> tuple[int, ...]:
    """``"12-200-7-1"`` → ``(12, 200, 7, 1)``."""
    try:
        return tuple(int(p) for p in str(text).split("-"))
    except ValueError:
        raise SemanticIdError(f"not a semantic ID string: {text!r} (expected e.g. '12-200-7')") from None


class SemanticIdTable:
    """Item ↔ semantic ID, both ways. SID = level codes, then the suffix when the item has one."""

    def __init__(self, item_ids: Sequence[object], codes: np.ndarray, suffix: np.ndarray) -> None:
        arr = as_code_array(codes)
        suf = np.asarray(suffix, dtype=np.int64).reshape(-1)
        self.item_ids: list[str] = [str(i) for i in item_ids]
        n = arr.shape[0]
        if len(self.item_ids) != n or suf.shape[0] != n:
            raise SemanticIdError(
                f"item_ids ({len(self.item_ids)}), codes ({n}) and suffix ({suf.shape[0]}) disagree in length"
            )
        if (suf < NO_SUFFIX).any():
            raise SemanticIdError("suffix values must be >= 0 (or missing)")
        self.codes = arr
        self.suffix = suf
        self._item_index = {item: i for i, item in enumerate(self.item_ids)}
        if len(self._item_index) != n:
            dupes = pd.Series(self.item_ids)
            raise SemanticIdError(f"duplicate item ids: {sorted(set(dupes[dupes.duplicated()]))[:5]}")
        self._sids = [
            tuple(row) if s == NO_SUFFIX else (*row, s)
            for row, s in zip(arr.tolist(), suf.tolist(), strict=True)
        ]
        self._sid_index = {sid: i for i, sid in enumerate(self._sids)}
        if len(self._sid_index) != n:
            sids = pd.Series(self._sids)
            clash = sids[sids.duplicated()].iloc[0]
            raise SemanticIdError(f"semantic IDs are not unique, e.g. {format_sid(clash)}")

    @classmethod
    def from_codes(
        cls, item_ids: Sequence[object], codes: np.ndarray, distances: np.ndarray | None = None
    ) -> SemanticIdTable:
        """Build from level codes [n_items, L]; suffixes go only to items whose full codes collide."""
        return cls(item_ids, codes, assign_suffixes(codes, item_ids, distances))

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> SemanticIdTable:
        """Rebuild from :meth:`to_frame`'s layout (``item_id``, ``c0..c{L-1}``, nullable ``suffix``)."""
        if "item_id" not in frame.columns:
            raise SemanticIdError(f"frame lacks the 'item_id' column; columns: {list(frame.columns)}")
        numbers = sorted(int(m.group(1)) for c in frame.columns if (m := _CODE_COLUMN.match(str(c))))
        if not numbers or numbers != list(range(len(numbers))):
            raise SemanticIdError(f"frame needs code columns c0..c{{L-1}}, found levels {numbers}")
        code_frame = frame[[f"c{i}" for i in numbers]]
        if code_frame.isna().any().any():
            raise SemanticIdError("code columns contain missing values")
        if "suffix" in frame.columns:
            suffix = pd.array(frame["suffix"], dtype="Int64").fillna(NO_SUFFIX).to_numpy(dtype=np.int64)
        else:
            suffix = np.full(len(frame), NO_SUFFIX, np.int64)
        table = cls(frame["item_id"].tolist(), code_frame.to_numpy(), suffix)
        if "sid" in frame.columns:
            mismatch = frame["sid"].astype(str).to_numpy() != np.asarray(table.sid_strings(), dtype=object)
            if mismatch.any():
                row = int(np.flatnonzero(mismatch)[0])
                raise SemanticIdError(
                    f"sid column disagrees with the codes for item {table.item_ids[row]!r}: "
                    f"{frame['sid'].iloc[row]!r} vs {table.sid_strings()[row]!r}"
                )
        return table

    def to_frame(self) -> pd.DataFrame:
        """Columns: item_id, sid (e.g. "12-200-7" or "12-200-7-1"), c0..c{L-1} (int64), suffix (Int64)."""
        data: dict[str, object] = {"item_id": self.item_ids, "sid": self.sid_strings()}
        for level in range(self.levels):
            data[f"c{level}"] = self.codes[:, level]
        suffix = pd.array(self.suffix, dtype="Int64")
        suffix[self.suffix == NO_SUFFIX] = pd.NA
        data["suffix"] = suffix
        return pd.DataFrame(data)

    def sid_strings(self) -> list[str]:
        """SID strings in item order."""
        return [format_sid(s) for s in self._sids]

    def sid_of(self, item_id: object) -> tuple[int, ...]:
        """The item's SID tuple (codes, then the suffix when it has one)."""
        try:
            return self._sids[self._item_index[str(item_id)]]
        except KeyError:
            raise KeyError(f"unknown item id {item_id!r}") from None

    def item_of(self, sid: Sequence[int] | str) -> str:
        """The item whose SID is exactly ``sid`` (a tuple of ints or a string like "12-200-7-1")."""
        key = parse_sid(sid) if isinstance(sid, str) else tuple(int(c) for c in sid)
        try:
            return self.item_ids[self._sid_index[key]]
        except KeyError:
            raise KeyError(f"no item has semantic ID {format_sid(key)}") from None

    @property
    def levels(self) -> int:
        """Number of RQ-VAE levels (code columns)."""
        return int(self.codes.shape[1])

    @property
    def max_suffix(self) -> int:
        """Largest suffix in use; -1 when no item collides."""
        return int(self.suffix.max()) if self.suffix.size else NO_SUFFIX

    def __len__(self) -> int:
        return len(self.item_ids)

    def __contains__(self, item_id: object) -> bool:
        return str(item_id) in self._item_index
