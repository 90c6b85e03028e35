"""Champion/challenger promotion against a real MLflow sqlite registry (versions carry metric tags)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from serving.registry import CHALLENGER, CHAMPION, champion_info, metric_tag_key, promote

SOURCE_DIR = Path(tempfile.gettempdir())  # any existing local path serves as a version's source


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)  # explicit URIs: no global MLflow state touched


def add_version(client: MlflowClient, name: str, ndcg: float | None, **lineage: str) -> str:
    """A registered version whose tags look like log_recommender's (metric + lineage)."""
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name)
    tags = {f"lineage.{k}": v for k, v in lineage.items()}
    if ndcg is not None:
        tags[metric_tag_key("val_ndcg@10")] = repr(ndcg)
        tags[metric_tag_key("val_hr@10")] = repr(min(1.0, 2 * ndcg))
    return str(client.create_model_version(name, source=str(SOURCE_DIR), tags=tags).version)


def alias_of(client: MlflowClient, name: str, alias: str) -> str:
    return str(client.get_model_version_by_alias(name, alias).version)


def test_first_model_becomes_champion(client):
    v1 = add_version(client, "first", 0.2)
    decision = promote(client, "first", v1)
    assert decision.alias == CHAMPION and decision.promoted
    assert decision.previous_champion is None and decision.champion_value is None
    assert decision.new_value == pytest.approx(0.2)
    assert alias_of(client, "first", CHAMPION) == v1
    # promoting the champion again is a no-op that keeps it
    again = promote(client, "first", v1)
    assert again.alias == CHAMPION and again.previous_champion == v1


def test_better_model_takes_champion_worse_becomes_challenger(client):
    name = "race"
    v1 = add_version(client, name, 0.30)
    promote(client, name, v1)
    v2 = add_version(client, name, 0.25)
    worse = promote(client, name, v2)
    assert worse.alias == CHALLENGER and not worse.promoted
    assert worse.previous_champion == v1 and worse.champion_value == pytest.approx(0.30)
    assert alias_of(client, name, CHAMPION) == v1  # the champion stays
    assert alias_of(client, name, CHALLENGER) == v2
    assert "champion kept" in client.get_model_version(name, v2).tags["digr.promotion"]

    v3 = add_version(client, name, 0.35)
    better = promote(client, name, v3)
    assert better.alias == CHAMPION and better.previous_champion == v1
    assert alias_of(client, name, CHAMPION) == v3
    assert alias_of(client, name, CHALLENGER) == v2  # an unrelated challenger keeps its alias


def test_challenger_alias_moves_off_a_version_that_becomes_champion(client):
    name = "rematch"
    v1 = add_version(client, name, 0.5)
    promote(client, name, v1)
    v2 = add_version(client, name, 0.4)
    assert promote(client, name, v2).alias == CHALLENGER
    # the same version promoted later against a weaker champion (e.g. after a rollback)
    client.set_registered_model_alias(name, CHAMPION, add_version(client, name, 0.1))
    assert promote(client, name, v2).alias == CHAMPION
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias(name, CHALLENGER)


def test_margin_is_respected(client):
    name = "margin"
    v1 = add_version(client, name, 0.40)
    promote(client, name, v1)
    small = add_version(client, name, 0.44)
    assert promote(client, name, small, margin=0.05).alias == CHALLENGER
    assert alias_of(client, name, CHAMPION) == v1
    large = add_version(client, name, 0.46)
    decision = promote(client, name, large, margin=0.05)
    assert decision.alias == CHAMPION and decision.champion_value == pytest.approx(0.40)
    # a tie is not an improvement, even with margin 0
    tie = add_version(client, name, 0.46)
    assert promote(client, name, tie).alias == CHALLENGER


def test_champion_without_metric_is_replaced(client):
    name = "untagged"
    v1 = add_version(client, name, None)
    client.set_registered_model_alias(name, CHAMPION, v1)
    v2 = add_version(client, name, 0.1)
    decision = promote(client, name, v2)
    assert decision.alias == CHAMPION and decision.champion_value is None and decision.previous_champion == v1


def test_champion_info_reports_metrics_and_lineage(client):
    name = "status"
    assert champion_info(client, name) is None  # no such model yet
    v1 = add_version(client, name, 0.3, dagster_run_id="run-a", sft_run_id="abc")
    assert champion_info(client, name) is None  # registered, but nothing promoted
    promote(client, name, v1)
    info = champion_info(client, name)
    assert info["version"] == v1 and isinstance(info["version"], str) and CHAMPION in info["aliases"]
    assert info["metrics"] == {"val_ndcg@10": pytest.approx(0.3), "val_hr@10": pytest.approx(0.6)}
    assert info["lineage"] == {"dagster_run_id": "run-a", "sft_run_id": "abc"}
    assert info["created"].startswith("20") and "first model" in info["promotion"]


def test_bad_input_is_rejected_with_a_clear_error(client):
    name = "bad"
    v1 = add_version(client, name, None)
    with pytest.raises(ValueError, match="no finite 'val_ndcg@10' tag"):
        promote(client, name, v1)
    with pytest.raises(MlflowException):  # no such alias was set by the failed promotion
        client.get_model_version_by_alias(name, CHAMPION)
    v2 = add_version(client, name, 0.2)
    with pytest.raises(ValueError, match="margin"):
        promote(client, name, v2, margin=-0.1)
    with pytest.raises(ValueError, match="val_hr@5"):
        promote(client, name, v2, metric="val_hr@5")
    with pytest.raises(MlflowException, match="not found"):
        promote(client, name, "99")
