"""Atomic table replacement: a failed write of any kind leaves the previous tables intact."""

import duckdb
import pandas as pd
import pytest

from warehouse import TableWriteError, read_table, replace_table, replace_tables, table_exists


@pytest.fixture
def con(tmp_path):
    c = duckdb.connect(str(tmp_path / "w.duckdb"))
    yield c
    c.close()


def chunks_then_fail(n_good):
    for i in range(n_good):
        yield pd.DataFrame({"x": [i]})
    raise ValueError("line 3: broken input")


def test_replace_streams_chunks(con):
    n = replace_table(con, "t", (pd.DataFrame({"x": [i, i + 1]}) for i in range(0, 6, 2)))
    assert n == 6
    assert read_table(con, "t", order_by="x")["x"].tolist() == list(range(6))
    assert not table_exists(con, "t__staging")


def test_failure_mid_stream_keeps_old_table(con):
    replace_table(con, "t", pd.DataFrame({"x": [42]}))
    with pytest.raises(ValueError, match="line 3"):
        replace_table(con, "t", chunks_then_fail(2))
    assert read_table(con, "t")["x"].tolist() == [42]
    assert not table_exists(con, "t__staging")


def test_validation_refusal_keeps_both_old_tables(con):
    replace_tables(con, {"a": pd.DataFrame({"x": [1]}), "b": pd.DataFrame({"y": [2]})})

    def refuse(c, staged):
        assert c.execute(f'SELECT count(*) FROM "{staged["b"]}"').fetchall()[0][0] == 3
        raise RuntimeError("contract failed")

    with pytest.raises(RuntimeError, match="contract failed"):
        replace_tables(con, {"a": pd.DataFrame({"x": [7, 8]}), "b": pd.DataFrame({"y": [1, 2, 3]})},
                       validate=refuse)
    assert read_table(con, "a")["x"].tolist() == [1]
    assert read_table(con, "b")["y"].tolist() == [2]


def test_second_table_failure_keeps_first_table_too(con):
    replace_tables(con, {"a": pd.DataFrame({"x": [1]}), "b": pd.DataFrame({"y": [2]})})
    with pytest.raises(ValueError):
        replace_tables(con, {"a": pd.DataFrame({"x": [9]}), "b": chunks_then_fail(1)})
    assert read_table(con, "a")["x"].tolist() == [1]


def test_empty_source_is_an_error_not_an_empty_table(con):
    replace_table(con, "t", pd.DataFrame({"x": [1]}))
    with pytest.raises(TableWriteError, match="no data"):
        replace_table(con, "t", iter([]))
    assert read_table(con, "t")["x"].tolist() == [1]


def test_bad_names_and_missing_tables(con):
    with pytest.raises(ValueError, match="invalid table name"):
        replace_table(con, "t; DROP TABLE x", pd.DataFrame({"x": [1]}))
    with pytest.raises(KeyError, match="materialise"):
        read_table(con, "nope")


def test_schema_change_is_allowed(con):
    replace_table(con, "t", pd.DataFrame({"x": [1]}))
    replace_table(con, "t", pd.DataFrame({"y": ["a"], "z": [2.0]}))
    assert list(read_table(con, "t").columns) == ["y", "z"]
