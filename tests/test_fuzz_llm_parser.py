"""Hostile model output for mining/parsing.py (issue 8): any string gives a schema-valid record or ParseError.

Fault classes (hypothesis, derandomized; example counts in the constants): arbitrary unicode text with
null bytes and lone surrogates, JSON-ish token soup, near-valid records with wrong types or out-of-range
values (truncated at random), huge outputs, deep nesting and brace floods. Every call must also finish fast:
LLM endpoints are outside our control and one answer must not stall a mining run.
"""

from __future__ import annotations

import json
import math
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mining.parsing import (
    MAX_OUTPUT_CHARS,
    Descriptor,
    ParseError,
    clean_phrase,
    extract_json_object,
    normalise_descriptor,
    parse_item_interests,
)

N_ARBITRARY_TEXT = 300
N_JSON_SOUP = 300
N_NEAR_VALID = 300
N_VALID_ORACLE = 150
N_HUGE = 12
MAX_SECONDS_PER_PARSE = 3.0  # a 200 kB output parses in well under a second here: beyond this is a hang

FUZZ = dict(derandomize=True, deadline=None, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

any_text = st.text(st.characters(codec=None, categories=None))  # every code point, surrogates included


def _check_descriptors(parsed: list[Descriptor], max_descriptors: int) -> None:
    """The schema, as the rest of the pipeline relies on it."""
    assert 1 <= len(parsed) <= max_descriptors
    keys = [normalise_descriptor(d.descriptor) for d in parsed]
    assert all(keys) and len(set(keys)) == len(keys)
    for d in parsed:
        assert isinstance(d, Descriptor)
        assert isinstance(d.descriptor, str) and d.descriptor == d.descriptor.strip() and 1 <= len(d.descriptor) <= 120
        assert type(d.confidence) is float and math.isfinite(d.confidence) and 0.0 <= d.confidence <= 1.0


def _check_phrase(phrase: str) -> None:
    assert isinstance(phrase, str) and 1 <= len(phrase) <= 120
    assert "\n" not in phrase and "{" not in phrase and "<" not in phrase
    assert normalise_descriptor(phrase) and len(phrase.split()) <= 16


def _exercise(text: object, max_descriptors: int = 3) -> dict[str, object]:
    """Run every parser on ``text``: each returns a valid value or raises ParseError, quickly."""
    outcomes: dict[str, object] = {}
    for name, parse, check in (
        ("extract", extract_json_object, lambda v: isinstance(v, dict) or pytest.fail(f"not a dict: {v!r}")),
        ("interests", lambda t: parse_item_interests(t, max_descriptors),
         lambda v: _check_descriptors(v, max_descriptors)),
        ("phrase", clean_phrase, _check_phrase),
    ):
        started = time.perf_counter()
        try:
            value = parse(text)
        except ParseError as error:
            assert str(error), "a ParseError must say why"
            outcomes[name] = error
        else:
            check(value)
            outcomes[name] = value
        elapsed = time.perf_counter() - started
        assert elapsed < MAX_SECONDS_PER_PARSE, f"{name} took {elapsed:.1f} s on {len(str(text))} chars"
    return outcomes


@settings(max_examples=N_ARBITRARY_TEXT, **FUZZ)
@given(any_text, st.integers(1, 10))
@example("\x00{\x00}\x00", 3)
@example("\ud800{\"descriptors\": [{\"descriptor\": \"\udfff\", \"confidence\": 0.5}]}", 3)
@example("", 1)
def test_arbitrary_text_gives_a_valid_value_or_parse_error(text: str, max_descriptors: int) -> None:
    _exercise(text, max_descriptors)


SOUP_TOKENS = ['{', '}', '[', ']', '"', ':', ',', ' ', '\n', '"descriptors"', '"descriptor"', '"confidence"',
               '"x"', '0.5', '1', '-0', '1e999', '-1e-999', 'NaN', 'Infinity', 'true', 'false', 'null',
               '9' * 5000, '```json', '```', '\\u0000', '\\ud800', '\x00', '\ud83d', 'é', '\\', '"\\"', '{}', '[]']


@settings(max_examples=N_JSON_SOUP, **FUZZ)
@given(st.lists(st.sampled_from(SOUP_TOKENS), max_size=60).map("".join), st.integers(1, 5))
@example('{"descriptors": [{"descriptor": "x", "confidence": ' + "1" * 5000 + "}]}", 3)
@example('{"descriptors": [{"descriptor": "x", "confidence": 0.5}]} {"a": ' + "9" * 4301 + "}", 3)
@example('{"a": ' + "9" * 4301 + '} {"descriptors": [{"descriptor": "ok", "confidence": 1}]}', 3)
def test_json_soup_gives_a_valid_value_or_parse_error(text: str, max_descriptors: int) -> None:
    _exercise(text, max_descriptors)


def test_an_object_after_an_overlong_integer_is_still_found() -> None:
    """Python refuses to convert integers over 4300 digits (ValueError, not JSONDecodeError): skip, go on."""
    text = '{"a": ' + "9" * 4301 + '} then {"descriptors": [{"descriptor": "Fix a bike", "confidence": 0.7}]}'
    assert [d.descriptor for d in parse_item_interests(text, 3)] == ["Fix a bike"]


confidence_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30), st.booleans(), st.none(),
    st.text(max_size=8), st.sampled_from(["0.5", "1", "nan", "inf", "", " 0.3 "]),
    st.lists(st.floats(0, 1), max_size=2),
)
descriptor_values = st.one_of(any_text.filter(lambda s: len(s) < 200), st.integers(), st.none(),
                              st.just(""), st.just("   "), st.just("x" * 121), st.just("the a an"), st.just("!!!"))
