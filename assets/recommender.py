"""The generative recommender: SFT on SID sequences, then GRPO with the interest-aware reward."""

import hashlib
import json
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
from pydantic import Field

from assets.common import config_of, frame_hash, latest_metadata, md, sha256_file, upstream_lineage
from digr_dagster import settings
from digr_dagster.resources.mlflow_tracking import MlflowTracking, lightning_logger
from digr_dagster.resources.models import TextEncoderResource
from digr_dagster.resources.warehouse import Warehouse

TRAIN_RETRY = dg.RetryPolicy(max_retries=1, delay=5)


class SftConfig(dg.Config):
    d_model: int = 128
    d_ff: int = 256
    num_layers: int = Field(default=2, description="encoder and decoder layers each")
    num_heads: int = 4
    dropout: float = 0.1
    lr: float = 1e-3
    batch_size: int = 64
    max_epochs: int = 30
    patience: int = 5
    beam_width: int = 20
    max_history: int = 20
    use_user_interests: bool = Field(default=True, description="Prepend user-interest tokens to the input")
    interest_tokens: int = Field(default=4, description="user interests turned into tokens")
    interest_depth: int = Field(default=2, description="SID levels per interest token group")
    seed: int = 0


class GrpoConfig(dg.Config):
    group_size: int = 8
    max_epochs: int = 3
    lr: float = 1e-4
    kl_beta: float = 0.001
    clip_eps: float = 0.2
    lambda_valid: float = 0.1
    lambda_pref: float = 0.3
    alpha: float = Field(default=0.5, description="weight of the item-quality term q_target (0 = ablation)")
    max_batches_per_epoch: int | None = Field(
        default=None, description="train on this many shuffled batches per epoch (None = all samples): caps the "
                                  "cost of GRPO's group sampling on large catalogues")
    seed: int = 0


def _vocab(warehouse: Warehouse, table: str = "semantic_ids", context: dg.AssetExecutionContext | None = None):
    from training.sid_vocab import SidVocab

    sid_frame = warehouse.read(table, order_by="item_id")
    if context is not None:  # training must see exactly the SIDs the codebook asset wrote
        recorded = latest_metadata(context, table).get("content_hash")
        actual = frame_hash(sid_frame)
        if recorded is not None and actual != recorded:
            raise dg.Failure(f"table {table} was altered after its materialisation (content hash {actual} != "
                             f"recorded {recorded}); refusing to train on it — rematerialise {table}")
    return SidVocab.from_frame(sid_frame), sid_frame


def user_prefix_tokens(warehouse: Warehouse, vocab, encoder, *, n: int, depth: int,
                       embeddings: str = "item_embeddings") -> dict[str, list[int]]:
    """Interest tokens per user from ``user_interests`` (itself built from the training prefix only)."""
    from training.sequence_data import interest_prefix_tokens

    interests = warehouse.read("user_interests", order_by="user_id, rank")
    emb = warehouse.read(embeddings)
    by_item = dict(zip(emb["item_id"].astype(str), emb["embedding"], strict=True))
    item_matrix = np.stack([np.asarray(by_item[i], dtype=np.float32) for i in vocab.item_ids])
    texts = interests["interest"].astype(str).tolist()
    vectors = encoder.encode(texts) if texts else np.zeros((0, item_matrix.shape[1]), np.float32)
    per_user: dict[str, list] = {}
    for user, vec in zip(interests["user_id"].astype(str), vectors, strict=True):
        per_user.setdefault(user, []).append(vec)
    return interest_prefix_tokens({u: np.stack(v) for u, v in per_user.items()}, item_matrix, vocab,
                                  n=n, depth=depth)


def stored_user_prefix(warehouse: Warehouse, config: SftConfig) -> dict[str, list[int]] | None:
    """The interest tokens the current SFT model was trained with (table ``user_interest_tokens``), so every
    later stage encodes users exactly as training did, without re-embedding the interests."""
    if not config.use_user_interests:
        return None
    table = warehouse.read("user_interest_tokens")
    return {str(u): [int(t) for t in tokens] for u, tokens in zip(table["user_id"], table["tokens"], strict=True)}


def _data(warehouse: Warehouse, vocab, config: SftConfig, prefix: dict[str, list[int]] | None):
    from training.sequence_data import SequenceDataModule

    splits = warehouse.read("interaction_splits", order_by="user_id, position")
    dm = SequenceDataModule(splits, vocab, max_history=config.max_history, batch_size=config.batch_size,
                            eval_batch_size=128, seed=config.seed, user_prefix=prefix)
    return dm, splits


def _run_key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _content_hashes(context, *names) -> list:
    lineage = upstream_lineage(context, *names)
    return [(n, (lineage[n] or {}).get("content_hash")) for n in names]


