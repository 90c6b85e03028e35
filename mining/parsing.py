"""Robust parsing of model output: JSON extraction, validation, phrase cleaning. Every failure is a ParseError."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ParseError(ValueError):
    """Model output could not be turned into the expected record; the message says why."""


class Descriptor(BaseModel):
    """One mined interest."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    descriptor: str = Field(min_length=1, max_length=120)
    confidence: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)

    @field_validator("confidence", mode="before")
    @classmethod
    def _no_bool(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("confidence must be a number, not a boolean")
        return value


class ItemInterests(BaseModel):
    """The structured answer: an ordered list of descriptors."""

    model_config = ConfigDict(extra="forbid")

    descriptors: list[Descriptor] = Field(min_length=1)


_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_OBJECT_START = re.compile(r"\{\s*[\"}]")  # a JSON object opens with a key or closes at once
#: Answers are a few hundred tokens; anything far longer is a runaway generation, not an answer.
MAX_OUTPUT_CHARS = 200_000
#: Failed decode attempts per candidate: each may scan to the end of the text, so an unbounded number
#: of them is quadratic (1 MB of '{"a":' nests took a minute).
MAX_DECODE_ATTEMPTS = 64


def extract_json_object(text: str) -> dict:
    """The first JSON object in ``text`` (inside a code fence or bare, surrounded by prose).

    Raises ``ParseError`` for text over ``MAX_OUTPUT_CHARS`` and when no object decodes within the first
    ``MAX_DECODE_ATTEMPTS`` object-like openings of a candidate.
    """
    if not isinstance(text, str):
        raise ParseError(f"expected text, got {type(text).__name__}")
    if len(text) > MAX_OUTPUT_CHARS:
        raise ParseError(f"output is {len(text)} characters, over the {MAX_OUTPUT_CHARS} accepted")
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        for attempt, opening in enumerate(_OBJECT_START.finditer(candidate)):
            if attempt >= MAX_DECODE_ATTEMPTS:
                break
            try:
                value, _end = decoder.raw_decode(candidate, opening.start())
            except (ValueError, RecursionError):
                # ValueError: JSONDecodeError, or an integer over Python's 4300-digit conversion limit
                continue
            if isinstance(value, dict):
                return value
    raise ParseError("no JSON object found in the output" if "{" not in text else "no valid JSON object in the output")


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        location = ".".join(str(p) for p in item["loc"]) or "record"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)


def parse_item_interests(text: str, max_descriptors: int) -> list[Descriptor]:
    """Validate a structured answer; keep at most ``max_descriptors``, dropping normalised duplicates."""
    data = extract_json_object(text)
    try:
        record = ItemInterests.model_validate(data)
    except ValidationError as exc:
        raise ParseError(f"invalid interests record: {_describe(exc)}") from None
    seen: set[str] = set()
    kept = []
    for d in record.descriptors:
        key = normalise_descriptor(d.descriptor)
        if not key:
            raise ParseError(f"descriptor {d.descriptor!r} is empty after normalisation")
        if key in seen:
            continue
        seen.add(key)
        kept.append(d)
    return kept[:max_descriptors]


_PUNCT = re.compile(r"[^\w\s]|_", re.UNICODE)
_ARTICLES = {"a", "an", "the"}


def normalise_descriptor(text: str) -> str:
    """Lowercase, strip punctuation and articles, collapse whitespace (the merge / dedup key)."""
    words = _PUNCT.sub(" ", text.lower()).split()
    return " ".join(w for w in words if w not in _ARTICLES)


_PHRASE_PREFIX = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")
_MAX_PHRASE_WORDS = 16


def clean_phrase(text: str) -> str:
    """The first line of a one-phrase answer, without list markers, quotes or a trailing full stop."""
    if not isinstance(text, str):
        raise ParseError(f"expected text, got {type(text).__name__}")
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        raise ParseError("empty answer")
    phrase = _PHRASE_PREFIX.sub("", lines[0]).strip().strip("\"'`“”").strip().rstrip(".;:,!").strip()
    if not normalise_descriptor(phrase):
        raise ParseError(f"answer has no words: {lines[0][:80]!r}")
    if len(phrase.split()) > _MAX_PHRASE_WORDS:
        raise ParseError(f"answer is not a short phrase ({len(phrase.split())} words)")
    if "{" in phrase or "<" in phrase:
        raise ParseError(f"answer looks like markup, not a phrase: {phrase[:80]!r}")
    if not is_unicode_text(phrase):
        # e.g. a "\ud800" escape in an endpoint's JSON: the warehouse (UTF-8) could not store it
        raise ParseError(f"answer is not valid unicode text (a lone surrogate): {phrase[:80]!r}")
    return phrase[:120]


