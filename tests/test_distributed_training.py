"""Training on several processes with Lightning's DDP (``ddp_spawn``, gloo on CPU): the settings, the sharding of
batches and validation users, and real 2-process runs of the item-level generator (SFT and GRPO), the RQ-VAE and
SASRec compared with the same run on one process, in the library and from inside a Dagster asset.

Why the runs can be compared closely: both draw the same global batches (same sampler and seed); each rank
takes a slice and weights its mean loss by its share of the batch's terms, so DDP's averaged gradient is the
single-process gradient up to the order of float additions (dropout is off: its masks are drawn per rank).
Measured on this machine: weights agree to ~1e-7 relative, validation losses to ~1e-7, rankings and the
validation metrics exactly. The attention key bias is the one exception (~1e-2 relative): its gradient is zero
in exact arithmetic (softmax ignores a constant added to every key), so Adam's normalised steps follow the
round-off, which is why the model is compared through its outputs. The stated tolerances: losses and
log-probabilities 1e-4 relative, weights (all but that bias) 1e-4 relative, metrics 1e-6 absolute, codes and
checkpoint choice exact.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
from torch.utils.data import BatchSampler

from config_schema import UnknownSettingError, from_mapping, to_mapping
from evaluation.sasrec import SASRecConfig, evaluate_sasrec, load_sasrec, train_sasrec
from tests.helpers import toy_sid_frame, toy_splits
from training.distributed import (
    RankBatches,
    RankRows,
    RankZeroResultsLauncher,
    SpawnDDPStrategy,
    batch_share,
    gather_rows,
    trainer_kwargs,
)
from training.generator import GeneratorModule, evaluate_generator, load_generator, train_generator
from training.grpo import train_grpo
from training.rqvae import train_rqvae
from training.sequence_data import EpochSeededSampler, LengthGroupedBatchSampler, SequenceDataModule
from training.settings import DistributedSettings, GeneratorConfig, GRPOConfig, RQVAEConfig, SequenceSettings
from training.sid_vocab import SidVocab

TWO = DistributedSettings(devices=2, strategy="ddp_spawn")
REL = 1e-4  # relative tolerance of losses, log-probabilities and weights between 1 and 2 processes
ABS_METRIC = 1e-6  # NDCG / HR: the same rankings give the same values


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """One torch thread per process (the test machine is shared); spawned processes inherit OMP_NUM_THREADS."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _hp(path: str | Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["hyper_parameters"]


def _assert_close(a: float, b: float, rel: float = REL) -> None:
    assert abs(a - b) <= rel * max(abs(a), abs(b), 1e-12), (a, b)


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"devices": 0}, r"DistributedSettings\.devices must be an integer >= 1, got 0"),
    ({"devices": True}, r"DistributedSettings\.devices must be an integer >= 1, got True"),
    ({"devices": 1.5}, r"DistributedSettings\.devices must be an integer >= 1, got 1\.5"),
    ({"num_nodes": 0}, r"DistributedSettings\.num_nodes must be an integer >= 1, got 0"),
    ({"strategy": "fsdp"}, r"DistributedSettings\.strategy must be one of \['auto', 'ddp_spawn'\], got 'fsdp'$"),
    ({"strategy": "ddp"}, r"got 'ddp': it relaunches the command line .* use 'ddp_spawn'"),
])
def test_bad_settings_are_refused_naming_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DistributedSettings(**kwargs)


def test_every_stage_config_carries_the_one_definition_and_refuses_bad_values():
    for cls in (GeneratorConfig, GRPOConfig, RQVAEConfig, SASRecConfig):
        assert cls().distributed == DistributedSettings()
        built = from_mapping(cls, {"distributed": {"devices": 2, "strategy": "ddp_spawn"}})
        assert built.distributed == TWO and to_mapping(built)["distributed"]["devices"] == 2
        with pytest.raises(ValueError, match=r"DistributedSettings\.devices must be an integer >= 1, got 0"):
            from_mapping(cls, {"distributed": {"devices": 0}})
        with pytest.raises(UnknownSettingError, match=r"\['gpus'\] in .*distributed"):
            from_mapping(cls, {"distributed": {"gpus": 2}})
        with pytest.raises(ValueError, match=rf"{cls.__name__}\.distributed must be DistributedSettings, got int"):
            cls(distributed=2)


