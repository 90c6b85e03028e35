"""Atomic table writes on a DuckDB connection.

Every table is written aside (``<name>__staging``) and swapped in with one transaction, so a
failure at any point — a bad chunk, a failed validation, a killed process — leaves the previous
good table exactly as it was.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
STAGING_SUFFIX = "__staging"


class TableWriteError(RuntimeError):
    """A table could not be written; the previous version of the table is untouched."""


# Connections of one process to the same file share one database, and two writers there would both use
# "<name>__staging" (catalog conflicts, one dropping the other's staging table). Across processes DuckDB's
# file lock already admits one writer at a time.
_WRITE_LOCKS: dict[str, threading.RLock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


# DuckDB 2.0 shares one database instance between the connections of a process to a file. A thread that
# opens a connection while another thread is creating or tearing down that instance can get it before the
# Python client registered its pandas scan, and its first DataFrame write fails with "Table Function with
# name pandas_scan does not exist" (1 run in 3 of test_concurrency's two-thread test on a loaded 2-core
# machine). Opening and closing under one process-wide lock removes the window; queries stay concurrent.
OPEN_CLOSE_LOCK = threading.Lock()


def connect(path: str | Path, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect`` under :data:`OPEN_CLOSE_LOCK`; close it with :func:`close` (or use :func:`connection`)."""
    with OPEN_CLOSE_LOCK:
        return duckdb.connect(str(path), read_only=read_only)


def close(con: duckdb.DuckDBPyConnection) -> None:
    """Close a connection under :data:`OPEN_CLOSE_LOCK` (closing the last one tears the database instance down)."""
    with OPEN_CLOSE_LOCK:
        con.close()


