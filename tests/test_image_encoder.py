"""Optional CLIP image encoder, exercised with a tiny randomly initialised CLIP saved to a temp folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from encoders.image_encoder import ImageEncoder


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "vocab_size": 64},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=12,
    )
    path = tmp_path_factory.mktemp("tiny-clip")
    CLIPModel(config).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def test_encodes_images_paths_and_missing(tiny_clip: Path, tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    red = Image.fromarray(np.full((40, 50, 3), (255, 0, 0), dtype=np.uint8))
    noise = Image.fromarray(rng.integers(0, 255, size=(64, 64, 3), dtype=np.uint8))
    noise_path = tmp_path / "noise.png"
    noise.save(noise_path)
    encoder = ImageEncoder(tiny_clip, batch_size=2)
    vectors = encoder.encode([red, None, noise_path, noise])
    assert vectors.shape == (4, 12) and encoder.dim == 12 and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors[[0, 2, 3]], axis=1), 1.0, atol=1e-5)
    assert not vectors[1].any()  # no image -> zero vector
    np.testing.assert_allclose(vectors[2], vectors[3], atol=1e-5)  # path and PIL image agree
    assert not np.allclose(vectors[0], vectors[3], atol=1e-3)


def test_bad_input_is_refused(tiny_clip: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        ImageEncoder(tmp_path / "missing")
    encoder = ImageEncoder(tiny_clip)
    with pytest.raises(FileNotFoundError, match="image 0 not found"):
        encoder.encode([tmp_path / "nope.png"])
    with pytest.raises(TypeError, match="image 0 is int"):
        encoder.encode([3])
    with pytest.raises(TypeError, match="not a single path"):
        encoder.encode("one.png")
