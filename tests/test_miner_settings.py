"""The miner-settings road: one definition (``mining.backends.MinerConfig``), reached from ``DIGR_MINERS`` and from
the launchpad (the ``llm`` resource's ``miners``), arriving in ``miner_configs()``, in the built backend and, for
the settings that change answers, in the LLM call-cache key. Plus the backend registry: a new backend is one
module ``mining/<name>_backend.py``."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

import mining
from config_schema import settings_fields
from digr_dagster.resources.models import LLMMiners, MinerSpec, miners_from_env
from mining.backends import (
    ANSWER_SETTINGS,
    RUNTIME_SETTINGS,
    BackendName,
    ChatRequest,
    MinerConfig,
    backend_modules,
    backend_names,
    build_backend,
    default_smollm2_config,
    get_backend,
    register_backend,
    unregister_backend,
)
from mining.call_cache import MemoryCallCache, backend_kind, cache_key, complete_with_cache
from mining.item_mining import item_mining_requests
from mining.prompts import PROMPT_VERSION

FIELDS = [f.name for f in dataclasses.fields(MinerConfig)]
OPENAI = {"backend": "openai", "model": "remote-model", "base_url": "http://127.0.0.1:9/v1"}
LOCAL = {"model": "local-model", "model_path": "/models/local"}  # transformers; nothing is loaded in these tests

# one non-default value per MinerConfig field, with the other settings it needs (base, field, value)
CHANGES: list[tuple[dict, str, object]] = [
    (OPENAI, "name", "renamed"),
    ({**LOCAL, "base_url": OPENAI["base_url"]}, "backend", "openai"),  # valid for either backend
    (OPENAI, "model", "other-model"),
    (LOCAL, "model_path", "/models/elsewhere"),
    (LOCAL, "gguf_file", "weights.Q8_0.gguf"),
    (OPENAI, "base_url", "https://llm.example.org/v1"),
    (OPENAI, "api_key_env", "MY_LLM_KEY"),
    (OPENAI, "prompt_style", "structured_json"),
    (OPENAI, "n_descriptors", 5),
    (LOCAL, "batch_size", 3),
    ({}, "device", "cuda:1"),
    (OPENAI, "max_concurrency", 2),
    (OPENAI, "requests_per_second", 4.5),
    (OPENAI, "max_retries", 1),
    (OPENAI, "timeout_s", 7.5),
    (OPENAI, "temperature", 0.7),
    ({**OPENAI, "prompt_style": "structured_json"}, "vision", True),
]
# where each setting shows on the built backend (transformers resolves ``device`` to a torch.device)
BACKEND_ATTRIBUTE = {"name": "name", "model": "model", "model_path": "model_path", "gguf_file": "gguf_file",
                     "base_url": "base_url", "api_key_env": "api_key_env", "batch_size": "batch_size",
                     "device": "device", "max_concurrency": "max_concurrency",
                     "requests_per_second": "requests_per_second", "max_retries": "max_retries",
                     "timeout_s": "timeout_s", "backend": "kind"}


@pytest.fixture(autouse=True)
def _cuda_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    """``device="cuda:1"`` must build on a CPU-only test machine: nothing here touches the device (lazy model)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("DIGR_MINERS", raising=False)


def _items() -> pd.DataFrame:
    return pd.DataFrame({"item_id": ["a", "b"], "title": ["Chimney brush", "pH meter"],
                         "description": ["Cleans flues.", "Measures acidity."], "categories": ["Tools", "Lab"],
                         "brand": ["Rutland", "Apera"], "image_url": ["http://img/a.jpg", None]})


def _keys(cfg: MinerConfig) -> set[str]:
    """The cache keys of a miner's first-pass requests, computed the way ``complete_with_cache`` does."""
    backend = build_backend(cfg)
    return {cache_key(backend_kind(backend), backend.model, PROMPT_VERSION, r)
            for r in item_mining_requests(_items(), cfg, seed=0)}


def _through_dagster(miners: list[dict]) -> LLMMiners:
    """The launchpad road: resource config validated by Dagster, as a launched run gets it."""
    with dg.build_resources({"llm": LLMMiners.configure_at_launch()},
                            resource_config={"llm": {"config": {"miners": miners}}}) as resources:
        return resources.llm


# --- one definition ------------------------------------------------------------------------------------------

def test_minerspec_is_minerconfig_field_for_field() -> None:
    library = settings_fields(MinerConfig)
    assert list(MinerSpec.model_fields) == [f.name for f in library] == FIELDS
    for f in library:
        derived = MinerSpec.model_fields[f.name]
        assert derived.default == f.default, f.name
        assert derived.description == f.description and f.description, f.name
    assert typing.get_args(MinerSpec.model_fields["backend"].annotation) == tuple(backend_names())
    assert MinerSpec().build(MinerConfig) == MinerConfig()
    # MinerSpec() still means the shipped SmolLM2
    assert LLMMiners(miners=[MinerSpec()]).miner_configs() == [default_smollm2_config()]
    # the spelling the pipeline tests use keeps working
    spec = MinerSpec(name="loopback", backend="openai", model="fake-chat", base_url="http://127.0.0.1:1/v1",
                     api_key_env="KEY", n_descriptors=1, max_concurrency=4)
    assert spec.build(MinerConfig).max_concurrency == 4


