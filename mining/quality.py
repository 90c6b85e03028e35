"""Contracts for the RLDI and user-interest outputs, as plain functions that return a list of problems.

An empty list means the frame passes. Each problem names the column and the rule it breaks, so a
blocking asset check can show it as is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# the merge's dedup key: the contract must call "duplicate" exactly what the merge would have merged
from mining.parsing import RESTATEMENT_THRESHOLD, normalise_descriptor, restatement_reason

REWARD_COLUMNS = ["item_id", "rank", "descriptor", "confidence", "label", "judge", "score"]
QUALITY_COLUMNS = ["item_id", "q", "n_descriptors", "n_curated"]
USER_INTEREST_COLUMNS = ["user_id", "rank", "interest", "weight", "source", "n_history_items"]
USER_INTEREST_SOURCES = ("aggregate", "llm_summary")


def check_interest_rewards(
    rewards: pd.DataFrame, *, item_ids: Iterable[str] | None = None, min_coverage: float | None = None,
    quality: pd.DataFrame | None = None,
) -> list[str]:
    """Problems with an ``interest_rewards`` frame.

    Rules: required columns; ``descriptor`` non-empty and unique per item after normalisation;
    ``confidence`` in [0, 1]; ``label`` in {0, 1}; ``rank`` unique per item; when the catalogue's
    ``item_ids`` are given, coverage (share of catalogue items with at least one descriptor)
    >= ``min_coverage`` (required with ``item_ids``: the stage setting ``JudgeSettings.min_coverage``);
    when ``quality`` (the ``item_quality`` frame) is given, its rules too.
    """
    problems = _missing_columns(rewards, REWARD_COLUMNS, "interest_rewards")
    if problems:
        return problems
    problems = _descriptor_rules(rewards, item_ids=item_ids, min_coverage=min_coverage)
    labels = pd.to_numeric(rewards["label"], errors="coerce")
    bad_labels = int((~labels.isin([0, 1])).sum())
    if bad_labels:
        problems.append(f"label: {bad_labels} value(s) not in {{0, 1}}")
    if quality is not None:
        problems += check_item_quality(quality)
    return problems


def check_item_interests(
    interests: pd.DataFrame, *, item_ids: Iterable[str] | None = None, min_coverage: float | None = None
) -> list[str]:
    """Problems with the merged ``item_interests`` frame: descriptors non-empty and unique per item
    after normalisation, confidence in [0, 1], rank unique per item, and with the catalogue's ``item_ids``
    coverage >= ``min_coverage`` (required with ``item_ids``: the stage setting
    ``ItemMiningSettings.min_coverage``)."""
    problems = _missing_columns(interests, ["item_id", "rank", "descriptor", "confidence"], "item_interests")
    return problems or _descriptor_rules(interests, item_ids=item_ids, min_coverage=min_coverage)


def _descriptor_rules(frame: pd.DataFrame, *, item_ids: Iterable[str] | None,
                      min_coverage: float | None) -> list[str]:
    """Rules shared by item_interests and interest_rewards."""
    if item_ids is not None and min_coverage is None:
        raise ValueError("min_coverage is required when item_ids are given (the stage's coverage setting)")
    problems: list[str] = []
    desc = frame["descriptor"].astype("string").fillna("")
    norm = desc.map(normalise_descriptor)
    empty = int((norm == "").sum())
    if empty:
        problems.append(f"descriptor: {empty} empty descriptor(s) after normalisation")
    dup = frame.assign(_n=norm)[norm != ""].duplicated(["item_id", "_n"])
    if dup.any():
        example = frame[norm != ""][dup.to_numpy()].iloc[0]
        problems.append(
            f"descriptor: {int(dup.sum())} duplicate descriptor(s) per item after normalisation "
            f"(e.g. item {example['item_id']!r}: {example['descriptor']!r})"
        )
    problems += _in_unit_interval(frame["confidence"], "confidence")
    if frame.duplicated(["item_id", "rank"]).any():
        problems.append("rank: duplicate rank within an item")
    if item_ids is not None:
        catalogue = pd.Index(pd.unique(pd.Series(list(item_ids), dtype="string")))
        if len(catalogue):
            covered = catalogue.isin(frame.loc[norm != "", "item_id"].astype("string")).mean()
            if covered < min_coverage:
                problems.append(
                    f"coverage: {covered:.3f} of items have at least one descriptor, "
                    f"below the minimum {min_coverage:.3f}"
                )
    return problems


def check_item_quality(quality: pd.DataFrame) -> list[str]:
    """Problems with an ``item_quality`` frame: q in [0, 1] (never NaN), item_id unique,
    0 <= n_curated <= n_descriptors."""
    problems = _missing_columns(quality, QUALITY_COLUMNS, "item_quality")
    if problems:
        return problems
    problems += _in_unit_interval(quality["q"], "q")
    if quality["item_id"].duplicated().any():
        problems.append("item_id: duplicate item_id")
    n_desc = pd.to_numeric(quality["n_descriptors"], errors="coerce")
    n_cur = pd.to_numeric(quality["n_curated"], errors="coerce")
    if ((n_cur < 0) | (n_cur > n_desc) | n_cur.isna() | n_desc.isna()).any():
        problems.append("n_curated: must satisfy 0 <= n_curated <= n_descriptors")
    return problems


def check_user_interests(user_interests: pd.DataFrame) -> list[str]:
    """Problems with a ``user_interests`` frame: interest non-empty and unique per user after
    normalisation, weight finite and >= 0, source known, rank unique per user, history size >= 1."""
    problems = _missing_columns(user_interests, USER_INTEREST_COLUMNS, "user_interests")
    if problems:
        return problems
    norm = user_interests["interest"].astype("string").fillna("").map(normalise_descriptor)
    empty = int((norm == "").sum())
    if empty:
        problems.append(f"interest: {empty} empty interest(s) after normalisation")
    if user_interests.assign(_n=norm)[norm != ""].duplicated(["user_id", "_n"]).any():
        problems.append("interest: duplicate interest per user after normalisation")
    weight = pd.to_numeric(user_interests["weight"], errors="coerce").to_numpy(dtype=float)
    if (~np.isfinite(weight) | (weight < 0)).any():
        problems.append("weight: values must be finite and >= 0")
    unknown = set(user_interests["source"].dropna().unique()) - set(USER_INTEREST_SOURCES)
    if unknown or user_interests["source"].isna().any():
        problems.append(f"source: values must be one of {USER_INTEREST_SOURCES}, got {sorted(unknown)}")
    if user_interests.duplicated(["user_id", "rank"]).any():
        problems.append("rank: duplicate rank within a user")
    if (pd.to_numeric(user_interests["n_history_items"], errors="coerce").fillna(0) < 1).any():
        problems.append("n_history_items: must be >= 1")
    return problems


@dataclass(frozen=True)
class RestatementShare:
    """How many of ``n`` descriptors restate their item, and whether that share is above ``max_share``
    (``warn``); ``examples`` are a few of them (item_id, title, descriptor, reason)."""

    n: int
    n_restatements: int
    max_share: float
    examples: list[dict] = field(default_factory=list)

    @property
    def share(self) -> float:
        return self.n_restatements / self.n if self.n else 0.0

    @property
    def warn(self) -> bool:
        return self.share > self.max_share

    def metadata(self, prefix: str) -> dict:
        """Plain values for asset metadata, keys starting with ``prefix``."""
        return {f"{prefix}_share": round(self.share, 4), f"{prefix}": self.n_restatements, f"{prefix}_of": self.n,
                f"{prefix}_max_share": self.max_share, f"{prefix}_examples": self.examples}


def curated_restatement_share(rewards: pd.DataFrame, items: pd.DataFrame, *,
                              threshold: float = RESTATEMENT_THRESHOLD, max_share: float = 0.2,
                              n_examples: int = 5) -> RestatementShare:
    """The share of curated (label 1) descriptors in ``rewards`` that restate their item's title or copy its
    description (``parsing.restatement_reason`` at ``threshold``, on ``items``' title and description), with a
    warning flag above ``max_share``: a judge that curates restatements fills item text with titles."""
    curated = rewards[pd.to_numeric(rewards["label"], errors="coerce") == 1]
    lookup = items.assign(item_id=items["item_id"].astype(str)).drop_duplicates("item_id").set_index("item_id")
    ids = curated["item_id"].astype(str)
    titles = ids.map(lookup["title"]) if "title" in lookup.columns else ids.map(lambda _i: None)
    descriptions = ids.map(lookup["description"]) if "description" in lookup.columns else ids.map(lambda _i: None)
    found = []
    for item_id, descriptor, title, description in zip(ids, curated["descriptor"].astype(str), titles, descriptions,
                                                       strict=True):
        reason = restatement_reason(descriptor, title, description, threshold=threshold)
        if reason:
            found.append({"item_id": item_id, "title": title if isinstance(title, str) else None,
                          "descriptor": descriptor, "reason": reason})
    return RestatementShare(len(curated), len(found), max_share, found[:n_examples])


def rejected_answer_share(stats: Mapping, *, max_share: float = 0.2) -> RestatementShare:
    """From mining stats (``mine_item_interests``' ``answers``, ``rejected_restatements``, ``rejected_copies``):
    the share of the models' answers rejected as restatements or copied few-shot examples, with a warning flag
    above ``max_share``: the prompt's domain most likely does not fit the catalogue."""
    answers = int(stats.get("answers", 0))
    rejected = int(stats.get("rejected_restatements", 0)) + int(stats.get("rejected_copies", 0))
    return RestatementShare(answers, rejected, max_share)


def _missing_columns(df: pd.DataFrame, columns: list[str], table: str) -> list[str]:
    missing = [c for c in columns if c not in df.columns]
    return [f"{table}: missing column(s) {missing}"] if missing else []


def _in_unit_interval(values: pd.Series, column: str) -> list[str]:
    x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    bad = int((np.isnan(x) | (x < 0) | (x > 1)).sum())
    return [f"{column}: {bad} value(s) outside [0, 1] or missing"] if bad else []
