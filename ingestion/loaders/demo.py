"""The demo source: a seeded catalogue generated into ``path`` on first use, read as Amazon 2018 files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ingestion.amazon import AmazonFiles, find_amazon_files
from ingestion.demo_data import DEMO_DATASET, demo_files_exist, demo_motivation_names, write_demo_dataset
from ingestion.loaders import register_loader
from ingestion.loaders.amazon import Amazon2018Loader

if TYPE_CHECKING:
    from ingestion.sources import SourceSpec


@register_loader
class DemoLoader(Amazon2018Loader):
    """``seed``, ``n_users`` and ``n_motivations`` pick the data; the files are (re)generated when absent or
    made with other parameters. The pipeline fills an empty ``path`` with ``$DIGR_HOME/demo_raw``."""

    kind = "demo"
    summary = ("generated on first use: a seeded catalogue whose users buy for hidden motivations, written as "
               "raw Amazon 2018 files and read through the Amazon 2018 loader")

    def check(self, spec: SourceSpec) -> None:
        super().check(spec)
        available = len(demo_motivation_names())
        if spec.n_motivations is not None and spec.n_motivations > available:
            raise ValueError(f"demo: n_motivations must be <= {available}, got {spec.n_motivations}")

    def amazon_files(self, spec: SourceSpec) -> AmazonFiles:
        folder = Path(spec.path)
        n_motivations = spec.n_motivations or len(demo_motivation_names())
        if not demo_files_exist(folder, seed=spec.seed, n_users=spec.n_users, n_motivations=n_motivations):
            write_demo_dataset(folder, seed=spec.seed, n_users=spec.n_users, n_motivations=n_motivations)
        return find_amazon_files(folder, DEMO_DATASET, self.version)
