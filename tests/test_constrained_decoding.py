"""Constrained beam search and sampling: always valid, equal to transformers' generate and to brute force."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

from tests.helpers import random_codes_with_suffix  # noqa: E402
from training.constrained_decoding import (
    constrained_beam_search,
    constrained_sample,
    prefix_allowed_tokens_fn,
)
from training.sid_trie import SidTrie
from training.sid_vocab import EOS_ID, PAD_ID, SidVocab


@pytest.fixture(autouse=True)
def single_thread():
    """Models here are tiny: one thread is faster than two on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_vocab(seed: int, levels: int, sizes: list[int], n_items: int) -> SidVocab:
    codes, suffix = random_codes_with_suffix(seed, levels, sizes[:levels], n_items)
    return SidVocab([f"it{i}" for i in range(n_items)], codes, suffix)


def tiny_t5(vocab_size: int, seed: int) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=vocab_size, d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16,
        decoder_start_token_id=PAD_ID, pad_token_id=PAD_ID, eos_token_id=EOS_ID,
    )
    return T5ForConditionalGeneration(config).eval()


def random_inputs(vocab: SidVocab, batch: int, seed: int, length: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, vocab.vocab_size, (batch, length), generator=gen)
    attention_mask = torch.ones_like(input_ids)
    return input_ids, attention_mask


def exhaustive_scores(model, input_ids, attention_mask, vocab: SidVocab) -> torch.Tensor:
    """[B, n_items] sum of full-vocabulary log-probs of every item's SID + eos, by teacher forcing."""
    targets = torch.from_numpy(vocab.sid_tokens.copy())  # [n, T]
    n, batch = len(targets), len(input_ids)
    with torch.no_grad():
        logits = model(
            input_ids=input_ids.repeat_interleave(n, 0),
            attention_mask=attention_mask.repeat_interleave(n, 0),
            decoder_input_ids=model._shift_right(targets.repeat(batch, 1)),
        ).logits
    log_probs = torch.log_softmax(logits.float(), -1).gather(2, targets.repeat(batch, 1)[..., None]).squeeze(2)
    valid = torch.ones_like(targets, dtype=torch.bool)
    for row, tokens in enumerate(targets.tolist()):
        valid[row, tokens.index(EOS_ID) + 1 :] = False
    return (log_probs * valid.repeat(batch, 1)).sum(1).view(batch, n)


def hf_top_k(model, input_ids, attention_mask, trie: SidTrie, vocab: SidVocab, width: int, k: int):
    out = model.generate(
        input_ids=input_ids, attention_mask=attention_mask, num_beams=width, num_return_sequences=k,
        max_new_tokens=trie.max_len, length_penalty=0.0, do_sample=False,
        prefix_allowed_tokens_fn=prefix_allowed_tokens_fn(trie),
        return_dict_in_generate=True, output_scores=True,
    )
    batch = len(input_ids)
    items = [[vocab.item_of_tokens(seq[1:]) for seq in out.sequences.view(batch, k, -1)[b]] for b in range(batch)]
    return items, out.sequences_scores.view(batch, k)


random_cases = st.fixed_dictionaries({
    "seed": st.integers(0, 2**31 - 1),
    "levels": st.integers(1, 3),
    "sizes": st.lists(st.integers(2, 16), min_size=3, max_size=3),
    "n_items": st.integers(1, 30),
    "width": st.integers(1, 12),
})


@settings(max_examples=20, deadline=None)
@given(case=random_cases)
def test_decoding_never_emits_an_invalid_sid(case: dict) -> None:
    vocab = random_vocab(case["seed"], case["levels"], case["sizes"], case["n_items"])
    trie = SidTrie.from_vocab(vocab)
    model = tiny_t5(vocab.vocab_size, case["seed"] % 1000)
    input_ids, attention_mask = random_inputs(vocab, batch=3, seed=case["seed"])
    width = case["width"]
    top_k = min(width, 10)

    beams = constrained_beam_search(model, input_ids, attention_mask, trie, vocab, beam_width=width, top_k=top_k)
    assert beams.item_index.shape == (3, top_k) and beams.tokens.shape == (3, top_k, trie.max_len)
    found = beams.item_index >= 0
    # enough valid SIDs exist to fill min(k, n_items) slots, and beam search finds them all
    assert (found.sum(1) == min(top_k, vocab.n_items)).all()
    for b in range(3):
        ranked = [i for i in beams.item_index[b].tolist() if i >= 0]
        assert len(set(ranked)) == len(ranked)
        for slot, index in enumerate(beams.item_index[b].tolist()):
            if index >= 0:
                assert trie.is_valid(beams.tokens[b, slot])
                assert vocab.item_of_tokens(beams.tokens[b, slot]) == vocab.item_ids[index]
        real = beams.scores[b][found[b]]
        assert torch.isfinite(real).all() and (real.diff() <= 0).all()
        assert torch.isneginf(beams.scores[b][~found[b]]).all()

    samples = constrained_sample(
        model, input_ids, attention_mask, trie, vocab, num_samples=4, generator=torch.Generator().manual_seed(1)
    )
    assert (samples.item_index >= 0).all()
    for b in range(3):
        for g in range(4):
            assert trie.is_valid(samples.tokens[b, g])
            assert vocab.item_of_tokens(samples.tokens[b, g]) == vocab.item_ids[samples.item_index[b, g]]


