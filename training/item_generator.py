"""The item-level generator (``arch="item_causal"``): a causal transformer with one position per history
item, and a small head that writes the next item's SID one token at a time.

Why not T5 over SID tokens: T5 re-encodes a sliding window per training target and decodes through a
cross-attending decoder, so on 2 CPU cores most of its time goes to re-reading the same histories. Here one
forward pass over a user's sequence trains every target at once (position ``t`` predicts item ``t + 1``; the
causal mask keeps each prediction blind to its target and to every later item), and ranking runs the
transformer once per user; beam search only steps the head.

- **Input of a history item**: the sum of its SID tokens' embeddings (an unseen item is as readable as a known
  one), a position embedding and, with ``history_text``, ``gate ⊙ W · text(item)``: the text embedding the
  item's SID was trained on (title, description and, for DeepInterestGR, the curated interest descriptors),
  projected into the model. ``gate`` starts at zero, so an untrained model reads SIDs only (the TIGER-style
  model), and during training each item's text is dropped with probability ``text_dropout``. Interests reach
  a prediction only through the items before it: conditioning comes from the window's own history.
- **Head**: the state for token ``j`` of the next SID is the history state plus the embeddings of that SID's
  tokens ``< j`` and a step embedding, through a residual MLP and a projection onto the tokens step ``j`` can
  take (level ``j``'s codes; eos or a suffix after the last level): a softmax per step, so the head never
  spends time on tokens that cannot occur there. It is
  stepped like a decoder (:class:`ItemHeadDecoder`), so the trie-constrained beam search and sampling of
  ``training.constrained_decoding`` drive it unchanged.

Batches (``training.sequence_data``, layout ``"items"``): ``items`` [B, T] item indices (rows of
``vocab.item_ids``, ``-1`` pads on the right). Training chunks score every position; ranking reads the state
after each row's last item. A learned start position precedes every sequence, so an empty history is valid.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from training.sequence_data import LABEL_PAD
from training.settings import GeneratorConfig, SequenceSettings
from training.sid_vocab import EOS_ID, PAD_ID, SidVocab

_IMPOSSIBLE = -1e9


class ItemCausalModel(nn.Module):
    """Causal transformer over item positions + SID head (see the module docstring)."""

    def __init__(self, vocab: SidVocab, config: GeneratorConfig, sequence: SequenceSettings,
                 item_text: np.ndarray | torch.Tensor | None = None, text_dim: int | None = None) -> None:
        super().__init__()
        if sequence.use_user_interests:
            raise ValueError("arch='item_causal' conditions each position on its own history (history_text); "
                             "per-user interest tokens (use_user_interests=True) are built from the whole "
                             "training prefix and would show a window its own future: set use_user_interests=False")
        d = config.d_model
        self.vocab_size = vocab.vocab_size
        self.max_len = vocab.max_len
        # the start position + a training chunk (the history cap + the item that follows it)
        self.max_positions = sequence.max_history + 2
        self.text_dropout = float(config.text_dropout)
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            tokens = torch.tensor(np.array(vocab.sid_tokens), dtype=torch.long)
            self.register_buffer("sid_tokens", tokens, persistent=False)
            # step j of a SID can only be a token seen at place j of some item (level j's codes; eos or a
            # suffix after the last level): the head scores those alone, a third of the vocabulary or less
            self.step_candidates = [torch.unique(tokens[:, j][tokens[:, j] != PAD_ID]) for j in range(tokens.shape[1])]
            slot = torch.full((tokens.shape[1], vocab.vocab_size), -1, dtype=torch.long)
            for j, cand in enumerate(self.step_candidates):
                slot[j, cand] = torch.arange(len(cand))
            self.register_buffer("candidate_slot", slot, persistent=False)
            # the input embedding of an item sums its code (and suffix) tokens: eos and pad add nothing
            self.register_buffer("code_mask", ((tokens != EOS_ID) & (tokens != PAD_ID)).float(), persistent=False)
            self.token_in = nn.Embedding(vocab.vocab_size, d)
            self.start = nn.Parameter(torch.zeros(d))
            self.position = nn.Embedding(self.max_positions, d)
            self.text_gate: nn.Parameter | None = None
            if sequence.history_text:
                if item_text is None and text_dim is None:
                    raise ValueError("history_text=True needs the items' text embeddings (item_text)")
                text = (torch.zeros(vocab.n_items, int(text_dim)) if item_text is None
                        else torch.as_tensor(item_text, dtype=torch.float32))
                if text.ndim != 2 or text.shape[0] != vocab.n_items:
                    raise ValueError(f"item_text must be [n_items={vocab.n_items}, dim], got {tuple(text.shape)}")
                text = text / text.norm(dim=1, keepdim=True).clamp(min=1e-12)
                self.register_buffer("item_text", text)  # saved: the checkpoint serves alone
                self.text_proj = nn.Linear(text.shape[1], d)
                self.text_gate = nn.Parameter(torch.zeros(d))  # zero: starts as the SID-only model
            layer = nn.TransformerEncoderLayer(d, config.num_heads, config.d_ff, config.dropout, activation="gelu",
                                               batch_first=True, norm_first=True)
            self.layers = nn.TransformerEncoder(layer, config.num_encoder_layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(d)
            self.dropout = nn.Dropout(config.dropout)
            # head
            self.token_out = nn.Embedding(vocab.vocab_size, d)
            self.step_emb = nn.Embedding(self.max_len, d)
            self.head_norm = nn.LayerNorm(d)
            self.head_mlp = nn.Sequential(nn.Linear(d, config.d_ff), nn.GELU(), nn.Dropout(config.dropout),
                                          nn.Linear(config.d_ff, d))
            self.out_norm = nn.LayerNorm(d)
            self.out = nn.Linear(d, vocab.vocab_size)
            for emb in (self.token_in, self.position, self.token_out, self.step_emb):
                nn.init.normal_(emb.weight, std=0.02)

    # -- history encoder
    def item_inputs(self, items: torch.Tensor) -> torch.Tensor:
        """Input vectors [B, T, d] of item indices [B, T] (pads give zeros)."""
        idx = items.clamp(min=0)
        emb = (self.token_in(self.sid_tokens[idx]) * self.code_mask[idx][..., None]).sum(dim=2)
        if self.text_gate is not None:
            text = self.text_proj(self.item_text[idx])
            if self.training and self.text_dropout > 0:
                keep = (torch.rand(items.shape, device=items.device) >= self.text_dropout).float()
                text = text * keep[..., None]
            emb = emb + self.text_gate * text
        return emb * (items >= 0).float()[..., None]

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, T + 1, d]: position 0 is the start, position ``t + 1`` has read items ``0..t``."""
        if items.ndim != 2:
            raise ValueError(f"items must be [batch, length], got shape {tuple(items.shape)}")
        if items.shape[1] + 1 > self.max_positions:
            raise ValueError(f"{items.shape[1]} items exceed the model's {self.max_positions - 1} positions "
                             "(history cap + 1): cut histories to the cap first")
        b, t = items.shape
        x = torch.cat([self.start.expand(b, 1, -1), self.item_inputs(items)], dim=1)
        x = self.dropout(x + self.position(torch.arange(t + 1, device=items.device)))
        # rows are right-padded, so under the causal mask no real position ever reads a pad: no padding mask
        causal = torch.triu(torch.ones(t + 1, t + 1, dtype=torch.bool, device=items.device), diagonal=1)
        h = self.layers(x, mask=causal, is_causal=True)
        return self.norm(h)

    def last_state(self, items: torch.Tensor) -> torch.Tensor:
        """The state [B, d] after each row's last real item (right-padded rows; the start for empty ones)."""
        h = self.encode(items)
        n = (items >= 0).sum(dim=1).clamp(max=h.shape[1] - 1)
        return h[torch.arange(len(items), device=items.device), n]

    # -- head
    def head_states(self, state: torch.Tensor, prev_tokens: torch.Tensor) -> torch.Tensor:
        """Head states [N, T, d] of every step of SIDs, teacher-forced: ``state`` [N, d] and the SID tokens
        [N, T] (step ``j`` reads tokens ``< j``; pads after eos read as nothing)."""
        steps = prev_tokens.shape[-1]
        prev = self.token_out(prev_tokens) * (prev_tokens != PAD_ID).float()[..., None]
        prefix = torch.cumsum(prev, dim=-2) - prev  # exclusive: tokens before step j
        z = state[..., None, :] + prefix + self.step_emb(torch.arange(steps, device=state.device))
        z = self.head_norm(z)
        return self.out_norm(z + self.head_mlp(z))

    def step_logits(self, z: torch.Tensor, step: int) -> torch.Tensor:
        """Logits [N, n_candidates(step)] of head states [N, d] over the tokens step ``step`` can take."""
        cand = self.step_candidates[min(step, len(self.step_candidates) - 1)].to(z.device)
        return (z @ self.out.weight[cand].T + self.out.bias[cand]).float()

    def head_logprobs(self, state: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Log-probabilities [N, T] of SID tokens [N, T] (pads give 0) after states [N, d]."""
        z = self.head_states(state, tokens)
        out = torch.zeros(tokens.shape, device=state.device)
        for j in range(tokens.shape[1]):
            real = tokens[:, j] != PAD_ID
            if not bool(real.any()):
                continue
            slot = self.candidate_slot[min(j, self.candidate_slot.shape[0] - 1), tokens[real, j]]
            if bool((slot < 0).any()):
                raise ValueError(f"a token at step {j} is not a SID token of that step")
            logp = torch.log_softmax(self.step_logits(z[real, j], j), dim=-1)
            out[real, j] = logp.gather(1, slot[:, None]).squeeze(1)
        return out

    # -- training
    def chunk_loss(self, items: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of every next item's SID tokens over every position of right-padded chunks
        [B, T] (position ``t`` predicts item ``t + 1``; the start position predicts nothing)."""
        h = self.encode(items)[:, 1:-1]  # states after items 0..T-2
        target = items[:, 1:]
        real = target >= 0
        return self._token_loss(h[real], self.sid_tokens[target[real]])

    def window_loss(self, items: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of one target per row (``labels``: SID + eos, -100 pads) after history ``items``."""
        return self._token_loss(self.last_state(items), labels.masked_fill(labels == LABEL_PAD, PAD_ID))

    def _token_loss(self, state: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        lp = self.head_logprobs(state, tokens)
        return -lp.sum() / (tokens != PAD_ID).sum().clamp(min=1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss of a batch: every position of chunks, or the one target of windows (with ``labels``)."""
        if "labels" in batch:
            return self.window_loss(batch["items"], batch["labels"])
        return self.chunk_loss(batch["items"])

    def token_logprobs(self, items: torch.Tensor, tokens: torch.Tensor, group: int = 1) -> torch.Tensor:
        """Log-probabilities [B * group, T] of SID tokens [B * group, T] after histories [B, T_h] (each history
        repeated ``group`` times), as the searches score them (0 at pads)."""
        return self.head_logprobs(self.last_state(items).repeat_interleave(group, dim=0), tokens)

    def decoder(self, items: torch.Tensor) -> ItemHeadDecoder:
        """A :class:`~training.constrained_decoding.SidDecoder` over the head, one row per history."""
        return ItemHeadDecoder(self, self.last_state(items))


class ItemHeadDecoder:
    """Steps the head one SID token per row: the state accumulates the embeddings of the tokens fed so far."""

    def __init__(self, model: ItemCausalModel, state: torch.Tensor) -> None:
        self.model = model
        self.context = state
        self.t = 0

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.t > 0:  # the first call feeds the start token, which the head does not read
            self.context = self.context + self.model.token_out(tokens) * (tokens != PAD_ID).float()[:, None]
        m = self.model
        j = min(self.t, m.max_len - 1)
        z = m.head_norm(self.context + m.step_emb.weight[j])
        z = m.out_norm(z + m.head_mlp(z))
        # tokens this step cannot take get a logit whose probability is exactly 0 in float32, so the log-softmax
        # is the head's own distribution over the step; finite, so a finished sample's pad-only row stays valid
        logits = torch.full((len(z), m.vocab_size), _IMPOSSIBLE, device=z.device)
        logits[:, m.step_candidates[j].to(z.device)] = m.step_logits(z, j)
        self.t += 1
        return logits

    def select(self, rows: torch.Tensor) -> None:
        self.context = self.context[rows]
