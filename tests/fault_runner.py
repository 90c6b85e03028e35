"""Run a Dagster materialisation in a child process, so tests can SIGKILL it mid-step and rerun it.

The child (``python -m tests.fault_runner``) does what ``digr`` does before a run — releases Dagster runs
whose process is gone (``digr_dagster.cli.release_orphaned_runs``) — then materialises the selected assets
against the Dagster instance in ``$DAGSTER_HOME``, tagged with its pid, and writes a JSON summary.
The parent-side helpers start it, wait for an observable sign that a stage is running, kill it, and
snapshot the warehouse, the LLM call cache and the MLflow store for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# everything up to recommender_grpo (not the whole graph: later assets are still being added);
# items + raw_interactions are the two keys of the ingest_source multi-asset
UP_TO_GRPO = ["items", "raw_interactions", "interaction_splits", "item_captions", "item_interests", "interest_rewards",
              "user_interests", "item_embeddings", "semantic_ids", "recommender_sft", "recommender_grpo"]

# small but long enough per stage that a kill lands inside the stage, not after it
SMALL = {
    "ingest_source": {"config": {"kind": "demo", "n_users": 160, "seed": 3}},
    "user_interests": {"config": {"llm_summary": True}},
    "semantic_ids": {"config": {"n_levels": 2, "codebook_size": 8, "max_epochs": 40, "seed": 1}},
    "recommender_sft": {"config": {"d_model": 16, "d_ff": 32, "num_encoder_layers": 1, "num_decoder_layers": 1,
                                   "num_heads": 2, "max_epochs": 2, "patience": 2, "beam_width": 10, "batch_size": 64}},
    "recommender_grpo": {"config": {"group_size": 2, "max_epochs": 3}},  # the kill lands after epoch 1
}

# warehouse tables written by UP_TO_GRPO and the columns that identify a row
TABLE_KEYS = {
    "items": ["item_id"],
    "raw_interactions": None,  # raw events may repeat: compared by count and content only
    "interaction_splits": ["user_id", "position"],
    "item_interests": ["item_id", "descriptor"],
    "interest_rewards": ["item_id", "descriptor"],
    "item_quality": ["item_id"],
    "user_interests": ["user_id", "rank"],
    "item_embeddings": ["item_id"],
    "semantic_ids": ["item_id"],
    "user_interest_tokens": ["user_id"],
    "llm_call_cache": ["key"],
}


# --------------------------------------------------------------------------- child side


def _plain(value):
    from dagster import MetadataValue

    if isinstance(value, MetadataValue):
        value = value.value
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


def _child(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="materialise assets for fault-injection tests")
    parser.add_argument("--llm-url", required=True)
    parser.add_argument("--select", required=True, help="comma-separated asset names")
    parser.add_argument("--config", required=True, help="run config ops as JSON")
    parser.add_argument("--out", required=True, help="where the JSON summary goes")
    args = parser.parse_args(argv)

    import dagster as dg

    from digr_dagster.cli import PID_TAG, release_orphaned_runs
    from digr_dagster.definitions import defs
    from digr_dagster.resources.mlflow_tracking import MlflowTracking
    from digr_dagster.resources.models import LLMMiners, MinerSpec, TextEncoderResource
    from digr_dagster.resources.warehouse import Warehouse

    miner = MinerSpec(name="loopback", backend="openai", model="fake-chat", base_url=args.llm_url,
                      api_key_env="DIGR_TEST_LLM_KEY", n_descriptors=2, max_concurrency=8)
    resources = {"warehouse": Warehouse(), "mlflow_tracking": MlflowTracking(), "llm": LLMMiners(miners=[miner]),
                 "text_encoder": TextEncoderResource(batch_size=64)}
    selection = args.select.split(",")
    # Dagster refuses config for ops outside the selection: keep the ops whose assets are selected
    ops = {a.op.name for a in defs.assets if any(k.to_user_string() in selection for k in a.keys)}
    config = {op: c for op, c in json.loads(args.config).items() if op in ops}
    with dg.DagsterInstance.get() as instance:
        released = release_orphaned_runs(instance)
        result = dg.materialize(list(defs.assets), instance=instance, resources=resources,
                                run_config={"ops": config}, selection=selection,
                                tags={PID_TAG: str(os.getpid())}, raise_on_error=False)
        summary = {
            "success": result.success,
            "run_id": result.run_id,
            "released": released,
            "failures": [str(e.event_specific_data.error)[:3000] for e in result.all_events
                         if e.event_type_value == "STEP_FAILURE"],
            "metadata": {e.asset_key.to_user_string(): {k: _plain(v) for k, v in e.materialization.metadata.items()}
                         for e in result.get_asset_materialization_events()},
        }
    Path(args.out).write_text(json.dumps(summary, default=str))
    return 0 if result.success else 1


# --------------------------------------------------------------------------- parent side


def child_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of a child run whose whole state lives under ``home`` (as the ``digr_env`` fixture)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGR_", "DAGSTER_", "MLFLOW_"))}
    env.update({
        "DIGR_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}", "MLFLOW_DISABLE_TELEMETRY": "true",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
        "DO_NOT_TRACK": "1", "DIGR_TEST_LLM_KEY": "sk-test-not-a-real-key", "PYTHONPATH": str(ROOT),
    })
    env.update(extra or {})
    return env


def make_home(home: Path) -> Path:
    """A fresh DIGR_HOME with a Dagster instance whose pools are limited to 1 (as deploy/dagster.yaml)."""
    (home / "dagster_home").mkdir(parents=True, exist_ok=True)
    (home / "dagster_home" / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n")
    return home


class ChildRun:
    """One child materialisation; ``wait()`` returns its JSON summary (or None when it wrote none)."""

    counter = 0

    def __init__(self, home: Path, llm_url: str, *, select: list[str] | None = None, config: dict | None = None,
                 env: dict[str, str] | None = None) -> None:
        ChildRun.counter += 1
        self.home = home
        self.out = home / f"child-{ChildRun.counter}.json"
        self.log = home / f"child-{ChildRun.counter}.log"
        cmd = [sys.executable, "-m", "tests.fault_runner", "--llm-url", llm_url,
               "--select", ",".join(select or UP_TO_GRPO), "--config", json.dumps(config or SMALL),
               "--out", str(self.out)]
        self._log_fh = open(self.log, "wb")  # noqa: SIM115 - closed in wait()/kill()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(home, env), stdout=self._log_fh,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self, timeout: float = 400) -> dict | None:
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.kill()
            self._log_fh.close()
        return json.loads(self.out.read_text()) if self.out.exists() else None

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a power cut would: no handler, no ``finally`` runs."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._log_fh.close()

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


def wait_until(condition: Callable[[], bool], child: ChildRun, *, timeout: float = 300, poll_s: float = 0.05,
               what: str = "condition") -> float:
    """Poll ``condition`` until true; returns seconds waited. Fails naming ``what`` if the child ends first."""
    start = time.monotonic()
    while not condition():
        if child.proc.poll() is not None:
            raise AssertionError(f"child ended (rc {child.proc.returncode}) before {what}:\n{child.tail()}")
        if time.monotonic() - start > timeout:
            child.kill()
            raise AssertionError(f"timed out after {timeout} s waiting for {what}:\n{child.tail()}")
        time.sleep(poll_s)
    return time.monotonic() - start


def checkpoint_files(home: Path, stage: str, pattern: str = "*.ckpt") -> list[Path]:
    """Checkpoints under ``$DIGR_HOME/checkpoints/<dir>/...`` whose top folder names ``stage`` ("sft" matches
    both ``sft`` and ``recommender_sft``: the layout is the asset's business, not the test's)."""
    root = home / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob(pattern) if stage in p.relative_to(root).parts[0])


def _instance(home: Path):
    from dagster import DagsterInstance

    return DagsterInstance.from_config(str(home / "dagster_home"))


def step_events(home: Path, event_type: str) -> list[tuple[str, str]]:
    """(run id, step key) of every event of ``event_type`` (e.g. STEP_START) in the instance, oldest first."""
    from dagster import DagsterEventType

    with _instance(home) as instance:
        out = []
        for run in reversed(instance.get_runs()):
            for entry in instance.all_logs(run.run_id, of_type=DagsterEventType[event_type]):
                out.append((run.run_id, entry.step_key))
        return out


def run_statuses(home: Path) -> dict[str, str]:
    with _instance(home) as instance:
        return {run.run_id: run.status.value for run in instance.get_runs()}


def read_tables(db_path: Path, names: list[str] | None = None, *, timeout_s: float = 30) -> dict:
    """Every (or the named) table of a warehouse as a DataFrame, sorted on all columns; retries on the lock."""
    import duckdb

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            con = duckdb.connect(str(db_path), read_only=True)
            break
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    try:
        present = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()]
        out = {}
        for name in names or present:
            if name in present:
                df = con.execute(f'SELECT * FROM "{name}"').df()
                out[name] = df
        out["__tables__"] = sorted(present)
        return out
    finally:
        con.close()


def sorted_frame(df):
    """Rows in a canonical order (list columns compared as text), index reset."""
    keys = df.astype(str)
    order = keys.sort_values(list(keys.columns)).index
    return df.loc[order].reset_index(drop=True)


def warehouse_problems(tables: dict) -> list[str]:
    """Duplicated keys, leftover staging tables, and cache rows whose key does not match their content."""
    import hashlib

    problems = [f"leftover staging table {t}" for t in tables["__tables__"] if t.endswith("__staging")]
    for name, keys in TABLE_KEYS.items():
        if name not in tables or keys is None:
            continue
        dup = tables[name].duplicated(keys).sum()
        if dup:
            problems.append(f"{name}: {dup} rows with duplicated key {keys}")
    cache = tables.get("llm_call_cache")
    if cache is not None:
        for row in cache.itertuples(index=False):
            try:
                json.loads(row.request_json)
            except (TypeError, ValueError) as exc:
                problems.append(f"llm_call_cache {row.key[:12]}: request_json does not parse ({exc})")
                continue
            payload = json.dumps([row.backend, row.model, row.prompt_version, row.request_json], ensure_ascii=False)
            if hashlib.sha256(payload.encode("utf-8")).hexdigest() != row.key:
                problems.append(f"llm_call_cache {row.key[:12]}: key does not match the stored request")
            if not isinstance(row.response_text, str) or not row.response_text.strip():
                problems.append(f"llm_call_cache {row.key[:12]}: empty or missing response_text")
    return problems


def mlflow_runs(home: Path) -> list[dict]:
    """Every MLflow run in the store: name, status, Dagster run id."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exps = [e.experiment_id for e in client.search_experiments()]
    return [{"run_id": r.info.run_id, "name": r.info.run_name, "status": r.info.status,
             "dagster_run_id": r.data.tags.get("dagster_run_id")}
            for r in client.search_runs(exps, max_results=10_000)] if exps else []


