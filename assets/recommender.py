"""The generative recommender: SFT on SID sequences, then GRPO with the interest-aware reward."""

import hashlib
import json
from pathlib import Path

import dagster as dg
import mlflow
import pandas as pd

from assets.common import frame_hash, latest_metadata, md, sha256_file, upstream_lineage
from config_schema import flat_mapping, to_mapping
from digr_dagster import settings
from digr_dagster.config_models import dagster_config
from digr_dagster.resources.mlflow_tracking import MlflowTracking, lightning_logger
from digr_dagster.resources.models import TextEncoderResource
from digr_dagster.resources.warehouse import Warehouse
from training.settings import GeneratorConfig, GRPOConfig, SequenceSettings

TRAIN_RETRY = dg.RetryPolicy(max_retries=1, delay=5)


#: the SFT launchpad: every generator setting and every sequence setting, derived from the library
SftConfig = dagster_config(GeneratorConfig, SequenceSettings, name="SftConfig")
#: the GRPO launchpad (the reward weights nest under ``reward``); sequence settings come from the SFT checkpoint
GrpoConfig = dagster_config(GRPOConfig, name="GrpoConfig")


def load_vocab(warehouse: Warehouse, table: str = "semantic_ids",
               context: dg.AssetExecutionContext | None = None):
    """The SID vocabulary of ``table``; with ``context``, refused when the table differs from its recorded
    materialisation (training must see exactly the SIDs the codebook asset wrote)."""
    from training.sid_vocab import SidVocab

    sid_frame = warehouse.read(table, order_by="item_id")
    if context is not None:
        recorded = latest_metadata(context, table).get("content_hash")
        actual = frame_hash(sid_frame)
        if recorded is not None and actual != recorded:
            raise dg.Failure(f"table {table} was altered after its materialisation (content hash {actual} != "
                             f"recorded {recorded}); refusing to train on it — rematerialise {table}")
    return SidVocab.from_frame(sid_frame), sid_frame


def stored_user_prefix(warehouse: Warehouse, sequence: SequenceSettings) -> dict[str, list[int]] | None:
    """The interest tokens the current SFT model was trained with (table ``user_interest_tokens``), when its
    sequence settings use them, so every later stage encodes users exactly as training did."""
    if not sequence.use_user_interests:
        return None
    table = warehouse.read("user_interest_tokens")
    return {str(u): [int(t) for t in tokens] for u, tokens in zip(table["user_id"], table["tokens"], strict=True)}


def _run_key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _model_settings(settings) -> dict:
    """The settings that decide a model, for its resume key: how many processes train it does not (a run may
    resume on another number), so a run's key is the one it had before the setting existed."""
    return {k: v for k, v in to_mapping(settings).items() if k != "distributed"}


def worker_node_done(context: dg.AssetExecutionContext) -> dg.Failure:
    """What a step on node > 0 of a multi-node run raises once it has trained: node 0 writes the checkpoint,
    MLflow and the warehouse, and this step records no materialisation (and is not retried)."""
    import os

    return dg.Failure(f"{context.asset_key.to_user_string()}: this step ran as DDP worker node "
                      f"{os.environ.get('NODE_RANK')}; node 0 writes the results", allow_retries=False)


def _content_hashes(context, *names) -> list:
    lineage = upstream_lineage(context, *names)
    return [(n, (lineage[n] or {}).get("content_hash")) for n in names]


def warm_start_source(context: dg.AssetExecutionContext, gen: GeneratorConfig, sequence: SequenceSettings,
                      vocab, item_text) -> tuple[object | None, str]:
    """The trained generator ``gen.warm_start`` names and can seed this run, or None and why the run starts
    cold (no such model yet, or one of other semantic IDs, sizes or history cap). A checkpoint altered since it
    was recorded fails the step, as everywhere."""
    import tempfile

    from serving.batch_scoring import resolve_model
    from serving.pyfunc_model import registered_checkpoint
    from serving.registry import CHAMPION, PromotionSettings
    from training.warm_start import WarmStartSource, warm_start_problems

    if gen.warm_start == "off":
        return None, "off"
    if gen.warm_start == "previous":
        asset = context.asset_key.to_user_string()
        event = context.instance.get_latest_materialization_event(dg.AssetKey(asset))
        if event is None:
            return None, f"cold: {asset} has no earlier materialisation"
        source = WarmStartSource.from_checkpoint(checkpoint_from_lineage(context, asset),
                                                 name=f"{asset} (run {event.run_id})")
    else:
        promoted = (latest_metadata(context, "champion_model", required=False) or {}).get("model_name")
        try:
            ref = resolve_model(mlflow.MlflowClient(), promoted or PromotionSettings().model_name, CHAMPION)
        except LookupError as exc:
            return None, f"cold: {exc}"
        with tempfile.TemporaryDirectory(prefix="digr-warm-start-") as tmp:
            try:
                path = registered_checkpoint(ref.name, ref.version, tmp)
            except ValueError as exc:
                raise dg.Failure(str(exc)) from exc
            source = WarmStartSource.from_checkpoint(path, name=ref.uri)
    text_dim = None if item_text is None else int(item_text.shape[1])
    problems = warm_start_problems(source, vocab, gen, sequence, min_same_sid_share=gen.warm_start_min_same_sid,
                                   text_dim=text_dim)
    if problems:
        return None, f"cold: cannot warm-start from {source.name}: " + "; ".join(problems)
    return source, f"from {source.name}"


