"""`make bench`: every micro-benchmark in one go; each prints its own table (ratios against a
baseline measured in the same run)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

BENCHES = [
    ("ingestion (Amazon Scientific)", ["bench/bench_ingestion.py"]),
    ("IEID: encoder throughput, RQ-VAE, codebook health", ["bench/bench_ieid.py"]),
    ("constrained beam search vs generate()", ["bench/bench_decoding.py"]),
    ("Lightning vs plain PyTorch training loop", ["bench/bench_training.py"]),
    ("LLM mining: concurrency, warm cache, batching", ["bench/bench_mining.py"]),
]


def main() -> int:
    root = Path(__file__).resolve().parents[1]
    failed = []
    for title, argv in BENCHES:
        print(f"\n# {title}\n", flush=True)
        t0 = time.perf_counter()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
        code = subprocess.call([sys.executable, *argv], cwd=root, env=env)
        print(f"\n({title}: {time.perf_counter() - t0:.0f} s, exit {code})", flush=True)
        if code:
            failed.append(title)
    if failed:
        print(f"\nFAILED: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
