"""Interactions + items as CSV or Parquet tables, mapped onto the canonical columns by name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ingestion.errors import IngestionError
from ingestion.loaders import SourceLoader, bad_line_handler, no_ratings_error, register_loader
from ingestion.tabular import iter_tabular_interactions, iter_tabular_items

if TYPE_CHECKING:
    from ingestion.sources import SourceSpec


@register_loader
class TabularLoader(SourceLoader):
    """Needs ``interactions_file`` and ``items_file`` (relative to ``path`` or absolute) and the column mappings
    ``interaction_columns`` (at least user_id, item_id) and ``item_columns`` (at least item_id)."""

    kind = "tabular"
    summary = "interactions + items as CSV or Parquet, with a column mapping"
    suffixes = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz", ".parquet", ".pq")

    def check(self, spec: SourceSpec) -> None:
        if spec.min_rating is not None and not self.has_ratings(spec):  # the reason is the mapping
            raise no_ratings_error(spec, "`interaction_columns` maps no `rating` column")
        super().check(spec)
        missing = [name for name in ("interactions_file", "items_file") if not getattr(spec, name)]
        if missing:
            raise ValueError(f"a tabular source needs {missing}")
        if "user_id" not in spec.interaction_columns or "item_id" not in spec.interaction_columns:
            raise ValueError("a tabular source needs `interaction_columns` mapping at least user_id and item_id")
        if "item_id" not in spec.item_columns:
            raise ValueError("a tabular source needs `item_columns` mapping at least item_id")

    def has_ratings(self, spec: SourceSpec) -> bool:
        return "rating" in spec.interaction_columns

    def files(self, spec: SourceSpec) -> list[Path]:
        assert spec.interactions_file is not None and spec.items_file is not None  # checked by check()
        paths = [spec.resolve(spec.interactions_file), spec.resolve(spec.items_file)]
        for path in paths:
            if not path.is_file():
                raise IngestionError("file not found", path=str(path))
        return paths

    def interactions(self, spec: SourceSpec, chunk_rows: int) -> Iterator[pd.DataFrame]:
        assert spec.interactions_file is not None  # checked by check()
        yield from iter_tabular_interactions(
            spec.resolve(spec.interactions_file), spec.interaction_columns, spec.timestamp_format, chunk_rows,
            separator=spec.separator, encoding=spec.encoding, on_bad_line=bad_line_handler(spec))

    def items(self, spec: SourceSpec, chunk_rows: int) -> Iterator[pd.DataFrame]:
        assert spec.items_file is not None  # checked by check()
        yield from iter_tabular_items(
            spec.resolve(spec.items_file), spec.item_columns, chunk_rows,
            separator=spec.separator, encoding=spec.encoding, on_bad_line=bad_line_handler(spec))
