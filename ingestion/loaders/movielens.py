"""MovieLens ``ml-100k`` (``u.data``, ``u.item``), ``ml-1m`` (``ratings.dat``, ``movies.dat``) and
``ml-latest`` (``ratings.csv``, ``movies.csv``), detected by file name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ingestion.loaders import SourceLoader, register_loader
from ingestion.movielens import find_movielens_files, iter_movielens_interactions, iter_movielens_items

if TYPE_CHECKING:
    from ingestion.sources import SourceSpec


@register_loader
class MovieLensLoader(SourceLoader):
    kind = "movielens"
    summary = "`ml-100k` (`u.data`, `u.item`) or `ml-1m` (`ratings.dat`, `movies.dat`)"
    suffixes = (".data", ".item", ".dat", ".csv")

    def files(self, spec: SourceSpec) -> list[Path]:
        found = find_movielens_files(Path(spec.path))
        return [found.ratings, found.movies]

    def interactions(self, spec: SourceSpec, chunk_rows: int) -> Iterator[pd.DataFrame]:
        yield from iter_movielens_interactions(find_movielens_files(Path(spec.path)), chunk_rows,
                                               max_bad_lines=spec.max_bad_lines)

    def items(self, spec: SourceSpec, chunk_rows: int) -> Iterator[pd.DataFrame]:
        yield from iter_movielens_items(find_movielens_files(Path(spec.path)), chunk_rows,
                                        max_bad_lines=spec.max_bad_lines)
