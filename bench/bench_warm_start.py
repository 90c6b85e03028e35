"""The nightly run's cost with warm start: Scientific with 1% new interactions, a cold run vs one warm-started from
yesterday's model.

    python -m bench.bench_warm_start TABLES [--new-share 0.01] [--profile cpu] [--seed 0] [--parallel 2]
    python -m bench.bench_warm_start --report [--results bench/results/warm_start.jsonl]

``TABLES``: the parquet folder of ``bench.scientific export-tables`` (``interaction_splits``,
``semantic_ids_plain``, ``item_embeddings_plain``). The model is the TIGER-style item-level generator with history
text (plain SIDs: the codebook the night keeps), at the profile's recipe, trained to its own early stopping.

*Yesterday* is today's published split minus one night of data: the last interaction of a seeded sample of users
holding ``new_share`` of all interactions (the published files carry no real clock: each user's timestamps are
one day apart from a common start, so "the newest 1%" is a sample of users whose sequences grew by one item), split
leave-one-out again. Three runs: (1) yesterday's model, cold (the champion of the night before); (2) today, cold
(what a nightly run costs without warm start); (3) today, warm-started from (1) through ``training.warm_start``.
Each run appends one JSON line (wall seconds, epochs to early stopping, valid/test NDCG@10 and HR@10, machine,
commit) to ``--results``; ``--report`` prints the table from that file alone, warm against cold.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from bench.profiles import PROFILES
from bench.results import RESULTS_DIR, code_commit, machine_description

RESULTS = RESULTS_DIR / "warm_start.jsonl"
RUNS = ("yesterday_cold", "today_cold", "today_warm")


def yesterday_interactions(splits: pd.DataFrame, new_share: float, seed: int) -> tuple[pd.DataFrame, list[str]]:
    """``splits`` without the last interaction of a seeded sample of users holding ``new_share`` of the rows
    (users who would keep fewer than 3 interactions are not sampled), and the sampled users."""
    if not 0 < new_share < 1:
        raise ValueError(f"new_share must lie in (0, 1), got {new_share}")
    missing = {"user_id", "item_id", "timestamp", "position"} - set(splits.columns)
    if missing:
        raise ValueError(f"interaction_splits lacks columns {sorted(missing)}")
    lengths = splits.groupby("user_id").size()
    eligible = np.sort(lengths[lengths >= 4].index.astype(str).to_numpy())
    n_new = round(new_share * len(splits))
    if n_new < 1 or n_new > len(eligible):
        raise ValueError(f"new_share {new_share} of {len(splits)} interactions is {n_new} users' last items; "
                         f"{len(eligible)} users have at least 4")
    users = sorted(np.random.default_rng(seed).choice(eligible, size=n_new, replace=False).tolist())
    last = splits.groupby("user_id")["position"].transform("max") == splits["position"]
    keep = ~(last & splits["user_id"].astype(str).isin(users))
    return splits[keep].reset_index(drop=True), users


def resplit(interactions: pd.DataFrame) -> pd.DataFrame:
    """Leave-one-out again, as ``interaction_splits`` does (order by position, no dedup, no k-core)."""
    from ingestion.splits import SOURCE_ORDER, split_interactions

    frame = interactions.sort_values(["user_id", "position"]).assign(
        **{SOURCE_ORDER: lambda f: np.arange(len(f), dtype="int64")})
    out, _ = split_interactions(frame[["user_id", "item_id", "timestamp", "rating", SOURCE_ORDER]],
                                k_core=1, dedup="event", warn=False)
    return out


def run_one(job: dict) -> dict:
    """One training run to early stopping; its record."""
    import torch

    from training.generator import GeneratorConfig, evaluate_generator, load_generator, train_generator
    from training.sequence_data import SequenceDataModule, item_text_matrix, layout_of
    from training.settings import SequenceSettings
    from training.sid_vocab import SidVocab
    from training.warm_start import WarmStartSource

    torch.set_num_threads(job["threads"])
    tables, profile = Path(job["tables"]), PROFILES[job["profile"]]
    splits = pd.read_parquet(job["splits"])
    vocab = SidVocab.from_frame(pd.read_parquet(tables / "semantic_ids_plain.parquet").sort_values("item_id"))
    text = item_text_matrix(pd.read_parquet(tables / "item_embeddings_plain.parquet"), vocab)
    sequence = SequenceSettings(max_history=profile.max_history, use_user_interests=False, history_text=True)
    dm = SequenceDataModule.for_settings(splits, vocab, sequence, batch_size=profile.generator_batch_size,
                                         eval_batch_size=512, seed=job["seed"], user_prefix=None,
                                         layout=layout_of("item_causal"))
    warm = job["run"] == "today_warm"
    cfg = GeneratorConfig(**{**dict(profile.item_recipe), "arch": "item_causal",
                             "max_epochs": profile.generator_max_epochs, "patience": profile.generator_patience,
                             "batch_size": profile.generator_batch_size, "lr": profile.generator_lr,
                             "seed": job["seed"], "warm_start": "previous" if warm else "off"})
    source = WarmStartSource.from_checkpoint(job["source"]) if warm else None
    started = time.perf_counter()
    res = train_generator(dm, vocab, cfg, sequence=sequence, resume=False, item_text=text,
                          checkpoint_dir=Path(job["work"]) / job["run"], warm_start_from=source)
    seconds = time.perf_counter() - started
    best = load_generator(res.best_checkpoint)
    metrics = {split: evaluate_generator(best, dm.loader(split)) for split in ("valid", "test")}
    return {"run": job["run"], "seed": job["seed"], "profile": job["profile"], "new_share": job["new_share"],
            "users": int(splits["user_id"].nunique()), "interactions": len(splits), "seconds": round(seconds, 1),
            "epochs": res.epochs_completed, "best_epoch": _best_epoch(res.history),
            "cap": cfg.max_epochs, "valid": metrics["valid"], "test": metrics["test"],
            "warm_start": res.warm_start.metadata() if res.warm_start else None, "threads": job["threads"],
            "checkpoint": res.best_checkpoint}


def _best_epoch(history: list[dict]) -> int | None:
    """The first epoch with the best validation NDCG@10 (the checkpoint early stopping keeps)."""
    scores = [(row.get("val_ndcg@10", float("-inf")), -int(row["epoch"])) for row in history]
    return -max(scores)[1] if scores else None


def report(path: Path) -> str:
    """Markdown: each run of the latest seed/share in ``path``, and warm against cold today."""
    if not path.is_file():
        raise FileNotFoundError(f"no warm-start results at {path}; run `python -m bench.bench_warm_start TABLES`")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by_run = {r["run"]: r for r in rows}  # the latest record of each run
    missing = [r for r in RUNS if r not in by_run]
    if missing:
        raise ValueError(f"{path} lacks runs {missing}")
    lines = ["| run | users | interactions | epochs to early stop (best) | wall s | valid NDCG@10 | test NDCG@10 |",
             "|---|---|---|---|---|---|---|"]
    for name in RUNS:
        r = by_run[name]
        lines.append(f"| {name} | {r['users']:,} | {r['interactions']:,} | {r['epochs']} ({r['best_epoch']}) | "
                     f"{r['seconds']:.0f} | {r['valid']['ndcg@10']:.4f} | {r['test']['ndcg@10']:.4f} |")
    cold, warm = by_run["today_cold"], by_run["today_warm"]
    lines.append("")
    lines.append(f"Warm start: {warm['seconds'] / cold['seconds']:.2f}x the cold run's wall time "
                 f"({warm['epochs']} vs {cold['epochs']} epochs), test NDCG@10 {warm['test']['ndcg@10']:.4f} vs "
                 f"{cold['test']['ndcg@10']:.4f} ({warm['test']['ndcg@10'] / cold['test']['ndcg@10'] - 1:+.1%}); "
                 f"new share {cold['new_share']:.0%}, profile `{cold['profile']}`, seed {cold['seed']}, "
                 f"{cold.get('machine', '?')}, commit {str(cold.get('commit', '?'))[:10]}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_warm_start", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tables", nargs="?", type=Path)
    parser.add_argument("--new-share", type=float, default=0.01)
    parser.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parallel", type=int, default=2, help="runs (2) and (1) side by side, then (3)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/digr-warm-start"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--report", action="store_true", help="print the table from --results and stop")
    args = parser.parse_args(argv)
    if args.report:
        print(report(args.results))
        return 0
    if args.tables is None:
        parser.error("TABLES is required (or --report)")
    today = pd.read_parquet(args.tables / "interaction_splits.parquet")
    yesterday, users = yesterday_interactions(today, args.new_share, args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    paths = {"yesterday": args.work / "yesterday.parquet", "today": args.work / "today.parquet"}
    resplit(yesterday).to_parquet(paths["yesterday"], index=False)
    today.to_parquet(paths["today"], index=False)
    print(f"[warm-start] {len(users)} users got one new interaction ({len(today) - len(yesterday)} rows)", flush=True)
    base = {"tables": str(args.tables), "profile": args.profile, "seed": args.seed, "threads": args.threads,
            "work": str(args.work), "new_share": args.new_share}
    stamp = {"machine": machine_description(), "commit": code_commit()}
    with ProcessPoolExecutor(max_workers=args.parallel) as pool:
        first = {name: pool.submit(run_one, {**base, "run": name, "splits": str(paths[day])})
                 for name, day in (("yesterday_cold", "yesterday"), ("today_cold", "today"))}
        records = {name: {**f.result(), **stamp} for name, f in first.items()}
        records["today_warm"] = {**pool.submit(run_one, {
            **base, "run": "today_warm", "splits": str(paths["today"]),
            "source": records["yesterday_cold"]["checkpoint"]}).result(), **stamp}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with open(args.results, "a") as out:
        for name in RUNS:
            out.write(json.dumps(records[name], sort_keys=True) + "\n")
    print(report(args.results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
