"""Streaming line readers and chunk assembly shared by the line-oriented loaders.

Gzip and plain files are read line by line (never whole); a truncated or non-gzip file becomes an
``IngestionError`` naming the file and the last line reached instead of a bare ``EOFError``.
"""

from __future__ import annotations

import codecs
import gzip
import logging
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ingestion.errors import IngestionError
from ingestion.schema import conform

logger = logging.getLogger(__name__)

#: Called with each malformed line's error; raising stops the load (the default), returning skips the line.
BadLineHandler = Callable[[IngestionError], None]


def handle_bad_line(error: IngestionError, on_bad_line: BadLineHandler | None) -> None:
    """Raise ``error`` unless a handler is given, in which case the handler decides (raise or skip)."""
    if on_bad_line is None:
        raise error
    on_bad_line(error)


class BadLineBudget:
    """A ``BadLineHandler`` that skips up to ``max_bad_lines`` malformed lines, logging each, then raises."""

    def __init__(self, max_bad_lines: int) -> None:
        if max_bad_lines < 0:
            raise ValueError(f"max_bad_lines must be >= 0, got {max_bad_lines}")
        self.max_bad_lines = max_bad_lines
        self.skipped: list[IngestionError] = []

    def __call__(self, error: IngestionError) -> None:
        if len(self.skipped) >= self.max_bad_lines:
            if self.skipped:
                raise IngestionError(
                    f"more than max_bad_lines={self.max_bad_lines} malformed lines; last: {error}",
                    path=error.path, line=error.line, column=error.column,
                ) from error
            raise error
        self.skipped.append(error)
        logger.warning("skipped malformed line (%d/%d): %s", len(self.skipped), self.max_bad_lines, error)


def iter_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` (1-based, newline stripped) from a plain or ``.gz`` text file."""
    if not path.is_file():
        raise IngestionError("file not found", path=str(path))
    line_no = 0
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding=encoding, newline="") as handle:
            for line_no, line in enumerate(handle, start=1):  # noqa: B007 - line_no is reported on failure
                yield line_no, line.rstrip("\r\n")
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise IngestionError(f"corrupt or truncated gzip data after line {line_no} ({exc})",
                             path=str(path), line=line_no + 1) from exc
    except UnicodeDecodeError as exc:
        # the text layer decodes 8 KiB blocks ahead of the lines it hands out, so line_no + 1 can be far
        # before the bad byte: find the exact line on this (rare) error path
        bad_line = _first_undecodable_line(path, encoding) or line_no + 1
        raise IngestionError(f"not {encoding} text ({exc.reason})", path=str(path), line=bad_line) from exc


def _first_undecodable_line(path: Path, encoding: str) -> int | None:
    """The 1-based number (counting ``\\n`` line ends) of the first line that does not decode, if found."""
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    decoder.decode(raw)
                except UnicodeDecodeError:
                    return number
    except (OSError, EOFError, zlib.error):
        return None  # the data is also damaged past this point; the caller keeps its estimate
    return None


def require_rows(chunks: Iterator[pd.DataFrame], path: Path) -> Iterator[pd.DataFrame]:
    """Pass ``chunks`` through; raise ``IngestionError`` naming ``path`` when they hold no row at all.

    An empty (or all-blank, or all-skipped) file is refused here, where the file is known, rather than
    later as an anonymous empty table.
    """
    rows = 0
    for chunk in chunks:
        rows += len(chunk)
        yield chunk
    if rows == 0:
        raise IngestionError("no records: the file is empty or holds no valid line", path=str(path))


class ChunkBuilder:
    """Collects row tuples and hands out canonical frames of ``chunk_rows`` rows."""

    def __init__(self, schema: dict[str, str], chunk_rows: int) -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.schema = schema
        self.chunk_rows = chunk_rows
        self.rows: list[Sequence[Any]] = []

    def add(self, row: Sequence[Any]) -> pd.DataFrame | None:
        """Add one row (values in schema order); return a full chunk when one is ready."""
        self.rows.append(row)
        if len(self.rows) >= self.chunk_rows:
            return self.flush()
        return None

    def flush(self) -> pd.DataFrame | None:
        """Return the pending rows as a canonical frame, or ``None`` when there are none."""
        if not self.rows:
            return None
        frame = pd.DataFrame.from_records(self.rows, columns=list(self.schema))
        self.rows = []
        return conform(frame, self.schema)
