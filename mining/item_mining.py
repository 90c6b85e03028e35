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
from mining.domains import AUTO, Domain, load_domain
from mining.parsing import (
    COPIED_EXAMPLE,
    RESTATEMENT_THRESHOLD,
    ParseError,
    clean_phrase,
    copies_example,
    normalise_descriptor,
    parse_item_interests,
    restatement_reason,
    storable_text,
)
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
#: the answers shown in the retail domain's few-shot prompts, normalised (each run rejects copies of its own
#: domain's answers: ``parsing.copies_example``)
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
    domain: str = field(default=AUTO, metadata={
        "description": "Prompt template: retail | movies | music | books | news | generic, 'auto' (from the "
                       "items' source kind: movielens -> movies, else retail) or the path of a .toml/.json "
                       "domain file (see mining/domains.py)"})
    restatement_threshold: float = field(default=RESTATEMENT_THRESHOLD, metadata={
        "description": "Share of a descriptor's content words that are title words at or above which it "
                       "restates the item and is rejected (a recorded failure)"})
    max_rejected_share: float = field(default=0.2, metadata={
        "description": "Warning (non-blocking check): share of answers rejected as restatements or copied "
                       "few-shot examples above which the domain likely does not fit the catalogue"})

    def __post_init__(self) -> None:
        if self.n_descriptors is not None and self.n_descriptors < 1:
            raise ValueError(f"ItemMiningSettings.n_descriptors must be >= 1 or None, got {self.n_descriptors}")
        if not 0.0 < self.merge_similarity <= 1.0:
            raise ValueError(f"ItemMiningSettings.merge_similarity must be in (0, 1], got {self.merge_similarity}")
        if not 0.0 <= self.min_coverage <= 1.0:
            raise ValueError(f"ItemMiningSettings.min_coverage must be in [0, 1], got {self.min_coverage}")
        if not 0.0 < self.restatement_threshold <= 1.0:
            raise ValueError("ItemMiningSettings.restatement_threshold must be in (0, 1], "
                             f"got {self.restatement_threshold}")
        if not 0.0 <= self.max_rejected_share <= 1.0:
            raise ValueError(f"ItemMiningSettings.max_rejected_share must be in [0, 1], got {self.max_rejected_share}")
        try:
            load_domain(self.domain)  # a domain file is read and checked now: a bad one fails the launch
        except ValueError as exc:
            raise ValueError(f"ItemMiningSettings.domain: {exc}") from None

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


def mining_prompt_version(domain: str | Domain | None = None) -> str:
    """The prompt version of the mining calls in ``domain`` (default retail): part of every cache key."""
    return load_domain(domain).prompt_version(PROMPT_VERSION)


def mine_item_interests(items: pd.DataFrame, miners: list[LLMBackend], miner_configs: list[MinerConfig],
                        cache: CallCache, *, progress: bool = True,
                        seed: int = ItemMiningSettings.seed, domain: str | Domain | None = None,
                        restatement_threshold: float = RESTATEMENT_THRESHOLD) -> MiningResult:
    """Mine descriptors for every item with every miner; items that fail are in ``failures``, never dropped.

    Every call goes through the call cache (a :class:`CachedBackend` per miner, prompt version
    ``mining_prompt_version(domain)``): a rerun pays only for new or changed requests. The prompts are
    ``domain``'s (a :class:`Domain`, a built-in name or a domain file; default retail). An answer that restates
    its item (``parsing.restatement_reason`` at ``restatement_threshold``) or copies one of the domain's
    few-shot answers is a recorded failure (stage ``parse``), not a descriptor.
    """
    template = load_domain(domain)
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
        run = _MinerRun(backend, cfg, cache, records, progress, seed, template, restatement_threshold)
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
                        "confidence_missing", "answers", "rejected_restatements", "rejected_copies")}
    totals["wall_s"] = round(sum(s["wall_s"] for s in per_miner.values()), 3)
    stats = {"items": len(records), "miners": len(miners), "domain": template.name,
             "prompt_version": template.prompt_version(PROMPT_VERSION), **totals, "per_miner": per_miner}
    return MiningResult(interests=interests, failures=failure_frame, stats=stats)


