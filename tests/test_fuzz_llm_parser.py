"""Hostile model output for mining/parsing.py (issue 8), every case with an oracle: the expected outcome is
computed from how the input was built, never "a record or a ParseError, either will do".

Fault classes (hypothesis, derandomized; example counts in the constants): arbitrary unicode text with null
bytes and lone surrogates but no object (the exact "no JSON object" error), near-valid records with wrong types,
out-of-range values, extra keys or truncation (the outcome an independent schema check predicts), valid
records under hostile prose (parsed exactly), huge outputs, deep nesting and brace floods (exact outcome per
pattern), and hand-picked JSON-soup cases with their exact outcome. Every call must also finish fast: LLM
endpoints are outside our control and one answer must not stall a mining run.
"""

from __future__ import annotations

import json
import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mining.parsing import (
    MAX_DECODE_ATTEMPTS,
    MAX_OUTPUT_CHARS,
    ParseError,
    clean_phrase,
    extract_json_object,
    normalise_descriptor,
    parse_item_interests,
)

N_NO_OBJECT = 300
N_NEAR_VALID = 400
N_VALID_ORACLE = 150
N_HUGE = 12
MAX_SECONDS_PER_PARSE = 3.0  # a 200 kB output parses in well under a second here: beyond this is a hang

FUZZ = dict(derandomize=True, deadline=None, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

any_text = st.text(st.characters(codec=None, categories=None))  # every code point, surrogates included


def _timed(parse, text: object) -> object:
    """``parse(text)``: the value, or the ParseError it raised (any other exception fails the test); fast."""
    started = time.perf_counter()
    try:
        outcome = parse(text)
    except ParseError as error:
        assert str(error), "a ParseError must say why"
        outcome = error
    elapsed = time.perf_counter() - started
    assert elapsed < MAX_SECONDS_PER_PARSE, f"parsing took {elapsed:.1f} s on {len(str(text))} chars"
    return outcome


def _pairs(outcome: object) -> object:
    return [(d.descriptor, d.confidence) for d in outcome] if isinstance(outcome, list) else outcome


@settings(max_examples=N_NO_OBJECT, **FUZZ)
@given(any_text.map(lambda t: t.replace("{", "")), st.integers(1, 10))
def test_text_without_a_brace_is_the_exact_parse_error(text: str, max_descriptors: int) -> None:
    """No "{": provably no JSON object, whatever else (null bytes, lone surrogates, fences) is there."""
    for parse in (extract_json_object, lambda t: parse_item_interests(t, max_descriptors)):
        outcome = _timed(parse, text)
        assert isinstance(outcome, ParseError) and str(outcome) == "no JSON object found in the output"


@pytest.mark.parametrize("text, expected", [
    ("", "no JSON object found in the output"),
    ("\x00{\x00}\x00", "no valid JSON object in the output"),
    # a raw lone surrogate inside a descriptor: not storable text, so not a descriptor
    ('\ud800{"descriptors": [{"descriptor": "\udfff", "confidence": 0.5}]}', "unable to parse raw data as a unicode"),
    ('{"descriptors": [{"descriptor": "\\ud800", "confidence": 0.5}]}', "unable to parse raw data as a unicode"),
    # integers over Python's 4300-digit limit raise ValueError inside the decoder: that candidate is skipped
    ('{"descriptors": [{"descriptor": "x", "confidence": ' + "1" * 5000 + "}]}", "no valid JSON object"),
    ('{"descriptors": [{"descriptor": "x", "confidence": 0.5}]} {"a": ' + "9" * 4301 + "}", [("x", 0.5)]),
    ('{"a": ' + "9" * 4301 + '} {"descriptors": [{"descriptor": "ok", "confidence": 1}]}', [("ok", 1.0)]),
    ('{"descriptors": [{"descriptor": "x", "confidence": NaN}]}', "confidence"),
    ('{"descriptors": [{"descriptor": "x", "confidence": Infinity}]}', "confidence"),
    ('{"descriptors": [{"descriptor": "x", "confidence": -1e-999}]}', [("x", -0.0)]),  # underflows to -0.0
    ('{"descriptors": [{"descriptor": "x", "confidence": 1e999}]}', "confidence"),
    ("{}" + '{"descriptors": [{"descriptor": "x", "confidence": 0.5}]}', "descriptors: Field required"),
    ('```json\n{"descriptors": [{"descriptor": "fenced", "confidence": 0.5}]}```{"descriptors": []}',
     [("fenced", 0.5)]),
    ('"descriptors": [{"descriptor": "x", "confidence": 0.5}]', "invalid interests record"),  # no outer object
])
def test_json_soup_cases_have_their_exact_outcome(text: str, expected: object) -> None:
    outcome = _pairs(_timed(lambda t: parse_item_interests(t, 3), text))
    if isinstance(expected, str):
        assert isinstance(outcome, ParseError) and expected in str(outcome), outcome
    else:
        assert outcome == expected


def test_an_object_after_an_overlong_integer_is_still_found() -> None:
    """Python refuses to convert integers over 4300 digits (ValueError, not JSONDecodeError): skip, go on."""
    text = '{"a": ' + "9" * 4301 + '} then {"descriptors": [{"descriptor": "Fix a bike", "confidence": 0.7}]}'
    assert [d.descriptor for d in parse_item_interests(text, 3)] == ["Fix a bike"]


# descriptor text without backticks (a fence closing inside a JSON string is a different input) and without the
# four separators (\x1c-\x1f) where Python's str.strip() and pydantic's whitespace stripping disagree
descriptor_text = st.text(st.characters(codec=None, categories=None, exclude_characters="`\x1c\x1d\x1e\x1f"),
                          max_size=199)
confidence_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30), st.booleans(), st.none(),
    st.lists(st.floats(0, 1), max_size=2), st.sampled_from([0, 1, 0.0, 1.0, 0.5, -0.0, 1e-300]),
)
descriptor_values = st.one_of(descriptor_text, st.integers(), st.none(), st.just(""), st.just("   "),
                              st.just("x" * 121), st.just(" " + "x" * 120 + " "), st.just("the a an"),
                              st.just("!!!"), st.just("fix a bike"), st.just("Fix a bike!"))
