"""Encoders that turn item evidence (text, optionally images) into vectors."""

from encoders.image_encoder import ImageEncoder
from encoders.text_encoder import TextEncoder, default_model_path

__all__ = ["ImageEncoder", "TextEncoder", "default_model_path"]
