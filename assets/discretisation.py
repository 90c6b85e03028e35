"""IEID: interest-enhanced item embeddings, the RQ-VAE codebooks and the semantic-ID table."""

import time
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
from pydantic import Field

from assets.common import active_items, frame_hash, md, preview, sha256_file, upstream_lineage, with_captions
from digr_dagster import settings
from digr_dagster.resources.mlflow_tracking import MlflowTracking, lightning_logger
from digr_dagster.resources.models import TextEncoderResource
from digr_dagster.resources.warehouse import Warehouse

UNIQUE = "sids_unique"



class ItemEmbeddingConfig(dg.Config):
    with_interests: bool = Field(default=True, description="Append curated descriptors to the item text "
                                                           "(False: plain text, the ablation)")
    keep_all_descriptors: bool = Field(default=False, description="Use every descriptor, not only label-1 ones")
    max_chars: int = Field(default=1200, ge=64, description="Cut the enriched text at this many characters")


class SemanticIdConfig(dg.Config):
    n_levels: int = Field(default=3, ge=1)
    codebook_size: int = Field(default=256, ge=2)
    latent_dim: int = Field(default=32, ge=2)
    max_epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=256, ge=8)
    learning_rate: float = 1e-3
    beta: float = Field(default=0.25, description="commitment loss weight")
    on_small_catalogue: str = Field(default="adapt", description="adapt | refuse when items < 2 × codebook size")
    seed: int = 42


def item_texts(items: pd.DataFrame, descriptors: dict[str, list[str]] | None, with_interests: bool,
               max_chars: int) -> pd.Series:
    """Enriched text: title, description (+ categories and brand), then the curated descriptors."""
    from training.item_text import build_item_texts

    frame = items.copy()
    details = [frame["description"].fillna("")]
    for col, label in (("categories", "Category"), ("brand", "Brand")):
        if col in frame:
            val = frame[col].fillna("").astype(str)
            details.append(np.where(val.str.len() > 0, label + ": " + val + ".", ""))
    frame["description"] = [" ".join(p for p in parts if p) for parts in zip(*details, strict=True)]
    frame["descriptors"] = [list(descriptors.get(i, [])) if descriptors else [] for i in frame["item_id"]]
    return build_item_texts(frame, with_interests=with_interests, max_chars=max_chars)


def embed_items(context: dg.AssetExecutionContext, config: ItemEmbeddingConfig, warehouse: Warehouse,
                text_encoder: TextEncoderResource, *, table: str) -> dg.MaterializeResult:
    """Embed every active item's (enriched or plain) text into ``table``."""
    from mining.judges import curated_descriptors

    items = with_captions(warehouse, active_items(warehouse))
    descriptors = None
    if config.with_interests:
        rewards = warehouse.read("interest_rewards")
        descriptors = curated_descriptors(rewards, keep_all=config.keep_all_descriptors)
    texts = item_texts(items, descriptors, config.with_interests, config.max_chars)
    encoder = text_encoder.get()
    t0 = time.perf_counter()
    vectors = encoder.encode(texts.tolist())
    seconds = time.perf_counter() - t0
    frame = pd.DataFrame({
        "item_id": items["item_id"].astype(str),
        "text": texts.astype(str).to_numpy(),
        "n_descriptors": [len(descriptors.get(i, [])) if descriptors else 0 for i in items["item_id"]],
        "embedding": [v.astype(np.float32).tolist() for v in vectors],
    })
    warehouse.replace({table: frame})
    with_any = float((frame["n_descriptors"] > 0).mean())
    return dg.MaterializeResult(metadata=md({
        "dagster/row_count": len(frame),
        "table": table,
        "encoder": encoder.model_name,
        "dim": int(vectors.shape[1]),
        "with_interests": config.with_interests,
        "share_items_with_descriptors": round(with_any, 4),
        "items_per_second": round(len(frame) / max(seconds, 1e-9), 1),
        "content_hash": frame_hash(frame[["item_id", "text"]]),
        "lineage": upstream_lineage(context, "items", "interest_rewards"),
        "example_texts": preview(frame[["item_id", "text"]].assign(text=frame["text"].str.slice(0, 200)), 5),
    }))


@dg.asset(
    deps=["items", "interaction_splits", "interest_rewards", "item_captions"],
    group_name="ieid",
    kinds={"duckdb", "pytorch"},
    pool="warehouse",
    description="Interest-enhanced item text embedded by the text encoder (one vector per item).",
)
def item_embeddings(context: dg.AssetExecutionContext, config: ItemEmbeddingConfig, warehouse: Warehouse,
                    text_encoder: TextEncoderResource) -> dg.MaterializeResult:
    return embed_items(context, config, warehouse, text_encoder, table="item_embeddings")


