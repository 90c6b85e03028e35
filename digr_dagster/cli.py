"""The ``digr`` command line: run the demo, and (later) recommend and report status."""

from __future__ import annotations

import argparse
import os
import sys
import time


def _instance():
    from dagster import DagsterInstance

    if not os.environ.get("DAGSTER_HOME"):
        raise SystemExit("DAGSTER_HOME is not set; run through `make demo` or export DAGSTER_HOME=.digr/dagster_home")
    os.makedirs(os.environ["DAGSTER_HOME"], exist_ok=True)
    return DagsterInstance.get()


PID_TAG = "digr/pid"


def release_orphaned_runs(instance) -> list[str]:
    """Mark runs started by a ``digr`` process that no longer exists as failed and free their pool slots.

    A run killed hard (SIGKILL, power loss) never reports its end, so it would hold its ``warehouse``
    concurrency slot forever and block every later run.
    """
    from dagster import DagsterRunStatus, RunsFilter

    released = []
    for run in instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED, DagsterRunStatus.STARTING])):
        pid = run.tags.get(PID_TAG)
        if pid is None or _alive(int(pid)):
            continue
        instance.report_run_failed(run, f"the digr process {pid} that ran it is gone (killed); released")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        released.append(run.run_id)
    if released:
        _end_orphaned_mlflow_runs(released)
    return released


def _end_orphaned_mlflow_runs(dagster_run_ids: list[str]) -> None:
    """A killed process never closes its MLflow runs: mark those of the released Dagster runs KILLED."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from digr_dagster import settings

    client = mlflow.MlflowClient(settings.mlflow_tracking_uri())
    try:
        experiments = [e.experiment_id for e in client.search_experiments()]
        for run_id in dagster_run_ids:
            for run in client.search_runs(experiments, f"tags.dagster_run_id = '{run_id}' "
                                                       "AND attributes.status = 'RUNNING'"):
                client.set_terminated(run.info.run_id, status="KILLED")
                print(f"marked MLflow run {run.info.run_id} ({run.info.run_name}) KILLED", file=sys.stderr)
    except MlflowException as exc:  # the Dagster release above stands; say why MLflow was not tidied
        print(f"could not mark the killed runs' MLflow runs KILLED: {exc}", file=sys.stderr)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_job(job_name: str, run_config: dict | None = None) -> bool:
    """Execute a job of the code location in-process against the persistent Dagster instance."""
    from digr_dagster.definitions import defs

    instance = _instance()
    for run_id in release_orphaned_runs(instance):
        print(f"released orphaned run {run_id} (its process was killed)", file=sys.stderr)
    job = defs.resolve_job_def(job_name)
    result = job.execute_in_process(instance=instance, run_config=run_config or {}, raise_on_error=False,
                                    tags={PID_TAG: str(os.getpid())})
    return result.success


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
    import yaml

    from digr_dagster import settings
    from digr_dagster.resources.mlflow_tracking import TrackingStoreUnavailable, check_tracking_store

    try:  # before any run starts: a dead tracking server would otherwise stall the first MLflow step for minutes
        check_tracking_store(settings.mlflow_tracking_uri())
    except TrackingStoreUnavailable as exc:
        print(f"digr demo: {exc}", file=sys.stderr)
        return 2
    run_config = yaml.safe_load(open(args.config)) if args.config else {}
    t0 = time.perf_counter()
    ok = run_job("full_study", run_config)
    elapsed = time.perf_counter() - t0
    if not ok:
        print(f"\nThe demo run FAILED after {elapsed:.0f} s; see the run log above or `make dev`.", file=sys.stderr)
        return 1
    print(_summary())
    print(f"\nWhole graph materialised in {elapsed:.0f} s.")
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
    out = model.predict(pd.DataFrame([row])).iloc[0]
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
    status = sub.add_parser("status", help="the current champion, its metrics and lineage")
    status.add_argument("--model", default="deepinterestgr")
    rec = sub.add_parser("recommend", help="top-K recommendations from the champion")
    rec.add_argument("--user", help="a user id from the warehouse")
    rec.add_argument("--history", help="comma-separated item ids, most recent last")
    rec.add_argument("--interests", help="semicolon-separated interests to explain with")
    rec.add_argument("--model", default="deepinterestgr")
    args = parser.parse_args(argv)
    return {"demo": cmd_demo, "status": cmd_status, "recommend": cmd_recommend}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
