"""MLIM and RLDI: item interests mined by several LLMs, judged descriptors with item quality, and
user interests summarised from each user's training prefix only."""

import time

import dagster as dg
import mlflow
import pandas as pd

from assets.common import active_items, frame_hash, latest_metadata, md, preview, upstream_lineage, with_captions
from config_schema import to_mapping
from digr_dagster.config_models import dagster_config
from digr_dagster.resources.mlflow_tracking import MlflowTracking
from digr_dagster.resources.models import LLMMiners, TextEncoderResource
from digr_dagster.resources.warehouse import Warehouse
from mining.captions import CaptionSettings
from mining.domains import Domain
from mining.item_mining import ItemMiningSettings
from mining.judges import JudgeSettings
from mining.user_interests import UserInterestSettings

CONTRACT = "data_contract"
#: non-blocking (WARN) checks: too many answers restated their item (mining), or curated restatements (judging)
RESTATEMENTS = "restatements"
#: WARN: the final labels disagree with a person's labels of this catalogue (JudgeSettings.own_labels)
OWN_LABELS = "own_label_agreement"
LLM_RETRY = dg.RetryPolicy(max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL)

# The stage configs are derived from the library's settings (one definition each, see config_schema); every
# asset turns its config back into the library object first, so the library's checks run before any work.
ItemInterestConfig = dagster_config(ItemMiningSettings, name="ItemInterestConfig")
CaptionConfig = dagster_config(CaptionSettings, name="CaptionConfig")
InterestRewardConfig = dagster_config(JudgeSettings, name="InterestRewardConfig")
UserInterestConfig = dagster_config(UserInterestSettings, name="UserInterestConfig")


def _warehouse_cache(warehouse: Warehouse):
    """The LLM call cache every call site of this module shares (a table in the warehouse)."""
    from mining.call_cache import DuckDBCallCache

    return DuckDBCallCache(warehouse.call_cache_path)  # a local file also beside an s3:// warehouse


@dg.asset(
    deps=["items", "interaction_splits"],
    group_name="mlim",
    kinds={"duckdb"},
    pool="warehouse",
    retry_policy=LLM_RETRY,
    description="One factual caption (appearance, material, usage setting) per active item with an image, from a "
                "configured vision model; an empty table when none is configured.",
)
def item_captions(context: dg.AssetExecutionContext, config: CaptionConfig, warehouse: Warehouse,
                  llm: LLMMiners) -> dg.MaterializeResult:
    from mining.captions import caption_items, vision_backend

    settings = config.build(CaptionSettings)
    items = active_items(warehouse)
    with_image = int(items["image_url"].notna().sum())
    empty = pd.DataFrame({"item_id": pd.Series(dtype="string"), "caption": pd.Series(dtype="string")})
    if settings.vision_miner is None:
        warehouse.replace({"item_captions": empty})
        return dg.MaterializeResult(metadata={"dagster/row_count": 0, "items_with_image": with_image,
                                              "reason": "no vision miner configured (captions skipped)"})
    try:
        backend = vision_backend(settings, llm.miner_configs(), llm.backends())
    except ValueError as exc:
        raise dg.Failure(str(exc)) from exc
    result = caption_items(items, backend, _warehouse_cache(warehouse), seed=settings.seed)
    captions = result.captions[["item_id", "caption"]] if len(result.captions) else empty
    warehouse.replace({"item_captions": captions})
    return dg.MaterializeResult(metadata=md({
        "dagster/row_count": len(captions), "items_with_image": with_image, "failures": len(result.failures),
        "calls": result.stats["calls"], "cache_hits": result.stats["cache_hits"], "seed": settings.seed,
        "examples": preview(captions, 8) if len(captions) else "none",
        "lineage": upstream_lineage(context, "items", "interaction_splits"),
    }))


