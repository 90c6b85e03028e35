"""Evaluation against baselines on the same split: one table, plots and example users."""

import base64
import re
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd

from assets.ablations import VARIANTS
from assets.common import latest_metadata, md, upstream_lineage
from assets.recommender import checkpoint_from_lineage, stored_user_prefix
from config_schema import to_mapping
from digr_dagster import settings
from digr_dagster.config_models import dagster_config
from digr_dagster.resources.mlflow_tracking import MlflowTracking, lightning_logger
from digr_dagster.resources.warehouse import Warehouse
from evaluation.baselines import registered_baselines
from evaluation.protocol import EvaluationSettings, protocol

#: the report's settings plus one sub-config per registered baseline (its own settings minus those the run
#: decides: the history cap from the shipped checkpoint, the seed, the accelerator)
EvaluationConfig = dagster_config(
    EvaluationSettings, name="EvaluationConfig",
    nested={key: (b.settings, tuple(b.from_inputs), b.description or b.name)
            for key, b in registered_baselines().items() if b.configurable_fields()})


def _metric_key(model: str, split: str, metric: str) -> str:
    """An MLflow metric name (letters, digits, _ - . / and spaces only) for a report cell."""
    raw = f"{model}_{split}_{metric}".replace("@", "_at_").replace(" ", "_")
    return re.sub(r"[^A-Za-z0-9_\-./]", "", raw)


