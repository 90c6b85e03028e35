"""The object-store warehouse (Parquet on S3, atomic manifest switch) against a real S3 server (moto's).

What must hold, as for the DuckDB file: the tables read back as written (the project's dtypes, the DuckDB
backend's pandas conversion), a refused or failed write changes nothing, and concurrent writers on different
machines (threads with separate caches, separate processes) lose no table and mix no table. Plus what is
specific to object storage: the commit log stays a single chain, a killed writer leaves only unreferenced
objects, vacuum deletes exactly those, and the newest manifest is found among many.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.servers import s3_server  # noqa: F401 - session fixture: moto's S3 server on a loopback port
from warehouse import DuckDBWarehouse, ObjectStoreWarehouse, TableWriteError, open_warehouse
from warehouse.object_store import parse_url

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def s3(s3_server, monkeypatch):  # noqa: F811 - the imported fixture
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture
def url(s3):
    return f"s3://{s3.create_bucket()}/warehouse"


def _store(url: str, tmp_path: Path, cache: str = "cache", **kwargs) -> ObjectStoreWarehouse:
    """A warehouse client with its own part cache: two of them behave like two machines."""
    return ObjectStoreWarehouse(url, cache_dir=tmp_path / cache, **kwargs)


def _keys(s3, url: str, under: str) -> set[str]:
    bucket, prefix = parse_url(url)
    client = s3.client()
    keys, token = set(), None
    while True:
        kwargs = {"Bucket": bucket, "Prefix": f"{prefix}/{under}"}
        if token:
            kwargs["ContinuationToken"] = token
        page = client.list_objects_v2(**kwargs)
        keys.update(o["Key"] for o in page.get("Contents", []))
        if not page.get("IsTruncated"):
            return keys
        token = page["NextContinuationToken"]


def _project_frame(n: int, offset: int = 0) -> pd.DataFrame:
    """The column kinds the pipeline stores: ids as strings, ints, floats, embeddings, lists, timestamps."""
    rng = np.random.default_rng(offset)
    i = np.arange(offset, offset + n)
    return pd.DataFrame({
        "item_id": [f"I{k:05d}" for k in i],
        "user_id": [f"U{k % 17}" for k in i],
        "position": i.astype("int64"),
        "rank": (i % 5).astype("int32"),
        "confidence": rng.random(n),
        "label": i % 2 == 0,
        "embedding": [rng.random(8).astype(np.float32) for _ in range(n)],
        "sid": [[int(k % 7), int(k % 11), int(k % 13)] for k in i],
        "timestamp": pd.to_datetime(1_500_000_000 + i * 3600, unit="s"),
        "created_at": pd.to_datetime(1_600_000_000 + i, unit="s", utc=True),
        "caption": [None if k % 3 == 0 else f"a photo of item {k}" for k in i],
    })


def _assert_frames_equal(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    assert a.dtypes.to_dict() == b.dtypes.to_dict()
    for col in a.columns:
        if a[col].dtype == object and len(a) and isinstance(a[col].iloc[0], np.ndarray | list):
            assert all(np.array_equal(x, y) for x, y in zip(a[col], b[col], strict=True)), col
            assert {type(x[0]) for x in a[col]} == {type(y[0]) for y in b[col]}, col
        else:
            pd.testing.assert_series_equal(a[col], b[col], check_names=False)


# ----------------------------------------------------------------------------------------- round trip


def test_round_trip_matches_the_duckdb_backend(url, s3, tmp_path):
    frame = _project_frame(500)
    chunks = [frame.iloc[i:i + 120] for i in range(0, 500, 120)]
    store = _store(url, tmp_path, part_rows=64, part_bytes=4000)
    assert store.replace({"items": frame, "chunked": iter(chunks)}) == {"items": 500, "chunked": 500}
    local = DuckDBWarehouse(tmp_path / "w.duckdb")
    local.replace({"items": frame, "chunked": iter(chunks)})

    other_machine = _store(url, tmp_path, cache="elsewhere")  # nothing cached: everything from S3
    for reader in (store, other_machine):
        for name in ("items", "chunked"):
            _assert_frames_equal(reader.read(name, order_by="rowid"), local.read(name, order_by="rowid"))
            _assert_frames_equal(reader.read(name), local.read(name))
    # the written values themselves, not only parity: strings, lists, float32 vectors, timestamps survive
    back = other_machine.read("chunked", order_by="position")
    assert back["item_id"].tolist() == frame["item_id"].tolist()
    assert back["embedding"].iloc[7].dtype == np.float32
    np.testing.assert_array_equal(back["embedding"].iloc[7], frame["embedding"].iloc[7])
    assert list(back["sid"].iloc[10]) == [3, 10, 10]
    assert (back["timestamp"] == frame["timestamp"]).all()
    assert back["caption"].isna().sum() == frame["caption"].isna().sum()

    parts = [k for k in _keys(s3, url, "tables/chunked/") if k.endswith(".parquet")]
    assert len(parts) > 3, "a large table must be written as several objects"
    entry = other_machine.newest_manifest().tables["chunked"]
    assert entry["rows"] == 500 and sum(p["rows"] for p in entry["parts"]) == 500
    assert dict(entry["schema"])["embedding"] == "FLOAT[]"


def test_order_by_sql_and_rowid_across_parts(url, tmp_path):
    store = _store(url, tmp_path, part_rows=3, part_bytes=1)
    values = [5, 3, 9, 1, 7, 2, 8]
    store.replace({"t": (pd.DataFrame({"x": [v]}) for v in values)})
    assert len(store.newest_manifest().tables["t"]["parts"]) > 2
    assert store.read("t")["x"].tolist() == values
    assert store.read("t", order_by="rowid")["x"].tolist() == values
    assert store.read("t", order_by="x DESC")["x"].tolist() == sorted(values, reverse=True)
    assert store.read("t", order_by="x % 2, rowid")["x"].tolist() == [2, 8, 5, 3, 9, 1, 7]
    assert list(store.read("t", order_by="x").columns) == ["x"]  # the write-order column stays hidden


# ---------------------------------------------------------------------------------------- all or nothing


class ContractError(Exception):
    pass


def test_refused_validation_keeps_every_table_and_uploads_nothing(url, s3, tmp_path):
    store = _store(url, tmp_path)
    store.replace({"a": pd.DataFrame({"x": [1]}), "b": pd.DataFrame({"y": ["old"]})})
    before = (store.newest_manifest(), _keys(s3, url, ""))
    seen = {}

    def refuse(con, staged):
        seen.update(staged)
        seen["rows"] = con.execute(f'SELECT count(*) FROM "{staged["b"]}"').fetchall()[0][0]
        seen["new"] = con.execute(f'SELECT y FROM "{staged["b"]}" ORDER BY y').fetchall()
        raise ContractError("b.y: 2 values outside the allowed set")

    with pytest.raises(ContractError, match="b.y: 2 values outside"):
        store.replace({"a": pd.DataFrame({"x": [7, 8]}), "b": pd.DataFrame({"y": ["bad", "worse"]})},
                      validate=refuse)
    assert seen == {"a": "a__staging", "b": "b__staging", "rows": 2, "new": [("bad",), ("worse",)]}
    fresh = _store(url, tmp_path, cache="fresh")
    assert fresh.newest_manifest() == before[0]
    assert fresh.read("a")["x"].tolist() == [1] and fresh.read("b")["y"].tolist() == ["old"]
    assert _keys(s3, url, "") == before[1], "a refused write must not upload anything"


def test_chunk_failure_mid_stream_keeps_the_previous_version(url, s3, tmp_path):
    store = _store(url, tmp_path)
    store.replace({"t": pd.DataFrame({"x": [42]}), "u": pd.DataFrame({"x": [1]})})
    before = _keys(s3, url, "")

    def chunks():
        yield pd.DataFrame({"x": [1, 2]})
        raise ValueError("line 3: broken input")

    with pytest.raises(ValueError, match="line 3: broken input"):
        store.replace({"u": pd.DataFrame({"x": [9]}), "t": chunks()})
    assert store.read("t")["x"].tolist() == [42] and store.read("u")["x"].tolist() == [1]
    assert _keys(s3, url, "") == before
    assert not list((tmp_path / "cache" / "_staging").iterdir()), "staging folders are removed after a failure"


def test_killed_writer_leaves_only_unreferenced_objects_and_vacuum_removes_them(url, s3, tmp_path):
    store = _store(url, tmp_path)
    store.replace({"a": pd.DataFrame({"x": [1, 2, 3]})})
    script = textwrap.dedent("""
        import sys
        import pandas as pd
        from warehouse import ObjectStoreWarehouse
        store = ObjectStoreWarehouse(sys.argv[1], cache_dir=sys.argv[2], part_rows=10, part_bytes=400)
        store.replace({"a": pd.DataFrame({"x": [0]}), "big": pd.DataFrame({"x": range(6_000)})})
        print("committed")
    """)
    child = subprocess.Popen([sys.executable, "-c", script, url, str(tmp_path / "child")], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    try:
        while not _keys(s3, url, "tables/big/"):  # the upload has begun: kill it in the middle
            assert child.poll() is None, f"writer ended before it was killed: {child.communicate()}"
            assert time.monotonic() < deadline, "the writer never started uploading"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        out, _ = child.communicate(timeout=60)
    assert "committed" not in out
    time.sleep(0.5)  # a request the server had fully received when the writer died lands now

    reader = _store(url, tmp_path, cache="reader")
    assert reader.table_names() == ["a"] and reader.newest_manifest().sequence == 1
    assert reader.read("a")["x"].tolist() == [1, 2, 3]
    orphans = _keys(s3, url, "tables/big/") | (_keys(s3, url, "tables/a/") - {
        f"{parse_url(url)[1]}/{p['key']}" for p in reader.newest_manifest().tables["a"]["parts"]})
    assert orphans

    assert reader.vacuum(older_than=timedelta(hours=1)).objects_deleted == 0  # could be a live writer's
    report = reader.vacuum(older_than=timedelta(0))
    assert report.objects_deleted == len(orphans) and report.manifests_deleted == 0
    # the killed writer's version of big (and of a, when its part was stored before the kill)
    assert report.versions_deleted == len({k.rsplit("/", 1)[0] for k in orphans}) >= 1
    assert not _keys(s3, url, "tables/big/") and _keys(s3, url, "tables/a/")
    assert _store(url, tmp_path, cache="after").read("a")["x"].tolist() == [1, 2, 3]


def test_vacuum_keeps_what_readers_may_use_and_the_log_continues(url, s3, tmp_path):
    store = _store(url, tmp_path)
    for value in range(5):
        store.replace({"t": pd.DataFrame({"x": [value]}), f"only_{value}": pd.DataFrame({"x": [value]})})
    assert len(_keys(s3, url, "_manifests/")) == 5
    kept = store.vacuum(older_than=timedelta(hours=1), keep_manifests=1)  # all were newest within the hour
    assert kept.manifests_deleted == 0 and kept.objects_deleted == 0
    report = store.vacuum(older_than=timedelta(0), keep_manifests=2)
    assert report.manifests_deleted == 3 and report.versions_deleted == 3  # t's versions 0, 1, 2
    assert len(_keys(s3, url, "_manifests/")) == 2
    fresh = _store(url, tmp_path, cache="fresh")
    assert fresh.read("t")["x"].tolist() == [4]
    assert [fresh.read(f"only_{v}")["x"].tolist() for v in range(5)] == [[v] for v in range(5)]
    fresh.replace({"t": pd.DataFrame({"x": [5]})})
    assert fresh.newest_manifest().sequence == 6 and store.read("t")["x"].tolist() == [5]
    with pytest.raises(ValueError, match="older_than must not be negative"):
        store.vacuum(older_than=timedelta(seconds=-1))
    with pytest.raises(ValueError, match="keep_manifests must be at least 1"):
        store.vacuum(keep_manifests=0)


# ------------------------------------------------------------------------------------------ bad input


def test_bad_input_gets_a_clear_error(url, s3, tmp_path, monkeypatch):
    store = _store(url, tmp_path)
    with pytest.raises(ValueError, match="invalid table name 't; DROP TABLE x'"):
        store.replace({"t; DROP TABLE x": pd.DataFrame({"x": [1]})})
    with pytest.raises(ValueError, match="invalid table name '../a'"):
        store.read("../a")
    with pytest.raises(KeyError, match="'nope' does not exist; materialise its asset first"):
        store.read("nope")
    with pytest.raises(TableWriteError, match="no data for table 't'"):
        store.replace({"t": iter([])})
    assert store.newest_manifest() is None  # nothing was ever committed
    for bad, problem in [("s3://", "invalid S3 bucket name ''"), ("s3://Bad_Bucket/x", "invalid S3 bucket name"),
                         ("s3://bucket/a//b", "empty, '.' or '..' segment"), ("gs://bucket/x", "unsupported")]:
        with pytest.raises(ValueError, match=problem):
            open_warehouse(bad)
    missing = _store("s3://no-such-bucket-here/x", tmp_path)
    with pytest.raises(FileNotFoundError, match="bucket 'no-such-bucket-here'.*does not exist"):
        missing.exists("t")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-marker-5f2c")
    with pytest.raises(FileNotFoundError) as info:  # errors name bucket and endpoint, never the credentials
        missing.replace({"t": pd.DataFrame({"x": [1]})})
    assert s3.endpoint_url in str(info.value) and "secret-marker-5f2c" not in str(info.value)


def test_many_manifests_the_newest_is_found(url, s3, tmp_path):
    """Listing is lexicographic and paged: with pages of 3 keys and 12 manifests (9 -> 10 included)."""
    writer = _store(url, tmp_path, list_page_size=3)
    watcher = _store(url, tmp_path, cache="watcher", list_page_size=3)
    for value in range(12):
        writer.replace({"t": pd.DataFrame({"x": [value]})})
        if value in (0, 8):
            assert watcher.read("t")["x"].tolist() == [value]  # sets the watcher's hint mid-way
    assert sorted(_keys(s3, url, "_manifests/"))[-1].endswith("00000000000000000012.json")
    for reader in (watcher, _store(url, tmp_path, cache="cold", list_page_size=3)):
        assert reader.newest_manifest().sequence == 12
        assert reader.read("t")["x"].tolist() == [11]


# ------------------------------------------------------------------------------------------- concurrency


def _manifest_chain(s3, url: str) -> list[dict]:
    bucket, _ = parse_url(url)
    client = s3.client()
    docs = [json.loads(client.get_object(Bucket=bucket, Key=k)["Body"].read())
            for k in sorted(_keys(s3, url, "_manifests/"))]
    return docs


def _assert_single_chain(s3, url: str, commits: int) -> list[dict]:
    """One manifest per commit, each built on the previous one: nothing a writer committed got lost."""
    chain = _manifest_chain(s3, url)
    assert [d["sequence"] for d in chain] == list(range(1, commits + 1))
    for prev, cur in zip(chain, chain[1:], strict=False):
        assert cur["parent"] == prev["id"], f"manifest {cur['sequence']} is not built on {prev['sequence']}"
        for name, entry in prev["tables"].items():  # a commit changes only its own tables
            if name not in cur["changed"]:
                assert cur["tables"][name] == entry, f"manifest {cur['sequence']} lost {name}"
    return chain


def _writer_frame(writer: int, rows: int) -> pd.DataFrame:
    return pd.DataFrame({"writer": [writer] * rows, "i": range(rows)})


def _check_one_writer(t: pd.DataFrame, u: pd.DataFrame, sizes: dict[int, int]) -> int:
    found = set()
    for name, frame in (("t", t), ("u", u)):
        writers = set(frame["writer"])
        assert len(writers) == 1, f"{name} mixes writers {writers}"
        writer = writers.pop()
        assert sorted(frame["i"]) == list(range(sizes[writer])), f"{name} is an incomplete copy of {writer}"
        found.add(writer)
    assert len(found) == 1, f"t and u of one snapshot come from different writes: {found}"
    return found.pop()


def test_threads_on_separate_machines_lose_and_mix_nothing(url, s3, tmp_path):
    sizes, rounds = {0: 300, 1: 500}, 6
    errors: list[str] = []
    snapshots = []
    barrier = threading.Barrier(3)
    writing = threading.Event()
    writing.set()

    def write(writer: int) -> None:
        store = _store(url, tmp_path, cache=f"machine{writer}", part_rows=100, part_bytes=1500)
        barrier.wait()
        for r in range(rounds):
            try:
                frame = _writer_frame(writer, sizes[writer])
                store.replace({"t": frame, "u": frame})
                store.replace({f"own_{writer}_{r}": frame.head(3)})
            except Exception as exc:  # collected: the assertion names every failure
                errors.append(f"writer {writer}: {type(exc).__name__}: {exc}")

    def read() -> None:
        store = _store(url, tmp_path, cache="reader")
        barrier.wait()
        while writing.is_set():
            try:
                if store.exists("t"):
                    with store.connect() as con:  # one manifest: t and u of the same write
                        snapshots.append((con.execute("SELECT * FROM t").df(), con.execute("SELECT * FROM u").df()))
            except Exception as exc:
                errors.append(f"reader: {type(exc).__name__}: {exc}")

    writers = [threading.Thread(target=write, args=(w,)) for w in sizes]
    reader = threading.Thread(target=read)
    for th in [*writers, reader]:
        th.start()
    for th in writers:
        th.join(timeout=300)
    writing.clear()
    reader.join(timeout=60)
    assert errors == []
    assert snapshots, "the reader never saw the tables while the writers ran"
    for t, u in snapshots:
        _check_one_writer(t, u, sizes)

    final = _store(url, tmp_path, cache="final")
    assert set(final.table_names()) == {"t", "u"} | {f"own_{w}_{r}" for w in sizes for r in range(rounds)}
    _check_one_writer(final.read("t"), final.read("u"), sizes)
    chain = _assert_single_chain(s3, url, commits=2 * rounds * len(sizes))
    assert {d["writer"]["pid"] for d in chain} == {chain[0]["writer"]["pid"]}  # threads of this process


_PROCESS_WRITER = """
import sys, time
import pandas as pd
from digr_dagster.resources.warehouse import Warehouse
url, writer, rows, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
start_at = float(sys.argv[5])
frame = pd.DataFrame({"writer": [writer] * rows, "i": range(rows)})
wh = Warehouse(database=url)
while time.time() < start_at:
    time.sleep(0.01)
