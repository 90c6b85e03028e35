"""`digr run` (any job with run config files) and `digr recover` (runs of killed processes, whoever started them).

Against a real Dagster instance (SQLite, pools limited to 1 as deploy/dagster.yaml) and a real MLflow SQLite
store in a temp DIGR_HOME. `digr run` goes through a fresh `python -m digr_dagster.cli` process, as a user runs
it (the code location's resources take their paths from the environment when it is imported). The killed run
is started with Dagster's own CLI (`dagster asset materialize`), not through digr: it has no digr tag, so
`digr recover` can only go by what Dagster itself records.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from digr_dagster.cli import main
from digr_dagster.recovery import HOST_TAG, PID_TAG, pid_alive, recover
from tests import fault_runner as fr
from tests.fake_openai_server import FakeOpenAIServer
from tests.test_cli import _dead_pid, tiny_job

ROOT = Path(__file__).resolve().parents[1]
# merged over deploy/demo_run_config.yaml: fewer users, and a 2-core split (the override must win)
SMALL = "ops:\n  ingest_source:\n    config: {n_users: 120, seed: 3}\n  interaction_splits:\n    config: {k_core: 2}\n"
INGESTION = "items,raw_interactions,interaction_splits"


def _digr(home: Path, *args: str, timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "digr_dagster.cli", *args], cwd=ROOT, env=fr.child_env(home),
                          capture_output=True, text=True, timeout=timeout)


def _main(*args: str) -> tuple[int, str]:
    """``digr ARGS`` in this process (recover imports no code location); (exit code, stdout + stderr)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(list(args))
    return code, out.getvalue()


def _claims(home: Path) -> list[tuple[str, str]]:
    with fr._instance(home) as instance:
        info = instance.event_log_storage.get_concurrency_info("warehouse")
        return sorted((s.run_id, s.step_key) for s in info.claimed_slots)


# --------------------------------------------------------------------------- digr run: refusals


