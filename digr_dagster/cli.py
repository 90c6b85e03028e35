"""The ``digr`` command line: run the demo or any job, recover from killed runs, recommend, report status."""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

# PID_TAG is re-exported: tests/fault_runner.py and older callers import both from here
from digr_dagster.recovery import PID_TAG, release_orphaned_runs  # noqa: F401


def _instance():
    from dagster import DagsterInstance

    if not os.environ.get("DAGSTER_HOME"):
        raise SystemExit("DAGSTER_HOME is not set; run through `make demo` or export DAGSTER_HOME=.digr/dagster_home")
    os.makedirs(os.environ["DAGSTER_HOME"], exist_ok=True)
    return DagsterInstance.get()


#: the sizing profiles of ``digr run --size`` (training.sizing.PROFILES, spelled here so that parsing the command
#: line does not import the library)
SIZES = ("quick", "standard", "full")


class LaunchError(Exception):
    """A job launch refused before any run was created (unknown job or asset, bad config); exit code 2."""


def load_run_config(paths: list[str]) -> dict:
    """The run config of YAML files merged in order: a later file overrides an earlier one key by key
    (nested mappings merge, any other value is replaced)."""
    import yaml

    merged: dict = {}
    for path in paths:
        try:
            with open(path) as fh:
                data = yaml.safe_load(fh)
        except OSError as exc:
            raise LaunchError(f"cannot read run config {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise LaunchError(f"run config {path} is not valid YAML: {exc}") from exc
        if data is None:
            continue
        if not isinstance(data, dict):
            raise LaunchError(f"run config {path} must be a mapping (ops: ..., resources: ...), "
                              f"not {type(data).__name__}")
        merged = _merge(merged, data)
    return merged


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) else value
    return out


def _job(job_name: str):
    from digr_dagster.definitions import defs

    jobs = sorted(n for n in defs.get_repository_def().job_names if not n.startswith("__"))
    if job_name not in jobs:
        raise LaunchError(f"unknown job {job_name!r}; the jobs of this code location: {', '.join(jobs)}")
    return defs.resolve_job_def(job_name)


def _selection(job, select: str | None) -> list | None:
    """The asset keys of a comma-separated ``--select``, checked against the job's assets."""
    if not select:
        return None
    from dagster import AssetKey

    keys = [AssetKey.from_user_string(s.strip()) for s in select.split(",") if s.strip()]
    known = job.asset_layer.executable_asset_keys
    unknown = [k.to_user_string() for k in keys if k not in known]
    if unknown:
        raise LaunchError(f"job {job.name!r} has no asset {', '.join(unknown)}; its assets: "
                          f"{', '.join(sorted(k.to_user_string() for k in known))}")
    for key in keys:
        made = job.asset_layer.get(key).assets_def
        missing = sorted(k.to_user_string() for k in made.keys if k not in keys)
        if missing and not made.can_subset:
            raise LaunchError(f"asset {key.to_user_string()} is made together with {', '.join(missing)} "
                              f"(one op, {made.op.name}): select them all")
    return keys


def _prune_unselected_ops(job, run_config: dict, selection: list | None) -> dict:
    """Drop the config of the job's ops that the selection leaves out (Dagster refuses config for them), so one
    config file serves any selection; an op the job does not have still fails validation."""
    ops = run_config.get("ops")
    if not selection or not isinstance(ops, dict):
        return run_config
    layer = job.asset_layer
    selected = {layer.get(k).assets_def.op.name for k in selection}
    all_ops = {node.name for node in job.nodes}
    return {**run_config, "ops": {op: c for op, c in ops.items() if op in selected or op not in all_ops}}


def _check_config(job, run_config: dict, selection: list | None) -> None:
    """Validate the run config against the job (the selected subset) before anything runs."""
    from dagster import DagsterInvalidConfigError, DagsterInvalidSubsetError, validate_run_config

    try:
        target = job.get_subset(asset_selection=set(selection)) if selection else job
    except DagsterInvalidSubsetError as exc:
        raise LaunchError(f"cannot run that selection of job {job.name!r}: {str(exc).splitlines()[0]}") from exc
    try:
        validate_run_config(target, run_config)
    except DagsterInvalidConfigError as exc:
        problems = "\n".join(f"  - {_config_problem(e)}" for e in exc.errors)
        raise LaunchError(f"invalid run config for job {job.name!r}; nothing was run:\n{problems}") from exc


