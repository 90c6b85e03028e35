"""SidVocab (token layout, round trips, errors) and SidTrie (tensor trie agrees with the SID set)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import random_codes_with_suffix  # noqa: E402
from training.sid_trie import SidTrie
from training.sid_vocab import EOS_ID, PAD_ID, SidVocab, SidVocabError


def sid_frame(codes: np.ndarray, suffix: list[int | None] | None = None) -> pd.DataFrame:
    frame = pd.DataFrame({"item_id": [f"item{i}" for i in range(len(codes))]})
    for level in range(codes.shape[1]):
        frame[f"c{level}"] = codes[:, level]
    if suffix is not None:
        frame["suffix"] = pd.array(suffix, dtype="Int64")
    return frame


def random_vocab(seed: int, levels: int, sizes: list[int], n_items: int) -> SidVocab:
    codes, suffix = random_codes_with_suffix(seed, levels, sizes[:levels], n_items)
    return SidVocab([f"it{i}" for i in range(n_items)], codes, suffix)


random_vocabs = st.builds(
    random_vocab,
    st.integers(0, 2**31 - 1),
    st.integers(1, 3),
    st.lists(st.integers(2, 16), min_size=3, max_size=3),
    st.integers(1, 40),
)


@pytest.fixture
def small_vocab() -> SidVocab:
    codes = np.array([[0, 1], [0, 1], [1, 0], [1, 2], [3, 2]])
    return SidVocab.from_frame(sid_frame(codes, [0, 1, None, None, None]))


def test_token_layout(small_vocab: SidVocab) -> None:
    v = small_vocab
    assert v.levels == 2 and v.level_sizes == [4, 3] and v.max_suffix == 1
    assert v.level_offsets == [8, 12] and v.suffix_offset == 15 and v.vocab_size == 17
    assert v.item_tokens("item0") == [8, 13, 15, EOS_ID]
    assert v.item_tokens("item1") == [8, 13, 16, EOS_ID]
    assert v.item_tokens("item4") == [11, 14, EOS_ID]
    matrix = v.items_tokens(["item4", "item1"])
    assert matrix.tolist() == [[11, 14, EOS_ID, PAD_ID], [8, 13, 16, EOS_ID]]
    assert v.max_len == 4


def test_round_trip_item_tokens_item(small_vocab: SidVocab) -> None:
    for item in small_vocab.item_ids:
        assert small_vocab.item_of_tokens(small_vocab.item_tokens(item)) == item
    # padded rows and tensors work too; anything after eos is ignored
    for item, row in zip(small_vocab.item_ids, small_vocab.sid_tokens, strict=True):
        assert small_vocab.item_of_tokens(torch.tensor(row)) == item


def test_invalid_tokens_give_none(small_vocab: SidVocab) -> None:
    v = small_vocab
    assert v.item_of_tokens([8, 13, 15]) is None  # no eos
    assert v.item_of_tokens([8, 13, EOS_ID]) is None  # colliding codes without their suffix
    assert v.item_of_tokens([10, 12, EOS_ID]) is None  # codes of no item
    assert v.item_of_tokens([EOS_ID]) is None
    assert v.item_of_tokens([]) is None


def test_dict_round_trip_through_json(small_vocab: SidVocab) -> None:
    offset = small_vocab.add_block("interest", 5)
    restored = SidVocab.from_dict(json.loads(json.dumps(small_vocab.to_dict())))
    assert restored.blocks == {"interest": (offset, 5)} and restored.vocab_size == small_vocab.vocab_size
    assert restored.item_ids == small_vocab.item_ids
    np.testing.assert_array_equal(restored.sid_tokens, small_vocab.sid_tokens)


def test_add_block_appends_after_suffix(small_vocab: SidVocab) -> None:
    first = small_vocab.add_block("interest", 10)
    second = small_vocab.add_block("sep", 1)
    assert (first, second, small_vocab.vocab_size) == (17, 27, 28)
    with pytest.raises(SidVocabError, match="already exists"):
        small_vocab.add_block("sep", 2)
    with pytest.raises(SidVocabError, match="size >= 1"):
        small_vocab.add_block("empty", 0)


def test_fixed_sizes_and_from_sids_match_from_frame() -> None:
    codes, suffix = random_codes_with_suffix(3, 3, [4, 4, 4], 30)
    frame = sid_frame(codes, [None if s < 0 else int(s) for s in suffix])
    from_frame = SidVocab.from_frame(frame, level_sizes=[256, 256, 256], suffix_size=8)
    sids = [tuple(c) if s < 0 else (*c, s) for c, s in zip(codes.tolist(), suffix.tolist(), strict=True)]
    from_sids = SidVocab.from_sids(frame["item_id"].tolist(), sids, levels=3, level_sizes=[256] * 3, suffix_size=8)
    assert from_frame.vocab_size == 8 + 3 * 256 + 8
    np.testing.assert_array_equal(from_frame.sid_tokens, from_sids.sid_tokens)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"id": ["a"], "c0": [1]}), "item_id"),
        (pd.DataFrame({"item_id": ["a"], "c1": [1]}), "c0"),
        (pd.DataFrame({"item_id": ["a"], "c0": [1], "c2": [1]}), "c0"),
        (pd.DataFrame({"item_id": ["a", "b"], "c0": [1, None]}), "missing level codes"),
        (pd.DataFrame({"item_id": ["a", "b"], "c0": [1, -2]}), ">= 0"),
        (pd.DataFrame({"item_id": ["a", "b"], "c0": [1.0, 1.5]}), "integers"),
        (pd.DataFrame({"item_id": ["a", "b"], "c0": ["x", "y"]}), "integers"),
        (pd.DataFrame({"item_id": ["a", "b"], "c0": [1, 1]}), "'a' and 'b' share the SID"),
        (pd.DataFrame({"item_id": ["a", "b"], "c0": [1, 1], "suffix": [0, 0]}), "share the SID"),
        (pd.DataFrame({"item_id": ["a", "a"], "c0": [1, 2]}), "duplicate item ids"),
        (pd.DataFrame({"item_id": [], "c0": []}), "no items"),
    ],
)
def test_bad_frames_raise_named_errors(frame: pd.DataFrame, message: str) -> None:
    with pytest.raises(SidVocabError, match=message):
        SidVocab.from_frame(frame)


def test_bad_sizes_and_lookups(small_vocab: SidVocab) -> None:
    frame = pd.DataFrame({"item_id": ["a"], "c0": [5]})
    with pytest.raises(SidVocabError, match="level 0 has code 5 >= level size 4"):
        SidVocab.from_frame(frame, level_sizes=[4])
    with pytest.raises(SidVocabError, match="n_special"):
        SidVocab.from_frame(frame, n_special=2)
    with pytest.raises(SidVocabError, match="length 3, expected 1 or 2"):
        SidVocab.from_sids(["a", "b"], [(1,), (1, 2, 3)])
    with pytest.raises(KeyError, match="unknown item id 'nope'"):
        small_vocab.item_tokens("nope")
    with pytest.raises(SidVocabError, match="lacks keys"):
        SidVocab.from_dict({"item_ids": []})


# ----------------------------------------------------------------------------------------------- trie


def test_trie_small(small_vocab: SidVocab) -> None:
    trie = SidTrie.from_vocab(small_vocab)
    assert (trie.n_items, trie.max_len, trie.root) == (5, 4, 0)
    assert trie.allowed_tokens([]) == [8, 9, 11]
    assert trie.allowed_tokens([8, 13]) == [15, 16]
    assert trie.allowed_tokens([9, 12]) == [EOS_ID]
    assert trie.allowed_tokens([9, 13]) == []
    assert trie.is_valid([8, 13, 16, EOS_ID]) and trie.is_valid([11, 14, EOS_ID, PAD_ID])
    assert not trie.is_valid([8, 13, EOS_ID]) and not trie.is_valid([8, 13, 16])
    assert not trie.is_valid([11, 14, EOS_ID, 8])
    dead = torch.tensor([-1])
    assert not trie.allowed_mask(dead).any() and trie.advance(dead, torch.tensor([8])).item() == -1


@settings(max_examples=25, deadline=None)
@given(vocab=random_vocabs, seed=st.integers(0, 2**31 - 1))
def test_trie_matches_the_set_of_sids(vocab: SidVocab, seed: int) -> None:
    """Every batched mask/advance agrees with a plain-Python set of all SID prefixes."""
    trie = SidTrie.from_vocab(vocab)
    sequences = [tuple(vocab.item_tokens(item)) for item in vocab.item_ids]
    assert trie.n_items == len(sequences) and all(trie.is_valid(s) for s in sequences)
    complete = set(sequences)
    children: dict[tuple[int, ...], set[int]] = {}
    for s in sequences:
        for d in range(len(s)):
            children.setdefault(s[:d], set()).add(s[d])

    def expected_next(prefix: tuple[int, ...]) -> set[int]:
        if EOS_ID in prefix:  # a finished SID may only be padded
            cut = prefix.index(EOS_ID) + 1
            ok = prefix[:cut] in complete and all(t == PAD_ID for t in prefix[cut:])
            return {PAD_ID} if ok else set()
        return children.get(prefix, set())

    # random token strings, biased to stay on SID prefixes so that many are valid
    rng = np.random.default_rng(seed)
    batch, length = 64, vocab.max_len + 1
    walks = np.zeros((batch, length), dtype=np.int64)
    for b in range(batch):
        base = sequences[rng.integers(len(sequences))]
        for d in range(length):
            on_path = d < len(base) and rng.random() < 0.85
            walks[b, d] = base[d] if on_path else rng.integers(0, vocab.vocab_size)
    state = torch.full((batch,), trie.root)
    for d in range(length):
        mask, states = trie.allowed_mask(state).tolist(), state.tolist()
        for b in range(batch):
            expected = expected_next(tuple(walks[b, :d].tolist()))
            assert {tok for tok, ok in enumerate(mask[b]) if ok} == expected
            assert (states[b] >= 0) == bool(expected)  # every live node has a way forward
        state = trie.advance(state, torch.from_numpy(walks[:, d]))
    items = trie.item_index(state).tolist()
    for b in range(batch):
        row = walks[b].tolist()
        cut = row.index(EOS_ID) + 1 if EOS_ID in row else len(row)
        valid = tuple(row[:cut]) in complete and all(t == PAD_ID for t in row[cut:])
        assert trie.is_valid(row) == valid
        assert (items[b] >= 0) == valid
        if valid:
            assert vocab.item_ids[items[b]] == vocab.item_of_tokens(row)
