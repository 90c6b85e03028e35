"""Residual-quantised VAE (RQ-VAE) that turns item embeddings into hierarchical codes (IEID, step 4).

Inputs are standardised with statistics of the data → encoder MLP → ``n_levels`` residual codebooks →
decoder MLP. After a short autoencoder warm-up, codebooks start from k-means on the latent residuals of
the whole training set; codes unused for an epoch are reset to recent residuals; and
gradients pass the quantiser by the straight-through estimator or the rotation trick (Fifty et al., 2024).
The reconstruction loss is summed over dimensions and averaged over the batch: averaging over dimensions
as well shrinks it next to the codebook terms and is a known cause of codebook collapse.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from config_schema import from_mapping
from training.distributed import (
    LazyLoaders,
    RankBatches,
    all_gather_objects,
    all_reduce_sum,
    batch_share,
    broadcast_tensor,
    trainer_kwargs,
)
from training.settings import RQVAEConfig

MIN_ITEMS = 4
ITEMS_PER_CODE = 2
LOSS_TERMS = ("loss", "recon", "codebook", "commitment")


def rqvae_config_from_checkpoint(path: str | Path) -> RQVAEConfig:
    """The configuration (seed included) an RQ-VAE checkpoint was trained with."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    hp = ckpt.get("hyper_parameters", {})
    if "config" not in hp:
        raise ValueError(f"{path} is not an RQ-VAE checkpoint (no config hyperparameters)")
    return from_mapping(RQVAEConfig, hp["config"], where=f"RQ-VAE checkpoint {path}")


