"""Concurrent writers on one warehouse: two Dagster runs of the same asset, two processes and two threads
replacing the same tables. Afterwards the DuckDB file opens, every table is complete and comes from exactly
one writer (never a mix)."""

import json
import subprocess
import sys
import threading
import time

import duckdb
import pandas as pd
import pytest

from tests import fault_runner as fr
from tests.fake_openai_server import FakeOpenAIServer
from warehouse import connection, replace_tables


def _writer_frame(writer: int, rows: int) -> pd.DataFrame:
    return pd.DataFrame({"writer": [writer] * rows, "i": range(rows)})


def _assert_one_complete_writer(db_path, sizes: dict[int, int]) -> int:
    """Tables t and u hold exactly one writer's complete frame, the same writer in both; returns it."""
    with duckdb.connect(str(db_path), read_only=True) as con:
        names = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert names == {"t", "u"}, f"unexpected tables (leftover staging?): {names}"
        found = {}
        for name in ("t", "u"):
            groups = con.execute(f"SELECT writer, count(*), count(DISTINCT i) FROM {name} GROUP BY writer").fetchall()
            assert len(groups) == 1, f"{name} mixes writers: {groups}"
            writer, n, distinct = groups[0]
            assert n == distinct == sizes[writer], f"{name}: writer {writer} has {n} rows, expected {sizes[writer]}"
            found[name] = writer
    assert found["t"] == found["u"], f"t and u come from different writers: {found}"
    return found["t"]


def _run_threads(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)


def test_threads_replacing_the_same_tables_are_serialised(tmp_path):
    db = tmp_path / "w.duckdb"
    sizes = {0: 1500, 1: 2500}
    errors: list[str] = []
    barrier = threading.Barrier(2)

    def write(writer: int) -> None:
        barrier.wait()
        for _ in range(15):
            # connections of one process share the database; opened and closed the way the warehouse does
            # (raw duckdb.connect/close from two threads hit a DuckDB race: see warehouse.OPEN_CLOSE_LOCK)
            try:
                with connection(db) as con:
                    frame = _writer_frame(writer, sizes[writer])
                    replace_tables(con, {"t": frame, "u": frame})
            except Exception as exc:  # collected: the assertion below names every failure
                errors.append(f"writer {writer}: {type(exc).__name__}: {exc}")

    _run_threads([threading.Thread(target=write, args=(w,)) for w in sizes])
    assert errors == []
    _assert_one_complete_writer(db, sizes)


def test_threads_writing_through_the_warehouse_resource(tmp_path):
    """The same race through the Dagster resource (each call opens and closes its own connection), with a
    reader thread in between: before the open/close lock, 1 run in 3 failed with 'pandas_scan does not exist'."""
    from digr_dagster.resources.warehouse import Warehouse

    db = tmp_path / "w.duckdb"
    sizes = {0: 1200, 1: 2200}
    errors: list[str] = []
    barrier = threading.Barrier(3)

    def write(writer: int) -> None:
        barrier.wait()
        for _ in range(12):
            try:
                frame = _writer_frame(writer, sizes[writer])
                Warehouse(database=str(db)).replace({"t": frame, "u": frame})
            except Exception as exc:  # collected: the assertion below names every failure
                errors.append(f"writer {writer}: {type(exc).__name__}: {exc}")

    def read() -> None:
        barrier.wait()
        for _ in range(24):
            try:
                if Warehouse(database=str(db)).exists("t"):
                    Warehouse(database=str(db)).read("t")
            except Exception as exc:
                errors.append(f"reader: {type(exc).__name__}: {exc}")

    _run_threads([threading.Thread(target=write, args=(w,)) for w in sizes] + [threading.Thread(target=read)])
    assert errors == []
    _assert_one_complete_writer(db, sizes)


