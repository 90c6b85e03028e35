"""Enriched item text for IEID: title, description, caption, then the curated interest descriptors.

The format is deterministic and readable, e.g. ``"Title. Description. Caption. Interests: a; b; c."``.
When a length budget is set, the description is shortened first so that the title and the interests
(the part that carries the method's signal) survive.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

_WHITESPACE = re.compile(r"\s+")
_TERMINAL = (".", "!", "?", "…")
_ELLIPSIS = "…"
INTERESTS_PREFIX = "Interests: "


@dataclass(frozen=True)
class ItemTextSettings:
    """What goes into an item's text before it is embedded (IEID)."""

    with_interests: bool = field(default=True, metadata={
        "description": "Append curated descriptors to the item text (False: plain text, the ablation)"})
    keep_all_descriptors: bool = field(default=False, metadata={
        "description": "Use every descriptor, not only label-1 ones"})
    max_chars: int = field(default=1200, metadata={"description": "Cut the enriched text at this many characters"})

    def __post_init__(self) -> None:
        if self.max_chars < 64:
            raise ValueError(f"ItemTextSettings.max_chars must be >= 64, got {self.max_chars}")


def _clean(value: object) -> str:
    """Collapse whitespace; map None / NaN / non-strings-that-are-missing to ''."""
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    return _WHITESPACE.sub(" ", str(value)).strip()


def _sentence(text: str) -> str:
    if not text:
        return ""
    return text if text.endswith(_TERMINAL) else text + "."


def _descriptor_list(descriptors: Iterable[object] | None) -> list[str]:
    if descriptors is None or isinstance(descriptors, float):
        return []
    if isinstance(descriptors, str):
        raise TypeError("descriptors must be a list of strings, not a single string")
    # Trailing punctuation would clash with the "; " separator and the closing period.
    cleaned = (_clean(d).rstrip(".;,: ") for d in descriptors)
    return [d for d in cleaned if d]


def _cut_words(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` characters at a word boundary, marking the cut with an ellipsis."""
    if len(text) <= limit:
        return text
    if limit <= 1:
        return ""
    head = text[: limit - 1]
    space = head.rfind(" ")
    if space > 0:
        head = head[:space]
    return head.rstrip(" .,;:") + _ELLIPSIS


def build_item_text(
    title: str | None,
    description: str | None = None,
    caption: str | None = None,
    descriptors: Sequence[str] | None = None,
    *,
    with_interests: bool = True,
    max_chars: int | None = None,
) -> str:
    """Build the enriched text of one item.

    Parts that are missing (None, NaN, blank) are skipped. ``with_interests=False`` drops the descriptors
    (the "no interests" ablation). ``max_chars`` caps the length: the description is shortened first
    (at a word boundary), then, if still too long, the whole text is cut.
    """
    if max_chars is not None and max_chars < 1:
        raise ValueError(f"max_chars must be a positive integer or None, got {max_chars}")
    head = [_sentence(_clean(title))]
    desc = _clean(description)
    tail = [_sentence(_clean(caption))]
    if with_interests:
        items = _descriptor_list(descriptors)
        if items:
            tail.append(INTERESTS_PREFIX + "; ".join(items) + ".")

    def assemble(description_text: str) -> str:
        return " ".join(p for p in [*head, _sentence(description_text), *tail] if p)

    text = assemble(desc)
    if max_chars is None or len(text) <= max_chars:
        return text
    fixed = len(assemble(""))
    room = max_chars - fixed - (1 if fixed else 0) - 1  # the joining space and the closing period
    shortened = _cut_words(desc, room) if room > 1 else ""
    text = assemble(shortened)
    return _cut_words(text, max_chars)


def build_item_texts(
    items: pd.DataFrame,
    *,
    title_col: str = "title",
    description_col: str | None = "description",
    caption_col: str | None = "caption",
    descriptors_col: str | None = "descriptors",
    with_interests: bool = True,
    max_chars: int | None = None,
) -> pd.Series:
    """Enriched text for every row of ``items`` (same index). Optional columns may be absent or None."""
    if title_col not in items.columns:
        raise KeyError(f"items has no title column {title_col!r}; columns are {list(items.columns)}")
    n = len(items)

    def column(name: str | None) -> Sequence[object]:
        if name is None or name not in items.columns:
            return [None] * n
        return items[name].tolist()

    texts = [
        build_item_text(t, d, c, s, with_interests=with_interests, max_chars=max_chars)
        for t, d, c, s in zip(
            column(title_col), column(description_col), column(caption_col), column(descriptors_col),
            strict=True,
        )
    ]
    return pd.Series(texts, index=items.index, name="text", dtype="object")


def catalogue_item_texts(items: pd.DataFrame, descriptors: Mapping[str, Sequence[str]] | None,
                         settings: ItemTextSettings) -> pd.Series:
    """Enriched text of every catalogue row: title, description with categories and brand, caption, then the
    item's descriptors (when ``settings.with_interests``), cut at ``settings.max_chars``."""
    frame = items.copy()
    details = [frame["description"].fillna("") if "description" in frame else pd.Series([""] * len(frame),
                                                                                        index=frame.index)]
    for col, label in (("categories", "Category"), ("brand", "Brand")):
        if col in frame:
            val = frame[col].fillna("").astype(str)
            details.append(np.where(val.str.len() > 0, label + ": " + val + ".", ""))
    frame["description"] = [" ".join(p for p in parts if p) for parts in zip(*details, strict=True)]
    frame["descriptors"] = [list(descriptors.get(i, [])) if descriptors else [] for i in frame["item_id"]]
    return build_item_texts(frame, with_interests=settings.with_interests, max_chars=settings.max_chars)
