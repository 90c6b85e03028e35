"""Optional factual image captions (appearance, material, usage setting) from a vision-capable miner."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from mining.backends import ChatRequest, LLMBackend
from mining.call_cache import CallCache, complete_with_cache
from mining.item_mining import FAILURE_COLUMNS
from mining.prompts import PROMPT_VERSION, caption_messages

CAPTION_COLUMNS = ["item_id", "caption", "miner", "prompt_version", "cache_key"]
CAPTION_MAX_TOKENS = 96
_MAX_CAPTION_CHARS = 600


@dataclass
class CaptionResult:
    """Captions for items with an image, and failures (item_id, miner, stage, reason, raw_output)."""

    captions: pd.DataFrame
    failures: pd.DataFrame


def caption_items(items: pd.DataFrame, vision_backend: LLMBackend, cache: CallCache, *, seed: int = 0,
                  chunk_size: int = 64) -> CaptionResult:
    """One factual caption per item that has an image_url; items without an image are skipped."""
    missing = [c for c in ("item_id", "image_url") if c not in items.columns]
    if missing:
        raise ValueError(f"items is missing required columns {missing}")
    with_image = [row for row in items.to_dict("records")
                  if isinstance(row.get("image_url"), str) and row["image_url"].strip()]
    requests = [ChatRequest(messages=caption_messages(row, row["image_url"].strip()), max_tokens=CAPTION_MAX_TOKENS,
                            seed=seed) for row in with_image]
    results, errors, keys = complete_with_cache(vision_backend, requests, cache, PROMPT_VERSION,
                                                chunk_size=chunk_size)
    captions, failures = [], []
    for i, row in enumerate(with_image):
        if i in errors:
            failures.append((row["item_id"], vision_backend.name, "call", errors[i][:1000], ""))
            continue
        text = " ".join(results[i].text.split())[:_MAX_CAPTION_CHARS]
        if not text:
            failures.append((row["item_id"], vision_backend.name, "parse", "empty caption", results[i].text[:500]))
            continue
        captions.append((row["item_id"], text, vision_backend.name, PROMPT_VERSION, keys[i]))
    return CaptionResult(captions=pd.DataFrame(captions, columns=CAPTION_COLUMNS),
                         failures=pd.DataFrame(failures, columns=FAILURE_COLUMNS))
