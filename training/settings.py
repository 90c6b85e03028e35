"""Every setting of the training stages, defined once: the generator (SFT), its input sequences, GRPO and its
reward, the RQ-VAE, and the processes that train a model (``DistributedSettings``). Plain dataclasses with no
heavy imports, so the Dagster code location derives its launchpad configs from them without loading torch or
Lightning; checkpoints store them and rebuild them with ``config_schema.from_mapping``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: what ``DistributedSettings.strategy`` accepts; Lightning's ``ddp`` is left out on purpose (see its description)
STRATEGIES = ("auto", "ddp_spawn")


@dataclass(frozen=True)
class DistributedSettings:
    """How many Lightning processes train one model. Defined once: every trainer (generator SFT, GRPO, RQ-VAE,
    SASRec) turns it into Trainer arguments with ``training.distributed.trainer_kwargs``, and each stage's config
    carries it as its ``distributed`` field, so the model's checkpoint records it with the rest of its settings.

    Batch sizes stay global: each step's batch is split across the processes and the loss is weighted so the
    averaged gradient is the single-process one."""

    devices: int = field(default=1, metadata={
        "description": "Processes per machine: CPU processes with accelerator=cpu, one per GPU with gpu (1 = "
                       "single-process training, exactly as before)"})
    num_nodes: int = field(default=1, metadata={
        "description": "Machines; each runs the same step with NODE_RANK, MASTER_ADDR and MASTER_PORT set, and "
                       "only node 0 writes results"})
    strategy: Literal["auto", "ddp_spawn"] = field(default="auto", metadata={
        "description": "auto: one process when devices x num_nodes = 1, else ddp_spawn. ddp_spawn: Lightning's "
                       "DDP with processes started by torch.multiprocessing (gloo on CPU, nccl on GPU), which "
                       "works inside a Dagster step; Lightning's 'ddp' relaunches the command line and does not"})

    def __post_init__(self) -> None:
        for name in ("devices", "num_nodes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DistributedSettings.{name} must be an integer >= 1, got {value!r}")
        if self.strategy not in STRATEGIES:
            why = (": it relaunches the command line (sys.argv) in new processes, which does not work inside a "
                   "Dagster step; use 'ddp_spawn'") if str(self.strategy).startswith("ddp") else ""
            raise ValueError(f"DistributedSettings.strategy must be one of {list(STRATEGIES)}, got "
                             f"{self.strategy!r}{why}")

    @property
    def world_size(self) -> int:
        """Processes in all: ``devices * num_nodes``."""
        return self.devices * self.num_nodes


def _distributed_field() -> object:
    return field(default_factory=DistributedSettings, metadata={
        "description": "Processes that train this stage's model (devices, num_nodes, strategy); recorded in its "
                       "checkpoint"})


@dataclass(frozen=True)
class SequenceSettings:
    """How a user's history becomes the generator's input. Defined once: SFT trains with it, the checkpoint
    carries it, and GRPO, evaluation, the baselines and serving read it from there."""

    max_history: int = field(default=20, metadata={
        "description": "History cap of every sequence model: the last N items before a target (SFT, GRPO, "
                       "SASRec, evaluation and serving windows)"})
    use_user_interests: bool = field(default=False, metadata={
        "description": "arch=t5: prepend the user's interest tokens (mined from the whole training prefix, so "
                       "every training window also sees its own future: the item-level model's history_text is "
                       "the per-window road)"})
    interest_tokens: int = field(default=4, metadata={"description": "User interests turned into tokens"})
    interest_depth: int = field(default=2, metadata={"description": "SID levels per interest token group"})
    history_text: bool = field(default=True, metadata={
        "description": "arch=item_causal: feed each history item's text embedding (the one its SID was trained "
                       "on, interest descriptors included) beside its SID, through a zero-initialised gate"})

    def __post_init__(self) -> None:
        if self.max_history < 1 or self.interest_tokens < 1 or self.interest_depth < 1:
            raise ValueError(f"SequenceSettings needs max_history, interest_tokens and interest_depth >= 1, got "
                             f"{self.max_history}, {self.interest_tokens}, {self.interest_depth}")


@dataclass
class GeneratorConfig:
    """Model size, optimisation and decoding settings of the generative recommender."""

    #: item_causal (default): one causal pass per user over item positions, SID head (training.item_generator);
    #: t5: the seq2seq model over SID tokens; causal_lm_lora: an HF causal LM with the SID tokens added
    arch: Literal["t5", "item_causal", "causal_lm_lora"] = "item_causal"
    d_model: int = 128
    d_ff: int = 256
    num_encoder_layers: int = 2
    num_decoder_layers: int = 2
    num_heads: int = 4
    dropout: float = 0.1
    text_dropout: float = field(default=0.1, metadata={
        "description": "arch=item_causal with history_text: chance of dropping an item's text in training"})
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05
    lr_schedule: Literal["linear", "constant"] = "linear"  # after warmup: decay to 0, or hold
    max_epochs: int = 30
    max_batches_per_epoch: int | None = field(default=None, metadata={
        "description": "Cap on training batches per epoch (the epoch's seeded shuffle decides which: a different "
                       "subset each epoch); None = every training window. Sizes an epoch on large data sets"})
    batch_size: int = 64
    gradient_clip_val: float = 1.0
    patience: int = 5  # in validation checks
    val_every_n_epochs: int = 1
    beam_width: int = 20
    eval_top_k: int = 10
    seed: int = 0
    accelerator: str = "cpu"  # Lightning accelerator: cpu, gpu or auto (bit-for-bit determinism only on cpu)
    distributed: DistributedSettings = _distributed_field()
    warm_start: Literal["off", "champion", "previous"] = field(default="off", metadata={
        "description": "Start training from trained weights, token rows matched by meaning (training.warm_start): "
                       "champion = the registered champion, previous = this asset's last model, off = random. "
                       "Without a usable source (none yet, other semantic IDs, sizes or history cap) the run "
                       "starts cold and its metadata says why"})
    warm_start_min_same_sid: float = field(default=0.9, metadata={
        "description": "Share of the items both models know that must keep their semantic ID for a warm start"})
    # causal-LM path
    causal_lm_path: str | None = None
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05

    def __post_init__(self) -> None:
        if self.arch not in ("t5", "item_causal", "causal_lm_lora"):
            raise ValueError(f"arch must be 't5', 'item_causal' or 'causal_lm_lora', got {self.arch!r}")
        if not 0 <= self.text_dropout < 1:
            raise ValueError(f"text_dropout must lie in [0, 1), got {self.text_dropout}")
        if self.warm_start not in ("off", "champion", "previous"):
            raise ValueError(f"warm_start must be 'off', 'champion' or 'previous', got {self.warm_start!r}")
        if not 0.0 <= self.warm_start_min_same_sid <= 1.0:
            raise ValueError(f"warm_start_min_same_sid must lie in [0, 1], got {self.warm_start_min_same_sid}")
        if self.lr_schedule not in ("linear", "constant"):
            raise ValueError(f"lr_schedule must be 'linear' or 'constant', got {self.lr_schedule!r}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        if self.eval_top_k > self.beam_width:
            raise ValueError(f"eval_top_k ({self.eval_top_k}) cannot exceed beam_width ({self.beam_width})")
        if min(self.max_epochs, self.batch_size, self.val_every_n_epochs) < 1:
            raise ValueError("max_epochs, batch_size and val_every_n_epochs must be >= 1")
        if self.max_batches_per_epoch is not None and self.max_batches_per_epoch < 1:
            raise ValueError(f"GeneratorConfig.max_batches_per_epoch must be >= 1 or None, got "
                             f"{self.max_batches_per_epoch}")
        check_distributed(self, "GeneratorConfig")


@dataclass(frozen=True)
class RewardConfig:
    """Weights of the reward terms (defaults from the paper); how they combine is ``GRPOConfig.reward_shape``."""

    lambda_valid: float = field(default=0.1, metadata={
        "description": "Reward of a valid (catalogue) SID; reward_shape=rank pays it on misses only"})
    lambda_pref: float = field(default=0.3, metadata={
        "description": "Partial credit per shared leading SID level with the target (times LCP/levels); "
                       "reward_shape=rank pays it on misses only"})
    alpha: float = field(default=0.5, metadata={
        "description": "Weight of the target's deep-interest quality q, paid on a hit only: a hit earns 1 + alpha*q"})


@dataclass
class GRPOConfig:
    """Group rollouts, reward shape, PPO/KL and optimisation settings of the GRPO stage (the sequence settings
    come from the SFT checkpoint it starts from)."""

    group_size: int = field(default=16, metadata={
        "description": "Candidates per user whose rewards are normalised against each other (rollout=beam: the "
                       "policy's top group_size distinct items; fewer where the catalogue has fewer)"})
    rollout: Literal["sample", "beam"] = field(default="beam", metadata={
        "description": "How the group is drawn from the current policy: beam = the top group_size distinct "
                       "valid items of the trie-constrained beam search (the list a user would be shown); "
                       "sample = group_size trie-constrained samples with replacement (at temperature)"})
    reward_shape: Literal["exact", "rank"] = field(default="rank", metadata={
        "description": "rank: a hit earns 1 + alpha*q, a miss lambda_valid + lambda_pref*LCP/levels (q never "
                       "rewards a miss, prefix credit never tops up a hit); exact: the paper's sum "
                       "1[hit] + lambda_valid*1[valid] + lambda_pref*LCP/levels + alpha*q*1[hit]"})
    temperature: float = field(default=1.0, metadata={"description": "Sampling temperature (rollout=sample only)"})
    clip_eps: float = 0.2
    kl_beta: float = field(default=0.001, metadata={
        "description": "Weight of the per-token KL (k3) to the frozen SFT reference"})
    updates_per_batch: int = 2
    lr: float = field(default=1e-5, metadata={"description": "AdamW learning rate of the policy"})
    weight_decay: float = 0.0
    gradient_clip_val: float = 1.0
    max_epochs: int = 3
    val_every_n_epochs: int = 1
    val_check_interval: float = field(default=0.25, metadata={
        "description": "Fraction of a training epoch between validations, in (0, 1] (Lightning's "
                       "val_check_interval): the best validated policy is kept, so checking several times an "
                       "epoch catches the policy before it drifts"})
    #: cap on training batches per epoch (a shuffled subset each epoch); None = every training sample
    max_batches_per_epoch: int | None = None
    batch_size: int = field(default=64, metadata={"description": "users per GRPO batch (each with group_size "
                                                                 "candidates)"})
    adv_eps: float = 1e-6
    seed: int = field(default=0, metadata={"description": "seeds the order of the training windows, the group "
                                                          "sampling and the trainer"})
    reward: RewardConfig = field(default_factory=RewardConfig)
    distributed: DistributedSettings = _distributed_field()

    def __post_init__(self) -> None:
        if isinstance(self.reward, dict):
            self.reward = RewardConfig(**self.reward)
        check_distributed(self, "GRPOConfig")
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2 (advantages are relative within a group), got {self.group_size}")
        if self.rollout not in ("sample", "beam"):
            raise ValueError(f"GRPOConfig.rollout must be 'sample' or 'beam', got {self.rollout!r}")
        if self.reward_shape not in ("exact", "rank"):
            raise ValueError(f"GRPOConfig.reward_shape must be 'exact' or 'rank', got {self.reward_shape!r}")
        if not 0 < self.val_check_interval <= 1:
            raise ValueError(f"GRPOConfig.val_check_interval must lie in (0, 1] (a fraction of an epoch), got "
                             f"{self.val_check_interval!r}")
        if self.reward_shape == "rank" and self.reward.lambda_valid + self.reward.lambda_pref >= 1:
            raise ValueError(
                f"reward_shape='rank' needs reward.lambda_valid + reward.lambda_pref < 1 (a miss must earn less "
                f"than a hit), got {self.reward.lambda_valid} + {self.reward.lambda_pref}")
        if self.temperature <= 0 or self.clip_eps <= 0 or self.kl_beta < 0:
            raise ValueError("temperature and clip_eps must be > 0 and kl_beta >= 0")
        if self.lr <= 0:
            raise ValueError(f"GRPOConfig.lr must be > 0, got {self.lr}")
        if min(self.updates_per_batch, self.max_epochs, self.val_every_n_epochs, self.batch_size) < 1:
            raise ValueError("updates_per_batch, max_epochs, val_every_n_epochs and batch_size must be >= 1")
        if self.max_batches_per_epoch is not None and self.max_batches_per_epoch < 1:
            raise ValueError(f"max_batches_per_epoch must be >= 1 or None, got {self.max_batches_per_epoch}")


@dataclass(frozen=True)
class RQVAEConfig:
    """Hyper-parameters of the RQ-VAE and its training.

    ``on_small_catalogue``: when there are fewer than ``2 * codebook_size`` items, ``"adapt"`` shrinks the
    codebooks to the largest power of two ≤ n_items / 2 and ``"refuse"`` raises a ValueError.
    ``warmup_epochs``: epochs trained as a plain autoencoder before k-means initialises the codebooks. An
    untrained encoder maps all items close together, so k-means there is undone by the first updates and the
    codes collapse; after the warm-up the latent space already spreads the items.
    ``image_dim``: when set, the input is [text | image]; the image vector is mapped by a linear layer to the
    text dimension, the two are fused by a second linear layer, and the decoder reconstructs both.
    """

    n_levels: int = 3
    codebook_size: int = 256
    latent_dim: int = 32
    hidden_dims: tuple[int, ...] = (256, 128)
    beta: float = 0.25
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    max_epochs: int = 30
    warmup_epochs: int = 2
    kmeans_init: bool = True
    kmeans_iters: int = 50
    kmeans_max_samples: int = 50_000
    dead_code_reset: bool = True
    reset_pool_size: int = 4096
    gradient: Literal["ste", "rotation"] = "ste"
    on_small_catalogue: Literal["adapt", "refuse"] = "adapt"
    image_dim: int | None = None
    seed: int = field(default=0, metadata={"description": "seeds initialisation, k-means, data order and training"})
    refresh: Literal["auto", "retrain"] = field(default="auto", metadata={
        "description": "auto: when the last SID table came from these same settings and every item it holds still "
                       "gets its code from that codebook, new items get fresh SIDs from it (no retraining: "
                       "training.sid_extension) unless it is too crowded; retrain: always train a new codebook"})
    refresh_max_moved_share: float = field(default=0.2, metadata={
        "description": "refresh=auto retrains when more than this share of the new items could not take their "
                       "own code (the codebook no longer fits the catalogue)"})
    refresh_max_fill: float = field(default=0.5, metadata={
        "description": "refresh=auto retrains when the fullest prefix uses more than this share of its last-level "
                       "codes (room for the next new items runs out)"})
    distributed: DistributedSettings = _distributed_field()

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_dims", tuple(int(h) for h in self.hidden_dims))
        check_distributed(self, "RQVAEConfig")
        positive = {
            "n_levels": self.n_levels, "codebook_size": self.codebook_size, "latent_dim": self.latent_dim,
            "batch_size": self.batch_size, "max_epochs": self.max_epochs, "kmeans_iters": self.kmeans_iters,
            "kmeans_max_samples": self.kmeans_max_samples, "reset_pool_size": self.reset_pool_size,
        }
        if self.warmup_epochs < 0:
            raise ValueError(f"RQVAEConfig.warmup_epochs must be >= 0, got {self.warmup_epochs}")
        for name, value in positive.items():
            if int(value) < 1:
                raise ValueError(f"RQVAEConfig.{name} must be >= 1, got {value}")
        if self.codebook_size < 2:
            raise ValueError(f"RQVAEConfig.codebook_size must be >= 2, got {self.codebook_size}")
        if any(h < 1 for h in self.hidden_dims):
            raise ValueError(f"RQVAEConfig.hidden_dims must be positive, got {self.hidden_dims}")
        if self.beta < 0 or self.learning_rate <= 0 or self.weight_decay < 0:
            raise ValueError("RQVAEConfig needs beta >= 0, learning_rate > 0 and weight_decay >= 0")
        if self.gradient not in ("ste", "rotation"):
            raise ValueError(f"RQVAEConfig.gradient must be 'ste' or 'rotation', got {self.gradient!r}")
        if self.on_small_catalogue not in ("adapt", "refuse"):
            raise ValueError(
                f"RQVAEConfig.on_small_catalogue must be 'adapt' or 'refuse', got {self.on_small_catalogue!r}"
            )
        if self.refresh not in ("auto", "retrain"):
            raise ValueError(f"RQVAEConfig.refresh must be 'auto' or 'retrain', got {self.refresh!r}")
        for name in ("refresh_max_moved_share", "refresh_max_fill"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"RQVAEConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.image_dim is not None and self.image_dim < 1:
            raise ValueError(f"RQVAEConfig.image_dim must be >= 1 or None, got {self.image_dim}")


def check_distributed(config: object, owner: str) -> None:
    """A ``distributed`` given as a mapping becomes ``DistributedSettings``; anything else is refused by name."""
    value = config.distributed  # type: ignore[attr-defined]
    if isinstance(value, dict):
        object.__setattr__(config, "distributed", DistributedSettings(**value))
    elif not isinstance(value, DistributedSettings):
        raise ValueError(f"{owner}.distributed must be DistributedSettings, got {type(value).__name__}")
