"""LLM calls answered on another machine: export what the cache lacks, answer there, import the answers.

For catalogues too large to mine on the pipeline's own CPUs: ``export_calls`` writes the pending requests
(gzipped JSON lines, each with its cache key), ``answer_calls`` runs them through any backend on a GPU
machine (``python -m mining.offline_batch answer ...``; needs only torch, transformers and gguf there), and
``import_answers`` puts the answers into the call cache, after checking every key against its request, so
the next ``item_interests`` materialisation finds them as cache hits. Answers are keyed by content: an
answer can only ever be served for exactly the request it was computed for.

The key (``mining.call_cache.cache_key``) holds the backend kind, the model, the prompt version and the request;
it does not hold where or how the answer was computed (``device``, batch size, endpoint: see
``mining.backends.RUNTIME_SETTINGS``), which is what lets answers computed on a GPU serve the CPU pipeline.
The ``answer`` command's backend options are the miner settings of ``mining.backends.MinerConfig`` (derived
from its fields, not copied), less those that shape requests: the requests are fixed in the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import sys
import time
import typing
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

from mining.backends import ANSWER_SETTINGS, ChatRequest, Completion, LLMBackend, MinerConfig, build_backend
from mining.call_cache import CacheEntry, CallCache, backend_kind, cache_key, canonical_request_json

REQUESTS_FORMAT = "digr-llm-requests/1"
ANSWERS_FORMAT = "digr-llm-answers/1"


class OfflineBatchError(ValueError):
    """A malformed or inconsistent request/answer file; the message names the file and line."""


@dataclass(frozen=True)
class PendingCall:
    """One request to answer elsewhere, with the identity its answer is cached under."""

    key: str
    backend: str
    model: str
    prompt_version: str
    request: ChatRequest


def pending_calls(requests: list[ChatRequest], *, backend: str, model: str, prompt_version: str,
                  cache: CallCache) -> list[PendingCall]:
    """The distinct requests whose answers the cache does not hold yet (in first-seen order)."""
    keyed = {cache_key(backend, model, prompt_version, r): r for r in requests}
    held = cache.get_many(list(keyed))
    return [PendingCall(k, backend, model, prompt_version, r) for k, r in keyed.items() if k not in held]


def _request_from_json(data: dict) -> ChatRequest:
    names = {f.name for f in fields(ChatRequest)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown request fields {sorted(unknown)}")
    values = dict(data)
    for tuple_field in ("stop", "choices"):
        if tuple_field in values:
            values[tuple_field] = tuple(values[tuple_field])
    return ChatRequest(**values)


def _lines(path: Path, expected_format: str) -> Iterator[tuple[int, dict]]:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            header = fh.readline()
            try:
                fmt = json.loads(header).get("format") if header.strip() else None
            except json.JSONDecodeError:
                fmt = None
            if fmt != expected_format:
                raise OfflineBatchError(f"{path}: not a {expected_format} file (header {header[:80]!r})")
            for number, line in enumerate(fh, start=2):
                if not line.strip():
                    continue
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise OfflineBatchError(f"{path}:{number}: invalid JSON ({exc.msg})") from exc
    except (OSError, EOFError, UnicodeDecodeError) as exc:  # gzip.BadGzipFile is an OSError
        raise OfflineBatchError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc


def _verified_call(path: Path, number: int, row: dict) -> PendingCall:
    try:
        request = _request_from_json(row["request"])
        call = PendingCall(str(row["key"]), str(row["backend"]), str(row["model"]), str(row["prompt_version"]),
                           request)
    except (KeyError, TypeError, ValueError) as exc:
        raise OfflineBatchError(f"{path}:{number}: malformed call ({type(exc).__name__}: {exc})") from exc
    expected = cache_key(call.backend, call.model, call.prompt_version, call.request)
    if expected != call.key:
        raise OfflineBatchError(f"{path}:{number}: key {call.key[:12]}… does not match its request "
                                f"({expected[:12]}…); the file was altered")
    return call


def write_calls(calls: list[PendingCall], path: str | Path) -> Path:
    """Write calls as gzipped JSON lines (header first); written to a temporary name, then renamed."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    with gzip.open(tmp, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps({"format": REQUESTS_FORMAT, "calls": len(calls)}) + "\n")
        for c in calls:
            fh.write(json.dumps({"key": c.key, "backend": c.backend, "model": c.model,
                                 "prompt_version": c.prompt_version,
                                 "request": json.loads(canonical_request_json(c.request))},
                                ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def read_calls(path: str | Path) -> list[PendingCall]:
    """Read and verify a requests file (every key recomputed from its request)."""
    path = Path(path)
    return [_verified_call(path, n, row) for n, row in _lines(path, REQUESTS_FORMAT)]


def _answered_keys(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return {str(row.get("key")) for _n, row in _lines(path, ANSWERS_FORMAT)}


def answer_calls(calls: list[PendingCall], backend: LLMBackend, out_path: str | Path, *, chunk_size: int = 256,
                 progress: bool = True) -> dict:
    """Answer calls with ``backend``, appending to ``out_path`` after every chunk (a rerun skips answered keys).

    Every call must name this backend's kind and model: an answer is only valid for the model it claims.
    """
    out_path = Path(out_path)
    kind = backend_kind(backend)
    wrong = [c for c in calls if c.backend != kind or c.model != backend.model]
    if wrong:
        raise OfflineBatchError(f"{len(wrong)} call(s) are for {wrong[0].backend}:{wrong[0].model}, but the backend "
                                f"is {kind}:{backend.model}")
    done = _answered_keys(out_path)
    todo = [c for c in calls if c.key not in done]
    started = time.perf_counter()
    if not out_path.exists():
        with gzip.open(out_path, "wt", encoding="utf-8") as fh:
            fh.write(json.dumps({"format": ANSWERS_FORMAT}) + "\n")
    for start in range(0, len(todo), chunk_size):
        chunk = todo[start:start + chunk_size]
        answers = backend.complete_batch([c.request for c in chunk])
        # one gzip member per chunk: a crash loses at most the chunk being written
        with gzip.open(out_path, "at", encoding="utf-8") as fh:
            for c, a in zip(chunk, answers, strict=True):
                fh.write(json.dumps({"key": c.key, "backend": c.backend, "model": c.model,
                                     "prompt_version": c.prompt_version,
                                     "request": json.loads(canonical_request_json(c.request)),
                                     "completion": {"text": a.text, "mean_logprob": a.mean_logprob,
                                                    "prompt_tokens": a.prompt_tokens,
                                                    "completion_tokens": a.completion_tokens}},
                                    ensure_ascii=False) + "\n")
        if progress:
            done_n = start + len(chunk)
            rate = done_n / max(time.perf_counter() - started, 1e-9)
            print(f"answered {done_n}/{len(todo)} ({rate:.1f} calls/s)", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - started
    return {"calls": len(calls), "already_answered": len(calls) - len(todo), "answered": len(todo),
            "seconds": round(seconds, 2), "calls_per_second": round(len(todo) / max(seconds, 1e-9), 2)}


def import_answers(path: str | Path, cache: CallCache) -> int:
    """Verify every answer against its request and put them all into ``cache`` in one write; returns the
    number of answers read. Nothing is written when any line is malformed or altered."""
    path = Path(path)
    entries = []
    for number, row in _lines(path, ANSWERS_FORMAT):
        call = _verified_call(path, number, row)
        try:
            c = row["completion"]
            completion = Completion(text=c["text"], mean_logprob=c["mean_logprob"],
                                    prompt_tokens=int(c["prompt_tokens"]),
                                    completion_tokens=int(c["completion_tokens"]))
            entries.append(CacheEntry(call.key, call.backend, call.model, call.prompt_version,
                                      canonical_request_json(call.request), completion))
        except (KeyError, TypeError, ValueError) as exc:
            raise OfflineBatchError(f"{path}:{number}: malformed completion ({type(exc).__name__}: {exc})") from exc
    cache.put_many(entries)
    return len(entries)


# the answering machine's own defaults (a GPU when there is one, big batches); all else as in MinerConfig
_ANSWER_DEFAULTS = {"name": "offline", "device": "auto", "batch_size": 64}
# settings that shape requests do nothing here: the requests are fixed in the file (backend and model stay,
# they must match the calls')
_NOT_OPTIONS = frozenset(ANSWER_SETTINGS) - {"backend", "model"}


def _add_miner_options(parser: argparse.ArgumentParser) -> list[str]:
    """One ``--option`` per MinerConfig field (less ``_NOT_OPTIONS``), typed from the field; returns the names."""
    hints = typing.get_type_hints(MinerConfig)
    names = []
    for f in dataclasses.fields(MinerConfig):
        if f.name in _NOT_OPTIONS:
            continue
        annotation = hints[f.name]
        options: dict = {"dest": f.name, "default": None,
                         "help": f"{f.metadata.get('description', '')} (default: "
                                 f"{_ANSWER_DEFAULTS.get(f.name, f.default)})"}
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if typing.get_origin(annotation) is typing.Literal:
            options["choices"] = list(args)
        elif annotation is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            kind = annotation if isinstance(annotation, type) else (args[0] if len(args) == 1 else str)
            options["type"] = kind
        parser.add_argument("--" + f.name.replace("_", "-"), **options)
        names.append(f.name)
    return names


def main(argv: list[str] | None = None) -> int:
    """``answer REQUESTS OUT``: answer a requests file with a miner backend (default: the shipped SmolLM2 on
    transformers, on the GPU when there is one)."""
    parser = argparse.ArgumentParser(prog="python -m mining.offline_batch")
    sub = parser.add_subparsers(dest="command", required=True)
    ans = sub.add_parser("answer", help="answer a requests file with a miner backend (default: local transformers)")
    ans.add_argument("requests")
    ans.add_argument("out")
    names = _add_miner_options(ans)
    ans.add_argument("--chunk-size", type=int, default=1024)
    args = parser.parse_args(argv)
    calls = read_calls(args.requests)
    values = {**_ANSWER_DEFAULTS, **{k: getattr(args, k) for k in names if getattr(args, k) is not None}}
    try:
        backend = build_backend(MinerConfig(**values))
    except (ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))
    stats = answer_calls(calls, backend, args.out, chunk_size=args.chunk_size)
    print(json.dumps({**stats, "device": str(getattr(backend, "device", "n/a"))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
