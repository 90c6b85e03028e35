"""SASRec with the recipe behind its published figure on Amazon Scientific, trained on CPU and recorded.

    python -m bench.sasrec_recipe --seeds 0 1 2 [--data DIR] [--threads 2]
    python -m bench.sasrec_recipe --seeds 0 --set padding=left --no-record   # an ablation of one knob

The data are the UniSRec preprocessing as RecBole atomic files (``$DIGR_SCIENTIFIC_DATA``, default
``../shared/data/amazon-scientific``), read through the project's loader (a ``recbole`` :class:`SourceSpec`) and
split by :func:`ingestion.splits.split_interactions` with ``k_core=1, dedup="event"`` and the item catalogue as
the known items, as the benchmark does. SASRec is the registered baseline (``evaluation.baselines`` key
``sasrec``) with the settings of the named profile ``published-recipe``
(:data:`evaluation.baselines.sasrec.PUBLISHED_RECIPE`); the history cap (50), the seed and the accelerator
("cpu") are the run's, as for every baseline. Valid is ranked with the train prefix as history, test with the
train prefix + the valid item (both capped at 50), over the whole catalogue.

Each seed appends one :class:`bench.results.ResultRecord` (profile ``published-recipe``, model ``SASRec``) to
``bench/results/<results>.jsonl``: metrics, per-user ranks within the top 20 aligned with the stored split file,
epochs, how training ended, wall time, device, machine, commit and the config with its hash. ``--set`` changes a
field of the recipe for an ablation; such a run is not the published recipe and is only recorded under its
own profile name (``published-recipe[padding=left]``) when ``--record-ablation`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

PROFILE = "published-recipe"
MODEL = "SASRec"
DATASET = "scientific"
MAX_HISTORY = 50  # the published histories' cap (UniSRec preprocessing), RecBole's MAX_ITEM_LIST_LENGTH
KS = (5, 10, 20)  # 20 = bench.results.RANK_CUTOFF: per-user ranks are cut there
#: the published figure on this split (UniSRec, Hou et al., KDD 2022)
PUBLISHED = {"hr@10": 0.1080, "ndcg@10": 0.0553}


def default_data() -> Path:
    root = Path(__file__).resolve().parents[1]
    return Path(os.environ.get("DIGR_SCIENTIFIC_DATA", root.parent / "shared" / "data" / "amazon-scientific"))


def load_splits(folder: Path) -> tuple[Any, list[str]]:
    """The benchmark's split of the RecBole files in ``folder`` and the catalogue ranked over (sorted ids)."""
    import pandas as pd

    from evaluation.sasrec import catalogue
    from ingestion.sources import SourceSpec, iter_interaction_chunks, iter_item_chunks
    from ingestion.splits import split_interactions

    spec = SourceSpec(kind="recbole", path=str(folder))
    interactions = pd.concat(list(iter_interaction_chunks(spec)), ignore_index=True)
    items = pd.concat(list(iter_item_chunks(spec)), ignore_index=True)
    splits, _stats = split_interactions(interactions, k_core=1, dedup="event", known_items=items["item_id"])
    return splits, catalogue(splits)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs (values read as JSON, else as strings) for fields of the recipe."""
    from evaluation.baselines.sasrec import SASRecConfig

    names = {f.name for f in fields(SASRecConfig)} - {"max_len", "seed", "accelerator"}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or key not in names:
            raise SystemExit(f"--set {pair!r}: expected FIELD=VALUE with FIELD one of {sorted(names)}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _epoch_printer() -> Any:
    """A Lightning logger that prints each epoch's validation NDCG@10 and the time since the last epoch."""
    from lightning.pytorch.loggers.logger import Logger

    class EpochPrinter(Logger):
        def __init__(self) -> None:
            super().__init__()
            self.last = time.perf_counter()
            self.val: dict[str, float] = {}

        @property
        def name(self) -> str:
            return "epochs"

        @property
        def version(self) -> str:
            return "0"

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            pass

        def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
            # Lightning logs an epoch's validation metrics first, then its train loss: print on the latter
            self.val.update({k: v for k, v in metrics.items() if k.startswith("val_")})
            if "train_loss" not in metrics:
                return
            now = time.perf_counter()
            print(f"  epoch {int(metrics.get('epoch', -1)):3d}  {now - self.last:6.1f} s  "
                  f"train_loss {metrics['train_loss']:.4f}  val ndcg@10 {self.val.get('val_ndcg@10', float('nan')):.4f}"
                  f"  hr@10 {self.val.get('val_hr@10', float('nan')):.4f}", flush=True)
            self.last = now

    return EpochPrinter()


