"""Training one model on several processes or machines with Lightning's DDP, from inside a Dagster step.

The settings are :class:`training.settings.DistributedSettings` (defined there, beside every other training
setting, because the Dagster code location reads that module without loading torch); :func:`trainer_kwargs` is
the one place they become Lightning Trainer arguments, for every trainer of the project.

Why ``ddp_spawn`` and a launcher of our own: Lightning's ``ddp`` relaunches ``sys.argv``, which inside a Dagster
step would start Dagster again. ``ddp_spawn`` starts the processes with ``torch.multiprocessing``; rank 0 hands
its weights, ``best_model_path`` and ``callback_metrics`` back to the calling process, but not the callbacks'
state (best score, early stopping, metric history), the loop counters (epoch, global step) or module attributes.
:class:`RankZeroResultsLauncher` sends those back too, so after ``fit`` the caller's trainer, callbacks and module
read as they would after a single-process run, and every write after ``fit`` (checkpoint choice, MLflow, the
warehouse) happens once, in the calling process.

What keeps a multi-process run equal to the single-process one (up to float reduction order):

- every rank draws the same global batches (same sampler, same seed and epoch); :class:`RankBatches` gives each
  rank a contiguous slice of each global batch, so ``batch_size`` keeps meaning the global batch;
- :func:`batch_share` weights each rank's mean loss by its share of the batch's terms, so DDP's average of the
  ranks' gradients is the gradient of the mean over the whole global batch;
- validation splits the rows into contiguous shards (:class:`RankRows`) and :func:`gather_rows` puts the ranks'
  rankings back in row order before the metric, so every rank computes the same value over all validation users
  and early stopping and checkpointing decide alike everywhere.

Dropout draws its masks per rank, so with dropout on, a run on N processes is the same training in distribution,
not number for number.
"""

from __future__ import annotations

import io
import os
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from torch.utils.data import BatchSampler, DataLoader, Sampler

from training.settings import STRATEGIES, DistributedSettings

__all__ = ["DistributedSettings", "LazyLoaders", "LazyLoadersWithValidation", "RankBatches", "RankRows",
           "RankZeroResultsLauncher", "STRATEGIES", "SpawnDDPStrategy", "all_gather_objects",
           "all_reduce_sum", "batch_share", "broadcast_tensor", "gather_rows", "is_main_node",
           "rank_and_world", "trainer_kwargs"]


def trainer_kwargs(distributed: DistributedSettings, accelerator: str, *,
                   find_unused_parameters: bool = False) -> dict[str, Any]:
    """Lightning Trainer arguments (accelerator, devices, num_nodes, strategy) for ``distributed``.

    One process with ``strategy="auto"`` gives Lightning's defaults exactly (training as before). Otherwise the
    strategy is :class:`SpawnDDPStrategy`, and Lightning's own sampler replacement is off: the project's loaders
    shard their batches themselves (:class:`RankBatches`, :class:`RankRows`). ``find_unused_parameters``: the
    model has parameters some steps do not use (the RQ-VAE's codebooks during its warm-up), which DDP must know.
    """
    if not isinstance(distributed, DistributedSettings):
        raise TypeError(f"distributed must be DistributedSettings, got {type(distributed).__name__}")
    base: dict[str, Any] = {"accelerator": accelerator, "devices": distributed.devices,
                            "num_nodes": distributed.num_nodes}
    if distributed.strategy == "auto" and distributed.world_size == 1:
        return {**base, "strategy": "auto"}
    strategy = SpawnDDPStrategy(find_unused_parameters=find_unused_parameters,
                                # no buffer changes during training needs syncing, and per-rank buffers (the
                                # RQ-VAE's code counts) must not be overwritten by rank 0's before every forward
                                forward_sync_buffers=False)
    return {**base, "strategy": strategy, "use_distributed_sampler": False}


