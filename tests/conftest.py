"""Test-wide settings: offline model loading and every piece of local state in a temp folder."""

from __future__ import annotations

import os

# Set before any test module imports transformers/mlflow/dagster.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import pytest  # noqa: E402


@pytest.fixture
def digr_env(tmp_path, monkeypatch):
    """An isolated DIGR_HOME: warehouse, MLflow store, Dagster home and demo data under tmp_path."""
    home = tmp_path / "digr"
    home.mkdir()
    dagster_home = home / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n"
    )
    monkeypatch.setenv("DIGR_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    monkeypatch.delenv("DIGR_WAREHOUSE", raising=False)
    monkeypatch.delenv("DIGR_INPUT_DIR", raising=False)
    return home
