"""User interests: built from the training prefix only (leakage tests), aggregation, LLM summary."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from mining.backends import Completion  # noqa: E402
from mining.quality import check_user_interests  # noqa: E402
from mining.user_interests import (  # noqa: E402
    UserInterestError,
    UserInterestSettings,
    summarise_user_interests,
    train_prefix,
)
from tests.helpers import minilm_embedder  # noqa: E402


class FirstInterestBackend:
    """Test double for an LLM: answers "<first listed interest> and more", records every request."""

    name = "rule"
    model = "first-interest"

    def __init__(self) -> None:
        self.requests: list = []
        self.batches: list[int] = []

    def complete_batch(self, requests):
        self.requests.extend(requests)
        self.batches.append(len(requests))
        out = []
        for r in requests:
            listed = r.messages[-1]["content"].split(":", 1)[1].split("\n")[0]
            first = listed.split(";")[0].strip()
            out.append(Completion(text=f"{first} and more\nignored second line", mean_logprob=-0.5,
                                  prompt_tokens=20, completion_tokens=5))
        return out


def _leaky_world(n_users: int = 4) -> tuple[pd.DataFrame, pd.DataFrame, set[str], set[str]]:
    """Splits where every valid/test item (and one misplaced train row after valid) carries a descriptor
    found on no train item. Returns splits, item interests, the leak strings and the leak items."""
    train_items = [f"t{k}" for k in range(6)]
    interest_rows = []
    for k, item in enumerate(train_items):
        interest_rows.append((item, 1, f"train interest {k % 3}", 0.9))
        interest_rows.append((item, 2, f"secondary train interest {k}", 0.4))
    split_rows, leak_strings, leak_items = [], set(), set()
    for u in range(n_users):
        user = f"u{u}"
        history = [train_items[(u + j) % len(train_items)] for j in range(3 + u % 2)]
        pos = 0
        for item in history:
            split_rows.append((user, item, 1000 + pos, 5.0, pos, "train"))
            pos += 1
        for split in ("valid", "test"):
            item = f"{split}-{user}"
            text = f"LEAK {split} descriptor {user}"
            interest_rows.append((item, 1, text, 1.0))
            leak_strings.add(text)
            leak_items.add(item)
            split_rows.append((user, item, 1000 + pos, 4.0, pos, split))
            pos += 1
        # a malformed row: labelled train but placed after the user's valid position
        late = f"late-{user}"
        interest_rows.append((late, 1, f"LEAK late train {user}", 1.0))
        leak_strings.add(f"LEAK late train {user}")
        leak_items.add(late)
        split_rows.append((user, late, 1000 + pos, 3.0, pos, "train"))
    splits = pd.DataFrame(split_rows, columns=["user_id", "item_id", "timestamp", "rating", "position", "split"])
    interests = pd.DataFrame(interest_rows, columns=["item_id", "rank", "descriptor", "confidence"])
    return splits, interests, leak_strings, leak_items


def _assert_no_leak(frame: pd.DataFrame, leak_strings: set[str]) -> None:
    text = " | ".join(frame["interest"].astype(str))
    for leak in leak_strings:
        assert leak.lower() not in text.lower()
    assert "leak" not in text.lower()


def test_valid_and_test_items_never_reach_user_interests():
    splits, interests, leak_strings, leak_items = _leaky_world()
    backend = FirstInterestBackend()
    out = summarise_user_interests(splits, interests, UserInterestSettings(top_k=10), backend=backend)
    assert len(out) > 0 and set(out["user_id"]) == set(splits["user_id"])
    _assert_no_leak(out, leak_strings)
    # the LLM never saw them either
    prompts = " ".join(m["content"] for r in backend.requests for m in r.messages)
    assert "LEAK" not in prompts
    # history counts only the train prefix
    prefix = train_prefix(splits)
    assert not set(prefix["item_id"]) & leak_items
    expected_n = splits[splits["item_id"].str.match(r"t\d+$")].groupby("user_id").size()
    got_n = out.groupby("user_id")["n_history_items"].first()
    assert got_n.sort_index().tolist() == expected_n.sort_index().tolist()


def test_leak_strings_would_be_visible_without_the_guard():
    """Sanity check of the leakage test itself: relabel the held-out rows as train and they show up."""
    splits, interests, leak_strings, _ = _leaky_world()
    everything_train = splits.assign(split="train")
    out = summarise_user_interests(everything_train, interests, UserInterestSettings(top_k=20))
    text = " | ".join(out["interest"])
    assert any(leak in text for leak in leak_strings)


_ITEM_POOL = [f"i{k}" for k in range(8)]
_POOL_INTERESTS = pd.DataFrame(
    [(item, r, f"interest {(k * 3 + r) % 7}", round(0.2 + 0.1 * ((k + r) % 8), 2))
     for k, item in enumerate(_ITEM_POOL) for r in (1, 2)],
    columns=["item_id", "rank", "descriptor", "confidence"],
)


@st.composite
def _world(draw) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random splits (train prefix + valid + test per user) and a perturbed copy that differs only
    in the valid/test rows (other items, times, ratings, or the rows dropped)."""
    rows, perturbed = [], []
    for u in range(draw(st.integers(1, 4))):
        user = f"u{u}"
        history = draw(st.lists(st.sampled_from(_ITEM_POOL), min_size=1, max_size=6, unique=True))
        for pos, item in enumerate(history):
            row = (user, item, 100 + pos, 5.0, pos, "train")
            rows.append(row)
            perturbed.append(row)
        for offset, split in enumerate(("valid", "test")):
            pos = len(history) + offset
            rows.append((user, draw(st.sampled_from(_ITEM_POOL)), 100 + pos, 4.0, pos, split))
            if draw(st.booleans()):  # keep the row, but change everything but its split and place
                perturbed.append((user, draw(st.sampled_from(_ITEM_POOL)), draw(st.integers(0, 10**9)),
                                  draw(st.floats(1, 5)), pos, split))
    cols = ["user_id", "item_id", "timestamp", "rating", "position", "split"]
    return pd.DataFrame(rows, columns=cols), pd.DataFrame(perturbed, columns=cols)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world=_world())
