"""Item interest mining: every configured miner reads every item's evidence and returns ranked descriptors."""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
from tqdm.auto import tqdm

from mining.backends import ChatRequest, Completion, LLMBackend, MinerConfig
from mining.call_cache import CachedBackend, CallCache
from mining.parsing import ParseError, clean_phrase, normalise_descriptor, parse_item_interests, storable_text
from mining.prompts import (
    FEW_SHOT_SETS,
    PROMPT_VERSION,
    few_shot_phrase_messages,
    item_interests_schema,
    repair_messages,
    structured_json_messages,
)

INTEREST_COLUMNS = ["item_id", "miner", "rank", "descriptor", "confidence", "prompt_version", "cache_key"]
FAILURE_COLUMNS = ["item_id", "miner", "stage", "reason", "raw_output"]
EVIDENCE_COLUMNS = ["description", "categories", "brand", "image_url", "caption"]

PHRASE_MAX_TOKENS = 24
#: the answers shown in the few-shot prompts, normalised: an answer equal to one is a copy, not a descriptor
FEW_SHOT_ANSWERS = frozenset(normalise_descriptor(answer) for examples in FEW_SHOT_SETS for _, answer in examples)
# used when an endpoint returns no token log-probabilities for a phrase (counted in stats)
FALLBACK_CONFIDENCE = 0.5
SAMPLED_VARIANT_TEMPERATURE = 0.7
_RAW_OUTPUT_CHARS = 500


@dataclass(frozen=True)
class ItemMiningSettings:
    """Settings of the item-interest stage (the launchpad's ``item_interests`` config is derived from these).

    The miners themselves (models, prompt styles, batch sizes) are ``MinerConfig`` settings of the ``llm``
    resource; these are the stage's own.
    """

    seed: int = field(default=0, metadata={
        "description": "Seed of every mining request (sampled few-shot variants use seed + k)"})
    n_descriptors: int | None = field(default=None, metadata={
        "description": "Override every miner's descriptors per item (cost ∝ this); None: each miner's own"})
    merge_similarity: float = field(default=0.85, metadata={
        "description": "Cosine above which two miners' descriptors merge"})
    min_coverage: float = field(default=0.8, metadata={
        "description": "Blocking: share of items with at least one descriptor"})

    def __post_init__(self) -> None:
        if self.n_descriptors is not None and self.n_descriptors < 1:
            raise ValueError(f"ItemMiningSettings.n_descriptors must be >= 1 or None, got {self.n_descriptors}")
        if not 0.0 < self.merge_similarity <= 1.0:
            raise ValueError(f"ItemMiningSettings.merge_similarity must be in (0, 1], got {self.merge_similarity}")
        if not 0.0 <= self.min_coverage <= 1.0:
            raise ValueError(f"ItemMiningSettings.min_coverage must be in [0, 1], got {self.min_coverage}")

    def miner_configs(self, configs: Sequence[MinerConfig]) -> list[MinerConfig]:
        """``configs`` with ``n_descriptors`` overridden when set."""
        if self.n_descriptors is None:
            return list(configs)
        return [dataclasses.replace(c, n_descriptors=self.n_descriptors) for c in configs]


@dataclass
class MiningResult:
    """Mined descriptors, recorded failures, and run statistics (totals plus ``per_miner``)."""

    interests: pd.DataFrame
    failures: pd.DataFrame
    stats: dict


def mine_item_interests(items: pd.DataFrame, miners: list[LLMBackend], miner_configs: list[MinerConfig],
                        cache: CallCache, *, progress: bool = True,
                        seed: int = ItemMiningSettings.seed) -> MiningResult:
    """Mine descriptors for every item with every miner; items that fail are in ``failures``, never dropped.

    Every call goes through the call cache (a :class:`CachedBackend` per miner, prompt version
    ``PROMPT_VERSION``): a rerun pays only for new or changed requests.
    """
    records = _validated_items(items)
    if len(miners) != len(miner_configs):
        raise ValueError(f"got {len(miners)} miners but {len(miner_configs)} miner configs")
    names = [c.name for c in miner_configs]
    if len(set(names)) != len(names):
        raise ValueError(f"miner names must be unique, got {names}")
    for backend, cfg in zip(miners, miner_configs, strict=True):
        if backend.name != cfg.name:
            raise ValueError(f"miner {backend.name!r} is paired with the config of {cfg.name!r}")

    rows: list[dict] = []
    failures: list[dict] = []
    per_miner: dict[str, dict] = {}
    for backend, cfg in zip(miners, miner_configs, strict=True):
        started = time.perf_counter()
        run = _MinerRun(backend, cfg, cache, records, progress, seed)
        if cfg.prompt_style == "few_shot_phrase":
            run.mine_phrases()
        else:
            run.mine_structured()
        calls = run.calls.stats()
        run.stats.update({k: calls[k] for k in ("calls", "cache_hits", "prompt_tokens", "completion_tokens")})
        run.stats["wall_s"] = round(time.perf_counter() - started, 3)
        rows.extend(run.rows)
        failures.extend(run.failures)
        per_miner[cfg.name] = run.stats

    interests = pd.DataFrame(rows, columns=INTEREST_COLUMNS)
    interests = interests.astype({"rank": "int64", "confidence": "float64"})
    failure_frame = pd.DataFrame(failures, columns=FAILURE_COLUMNS)
    totals = {k: sum(s[k] for s in per_miner.values())
              for k in ("calls", "cache_hits", "failures", "items_failed", "prompt_tokens", "completion_tokens",
                        "confidence_missing")}
    totals["wall_s"] = round(sum(s["wall_s"] for s in per_miner.values()), 3)
    stats = {"items": len(records), "miners": len(miners), **totals, "per_miner": per_miner}
    return MiningResult(interests=interests, failures=failure_frame, stats=stats)


