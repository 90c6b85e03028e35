"""Next-item samples as SID token sequences, and the LightningDataModule that serves them.

From the ``interaction_splits`` frame (user_id, item_id, timestamp, rating, position, split):

- **train**: sliding windows over each user's *train* rows only: for every train position ``t >= 1``
  the history is the previous ``<= max_history`` train items and the target is item ``t``;
- **valid**: history = the last ``max_history`` train items, target = the valid item;
- **test**: history = train items + the valid item (last ``max_history``), target = the test item.

Encoder input = ``[user prefix tokens] + SID(h_1) + ... + SID(h_n) + [eos]`` (each history item's SID
tokens without its eos); labels = the target's SID tokens + eos.

Layout ``"items"`` (``arch="item_causal"``) serves the same samples as item indices (rows of
``vocab.item_ids``): ``items`` [B, T] (-1 pads on the right) with ``labels`` and ``target_index`` for valid and
test windows, and, for training, one chunk per user of up to ``max_history + 1`` train items in which every
position after the first is a target (a longer prefix is cut into chunks that overlap by one item, so every
train target is predicted once, after up to ``max_history`` items of its chunk).

Leakage: training samples never see a valid or test item, as input or label. The optional
``user_prefix`` (interest tokens per user) is taken as given, so **the caller must build it from the
training prefix only** (``user_interests`` mines train items only for that reason).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from training.distributed import RankBatches, RankRows
from training.settings import SequenceSettings

if TYPE_CHECKING:
    from training.sid_vocab import SidVocab

SPLITS = ("train", "valid", "test")
LABEL_PAD = -100  # ignored by the cross-entropy loss of transformers models
REQUIRED_COLUMNS = ("user_id", "item_id", "position", "split")


@dataclass(frozen=True)
class SequenceSample:
    """One next-item prediction: a user's history (oldest first) and the item that follows."""

    user_id: str
    history: tuple[str, ...]
    target: str
    split: str


def build_samples(splits: pd.DataFrame, *, max_history: int = 20) -> dict[str, list[SequenceSample]]:
    """Build train (sliding windows over the train prefix), valid and test samples per user.

    Raises ``KeyError`` for missing columns and ``ValueError`` for unknown split labels, a user with
    more than one valid/test row, or a valid/test row placed before a train row (which would leak the
    future into training).
    """
    if max_history < 1:
        raise ValueError(f"max_history must be >= 1, got {max_history}")
    missing = [c for c in REQUIRED_COLUMNS if c not in splits.columns]
    if missing:
        raise KeyError(f"interaction_splits lacks columns {missing}; have {list(splits.columns)}")
    bad = set(splits["split"].unique()) - set(SPLITS)
    if bad:
        raise ValueError(f"unknown split labels {sorted(map(str, bad))}; expected {SPLITS}")

    frame = splits[list(REQUIRED_COLUMNS)].sort_values(["user_id", "position"], kind="stable")
    out: dict[str, list[SequenceSample]] = {s: [] for s in SPLITS}
    for user, rows in frame.groupby("user_id", sort=True):
        items = rows["item_id"].tolist()
        labels = rows["split"].tolist()
        train = [i for i, s in zip(items, labels, strict=True) if s == "train"]
        _check_order(user, labels)
        for t in range(1, len(train)):
            out["train"].append(
                SequenceSample(str(user), tuple(train[max(0, t - max_history) : t]), train[t], "train")
            )
        held = {s: i for i, s in zip(items, labels, strict=True) if s != "train"}
        if "valid" in held:
            out["valid"].append(
                SequenceSample(str(user), tuple(train[-max_history:]), held["valid"], "valid")
            )
        if "test" in held:
            before_test = train + ([held["valid"]] if "valid" in held else [])
            out["test"].append(
                SequenceSample(str(user), tuple(before_test[-max_history:]), held["test"], "test")
            )
    return out


def layout_of(arch: str) -> Literal["windows", "items"]:
    """The batch layout a generator architecture reads."""
    return "items" if arch == "item_causal" else "windows"


