"""Prompt texts for interest mining and captions. Change PROMPT_VERSION whenever any text here changes:
it is part of every cache key, so stale answers are never reused. The mining prompts' instructions and
examples come from a domain template (``mining.domains``), whose name and content hash are in the key too
(``Domain.prompt_version``)."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

from mining.domains import RETAIL, Domain
from mining.parsing import storable_text

PROMPT_VERSION = "mlim-2026-11-25.1"

_MAX_FIELD_CHARS = {"title": 300, "description": 1200, "categories": 300, "brand": 100, "caption": 600}

# The mining prompts' instructions and few-shot examples are per domain (mining.domains); these names are the
# built-in retail domain's, the prompt before domains existed.
_DATA_RULE = RETAIL.data_rule

# Few-shot sets for small local models: one short phrase per call naming the real-life project or need
# behind a purchase. Each set yields one descriptor, so n_descriptors sets give n different angles.
PHRASE_SYSTEM = RETAIL.phrase_system

FEW_SHOT_SETS: tuple[tuple[tuple[dict[str, str], str], ...], ...] = RETAIL.few_shot_sets

STRUCTURED_SYSTEM = RETAIL.structured_system

CAPTION_SYSTEM = (
    "You describe product photos factually in one or two sentences: appearance, material, colour, and the "
    "setting where the product is used. Do not describe people, their identity, age, feelings or "
    "personality. " + _DATA_RULE
)

REPAIR_INSTRUCTION = (
    "Your previous answer was not valid: {error}. Answer again with JSON only, exactly of the form "
    '{{"descriptors": [{{"descriptor": "...", "confidence": 0.0}}]}} with at most {n} descriptors and '
    "confidence between 0 and 1."
)

_TAG = re.compile(r"<\s*/?\s*item\s*>", re.IGNORECASE)


def _clean_field(value: object, limit: int) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy arrays from parquet/duckdb
        value = value.tolist()
    if isinstance(value, list | tuple):
        value = " > ".join(str(v) for v in value)
    text = _TAG.sub(" ", str(value))  # item text must not be able to close the data block
    text = " ".join(text.split())
    return text[:limit]


def item_evidence_block(item: Mapping) -> str:
    """The item's evidence (title, description, categories, brand, caption) inside an <item> data block."""
    lines = []
    for field_name, label in (("title", "Title"), ("description", "Description"), ("categories", "Categories"),
                              ("brand", "Brand"), ("caption", "Image")):
        text = _clean_field(item.get(field_name), _MAX_FIELD_CHARS[field_name])
        if text:
            lines.append(f"{label}: {text}")
    return "<item>\n" + "\n".join(lines) + "\n</item>"


def few_shot_phrase_messages(item: Mapping, set_index: int, domain: Domain = RETAIL) -> list[dict]:
    """Chat messages asking for one phrase, with the worked examples of ``domain``'s few-shot set ``set_index``."""
    sets = domain.few_shot_sets
    if not 0 <= set_index < len(sets):
        raise ValueError(f"few-shot set {set_index} does not exist (domain {domain.name!r} has {len(sets)})")
    return [*(dict(m) for m in _few_shot_prefix(domain, set_index)),
            {"role": "user", "content": item_evidence_block(item)}]


@functools.lru_cache(maxsize=256)
def _few_shot_prefix(domain: Domain, set_index: int) -> tuple[dict, ...]:
    messages: list[dict] = [{"role": "system", "content": domain.phrase_system}]
    for example, phrase in domain.few_shot_sets[set_index]:
        messages.append({"role": "user", "content": item_evidence_block(example)})
        messages.append({"role": "assistant", "content": phrase})
    return tuple(messages)


def item_interests_schema(n_descriptors: int) -> dict:
    """JSON schema of the structured answer: an ordered list of {descriptor, confidence}."""
    return {
        "type": "object",
        "properties": {
            "descriptors": {
                "type": "array",
                "minItems": 1,
                "maxItems": n_descriptors,
                "items": {
                    "type": "object",
                    "properties": {
                        "descriptor": {"type": "string", "minLength": 1, "maxLength": 120},
                        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                    },
                    "required": ["descriptor", "confidence"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["descriptors"],
        "additionalProperties": False,
    }


def structured_json_messages(item: Mapping, n_descriptors: int, *, image_url: str | None = None,
                             domain: Domain = RETAIL) -> list[dict]:
    """The structured reasoning prompt for capable endpoints (optionally with the item image), in ``domain``'s
    words."""
    instruction = (
        f"List up to {n_descriptors} {domain.task}, most likely first, as JSON "
        f'{{"descriptors": [{{"descriptor": "<short specific phrase>", "confidence": <0..1>}}]}}.\n\n'
        + item_evidence_block(item)
    )
    content: str | list = instruction
    if image_url:
        content = [{"type": "text", "text": instruction}, {"type": "image_url", "image_url": {"url": image_url}}]
    return [{"role": "system", "content": domain.structured_system}, {"role": "user", "content": content}]


def repair_messages(messages: list[dict], bad_output: str, error: str, n_descriptors: int) -> list[dict]:
    """Re-ask after an invalid answer, quoting the validation error (lone surrogates in the answer are
    escaped: the request must be valid unicode for its cache key and the cache table)."""
    return [*messages, {"role": "assistant", "content": storable_text(bad_output[:2000])},
            {"role": "user", "content": REPAIR_INSTRUCTION.format(error=storable_text(error[:500]), n=n_descriptors)}]


def caption_messages(item: Mapping, image_url: str) -> list[dict]:
    """Factual caption request for an item image."""
    text = "Describe this product photo factually.\n\n" + item_evidence_block(
        {"title": item.get("title"), "categories": item.get("categories")})
    return [{"role": "system", "content": CAPTION_SYSTEM},
            {"role": "user", "content": [{"type": "text", "text": text},
                                         {"type": "image_url", "image_url": {"url": image_url}}]}]