def item_mining_requests(items: pd.DataFrame, cfg: MinerConfig, *, seed: int = ItemMiningSettings.seed,
                         domain: str | Domain | None = None) -> list[ChatRequest]:
    """The first-pass requests one miner sends for these items in ``domain`` (what ``mine_item_interests``
    would call; repair prompts depend on answers and are not included). Their prompt version is
    ``mining_prompt_version(domain)``."""
    run = _MinerRun(None, cfg, None, _validated_items(items), False, seed,  # type: ignore[arg-type]
                    load_domain(domain), RESTATEMENT_THRESHOLD)
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
    cache_hits, tokens) come from the miner's :class:`CachedBackend`. ``answers`` counts the descriptors the
    model gave (before the restatement and copy rules), ``rejected_restatements`` and ``rejected_copies``
    those the rules turned into failures.
    """

    def __init__(self, backend: LLMBackend | None, cfg: MinerConfig, cache: CallCache | None, items: list[dict],
                 progress: bool, seed: int, domain: Domain, restatement_threshold: float) -> None:
        self.cfg, self.items, self.seed = cfg, items, seed
        self.domain, self.restatement_threshold = domain, restatement_threshold
        self.prompt_version = domain.prompt_version(PROMPT_VERSION)
        self.n_sets = len(domain.few_shot_sets)
        self.progress = progress
        self.rows: list[dict] = []
        self.failures: list[dict] = []
        self.stats = {"items": len(items), "calls": 0, "cache_hits": 0, "failures": 0, "items_failed": 0,
                      "prompt_tokens": 0, "completion_tokens": 0, "confidence_missing": 0, "answers": 0,
                      "rejected_restatements": 0, "rejected_copies": 0}
        if cfg.backend == "transformers":
            chunk_size = cfg.batch_size
        else:  # keep every concurrency slot busy between cache writes
            chunk_size = max(cfg.batch_size, 8 * cfg.max_concurrency)
        # None when only the requests are wanted (item_mining_requests)
        self.calls = CachedBackend(backend, cache, self.prompt_version, chunk_size=chunk_size) \
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
                              "confidence": confidence, "prompt_version": self.prompt_version, "cache_key": key})

    def _rejected(self, item: Mapping, descriptor: str, raw: str) -> bool:
        """Record a failure and return True when ``descriptor`` copies a few-shot answer or restates the item."""
        self.stats["answers"] += 1
        if copies_example(descriptor, self.domain.example_answers):
            # small models often repeat an example's answer: 24% of SmolLM2's answers on Scientific
            self.stats["rejected_copies"] += 1
            self._fail(item, "parse", COPIED_EXAMPLE, raw)
            return True
        reason = restatement_reason(descriptor, item.get("title"), item.get("description"),
                                    threshold=self.restatement_threshold)
        if reason:
            self.stats["rejected_restatements"] += 1
            self._fail(item, "parse", reason, raw)
            return True
        return False

    # -- small local models: one phrase per call, one call per few-shot set (or sampled variant)
    def phrase_requests(self, item: Mapping) -> list[ChatRequest]:
        requests = []
        for k in range(self.cfg.n_descriptors):
            sampled = k >= self.n_sets
            requests.append(ChatRequest(
                messages=few_shot_phrase_messages(item, k % self.n_sets, self.domain), max_tokens=PHRASE_MAX_TOKENS,
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
                if self._rejected(item, phrase, completion.text):
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
        return ChatRequest(messages=structured_json_messages(item, n, image_url=image, domain=self.domain),
                           max_tokens=64 + 48 * n,
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
            kept = [d for d in parsed.get(i, []) if not self._rejected(item, d[0], d[0])]
            if kept:
                self._emit(item, kept)
                continue
            if i in parsed:
                self._fail(item, "item", f"every descriptor of the answer was rejected ({len(parsed[i])})")
            self.stats["items_failed"] += 1


def items_without_interests(items: pd.DataFrame, interests: pd.DataFrame) -> list:
    """item_ids that ended with no descriptor from any miner (for coverage checks and metadata)."""
    covered = set(interests["item_id"].tolist())
    return [i for i in items["item_id"].tolist() if i not in covered]