def test_every_setting_is_classified_for_the_cache_key() -> None:
    assert set(ANSWER_SETTINGS) | RUNTIME_SETTINGS == set(FIELDS)
    assert not set(ANSWER_SETTINGS) & RUNTIME_SETTINGS
    assert {field for _base, field, _value in CHANGES} == set(FIELDS)


# --- the road: DIGR_MINERS and the launchpad to miner_configs, the backend and the cache key ----------------

@pytest.mark.parametrize("base, field, value", CHANGES, ids=[c[1] for c in CHANGES])
def test_every_setting_arrives_from_env_and_launchpad(monkeypatch: pytest.MonkeyPatch, base: dict, field: str,
                                                      value: object) -> None:
    values = {"name": "m", **base, field: value}
    monkeypatch.setenv("DIGR_MINERS", json.dumps([values]))
    [from_env] = LLMMiners().miner_configs()
    [from_spec] = LLMMiners(miners=[MinerSpec(**values)]).miner_configs()
    [from_dagster] = _through_dagster([values]).miner_configs()
    assert getattr(from_env, field) == value
    assert from_env == from_spec == from_dagster
    default = MinerConfig(**{"name": "m", **base}).resolved()
    assert dataclasses.replace(default, **{field: value}) == from_env  # nothing else changed

    backend = build_backend(from_env)
    if field in BACKEND_ATTRIBUTE:
        shown = getattr(backend, BACKEND_ATTRIBUTE[field])
        assert (str(shown) if field == "device" else shown) == value
    if field in ANSWER_SETTINGS:
        assert _keys(from_env) != _keys(default), f"{field} changes answers but not the cache key"
    else:
        assert _keys(from_env) == _keys(default), f"{field} does not change answers but changes the cache key"


