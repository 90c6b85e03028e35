"""Training throughput: the Lightning trainer vs a plain PyTorch loop on the same model and data.

Both sides train the T5 generator (``arch: t5``; same seed, same AdamW groups, same warmup/decay
schedule, same gradient clipping, same seeded batches) on synthetic leave-one-out data. Epochs alternate
(Lightning, plain, Lightning, ...) after one warm-up epoch each, so changing machine load hits both alike;
the overhead is the median over rounds of ``plain/lightning - 1`` (target <= 10%).

    .venv/bin/python bench/bench_training.py [--users 100 --rounds 8 --threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning as L  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402
from transformers import get_linear_schedule_with_warmup  # noqa: E402

from training.generator import GeneratorConfig, GeneratorModule  # noqa: E402
from training.sequence_data import SequenceDataModule  # noqa: E402
from training.sid_vocab import SidVocab  # noqa: E402


def synthetic_data(n_users: int, n_items: int, seed: int) -> tuple[pd.DataFrame, SidVocab]:
    """Random 3-level SIDs (32 codes per level) and user sequences of 8-25 items."""
    rng = np.random.default_rng(seed)
    codes = rng.choice(32**3, size=n_items, replace=False)
    sid = pd.DataFrame({"item_id": [f"i{i}" for i in range(n_items)],
                        "c0": codes // 1024, "c1": (codes // 32) % 32, "c2": codes % 32})
    rows = []
    for u in range(n_users):
        items = rng.choice(n_items, size=int(rng.integers(8, 26)), replace=False)
        n = len(items)
        for pos, item in enumerate(items):
            split = "test" if pos == n - 1 else "valid" if pos == n - 2 else "train"
            rows.append((f"u{u}", f"i{item}", pos, 1.0, pos, split))
    splits = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating", "position", "split"])
    return splits, SidVocab.from_frame(sid)


class EpochTimer(Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.times.append(time.perf_counter() - self._t)


class LightningSide:
    """One Lightning epoch per call (a fresh Trainer on the same module; only the epoch is timed)."""

    def __init__(self, dm: SequenceDataModule, vocab: SidVocab, config: GeneratorConfig) -> None:
        L.seed_everything(config.seed, verbose=False)
        self.module = GeneratorModule(vocab, config)
        self.dm, self.config = dm, config

    def epoch(self) -> float:
        timer = EpochTimer()
        trainer = L.Trainer(
            accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
            num_sanity_val_steps=0, gradient_clip_val=self.config.gradient_clip_val, callbacks=[timer],
        )
        trainer.fit(self.module, train_dataloaders=self.dm.train_dataloader())
        return timer.times[0]


class PlainSide:
    """The same model, optimiser groups, schedule, clipping and batches in a hand-written loop."""

    def __init__(self, dm: SequenceDataModule, vocab: SidVocab, config: GeneratorConfig) -> None:
        L.seed_everything(config.seed, verbose=False)
        self.model = GeneratorModule(vocab, config).model
        named = list(self.model.named_parameters())
        decay = [p for n, p in named if p.ndim >= 2 and "norm" not in n.lower()]
        no_decay = [p for n, p in named if p.ndim < 2 or "norm" in n.lower()]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
        self.loader = dm.train_dataloader()
        total = len(self.loader) * config.max_epochs
        self.sched = get_linear_schedule_with_warmup(self.opt, int(config.warmup_ratio * total), total)
        self.config, self.n_epochs = config, 0

    def epoch(self) -> float:
        self.model.train()
        self.loader.sampler.set_epoch(self.n_epochs)
        self.n_epochs += 1
        t = time.perf_counter()
        for batch in self.loader:
            loss = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              labels=batch["labels"]).loss
            self.opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.gradient_clip_val)
            self.opt.step()
            self.sched.step()
        return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--items", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=8, help="timed (Lightning epoch, plain epoch) pairs")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    splits, vocab = synthetic_data(args.users, args.items, seed=0)
    # the T5 layout (one window per sample) that both sides' loops read; the default arch is item_causal
    config = GeneratorConfig(arch="t5", batch_size=args.batch_size, max_epochs=args.rounds + 1)
    dm = SequenceDataModule(splits, vocab, batch_size=args.batch_size, seed=0)
    n = len(dm.datasets["train"])
    print(f"train samples {n}, batch {args.batch_size}, model d_model={config.d_model} "
          f"layers={config.num_encoder_layers}+{config.num_decoder_layers}, threads {args.threads}")
    light_side, plain_side = LightningSide(dm, vocab, config), PlainSide(dm, vocab, config)
    light_side.epoch(), plain_side.epoch()  # warm-up
    light, plain = [], []
    for r in range(args.rounds):
        light.append(n / light_side.epoch())
        plain.append(n / plain_side.epoch())
        print(f"  round {r}: lightning {light[-1]:8.1f} samples/s   plain {plain[-1]:8.1f} samples/s")

    ratios = [p / lt for p, lt in zip(plain, light, strict=True)]
    overhead = statistics.median(ratios) - 1
    print()
    head = f"samples/s (median of {args.rounds} epochs)"
    print(f"| {'loop':<11} | {head} |")
    print(f"|{'-' * 13}|{'-' * (len(head) + 2)}|")
    print(f"| {'lightning':<11} | {statistics.median(light):>{len(head)}.1f} |")
    print(f"| {'plain torch':<11} | {statistics.median(plain):>{len(head)}.1f} |")
    print(f"lightning overhead = median(plain/lightning per round) - 1 = {100 * overhead:+.1f}%  "
          f"[{'OK' if overhead <= 0.10 else 'ABOVE'} target <= 10%]")


if __name__ == "__main__":
    main()
