"""SASRec (Kang & McAuley, 2018): the self-attentive sequential baseline, as a LightningModule.

Item embedding + learned positional embedding, causal self-attention blocks, and the next item scored
by dot product with the item embedding table. Training uses full softmax cross-entropy over all items
at every position of each user's **train prefix** (valid and test items never appear in training,
neither as input nor as target). Evaluation follows the generator's protocol: valid history = train
prefix, test history = train prefix + valid item, full ranking over the whole catalogue, and seen
items are **not** excluded (the generator does not exclude them either).

Item indices are positions in ``module.item_ids`` (0-based, what :mod:`metrics.ranking` expects);
inside the network index 0 is padding, so item ``i`` is embedded at row ``i + 1``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from config_schema import from_mapping, to_mapping
from evaluation.baselines.sasrec import SASRecConfig
from metrics.ranking import evaluate_rankings
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


class SASRecModule(L.LightningModule):
    """SASRec network; ``rank`` returns the top-k item indices for left-padded histories."""

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
        block = nn.TransformerEncoderLayer(
            c.hidden, c.heads, dim_feedforward=c.hidden, dropout=c.dropout, batch_first=True, norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(block, c.layers, norm=nn.LayerNorm(c.hidden), enable_nested_tensor=False)
        nn.init.normal_(self.item_emb.weight, std=c.hidden**-0.5)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        self._val_ranked: list[torch.Tensor] = []
        self._val_targets: list[torch.Tensor] = []

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, L, H] of left-padded item rows ``seqs`` [B, L] (0 = pad, item i = i + 1)."""
        b, length = seqs.shape
        if length > self.config.max_len:
            raise ValueError(f"sequences of length {length} exceed max_len={self.config.max_len}")
        # left padding keeps the newest item at the last position, so positions count back from "now"
        pos = torch.arange(self.config.max_len - length, self.config.max_len, device=seqs.device)
        x = self.item_emb(seqs) * math.sqrt(self.config.hidden) + self.pos_emb(pos)[None]
        x = self.emb_dropout(x)
        pad = seqs == 0
        causal = torch.ones(length, length, dtype=torch.bool, device=seqs.device).triu(1)
        # True = blocked. A pad query may see itself, so no row is fully masked (which would give NaN).
        blocked = causal[None] | pad[:, None, :]
        eye = torch.eye(length, dtype=torch.bool, device=seqs.device)[None]
        blocked = blocked & ~eye
        mask = blocked.repeat_interleave(self.config.heads, dim=0)
        h = self.encoder(x, mask=mask)
        return h * (~pad)[..., None]

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """Dot-product scores of hidden states against every item (padding row excluded)."""
        return hidden @ self.item_emb.weight[1:].T

    def rank(self, seqs: torch.Tensor, k: int) -> torch.Tensor:
        """Top-``k`` item indices (0-based, best first) for the next item after each row of ``seqs``."""
        logits = self.scores(self.encode(seqs)[:, -1])
        return torch.topk(logits, min(k, self.n_items), dim=1).indices

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        seqs, targets = batch
        logits = self.scores(self.encode(seqs))
        loss = nn.functional.cross_entropy(logits.reshape(-1, self.n_items), targets.reshape(-1), ignore_index=IGNORE)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=seqs.shape[0])
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        seqs, targets = batch
        self._val_ranked.append(self.rank(seqs, 10))
        self._val_targets.append(targets)

    def on_validation_epoch_end(self) -> None:
        if not self._val_ranked:
            return
        ranked = _pad_ranked(torch.cat(self._val_ranked).cpu().numpy(), 10)
        targets = torch.cat(self._val_targets).cpu().numpy()
        self._val_ranked.clear()
        self._val_targets.clear()
        metrics = evaluate_rankings(ranked, targets, ks=(5, 10))
        self.log_dict({f"val_{k}": v for k, v in metrics.items()}, prog_bar=False)

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.config.lr, betas=(0.9, 0.98),
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


