"""Optional factual image captions (appearance, material, usage setting) from a vision-capable miner."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from mining.backends import ChatRequest, LLMBackend, MinerConfig
from mining.call_cache import CachedBackend, CallCache
from mining.item_mining import FAILURE_COLUMNS
from mining.parsing import is_unicode_text, storable_text
from mining.prompts import PROMPT_VERSION, caption_messages

CAPTION_COLUMNS = ["item_id", "caption", "miner", "prompt_version", "cache_key"]
CAPTION_MAX_TOKENS = 96
_MAX_CAPTION_CHARS = 600


@dataclass(frozen=True)
class CaptionSettings:
    """Settings of the caption stage (the launchpad's ``item_captions`` config is derived from these)."""

    vision_miner: str | None = field(default=None, metadata={
        "description": "Name of a miner with vision=True; None: no captions"})
    seed: int = field(default=0, metadata={"description": "Seed of every caption request"})

    def __post_init__(self) -> None:
        if self.vision_miner is not None and not (isinstance(self.vision_miner, str) and self.vision_miner.strip()):
            raise ValueError(f"CaptionSettings.vision_miner must be a miner name or None, got {self.vision_miner!r}")


@dataclass
class CaptionResult:
    """Captions for items with an image, failures (item_id, miner, stage, reason, raw_output) and call counts."""

    captions: pd.DataFrame
    failures: pd.DataFrame
    stats: dict = field(default_factory=dict)


def vision_backend(settings: CaptionSettings, miner_configs: Sequence[MinerConfig],
                   backends: Sequence[LLMBackend]) -> LLMBackend | None:
    """The backend of ``settings.vision_miner`` (None when captions are off); ValueError naming the miners
    when it is not a configured miner with ``vision=True``."""
    if settings.vision_miner is None:
        return None
    pairs = {c.name: (c, b) for c, b in zip(miner_configs, backends, strict=True)}
    if settings.vision_miner not in pairs or not pairs[settings.vision_miner][0].vision:
        raise ValueError(f"vision_miner {settings.vision_miner!r} is not a configured miner with vision=True; "
                         f"miners: {sorted(pairs)}")
    return pairs[settings.vision_miner][1]


def caption_items(items: pd.DataFrame, vision_backend: LLMBackend, cache: CallCache, *,
                  seed: int = CaptionSettings.seed, chunk_size: int = 64) -> CaptionResult:
    """One factual caption per item that has an image_url; items without an image are skipped.

    Calls go through the call cache (prompt version ``PROMPT_VERSION``): a rerun pays only for new items.
    """
    missing = [c for c in ("item_id", "image_url") if c not in items.columns]
    if missing:
        raise ValueError(f"items is missing required columns {missing}")
    with_image = [row for row in items.to_dict("records")
                  if isinstance(row.get("image_url"), str) and row["image_url"].strip()]
    requests = [ChatRequest(messages=caption_messages(row, row["image_url"].strip()), max_tokens=CAPTION_MAX_TOKENS,
                            seed=seed) for row in with_image]
    cached = CachedBackend(vision_backend, cache, PROMPT_VERSION, chunk_size=chunk_size)
    calls = cached.complete_all(requests)
    captions, failures = [], []
    for i, row in enumerate(with_image):
        if i in calls.errors:
            failures.append((row["item_id"], vision_backend.name, "call", storable_text(calls.errors[i][:1000]), ""))
            continue
        answer = calls.completions[i].text
        text = " ".join(answer.split())[:_MAX_CAPTION_CHARS]
        if not text or not is_unicode_text(text):
            reason = "empty caption" if not text else "caption is not valid unicode text (a lone surrogate)"
            failures.append((row["item_id"], vision_backend.name, "parse", reason, storable_text(answer[:500])))
            continue
        captions.append((row["item_id"], text, vision_backend.name, PROMPT_VERSION, calls.keys[i]))
    return CaptionResult(captions=pd.DataFrame(captions, columns=CAPTION_COLUMNS),
                         failures=pd.DataFrame(failures, columns=FAILURE_COLUMNS), stats=cached.stats())
