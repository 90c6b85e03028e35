"""The DuckDB warehouse resource (dagster-duckdb) with atomic table replacement."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd
from dagster_duckdb import DuckDBResource
from pydantic import Field

from digr_dagster import settings
from warehouse import OPEN_CLOSE_LOCK, read_table, replace_tables, table_exists


class Warehouse(DuckDBResource):
    """One DuckDB file (env ``DIGR_WAREHOUSE``, default ``.digr/warehouse.duckdb``).

    DuckDB allows one writer per file across processes, so every asset that writes here runs in the
    ``warehouse`` concurrency pool (limit 1) and holds its connection only while it reads or writes.
    """

    database: str = Field(default_factory=settings.warehouse_path,
                          description="Path to the DuckDB file (env DIGR_WAREHOUSE).")

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection that is always closed, also when the body raises."""
        Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        with OPEN_CLOSE_LOCK:  # see warehouse.tables.OPEN_CLOSE_LOCK: a DuckDB race between threads
            opened = self.get_connection()
            con = opened.__enter__()
        try:
            yield con
        finally:
            with OPEN_CLOSE_LOCK:
                opened.__exit__(None, None, None)  # closes the connection

    def read(self, table: str, *, order_by: str | None = None) -> pd.DataFrame:
        with self.connect() as con:
            return read_table(con, table, order_by=order_by)

    def exists(self, table: str) -> bool:
        with self.connect() as con:
            return table_exists(con, table)

    def replace(self, tables: dict[str, pd.DataFrame | Iterable[pd.DataFrame]], *, validate=None) -> dict[str, int]:
        """Replace tables all-or-nothing (see :func:`warehouse.replace_tables`)."""
        with self.connect() as con:
            return replace_tables(con, tables, validate=validate)
