"""The DuckDB warehouse: atomic table replacement and reads (no Dagster imports)."""

from warehouse.tables import (
    OPEN_CLOSE_LOCK,
    TableWriteError,
    close,
    connect,
    connection,
    read_table,
    replace_table,
    replace_tables,
    table_exists,
    table_row_count,
)

__all__ = [
    "OPEN_CLOSE_LOCK",
    "TableWriteError",
    "close",
    "connect",
    "connection",
    "read_table",
    "replace_table",
    "replace_tables",
    "table_exists",
    "table_row_count",
]
