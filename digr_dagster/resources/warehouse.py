"""The warehouse resource: a DuckDB file (dagster-duckdb) or Parquet tables on S3, one interface."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd
from dagster_duckdb import DuckDBResource
from pydantic import Field

from digr_dagster import settings
from warehouse import (
    OPEN_CLOSE_LOCK,
    DuckDBWarehouse,
    ObjectStoreWarehouse,
    check_table_name,
    open_warehouse,
    read_table,
    replace_tables,
    table_exists,
)


class Warehouse(DuckDBResource):
    """The warehouse at ``database`` (env ``DIGR_WAREHOUSE``, default ``.digr/warehouse.duckdb``).

    * A filesystem path: one DuckDB file, the embedded default. DuckDB allows one writer per file across
      processes, so every asset that writes here runs in the ``warehouse`` concurrency pool (limit 1) and holds
      its connection only while it reads or writes.
    * ``s3://bucket/prefix``: Parquet tables on S3-compatible storage, switched atomically by a manifest commit
      log (:mod:`warehouse.object_store`); credentials and endpoint from the standard ``AWS_*`` variables. Runners
      on different machines may write at once (a writer that loses a race re-applies its tables on the newest
      state), so the pool's limit of 1 is no longer needed for correctness with this backend. DuckDB stays the
      query engine: ``connect()`` yields an in-memory connection with every current table as a view (reading
      only; writes go through ``replace``), and ``validate`` callbacks get the staged tables as with the file.
      Downloaded parts are cached under ``$DIGR_WAREHOUSE_CACHE`` (default ``.digr/warehouse_cache``).
    """

    database: str = Field(default_factory=settings.warehouse_path,
                          description="DuckDB file path, or s3://bucket/prefix for Parquet tables on S3-compatible "
                                      "storage (env DIGR_WAREHOUSE).")

    def backend(self) -> DuckDBWarehouse | ObjectStoreWarehouse:
        """The library warehouse at ``database`` (the one place the location picks the backend)."""
        return open_warehouse(self.database, cache_dir=settings.warehouse_cache_dir())

    @property
    def object_store(self) -> ObjectStoreWarehouse | None:
        """The object-store backend when ``database`` is ``s3://...``; None for a DuckDB file."""
        backend = self.backend()
        return backend if isinstance(backend, ObjectStoreWarehouse) else None

    @property
    def call_cache_path(self) -> str:
        """A DuckDB file for side tables that stay local (the LLM call cache): the warehouse file itself, or
        ``<DIGR_HOME>/llm_call_cache.duckdb`` next to an object-store warehouse."""
        if self.object_store is not None:
            return str(settings.digr_home() / "llm_call_cache.duckdb")
        return self.database

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection that is always closed, also when the body raises (object store: a read-only snapshot)."""
        store = self.object_store
        if store is not None:
            with store.connect() as con:
                yield con
            return
        Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        with OPEN_CLOSE_LOCK:  # see warehouse.tables.OPEN_CLOSE_LOCK: a DuckDB race between threads
            opened = self.get_connection()
            con = opened.__enter__()
        try:
            yield con
        finally:
            with OPEN_CLOSE_LOCK:
                opened.__exit__(None, None, None)  # closes the connection

    # the DuckDB file is read and written through dagster-duckdb's connection (``connect``): DuckDB refuses a
    # second connection to the file with another configuration in one process, so the library's own
    # DuckDBWarehouse (plain duckdb.connect) is not mixed in here
    def read(self, table: str, *, order_by: str | None = None) -> pd.DataFrame:
        """The whole table; ``order_by`` is SQL, where ``rowid`` is the order the rows were written in."""
        store = self.object_store
        if store is not None:
            return store.read(table, order_by=order_by)
        with self.connect() as con:
            return read_table(con, table, order_by=order_by)

    def exists(self, table: str) -> bool:
        check_table_name(table)
        store = self.object_store
        if store is not None:
            return store.exists(table)
        with self.connect() as con:
            return table_exists(con, table)

    def replace(self, tables: dict[str, pd.DataFrame | Iterable[pd.DataFrame]], *, validate=None) -> dict[str, int]:
        """Replace tables all-or-nothing (see :func:`warehouse.replace_tables`)."""
        store = self.object_store
        if store is not None:
            return store.replace(tables, validate=validate)
        with self.connect() as con:
            return replace_tables(con, tables, validate=validate)