def train_sft(context: dg.AssetExecutionContext, gen: GeneratorConfig, sequence: SequenceSettings,
              warehouse: Warehouse, text_encoder: TextEncoderResource, mlflow_tracking: MlflowTracking, *,
              sids: str = "semantic_ids", embeddings: str = "item_embeddings",
              tokens_table: str | None = "user_interest_tokens") -> dg.MaterializeResult:
    """Train the generator on the SIDs in ``sids``; shared by ``recommender_sft`` and its variants. The
    checkpoint carries ``gen`` and ``sequence``; ``gen.seed`` seeds the model, the trainer and the order of the
    training windows."""
    from evaluation.baselines import evaluate_popularity
    from training.distributed import is_main_node
    from training.generator import load_generator, train_generator
    from training.sequence_data import SequenceDataModule, item_text_matrix, layout_of, user_interest_tokens

    vocab, _ = load_vocab(warehouse, sids, context)
    prefix = None
    if sequence.use_user_interests:
        prefix = user_interest_tokens(warehouse.read("user_interests"), warehouse.read(embeddings), vocab,
                                      text_encoder.get().encode, sequence)
    # the history items' text: the embeddings the SIDs were trained on (interest descriptors included)
    item_text = item_text_matrix(warehouse.read(embeddings), vocab) if sequence.history_text else None
    splits = warehouse.read("interaction_splits", order_by="user_id, position")
    dm = SequenceDataModule.for_settings(splits, vocab, sequence, batch_size=gen.batch_size, seed=gen.seed,
                                         user_prefix=prefix, layout=layout_of(gen.arch))
    inputs = (["interaction_splits", sids] + (["user_interests"] if sequence.use_user_interests else [])
              + ([embeddings] if sequence.history_text else []))
    upstream = _content_hashes(context, *inputs)
    source, warm_note = warm_start_source(context, gen, sequence, vocab, item_text)
    if warm_note.startswith("cold"):
        context.log.warning(f"warm_start={gen.warm_start!r}: {warm_note}")
    if source is not None:  # another seed model, another run (a resumed run continues its own)
        upstream.append(("warm_start", source.name))
    trained_with = {"generator": to_mapping(gen), "sequence": to_mapping(sequence)}
    # same inputs + settings → same folder, so a killed run resumes from its last checkpoint
    run_key = _run_key({"generator": _model_settings(gen), "sequence": trained_with["sequence"]}, upstream)
    ckpt_dir = settings.checkpoints_dir() / context.asset_key.to_user_string() / run_key
    if not is_main_node():  # another machine of a multi-node run: train alongside node 0, write nothing
        train_generator(dm, vocab, gen, sequence=sequence, checkpoint_dir=ckpt_dir, resume=True, item_text=item_text,
                        warm_start_from=source)
        raise worker_node_done(context)
    params = {**flat_mapping(gen), **to_mapping(sequence), "vocab_size": vocab.vocab_size, "n_items": vocab.n_items,
              "sids": sids}
    with mlflow_tracking.asset_run(context, params=params) as run:
        result = train_generator(dm, vocab, gen, sequence=sequence, checkpoint_dir=ckpt_dir, resume=True,
                                 logger=lightning_logger(run, mlflow_tracking.experiment_name), item_text=item_text,
                                 warm_start_from=source)
        mlflow.set_tag("warm_start", warm_note)
        best = load_generator(result.best_checkpoint)
        (valid, valid_ranks), (test, test_ranks) = (evaluate_with_ranks(best, dm, s) for s in ("valid", "test"))
        warehouse.replace({ranks_table(context): pd.concat([valid_ranks, test_ranks], ignore_index=True)})
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
            "user_interest_tokens": sequence.use_user_interests,
            "seed": gen.seed,
            "max_history": sequence.max_history,
            **window_stats(dm),
            "trained_with": trained_with,
            "checkpoint": result.best_checkpoint,
            "checkpoint_sha256": sha256_file(result.best_checkpoint),
            "epochs_completed": result.epochs_completed,
            "resumed_from": result.resumed_from or "",
            "warm_start": warm_note,
            **(result.warm_start.metadata() if result.warm_start else {}),
            "best_val_ndcg@10": round(result.best_val_ndcg, 5),
            **{k: round(float(v), 5) for k, v in metrics.items()},
            "beats_popularity_valid_ndcg@10": bool(valid["ndcg@10"] > pop_valid["ndcg@10"]),
            "users_with_interest_tokens": sum(1 for v in (prefix or {}).values() if v),
            "vocab_size": vocab.vocab_size,
            "history": result.history,
            "lineage": upstream_lineage(context, *inputs),
        }))


