"""Recovering from killed runs: release the Dagster runs whose process is gone, whoever launched them.

A run killed hard (SIGKILL, OOM killer, power loss, a closed terminal) never reports its end: it stays
STARTED in the instance, keeps its ``warehouse`` pool slot (so every later run waits for it forever) and its
MLflow runs stay RUNNING. ``recover`` finds such runs from what the instance records, and only releases a run
when it can tell that its process is gone:

- the executing pids of a run come from the instance: every event carries the pid of the process that
  wrote it; the run worker's ``RUN_START`` / pid engine events and every step event name the processes that
  executed the run (a launcher's or webserver's events, e.g. ``RUN_STARTING``, do not count), plus the
  ``digr/pid`` tag of runs ``digr`` started;
- those pids are checked when they are on this host (the run's ``digr/host`` tag names this host, or, without
  that tag, the run storage is a local SQLite file, which only processes of this host write): the run is
  alive while any of them is alive; a pid now owned by a process started after the run recorded it (pid
  reuse) or a zombie does not count as alive;
- a run without checkable pids (its worker never wrote an event, or it ran on another host) is released
  only with ``force``, or, when it was started (STARTING/STARTED/CANCELING), after ``stale_after_s`` without
  any sign of life. A run launcher that checks its workers (k8s, docker, ...) or a live queued-run daemon
  (for QUEUED runs) vetoes even that.

Released runs are marked FAILURE (STARTING/STARTED) or CANCELED (CANCELING, and QUEUED/NOT_STARTED runs that
never got a process) through the instance API; their pool slots and pending steps are freed; their MLflow
runs still RUNNING (found by the ``dagster_run_id`` tag every MLflow run of a Dagster run carries, parent and
per-asset children alike, see ``resources/mlflow_tracking.py``) are marked KILLED. Runs that already ended but
still hold a pool slot or RUNNING MLflow runs (e.g. marked canceled in the UI after their process died) get
the same clean-up under the same liveness rule.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field

PID_TAG = "digr/pid"
HOST_TAG = "digr/host"
#: the tag dagster-mlflow and ``MlflowTracking.asset_run`` put on every MLflow run of a Dagster run
MLFLOW_RUN_TAG = "dagster_run_id"
STALE_ENV = "DIGR_STALE_RUN_HOURS"
DEFAULT_STALE_HOURS = 24.0
#: a pid counts as reused when its process started this many seconds after the run recorded it (clock slack:
#: /proc start times are derived from the boot time, which the kernel reports in whole seconds)
PID_REUSE_SLACK_S = 5.0
#: a queued-run daemon with a heartbeat younger than this is taken as alive
DAEMON_FRESH_S = 120.0


def run_tags() -> dict[str, str]:
    """Tags that make a run's process checkable by ``recover``: the pid and host of the current process."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def stale_after_s(hours: float | None = None) -> float:
    """Seconds without a sign of life after which a started run with no checkable pid counts as gone:
    ``hours``, else ``$DIGR_STALE_RUN_HOURS``, else 24 h."""
    if hours is None:
        raw = os.environ.get(STALE_ENV, "")
        try:
            hours = float(raw) if raw.strip() else DEFAULT_STALE_HOURS
        except ValueError as exc:
            raise ValueError(f"{STALE_ENV}={raw!r} is not a number of hours") from exc
    if hours < 0:
        raise ValueError(f"the staleness must be >= 0 hours, got {hours}")
    return hours * 3600.0


# --------------------------------------------------------------------------- processes


def _boot_time() -> float | None:
    try:
        with open("/proc/stat") as fh:
            for line in fh:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def _proc_stat(pid: int) -> tuple[str, float | None] | None:
    """(state, start time as epoch seconds) of ``pid`` from /proc (Linux); None where /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            raw = fh.read()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    state, start_ticks = fields[0], int(fields[19])
    boot = _boot_time()
    start = boot + start_ticks / os.sysconf("SC_CLK_TCK") if boot is not None else None
    return state, start


def pid_alive(pid: int, seen_at: float | None = None) -> bool:
    """Whether the process that wrote ``pid`` into the instance at ``seen_at`` (epoch s) still runs.

    Not alive: no such process; a zombie (exited, not yet reaped); a process started more than
    ``PID_REUSE_SLACK_S`` after ``seen_at`` (the pid was reused by a later process). A process of another user
    counts as alive.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _proc_stat(pid)
    if stat is None:
        return True
    state, start = stat
    if state in ("Z", "X", "x"):
        return False
    return not (seen_at is not None and start is not None and start > seen_at + PID_REUSE_SLACK_S)


