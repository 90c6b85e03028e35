"""Contracts on interest_rewards, item_quality and user_interests: each rule fails on a crafted frame."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mining.parsing import normalise_descriptor
from mining.quality import check_interest_rewards, check_item_quality, check_user_interests


@pytest.fixture()
def rewards() -> pd.DataFrame:
    return pd.DataFrame({
        "item_id": ["a", "a", "b"],
        "rank": [1, 2, 1],
        "descriptor": ["sealing a basement wall", "a great gift", "pulling espresso shots"],
        "confidence": [0.9, 0.3, 0.7],
        "label": [1, 0, 1],
        "judge": ["embedding"] * 3,
        "score": [0.5, 0.1, 0.4],
    })


@pytest.fixture()
def quality() -> pd.DataFrame:
    return pd.DataFrame({"item_id": ["a", "b"], "q": [0.75, 0.0], "n_descriptors": [2, 0], "n_curated": [1, 0]})


@pytest.fixture()
def user_interests() -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": ["u", "u", "v"],
        "rank": [0, 1, 1],
        "interest": ["home repair", "sealing a basement wall", "espresso"],
        "weight": [0.9, 1.0, 1.0],
        "source": ["llm_summary", "aggregate", "aggregate"],
        "n_history_items": [3, 3, 1],
    })


def test_contract_uses_the_merge_normalisation():
    assert normalise_descriptor("  Sealing a  BASEMENT-wall!! ") == normalise_descriptor("sealing basement wall")
    assert normalise_descriptor("...") == ""


def test_good_frames_pass(rewards, quality, user_interests):
    assert check_interest_rewards(rewards, item_ids=["a", "b"], min_coverage=1.0) == []
    assert check_item_quality(quality) == []
    assert check_user_interests(user_interests) == []


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("descriptor", "  !! ", "descriptor: 1 empty"),
        ("descriptor", "Sealing the basement-wall.", "descriptor: 1 duplicate"),
        ("confidence", 1.5, "confidence: 1 value(s) outside [0, 1]"),
        ("confidence", -0.1, "confidence: 1 value(s) outside [0, 1]"),
        ("confidence", np.nan, "confidence: 1 value(s) outside [0, 1] or missing"),
        ("label", 2, "label: 1 value(s) not in {0, 1}"),
        ("rank", 1, "rank: duplicate rank"),
    ],
)
def test_each_reward_rule_fails_with_a_named_problem(rewards, column, value, expected):
    bad = rewards.copy()
    bad[column] = bad[column].astype(object)
    bad.loc[1, column] = value
    problems = check_interest_rewards(bad)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected)


def test_reward_coverage_rule(rewards):
    problems = check_interest_rewards(rewards, item_ids=["a", "b", "c", "d"], min_coverage=0.9)
    assert problems == ["coverage: 0.500 of items have at least one descriptor, below the minimum 0.900"]
    assert check_interest_rewards(rewards, item_ids=["a", "b", "c", "d"], min_coverage=0.5) == []


def test_reward_check_includes_quality_rules(rewards, quality):
    bad = quality.assign(q=[0.5, 1.5])
    assert check_interest_rewards(rewards, quality=bad) == ["q: 1 value(s) outside [0, 1] or missing"]
    assert check_interest_rewards(rewards, quality=quality) == []


def test_missing_columns_are_named(rewards, quality, user_interests):
    assert check_interest_rewards(rewards.drop(columns=["label"])) == [
        "interest_rewards: missing column(s) ['label']"]
    assert check_item_quality(quality.drop(columns=["q"])) == ["item_quality: missing column(s) ['q']"]
    assert "user_interests: missing column(s) ['weight']" in check_user_interests(
        user_interests.drop(columns=["weight"]))


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("q", 1.2, "q: 1 value(s) outside [0, 1]"),
        ("q", np.nan, "q: 1 value(s) outside [0, 1] or missing"),
        ("item_id", "a", "item_id: duplicate"),
        ("n_curated", 5, "n_curated: must satisfy"),
    ],
)
def test_each_quality_rule_fails_with_a_named_problem(quality, column, value, expected):
    bad = quality.copy()
    bad[column] = bad[column].astype(object)
    bad.loc[1, column] = value
    problems = check_item_quality(bad)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected)


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("interest", "", "interest: 1 empty"),
        ("interest", "Home repair!", "interest: duplicate"),
        ("weight", -1.0, "weight: values must be finite"),
        ("weight", np.inf, "weight: values must be finite"),
        ("source", "guess", "source: values must be one of"),
        ("rank", 0, "rank: duplicate rank"),
        ("n_history_items", 0, "n_history_items: must be >= 1"),
    ],
)
def test_each_user_interest_rule_fails_with_a_named_problem(user_interests, column, value, expected):
    bad = user_interests.copy()
    bad[column] = bad[column].astype(object)
    bad.loc[1, column] = value
    problems = check_user_interests(bad)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected)


def test_check_item_interests_rules():
    from mining.quality import check_item_interests

    good = pd.DataFrame({"item_id": ["a", "a", "b"], "rank": [0, 1, 0],
                         "descriptor": ["fixing a leak", "sealing a basement", "first aquarium"],
                         "confidence": [0.9, 0.5, 0.7]})
    assert check_item_interests(good, item_ids=["a", "b"], min_coverage=1.0) == []
    dup = good.assign(descriptor=["Fixing a leak!", "fixing a leak", "first aquarium"])
    assert any("duplicate descriptor" in p for p in check_item_interests(dup))
    bad_conf = good.assign(confidence=[0.9, 1.5, 0.7])
    assert any(p.startswith("confidence") for p in check_item_interests(bad_conf))
    low = check_item_interests(good, item_ids=["a", "b", "c", "d"], min_coverage=0.8)
    assert any("coverage: 0.500" in p for p in low)
    assert "missing column" in check_item_interests(good.drop(columns=["confidence"]))[0]


def test_coverage_needs_the_stage_threshold_no_hidden_default():
    """The coverage thresholds are stage settings (ItemMiningSettings / JudgeSettings.min_coverage): the checks
    have no default of their own to drift from them."""
    from mining.quality import check_item_interests

    good = pd.DataFrame({"item_id": ["a"], "rank": [0], "descriptor": ["fixing a leak"], "confidence": [0.9]})
    with pytest.raises(ValueError, match="min_coverage is required"):
        check_item_interests(good, item_ids=["a", "b"])
    with pytest.raises(ValueError, match="min_coverage is required"):
        check_interest_rewards(good.assign(label=1, judge="t", score=0.5), item_ids=["a"])
    assert check_item_interests(good) == []  # without a catalogue there is no coverage rule