def test_perturbing_valid_and_test_rows_never_changes_the_output(world):
    """Both the aggregate rows and the LLM summary rows (the test double echoes its prompt) are compared."""
    splits, perturbed = world
    a = summarise_user_interests(splits, _POOL_INTERESTS, UserInterestSettings(top_k=3), backend=FirstInterestBackend())
    b = summarise_user_interests(perturbed, _POOL_INTERESTS, UserInterestSettings(top_k=3),
                                 backend=FirstInterestBackend())
    assert set(a["source"]) == {"aggregate", "llm_summary"}
    pd.testing.assert_frame_equal(a, b)


def test_aggregation_weights_confidence_and_recency():
    splits = pd.DataFrame({
        "user_id": ["u"] * 5, "item_id": ["old", "mid", "new", "v", "t"],
        "position": [0, 1, 2, 3, 4], "split": ["train", "train", "train", "valid", "test"],
    })
    interests = pd.DataFrame({
        "item_id": ["old", "mid", "new", "new"],
        "descriptor": ["Fixing a Furnace!", "fixing a furnace", "baking bread", "brewing coffee"],
        "confidence": [0.8, 0.4, 0.5, 0.1],
    })
    half_life = 2.0
    out = summarise_user_interests(splits, interests, UserInterestSettings(recency_half_life=half_life, top_k=5))
    weights = {"furnace": 0.8 * 0.5 ** (2 / half_life) + 0.4 * 0.5 ** (1 / half_life),
               "bread": 0.5, "coffee": 0.1}
    total = sum(weights.values())
    assert out["interest"].tolist() == ["Fixing a Furnace!", "baking bread", "brewing coffee"]
    assert out["weight"].tolist() == pytest.approx([weights[k] / total for k in ("furnace", "bread", "coffee")])
    assert out["rank"].tolist() == [1, 2, 3]
    assert (out["source"] == "aggregate").all() and (out["n_history_items"] == 3).all()
    assert check_user_interests(out) == []
    # top_k truncates, weights stay shares of the whole
    top1 = summarise_user_interests(splits, interests, UserInterestSettings(recency_half_life=half_life, top_k=1))
    assert top1["interest"].tolist() == ["Fixing a Furnace!"]
    assert top1["weight"].iloc[0] == pytest.approx(weights["furnace"] / total)


def test_curated_only_uses_label_when_present():
    splits = pd.DataFrame({"user_id": ["u"] * 3, "item_id": ["a", "v", "t"], "position": [0, 1, 2],
                           "split": ["train", "valid", "test"]})
    rewards = pd.DataFrame({"item_id": ["a", "a"], "descriptor": ["curing concrete", "a great gift"],
                            "confidence": [0.5, 0.9], "label": [1, 0]})
    assert summarise_user_interests(splits, rewards)["interest"].tolist() == ["curing concrete"]
    both = summarise_user_interests(splits, rewards, curated_only=False)["interest"].tolist()
    assert both == ["a great gift", "curing concrete"]


