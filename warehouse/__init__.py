"""The warehouse (no Dagster imports): atomic table replacement and reads on two backends.

* :class:`DuckDBWarehouse` — one DuckDB file, the embedded default (one writer at a time).
* :class:`ObjectStoreWarehouse` — Parquet tables on S3-compatible storage, ``s3://bucket/prefix``, published by
  an atomic manifest switch: many writers on different machines (see :mod:`warehouse.object_store`).

Both offer ``read``, ``exists``, ``replace`` (all or nothing, with the same ``validate(con, staged_names)``
callback) and ``connect`` (a DuckDB connection); :func:`open_warehouse` picks one from a location string.
"""

from __future__ import annotations

import os

from warehouse.object_store import (
    ObjectStoreWarehouse,
    WarehouseConflictError,
    WarehouseObjectMissingError,
    is_object_store_url,
    object_store_warehouse,
)
from warehouse.tables import (
    OPEN_CLOSE_LOCK,
    DuckDBWarehouse,
    TableWriteError,
    check_table_name,
    close,
    connect,
    connection,
    read_table,
    replace_table,
    replace_tables,
    table_exists,
    table_row_count,
)


def open_warehouse(location: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None
                   ) -> DuckDBWarehouse | ObjectStoreWarehouse:
    """``s3://bucket/prefix`` -> :class:`ObjectStoreWarehouse` (parts cached under ``cache_dir``); a filesystem
    path -> :class:`DuckDBWarehouse`. Any other ``scheme://`` is refused with the supported forms."""
    text = str(location)
    if is_object_store_url(text):
        return object_store_warehouse(text, cache_dir=cache_dir)
    if "://" in text:
        raise ValueError(f"unsupported warehouse location {text!r}: use a DuckDB file path or s3://bucket/prefix")
    return DuckDBWarehouse(text)


__all__ = [
    "OPEN_CLOSE_LOCK",
    "DuckDBWarehouse",
    "ObjectStoreWarehouse",
    "TableWriteError",
    "WarehouseConflictError",
    "WarehouseObjectMissingError",
    "check_table_name",
    "close",
    "connect",
    "connection",
    "is_object_store_url",
    "object_store_warehouse",
    "open_warehouse",
    "read_table",
    "replace_table",
    "replace_tables",
    "table_exists",
    "table_row_count",
]
