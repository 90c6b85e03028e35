"""Evaluation against baselines on the same split: one table, plots and example users."""

import base64
import re
from pathlib import Path

import dagster as dg
from pydantic import Field

from assets.common import latest_metadata, md, upstream_lineage
from assets.recommender import _sft_config_of, checkpoint_from_lineage, stored_user_prefix
from digr_dagster import settings
from digr_dagster.resources.mlflow_tracking import MlflowTracking, lightning_logger
from digr_dagster.resources.warehouse import Warehouse

PROTOCOL = ("leave-one-out per user; full ranking over every item of the filtered catalogue; seen items are not "
            "excluded; HR@K and NDCG@K; valid history = train prefix, test history = train prefix + valid item; "
            "identical for every model")


class EvaluationConfig(dg.Config):
    sasrec_max_epochs: int = Field(default=100, ge=1)
    sasrec_patience: int = Field(default=5, ge=1)
    sasrec_hidden: int = 64
    examples: int = Field(default=5, ge=0, description="example users shown with their recommendations")
    seed: int = 0


def _metric_key(model: str, split: str, metric: str) -> str:
    """An MLflow metric name (letters, digits, _ - . / and spaces only) for a report cell."""
    raw = f"{model}_{split}_{metric}".replace("@", "_at_").replace(" ", "_")
    return re.sub(r"[^A-Za-z0-9_\-./]", "", raw)


