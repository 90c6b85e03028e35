"""Optional CLIP image embeddings from a local model directory (never downloaded at run time).

The vectors feed the RQ-VAE's optional image branch (``RQVAEConfig.image_dim``), where a linear map and a
linear fusion layer join them with the text vector.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


class ImageEncoder:
    """Batch images → float32 CLIP image embeddings [n, projection_dim]; ``None`` gives a zero vector."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        batch_size: int = 32,
        normalize: bool = True,
        device: str = "cpu",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        path = Path(model_path)
        if not path.is_dir():
            raise FileNotFoundError(
                f"image encoder model directory not found: {str(path)!r} "
                "(give a local CLIP path; models are never downloaded at run time)"
            )
        # Imported here: transformers is slow to import and images are optional.
        from transformers import AutoConfig, AutoImageProcessor, CLIPVisionModelWithProjection
        from transformers.utils import logging as hf_logging

        self.model_path = str(path)
        self.batch_size = batch_size
        self.normalize = normalize
        self.device = torch.device(device)
        self.processor = AutoImageProcessor.from_pretrained(self.model_path, local_files_only=True)
        config = AutoConfig.from_pretrained(self.model_path, local_files_only=True)
        vision_config = getattr(config, "vision_config", config)
        if hasattr(config, "vision_config"):
            # A full CLIP checkpoint keeps projection_dim on the outer config; the vision tower needs it too.
            vision_config.projection_dim = config.projection_dim
        verbosity = hf_logging.get_verbosity()
        bars_enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()  # the unused text tower of a full CLIP checkpoint is expected
        hf_logging.disable_progress_bar()
        try:
            self.model = CLIPVisionModelWithProjection.from_pretrained(
                self.model_path, config=vision_config, local_files_only=True
            )
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars_enabled:
                hf_logging.enable_progress_bar()
        self.model.to(self.device).eval()

    @property
    def dim(self) -> int:
        """Embedding dimension (the CLIP projection size)."""
        return int(self.model.config.projection_dim)

    def encode(self, images: Sequence[object]) -> np.ndarray:
        """Embed images (PIL images or file paths; ``None`` = no image → zero vector)."""
        from PIL import Image

        if isinstance(images, str | os.PathLike):
            raise TypeError("encode expects a list of images or paths, not a single path")
        images = list(images)
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        present = [i for i, img in enumerate(images) if img is not None]
        with torch.inference_mode():
            for start in range(0, len(present), self.batch_size):
                idx = present[start : start + self.batch_size]
                batch = []
                for i in idx:
                    img = images[i]
                    if isinstance(img, str | os.PathLike):
                        if not Path(img).is_file():
                            raise FileNotFoundError(f"image {i} not found: {str(img)!r}")
                        img = Image.open(img)
                    if not isinstance(img, Image.Image):
                        raise TypeError(f"image {i} is {type(img).__name__}, expected a PIL image or a path")
                    batch.append(img.convert("RGB"))
                pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
                vectors = self.model(pixel_values=pixels).image_embeds
                if self.normalize:
                    vectors = torch.nn.functional.normalize(vectors, p=2, dim=-1)
                out[idx] = vectors.float().cpu().numpy()
        return out