def test_run_with_an_unknown_config_key_fails_naming_it_and_materialises_nothing(digr_env, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ops:\n  interaction_splits:\n    config: {max_history: 20}\n")  # removed key (README)
    code, out = _main("run", "ingest_new_files", "--config", str(bad))
    assert code == 2
    assert "unknown key 'max_history'" in out and "root:ops:interaction_splits:config" in out
    assert "Traceback" not in out
    assert not (digr_env / "warehouse.duckdb").exists()
    assert fr.run_statuses(digr_env) == {}  # refused before a run was created


def test_run_refuses_an_unknown_job_or_asset_listing_what_exists(digr_env):
    code, out = _main("run", "nightly")
    assert code == 2 and "unknown job 'nightly'" in out
    assert "full_study, ingest_new_files, nightly_retrain" in out
    code, out = _main("run", "ingest_new_files", "--select", "items,semantic_ids")
    assert code == 2 and "no asset semantic_ids" in out and "interaction_splits, items, raw_interactions" in out
    code, out = _main("run", "ingest_new_files", "--select", "items")  # one op makes items and raw_interactions
    assert code == 2 and "made together with raw_interactions" in out
    code, out = _main("run", "ingest_new_files", "--config", str(digr_env / "missing.yaml"))
    assert code == 2 and "missing.yaml" in out
    assert fr.run_statuses(digr_env) == {}


# --------------------------------------------------------------------------- recover: liveness rules



def _run(instance, status, *, pid: int | None = None, at: float | None = None, tags: dict | None = None):
    """A run as Dagster records one: ``pid`` wrote its worker's "Started process for run" event at ``at``."""
    from dagster._core.events import DagsterEvent, DagsterEventType, EngineEventData
    from dagster._core.events.log import EventLogEntry

    origin = None
    if status == dg.DagsterRunStatus.QUEUED:  # a queued run names the code location a daemon would launch it from
        from dagster._core.remote_origin import InProcessCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
        from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

        location = InProcessCodeLocationOrigin(LoadableTargetOrigin(python_file=__file__))
        origin = RemoteJobOrigin(RemoteRepositoryOrigin(location, "tests"), tiny_job.name)
    run = instance.create_run_for_job(tiny_job, status=status, tags=tags or {}, remote_job_origin=origin)
    if pid is not None:
        event = DagsterEvent(DagsterEventType.ENGINE_EVENT.value, run.job_name, pid=pid,
                             message=f"Started process for run (pid: {pid}).",
                             event_specific_data=EngineEventData.in_process(pid))
        instance.store_event(EventLogEntry(error_info=None, level=logging.DEBUG, user_message="", run_id=run.run_id,
                                           timestamp=time.time() if at is None else at, dagster_event=event))
    return run


def test_recover_releases_only_runs_whose_process_is_gone(digr_env):
    import mlflow

    S = dg.DagsterRunStatus
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    experiment = client.create_experiment("recover-test")
    later = subprocess.Popen(["sleep", "60"])  # started after the "reused" run recorded its pid
    try:
        with dg.DagsterInstance.get() as instance:
            storage = instance.event_log_storage
            storage.set_concurrency_slots("warehouse", 1)
            storage.set_concurrency_slots("other", 1)
            runs = {
                "dead": _run(instance, S.STARTED, pid=_dead_pid()),
                "alive": _run(instance, S.STARTED, pid=os.getpid()),
                "reused": _run(instance, S.STARTED, pid=later.pid, at=time.time() - 3600),
                "canceling": _run(instance, S.CANCELING, pid=_dead_pid()),
                "ended": _run(instance, S.CANCELED, pid=_dead_pid()),  # e.g. marked canceled in the UI
                "unknown": _run(instance, S.STARTED),  # no process recorded
                "queued": _run(instance, S.QUEUED),
                "remote": _run(instance, S.STARTED, tags={PID_TAG: str(_dead_pid()), HOST_TAG: "elsewhere"}),
            }
            ids = {k: r.run_id for k, r in runs.items()}
            assert storage.claim_concurrency_slot("warehouse", ids["dead"], "ingest_source").is_claimed
            assert storage.claim_concurrency_slot("other", ids["ended"], "noop").is_claimed
            mlflow_ids = {k: [client.create_run(experiment, tags={"dagster_run_id": ids[k]}).info.run_id
                              for _ in range(2)] for k in ("dead", "alive", "ended")}

            def status(key):
                return instance.get_run_by_id(ids[key]).status

            # a dry run says what it would do and changes nothing
            code, out = _main("recover", "--dry-run")
            assert code == 0 and f"[dry run] would have released run {ids['dead']}" in out
            assert status("dead") == S.STARTED and storage.get_concurrency_info("warehouse").claimed_slots

            report = recover(instance)
            assert set(report.released) == {ids["dead"], ids["reused"], ids["canceling"], ids["ended"]}
            assert [status(k) for k in ("dead", "reused", "canceling", "ended")] == [S.FAILURE, S.FAILURE,
                                                                                    S.CANCELED, S.CANCELED]
            assert [status(k) for k in ("alive", "unknown", "queued", "remote")] == [S.STARTED] * 2 + [
                S.QUEUED, S.STARTED]
            assert storage.get_concurrency_info("warehouse").claimed_slots == []
            assert storage.get_concurrency_info("other").claimed_slots == []
            left = {o.run_id: o.reason for o in report.left}
            assert "alive" in left[ids["alive"]] and "cannot tell" in left[ids["unknown"]]
            assert "host elsewhere" in left[ids["remote"]]

            def mlflow_status(key):
                return [client.get_run(r).info.status for r in mlflow_ids[key]]

            assert mlflow_status("dead") == mlflow_status("ended") == ["KILLED", "KILLED"]
            assert mlflow_status("alive") == ["RUNNING", "RUNNING"]

            # staleness: a started run without a checkable pid goes after the setting; a queued one never does
            report = recover(instance, stale_hours=0)
            assert set(report.released) == {ids["unknown"], ids["remote"]}
            assert status("queued") == S.QUEUED
            # --force: whatever cannot be checked; a live process still never
            code, out = _main("recover", "--force")
            assert code == 0 and f"released run {ids['queued']}" in out and status("queued") == S.CANCELED
            assert status("alive") == S.STARTED and mlflow_status("alive") == ["RUNNING", "RUNNING"]
            assert recover(instance, force=True).released == []
    finally:
        later.kill()
        later.wait()


def test_pid_alive_tells_zombies_and_reused_pids_from_live_processes():
    assert pid_alive(os.getpid(), seen_at=time.time())
    assert not pid_alive(os.getpid(), seen_at=0.0)  # this process started long after: the pid was reused
    assert not pid_alive(_dead_pid())
    zombie = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{zombie.pid}/stat").read_text().split(") ")[1][0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not pid_alive(zombie.pid)  # exited, not yet reaped
    zombie.wait()


