"""Mining calls answered elsewhere: export → answer (production OpenAI client against the loopback server)
→ import, after which mining is served entirely from the cache; altered or malformed files are refused."""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json

import pandas as pd
import pytest

from mining.backends import ANSWER_SETTINGS, MinerConfig
from mining.call_cache import DuckDBCallCache
from mining.item_mining import item_mining_requests, mine_item_interests
from mining.offline_batch import (
    OfflineBatchError,
    _add_miner_options,
    answer_calls,
    import_answers,
    main,
    pending_calls,
    read_calls,
    write_calls,
)
from mining.prompts import PROMPT_VERSION
from mining.transformers_backend import resolve_device
from tests.fake_openai_server import FakeOpenAIServer
from tests.test_item_mining import KEY_ENV, _api_key, _items, _miner  # noqa: F401  (fixture + builders)


def _export(items: pd.DataFrame, cfg, cache, path):
    requests = item_mining_requests(items, cfg, seed=0)
    calls = pending_calls(requests, backend="openai", model=cfg.model, prompt_version=PROMPT_VERSION, cache=cache)
    write_calls(calls, path)
    return calls


def test_round_trip_serves_mining_from_the_cache(tmp_path) -> None:
    items = _items(5)
    cache = DuckDBCallCache(tmp_path / "w.duckdb")
    with FakeOpenAIServer() as server:
        backend, cfg = _miner(server, "few_shot_phrase")
        calls = _export(items, cfg, cache, tmp_path / "req.jsonl.gz")
        assert len(calls) == 5 * cfg.n_descriptors
        assert [c.key for c in read_calls(tmp_path / "req.jsonl.gz")] == [c.key for c in calls]
        stats = answer_calls(read_calls(tmp_path / "req.jsonl.gz"), backend, tmp_path / "ans.jsonl.gz",
                             chunk_size=3, progress=False)
        assert stats["answered"] == len(calls)
        # a rerun (e.g. after a crash) answers nothing twice
        again = answer_calls(calls, backend, tmp_path / "ans.jsonl.gz", progress=False)
        assert again["answered"] == 0 and again["already_answered"] == len(calls)
        served = len(server.requests)
        assert import_answers(tmp_path / "ans.jsonl.gz", cache) == len(calls)
        result = mine_item_interests(items, [backend], [cfg], cache, progress=False)
        assert len(server.requests) == served  # nothing went to the endpoint: every call was a cache hit
    assert result.stats["cache_hits"] == len(calls) and result.stats["calls"] == 0
    assert set(result.interests["item_id"]) == set(items["item_id"])
    # nothing is pending any more
    assert _export(items, cfg, cache, tmp_path / "left.jsonl.gz") == []


def _rewrite(src, dst, edit) -> None:
    lines = gzip.open(src, "rt", encoding="utf-8").read().splitlines()
    with gzip.open(dst, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(edit(lines)) + "\n")


def test_altered_answer_is_refused_and_nothing_is_imported(tmp_path) -> None:
    items = _items(3)
    cache = DuckDBCallCache(tmp_path / "w.duckdb")
    with FakeOpenAIServer() as server:
        backend, cfg = _miner(server, "few_shot_phrase")
        calls = _export(items, cfg, cache, tmp_path / "req.jsonl.gz")
        answer_calls(calls, backend, tmp_path / "ans.jsonl.gz", progress=False)

    def swap_request(lines):
        row = json.loads(lines[2])
        row["request"]["messages"][-1]["content"] = "something else entirely"
        return [*lines[:2], json.dumps(row), *lines[3:]]

    _rewrite(tmp_path / "ans.jsonl.gz", tmp_path / "bad.jsonl.gz", swap_request)
    with pytest.raises(OfflineBatchError, match=r"bad\.jsonl\.gz:3: key .* does not match its request"):
        import_answers(tmp_path / "bad.jsonl.gz", cache)
    assert len(cache) == 0

    _rewrite(tmp_path / "ans.jsonl.gz", tmp_path / "broken.jsonl.gz", lambda ls: [*ls[:2], "{not json", *ls[3:]])
    with pytest.raises(OfflineBatchError, match=r"broken\.jsonl\.gz:3: invalid JSON"):
        import_answers(tmp_path / "broken.jsonl.gz", cache)
    assert len(cache) == 0


def test_unreadable_or_foreign_files_name_the_problem(tmp_path) -> None:
    truncated = tmp_path / "cut.jsonl.gz"
    data = gzip.compress(b'{"format": "digr-llm-requests/1"}\n' + b'{"key": "x"}\n' * 200)
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(OfflineBatchError, match="cut.jsonl.gz: cannot read"):
        read_calls(truncated)
    plain = tmp_path / "plain.jsonl.gz"
    plain.write_text("not gzip at all")
    with pytest.raises(OfflineBatchError, match="plain.jsonl.gz: cannot read"):
        read_calls(plain)
    answers_not_requests = tmp_path / "a.jsonl.gz"
    answers_not_requests.write_bytes(gzip.compress(b'{"format": "digr-llm-answers/1"}\n'))
    with pytest.raises(OfflineBatchError, match="not a digr-llm-requests/1 file"):
        read_calls(answers_not_requests)


def test_answers_only_for_the_model_the_calls_name(tmp_path) -> None:
    items = _items(2)
    with FakeOpenAIServer() as server:
        backend, cfg = _miner(server, "few_shot_phrase")
        calls = _export(items, cfg, DuckDBCallCache(tmp_path / "w.duckdb"), tmp_path / "req.jsonl.gz")
        other, _ = _miner(server, "few_shot_phrase", name="other")
        with pytest.raises(OfflineBatchError, match="are for openai:remote-model, but the backend is "
                                                    "openai:other-model"):
            answer_calls(calls, other, tmp_path / "ans.jsonl.gz", progress=False)
        assert server.requests == []
    assert not (tmp_path / "ans.jsonl.gz").exists()


def test_device_resolution() -> None:
    import torch

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="use cpu, cuda, cuda:N or auto"):
        resolve_device("gpu-please")
    with pytest.raises(ValueError, match="is not supported"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA device"):
            resolve_device("cuda")


def test_answer_command_options_are_the_miner_settings(tmp_path, capsys) -> None:
    """The CLI's backend options are derived from MinerConfig (less the request-shaping settings)."""
    names = _add_miner_options(argparse.ArgumentParser())
    request_shaping = set(ANSWER_SETTINGS) - {"backend", "model"}
    assert set(names) == {f.name for f in dataclasses.fields(MinerConfig)} - request_shaping
    items = _items(3)
    cache = DuckDBCallCache(tmp_path / "w.duckdb")
    with FakeOpenAIServer() as server:
        _backend, cfg = _miner(server, "few_shot_phrase")
        calls = _export(items, cfg, cache, tmp_path / "req.jsonl.gz")
        assert main(["answer", str(tmp_path / "req.jsonl.gz"), str(tmp_path / "ans.jsonl.gz"), "--backend", "openai",
                     "--model", cfg.model, "--base-url", server.base_url, "--api-key-env", KEY_ENV,
                     "--max-concurrency", "2", "--max-retries", "1"]) == 0
        assert len(server.requests) == len(calls)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["answered"] == len(calls)
    assert import_answers(tmp_path / "ans.jsonl.gz", cache) == len(calls)
    with pytest.raises(SystemExit):
        main(["answer", str(tmp_path / "req.jsonl.gz"), str(tmp_path / "x.jsonl.gz"), "--backend", "openai"])
    assert "an openai miner needs base_url" in capsys.readouterr().err