def _as_mined(context: dg.AssetExecutionContext) -> tuple[float, Domain, str]:
    """What item_interests was mined with and the later stages apply too (one setting, one road): the
    restatement threshold, the prompt domain (its summary and judge prompts), and where they came from —
    the library defaults for a materialisation that predates the recorded settings."""
    from mining.domains import RETAIL, load_domain
    from mining.parsing import RESTATEMENT_THRESHOLD

    meta = latest_metadata(context, "item_interests", required=False) or {}
    if meta.get("restatement_threshold") is None or meta.get("domain_spec") is None:
        return RESTATEMENT_THRESHOLD, RETAIL, "defaults (item_interests' materialisation does not record them)"
    return float(meta["restatement_threshold"]), load_domain(meta["domain_spec"]), "item_interests materialisation"


def _own_labels_check(agreement, min_agreement: float) -> dg.AssetCheckResult:
    """WARN when the labels disagree with a person's on this catalogue; passes, saying so, when unmeasured."""
    if agreement is None:
        return dg.AssetCheckResult(asset_key="interest_rewards", check_name=OWN_LABELS, passed=True,
                                   severity=dg.AssetCheckSeverity.WARN,
                                   description="not measured: no own_labels file for this catalogue",
                                   metadata={"measured": False})
    low, high = agreement.interval
    passed = agreement.accuracy >= min_agreement
    return dg.AssetCheckResult(
        asset_key="interest_rewards", check_name=OWN_LABELS, passed=passed, severity=dg.AssetCheckSeverity.WARN,
        description=None if passed else
        f"the labels agree with yours on {agreement.accuracy:.0%} of {agreement.n} descriptors (95% CI "
        f"{low:.0%}-{high:.0%}), under {min_agreement:.0%}: try another judge or its thresholds",
        metadata=md({"measured": True, "min_own_agreement": min_agreement, **agreement.metadata()}))


def _problems_check(asset: str, problems: list[str], extra: dict | None = None) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset, check_name=CONTRACT, passed=not problems,
        metadata=md({"problems": problems, "n_problems": len(problems), **(extra or {})}),
    )


def _restatement_check(asset: str, share, prefix: str, message: str) -> dg.AssetCheckResult:
    """The WARN check of a ``mining.quality.RestatementShare``: fails (without blocking) above its max share."""
    return dg.AssetCheckResult(
        asset_key=asset, check_name=RESTATEMENTS, passed=not share.warn, severity=dg.AssetCheckSeverity.WARN,
        description=message.format(share=share.share, max_share=share.max_share) if share.warn else None,
        metadata=md(share.metadata(prefix)),
    )