def train_sft(context: dg.AssetExecutionContext, config: SftConfig, warehouse: Warehouse,
              text_encoder: TextEncoderResource, mlflow_tracking: MlflowTracking, *, sids: str = "semantic_ids",
              embeddings: str = "item_embeddings", tokens_table: str | None = "user_interest_tokens",
              ) -> dg.MaterializeResult:
    """Train the generator on the SIDs in ``sids`` (user-interest tokens when the config asks for them);
    shared by ``recommender_sft`` and the variants it is compared with."""
    from evaluation.baselines import evaluate_popularity
    from training.generator import GeneratorConfig, evaluate_generator, load_generator, train_generator

    vocab, _ = _vocab(warehouse, sids, context)
    prefix = None
    if config.use_user_interests:
        prefix = user_prefix_tokens(warehouse, vocab, text_encoder.get(), n=config.interest_tokens,
                                    depth=config.interest_depth, embeddings=embeddings)
    dm, splits = _data(warehouse, vocab, config, prefix)
    gen_config = GeneratorConfig(
        d_model=config.d_model, d_ff=config.d_ff, num_encoder_layers=config.num_layers,
        num_decoder_layers=config.num_layers, num_heads=config.num_heads, dropout=config.dropout, lr=config.lr,
        max_epochs=config.max_epochs, batch_size=config.batch_size, patience=config.patience,
        beam_width=config.beam_width, seed=config.seed)
    inputs = ["interaction_splits", sids] + (["user_interests"] if config.use_user_interests else [])
    upstream = _content_hashes(context, *inputs)
    # same inputs + config → same folder, so a killed run resumes from its last checkpoint
    ckpt_dir = settings.checkpoints_dir() / context.asset_key.to_user_string() / _run_key(config.model_dump(), upstream)
    with mlflow_tracking.asset_run(context, params={**config.model_dump(), "vocab_size": vocab.vocab_size,
                                                    "n_items": vocab.n_items, "sids": sids}) as run:
        result = train_generator(dm, vocab, gen_config, logger=lightning_logger(run, mlflow_tracking.experiment_name),
                                 checkpoint_dir=ckpt_dir, resume=True)
        best = load_generator(result.best_checkpoint)
        valid = evaluate_generator(best, dm.loader("valid"), ks=(5, 10))
        test = evaluate_generator(best, dm.loader("test"), ks=(5, 10))
        pop_valid = evaluate_popularity(splits, vocab.item_ids, "valid")
        metrics = {**{f"valid_{k}": v for k, v in valid.items()}, **{f"test_{k}": v for k, v in test.items()},
                   **{f"popularity_valid_{k}": v for k, v in pop_valid.items()}}
        mlflow.log_metrics({k.replace("@", "_at_"): v for k, v in metrics.items()})
        mlflow.log_artifact(result.best_checkpoint, artifact_path="sft")
        if tokens_table:
            tokens = pd.DataFrame({"user_id": pd.Series(list((prefix or {}).keys()), dtype="string"),
                                   "tokens": pd.Series([list(map(int, v)) for v in (prefix or {}).values()],
                                                       dtype="object")})
            warehouse.replace({tokens_table: tokens})
        return dg.MaterializeResult(metadata=md({
            **run.metadata(),
            "sids": sids,
            "user_interest_tokens": config.use_user_interests,
            "seed": config.seed,
            "checkpoint": result.best_checkpoint,
            "checkpoint_sha256": sha256_file(result.best_checkpoint),
            "epochs_completed": result.epochs_completed,
            "resumed_from": result.resumed_from or "",
            "best_val_ndcg@10": round(result.best_val_ndcg, 5),
            **{k: round(float(v), 5) for k, v in metrics.items()},
            "beats_popularity_valid_ndcg@10": bool(valid["ndcg@10"] > pop_valid["ndcg@10"]),
            "users_with_interest_tokens": sum(1 for v in (prefix or {}).values() if v),
            "vocab_size": vocab.vocab_size,
            "history": result.history,
            "lineage": upstream_lineage(context, *inputs),
        }))


@dg.asset(
    deps=["interaction_splits", "semantic_ids", "user_interests", "item_embeddings"],
    group_name="recommender",
    kinds={"pytorch", "mlflow"},
    pool="warehouse",
    retry_policy=TRAIN_RETRY,
    description="T5 generator trained to emit the next item's SID (Lightning, early stopping on val NDCG@10).",
)
def recommender_sft(context: dg.AssetExecutionContext, config: SftConfig, warehouse: Warehouse,
                    text_encoder: TextEncoderResource, mlflow_tracking: MlflowTracking) -> dg.MaterializeResult:
    return train_sft(context, config, warehouse, text_encoder, mlflow_tracking)