def test_launchpad_configs_expose_the_setting_and_refuse_bad_values():
    from assets.discretisation import SemanticIdConfig
    from assets.recommender import GrpoConfig, SftConfig

    for config, library in ((SftConfig, GeneratorConfig), (GrpoConfig, GRPOConfig), (SemanticIdConfig, RQVAEConfig)):
        sub = config.model_fields["distributed"]
        assert "Processes" in sub.description
        assert {"devices", "num_nodes", "strategy"} == set(sub.annotation.model_fields)
        assert all(f.description for f in sub.annotation.model_fields.values())
        assert config(distributed={"devices": 2}).build(library).distributed.devices == 2
        with pytest.raises(Exception, match=r"DistributedSettings\.num_nodes must be an integer >= 1, got 0"):
            config(distributed={"num_nodes": 0})
        with pytest.raises(Exception, match=r"distributed\.strategy"):
            config(distributed={"strategy": "ddp"})


def test_one_process_keeps_lightning_defaults_and_more_spawn_with_our_launcher():
    import lightning as L

    assert trainer_kwargs(DistributedSettings(), "cpu") == {"accelerator": "cpu", "devices": 1, "num_nodes": 1,
                                                            "strategy": "auto"}
    kwargs = trainer_kwargs(DistributedSettings(devices=2), "cpu")  # auto with 2 processes: spawn
    assert isinstance(kwargs["strategy"], SpawnDDPStrategy) and kwargs["use_distributed_sampler"] is False
    trainer = L.Trainer(**kwargs, logger=False, enable_progress_bar=False, enable_model_summary=False)
    assert trainer.world_size == 2 and trainer.num_devices == 2
    assert isinstance(trainer.strategy.launcher, RankZeroResultsLauncher)
    with pytest.raises(TypeError, match="distributed must be DistributedSettings"):
        trainer_kwargs({"devices": 2}, "cpu")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- sharding, on a real process group