# --------------------------------------------------------------------------- a run killed outside digr


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """digr run (ingestion) -> `dagster asset materialize` of item_interests, held inside the step (the LLM
    answers slowly) with the warehouse slot and its MLflow runs open -> `digr recover --force` while it lives ->
    SIGKILL -> `digr recover` -> a run that needs the warehouse slot."""
    home = fr.make_home(tmp_path_factory.mktemp("recover") / "digr")
    small = home / "small.yaml"
    small.write_text(SMALL)
    obs: dict = {"home": home}
    obs["ingest"] = _digr(home, "run", "full_study", "--config", "deploy/demo_run_config.yaml", "--config",
                          str(small), "--select", INGESTION)
    assert obs["ingest"].returncode == 0, obs["ingest"].stdout + obs["ingest"].stderr[-4000:]
    with FakeOpenAIServer(latency_s=120) as server, pytest.MonkeyPatch.context() as mp:
        miners = json.dumps([{"name": "loopback", "backend": "openai", "model": "fake-chat",
                              "base_url": server.base_url, "api_key_env": "DIGR_TEST_LLM_KEY", "n_descriptors": 2,
                              "max_retries": 0}])
        env = fr.child_env(home, {"DIGR_MINERS": miners})
        for key in ("DIGR_HOME", "DAGSTER_HOME", "MLFLOW_TRACKING_URI"):
            mp.setenv(key, env[key])
        mp.delenv("DIGR_WAREHOUSE", raising=False)
        log = home / "foreign.log"
        with open(log, "wb") as fh:
            foreign = subprocess.Popen(
                [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "digr_dagster.definitions",
                 "--select", "item_captions,item_interests"],
                cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while not server.requests:  # mining has started: inside the step, MLflow runs open, slot held
                if foreign.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the Dagster CLI run ended or stalled before mining:\n{log.read_text()[-4000:]}")
                time.sleep(0.1)
            obs["run_id"] = fr.latest_run_id(home)
            obs["live"] = _main("recover", "--force")
            obs["live_status"] = fr.run_statuses(home)[obs["run_id"]]
            obs["live_claims"] = _claims(home)
            obs["live_mlflow"] = fr.mlflow_runs(home)
        finally:
            os.killpg(foreign.pid, signal.SIGKILL)  # the run worker and its step process, as kill -9 or the OOM killer
            foreign.wait(timeout=30)
        obs["killed_claims"] = _claims(home)
        obs["recover"] = _main("recover")
        obs["status"] = fr.run_statuses(home)[obs["run_id"]]
        obs["claims"] = _claims(home)
        obs["mlflow"] = fr.mlflow_runs(home)
        obs["again"] = _main("recover")
    started = time.monotonic()
    obs["next"] = _digr(home, "run", "full_study", "--select", "item_captions", timeout=120)
    obs["next_s"] = time.monotonic() - started
    return obs


@pytest.mark.slow  # the scenario takes ~50 s on 2 shared cores
def test_run_materialises_a_selection_with_merged_config_files(scenario):
    out = scenario["ingest"].stdout
    assert "of job full_study: SUCCESS" in out and f"materialised: {', '.join(sorted(INGESTION.split(',')))}" in out
    home = scenario["home"]
    with fr._instance(home) as instance:
        run = [r for r in instance.get_runs() if r.job_name == "full_study"][-1]  # the oldest: the ingestion
        assert run.tags[PID_TAG] and run.tags[HOST_TAG]  # digr's runs say which process runs them
        assert run.run_config["ops"]["ingest_source"]["config"] == {"kind": "demo", "n_users": 120,
                                                                   "n_motivations": 6, "seed": 3}
    meta = fr.run_materializations(home, run.run_id)
    assert meta["interaction_splits"]["k_core"] == 2  # the later file won
    assert set(meta) == set(INGESTION.split(","))


@pytest.mark.slow  # the scenario takes ~50 s on 2 shared cores
def test_a_live_run_started_outside_digr_is_never_touched(scenario):
    code, out = scenario["live"]
    run_id = scenario["run_id"]
    assert code == 0 and f"left run {run_id}" in out and "alive" in out and "released run" not in out
    assert scenario["live_status"] == "STARTED"
    assert (run_id, "item_interests") in scenario["live_claims"]
    mine = [r for r in scenario["live_mlflow"] if r["dagster_run_id"] == run_id]
    assert {r["name"] for r in mine} >= {"item_interests"} and {r["status"] for r in mine} == {"RUNNING"}


@pytest.mark.slow  # the scenario takes ~50 s on 2 shared cores
def test_a_run_killed_outside_digr_is_recovered(scenario):
    run_id = scenario["run_id"]
    assert scenario["killed_claims"] == [(run_id, "item_interests")]  # the kill left the slot taken
    code, out = scenario["recover"]
    assert code == 0 and f"released run {run_id} (__ASSET_JOB, STARTED -> FAILURE)" in out
    assert "freed pool slots warehouse:item_interests" in out and "MLflow runs marked KILLED" in out
    assert scenario["status"] == "FAILURE"
    assert scenario["claims"] == []
    mine = [r for r in scenario["mlflow"] if r["dagster_run_id"] == run_id]
    assert len(mine) >= 2 and {r["status"] for r in mine} == {"KILLED"}  # the Dagster run's and the asset's
    assert [r for r in scenario["mlflow"] if r["status"] == "RUNNING"] == []
    assert scenario["again"][1].startswith("nothing to recover")
    # the slot is free: a run that needs it proceeds
    nxt = scenario["next"]
    assert nxt.returncode == 0 and "materialised: item_captions" in nxt.stdout, nxt.stderr[-4000:]
    assert "released" not in nxt.stderr