def checkpoint_from_lineage(context: dg.AssetExecutionContext, asset: str) -> str:
    """The checkpoint an upstream model asset recorded, verified against its recorded SHA-256."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey(asset))
    if event is None or event.asset_materialization is None:
        raise dg.Failure(f"{asset} has no materialisation; materialise it first")
    meta = event.asset_materialization.metadata
    path = meta["checkpoint"].value
    expected = meta["checkpoint_sha256"].value
    if not Path(path).is_file():
        raise dg.Failure(f"{asset} checkpoint {path} is missing; rematerialise {asset}")
    actual = sha256_file(path)
    if actual != expected:
        raise dg.Failure(f"{asset} checkpoint {path} was altered or truncated (sha256 {actual[:12]}… != recorded "
                         f"{expected[:12]}…); refusing to load it — rematerialise {asset}")
    return path


def train_grpo_stage(context: dg.AssetExecutionContext, config: GrpoConfig, warehouse: Warehouse,
                     mlflow_tracking: MlflowTracking) -> dg.MaterializeResult:
    """GRPO from the current ``recommender_sft`` model; shared by ``recommender_grpo`` and its q-term ablation."""
    from training.generator import evaluate_generator, load_generator
    from training.grpo import GRPOConfig, train_grpo
    from training.rewards import RewardConfig

    sft_path = checkpoint_from_lineage(context, "recommender_sft")
    sft_event = context.instance.get_latest_materialization_event(dg.AssetKey("recommender_sft"))
    sft_run_config = _sft_config_of(context)
    vocab, _ = _vocab(warehouse)
    dm, _ = _data(warehouse, vocab, sft_run_config, stored_user_prefix(warehouse, sft_run_config))
    quality = warehouse.read("item_quality")
    q = dict(zip(quality["item_id"].astype(str), quality["q"].astype(float), strict=True))
    grpo_config = GRPOConfig(
        group_size=config.group_size, max_epochs=config.max_epochs, lr=config.lr, kl_beta=config.kl_beta,
        clip_eps=config.clip_eps, seed=config.seed, max_batches_per_epoch=config.max_batches_per_epoch,
        reward=RewardConfig(lambda_valid=config.lambda_valid, lambda_pref=config.lambda_pref, alpha=config.alpha))
    ckpt_dir = (settings.checkpoints_dir() / context.asset_key.to_user_string()
                / _run_key(config.model_dump(), sha256_file(sft_path)))
    with mlflow_tracking.asset_run(context, params=config.model_dump()) as run:
        result = train_grpo(sft_path, dm, vocab, q, grpo_config,
                            logger=lightning_logger(run, mlflow_tracking.experiment_name), checkpoint_dir=ckpt_dir)
        chosen = load_generator(result.checkpoint)
        valid = evaluate_generator(chosen, dm.loader("valid"), ks=(5, 10))
        test = evaluate_generator(chosen, dm.loader("test"), ks=(5, 10))
        metrics = {**{f"valid_{k}": v for k, v in valid.items()}, **{f"test_{k}": v for k, v in test.items()}}
        if result.kept == "sft":  # the GRPO policy itself, for comparisons between GRPO variants
            policy = load_generator(result.grpo_checkpoint)
            metrics.update({f"policy_valid_{k}": v for k, v in evaluate_generator(policy, dm.loader("valid"),
                                                                                  ks=(5, 10)).items()})
            metrics.update({f"policy_test_{k}": v for k, v in evaluate_generator(policy, dm.loader("test"),
                                                                                 ks=(5, 10)).items()})
        else:
            metrics.update({f"policy_{k}": v for k, v in list(metrics.items())})
        mlflow.log_metrics({k.replace("@", "_at_"): v for k, v in metrics.items()})
        mlflow.set_tag("kept", result.kept)
        mlflow.log_artifact(result.checkpoint, artifact_path="grpo")
        return dg.MaterializeResult(metadata=md({
            **run.metadata(),
            "kept": result.kept,
            "alpha": config.alpha,
            "checkpoint": result.checkpoint,
            "checkpoint_sha256": sha256_file(result.checkpoint),
            "sft_val_ndcg@10": round(result.sft_val_ndcg, 5),
            "grpo_val_ndcg@10": round(result.grpo_val_ndcg, 5),
            **{k: round(float(v), 5) for k, v in metrics.items()},
            "history": result.history,
            "sft_run_id": sft_event.run_id,
            "lineage": upstream_lineage(context, "interaction_splits", "recommender_sft", "interest_rewards"),
        }))


@dg.asset(
    deps=["recommender_sft", "interest_rewards"],
    group_name="recommender",
    kinds={"pytorch", "mlflow"},
    pool="warehouse",
    retry_policy=TRAIN_RETRY,
    description="GRPO from the SFT model with r = 1[exact] + λv·1[valid] + λp·LCP/L + α·q·1[exact]; keeps SFT "
                "when validation NDCG@10 drops.",
)
def recommender_grpo(context: dg.AssetExecutionContext, config: GrpoConfig, warehouse: Warehouse,
                     mlflow_tracking: MlflowTracking) -> dg.MaterializeResult:
    return train_grpo_stage(context, config, warehouse, mlflow_tracking)


def _sft_config_of(context: dg.AssetExecutionContext) -> SftConfig:
    """The SftConfig of the run that produced the current SFT model (for identical input encoding)."""
    return config_of(context, "recommender_sft", SftConfig)