def _config_problem(error) -> str:
    """Dagster's message for one config error, led by the unknown key(s) it names."""
    data = error.error_data
    names = list(getattr(data, "field_names", None) or [getattr(data, "field_name", None)])
    if error.reason.value in ("FIELD_NOT_DEFINED", "FIELDS_NOT_DEFINED") and all(names):
        return f"unknown key {', '.join(map(repr, names))}: {error.message}"
    return error.message


def run_job(job_name: str, run_config: dict | None = None, select: str | None = None):
    """Execute a job of the code location in-process against the persistent Dagster instance, after
    releasing the runs of killed processes (``digr_dagster.recovery``); returns the execution result.

    Raises LaunchError, before any run is created, for an unknown job or asset or an invalid config.
    """
    from digr_dagster.recovery import run_tags

    job = _job(job_name)
    selection = _selection(job, select)
    run_config = _prune_unselected_ops(job, run_config or {}, selection)
    _check_config(job, run_config, selection)
    instance = _instance()
    try:
        release_orphaned_runs(instance)
    except ValueError as exc:  # a malformed staleness setting
        raise LaunchError(str(exc)) from exc
    return job.execute_in_process(instance=instance, run_config=run_config, raise_on_error=False,
                                  asset_selection=selection, tags=run_tags())


def _tracking_store_ok(command: str) -> bool:
    """Before any run starts: a dead tracking server would otherwise stall the first MLflow step for minutes."""
    from digr_dagster import settings
    from digr_dagster.resources.mlflow_tracking import TrackingStoreUnavailable, check_tracking_store

    try:
        check_tracking_store(settings.mlflow_tracking_uri())
    except TrackingStoreUnavailable as exc:
        print(f"digr {command}: {exc}", file=sys.stderr)
        return False
    return True


def _launch(command: str, job_name: str, config_paths: list[str], select: str | None = None,
            size: str | None = None):
    """What ``digr demo`` and ``digr run`` share: (exit code, result or None, seconds)."""
    if not _tracking_store_ok(command):
        return 2, None, 0.0
    t0 = time.perf_counter()
    try:
        run_config = load_run_config(config_paths)
        if size:
            run_config = sized_run_config_for(job_name, size, run_config)
        result = run_job(job_name, run_config, select)
    except LaunchError as exc:
        print(f"digr {command}: {exc}", file=sys.stderr)
        return 2, None, 0.0
    return (0 if result.success else 1), result, time.perf_counter() - t0


def _warehouse():
    """The configured warehouse (a DuckDB file or s3://...), None when it is a file not created yet."""
    from digr_dagster import settings
    from warehouse import is_object_store_url, open_warehouse

    location = settings.warehouse_path()
    if not is_object_store_url(location) and not os.path.exists(location):
        return None
    return open_warehouse(location, cache_dir=settings.warehouse_cache_dir())


def _summary() -> str:
    from digr_dagster import settings

    lines = ["", "Built (warehouse " + settings.warehouse_path() + "):"]
    from warehouse import table_row_count

    warehouse = _warehouse()
    if warehouse is not None:
        with warehouse.connect(read_only=True) as con:
            tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                                "WHERE table_schema = 'main' ORDER BY 1").fetchall()]
            for t in tables:
                lines.append(f"  {t:<28} {table_row_count(con, t):>10,} rows")
    lines += [
        "",
        f"MLflow tracking: {settings.mlflow_tracking_uri()}",
        f"Dagster instance: {os.environ.get('DAGSTER_HOME')}",
        "",
        "Look at it:",
        "  make dev         # Dagster UI on http://127.0.0.1:3000 (asset graph, runs, checks, metadata)",
        "  make mlflow-ui   # MLflow UI on http://127.0.0.1:5000 (runs, metrics, models)",
    ]
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace) -> int:
    code, _, elapsed = _launch("demo", "full_study", [args.config] if args.config else [])
    if code == 1:
        print(f"\nThe demo run FAILED after {elapsed:.0f} s; see the run log above or `make dev`.", file=sys.stderr)
    if code:
        return code
    print(_summary())
    print(f"\nWhole graph materialised in {elapsed:.0f} s.")
    return 0