def resolve_codebook_size(
    n_items: int, codebook_size: int, on_small_catalogue: str
) -> tuple[int, str | None]:
    """Codebook size to use for ``n_items`` items, and a message when it was shrunk.

    Needs ``n_items >= 2 * codebook_size`` (k-means and usage need several items per code). Otherwise
    ``"adapt"`` returns the largest power of two ≤ n_items / 2 with a message, ``"refuse"`` raises.
    """
    if n_items < MIN_ITEMS:
        raise ValueError(f"RQ-VAE needs at least {MIN_ITEMS} items, got {n_items}")
    needed = ITEMS_PER_CODE * codebook_size
    if n_items >= needed:
        return codebook_size, None
    if on_small_catalogue == "refuse":
        raise ValueError(
            f"catalogue too small for the codebook: {n_items} items, but codebook_size={codebook_size} needs "
            f"at least {needed} items ({ITEMS_PER_CODE} per code); lower codebook_size to "
            f"<= {n_items // ITEMS_PER_CODE} or set on_small_catalogue='adapt'"
        )
    if on_small_catalogue != "adapt":
        raise ValueError(f"on_small_catalogue must be 'adapt' or 'refuse', got {on_small_catalogue!r}")
    shrunk = 1 << int(math.floor(math.log2(n_items // ITEMS_PER_CODE)))
    message = (
        f"catalogue of {n_items} items is too small for codebook_size={codebook_size} (needs {needed} items, "
        f"{ITEMS_PER_CODE} per code); codebook_size reduced to {shrunk}"
    )
    return shrunk, message


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _rotate_onto(e: torch.Tensor, q: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Rotation trick: a value equal to ``q`` whose gradient w.r.t. ``e`` is a fixed rotation and scaling."""
    e_norm = e.norm(dim=-1, keepdim=True).clamp(min=eps).detach()
    q_norm = q.norm(dim=-1, keepdim=True).clamp(min=eps).detach()
    e_hat = (e.detach() / e_norm)
    q_hat = (q.detach() / q_norm)
    r = nn.functional.normalize(e_hat + q_hat, dim=-1, eps=eps)
    rotated = e - 2 * r * (r * e).sum(-1, keepdim=True) + 2 * q_hat * (e_hat * e).sum(-1, keepdim=True)
    return rotated * (q_norm / e_norm)


def code_entropy(counts: torch.Tensor) -> float:
    """Entropy (nats) of the empirical code distribution given by ``counts``."""
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts[counts > 0].double() / total
    return float(-(p * p.log()).sum())


class RQVAE(L.LightningModule):
    """RQ-VAE LightningModule. A batch is a tuple whose first element is the input [B, input_dim + image_dim].

    On several processes (``config.distributed``) each rank trains on its slice of every global batch; the
    epoch's losses and code counts are summed over the ranks, and codebook initialisation and dead-code resets
    are computed from the same data on every rank (and broadcast from rank 0), so the codebooks never diverge.
    """

    #: attributes a multi-process fit hands back from rank 0 (``training.distributed.RankZeroResultsLauncher``)
    rank_zero_attributes = ("history",)

    def __init__(self, input_dim: int, config: RQVAEConfig | dict[str, Any] | None = None) -> None:
        super().__init__()
        cfg = config if isinstance(config, RQVAEConfig) else from_mapping(RQVAEConfig, config, where="RQ-VAE config")
        if input_dim < 1:
            raise ValueError(f"input_dim must be >= 1, got {input_dim}")
        self.save_hyperparameters({"input_dim": int(input_dim), "config": asdict(cfg)})
        self.config = cfg
        self.input_dim = int(input_dim)
        self.image_dim = cfg.image_dim or 0
        if self.image_dim:
            self.image_proj = nn.Linear(self.image_dim, self.input_dim)
            self.fusion = nn.Linear(2 * self.input_dim, self.input_dim)
        self.encoder = _mlp([self.input_dim, *cfg.hidden_dims, cfg.latent_dim])
        self.decoder = _mlp([cfg.latent_dim, *reversed(cfg.hidden_dims), self.input_dim + self.image_dim])
        codebooks = torch.randn(cfg.n_levels, cfg.codebook_size, cfg.latent_dim) / math.sqrt(cfg.latent_dim)
        self.codebooks = nn.Parameter(codebooks)
        self.register_buffer("codebooks_initialised", torch.tensor(False))
        # Input standardisation (per-dimension mean, one scale per text/image block), fitted on the data:
        # sentence embeddings share a large common component and have tiny per-dimension spread, which an
        # MLP with default init maps to nearly one latent point, so the codes would collapse.
        total = self.input_dim + self.image_dim
        self.register_buffer("input_mean", torch.zeros(total))
        self.register_buffer("input_scale", torch.ones(total))
        self.register_buffer("normaliser_fitted", torch.tensor(False))
        self.register_buffer("_epoch_counts", torch.zeros(cfg.n_levels, cfg.codebook_size), persistent=False)
        self._reset_pool: list[list[torch.Tensor]] = [[] for _ in range(cfg.n_levels)]
        # The whole training set for k-means after the warm-up (set by train_rqvae; not saved).
        self.kmeans_data: torch.Tensor | None = None
        self._epoch_sums: dict[str, float] = {}
        self._epoch_items = 0
        self.history: list[dict[str, float]] = []

    # --- model -----------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Input [B, input_dim + image_dim] → latent [B, latent_dim], fusing the image part when configured."""
        if x.shape[-1] != self.input_dim + self.image_dim:
            raise ValueError(
                f"expected inputs of width {self.input_dim + self.image_dim} "
                f"(text {self.input_dim} + image {self.image_dim}), got {x.shape[-1]}"
            )
        x = (x - self.input_mean) / self.input_scale
        if self.image_dim:
            text, image = x[..., : self.input_dim], x[..., self.input_dim :]
            x = self.fusion(torch.cat([text, self.image_proj(image)], dim=-1))
        return self.encoder(x)

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor,
                                                   torch.Tensor]:
        """Residual quantisation → (z_q, codes [B, L], residual per level, codebook loss, commitment loss)."""
        residual = z
        z_q = torch.zeros_like(z)
        codes, residuals = [], []
        codebook_loss = z.new_zeros(())
        commitment_loss = z.new_zeros(())
        for level in range(self.config.n_levels):
            book = self.codebooks[level]
            idx = torch.cdist(residual.detach(), book.detach()).argmin(dim=-1)
            chosen = book[idx]
            codebook_loss = codebook_loss + ((residual.detach() - chosen) ** 2).sum(-1).mean()
            commitment_loss = commitment_loss + ((residual - chosen.detach()) ** 2).sum(-1).mean()
            residuals.append(residual.detach())
            codes.append(idx)
            z_q = z_q + chosen
            residual = residual - chosen.detach()
        return z_q, torch.stack(codes, dim=-1), residuals, codebook_loss, commitment_loss

    def forward(self, x: torch.Tensor, quantise: bool = True) -> dict[str, torch.Tensor]:
        """Encode, quantise and decode ``x``; returns reconstruction, codes and the loss terms.

        ``quantise=False`` decodes the latent directly (autoencoder warm-up); the codebook terms are then 0.
        """
        z = self.encode(x)
        z_q, codes, residuals, codebook_loss, commitment_loss = self.quantize(z)
        if not quantise:
            z_pass = z
            codebook_loss = codebook_loss.detach() * 0
            commitment_loss = commitment_loss.detach() * 0
        elif self.config.gradient == "rotation":
            z_pass = _rotate_onto(z, z_q)
        else:
            z_pass = z + (z_q - z).detach()
        x_hat = self.decoder(z_pass) * self.input_scale + self.input_mean
        recon = ((x_hat - x) ** 2).sum(-1).mean()
        loss = recon + codebook_loss + self.config.beta * commitment_loss
        return {
            "loss": loss, "recon": recon, "codebook": codebook_loss, "commitment": commitment_loss,
            "codes": codes, "x_hat": x_hat, "z": z, "z_q": z_q, "residuals": torch.stack(residuals),
        }

    @torch.no_grad()
    def assign_codes(
        self, x: np.ndarray | torch.Tensor, batch_size: int = 8192
    ) -> tuple[np.ndarray, np.ndarray]:
        """Codes [N, L] (int64) and quantisation distances ||z - z_q|| [N] (float32) for inputs ``x``."""
        tensor = torch.as_tensor(np.asarray(x, dtype=np.float32)).to(self.device)
        was_training = self.training
        self.eval()
        codes, dists = [], []
        for start in range(0, tensor.shape[0], batch_size):
            z = self.encode(tensor[start : start + batch_size])
            z_q, c, *_ = self.quantize(z)
            codes.append(c.cpu())
            dists.append((z - z_q).norm(dim=-1).cpu())
        self.train(was_training)
        if not codes:
            return np.zeros((0, self.config.n_levels), np.int64), np.zeros(0, np.float32)
        return torch.cat(codes).numpy().astype(np.int64), torch.cat(dists).numpy().astype(np.float32)

    @torch.no_grad()
    def fit_normaliser(self, x: torch.Tensor) -> None:
        """Set the input mean and the per-block scale (RMS of the centred values) from ``x``."""
        x = x.to(self.input_mean.device, self.input_mean.dtype)
        mean = x.mean(0)
        centred = x - mean
        scale = torch.ones_like(mean)
        for block in (slice(0, self.input_dim), slice(self.input_dim, self.input_dim + self.image_dim)):
            if block.stop > block.start:
                rms = centred[:, block].pow(2).mean().sqrt()
                scale[block] = rms if rms > 1e-12 else 1.0
        self.input_mean.copy_(mean)
        self.input_scale.copy_(scale)
        self.normaliser_fitted.fill_(True)

    @torch.no_grad()
    def initialise_codebooks(self, x: torch.Tensor, seed: int = 0) -> None:
        """k-means on the latent residuals, level by level (at most ``kmeans_max_samples`` rows of ``x``)."""
        from sklearn.cluster import KMeans

        cfg = self.config
        if x.shape[0] > cfg.kmeans_max_samples:
            rows = np.random.default_rng(seed).choice(x.shape[0], cfg.kmeans_max_samples, replace=False)
            x = x[torch.as_tensor(np.sort(rows))]
        residual = self.encode(x.to(self.device)).double().cpu().numpy()
        for level in range(cfg.n_levels):
            n_clusters = min(cfg.codebook_size, residual.shape[0])
            with warnings.catch_warnings():
                # Fewer distinct points than codes (tiny data) is handled below by the dead-code reset.
                warnings.filterwarnings("ignore", message="Number of distinct clusters")
                km = KMeans(
                    n_clusters=n_clusters, n_init=1, max_iter=cfg.kmeans_iters, random_state=seed + level
                )
                labels = km.fit_predict(residual)
            centers = torch.as_tensor(km.cluster_centers_, dtype=self.codebooks.dtype, device=self.device)
            self.codebooks.data[level, :n_clusters] = centers
            residual = residual - km.cluster_centers_[labels]
        self.codebooks_initialised.fill_(True)

    # --- Lightning hooks -------------------------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.parameters(), lr=self.config.learning_rate, weight_decay=self.config.weight_decay
        )

    @property
    def warming_up(self) -> bool:
        """True during the autoencoder warm-up epochs (no quantisation yet)."""
        return self.current_epoch < self.config.warmup_epochs

    @property
    def multi_process(self) -> bool:
        """Training under DDP with more than one process (each batch is a slice of the global batch)."""
        return self._trainer is not None and self.trainer.world_size > 1

    def on_train_epoch_start(self) -> None:
        cfg = self.config
        if not self.warming_up and cfg.kmeans_init and not bool(self.codebooks_initialised):
            if self.kmeans_data is not None:
                self.initialise_codebooks(self.kmeans_data, seed=self.config.seed)
                if self.multi_process:  # the same k-means on every rank; rank 0's result makes sure
                    broadcast_tensor(self.codebooks.data)
        self._epoch_counts.zero_()
        self._epoch_sums = {}
        self._epoch_items = 0

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        warm = self.warming_up
        if not bool(self.normaliser_fitted):
            if self.multi_process:  # each rank would fit its own slice
                raise RuntimeError("a multi-process RQ-VAE fit needs fit_normaliser on all items first "
                                   "(train_rqvae does it)")
            self.fit_normaliser(x)  # only without train_rqvae, which fits it on all items
        if not warm and not bool(self.codebooks_initialised) and self.config.kmeans_init:
            # Only without train_rqvae, which hands the module all items for k-means.
            self.initialise_codebooks(x, seed=self.config.seed)
            if self.multi_process:  # fitted on rank 0's slice, so the same codebooks everywhere
                broadcast_tensor(self.codebooks.data)
        out = self(x, quantise=not warm)
        n = x.shape[0]
        for level in range(self.config.n_levels if not warm else 0):
            self._epoch_counts[level].index_add_(
                0, out["codes"][:, level], torch.ones(n, device=x.device, dtype=self._epoch_counts.dtype)
            )
            if self.config.dead_code_reset:
                self._remember_residuals(level, out["residuals"][level])
        # every term is a mean over rows: under DDP, weighted by this rank's share of the global batch
        share, rows = batch_share(n, n, x.device) if self.multi_process else (None, n)
        share = None if share is None else share.to(out["loss"].dtype)
        for key in LOSS_TERMS:
            value = out[key].detach()
            self._epoch_sums[key] = self._epoch_sums.get(key, 0.0) + float(value) * n
            self.log(f"train/{key}", value if share is None else value * share, on_step=False, on_epoch=True,
                     batch_size=rows, sync_dist=self.multi_process)
        self._epoch_items += n
        return out["loss"] if share is None else out["loss"] * share

    def _remember_residuals(self, level: int, residual: torch.Tensor) -> None:
        # tagged with the step: under DDP the ranks' slices of one global batch are put together again
        pool = self._reset_pool[level]
        pool.append((self.global_step, residual.detach()))
        _cut_pool(pool, self.config.reset_pool_size)

    def _epoch_totals_over_ranks(self) -> None:
        """Sum the epoch's loss sums, item count and code counts over the ranks (every rank gets the totals)."""
        sums = torch.tensor([self._epoch_sums.get(k, 0.0) for k in LOSS_TERMS] + [float(self._epoch_items)],
                            dtype=torch.float64, device=self.device)
        all_reduce_sum(sums)
        self._epoch_sums = dict(zip(LOSS_TERMS, sums[:-1].tolist(), strict=True))
        self._epoch_items = int(sums[-1])
        all_reduce_sum(self._epoch_counts)

    def on_train_epoch_end(self) -> None:
        cfg = self.config
        if self.multi_process:
            self._epoch_totals_over_ranks()
        record: dict[str, float] = {"epoch": float(self.current_epoch)}
        for key, total in self._epoch_sums.items():
            record[key] = total / max(self._epoch_items, 1)
        for level in range(cfg.n_levels if not self.warming_up else 0):
            counts = self._epoch_counts[level]
            usage = float((counts > 0).float().mean())
            entropy = code_entropy(counts)
            record[f"usage_l{level}"] = usage
            record[f"entropy_l{level}"] = entropy
            sync = self.multi_process  # the same value on every rank: syncing only spares Lightning's warning
            self.log(f"codebook/usage_l{level}", usage, sync_dist=sync)
            self.log(f"codebook/entropy_l{level}", entropy, sync_dist=sync)
            self.log(f"codebook/entropy_norm_l{level}", entropy / math.log(cfg.codebook_size), sync_dist=sync)
        last_epoch = self.trainer is not None and self.current_epoch + 1 >= (self.trainer.max_epochs or 0)
        if cfg.dead_code_reset and not last_epoch and not self.warming_up:
            record["dead_codes_reset"] = float(self._reset_dead_codes())
        self.history.append(record)

    @torch.no_grad()
    def _reset_dead_codes(self) -> int:
        """Move codes unused this epoch onto residuals seen recently; returns how many were moved."""
        moved = 0
        for level in range(self.config.n_levels):
            dead = (self._epoch_counts[level] == 0).nonzero().flatten()
            recent = self._recent_residuals(level)
            if dead.numel() == 0 or not recent:
                continue
            pool = torch.cat(recent)
            picks = torch.randint(pool.shape[0], (dead.numel(),), device=pool.device)
            self.codebooks.data[level, dead] = pool[picks].to(self.codebooks.dtype)
            moved += int(dead.numel())
        if self.multi_process:  # every rank drew the same codes from the same pool; rank 0's make sure
            broadcast_tensor(self.codebooks.data)
        self.log("codebook/dead_codes_reset", float(moved), sync_dist=self.multi_process)
        return moved

    def _recent_residuals(self, level: int) -> list[torch.Tensor]:
        """The recent residuals a reset draws from, one tensor per batch. Under DDP: every rank's slices of the
        same global batches, put back in row order and cut as a single process cuts its pool."""
        local = self._reset_pool[level]
        if not self.multi_process:
            return [t for _, t in local]
        ranks = all_gather_objects([(step, t.cpu()) for step, t in local])
        by_rank = [dict(part) for part in ranks]
        steps = sorted(set.intersection(*(set(part) for part in by_rank)))  # every rank kept these
        pool = [(step, torch.cat([part[step] for part in by_rank]).to(self.device)) for step in steps]
        _cut_pool(pool, self.config.reset_pool_size)
        return [t for _, t in pool]


def _cut_pool(pool: list[tuple[int, torch.Tensor]], size: int) -> None:
    """Drop the oldest batches while the ones after the oldest still hold ``size`` rows."""
    while sum(t.shape[0] for _, t in pool) - pool[0][1].shape[0] >= size:
        pool.pop(0)


@dataclass
class RQVAEResult:
    """Outcome of :func:`train_rqvae`."""

    codes: np.ndarray  # [n_items, n_levels] int64
    distances: np.ndarray  # [n_items] float32, ||z - z_q|| (orders items inside a collision group)
    module: RQVAE
    loss_history: list[dict[str, float]]
    checkpoint_path: str | None
    config: RQVAEConfig  # the config actually used (codebook_size may have been adapted)
    message: str | None = None  # set when the codebook was shrunk for a small catalogue
    train_seconds: float = 0.0


def _train_loader(data: torch.Tensor, batch_size: int, seed: int, multi_process: bool) -> torch.utils.data.DataLoader:
    """Shuffled batches drawn from ``seed``; with several processes the same global batches, sliced per rank."""
    dataset = torch.utils.data.TensorDataset(data)
    generator = torch.Generator().manual_seed(seed)
    if not multi_process:
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)
    # the DataLoader and the sampler share the generator, as shuffle=True makes them: the same draws in order
    order = torch.utils.data.RandomSampler(dataset, generator=generator)
    batches = RankBatches(torch.utils.data.BatchSampler(order, batch_size, drop_last=False))
    return torch.utils.data.DataLoader(dataset, batch_sampler=batches, generator=generator)


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence Lightning's banner lines and the 'few dataloader workers' hint for tiny in-memory data."""
    names = ["lightning.pytorch", "lightning.fabric", "lightning"]
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*log_every_n_steps.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            warnings.filterwarnings("ignore", message=".*Checkpoint directory.*exists and is not empty.*")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def train_rqvae(
    embeddings: np.ndarray,
    config: RQVAEConfig | None = None,
    *,
    logger: Any = None,
    checkpoint_dir: str | Path | None = None,
    max_epochs: int | None = None,
    image_embeddings: np.ndarray | None = None,
    accelerator: str = "cpu",
    num_threads: int | None = None,
) -> RQVAEResult:
    """Train an RQ-VAE on item embeddings [n_items, dim] and return every item's codes.

    Seeds everything from ``config.seed`` and runs a deterministic, quiet Lightning Trainer on the processes
    ``config.distributed`` names (``batch_size`` stays the global batch); ``logger`` (e.g. an MLFlowLogger)
    receives losses and per-level usage/entropy; a checkpoint of the last epoch goes to ``checkpoint_dir``.
    ``num_threads`` sets torch's intra-op threads during training (restored afterwards); 1 is much faster
    for this small MLP on a busy CPU, where threads spin against other processes.
    """
    import time

    cfg = config or RQVAEConfig()
    seed = cfg.seed
    x = np.asarray(embeddings)
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"embeddings must be a 2-D array [n_items, dim], got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise ValueError("embeddings must be finite numbers (found NaN/inf or a non-numeric dtype)")
    if image_embeddings is not None:
        img = np.asarray(image_embeddings)
        if img.ndim != 2 or img.shape[0] != x.shape[0]:
            raise ValueError(f"image_embeddings must be [n_items={x.shape[0]}, dim], got shape {img.shape}")
        if not np.isfinite(img).all():
            raise ValueError("image_embeddings must be finite numbers")
        cfg = replace(cfg, image_dim=int(img.shape[1]))
        x = np.concatenate([x, img], axis=1)
    elif cfg.image_dim is not None:
        raise ValueError(f"config.image_dim={cfg.image_dim} but no image_embeddings were given")
    n_items, input_dim = x.shape[0], x.shape[1] - (cfg.image_dim or 0)
    size, message = resolve_codebook_size(n_items, cfg.codebook_size, cfg.on_small_catalogue)
    cfg = replace(cfg, codebook_size=size)
    epochs = int(max_epochs if max_epochs is not None else cfg.max_epochs)
    if epochs < 1:
        raise ValueError(f"max_epochs must be >= 1, got {epochs}")

    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be >= 1 or None, got {num_threads}")

    deterministic_before = torch.are_deterministic_algorithms_enabled()
    threads_before = torch.get_num_threads()
    started = time.perf_counter()
    try:
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        with _quiet_lightning():
            L.seed_everything(seed, workers=True, verbose=False)
            module = RQVAE(input_dim, cfg)
            data = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            module.fit_normaliser(data)
            module.kmeans_data = data
            if cfg.kmeans_init and cfg.warmup_epochs == 0:
                module.initialise_codebooks(data, seed=seed)
            batch_size = min(cfg.batch_size, n_items)
            multi_process = cfg.distributed.world_size > 1
            checkpoint_cb = None
            if checkpoint_dir is not None:
                from lightning.pytorch.callbacks import ModelCheckpoint

                checkpoint_cb = ModelCheckpoint(
                    dirpath=str(checkpoint_dir), filename="rqvae-{epoch:03d}", save_top_k=1, monitor=None
                )
            trainer = L.Trainer(
                # the codebooks get no gradient during the warm-up, which DDP must be told
                **trainer_kwargs(cfg.distributed, accelerator, find_unused_parameters=True),
                max_epochs=epochs,
                logger=logger if logger is not None else False,
                callbacks=[checkpoint_cb] if checkpoint_cb is not None else [],
                enable_checkpointing=checkpoint_cb is not None,
                enable_progress_bar=False,
                enable_model_summary=False,
                deterministic=True,
                log_every_n_steps=max(1, math.ceil(n_items / batch_size)),
                num_sanity_val_steps=0,
            )
            if multi_process:  # each process builds the loader itself (see LazyLoaders)
                trainer.fit(module, datamodule=LazyLoaders(partial(_train_loader, data, batch_size, seed, True)))
            else:
                trainer.fit(module, train_dataloaders=_train_loader(data, batch_size, seed, False))
            module.kmeans_data = None
            if cfg.kmeans_init and not bool(module.codebooks_initialised):
                module.initialise_codebooks(data, seed=seed)  # training ended inside the warm-up
            train_seconds = time.perf_counter() - started
            codes, distances = module.assign_codes(data)
    finally:
        # Lightning's deterministic=True switches torch's flag on for the whole process; restore it.
        torch.use_deterministic_algorithms(deterministic_before)
        torch.set_num_threads(threads_before)
    checkpoint_path = None
    if checkpoint_cb is not None:
        checkpoint_path = checkpoint_cb.best_model_path or checkpoint_cb.last_model_path or None
    return RQVAEResult(
        codes=codes,
        distances=distances,
        module=module,
        loss_history=list(module.history),
        checkpoint_path=checkpoint_path,
        config=cfg,
        message=message,
        train_seconds=train_seconds,
    )