@dg.asset(
    deps=["items", "interaction_splits", "item_captions"],
    group_name="mlim",
    kinds={"duckdb", "mlflow"},
    pool="warehouse",
    retry_policy=LLM_RETRY,
    check_specs=[dg.AssetCheckSpec(CONTRACT, asset="item_interests", blocking=True,
                                   description="descriptors non-empty and unique per item, confidence in [0,1], "
                                               "coverage above the threshold"),
                 dg.AssetCheckSpec(RESTATEMENTS, asset="item_interests", blocking=False,
                                   description="WARN: share of the models' answers rejected as restatements of "
                                               "the item or copies of a few-shot example, at most "
                                               "max_rejected_share (else the prompt domain likely does not fit)")],
    description="Descriptors of latent purchase motivations per item, mined by every configured LLM and merged.",
)
def item_interests(context: dg.AssetExecutionContext, config: ItemInterestConfig, warehouse: Warehouse,
                   llm: LLMMiners, text_encoder: TextEncoderResource, mlflow_tracking: MlflowTracking):
    from mining.domains import load_domain
    from mining.item_mining import mine_item_interests
    from mining.merge import merge_miners
    from mining.quality import check_item_interests, rejected_answer_share

    settings = config.build(ItemMiningSettings)
    items = with_captions(warehouse, active_items(warehouse))
    configs = settings.miner_configs(llm.miner_configs())
    backends = llm.backends()
    # domain "auto" follows the source the items were ingested from (movielens -> movies, else retail)
    source_kind = (latest_metadata(context, "items", required=False) or {}).get("source_kind")
    domain = load_domain(settings.domain, source_kind=source_kind)
    params = {"miners": ",".join(f"{c.name}:{c.model}" for c in configs), "n_items": len(items),
              **to_mapping(settings), "domain_used": domain.name}
    with mlflow_tracking.asset_run(context, params=params) as run:
        t0 = time.perf_counter()
        result = mine_item_interests(items, backends, configs, _warehouse_cache(warehouse), progress=True,
                                     seed=settings.seed, domain=domain,
                                     restatement_threshold=settings.restatement_threshold)
        encoder = text_encoder.get()
        merged = merge_miners(result.interests, encoder.encode, similarity=settings.merge_similarity)
        problems = check_item_interests(merged, item_ids=items["item_id"].astype(str),
                                        min_coverage=settings.min_coverage)
        stats = result.stats
        coverage = merged["item_id"].nunique() / max(len(items), 1)
        rejected = rejected_answer_share(stats, max_share=settings.max_rejected_share)
        mlflow.log_metrics({"coverage": coverage, "failures": stats["failures"], "cache_hits": stats["cache_hits"],
                            "calls": stats["calls"], "mining_seconds": time.perf_counter() - t0,
                            "rejected_answer_share": rejected.share})
        if problems:
            yield _problems_check("item_interests", problems, {"coverage": coverage})
            reasons = result.failures["reason"].astype(str).value_counts().head(3)
            causes = "; ".join(f"{n}× {reason}" for reason, n in reasons.items()) or "none recorded"
            raise dg.Failure(f"item_interests contract failed, previous tables kept: {problems}; most frequent "
                             f"call failures: {causes}",
                             metadata={"failure_reasons": dg.MetadataValue.json(
                                 {str(k): int(v) for k, v in reasons.items()})})
        failures = result.failures.astype({c: "string" for c in result.failures.columns})
        warehouse.replace({"item_interests": merged, "item_interests_raw": result.interests,
                           "item_interest_failures": failures if len(failures) else
                           pd.DataFrame({c: pd.Series(dtype="string") for c in failures.columns})})
        examples = merged.merge(items[["item_id", "title"]], on="item_id").sort_values(["item_id", "rank"])
        yield dg.MaterializeResult(metadata=md({
            "dagster/row_count": len(merged),
            **run.metadata(),
            "items": len(items),
            "coverage": round(coverage, 4),
            "descriptors_per_item": round(len(merged) / max(merged["item_id"].nunique(), 1), 2),
            "miners": [f"{c.name} ({c.backend}: {c.model}, {c.prompt_style})" for c in configs],
            "domain": f"{domain.name} ({domain.source}, sha256 {domain.sha256[:12]})",
            "prompt_version": stats["prompt_version"],
            "seed": settings.seed,
            # the judge applies the same rule to these descriptors: the setting travels with the data
            "restatement_threshold": settings.restatement_threshold,
            "domain_spec": domain.name if domain.source == "built-in" else domain.source,
            "calls": stats["calls"],
            "cache_hits": stats["cache_hits"],
            "failures": stats["failures"],
            "items_failed": stats["items_failed"],
            "rejected_restatements": stats["rejected_restatements"],
            "rejected_copies": stats["rejected_copies"],
            "rejected_answer_share": round(rejected.share, 4),
            "failure_reasons": {str(k): int(v) for k, v in
                                result.failures["reason"].astype(str).value_counts().head(10).items()},
            "prompt_tokens": stats["prompt_tokens"],
            "completion_tokens": stats["completion_tokens"],
            "wall_seconds": stats["wall_s"],
            "per_miner": stats["per_miner"],
            "failure_examples": preview(failures, 5) if len(failures) else "none",
            "content_hash": frame_hash(merged),
            "lineage": upstream_lineage(context, "items", "interaction_splits"),
            "examples": preview(examples[["item_id", "title", "descriptor", "confidence", "support"]], 12),
        }))
        yield _problems_check("item_interests", [], {"coverage": round(coverage, 4)})
        yield _restatement_check("item_interests", rejected, "rejected_answers",
                                 f"{{share:.1%}} of the answers restated their item or copied a few-shot example "
                                 f"(over {{max_share:.0%}}): the {domain.name!r} prompt domain likely does not fit "
                                 "this catalogue (item_interests config `domain`)")


