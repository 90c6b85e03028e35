"""IEID: interest-enhanced item embeddings, the RQ-VAE codebooks and the semantic-ID table."""

import time
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pandas as pd

from assets.common import (
    active_items,
    frame_hash,
    latest_metadata,
    md,
    preview,
    sha256_file,
    upstream_lineage,
    with_captions,
)
from config_schema import flat_mapping, to_mapping
from digr_dagster import settings
from digr_dagster.config_models import dagster_config
from digr_dagster.resources.mlflow_tracking import MlflowTracking, lightning_logger
from digr_dagster.resources.models import TextEncoderResource
from digr_dagster.resources.warehouse import Warehouse
from encoders.embedding_reuse import encode_reusing
from training.item_text import ItemTextSettings, catalogue_item_texts
from training.settings import RQVAEConfig

UNIQUE = "sids_unique"



ItemEmbeddingConfig = dagster_config(ItemTextSettings, name="ItemEmbeddingConfig")
#: image_dim is set by the image encoder when item images are fused, not by hand
SemanticIdConfig = dagster_config(RQVAEConfig, name="SemanticIdConfig", exclude=("image_dim",))


def embed_items(context: dg.AssetExecutionContext, config: ItemTextSettings, warehouse: Warehouse,
                text_encoder: TextEncoderResource, *, table: str) -> dg.MaterializeResult:
    """Embed every active item's (enriched or plain) text into ``table``; the settings go into its metadata."""
    from mining.judges import curated_descriptors

    items = with_captions(warehouse, active_items(warehouse))
    descriptors = None
    if config.with_interests:
        rewards = warehouse.read("interest_rewards")
        descriptors = curated_descriptors(rewards, keep_all=config.keep_all_descriptors)
    texts = catalogue_item_texts(items, descriptors, config)
    encoder = text_encoder.get()
    # incremental: an item whose text this encoder already embedded keeps its vector, only new or changed
    # texts are encoded (the nightly cost follows the new items, not the catalogue)
    last = latest_metadata(context, table, required=False) or {}
    previous = warehouse.read(table) if last.get("encoder") == encoder.model_name and warehouse.exists(table) else None
    t0 = time.perf_counter()
    reuse = encode_reusing(items["item_id"].astype(str).tolist(), texts.astype(str).tolist(), encoder.encode, previous)
    vectors = reuse.vectors
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
        **reuse.metadata(),
        "with_interests": config.with_interests,
        "settings": to_mapping(config),
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
    return embed_items(context, config.build(), warehouse, text_encoder, table="item_embeddings")