def test_device_from_env_reaches_the_backend_but_not_the_cache_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Answers computed on a GPU (offline_batch) are served to the CPU pipeline: the key has no device."""
    from mining.transformers_backend import TransformersBackend, load_causal_lm

    monkeypatch.setenv("DIGR_MINERS", json.dumps([{"name": "gpu", "device": "cuda:1", "temperature": 0.3},
                                                  {"name": "cpu", "temperature": 0.3}]))
    loads = load_causal_lm.cache_info().misses
    gpu_cfg, cpu_cfg = LLMMiners().miner_configs()
    gpu, cpu = LLMMiners().backends()
    assert gpu_cfg.device == "cuda:1" and isinstance(gpu, TransformersBackend) and str(gpu.device) == "cuda:1"
    assert str(cpu.device) == "cpu"
    assert load_causal_lm.cache_info().misses == loads  # building is lazy: no model was loaded
    assert _keys(gpu_cfg) == _keys(cpu_cfg)
    [request] = item_mining_requests(_items().iloc[:1], gpu_cfg)[:1]
    assert request.temperature == 0.3  # an answer-changing setting: in the request, hence in the key
    assert cache_key("transformers", gpu_cfg.model, PROMPT_VERSION, request) in _keys(gpu_cfg)


# --- unknown keys and bad values ----------------------------------------------------------------------------

def test_unknown_key_in_digr_miners_names_key_miner_and_allowed_keys() -> None:
    raw = json.dumps([{"name": "smollm2"}, {"name": "qwen", **OPENAI, "devise": "cuda"}])
    with pytest.raises(ValueError, match=r"\['devise'\] in DIGR_MINERS\[1\] \(miner 'qwen'\); allowed: .*'device'"):
        miners_from_env(raw)


@pytest.mark.parametrize("raw, fragment", [
    ("not json", "not valid JSON"),
    ('{"name": "x"}', "non-empty JSON list"),
    ("[]", "non-empty JSON list"),
    ('["smollm2"]', r"DIGR_MINERS\[0\] must be a JSON object"),
    ('[{"name": "a", "backend": "grpc"}]', r"miner 'a'.*unknown backend 'grpc'; registered: \['openai', 'transf"),
    ('[{"name": "a", "backend": "openai", "model": "m"}]', r"DIGR_MINERS\[0\] \(miner 'a'\).*needs base_url"),
    ('[{"name": "a", "device": "gpu"}]', r"miner 'a'.*unknown device 'gpu'"),
    ('[{"name": "a", "n_descriptors": "many"}]', r"(?s)DIGR_MINERS\[0\] \(miner 'a'\).*n_descriptors"),
])
def test_bad_digr_miners_is_a_clear_error(raw: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        miners_from_env(raw)


def test_unknown_key_in_the_launchpad_is_refused() -> None:
    with pytest.raises(Exception, match=r"unknown key\(s\) \['devise'\] in MinerSpec; allowed: .*'device'"):
        MinerSpec(name="x", devise="cuda")
    with pytest.raises(dg.DagsterInvalidConfigError, match=r'unexpected config entry "devise".*device'):
        _through_dagster([{"name": "x", "devise": "cuda"}])
    with pytest.raises(dg.DagsterInvalidConfigError, match="grpc"):
        _through_dagster([{"name": "x", "backend": "grpc"}])


# --- the registry -------------------------------------------------------------------------------------------

def test_backends_are_the_backend_modules_of_mining() -> None:
    modules = sorted(p.stem[:-len("_backend")] for p in Path(mining.__file__).parent.glob("*_backend.py"))
    assert backend_names() == modules == list(typing.get_args(BackendName))
    assert backend_modules()["openai"] == "mining.openai_backend"
    for name in modules:
        assert get_backend(name).kind == name  # the registered name is the cache key's backend kind


def test_finding_and_checking_backends_imports_no_torch() -> None:
    code = ("import sys\nfrom mining.backends import MinerConfig, backend_names, get_backend\n"
            "[get_backend(n) for n in backend_names()]\n"
            "MinerConfig(name='a', device='cuda'); MinerConfig(name='b', backend='openai', model='m', "
            "base_url='http://x')\nassert 'torch' not in sys.modules and 'transformers' not in sys.modules, "
            "sorted(m for m in sys.modules if m.startswith(('torch', 'transformers')))[:5]\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(mining.__file__).parent.parent)


TINY_BACKEND = '''
"""A backend that answers every request with its last message reversed."""

from mining.backends import Completion, MinerConfig, register_backend


@register_backend("tiny")
class TinyBackend:
    def __init__(self, *, name: str, model: str, shout: bool) -> None:
        self.name, self.model, self.shout = name, model, shout

    @staticmethod
    def config_problems(cfg: MinerConfig) -> list[str]:
        return [] if cfg.model else ["a tiny miner needs model"]

    @classmethod
    def from_config(cls, cfg: MinerConfig) -> "TinyBackend":
        return cls(name=cfg.name, model=cfg.model, shout=cfg.vision)

    def complete_batch(self, requests):
        out = []
        for r in requests:
            text = r.messages[-1]["content"][::-1]
            out.append(Completion(text=text.upper() if self.shout else text, mean_logprob=None,
                                  prompt_tokens=1, completion_tokens=1))
        return out
'''


def test_a_new_backend_is_one_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Drop ``tiny_backend.py`` into the mining package (here: a folder added to its path) and nothing else."""
    with pytest.raises(ValueError, match=r"unknown backend 'tiny'; registered: \['openai', 'transformers'\]"):
        MinerConfig(name="t", backend="tiny", model="echo")
    (tmp_path / "tiny_backend.py").write_text(textwrap.dedent(TINY_BACKEND))
    monkeypatch.setattr(mining, "__path__", [*mining.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "mining.tiny_backend", raising=False)
    try:
        assert "tiny" in backend_names() and "mining.tiny_backend" not in sys.modules  # found by name only
        with pytest.raises(ValueError, match="a tiny miner needs model"):
            MinerConfig(name="t", backend="tiny")  # the backend's own checks
        cfg = MinerConfig(name="t", backend="tiny", model="echo", vision=True)
        backend = build_backend(cfg)
        assert type(backend).__name__ == "TinyBackend" and backend.kind == "tiny" and backend.shout is True
        request = ChatRequest(messages=[{"role": "user", "content": "abc"}])
        cache = MemoryCallCache()
        [answer], errors, [key] = complete_with_cache(backend, [request], cache, PROMPT_VERSION)
        assert answer.text == "CBA" and not errors
        assert key == cache_key("tiny", "echo", PROMPT_VERSION, request)
    finally:
        unregister_backend("tiny")


def test_registration_api_checks() -> None:
    class Echo:
        @classmethod
        def from_config(cls, cfg: MinerConfig) -> Echo:
            return cls()

    try:
        register_backend("echo")(Echo)
        assert "echo" in backend_names() and Echo.kind == "echo"
        assert type(build_backend(MinerConfig(name="e", backend="echo", model="m"))) is Echo
        with pytest.raises(ValueError, match="registered twice"):
            register_backend("echo")(type("Other", (Echo,), {}))
    finally:
        unregister_backend("echo")
    with pytest.raises(TypeError, match="from_config"):
        register_backend("nofactory")(type("NoFactory", (), {}))
    with pytest.raises(ValueError, match="cache key needs 'renamed'"):
        register_backend("renamed")(type("Renamed", (Echo,), {"kind": "other"}))
    with pytest.raises(ValueError, match="lower-case identifier"):
        register_backend("Bad Name")
