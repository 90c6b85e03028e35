"""Loader for user-supplied CSV or Parquet tables, mapped onto the canonical columns by name.

The mapping goes canonical name -> source column, e.g. ``{"user_id": "customer", "item_id": "sku",
"timestamp": "bought_at", "rating": "stars"}``. ``user_id`` and ``item_id`` are required; without a
timestamp the row order becomes the timestamp (0, 1, 2, ...), without a rating it is NaN.

Line numbers in errors: for CSV the physical line (header = line 1, assuming no newlines inside quoted
fields); for Parquet the 1-based row number.
"""

from __future__ import annotations

import codecs
import gzip
import io
import logging
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ingestion.errors import IngestionError
from ingestion.schema import INTERACTION_COLUMNS, ITEM_COLUMNS, conform
from ingestion.text_files import BadLineHandler, handle_bad_line, require_rows

logger = logging.getLogger(__name__)

TimestampFormat = Literal["unix_s", "unix_ms", "iso"]
TableFormat = Literal["csv", "parquet"]

_REQUIRED_INTERACTION_KEYS = ("user_id", "item_id")
_MAX_ABS_SECONDS = 2.0**62
_CSV_SUFFIXES = {".csv": ",", ".tsv": "\t", ".txt": ","}


def table_format(path: Path) -> tuple[TableFormat, str]:
    """``("csv", default separator)`` or ``("parquet", "")`` from the suffix (CSV may end in ``.gz``)."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in (".parquet", ".pq"):
        return "parquet", ""
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in _CSV_SUFFIXES:
        return "csv", _CSV_SUFFIXES[suffixes[-1]]
    raise IngestionError("unsupported table file type: use .csv, .tsv (optionally .gz), .parquet or .pq",
                         path=str(path))


def table_columns(path: Path, separator: str | None = None, encoding: str = "utf-8") -> list[str]:
    """The column names of a CSV header or a Parquet schema."""
    path = Path(path)
    if not path.is_file():
        raise IngestionError("file not found", path=str(path))
    fmt, default_sep = table_format(path)
    try:
        if fmt == "parquet":
            return list(pq.ParquetFile(path).schema_arrow.names)
        return list(pd.read_csv(path, sep=separator or default_sep, nrows=0, encoding=encoding).columns)
    except (pa.ArrowException, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError,
            OSError, EOFError, zlib.error) as exc:
        raise IngestionError(f"cannot read the {fmt} header ({type(exc).__name__}: {exc})",
                             path=str(path), line=1) from exc


def _check_mapping(path: Path, mapping: Mapping[str, str], schema: dict[str, str], required: tuple[str, ...],
                   existing: list[str]) -> None:
    for key in mapping:
        if key not in schema:
            raise IngestionError(f"unknown canonical column {key!r} in the mapping; allowed: {list(schema)}",
                                 path=str(path), column=key)
    for key in required:
        if key not in mapping:
            raise IngestionError(f"the column mapping must map {key!r}", path=str(path), column=key)
    for key, source_column in mapping.items():
        if source_column not in existing:
            raise IngestionError(f"mapped column {source_column!r} (for {key}) is not in the file; "
                                 f"columns are {existing}", path=str(path), column=source_column)


def _iter_raw(path: Path, columns: list[str], chunk_rows: int, separator: str | None,
              encoding: str) -> Iterator[tuple[int, pd.DataFrame]]:
    """Yield ``(first_line_number, frame)`` batches with only ``columns``, CSV cells as text."""
    fmt, default_sep = table_format(path)
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    first = 2 if fmt == "csv" else 1
    try:
        if fmt == "parquet":
            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows, columns=columns):
                frame = batch.to_pandas()
                yield first, frame
                first += len(frame)
        else:
            # text dtype so a stray "abc" in a numeric column is caught per row, not coerced by pandas
            with (gzip.open if path.suffix.lower() == ".gz" else open)(path, "rb") as raw:
                # in UTF-16/32 text NUL bytes are ordinary; everywhere else they are damage
                wide = codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))
                source = raw if wide else io.BufferedReader(_NulGuard(raw, path))
                reader = pd.read_csv(source, sep=separator or default_sep,
                                     usecols=columns, dtype=str, keep_default_na=False, chunksize=chunk_rows,
                                     encoding=encoding, compression=None)
                with reader:
                    for frame in reader:
                        yield first, frame
                        first += len(frame)
    except (pa.ArrowException, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError,
            EOFError, zlib.error) as exc:
        raise IngestionError(f"unreadable {fmt} data near line {first} ({type(exc).__name__}: {exc})",
                             path=str(path), line=first) from exc


class _NulGuard(io.RawIOBase):
    """Raw bytes of a CSV file that refuse NUL bytes, naming their line.

    pandas' C tokenizer silently ends a cell at a NUL byte ("u\\0a" and "u\\0b" both became "u"), which
    would merge distinct ids; one ``in`` test per read block costs nothing next to parsing.
    """

    def __init__(self, raw: BinaryIO, path: Path) -> None:
        super().__init__()
        self._raw = raw
        self._path = path
        self._newlines = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        if b"\0" in data:
            line = self._newlines + data.count(b"\n", 0, data.index(b"\0")) + 1
            raise IngestionError("NUL byte in the text: not a CSV file, or a damaged one", path=str(self._path),
                                 line=line)
        self._newlines += data.count(b"\n")
        buffer[: len(data)] = data
        return len(data)


def _blank(series: pd.Series) -> pd.Series:
    return series.isna() | (series.astype("string").str.strip() == "")


def _reject_rows(bad: pd.Series, column: str, message: str, values: pd.Series, path: Path, first: int,
                 on_bad_line: BadLineHandler | None) -> None:
    for pos in np.flatnonzero(bad.to_numpy()):
        handle_bad_line(IngestionError(f"{message}, got {values.iloc[pos]!r}", path=str(path),
                                       line=first + int(pos), column=column), on_bad_line)


def _to_seconds(values: pd.Series, timestamp_format: TimestampFormat) -> tuple[pd.Series, pd.Series]:
    """Unix seconds (float, NaN where unparseable) and the mask of unparseable cells."""
    if timestamp_format == "iso":
        parsed = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
        seconds = (parsed - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta(seconds=1)
        return seconds.astype("float64"), parsed.isna()
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    numbers = np.floor(numbers / 1000.0) if timestamp_format == "unix_ms" else np.floor(numbers)
    # beyond +-2**62 s the int64 cast would wrap silently (1e300 became -9223372036854775808)
    bad = ~(np.abs(numbers.to_numpy()) < _MAX_ABS_SECONDS)
    return numbers, pd.Series(bad, index=values.index)


def iter_tabular_interactions(path: Path, columns: Mapping[str, str],
                              timestamp_format: TimestampFormat = "unix_s", chunk_rows: int = 200_000,
                              separator: str | None = None, encoding: str = "utf-8",
                              on_bad_line: BadLineHandler | None = None) -> Iterator[pd.DataFrame]:
    """Stream a CSV/Parquet interactions table as canonical chunks through the column mapping.

    A table without any valid row is an ``IngestionError``.
    """
    path = Path(path)
    return require_rows(_tabular_interactions(path, columns, timestamp_format, chunk_rows, separator, encoding,
                                              on_bad_line), path)


def _tabular_interactions(path: Path, columns: Mapping[str, str], timestamp_format: TimestampFormat,
                          chunk_rows: int, separator: str | None, encoding: str,
                          on_bad_line: BadLineHandler | None) -> Iterator[pd.DataFrame]:
    if timestamp_format not in ("unix_s", "unix_ms", "iso"):
        raise IngestionError(f"unknown timestamp_format {timestamp_format!r}; use unix_s, unix_ms or iso",
                             path=str(path))
    existing = table_columns(path, separator, encoding)
    _check_mapping(path, columns, INTERACTION_COLUMNS, _REQUIRED_INTERACTION_KEYS, existing)
    wanted = list(dict.fromkeys(columns.values()))
    row_offset = 0
    for first, raw in _iter_raw(path, wanted, chunk_rows, separator, encoding):
        out = pd.DataFrame(index=raw.index)
        keep = pd.Series(True, index=raw.index)
        for key in _REQUIRED_INTERACTION_KEYS:
            values = raw[columns[key]]
            bad = _blank(values)
            _reject_rows(bad, columns[key], "missing id", values, path, first, on_bad_line)
            keep &= ~bad
            out[key] = values.astype("string").str.strip()
        if "timestamp" in columns:
            values = raw[columns["timestamp"]]
            seconds, bad = _to_seconds(values, timestamp_format)
            _reject_rows(bad & keep, columns["timestamp"], f"expected a {timestamp_format} timestamp", values,
                         path, first, on_bad_line)
            keep &= ~bad
            out["timestamp"] = seconds
        else:
            out["timestamp"] = np.arange(row_offset, row_offset + len(raw), dtype="int64")
        if "rating" in columns:
            values = raw[columns["rating"]]
            numbers = pd.to_numeric(values, errors="coerce").astype("float64")
            bad = numbers.isna() & ~_blank(values)  # an empty rating is allowed and stays NaN
            _reject_rows(bad & keep, columns["rating"], "expected a number", values, path, first, on_bad_line)
            keep &= ~bad
            out["rating"] = numbers
        else:
            out["rating"] = np.nan
        row_offset += len(raw)
        kept = out[keep.to_numpy()]
        if len(kept):
            yield conform(kept, INTERACTION_COLUMNS)


def _category_text(value: object) -> str:
    if isinstance(value, list | tuple | np.ndarray):
        return " > ".join(str(v).strip() for v in value if v is not None and str(v).strip())
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return ""
    return str(value).strip()


def iter_tabular_items(path: Path, columns: Mapping[str, str], chunk_rows: int = 50_000,
                       separator: str | None = None, encoding: str = "utf-8",
                       on_bad_line: BadLineHandler | None = None) -> Iterator[pd.DataFrame]:
    """Stream a CSV/Parquet items table as canonical chunks; unmapped text columns become "" (image <NA>).

    A list-valued ``categories`` cell (Parquet) is joined with " > "; repeated item ids keep the first row.
    A table without any valid row is an ``IngestionError``.
    """
    path = Path(path)
    return require_rows(_tabular_items(path, columns, chunk_rows, separator, encoding, on_bad_line), path)


def _tabular_items(path: Path, columns: Mapping[str, str], chunk_rows: int, separator: str | None, encoding: str,
                   on_bad_line: BadLineHandler | None) -> Iterator[pd.DataFrame]:
    existing = table_columns(path, separator, encoding)
    _check_mapping(path, columns, ITEM_COLUMNS, ("item_id",), existing)
    wanted = list(dict.fromkeys(columns.values()))
    seen: set[str] = set()
    duplicates = 0
    for first, raw in _iter_raw(path, wanted, chunk_rows, separator, encoding):
        ids = raw[columns["item_id"]]
        bad = _blank(ids)
        _reject_rows(bad, columns["item_id"], "missing id", ids, path, first, on_bad_line)
        out = pd.DataFrame({"item_id": ids.astype("string").str.strip()}, index=raw.index)
        for key in ("title", "description", "brand"):
            out[key] = (raw[columns[key]].astype("string").fillna("").str.strip() if key in columns else "")
        out["categories"] = raw[columns["categories"]].map(_category_text) if "categories" in columns else ""
        if "image_url" in columns:
            urls = raw[columns["image_url"]].astype("string").str.strip()
            out["image_url"] = urls.mask(urls == "")
        else:
            out["image_url"] = pd.NA
        out = out[~bad.to_numpy()]
        repeated = out["item_id"].isin(seen) | out["item_id"].duplicated()
        duplicates += int(repeated.sum())
        out = out[~repeated.to_numpy()]
        seen.update(out["item_id"].tolist())
        if len(out):
            yield conform(out, ITEM_COLUMNS)
    if duplicates:
        logger.info("%s: dropped %d repeated item rows (first occurrence kept)", path, duplicates)