def test_llm_summary_row_and_batching():
    splits, interests, _, _ = _leaky_world(n_users=5)
    backend = FirstInterestBackend()
    out = summarise_user_interests(splits, interests, UserInterestSettings(top_k=2), backend=backend, batch_size=2)
    summary = out[out["source"] == "llm_summary"]
    assert len(summary) == 5 and (summary["rank"] == 0).all()
    # users with the same top interests ask the same question: it is asked once (the call cache)
    top_lists = {tuple(g.sort_values("rank")["interest"]) for _u, g in out[out["rank"] > 0].groupby("user_id")}
    assert len(backend.requests) == len(top_lists) < 5
    assert max(backend.batches) <= 2
    assert summary["weight"].to_numpy() == pytest.approx(np.exp(-0.5))
    for _user, g in out.groupby("user_id"):
        first = g[g["rank"] == 1]["interest"].iloc[0]
        assert g[g["rank"] == 0]["interest"].iloc[0] == f"{first} and more"  # first line only
    for r in backend.requests:
        assert r.stop == ("\n",) and r.temperature == 0.0
    assert check_user_interests(out) == []


def test_user_interests_is_deterministic():
    splits, interests, _, _ = _leaky_world()
    a = summarise_user_interests(splits.sample(frac=1.0, random_state=1), interests, backend=FirstInterestBackend())
    b = summarise_user_interests(splits, interests.sample(frac=1.0, random_state=2), backend=FirstInterestBackend())
    pd.testing.assert_frame_equal(a, b)


def test_bad_input_is_rejected_with_a_named_problem():
    splits, interests, _, _ = _leaky_world()
    with pytest.raises(UserInterestError, match="split"):
        summarise_user_interests(splits.drop(columns="split"), interests)
    with pytest.raises(UserInterestError, match="descriptor"):
        summarise_user_interests(splits, interests.drop(columns="descriptor"))
    with pytest.raises(UserInterestError, match="UserInterestSettings.top_k"):
        UserInterestSettings(top_k=0)
    with pytest.raises(UserInterestError, match="UserInterestSettings.recency_half_life"):
        UserInterestSettings(recency_half_life=0)
    with pytest.raises(UserInterestError, match="UserInterestSettings.recent_items"):
        UserInterestSettings(recent_items=0)
    with pytest.raises(UserInterestError, match="recent_items"):
        train_prefix(splits, recent_items=0)
    with pytest.raises(UserInterestError, match="batch_size"):
        summarise_user_interests(splits, interests, batch_size=0)


def test_recent_items_keeps_the_latest_items():
    splits = pd.DataFrame({"user_id": ["u"] * 5, "item_id": ["a", "b", "c", "v", "t"],
                           "position": [0, 1, 2, 3, 4], "split": ["train"] * 3 + ["valid", "test"]})
    assert train_prefix(splits, recent_items=2)["item_id"].tolist() == ["b", "c"]
    interests = pd.DataFrame({"item_id": ["a", "b", "c"], "descriptor": ["aa", "bb", "cc"],
                              "confidence": [0.5, 0.5, 0.5]})
    out = summarise_user_interests(splits, interests, UserInterestSettings(recent_items=2))
    assert sorted(out["interest"]) == ["bb", "cc"] and (out["n_history_items"] == 2).all()


@pytest.fixture(scope="module")
def embed():
    embed, restore = minilm_embedder()
    yield embed
    restore()


def test_embedding_merge_joins_near_duplicates(embed):
    splits = pd.DataFrame({"user_id": ["u"] * 4, "item_id": ["a", "b", "v", "t"], "position": [0, 1, 2, 3],
                           "split": ["train", "train", "valid", "test"]})
    interests = pd.DataFrame({
        "item_id": ["a", "b", "b"],
        "descriptor": ["sealing a damp basement wall", "sealing damp basement walls", "tuning a guitar"],
        "confidence": [0.6, 0.5, 0.5],
    })
    plain = summarise_user_interests(splits, interests, UserInterestSettings(recency_half_life=1e9))
    merged = summarise_user_interests(splits, interests, UserInterestSettings(recency_half_life=1e9), embed=embed)
    assert len(plain) == 3
    assert merged["interest"].tolist() == ["sealing a damp basement wall", "tuning a guitar"]
    assert merged["weight"].tolist() == pytest.approx([1.1 / 1.6, 0.5 / 1.6])
    assert check_user_interests(merged) == []