# --------------------------------------------------------------------------- liveness


@dataclass(frozen=True)
class Liveness:
    """``gone``: True when the run's process is gone, False when alive, None when it cannot be told."""

    gone: bool | None
    reason: str


@dataclass
class _RunFacts:
    pids: dict[int, float]  # executing pid -> first time the instance recorded it
    last_sign_of_life: float


def _ts(value) -> float | None:
    if value is None:
        return None
    return value if isinstance(value, int | float) else value.timestamp()


def run_facts(instance, record) -> _RunFacts:
    """The executing pids of a run and the time of its latest event, from the instance."""
    from dagster import DagsterEventType

    run = record.dagster_run
    created = _ts(record.create_timestamp) or 0.0
    times = [t for t in (created, _ts(record.update_timestamp), _ts(record.start_time), _ts(record.end_time)) if t]
    pids: dict[int, float] = {}
    tagged = run.tags.get(PID_TAG, "")
    if tagged.isdigit():
        pids[int(tagged)] = created
    for entry in instance.all_logs(run.run_id):
        times.append(entry.timestamp)
        event = entry.dagster_event
        if event is None or event.pid is None:
            continue
        executing = event.event_type == DagsterEventType.RUN_START or event.step_key is not None
        if event.event_type == DagsterEventType.ENGINE_EVENT and event.engine_event_data is not None:
            # "Started process for run (pid: N)", "Executing steps in process (pid: N)": a worker naming itself
            named = event.engine_event_data.metadata.get("pid")
            executing = executing or (named is not None and str(getattr(named, "value", named)) == str(event.pid))
        if executing:
            pids[event.pid] = min(pids.get(event.pid, entry.timestamp), entry.timestamp)
    return _RunFacts(pids, max(times))


def _pids_checkable(instance, run) -> tuple[bool, str]:
    """Whether the run's pids are pids of this host, and where they are from (for messages)."""
    host = run.tags.get(HOST_TAG)
    if host is not None:
        return host == socket.gethostname(), f"host {host}"
    from dagster._core.storage.runs.sqlite import SqliteRunStorage

    if isinstance(instance.run_storage, SqliteRunStorage):
        return True, "this host (local SQLite instance)"
    return False, "an unknown host (shared run storage)"


def _launcher_says_running(instance, run) -> bool:
    try:
        launcher = instance.run_launcher
        if not launcher.supports_check_run_worker_health:
            return False
        from dagster._core.launcher import WorkerStatus

        return launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
    except Exception:  # a launcher that cannot answer gives no evidence either way
        return False


def _queue_daemon_alive(instance, now: float) -> bool:
    try:
        beat = instance.get_daemon_heartbeats().get("QUEUED_RUN_COORDINATOR")
    except Exception:
        return False
    return beat is not None and now - beat.timestamp < DAEMON_FRESH_S


def _processes(pids: list[int]) -> str:
    return f"process {pids[0]} is" if len(pids) == 1 else f"processes {', '.join(map(str, pids))} are"