def _png_md(path: Path, title: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"**{title}**\n\n![{title}](data:image/png;base64,{data})\n"


#: (asset, row name in the report, kind, metric prefix, what the row shows)
VARIANTS = (
    ("tiger_baseline", "TIGER-style (no interests)", "baseline", "", "same generator, plain-text SIDs, no user tokens"),
    ("ablation_no_item_interests", "w/o interests in item text", "ablation", "", "plain-text SIDs, user tokens kept"),
    ("ablation_no_user_tokens", "w/o user-interest tokens", "ablation", "", "interest SIDs, no user tokens"),
    ("ablation_no_q_term", "GRPO w/o q term (alpha=0)", "ablation", "policy_", "GRPO policy trained with alpha=0"),
)
METRICS = ("hr@5", "hr@10", "ndcg@5", "ndcg@10")


def _metrics(meta: dict, split: str, prefix: str = "") -> dict[str, float]:
    return {m: float(meta[f"{prefix}{split}_{m}"]) for m in METRICS}


def _variant_rows(context: dg.AssetExecutionContext, splits_hash: str | None) -> tuple[list, dict]:
    """Report rows of the baselines/ablations trained on the current split; the others are listed, not shown."""
    from evaluation.report import ModelResult

    rows, skipped = [], {}
    for asset, name, kind, prefix, note in VARIANTS:
        meta = latest_metadata(context, asset, required=False)
        if meta is None:
            skipped[asset] = "not materialised"
            continue
        trained_on = ((meta.get("lineage") or {}).get("interaction_splits") or {}).get("content_hash")
        if splits_hash is None or trained_on != splits_hash:
            skipped[asset] = f"trained on another split ({trained_on}), rematerialise it"
            continue
        rows += [ModelResult(name, split, _metrics(meta, split, prefix), kind, notes=note)
                 for split in ("valid", "test")]
    return rows, skipped


@dg.asset(
    deps=["recommender_sft", "recommender_grpo", "interaction_splits", "semantic_ids", "user_interests", "items",
          *(v[0] for v in VARIANTS)],
    group_name="evaluation",
    kinds={"duckdb", "mlflow"},
    pool="warehouse",
    description="Every model × metric × split on the same leave-one-out split (popularity, SASRec, the TIGER-style "
                "generator, DeepInterestGR and its ablations), with plots and example users.",
)
def evaluation_report(context: dg.AssetExecutionContext, config: EvaluationConfig, warehouse: Warehouse,
                      mlflow_tracking: MlflowTracking) -> dg.MaterializeResult:
    import mlflow

    from evaluation.baselines import evaluate_popularity
    from evaluation.plots import plot_codebook_usage, plot_metrics, plot_reward_curves
    from evaluation.report import ModelResult, build_report, example_users, examples_markdown
    from evaluation.sasrec import SASRecConfig, evaluate_sasrec, train_sasrec
    from training.generator import load_generator, recommend
    from training.sequence_data import build_samples

    splits = warehouse.read("interaction_splits", order_by="user_id, position")
    items = warehouse.read("items")
    interests = warehouse.read("user_interests", order_by="user_id, rank")
    sft = latest_metadata(context, "recommender_sft")
    grpo = latest_metadata(context, "recommender_grpo")
    sids = latest_metadata(context, "semantic_ids")
    sft_config = _sft_config_of(context)
    item_ids = sorted(splits["item_id"].astype(str).unique())
    out_dir = settings.digr_home() / "reports" / context.run.run_id
    out_dir.mkdir(parents=True, exist_ok=True)

    with mlflow_tracking.asset_run(context, params=config.model_dump()) as run:
        results = []
        for split in ("valid", "test"):
            results.append(ModelResult("most-popular", split, evaluate_popularity(splits, item_ids, split),
                                       "baseline"))
        sas_cfg = SASRecConfig(hidden=config.sasrec_hidden, max_len=sft_config.max_history,
                               max_epochs=config.sasrec_max_epochs, patience=config.sasrec_patience, seed=config.seed)
        sasrec = train_sasrec(splits, sas_cfg, logger=lightning_logger(run, mlflow_tracking.experiment_name),
                              checkpoint_dir=settings.checkpoints_dir() / "sasrec" / run.run_id, item_ids=item_ids)
        for split in ("valid", "test"):
            results.append(ModelResult("SASRec", split, evaluate_sasrec(sasrec.module, splits, split), "baseline"))
        main = f"DeepInterestGR (ships {'GRPO' if grpo['kept'] == 'grpo' else 'SFT: GRPO did not help'})"
        for split in ("valid", "test"):
            results.append(ModelResult(main, split, _metrics(grpo, split), "main", notes="what is promoted"))
        for split in ("valid", "test"):
            results.append(ModelResult("w/o GRPO (SFT)", split, _metrics(sft, split), "ablation",
                                       notes="supervised fine-tuning only"))
        if grpo["kept"] == "sft" and "policy_valid_ndcg@10" in grpo:
            for split in ("valid", "test"):
                results.append(ModelResult("GRPO policy (not shipped)", split, _metrics(grpo, split, "policy_"),
                                           "ablation", notes="the GRPO-trained model the pipeline rejected"))
        splits_hash = latest_metadata(context, "interaction_splits").get("content_hash")
        variant_rows, skipped = _variant_rows(context, splits_hash)
        results += variant_rows
        report = build_report(results)
        table = report.table()
        warehouse.replace({"evaluation_results": table.assign(run_id=context.run.run_id)})

        plots = {"metrics per model": plot_metrics(report, out_dir / "metrics.png"),
                 "codebook usage": plot_codebook_usage(sids["codebook_health"], out_dir / "codebook_usage.png")}
        if grpo.get("history"):
            plots["GRPO reward curves"] = plot_reward_curves(grpo["history"], out_dir / "reward_curves.png")

        model = load_generator(checkpoint_from_lineage(context, "recommender_grpo"))
        test_samples = build_samples(splits, max_history=sft_config.max_history)["test"]
        prefix = stored_user_prefix(warehouse, sft_config)
        chosen = sorted({s.user_id for s in test_samples})[: max(200, config.examples)]
        subset = [s for s in test_samples if s.user_id in set(chosen)]
        recs = recommend(model, subset, k=5, user_prefix=prefix)
        examples = example_users(splits, items, interests, {s.user_id: r for s, r in zip(subset, recs, strict=True)},
                                 n=config.examples, seed=config.seed, max_history=sft_config.max_history)
        examples_md = examples_markdown(examples)
        report_md = report.to_markdown()
        (out_dir / "report.md").write_text(f"# Evaluation\n\n{PROTOCOL}\n\n{report_md}\n\n{examples_md}\n")
        for path in [*plots.values(), out_dir / "report.md"]:
            mlflow.log_artifact(str(path), artifact_path="evaluation")
        best = report.best("ndcg@10", "valid")
        mlflow.log_metrics({_metric_key(r.model, r.split, k): v for r in results for k, v in r.metrics.items()})
        return dg.MaterializeResult(metadata=md({
            **run.metadata(),
            "protocol": PROTOCOL,
            "table": dg.MetadataValue.md(report_md),
            "best_on_valid_ndcg@10": best.model,
            "sasrec_best_val_ndcg@10": round(float(sasrec.best_val_ndcg), 5),
            "variants_not_shown": skipped or "none",
            "plots": dg.MetadataValue.md("\n".join(_png_md(Path(p), t) for t, p in plots.items())),
            "examples": dg.MetadataValue.md(examples_md),
            "report_dir": str(out_dir),
            "lineage": upstream_lineage(context, "interaction_splits", "recommender_sft", "recommender_grpo",
                                        "semantic_ids", *(v[0] for v in VARIANTS)),
        }))