def _history_tensor(module: SASRecModule, histories: Sequence[Sequence[str]]) -> torch.Tensor:
    max_len = module.config.max_len
    out = torch.zeros(len(histories), max_len, dtype=torch.long)
    for row, hist in enumerate(histories):
        hist = list(hist)[-max_len:]
        if not hist:
            continue  # an all-pad row scores from position embeddings only
        out[row, max_len - len(hist):] = torch.tensor(_item_rows(module, hist, "history")) + 1
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
        n = len(inputs)
        seqs[row, max_len - n:] = torch.tensor(_item_rows(module, inputs, "train")) + 1
        targets[row, max_len - n:] = torch.tensor(_item_rows(module, nexts, "train"))
    return TensorDataset(seqs, targets)


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
    """Validation metrics per epoch, in order."""

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        row = {"epoch": float(trainer.current_epoch)}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("val_", "train_"))})
        self.history.append(row)


@dataclass
class SASRecResult:
    """The best module (by validation NDCG@10), its score, per-epoch history and checkpoint path."""

    module: SASRecModule
    best_val_ndcg: float
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: str = ""


HPARAMS = ("item_ids", "config")


def load_sasrec(checkpoint: str | Path) -> SASRecModule:
    """A :class:`SASRecModule` rebuilt from a checkpoint written by :func:`train_sasrec` alone, in eval mode.

    The checkpoint carries the catalogue (``item_ids``) and the whole :class:`SASRecConfig`; the config is
    rebuilt with :func:`config_schema.from_mapping`, so a key this code does not know is an error naming it
    (never silently dropped), and a missing one takes its current default.
    """
    path = Path(checkpoint)
    state = torch.load(path, map_location="cpu", weights_only=True)
    hparams = state.get("hyper_parameters") if isinstance(state, dict) else None
    if not isinstance(hparams, dict) or "state_dict" not in state:
        raise ValueError(f"{path} is not a SASRec checkpoint: it has no hyper_parameters/state_dict")
    missing = [k for k in HPARAMS if k not in hparams]
    unknown = sorted(set(hparams) - set(HPARAMS))
    if missing or unknown:
        raise ValueError(f"SASRec checkpoint {path}: hyper_parameters must be exactly {list(HPARAMS)}; "
                         f"missing {missing}, unknown {unknown}")
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
    """Train SASRec on the train prefixes of ``splits``, early-stopping on validation NDCG@10.

    ``item_ids`` (default: every item in ``splits``) is the catalogue ranked over. Seeded and
    deterministic on CPU: the same splits, config and seed give the same weights and metrics.
    """
    config = config or SASRecConfig()
    L.seed_everything(config.seed, workers=True, verbose=False)
    items = list(item_ids) if item_ids is not None else catalogue(splits)
    windows = training_sequences(splits, config.max_len)
    if not windows:
        raise ValueError("no training sequences: every user needs at least 2 train interactions")
    valid = build_samples(splits, max_history=config.max_len)["valid"]
    if not valid:
        raise ValueError("no validation samples: early stopping needs each user's valid item")
    module = SASRecModule(items, config)
    train_ds = _train_dataset(module, windows)
    val_ds = _eval_dataset(module, valid)
    train_loader = DataLoader(train_ds, batch_size=config.batch_size, shuffle=True, num_workers=0,
                              generator=torch.Generator().manual_seed(config.seed))
    val_loader = DataLoader(val_ds, batch_size=config.eval_batch_size, shuffle=False, num_workers=0)

    checkpoint_dir = Path(checkpoint_dir)
    best = ModelCheckpoint(dirpath=checkpoint_dir, filename="sasrec-epoch{epoch:03d}", auto_insert_metric_name=False,
                           monitor=VAL_NDCG, mode="max", save_top_k=1)
    history = _ValidationHistory()
    stop = EarlyStopping(monitor=VAL_NDCG, mode="max", patience=config.patience, check_on_train_epoch_end=False)
    if logger is not None:
        params = {f"sasrec_{k}": v for k, v in to_mapping(config).items()}
        logger.log_hyperparams(params | {"sasrec_n_items": len(items)})
    trainer = L.Trainer(
        accelerator=config.accelerator, devices=1, max_epochs=config.max_epochs,
        logger=logger if logger is not None else False, callbacks=[best, stop, history],
        deterministic=True if config.accelerator == "cpu" else "warn", num_sanity_val_steps=0,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(checkpoint_dir),
        log_every_n_steps=10,
    )
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
    best_module = load_sasrec(best.best_model_path)
    score = best.best_model_score
    return SASRecResult(
        module=best_module,
        best_val_ndcg=float(score) if score is not None else float("nan"),
        history=list(history.history),
        checkpoint=str(best.best_model_path),
    )