@dg.asset(
    deps=["item_interests", "items"],
    group_name="rldi",
    kinds={"duckdb", "mlflow"},
    pool="warehouse",
    check_specs=[dg.AssetCheckSpec(CONTRACT, asset="interest_rewards", blocking=True,
                                   description="labels in {0,1}, confidence and q in [0,1], coverage"),
                 dg.AssetCheckSpec(RESTATEMENTS, asset="interest_rewards", blocking=False,
                                   description="WARN: share of curated descriptors that restate their item's "
                                               "title or description, at most max_restatement_share"),
                 dg.AssetCheckSpec(OWN_LABELS, asset="interest_rewards", blocking=False,
                                   description="WARN: the final labels agree with a person's labels of this "
                                               "catalogue (own_labels) at least min_own_agreement")],
    description="Each descriptor labelled 1 (specific, grounded) or 0 by a judge; item quality "
                "q = Σc·l / Σc in table item_quality.",
)
def interest_rewards(context: dg.AssetExecutionContext, config: InterestRewardConfig, warehouse: Warehouse,
                     llm: LLMMiners, text_encoder: TextEncoderResource, mlflow_tracking: MlflowTracking):
    from mining.judge_agreement import load_own_labels, measure_agreement
    from mining.judges import LLMJudge, evaluate_judge, item_quality, label_interests, prepare_judge
    from mining.labelled_descriptors import load_labelled_descriptors
    from mining.quality import check_interest_rewards, check_item_quality, curated_restatement_share

    settings = config.build(JudgeSettings)
    items = active_items(warehouse)
    interests = warehouse.read("item_interests", order_by="item_id, rank")
    restatement_threshold, domain, mined_source = _as_mined(context)
    # a bad labels file fails here, before anything is judged or written
    own = (load_own_labels(settings.own_labels, set(items["item_id"].astype(str)))
           if settings.own_labels else None)
    llm_backend = None
    if settings.judge == "llm":
        if not llm.judge:
            raise dg.Failure("judge='llm' needs the llm resource's `judge` set to a miner name")
        backends = {c.name: b for c, b in zip(llm.miner_configs(), llm.backends(), strict=True)}
        if llm.judge not in backends:
            raise dg.Failure(f"the llm resource's judge {llm.judge!r} is not a configured miner: {sorted(backends)}")
        llm_backend = backends[llm.judge]
    judge, extra = prepare_judge(settings, text_encoder.get().encode, interests, items, llm_backend=llm_backend,
                                 cache=_warehouse_cache(warehouse), domain=domain)

    with mlflow_tracking.asset_run(context, params=to_mapping(settings)) as run:
        rewards = label_interests(interests, items, judge, restatement_threshold=restatement_threshold,
                                  max_descriptor_share=settings.max_descriptor_share)
        quality = item_quality(rewards, item_ids=items["item_id"].astype(str).tolist())
        labelled = load_labelled_descriptors()
        accuracy = evaluate_judge(judge, labelled).accuracy
        problems = check_interest_rewards(rewards, item_ids=items["item_id"].astype(str),
                                          min_coverage=settings.min_coverage) + check_item_quality(quality)
        curated_share = float(rewards["label"].mean()) if len(rewards) else 0.0
        restated = curated_restatement_share(rewards, items, threshold=restatement_threshold,
                                             max_share=settings.max_restatement_share)
        overridden = rewards[rewards["reason"].notna()]
        agreement = None if own is None else measure_agreement(
            own, rewards, items, judge, restatement_threshold=restatement_threshold,
            max_descriptor_share=settings.max_descriptor_share)
        mlflow.log_metrics({"curated_share": curated_share, "mean_q": float(quality["q"].mean()),
                            "labelled_set_accuracy": accuracy, "rule_rejected": len(overridden),
                            "curated_restatement_share": restated.share})
        if problems:
            yield _problems_check("interest_rewards", problems)
            raise dg.Failure(f"interest_rewards contract failed, previous tables kept: {problems}")
        warehouse.replace({"interest_rewards": rewards, "item_quality": quality})
        yield dg.MaterializeResult(metadata=md({
            "dagster/row_count": len(rewards),
            **run.metadata(),
            "judge": judge.name,
            "seed": settings.seed,
            "restatement_threshold": f"{restatement_threshold} ({mined_source})",
            "domain": f"{domain.name} ({mined_source})",
            **({"llm_calls": judge.calls.stats()} if isinstance(judge, LLMJudge) else {}),
            "curated_share": round(curated_share, 4),
            # labelled 0 by a rule whatever the judge scored (restatements, catalogue-wide generic descriptors)
            "rule_rejections": {str(k): int(v) for k, v in overridden["reason"].value_counts().items()},
            "rule_rejection_examples": preview(overridden[["item_id", "descriptor", "reason", "score"]], 8)
            if len(overridden) else "none",
            "mean_q": round(float(quality["q"].mean()), 4),
            "items_with_curated": int((quality["n_curated"] > 0).sum()),
            "labelled_set_accuracy": round(accuracy, 4),
            "labelled_set_size": len(labelled),
            **(agreement.metadata() if agreement else
               {"own_labels": "none: the judge is measured on the shipped retail set only (label a sample of "
                              "this catalogue with `digr label-sample`, then set own_labels)"}),
            **extra,
            "content_hash": frame_hash(rewards),
            "lineage": upstream_lineage(context, "item_interests"),
            "examples": preview(rewards.sort_values("score", ascending=False)
                                [["item_id", "descriptor", "confidence", "label", "score"]], 12),
        }))
        yield _problems_check("interest_rewards", [])
        yield _restatement_check("interest_rewards", restated, "curated_restatements",
                                 "{share:.1%} of the curated descriptors restate their item (over {max_share:.0%})")
        yield _own_labels_check(agreement, settings.min_own_agreement)


