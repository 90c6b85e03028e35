"""One entry point for every source format: a ``SourceSpec`` in, canonical chunks and lineage out.

The Dagster assets call ``iter_interaction_chunks`` / ``iter_item_chunks`` and record
``describe_source_files`` in their metadata; the sensor watches ``source_files``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ingestion.amazon import find_amazon_files, iter_amazon_interactions, iter_amazon_items
from ingestion.demo_data import DEMO_DATASET, demo_files_exist, demo_motivation_names, write_demo_dataset
from ingestion.errors import IngestionError
from ingestion.movielens import find_movielens_files, iter_movielens_interactions, iter_movielens_items
from ingestion.recbole import find_recbole_files, iter_recbole_interactions, iter_recbole_items
from ingestion.tabular import TimestampFormat, iter_tabular_interactions, iter_tabular_items
from ingestion.text_files import BadLineBudget, BadLineHandler

SourceKind = Literal["demo", "amazon2018", "amazon2023", "recbole", "movielens", "tabular"]


class SourceSpec(BaseModel):
    """Where the data is and how to read it.

    ``path`` is a folder. ``dataset`` is the file stem (RecBole ``Scientific`` for ``Scientific.text``;
    Amazon category ``Industrial_and_Scientific``), auto-detected when the folder holds exactly one.
    Tabular sources name their files (relative to ``path`` or absolute) and map canonical column names to
    theirs in ``interaction_columns`` and ``item_columns`` (items). Demo sources are generated into
    ``path`` from ``seed`` / ``n_users`` when the files are absent or were made with other parameters.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: SourceKind
    path: str
    dataset: str | None = None
    interactions_file: str | None = None
    items_file: str | None = None
    interaction_columns: dict[str, str] = Field(default_factory=dict)
    item_columns: dict[str, str] = Field(default_factory=dict)
    timestamp_format: TimestampFormat = "unix_s"
    separator: str | None = None
    encoding: str = "utf-8"
    seed: int = 7
    n_users: int = Field(600, ge=1)
    n_motivations: int | None = Field(None, ge=2, description="demo: use the first N hidden motivations only")
    max_bad_lines: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _tabular_needs_files(self) -> SourceSpec:
        if self.kind == "tabular":
            missing = [name for name in ("interactions_file", "items_file") if not getattr(self, name)]
            if missing:
                raise ValueError(f"a tabular source needs {missing}")
            if "user_id" not in self.interaction_columns or "item_id" not in self.interaction_columns:
                raise ValueError("a tabular source needs `interaction_columns` mapping at least user_id "
                                 "and item_id")
            if "item_id" not in self.item_columns:
                raise ValueError("a tabular source needs `item_columns` mapping at least item_id")
        return self

    def resolve(self, name: str) -> Path:
        """A file name of this source as a path (relative names are under ``path``)."""
        candidate = Path(name)
        return candidate if candidate.is_absolute() else Path(self.path) / candidate


@dataclass(frozen=True)
class SourceFile:
    """One file a source reads, identified by content."""

    path: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class SourceFiles:
    """What a source read: its files with sizes and SHA-256 digests (for lineage metadata)."""

    kind: str
    files: tuple[SourceFile, ...]

    @classmethod
    def of(cls, kind: str, paths: Iterable[Path]) -> SourceFiles:
        """Describe ``paths`` (streamed through SHA-256 in 1 MiB blocks)."""
        described = []
        for path in paths:
            if not Path(path).is_file():
                raise IngestionError("file not found", path=str(path))
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for block in iter(partial(handle.read, 1 << 20), b""):
                    digest.update(block)
            described.append(SourceFile(str(path), Path(path).stat().st_size, digest.hexdigest()))
        return cls(kind=kind, files=tuple(described))

    @property
    def fingerprint(self) -> str:
        """One digest over every file's name and content: changes when any file changes."""
        digest = hashlib.sha256()
        for entry in self.files:
            digest.update(f"{Path(entry.path).name}\0{entry.sha256}\n".encode())
        return digest.hexdigest()

    @property
    def total_bytes(self) -> int:
        return sum(entry.size_bytes for entry in self.files)

    def to_metadata(self) -> dict[str, Any]:
        """A JSON-ready dict for asset metadata."""
        return {
            "kind": self.kind,
            "fingerprint": self.fingerprint,
            "total_bytes": self.total_bytes,
            "files": [{"path": f.path, "size_bytes": f.size_bytes, "sha256": f.sha256} for f in self.files],
        }


