"""Parsing of model output: JSON extraction, validation, phrase cleaning; arbitrary input gives only ParseError."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mining.parsing import (
    ParseError,
    clean_phrase,
    extract_json_object,
    normalise_descriptor,
    parse_item_interests,
)

GOOD = {"descriptors": [{"descriptor": "repairing a furnace", "confidence": 0.8},
                        {"descriptor": "cleaning a chimney", "confidence": 0.4}]}


@pytest.mark.parametrize("wrapper", [
    "OBJ",
    "Sure! Here is the JSON:\n```json\nOBJ\n```\nHope it helps.",
    "```\nOBJ\n```",
    "prefix text {not json} then OBJ",
    "[1, 2] and then OBJ trailing",
])
def test_extract_json_object_finds_the_object_in_prose_and_fences(wrapper: str) -> None:
    assert extract_json_object(wrapper.replace("OBJ", json.dumps(GOOD))) == GOOD


@pytest.mark.parametrize("text", ["", "no braces here", "{broken", "[1, 2, 3]", '"just a string"', "{" * 5000])
def test_extract_json_object_raises_parse_error(text: str) -> None:
    with pytest.raises(ParseError):
        extract_json_object(text)


def test_parse_item_interests_keeps_order_dedups_and_truncates() -> None:
    record = {"descriptors": [{"descriptor": "The Furnace Repair", "confidence": 0.9},
                              {"descriptor": "furnace repair!", "confidence": 0.5},
                              {"descriptor": "home heating", "confidence": 0.7},
                              {"descriptor": "chimney cleaning", "confidence": 0.6}]}
    parsed = parse_item_interests(json.dumps(record), max_descriptors=2)
    assert [(d.descriptor, d.confidence) for d in parsed] == [("The Furnace Repair", 0.9), ("home heating", 0.7)]


@pytest.mark.parametrize("record, fragment", [
    ({"descriptors": [{"descriptor": "x", "confidence": 1.5}]}, "confidence"),
    ({"descriptors": [{"descriptor": "x", "confidence": -0.1}]}, "confidence"),
    ({"descriptors": [{"descriptor": "x", "confidence": True}]}, "boolean"),
    ({"descriptors": [{"descriptor": "", "confidence": 0.5}]}, "descriptor"),
    ({"descriptors": [{"descriptor": "x"}]}, "confidence"),
    ({"descriptors": []}, "descriptors"),
    ({"hacked": True}, "descriptors"),
    ({"descriptors": [{"descriptor": "x", "confidence": 0.5, "age": "30s"}]}, "age"),
    ({"descriptors": [{"descriptor": "!!!", "confidence": 0.5}]}, "normalisation"),
])
def test_parse_item_interests_rejects_invalid_records_without_clamping(record: dict, fragment: str) -> None:
    with pytest.raises(ParseError, match=fragment):
        parse_item_interests(json.dumps(record), max_descriptors=3)


def test_nan_confidence_is_rejected() -> None:
    with pytest.raises(ParseError, match="confidence"):
        parse_item_interests('{"descriptors": [{"descriptor": "x", "confidence": NaN}]}', 3)


@pytest.mark.parametrize("raw, expected", [
    ("repairing a furnace and chimney\nmore text", "repairing a furnace and chimney"),
    ('  "Cleaning a commercial kitchen."  ', "Cleaning a commercial kitchen"),
    ("1. building a river table", "building a river table"),
    ("- home brewing beer", "home brewing beer"),
])
def test_clean_phrase(raw: str, expected: str) -> None:
    assert clean_phrase(raw) == expected


@pytest.mark.parametrize("raw", ["", "   \n  ", "...", '{"hacked": true}', " ".join(["word"] * 30)])
def test_clean_phrase_rejects_non_phrases(raw: str) -> None:
    with pytest.raises(ParseError):
        clean_phrase(raw)


def test_normalise_descriptor() -> None:
    assert normalise_descriptor("  The Furnace-Repair, for AN old house! ") == "furnace repair for old house"
    assert normalise_descriptor("a the an") == ""


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_arbitrary_text_gives_only_parse_errors(text: str) -> None:
    for parse in (extract_json_object, clean_phrase, lambda t: parse_item_interests(t, 3)):
        try:
            parse(text)
        except ParseError:
            pass  # the only allowed failure type; anything else fails the test


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values, st.text(max_size=30), st.text(max_size=30))
def test_arbitrary_json_in_prose_gives_records_or_parse_errors(value: object, before: str, after: str) -> None:
    text = before + json.dumps(value) + after
    try:
        parsed = parse_item_interests(text, 3)
    except ParseError:
        return
    assert 1 <= len(parsed) <= 3
    assert all(0.0 <= d.confidence <= 1.0 and d.descriptor for d in parsed)