def item_mining_requests(items: pd.DataFrame, cfg: MinerConfig, *,
                         seed: int = ItemMiningSettings.seed) -> list[ChatRequest]:
    """The first-pass requests one miner sends for these items (what ``mine_item_interests`` would call;
    repair prompts depend on answers and are not included)."""
    run = _MinerRun(None, cfg, None, _validated_items(items), False, seed)  # type: ignore[arg-type]
    if cfg.prompt_style == "few_shot_phrase":
        return [r for item in run.items for r in run.phrase_requests(item)]
    return [run.structured_request(item) for item in run.items]


def _validated_items(items: pd.DataFrame) -> list[dict]:
    if not isinstance(items, pd.DataFrame):
        raise TypeError(f"items must be a pandas DataFrame, got {type(items).__name__}")
    missing = [c for c in ("item_id", "title") if c not in items.columns]
    if missing:
        raise ValueError(f"items is missing required columns {missing}")
    if items["item_id"].isna().any():
        raise ValueError("items has null item_id values")
    duplicated = items["item_id"][items["item_id"].duplicated()].unique().tolist()
    if duplicated:
        raise ValueError(f"items has duplicate item_id values, e.g. {duplicated[:5]}")
    return items.to_dict("records")


def _image_url(item: Mapping) -> str | None:
    value = item.get("image_url")
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


