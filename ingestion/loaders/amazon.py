"""Amazon review dumps: 2018 (``<Cat>.json.gz`` + ``meta_<Cat>.json.gz``) and 2023 (``.jsonl.gz``), streamed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import pandas as pd

from ingestion.amazon import (
    AMAZON_SUFFIXES,
    AmazonFiles,
    AmazonVersion,
    find_amazon_files,
    iter_amazon_interactions,
    iter_amazon_items,
)
from ingestion.loaders import SourceLoader, bad_line_handler, register_loader

if TYPE_CHECKING:
    from ingestion.sources import SourceSpec


class AmazonLoader(SourceLoader):
    """Reviews + item metadata of one category in ``path``; ``dataset`` names it (auto when unique)."""

    version: ClassVar[AmazonVersion] = "2018"

    def amazon_files(self, spec: SourceSpec) -> AmazonFiles:
        return find_amazon_files(Path(spec.path), spec.dataset, self.version)

    def has_ratings(self, spec: SourceSpec) -> bool:
        return True  # every review has its 1-5 star rating (a review without one is a bad line)

    def files(self, spec: SourceSpec) -> list[Path]:
        found = self.amazon_files(spec)
        return [found.reviews, found.meta]

    def interactions(self, spec: SourceSpec, chunk_rows: int) -> Iterator[pd.DataFrame]:
        yield from iter_amazon_interactions(self.amazon_files(spec).reviews, self.version, chunk_rows,
                                            on_bad_line=bad_line_handler(spec))

    def items(self, spec: SourceSpec, chunk_rows: int) -> Iterator[pd.DataFrame]:
        yield from iter_amazon_items(self.amazon_files(spec).meta, self.version, chunk_rows,
                                     on_bad_line=bad_line_handler(spec))


@register_loader
class Amazon2018Loader(AmazonLoader):
    kind = "amazon2018"
    summary = "`<Cat>.json.gz` reviews + `meta_<Cat>.json.gz` (streamed)"
    suffixes = AMAZON_SUFFIXES["2018"]
    version = "2018"


@register_loader
class Amazon2023Loader(AmazonLoader):
    kind = "amazon2023"
    summary = "`<Cat>.jsonl.gz` + `meta_<Cat>.jsonl.gz` (streamed)"
    suffixes = AMAZON_SUFFIXES["2023"]
    version = "2023"
