"""RQ-VAE: training lowers the loss, is reproducible, logs health, checkpoints, and handles small catalogues."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from training.codebook_health import table_health
from training.rqvae import RQVAE, RQVAEConfig, _rotate_onto, resolve_codebook_size, train_rqvae
from training.semantic_ids import SemanticIdTable

SMALL = RQVAEConfig(
    n_levels=2, codebook_size=16, latent_dim=8, hidden_dims=(32,), batch_size=64, max_epochs=10, learning_rate=3e-3
)


def clustered(n: int = 400, dim: int = 24, clusters: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim))
    x = centers[rng.integers(0, clusters, n)] + 0.1 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models train much faster on one thread when other processes share the CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return clustered()


@pytest.fixture(scope="module")
def trained(data: np.ndarray, tmp_path_factory: pytest.TempPathFactory):
    return train_rqvae(data, replace(SMALL, seed=3), checkpoint_dir=tmp_path_factory.mktemp("ckpt"))


def test_reconstruction_loss_falls(trained) -> None:
    history = trained.loss_history
    assert len(history) == SMALL.max_epochs
    assert history[-1]["recon"] < 0.8 * history[0]["recon"]
    assert history[-1]["loss"] < history[0]["loss"]


def test_codes_shape_range_and_health(trained, data: np.ndarray) -> None:
    assert trained.codes.shape == (len(data), SMALL.n_levels)
    assert trained.codes.dtype == np.int64
    assert trained.codes.min() >= 0 and trained.codes.max() < SMALL.codebook_size
    assert trained.distances.shape == (len(data),) and (trained.distances >= 0).all()
    assert trained.message is None
    table = SemanticIdTable.from_codes([f"i{k}" for k in range(len(data))], trained.codes, trained.distances)
    health = table_health(table, SMALL.codebook_size)
    assert health.uniqueness_after_suffix == 1.0
    # k-means init and dead-code reset keep the first level well used on 12 clusters of data
    assert health.usage[0] >= 0.5


def test_same_seed_gives_same_codes_and_sids(trained, data: np.ndarray, tmp_path: Path) -> None:
    again = train_rqvae(data, replace(SMALL, seed=3), checkpoint_dir=tmp_path)
    np.testing.assert_array_equal(again.codes, trained.codes)
    ids = [f"i{k}" for k in range(len(data))]
    one = SemanticIdTable.from_codes(ids, trained.codes, trained.distances).to_frame()
    two = SemanticIdTable.from_codes(ids, again.codes, again.distances).to_frame()
    pd.testing.assert_frame_equal(one, two)


def test_checkpoint_reloads_to_the_same_codes(trained, data: np.ndarray) -> None:
    assert trained.checkpoint_path is not None and Path(trained.checkpoint_path).is_file()
    reloaded = RQVAE.load_from_checkpoint(trained.checkpoint_path, map_location="cpu")
    assert reloaded.config == trained.config
    codes, distances = reloaded.assign_codes(data)
    np.testing.assert_array_equal(codes, trained.codes)
    np.testing.assert_allclose(distances, trained.distances, atol=1e-6)


def test_logger_receives_losses_usage_and_entropy(data: np.ndarray, tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(save_dir=str(tmp_path), name="rq")
    train_rqvae(data, replace(SMALL, seed=0), logger=logger, max_epochs=3)
    metrics = pd.read_csv(Path(logger.log_dir) / "metrics.csv")
    for column in ("train/recon", "train/commitment", "codebook/usage_l0", "codebook/entropy_l1"):
        assert column in metrics.columns
    usage = metrics["codebook/usage_l0"].dropna()
    assert len(usage) == 3 - SMALL.warmup_epochs and usage.between(0, 1).all()  # none during warm-up


def test_refuse_small_catalogue_names_the_numbers() -> None:
    config = RQVAEConfig(codebook_size=256, on_small_catalogue="refuse")
    with pytest.raises(ValueError, match=r"100 items.*codebook_size=256 needs at least 512 items"):
        train_rqvae(clustered(100), replace(config, seed=0), max_epochs=1)


def test_adapt_small_catalogue_shrinks_to_a_power_of_two() -> None:
    config = RQVAEConfig(n_levels=2, codebook_size=256, latent_dim=8, hidden_dims=(16,), on_small_catalogue="adapt")
    result = train_rqvae(clustered(100), replace(config, seed=0), max_epochs=2)
    assert result.config.codebook_size == 32  # largest power of two <= 100 / 2
    assert result.message is not None and "reduced to 32" in result.message and "100 items" in result.message
    assert result.codes.max() < 32


@pytest.mark.parametrize(
    ("n_items", "size", "expected"),
    [(512, 256, 256), (511, 256, 128), (100, 256, 32), (4, 256, 2), (10_000, 256, 256)],
)
def test_resolve_codebook_size(n_items: int, size: int, expected: int) -> None:
    assert resolve_codebook_size(n_items, size, "adapt")[0] == expected


def test_too_few_items_for_any_codebook() -> None:
    with pytest.raises(ValueError, match="at least 4 items, got 3"):
        resolve_codebook_size(3, 256, "adapt")


def test_dead_code_reset_revives_unused_codes(data: np.ndarray) -> None:
    # Without k-means the random codebooks leave most codes unused; the reset moves them onto the data.
    base = RQVAEConfig(n_levels=2, codebook_size=16, latent_dim=8, hidden_dims=(32,), batch_size=64,
                       kmeans_init=False, warmup_epochs=0, max_epochs=4)
    revived = train_rqvae(data, replace(base, seed=5))
    frozen = train_rqvae(data, replace(base, dead_code_reset=False, seed=5))
    assert revived.loss_history[0]["dead_codes_reset"] > 0
    assert "dead_codes_reset" not in frozen.loss_history[0]
    assert revived.loss_history[-1]["usage_l0"] > frozen.loss_history[-1]["usage_l0"]


def test_rotation_trick_passes_the_quantised_value_and_a_gradient() -> None:
    torch.manual_seed(0)
    e = torch.randn(5, 8, requires_grad=True)
    q = torch.randn(5, 8)
    out = _rotate_onto(e, q)
    torch.testing.assert_close(out, q, atol=1e-5, rtol=1e-5)
    out.sum().backward()
    assert e.grad is not None and e.grad.abs().sum() > 0


def test_rotation_gradient_trains(data: np.ndarray) -> None:
    result = train_rqvae(data, replace(SMALL, gradient="rotation", seed=1), max_epochs=5)
    assert result.loss_history[-1]["recon"] < result.loss_history[0]["recon"]


def test_image_fusion_reconstructs_text_and_image(data: np.ndarray) -> None:
    images = clustered(len(data), dim=10, seed=9)
    result = train_rqvae(data, replace(SMALL, seed=0), image_embeddings=images, max_epochs=4)
    assert result.config.image_dim == 10
    assert result.codes.shape == (len(data), 2)
    assert result.loss_history[-1]["recon"] < result.loss_history[0]["recon"]
    with pytest.raises(ValueError, match="image_embeddings must be"):
        train_rqvae(data, replace(SMALL, seed=0), image_embeddings=images[:10], max_epochs=1)


@pytest.mark.parametrize(
    ("embeddings", "message"),
    [
        (np.zeros(10, dtype=np.float32), "2-D array"),
        (np.full((50, 4), np.nan, dtype=np.float32), "finite"),
    ],
)
def test_bad_embeddings_are_refused(embeddings: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        train_rqvae(embeddings, replace(SMALL, seed=0), max_epochs=1)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"gradient": "magic"}, "gradient must be"),
        ({"on_small_catalogue": "ignore"}, "on_small_catalogue must be"),
        ({"codebook_size": 1}, "codebook_size must be >= 2"),
        ({"n_levels": 0}, "n_levels must be >= 1"),
    ],
)
def test_bad_config_is_refused(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RQVAEConfig(**overrides)


def test_embeddings_with_a_shared_component_do_not_collapse() -> None:
    # Like sentence embeddings: one large common direction plus small item-specific spread. Without input
    # standardisation every item lands on the same code after the first updates.
    rng = np.random.default_rng(4)
    common = rng.normal(size=384)
    centers = rng.normal(size=(20, 384))
    x = 3 * common + centers[rng.integers(0, 20, 500)] + 0.1 * rng.normal(size=(500, 384))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    result = train_rqvae(x, replace(SMALL, seed=0))
    assert len(np.unique(result.codes[:, 0])) >= 12  # 3 when the normalisation is switched off
    assert np.unique(result.codes, axis=0).shape[0] >= 30  # 9 when it is switched off


def test_training_that_ends_in_the_warm_up_still_initialises_codes(data: np.ndarray) -> None:
    result = train_rqvae(data, replace(SMALL, seed=0), max_epochs=1)
    assert SMALL.warmup_epochs > 1
    assert bool(result.module.codebooks_initialised)
    assert len(np.unique(result.codes[:, 0])) >= 8


@pytest.mark.filterwarnings("ignore:.*LeafSpec.*")  # lightning 2.6.6 vs torch 2.13, upstream
def test_module_trains_under_a_plain_lightning_trainer(data: np.ndarray) -> None:
    # Without train_rqvae the module fits its input normalisation and k-means on the first batches itself.
    import lightning as L

    L.seed_everything(0, verbose=False)
    module = RQVAE(data.shape[1], SMALL)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(data)), batch_size=64)
    trainer = L.Trainer(accelerator="cpu", max_epochs=4, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, train_dataloaders=loader)
    assert bool(module.normaliser_fitted) and bool(module.codebooks_initialised)
    codes, _ = module.assign_codes(data)
    assert len(np.unique(codes[:, 0])) >= 8
    assert module.history[-1]["recon"] < module.history[0]["recon"]