def set_champion(home: Path, model_name: str = "deepinterestgr") -> str:
    """Register one version of ``model_name`` and make it champion; returns the version."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    source = home / "champion_stub"
    source.mkdir(exist_ok=True)
    (source / "MLmodel").write_text("flavors: {}\n")
    client.create_registered_model(model_name)
    version = client.create_model_version(model_name, source=str(source)).version
    client.set_registered_model_alias(model_name, "champion", version)
    return str(version)


def champion_version(home: Path, model_name: str = "deepinterestgr") -> str:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    return str(client.get_model_version_by_alias(model_name, "champion").version)


def latest_run_id(home: Path) -> str | None:
    with _instance(home) as instance:
        runs = instance.get_runs(limit=1)
        return runs[0].run_id if runs else None


def run_materializations(home: Path, run_id: str) -> dict[str, dict]:
    """{asset key: plain metadata} of every materialisation recorded by one run (killed runs included)."""
    from dagster import DagsterEventType

    with _instance(home) as instance:
        out = {}
        for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
            mat = entry.asset_materialization
            out[mat.asset_key.to_user_string()] = {k: _plain(v) for k, v in mat.metadata.items()}
        return out


def started_steps(home: Path, run_id: str) -> list[str]:
    from dagster import DagsterEventType

    with _instance(home) as instance:
        return [e.step_key for e in instance.all_logs(run_id, of_type=DagsterEventType.STEP_START)]


_REFERENCE: dict = {}


def start_reference(base: Path) -> None:
    """Start the uninterrupted reference run of ``UP_TO_GRPO`` with ``SMALL`` in the background, with its own
    loopback LLM server (once per process: several test modules compare against it, and it can run beside
    a chain of killed runs without mixing their LLM request counts)."""
    if "child" not in _REFERENCE:
        from tests.fake_openai_server import FakeOpenAIServer

        server = FakeOpenAIServer(latency_s=0.02).__enter__()
        _REFERENCE["server"] = server
        _REFERENCE["child"] = ChildRun(make_home(base / "reference"), server.base_url)


def reference_run(base: Path) -> dict:
    """The reference run's {"home", "summary", "tables", "requests"}, waiting for it; fails with its log."""
    start_reference(base)
    if "summary" not in _REFERENCE:
        child, server = _REFERENCE["child"], _REFERENCE["server"]
        try:
            summary = child.wait(timeout=900)
        finally:
            server.__exit__(None, None, None)
        if not summary or not summary["success"]:
            raise AssertionError(f"reference run failed: {summary and summary['failures']}\n{child.tail()}")
        _REFERENCE.update(home=child.home, summary=summary, tables=read_tables(child.home / "warehouse.duckdb"),
                          requests=len(server.requests))
    return _REFERENCE

if __name__ == "__main__":
    sys.exit(_child())