@pytest.mark.parametrize(
    ("seed", "n_items", "width", "attention"),
    [(0, 12, 12, "sdpa"), (1, 25, 30, "sdpa"), (2, 40, 8, "sdpa"), (3, 60, 20, "sdpa"), (2, 40, 8, "eager")],
)
def test_beam_search_equals_transformers_generate(seed: int, n_items: int, width: int, attention: str) -> None:
    """Same top-k and scores as generate(prefix_allowed_tokens_fn=...), exhaustive or not (width < n_items),
    on the grouped cross-attention path (sdpa) and the plain one (eager)."""
    vocab = random_vocab(seed, 3, [3, 4, 3], n_items)  # small codebooks: many collisions, suffixed SIDs
    trie = SidTrie.from_vocab(vocab)
    model = tiny_t5(vocab.vocab_size, seed)
    model.set_attn_implementation(attention)
    input_ids, attention_mask = random_inputs(vocab, batch=4, seed=seed)
    input_ids[1, 4:] = PAD_ID  # one padded input: the encoder mask must follow every beam
    attention_mask[1, 4:] = 0
    k = min(10, width)
    ours = constrained_beam_search(model, input_ids, attention_mask, trie, vocab, beam_width=width, top_k=k)
    assert model.config._attn_implementation == attention  # restored after decoding
    items, scores = hf_top_k(model, input_ids, attention_mask, trie, vocab, width, k)
    assert ours.item_ids(vocab) == items
    torch.testing.assert_close(ours.scores, scores, atol=1e-4, rtol=0)


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_beam_search_equals_brute_force_when_exhaustive(seed: int) -> None:
    vocab = random_vocab(seed, 2, [4, 5], 15)
    trie = SidTrie.from_vocab(vocab)
    model = tiny_t5(vocab.vocab_size, seed)
    input_ids, attention_mask = random_inputs(vocab, batch=3, seed=seed)
    beams = constrained_beam_search(model, input_ids, attention_mask, trie, vocab, beam_width=vocab.n_items, top_k=8)
    exact = exhaustive_scores(model, input_ids, attention_mask, vocab)
    best, order = exact.topk(8, dim=1)
    torch.testing.assert_close(beams.scores, best, atol=1e-4, rtol=0)
    # each returned item carries its own exhaustive score (robust to near-ties in the order)
    torch.testing.assert_close(exact.gather(1, beams.item_index), beams.scores, atol=1e-4, rtol=0)
    assert (beams.item_index == order).float().mean() > 0.9


def test_padded_batch_matches_single_inputs() -> None:
    vocab = random_vocab(7, 3, [4, 4, 4], 30)
    trie = SidTrie.from_vocab(vocab)
    model = tiny_t5(vocab.vocab_size, 7)
    lengths = [6, 3, 5]
    input_ids = torch.full((3, 6), PAD_ID)
    gen = torch.Generator().manual_seed(7)
    for row, n in enumerate(lengths):
        input_ids[row, :n] = torch.randint(3, vocab.vocab_size, (n,), generator=gen)
    attention_mask = (input_ids != PAD_ID).long()
    batch = constrained_beam_search(model, input_ids, attention_mask, trie, vocab, beam_width=6, top_k=5)
    for row, n in enumerate(lengths):
        single = constrained_beam_search(
            model, input_ids[row : row + 1, :n], attention_mask[row : row + 1, :n], trie, vocab, beam_width=6, top_k=5
        )
        assert single.item_index[0].tolist() == batch.item_index[row].tolist()
        torch.testing.assert_close(single.scores[0], batch.scores[row], atol=1e-4, rtol=0)


def test_fewer_items_than_top_k_are_marked_missing() -> None:
    vocab = SidVocab.from_sids(["a", "b", "c"], [(0, 1), (1, 0), (1, 1)])
    trie = SidTrie.from_vocab(vocab)
    model = tiny_t5(vocab.vocab_size, 0)
    beams = constrained_beam_search(model, *random_inputs(vocab, 2, 0), trie, vocab, beam_width=5, top_k=5)
    assert (beams.item_index[:, 3:] == -1).all() and torch.isneginf(beams.scores[:, 3:]).all()
    assert all(sorted(row) == ["a", "b", "c"] for row in beams.item_ids(vocab))
    assert (beams.tokens[:, 3:] == PAD_ID).all()