#: per-user ranks are kept to this depth (the default beam width); deeper hits count as misses
RANK_DEPTH = 20


def ranks_table(context_or_asset) -> str:
    """The warehouse table holding an asset's per-user ranks (what the report's slices are computed from)."""
    asset = context_or_asset if isinstance(context_or_asset, str) else context_or_asset.asset_key.to_user_string()
    return f"ranks_{asset}"


def evaluate_with_ranks(module, dm, split: str,
                        exclude: dict[str, tuple[str, ...]] | None = None) -> tuple[dict[str, float], pd.DataFrame]:
    """HR/NDCG@5/10 of ``module`` on ``split`` (full ranking, constrained beam) and the per-user rank of each
    target (1-based within ``RANK_DEPTH`` or the beam, 0 = miss; ``which`` = "shipped").

    ``exclude``: item ids per user to remove from that user's ranking (``evaluation.protocol.seen_items``, the
    report's ``exclude_seen``); each row is then decoded wider so ``RANK_DEPTH`` items remain
    (``training.generator.rank_unseen``). ``None`` ranks as before.
    """
    from evaluation.baselines import metrics_from_ranks, user_ranks
    from evaluation.protocol import seen_indices
    from training.generator import rank_loader

    depth = min(RANK_DEPTH, module.config.beam_width)
    users = [s.user_id for s in dm.samples[split]]
    index = {item: n for n, item in enumerate(module.vocab.item_ids)}
    seen = None if exclude is None else seen_indices(exclude, users, index)
    ranked, targets = rank_loader(module, dm.loader(split), beam_width=module.config.beam_width, top_k=depth,
                                  exclude=seen)
    ranks = user_ranks(ranked, targets, depth)
    frame = pd.DataFrame({"split": split, "user_id": pd.Series(users, dtype="string"),
                          "rank": ranks.astype("int64"), "which": "shipped"})
    return metrics_from_ranks(ranks, ks=(5, 10)), frame


def window_stats(dm) -> dict:
    """The longest history any window of each split holds (the history cap the stage applied), and a
    fingerprint of the first epoch's window order (what the stage's seed decided)."""
    order = [i for batch in dm.train_dataloader().batch_sampler for i in batch]
    return {**{f"longest_{split}_history": max((len(s.history) for s in dm.samples[split]), default=0)
               for split in ("train", "valid", "test")},
            "window_order_sha256": hashlib.sha256(json.dumps(order).encode()).hexdigest()[:16]}


@dg.asset(
    deps=["interaction_splits", "semantic_ids", "user_interests", "item_embeddings"],
    group_name="recommender",
    kinds={"pytorch", "mlflow"},
    pool="warehouse",
    retry_policy=TRAIN_RETRY,
    description="Generator trained to emit the next item's SID (default: item-level causal model reading each history "
                "item's SID and interest-enhanced text; Lightning, early stopping on val NDCG@10).",
)
def recommender_sft(context: dg.AssetExecutionContext, config: SftConfig, warehouse: Warehouse,
                    text_encoder: TextEncoderResource, mlflow_tracking: MlflowTracking) -> dg.MaterializeResult:
    return train_sft(context, config.build(GeneratorConfig), config.build(SequenceSettings), warehouse,
                     text_encoder, mlflow_tracking)