def is_unicode_text(text: str) -> bool:
    """Whether ``text`` can be stored as UTF-8 (no lone surrogates, which JSON escapes can produce)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable_text(text: str) -> str:
    """``text`` with lone surrogates written as ``\\udxxx`` escapes (unchanged when it is valid unicode), so a
    hostile answer can be quoted in a failure record or a repair prompt."""
    return text if is_unicode_text(text) else text.encode("utf-8", "backslashreplace").decode("utf-8")


# ---------------------------------------------------------------- restatements and copied examples
#: A descriptor names a need; one that names the item instead ("the movie Toy Story (1995)" for the title
#: "Toy Story (1995)") is a restatement. Defined once, here: the miner rejects them as recorded failures, the
#: judge rejects them whatever its score, and the quality check counts them.
RESTATEMENT_THRESHOLD = 0.6
#: content-word Jaccard at or above which an answer is a (near) copy of a few-shot example's answer
COPY_SIMILARITY = 0.8
#: reasons recorded for rejected descriptors (failure rows of the miner, ``reason`` of the judge's rewards)
RESTATES_TITLE = "restates the item title"
COPIES_DESCRIPTION = "copies the item description"
NAMES_NO_NEED = "names no need (only item nouns, numbers or stop words)"
COPIED_EXAMPLE = "copied a few-shot example's answer"
#: a span copied from the description counts when it has at least this many content words
_DESCRIPTION_SPAN_WORDS = 3
_STOPWORDS = frozenset(
    "a an the and or nor of for to in on at by with from into onto over about as is are was were be been being it "
    "its this that these those your my our their his her them they you we i me us than then so not no".split())
#: words that name the kind of item rather than a need ("the movie X"): not content words of a descriptor
ITEM_NOUNS = frozenset(
    "item items product products movie movies film films video videos dvd dvds book books novel novels song songs "
    "album albums track tracks article articles title titles".split())
_BRACKETED = re.compile(r"\([^)]*\)|\[[^\]]*\]")


def _words(text: str) -> list[str]:
    return normalise_descriptor(text).split()


def content_words(text: str) -> list[str]:
    """The words of ``text`` that carry its meaning: lowercased, without punctuation, stop words, words without
    a letter (years, sizes) and item nouns ("movie", "book"), in order, each once."""
    return list(dict.fromkeys(w for w in _words(text)
                              if w not in _STOPWORDS and w not in ITEM_NOUNS and any(c.isalpha() for c in w)))


def _contains(words: list[str], span: list[str]) -> bool:
    n = len(span)
    return any(words[i:i + n] == span for i in range(len(words) - n + 1))


def restatement_reason(descriptor: str, title: object, description: object = None, *,
                       threshold: float = RESTATEMENT_THRESHOLD) -> str | None:
    """Why ``descriptor`` restates its item instead of naming a need, or None when it does not.

    - ``NAMES_NO_NEED``: it has words but no content word ("the 1995 movie").
    - ``RESTATES_TITLE``: at least ``threshold`` of the descriptor's content words (see ``content_words``) are
      words of the title, or the title (with or without its bracketed parts, such as a year; at least two
      words that are not stop words) appears in the descriptor as a run of words.
    - ``COPIES_DESCRIPTION``: the descriptor, with at least three content words, appears word for word in the
      description.
    """
    words = _words(descriptor)
    if not words:
        return None
    content = content_words(descriptor)
    if not content:
        return NAMES_NO_NEED
    if isinstance(title, str) and title.strip():
        title_words = set(_words(title))
        if sum(w in title_words for w in content) / len(content) >= threshold:
            return RESTATES_TITLE
        for variant in {title, _BRACKETED.sub(" ", title)}:
            span = _words(variant)
            if sum(w not in _STOPWORDS and any(c.isalpha() for c in w) for w in span) >= 2 and _contains(words, span):
                return RESTATES_TITLE
    if isinstance(description, str) and len(content) >= _DESCRIPTION_SPAN_WORDS \
            and _contains(_words(description), words):
        return COPIES_DESCRIPTION
    return None


def copies_example(descriptor: str, answers: Iterable[str], *, similarity: float = COPY_SIMILARITY) -> bool:
    """Whether ``descriptor`` equals one of the few-shot ``answers`` after normalisation, or shares at least
    ``similarity`` of their content words (Jaccard): a copy of the prompt, not a descriptor of the item."""
    norm = normalise_descriptor(descriptor)
    content = set(content_words(descriptor))
    for answer in answers:
        if norm == normalise_descriptor(answer):
            return True
        other = set(content_words(answer))
        if content and other and len(content & other) / len(content | other) >= similarity:
            return True
    return False
