"""The Dagster code location: assets, checks, resources, jobs, schedule and sensor."""

import dagster as dg

from assets import ablations, discretisation, evaluation, ingestion, mining, promotion, recommender, serving
from digr_dagster.automation import (
    full_study_job,
    ingestion_job,
    new_files_sensor,
    nightly_retrain_job,
    nightly_schedule,
)
from digr_dagster.resources.mlflow_tracking import MlflowTracking
from digr_dagster.resources.models import LLMMiners, TextEncoderResource
from digr_dagster.resources.warehouse import Warehouse

defs = dg.Definitions(
    assets=[
        ingestion.ingest_source,
        ingestion.interaction_splits,
        mining.item_captions,
        mining.item_interests,
        mining.interest_rewards,
        mining.user_interests,
        discretisation.item_embeddings,
        discretisation.semantic_ids,
        recommender.recommender_sft,
        recommender.recommender_grpo,
        ablations.item_embeddings_plain,
        ablations.semantic_ids_plain,
        *ablations.VARIANT_ASSETS,
        evaluation.evaluation_report,
        promotion.champion_model,
        serving.user_recommendations,
    ],
    jobs=[nightly_retrain_job, full_study_job, ingestion_job],
    schedules=[nightly_schedule],
    sensors=[new_files_sensor],
    resources={
        "warehouse": Warehouse(),
        "mlflow_tracking": MlflowTracking(),
        "llm": LLMMiners(),
        "text_encoder": TextEncoderResource(),
    },
)
