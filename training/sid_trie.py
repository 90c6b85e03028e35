"""Prefix trie of every valid SID token sequence (SID + eos), held as tensors for batched decoding.

Nodes are numbered breadth-first (root = 0). Edges are stored sorted by ``parent * vocab_size + token``
(CSR rows per parent, tokens ascending), so one ``searchsorted`` advances a whole batch of states and one
scatter builds the allowed-token mask of a whole batch. Terminal nodes (reached by eos) map to an item
and carry a self-loop on pad, so a finished sequence stays finished and padded tails stay valid.
State ``-1`` means "dead" (an invalid prefix): it allows nothing and advances to ``-1``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from training.sid_vocab import EOS_ID, PAD_ID, SidVocab


class SidTrie:
    """Tensor prefix trie over a :class:`SidVocab`'s SIDs."""

    root: int = 0

    def __init__(
        self,
        row_ptr: torch.Tensor,
        edge_token: torch.Tensor,
        edge_child: torch.Tensor,
        leaf_item: torch.Tensor,
        *,
        vocab_size: int,
        max_len: int,
    ) -> None:
        self.row_ptr = row_ptr
        self.edge_token = edge_token
        self.edge_child = edge_child
        self.leaf_item = leaf_item
        self.edge_key = torch.repeat_interleave(
            torch.arange(len(row_ptr) - 1, device=row_ptr.device), row_ptr.diff()
        ) * vocab_size + edge_token
        self.vocab_size = int(vocab_size)
        self.max_len = int(max_len)
        self.n_nodes = int(len(leaf_item))
        self.n_items = int((leaf_item >= 0).sum())
        self._host: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_vocab(cls, vocab: SidVocab) -> SidTrie:
        """Build the trie of ``vocab``'s SIDs; leaf item indices follow ``vocab.item_ids``."""
        tokens = vocab.sid_tokens
        n_items, max_len = tokens.shape
        lengths = (tokens == EOS_ID).argmax(axis=1) + 1
        node = np.zeros(n_items, dtype=np.int64)  # current node of each item's path
        parents, edge_tokens, children = [], [], []
        n_nodes = 1
        for depth in range(max_len):
            live = np.flatnonzero(lengths > depth)
            key = node[live] * vocab.vocab_size + tokens[live, depth]
            unique_keys, inverse = np.unique(key, return_inverse=True)
            new_ids = n_nodes + np.arange(len(unique_keys))
            parents.append(unique_keys // vocab.vocab_size)
            edge_tokens.append(unique_keys % vocab.vocab_size)
            children.append(new_ids)
            node[live] = new_ids[inverse]
            n_nodes += len(unique_keys)
        leaf_item = np.full(n_nodes, -1, dtype=np.int64)
        leaf_item[node] = np.arange(n_items)
        terminals = np.flatnonzero(leaf_item >= 0)
        parent = np.concatenate([*parents, terminals])
        token = np.concatenate([*edge_tokens, np.full(len(terminals), PAD_ID)])
        child = np.concatenate([*children, terminals])
        order = np.argsort(parent * vocab.vocab_size + token, kind="stable")
        row_ptr = np.searchsorted(parent[order], np.arange(n_nodes + 1), side="left")
        return cls(
            torch.from_numpy(row_ptr.astype(np.int64)),
            torch.from_numpy(token[order].astype(np.int64)),
            torch.from_numpy(child[order].astype(np.int64)),
            torch.from_numpy(leaf_item),
            vocab_size=vocab.vocab_size,
            max_len=max_len,
        )

    @property
    def device(self) -> torch.device:
        return self.row_ptr.device

    def to(self, device: torch.device | str) -> SidTrie:
        """This trie with its tensors on ``device`` (self when already there)."""
        if torch.device(device) == self.device:
            return self
        return SidTrie(
            self.row_ptr.to(device),
            self.edge_token.to(device),
            self.edge_child.to(device),
            self.leaf_item.to(device),
            vocab_size=self.vocab_size,
            max_len=self.max_len,
        )

    def allowed_mask(self, state: torch.Tensor) -> torch.Tensor:
        """[B] node ids → [B, vocab_size] bool mask of the tokens that keep each prefix valid."""
        state = state.reshape(-1)
        alive = state >= 0
        safe = state.clamp(min=0)
        start = self.row_ptr[safe]
        count = (self.row_ptr[safe + 1] - start) * alive
        total = int(count.sum())
        rows = torch.repeat_interleave(torch.arange(len(state), device=state.device), count, output_size=total)
        first = torch.cumsum(count, 0) - count
        edge = start[rows] + torch.arange(total, device=state.device) - first[rows]
        mask = torch.zeros(len(state), self.vocab_size, dtype=torch.bool, device=state.device)
        mask[rows, self.edge_token[edge]] = True
        return mask

    def advance(self, state: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Node reached from each ``state`` by each token ([B] → [B]); -1 where the token is not allowed."""
        key = state * self.vocab_size + tokens
        pos = torch.searchsorted(self.edge_key, key).clamp(max=len(self.edge_key) - 1)
        hit = (self.edge_key[pos] == key) & (state >= 0) & (tokens >= 0) & (tokens < self.vocab_size)
        return torch.where(hit, self.edge_child[pos], torch.full_like(state, -1))

    def item_index(self, state: torch.Tensor) -> torch.Tensor:
        """Item index (into ``vocab.item_ids``) of terminal states; -1 for other and dead states."""
        return torch.where(state >= 0, self.leaf_item[state.clamp(min=0)], torch.full_like(state, -1))

    def is_terminal(self, state: torch.Tensor) -> torch.Tensor:
        """True where the state has emitted eos after a complete SID."""
        return self.item_index(state) >= 0

    def walk(self, token_seq: Iterable[int]) -> int:
        """Node reached from the root by ``token_seq`` (-1 if the prefix is invalid)."""
        if self._host is None:  # scalar walks are Python-side: numpy beats one tensor op per token
            self._host = tuple(t.cpu().numpy() for t in (self.edge_key, self.edge_child))
        keys, child = self._host
        state = self.root
        for token in token_seq:
            token = int(token)
            if not 0 <= token < self.vocab_size:
                return -1
            key = state * self.vocab_size + token
            pos = int(np.searchsorted(keys, key))
            if pos == len(keys) or keys[pos] != key:
                return -1
            state = int(child[pos])
        return state

    def is_valid(self, token_seq: Iterable[int]) -> bool:
        """True when ``token_seq`` is a complete SID followed by eos (and only pad after it)."""
        state = self.walk(token_seq.tolist() if hasattr(token_seq, "tolist") else token_seq)
        return state >= 0 and int(self.leaf_item[state]) >= 0

    def allowed_tokens(self, token_seq: Iterable[int]) -> list[int]:
        """Allowed next tokens after a prefix (empty for an invalid prefix); for Python-side callers."""
        state = self.walk(token_seq)
        if state < 0:
            return []
        return self.edge_token[self.row_ptr[state] : self.row_ptr[state + 1]].tolist()

    def __repr__(self) -> str:
        return f"SidTrie(n_items={self.n_items}, n_nodes={self.n_nodes}, max_len={self.max_len})"