def _check_order(user: Any, labels: list[str]) -> None:
    for s in ("valid", "test"):
        if labels.count(s) > 1:
            raise ValueError(f"user {user!r} has {labels.count(s)} '{s}' rows; leave-one-out allows one")
    order = {"train": 0, "valid": 1, "test": 2}
    ranks = [order[s] for s in labels]
    if ranks != sorted(ranks):
        raise ValueError(
            f"user {user!r}: splits out of chronological order {labels}; valid/test must follow train"
        )


def interest_prefix_tokens(
    user_interest_embs: Mapping[str, np.ndarray],
    item_embeddings: np.ndarray,
    vocab: SidVocab,
    *,
    n: int = 4,
    depth: int = 2,
) -> dict[str, list[int]]:
    """Per-user interest tokens: the first ``depth`` SID codes of the item nearest (cosine) to each of
    the user's first ``n`` interest embeddings; repeated code groups dropped, order kept.

    ``item_embeddings`` [n_items, d] must follow ``vocab.item_ids``. The tokens are coarse SID codes, so
    they name catalogue regions the model already knows. Build ``user_interest_embs`` from the
    training prefix only, or the prefix leaks held-out items.
    """
    item_embeddings = np.asarray(item_embeddings, dtype=np.float64)
    if item_embeddings.ndim != 2 or item_embeddings.shape[0] != vocab.n_items:
        raise ValueError(
            f"item_embeddings must be [n_items={vocab.n_items}, d], got shape {item_embeddings.shape}"
        )
    if not 1 <= depth <= vocab.levels or n < 1:
        raise ValueError(f"need n >= 1 and 1 <= depth <= levels ({vocab.levels}), got n={n}, depth={depth}")
    items = item_embeddings / np.maximum(np.linalg.norm(item_embeddings, axis=1, keepdims=True), 1e-12)
    codes = vocab.sid_tokens[:, :depth]
    out: dict[str, list[int]] = {}
    for user, embs in user_interest_embs.items():
        embs = np.asarray(embs, dtype=np.float64)
        if embs.size == 0:
            out[str(user)] = []
            continue
        embs = np.atleast_2d(embs)
        if embs.ndim != 2 or embs.shape[1] != items.shape[1]:
            raise ValueError(
                f"interest embeddings of user {user!r} have shape {embs.shape}, expected [k, {items.shape[1]}]"
            )
        seen: list[tuple[int, ...]] = []
        for idx in (embs[:n] @ items.T).argmax(axis=1):
            key = tuple(int(t) for t in codes[idx])
            if key not in seen:
                seen.append(key)
        out[str(user)] = [t for key in seen for t in key]
    return out


def item_text_matrix(item_embeddings: pd.DataFrame, vocab: SidVocab) -> np.ndarray:
    """Rows of an item-embeddings table (item_id, embedding) in ``vocab.item_ids`` order, as [n_items, dim]."""
    by_item = dict(zip(item_embeddings["item_id"].astype(str), item_embeddings["embedding"], strict=True))
    missing = [i for i in vocab.item_ids if i not in by_item]
    if missing:
        raise ValueError(f"{len(missing)} item(s) of the SID vocabulary have no embedding, e.g. {missing[:3]}")
    return np.stack([np.asarray(by_item[i], dtype=np.float32) for i in vocab.item_ids])


def user_interest_tokens(
    interests: pd.DataFrame,
    item_embeddings: pd.DataFrame,
    vocab: SidVocab,
    encode: Callable[[list[str]], np.ndarray],
    settings: SequenceSettings,
) -> dict[str, list[int]]:
    """Interest tokens per user from the ``user_interests`` table (user_id, rank, interest; built from the
    training prefix only) and the item embeddings the SIDs were trained on (item_id, embedding)."""
    item_matrix = item_text_matrix(item_embeddings, vocab)
    ordered = interests.sort_values(["user_id", "rank"], kind="stable")
    texts = ordered["interest"].astype(str).tolist()
    vectors = encode(texts) if texts else np.zeros((0, item_matrix.shape[1]), np.float32)
    per_user: dict[str, list[np.ndarray]] = {}
    for user, vec in zip(ordered["user_id"].astype(str), vectors, strict=True):
        per_user.setdefault(user, []).append(vec)
    return interest_prefix_tokens({u: np.stack(v) for u, v in per_user.items()}, item_matrix, vocab,
                                  n=settings.interest_tokens, depth=settings.interest_depth)