class _MinerRun:
    """One miner over all items: builds requests, calls through the cache, turns answers into rows.

    ``stats["failures"]`` counts recorded failures (call, parse, repair); the call counters (calls,
    cache_hits, tokens) come from the miner's :class:`CachedBackend`.
    """

    def __init__(self, backend: LLMBackend | None, cfg: MinerConfig, cache: CallCache | None, items: list[dict],
                 progress: bool, seed: int) -> None:
        self.cfg, self.items, self.seed = cfg, items, seed
        self.progress = progress
        self.rows: list[dict] = []
        self.failures: list[dict] = []
        self.stats = {"items": len(items), "calls": 0, "cache_hits": 0, "failures": 0, "items_failed": 0,
                      "prompt_tokens": 0, "completion_tokens": 0, "confidence_missing": 0}
        if cfg.backend == "transformers":
            chunk_size = cfg.batch_size
        else:  # keep every concurrency slot busy between cache writes
            chunk_size = max(cfg.batch_size, 8 * cfg.max_concurrency)
        # None when only the requests are wanted (item_mining_requests)
        self.calls = CachedBackend(backend, cache, PROMPT_VERSION, chunk_size=chunk_size) \
            if backend is not None and cache is not None else None

    def _call(self, requests: list[ChatRequest], owners: list[int], desc: str
              ) -> tuple[list[Completion | None], dict[int, str], list[str]]:
        remaining: dict[int, int] = {}
        for owner in owners:
            remaining[owner] = remaining.get(owner, 0) + 1
        bar = tqdm(total=len(remaining), desc=f"{desc} [{self.cfg.name}]", unit="item", file=sys.stderr,
                   disable=not self.progress, leave=False)

        def done(indices: list[int]) -> None:
            finished = 0
            for i in indices:
                remaining[owners[i]] -= 1
                finished += remaining[owners[i]] == 0
            bar.update(finished)

        try:
            answered = self.calls.complete_all(requests, on_done=done)
        finally:
            bar.close()
        return answered.completions, answered.errors, answered.keys

    def _fail(self, item: Mapping, stage: str, reason: str, raw: str = "") -> None:
        self.failures.append({"item_id": item["item_id"], "miner": self.cfg.name, "stage": stage,
                              "reason": storable_text(reason[:1000]),
                              "raw_output": storable_text(raw[:_RAW_OUTPUT_CHARS])})
        self.stats["failures"] += 1

    def _emit(self, item: Mapping, descriptors: list[tuple[str, float, str]]) -> None:
        for rank, (text, confidence, key) in enumerate(descriptors):
            self.rows.append({"item_id": item["item_id"], "miner": self.cfg.name, "rank": rank, "descriptor": text,
                              "confidence": confidence, "prompt_version": PROMPT_VERSION, "cache_key": key})

    # -- small local models: one phrase per call, one call per few-shot set (or sampled variant)
    def phrase_requests(self, item: Mapping) -> list[ChatRequest]:
        requests = []
        for k in range(self.cfg.n_descriptors):
            sampled = k >= len(FEW_SHOT_SETS)
            requests.append(ChatRequest(
                messages=few_shot_phrase_messages(item, k % len(FEW_SHOT_SETS)), max_tokens=PHRASE_MAX_TOKENS,
                temperature=SAMPLED_VARIANT_TEMPERATURE if sampled else self.cfg.temperature, stop=("\n",),
                seed=self.seed + k if sampled else self.seed,
            ))
        return requests

    def mine_phrases(self) -> None:
        n = self.cfg.n_descriptors
        requests = [r for item in self.items for r in self.phrase_requests(item)]
        owners = [i for i in range(len(self.items)) for _ in range(n)]
        results, errors, keys = self._call(requests, owners, "mining phrases")
        for i, item in enumerate(self.items):
            best: dict[str, tuple[str, float, str, int]] = {}
            for k in range(n):
                j = i * n + k
                if j in errors:
                    self._fail(item, "call", errors[j])
                    continue
                completion = results[j]
                try:
                    phrase = clean_phrase(completion.text)
                except ParseError as exc:
                    self._fail(item, "parse", str(exc), completion.text)
                    continue
                if normalise_descriptor(phrase) in FEW_SHOT_ANSWERS:
                    # small models often repeat an example's answer: 24% of SmolLM2's answers on Scientific
                    self._fail(item, "parse", "copied a few-shot example's answer", completion.text)
                    continue
                confidence = self._confidence(completion)
                norm = normalise_descriptor(phrase)
                if norm not in best or confidence > best[norm][1]:
                    best[norm] = (phrase, confidence, keys[j], k)
            if not best:
                self._fail(item, "item", f"no usable descriptor from {n} calls")
                self.stats["items_failed"] += 1
                continue
            ordered = sorted(best.values(), key=lambda d: (-d[1], d[3]))
            self._emit(item, [(text, conf, key) for text, conf, key, _k in ordered])

    def _confidence(self, completion: Completion) -> float:
        if completion.mean_logprob is None or not math.isfinite(completion.mean_logprob):
            self.stats["confidence_missing"] += 1
            return FALLBACK_CONFIDENCE
        return float(min(1.0, max(0.0, math.exp(completion.mean_logprob))))

    # -- capable endpoints: the structured reasoning prompt, strict JSON, one repair attempt
    def structured_request(self, item: Mapping) -> ChatRequest:
        n = self.cfg.n_descriptors
        image = _image_url(item) if self.cfg.vision else None
        return ChatRequest(messages=structured_json_messages(item, n, image_url=image), max_tokens=64 + 48 * n,
                           temperature=self.cfg.temperature, json_schema=item_interests_schema(n), seed=self.seed)

    def mine_structured(self) -> None:
        n = self.cfg.n_descriptors
        requests = [self.structured_request(item) for item in self.items]
        results, errors, keys = self._call(requests, list(range(len(self.items))), "mining interests")
        parsed: dict[int, list[tuple[str, float, str]]] = {}
        repairs: list[tuple[int, ChatRequest]] = []
        for i, item in enumerate(self.items):
            if i in errors:
                self._fail(item, "call", errors[i])
                continue
            text = results[i].text
            try:
                parsed[i] = [(d.descriptor, d.confidence, keys[i]) for d in parse_item_interests(text, n)]
            except ParseError as exc:
                fixed = repair_messages(requests[i].messages, text, str(exc), n)
                repairs.append((i, ChatRequest(messages=fixed, max_tokens=requests[i].max_tokens,
                                               temperature=requests[i].temperature,
                                               json_schema=requests[i].json_schema, seed=requests[i].seed)))
        if repairs:
            fixed_results, fixed_errors, fixed_keys = self._call([r for _i, r in repairs],
                                                                 list(range(len(repairs))), "repairing")
            for j, (i, _request) in enumerate(repairs):
                item = self.items[i]
                if j in fixed_errors:
                    self._fail(item, "repair", f"repair call failed: {fixed_errors[j]}", results[i].text)
                    continue
                text = fixed_results[j].text
                try:
                    parsed[i] = [(d.descriptor, d.confidence, fixed_keys[j]) for d in parse_item_interests(text, n)]
                except ParseError as exc:
                    self._fail(item, "repair", f"still invalid after one repair: {exc}", text)
        for i, item in enumerate(self.items):
            if i in parsed:
                self._emit(item, parsed[i])
            else:
                self.stats["items_failed"] += 1


def items_without_interests(items: pd.DataFrame, interests: pd.DataFrame) -> list:
    """item_ids that ended with no descriptor from any miner (for coverage checks and metadata)."""
    covered = set(interests["item_id"].tolist())
    return [i for i in items["item_id"].tolist() if i not in covered]

