"""One entry point for every source format: a ``SourceSpec`` in, canonical chunks and lineage out.

``SourceSpec`` is the one definition of the source settings (the Dagster launchpad config is derived from it);
its ``kind`` names a loader registered in ``ingestion.loaders`` (one module per format), which validates the
fields it needs and reads the files. The Dagster assets call ``iter_interaction_chunks`` /
``iter_item_chunks`` and record ``describe_source_files`` in their metadata; the sensor watches the files
with the loader's ``suffixes``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from ingestion.errors import IngestionError
from ingestion.loaders import SourceLoader, loader_for, no_ratings_error, registered_kinds
from ingestion.tabular import TimestampFormat


def _registered_kind(kind: str) -> str:
    loader_for(kind)  # an unknown kind is an error naming the registered ones
    return kind


#: a kind some loader registered (checked against the registry when the spec is built)
SourceKind = Annotated[str, AfterValidator(_registered_kind)]


def _rating_threshold(value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise ValueError(f"min_rating must be a finite rating >= 0, or None to keep every row; got {value!r}")
    return value


#: a rating threshold: finite and >= 0, or None (keep every row)
MinRating = Annotated[float | None, AfterValidator(_rating_threshold)]


class SourceSpec(BaseModel):
    """Where the data is and how to read it.

    ``path`` is a folder. ``dataset`` is the file stem (RecBole ``Scientific`` for ``Scientific.text``;
    Amazon category ``Industrial_and_Scientific``), auto-detected when the folder holds exactly one.
    Tabular sources name their files (relative to ``path`` or absolute) and map canonical column names to
    theirs in ``interaction_columns`` and ``item_columns`` (items). Demo sources are generated into
    ``path`` from ``seed`` / ``n_users`` when the files are absent or were made with other parameters.
    Each kind's loader checks the fields it needs when the spec is built.

    ``min_rating`` turns explicit feedback into implicit: rows rated below it (and unrated rows) are dropped
    before they reach the warehouse, so before the split. Its default, None, keeps every row for every kind:
    Amazon reviews are conventionally all kept, and sequential benchmarks on MovieLens (SASRec, BERT4Rec,
    RecBole) count every rating too; ``4`` is the collaborative-filtering "liked" convention for MovieLens.
    A source without ratings refuses it (tabular without a rating column when the spec is built; RecBole's
    UniSRec layout, or any source whose rows all lack a rating, when read).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: SourceKind = Field("demo", description="Source format: a loader registered in ingestion/loaders/.")
    path: str = Field("", description="Folder with the source files; empty for demo: $DIGR_HOME/demo_raw")
    dataset: str | None = Field(None, description="File stem / category name (auto when unique).")
    interactions_file: str | None = Field(None, description="tabular: interactions CSV/Parquet")
    items_file: str | None = Field(None, description="tabular: items CSV/Parquet")
    interaction_columns: dict[str, str] = Field(
        default_factory=dict,
        description="tabular: canonical name -> source column (user_id, item_id, timestamp, rating)")
    item_columns: dict[str, str] = Field(
        default_factory=dict, description="tabular: canonical name -> source column (item_id, title, ...)")
    timestamp_format: TimestampFormat = Field("unix_s", description="tabular: unix_s | unix_ms | iso")
    separator: str | None = Field(None, description="tabular CSV: separator (auto by suffix when None)")
    encoding: str = Field("utf-8", description="text encoding of the source files")
    seed: int = Field(7, description="demo: generator seed")
    n_users: int = Field(600, ge=1, description="demo: number of users")
    n_motivations: int | None = Field(
        None, ge=2, description="demo: first N of the 25 hidden motivations (smaller catalogue)")
    max_bad_lines: int = Field(
        0, ge=0, description="Skip (and count) up to this many malformed lines; 0 = fail on the first")
    min_rating: MinRating = Field(
        None, description="Keep only interactions rated >= this (e.g. 4 on MovieLens); unrated rows are dropped "
                          "too, and a source without ratings is an error. None keeps every row.")

    @model_validator(mode="after")
    def _loader_accepts(self) -> SourceSpec:
        self.loader.check(self)
        return self

    @property
    def loader(self) -> SourceLoader:
        """The registered loader of this spec's ``kind``."""
        return loader_for(self.kind)

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


def source_files(source: SourceSpec) -> list[Path]:
    """The files a source reads (demo files are generated first when absent or stale)."""
    return source.loader.files(source)


def describe_source_files(source: SourceSpec) -> SourceFiles:
    """Sizes and SHA-256 digests of the files ``source`` reads, for lineage metadata."""
    return SourceFiles.of(source.kind, source_files(source))


@dataclass
class InteractionCounts:
    """What :func:`iter_interaction_chunks` read and kept; filled as the chunks stream (final once exhausted)."""

    min_rating: float | None = None
    read: int = 0
    kept: int = 0
    below_min_rating: int = 0  # rated below ``min_rating``: dropped
    unrated_dropped: int = 0  # no rating while ``min_rating`` is set: dropped

    @property
    def dropped(self) -> int:
        return self.below_min_rating + self.unrated_dropped

    def to_metadata(self) -> dict[str, Any]:
        return asdict(self)


def iter_interaction_chunks(source: SourceSpec, chunk_rows: int = 200_000,
                            counts: InteractionCounts | None = None) -> Iterator[pd.DataFrame]:
    """Stream the source's interactions as canonical frames of at most ``chunk_rows`` rows, in source order.

    With ``source.min_rating`` set, rows rated below it or unrated are dropped; ``counts`` (when given) is
    filled with what was read, kept and dropped. A threshold that keeps no row, or a source that turns
    out to have no rating at all, is a ``ValueError`` naming ``min_rating`` once the stream ends.
    """
    counts = counts if counts is not None else InteractionCounts()
    counts.min_rating = source.min_rating
    threshold = source.min_rating
    max_rating = -math.inf
    for chunk in source.loader.interactions(source, chunk_rows):
        counts.read += len(chunk)
        if threshold is None:
            counts.kept += len(chunk)
            yield chunk
            continue
        rating = chunk["rating"]
        unrated = rating.isna()
        keep = (rating >= threshold).to_numpy()  # NaN compares False: unrated rows go too
        counts.unrated_dropped += int(unrated.sum())
        counts.below_min_rating += int((~keep).sum()) - int(unrated.sum())
        counts.kept += int(keep.sum())
        if not unrated.all():
            max_rating = max(max_rating, float(rating.max()))
        if keep.any():
            yield chunk[keep].reset_index(drop=True)
    if threshold is not None and counts.read and not counts.kept:
        if counts.unrated_dropped == counts.read:
            raise no_ratings_error(source, f"none of its {counts.read} rows has a rating")
        raise ValueError(f"`min_rating` = {threshold:g} keeps none of the {counts.read} interactions "
                         f"(the highest rating is {max_rating:g}); lower it or leave it unset")


def iter_item_chunks(source: SourceSpec, chunk_rows: int = 50_000) -> Iterator[pd.DataFrame]:
    """Stream the source's item metadata as canonical frames of at most ``chunk_rows`` rows."""
    yield from source.loader.items(source, chunk_rows)


__all__ = ["InteractionCounts", "MinRating", "SourceFile", "SourceFiles", "SourceKind", "SourceSpec",
           "describe_source_files", "iter_interaction_chunks", "iter_item_chunks", "registered_kinds", "source_files"]
