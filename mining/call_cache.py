"""Content-addressed cache of LLM calls: a rerun pays only for new or changed requests.

Every LLM call site (item mining, captions, the per-user summary, the LLM judge) goes through one road:
:class:`CachedBackend` wraps a backend with a cache and the call site's prompt version, keeps the
``complete_batch`` protocol of :class:`mining.backends.LLMBackend`, and counts hits and misses. Keys are
``cache_key(backend kind, model, prompt version, request)``: a prompt whose text changes gets a new version,
so stale answers are never reused, and answers to an unchanged prompt stay valid across runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pandas as pd

from mining.backends import ChatRequest, Completion, LLMBackend, LLMError
from mining.parsing import is_unicode_text, storable_text

if TYPE_CHECKING:  # duckdb is imported where a DuckDB cache is used: answering calls elsewhere needs no duckdb
    import duckdb


def canonical_request_json(request: ChatRequest) -> str:
    """The request (messages and every generation parameter) as canonical JSON."""
    # explicit fields instead of dataclasses.asdict, which deep-copies every message (slow on warm reruns)
    fields = {f.name: getattr(request, f.name) for f in dataclasses.fields(request)}
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def cache_key(backend: str, model: str, prompt_version: str, request: ChatRequest) -> str:
    """sha256 over backend kind, model, prompt version and the canonical request."""
    payload = json.dumps([backend, model, prompt_version, canonical_request_json(request)], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def backend_kind(backend: LLMBackend) -> str:
    """The backend family used in cache keys ("transformers", "openai", ...)."""
    return str(getattr(backend, "kind", type(backend).__name__))


@dataclass(frozen=True)
class CacheEntry:
    """One cached call: the key, what was asked, and the answer."""

    key: str
    backend: str
    model: str
    prompt_version: str
    request_json: str
    completion: Completion

    def __post_init__(self) -> None:
        c = self.completion
        if not isinstance(c.text, str):
            raise ValueError(f"cache entry {self.key[:12]}: completion text must be str, got {type(c.text)}")
        if c.mean_logprob is not None and not math.isfinite(c.mean_logprob):
            raise ValueError(f"cache entry {self.key[:12]}: mean_logprob must be finite or None")
        if c.prompt_tokens < 0 or c.completion_tokens < 0:
            raise ValueError(f"cache entry {self.key[:12]}: token counts must be >= 0")


class CallCache(Protocol):
    """Key -> Completion store. put_many is all-or-nothing and idempotent (first write wins)."""

    def get_many(self, keys: list[str]) -> dict[str, Completion]: ...

    def put_many(self, entries: list[CacheEntry]) -> None: ...


class MemoryCallCache:
    """In-process cache (tests, one-off runs)."""

    def __init__(self) -> None:
        self._store: dict[str, CacheEntry] = {}
        self._lock = threading.Lock()

    def get_many(self, keys: list[str]) -> dict[str, Completion]:
        with self._lock:
            return {k: self._store[k].completion for k in keys if k in self._store}

    def put_many(self, entries: list[CacheEntry]) -> None:
        with self._lock:
            for entry in entries:
                self._store.setdefault(entry.key, entry)

    def __len__(self) -> int:
        return len(self._store)


_COLUMNS = ["key", "backend", "model", "prompt_version", "request_json", "response_text", "mean_logprob",
            "prompt_tokens", "completion_tokens", "created_at"]


class DuckDBCallCache:
    """Cache table in the DuckDB warehouse.

    DuckDB allows one writer process per file, and Dagster runs steps in parallel processes, so every
    get_many/put_many opens a short-lived connection and retries briefly while another process holds
    the lock.
    """

    def __init__(self, db_path: str | Path, table: str = "llm_call_cache", *, lock_timeout_s: float = 30.0,
                 chunk_size: int = 5000) -> None:
        if not table.isidentifier():
            raise ValueError(f"table name must be a plain identifier, got {table!r}")
        self.db_path = str(db_path)
        self.table = table
        self.lock_timeout_s = lock_timeout_s
        self.chunk_size = chunk_size
        self._rng = random.Random(0)
        self._table_ready = False
        Path(self.db_path).parent.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def _connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection, closed under the warehouse's open/close lock."""
        from warehouse.tables import close

        con = self._open_ready()
        try:
            yield con
        finally:
            close(con)

    def _open_ready(self) -> duckdb.DuckDBPyConnection:
        """A new connection (the table is created on first use: one connection less per run)."""
        con = self._open()
        if not self._table_ready:
            con.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} (key VARCHAR PRIMARY KEY, backend VARCHAR, "
                "model VARCHAR, prompt_version VARCHAR, request_json VARCHAR, response_text VARCHAR, "
                "mean_logprob DOUBLE, prompt_tokens INTEGER, completion_tokens INTEGER, created_at TIMESTAMP)"
            )
            self._table_ready = True
        return con

    def _open(self) -> duckdb.DuckDBPyConnection:
        import duckdb

        from warehouse.tables import connect

        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.02
        while True:
            try:
                return connect(self.db_path)  # under the warehouse's open/close lock (a DuckDB thread race)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                    raise
                time.sleep(delay * (0.5 + self._rng.random()))
                delay = min(delay * 2, 0.5)

    def get_many(self, keys: list[str]) -> dict[str, Completion]:
        if not keys:
            return {}
        unique = list(dict.fromkeys(keys))
        out: dict[str, Completion] = {}
        with self._connect() as con:
            for start in range(0, len(unique), self.chunk_size):
                wanted = pd.DataFrame({"key": unique[start:start + self.chunk_size]})
                con.register("wanted_keys", wanted)
                rows = con.execute(
                    f"SELECT c.key, c.response_text, c.mean_logprob, c.prompt_tokens, c.completion_tokens "
                    f"FROM {self.table} c JOIN wanted_keys w ON c.key = w.key"
                ).fetchall()
                con.unregister("wanted_keys")
                for key, text, logprob, p_tok, c_tok in rows:
                    out[key] = Completion(text=text, mean_logprob=logprob, prompt_tokens=int(p_tok),
                                          completion_tokens=int(c_tok), cached=True)
        return out

    def put_many(self, entries: list[CacheEntry]) -> None:
        if not entries:
            return
        now = datetime.now(UTC).replace(tzinfo=None)
        frame = pd.DataFrame(
            [(e.key, e.backend, e.model, e.prompt_version, e.request_json, e.completion.text,
              e.completion.mean_logprob, e.completion.prompt_tokens, e.completion.completion_tokens, now)
             for e in entries],
            columns=_COLUMNS,
        ).drop_duplicates("key", keep="first")
        frame["mean_logprob"] = frame["mean_logprob"].astype("float64")
        with self._connect() as con:
            con.register("new_calls", frame)
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(f"INSERT OR IGNORE INTO {self.table} SELECT * FROM new_calls")
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
            finally:
                con.unregister("new_calls")

    def __len__(self) -> int:
        with self._connect() as con:
            return int(con.execute(f"SELECT count(*) FROM {self.table}").fetchall()[0][0])