near_entry = st.fixed_dictionaries(
    {"descriptor": descriptor_values, "confidence": confidence_values},
    optional={"extra": st.integers(), "reason": st.text(max_size=5)},
)
storable_text = st.text(st.characters(codec="utf-8", exclude_characters="`\x1c\x1d\x1e\x1f"), min_size=1,
                        max_size=60)
good_entry = st.fixed_dictionaries({
    "descriptor": st.one_of(storable_text, st.sampled_from(["fix a bike", "Fix a bike!", " " + "x" * 120 + " "])),
    "confidence": st.one_of(st.floats(0, 1), st.sampled_from([0, 1, -0.0, 1e-300])),
})
entry = st.one_of(good_entry, near_entry)
record = st.one_of(
    st.fixed_dictionaries({"descriptors": st.lists(good_entry, min_size=1, max_size=6)}),  # valid but for strip
    st.fixed_dictionaries({"descriptors": st.lists(entry, max_size=6)}),
    st.fixed_dictionaries({"descriptors": st.one_of(st.none(), st.text(max_size=5), entry)}),
    st.dictionaries(st.text(max_size=12), st.lists(entry, max_size=2), max_size=3),
)


def _expected_interests(data: object, max_descriptors: int) -> list[tuple[str, float]] | None:
    """What the answer format (mining.prompts.item_interests_schema, without clamping) makes of a decoded
    record, written out independently of the parser: the first ``max_descriptors`` unique descriptors, or
    None where the record is invalid and a ParseError is due."""
    if not isinstance(data, dict) or set(data) != {"descriptors"}:
        return None
    entries = data["descriptors"]
    if not isinstance(entries, list) or not entries:
        return None
    cleaned = []
    for e in entries:
        if not isinstance(e, dict) or set(e) != {"descriptor", "confidence"}:
            return None
        text, c = e["descriptor"], e["confidence"]
        if not isinstance(text, str) or isinstance(c, bool) or not isinstance(c, int | float):
            return None
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return None
        text = text.strip()
        if not 1 <= len(text) <= 120 or not math.isfinite(c) or not 0 <= c <= 1:
            return None
        cleaned.append((text, float(c)))
    out, seen = [], set()
    for text, c in cleaned:
        key = normalise_descriptor(text)
        if not key:
            return None
        if key not in seen:
            seen.add(key)
            out.append((text, c))
    return out[:max_descriptors]


def _wrap(payload: str, style: str) -> str:
    return {"bare": payload, "prose": f"Sure! Here is the JSON:\n{payload}\nHope this helps.",
            "fence": f"```json\n{payload}\n```", "fence_upper": f"Answer:\n```JSON\n{payload}```\nDone",
            "twice": f"{payload}\n{payload}"}[style]


@settings(max_examples=N_NEAR_VALID, **FUZZ)
@given(record, st.sampled_from(["bare", "prose", "fence", "fence_upper", "twice"]),
       st.one_of(st.none(), st.floats(0, 1)), st.integers(1, 8), st.booleans())