def _shard_worker(rank: int, world: int, init: str, out: str) -> None:
    """One rank: iterate the project's samplers inside a gloo process group and save what it saw."""
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        grouped = RankBatches(LengthGroupedBatchSampler(_LENGTHS, batch_size=4, seed=1, pool=2))
        grouped.set_epoch(3)
        windows = RankBatches(BatchSampler(EpochSeededSampler(10, seed=2), 3, drop_last=False))
        windows.set_epoch(1)
        rows = list(RankRows(7))
        weight, global_rows = batch_share((3, 1)[rank], (2, 3)[rank])
        torch.save({
            "grouped": list(grouped), "grouped_len": len(grouped),
            "windows": list(windows), "windows_len": len(windows),
            "rows": rows, "gathered": gather_rows([np.asarray(rows) * 10]),
            "weight": float(weight), "global_rows": global_rows,
        }, os.path.join(out, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


_LENGTHS = [2, 5, 3, 3, 4, 2, 5, 5, 4, 3, 2, 2, 4, 5, 3, 3, 2, 4, 5, 3, 4]  # 21 rows: a last batch of 1


def _check_shards(per_rank: list[list[list[int]]], single: list[list[int]], lengths: list[int]) -> None:
    """Each step's slices are non-empty, near-equal and, joined in rank order, one or more whole consecutive
    global batches; together the steps cover the single-process batches in their order."""
    steps = [sum((ranks[i] for ranks in per_rank), []) for i in range(len(per_rank[0]))]
    assert all(len(r) == len(per_rank[0]) for r in per_rank)  # every rank takes a step at every batch
    for i in range(len(steps)):
        sizes = [len(ranks[i]) for ranks in per_rank]
        assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
    assert sum(steps, []) == sum(single, [])  # the same rows in the same order, each once
    boundaries = np.cumsum([len(b) for b in single]).tolist()
    assert set(np.cumsum([len(s) for s in steps]).tolist()) <= set(boundaries)
    assert len(steps) == sum(1 for b in single if len(b) >= len(per_rank))  # only short batches were folded
    assert sorted(sum(steps, [])) == list(range(len(lengths)))


def test_samplers_shard_every_global_batch_and_gather_in_row_order(tmp_path):
    torch.multiprocessing.start_processes(_shard_worker, args=(2, f"file://{tmp_path / 'store'}", str(tmp_path)),
                                          nprocs=2, start_method="spawn")
    ranks = [torch.load(tmp_path / f"{r}.pt", weights_only=False) for r in range(2)]
    # outside a process group the wrappers are the samplers themselves: the single-process batches
    grouped = LengthGroupedBatchSampler(_LENGTHS, batch_size=4, seed=1, pool=2)
    grouped.set_epoch(3)
    single = list(RankBatches(grouped))
    assert single == list(grouped) and min(len(b) for b in single) == 1  # the epoch has a batch to fold
    _check_shards([r["grouped"] for r in ranks], single, _LENGTHS)
    assert ranks[0]["grouped_len"] == ranks[1]["grouped_len"] == len(ranks[0]["grouped"])
    windows = BatchSampler(EpochSeededSampler(10, seed=2), 3, drop_last=False)
    windows.sampler.set_epoch(1)
    _check_shards([r["windows"] for r in ranks], list(windows), list(range(10)))
    assert ranks[0]["windows_len"] == len(ranks[0]["windows"]) == 3
    # validation: contiguous shards, gathered back in row order on every rank
    assert ranks[0]["rows"] == [0, 1, 2] and ranks[1]["rows"] == [3, 4, 5, 6]
    for r in ranks:
        np.testing.assert_array_equal(r["gathered"], np.arange(7) * 10)
    # 3 and 1 terms: weights 1.5 and 0.5, so the averaged gradient is the mean over all 4 terms; 2 + 3 rows
    assert [(r["weight"], r["global_rows"]) for r in ranks] == [(1.5, 5), (0.5, 5)]


# --------------------------------------------------------------------------- the generator: SFT and GRPO


def _sft_setup(distributed: DistributedSettings):
    vocab = SidVocab.from_frame(toy_sid_frame())  # 8 items; i6 and i7 collide (suffix tokens)
    sequence = SequenceSettings(max_history=4, use_user_interests=False, history_text=True)
    config = GeneratorConfig(arch="item_causal", d_model=16, d_ff=32, num_heads=2, num_encoder_layers=1,
                             dropout=0.0, text_dropout=0.0, lr=1e-2, warmup_ratio=0.0, batch_size=8, beam_width=8,
                             eval_top_k=5, patience=1000, seed=3, max_epochs=3, distributed=distributed)
    # 21 users: 42 training chunks (batches 8,8,8,8,8,2: none to fold) and an odd number of validation users
    splits = toy_splits(n_users=21, length=8)
    dm = SequenceDataModule.for_settings(splits, vocab, sequence, batch_size=config.batch_size, seed=config.seed,
                                         user_prefix=None, layout="items")
    text = np.random.default_rng(0).normal(size=(vocab.n_items, 6)).astype(np.float32)
    return vocab, sequence, config, dm, text


@pytest.fixture(scope="module")
def sft_runs(tmp_path_factory):
    """The same SFT run on one process and on two."""
    runs = {}
    for n, distributed in ((1, DistributedSettings()), (2, TWO)):
        vocab, sequence, config, dm, text = _sft_setup(distributed)
        folder = tmp_path_factory.mktemp(f"sft{n}")
        runs[n] = (train_generator(dm, vocab, config, sequence=sequence, checkpoint_dir=folder, item_text=text),
                   folder)
    return runs


def _outputs(module: GeneratorModule, dm: SequenceDataModule) -> tuple[list[float], dict[str, float]]:
    """Validation losses per batch and the ranking metrics of a trained module."""
    with torch.no_grad():
        losses = [float(module(batch)) for batch in dm.loader("valid")]
    return losses, evaluate_generator(module, dm.loader("valid"))


@pytest.mark.slow  # two spawned processes start in ~20 s on 2 shared cores
def test_item_generator_on_two_processes_matches_one(sft_runs):
    (one, dir1), (two, dir2) = sft_runs[1], sft_runs[2]
    # what rank 0 handed back: epochs, steps, the best score and the per-epoch history
    assert (two.epochs_completed, two.global_step) == (one.epochs_completed, one.global_step) == (3, 18)
    assert len(two.history) == len(one.history) == 3
    for h1, h2 in zip(one.history, two.history, strict=True):
        # computed over all 21 validation users on every rank, not over rank 0's shard
        for key in ("val_ndcg@10", "val_hr@5", "val_ndcg@5"):
            assert abs(h1[key] - h2[key]) <= ABS_METRIC, key
        _assert_close(h1["val_loss"], h2["val_loss"])
    assert abs(two.best_val_ndcg - one.best_val_ndcg) <= ABS_METRIC
    # rank 0 alone wrote the checkpoints: the same files as one process, no duplicates
    assert sorted(p.name for p in dir2.iterdir()) == sorted(p.name for p in dir1.iterdir())
    assert Path(two.best_checkpoint).name == Path(one.best_checkpoint).name
    assert _hp(two.best_checkpoint)["config"]["distributed"] == to_mapping(TWO)
    assert _hp(one.best_checkpoint)["config"]["distributed"] == to_mapping(DistributedSettings())
    m1, m2 = load_generator(one.best_checkpoint), load_generator(two.best_checkpoint)
    assert m2.config.distributed == TWO
    *_, dm, _ = _sft_setup(DistributedSettings())
    (losses1, metrics1), (losses2, metrics2) = _outputs(m1, dm), _outputs(m2, dm)
    for a, b in zip(losses1, losses2, strict=True):
        _assert_close(a, b)
    assert metrics1 == pytest.approx(metrics2, abs=ABS_METRIC)
    for name, w1 in m1.model.state_dict().items():
        if w1.dtype.is_floating_point and "in_proj_bias" not in name:  # the key bias: see the module docstring
            w2 = m2.model.state_dict()[name]
            assert float((w1 - w2).norm()) <= REL * max(float(w1.norm()), 1e-6), name


@pytest.mark.slow
def test_grpo_on_two_processes_matches_one(sft_runs, tmp_path):
    (sft, _), _ = sft_runs[1], sft_runs[2]
    vocab = load_generator(sft.best_checkpoint).vocab
    quality = {item: (i % 4) / 4 for i, item in enumerate(vocab.item_ids)}
    results = {}
    for n, distributed in ((1, DistributedSettings()), (2, TWO)):
        sequence = load_generator(sft.best_checkpoint).sequence
        dm = SequenceDataModule.for_settings(toy_splits(n_users=21, length=8), vocab, sequence, batch_size=8, seed=0,
                                             user_prefix=None, layout="items", train_windows=True)
        config = GRPOConfig(group_size=4, max_epochs=1, batch_size=8, lr=1e-3, seed=0, max_batches_per_epoch=4,
                            val_check_interval=0.5, distributed=distributed)
        results[n] = train_grpo(sft.best_checkpoint, dm, vocab, quality, config, checkpoint_dir=tmp_path / str(n),
                                resume=False)
    one, two = results[1], results[2]
    assert two.kept == one.kept and len(two.history) == len(one.history) == 2
    for h1, h2 in zip(one.history, two.history, strict=True):
        assert h1["global_step"] == h2["global_step"]
        assert abs(h1["val_ndcg@10"] - h2["val_ndcg@10"]) <= ABS_METRIC
        _assert_close(h1["val_loss"], h2["val_loss"])
    assert abs(two.grpo_val_ndcg - one.grpo_val_ndcg) <= ABS_METRIC
    assert _hp(two.grpo_checkpoint)["grpo"]["distributed"] == to_mapping(TWO)
    p1, p2 = load_generator(one.grpo_checkpoint), load_generator(two.grpo_checkpoint)
    dm = SequenceDataModule.for_settings(toy_splits(n_users=21, length=8), vocab, p1.sequence, batch_size=8, seed=0,
                                         user_prefix=None, layout="items")
    for a, b in zip(_outputs(p1, dm)[0], _outputs(p2, dm)[0], strict=True):
        _assert_close(a, b)


# --------------------------------------------------------------------------- RQ-VAE and SASRec


def _clustered(n: int = 150, dim: int = 24, clusters: int = 12) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(clusters, dim))[rng.integers(0, clusters, n)] + 0.1 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.slow
def test_rqvae_on_two_processes_matches_one(tmp_path):
    # 150 items in batches of 64 (64, 64, 22); a warm-up epoch, k-means, then dead codes to reset
    config = RQVAEConfig(n_levels=2, codebook_size=16, latent_dim=8, hidden_dims=(32,), batch_size=64, max_epochs=6,
                         learning_rate=3e-3, seed=3)
    one = train_rqvae(_clustered(), config, checkpoint_dir=tmp_path / "1")
    two = train_rqvae(_clustered(), RQVAEConfig(**{**to_mapping(config), "hidden_dims": (32,), "distributed": TWO}),
                      checkpoint_dir=tmp_path / "2")
    np.testing.assert_array_equal(two.codes, one.codes)
    np.testing.assert_allclose(two.distances, one.distances, rtol=REL, atol=1e-6)
    # the epoch records came back from rank 0, summed over both ranks: losses, usage, and the same resets
    assert [set(h) for h in two.loss_history] == [set(h) for h in one.loss_history]
    assert sum(h.get("dead_codes_reset", 0) for h in one.loss_history) > 0  # the merged reset pool was used
    for h1, h2 in zip(one.loss_history, two.loss_history, strict=True):
        for key, value in h1.items():
            _assert_close(value, h2[key]) if key in ("loss", "recon", "codebook", "commitment") else None
            if key.startswith(("usage", "entropy", "dead_codes", "epoch")):
                assert h2[key] == pytest.approx(value, abs=1e-9), key
    for name, w1 in one.module.state_dict().items():
        w2 = two.module.state_dict()[name]
        assert float((w1.double() - w2.double()).norm()) <= REL * max(float(w1.double().norm()), 1e-6), name
    assert [p.name for p in (tmp_path / "2").iterdir()] == [Path(one.checkpoint_path).name]
    assert _hp(two.checkpoint_path)["config"]["distributed"] == to_mapping(TWO)


@pytest.mark.slow
def test_sasrec_on_two_processes_matches_one(tmp_path):
    splits = toy_splits(n_users=31, length=8)  # 62 training windows (16, 16, 16, 14), 31 validation users
    config = SASRecConfig(hidden=16, layers=1, heads=2, dropout=0.0, max_len=4, batch_size=16, max_epochs=8,
                          patience=1, seed=3, lr=5e-3)
    one = train_sasrec(splits, config, checkpoint_dir=tmp_path / "1")
    two = train_sasrec(splits, replace(config, distributed=TWO), checkpoint_dir=tmp_path / "2")
    assert two.stopped_early == one.stopped_early and two.train_examples == one.train_examples == 62
    assert len(two.history) == len(one.history)
    for h1, h2 in zip(one.history, two.history, strict=True):
        assert abs(h1["val_ndcg@10"] - h2["val_ndcg@10"]) <= ABS_METRIC
        if "train_loss" in h1:
            _assert_close(h1["train_loss"], h2["train_loss"])
    assert abs(two.best_val_ndcg - one.best_val_ndcg) <= ABS_METRIC
    assert Path(two.checkpoint).name == Path(one.checkpoint).name
    assert _hp(two.checkpoint)["config"]["distributed"] == to_mapping(TWO)
    assert load_sasrec(two.checkpoint).config.distributed == TWO
    for split in ("valid", "test"):
        assert evaluate_sasrec(two.module, splits, split) == pytest.approx(
            evaluate_sasrec(one.module, splits, split), abs=ABS_METRIC)


# --------------------------------------------------------------------------- from inside a Dagster asset


@pytest.mark.slow
def test_semantic_ids_asset_trains_on_two_processes_inside_dagster(digr_env):
    from digr_dagster.resources.warehouse import Warehouse
    from tests.test_settings_roads import _materialise, _meta, _report

    rng = np.random.default_rng(0)
    items = [f"i{i:02d}" for i in range(40)]
    emb = pd.DataFrame({"item_id": items, "text": items, "n_descriptors": 0,
                        "embedding": [v.tolist() for v in rng.normal(size=(40, 12)).astype(np.float32)]})
    Warehouse().replace({"item_embeddings": emb})
    base = {"n_levels": 2, "codebook_size": 4, "max_epochs": 3, "seed": 5, "batch_size": 16, "refresh": "retrain"}
    metas = {}
    with dg.DagsterInstance.get() as instance:
        _report(instance, "item_embeddings", emb[["item_id", "text"]])
        for n, distributed in ((1, {}), (2, {"devices": 2})):
            ops = {"semantic_ids": {"config": {**base, "distributed": distributed}}}
            metas[n] = _meta(_materialise(instance, ["semantic_ids"], ops), "semantic_ids")
    one, two = metas[1], metas[2]
    assert two["content_hash"] == one["content_hash"]  # the same codes and SIDs on 2 processes
    assert two["settings"]["distributed"] == {"devices": 2, "num_nodes": 1, "strategy": "auto"}
    assert _hp(two["checkpoint"])["config"]["distributed"]["devices"] == 2
    params = mlflow.get_run(two["mlflow_run_id"]).data.params
    assert params["config.distributed_devices"] == "2" and params["config.distributed_strategy"] == "auto"
    assert Warehouse().read("semantic_ids", order_by="item_id")["item_id"].tolist() == items
