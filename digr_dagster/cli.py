"""The ``digr`` command line: run the demo or any job, recover from killed runs, recommend, report status."""

from __future__ import annotations

import argparse
import os
import sys
import time

# PID_TAG is re-exported: tests/fault_runner.py and older callers import both from here
from digr_dagster.recovery import PID_TAG, release_orphaned_runs  # noqa: F401


def _instance():
    from dagster import DagsterInstance

    if not os.environ.get("DAGSTER_HOME"):
        raise SystemExit("DAGSTER_HOME is not set; run through `make demo` or export DAGSTER_HOME=.digr/dagster_home")
    os.makedirs(os.environ["DAGSTER_HOME"], exist_ok=True)
    return DagsterInstance.get()


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


def _launch(command: str, job_name: str, config_paths: list[str], select: str | None = None):
    """What ``digr demo`` and ``digr run`` share: (exit code, result or None, seconds)."""
    if not _tracking_store_ok(command):
        return 2, None, 0.0
    t0 = time.perf_counter()
    try:
        result = run_job(job_name, load_run_config(config_paths), select)
    except LaunchError as exc:
        print(f"digr {command}: {exc}", file=sys.stderr)
        return 2, None, 0.0
    return (0 if result.success else 1), result, time.perf_counter() - t0


def _summary() -> str:
    import duckdb

    from digr_dagster import settings

    lines = ["", "Built (DuckDB warehouse " + settings.warehouse_path() + "):"]
    con = duckdb.connect(settings.warehouse_path(), read_only=True)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema='main' ORDER BY 1").fetchall()]
        for t in tables:
            n = con.execute(f'SELECT count(*) FROM "{t}"').fetchall()[0][0]
            lines.append(f"  {t:<28} {n:>10,} rows")
    finally:
        con.close()
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


def cmd_run(args: argparse.Namespace) -> int:
    """Any job of the code location with a run config, as ``digr demo`` runs ``full_study``."""
    code, result, elapsed = _launch("run", args.job, args.config, args.select)
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
    import duckdb

    from digr_dagster import settings

    con = duckdb.connect(settings.warehouse_path(), read_only=True)
    try:
        rows = con.execute("SELECT item_id FROM interaction_splits WHERE user_id = ? ORDER BY position",
                           [user_id]).fetchall()
    finally:
        con.close()
    if not rows:
        raise SystemExit(f"unknown user {user_id!r}: not in interaction_splits")
    return [r[0] for r in rows]


def item_titles(item_ids: list[str]) -> dict[str, str]:
    """Titles from the warehouse for display; empty when the warehouse is not there."""
    import duckdb

    from digr_dagster import settings

    if not os.path.exists(settings.warehouse_path()):
        return {}
    con = duckdb.connect(settings.warehouse_path(), read_only=True)
    try:
        rows = con.execute("SELECT item_id, title FROM items WHERE item_id IN (SELECT unnest(?))",
                           [list(item_ids)]).fetchall()
    finally:
        con.close()
    return dict(rows)


def cmd_recommend(args: argparse.Namespace) -> int:
    """Top-K from the champion for a known user or an explicit history."""
    import mlflow
    import pandas as pd

    from digr_dagster import settings

    if bool(args.user) == bool(args.history):
        raise SystemExit("give exactly one of --user or --history")
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
    args = parser.parse_args(argv)
    commands = {"demo": cmd_demo, "run": cmd_run, "recover": cmd_recover, "status": cmd_status,
                "recommend": cmd_recommend}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