def train_semantic_ids(context: dg.AssetExecutionContext, rq_config: RQVAEConfig, warehouse: Warehouse,
                       mlflow_tracking: MlflowTracking, *, source: str, target: str, check: str):
    """RQ-VAE on the vectors in ``source``; SIDs into ``target`` only when unique (blocking ``check``).
    The checkpoint carries ``rq_config`` (seed included); its settings are in metadata and MLflow params.
    With ``refresh="auto"`` an earlier table from the same settings is extended instead when it still holds
    (``_extend_prior``): existing SIDs stay, new items get fresh ones from the same codebook."""
    from assets.recommender import worker_node_done
    from training.codebook_health import codebook_health
    from training.distributed import is_main_node
    from training.rqvae import train_rqvae
    from training.semantic_ids import SemanticIdTable, assign_suffixes

    emb = warehouse.read(source, order_by="item_id")
    x = np.stack([np.asarray(v, dtype=np.float32) for v in emb["embedding"]])
    extension, why_retrain = _extend_prior(context, rq_config, warehouse, target, emb, x)
    if not is_main_node():  # another machine of a multi-node run: train alongside node 0, write nothing
        if extension is None:  # the same callbacks as node 0 (only node 0 writes)
            train_rqvae(x, rq_config, checkpoint_dir=Path(settings.checkpoints_dir()) / "rqvae" / "worker",
                        num_threads=1)
        raise worker_node_done(context)
    params = {**flat_mapping(rq_config), "n_items": len(emb), "input_dim": int(x.shape[1]), "source": source,
              "codebook": "extended" if extension else "trained"}
    with mlflow_tracking.asset_run(context, params=params) as run:
        if extension is not None:
            table, checkpoint, codebook_size, placed = extension
            frame = table.to_frame()
            health = codebook_health(table.codes, codebook_size, suffix=table.suffix)
            produced = {"codebook": "extended (no retraining)", **placed.metadata()}
        else:
            ckpt_dir = Path(settings.checkpoints_dir()) / "rqvae" / run.run_id
            result = train_rqvae(x, rq_config, checkpoint_dir=ckpt_dir,
                                 logger=lightning_logger(run, mlflow_tracking.experiment_name), num_threads=1)
            item_ids = emb["item_id"].tolist()
            suffix = assign_suffixes(result.codes, item_ids, result.distances)
            health = codebook_health(result.codes, result.config.codebook_size, suffix=suffix)
            frame = SemanticIdTable(item_ids, result.codes, suffix).to_frame()
            checkpoint, codebook_size, losses = result.checkpoint_path, result.config.codebook_size, result.loss_history
            produced = {"codebook": f"trained ({why_retrain})", "small_catalogue_message": result.message or "",
                        "train_seconds": round(result.train_seconds, 2),
                        "loss_first_epoch": losses[0] if losses else {},
                        "loss_last_epoch": losses[-1] if losses else {}}
            mlflow.log_metric("train_seconds", result.train_seconds)
            if checkpoint:
                mlflow.log_artifact(checkpoint, artifact_path="rqvae")
        hm = health.to_metadata()
        if not health.sids_unique:  # guard: nothing is written when SIDs would be ambiguous
            yield dg.AssetCheckResult(check_name=check, passed=False, metadata=md(hm))
            raise dg.Failure(f"semantic IDs not unique after the suffix ({hm['uniqueness_after_suffix']:.4f})")
        mlflow.log_metrics({
            "collision_rate": hm["collision_rate"], "largest_collision_group": hm["largest_collision_group"],
            "uniqueness_after_suffix": hm["uniqueness_after_suffix"],
            **{f"usage_l{i}": u for i, u in enumerate(hm["usage"])},
            **{f"entropy_norm_l{i}": e for i, e in enumerate(hm["entropy_normalised"])},
        })
        mlflow.log_dict(health.to_metadata(), "codebook_health.json")
        warehouse.replace({target: frame})
        yield dg.MaterializeResult(metadata=md({
            "dagster/row_count": len(frame),
            **run.metadata(),
            "table": target,
            "seed": rq_config.seed,
            "settings": to_mapping(rq_config),
            "codebook_size_used": codebook_size,
            **produced,
            "checkpoint": checkpoint or "",
            "checkpoint_sha256": sha256_file(checkpoint) if checkpoint else "",
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


#: settings that do not change what a codebook is (how it is refreshed, how many processes train it)
_NOT_CODEBOOK = ("refresh", "refresh_max_moved_share", "refresh_max_fill", "distributed")


def _codebook_settings(mapping: dict | None) -> dict:
    return {k: v for k, v in (mapping or {}).items() if k not in _NOT_CODEBOOK}


def _extend_prior(context: dg.AssetExecutionContext, rq_config: RQVAEConfig, warehouse: Warehouse, target: str,
                  emb: pd.DataFrame, x: np.ndarray):
    """``((table, checkpoint, codebook_size, Extension), "")`` when the last ``target`` table can be extended to
    the current items without retraining: same codebook settings, its checkpoint intact, every item it holds
    still mapped to its code by that codebook (a changed text that moves an item's code asks for retraining), and
    room for the new items (``CodebookCapacity``); else ``(None, why it retrains)``."""
    from training.rqvae import RQVAE
    from training.semantic_ids import SemanticIdError, SemanticIdTable
    from training.sid_extension import CodebookCapacity, extend_semantic_ids

    if rq_config.refresh == "retrain":
        return None, "refresh=retrain"
    last = latest_metadata(context, target, required=False)
    if last is None or not warehouse.exists(target):
        return None, "no earlier SID table"
    if _codebook_settings(last.get("settings")) != _codebook_settings(to_mapping(rq_config)):
        return None, "the codebook settings changed"
    checkpoint = last.get("checkpoint") or ""
    if not checkpoint or not Path(checkpoint).is_file() or sha256_file(checkpoint) != last.get("checkpoint_sha256"):
        return None, "the earlier codebook's checkpoint is missing or changed"
    prior = SemanticIdTable.from_frame(warehouse.read(target))
    ids = emb["item_id"].astype(str).to_numpy()
    known = np.isin(ids, prior.item_ids)
    module = RQVAE.load_from_checkpoint(checkpoint, map_location="cpu")
    if x.shape[1] != module.input_dim + module.image_dim:
        return None, "the embedding width changed"
    codes, _ = module.assign_codes(x[known])
    row_of = {item: k for k, item in enumerate(prior.item_ids)}  # a list.index per item is quadratic
    held = prior.codes[[row_of[i] for i in ids[known]]] if known.any() else codes
    drifted = int((codes != held).any(axis=1).sum()) if known.any() else 0
    if drifted:
        return None, f"{drifted} item(s) changed their codes (their text changed)"
    try:
        extension = extend_semantic_ids(module, prior, ids[~known].tolist(), x[~known])
    except SemanticIdError as exc:
        return None, str(exc)
    crowded = CodebookCapacity(max_moved_share=rq_config.refresh_max_moved_share,
                               max_fill=rq_config.refresh_max_fill).reasons(extension)
    if crowded:
        return None, "; ".join(crowded)
    # items that left the catalogue leave the table (their codes are not handed to newcomers in this run)
    current = set(ids.tolist())
    keep = [k for k, i in enumerate(extension.table.item_ids) if i in current]
    table = SemanticIdTable([extension.table.item_ids[k] for k in keep], extension.table.codes[keep],
                            extension.table.suffix[keep])
    context.log.info(f"{target}: extended the earlier codebook with {extension.new_items} new item(s)")
    return (table, checkpoint, int(module.config.codebook_size), extension), ""


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
    yield from train_semantic_ids(context, config.build(), warehouse, mlflow_tracking, source="item_embeddings",
                                  target="semantic_ids", check=UNIQUE)
