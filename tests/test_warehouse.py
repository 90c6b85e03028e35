"""Atomic table replacement: a failed write of any kind leaves the previous tables intact.

Every behaviour test runs on both backends: the DuckDB file and Parquet on S3 (moto's S3 server)."""

import duckdb
import pandas as pd
import pytest

from tests.servers import s3_server  # noqa: F401 - the session's S3 server, for the object-store backend
from warehouse import (
    DuckDBWarehouse,
    ObjectStoreWarehouse,
    TableWriteError,
    read_table,
    replace_table,
    table_exists,
)


@pytest.fixture(params=["duckdb", "s3"])
def wh(request, tmp_path, monkeypatch):
    if request.param == "duckdb":
        return DuckDBWarehouse(tmp_path / "w.duckdb")
    server = request.getfixturevalue("s3_server")
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    return ObjectStoreWarehouse(f"s3://{server.create_bucket()}/wh", cache_dir=tmp_path / "cache", part_rows=2,
                                part_bytes=1)  # tiny parts: a table of a few rows spans several objects


def chunks_then_fail(n_good):
    for i in range(n_good):
        yield pd.DataFrame({"x": [i]})
    raise ValueError("line 3: broken input")


def test_replace_streams_chunks(wh):
    n = wh.replace({"t": (pd.DataFrame({"x": [i, i + 1]}) for i in range(0, 6, 2))})["t"]
    assert n == 6
    assert wh.read("t", order_by="x")["x"].tolist() == list(range(6))
    assert wh.read("t", order_by="rowid DESC")["x"].tolist() == list(range(6))[::-1]  # rowid: write order
    assert not wh.exists("t__staging")


def test_failure_mid_stream_keeps_old_table(wh):
    wh.replace({"t": pd.DataFrame({"x": [42]})})
    with pytest.raises(ValueError, match="line 3"):
        wh.replace({"t": chunks_then_fail(2)})
    assert wh.read("t")["x"].tolist() == [42]
    assert not wh.exists("t__staging")


def test_validation_refusal_keeps_both_old_tables(wh):
    wh.replace({"a": pd.DataFrame({"x": [1]}), "b": pd.DataFrame({"y": [2]})})

    def refuse(c, staged):
        assert c.execute(f'SELECT count(*) FROM "{staged["b"]}"').fetchall()[0][0] == 3
        raise RuntimeError("contract failed")

    with pytest.raises(RuntimeError, match="contract failed"):
        wh.replace({"a": pd.DataFrame({"x": [7, 8]}), "b": pd.DataFrame({"y": [1, 2, 3]})}, validate=refuse)
    assert wh.read("a")["x"].tolist() == [1]
    assert wh.read("b")["y"].tolist() == [2]


def test_second_table_failure_keeps_first_table_too(wh):
    wh.replace({"a": pd.DataFrame({"x": [1]}), "b": pd.DataFrame({"y": [2]})})
    with pytest.raises(ValueError):
        wh.replace({"a": pd.DataFrame({"x": [9]}), "b": chunks_then_fail(1)})
    assert wh.read("a")["x"].tolist() == [1]


def test_empty_source_is_an_error_not_an_empty_table(wh):
    wh.replace({"t": pd.DataFrame({"x": [1]})})
    with pytest.raises(TableWriteError, match="no data"):
        wh.replace({"t": iter([])})
    assert wh.read("t")["x"].tolist() == [1]


def test_bad_names_and_missing_tables(wh):
    with pytest.raises(ValueError, match="invalid table name"):
        wh.replace({"t; DROP TABLE x": pd.DataFrame({"x": [1]})})
    with pytest.raises(ValueError, match="invalid table name"):
        wh.exists("../t")
    with pytest.raises(KeyError, match="materialise"):
        wh.read("nope")
    assert not wh.exists("nope")


def test_schema_change_is_allowed(wh):
    wh.replace({"t": pd.DataFrame({"x": [1]})})
    wh.replace({"t": pd.DataFrame({"y": ["a"], "z": [2.0]})})
    assert list(wh.read("t").columns) == ["y", "z"]


def test_connect_queries_the_current_tables(wh):
    wh.replace({"a": pd.DataFrame({"k": [1, 2, 3], "v": ["x", "y", "z"]}), "b": pd.DataFrame({"k": [2, 3, 4]})})
    with wh.connect() as con:
        assert con.execute("SELECT v FROM a JOIN b USING (k) ORDER BY k").fetchall() == [("y",), ("z",)]
    assert wh.table_names() == ["a", "b"]
    assert wh.row_count("a") == 3


# ---- the functions on a DuckDB connection that the DuckDB backend is made of


def test_functions_on_a_connection(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    try:
        assert replace_table(con, "t", pd.DataFrame({"x": [3, 1]})) == 2
        assert read_table(con, "t", order_by="x")["x"].tolist() == [1, 3]
        assert table_exists(con, "t") and not table_exists(con, "t__staging")
        with pytest.raises(ValueError, match="invalid table name"):
            replace_table(con, "t; DROP TABLE x", pd.DataFrame({"x": [1]}))
    finally:
        con.close()
