"""Semantic-ID tables from other RQ-VAE seeds, for the codebook's share of the benchmark variance.

The generator variants read ``semantic_ids<suffix>.parquet`` from a ``bench.scientific export-tables`` folder;
this trains the RQ-VAE on the same exported item embeddings with each ``--seeds`` value (everything else at the
``semantic_ids`` asset's defaults, trained by the same library code the asset calls) and writes
``semantic_ids{,_plain}_cb<seed>.parquet`` beside them, plus each codebook's health in ``codebooks.jsonl``. The
seed the asset used (0) is rebuilt too and compared with the exported table: the same config and data must
give the same SIDs.

    python -m bench.codebooks /tmp/sci/tables --seeds 0 1 2
    python -m bench.train_variants /tmp/sci/tables --sid-suffix _cb1 --codebook-seed 1 ...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from training.codebook_health import codebook_health
from training.rqvae import train_rqvae
from training.semantic_ids import SemanticIdTable, assign_suffixes
from training.settings import RQVAEConfig

#: (embeddings table, SID table) per kind: with interests in the item text, and plain (TIGER-style)
KINDS = {"interest": ("item_embeddings", "semantic_ids"), "plain": ("item_embeddings_plain", "semantic_ids_plain")}


def codebook_table(embeddings: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, dict]:
    """The semantic_ids frame and codebook health of an RQ-VAE with ``seed`` (asset defaults otherwise)."""
    emb = embeddings.sort_values("item_id", kind="stable")  # the asset reads its source ordered by item_id
    x = np.stack([np.asarray(v, dtype=np.float32) for v in emb["embedding"]])
    result = train_rqvae(x, RQVAEConfig(seed=seed), num_threads=1)
    item_ids = emb["item_id"].tolist()
    suffix = assign_suffixes(result.codes, item_ids, result.distances)
    health = codebook_health(result.codes, result.config.codebook_size, suffix=suffix).to_metadata()
    return SemanticIdTable(item_ids, result.codes, suffix).to_frame(), {**health,
                                                                        "train_seconds": result.train_seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tables", type=Path, help="a `bench.scientific export-tables` folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--kinds", nargs="+", choices=sorted(KINDS), default=sorted(KINDS))
    args = parser.parse_args(argv)
    mismatches = 0
    for kind in args.kinds:
        source, target = KINDS[kind]
        path = args.tables / f"{source}.parquet"
        if not path.exists():
            print(f"skip {kind}: {path} not found", file=sys.stderr)
            continue
        embeddings = pd.read_parquet(path)
        for seed in args.seeds:
            t0 = time.perf_counter()
            frame, health = codebook_table(embeddings, seed)
            out = args.tables / f"{target}_cb{seed}.parquet"
            frame.to_parquet(out, index=False)
            exported = args.tables / f"{target}.parquet"
            same = None
            if seed == 0 and exported.exists():  # the asset's seed: must reproduce the exported table
                reference = pd.read_parquet(exported).sort_values("item_id").reset_index(drop=True)
                same = bool(reference["sid"].tolist() == frame.sort_values("item_id")["sid"].tolist())
                mismatches += not same
            record = {"kind": kind, "codebook_seed": seed, "table": out.name, "reproduces_export": same,
                      "wall_s": round(time.perf_counter() - t0, 1), **health}
            with (args.tables / "codebooks.jsonl").open("a") as fh:
                fh.write(json.dumps(record, default=float) + "\n")
            print(f"{kind} seed {seed}: {out.name}, collision rate {health['collision_rate']:.4f}, "
                  f"reproduces export: {same}, {record['wall_s']} s")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
