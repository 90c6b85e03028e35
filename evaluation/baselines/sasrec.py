"""SASRec as a registered baseline: trained on the train prefixes, ranked like the generator.

The model itself lives in :mod:`evaluation.sasrec`. Its history window (``max_len``), ``seed`` and
``accelerator`` are decided by the caller's :class:`BaselineInputs` (``max_history``, ``seed``,
``accelerator``) and cannot be configured here, so SASRec always sees the generator's history cap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from config_schema import to_mapping
from evaluation.baselines.registry import (
    EVAL_SPLITS,
    Baseline,
    BaselineError,
    BaselineInputs,
    BaselineResult,
    register,
    split_result,
)


def _setting(default: Any, description: str) -> Any:
    return field(default=default, metadata={"description": description})


@dataclass
class SASRecConfig:
    """Hyper-parameters of the SASRec baseline (defaults follow the paper's small setting).

    Saved whole in every checkpoint (``hyper_parameters["config"]``), so a checkpoint rebuilds and evaluates
    the model on its own (:func:`load_sasrec`).
    """

    hidden: int = _setting(64, "embedding and hidden size")
    layers: int = _setting(2, "self-attention blocks")
    heads: int = _setting(2, "attention heads (must divide hidden)")
    dropout: float = _setting(0.2, "dropout on embeddings and inside the blocks")
    max_len: int = _setting(20, "history window = the generator's max_history")
    lr: float = _setting(1e-3, "Adam learning rate")
    weight_decay: float = _setting(0.0, "Adam weight decay")
    batch_size: int = _setting(128, "training batch size")
    eval_batch_size: int = _setting(512, "ranking batch size")
    max_epochs: int = _setting(100, "upper bound on training epochs")
    patience: int = _setting(5, "validation epochs without NDCG@10 improvement before stopping")
    seed: int = _setting(0, "seed of initialisation, dropout and data order")
    accelerator: str = _setting("cpu", "Lightning accelerator: cpu, gpu or auto (bit-for-bit determinism only on cpu)")

    def __post_init__(self) -> None:
        positive = {k: getattr(self, k) for k in
                    ("hidden", "layers", "heads", "max_len", "batch_size", "eval_batch_size", "max_epochs")}
        bad = {k: v for k, v in positive.items() if not isinstance(v, int) or v < 1}
        if bad:
            raise ValueError(f"SASRecConfig fields must be positive integers: {bad}")
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")


def _device(accelerator: str) -> str:
    import torch

    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def run(inputs: BaselineInputs, settings: SASRecConfig) -> BaselineResult:
    """Train with early stopping on validation NDCG@10, reload the best checkpoint, rank valid and test."""
    from evaluation.sasrec import rank_split, train_sasrec  # Lightning loads only when SASRec trains

    if inputs.checkpoint_dir is None:
        raise BaselineError("sasrec: BaselineInputs.checkpoint_dir is required (the best model is a checkpoint)")
    trained = train_sasrec(inputs.interaction_splits, settings, logger=inputs.logger,
                           checkpoint_dir=inputs.checkpoint_dir, item_ids=list(inputs.item_ids))
    module = trained.module.to(_device(settings.accelerator))
    metrics, ranks, users = {}, {}, {}
    for split in EVAL_SPLITS:
        samples, ranked, targets = rank_split(module, inputs.interaction_splits, split, inputs.cutoff)
        metrics[split], ranks[split] = split_result(ranked, targets, inputs)
        users[split] = tuple(s.user_id for s in samples)
    info: dict[str, Any] = {
        "best_val_ndcg": float(trained.best_val_ndcg),
        "epochs": len(trained.history),
        "checkpoint": trained.checkpoint,
        "settings": to_mapping(settings),
        "history": trained.history,
    }
    return BaselineResult(metrics=metrics, ranks=ranks, user_ids=users, cutoff=inputs.cutoff, info=info)


BASELINE = register(Baseline(
    key="sasrec", name="SASRec", settings=SASRecConfig, run=run, order=20,
    from_inputs={"max_len": "max_history", "seed": "seed", "accelerator": "accelerator"},
    description="self-attentive sequential recommender (Kang & McAuley, 2018) on the train prefixes",
))
