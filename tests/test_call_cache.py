"""The content-addressed LLM call cache: keys, hits/misses, idempotence, persistence, locks, resume; the one
caching road (CachedBackend) of every LLM call site: item mining, captions, the user summary and the LLM judge."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from mining.backends import ChatRequest, Completion, LLMBackend, LLMError, MinerConfig
from mining.call_cache import (
    CachedBackend,
    CacheEntry,
    CallCache,
    DuckDBCallCache,
    MemoryCallCache,
    cache_key,
    canonical_request_json,
    complete_with_cache,
)
from mining.captions import caption_items
from mining.item_mining import mine_item_interests
from mining.judges import LLMJudge
from mining.prompts import PROMPT_VERSION
from mining.user_interests import summarise_user_interests

REPO = Path(__file__).resolve().parents[1]


def _request(text: str = "hello", **params: object) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], **params)


def _entry(key: str, text: str = "answer", logprob: float | None = -0.5) -> CacheEntry:
    return CacheEntry(key=key, backend="openai", model="m", prompt_version="v1", request_json="{}",
                      completion=Completion(text=text, mean_logprob=logprob, prompt_tokens=10, completion_tokens=3))


class CountingBackend:
    """A real (trivial) backend: echoes the prompt; counts the calls it served."""

    kind = "echo"

    def __init__(self, name: str = "echo", fail_on: str | None = None) -> None:
        self.name, self.model = name, "echo-1"
        self.fail_on = fail_on
        self.served: list[str] = []

    def complete_batch(self, requests: list[ChatRequest]) -> list[Completion]:
        texts = [r.messages[-1]["content"] for r in requests]
        if self.fail_on is not None and self.fail_on in texts:
            raise LLMError(f"echo cannot answer {self.fail_on!r}")
        self.served.extend(texts)
        return [Completion(text=t.upper(), mean_logprob=-0.1, prompt_tokens=len(t), completion_tokens=1)
                for t in texts]


def test_key_is_stable_and_changes_with_every_part() -> None:
    base = cache_key("openai", "m", "v1", _request())
    assert base == cache_key("openai", "m", "v1", _request())
    assert len(base) == 64
    variants = [
        cache_key("transformers", "m", "v1", _request()),
        cache_key("openai", "m2", "v1", _request()),
        cache_key("openai", "m", "v2", _request()),
        cache_key("openai", "m", "v1", _request("hello!")),
        cache_key("openai", "m", "v1", _request(max_tokens=33)),
        cache_key("openai", "m", "v1", _request(temperature=0.5)),
        cache_key("openai", "m", "v1", _request(stop=("\n",))),
        cache_key("openai", "m", "v1", _request(seed=1)),
        cache_key("openai", "m", "v1", _request(choices=("0", "1"))),
        cache_key("openai", "m", "v1", _request(json_schema={"type": "object"})),
    ]
    assert len(set(variants + [base])) == len(variants) + 1


def test_canonical_json_ignores_dict_key_order() -> None:
    a = ChatRequest(messages=[{"role": "user", "content": "x"}], json_schema={"a": 1, "b": 2})
    b = ChatRequest(messages=[{"content": "x", "role": "user"}], json_schema={"b": 2, "a": 1})
    assert canonical_request_json(a) == canonical_request_json(b)


@pytest.fixture(params=["memory", "duckdb"])
def cache(request: pytest.FixtureRequest, tmp_path: Path) -> MemoryCallCache | DuckDBCallCache:
    return MemoryCallCache() if request.param == "memory" else DuckDBCallCache(tmp_path / "w.duckdb")


def test_hit_miss_and_idempotent_put(cache: MemoryCallCache | DuckDBCallCache) -> None:
    assert cache.get_many(["k1", "k2"]) == {}
    cache.put_many([_entry("k1", "first")])
    cache.put_many([_entry("k1", "second"), _entry("k2", "other", None)])  # first write wins
    cache.put_many([_entry("k1", "third")])
    got = cache.get_many(["k1", "k2", "k3"])
    assert set(got) == {"k1", "k2"}
    assert got["k1"].text == "first" and got["k1"].mean_logprob == -0.5
    assert got["k2"].text == "other" and got["k2"].mean_logprob is None
    assert (got["k1"].prompt_tokens, got["k1"].completion_tokens) == (10, 3)
    assert len(cache) == 2


def test_invalid_entry_is_rejected_before_anything_is_written(tmp_path: Path) -> None:
    cache = DuckDBCallCache(tmp_path / "w.duckdb")
    with pytest.raises(ValueError, match="mean_logprob"):
        cache.put_many([_entry("ok"), _entry("bad", logprob=float("nan"))])
    assert len(cache) == 0


def test_bad_table_name_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="identifier"):
        DuckDBCallCache(tmp_path / "w.duckdb", table="x; DROP TABLE y")


def test_persists_across_processes(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    script = textwrap.dedent(f"""
        from mining.backends import Completion
        from mining.call_cache import CacheEntry, DuckDBCallCache
        c = DuckDBCallCache({str(db)!r})
        c.put_many([CacheEntry("kx", "openai", "m", "v1", "{{}}", Completion("from child", -0.25, 7, 2))])
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO, timeout=60)
    got = DuckDBCallCache(db).get_many(["kx"])
    assert got["kx"].text == "from child" and got["kx"].mean_logprob == -0.25 and got["kx"].cached