def run_seed(splits: Any, items: list[str], seed: int, overrides: dict[str, Any], work: Path) -> dict[str, Any]:
    """Train and evaluate one seed through the registered baseline; the result and its cost."""
    from evaluation.baselines import BaselineInputs, get_baseline
    from evaluation.baselines.sasrec import PUBLISHED_RECIPE

    settings = replace(PUBLISHED_RECIPE, **overrides)
    inputs = BaselineInputs(splits, tuple(items), max_history=MAX_HISTORY, seed=seed, accelerator="cpu",
                            checkpoint_dir=work / f"seed{seed}", ks=KS, logger=_epoch_printer())
    baseline = get_baseline("sasrec")
    resolved = baseline.resolve(inputs, settings)
    started = time.perf_counter()
    result = baseline.evaluate(inputs, resolved)
    wall = time.perf_counter() - started
    return {"result": result, "settings": resolved, "wall_s": wall}


def record(run: dict[str, Any], splits: Any, seed: int, profile: str, results: str, directory: Path,
           commit: str | None = None) -> Path:
    """Append the run as a result record; ``commit`` is the code the run started from (default: now)."""
    from bench.results import append_baseline
    from config_schema import to_mapping

    result, settings = run["result"], run["settings"]
    return append_baseline(
        result, splits, dataset=DATASET, model=MODEL, profile=profile, seed=seed,
        stopped="early_stopping" if result.info["stopped_early"] else "cap", config=to_mapping(settings),
        wall_s=run["wall_s"], name=results, epochs=int(result.info["epochs"]), max_epochs=settings.max_epochs,
        commit=commit, directory=directory)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--data", type=Path, default=None, help="RecBole files (default $DIGR_SCIENTIFIC_DATA)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--results", default=DATASET, help="results file name under bench/results (no .jsonl)")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: bench/results")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="change one field of the recipe (an ablation; not recorded unless --record-ablation)")
    parser.add_argument("--no-record", action="store_true", help="print the results, append nothing")
    parser.add_argument("--record-ablation", action="store_true",
                        help="record a --set run under the profile published-recipe[FIELD=VALUE,...]")
    args = parser.parse_args(argv)

    import torch

    from bench.results import RESULTS_DIR, code_commit

    commit = code_commit()  # the code the runs start from (a commit made while they train is not theirs)
    torch.set_num_threads(args.threads)
    overrides = parse_overrides(args.overrides)
    profile = PROFILE if not overrides else f"{PROFILE}[{','.join(args.overrides)}]"
    recording = not args.no_record and (not overrides or args.record_ablation)
    directory = args.results_dir or RESULTS_DIR
    folder = args.data or default_data()

    t0 = time.perf_counter()
    splits, items = load_splits(folder)
    n_train = int((splits["split"] == "train").sum())
    print(f"{folder}: {splits['user_id'].nunique()} users, {len(items)} items, {len(splits)} interactions "
          f"({n_train} train) in {time.perf_counter() - t0:.1f} s; profile {profile}, {args.threads} threads, "
          f"{'recording to ' + str(directory / (args.results + '.jsonl')) if recording else 'not recording'}",
          flush=True)
    summary = []
    with tempfile.TemporaryDirectory(prefix="sasrec-recipe-") as work:
        for seed in args.seeds:
            print(f"seed {seed}:", flush=True)
            run = run_seed(splits, items, seed, overrides, Path(work))
            result, info = run["result"], run["result"].info
            row = {"seed": seed, "profile": profile, "epochs": info["epochs"],
                   "stopped": "early_stopping" if info["stopped_early"] else "cap",
                   "train_examples": info["train_examples"], "wall_s": round(run["wall_s"], 1),
                   "s_per_epoch": round(run["wall_s"] / max(info["epochs"], 1), 1),
                   "best_epoch": 1 + max(range(len(info["history"])),
                                         key=lambda i: info["history"][i].get("val_ndcg@10", -1.0)),
                   "valid": result.metrics["valid"], "test": result.metrics["test"]}
            if recording:
                row["recorded"] = str(record(run, splits, seed, profile, args.results, directory, commit))
            print(json.dumps(row), flush=True)
            summary.append(row)
    for row in summary:
        t = row["test"]
        print(f"seed {row['seed']}: test NDCG@10 {t['ndcg@10']:.4f} (published {PUBLISHED['ndcg@10']:.4f}, "
              f"{t['ndcg@10'] / PUBLISHED['ndcg@10'] - 1:+.1%}), HR@10 {t['hr@10']:.4f} (published "
              f"{PUBLISHED['hr@10']:.4f}, {t['hr@10'] / PUBLISHED['hr@10'] - 1:+.1%}); valid NDCG@10 "
              f"{row['valid']['ndcg@10']:.4f}; {row['epochs']} epochs ({row['stopped']}, best {row['best_epoch']}), "
              f"{row['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
