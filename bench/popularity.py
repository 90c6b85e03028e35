"""The most-popular baseline on Scientific as a result record (deterministic: no seed, no training).

    python -m bench.popularity [--data DIR]     # appends one record to bench/results/scientific.jsonl
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.popularity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="RecBole files (default $DIGR_SCIENTIFIC_DATA)")
    parser.add_argument("--results", default="scientific")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: bench/results")
    args = parser.parse_args(argv)

    from bench.profiles import get_profile
    from bench.results import RANK_CUTOFF, RESULTS_DIR, append_baseline
    from bench.sasrec_recipe import default_data, load_splits
    from evaluation.baselines import BaselineInputs, get_baseline

    directory = args.results_dir or RESULTS_DIR
    splits, items = load_splits(args.data or default_data())
    started = time.perf_counter()
    inputs = BaselineInputs(splits, tuple(items), max_history=get_profile("cpu").max_history,
                            ks=(5, 10, RANK_CUTOFF))
    result = get_baseline("popularity").evaluate(inputs)
    append_baseline(result, splits, dataset="scientific", model="most-popular", profile="deterministic", seed=0,
                    stopped="not_trained", config={"baseline": "popularity", "counts": "train split only"},
                    wall_s=time.perf_counter() - started, name=args.results, directory=directory)
    print(f"most-popular: test NDCG@10 {result.metrics['test']['ndcg@10']:.4f}, HR@10 "
          f"{result.metrics['test']['hr@10']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
