"""Ingestion assets: ``raw_interactions`` + ``items`` from a configured source, then ``interaction_splits``.

Each table is staged, validated against its data contract, and swapped in atomically only when the
contract passes: a bad input fails the asset (with the failed expectations as check metadata) and
leaves the previous tables untouched.
"""

import time

import dagster as dg
import pandas as pd
from pydantic import ValidationError

from assets.common import frame_hash
from config_schema import to_mapping
from data_contracts import validate_interaction_splits, validate_items, validate_raw_interactions
from digr_dagster import settings
from digr_dagster.config_models import dagster_config
from digr_dagster.resources.warehouse import Warehouse
from ingestion.sources import (
    InteractionCounts,
    SourceSpec,
    describe_source_files,
    iter_interaction_chunks,
    iter_item_chunks,
    registered_kinds,
)
from ingestion.splits import SplitSettings, split_interactions

CONTRACT = "data_contract"


class ContractViolation(Exception):
    """Raised inside a staged write to refuse the swap; carries the failed contract."""

    def __init__(self, result) -> None:
        super().__init__(result.summary())
        self.result = result


#: the launchpad config of ``ingest_source``: every ``SourceSpec`` field, same defaults and constraints
SourceConfig = dagster_config(
    SourceSpec, name="SourceConfig",
    descriptions={"kind": f"Source format, one of the registered loaders: {', '.join(registered_kinds())} "
                          "(a new one is a module in ingestion/loaders/)."},
    doc='Where the raw data comes from (see README: "Point it at your own data").',
    check_on_create=False)  # an empty demo path is completed at run time (source_spec)

#: the launchpad config of ``interaction_splits``
SplitConfig = dagster_config(SplitSettings, name="SplitConfig")


def source_spec(config: SourceConfig) -> SourceSpec:
    """The library spec of the launchpad values; an empty demo path is the pipeline's demo folder."""
    updates = {"path": settings.demo_data_dir()} if config.kind == "demo" and not config.path else {}
    try:
        return config.build(SourceSpec, **updates)
    except ValidationError as exc:
        raise dg.Failure(description=f"ingest_source config rejected: {exc}") from exc


def _check_result(asset_key: str, result) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=CONTRACT,
        passed=bool(result.success),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=_md(result.to_metadata()),
    )


def _md(d: dict) -> dict:
    """Dagster metadata from plain values: nested structures as JSON, numbers and text as is."""
    out = {}
    for k, v in d.items():
        out[k] = dg.MetadataValue.json(v) if isinstance(v, dict | list) else v
    return out


@dg.multi_asset(
    specs=[
        dg.AssetSpec("items", group_name="ingestion", kinds={"duckdb"},
                     description="Item catalogue: title, description, categories, brand, image."),
        dg.AssetSpec("raw_interactions", group_name="ingestion", kinds={"duckdb"},
                     description="Every user-item event of the source, canonical columns."),
    ],
    check_specs=[
        dg.AssetCheckSpec(CONTRACT, asset="items", blocking=True,
                          description="items contract (data_contracts.items)"),
        dg.AssetCheckSpec(CONTRACT, asset="raw_interactions", blocking=True,
                          description="raw_interactions contract (data_contracts.raw_interactions)"),
    ],
    pool="warehouse",
    can_subset=False,
)
def ingest_source(context: dg.AssetExecutionContext, config: SourceConfig, warehouse: Warehouse):
    """Stream the source into staging tables, validate, swap both tables in one transaction."""
    spec = source_spec(config)
    t0 = time.perf_counter()
    results: dict[str, object] = {}

    written: dict[str, object] = {}

    def validate(con, staged: dict[str, str]) -> None:
        items = con.execute(f'SELECT * FROM "{staged["items"]}"').df()
        inter = con.execute(f'SELECT * FROM "{staged["raw_interactions"]}"').df()
        results["items"] = validate_items(items)
        results["raw_interactions"] = validate_raw_interactions(inter, items=items)
        failed = [r for r in results.values() if not r.success]
        if failed:
            raise ContractViolation(failed[0])
        # the metadata describes exactly the staged tables that get swapped in (any warehouse backend)
        written["preview"] = con.execute(f'SELECT * FROM "{staged["items"]}" ORDER BY item_id LIMIT 5').df()
        written["users"] = con.execute(
            f'SELECT count(DISTINCT user_id) FROM "{staged["raw_interactions"]}"').fetchall()[0][0]

    read = InteractionCounts()
    try:
        counts = warehouse.replace(
            {"items": iter_item_chunks(spec), "raw_interactions": iter_interaction_chunks(spec, counts=read)},
            validate=validate,
        )
    except ContractViolation as exc:
        for key, result in results.items():
            yield _check_result(key, result)
        raise dg.Failure(
            description=f"data contract failed, previous tables kept: {exc}",
            metadata=_md(exc.result.to_metadata()),
        ) from exc

    files = describe_source_files(spec).to_metadata()
    common = {"source_kind": spec.kind, "source_fingerprint": files["fingerprint"],
              "source_files": dg.MetadataValue.json(files["files"]),
              "ingest_seconds": round(time.perf_counter() - t0, 3)}
    preview, n_users = written["preview"], written["users"]
    yield dg.MaterializeResult(
        asset_key="items",
        metadata={**common, "dagster/row_count": counts["items"],
                  "preview": dg.MetadataValue.md(preview.to_markdown(index=False))},
    )
    yield dg.MaterializeResult(
        asset_key="raw_interactions",
        metadata={**common, "dagster/row_count": counts["raw_interactions"], "users": int(n_users),
                  "rows_read": read.read, "min_rating_dropped": read.dropped,
                  "rating_filter": dg.MetadataValue.json(read.to_metadata())},
    )
    for key, result in results.items():
        yield _check_result(key, result)


