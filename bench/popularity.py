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
    from bench.results import (
        METRIC_NAMES,
        RANK_CUTOFF,
        RESULTS_DIR,
        ResultRecord,
        append,
        code_commit,
        config_hash,
        machine_description,
        ranks_by_user,
        write_split,
    )
    from bench.sasrec_recipe import default_data, load_splits
    from evaluation.baselines import BaselineInputs, get_baseline

    directory = args.results_dir or RESULTS_DIR
    splits, items = load_splits(args.data or default_data())
    started = time.perf_counter()
    inputs = BaselineInputs(splits, tuple(items), max_history=get_profile("cpu").max_history,
                            ks=(5, 10, RANK_CUTOFF))
    result = get_baseline("popularity").evaluate(inputs)
    split_hash = write_split(splits, directory)
    config = {"baseline": "popularity", "counts": "train split only"}
    append(ResultRecord(
        dataset="scientific", model="most-popular", profile="deterministic", seed=0,
        metrics={s: {m: float(result.metrics[s][m]) for m in METRIC_NAMES} for s in ("valid", "test")},
        ranks={s: ranks_by_user(result.user_ids[s], result.ranks[s].tolist(), split_hash, directory)
               for s in ("valid", "test")},
        split_hash=split_hash, cutoff=result.cutoff, stopped="not_trained",
        wall_s=round(time.perf_counter() - started, 1), device="cpu", machine=machine_description(),
        commit=code_commit(), config=config, config_hash=config_hash(config)), args.results, directory)
    print(f"most-popular: test NDCG@10 {result.metrics['test']['ndcg@10']:.4f}, HR@10 "
          f"{result.metrics['test']['hr@10']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