class SampleEncoder:
    """Turns samples into token id lists with one vocabulary; caches each item's SID tokens."""

    def __init__(self, vocab: SidVocab, user_prefix: Mapping[str, Sequence[int]] | None = None) -> None:
        self.vocab = vocab
        self.user_prefix = dict(user_prefix or {})
        self._index = {item: i for i, item in enumerate(vocab.item_ids)}
        self._tokens: dict[str, list[int]] = {}
        for user, toks in self.user_prefix.items():
            bad = [t for t in toks if not 0 <= int(t) < vocab.vocab_size]
            if bad:
                raise ValueError(f"user_prefix[{user!r}] has token ids outside the vocabulary: {bad[:5]}")

    def item_index(self, item_id: str) -> int:
        """Row of ``item_id`` in ``vocab.item_ids`` (the index the decoders return)."""
        try:
            return self._index[item_id]
        except KeyError:
            raise KeyError(f"item {item_id!r} has no semantic ID in the vocabulary") from None

    def item_sid(self, item_id: str) -> list[int]:
        """The item's SID tokens (with the collision suffix when it has one), without eos."""
        if item_id not in self._tokens:
            self.item_index(item_id)
            toks = [int(t) for t in self.vocab.item_tokens(item_id)]
            if toks[-1] == self.vocab.eos_id:
                toks = toks[:-1]
            self._tokens[item_id] = toks
        return self._tokens[item_id]

    def encode_input(self, user_id: str, history: Sequence[str]) -> list[int]:
        """Encoder input: the user's prefix tokens, each history item's SID, then eos."""
        ids = [int(t) for t in self.user_prefix.get(user_id, ())]
        for item in history:
            ids.extend(self.item_sid(item))
        ids.append(self.vocab.eos_id)
        return ids

    def encode(self, sample: SequenceSample) -> dict[str, Any]:
        """``input_ids`` (prefix + history SIDs + eos), ``labels`` (target SID + eos), ``target_index``."""
        return {
            "input_ids": self.encode_input(sample.user_id, sample.history),
            "labels": self.item_sid(sample.target) + [self.vocab.eos_id],
            "target_index": self.item_index(sample.target),
        }


def item_chunks(sequence: Sequence[int], max_history: int) -> list[list[int]]:
    """Chunks of up to ``max_history + 1`` items, each starting at the previous chunk's last item, so every
    item but the first is a target exactly once."""
    return [list(sequence[start : start + max_history + 1])
            for start in range(0, max(1, len(sequence) - 1), max_history)]


class ItemSequenceDataset(Dataset):
    """Item-index rows: training chunks (``chunks=True``) or one window per sample."""

    def __init__(self, samples: Sequence[SequenceSample], encoder: SampleEncoder, *, max_history: int,
                 chunks: bool = False) -> None:
        self.samples = list(samples)
        if chunks:
            per_user: dict[str, list[int]] = {}
            for s in self.samples:  # a user's windows arrive in order: the first holds train item 0
                seq = per_user.setdefault(s.user_id, [encoder.item_index(i) for i in s.history[:1]])
                seq.append(encoder.item_index(s.target))
            self.rows = [{"items": chunk} for seq in per_user.values() for chunk in item_chunks(seq, max_history)]
        else:
            self.rows = [{"items": [encoder.item_index(i) for i in s.history],
                          "labels": encoder.item_sid(s.target) + [encoder.vocab.eos_id],
                          "target_index": encoder.item_index(s.target)} for s in self.samples]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return self.rows[idx]