def data_size(run_config: dict) -> tuple[tuple[int, int, int] | None, str]:
    """(interactions, users, items) of the run config's source for ``--size``, and where they come from.

    The warehouse's ``interaction_splits`` (what training sees) when the warehouse's last ingestion read the
    same source files with the same ``min_rating`` (the ``source_fingerprint`` in ``raw_interactions``'
    metadata); otherwise the source's files streamed through its loader (rows before dedup and k-core, a
    slight overestimate: the budgets only err towards cheaper). When the source cannot be read, the warehouse's
    tables whatever their source; without those either, None: the profile's small-data values apply, and the
    run's ingestion will report what is wrong with the source.
    """
    from digr_dagster import settings
    from ingestion.errors import IngestionError
    from ingestion.sources import SourceSpec, describe_source_files, iter_interaction_chunks

    ops = run_config.get("ops") if isinstance(run_config.get("ops"), dict) else {}
    entry = ops.get("ingest_source") if isinstance(ops.get("ingest_source"), dict) else {}
    try:
        values = dict(entry.get("config") or {})
        if values.get("kind", "demo") == "demo" and not values.get("path"):
            values["path"] = settings.demo_data_dir()  # as the ingest_source asset completes it
        spec = SourceSpec(**values)
        fingerprint = describe_source_files(spec).fingerprint
    except (ValueError, TypeError, OSError) as exc:  # pydantic's ValidationError and IngestionError included
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        counted = _warehouse_size(None, None)
        if counted:
            return counted, f"the warehouse's interaction_splits; the configured source cannot be read: {reason}"
        return None, f"the configured source cannot be read ({reason}) and the warehouse has no interaction_splits"
    counted = _warehouse_size(fingerprint, spec.min_rating)
    if counted:
        return counted, "the warehouse's interaction_splits, this source's last ingestion"
    users: set = set()
    items: set = set()
    rows = 0
    try:
        for chunk in iter_interaction_chunks(spec):
            rows += len(chunk)
            users.update(chunk["user_id"].unique().tolist())
            items.update(chunk["item_id"].unique().tolist())
    except (IngestionError, ValueError, OSError) as exc:
        return None, f"the configured source cannot be read ({str(exc).strip().splitlines()[0]})"
    return (rows, len(users), len(items)), "the source's files, not ingested yet: rows before dedup and k-core"


def _warehouse_size(fingerprint: str | None, min_rating: float | None) -> tuple[int, int, int] | None:
    """The warehouse's interaction_splits counts; with a ``fingerprint``, only when the last ingestion read that
    source with that ``min_rating`` and the split is newer than it."""
    import duckdb

    warehouse = _warehouse()
    if warehouse is None:
        return None
    if fingerprint is not None:
        if not os.environ.get("DAGSTER_HOME"):
            return None
        from dagster import AssetKey, DagsterInstance

        with DagsterInstance.get() as instance:
            raw = instance.get_latest_materialization_event(AssetKey("raw_interactions"))
            split = instance.get_latest_materialization_event(AssetKey("interaction_splits"))
        if raw is None or split is None or split.timestamp < raw.timestamp:
            return None
        metadata = raw.asset_materialization.metadata
        read = getattr(metadata.get("source_fingerprint"), "value", None)
        rating_filter = getattr(metadata.get("rating_filter"), "value", None) or {}
        if read != fingerprint or rating_filter.get("min_rating") != min_rating:
            return None
    from warehouse import table_exists

    try:
        with warehouse.connect(read_only=True) as con:
            if not table_exists(con, "interaction_splits"):
                return None
            n, users, items = con.execute("SELECT count(*), count(DISTINCT user_id), count(DISTINCT item_id) "
                                          "FROM interaction_splits").fetchone()
    except duckdb.Error:  # another process is writing the DuckDB file: count the source instead
        return None
    return (int(n), int(users), int(items)) if n else None


