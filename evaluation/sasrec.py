"""SASRec (Kang & McAuley, 2018): the self-attentive sequential baseline, as a LightningModule.

Item embedding + learned positional embedding, causal self-attention blocks, and the next item scored
by dot product with the item embedding table. Training uses full softmax cross-entropy over all items on
each user's **train prefix** only (valid and test items never appear in training, neither as input nor as
target), in one of two ways (``SASRecConfig.training``):

- ``"windows"`` (the default): the prefix cut into windows of ``max_len + 1`` items, the loss at every
  position of a window (the original SASRec);
- ``"prefixes"`` (RecBole's sequential augmentation, the published recipe): one example per train target
  after the user's first item, its history the up-to-``max_len`` items before it, the loss at that last
  position only.

Two encoders (``SASRecConfig.encoder``): ``"torch"`` (pre-LN ``nn.TransformerEncoder``) and ``"recbole"``
(RecBole's ``TransformerEncoder``: post-LN blocks, GELU, LayerNorm + dropout on the summed embeddings, its
own attention-probability dropout). Two alignments (``SASRecConfig.padding``): ``"left"`` puts the newest
item in the last slot, so position ids count back from the prediction; ``"right"`` (RecBole) puts the
window's oldest item at position 0 and reads the prediction at the newest item. Either way pads are masked
as keys, so padding never changes a score; rows are grouped by history length and each group cut to its
longest history before encoding (exact under causal attention, and ~10x less work on short histories).

Evaluation follows the generator's protocol: valid history = train prefix, test history = train prefix +
valid item, full ranking over the whole catalogue, and seen items are **not** excluded (the generator does
not exclude them either; nor does RecBole for sequential models).

Item indices are positions in ``module.item_ids`` (0-based, what :mod:`metrics.ranking` expects);
inside the network index 0 is padding, so item ``i`` is embedded at row ``i + 1``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from config_schema import flat_mapping, from_mapping, to_mapping
from evaluation.baselines.sasrec import PROFILES, PUBLISHED_RECIPE, SASRecConfig, profile  # noqa: F401 - re-exported
from metrics.ranking import evaluate_rankings
from training.distributed import (
    LazyLoadersWithValidation,
    RankBatches,
    RankRows,
    batch_share,
    gather_rows,
    trainer_kwargs,
)
from training.sequence_data import SequenceSample, build_samples

VAL_NDCG = "val_ndcg@10"
IGNORE = -100  # cross-entropy ignore index for padded positions


def catalogue(splits: pd.DataFrame) -> list[str]:
    """Every item id in ``splits`` (train, valid and test), sorted: the set SASRec ranks over."""
    if "item_id" not in splits.columns:
        raise KeyError(f"interaction_splits lacks column 'item_id'; have {list(splits.columns)}")
    return sorted(splits["item_id"].astype(str).unique().tolist())


def training_sequences(splits: pd.DataFrame, max_len: int) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """``(inputs, targets)`` windows over each user's train prefix, targets = inputs shifted by one.

    A prefix longer than ``max_len + 1`` is cut, from its end, into windows that overlap by one item, so
    every train transition is a target exactly once. Only ``split == "train"`` rows are read, and
    :func:`~training.sequence_data.build_samples` has checked they precede the user's valid/test rows.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    build_samples(splits, max_history=max_len)  # validates columns, labels and chronological order
    train = splits[splits["split"] == "train"].sort_values(["user_id", "position"], kind="stable")
    out: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
    for _, rows in train.groupby("user_id", sort=True):
        seq = rows["item_id"].astype(str).tolist()
        end = len(seq)
        windows = []
        while end >= 2:
            start = max(0, end - max_len - 1)
            window = seq[start:end]
            windows.append((tuple(window[:-1]), tuple(window[1:])))
            end = start + 1
        out.extend(reversed(windows))
    return out