for r in range(rounds):
    wh.replace({"t": frame, "u": frame})
    wh.replace({f"own_{writer}_{r}": frame.head(2)})
print("done", writer)
"""


def test_two_processes_through_the_resource_lose_and_mix_nothing(url, s3, tmp_path):
    """Two runners (separate processes, separate caches: as on two machines) write through the Dagster
    resource with ``DIGR_WAREHOUSE=s3://...`` at the same moment."""
    import os

    sizes, rounds = {0: 2000, 1: 3000}, 5
    start_at = time.time() + 10  # both import first, then write at once
    procs = []
    for writer, rows in sizes.items():
        env = {**os.environ, **s3.env(), "DIGR_HOME": str(tmp_path / f"home{writer}"), "PYTHONPATH": str(ROOT)}
        env.pop("DIGR_WAREHOUSE_CACHE", None)
        procs.append(subprocess.Popen(
            [sys.executable, "-c", _PROCESS_WRITER, url, str(writer), str(rows), str(rounds), str(start_at)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        assert out.startswith("done")
    chain = _assert_single_chain(s3, url, commits=2 * rounds * len(sizes))
    assert len({d["writer"]["pid"] for d in chain}) == 2
    final = _store(url, tmp_path, cache="final")
    _check_one_writer(final.read("t"), final.read("u"), sizes)
    assert {n for n in final.table_names() if n.startswith("own_")} == {
        f"own_{w}_{r}" for w in sizes for r in range(rounds)}
    # the resource kept its parts in each runner's own cache, under DIGR_HOME
    assert list((tmp_path / "home0" / "warehouse_cache").rglob("*.parquet"))


# --------------------------------------------------------------------- the resource on both backends


@pytest.fixture(params=["duckdb", "s3"])
def resource_location(request, tmp_path, monkeypatch, digr_env):
    if request.param == "duckdb":
        return str(tmp_path / "w.duckdb")
    server = request.getfixturevalue("s3_server")
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    return f"s3://{server.create_bucket()}/wh"


def test_resource_behaviour_on_both_backends(resource_location, monkeypatch):
    from digr_dagster.resources.warehouse import Warehouse

    monkeypatch.setenv("DIGR_WAREHOUSE", resource_location)
    wh = Warehouse()
    assert wh.database == resource_location
    assert (wh.object_store is not None) == resource_location.startswith("s3://")
    assert not wh.exists("items")
    counts = wh.replace({"items": pd.DataFrame({"item_id": ["b", "a", "c"]}),
                         "raw_interactions": (pd.DataFrame({"user_id": [u], "item_id": ["a"]}) for u in "zyx")})
    assert counts == {"items": 3, "raw_interactions": 3}
    assert wh.read("items", order_by="item_id")["item_id"].tolist() == ["a", "b", "c"]
    assert wh.read("raw_interactions", order_by="rowid")["user_id"].tolist() == ["z", "y", "x"]
    with wh.connect() as con:
        assert con.execute("SELECT count(*) FROM raw_interactions JOIN items USING (item_id)").fetchall() == [(3,)]

    def refuse(con, staged):
        n = con.execute(f'SELECT count(*) FROM "{staged["items"]}"').fetchall()[0][0]
        raise ContractError(f"items contract failed on {n} staged rows")

    with pytest.raises(ContractError, match="failed on 1 staged rows"):
        wh.replace({"items": pd.DataFrame({"item_id": ["new"]})}, validate=refuse)
    assert Warehouse().read("items", order_by="item_id")["item_id"].tolist() == ["a", "b", "c"]
    with pytest.raises(ValueError, match="invalid table name"):
        wh.exists("items; DROP TABLE items")
    with pytest.raises(KeyError, match="materialise its asset first"):
        wh.read("user_interests")
    assert wh.call_cache_path.endswith(".duckdb")


def test_resource_refuses_an_unknown_location(digr_env):
    from digr_dagster.resources.warehouse import Warehouse

    with pytest.raises(ValueError, match="unsupported warehouse location 'postgresql://h/db'"):
        Warehouse(database="postgresql://h/db").exists("t")


def test_threads_through_the_resource_on_both_backends(resource_location):
    """The test_concurrency race (writers and a reader, each call a new resource) on either backend."""
    from digr_dagster.resources.warehouse import Warehouse

    sizes = {0: 400, 1: 700}
    errors: list[str] = []
    barrier = threading.Barrier(3)

    def write(writer: int) -> None:
        barrier.wait()
        for _ in range(5):
            try:
                frame = _writer_frame(writer, sizes[writer])
                Warehouse(database=resource_location).replace({"t": frame, "u": frame})
            except Exception as exc:
                errors.append(f"writer {writer}: {type(exc).__name__}: {exc}")

    def read() -> None:
        barrier.wait()
        for _ in range(10):
            try:
                if Warehouse(database=resource_location).exists("t"):
                    with Warehouse(database=resource_location).connect() as con:
                        con.execute("BEGIN TRANSACTION")  # DuckDB file: one snapshot for both reads
                        t, u = con.execute("SELECT * FROM t").df(), con.execute("SELECT * FROM u").df()
                        con.execute("COMMIT")
                        _check_one_writer(t, u, sizes)
            except Exception as exc:
                errors.append(f"reader: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=write, args=(w,)) for w in sizes] + [threading.Thread(target=read)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert errors == []
    wh = Warehouse(database=resource_location)
    _check_one_writer(wh.read("t"), wh.read("u"), sizes)


# ------------------------------------------------------------------------- a real asset on S3


@pytest.mark.slow
def test_ingestion_assets_write_through_the_s3_backend(digr_env, s3, monkeypatch, tmp_path):
    """ingest_source + interaction_splits on the demo data into S3: the same tables as into the DuckDB file
    (the split's tie-break follows the write order), and a contract violation keeps the previous tables."""
    import dagster as dg

    from assets.ingestion import ingest_source, interaction_splits
    from digr_dagster.resources.warehouse import Warehouse

    def materialize(run_config=None, selection=None):
        with dg.DagsterInstance.get() as instance:
            return dg.materialize([ingest_source, interaction_splits], instance=instance,
                                  resources={"warehouse": Warehouse()}, run_config=run_config or {},
                                  selection=selection, raise_on_error=False)

    assert materialize().success  # DuckDB file (the default)
    local = DuckDBWarehouse(digr_env / "warehouse.duckdb")
    url = f"s3://{s3.create_bucket()}/digr"
    monkeypatch.setenv("DIGR_WAREHOUSE", url)
    result = materialize()
    assert result.success
    remote = _store(url, tmp_path, cache="check")
    assert sorted(remote.table_names()) == ["interaction_splits", "items", "raw_interactions"]
    orders = {"items": "item_id", "raw_interactions": "rowid", "interaction_splits": "user_id, position"}
    for name, order in orders.items():
        _assert_frames_equal(remote.read(name, order_by=order), local.read(name, order_by=order))
    md = result.asset_materializations_for_node("ingest_source")
    users = {m.asset_key.to_user_string(): m.metadata for m in md}["raw_interactions"]["users"].value
    assert users == local.read("raw_interactions")["user_id"].nunique()
    before = remote.newest_manifest()

    bad = tmp_path / "future"  # a review in the year 2100: the raw_interactions contract refuses it
    bad.mkdir()
    import gzip

    with gzip.open(bad / "Shop.json.gz", "wt") as f:
        for ts in (1500000000, 4102444800):
            f.write(json.dumps({"reviewerID": "U1", "asin": "I0", "overall": 5.0, "unixReviewTime": ts}) + "\n")
    with gzip.open(bad / "meta_Shop.json.gz", "wt") as f:
        f.write(json.dumps({"asin": "I0", "title": "thing"}) + "\n")
    failed = materialize({"ops": {"ingest_source": {"config": {"kind": "amazon2018", "path": str(bad)}}}},
                         selection=["items", "raw_interactions"])
    assert not failed.success
    assert _store(url, tmp_path, cache="check2").newest_manifest() == before