def _ensure_demo(source: SourceSpec) -> None:
    folder = Path(source.path)
    n_motivations = source.n_motivations or len(demo_motivation_names())
    if not demo_files_exist(folder, seed=source.seed, n_users=source.n_users, n_motivations=n_motivations):
        write_demo_dataset(folder, seed=source.seed, n_users=source.n_users, n_motivations=n_motivations)


def _bad_line_handler(source: SourceSpec) -> BadLineHandler | None:
    return BadLineBudget(source.max_bad_lines) if source.max_bad_lines else None


def source_files(source: SourceSpec) -> list[Path]:
    """The files a source reads (demo files are generated first when absent or stale)."""
    folder = Path(source.path)
    if source.kind == "demo":
        _ensure_demo(source)
        files = find_amazon_files(folder, DEMO_DATASET, "2018")
        return [files.reviews, files.meta]
    if source.kind in ("amazon2018", "amazon2023"):
        files = find_amazon_files(folder, source.dataset, _amazon_version(source))
        return [files.reviews, files.meta]
    if source.kind == "recbole":
        return find_recbole_files(folder, source.dataset).all()
    if source.kind == "movielens":
        ml = find_movielens_files(folder)
        return [ml.ratings, ml.movies]
    assert source.interactions_file is not None and source.items_file is not None  # checked by SourceSpec
    paths = [source.resolve(source.interactions_file), source.resolve(source.items_file)]
    for path in paths:
        if not path.is_file():
            raise IngestionError("file not found", path=str(path))
    return paths


def describe_source_files(source: SourceSpec) -> SourceFiles:
    """Sizes and SHA-256 digests of the files ``source`` reads, for lineage metadata."""
    return SourceFiles.of(source.kind, source_files(source))


def _amazon_version(source: SourceSpec) -> Literal["2018", "2023"]:
    return "2023" if source.kind == "amazon2023" else "2018"


def _amazon_files(source: SourceSpec):
    """Review + metadata files of an Amazon-format source (the demo is generated first when needed)."""
    if source.kind == "demo":
        _ensure_demo(source)
    dataset = DEMO_DATASET if source.kind == "demo" else source.dataset
    return find_amazon_files(Path(source.path), dataset, _amazon_version(source))


def iter_interaction_chunks(source: SourceSpec, chunk_rows: int = 200_000) -> Iterator[pd.DataFrame]:
    """Stream the source's interactions as canonical frames of at most ``chunk_rows`` rows."""
    folder = Path(source.path)
    if source.kind in ("demo", "amazon2018", "amazon2023"):
        files = _amazon_files(source)
        yield from iter_amazon_interactions(files.reviews, _amazon_version(source), chunk_rows,
                                            on_bad_line=_bad_line_handler(source))
    elif source.kind == "recbole":
        yield from iter_recbole_interactions(find_recbole_files(folder, source.dataset), chunk_rows)
    elif source.kind == "movielens":
        yield from iter_movielens_interactions(find_movielens_files(folder), chunk_rows,
                                               max_bad_lines=source.max_bad_lines)
    else:
        assert source.interactions_file is not None  # checked by SourceSpec
        yield from iter_tabular_interactions(
            source.resolve(source.interactions_file), source.interaction_columns, source.timestamp_format,
            chunk_rows, separator=source.separator, encoding=source.encoding, on_bad_line=_bad_line_handler(source))


def iter_item_chunks(source: SourceSpec, chunk_rows: int = 50_000) -> Iterator[pd.DataFrame]:
    """Stream the source's item metadata as canonical frames of at most ``chunk_rows`` rows."""
    folder = Path(source.path)
    if source.kind in ("demo", "amazon2018", "amazon2023"):
        files = _amazon_files(source)
        yield from iter_amazon_items(files.meta, _amazon_version(source), chunk_rows,
                                     on_bad_line=_bad_line_handler(source))
    elif source.kind == "recbole":
        yield from iter_recbole_items(find_recbole_files(folder, source.dataset), chunk_rows)
    elif source.kind == "movielens":
        yield from iter_movielens_items(find_movielens_files(folder), chunk_rows,
                                        max_bad_lines=source.max_bad_lines)
    else:
        assert source.items_file is not None  # checked by SourceSpec
        yield from iter_tabular_items(
            source.resolve(source.items_file), source.item_columns, chunk_rows,
            separator=source.separator, encoding=source.encoding, on_bad_line=_bad_line_handler(source))