def training_prefixes(splits: pd.DataFrame, max_len: int) -> list[tuple[tuple[str, ...], str]]:
    """RecBole's sequential augmentation: ``(history, target)`` for every train interaction after each user's
    first, ``history`` = the up-to-``max_len`` train items before it (oldest first).

    A user with ``n`` train items gives ``n - 1`` examples. Only ``split == "train"`` rows are read (checked
    by :func:`~training.sequence_data.build_samples` to precede the user's valid/test rows), so no valid or
    test item is ever an input or a target.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    build_samples(splits, max_history=max_len)  # validates columns, labels and chronological order
    train = splits[splits["split"] == "train"].sort_values(["user_id", "position"], kind="stable")
    out: list[tuple[tuple[str, ...], str]] = []
    for _, rows in train.groupby("user_id", sort=True):
        seq = rows["item_id"].astype(str).tolist()
        out.extend((tuple(seq[max(0, t - max_len):t]), seq[t]) for t in range(1, len(seq)))
    return out


def _length_bounds(max_len: int) -> list[int]:
    """Upper bounds of the history-length groups: 1, 2, 3, 4, 6, 8, 12, 16, ... up to ``max_len``."""
    bounds, k = [1, 2, 3], 4
    while bounds[-1] < max_len:
        bounds.append(k)
        k = k * 3 // 2 if k & (k - 1) == 0 else k * 4 // 3
    return [b for b in bounds if b < max_len] + [max_len]


class _RecBoleBlock(nn.Module):
    """RecBole's ``TransformerLayer``: multi-head self-attention (dropout on the probabilities) → dense →
    dropout → add & LayerNorm; then dense → GELU → dense → dropout → add & LayerNorm (post-LN)."""

    def __init__(self, hidden: int, heads: int, inner: int, dropout: float, attn_dropout: float,
                 eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attn_dropout = nn.Dropout(attn_dropout)
        self.attn_dense = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=eps)
        self.ff_in = nn.Linear(hidden, inner)
        self.ff_out = nn.Linear(inner, hidden)
        self.ff_norm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
        """``x`` [B, L, H]; ``blocked`` [B, L, L], True where a query may not attend to a key."""
        b, length, hidden = x.shape
        d = hidden // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, length, self.heads, d).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        att = att.masked_fill(blocked[:, None], float("-inf")).softmax(dim=-1)
        ctx = (self.attn_dropout(att) @ v).transpose(1, 2).reshape(b, length, hidden)
        x = self.attn_norm(x + self.dropout(self.attn_dense(ctx)))
        return self.ff_norm(x + self.dropout(self.ff_out(nn.functional.gelu(self.ff_in(x)))))


class SASRecModule(L.LightningModule):
    """SASRec network; ``rank`` returns the top-k item indices for histories padded on ``config.padding``'s side.
    The processes it was trained on are ``config.distributed`` (recorded in the checkpoint with the config)."""

    def __init__(self, item_ids: Sequence[str], config: SASRecConfig | dict) -> None:
        super().__init__()
        if not isinstance(config, SASRecConfig):
            config = from_mapping(SASRecConfig, config, where="SASRec config")
        self.config = config
        self.item_ids = [str(i) for i in item_ids]
        if not self.item_ids:
            raise ValueError("SASRec needs at least one item")
        if len(set(self.item_ids)) != len(self.item_ids):
            raise ValueError("item_ids must be unique")
        # logger=False: the item list can be thousands of ids, too long for an MLflow param
        self.save_hyperparameters({"item_ids": self.item_ids, "config": to_mapping(self.config)}, logger=False)
        c = self.config
        self.item_emb = nn.Embedding(len(self.item_ids) + 1, c.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(c.max_len, c.hidden)
        self.emb_dropout = nn.Dropout(c.dropout)
        if c.encoder == "torch":
            block = nn.TransformerEncoderLayer(
                c.hidden, c.heads, dim_feedforward=c.ffn_size, dropout=c.dropout, batch_first=True, norm_first=True,
                layer_norm_eps=c.layer_norm_eps,
            )
            block.self_attn.dropout = c.attn_dropout_p  # a float nn.MultiheadAttention reads in forward
            self.encoder = nn.TransformerEncoder(block, c.layers, norm=nn.LayerNorm(c.hidden, eps=c.layer_norm_eps),
                                                 enable_nested_tensor=False)
        else:
            self.emb_norm = nn.LayerNorm(c.hidden, eps=c.layer_norm_eps)
            self.blocks = nn.ModuleList(
                _RecBoleBlock(c.hidden, c.heads, c.ffn_size, c.dropout, c.attn_dropout_p, c.layer_norm_eps)
                for _ in range(c.layers))
        if c.init_range is None:
            nn.init.normal_(self.item_emb.weight, std=c.hidden**-0.5)
        else:
            self._init_normal(c.init_range)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        self.register_buffer("_bounds", torch.tensor(_length_bounds(c.max_len)), persistent=False)
        self._val_ranked: list[torch.Tensor] = []
        self._val_targets: list[torch.Tensor] = []

    def _init_normal(self, std: float) -> None:
        """RecBole's ``_init_weights``: every Linear / Embedding weight ~ N(0, std), biases 0, LayerNorms 1 / 0."""
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, mean=0.0, std=std)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.MultiheadAttention) and m.in_proj_weight is not None:
                nn.init.normal_(m.in_proj_weight, mean=0.0, std=std)
                nn.init.zeros_(m.in_proj_bias)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, L, H] of padded item rows ``seqs`` [B, L] (0 = pad, item i = i + 1), padded on the
        side ``config.padding`` names; the hidden state of a pad is 0."""
        c = self.config
        b, length = seqs.shape
        if length > c.max_len:
            raise ValueError(f"sequences of length {length} exceed max_len={c.max_len}")
        if c.padding == "left":
            # the newest item sits at the last position, so positions count back from "now"
            pos = torch.arange(c.max_len - length, c.max_len, device=seqs.device)
        else:
            # RecBole: the window's oldest item at position 0
            pos = torch.arange(length, device=seqs.device)
        pad = seqs == 0
        causal = torch.ones(length, length, dtype=torch.bool, device=seqs.device).triu(1)
        # True = blocked. A pad query may see itself, so no row is fully masked (which would give NaN).
        blocked = causal[None] | pad[:, None, :]
        eye = torch.eye(length, dtype=torch.bool, device=seqs.device)[None]
        blocked = blocked & ~eye
        if c.encoder == "torch":
            x = self.item_emb(seqs) * math.sqrt(c.hidden) + self.pos_emb(pos)[None]
            x = self.emb_dropout(x)
            h = self.encoder(x, mask=blocked.repeat_interleave(c.heads, dim=0))
        else:
            h = self.emb_dropout(self.emb_norm(self.item_emb(seqs) + self.pos_emb(pos)[None]))
            for block in self.blocks:
                h = block(h, blocked)
        return h * (~pad)[..., None]

    def _length_groups(self, lengths: torch.Tensor) -> Iterator[torch.Tensor]:
        """Row indices grouped by history length (bounds 1, 2, 3, 4, 6, 8, ...), in a deterministic order."""
        group = torch.bucketize(lengths, self._bounds.to(lengths.device))
        order = torch.sort(group, stable=True).indices
        counts = torch.bincount(group, minlength=len(self._bounds)).tolist()
        yield from (rows for rows in order.split(counts) if len(rows))

    def last_hidden(self, seqs: torch.Tensor) -> torch.Tensor:
        """The hidden state [B, H] at each row's newest item (the prediction of the next one).

        Rows are encoded in groups of similar history length, each cut to its longest history: exact, since
        attention is causal and pads are masked keys, whichever side they are on. An empty history gives 0.
        """
        lengths = (seqs > 0).sum(dim=1)
        parts, rows_in_order = [], []
        for rows in self._length_groups(lengths):
            n = max(int(lengths[rows].max()), 1)
            if self.config.padding == "left":
                parts.append(self.encode(seqs[rows][:, seqs.shape[1] - n:])[:, -1])
            else:
                h = self.encode(seqs[rows][:, :n])
                parts.append(h[torch.arange(len(rows), device=h.device), (lengths[rows] - 1).clamp(min=0)])
            rows_in_order.append(rows)
        order = torch.cat(rows_in_order)
        return torch.cat(parts).index_select(0, torch.argsort(order))

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """Dot-product scores of hidden states against every item (padding row excluded)."""
        return hidden @ self.item_emb.weight[1:].T

    def rank(self, seqs: torch.Tensor, k: int) -> torch.Tensor:
        """Top-``k`` item indices (0-based, best first) for the next item after each row of ``seqs``."""
        logits = self.scores(self.last_hidden(seqs))
        return torch.topk(logits, min(k, self.n_items), dim=1).indices

    @property
    def multi_process(self) -> bool:
        """Training under DDP with more than one process (each batch is a slice of the global batch)."""
        return self._trainer is not None and self.trainer.world_size > 1

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        seqs, targets = batch
        if self.config.training == "prefixes":
            # one target per row, read at its newest item (RecBole's gather at item_seq_len - 1)
            loss = nn.functional.cross_entropy(self.scores(self.last_hidden(seqs)), targets)
            terms = targets.numel()
        else:
            logits = self.scores(self.encode(seqs))
            loss = nn.functional.cross_entropy(logits.reshape(-1, self.n_items), targets.reshape(-1),
                                               ignore_index=IGNORE)
            terms = (targets != IGNORE).sum()
        rows = seqs.shape[0]
        if self.multi_process:  # the gradient of the global batch's mean, not the mean of the ranks' means
            weight, rows = batch_share(terms, rows, loss.device)
            loss = loss * weight.to(loss.dtype)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=rows, sync_dist=self.multi_process)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        seqs, targets = batch
        self._val_ranked.append(self.rank(seqs, 10))
        self._val_targets.append(targets)

    def on_validation_epoch_end(self) -> None:
        if not self._val_ranked and not self.multi_process:
            return
        # every rank ranked its shard of the users: the metric is computed over all of them, on every rank alike
        ranked = gather_rows([_pad_ranked(r.cpu().numpy(), 10) for r in self._val_ranked], width=10)
        targets = gather_rows([t.cpu().numpy() for t in self._val_targets])
        self._val_ranked.clear()
        self._val_targets.clear()
        if not len(targets):
            return
        metrics = evaluate_rankings(ranked, targets, ks=(5, 10))
        self.log_dict({f"val_{k}": v for k, v in metrics.items()}, prog_bar=False, sync_dist=self.multi_process)

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.config.lr, betas=(0.9, self.config.adam_beta2),
                                weight_decay=self.config.weight_decay)


def _pad_ranked(ranked: np.ndarray, k: int) -> np.ndarray:
    """Right-pad with -1 (never a target) when the catalogue has fewer than ``k`` items."""
    ranked = ranked.astype(np.int64)
    if ranked.shape[1] < k:
        ranked = np.pad(ranked, ((0, 0), (0, k - ranked.shape[1])), constant_values=-1)
    return ranked


def _item_rows(module: SASRecModule, items: Sequence[str], what: str) -> list[int]:
    index = {item: i for i, item in enumerate(module.item_ids)}
    missing = sorted({i for i in items if i not in index})
    if missing:
        raise ValueError(f"{len(missing)} {what} item(s) are not in the SASRec catalogue, e.g. {missing[:3]}")
    return [index[i] for i in items]


def _slots(module: SASRecModule, n: int) -> slice:
    """Where ``n`` items go in a row of ``max_len`` slots under the module's padding side."""
    max_len = module.config.max_len
    return slice(max_len - n, max_len) if module.config.padding == "left" else slice(0, n)