def liveness(instance, record, *, force: bool = False, stale_s: float | None = None,
             now: float | None = None) -> Liveness:
    """Whether the process of the run in ``record`` (a RunRecord) is gone; see the module docstring."""
    from dagster import DagsterRunStatus

    now = time.time() if now is None else now
    run = record.dagster_run
    facts = run_facts(instance, record)
    checkable, where = _pids_checkable(instance, run)
    pids = sorted(facts.pids)
    if facts.pids and checkable:
        alive = [p for p in pids if pid_alive(p, facts.pids[p])]
        if alive:
            return Liveness(False, f"{_processes(alive)} alive")
        return Liveness(True, f"{_processes(pids)} gone")
    if run.status in (DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING) \
            and _launcher_says_running(instance, run):
        return Liveness(False, "the run launcher reports its worker running")
    if run.status == DagsterRunStatus.QUEUED and _queue_daemon_alive(instance, now):
        return Liveness(False, "queued, and the queued-run daemon is running")
    why = f"pid {', '.join(map(str, pids))} on {where}" if pids else "no process recorded"
    idle = now - facts.last_sign_of_life
    if force:
        return Liveness(True, f"{why}; released by --force")
    waits = run.status in (DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED)
    if stale_s is not None and not waits and idle > stale_s:
        return Liveness(True, f"{why}; no sign of life for {idle / 3600:.1f} h")
    return Liveness(None, f"{why}, last sign of life {idle:.0f} s ago: cannot tell whether it is alive "
                          "(`digr recover --force` releases it)")


# --------------------------------------------------------------------------- recovery


@dataclass
class RunOutcome:
    run_id: str
    job_name: str
    status: str  # before recovery
    reason: str
    new_status: str | None = None  # None: status left as it was
    slots: list[str] = field(default_factory=list)  # "pool:step" held or pending
    mlflow_killed: list[str] = field(default_factory=list)  # "run id (name)"
    released: bool = False

    def line(self) -> str:
        if not self.released:
            held = f"; holds {', '.join(self.slots)}" if self.slots else ""
            return f"left run {self.run_id} ({self.job_name}, {self.status}): {self.reason}{held}"
        parts = [f"released run {self.run_id} ({self.job_name}, {self.status}"
                 + (f" -> {self.new_status}" if self.new_status else "") + f"): {self.reason}"]
        if self.slots:
            parts.append(f"freed pool slots {', '.join(self.slots)}")
        if self.mlflow_killed:
            parts.append(f"MLflow runs marked KILLED: {', '.join(self.mlflow_killed)}")
        return "; ".join(parts)


@dataclass
class RecoveryReport:
    outcomes: list[RunOutcome] = field(default_factory=list)
    mlflow_error: str | None = None
    dry_run: bool = False

    @property
    def released(self) -> list[str]:
        return [o.run_id for o in self.outcomes if o.released]

    @property
    def left(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if not o.released]

    def lines(self) -> list[str]:
        lines = [("[dry run] would have " if self.dry_run and o.released else "") + o.line() for o in self.outcomes]
        if self.mlflow_error:
            lines.append(f"could not mark MLflow runs KILLED: {self.mlflow_error}")
        return lines


def _slot_holders(instance) -> dict[str, list[str]]:
    """{run id: ["pool:step (pending)", ...]} for every run holding or waiting for a pool slot."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return {}
    out: dict[str, list[str]] = {}
    for key in sorted(storage.get_concurrency_keys()):
        info = storage.get_concurrency_info(key)
        for slot in info.claimed_slots:
            out.setdefault(slot.run_id, []).append(f"{key}:{slot.step_key}")
        for step in info.pending_steps:
            if step.assigned_timestamp is None:  # an assigned step is the claimed slot above
                out.setdefault(step.run_id, []).append(f"{key}:{step.step_key} (pending)")
    for run_id in storage.get_concurrency_run_ids():
        out.setdefault(run_id, [])
    return out


def _mlflow_client(uri: str):
    """A client for ``uri``, or None when it is a SQLite store that does not exist (nothing can be RUNNING)."""
    import mlflow

    from digr_dagster.resources.mlflow_tracking import check_tracking_store

    if uri.startswith("sqlite:///") and not os.path.exists(uri[len("sqlite:///"):]):
        return None
    check_tracking_store(uri)  # a dead http server fails in seconds, not after minutes of retries
    return mlflow.MlflowClient(uri)


def _running_mlflow_runs(client) -> dict[str, list]:
    """{Dagster run id: [MLflow runs still RUNNING tagged with it]} over every experiment."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    out: dict[str, list] = {}
    token = None
    while experiments:
        page = client.search_runs(experiments, "attributes.status = 'RUNNING'", max_results=1000, page_token=token)
        for run in page:
            dagster_run_id = run.data.tags.get(MLFLOW_RUN_TAG)
            if dagster_run_id:
                out.setdefault(dagster_run_id, []).append(run)
        token = page.token
        if not token:
            break
    return out