def sized_run_config_for(job_name: str, profile: str, run_config: dict,
                         size: tuple[int, int, int] | None = None) -> dict:
    """``run_config`` over the ``profile``'s budgets for the data (``training.sizing``): the sized values go
    *under* it, so a value of the user's config files wins; only the job's ops are sized. ``size``
    (interactions, users, items) skips counting (:func:`data_size`). Prints what it chose and why."""
    from training.sizing import describe, sized_run_config

    job = _job(job_name)
    where = "counts given by the caller"
    if size is None:
        size, where = data_size(run_config)
    if size is None:
        print(f"digr run --size {profile}: {where}; sizing for small data. Ingest first "
              "(`digr run ingest_new_files --config ...`) to size from the warehouse.")
        counts = (0, 0, 0)
    else:
        counts = size
        print(f"digr run --size {profile}: {counts[0]:,} interactions, {counts[1]:,} users, {counts[2]:,} items "
              f"(from {where})")
    ops = {node.name for node in job.nodes}
    sized = {op: entry for op, entry in sized_run_config(profile, *counts).items() if op in ops}
    user_ops = run_config.get("ops") if isinstance(run_config.get("ops"), dict) else {}
    for line in describe(sized):
        print(f"  {line}")
    overridden = [f"{op}.{key}" for op, entry in sized.items() for key in _leaves(entry.get("config", {}))
                  if _has_path((user_ops.get(op) or {}).get("config") if isinstance(user_ops.get(op), dict)
                               else None, key.split("."))]
    if overridden:
        print(f"  your --config files set: {', '.join(overridden)} (their values are used)")
    return _merge({"ops": sized}, run_config)


def _leaves(config: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in config.items():
        out += _leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
    return out


def _has_path(config, path: list[str]) -> bool:
    for key in path:
        if not isinstance(config, dict) or key not in config:
            return False
        config = config[key]
    return True


def cmd_run(args: argparse.Namespace) -> int:
    """Any job of the code location with a run config, as ``digr demo`` runs ``full_study``; with ``--size``,
    the training budgets sized to the data under the config files."""
    code, result, elapsed = _launch("run", args.job, args.config, args.select, args.size)
    if result is None:
        return code
    assets = sorted({e.asset_key.to_user_string() for e in result.get_asset_materialization_events()})
    print(f"run {result.run_id} of job {args.job}: {'SUCCESS' if result.success else 'FAILURE'} in {elapsed:.0f} s")
    print(f"materialised: {', '.join(assets) if assets else 'nothing'}")
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            message = str(event.event_specific_data.error.message).strip().splitlines()
            print(f"failed step {event.step_key}: {message[0] if message else ''}", file=sys.stderr)
    return code


def cmd_recover(args: argparse.Namespace) -> int:
    """Release the runs of killed processes (whoever started them): see digr_dagster.recovery."""
    from digr_dagster.recovery import recover

    try:
        report = recover(_instance(), force=args.force, stale_hours=args.stale_hours, dry_run=args.dry_run)
    except ValueError as exc:
        print(f"digr recover: {exc}", file=sys.stderr)
        return 2
    for line in report.lines():
        print(line)
    if not report.outcomes:
        print("nothing to recover: no run of this instance is in flight, holds a pool slot or has a RUNNING "
              "MLflow run")
    elif not report.released:
        print("nothing released")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """The current champion: version, metrics, lineage."""
    import json

    import mlflow

    from digr_dagster import settings
    from serving.registry import champion_info

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri())
    info = champion_info(mlflow.MlflowClient(), args.model)
    if info is None:
        print(f"no champion for model {args.model!r} in {settings.mlflow_tracking_uri()}; run `make demo` first",
              file=sys.stderr)
        return 1
    print(json.dumps(info, indent=2, default=str))
    return 0


def user_history(user_id: str) -> list[str]:
    """A user's whole known history from the warehouse, oldest first (for serving, not evaluation)."""
    from warehouse import table_exists

    warehouse = _warehouse()
    with nullcontext(None) if warehouse is None else warehouse.connect(read_only=True) as con:
        if con is None or not table_exists(con, "interaction_splits"):
            raise SystemExit("no interaction_splits in the warehouse: run `make demo` (or ingest your data) first")
        rows = con.execute("SELECT item_id FROM interaction_splits WHERE user_id = ? ORDER BY position",
                           [user_id]).fetchall()
    if not rows:
        raise SystemExit(f"unknown user {user_id!r}: not in interaction_splits")
    return [r[0] for r in rows]