def _history_tensor(module: SASRecModule, histories: Sequence[Sequence[str]]) -> torch.Tensor:
    out = torch.zeros(len(histories), module.config.max_len, dtype=torch.long)
    for row, hist in enumerate(histories):
        hist = list(hist)[-module.config.max_len:]
        if not hist:
            continue  # an all-pad row has a zero hidden state: every item scores 0
        out[row, _slots(module, len(hist))] = torch.tensor(_item_rows(module, hist, "history")) + 1
    return out


def _eval_dataset(module: SASRecModule, samples: Sequence[SequenceSample]) -> TensorDataset:
    seqs = _history_tensor(module, [s.history for s in samples])
    targets = torch.tensor(_item_rows(module, [s.target for s in samples], "target"), dtype=torch.long)
    return TensorDataset(seqs, targets)


def _train_dataset(module: SASRecModule, windows: Sequence[tuple[tuple[str, ...], tuple[str, ...]]]) -> TensorDataset:
    max_len = module.config.max_len
    seqs = torch.zeros(len(windows), max_len, dtype=torch.long)
    targets = torch.full((len(windows), max_len), IGNORE, dtype=torch.long)
    for row, (inputs, nexts) in enumerate(windows):
        slots = _slots(module, len(inputs))
        seqs[row, slots] = torch.tensor(_item_rows(module, inputs, "train")) + 1
        targets[row, slots] = torch.tensor(_item_rows(module, nexts, "train"))
    return TensorDataset(seqs, targets)