def _png_md(path: Path, title: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"**{title}**\n\n![{title}](data:image/png;base64,{data})\n"


METRICS = ("hr@5", "hr@10", "ndcg@5", "ndcg@10")


def _metrics(meta: dict, split: str, prefix: str = "") -> dict[str, float]:
    return {m: float(meta[f"{prefix}{split}_{m}"]) for m in METRICS}


@dataclass(frozen=True)
class GeneratorRow:
    """A generator's report row: which asset it comes from, and whether it is the asset's shipped model or
    its GRPO policy (metrics ``policy_*``, checkpoint ``policy_checkpoint``, ranks ``which = "policy"``)."""

    row: str
    asset: str
    which: str  # "shipped" or "policy"
    kind: str
    notes: str = ""
    sids: str = "semantic_ids"  # the SID table it was trained on (its user-interest tokens are stored only for these)

    @property
    def prefix(self) -> str:
        return "policy_" if self.which == "policy" else ""

    @property
    def checkpoint_key(self) -> str:
        return "policy_checkpoint" if self.which == "policy" else "checkpoint"


def _stored_test_ranks(warehouse: Warehouse, models: list[GeneratorRow]) -> dict[str, dict[str, int]]:
    """``{report row: {user: test rank}}`` from the ranks tables the model assets wrote (models trained before
    ranks were stored have none and are left out of the slices)."""
    from assets.recommender import ranks_table

    out = {}
    for g in models:
        if not warehouse.exists(ranks_table(g.asset)):
            continue
        frame = warehouse.read(ranks_table(g.asset))
        frame = frame[(frame["split"] == "test") & (frame["which"] == g.which)]
        out[g.row] = dict(zip(frame["user_id"].astype(str), frame["rank"].astype(int), strict=True))
    return out


class NotRankable(Exception):
    """A generator the report cannot rank again (the reason is the message)."""


def _rank_excluding_seen(context: dg.AssetExecutionContext, warehouse: Warehouse, splits: pd.DataFrame,
                         g: GeneratorRow, seen: dict[str, dict[str, tuple[str, ...]]], cache: dict | None = None
                         ) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """Metrics per split and test ranks per user of ``g``'s checkpoint, ranked again with every user's seen
    items removed (``evaluate_with_ranks(..., exclude=...)``, the path the model assets rank through).
    ``cache``: results by checkpoint path (a GRPO stage that kept SFT ships the SFT checkpoint)."""
    from assets.recommender import evaluate_with_ranks
    from training.generator import load_generator
    from training.sequence_data import SequenceDataModule

    path = checkpoint_from_lineage(context, g.asset, g.checkpoint_key)
    if cache is not None and path in cache:
        return cache[path]
    module = load_generator(path)
    prefix = None
    if module.sequence.use_user_interests:
        if g.sids != "semantic_ids":
            raise NotRankable(f"its user-interest tokens (on {g.sids}) are not stored; exclude_seen cannot rank it")
        prefix = stored_user_prefix(warehouse, module.sequence)
    dm = SequenceDataModule.for_settings(splits, module.vocab, module.sequence, batch_size=module.config.batch_size,
                                         seed=0, user_prefix=prefix, layout=module.layout)
    metrics, test_ranks = {}, {}
    for split in ("valid", "test"):
        metrics[split], frame = evaluate_with_ranks(module, dm, split, exclude=seen[split])
    test_ranks = dict(zip(frame["user_id"].astype(str), frame["rank"].astype(int), strict=True))
    if cache is not None:
        cache[path] = (metrics, test_ranks)
    return metrics, test_ranks


def _slices_markdown(table) -> str:
    """NDCG@10 per model and slice (users in brackets): cold items, popularity deciles, history lengths."""
    ndcg = [c for c in table.columns if c.endswith("NDCG@10")]
    view = table[["slice", "value", "users", *ndcg]].rename(columns={c: c.removesuffix(" NDCG@10") for c in ndcg})
    return view.to_markdown(index=False, floatfmt=".4f")


def _variant_rows(context: dg.AssetExecutionContext, splits_hash: str | None) -> tuple[list[GeneratorRow], dict]:
    """Report rows of the baselines/ablations trained on the current split; the others are listed, not shown."""
    rows, skipped = [], {}
    for variant in VARIANTS:
        meta = latest_metadata(context, variant.asset, required=False)
        if meta is None:
            skipped[variant.asset] = "not materialised"
            continue
        trained_on = ((meta.get("lineage") or {}).get("interaction_splits") or {}).get("content_hash")
        if splits_hash is None or trained_on != splits_hash:
            skipped[variant.asset] = f"trained on another split ({trained_on}), rematerialise it"
            continue
        rows.append(GeneratorRow(variant.row, variant.asset, "policy" if variant.stage == "grpo" else "shipped",
                                 variant.kind, notes=variant.note, sids=variant.sids))
    return rows, skipped


@dg.asset(
    deps=["recommender_sft", "recommender_grpo", "interaction_splits", "semantic_ids", "user_interests", "items",
          *(v.asset for v in VARIANTS)],
    group_name="evaluation",
    kinds={"duckdb", "mlflow"},
    pool="warehouse",
    description="Every model × metric × split on the same leave-one-out split (popularity, SASRec, the TIGER-style "
                "generator, DeepInterestGR and its ablations), with plots and example users.",
)
def evaluation_report(context: dg.AssetExecutionContext, config: EvaluationConfig, warehouse: Warehouse,
                      mlflow_tracking: MlflowTracking) -> dg.MaterializeResult:
    import mlflow

    from evaluation.baselines import BaselineInputs
    from evaluation.plots import plot_codebook_usage, plot_metrics, plot_reward_curves
    from evaluation.protocol import seen_items, targets_in_history
    from evaluation.report import ModelResult, build_report, example_users, examples_markdown
    from evaluation.slices import slice_metrics, slices_from_splits
    from training.generator import load_generator, recommend
    from training.sequence_data import build_samples

    # the shipped model's checkpoint says how it reads histories; every model in the table uses the same cap
    model = load_generator(checkpoint_from_lineage(context, "recommender_grpo"))
    sequence = model.sequence

    splits = warehouse.read("interaction_splits", order_by="user_id, position")
    items = warehouse.read("items")
    interests = warehouse.read("user_interests", order_by="user_id, rank")
    sft = latest_metadata(context, "recommender_sft")
    grpo = latest_metadata(context, "recommender_grpo")
    sids = latest_metadata(context, "semantic_ids")
    item_ids = sorted(splits["item_id"].astype(str).unique())
    out_dir = settings.digr_home() / "reports" / context.run.run_id
    out_dir.mkdir(parents=True, exist_ok=True)

    report_settings = config.build(EvaluationSettings)
    exclude_seen = report_settings.exclude_seen
    # what each user had seen before each target: removed from every model's ranking with exclude_seen
    seen = {split: seen_items(splits, split) for split in ("valid", "test")}
    repeats = {split: targets_in_history(splits, split) for split in ("valid", "test")}
    params = {**to_mapping(report_settings), "max_history": sequence.max_history}
    with mlflow_tracking.asset_run(context, params=params) as run:
        results, baseline_info, rank_frames, test_ranks = [], {}, [], {}
        inputs = BaselineInputs(splits, tuple(item_ids), max_history=sequence.max_history, seed=report_settings.seed,
                                logger=lightning_logger(run, mlflow_tracking.experiment_name),
                                checkpoint_dir=settings.checkpoints_dir() / "baselines" / run.run_id,
                                exclude_seen=exclude_seen)
        for key, baseline in registered_baselines().items():
            own = config.nested_values(key) if key in type(config).model_fields else None
            outcome = baseline.evaluate(inputs, own)
            results += [ModelResult(baseline.name, split, outcome.metrics[split], "baseline")
                        for split in ("valid", "test")]
            baseline_info[key] = {k: v for k, v in outcome.info.items() if k != "history"}
            rank_frames.append(outcome.ranks_frame().assign(model=baseline.name))
            test_ranks[baseline.name] = dict(zip(outcome.user_ids["test"], outcome.ranks["test"], strict=True))
        main = f"DeepInterestGR (ships {'GRPO' if grpo['kept'] == 'grpo' else 'SFT: GRPO did not help'})"
        generators = [GeneratorRow(main, "recommender_grpo", "shipped", "main", notes="what is promoted"),
                      GeneratorRow("w/o GRPO (SFT)", "recommender_sft", "shipped", "ablation",
                                   notes="supervised fine-tuning only")]
        if grpo["kept"] == "sft" and "policy_valid_ndcg@10" in grpo:
            generators.append(GeneratorRow("GRPO policy (not shipped)", "recommender_grpo", "policy", "ablation",
                                           notes="the GRPO-trained model the pipeline rejected"))
        splits_hash = latest_metadata(context, "interaction_splits").get("content_hash")
        variant_rows, skipped = _variant_rows(context, splits_hash)
        generators += variant_rows
        if exclude_seen:  # the model assets' stored metrics keep repeats: rank every generator again without them
            ranked_again, shown, by_checkpoint = {}, [], {}
            for g in generators:
                try:
                    ranked_again[g.row] = _rank_excluding_seen(context, warehouse, splits, g, seen, by_checkpoint)
                except NotRankable as exc:
                    skipped[g.asset] = str(exc)
                    continue
                shown.append(g)
            generators = shown
            metrics_of = {row: m for row, (m, _) in ranked_again.items()}
            test_ranks.update({row: r for row, (_, r) in ranked_again.items()})
        else:
            meta = {"recommender_grpo": grpo, "recommender_sft": sft}
            metrics_of = {g.row: {split: _metrics(meta.get(g.asset) or latest_metadata(context, g.asset), split,
                                                  g.prefix) for split in ("valid", "test")} for g in generators}
            # slices: generators' test ranks from the ranks their assets stored
            test_ranks.update(_stored_test_ranks(warehouse, generators))
        results += [ModelResult(g.row, split, metrics_of[g.row][split], g.kind, notes=g.notes)
                    for g in generators for split in ("valid", "test")]
        report = build_report(results)
        slices = slices_from_splits(splits, "test")
        slice_table = slice_metrics(slices, {m: slices["user_id"].map(r).fillna(0).astype("int64").to_numpy()
                                             for m, r in test_ranks.items()})
        table = report.table()
        ranks = pd.concat(rank_frames, ignore_index=True).assign(run_id=context.run.run_id)
        warehouse.replace({"evaluation_results": table.assign(run_id=context.run.run_id), "baseline_ranks": ranks,
                           "evaluation_slices": slice_table.assign(run_id=context.run.run_id)})

        plots = {"metrics per model": plot_metrics(report, out_dir / "metrics.png"),
                 "codebook usage": plot_codebook_usage(sids["codebook_health"], out_dir / "codebook_usage.png")}
        if grpo.get("history"):
            plots["GRPO reward curves"] = plot_reward_curves(grpo["history"], out_dir / "reward_curves.png")

        test_samples = build_samples(splits, max_history=sequence.max_history)["test"]
        prefix = stored_user_prefix(warehouse, sequence)
        chosen = sorted({s.user_id for s in test_samples})[: max(200, config.examples)]
        subset = [s for s in test_samples if s.user_id in set(chosen)]
        recs = recommend(model, subset, k=5, user_prefix=prefix,
                         exclude=[seen["test"].get(s.user_id, ()) for s in subset] if exclude_seen else None)
        examples = example_users(splits, items, interests, {s.user_id: r for s, r in zip(subset, recs, strict=True)},
                                 n=config.examples, seed=config.seed, max_history=sequence.max_history)
        examples_md = examples_markdown(examples)
        report_md = report.to_markdown()
        (out_dir / "report.md").write_text(f"# Evaluation\n\n{protocol(exclude_seen)}\n\n{report_md}\n\n"
                                           f"{examples_md}\n")
        for path in [*plots.values(), out_dir / "report.md"]:
            mlflow.log_artifact(str(path), artifact_path="evaluation")
        best = report.best("ndcg@10", "valid")
        mlflow.log_metrics({_metric_key(r.model, r.split, k): v for r in results for k, v in r.metrics.items()})
        return dg.MaterializeResult(metadata=md({
            **run.metadata(),
            "protocol": protocol(exclude_seen),
            "exclude_seen": exclude_seen,
            # targets the user had already seen: a miss for every model with exclude_seen (its cost)
            "targets_in_history": repeats,
            "max_history": sequence.max_history,
            "table": dg.MetadataValue.md(report_md),
            "best_on_valid_ndcg@10": best.model,
            "baselines": baseline_info,
            "variants_not_shown": skipped or "none",
            "plots": dg.MetadataValue.md("\n".join(_png_md(Path(p), t) for t, p in plots.items())),
            "examples": dg.MetadataValue.md(examples_md),
            "slices_test_ndcg@10": dg.MetadataValue.md(_slices_markdown(slice_table)),
            "report_dir": str(out_dir),
            "lineage": upstream_lineage(context, "interaction_splits", "recommender_sft", "recommender_grpo",
                                        "semantic_ids", *(v.asset for v in VARIANTS)),
        }))