_PROCESS_WRITER = """
import sys, time
import pandas as pd
from digr_dagster.resources.warehouse import Warehouse
db, writer, rows, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
frame = pd.DataFrame({"writer": [writer] * rows, "i": range(rows)})
wh = Warehouse(database=db)
while time.time() < float(sys.argv[5]):
    time.sleep(0.01)
for _ in range(rounds):
    wh.replace({"t": frame, "u": frame})
print("done", writer)
"""


@pytest.mark.slow
def test_two_processes_replacing_the_same_tables(tmp_path):
    """The production writer (Warehouse resource: retries while the other process holds the file lock)."""
    db = tmp_path / "w.duckdb"
    sizes = {0: 20_000, 1: 30_000}
    start_at = time.time() + 8  # both children import first, then write at the same moment
    procs = [subprocess.Popen([sys.executable, "-c", _PROCESS_WRITER, str(db), str(w), str(n), "10", str(start_at)],
                              cwd=fr.ROOT, env=fr.child_env(tmp_path), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for w, n in sizes.items()]
    outputs = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert out.startswith("done")
    _assert_one_complete_writer(db, sizes)


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer() as srv:
        yield srv


def _step_window(home, run_id: str, step: str) -> tuple[float, float]:
    from dagster import DagsterEventType

    with fr._instance(home) as instance:
        start = [e.timestamp for e in instance.all_logs(run_id, of_type=DagsterEventType.STEP_START)
                 if e.step_key == step]
        end = [e.timestamp for e in instance.all_logs(run_id, of_type=DagsterEventType.STEP_SUCCESS)
               if e.step_key == step]
    assert start and end, f"run {run_id} has no start/success of {step}"
    return start[0], end[0]


def _engine_messages(home, run_id: str) -> str:
    from dagster import DagsterEventType

    with fr._instance(home) as instance:
        return "\n".join(e.message or "" for e in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT))


@pytest.mark.slow
def test_two_runs_materialising_interaction_splits_at_once(server, tmp_path):
    """Two Dagster runs, one DAGSTER_HOME and one DuckDB file: the ``warehouse`` pool (limit 1) runs the two
    steps one after the other, and the table is the complete output of the run that wrote last."""
    home = fr.make_home(tmp_path / "home")
    source = {"ingest_source": fr.SMALL["ingest_source"]}
    ingest = fr.ChildRun(home, server.base_url, select=["items", "raw_interactions"], config=source)
    summary = ingest.wait()
    assert summary and summary["success"], ingest.tail()

    configs = {5: {"interaction_splits": {"config": {"k_core": 5}}},
               3: {"interaction_splits": {"config": {"k_core": 3}}}}
    children = {k: fr.ChildRun(home, server.base_url, select=["interaction_splits"], config=c)
                for k, c in configs.items()}
    results = {k: c.wait(timeout=300) for k, c in children.items()}
    for k, res in results.items():
        assert res and res["success"], (res and res["failures"], children[k].tail())
    rows = {k: res["metadata"]["interaction_splits"]["dagster/row_count"] for k, res in results.items()}
    assert rows[5] < rows[3]  # the two runs write distinguishable tables

    windows = {k: _step_window(home, res["run_id"], "interaction_splits") for k, res in results.items()}
    first, second = sorted(windows, key=lambda k: windows[k][0])
    assert windows[first][1] <= windows[second][0], f"the two steps overlapped: {windows}"
    # they did contend: the later one waited for the pool slot rather than merely starting later
    assert "blocked by limit for pool warehouse" in _engine_messages(home, results[second]["run_id"])

    tables = fr.read_tables(home / "warehouse.duckdb")
    assert fr.warehouse_problems(tables) == []
    splits = tables["interaction_splits"]
    assert len(splits) == rows[second], f"table has {len(splits)} rows; runs wrote {rows}, last was k_core={second}"
    # exactly the last writer's table: its k-core holds on every user and item
    assert splits.groupby("user_id").size().min() >= second
    assert json.dumps(sorted(fr.run_statuses(home).values())) == json.dumps(["SUCCESS"] * 3)
