"""Promotion: the trained recommender logged as an MLflow pyfunc, registered, and made ``champion`` only
when it beats the current champion's validation NDCG@10 by the configured margin."""

import dagster as dg

from assets.common import latest_metadata, md, upstream_lineage
from assets.recommender import checkpoint_from_lineage, stored_user_prefix
from config_schema import to_mapping
from digr_dagster.config_models import dagster_config
from digr_dagster.resources.mlflow_tracking import MlflowTracking
from digr_dagster.resources.warehouse import Warehouse
from serving.registry import PromotionSettings

ChampionConfig = dagster_config(PromotionSettings, name="ChampionConfig")


@dg.asset(
    deps=["recommender_grpo", "evaluation_report"],
    group_name="promotion",
    kinds={"mlflow"},
    pool="warehouse",
    description="The recommender as a registered MLflow pyfunc; alias `champion` only when it beats the "
                "current champion on validation NDCG@10 by the margin, else `challenger`.",
)
def champion_model(context: dg.AssetExecutionContext, config: ChampionConfig, warehouse: Warehouse,
                   mlflow_tracking: MlflowTracking) -> dg.MaterializeResult:
    import mlflow

    from mining.judges import curated_descriptors
    from serving.pyfunc_model import log_recommender
    from serving.registry import promote
    from training.generator import load_generator

    promotion = config.build()
    checkpoint = checkpoint_from_lineage(context, "recommender_grpo")
    grpo = latest_metadata(context, "recommender_grpo")
    sft = latest_metadata(context, "recommender_sft")
    model = load_generator(checkpoint)  # the checkpoint carries the settings it was trained with
    items = warehouse.read("items")
    titles = dict(zip(items["item_id"].astype(str), items["title"].astype(str), strict=True))
    rewards = warehouse.read("interest_rewards")
    interests = warehouse.read("user_interests", order_by="user_id, rank")
    user_interest_text = {str(u): g["interest"].astype(str).tolist() for u, g in interests.groupby("user_id")}
    prefix = stored_user_prefix(warehouse, model.sequence)
    metrics = {"val_ndcg@10": grpo["valid_ndcg@10"], "val_hr@10": grpo["valid_hr@10"],
               "test_ndcg@10": grpo["test_ndcg@10"], "test_hr@10": grpo["test_hr@10"]}
    lineage = upstream_lineage(context, "semantic_ids", "user_interests", "recommender_sft", "recommender_grpo")
    tags = {"dagster_run_id": context.run.run_id, "kept": grpo["kept"],
            "sft_mlflow_run_id": sft.get("mlflow_run_id"), "grpo_mlflow_run_id": grpo.get("mlflow_run_id"),
            "semantic_ids_hash": (lineage["semantic_ids"] or {}).get("content_hash"),
            "user_interests_hash": (lineage["user_interests"] or {}).get("content_hash"),
            "checkpoint_sha256": grpo["checkpoint_sha256"]}
    with mlflow_tracking.asset_run(context, params=to_mapping(promotion)) as run:
        version = log_recommender(
            checkpoint, titles, name=promotion.model_name, k=promotion.k, beam_width=model.config.beam_width,
            lineage_tags=tags, metrics=metrics, item_interests=curated_descriptors(rewards),
            user_prefix=prefix, user_interests=user_interest_text)
        decision = promote(mlflow.MlflowClient(), promotion.model_name, version.version, metric="val_ndcg@10",
                           margin=promotion.margin)
        mlflow.set_tags({"registered_version": version.version, "alias": decision.alias})
        return dg.MaterializeResult(metadata=md({
            **run.metadata(),
            "model_name": promotion.model_name,
            "version": version.version,
            "max_history": model.sequence.max_history,
            "alias": decision.alias,
            "promoted": decision.promoted,
            "previous_champion": decision.previous_champion or "",
            "new_val_ndcg@10": decision.new_value,
            "champion_val_ndcg@10": decision.champion_value if decision.champion_value is not None else -1.0,
            "reason": decision.reason,
            "serve": f"mlflow models serve -m models:/{promotion.model_name}@champion --env-manager local",
            "lineage": lineage,
        }))
