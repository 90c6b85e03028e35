"""Trie-constrained decoding of semantic IDs with an encoder-decoder model (T5): beam search and sampling.

The encoder runs once per batch; the decoder is stepped with its key/value cache, and every step applies one
vectorised trie mask to the whole batch (no Python loop over beams or inputs; the only loop is over the
``trie.max_len`` ≤ levels + 2 decoding steps).

Scores are sums of ``log_softmax`` over the model's *full* vocabulary, with invalid tokens then removed
(not renormalised over the allowed tokens): the score is the model's own log-probability of the SID. This is
what transformers' ``generate(prefix_allowed_tokens_fn=...)`` computes too (its logits processor runs after
``log_softmax``), and the beam search follows its algorithm (``length_penalty=0``): ``W`` running beams plus
a pool of ``W`` finished hypotheses, candidates ranked over the top ``2W`` of each step, a candidate ending in
eos enters the pool only when ranked within the first ``W``, and the search stops once no running beam can
beat the worst finished one. The top-k lists therefore match ``generate`` on the same model and inputs.

Speed: the decoder holds one row per input and live beam (dead beams cost nothing once every input has fewer
live beams than the width). For models on transformers' ``sdpa`` attention (T5's default), decoding switches
the model, for its duration only, to a registered attention function that lets the beams of one input share
that input's cross-attention keys instead of copying them per beam (about 1.5× faster on the benchmark);
other attention implementations take the plain path with the cache repeated per beam.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask
from transformers.modeling_outputs import BaseModelOutput

from training.sid_trie import SidTrie
from training.sid_vocab import EOS_ID, PAD_ID, SidVocab

_NEG_INF = float("-inf")


@dataclass(frozen=True)
class BeamResult:
    """Ranked items per input: ``item_index`` [B, k] (-1 where fewer valid SIDs exist), ``scores`` [B, k]
    (sum of log-probs, descending; -inf where missing), ``tokens`` [B, k, max_len] (SID + eos, pad after)."""

    item_index: torch.Tensor
    scores: torch.Tensor
    tokens: torch.Tensor

    def item_ids(self, vocab: SidVocab) -> list[list[str]]:
        """Ranked item ids per input (missing entries dropped)."""
        return [[vocab.item_ids[i] for i in row if i >= 0] for row in self.item_index.tolist()]


@dataclass(frozen=True)
class SampleResult:
    """``num_samples`` valid SIDs per input: ``tokens`` [B, G, max_len], ``item_index`` [B, G], ``log_prob``
    [B, G] (the model's log-probability of the SID, temperature 1, no grad) and ``sampler_log_prob`` [B, G]
    (log-probability under the tempered, trie-masked distribution actually sampled from)."""

    tokens: torch.Tensor
    item_index: torch.Tensor
    log_prob: torch.Tensor
    sampler_log_prob: torch.Tensor

    def item_ids(self, vocab: SidVocab) -> list[list[str]]:
        """Sampled item ids per input."""
        return [[vocab.item_ids[i] for i in row] for row in self.item_index.tolist()]


class SidDecoder(Protocol):
    """What the searches step: one row per live beam or sample, input-major."""

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (the start token first); float32 next-token logits [rows, >= vocab]."""

    def select(self, rows: torch.Tensor) -> None:
        """New row ``i`` continues old row ``rows[i]``."""


_GROUPED_SDPA = "digr_grouped_cross_sdpa"


def _grouped_cross_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' sdpa attention, except when ``query`` has ``g`` rows per ``key`` row (beams of one input
    over that input's un-repeated cross-attention cache): the ``g`` one-token queries of an input then become
    ``g`` query positions against its keys, so the keys are neither copied per beam nor re-read per beam."""
    rows, inputs = query.shape[0], key.shape[0]
    if rows == inputs:  # encoder, decoder self-attention, first decoder step
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if rows % inputs or query.shape[2] != 1:
        raise RuntimeError(f"grouped cross-attention needs one query token per row and a whole number of rows "
                           f"per input; got query {tuple(query.shape)}, key {tuple(key.shape)}")
    group, heads, dim = rows // inputs, query.shape[1], query.shape[3]
    grouped_query = query.view(inputs, group, heads, dim).transpose(1, 2)  # [inputs, heads, group, dim]
    if attention_mask is not None:
        attention_mask = attention_mask[::group]  # rows of one input share its encoder mask
    bias = kwargs.pop("position_bias", None)
    if bias is not None and bias.shape[0] == rows:
        bias = bias[::group]
    kwargs["is_causal"] = False
    out, _ = sdpa_attention_forward(module, grouped_query, key, value, attention_mask, position_bias=bias, **kwargs)
    return out.reshape(rows, 1, heads, dim), None  # out: [inputs, group, heads, dim]


AttentionInterface.register(_GROUPED_SDPA, _grouped_cross_sdpa)
AttentionMaskInterface.register(_GROUPED_SDPA, sdpa_mask)


@contextmanager
def _grouped_cross_attention(model: torch.nn.Module) -> Iterator[bool]:
    """Switch an sdpa model to :func:`_grouped_cross_sdpa` while decoding; yields whether it did."""
    original = getattr(model.config, "_attn_implementation", None)
    # DIGR_GROUPED_CROSS_ATTENTION=0: plain sdpa, for transformers releases whose T5 does not dispatch
    # through the attention interface (5.17 does not; 5.24, the pinned one, does)
    disabled = os.environ.get("DIGR_GROUPED_CROSS_ATTENTION", "1") == "0"
    if disabled or original != "sdpa" or not hasattr(model, "set_attn_implementation"):
        yield False
        return
    model.set_attn_implementation(_GROUPED_SDPA)
    try:
        yield True
    finally:
        model.set_attn_implementation(original)


class _CachedDecoder:
    """Runs the encoder once, then steps the decoder one token per row with its key/value cache.

    Decoder rows are re-laid out between steps with :meth:`select`, always input-major with the same number of
    rows per input. With ``grouped`` (see :func:`_grouped_cross_sdpa`) the cross-attention cache keeps one row
    per input and is never copied.
    """

    def __init__(
        self, model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, grouped: bool = False
    ) -> None:
        self.model = model
        self.grouped = grouped
        self.encoder_states = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        self.input_mask = attention_mask
        self.row_input = torch.arange(len(input_ids), device=input_ids.device)  # which input each row decodes
        self.encoder_outputs = BaseModelOutput(last_hidden_state=self.encoder_states)
        self.attention_mask = attention_mask
        self.cache = None
        # transformers renamed past_key_values to cache (kwarg and output); accept either release
        self._cache_kwarg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row; returns float32 next-token logits [rows, model_vocab]."""
        out = self.model(
            encoder_outputs=self.encoder_outputs,
            attention_mask=self.attention_mask,
            decoder_input_ids=tokens[:, None],
            use_cache=True,
            **{self._cache_kwarg: self.cache},
        )
        cache = getattr(out, "cache", None)
        self.cache = cache if cache is not None else out.past_key_values
        return out.logits[:, -1].float()

    def select(self, rows: torch.Tensor) -> None:
        """New row ``i`` continues old row ``rows[i]``."""
        row_input = self.row_input[rows]
        self_attention = getattr(self.cache, "self_attention_cache", None)
        same_layout = torch.equal(row_input, self.row_input)
        if self_attention is not None and (self.grouped or same_layout):
            # cross-attention keys depend only on the input: no copy while beams move within their input
            self_attention.reorder_cache(rows)
        else:
            self.cache.reorder_cache(rows)
        if same_layout:
            return
        self.row_input = row_input
        # Once the cross-attention cache is filled (first step), T5 reads the encoder states only for their
        # shape; a stride-0 view of the right shape saves copying them per row (the tests against
        # generate() and brute force would catch a transformers version that reads them again).
        states = self.encoder_states
        self.encoder_outputs = BaseModelOutput(last_hidden_state=states[:1].expand(len(rows), *states.shape[1:]))
        self.attention_mask = self.input_mask[row_input]


@contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Decode without dropout, then give the model back in the mode it came in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _check_inputs(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, trie: SidTrie, vocab: SidVocab
) -> int:
    """Validate the call; return the decoder start token id."""
    config = getattr(model, "config", None)
    if config is None or not getattr(config, "is_encoder_decoder", False):
        raise TypeError(
            f"constrained decoding needs an encoder-decoder model (e.g. T5ForConditionalGeneration), "
            f"got {type(model).__name__}"
        )
    if config.vocab_size < vocab.vocab_size:
        raise ValueError(f"model vocab_size {config.vocab_size} < SID vocab_size {vocab.vocab_size}")
    if trie.vocab_size != vocab.vocab_size or trie.n_items != vocab.n_items:
        raise ValueError(
            f"trie ({trie.n_items} items, vocab {trie.vocab_size}) was not built from this vocabulary "
            f"({vocab.n_items} items, vocab {vocab.vocab_size})"
        )
    if input_ids.ndim != 2 or input_ids.shape[0] == 0:
        raise ValueError(f"input_ids must be [batch >= 1, seq_len], got shape {tuple(input_ids.shape)}")
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}"
        )
    start = config.decoder_start_token_id
    return PAD_ID if start is None else int(start)