def complete_with_cache(backend: LLMBackend, requests: list[ChatRequest], cache: CallCache,
                        prompt_version: str, *, chunk_size: int = 64,
                        on_done: Callable[[list[int]], None] | None = None,
                        ) -> tuple[list[Completion | None], dict[int, str], list[str]]:
    """Answer requests from the cache where possible, call the backend for the rest in chunks.

    Results are written to the cache after every chunk, so an interrupted run resumes where it stopped.
    An answer holding lone surrogates is kept with them escaped (``\\ud800``): as stored, so as returned.
    ``on_done`` receives the indices of requests as they finish (for progress bars).
    Returns (completions with None where the call failed, {index: error message}, cache keys).
    """
    kind = backend_kind(backend)
    keys = [cache_key(kind, backend.model, prompt_version, r) for r in requests]
    hits = cache.get_many(keys)
    results: list[Completion | None] = [
        dataclasses.replace(hits[k], cached=True) if k in hits else None for k in keys
    ]
    errors: dict[int, str] = {}
    # identical requests are called once
    first_index: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k not in hits:
            first_index.setdefault(k, i)
    missing = list(first_index.values())
    notify = on_done or (lambda _indices: None)
    notify([i for i, k in enumerate(keys) if k in hits])
    for start in range(0, len(missing), chunk_size):
        chunk = missing[start:start + chunk_size]
        answers, chunk_errors = _call_chunk(backend, [requests[i] for i in chunk])
        entries = []
        for offset, i in enumerate(chunk):
            answer = answers[offset]
            if answer is None:
                errors[i] = chunk_errors.get(offset, "call failed")
                continue
            if not is_unicode_text(answer.text):  # a lone surrogate (a JSON escape) cannot be stored as UTF-8
                answer = dataclasses.replace(answer, text=storable_text(answer.text))
            results[i] = answer
            entries.append(CacheEntry(keys[i], kind, backend.model, prompt_version,
                                      canonical_request_json(requests[i]), answer))
        cache.put_many(entries)
        notify(chunk)
    duplicates = []
    for i, k in enumerate(keys):
        if results[i] is None and i not in errors:
            j = first_index[k]
            if results[j] is not None:
                results[i] = dataclasses.replace(results[j], cached=True)
            else:
                errors[i] = errors[j]
            duplicates.append(i)
    notify(duplicates)
    return results, errors, keys


