"""The comparisons the method is judged by: a TIGER-style generator without any mined interests, and one
ablation per component (interests in the item text, user-interest tokens, the q term of the GRPO reward).

``VARIANTS`` is the one table of them: the assets below are generated from it and the evaluation report
lists its rows from it. Every variant trains with exactly the settings its reference model carries in its
checkpoint (the SFT or GRPO model the pipeline ships), switching off only its own component, so the
comparison is fair by construction; ``VariantConfig.seed`` overrides the seed (model, trainer and the
order of the training windows alike — the benchmark repeats seeds).
"""


import dataclasses
from dataclasses import dataclass
from typing import Literal

import dagster as dg
from pydantic import Field

from assets.common import latest_metadata
from assets.discretisation import embed_items, train_semantic_ids
from assets.recommender import TRAIN_RETRY, checkpoint_from_lineage, train_grpo_stage, train_sft
from config_schema import from_mapping
from digr_dagster.resources.mlflow_tracking import MlflowTracking
from digr_dagster.resources.models import TextEncoderResource
from digr_dagster.resources.warehouse import Warehouse
from training.item_text import ItemTextSettings

PLAIN_UNIQUE = "plain_sids_unique"


@dataclass(frozen=True)
class Variant:
    """One comparison model: which stage it re-runs, on which SIDs, with which switch flipped."""

    asset: str
    row: str  # its row in the evaluation report
    kind: Literal["baseline", "ablation"]
    note: str  # what the row shows
    stage: Literal["sft", "grpo"]
    sids: str = "semantic_ids"
    embeddings: str = "item_embeddings"
    #: the user-side interests: the user-interest tokens (arch t5) or the interest-enhanced text of the history
    #: items (arch item_causal, ``history_text``); None: as the reference SFT model
    user_interests: bool | None = None
    alpha: float | None = None  # grpo: the reward's q-term weight (None: as the reference)

    @property
    def group(self) -> str:
        return "baselines" if self.kind == "baseline" else "ablations"

    @property
    def metric_prefix(self) -> str:
        """A GRPO variant is compared through its policy (the pipeline may keep SFT instead)."""
        return "policy_" if self.stage == "grpo" else ""


VARIANTS: tuple[Variant, ...] = (
    Variant("tiger_baseline", "TIGER-style (no interests)", "baseline",
            "same generator, plain-text SIDs, no user tokens", "sft",
            sids="semantic_ids_plain", embeddings="item_embeddings_plain", user_interests=False),
    Variant("ablation_no_item_interests", "w/o interests in item text", "ablation",
            "plain-text SIDs, user-side interests kept (item_causal: the plain text of the history)", "sft",
            sids="semantic_ids_plain", embeddings="item_embeddings_plain"),
    Variant("ablation_no_user_tokens", "w/o user-side interests", "ablation",
            "interest SIDs; no user tokens (t5) / no history text (item_causal)", "sft", user_interests=False),
    Variant("ablation_no_q_term", "GRPO w/o q term (alpha=0)", "ablation",
            "GRPO policy trained with alpha=0", "grpo", alpha=0.0),
)


class VariantConfig(dg.Config):
    seed: int | None = Field(default=None, description="Override the seed (None: the reference model's)")


def _deps(variant: Variant) -> list[str]:
    if variant.stage == "grpo":
        return ["recommender_sft", "recommender_grpo", "interest_rewards"]
    deps = ["interaction_splits", variant.sids, "recommender_sft"]
    if variant.user_interests is not False:
        deps += ["user_interests", variant.embeddings]
    return list(dict.fromkeys(deps))