class RankZeroResultsLauncher(_MultiProcessingLauncher):
    """Lightning's spawn launcher, also handing back rank 0's callback states, fit-loop progress and the module
    attributes it names in ``rank_zero_attributes`` (see the module docstring). The base class is private to
    Lightning; ``get_extra_results``/``update_main_process_results`` are its hooks for this (checked on 2.6.6)."""

    def get_extra_results(self, trainer: Any) -> dict[str, Any]:
        extra = super().get_extra_results(trainer)
        module = trainer.lightning_module
        state = {
            "callbacks": {cb.state_key: cb.state_dict() for cb in trainer.callbacks},
            "fit_loop": trainer.fit_loop.state_dict(),
            "attributes": {name: getattr(module, name) for name in getattr(module, "rank_zero_attributes", ())},
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)  # bytes, as Lightning sends its metrics: no tensor shares memory across processes
        return {**extra, "rank_zero_state": buffer.getvalue()}

    def update_main_process_results(self, trainer: Any, extra: dict[str, Any]) -> None:
        super().update_main_process_results(trainer, extra)
        state = torch.load(io.BytesIO(extra["rank_zero_state"]), weights_only=False)
        for cb in trainer.callbacks:
            if cb.state_key in state["callbacks"]:
                cb.load_state_dict(state["callbacks"][cb.state_key])
        trainer.fit_loop.load_state_dict(state["fit_loop"])
        for name, value in state["attributes"].items():
            setattr(trainer.lightning_module, name, value)


class SpawnDDPStrategy(DDPStrategy):
    """DDP whose processes are started by :class:`RankZeroResultsLauncher` (spawn), each with the random state
    the calling process had when ``fit`` began."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(start_method="spawn", **kwargs)

    def setup_distributed(self) -> None:
        # Lightning reseeds every process here from PL_GLOBAL_SEED; the spawned processes already hold the caller's
        # random state (the launcher restores it), which is what a single-process run continues from
        states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        super().setup_distributed()
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])

    def _configure_launcher(self) -> None:
        assert self.cluster_environment is not None
        if self.cluster_environment.creates_processes_externally:
            raise RuntimeError(
                f"strategy='ddp_spawn' starts its own processes, but {type(self.cluster_environment).__name__} says "
                "they were started already (LOCAL_RANK, SLURM or torchrun variables are set): run the Dagster step "
                "as one process per node")
        self._launcher = RankZeroResultsLauncher(self, start_method="spawn")


class LazyLoaders(L.LightningDataModule):
    """A training loader built by the process that iterates it (``train``: a picklable callable, e.g. a
    ``functools.partial``). A multi-process ``fit`` pickles its arguments into every process, and a
    ``torch.Generator`` (a seeded shuffle) does not survive that trip in torch 2.13; built in place from the same
    seed, the loader draws exactly what a single process draws."""

    def __init__(self, train: Callable[[], DataLoader]) -> None:
        super().__init__()
        self._train = train

    def train_dataloader(self) -> DataLoader:
        return self._train()


class LazyLoadersWithValidation(LazyLoaders):
    """:class:`LazyLoaders` with a validation loader (``val``) built in place too."""

    def __init__(self, train: Callable[[], DataLoader], val: Callable[[], DataLoader]) -> None:
        super().__init__(train)
        self._val = val

    def val_dataloader(self) -> DataLoader:
        return self._val()


# --------------------------------------------------------------------------- inside the processes


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 outside a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_node() -> bool:
    """True unless this process runs on another machine than node 0 of a multi-node run (``NODE_RANK``, as
    Lightning reads it): only node 0 writes results after training."""
    return os.environ.get("NODE_RANK", "0") in ("", "0")


def _shard(n: int, rank: int, world: int) -> tuple[int, int]:
    """Row range ``[start, stop)`` of ``rank`` when ``n`` rows are cut into ``world`` contiguous, near-equal parts."""
    return rank * n // world, (rank + 1) * n // world


class RankBatches(Sampler[list[int]]):
    """Each rank's contiguous slice of every global batch of ``batches`` (a batch sampler that every rank draws
    identically); the batches themselves outside a process group.

    A global batch with fewer rows than processes is folded into the batch before it (the one after, when it is
    first), so every rank takes a step at every batch. ``set_epoch`` reaches the wrapped samplers.
    """

    def __init__(self, batches: Sampler[list[int]] | BatchSampler) -> None:
        self.batches = batches

    def set_epoch(self, epoch: int) -> None:
        for obj in (self.batches, getattr(self.batches, "sampler", None)):
            if callable(getattr(obj, "set_epoch", None)):
                obj.set_epoch(epoch)

    def _global(self, world: int) -> Iterator[list[int]]:
        pending: list[int] | None = None
        for batch in self.batches:
            batch = list(batch)
            if pending is None:
                pending = batch
            elif len(batch) < world:
                pending = pending + batch
            elif len(pending) < world:  # only the first batch can still be short here
                pending = pending + batch
            else:
                yield pending
                pending = batch
        if pending:
            yield pending

    def __iter__(self) -> Iterator[list[int]]:
        rank, world = rank_and_world()
        if world == 1:
            yield from self.batches
            return
        for batch in self._global(world):
            start, stop = _shard(len(batch), rank, world)
            yield batch[start:stop]

    def __len__(self) -> int:
        _, world = rank_and_world()
        if world == 1:
            return len(self.batches)
        sizes = _batch_sizes(self.batches)  # short batches are folded into a neighbour (see _global)
        return max(1, sum(s >= world for s in sizes)) if sizes else 0


def _batch_sizes(batches: Any) -> list[int]:
    """The sizes of the global batches an epoch of ``batches`` yields, without drawing them (drawing would use up
    a random generator the next epoch needs)."""
    if hasattr(batches, "batch_sizes"):
        return list(batches.batch_sizes())
    if isinstance(batches, BatchSampler):
        n, size = len(batches.sampler), batches.batch_size
        full, rest = divmod(n, size)
        return [size] * full + ([] if batches.drop_last or rest == 0 else [rest])
    raise TypeError(f"{type(batches).__name__} does not say its batch sizes (give it a batch_sizes() method)")


class RankRows(Sampler[int]):
    """Rows ``0..n-1`` in order, or this rank's contiguous share of them inside a process group: validation
    rankings gathered in rank order (:func:`gather_rows`) are then back in row order."""

    def __init__(self, n: int) -> None:
        self.n = int(n)

    def __iter__(self) -> Iterator[int]:
        rank, world = rank_and_world()
        start, stop = _shard(self.n, rank, world)
        return iter(range(start, stop))

    def __len__(self) -> int:
        rank, world = rank_and_world()
        start, stop = _shard(self.n, rank, world)
        return stop - start


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order, on every rank (``[obj]`` outside a process group; tensors travel
    pickled, so give CPU ones)."""
    _, world = rank_and_world()
    if world == 1:
        return [obj]
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, obj)
    return gathered