def item_titles(item_ids: list[str]) -> dict[str, str]:
    """Titles from the warehouse for display; empty when the warehouse is not there."""
    from warehouse import table_exists

    warehouse = _warehouse()
    if warehouse is None:
        return {}
    with warehouse.connect(read_only=True) as con:
        if not table_exists(con, "items"):
            return {}
        rows = con.execute("SELECT item_id, title FROM items WHERE item_id IN (SELECT unnest(?))",
                           [list(item_ids)]).fetchall()
    return dict(rows)


def cmd_recommend(args: argparse.Namespace) -> int:
    """Top-K from the champion for a known user or an explicit history."""
    import mlflow
    import pandas as pd

    from digr_dagster import settings

    if bool(args.user) == bool(args.history):
        raise SystemExit("give exactly one of --user or --history")
    if args.precomputed:
        return recommend_precomputed(args)
    history = user_history(args.user) if args.user else [h for h in args.history.split(",") if h]
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri())
    model = mlflow.pyfunc.load_model(f"models:/{args.model}@champion")
    row = {"history": history}
    if args.user:
        row["user_id"] = args.user
    if args.interests:
        row["interests"] = [i.strip() for i in args.interests.split(";") if i.strip()]
    params = None
    if args.exclude_seen is not None:
        schema = model.metadata.get_params_schema()
        if schema is None or "exclude_seen" not in {p.name for p in schema.params}:
            raise SystemExit(f"the champion of {args.model!r} was logged before the exclude_seen param; "
                             "register a new version to use --exclude-seen / --no-exclude-seen")
        params = {"exclude_seen": args.exclude_seen}
    out = model.predict(pd.DataFrame([row]), params=params).iloc[0]
    titles = item_titles([*history[-5:], *out["item_ids"]])
    print(f"history ({len(history)} items), most recent last:")
    for item in history[-5:]:
        print(f"    {item}  {titles.get(item, '')}")
    print("recommended:")
    for rank, (item, score) in enumerate(zip(out["item_ids"], out["scores"], strict=True), start=1):
        print(f"{rank:>3}. {item}  {titles.get(item, '')}  (log-prob {score:.3f})")
    if len(out["explanations"]):
        print("because of: " + "; ".join(map(str, out["explanations"])))
    return 0


def recommend_precomputed(args: argparse.Namespace) -> int:
    """``digr recommend --user U --precomputed``: the user's top-K from the batch-scored ``user_recommendations``
    table when it holds them for the current champion (and the asked ``--exclude-seen``), else ranked online by
    the champion as without the flag (``serving.batch_scoring.recommend_user``)."""
    import mlflow

    from digr_dagster import settings
    from serving.batch_scoring import load_model, recommend_user, resolve_model

    if not args.user or args.interests:
        raise SystemExit("--precomputed serves a known --user from the batch-scored table (without --interests)")
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri())
    try:
        ref = resolve_model(mlflow.MlflowClient(), args.model, "champion")
    except LookupError as exc:
        raise SystemExit(str(exc)) from exc
    warehouse = _warehouse()
    if warehouse is None:
        raise SystemExit("no warehouse yet: run `make demo` (or ingest your data) first")
    with warehouse.connect(read_only=True) as con:
        served = recommend_user(con, args.user, model=lambda: load_model(ref), history=lambda: user_history(args.user),
                                model_version=ref.version, exclude_seen=args.exclude_seen)
    where = ("batch-scored table user_recommendations" if served.source == "table"
             else "ranked online: the batch-scored table does not hold this user for this champion")
    titles = item_titles(served.item_ids)
    print(f"recommended for {args.user} by {ref.name} v{ref.version} ({where}):")
    for rank, (item, score) in enumerate(zip(served.item_ids, served.scores, strict=True), start=1):
        print(f"{rank:>3}. {item}  {titles.get(item, '')}  (log-prob {score:.3f})")
    if served.explanations:
        print("because of: " + "; ".join(served.explanations))
    return 0


