"""Serving assets: every known user's top-K from the champion, batch-scored after each promotion run."""

import dagster as dg

from assets.common import frame_hash, latest_metadata, md, preview, upstream_lineage
from config_schema import to_mapping
from digr_dagster.config_models import dagster_config
from digr_dagster.resources.mlflow_tracking import MlflowTracking, display_uri
from digr_dagster.resources.warehouse import Warehouse
from serving.batch_scoring import TABLE, BatchScoringSettings
from serving.registry import PromotionSettings

CONTRACT = "data_contract"

UserRecommendationsConfig = dagster_config(BatchScoringSettings, name="UserRecommendationsConfig")


def _check(result) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(asset_key=TABLE, check_name=CONTRACT, passed=bool(result.success),
                               severity=dg.AssetCheckSeverity.ERROR, metadata=md(result.to_metadata()))


@dg.asset(
    name=TABLE,
    deps=["champion_model", "interaction_splits"],
    group_name="serving",
    kinds={"duckdb", "mlflow"},
    pool="warehouse",
    check_specs=[dg.AssetCheckSpec(CONTRACT, asset=TABLE, blocking=True,
                                   description="one row per (user, rank) and per (user, item), ranks 1..n, finite "
                                               "scores best first, every scorable user present, one model version")],
    description="Every known user's top-K from the registry's champion (the user's whole known history, as "
                "`digr recommend --user` asks), scored in large batches: served from this table "
                "(serving.batch_scoring.recommend_user, `digr recommend --user --precomputed`), online ranking only "
                "for users it does not hold.",
)
def user_recommendations(context: dg.AssetExecutionContext, config: UserRecommendationsConfig, warehouse: Warehouse,
                         mlflow_tracking: MlflowTracking):
    import mlflow

    from serving.batch_scoring import (
        RecommendationsContractError,
        load_model,
        resolve_model,
        score_users,
        user_histories,
        write_recommendations,
    )

    settings = config.build()
    # the model the promotion step of this code location registers (its config may name another than the default)
    promoted = (latest_metadata(context, "champion_model", required=False) or {}).get("model_name")
    model_name = settings.model_name or promoted or PromotionSettings().model_name
    mlflow_tracking.configure_client()
    try:
        ref = resolve_model(mlflow.MlflowClient(), model_name, settings.alias)
    except LookupError as exc:
        raise dg.Failure(f"{exc}; the previous {TABLE} table is kept") from exc
    model = load_model(ref)
    histories = user_histories(warehouse.read("interaction_splits", order_by="user_id, position"))
    context.log.info(f"scoring {len(histories)} users with {ref.uri} ({settings.alias})")

    def progress(done: int, total: int) -> None:
        context.log.debug(f"scored {done}/{total} users")

    scores = score_users(model, histories, ref=ref, batch_users=settings.batch_users,
                         exclude_seen=settings.exclude_seen, progress=progress, num_threads=settings.num_threads)
    if scores.skipped:
        context.log.warning(f"{len(scores.skipped)} users are not scored (served online): "
                            f"{dict(list(scores.skipped.items())[:3])}")
    meta = getattr(model.unwrap_python_model(), "meta", None)
    k = getattr(meta, "k", None)
    try:
        rows, result = write_recommendations(warehouse, scores.frame, expected_users=scores.scored_users, k=k)
    except RecommendationsContractError as exc:
        yield _check(exc.result)
        raise dg.Failure(description=str(exc), metadata=md(exc.result.to_metadata())) from exc
    yield dg.MaterializeResult(metadata=md({
        "dagster/row_count": rows,
        "users": scores.users,
        "users_scored": scores.users_scored,
        "users_skipped": len(scores.skipped),
        "skipped_examples": dict(list(scores.skipped.items())[:5]),
        "wall_seconds": round(scores.seconds, 3),
        "users_per_s": round(scores.users_per_s, 2),
        "predict_calls": scores.predict_calls,
        "model_name": ref.name,
        "model_version": ref.version,
        "model_alias": settings.alias,
        "model_run_id": ref.run_id or "",
        "model_uri": ref.uri,
        "mlflow_tracking_uri": display_uri(mlflow_tracking.tracking_uri),
        "exclude_seen": scores.exclude_seen,
        "k": k if k is not None else -1,
        "settings": to_mapping(settings),
        "content_hash": frame_hash(scores.frame),
        "lineage": upstream_lineage(context, "champion_model", "interaction_splits"),
        "preview": preview(scores.frame[["user_id", "rank", "item_id", "score"]], 12),
    }))
    yield _check(result)