def test_near_valid_records_give_exactly_what_the_schema_predicts(data: dict, style: str, cut: float | None,
                                                                 max_descriptors: int, ascii_only: bool) -> None:
    """Wrong types, out-of-range or non-finite confidences, extra keys, empty or over-long descriptors,
    duplicates after normalisation: the parse equals the independent schema check's answer, or is a ParseError
    where that check finds the record invalid. A truncated record (a generation stopped by max_tokens) is
    always a ParseError: no complete record is left in the text."""
    payload = json.dumps(data, ensure_ascii=ascii_only)  # escaped and raw unicode
    truncated = cut is not None and int(cut * len(payload)) < len(payload)
    if truncated:
        payload = payload[: int(cut * len(payload))]
    outcome = _pairs(_timed(lambda t: parse_item_interests(t, max_descriptors), _wrap(payload, style)))
    expected = None if truncated else _expected_interests(data, max_descriptors)
    if expected is None:
        assert isinstance(outcome, ParseError), f"expected a ParseError, got {outcome!r}"
    else:
        assert outcome == expected


valid_entry = st.fixed_dictionaries({
    "descriptor": st.text(st.characters(codec="utf-8", categories=["L", "N", "Zs", "P"]), min_size=1, max_size=60)
    .filter(lambda s: normalise_descriptor(s.strip()) != ""),
    "confidence": st.floats(0, 1),
})


@settings(max_examples=N_VALID_ORACLE, **FUZZ)
@given(st.lists(valid_entry, min_size=1, max_size=8), st.sampled_from(["bare", "prose", "fence", "fence_upper"]),
       st.integers(1, 8), st.text(st.characters(exclude_characters="{`"), max_size=40),
       any_text.map(lambda t: t.replace("`", "")))
def test_a_valid_record_in_any_wrapper_is_parsed_exactly(entries: list[dict], style: str, max_descriptors: int,
                                                         noise: str, trailer: str) -> None:
    """Completeness: hostile-input hardening must not reject good answers (first k unique, in order), whatever
    follows them (braces, null bytes, lone surrogates: only a second fence could come first, so no backticks)."""
    text = noise + _wrap(json.dumps({"descriptors": entries}), style) + trailer
    parsed = parse_item_interests(text, max_descriptors)
    expected, seen = [], set()
    for e in entries:
        key = normalise_descriptor(e["descriptor"].strip())
        if key not in seen:
            seen.add(key)
            expected.append((e["descriptor"].strip(), e["confidence"]))
    assert [(d.descriptor, d.confidence) for d in parsed] == expected[:max_descriptors]


GOOD = '{"descriptors": [{"descriptor": "home espresso ritual", "confidence": 0.8}]}'
# repeated, these hold no object opening ("{" then a key or "}"): an answer after them is found
INERT_PATTERNS = ["{", "[", "\x00", "é{", "```json\n{"]
# each repetition opens an object that never decodes: past MAX_DECODE_ATTEMPTS of them the parser stops
# looking (the bound that keeps brace floods linear), so even an answer after them is not reached
FLOOD_PATTERNS = ['{"a":', '{"a":[', '{"a":"', '{"descriptors": [', '{"a": 1, ']


@settings(max_examples=N_HUGE, **FUZZ)
@given(st.sampled_from(INERT_PATTERNS + FLOOD_PATTERNS),
       st.sampled_from([10_000, 150_000, MAX_OUTPUT_CHARS - len(GOOD), MAX_OUTPUT_CHARS + 1, 5_000_000]),
       st.booleans())
def test_huge_and_deeply_nested_output_is_fast_and_exact(pattern: str, size: int, good_after: bool) -> None:
    text = (pattern * (size // len(pattern) + 1))[:size] + (GOOD if good_after else "")
    assert size // len(pattern) > MAX_DECODE_ATTEMPTS  # every flood here is longer than the bound
    outcome = _pairs(_timed(lambda t: parse_item_interests(t, 3), text))
    if len(text) > MAX_OUTPUT_CHARS:
        expected: object = f"output is {len(text)} characters, over the {MAX_OUTPUT_CHARS} accepted"
    elif pattern in FLOOD_PATTERNS:
        expected = "no valid JSON object in the output"
    elif good_after:
        expected = [("home espresso ritual", 0.8)]
    else:
        expected = "no JSON object found in the output" if "{" not in text else "no valid JSON object in the output"
    if isinstance(expected, str):
        assert isinstance(outcome, ParseError) and str(outcome) == expected
    else:
        assert outcome == expected


def test_runaway_output_is_refused_with_its_length() -> None:
    text = GOOD + " " * MAX_OUTPUT_CHARS
    with pytest.raises(ParseError, match=f"{len(text)} characters"):
        parse_item_interests(text, 3)
    assert [d.descriptor for d in parse_item_interests(GOOD + " " * 1000, 3)] == ["home espresso ritual"]
    assert _timed(clean_phrase, "fixing bikes\n" + "x" * 2 * MAX_OUTPUT_CHARS) == "fixing bikes"


@pytest.mark.parametrize("value", [None, b'{"descriptors": []}', 42, ["{"], {"descriptors": []}])
def test_non_text_output_is_a_parse_error(value: object) -> None:
    for parse in (extract_json_object, clean_phrase, lambda v: parse_item_interests(v, 3)):
        with pytest.raises(ParseError, match="expected text"):
            parse(value)
