"""Train and evaluate the generator variants and SASRec from exported warehouse tables, on any accelerator.

The quality half of the Scientific benchmark, runnable where the pipeline is not installed (a GPU box needs
only torch, lightning, transformers, pandas and pyarrow): ``bench.scientific export-tables DIR`` writes the
tables the graph built (splits, both SID tables, both user-interest token tables); this script trains the
same library code on them, several runs in parallel processes, and appends one JSON line per finished run to
``--out`` (so a run cut short still returns what it finished) and one ``bench.results.ResultRecord`` (metrics,
per-user ranks, stop reason, cost, commit, hashes) to ``bench/results/<--results>.jsonl``, from which
``python -m bench.scientific report`` regenerates BENCHMARKS.md. Budgets come from a named profile
(``bench.profiles``); ``--codebook-seed`` names the RQ-VAE seed of the SID tables read.

    python -m bench.train_variants DIR --out log.jsonl --profile gpu --seeds 0 1 2 --codebook-seed 0 --parallel 4
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple


class BenchVariant(NamedTuple):
    """Which tables a generator variant reads and which architecture it trains."""

    sids: str
    tokens: str | None = None  # user-interest token table (arch t5)
    arch: str = "t5"
    history_text: str | None = None  # item-embeddings table read beside the SIDs (arch item_causal)


VARIANTS = {
    "deepinterestgr": BenchVariant("semantic_ids", "user_interest_tokens"),
    "tiger": BenchVariant("semantic_ids_plain"),
    "no_item_interests": BenchVariant("semantic_ids_plain", "user_interest_tokens_plain"),
    "no_user_tokens": BenchVariant("semantic_ids"),
    # the item-level generator: every target of a user's sequence in one pass; interests reach a prediction
    # through the text of the history items before it (per-window conditioning)
    "deepinterestgr_items": BenchVariant("semantic_ids", arch="item_causal", history_text="item_embeddings"),
    "tiger_items": BenchVariant("semantic_ids_plain", arch="item_causal"),
    "tiger_items_text": BenchVariant("semantic_ids_plain", arch="item_causal", history_text="item_embeddings_plain"),
}
#: GRPO variant → weight α of the item-quality term; both start from the ``deepinterestgr`` SFT run of their seed
GRPO_VARIANTS = {"grpo": 0.5, "grpo_no_q": 0.0}


def _tokens(tables: Path, name: str | None):
    if name is None:
        return None
    import pandas as pd

    frame = pd.read_parquet(tables / f"{name}.parquet")
    return {str(u): [int(t) for t in tokens] for u, tokens in zip(frame["user_id"], frame["tokens"], strict=True)}


def run_one(job: dict) -> dict:
    """One training run (a generator variant or SASRec) → its valid/test metrics and cost; a failed run
    comes back as an ``error`` record (written out and printed), so the other runs still finish."""
    try:
        return _run(job)
    except Exception as exc:  # noqa: BLE001 — reported in the results file, never dropped
        import traceback

        return {"variant": job["variant"], "seed": job["seed"], "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()[-3000:]}


def _run(job: dict) -> dict:
    import pandas as pd
    import torch

    torch.set_num_threads(job["threads"])
    tables = Path(job["tables"])
    splits = pd.read_parquet(tables / "interaction_splits.parquet")
    started = time.perf_counter()
    if job["variant"] in GRPO_VARIANTS:
        return _run_grpo(job, splits, started)
    if job["variant"] == "sasrec":
        from evaluation.baselines.sasrec import profile as sasrec_profile
        from evaluation.sasrec import evaluate_sasrec, train_sasrec

        # SASRec trains under its own named recipe (the profile says which), not the generator's budget
        cfg = sasrec_profile(job["sasrec_recipe"], max_len=job["max_history"], seed=job["seed"],
                             accelerator=job["accelerator"])
        res = train_sasrec(splits, cfg, checkpoint_dir=Path(job["work"]) / f"sasrec-{job['seed']}")
        module = res.module.to(_device(job["accelerator"]))
        valid, test = evaluate_sasrec(module, splits, "valid"), evaluate_sasrec(module, splits, "test")
        epochs = len(res.history)
    else:
        from training.generator import GeneratorConfig, evaluate_generator, load_generator, train_generator
        from training.sequence_data import SequenceDataModule, item_text_matrix, layout_of
        from training.settings import SequenceSettings
        from training.sid_vocab import SidVocab

        variant = VARIANTS[job["variant"]]
        sequence = SequenceSettings(max_history=job["max_history"], use_user_interests=variant.tokens is not None,
                                    history_text=variant.history_text is not None)
        vocab = SidVocab.from_frame(pd.read_parquet(tables / f"{variant.sids}{job['sid_suffix']}.parquet")
                                    .sort_values("item_id"))
        # the text embeddings do not depend on the RQ-VAE seed: no codebook suffix
        text = (item_text_matrix(pd.read_parquet(tables / f"{variant.history_text}.parquet"), vocab)
                if variant.history_text else None)
        dm = SequenceDataModule.for_settings(splits, vocab, sequence, batch_size=job["batch_size"], eval_batch_size=512,
                                             seed=job["seed"], user_prefix=_tokens(tables, variant.tokens),
                                             layout=layout_of(variant.arch))
        cfg = GeneratorConfig(**{**(job["item_recipe"] if variant.arch == "item_causal" else {}),
                                 "arch": variant.arch, "max_epochs": job["max_epochs"], "patience": job["patience"],
                                 "batch_size": job["batch_size"], "lr": job["lr"], "seed": job["seed"],
                                 "accelerator": job["accelerator"]})
        res = train_generator(dm, vocab, cfg, sequence=sequence, resume=False, item_text=text,
                              checkpoint_dir=Path(job["work"]) / f"{job['variant']}-{job['seed']}")
        best = load_generator(res.best_checkpoint).to(_device(job["accelerator"]))
        valid = evaluate_generator(best, dm.loader("valid"))
        test = evaluate_generator(best, dm.loader("test"))
        epochs = res.epochs_completed
        return {**_record(job, valid, test, epochs, started), "checkpoint": str(res.best_checkpoint),
                "ranks": _generator_ranks(best, dm)}
    from evaluation.baselines import user_ranks
    from evaluation.sasrec import rank_split

    ranks = {}
    for split in ("valid", "test"):
        samples, ranked, targets = rank_split(module, splits, split, 20)
        ranks[split] = {"users": [s.user_id for s in samples], "ranks": user_ranks(ranked, targets, 20).tolist()}
    return {**_record(job, valid, test, epochs, started), "ranks": ranks, "cap": cfg.max_epochs,
            "profile": job["sasrec_recipe"]}


def _record(job: dict, valid: dict, test: dict, epochs: int, started: float, **extra) -> dict:
    return {"variant": job["variant"], "seed": job["seed"], "valid": valid, "test": test, "epochs": epochs,
            "seconds": round(time.perf_counter() - started, 1), "accelerator": job["accelerator"],
            "config": {**{k: job[k] for k in ("max_history", "batch_size", "lr", "max_epochs", "patience", "sid_suffix",
                                              "profile", "codebook_seed", "threads")},
                       **({"arch": VARIANTS[job["variant"]].arch, **job["item_recipe"]}
                          if job["variant"] in VARIANTS and VARIANTS[job["variant"]].arch == "item_causal" else {})},
            **extra}


def _generator_ranks(module, dm) -> dict:
    """Per-user 1-based rank of each valid/test target in the top ``RANK_CUTOFF`` (0 = miss)."""
    from bench.results import RANK_CUTOFF
    from evaluation.baselines import user_ranks
    from training.generator import rank_loader

    out = {}
    for split in ("valid", "test"):
        ranked, targets = rank_loader(module, dm.loader(split), beam_width=max(RANK_CUTOFF, module.config.beam_width),
                                      top_k=RANK_CUTOFF)
        out[split] = {"users": [s.user_id for s in dm.samples[split]],
                      "ranks": user_ranks(ranked, targets, RANK_CUTOFF).tolist()}
    return out


def _run_grpo(job: dict, splits, started: float) -> dict:
    """GRPO from the seed's DeepInterestGR SFT checkpoint; the record holds the GRPO policy's metrics (the
    model GRPO trained) and which model the pipeline would ship (``kept``: GRPO only when validation improves)."""
    import pandas as pd

    from training.generator import evaluate_generator, load_generator
    from training.grpo import GRPOConfig, train_grpo
    from training.rewards import RewardConfig
    from training.sequence_data import SequenceDataModule
    from training.sid_vocab import SidVocab

    tables = Path(job["tables"])
    reference = VARIANTS["deepinterestgr"]
    vocab = SidVocab.from_frame(pd.read_parquet(tables / f"{reference.sids}{job['sid_suffix']}.parquet")
                                .sort_values("item_id"))
    # the windows are the SFT model's: its checkpoint carries the history cap and user-token settings
    sequence = load_generator(job["sft_checkpoint"]).sequence
    dm = SequenceDataModule.for_settings(splits, vocab, sequence, batch_size=job["batch_size"], eval_batch_size=512,
                                         seed=job["seed"], user_prefix=_tokens(tables, reference.tokens)
                                         if sequence.use_user_interests else None)
    quality = pd.read_parquet(tables / "item_quality.parquet")
    q = dict(zip(quality["item_id"].astype(str), quality["q"].astype(float), strict=True))
    cfg = GRPOConfig(max_epochs=job["grpo_epochs"], seed=job["seed"],
                     reward=RewardConfig(alpha=GRPO_VARIANTS[job["variant"]]))
    res = train_grpo(job["sft_checkpoint"], dm, vocab, q, cfg, resume=False,
                     checkpoint_dir=Path(job["work"]) / f"{job['variant']}-{job['seed']}")
    policy = load_generator(res.grpo_checkpoint).to(_device(job["accelerator"]))
    valid = evaluate_generator(policy, dm.loader("valid"))
    test = evaluate_generator(policy, dm.loader("test"))
    return _record(job, valid, test, len(res.history), started, kept=res.kept, alpha=cfg.reward.alpha,
                   sft_valid_ndcg10=res.sft_val_ndcg, grpo_epochs=job["grpo_epochs"],
                   ranks=_generator_ranks(policy, dm))


def _device(accelerator: str):
    """Where the best checkpoint is evaluated: where Lightning trained it."""
    from mining.transformers_backend import resolve_device

    return resolve_device("cpu" if accelerator == "cpu" else "auto")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.train_variants", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tables", help="folder written by `python -m bench.scientific export-tables`")
    parser.add_argument("--out", required=True)
    parser.add_argument("--variants", nargs="+", default=[*VARIANTS, "sasrec", *GRPO_VARIANTS])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--extra-seeds-for", nargs="+", default=["deepinterestgr", "tiger", "sasrec"],
                        help="variants run with every seed; the others only with the first")
    parser.add_argument("--profile", default="cpu", help="named budget (bench.profiles): epochs cap, patience, "
                        "batch size, lr, history cap, GRPO epochs, threads, accelerator")
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per run (default: the profile's); with --parallel, keep parallel x "
                             "threads <= cores: oversubscribed OpenMP threads slow small models down many times")
    parser.add_argument("--sid-suffix", default="", help="read semantic_ids<SUFFIX> / semantic_ids_plain<SUFFIX> "
                        "(codebooks trained with another RQ-VAE seed, to measure the codebook's share of the variance)")
    parser.add_argument("--codebook-seed", type=int, required=True,
                        help="the RQ-VAE seed of the SID tables read (recorded with every result)")
    parser.add_argument("--results", default="scientific",
                        help="append result records to bench/results/<RESULTS>.jsonl ('' = do not record)")
    parser.add_argument("--results-dir", default=None, help="default: bench/results")
    parser.add_argument("--dataset", default="scientific")
    parser.add_argument("--work", default=os.environ.get("TMPDIR", "/tmp") + "/digr-variants")
    args = parser.parse_args(argv)
    known = [*VARIANTS, "sasrec", *GRPO_VARIANTS]
    unknown = set(args.variants) - set(known)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: {known}")
    grpo = [v for v in args.variants if v in GRPO_VARIANTS]
    if grpo and "deepinterestgr" not in args.variants:
        parser.error(f"{grpo} start from the deepinterestgr SFT runs: add deepinterestgr to --variants")
    from bench.profiles import get_profile

    profile = get_profile(args.profile)
    common = {"accelerator": profile.accelerator, "threads": args.threads or profile.threads,
              "max_history": profile.max_history,
              "batch_size": profile.generator_batch_size, "lr": profile.generator_lr,
              "max_epochs": profile.generator_max_epochs, "patience": profile.generator_patience,
              "grpo_epochs": profile.grpo_epochs, "work": args.work, "sid_suffix": args.sid_suffix,
              "profile": profile.name, "codebook_seed": args.codebook_seed, "tables": args.tables,
              "sasrec_recipe": profile.sasrec_recipe, "item_recipe": dict(profile.item_recipe)}
    jobs = [{**common, "variant": v, "seed": s} for s in args.seeds for v in args.variants
            if v not in GRPO_VARIANTS and (s == args.seeds[0] or v in args.extra_seeds_for)]
    started = time.perf_counter()
    recorder = _Recorder(args.tables, args.results, args.dataset, args.results_dir) if args.results else None
    with open(args.out, "a") as out, mp.get_context("spawn").Pool(args.parallel) as pool:
        sft_runs = _run_all(pool, jobs, out, started, recorder)
        # second phase: GRPO from each finished DeepInterestGR SFT run of a seed the GRPO variants take
        grpo_jobs = [{**common, "variant": v, "seed": r["seed"], "sft_checkpoint": r["checkpoint"]}
                     for r in sft_runs if r["variant"] == "deepinterestgr" and "error" not in r for v in grpo
                     if r["seed"] == args.seeds[0] or v in args.extra_seeds_for]
        _run_all(pool, grpo_jobs, out, started, recorder)
    return 0


#: report row of each variant (the evaluation report's names)
MODEL_NAMES = {"deepinterestgr": "DeepInterestGR (SFT)", "tiger": "TIGER-style", "no_item_interests":
               "w/o interests in item text", "no_user_tokens": "w/o user-interest tokens", "sasrec": "SASRec",
               "grpo": "GRPO policy", "grpo_no_q": "GRPO policy w/o q term",
               "deepinterestgr_items": "DeepInterestGR (item-level)", "tiger_items": "TIGER-style (item-level)",
               "tiger_items_text": "TIGER-style (item-level) + history text"}


class _Recorder:
    """Turns finished runs into ``bench.results`` records (the split file is written once, by content hash)."""

    def __init__(self, tables: str, name: str, dataset: str, directory: str | None = None) -> None:
        import pandas as pd

        from bench.results import RESULTS_DIR, code_commit, machine_description, write_split

        self.directory = Path(directory) if directory else RESULTS_DIR
        splits = pd.read_parquet(Path(tables) / "interaction_splits.parquet")
        self.split_hash = write_split(splits, self.directory)
        self.name, self.dataset = name, dataset
        self.commit, self.machine = code_commit(), machine_description()

    def __call__(self, result: dict) -> None:
        from bench.results import ResultRecord, append, config_hash, ranks_by_user

        config = {**result["config"], "variant": result["variant"]}
        ranks = {s: ranks_by_user(result["ranks"][s]["users"], result["ranks"][s]["ranks"], self.split_hash,
                                  self.directory) for s in ("valid", "test")}
        # GRPO runs a fixed number of epochs (it keeps SFT unless validation improves): its cap is the budget
        cap = result["grpo_epochs"] if result["variant"] in GRPO_VARIANTS else result.get(
            "cap", result["config"]["max_epochs"])
        stopped = "cap" if result["epochs"] >= cap else "early_stopping"
        append(ResultRecord(
            dataset=self.dataset, model=MODEL_NAMES[result["variant"]],
            profile=result.get("profile", result["config"]["profile"]),  # SASRec: its own recipe
            seed=result["seed"], codebook_seed=None if result["variant"] == "sasrec" else result["config"][
                "codebook_seed"], metrics={"valid": result["valid"], "test": result["test"]}, ranks=ranks,
            split_hash=self.split_hash, epochs=result["epochs"], max_epochs=cap,
            stopped=stopped, wall_s=result["seconds"], device=result["accelerator"], machine=self.machine,
            commit=self.commit, config=config, config_hash=config_hash(config)), self.name, self.directory)


def _run_all(pool, jobs: list[dict], out, started: float, recorder: _Recorder | None = None) -> list[dict]:
    results = []
    for result in pool.imap_unordered(run_one, jobs):
        results.append(result)
        out.write(json.dumps({k: v for k, v in result.items() if k != "ranks"}) + "\n")
        out.flush()
        if recorder is not None and "error" not in result:
            recorder(result)
        if "error" in result:
            print(f"{result['variant']} seed {result['seed']} FAILED: {result['traceback']}", flush=True)
            continue
        print(f"[{time.perf_counter() - started:6.0f} s] {result['variant']} seed {result['seed']}: "
              f"test ndcg@10 {result['test']['ndcg@10']:.4f} ({result['epochs']} epochs, {result['seconds']} s)",
              flush=True)
    return results


if __name__ == "__main__":
    sys.exit(main())