entry = st.fixed_dictionaries(
    {"descriptor": descriptor_values, "confidence": confidence_values},
    optional={"extra": st.integers(), "reason": st.text(max_size=5)},
)
record = st.one_of(
    st.fixed_dictionaries({"descriptors": st.lists(entry, max_size=6)}),
    st.fixed_dictionaries({"descriptors": st.one_of(st.none(), st.text(max_size=5), entry)}),
    st.dictionaries(st.text(max_size=12), st.lists(entry, max_size=2), max_size=3),
)


def _wrap(payload: str, style: str) -> str:
    return {"bare": payload, "prose": f"Sure! Here is the JSON:\n{payload}\nHope this helps.",
            "fence": f"```json\n{payload}\n```", "fence_upper": f"Answer:\n```JSON\n{payload}```\nDone",
            "twice": f"{payload}\n{payload}"}[style]


@settings(max_examples=N_NEAR_VALID, **FUZZ)
@given(record, st.sampled_from(["bare", "prose", "fence", "fence_upper", "twice"]),
       st.one_of(st.none(), st.floats(0, 1)), st.integers(1, 8))
def test_near_valid_records_give_a_valid_value_or_parse_error(data: dict, style: str, cut: float | None,
                                                             max_descriptors: int) -> None:
    payload = json.dumps(data, ensure_ascii=bool(len(data) % 2))  # both escaped and raw unicode
    if cut is not None:
        payload = payload[: int(cut * len(payload))]  # a generation stopped by max_tokens
    _exercise(_wrap(payload, style), max_descriptors)


valid_entry = st.fixed_dictionaries({
    "descriptor": st.text(st.characters(codec="utf-8", categories=["L", "N", "Zs", "P"]), min_size=1, max_size=60)
    .filter(lambda s: normalise_descriptor(s.strip()) != ""),
    "confidence": st.floats(0, 1),
})


@settings(max_examples=N_VALID_ORACLE, **FUZZ)
@given(st.lists(valid_entry, min_size=1, max_size=8), st.sampled_from(["bare", "prose", "fence", "fence_upper"]),
       st.integers(1, 8), st.text(st.characters(exclude_characters="{`"), max_size=40))
def test_a_valid_record_in_any_wrapper_is_parsed_exactly(entries: list[dict], style: str, max_descriptors: int,
                                                         noise: str) -> None:
    """Completeness: hostile-input hardening must not reject good answers (first k unique, in order)."""
    text = noise + _wrap(json.dumps({"descriptors": entries}), style)
    parsed = parse_item_interests(text, max_descriptors)
    expected, seen = [], set()
    for e in entries:
        key = normalise_descriptor(e["descriptor"].strip())
        if key not in seen:
            seen.add(key)
            expected.append((e["descriptor"].strip(), e["confidence"]))
    assert [(d.descriptor, d.confidence) for d in parsed] == expected[:max_descriptors]


GOOD = '{"descriptors": [{"descriptor": "home espresso ritual", "confidence": 0.8}]}'
HUGE_PATTERNS = ['{"a":', "{", "[", '{"a":[', "```json\n{", '{"a":"', "\x00", "é{", '{"descriptors": [',
                 '{"a": 1, ']


@settings(max_examples=N_HUGE, **FUZZ)
@given(st.sampled_from(HUGE_PATTERNS), st.sampled_from([10_000, 150_000, MAX_OUTPUT_CHARS - len(GOOD),
                                                        MAX_OUTPUT_CHARS + 1, 5_000_000]), st.booleans())
def test_huge_and_deeply_nested_output_is_fast(pattern: str, size: int, good_after: bool) -> None:
    text = (pattern * (size // len(pattern) + 1))[:size] + (GOOD if good_after else "")
    outcomes = _exercise(text)
    if len(text) > MAX_OUTPUT_CHARS:
        assert isinstance(outcomes["interests"], ParseError) and "characters" in str(outcomes["interests"])


def test_runaway_output_is_refused_with_its_length() -> None:
    text = GOOD + " " * MAX_OUTPUT_CHARS
    with pytest.raises(ParseError, match=f"{len(text)} characters"):
        parse_item_interests(text, 3)
    assert [d.descriptor for d in parse_item_interests(GOOD + " " * 1000, 3)] == ["home espresso ritual"]


@pytest.mark.parametrize("value", [None, b'{"descriptors": []}', 42, ["{"], {"descriptors": []}])
def test_non_text_output_is_a_parse_error(value: object) -> None:
    for parse in (extract_json_object, clean_phrase, lambda v: parse_item_interests(v, 3)):
        with pytest.raises(ParseError, match="expected text"):
            parse(value)