def test_sampling_is_seeded_and_reports_model_log_probs() -> None:
    vocab = random_vocab(8, 3, [3, 3, 3], 20)
    trie = SidTrie.from_vocab(vocab)
    model = tiny_t5(vocab.vocab_size, 8)
    input_ids, attention_mask = random_inputs(vocab, batch=2, seed=8)

    def draw(seed: int):
        return constrained_sample(model, input_ids, attention_mask, trie, vocab, num_samples=16,
                                  generator=torch.Generator().manual_seed(seed))

    first, again, other = draw(0), draw(0), draw(1)
    model.set_attn_implementation("eager")
    assert torch.equal(draw(0).tokens, first.tokens)  # plain attention path: same draws
    assert torch.equal(first.tokens, again.tokens) and torch.equal(first.log_prob, again.log_prob)
    assert not torch.equal(first.tokens, other.tokens)
    exact = exhaustive_scores(model, input_ids, attention_mask, vocab)
    torch.testing.assert_close(first.log_prob, exact.gather(1, first.item_index), atol=1e-4, rtol=0)
    assert (first.sampler_log_prob >= first.log_prob - 1e-5).all()  # renormalising over allowed tokens raises each step


def test_sampling_frequencies_follow_the_masked_distribution() -> None:
    """Empirical frequencies match exp(sampler_log_prob), which sums to one over the catalogue."""
    vocab = random_vocab(9, 2, [2, 3], 5)
    trie = SidTrie.from_vocab(vocab)
    model = tiny_t5(vocab.vocab_size, 9)
    input_ids, attention_mask = random_inputs(vocab, batch=1, seed=9)
    result = constrained_sample(model, input_ids, attention_mask, trie, vocab, num_samples=4000, temperature=0.7,
                                generator=torch.Generator().manual_seed(0))
    prob = torch.zeros(vocab.n_items)
    prob[result.item_index[0]] = result.sampler_log_prob[0].exp()
    assert set(result.item_index[0].tolist()) == set(range(vocab.n_items))
    torch.testing.assert_close(prob.sum(), torch.tensor(1.0), atol=1e-4, rtol=0)
    frequency = torch.bincount(result.item_index[0], minlength=vocab.n_items).float() / 4000
    assert (frequency - prob).abs().max() < 0.03


def test_samples_feed_a_training_forward_with_grad() -> None:
    """GRPO recomputes log-probs with grad on the sampled tokens: they must not be inference tensors."""
    vocab = random_vocab(10, 2, [4, 4], 10)
    trie = SidTrie.from_vocab(vocab)
    model = tiny_t5(vocab.vocab_size, 10).train()
    input_ids, attention_mask = random_inputs(vocab, batch=2, seed=10)
    samples = constrained_sample(model, input_ids, attention_mask, trie, vocab, num_samples=3)
    assert model.training  # the mode is restored after decoding without dropout
    labels = samples.tokens.view(6, -1)
    loss = model(input_ids=input_ids.repeat_interleave(3, 0), attention_mask=attention_mask.repeat_interleave(3, 0),
                 labels=labels).loss
    loss.backward()
    assert model.lm_head.weight.grad is not None and torch.isfinite(model.lm_head.weight.grad).all()


def test_bad_calls_raise_clear_errors() -> None:
    vocab = random_vocab(11, 2, [4, 4], 10)
    trie = SidTrie.from_vocab(vocab)
    model = tiny_t5(vocab.vocab_size, 11)
    input_ids, attention_mask = random_inputs(vocab, batch=2, seed=11)
    with pytest.raises(ValueError, match="top_k <= beam_width"):
        constrained_beam_search(model, input_ids, attention_mask, trie, vocab, beam_width=3, top_k=5)
    with pytest.raises(ValueError, match="attention_mask shape"):
        constrained_beam_search(model, input_ids, attention_mask[:, :2], trie, vocab)
    other = random_vocab(12, 2, [4, 4], 9)
    with pytest.raises(ValueError, match="not built from this vocabulary"):
        constrained_beam_search(model, input_ids, attention_mask, SidTrie.from_vocab(other), vocab)
    with pytest.raises(ValueError, match="model vocab_size"):
        constrained_beam_search(tiny_t5(vocab.vocab_size - 1, 0), input_ids, attention_mask, trie, vocab)
    with pytest.raises(ValueError, match="num_samples"):
        constrained_sample(model, input_ids, attention_mask, trie, vocab, num_samples=0)
    with pytest.raises(ValueError, match="temperature"):
        constrained_sample(model, input_ids, attention_mask, trie, vocab, num_samples=2, temperature=0.0)
    causal = GPT2LMHeadModel(GPT2Config(vocab_size=vocab.vocab_size, n_embd=16, n_layer=1, n_head=2))
    with pytest.raises(TypeError, match="encoder-decoder"):
        constrained_beam_search(causal, input_ids, attention_mask, trie, vocab)
