"""Generator cost: the item-level model (``arch="item_causal"``) vs the T5 over SID tokens, same data, same run.

Both train with their default ``GeneratorConfig`` (batch 256, history cap 50) on the same synthetic leave-one-out
data and the same SIDs; rounds alternate (T5, item-level, T5, ...) after a warm-up, so changing machine load
hits both alike. Measured per round: training throughput in target items per second (T5: one sliding window per
target; item-level: every target of a user's chunk in one pass) and ranking throughput in users per second
(trie-constrained beam search, width 20, over the valid users). The epoch estimate is ``train targets /
train rate + valid users / ranking rate`` (one training pass and one validation pass); ratios are medians over
rounds.

    .venv/bin/python bench/bench_generator.py [--users 2000 --items 3000 --rounds 3 --threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.generator import GeneratorConfig, GeneratorModule  # noqa: E402
from training.sequence_data import SequenceDataModule, layout_of  # noqa: E402
from training.settings import SequenceSettings  # noqa: E402
from training.sid_vocab import SidVocab  # noqa: E402

ARCHS = ("t5", "item_causal")


def synthetic(n_users: int, n_items: int, seed: int) -> tuple[pd.DataFrame, SidVocab]:
    """3-level SIDs (64 codes per level, unique) and user sequences of 5-30 items (Amazon-like: short)."""
    rng = np.random.default_rng(seed)
    codes = rng.choice(64**3, size=n_items, replace=False)
    vocab = SidVocab.from_sids([f"i{i}" for i in range(n_items)],
                               [(c // 4096, (c // 64) % 64, c % 64) for c in codes.tolist()])
    rows = []
    for u in range(n_users):
        seq = rng.choice(n_items, size=int(rng.integers(5, 31)), replace=False)
        for p, item in enumerate(seq):
            split = "test" if p == len(seq) - 1 else "valid" if p == len(seq) - 2 else "train"
            rows.append((f"u{u}", f"i{item}", p, 1.0, p, split))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating", "position", "split"]), vocab


def measure(arch: str, splits: pd.DataFrame, vocab: SidVocab, steps: int, rank_users: int) -> dict:
    """One round: ``steps`` training steps and ranking ``rank_users`` valid users with a fresh model."""
    config = GeneratorConfig(arch=arch, batch_size=256, seed=0)
    sequence = SequenceSettings(max_history=50, use_user_interests=False, history_text=False)
    dm = SequenceDataModule.for_settings(splits, vocab, sequence, batch_size=256, seed=0, user_prefix=None,
                                         eval_batch_size=256, layout=layout_of(arch))
    module = GeneratorModule(vocab, config, sequence)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    module.train()
    targets, t0 = 0, time.perf_counter()
    for batch in islice(dm.train_dataloader(), steps):
        loss = module(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        targets += int((batch["items"][:, 1:] >= 0).sum()) if "items" in batch else len(batch["input_ids"])
    train_s = time.perf_counter() - t0
    users, t0 = 0, time.perf_counter()
    for batch in dm.loader("valid"):
        module.rank(batch, beam_width=20, top_k=10)
        users += len(batch["target_index"])
        if users >= rank_users:
            break
    rank_s = time.perf_counter() - t0
    n_targets = len(dm.samples["train"])
    out = {"targets_per_s": targets / train_s, "users_per_s": users / rank_s}
    out["epoch_s"] = n_targets / out["targets_per_s"] + len(dm.samples["valid"]) / out["users_per_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6, help="training steps per round and model")
    parser.add_argument("--rank-users", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    splits, vocab = synthetic(args.users, args.items, seed=0)
    n_train = int((splits["split"] == "train").sum()) - splits["user_id"].nunique()
    print(f"{args.users} users, {args.items} items, {n_train} train targets, {args.threads} thread(s), "
          f"{args.rounds} rounds after a warm-up")
    for arch in ARCHS:  # warm-up: first-call allocations and kernel selection
        measure(arch, splits, vocab, 2, 64)
    rounds: dict[str, list[dict]] = {a: [] for a in ARCHS}
    for _ in range(args.rounds):
        for arch in ARCHS:
            rounds[arch].append(measure(arch, splits, vocab, args.steps, args.rank_users))
    med = {a: {k: statistics.median(r[k] for r in rounds[a]) for k in rounds[a][0]} for a in ARCHS}
    base = med["t5"]
    print("\n| model | train targets/s | ranking users/s | est. epoch (s) | epoch time vs T5 |\n"
          "|---|---:|---:|---:|---:|")
    for arch in ARCHS:
        m = med[arch]
        print(f"| {arch} | {m['targets_per_s']:,.0f} | {m['users_per_s']:,.1f} | {m['epoch_s']:,.1f} | "
              f"{m['epoch_s'] / base['epoch_s']:.3f}× |")
    speedup = base["epoch_s"] / med["item_causal"]["epoch_s"]
    print(f"\nitem-level epoch {speedup:.1f}× faster than T5 (median of {args.rounds} rounds; target ≥ 4×)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