def checkpoint_from_lineage(context: dg.AssetExecutionContext, asset: str, key: str = "checkpoint") -> str:
    """The checkpoint an upstream model asset recorded (metadata ``key``), verified against its SHA-256."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey(asset))
    if event is None or event.asset_materialization is None:
        raise dg.Failure(f"{asset} has no materialisation; materialise it first")
    meta = event.asset_materialization.metadata
    if key not in meta:
        raise dg.Failure(f"{asset}'s latest materialisation records no {key!r}; rematerialise {asset}")
    path = meta[key].value
    expected = meta[f"{key}_sha256"].value
    if not Path(path).is_file():
        raise dg.Failure(f"{asset} checkpoint {path} is missing; rematerialise {asset}")
    actual = sha256_file(path)
    if actual != expected:
        raise dg.Failure(f"{asset} checkpoint {path} was altered or truncated (sha256 {actual[:12]}… != recorded "
                         f"{expected[:12]}…); refusing to load it — rematerialise {asset}")
    return path


def train_grpo_stage(context: dg.AssetExecutionContext, grpo_config: GRPOConfig, warehouse: Warehouse,
                     mlflow_tracking: MlflowTracking) -> dg.MaterializeResult:
    """GRPO from the current ``recommender_sft`` checkpoint, whose vocabulary and sequence settings build the
    windows; ``grpo_config.seed`` orders them. Shared by ``recommender_grpo`` and its q-term ablation."""
    from training.distributed import is_main_node
    from training.generator import load_generator
    from training.grpo import train_grpo
    from training.sequence_data import SequenceDataModule

    sft_path = checkpoint_from_lineage(context, "recommender_sft")
    sft_event = context.instance.get_latest_materialization_event(dg.AssetKey("recommender_sft"))
    sft = load_generator(sft_path)
    vocab, sequence = sft.vocab, sft.sequence
    splits = warehouse.read("interaction_splits", order_by="user_id, position")
    # GRPO samples a group per training window, whatever layout SFT trained on
    dm = SequenceDataModule.for_settings(splits, vocab, sequence, batch_size=grpo_config.batch_size,
                                         seed=grpo_config.seed, user_prefix=stored_user_prefix(warehouse, sequence),
                                         layout=sft.layout, train_windows=True)
    quality = warehouse.read("item_quality")
    q = dict(zip(quality["item_id"].astype(str), quality["q"].astype(float), strict=True))
    ckpt_dir = (settings.checkpoints_dir() / context.asset_key.to_user_string()
                / _run_key(_model_settings(grpo_config), sha256_file(sft_path)))
    if not is_main_node():  # another machine of a multi-node run: train alongside node 0, write nothing
        train_grpo(sft_path, dm, vocab, q, grpo_config, checkpoint_dir=ckpt_dir)
        raise worker_node_done(context)
    params = {**flat_mapping(grpo_config), **{f"sequence_{k}": v for k, v in to_mapping(sequence).items()}}
    with mlflow_tracking.asset_run(context, params=params) as run:
        result = train_grpo(sft_path, dm, vocab, q, grpo_config,
                            logger=lightning_logger(run, mlflow_tracking.experiment_name), checkpoint_dir=ckpt_dir)
        chosen = load_generator(result.checkpoint)
        (valid, valid_ranks), (test, test_ranks) = (evaluate_with_ranks(chosen, dm, s) for s in ("valid", "test"))
        metrics = {**{f"valid_{k}": v for k, v in valid.items()}, **{f"test_{k}": v for k, v in test.items()}}
        ranks = [valid_ranks, test_ranks]
        if result.kept == "sft":  # the GRPO policy itself, for comparisons between GRPO variants
            policy = load_generator(result.grpo_checkpoint)
            for split in ("valid", "test"):
                values, policy_ranks = evaluate_with_ranks(policy, dm, split)
                metrics.update({f"policy_{split}_{k}": v for k, v in values.items()})
                ranks.append(policy_ranks.assign(which="policy"))
        else:
            metrics.update({f"policy_{k}": v for k, v in list(metrics.items())})
            ranks += [r.assign(which="policy") for r in (valid_ranks, test_ranks)]
        warehouse.replace({ranks_table(context): pd.concat(ranks, ignore_index=True)})
        mlflow.log_metrics({k.replace("@", "_at_"): v for k, v in metrics.items()})
        mlflow.set_tag("kept", result.kept)
        mlflow.log_artifact(result.checkpoint, artifact_path="grpo")
        return dg.MaterializeResult(metadata=md({
            **run.metadata(),
            "kept": result.kept,
            "alpha": grpo_config.reward.alpha,
            "seed": grpo_config.seed,
            "max_history": sequence.max_history,
            **window_stats(dm),
            "trained_with": {"grpo": to_mapping(grpo_config), "sequence": to_mapping(sequence)},
            "checkpoint": result.checkpoint,
            "checkpoint_sha256": sha256_file(result.checkpoint),
            "policy_checkpoint": result.grpo_checkpoint,
            "policy_checkpoint_sha256": sha256_file(result.grpo_checkpoint),
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
    return train_grpo_stage(context, config.build(), warehouse, mlflow_tracking)