def _top(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise top-k, padded with (-inf, index 0) when a row has fewer than k entries."""
    top_values, top_index = values.topk(min(k, values.shape[1]), dim=1)
    missing = k - top_values.shape[1]
    if missing > 0:
        top_values = torch.nn.functional.pad(top_values, (0, missing), value=_NEG_INF)
        top_index = torch.nn.functional.pad(top_index, (0, missing), value=0)
    return top_values, top_index


def _log_probs(logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Full-vocabulary log-softmax, cut to the SID vocabulary (extra model tokens are never allowed)."""
    return torch.log_softmax(logits, dim=-1)[:, :vocab_size]


@torch.inference_mode()
def constrained_beam_search(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    trie: SidTrie,
    vocab: SidVocab,
    *,
    beam_width: int = 20,
    top_k: int = 10,
) -> BeamResult:
    """Top-``top_k`` valid SIDs per input by beam search of width ``beam_width`` (see the module docstring)."""
    if not 1 <= top_k <= beam_width:
        raise ValueError(f"need 1 <= top_k <= beam_width, got top_k={top_k}, beam_width={beam_width}")
    start_id = _check_inputs(model, input_ids, attention_mask, trie, vocab)
    with _eval_mode(model), _grouped_cross_attention(model) as grouped:
        decoder = _CachedDecoder(model, input_ids, attention_mask, grouped=grouped)
        return decoder_beam_search(decoder, input_ids.shape[0], trie, vocab, beam_width=beam_width, top_k=top_k,
                                   start_id=start_id, device=input_ids.device)


@torch.inference_mode()
def decoder_beam_search(
    decoder: SidDecoder,
    batch: int,
    trie: SidTrie,
    vocab: SidVocab,
    *,
    beam_width: int = 20,
    top_k: int = 10,
    start_id: int = PAD_ID,
    device: torch.device | str = "cpu",
) -> BeamResult:
    """The beam search of :func:`constrained_beam_search` over any :class:`SidDecoder` (``batch`` inputs,
    one decoder row per input at the start; the caller puts its model in eval mode)."""
    if not 1 <= top_k <= beam_width:
        raise ValueError(f"need 1 <= top_k <= beam_width, got top_k={top_k}, beam_width={beam_width}")
    trie = trie.to(device)
    width, n_vocab, max_len = beam_width, vocab.vocab_size, trie.max_len
    batch_rows = torch.arange(batch, device=device)[:, None]

    # Running beams are kept sorted by score, so the live ones of every input are its first `n_live`
    # beams; the decoder has one row per input and beam < n_live (input-major, dead beams idle).
    state = torch.full((batch, width), -1, dtype=torch.long, device=device)
    state[:, 0] = trie.root
    scores = torch.full((batch, width), _NEG_INF, device=device)
    scores[:, 0] = 0.0  # one live beam per input at the start: the others would duplicate it
    tokens = torch.full((batch, width, max_len), PAD_ID, dtype=torch.long, device=device)
    fin_scores = torch.full((batch, width), _NEG_INF, device=device)
    fin_tokens = tokens.clone()
    fin_item = torch.full((batch, width), -1, dtype=torch.long, device=device)
    n_live = 1
    step_input = torch.full((batch,), start_id, dtype=torch.long, device=device)

    for t in range(max_len):
        log_probs = _log_probs(decoder.step(step_input), n_vocab).view(batch, n_live, n_vocab)
        allowed = trie.allowed_mask(state[:, :n_live].reshape(-1)).view(batch, n_live, n_vocab)
        cand = torch.where(allowed, log_probs + scores[:, :n_live, None], _NEG_INF).view(batch, -1)
        cand_scores, cand_flat = _top(cand, 2 * width)
        src, tok = cand_flat // n_vocab, cand_flat % n_vocab
        cand_state = trie.advance(state.gather(1, src), tok)
        cand_tokens = tokens[batch_rows, src]
        cand_tokens[:, :, t] = tok
        ends = (tok == EOS_ID) & torch.isfinite(cand_scores)

        # finished pool: previous pool + eos candidates ranked within the first W, best W kept
        ranked_in = torch.arange(cand_scores.shape[1], device=device) < width
        new_fin = torch.where(ends & ranked_in, cand_scores, _NEG_INF)
        fin_scores, keep = torch.cat([fin_scores, new_fin], dim=1).topk(width, dim=1)
        fin_tokens = torch.cat([fin_tokens, cand_tokens], dim=1)[batch_rows, keep]
        fin_item = torch.cat([fin_item, trie.item_index(cand_state)], dim=1).gather(1, keep)

        # running beams: best W candidates that did not end
        scores, pick = _top(torch.where(ends, _NEG_INF, cand_scores), width)
        alive = torch.isfinite(scores)
        state = torch.where(alive, cand_state.gather(1, pick), -1)
        tokens = cand_tokens[batch_rows, pick]

        # log-probs only fall, so a running beam below the worst finished one can never enter the pool
        if t == max_len - 1 or not bool((scores[:, 0] > fin_scores[:, -1]).any()):
            break
        # each beam continues its parent's decoder row; src always points into the beam's own input,
        # so dead beams among the first n_live simply idle on a row of their input
        parent_row = src.gather(1, pick) + batch_rows * n_live
        n_live = int(alive.sum(1).max())
        decoder.select(parent_row[:, :n_live].reshape(-1))
        step_input = tokens[:, :n_live, t].reshape(-1)

    found = torch.isfinite(fin_scores)
    fin_item = torch.where(found, fin_item, -1)
    fin_tokens = torch.where(found[..., None], fin_tokens, PAD_ID)
    return BeamResult(item_index=fin_item[:, :top_k], scores=fin_scores[:, :top_k], tokens=fin_tokens[:, :top_k])


@torch.no_grad()
def constrained_sample(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    trie: SidTrie,
    vocab: SidVocab,
    *,
    num_samples: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> SampleResult:
    """Sample ``num_samples`` valid SIDs per input (with replacement) from the trie-masked distribution
    ``softmax(logits / temperature)`` over the allowed tokens; seeded through ``generator``.

    Uses ``torch.no_grad`` (not inference mode), so the returned tokens can feed a later forward with grad.
    """
    start_id = _check_inputs(model, input_ids, attention_mask, trie, vocab)
    with _eval_mode(model), _grouped_cross_attention(model) as grouped:
        decoder = _CachedDecoder(model, input_ids, attention_mask, grouped=grouped)
        return decoder_sample(decoder, input_ids.shape[0], trie, vocab, num_samples=num_samples,
                              temperature=temperature, generator=generator, start_id=start_id,
                              device=input_ids.device)


@torch.no_grad()
def decoder_sample(
    decoder: SidDecoder,
    batch: int,
    trie: SidTrie,
    vocab: SidVocab,
    *,
    num_samples: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    start_id: int = PAD_ID,
    device: torch.device | str = "cpu",
) -> SampleResult:
    """The sampling of :func:`constrained_sample` over any :class:`SidDecoder` (the caller puts its model in
    eval mode)."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    trie = trie.to(device)
    n_vocab, max_len = vocab.vocab_size, trie.max_len
    rows = batch * num_samples

    state = torch.full((rows,), trie.root, dtype=torch.long, device=device)
    tokens = torch.full((rows, max_len), PAD_ID, dtype=torch.long, device=device)
    log_prob = torch.zeros(rows, device=device)
    sampler_log_prob = torch.zeros(rows, device=device)
    logits = decoder.step(torch.full((batch,), start_id, dtype=torch.long, device=device))
    logits = logits.repeat_interleave(num_samples, dim=0)
    decoder.select(torch.arange(batch, device=device).repeat_interleave(num_samples))
    for t in range(max_len):
        done = trie.is_terminal(state)
        if bool(done.all()):
            break
        if t > 0:  # finished samples keep their row (padding) so that rows stay grouped per input
            logits = decoder.step(tokens[:, t - 1])
        allowed = trie.allowed_mask(state)  # a finished sample allows only pad
        sampler = torch.log_softmax(torch.where(allowed, logits[:, :n_vocab] / temperature, _NEG_INF), dim=-1)
        tok = torch.multinomial(sampler.exp(), 1, generator=generator)
        log_prob += torch.where(done, 0.0, _log_probs(logits, n_vocab).gather(1, tok).squeeze(1))
        sampler_log_prob += torch.where(done, 0.0, sampler.gather(1, tok).squeeze(1))
        tok = tok.squeeze(1)
        state = trie.advance(state, tok)
        tokens[:, t] = tok

    shape = (batch, num_samples)
    return SampleResult(
        tokens=tokens.view(*shape, max_len),
        item_index=trie.item_index(state).view(shape),
        log_prob=log_prob.view(shape),
        sampler_log_prob=sampler_log_prob.view(shape),
    )


def prefix_allowed_tokens_fn(trie: SidTrie) -> Callable[[int, torch.Tensor], list[int]]:
    """Reference (slow) path: a ``prefix_allowed_tokens_fn`` for transformers' ``generate`` on the same trie.

    ``generate`` calls it once per beam per step; answers are memoised by prefix. Invalid prefixes (only
    reachable by beams whose score is already -inf) get ``[pad]`` so ``generate`` never sees an empty list.
    """
    memo: dict[tuple[int, ...], list[int]] = {}

    def allowed(batch_id: int, decoder_tokens: torch.Tensor) -> list[int]:
        prefix = tuple(decoder_tokens.tolist()[1:])  # drop the decoder start token
        if prefix not in memo:
            memo[prefix] = trie.allowed_tokens(prefix) or [PAD_ID]
        return memo[prefix]

    return allowed