@dg.asset(
    deps=["interaction_splits", "interest_rewards"],
    group_name="mlim",
    kinds={"duckdb"},
    pool="warehouse",
    retry_policy=LLM_RETRY,
    check_specs=[dg.AssetCheckSpec(CONTRACT, asset="user_interests", blocking=True,
                                   description="non-empty unique interests per user; built from the training "
                                               "prefix only")],
    description="Per user, ordered deep interests from the TRAINING PREFIX only (never valid/test items).",
)
def user_interests(context: dg.AssetExecutionContext, config: UserInterestConfig, warehouse: Warehouse,
                   llm: LLMMiners, text_encoder: TextEncoderResource):
    from mining.quality import check_user_interests
    from mining.user_interests import summarise_user_interests, train_prefix

    settings = config.build(UserInterestSettings)
    splits = warehouse.read("interaction_splits", order_by="user_id, position")
    rewards = warehouse.read("interest_rewards")
    # the summary phrase comes from the first miner, its calls cached like every LLM call
    backend = llm.backends()[0] if settings.llm_summary else None
    _, domain, mined_source = _as_mined(context)  # the summary prompt speaks the mining domain's words
    out = summarise_user_interests(splits, rewards, settings, backend=backend, cache=_warehouse_cache(warehouse),
                                   embed=text_encoder.get().encode, domain=domain)
    problems = check_user_interests(out)
    # leakage guard: the history size behind every user's interests is at most their training prefix
    prefix = train_prefix(splits, recent_items=settings.recent_items).groupby("user_id").size()
    over = out[out["n_history_items"].to_numpy() > out["user_id"].astype(str).map(prefix).fillna(0).to_numpy()]
    if len(over):
        problems.append(f"{over['user_id'].nunique()} user(s) have more history items than their training prefix")
    if problems:
        yield _problems_check("user_interests", problems)
        raise dg.Failure(f"user_interests contract failed: {problems}")
    warehouse.replace({"user_interests": out})
    users = splits["user_id"].nunique()
    yield dg.MaterializeResult(metadata=md({
        "dagster/row_count": len(out),
        "users_with_interests": int(out["user_id"].nunique()),
        "users": int(users),
        "llm_summaries": int((out["source"] == "llm_summary").sum()),
        "domain": f"{domain.name} ({mined_source})",
        "settings": to_mapping(settings),
        "content_hash": frame_hash(out),
        "lineage": upstream_lineage(context, "interaction_splits", "interest_rewards"),
        "examples": preview(out, 15),
    }))
    yield _problems_check("user_interests", [])