def train_variant(context: dg.AssetExecutionContext, variant: Variant, config: VariantConfig, warehouse: Warehouse,
                  text_encoder: TextEncoderResource, mlflow_tracking: MlflowTracking) -> dg.MaterializeResult:
    """Re-run the variant's stage with its reference checkpoint's settings and only its own switch flipped."""
    import torch

    from training.generator import load_generator
    from training.settings import GRPOConfig

    seed = {"seed": config.seed} if config.seed is not None else {}
    if variant.stage == "grpo":
        policy = checkpoint_from_lineage(context, "recommender_grpo", key="policy_checkpoint")
        hp = torch.load(policy, map_location="cpu", weights_only=False)["hyper_parameters"]
        grpo = from_mapping(GRPOConfig, hp["grpo"], where=f"GRPO checkpoint {policy}")
        reward = grpo.reward if variant.alpha is None else dataclasses.replace(grpo.reward, alpha=variant.alpha)
        return train_grpo_stage(context, dataclasses.replace(grpo, reward=reward, **seed), warehouse,
                                mlflow_tracking)
    reference = load_generator(checkpoint_from_lineage(context, "recommender_sft"))
    sequence = reference.sequence
    if variant.user_interests is not None:
        # the switch names whichever road the reference model takes user-side interests by
        field = "history_text" if reference.config.arch == "item_causal" else "use_user_interests"
        sequence = dataclasses.replace(sequence, **{field: variant.user_interests})
    return train_sft(context, dataclasses.replace(reference.config, **seed), sequence, warehouse, text_encoder,
                     mlflow_tracking, sids=variant.sids, embeddings=variant.embeddings, tokens_table=None)


def _variant_asset(variant: Variant) -> dg.AssetsDefinition:
    @dg.asset(
        name=variant.asset,
        deps=_deps(variant),
        group_name=variant.group,
        kinds={"pytorch", "mlflow"},
        pool="warehouse",
        retry_policy=TRAIN_RETRY,
        description=f"{variant.row}: {variant.note} (settings from the reference model's checkpoint).",
    )
    def _asset(context: dg.AssetExecutionContext, config: VariantConfig, warehouse: Warehouse,
               text_encoder: TextEncoderResource, mlflow_tracking: MlflowTracking) -> dg.MaterializeResult:
        return train_variant(context, variant, config, warehouse, text_encoder, mlflow_tracking)

    return _asset


VARIANT_ASSETS = [_variant_asset(v) for v in VARIANTS]


@dg.asset(
    deps=["items", "interaction_splits", "item_captions", "item_embeddings"],
    group_name="baselines",
    kinds={"duckdb", "pytorch"},
    pool="warehouse",
    description="Plain item text (title, description, caption; no mined interests) embedded like item_embeddings.",
)
def item_embeddings_plain(context: dg.AssetExecutionContext, warehouse: Warehouse,
                          text_encoder: TextEncoderResource) -> dg.MaterializeResult:
    recorded = latest_metadata(context, "item_embeddings").get("settings")
    if recorded is None:
        raise dg.Failure("item_embeddings records no settings; rematerialise item_embeddings")
    settings = from_mapping(ItemTextSettings, {**recorded, "with_interests": False}, where="item_embeddings settings")
    return embed_items(context, settings, warehouse, text_encoder, table="item_embeddings_plain")


@dg.asset(
    deps=["item_embeddings_plain", "semantic_ids"],
    group_name="baselines",
    kinds={"duckdb", "pytorch", "mlflow"},
    pool="warehouse",
    check_specs=[dg.AssetCheckSpec(PLAIN_UNIQUE, asset="semantic_ids_plain", blocking=True,
                                   description="Every item has a distinct plain-text SID after the suffix")],
    description="Semantic IDs from plain item text, with the RQ-VAE settings (seed included) semantic_ids' "
                "checkpoint carries.",
)
def semantic_ids_plain(context: dg.AssetExecutionContext, warehouse: Warehouse, mlflow_tracking: MlflowTracking):
    from training.rqvae import rqvae_config_from_checkpoint

    rq_config = rqvae_config_from_checkpoint(checkpoint_from_lineage(context, "semantic_ids"))
    yield from train_semantic_ids(context, rq_config, warehouse, mlflow_tracking, source="item_embeddings_plain",
                                  target="semantic_ids_plain", check=PLAIN_UNIQUE)