def _prefix_dataset(module: SASRecModule, examples: Sequence[tuple[tuple[str, ...], str]]) -> TensorDataset:
    """Rows of (padded history [max_len], target index) from :func:`training_prefixes`."""
    seqs = _history_tensor(module, [history for history, _ in examples])
    targets = torch.tensor(_item_rows(module, [target for _, target in examples], "train"), dtype=torch.long)
    return TensorDataset(seqs, targets)


def _train_loader(dataset: TensorDataset, batch_size: int, seed: int, multi_process: bool) -> DataLoader:
    """Shuffled training batches drawn from ``seed``; with several processes the same global batches, sliced per
    rank (the sampler shares the DataLoader's generator, as ``shuffle=True`` makes them: the same draws)."""
    generator = torch.Generator().manual_seed(seed)
    if not multi_process:
        return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0, generator=generator)
    batches = RankBatches(BatchSampler(RandomSampler(dataset, generator=generator), batch_size, drop_last=False))
    return DataLoader(dataset, batch_sampler=batches, num_workers=0, generator=generator)


def _val_loader(dataset: TensorDataset, batch_size: int, multi_process: bool) -> DataLoader:
    """Validation rows in order; with several processes each rank's contiguous shard (gathered back in order)."""
    if not multi_process:
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    return DataLoader(dataset, batch_size=batch_size, sampler=RankRows(len(dataset)), num_workers=0)


