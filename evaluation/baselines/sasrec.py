"""SASRec as a registered baseline: trained on the train prefixes, ranked like the generator.

The model itself lives in :mod:`evaluation.sasrec`. Its history window (``max_len``), ``seed`` and
``accelerator`` are decided by the caller's :class:`BaselineInputs` (``max_history``, ``seed``,
``accelerator``) and cannot be configured here, so SASRec always sees the generator's history cap.

The defaults are this project's own small SASRec (pre-LN ``nn.TransformerEncoder``, left padding, the
all-positions loss over windows of each train prefix). :data:`PUBLISHED_RECIPE` is the recipe behind the
published SASRec figure on Amazon Scientific (RecBole's defaults as UniSRec ran them); :data:`PROFILES` names
every recipe, so a benchmark names a profile rather than repeating its numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

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
from training.settings import DistributedSettings, check_distributed


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
    inner: int | None = _setting(None, "feed-forward inner size; None = hidden")
    dropout: float = _setting(0.2, "dropout on embeddings and inside the blocks")
    attn_dropout: float | None = _setting(None, "dropout on the attention probabilities; None = dropout")
    layer_norm_eps: float = _setting(1e-5, "epsilon of every LayerNorm")
    init_range: float | None = _setting(
        None, "std of a normal init of every Linear/Embedding weight (biases 0, RecBole); "
              "None = PyTorch's defaults and item embeddings ~ N(0, 1/hidden)")
    encoder: Literal["torch", "recbole"] = _setting(
        "torch", "torch: pre-LN nn.TransformerEncoder, ReLU, sqrt(hidden)-scaled item embeddings, final LayerNorm; "
                 "recbole: RecBole's post-LN blocks, GELU, LayerNorm + dropout on item + position embeddings")
    padding: Literal["left", "right"] = _setting(
        "left", "left: the newest item in the last slot, positions count back from the prediction; "
                "right (RecBole): the window's oldest item at position 0, prediction read at the newest item")
    training: Literal["windows", "prefixes"] = _setting(
        "windows", "windows: each train prefix cut into max_len+1 windows, loss at every position; "
                   "prefixes (RecBole): one example per train target, history = the up-to-max_len items "
                   "before it, loss at its last position only")
    max_len: int = _setting(20, "history window = the generator's max_history")
    lr: float = _setting(1e-3, "Adam learning rate")
    adam_beta2: float = _setting(0.98, "Adam beta2 (beta1 = 0.9); PyTorch's and RecBole's default is 0.999")
    weight_decay: float = _setting(0.0, "Adam weight decay")
    batch_size: int = _setting(128, "training batch size (windows or prefixes)")
    eval_batch_size: int = _setting(512, "ranking batch size")
    max_epochs: int = _setting(100, "upper bound on training epochs")
    patience: int = _setting(5, "validation epochs without NDCG@10 improvement before stopping")
    seed: int = _setting(0, "seed of initialisation, dropout and data order")
    accelerator: str = _setting("cpu", "Lightning accelerator: cpu, gpu or auto (bit-for-bit determinism only on cpu)")
    distributed: DistributedSettings = field(default_factory=DistributedSettings, metadata={
        "description": "Processes that train SASRec (devices, num_nodes, strategy); recorded in its checkpoint"})

    def __post_init__(self) -> None:
        check_distributed(self, "SASRecConfig")
        positive = {k: getattr(self, k) for k in
                    ("hidden", "layers", "heads", "max_len", "batch_size", "eval_batch_size", "max_epochs")}
        if self.inner is not None:
            positive["inner"] = self.inner
        bad = {k: v for k, v in positive.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1}
        if bad:
            raise ValueError(f"SASRecConfig fields must be positive integers: {bad}")
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        for name in ("dropout", "attn_dropout"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"layer_norm_eps must be > 0, got {self.layer_norm_eps}")
        if self.init_range is not None and not self.init_range > 0:
            raise ValueError(f"init_range must be > 0 (or None), got {self.init_range}")
        if not 0.0 <= self.adam_beta2 < 1.0:
            raise ValueError(f"adam_beta2 must be in [0, 1), got {self.adam_beta2}")
        choices = {"encoder": ("torch", "recbole"), "padding": ("left", "right"), "training": ("windows", "prefixes")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")

    @property
    def ffn_size(self) -> int:
        """The feed-forward inner size actually used (``inner``, else ``hidden``)."""
        return self.inner if self.inner is not None else self.hidden

    @property
    def attn_dropout_p(self) -> float:
        """The attention-probability dropout actually used (``attn_dropout``, else ``dropout``)."""
        return self.attn_dropout if self.attn_dropout is not None else self.dropout


#: The recipe behind the published SASRec figure on Amazon Scientific (UniSRec, Hou et al., KDD 2022:
#: R@10 0.1080, N@10 0.0553): RecBole's SASRec defaults as UniSRec ran them — 2 layers, 2 heads, hidden 300,
#: inner 256, hidden and attention dropout 0.5, LayerNorm eps 1e-12, N(0, 0.02) init, GELU post-LN blocks,
#: learned positions from 0 with right padding, cross-entropy over all items, every train prefix (of up to
#: ``max_len`` = 50 items) one example with the loss at its last position, batch 2048, Adam lr 1e-3 (betas 0.9 /
#: 0.999, no weight decay), early stopping on validation NDCG@10 with patience 10, at most 300 epochs.
#: ``max_len``, ``seed`` and ``accelerator`` keep their defaults here: the caller decides them (``from_inputs``).
PUBLISHED_RECIPE = SASRecConfig(
    hidden=300, layers=2, heads=2, inner=256, dropout=0.5, attn_dropout=0.5, layer_norm_eps=1e-12,
    init_range=0.02, encoder="recbole", padding="right", training="prefixes", lr=1e-3, adam_beta2=0.999,
    weight_decay=0.0, batch_size=2048, eval_batch_size=2048, max_epochs=300, patience=10,
)

#: Named SASRec recipes: ``"default"`` (this project's small SASRec) and ``"published-recipe"``.
PROFILES: dict[str, SASRecConfig] = {"default": SASRecConfig(), "published-recipe": PUBLISHED_RECIPE}


def profile(name: str, **decided: Any) -> SASRecConfig:
    """The named recipe with the caller-decided fields (``max_len``, ``seed``, ``accelerator``) set."""
    if name not in PROFILES:
        raise ValueError(f"unknown SASRec profile {name!r}; have {sorted(PROFILES)}")
    unknown = sorted(set(decided) - {"max_len", "seed", "accelerator"})
    if unknown:
        raise ValueError(f"profile() sets only max_len, seed and accelerator; got {unknown}")
    return replace(PROFILES[name], **decided)


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
        # rank_depth: the cut-off, deeper when seen items are excluded so the cut still has that many
        samples, ranked, targets = rank_split(module, inputs.interaction_splits, split, inputs.rank_depth)
        users[split] = tuple(s.user_id for s in samples)
        metrics[split], ranks[split] = split_result(ranked, targets, inputs, split=split, users=users[split])
    info: dict[str, Any] = {
        "best_val_ndcg": float(trained.best_val_ndcg),
        "epochs": len(trained.history),
        "stopped_early": trained.stopped_early,
        "train_examples": trained.train_examples,
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
