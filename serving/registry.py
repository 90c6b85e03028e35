"""Registry promotion with aliases: a new version becomes ``champion`` only when it beats the current one.

Metrics and lineage are read from model-version tags written by :func:`serving.pyfunc_model.log_recommender`
(``metric.<name>``, ``lineage.<key>``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

CHAMPION = "champion"
CHALLENGER = "challenger"
METRIC_TAG_PREFIX = "metric."
LINEAGE_TAG_PREFIX = "lineage."


def metric_tag_key(metric: str) -> str:
    """The model-version tag holding a metric (MLflow tag keys may not contain '@')."""
    return METRIC_TAG_PREFIX + metric.replace("@", "_at_")


@dataclass(frozen=True)
class PromotionSettings:
    """How the shipped recommender is registered and when it becomes ``champion``."""

    model_name: str = field(default="deepinterestgr", metadata={"description": "Registered model name"})
    margin: float = field(default=0.0, metadata={
        "description": "New version must beat the champion's val NDCG@10 by more than this"})
    k: int = field(default=10, metadata={"description": "Recommendations per request"})

    def __post_init__(self) -> None:
        if not self.model_name:
            raise ValueError("PromotionSettings.model_name must be non-empty")
        if not math.isfinite(self.margin) or self.margin < 0:
            raise ValueError(f"PromotionSettings.margin must be a finite number >= 0, got {self.margin}")
        if self.k < 1:
            raise ValueError(f"PromotionSettings.k must be >= 1, got {self.k}")


@dataclass(frozen=True)
class PromotionDecision:
    """Which alias the new version got, against which champion, and why."""

    name: str
    version: str
    alias: str  # "champion" or "challenger"
    previous_champion: str | None
    new_value: float
    champion_value: float | None
    reason: str

    @property
    def promoted(self) -> bool:
        return self.alias == CHAMPION


def _metric_of(mv: ModelVersion, metric: str) -> float | None:
    raw = mv.tags.get(metric_tag_key(metric))
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _champion_version(client: MlflowClient, name: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        # a missing model is RESOURCE_DOES_NOT_EXIST; a missing alias is INVALID_PARAMETER_VALUE "... not found"
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(exc):
            return None
        raise


def promote(
    client: MlflowClient, name: str, version: str | int, *, metric: str = "val_ndcg@10", margin: float = 0.0
) -> PromotionDecision:
    """Alias ``version`` of ``name`` as ``champion`` when its ``metric`` tag exceeds the champion's by more
    than ``margin`` (absolute), or when there is no champion (or the champion has no such metric);
    otherwise alias it ``challenger`` and leave the champion alone. Higher metric values are better.
    """
    if not math.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be a finite number >= 0, got {margin}")
    version = str(version)
    new = client.get_model_version(name, version)  # raises for an unknown model or version
    new_value = _metric_of(new, metric)
    if new_value is None:
        raise ValueError(
            f"model {name!r} version {version} has no finite {metric!r} tag ({metric_tag_key(metric)!r}); "
            "cannot decide its promotion"
        )
    champ = _champion_version(client, name)
    champ_value = None if champ is None else _metric_of(champ, metric)
    if champ is None:
        alias, reason = CHAMPION, f"first model: no champion yet, {metric}={new_value:.6g}"
    elif str(champ.version) == version:
        alias, reason = CHAMPION, f"version {version} already is the champion"
    elif champ_value is None:
        alias, reason = CHAMPION, f"champion v{champ.version} has no {metric!r}; replaced by v{version}"
    elif new_value > champ_value + margin:
        alias = CHAMPION
        reason = f"{metric} {new_value:.6g} beats champion v{champ.version} ({champ_value:.6g}) by more than {margin}"
    else:
        alias = CHALLENGER
        reason = (
            f"{metric} {new_value:.6g} does not beat champion v{champ.version} ({champ_value:.6g}) "
            f"by more than {margin}; champion kept"
        )
    client.set_registered_model_alias(name, alias, version)
    if alias == CHAMPION and champ is not None and str(champ.version) != version:
        # the new champion is no longer a challenger; a stale challenger alias would point at it otherwise
        challenger = _alias_version(client, name, CHALLENGER)
        if challenger == version:
            client.delete_registered_model_alias(name, CHALLENGER)
    client.set_model_version_tag(name, version, "digr.promotion", reason)
    return PromotionDecision(
        name=name, version=version, alias=alias, previous_champion=None if champ is None else str(champ.version),
        new_value=new_value, champion_value=champ_value, reason=reason,
    )


def _alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def champion_info(client: MlflowClient, name: str) -> dict[str, Any] | None:
    """The champion's version, metrics, lineage tags, run id and creation time; None when there is none."""
    champ = _champion_version(client, name)
    if champ is None:
        return None
    metrics = {}
    for key, raw in champ.tags.items():
        if key.startswith(METRIC_TAG_PREFIX):
            try:
                metrics[key[len(METRIC_TAG_PREFIX) :].replace("_at_", "@")] = float(raw)
            except ValueError:
                continue  # a hand-edited, non-numeric tag is not a metric
    lineage = {k[len(LINEAGE_TAG_PREFIX) :]: v for k, v in champ.tags.items() if k.startswith(LINEAGE_TAG_PREFIX)}
    created = datetime.fromtimestamp(champ.creation_timestamp / 1000, tz=UTC).isoformat()
    return {
        "name": name,
        "version": str(champ.version),
        "aliases": list(champ.aliases),
        "metrics": metrics,
        "lineage": lineage,
        "run_id": champ.run_id,
        "model_id": getattr(champ, "model_id", None),
        "source": champ.source,
        "created": created,
        "promotion": champ.tags.get("digr.promotion"),
    }
