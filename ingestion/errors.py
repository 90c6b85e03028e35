"""Typed errors raised by the loaders: each names the file and, where known, the line and column."""

from __future__ import annotations


class IngestionError(ValueError):
    """Input that cannot be ingested; the message names the file, and the line/column when known."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 column: str | None = None) -> None:
        self.path = path
        self.line = line
        self.column = column
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        if column is not None:
            where.append(f"column {column!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)