def rank_sasrec(module: SASRecModule, samples: Sequence[SequenceSample], k: int) -> np.ndarray:
    """Top-``k`` item indices [n, k] (into ``module.item_ids``) for each sample's history.

    Full ranking over the catalogue; seen items are not excluded. Columns beyond the catalogue size
    are ``-1``. Raises ``ValueError`` for a non-positive ``k`` or history items outside the catalogue.
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not samples:
        return np.zeros((0, k), dtype=np.int64)
    seqs = _history_tensor(module, [s.history for s in samples]).to(module.device)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            parts = [module.rank(chunk, k) for chunk in seqs.split(module.config.eval_batch_size)]
    finally:
        module.train(was_training)
    return _pad_ranked(torch.cat(parts).cpu().numpy(), k)


def rank_split(
    module: SASRecModule, splits: pd.DataFrame, split: Literal["valid", "test"], k: int,
) -> tuple[list[SequenceSample], np.ndarray, np.ndarray]:
    """The ``split`` samples (one per user, in user order), their top-``k`` rankings [n, k] and targets [n]
    (indices into ``module.item_ids``), under the protocol of :func:`evaluate_sasrec`."""
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    samples = build_samples(splits, max_history=module.config.max_len)[split]
    if not samples:
        raise ValueError(f"no {split} samples in interaction_splits")
    targets = np.asarray(_item_rows(module, [s.target for s in samples], f"{split} target"), dtype=np.int64)
    return samples, rank_sasrec(module, samples, k), targets


def evaluate_sasrec(
    module: SASRecModule, splits: pd.DataFrame, split: Literal["valid", "test"] = "valid",
    ks: Sequence[int] = (5, 10),
) -> dict[str, float]:
    """HR@K / NDCG@K on the ``split`` targets (valid: train-prefix history; test: train prefix + valid item)."""
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    ks = tuple(ks)
    if not ks:
        raise ValueError("ks must name at least one cut-off")
    _, ranked, targets = rank_split(module, splits, split, max(ks))
    return evaluate_rankings(ranked, targets, ks=ks)


class _ValidationHistory(Callback):
    """Validation metrics per epoch, in order (a state, so a multi-process fit hands it back from rank 0)."""

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        row = {"epoch": float(trainer.current_epoch)}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("val_", "train_"))})
        self.history.append(row)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict["history"])


@dataclass
class SASRecResult:
    """The best module (by validation NDCG@10), its score, per-epoch history and checkpoint path; whether early
    stopping ended training (else ``max_epochs`` did) and how many training rows (windows or prefixes) an
    epoch had."""

    module: SASRecModule
    best_val_ndcg: float
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: str = ""
    stopped_early: bool = False
    train_examples: int = 0


HPARAMS = ("item_ids", "config")


def load_sasrec(checkpoint: str | Path) -> SASRecModule:
    """A :class:`SASRecModule` rebuilt from a checkpoint written by :func:`train_sasrec` alone, in eval mode.

    The checkpoint carries the catalogue (``item_ids``) and the whole :class:`SASRecConfig` (the processes it was
    trained on included); the settings are rebuilt with :func:`config_schema.from_mapping`, so a key this
    code does not know is an error naming it (never silently dropped), and a missing one takes its current default.
    """
    path = Path(checkpoint)
    state = torch.load(path, map_location="cpu", weights_only=True)
    hparams = state.get("hyper_parameters") if isinstance(state, dict) else None
    if not isinstance(hparams, dict) or "state_dict" not in state:
        raise ValueError(f"{path} is not a SASRec checkpoint: it has no hyper_parameters/state_dict")
    missing = [k for k in HPARAMS if k not in hparams]
    unknown = sorted(set(hparams) - set(HPARAMS))
    if missing or unknown:
        raise ValueError(f"SASRec checkpoint {path}: hyper_parameters must be {list(HPARAMS)}; missing {missing}, "
                         f"unknown {unknown}")
    config = from_mapping(SASRecConfig, hparams["config"], where=f"SASRec checkpoint {path} config")
    module = SASRecModule(hparams["item_ids"], config)
    module.load_state_dict(state["state_dict"])
    return module.eval()


def train_sasrec(
    splits: pd.DataFrame,
    config: SASRecConfig | None = None,
    *,
    logger: Any = None,
    checkpoint_dir: str | Path,
    item_ids: Sequence[str] | None = None,
) -> SASRecResult:
    """Train SASRec on the train prefixes of ``splits`` (windows or prefixes, ``config.training``), early-stopping
    on validation NDCG@10.

    ``item_ids`` (default: every item in ``splits``) is the catalogue ranked over. ``config.distributed`` (default
    one process): the processes that train it; ``batch_size`` stays the global batch. Seeded
    and deterministic on CPU: the same splits, config and seed give the same weights and metrics.
    """
    config = config or SASRecConfig()
    distributed = config.distributed
    L.seed_everything(config.seed, workers=True, verbose=False)
    items = list(item_ids) if item_ids is not None else catalogue(splits)
    if config.training == "prefixes":
        examples: Sequence[Any] = training_prefixes(splits, config.max_len)
    else:
        examples = training_sequences(splits, config.max_len)
    if not examples:
        raise ValueError("no training sequences: every user needs at least 2 train interactions")
    valid = build_samples(splits, max_history=config.max_len)["valid"]
    if not valid:
        raise ValueError("no validation samples: early stopping needs each user's valid item")
    module = SASRecModule(items, config)
    train_ds = _prefix_dataset(module, examples) if config.training == "prefixes" else _train_dataset(module, examples)
    val_ds = _eval_dataset(module, valid)

    checkpoint_dir = Path(checkpoint_dir)
    best = ModelCheckpoint(dirpath=checkpoint_dir, filename="sasrec-epoch{epoch:03d}", auto_insert_metric_name=False,
                           monitor=VAL_NDCG, mode="max", save_top_k=1)
    history = _ValidationHistory()
    stop = EarlyStopping(monitor=VAL_NDCG, mode="max", patience=config.patience, check_on_train_epoch_end=False)
    if logger is not None:
        params = {f"sasrec_{k}": v for k, v in flat_mapping(config).items()}
        logger.log_hyperparams(params | {"sasrec_n_items": len(items)})
    trainer = L.Trainer(
        **trainer_kwargs(distributed, config.accelerator), max_epochs=config.max_epochs,
        logger=logger if logger is not None else False, callbacks=[best, stop, history],
        deterministic=True if config.accelerator == "cpu" else "warn", num_sanity_val_steps=0,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(checkpoint_dir),
        log_every_n_steps=10,
    )
    train = partial(_train_loader, train_ds, config.batch_size, config.seed)
    val = partial(_val_loader, val_ds, config.eval_batch_size)
    if distributed.world_size > 1:  # each process builds its loaders (a seeded shuffle does not survive the trip)
        trainer.fit(module, datamodule=LazyLoadersWithValidation(partial(train, True), partial(val, True)))
    else:
        trainer.fit(module, train_dataloaders=train(False), val_dataloaders=val(False))
    best_module = load_sasrec(best.best_model_path)
    score = best.best_model_score
    return SASRecResult(
        module=best_module,
        best_val_ndcg=float(score) if score is not None else float("nan"),
        history=list(history.history),
        checkpoint=str(best.best_model_path),
        stopped_early=bool(stop.stopped_epoch) or trainer.current_epoch < config.max_epochs,
        train_examples=len(train_ds),
    )
