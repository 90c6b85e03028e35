"""RecBole / UniSRec atomic files: ``X.text``, ``X.{train,valid,test}.inter``, ``X.item2index``, ``X.user2index``
(or the plain ``X.inter`` + ``X.item``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ingestion.loaders import SourceLoader, no_ratings_error, register_loader
from ingestion.recbole import (
    RecBoleFiles,
    find_recbole_files,
    iter_recbole_interactions,
    iter_recbole_items,
    recbole_has_ratings,
)

if TYPE_CHECKING:
    from ingestion.sources import SourceSpec


@register_loader
class RecBoleLoader(SourceLoader):
    """``dataset`` is the file stem (``Scientific`` for ``Scientific.text``), auto when the folder holds one.

    UniSRec layout: each user's whole sequence is rebuilt from their train, valid and test rows together (the
    test row alone lacks what lies beyond its history cap), so the leave-one-out split of it reproduces the
    published split; see ``ingestion.recbole`` and ``python -m bench.published_split``."""

    kind = "recbole"
    summary = "RecBole/UniSRec atomic files `X.text`, `X.{train,valid,test}.inter`, `X.item2index`, `X.user2index`"
    suffixes = (".inter", ".text", ".item", ".item2index", ".user2index")

    def recbole_files(self, spec: SourceSpec) -> RecBoleFiles:
        return find_recbole_files(Path(spec.path), spec.dataset)

    def files(self, spec: SourceSpec) -> list[Path]:
        return self.recbole_files(spec).all()

    def interactions(self, spec: SourceSpec, chunk_rows: int) -> Iterator[pd.DataFrame]:
        files = self.recbole_files(spec)
        # only the files tell (UniSRec: never; plain: a rating column), so refuse before streaming them
        if spec.min_rating is not None and not recbole_has_ratings(files):
            raise no_ratings_error(spec, "the UniSRec layout has no rating" if "all" not in files.inter
                                   else f"{files.inter['all'].name} has no rating column")
        yield from iter_recbole_interactions(files, chunk_rows)

    def items(self, spec: SourceSpec, chunk_rows: int) -> Iterator[pd.DataFrame]:
        yield from iter_recbole_items(self.recbole_files(spec), chunk_rows)