def gather_rows(parts: Sequence[np.ndarray], *, width: int | None = None) -> np.ndarray:
    """This rank's row blocks concatenated, and inside a process group every rank's, in rank order (the same
    array on every rank). ``width``: the column count of an empty result (a rank with no rows)."""
    local = np.concatenate(parts) if len(parts) else np.zeros((0,) if width is None else (0, width), np.int64)
    gathered = all_gather_objects(local)
    return np.concatenate([g for g in gathered if len(g)] or [local])


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the ranks, in place (unchanged outside a process group)."""
    if rank_and_world()[1] > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def batch_share(terms: torch.Tensor | int, rows: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, int]:
    """For this rank's slice of a global batch: the weight of its mean loss over ``terms`` and the global batch's
    row count (one all-reduce; ``(1, rows)`` outside a process group).

    The weight is this rank's share of the global batch's terms times the number of ranks: DDP averages the ranks'
    gradients, so the weighted losses give the gradient of the mean over the whole global batch. Logged with
    ``batch_size`` = the global rows and ``sync_dist=True``, Lightning's average over the ranks is that global
    mean too; every rank must count the same rows, since Lightning averages the row counts as integers."""
    if rank_and_world()[1] == 1:
        return torch.ones((), dtype=torch.float64, device=device), int(rows)
    local = torch.stack([torch.as_tensor(terms, dtype=torch.float64, device=device).detach().reshape(()),
                         torch.tensor(float(rows), dtype=torch.float64, device=device)])
    total = all_reduce_sum(local.clone())
    world = rank_and_world()[1]
    weight = local[0] * world / total[0] if float(total[0]) > 0 else torch.zeros_like(local[0])
    return weight, int(total[1])


def broadcast_tensor(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """``tensor`` overwritten in place by rank ``src``'s (unchanged outside a process group)."""
    if rank_and_world()[1] > 1:
        dist.broadcast(tensor, src=src)
    return tensor