def cmd_label_sample(args: argparse.Namespace) -> int:
    """A sample of this catalogue's judged descriptors to label by hand (then set interest_rewards' own_labels)."""
    from digr_dagster.resources.warehouse import Warehouse
    from mining.judge_agreement import label_sample

    warehouse = Warehouse()
    for table in ("interest_rewards", "items"):
        if not warehouse.exists(table):
            raise SystemExit(f"no {table} table in the warehouse: materialise interest_rewards first")
    out = Path(args.out)
    if out.exists() and not args.force:
        raise SystemExit(f"{out} exists (it may hold your labels): pass --force to overwrite it")
    sample = label_sample(warehouse.read("interest_rewards"), warehouse.read("items"), n=args.n, seed=args.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    sample.to_csv(out, index=False)
    print(f"wrote {len(sample)} descriptors to {out} ({int(sample['pipeline_label'].sum())} curated by the judge). "
          "Fill the `label` column with 1 (a specific need this item serves) or 0 (vague, a restatement, or "
          "wrong), leave rows blank to skip them, then rerun interest_rewards with config "
          f"`own_labels: {out.resolve()}`")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="digr", description="DeepInterestGR command line")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="materialise the whole asset graph on the embedded demo data")
    demo.add_argument("--config", default="deploy/demo_run_config.yaml",
                      help="run config YAML (default: the demo sizing); '' for the asset defaults")
    run = sub.add_parser("run", help="run any job of the code location with a run config (as `digr demo` does)")
    run.add_argument("job", help="job name (full_study, nightly_retrain, ingest_new_files)")
    run.add_argument("--config", action="append", default=[], metavar="FILE.yaml",
                     help="run config YAML; repeat to merge several, a later file overriding an earlier one")
    run.add_argument("--select", help="comma-separated asset keys of the job to materialise (default: all); "
                                      "config of the ops left out is ignored")
    run.add_argument("--size", choices=SIZES,
                     help="size the training budgets to the data (training/sizing.py): quick = a smoke run of "
                          "minutes, standard = the nightly job on 100k interactions within about 30 min on 2 "
                          "cores, full = the production defaults; values in --config files win")
    rec_ = sub.add_parser("recover", help="release runs whose process was killed (any launcher): mark them "
                                          "failed, free their pool slots, mark their MLflow runs KILLED")
    rec_.add_argument("--force", action="store_true",
                      help="also release runs whose process cannot be checked (no pid recorded on this host); "
                           "only when no Dagster process (webserver, daemon, other host) runs this instance")
    rec_.add_argument("--stale-hours", type=float, default=None,
                      help="release started runs without a checkable pid after this long without any event "
                           "(default $DIGR_STALE_RUN_HOURS or 24)")
    rec_.add_argument("--dry-run", action="store_true", help="say what would be released, change nothing")
    status = sub.add_parser("status", help="the current champion, its metrics and lineage")
    status.add_argument("--model", default="deepinterestgr")
    rec = sub.add_parser("recommend", help="top-K recommendations from the champion")
    rec.add_argument("--user", help="a user id from the warehouse")
    rec.add_argument("--history", help="comma-separated item ids, most recent last")
    rec.add_argument("--interests", help="semicolon-separated interests to explain with")
    rec.add_argument("--exclude-seen", action=argparse.BooleanOptionalAction, default=None,
                     help="leave the history's items out of the recommendations (default: as the champion was "
                          "logged; off keeps repeats, for repeat-purchase domains)")
    rec.add_argument("--model", default="deepinterestgr")
    rec.add_argument("--precomputed", action="store_true",
                     help="with --user: serve the nightly batch-scored top-K (table user_recommendations) when it "
                          "holds the user for the current champion, else rank online")
    lab = sub.add_parser("label-sample", help="write judged descriptors of your catalogue to a CSV to label by "
                                              "hand: the judge's agreement is then measured on your data")
    lab.add_argument("--out", default="judge_labels.csv")
    lab.add_argument("--n", type=int, default=60, help="descriptors (half curated, half rejected where possible)")
    lab.add_argument("--seed", type=int, default=0)
    lab.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    args = parser.parse_args(argv)
    commands = {"demo": cmd_demo, "run": cmd_run, "recover": cmd_recover, "status": cmd_status,
                "recommend": cmd_recommend, "label-sample": cmd_label_sample}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