@contextmanager
def connection(path: str | Path, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection opened and closed under :data:`OPEN_CLOSE_LOCK`, closed also when the body raises."""
    con = connect(path, read_only=read_only)
    try:
        yield con
    finally:
        close(con)


def _write_lock(con: duckdb.DuckDBPyConnection) -> threading.RLock:
    path = con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchall()[0][0]
    with _WRITE_LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(path or ":memory:", threading.RLock())


def check_table_name(name: str) -> str:
    """``name`` when it is a plain table name (letters, digits, underscores); a ``ValueError`` naming it otherwise."""
    if not isinstance(name, str) or not _IDENT.match(name):
        raise ValueError(f"invalid table name {name!r}: use letters, digits and underscores")
    return name


def _ident(name: str) -> str:
    return f'"{check_table_name(name)}"'


def table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    rows = con.execute(
        "SELECT 1 FROM information_schema.tables WHERE table_schema = 'main' AND table_name = ?", [name]
    ).fetchall()
    return bool(rows)


def table_row_count(con: duckdb.DuckDBPyConnection, name: str) -> int:
    return int(con.execute(f"SELECT count(*) FROM {_ident(name)}").fetchall()[0][0])


def read_table(con: duckdb.DuckDBPyConnection, name: str, *, order_by: str | None = None) -> pd.DataFrame:
    """Read a whole table into pandas; raises ``KeyError`` naming the table when it does not exist."""
    if not table_exists(con, name):
        raise KeyError(f"warehouse table {name!r} does not exist; materialise its asset first")
    sql = f"SELECT * FROM {_ident(name)}"
    if order_by:
        sql += f" ORDER BY {order_by}"
    return con.execute(sql).df()


def _stage(con: duckdb.DuckDBPyConnection, name: str, chunks: Iterable[pd.DataFrame]) -> int:
    """Write ``chunks`` into a fresh staging table; returns the number of rows written."""
    staging = _ident(name + STAGING_SUFFIX)
    con.execute(f"DROP TABLE IF EXISTS {staging}")
    rows = 0
    created = False
    for chunk in chunks:
        con.register("__digr_chunk", chunk)
        try:
            if not created:
                con.execute(f"CREATE TABLE {staging} AS SELECT * FROM __digr_chunk")
                created = True
            else:
                con.execute(f"INSERT INTO {staging} SELECT * FROM __digr_chunk")
        finally:
            con.unregister("__digr_chunk")
        rows += len(chunk)
    if not created:
        raise TableWriteError(f"no data for table {name!r}: the source produced no chunks")
    return rows


def replace_tables(
    con: duckdb.DuckDBPyConnection,
    tables: Mapping[str, pd.DataFrame | Iterable[pd.DataFrame]],
    *,
    validate: Callable[[duckdb.DuckDBPyConnection, Mapping[str, str]], None] | None = None,
) -> dict[str, int]:
    """Replace several tables at once, all or nothing.

    Each value is a DataFrame or an iterable of DataFrame chunks (streamed into the staging table).
    ``validate(con, staging_names)`` may inspect the staging tables and raise to refuse the swap.
    Returns ``{table: rows}``. On any error the staging tables are dropped and the live tables are
    unchanged. Writers in one process to the same database file are serialised.
    """
    with _write_lock(con):
        return _replace_tables(con, tables, validate)


def _replace_tables(
    con: duckdb.DuckDBPyConnection,
    tables: Mapping[str, pd.DataFrame | Iterable[pd.DataFrame]],
    validate: Callable[[duckdb.DuckDBPyConnection, Mapping[str, str]], None] | None,
) -> dict[str, int]:
    staged: dict[str, str] = {}
    counts: dict[str, int] = {}
    try:
        for name, data in tables.items():
            chunks = [data] if isinstance(data, pd.DataFrame) else data
            counts[name] = _stage(con, name, chunks)
            staged[name] = name + STAGING_SUFFIX
        if validate is not None:
            validate(con, staged)
        con.execute("BEGIN TRANSACTION")
        try:
            for name, staging in staged.items():
                con.execute(f"DROP TABLE IF EXISTS {_ident(name)}")
                con.execute(f"ALTER TABLE {_ident(staging)} RENAME TO {_ident(name)}")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        for staging in [n + STAGING_SUFFIX for n in tables]:
            try:
                con.execute(f"DROP TABLE IF EXISTS {_ident(staging)}")
            except duckdb.Error:
                pass  # the connection is already broken; the staging table dies with the write
    return counts


def replace_table(
    con: duckdb.DuckDBPyConnection,
    name: str,
    data: pd.DataFrame | Iterable[pd.DataFrame],
    *,
    validate: Callable[[duckdb.DuckDBPyConnection, Mapping[str, str]], None] | None = None,
) -> int:
    """Replace one table atomically; see :func:`replace_tables`."""
    return replace_tables(con, {name: data}, validate=validate)[name]


class DuckDBWarehouse:
    """The embedded warehouse, one DuckDB file, with the interface of
    :class:`warehouse.object_store.ObjectStoreWarehouse` (``read``, ``exists``, ``replace``, ``connect``).

    One writer per file across processes (DuckDB's file lock); writers of one process are serialised."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)

    def __repr__(self) -> str:
        return f"DuckDBWarehouse({self.path!r})"

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        if not read_only:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with connection(self.path, read_only=read_only) as con:
            yield con

    def table_names(self) -> list[str]:
        with self.connect() as con:
            rows = con.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
                               "ORDER BY table_name").fetchall()
        return [r[0] for r in rows if not r[0].endswith(STAGING_SUFFIX)]

    def exists(self, name: str) -> bool:
        check_table_name(name)
        with self.connect() as con:
            return table_exists(con, name)

    def row_count(self, name: str) -> int:
        with self.connect() as con:
            if not table_exists(con, name):
                raise KeyError(f"warehouse table {name!r} does not exist; materialise its asset first")
            return table_row_count(con, name)

    def read(self, name: str, *, order_by: str | None = None) -> pd.DataFrame:
        with self.connect() as con:
            return read_table(con, name, order_by=order_by)

    def replace(
        self,
        tables: Mapping[str, pd.DataFrame | Iterable[pd.DataFrame]],
        *,
        validate: Callable[[duckdb.DuckDBPyConnection, Mapping[str, str]], None] | None = None,
    ) -> dict[str, int]:
        with self.connect() as con:
            return replace_tables(con, tables, validate=validate)