@dataclass(frozen=True)
class CachedCalls:
    """The outcome of one batch through a :class:`CachedBackend`: completions (None where the call failed),
    ``{index: error message}`` and the cache key of every request."""

    completions: list[Completion | None]
    errors: dict[int, str]
    keys: list[str]


class CachedBackend:
    """``backend`` with every call answered from ``cache`` where possible, keyed with ``prompt_version``.

    ``complete_batch`` has the :class:`mining.backends.LLMBackend` protocol: answers in request order, and an
    :class:`LLMError` when any request failed, with ``partial`` (the finished answers, None where a call
    failed) and ``errors`` (``{index: message}``); finished answers are cached before it is raised, so a retry
    pays only for the failures. ``complete_all`` is the same call without the exception, for call sites that
    record failures instead. Identical requests in a batch are called once. Counters over the wrapper's
    lifetime: ``hits`` (answered from the cache, duplicates included), ``misses`` (answered by the backend),
    ``failures``, ``prompt_tokens`` and ``completion_tokens`` (of the backend's answers only).
    """

    def __init__(self, backend: LLMBackend, cache: CallCache, prompt_version: str, *, chunk_size: int = 64) -> None:
        if isinstance(backend, CachedBackend):
            raise TypeError(f"backend {backend.name!r} is already cached (prompt version {backend.prompt_version!r})")
        if not isinstance(prompt_version, str) or not prompt_version:
            raise ValueError(f"prompt_version must be a non-empty string, got {prompt_version!r}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.inner = backend
        self.cache = cache
        self.prompt_version = prompt_version
        self.chunk_size = chunk_size
        self.name = backend.name
        self.model = backend.model
        self.kind = backend_kind(backend)
        self.hits = self.misses = self.failures = self.prompt_tokens = self.completion_tokens = 0

    def key(self, request: ChatRequest) -> str:
        """The cache key of ``request`` for this backend and prompt version."""
        return cache_key(self.kind, self.model, self.prompt_version, request)

    def complete_all(self, requests: list[ChatRequest], *,
                     on_done: Callable[[list[int]], None] | None = None) -> CachedCalls:
        """Answer every request (cache first, then the backend in chunks); failures are returned, not raised."""
        completions, errors, keys = complete_with_cache(self.inner, requests, self.cache, self.prompt_version,
                                                        chunk_size=self.chunk_size, on_done=on_done)
        for completion in completions:
            if completion is None:
                continue
            if completion.cached:
                self.hits += 1
            else:
                self.misses += 1
                self.prompt_tokens += completion.prompt_tokens
                self.completion_tokens += completion.completion_tokens
        self.failures += len(errors)
        return CachedCalls(completions, errors, keys)

    def complete_batch(self, requests: list[ChatRequest]) -> list[Completion]:
        """Answer every request in order; raise :class:`LLMError` (with ``partial``/``errors``) on any failure."""
        calls = self.complete_all(requests)
        if calls.errors:
            first = calls.errors[min(calls.errors)]
            raise LLMError(f"{len(calls.errors)} of {len(requests)} calls to {self.name!r} ({self.model}, prompt "
                           f"{self.prompt_version}) failed: {first}", partial=calls.completions, errors=calls.errors)
        return calls.completions  # type: ignore[return-value]  # no None without an error

    def stats(self) -> dict[str, int]:
        """The counters as a dict (for metadata and MLflow)."""
        return {"cache_hits": self.hits, "calls": self.misses + self.failures, "failures": self.failures,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}


def _call_chunk(backend: LLMBackend, requests: list[ChatRequest]) -> tuple[list[Completion | None], dict[int, str]]:
    try:
        answers = backend.complete_batch(requests)
    except LLMError as exc:
        if exc.partial is not None and len(exc.partial) == len(requests):
            return list(exc.partial), {i: exc.errors.get(i, str(exc)) for i, a in enumerate(exc.partial)
                                       if a is None}
        if len(requests) == 1:
            return [None], {0: str(exc)}
        # isolate the failing requests one by one
        results: list[Completion | None] = []
        errors: dict[int, str] = {}
        for i, request in enumerate(requests):
            single, single_errors = _call_chunk(backend, [request])
            results.append(single[0])
            if single[0] is None:
                errors[i] = single_errors[0]
        return results, errors
    if len(answers) != len(requests):
        raise LLMError(f"backend {backend.name!r} ({backend.model}) returned {len(answers)} answers "
                       f"for {len(requests)} requests")
    return list(answers), {}