def collate_items(rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Right-pad item-index rows with -1 (and labels with -100 when the rows are windows)."""
    width = max(1, max(len(r["items"]) for r in rows))
    items = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        items[i, : len(r["items"])] = torch.tensor(r["items"], dtype=torch.long)
    out = {"items": items}
    if "labels" in rows[0]:
        lab_len = max(len(r["labels"]) for r in rows)
        labels = torch.full((len(rows), lab_len), LABEL_PAD, dtype=torch.long)
        for i, r in enumerate(rows):
            labels[i, : len(r["labels"])] = torch.tensor(r["labels"])
        out["labels"] = labels
        out["target_index"] = torch.tensor([r["target_index"] for r in rows], dtype=torch.long)
    return out


class SequenceDataset(Dataset):
    """Encoded samples, held in memory as token lists."""

    def __init__(self, samples: Sequence[SequenceSample], encoder: SampleEncoder) -> None:
        self.samples = list(samples)
        self.rows = [encoder.encode(s) for s in self.samples]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return self.rows[idx]


def collate(rows: Sequence[dict[str, Any]], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-pad a list of encoded samples: inputs with ``pad_id``, labels with -100."""
    n = len(rows)
    in_len = max(len(r["input_ids"]) for r in rows)
    lab_len = max(len(r["labels"]) for r in rows)
    input_ids = torch.full((n, in_len), pad_id, dtype=torch.long)
    attention = torch.zeros((n, in_len), dtype=torch.long)
    labels = torch.full((n, lab_len), LABEL_PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
        attention[i, : len(r["input_ids"])] = 1
        labels[i, : len(r["labels"])] = torch.tensor(r["labels"])
    target = torch.tensor([r["target_index"] for r in rows], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels, "target_index": target}


class EpochSeededSampler(Sampler[int]):
    """Random order drawn from ``seed + epoch``: the same order for an epoch whether or not the run
    was resumed from a checkpoint (Lightning calls ``set_epoch`` before every epoch)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=gen).tolist())

    def __len__(self) -> int:
        return self.n


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Seeded batches of rows of similar length (``seed + epoch`` decides, as :class:`EpochSeededSampler`):
    a random order is cut into pools of ``pool`` batches, each pool sorted by length and cut into batches,
    and the batches shuffled. Item-layout chunks range from 2 to ``max_history + 1`` items; grouped by length,
    a batch pads to its own longest row instead of the epoch's, which saves most of the transformer's work."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, pool: int = 50) -> None:
        self.lengths = torch.as_tensor(list(lengths), dtype=torch.long)
        self.batch_size = batch_size
        self.seed = seed
        self.pool = pool
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=gen)
        size = self.batch_size * self.pool
        batches: list[list[int]] = []
        for start in range(0, len(order), size):
            part = order[start : start + size]
            part = part[torch.argsort(self.lengths[part], stable=True)].tolist()
            batches.extend(part[i : i + self.batch_size] for i in range(0, len(part), self.batch_size))
        return iter([batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()])

    def __len__(self) -> int:
        return len(self.batch_sizes())

    def batch_sizes(self) -> list[int]:
        """The size of every batch of an epoch (in pool order; the epoch shuffles the batches, not the sizes)."""
        size, n = self.batch_size * self.pool, len(self.lengths)
        out: list[int] = []
        for start in range(0, n, size):
            rows = min(size, n - start)
            out += [self.batch_size] * (rows // self.batch_size) + ([rows % self.batch_size] if rows % self.batch_size
                                                                      else [])
        return out


class SequenceDataModule(L.LightningDataModule):
    """Train/valid/test SID sequence loaders over ``interaction_splits`` (seeded shuffling, no workers)."""

    def __init__(
        self,
        splits: pd.DataFrame,
        vocab: SidVocab,
        *,
        max_history: int = 20,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        seed: int = 0,
        user_prefix: Mapping[str, Sequence[int]] | None = None,
        layout: Literal["windows", "items"] = "windows",
        train_windows: bool = False,
    ) -> None:
        super().__init__()
        if layout not in ("windows", "items"):
            raise ValueError(f"layout must be 'windows' or 'items', got {layout!r}")
        if layout == "items" and user_prefix:
            raise ValueError("the item layout has no user-prefix tokens: conditioning comes from the history")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.vocab = vocab
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.seed = seed
        self.max_history = max_history
        self.user_prefix = user_prefix
        self.layout = layout
        self.samples = build_samples(splits, max_history=max_history)
        encoder = SampleEncoder(vocab, user_prefix)
        if layout == "items":  # SFT trains on chunks; GRPO (train_windows) on one target per sample
            self.datasets = {s: ItemSequenceDataset(self.samples[s], encoder, max_history=max_history,
                                                    chunks=s == "train" and not train_windows) for s in SPLITS}
        else:
            self.datasets = {s: SequenceDataset(self.samples[s], encoder) for s in SPLITS}
        if len(self.datasets["train"]) == 0:
            raise ValueError("no training samples: every user needs at least 2 train interactions")

    @classmethod
    def for_settings(
        cls,
        splits: pd.DataFrame,
        vocab: SidVocab,
        sequence: SequenceSettings,
        *,
        batch_size: int,
        seed: int,
        user_prefix: Mapping[str, Sequence[int]] | None,
        eval_batch_size: int | None = 128,
        layout: Literal["windows", "items"] = "windows",
        train_windows: bool = False,
    ) -> SequenceDataModule:
        """The windows a model with ``sequence`` settings is trained and evaluated on; ``seed`` orders the
        training windows. ``user_prefix`` must be given exactly when the settings use user interests.
        ``layout`` is the model's (:func:`layout_of`)."""
        if sequence.use_user_interests and user_prefix is None:
            raise ValueError("these sequence settings use user-interest tokens, but no user_prefix was given")
        if not sequence.use_user_interests and user_prefix:
            raise ValueError("these sequence settings have use_user_interests=False, but a user_prefix was given")
        return cls(splits, vocab, max_history=sequence.max_history, batch_size=batch_size,
                   eval_batch_size=eval_batch_size, seed=seed, user_prefix=user_prefix, layout=layout,
                   train_windows=train_windows)

    def _collate(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return collate_items(rows) if self.layout == "items" else collate(rows, self.vocab.pad_id)

    @property
    def multi_process(self) -> bool:
        """Attached to a trainer running more than one process: the loaders serve this rank's share."""
        return self.trainer is not None and self.trainer.world_size > 1

    def train_dataloader(self) -> DataLoader:
        ds = self.datasets["train"]
        if self.layout == "items":
            sampler = LengthGroupedBatchSampler([len(r["items"]) for r in ds.rows], self.batch_size, self.seed)
            # every rank draws the same global batches and takes its slice of each: batch_size stays global
            batches = RankBatches(sampler) if self.multi_process else sampler
            return DataLoader(ds, batch_sampler=batches, collate_fn=self._collate, num_workers=0)
        if self.multi_process:
            batches = RankBatches(BatchSampler(EpochSeededSampler(len(ds), self.seed), self.batch_size, False))
            return DataLoader(ds, batch_sampler=batches, collate_fn=self._collate, num_workers=0)
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=EpochSeededSampler(len(ds), self.seed),
            collate_fn=self._collate,
            num_workers=0,
        )

    def val_dataloader(self) -> DataLoader:
        if self.multi_process:  # a contiguous shard of the users per rank; the module gathers the rankings
            ds = self.datasets["valid"]
            return DataLoader(ds, batch_size=self.eval_batch_size, sampler=RankRows(len(ds)),
                              collate_fn=self._collate, num_workers=0)
        return self.loader("valid")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")

    def loader(self, split: str, *, batch_size: int | None = None) -> DataLoader:
        """An unshuffled loader over any split (e.g. for ranking all users)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return DataLoader(
            self.datasets[split], batch_size=batch_size or self.eval_batch_size, shuffle=False,
            collate_fn=self._collate, num_workers=0,
        )
