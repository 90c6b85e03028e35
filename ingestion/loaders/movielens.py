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
    """Every row is an explicit 0.5-5 star rating.

    ``min_rating`` defaults to None (every rating is an interaction) here too, not to the >= 4 "positive"
    convention of the collaborative-filtering literature: the sequential benchmarks this pipeline is compared
    with (SASRec, BERT4Rec, RecBole's ml-1m) count every rating as implicit feedback, and one setting that
    silently meant something else per kind would hide what was dropped. Set ``min_rating: 4`` to keep only
    liked movies; the ingestion metadata reports how many rows it dropped."""

    kind = "movielens"
    summary = "`ml-100k` (`u.data`, `u.item`) or `ml-1m` (`ratings.dat`, `movies.dat`)"
    suffixes = (".data", ".item", ".dat", ".csv")

    def has_ratings(self, spec: SourceSpec) -> bool:
        return True

    def files(self, spec: SourceSpec) -> list[Path]:
        found = find_movielens_files(Path(spec.path))
        return [found.ratings, found.movies]

    def interactions(self, spec: SourceSpec, chunk_rows: int) -> Iterator[pd.DataFrame]:
        yield from iter_movielens_interactions(find_movielens_files(Path(spec.path)), chunk_rows,
                                               max_bad_lines=spec.max_bad_lines)

    def items(self, spec: SourceSpec, chunk_rows: int) -> Iterator[pd.DataFrame]:
        yield from iter_movielens_items(find_movielens_files(Path(spec.path)), chunk_rows,
                                        max_bad_lines=spec.max_bad_lines)