def test_waits_for_a_lock_held_by_another_process(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    assert len(DuckDBCallCache(db)) == 0  # creates the table
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import duckdb, sys, time
            con = duckdb.connect({str(db)!r})
            print("locked", flush=True)
            time.sleep(1.5)
            con.close()
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(duckdb.IOException):  # proves the file really is locked right now
            duckdb.connect(str(db))
        started = time.monotonic()
        DuckDBCallCache(db, lock_timeout_s=30).put_many([_entry("after-lock")])
        assert time.monotonic() - started > 0.2
    finally:
        holder.wait(timeout=30)
    assert DuckDBCallCache(db).get_many(["after-lock"])["after-lock"].text == "answer"


def test_complete_with_cache_calls_only_misses_and_dedups(tmp_path: Path) -> None:
    cache = DuckDBCallCache(tmp_path / "w.duckdb")
    backend = CountingBackend()
    requests = [_request(t) for t in ["a", "b", "a", "c"]]
    results, errors, keys = complete_with_cache(backend, requests, cache, "v1", chunk_size=2)
    assert errors == {}
    assert [r.text for r in results] == ["A", "B", "A", "C"]
    assert backend.served == ["a", "b", "c"]
    assert keys[0] == keys[2] and len(set(keys)) == 3
    again, _errors, _keys = complete_with_cache(backend, requests + [_request("d")], cache, "v1")
    assert backend.served == ["a", "b", "c", "d"]
    assert [r.cached for r in again] == [True, True, True, True, False]
    # a new prompt version is a different cache entry
    complete_with_cache(backend, [_request("a")], cache, "v2")
    assert backend.served[-1] == "a"


def test_failed_request_is_isolated_and_reported() -> None:
    backend = CountingBackend(fail_on="bad")
    results, errors, _keys = complete_with_cache(backend, [_request(t) for t in ["x", "bad", "y"]],
                                                 MemoryCallCache(), "v1", chunk_size=3)
    assert [r.text if r else None for r in results] == ["X", None, "Y"]
    assert list(errors) == [1] and "bad" in errors[1]


def test_interrupted_run_resumes_without_repeating_finished_chunks(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"

    class InterruptedBackend(CountingBackend):
        def complete_batch(self, requests: list[ChatRequest]) -> list[Completion]:
            if len(self.served) >= 4:
                raise KeyboardInterrupt  # the run is killed after two chunks
            return super().complete_batch(requests)

    requests = [_request(f"q{i}") for i in range(10)]
    first = InterruptedBackend()
    with pytest.raises(KeyboardInterrupt):
        complete_with_cache(first, requests, DuckDBCallCache(db), "v1", chunk_size=2)
    assert first.served == ["q0", "q1", "q2", "q3"]
    second = CountingBackend()
    results, errors, _keys = complete_with_cache(second, requests, DuckDBCallCache(db), "v1", chunk_size=2)
    assert errors == {}
    assert second.served == [f"q{i}" for i in range(4, 10)]
    assert [r.text for r in results] == [f"Q{i}" for i in range(10)]


# ---------------------------------------------------------------- CachedBackend: the one road of every LLM call


def test_cached_backend_has_the_backend_protocol_and_counts() -> None:
    backend = CountingBackend()
    cached = CachedBackend(backend, MemoryCallCache(), "v1", chunk_size=2)
    assert isinstance(cached, LLMBackend)
    assert (cached.name, cached.model, cached.kind) == ("echo", "echo-1", "echo")
    out = cached.complete_batch([_request(t) for t in ["a", "b", "a"]])
    assert [c.text for c in out] == ["A", "B", "A"] and backend.served == ["a", "b"]
    assert cached.key(_request("a")) == cache_key("echo", "echo-1", "v1", _request("a"))
    again = cached.complete_batch([_request("b"), _request("c")])
    assert [c.cached for c in again] == [True, False] and backend.served == ["a", "b", "c"]
    # hits: the duplicate "a" and the cached "b"; misses: a, b, c
    assert (cached.hits, cached.misses, cached.failures) == (2, 3, 0)
    assert cached.stats() == {"cache_hits": 2, "calls": 3, "failures": 0, "prompt_tokens": 3, "completion_tokens": 3}
    with pytest.raises(TypeError, match="already cached"):
        CachedBackend(cached, MemoryCallCache(), "v2")
    with pytest.raises(ValueError, match="prompt_version"):
        CachedBackend(backend, MemoryCallCache(), "")


def test_cached_backend_raises_with_partial_answers_and_keeps_them() -> None:
    cache = MemoryCallCache()
    failing = CountingBackend(fail_on="bad")
    cached = CachedBackend(failing, cache, "v1")
    with pytest.raises(LLMError) as info:
        cached.complete_batch([_request(t) for t in ["x", "bad", "y"]])
    assert [c.text if c else None for c in info.value.partial] == ["X", None, "Y"]
    assert list(info.value.errors) == [1] and "bad" in info.value.errors[1]
    assert "1 of 3 calls to 'echo'" in str(info.value) and cached.failures == 1
    # a retry (a fresh wrapper, as a retried step builds) pays only for the failed request
    healthy = CountingBackend()
    out = CachedBackend(healthy, cache, "v1").complete_batch([_request(t) for t in ["x", "bad", "y"]])
    assert [c.text for c in out] == ["X", "BAD", "Y"] and healthy.served == ["bad"]


class ScriptedBackend:
    """A real (trivial) backend for every call site: 0/1 for judge requests, valid JSON for structured ones,
    a short phrase otherwise; counts the requests it answered."""

    kind = "scripted"

    def __init__(self, name: str = "scripted") -> None:
        self.name, self.model = name, "scripted-1"
        self.served: list[ChatRequest] = []

    def complete_batch(self, requests: list[ChatRequest]) -> list[Completion]:
        self.served.extend(requests)
        out = []
        for r in requests:
            if r.choices:
                text = r.choices[-1]
            elif r.json_schema is not None:
                text = json.dumps({"descriptors": [{"descriptor": f"use number {len(self.served)}",
                                                    "confidence": 0.5}]})
            else:
                text = f"a phrase about thing {len(self.served)}"
            out.append(Completion(text=text, mean_logprob=-0.2, prompt_tokens=5, completion_tokens=2))
        return out


_ITEMS = pd.DataFrame({"item_id": ["i0", "i1", "i2"], "title": ["Soil meter", "Glass beaker", "Solder wire"],
                       "description": ["Reads pH.", "Borosilicate.", "Rosin core."],
                       "image_url": ["http://img/0.jpg", None, "http://img/2.jpg"]})
_SPLITS = pd.DataFrame({"user_id": ["u0"] * 3 + ["u1"] * 3, "item_id": ["i0", "i1", "i2", "i1", "i2", "i0"],
                        "position": [0, 1, 2, 0, 1, 2], "split": ["train", "valid", "test"] * 2})
_REWARDS = pd.DataFrame({"item_id": ["i0", "i1", "i2"], "descriptor": ["testing soil", "mixing", "soldering"],
                         "confidence": [0.9, 0.8, 0.7], "label": [1, 1, 1]})


def _mine(backend: ScriptedBackend, cache: CallCache) -> None:
    cfg = MinerConfig(name=backend.name, backend="openai", model=backend.model, base_url="http://127.0.0.1:9/v1",
                      prompt_style="structured_json", n_descriptors=2)
    result = mine_item_interests(_ITEMS, [backend], [cfg], cache, progress=False)
    assert result.failures.empty


def _caption(backend: ScriptedBackend, cache: CallCache) -> None:
    assert len(caption_items(_ITEMS, backend, cache).captions) == 2


def _summarise(backend: ScriptedBackend, cache: CallCache) -> None:
    out = summarise_user_interests(_SPLITS, _REWARDS, backend=backend, cache=cache)
    assert (out["source"] == "llm_summary").sum() == 2


def _judge(backend: ScriptedBackend, cache: CallCache) -> None:
    result = LLMJudge(backend, cache=cache, batch_size=2).judge(
        ["testing soil", "mixing", "soldering"], ["i0", "i1", "i2"], {i: f"evidence {i}" for i in ("i0", "i1", "i2")})
    assert result.labels.tolist() == [1, 1, 1]


# call site -> (run it, the module global holding its prompt version, that version)
CALL_SITES = {
    "item_mining": (_mine, "mining.item_mining", PROMPT_VERSION),
    "captions": (_caption, "mining.captions", PROMPT_VERSION),
    "user_summary": (_summarise, "mining.user_interests", "user-summary-v1"),
    "llm_judge": (_judge, "mining.judges", "llm-judge-v1"),
}
_VERSION_NAME = {"mining.user_interests": "SUMMARY_PROMPT_VERSION", "mining.judges": "JUDGE_PROMPT_VERSION"}


@pytest.mark.parametrize("site", sorted(CALL_SITES))
def test_every_call_site_is_served_from_the_cache_on_a_rerun(site: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    run, module, version = CALL_SITES[site]
    db = tmp_path / "w.duckdb"
    backend = ScriptedBackend()
    run(backend, DuckDBCallCache(db))
    first = len(backend.served)
    assert first > 0
    run(backend, DuckDBCallCache(db))  # a rerun: a new cache object on the same warehouse
    assert len(backend.served) == first, f"{site}: the rerun called the backend"
    # every cached row carries the call site's prompt version and a key computed by cache_key (the user summary
    # keeps "user-summary-v1", so rows cached before the wrapper moved out of the asset stay valid)
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT key, backend, model, prompt_version, request_json FROM llm_call_cache").fetchall()
    assert len(rows) == first and {r[3] for r in rows} == {version}
    for key, kind, model, prompt_version, request_json in rows:
        request = ChatRequest(**{k: tuple(v) if k in ("stop", "choices") else v
                                 for k, v in json.loads(request_json).items()})
        assert (kind, model) == ("scripted", "scripted-1")
        assert key == cache_key(kind, model, prompt_version, request)
    # a changed prompt version misses: every request is asked again
    monkeypatch.setattr(f"{module}.{_VERSION_NAME.get(module, 'PROMPT_VERSION')}", "changed-prompt")
    run(backend, DuckDBCallCache(db))
    assert len(backend.served) == 2 * first, f"{site}: a changed prompt version was served from the cache"
