"""Where local state lives. Every path can be overridden by an environment variable.

Defaults keep everything under ``.digr/`` in the working directory (the repository root when run
through the Makefile), so a demo never touches anything outside the checkout.
"""

from __future__ import annotations

import os
from pathlib import Path


def digr_home() -> Path:
    """Root of local state: ``$DIGR_HOME`` or ``./.digr``."""
    return Path(os.environ.get("DIGR_HOME", ".digr")).resolve()


def warehouse_path() -> str:
    """The warehouse location: a DuckDB file path (default ``<DIGR_HOME>/warehouse.duckdb``) or
    ``s3://bucket/prefix`` for Parquet tables on S3-compatible storage (``$DIGR_WAREHOUSE``)."""
    return os.environ.get("DIGR_WAREHOUSE", str(digr_home() / "warehouse.duckdb"))


def warehouse_cache_dir() -> Path:
    """Local cache of an object-store warehouse's Parquet parts and staged writes (``$DIGR_WAREHOUSE_CACHE``)."""
    return Path(os.environ.get("DIGR_WAREHOUSE_CACHE", str(digr_home() / "warehouse_cache"))).resolve()


def mlflow_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{digr_home() / 'mlflow.db'}")


def mlflow_artifact_root() -> str:
    return os.environ.get("DIGR_MLFLOW_ARTIFACTS", str(digr_home() / "mlartifacts"))


def mlflow_experiment() -> str:
    return os.environ.get("DIGR_MLFLOW_EXPERIMENT", "deepinterestgr")


def demo_data_dir() -> str:
    return os.environ.get("DIGR_DEMO_DIR", str(digr_home() / "demo_raw"))


def input_dir() -> str:
    """Folder the new-files sensor watches."""
    return os.environ.get("DIGR_INPUT_DIR", str(digr_home() / "inbox"))


def checkpoints_dir() -> Path:
    return Path(os.environ.get("DIGR_CHECKPOINTS", str(digr_home() / "checkpoints")))