def train_semantic_ids(context: dg.AssetExecutionContext, config: SemanticIdConfig, warehouse: Warehouse,
                       mlflow_tracking: MlflowTracking, *, source: str, target: str, check: str):
    """RQ-VAE on the vectors in ``source``; SIDs into ``target`` only when unique (blocking ``check``)."""
    from training.codebook_health import codebook_health
    from training.rqvae import RQVAEConfig, train_rqvae
    from training.semantic_ids import SemanticIdTable, assign_suffixes

    emb = warehouse.read(source, order_by="item_id")
    x = np.stack([np.asarray(v, dtype=np.float32) for v in emb["embedding"]])
    rq_config = RQVAEConfig(
        n_levels=config.n_levels, codebook_size=config.codebook_size, latent_dim=config.latent_dim,
        max_epochs=config.max_epochs, batch_size=config.batch_size, learning_rate=config.learning_rate,
        beta=config.beta, on_small_catalogue=config.on_small_catalogue,
    )
    params = {**config.model_dump(), "n_items": len(emb), "input_dim": int(x.shape[1]), "source": source}
    with mlflow_tracking.asset_run(context, params=params) as run:
        ckpt_dir = Path(settings.checkpoints_dir()) / "rqvae" / run.run_id
        result = train_rqvae(x, rq_config, seed=config.seed, checkpoint_dir=ckpt_dir,
                             logger=lightning_logger(run, mlflow_tracking.experiment_name), num_threads=1)
        item_ids = emb["item_id"].tolist()
        suffix = assign_suffixes(result.codes, item_ids, result.distances)
        health = codebook_health(result.codes, result.config.codebook_size, suffix=suffix)
        hm = health.to_metadata()
        if not health.sids_unique:  # guard: nothing is written when SIDs would be ambiguous
            yield dg.AssetCheckResult(check_name=check, passed=False, metadata=md(hm))
            raise dg.Failure(f"semantic IDs not unique after the suffix ({hm['uniqueness_after_suffix']:.4f})")
        frame = SemanticIdTable(item_ids, result.codes, suffix).to_frame()
        mlflow.log_metrics({
            "collision_rate": hm["collision_rate"], "largest_collision_group": hm["largest_collision_group"],
            "uniqueness_after_suffix": hm["uniqueness_after_suffix"], "train_seconds": result.train_seconds,
            **{f"usage_l{i}": u for i, u in enumerate(hm["usage"])},
            **{f"entropy_norm_l{i}": e for i, e in enumerate(hm["entropy_normalised"])},
        })
        if result.checkpoint_path:
            mlflow.log_artifact(result.checkpoint_path, artifact_path="rqvae")
        mlflow.log_dict(health.to_metadata(), "codebook_health.json")
        warehouse.replace({target: frame})
        losses = result.loss_history
        yield dg.MaterializeResult(metadata=md({
            "dagster/row_count": len(frame),
            **run.metadata(),
            "table": target,
            "codebook_size_used": result.config.codebook_size,
            "small_catalogue_message": result.message or "",
            "train_seconds": round(result.train_seconds, 2),
            "loss_first_epoch": losses[0] if losses else {},
            "loss_last_epoch": losses[-1] if losses else {},
            "checkpoint": result.checkpoint_path or "",
            "checkpoint_sha256": sha256_file(result.checkpoint_path) if result.checkpoint_path else "",
            "codebook_health": hm,
            "collision_rate": hm["collision_rate"],
            "largest_collision_group": hm["largest_collision_group"],
            "content_hash": frame_hash(frame),
            "lineage": upstream_lineage(context, source),
            "preview": preview(frame),
        }))
    yield dg.AssetCheckResult(
        check_name=check, passed=health.sids_unique,
        metadata={"uniqueness_after_suffix": hm["uniqueness_after_suffix"],
                  "collision_rate_before_suffix": hm["collision_rate"],
                  "largest_collision_group": hm["largest_collision_group"]},
    )


@dg.asset(
    deps=["item_embeddings"],
    group_name="ieid",
    kinds={"duckdb", "pytorch", "mlflow"},
    pool="warehouse",
    check_specs=[dg.AssetCheckSpec(UNIQUE, asset="semantic_ids", blocking=True,
                                   description="Every item has a distinct SID after the suffix")],
    description="RQ-VAE codes per item plus a suffix only where full codes collide; lookup both ways.",
)
def semantic_ids(context: dg.AssetExecutionContext, config: SemanticIdConfig, warehouse: Warehouse,
                 mlflow_tracking: MlflowTracking):
    yield from train_semantic_ids(context, config, warehouse, mlflow_tracking, source="item_embeddings",
                                  target="semantic_ids", check=UNIQUE)
