"""The Dagster code location: assets, checks, resources, jobs, schedule and sensor."""

from __future__ import annotations

import dagster as dg

from assets import ingestion
from digr_dagster.automation import ingestion_job, new_files_sensor, nightly_retrain_job, nightly_schedule
from digr_dagster.resources.mlflow_tracking import MlflowTracking
from digr_dagster.resources.warehouse import Warehouse

defs = dg.Definitions(
    assets=[ingestion.ingest_source, ingestion.interaction_splits],
    jobs=[nightly_retrain_job, ingestion_job],
    schedules=[nightly_schedule],
    sensors=[new_files_sensor],
    resources={
        "warehouse": Warehouse(),
        "mlflow": MlflowTracking(),
    },
)