@dg.asset(
    deps=["raw_interactions", "items"],
    group_name="ingestion",
    kinds={"duckdb"},
    pool="warehouse",
    check_specs=[dg.AssetCheckSpec(CONTRACT, asset="interaction_splits", blocking=True,
                                   description="interaction_splits contract (k-core, leave-one-out)")],
    description="Deduplicated, k-core filtered, chronological leave-one-out split per user.",
)
def interaction_splits(context: dg.AssetExecutionContext, config: SplitConfig, warehouse: Warehouse):
    # rowid is the order the loader streamed the rows in: the split breaks timestamp ties by it
    raw = warehouse.read("raw_interactions", order_by="rowid")
    items = warehouse.read("items")
    split = config.build(SplitSettings)
    splits, stats = split_interactions(raw, split, known_items=items["item_id"], warn=False)
    if stats.tie_warning:
        context.log.warning(stats.tie_warning)
    holder: dict[str, object] = {}

    def validate(con, staged) -> None:
        holder["r"] = validate_interaction_splits(splits, items=items, k_core=split.k_core)
        if not holder["r"].success:
            raise ContractViolation(holder["r"])

    try:
        warehouse.replace({"interaction_splits": splits}, validate=validate)
    except ContractViolation as exc:
        yield _check_result("interaction_splits", exc.result)
        raise dg.Failure(description=f"data contract failed, previous table kept: {exc}",
                         metadata=_md(exc.result.to_metadata())) from exc

    per_split = splits["split"].value_counts().to_dict()
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(splits),
            "users": stats.users,
            "items": stats.items,
            "interactions": stats.interactions,
            "density": float(round(stats.density, 6)),
            "k_core": split.k_core,
            "dedup": split.dedup,
            "split_settings": dg.MetadataValue.json(to_mapping(split)),
            "kcore_rounds": stats.kcore_rounds,
            "duplicates_removed": stats.duplicates_removed,
            "kcore_removed": stats.kcore_removed,
            "tied_valid_test_share": float(round(stats.tied_valid_test_share, 6)),
            "tied_train_valid_share": float(round(stats.tied_train_valid_share, 6)),
            # models key their resumable checkpoints on this: a new split never resumes an old model
            "content_hash": frame_hash(splits.sort_values(["user_id", "position"])[["user_id", "item_id", "split"]]),
            "rows_per_split": dg.MetadataValue.json({k: int(v) for k, v in per_split.items()}),
            "seq_len_quantiles": dg.MetadataValue.json(stats.seq_len_quantiles),
        }
    )
    yield _check_result("interaction_splits", holder["r"])


def load_splits(warehouse: Warehouse) -> pd.DataFrame:
    """The split table in (user, position) order, for downstream assets."""
    return warehouse.read("interaction_splits", order_by="user_id, position")
