"""Promotion: of the generators that could ship, the best on validation NDCG@10 is logged as an MLflow pyfunc,
registered, and made ``champion`` only when it beats the current champion's validation NDCG@10 by the margin."""

import dagster as dg

from assets.ablations import VARIANTS
from assets.common import latest_metadata, md, upstream_lineage
from assets.recommender import checkpoint_from_lineage, stored_user_prefix
from config_schema import to_mapping
from digr_dagster.config_models import dagster_config
from digr_dagster.resources.mlflow_tracking import MlflowTracking
from digr_dagster.resources.warehouse import Warehouse
from serving.candidates import CandidateSpec
from serving.registry import PromotionSettings

ChampionConfig = dagster_config(PromotionSettings, name="ChampionConfig")

#: The generators that could ship: asset, the metadata key of its checkpoint, the metadata key of its validation
#: NDCG@10 (the only number the choice reads; test NDCG@10 is shown for information). One line per candidate.
#: The order is the order of preference on a tie: DeepInterestGR, the product's method, comes first.
CANDIDATES: tuple[CandidateSpec, ...] = (
    CandidateSpec("recommender_grpo", "checkpoint", "valid_ndcg@10"),  # DeepInterestGR (GRPO, or the SFT it kept)
    CandidateSpec("tiger_baseline", "checkpoint", "valid_ndcg@10"),  # TIGER-style: plain-text SIDs, no interests
)

# champion_model runs after every candidate: recommender_grpo directly, the variants through evaluation_report
_ORDERED = {"recommender_grpo", *(v.asset for v in VARIANTS)}
if not {c.asset for c in CANDIDATES} <= _ORDERED:
    raise ValueError(f"promotion candidates {sorted({c.asset for c in CANDIDATES} - _ORDERED)} are not upstream of "
                     "champion_model; add them to its deps")


@dg.asset(
    deps=["recommender_grpo", "evaluation_report"],
    group_name="promotion",
    kinds={"mlflow"},
    pool="warehouse",
    description="The best generator on validation NDCG@10 (DeepInterestGR or the TIGER-style baseline; a tie goes "
                "to DeepInterestGR) as a registered MLflow pyfunc; alias `champion` only when it beats the current "
                "champion on validation NDCG@10 by the margin, else `challenger`.",
)
def champion_model(context: dg.AssetExecutionContext, config: ChampionConfig, warehouse: Warehouse,
                   mlflow_tracking: MlflowTracking) -> dg.MaterializeResult:
    import mlflow

    from mining.judges import curated_descriptors
    from serving.candidates import NoCandidateError, read_candidate, record_selection, select_candidate
    from serving.pyfunc_model import log_recommender
    from serving.registry import promote
    from training.generator import load_generator

    promotion = config.build()
    # candidates are compared on the current split only: another split's validation numbers are not comparable
    split_hash = latest_metadata(context, "interaction_splits").get("content_hash")
    found, skipped, verified = [], {}, {}
    for spec in CANDIDATES:
        got = read_candidate(spec, latest_metadata(context, spec.asset, required=False), split_hash=split_hash)
        if isinstance(got, str):
            skipped[spec.asset] = got
            context.log.warning(f"promotion candidate {spec.asset} skipped: {got}")
            continue
        # the verified path: a checkpoint altered since its asset recorded it fails the step, it is not skipped
        verified[spec.asset] = checkpoint_from_lineage(context, spec.asset, key=spec.checkpoint_key)
        found.append(got)
    try:
        selection = select_candidate(found, skipped)
    except NoCandidateError as exc:
        raise dg.Failure(str(exc)) from exc
    winner = selection.winner
    context.log.info(f"promotion candidate {winner.asset} ships: {selection.reason}")
    checkpoint = verified[winner.asset]
    grpo = latest_metadata(context, "recommender_grpo", required=False) or {}
    sft = latest_metadata(context, "recommender_sft", required=False) or {}
    model = load_generator(checkpoint)  # the checkpoint carries the settings it was trained with
    items = warehouse.read("items")
    titles = dict(zip(items["item_id"].astype(str), items["title"].astype(str), strict=True))
    rewards = warehouse.read("interest_rewards")
    interests = warehouse.read("user_interests", order_by="user_id, rank")
    user_interest_text = {str(u): g["interest"].astype(str).tolist() for u, g in interests.groupby("user_id")}
    prefix = stored_user_prefix(warehouse, model.sequence)
    lineage = upstream_lineage(context, *dict.fromkeys(["interaction_splits", "semantic_ids", "user_interests",
                                                        "recommender_sft", *(c.asset for c in CANDIDATES)]))
    tags = {"dagster_run_id": context.run.run_id, "candidate": winner.asset,
            "candidate_mlflow_run_id": winner.mlflow_run_id, "kept": grpo.get("kept"),
            "sft_mlflow_run_id": sft.get("mlflow_run_id"), "grpo_mlflow_run_id": grpo.get("mlflow_run_id"),
            "semantic_ids_hash": (lineage["semantic_ids"] or {}).get("content_hash"),
            "user_interests_hash": (lineage["user_interests"] or {}).get("content_hash"),
            "checkpoint_sha256": winner.checkpoint_sha256}
    with mlflow_tracking.asset_run(context, params=to_mapping(promotion)) as run:
        version = log_recommender(
            checkpoint, titles, name=promotion.model_name, k=promotion.k, beam_width=model.config.beam_width,
            lineage_tags=tags, metrics=dict(winner.metrics), item_interests=curated_descriptors(rewards),
            user_prefix=prefix, user_interests=user_interest_text)
        client = mlflow.MlflowClient()
        record_selection(client, promotion.model_name, version.version, selection)
        decision = promote(client, promotion.model_name, version.version, metric="val_ndcg@10",
                           margin=promotion.margin)
        mlflow.set_tags({"registered_version": version.version, "alias": decision.alias,
                         "candidate": winner.asset})
        return dg.MaterializeResult(metadata=md({
            **run.metadata(),
            "model_name": promotion.model_name,
            "version": version.version,
            "ships": winner.asset,
            "candidates": dg.MetadataValue.md(selection.markdown()),
            "candidate_selection": {
                "winner": winner.asset, "runner_up": selection.runner_up.asset if selection.runner_up else None,
                "margin_over_runner_up": selection.margin, "tie": selection.tie, "reason": selection.reason,
                "rows": selection.rows(), "skipped": dict(selection.skipped)},
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
