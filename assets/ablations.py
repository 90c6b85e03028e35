"""The comparisons the method is judged by: a TIGER-style generator without any mined interests, and one
ablation per component (interests in the item text, user-interest tokens, the q term of the GRPO reward).

Every variant trains with exactly the configuration its reference model was last trained with (read from
that run's config), switching off only its own component, so the comparison is fair by construction;
``VariantConfig.seed`` overrides the seed (the benchmark repeats seeds).
"""


import dagster as dg
from pydantic import Field

from assets.common import config_of
from assets.discretisation import (
    ItemEmbeddingConfig,
    SemanticIdConfig,
    embed_items,
    train_semantic_ids,
)
from assets.recommender import TRAIN_RETRY, GrpoConfig, SftConfig, train_grpo_stage, train_sft
from digr_dagster.resources.mlflow_tracking import MlflowTracking
from digr_dagster.resources.models import TextEncoderResource
from digr_dagster.resources.warehouse import Warehouse

PLAIN_UNIQUE = "plain_sids_unique"


class VariantConfig(dg.Config):
    seed: int | None = Field(default=None, description="Override the seed (None: the reference model's)")


def _like(context: dg.AssetExecutionContext, reference: str, cls, config: VariantConfig, **switches):
    base = config_of(context, reference, cls)
    overrides = {**switches, **({"seed": config.seed} if config.seed is not None else {})}
    return base.model_copy(update=overrides)


@dg.asset(
    deps=["items", "interaction_splits", "item_captions", "item_embeddings"],
    group_name="baselines",
    kinds={"duckdb", "pytorch"},
    pool="warehouse",
    description="Plain item text (title, description, caption; no mined interests) embedded like item_embeddings.",
)
def item_embeddings_plain(context: dg.AssetExecutionContext, warehouse: Warehouse,
                          text_encoder: TextEncoderResource) -> dg.MaterializeResult:
    config = config_of(context, "item_embeddings", ItemEmbeddingConfig).model_copy(update={"with_interests": False})
    return embed_items(context, config, warehouse, text_encoder, table="item_embeddings_plain")


@dg.asset(
    deps=["item_embeddings_plain", "semantic_ids"],
    group_name="baselines",
    kinds={"duckdb", "pytorch", "mlflow"},
    pool="warehouse",
    check_specs=[dg.AssetCheckSpec(PLAIN_UNIQUE, asset="semantic_ids_plain", blocking=True,
                                   description="Every item has a distinct plain-text SID after the suffix")],
    description="Semantic IDs from plain item text, with the RQ-VAE config semantic_ids used.",
)
def semantic_ids_plain(context: dg.AssetExecutionContext, warehouse: Warehouse, mlflow_tracking: MlflowTracking):
    config = config_of(context, "semantic_ids", SemanticIdConfig)
    yield from train_semantic_ids(context, config, warehouse, mlflow_tracking, source="item_embeddings_plain",
                                  target="semantic_ids_plain", check=PLAIN_UNIQUE)


@dg.asset(
    deps=["interaction_splits", "semantic_ids_plain", "recommender_sft"],
    group_name="baselines",
    kinds={"pytorch", "mlflow"},
    pool="warehouse",
    retry_policy=TRAIN_RETRY,
    description="TIGER-style baseline: the same generator on plain-text SIDs, without user-interest tokens.",
)
def tiger_baseline(context: dg.AssetExecutionContext, config: VariantConfig, warehouse: Warehouse,
                   text_encoder: TextEncoderResource, mlflow_tracking: MlflowTracking) -> dg.MaterializeResult:
    sft = _like(context, "recommender_sft", SftConfig, config, use_user_interests=False)
    return train_sft(context, sft, warehouse, text_encoder, mlflow_tracking, sids="semantic_ids_plain",
                     embeddings="item_embeddings_plain", tokens_table=None)


@dg.asset(
    deps=["interaction_splits", "semantic_ids_plain", "item_embeddings_plain", "user_interests", "recommender_sft"],
    group_name="ablations",
    kinds={"pytorch", "mlflow"},
    pool="warehouse",
    retry_policy=TRAIN_RETRY,
    description="Ablation: SIDs from plain item text (no mined interests), user-interest tokens kept.",
)
def ablation_no_item_interests(context: dg.AssetExecutionContext, config: VariantConfig, warehouse: Warehouse,
                               text_encoder: TextEncoderResource,
                               mlflow_tracking: MlflowTracking) -> dg.MaterializeResult:
    sft = _like(context, "recommender_sft", SftConfig, config)
    return train_sft(context, sft, warehouse, text_encoder, mlflow_tracking, sids="semantic_ids_plain",
                     embeddings="item_embeddings_plain", tokens_table=None)


@dg.asset(
    deps=["interaction_splits", "semantic_ids", "recommender_sft"],
    group_name="ablations",
    kinds={"pytorch", "mlflow"},
    pool="warehouse",
    retry_policy=TRAIN_RETRY,
    description="Ablation: interest-enhanced SIDs, no user-interest tokens in the input.",
)
def ablation_no_user_tokens(context: dg.AssetExecutionContext, config: VariantConfig, warehouse: Warehouse,
                            text_encoder: TextEncoderResource, mlflow_tracking: MlflowTracking) -> dg.MaterializeResult:
    sft = _like(context, "recommender_sft", SftConfig, config, use_user_interests=False)
    return train_sft(context, sft, warehouse, text_encoder, mlflow_tracking, tokens_table=None)


@dg.asset(
    deps=["recommender_sft", "recommender_grpo", "interest_rewards"],
    group_name="ablations",
    kinds={"pytorch", "mlflow"},
    pool="warehouse",
    retry_policy=TRAIN_RETRY,
    description="Ablation: GRPO without the item-quality term of the reward (alpha = 0).",
)
def ablation_no_q_term(context: dg.AssetExecutionContext, config: VariantConfig, warehouse: Warehouse,
                       mlflow_tracking: MlflowTracking) -> dg.MaterializeResult:
    grpo = _like(context, "recommender_grpo", GrpoConfig, config, alpha=0.0)
    return train_grpo_stage(context, grpo, warehouse, mlflow_tracking)
