"""Ingestion of the real Amazon Scientific data (RecBole/UniSRec files): wall time, rows/s, peak memory,
and the k-core + leave-one-out split, each against reading the raw files alone as the baseline."""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import pandas as pd

from ingestion.sources import SourceSpec, iter_interaction_chunks, iter_item_chunks
from ingestion.splits import split_interactions

DEFAULT = Path(os.environ.get("DIGR_SCIENTIFIC_DATA",
                              Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon-scientific"))


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT)
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"no data at {args.data}; set DIGR_SCIENTIFIC_DATA or --data")
    spec = SourceSpec(kind="recbole", path=str(args.data), dataset="Scientific")
    before = _peak_mib()

    t0 = time.perf_counter()
    raw_bytes = sum(len(p.read_bytes()) for p in args.data.glob("Scientific.*"))
    t_read = time.perf_counter() - t0

    t0 = time.perf_counter()
    inter = pd.concat(list(iter_interaction_chunks(spec)), ignore_index=True)
    items = pd.concat(list(iter_item_chunks(spec)), ignore_index=True)
    t_load = time.perf_counter() - t0
    after_load = _peak_mib()

    t0 = time.perf_counter()
    splits, stats = split_interactions(inter, k_core=5, known_items=items["item_id"])
    t_split = time.perf_counter() - t0

    rows = [
        ("read raw files (baseline)", t_read, f"{raw_bytes / 1e6:.1f} MB", 1.0),
        ("parse to canonical frames", t_load, f"{len(inter):,} interactions, {len(items):,} items", t_load / t_read),
        ("dedup + 5-core + leave-one-out", t_split, f"{stats.users:,} users, {stats.items:,} items",
         t_split / t_read),
    ]
    print(f"\n## Ingestion: {args.data}\n")
    print("| stage | seconds | size | × baseline |\n|---|---:|---|---:|")
    for name, sec, size, ratio in rows:
        print(f"| {name} | {sec:.3f} | {size} | {ratio:.1f} |")
    print(f"\npeak RSS: {before:.0f} MiB after imports → {after_load:.0f} MiB after loading "
          f"(+{after_load - before:.0f} MiB); {len(inter) / t_load:,.0f} interactions/s")


if __name__ == "__main__":
    main()
