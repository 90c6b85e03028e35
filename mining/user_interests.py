"""User-side deep interests, summarised from each user's training prefix only.

Valid and test items must never reach a user's interests (IDGenRec issue #1: user ids built from the
whole sequence leaked the target). So the function filters the splits itself instead of trusting
the caller: only ``split == "train"`` rows, and only positions before the user's first valid/test
position.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mining.backends import ChatRequest, LLMBackend
from mining.call_cache import CachedBackend, CallCache, MemoryCallCache
from mining.domains import RETAIL, Domain
from mining.judges import embed_texts
from mining.parsing import normalise_descriptor
from mining.quality import USER_INTEREST_COLUMNS

Embed = Callable[[list[str]], np.ndarray]


class UserInterestError(ValueError):
    """Bad input to the user-interest summary; the message names the frame, column or argument."""


@dataclass(frozen=True)
class UserInterestSettings:
    """Settings of the user-interest stage (the launchpad's ``user_interests`` config is derived from these)."""

    top_k: int = field(default=5, metadata={"description": "Aggregate interests kept per user (ranks 1..top_k)"})
    recency_half_life: float = field(default=5.0, metadata={
        "description": "Half-life, in history items, of a descriptor's recency weight"})
    recent_items: int = field(default=20, metadata={
        "description": "Only the last N training items of each user are summarised (not the sequence "
                       "models' history cap)"})
    llm_summary: bool = field(default=True, metadata={
        "description": "Add one LLM-written phrase per user (rank 0)"})
    seed: int = field(default=0, metadata={"description": "Seed of the LLM summary requests"})

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise UserInterestError(f"UserInterestSettings.top_k must be >= 1, got {self.top_k}")
        if not self.recency_half_life > 0:
            raise UserInterestError(f"UserInterestSettings.recency_half_life must be > 0, "
                                    f"got {self.recency_half_life}")
        if self.recent_items < 1:
            raise UserInterestError(f"UserInterestSettings.recent_items must be >= 1, got {self.recent_items}")


#: part of every summary cache key (with the domain's name and hash past retail: ``Domain.summary_prompt_version``):
#: change it whenever the request's shape changes (the texts live in mining.domains)
SUMMARY_PROMPT_VERSION = "user-summary-v1"
_QUOTES = re.compile(r"^[\s\"'`*\-•]+|[\s\"'`*.!,;:]+$")


def summary_messages(interests: list[str], domain: Domain = RETAIL) -> list[dict]:
    """Chat messages asking for one phrase that names the user's overall interest, in ``domain``'s words."""
    messages = [{"role": "system", "content": domain.summary_instruction}]
    for listed, answer in domain.summary_examples:
        messages.append({"role": "user", "content": f"{domain.history_label}: {listed}\nOverall interest:"})
        messages.append({"role": "assistant", "content": answer})
    listed = "; ".join(" ".join(i.split()) for i in interests)
    messages.append({"role": "user", "content": f"{domain.history_label}: {listed}\nOverall interest:"})
    return messages


def train_prefix(splits: pd.DataFrame, *, recent_items: int | None = None) -> pd.DataFrame:
    """Each user's training prefix: ``split == "train"`` rows at positions before the user's first
    valid/test position (all train rows for a user without one), the last ``recent_items`` of them
    when set, ordered by user and position."""
    missing = [c for c in ("user_id", "item_id", "position", "split") if c not in splits.columns]
    if missing:
        raise UserInterestError(f"splits: missing column(s) {missing}")
    if recent_items is not None and recent_items < 1:
        raise UserInterestError(f"recent_items must be >= 1 or None, got {recent_items}")
    df = splits[["user_id", "item_id", "position", "split"]].copy()
    df["user_id"] = df["user_id"].astype(str)
    df["item_id"] = df["item_id"].astype(str)
    if df["position"].isna().any():
        raise UserInterestError("splits: column 'position' has missing values")
    df["position"] = df["position"].astype(np.int64)
    is_train = df["split"].astype(str) == "train"
    cutoff = df[~is_train].groupby("user_id")["position"].min()
    train = df[is_train].copy()
    limit = train["user_id"].map(cutoff)
    train = train[limit.isna() | (train["position"] < limit)]
    train = train.sort_values(["user_id", "position"], kind="stable")
    if recent_items is not None:
        train = train.groupby("user_id", sort=False).tail(recent_items)
    return train[["user_id", "item_id", "position"]].reset_index(drop=True)


def summarise_user_interests(
    splits: pd.DataFrame,
    item_interests: pd.DataFrame,
    settings: UserInterestSettings = UserInterestSettings(),  # noqa: B008 - frozen, never mutated
    *,
    backend: LLMBackend | None = None,
    cache: CallCache | None = None,
    embed: Embed | None = None,
    merge_threshold: float = 0.85,
    curated_only: bool = True,
    batch_size: int = 16,
    domain: Domain = RETAIL,
) -> pd.DataFrame:
    """Per user, a short ordered list of deep interests from the last ``settings.recent_items`` items of
    the training prefix (see ``train_prefix``).

    Aggregation: each history item's descriptors count ``confidence * 0.5 ** (age / recency_half_life)``,
    age = how many history items came after it; descriptors merge by normalised text and, with
    ``embed``, by cosine >= ``merge_threshold`` (the heavier phrasing names the merged interest).
    Weights are shares of the user's total, ranks 1..``settings.top_k``. ``curated_only`` keeps label-1
    rows when ``item_interests`` has a ``label`` column (i.e. it is ``interest_rewards``).

    With a ``backend`` and ``settings.llm_summary``, one more row per user (rank 0, source ``llm_summary``,
    weight = the phrase's mean token probability, 1.0 when unknown) names the overall interest behind the
    top interests; it is skipped when empty or equal to an aggregate interest. Its calls go through
    ``cache`` (prompt version ``domain.summary_prompt_version``; default: an in-memory cache), ``batch_size`` at a
    time, with ``settings.seed``; a failed call raises ``LLMError``.

    Columns: user_id, rank, interest, weight, source, n_history_items. Users whose prefix has no
    interests get no rows.
    """
    if not isinstance(settings, UserInterestSettings):
        raise UserInterestError(f"settings must be UserInterestSettings, got {type(settings).__name__}")
    top_k, recency_half_life = settings.top_k, settings.recency_half_life
    if batch_size < 1:
        raise UserInterestError(f"batch_size must be >= 1, got {batch_size}")
    missing = [c for c in ("item_id", "descriptor", "confidence") if c not in item_interests.columns]
    if missing:
        raise UserInterestError(f"item_interests: missing column(s) {missing}")

    history = train_prefix(splits, recent_items=settings.recent_items)
    n_history = history.groupby("user_id").size()
    age = history.groupby("user_id").cumcount(ascending=False)
    history["recency"] = np.power(0.5, age.to_numpy() / recency_half_life)

    interests = item_interests
    if curated_only and "label" in interests.columns:
        interests = interests[interests["label"] == 1]
    interests = interests[["item_id", "descriptor", "confidence"]].copy()
    interests["item_id"] = interests["item_id"].astype(str)
    interests["descriptor"] = interests["descriptor"].astype(str).map(lambda s: " ".join(s.split()))
    interests["key"] = interests["descriptor"].map(normalise_descriptor)
    interests = interests[interests["key"] != ""]

    joined = history.merge(interests, on="item_id", how="inner")
    joined["w"] = joined["confidence"].astype(float).clip(0.0, 1.0) * joined["recency"]
    # the phrasing with the most weight names the group; text breaks ties so output is deterministic
    joined = joined.sort_values(["user_id", "key", "w", "descriptor"], ascending=[True, True, False, True],
                                kind="stable")
    groups = joined.groupby(["user_id", "key"], sort=True).agg(w=("w", "sum"), interest=("descriptor", "first"))
    groups = groups.reset_index()
    if embed is not None and len(groups):
        groups = _merge_similar(groups, embed, merge_threshold)

    total = groups.groupby("user_id")["w"].transform("sum")
    groups["weight"] = np.where(total > 0, groups["w"] / total.where(total > 0, 1.0), 0.0)
    groups = groups.sort_values(["user_id", "weight", "key"], ascending=[True, False, True], kind="stable")
    top = groups.groupby("user_id", sort=True).head(top_k).copy()
    top["rank"] = top.groupby("user_id").cumcount() + 1
    top["source"] = "aggregate"

    frames = [top]
    if backend is not None and settings.llm_summary and len(top):
        calls = CachedBackend(backend, cache if cache is not None else MemoryCallCache(),
                              domain.summary_prompt_version(SUMMARY_PROMPT_VERSION), chunk_size=batch_size)
        summaries = _llm_summaries(top, calls, seed=settings.seed, domain=domain)
        if len(summaries):
            frames.append(summaries)
    out = pd.concat(frames, ignore_index=True)
    out["n_history_items"] = out["user_id"].map(n_history).astype(np.int64)
    out = out.sort_values(["user_id", "rank"], kind="stable").reset_index(drop=True)
    out["user_id"] = out["user_id"].astype("string")
    out["rank"] = out["rank"].astype(np.int64)
    out["interest"] = out["interest"].astype("string")
    out["weight"] = out["weight"].astype(np.float64)
    out["source"] = out["source"].astype("string")
    return out[USER_INTEREST_COLUMNS]


def _merge_similar(groups: pd.DataFrame, embed: Embed, threshold: float) -> pd.DataFrame:
    """Greedy per user: heaviest interest first; one within ``threshold`` cosine of a kept one joins it."""
    keys = groups["key"].tolist()
    vectors = embed_texts(embed, keys)
    merged = []
    for _, g in groups.groupby("user_id", sort=True):
        g = g.sort_values(["w", "key"], ascending=[False, True], kind="stable")
        idx = g.index.to_numpy()
        sims = vectors[idx] @ vectors[idx].T
        owner = np.arange(len(idx))
        kept: list[int] = []
        for j in range(len(idx)):
            close = [k for k in kept if sims[j, k] >= threshold]
            if close:
                owner[j] = max(close, key=lambda k: sims[j, k])
            else:
                kept.append(j)
        g = g.assign(owner=owner)
        w = g.groupby("owner")["w"].sum()
        rep = g.iloc[kept].copy()
        rep["w"] = w.loc[kept].to_numpy()
        merged.append(rep.drop(columns="owner"))
    return pd.concat(merged, ignore_index=True)


def summary_request(interests: list[str], *, seed: int, domain: Domain = RETAIL) -> ChatRequest:
    """The request for one user's summary phrase (cache key: ``domain.summary_prompt_version``)."""
    return ChatRequest(messages=summary_messages(interests, domain), max_tokens=16, temperature=0.0,
                       stop=("\n",), seed=seed)


def _llm_summaries(top: pd.DataFrame, calls: CachedBackend, *, seed: int, domain: Domain) -> pd.DataFrame:
    users, requests = [], []
    for user, g in top.groupby("user_id", sort=True):
        users.append(user)
        requests.append(summary_request(g["interest"].tolist(), seed=seed, domain=domain))
    completions = calls.complete_batch(requests)
    existing = top.groupby("user_id")["key"].agg(set)
    rows = []
    for user, c in zip(users, completions, strict=True):
        phrase = _QUOTES.sub("", (c.text or "").strip().split("\n")[0])
        phrase = " ".join(phrase.split()[:12])
        key = normalise_descriptor(phrase)
        if not key or key in existing[user]:
            continue
        weight = float(np.exp(c.mean_logprob)) if c.mean_logprob is not None else 1.0
        rows.append({"user_id": user, "key": key, "interest": phrase, "weight": min(max(weight, 0.0), 1.0),
                     "rank": 0, "source": "llm_summary"})
    return pd.DataFrame(rows, columns=["user_id", "key", "interest", "weight", "rank", "source"])
