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


@pytest.mark.parametrize("raw", ["", "   \n  ", "...", '{"hacked": true}', " ".join(["word"] * 30),
                                 "\ud800 fixing bikes"])  # a lone surrogate (a JSON escape) is not storable text
def test_clean_phrase_rejects_non_phrases(raw: str) -> None:
    with pytest.raises(ParseError):
        clean_phrase(raw)


def test_normalise_descriptor() -> None:
    assert normalise_descriptor("  The Furnace-Repair, for AN old house! ") == "furnace repair for old house"
    assert normalise_descriptor("a the an") == ""


# ---- properties with an oracle: the input is built from a known answer, so the expected parse is known


def _first_object(value: object) -> dict | None:
    """The first JSON object of ``value`` in document order (pre-order), computed from the value itself."""
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        for child in value:
            found = _first_object(child)
            if found is not None:
                return found
    return None


# no lone surrogates: the record model refuses them with another message (their handling is tested in
# test_item_mining's surrogate regression test); every other character is fair game
no_braces = st.characters(exclude_characters="{}`", exclude_categories=["Cs"])
json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(no_braces, max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(no_braces, max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(json_values, st.text(no_braces, max_size=30), st.text(no_braces, max_size=30))
def test_json_in_prose_gives_its_first_object_or_the_exact_parse_error(value: object, before: str, after: str) -> None:
    """Prose without braces around any JSON value: the first object of the value is extracted exactly; with no
    object at all, the exact "no JSON object" error. No generated key can be "descriptors" (keys are at most
    10 characters), so the interests parse is the exact "field required" error whenever there is an object."""
    text = before + json.dumps(value) + after
    expected = _first_object(value)
    if expected is None:
        for parse in (extract_json_object, lambda t: parse_item_interests(t, 3)):
            with pytest.raises(ParseError, match="^no JSON object found in the output$"):
                parse(text)
        return
    assert extract_json_object(text) == expected
    with pytest.raises(ParseError, match=r"^invalid interests record: .*descriptors: Field required"):
        parse_item_interests(text, 3)


letters = st.characters(categories=["Lu", "Ll"], max_codepoint=0x17F)
words = st.lists(st.text(letters, min_size=1, max_size=6), min_size=1, max_size=16).filter(
    lambda ws: normalise_descriptor(" ".join(ws)) != "")


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(words, st.sampled_from(["", "- ", "* ", "• ", "1. ", "2) "]),
       st.sampled_from([("", ""), ('"', '"'), ("'", "'"), ("“", "”"), ("`", "`")]),
       st.sampled_from(["", ".", ";", "!", "..."]), st.text(" \t\n", max_size=3), st.text(max_size=40))
def test_a_phrase_in_any_list_or_quote_dressing_is_cleaned_exactly(phrase_words: list[str], marker: str,
                                                                    quotes: tuple[str, str], stop: str,
                                                                    space: str, rest: str) -> None:
    """The phrase a small model meant, under the dressing it adds (leading space, list marker, quotes, a final
    full stop, further lines of anything), comes back exactly."""
    phrase = " ".join(phrase_words)
    text = f"{space}{marker}{quotes[0]}{phrase}{stop}{quotes[1]}{space}\n{rest}"
    assert clean_phrase(text) == phrase