def recover(instance, *, force: bool = False, stale_hours: float | None = None, dry_run: bool = False,
            tracking_uri: str | None = None) -> RecoveryReport:
    """Release every run of ``instance`` whose process is gone; never a run whose process is alive.

    ``force`` also releases runs whose process cannot be checked; ``stale_hours`` (default
    ``$DIGR_STALE_RUN_HOURS`` or 24) releases started runs without a checkable pid after that long without any
    event; ``dry_run`` reports without changing anything.
    """
    from dagster import DagsterRunStatus, RunsFilter

    from digr_dagster import settings

    stale_s = stale_after_s(stale_hours)
    report = RecoveryReport(dry_run=dry_run)
    in_flight = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.QUEUED, DagsterRunStatus.STARTING,
                 DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
    records = {r.dagster_run.run_id: r for r in instance.get_run_records(RunsFilter(statuses=in_flight))}
    holders = _slot_holders(instance)
    mlflow_runs: dict[str, list] = {}
    client = None
    try:
        client = _mlflow_client(tracking_uri or settings.mlflow_tracking_uri())
        mlflow_runs = _running_mlflow_runs(client) if client is not None else {}
    except Exception as exc:  # the Dagster side is recovered all the same; say why MLflow was not tidied
        report.mlflow_error = f"{type(exc).__name__}: {exc}"
    others = sorted((set(holders) | set(mlflow_runs)) - set(records))
    if others:
        records.update({r.dagster_run.run_id: r for r in instance.get_run_records(RunsFilter(run_ids=others))})
    now = time.time()
    for run_id, record in sorted(records.items(), key=lambda kv: _ts(kv[1].create_timestamp) or 0.0):
        run = record.dagster_run
        finished = run.status not in in_flight
        if run.status == DagsterRunStatus.SUSPENDED:
            continue
        if finished and run_id not in holders and run_id not in mlflow_runs:
            continue
        verdict = liveness(instance, record, force=force, stale_s=stale_s, now=now)
        outcome = RunOutcome(run_id, run.job_name, run.status.value, verdict.reason, slots=holders.get(run_id, []))
        report.outcomes.append(outcome)
        if not verdict.gone:
            if finished and not outcome.slots:
                report.outcomes.pop()  # an ended run's RUNNING MLflow runs with a live process: nothing to say
            continue
        outcome.released = True
        if not finished:
            started = run.status in (DagsterRunStatus.STARTING, DagsterRunStatus.STARTED)
            outcome.new_status = (DagsterRunStatus.FAILURE if started else DagsterRunStatus.CANCELED).value
        for mlflow_run in mlflow_runs.get(run_id, []):
            outcome.mlflow_killed.append(f"{mlflow_run.info.run_id} ({mlflow_run.info.run_name})")
        if dry_run:
            continue
        message = f"released by digr recover: {verdict.reason}"
        if outcome.new_status == DagsterRunStatus.FAILURE.value:
            instance.report_run_failed(run, message)
        elif outcome.new_status == DagsterRunStatus.CANCELED.value:
            instance.report_run_canceled(run, message)
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(run_id)
        try:
            for mlflow_run in mlflow_runs.get(run_id, []):
                client.set_terminated(mlflow_run.info.run_id, status="KILLED")
        except Exception as exc:
            outcome.mlflow_killed = []
            report.mlflow_error = f"{type(exc).__name__}: {exc}"
    return report


def release_orphaned_runs(instance, **kwargs) -> list[str]:
    """Run ids released by ``recover`` (what ``digr`` does before each run); prints what it released."""
    import sys

    report = recover(instance, **kwargs)
    for line in report.lines():
        if not line.startswith("left") or "holds" in line:  # a left run that holds a slot will block this one
            print(line, file=sys.stderr)
    return report.released
