"""The real-data benchmark on Amazon Scientific: the whole asset graph, every stage timed.

    python -m bench.scientific all [--llm-answers F]   # whole graph at the 2-core CPU budget, each stage timed
    python -m bench.scientific scale [--fractions 0.25 0.5]  # the same stages on user subsamples (+ 100% = all)
    python -m bench.scientific variants --codebook-seed C [--profile gpu --seeds 0 1 2]  # quality: result records
    python -m bench.scientific prepare            # ingest + split + captions into the bench home
    python -m bench.scientific export-llm FILE    # mining calls the cache lacks (answer them on a GPU box)
    python -m bench.scientific import-llm FILE    # answers from `python -m mining.offline_batch answer`
    python -m bench.scientific materialise ASSET...  # any assets, with the benchmark's run config

State lives in ``$DIGR_BENCH_HOME`` (default ``.digr/bench-scientific``), apart from the demo's; the data
path is ``$DIGR_SCIENTIFIC_DATA`` (default ``../shared/data/amazon-scientific``, RecBole atomic files).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DIGR_SCIENTIFIC_DATA", ROOT.parent / "shared" / "data" / "amazon-scientific"))
HOME = Path(os.environ.get("DIGR_BENCH_HOME", ROOT / ".digr" / "bench-scientific")).resolve()
N_DESCRIPTORS = 2
HISTORY = 50
MINING_SEED = 0


def use_bench_home() -> None:
    """Point every piece of state at the bench home (before dagster/mlflow are imported)."""
    HOME.mkdir(parents=True, exist_ok=True)
    dagster_home = HOME / "dagster_home"
    dagster_home.mkdir(exist_ok=True)
    src = ROOT / "deploy" / "dagster.yaml"
    if not (dagster_home / "dagster.yaml").exists():
        (dagster_home / "dagster.yaml").write_text(src.read_text())
    os.environ.update({"DIGR_HOME": str(HOME), "DAGSTER_HOME": str(dagster_home),
                       "MLFLOW_TRACKING_URI": f"sqlite:///{HOME / 'mlflow.db'}", "HF_HUB_OFFLINE": "1",
                       "TRANSFORMERS_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
                       "TOKENIZERS_PARALLELISM": "false"})
    os.environ.setdefault("DIGR_MODEL_CACHE", str(ROOT / ".digr" / "models"))
    os.environ.pop("DIGR_WAREHOUSE", None)


def base_ops() -> dict:
    """Run config of the published protocol of this split (no dedup of repeats, no extra k-core, history 50:
    the generator's one history cap, which GRPO, the baselines, evaluation and serving read from its
    checkpoint)."""
    return {
        "ingest_source": {"config": {"kind": "recbole", "path": str(DATA), "dataset": "Scientific"}},
        "interaction_splits": {"config": {"k_core": 1, "dedup": "event"}},
        "item_interests": {"config": {"n_descriptors": N_DESCRIPTORS, "seed": MINING_SEED}},
        "user_interests": {"config": {"llm_summary": False}},
        "recommender_sft": {"config": {"max_history": HISTORY}},
    }


def cpu_ops() -> dict:
    """``base_ops`` plus the 2-core CPU budget of ``all``/``scale``: 3 SFT epochs (≈ 5 min each with validation
    on Scientific), GRPO 2 epochs of 16 batches, SASRec 3 epochs; the ablations copy these through their
    reference."""
    return {**base_ops(),
            "recommender_sft": {"config": {"max_history": HISTORY, "max_epochs": 3}},
            "recommender_grpo": {"config": {"max_epochs": 2, "max_batches_per_epoch": 16}},
            "evaluation_report": {"config": {"sasrec": {"max_epochs": 3}}}}


#: every stage of ``all`` in dependency order, one child process each (its own wall time and peak memory);
#: a list entry materialises its assets together (the ingest multi-asset)
NIGHTLY_STAGES: list[list[str]] = [
    ["raw_interactions", "items"], ["interaction_splits"], ["item_captions"], ["item_interests"],
    ["interest_rewards"], ["user_interests"], ["item_embeddings"], ["semantic_ids"], ["recommender_sft"],
    ["recommender_grpo"], ["evaluation_report"]]
STUDY_STAGES: list[list[str]] = [
    *NIGHTLY_STAGES[:-1], ["item_embeddings_plain"], ["semantic_ids_plain"], ["tiger_baseline"],
    ["ablation_no_item_interests"], ["ablation_no_user_tokens"], ["ablation_no_q_term"], ["evaluation_report"],
    ["champion_model"]]


def _materialise(selection: list[str], ops: dict) -> None:
    import dagster as dg

    from digr_dagster.cli import PID_TAG, release_orphaned_runs
    from digr_dagster.definitions import defs

    with dg.DagsterInstance.get() as instance:
        # a benchmark process killed earlier would otherwise hold the warehouse pool slot for ever
        release_orphaned_runs(instance)
        job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={
            dg.AssetKey(s) for s in selection})
        result = job.execute_in_process(instance=instance, run_config={"ops": ops}, raise_on_error=False,
                                        tags={PID_TAG: str(os.getpid())})
        if not result.success:
            raise SystemExit(f"materialising {selection} failed; see the log above")


def cmd_prepare(_args: argparse.Namespace) -> int:
    _materialise(["raw_interactions", "items", "interaction_splits", "item_captions"], base_ops())
    return 0


def cmd_materialise(args: argparse.Namespace) -> int:
    _materialise(args.assets, cpu_ops() if args.cpu_budget else base_ops())
    return 0


def run_stages(stages: list[list[str]], log: Path) -> list[dict]:
    """Materialise each stage in its own child process (CPU budget config); one JSON line per stage in ``log``
    with the Dagster step time, the process's wall time and its peak RSS. Stops at the first failing stage."""
    import json
    import subprocess
    import time

    rows = []
    with open(log, "a") as out:
        for assets in stages:
            started = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "bench.scientific", "materialise", "--cpu-budget", *assets],
                                    cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            wall = time.perf_counter() - started
            if proc.returncode != 0:
                raise SystemExit(f"stage {assets} failed (exit {proc.returncode}); see the log above")
            row = {"stage": "+".join(assets), "process_s": round(wall, 1), "step_s": _step_seconds(assets[0]),
                   "peak_rss_mib": round(usage.ru_maxrss / 1024), "home": str(HOME)}
            rows.append(row)
            out.write(json.dumps(row) + "\n")
            out.flush()
            print(f"[bench] {row['stage']}: step {row['step_s']} s, process {row['process_s']} s, "
                  f"peak RSS {row['peak_rss_mib']} MiB", flush=True)
    return rows


def _step_seconds(asset: str) -> float | None:
    """Duration of the step that last materialised ``asset`` (from the Dagster instance)."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey(asset))
        if event is None:
            return None
        for step in instance.get_run_step_stats(event.run_id):
            if step.end_time is not None and step.step_key in (asset, "ingest_source"):
                return round(step.end_time - step.start_time, 1)
    return None


def _mining_requests():
    from digr_dagster.resources.models import LLMMiners
    from digr_dagster.resources.warehouse import Warehouse
    from mining.call_cache import DuckDBCallCache
    from mining.domains import load_domain
    from mining.item_mining import item_mining_requests, mining_prompt_version
    from warehouse.catalogue import active_items, with_captions

    warehouse = Warehouse()
    items = with_captions(warehouse, active_items(warehouse))
    cache = DuckDBCallCache(warehouse.call_cache_path)
    # the domain item_interests resolves for this run's source ("auto" on the RecBole Scientific files: retail)
    domain = load_domain("auto", source_kind=base_ops()["ingest_source"]["config"]["kind"])
    out = []
    for cfg in LLMMiners().miner_configs():
        cfg = dataclasses.replace(cfg, n_descriptors=N_DESCRIPTORS)
        out.append((cfg, item_mining_requests(items, cfg, seed=MINING_SEED, domain=domain)))
    return out, cache, mining_prompt_version(domain), len(items)


def cmd_export_llm(args: argparse.Namespace) -> int:
    from mining.offline_batch import pending_calls, write_calls

    per_miner, cache, version, n_items = _mining_requests()
    calls = []
    for cfg, requests in per_miner:
        calls += pending_calls(requests, backend=cfg.backend, model=cfg.model, prompt_version=version, cache=cache)
    write_calls(calls, args.file)
    print(f"{len(calls)} pending calls for {n_items} items written to {args.file}")
    return 0


def cmd_export_tables(args: argparse.Namespace) -> int:
    """The tables bench.train_variants needs, as parquet (user tokens computed as recommender_sft does)."""
    from digr_dagster.resources.models import TextEncoderResource
    from digr_dagster.resources.warehouse import Warehouse
    from training.sequence_data import user_interest_tokens
    from training.settings import SequenceSettings
    from training.sid_vocab import SidVocab

    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    warehouse = Warehouse()
    encoder = TextEncoderResource().get()
    sequence = SequenceSettings(max_history=HISTORY)
    for name in ("interaction_splits", "semantic_ids", "semantic_ids_plain", "item_quality"):
        warehouse.read(name).to_parquet(out / f"{name}.parquet", index=False)
    for name in ("item_embeddings", "item_embeddings_plain"):  # the history text of the item-level variants
        warehouse.read(name)[["item_id", "embedding"]].to_parquet(out / f"{name}.parquet", index=False)
    for suffix in ("", "_plain"):
        vocab = SidVocab.from_frame(warehouse.read(f"semantic_ids{suffix}", order_by="item_id"))
        tokens = user_interest_tokens(warehouse.read("user_interests"), warehouse.read(f"item_embeddings{suffix}"),
                                      vocab, encoder.encode, sequence)
        pd.DataFrame({"user_id": list(tokens), "tokens": [list(map(int, v)) for v in tokens.values()]}).to_parquet(
            out / f"user_interest_tokens{suffix}.parquet", index=False)
    print(f"tables written to {out}")
    return 0


PUBLISHED = {  # this exact split, full ranking (UniSRec/VQ-Rec papers): (R@10, N@10)
    "SASRec": (0.1080, 0.0553), "UniSRec": (0.1235, 0.0634), "VQ-Rec": (0.1211, 0.0643)}
NAMES = {"deepinterestgr": "DeepInterestGR (SFT)", "tiger": "TIGER-style (no interests)",
         "no_item_interests": "w/o interests in item text", "no_user_tokens": "w/o user-interest tokens",
         "grpo": "GRPO policy (α = 0.5, from the SFT run)", "grpo_no_q": "GRPO policy without q (α = 0)",
         "sasrec": "SASRec (ours)"}


def quality_table(results: list[dict]) -> str:
    """Markdown: test (and valid) HR/NDCG@5/10 per variant, mean ± std over seeds, seeds listed."""
    import numpy as np

    rows = []
    for variant in NAMES:
        runs = [r for r in results if r.get("variant") == variant and "error" not in r]
        if not runs:
            continue
        cells = []
        for split, metric in (("test", "hr@5"), ("test", "hr@10"), ("test", "ndcg@5"), ("test", "ndcg@10"),
                              ("valid", "ndcg@10")):
            values = np.array([r[split][metric] for r in runs])
            cells.append(f"{values.mean():.4f} ± {values.std():.4f}" if len(values) > 1 else f"{values[0]:.4f}")
        seeds = ",".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"]))
        epochs = ",".join(str(r["epochs"]) for r in sorted(runs, key=lambda r: r["seed"]))
        rows.append(f"| {NAMES[variant]} | {seeds} | {' | '.join(cells)} | {epochs} |")
    for name, (r10, n10) in PUBLISHED.items():
        rows.append(f"| {name} (published) | – | – | {r10:.4f} | – | {n10:.4f} | – | – |")
    head = ("| model | seeds | test HR@5 | test HR@10 | test NDCG@5 | test NDCG@10 | valid NDCG@10 | epochs |\n"
            "|---|---|---|---|---|---|---|---|")
    return head + "\n" + "\n".join(rows)


def stage_table() -> str:
    """Markdown: wall time of each asset's latest materialisation step (from the Dagster instance)."""
    from digr_dagster.definitions import defs

    rows = []
    for key in sorted(defs.resolve_asset_graph().get_all_asset_keys(), key=lambda k: k.to_user_string()):
        seconds = _step_seconds(key.to_user_string())
        if seconds is not None:
            rows.append(f"| {key.to_user_string()} | {seconds:.0f} |")
    return "| asset | wall s |\n|---|---|\n" + "\n".join(rows)


def dataset_table() -> str:
    from digr_dagster.resources.warehouse import Warehouse

    with Warehouse().connect() as con:
        users, items, inter = con.execute("SELECT count(DISTINCT user_id), count(DISTINCT item_id), count(*) "
                                          "FROM interaction_splits").fetchall()[0]
        descriptors = con.execute("SELECT count(*), count(DISTINCT item_id) FROM item_interests").fetchall()[0]
        curated = con.execute("SELECT avg(label) FROM interest_rewards").fetchall()[0][0]
    return (f"| users | items | interactions | density | mined descriptors (items) | judged useful |\n"
            f"|---|---|---|---|---|---|\n| {users:,} | {items:,} | {inter:,} | {inter / (users * items):.5f} | "
            f"{descriptors[0]:,} ({descriptors[1]:,}) | {curated:.3f} |")


def cmd_report(args: argparse.Namespace) -> int:
    """Every BENCHMARKS.md table from the raw result records (``bench.report``); given a ``bench.train_variants``
    log file instead of a results directory (``variants``), the older quality table of that log."""
    from bench import report

    log = getattr(args, "log", None) or (args.results if args.results and Path(args.results).is_file() else None)
    if log:
        return _log_report(Path(log))
    try:
        text = report.render(Path(args.results or report.RESULTS_DIR),
                             references=args.references or report.REFERENCES, n_boot=args.bootstrap)
    except report.ResultsError as exc:
        raise SystemExit(f"report: {exc}") from exc
    if args.write:
        changed = report.write(Path(args.write), text)
        print(f"{args.write}: generated section {'rewritten' if changed else 'unchanged'}", file=sys.stderr)
    else:
        print(text, end="")
    return 0


def _log_report(log: Path) -> int:
    import json

    results = [json.loads(line) for line in open(log) if line.strip()]
    print("## Dataset\n\n" + dataset_table())
    print("\n## Quality (test split, leave-one-out, full ranking)\n\n" + quality_table(results))
    print("\n## Stage wall time (latest materialisation of each asset)\n\n" + stage_table())
    return 0


def cmd_all(args: argparse.Namespace) -> int:
    """The whole graph (full_study's assets) at the CPU budget, stage by stage, then the report."""
    log = HOME / "stages.jsonl"
    log.unlink(missing_ok=True)
    run_stages(STUDY_STAGES[:1], log)
    if args.llm_answers:
        cmd_import_llm(argparse.Namespace(file=args.llm_answers))
    run_stages(STUDY_STAGES[1:], log)
    report = graph_report(log)
    print(report)
    (HOME / "report.md").write_text(report + "\n")
    return 0


def graph_report(log: Path) -> str:
    """Markdown: dataset, the evaluation_report table of this home, the stage costs of ``log``."""
    import json

    from digr_dagster.resources.warehouse import Warehouse

    rows = [json.loads(line) for line in open(log) if line.strip()]
    quality = Warehouse().read("evaluation_results")
    quality = quality[quality["split"] == "test"].pivot_table(index="model", columns="metric", values="value")
    lines = ["| model | " + " | ".join(quality.columns) + " |", "|---" * (len(quality.columns) + 1) + "|"]
    lines += [f"| {m} | " + " | ".join(f"{v:.4f}" for v in r) + " |" for m, r in quality.iterrows()]
    stages = ["| stage | step s | process s | peak RSS MiB |", "|---|---|---|---|"]
    stages += [f"| {r['stage']} | {r['step_s']} | {r['process_s']} | {r['peak_rss_mib']} |" for r in rows]
    total = sum(r["process_s"] for r in rows)
    return ("#### Dataset\n\n" + dataset_table() + "\n\n#### Test split (CPU budget, seed 0)\n\n" + "\n".join(lines)
            + "\n\n#### Stages\n\n" + "\n".join(stages) + f"\n\ntotal {total / 60:.1f} min\n")


def write_subsample(src: Path, dst: Path, fraction: float, *, seed: int = 0) -> dict:
    """A RecBole (UniSRec layout) copy of ``src`` with a seeded ``fraction`` of the users, their rows of every
    split file, and only the items those rows name; returns its user/item/row counts."""
    import numpy as np

    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    stem = "Scientific"
    users = pd.read_csv(src / f"{stem}.user2index", sep="\t", header=None, names=["user", "index"], dtype=str)
    keep = set(users["index"].iloc[np.sort(np.random.default_rng(seed).choice(
        len(users), size=max(1, round(fraction * len(users))), replace=False))])
    dst.mkdir(parents=True, exist_ok=True)
    items: set[str] = set()
    rows = 0
    for split in ("train", "valid", "test"):
        frame = pd.read_csv(src / f"{stem}.{split}.inter", sep="\t", dtype=str)
        frame = frame[frame["user_id:token"].isin(keep)]
        rows += len(frame)
        for history, target in zip(frame["item_id_list:token_seq"], frame["item_id:token"], strict=True):
            items.update(history.split())
            items.add(target)
        frame.to_csv(dst / f"{stem}.{split}.inter", sep="\t", index=False)
    users[users["index"].isin(keep)].to_csv(dst / f"{stem}.user2index", sep="\t", header=False, index=False)
    item_index = pd.read_csv(src / f"{stem}.item2index", sep="\t", header=None, names=["item", "index"], dtype=str)
    item_index = item_index[item_index["index"].isin(items)]
    item_index.to_csv(dst / f"{stem}.item2index", sep="\t", header=False, index=False)
    text = pd.read_csv(src / f"{stem}.text", sep="\t", dtype=str, keep_default_na=False, quoting=3)
    text[text["item_id:token"].isin(set(item_index["item"]))].to_csv(dst / f"{stem}.text", sep="\t", index=False,
                                                                    quoting=3)
    return {"users": len(keep), "items": len(item_index), "rows": rows}


def cmd_scale(args: argparse.Namespace) -> int:
    """The nightly stages at each fraction of the users, each in its own bench home; 100% is ``all``'s log."""
    import json
    import subprocess

    logs = {}
    for fraction in args.fractions:
        home = HOME / "scale" / f"{round(fraction * 100)}pct"
        counts = write_subsample(DATA, home / "data", fraction, seed=args.seed)
        print(f"[bench] {fraction:.0%}: {counts}", flush=True)
        log = home / "stages.jsonl"
        log.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "bench.scientific", "stages", str(log)]
        if args.llm_answers:
            cmd += ["--llm-answers", args.llm_answers]
        subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT),
                                                       "DIGR_BENCH_HOME": str(home),
                                                       "DIGR_SCIENTIFIC_DATA": str(home / "data")})
        logs[fraction] = log
    if (HOME / "stages.jsonl").exists():
        logs[1.0] = HOME / "stages.jsonl"
    table = scaling_table({f: [json.loads(line) for line in open(p) if line.strip()] for f, p in logs.items()})
    print(table)
    (HOME / "scaling.md").write_text(table + "\n")
    return 0


def cmd_stages(args: argparse.Namespace) -> int:
    """The nightly stages in this home (used by ``scale`` for each subsample)."""
    log = Path(args.log)
    run_stages(NIGHTLY_STAGES[:1], log)
    if args.llm_answers:
        cmd_import_llm(argparse.Namespace(file=args.llm_answers))
    run_stages(NIGHTLY_STAGES[1:], log)
    return 0


SCALING_ROWS = {"item_interests": "mining (LLM answers cached) + merge", "interest_rewards": "judging (RLDI)",
                "item_embeddings": "embedding (MiniLM)", "semantic_ids": "RQ-VAE", "recommender_sft": "SFT",
                "recommender_grpo": "GRPO", "evaluation_report": "evaluation"}


def scaling_table(runs: dict[float, list[dict]]) -> str:
    """Markdown: Dagster step seconds per stage at each fraction, with the ratio to the smallest fraction."""
    fractions = sorted(runs)
    by = {f: {r["stage"]: r for r in rows} for f, rows in runs.items()}
    head = "| stage | " + " | ".join(f"{f:.0%} s (× {fractions[0]:.0%}) | peak MiB" for f in fractions) + " |"
    lines = [head, "|---" * (1 + 2 * len(fractions)) + "|"]
    for stage, label in SCALING_ROWS.items():
        base = by[fractions[0]].get(stage, {}).get("step_s")
        cells = []
        for f in fractions:
            row = by[f].get(stage)
            if row is None or row["step_s"] is None:
                cells += ["–", "–"]
                continue
            ratio = f" (× {row['step_s'] / base:.2f})" if base else ""
            cells += [f"{row['step_s']:.0f}{ratio}", str(row["peak_rss_mib"])]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cmd_variants(args: argparse.Namespace) -> int:
    """Quality half (after ``all``): export the tables, train every generator variant, GRPO and SASRec × seeds
    under a named profile, append their result records to ``bench/results/``, and print the report."""
    import subprocess

    tables = HOME / "tables"
    cmd_export_tables(argparse.Namespace(dir=str(tables)))
    log = HOME / "train_variants.log.jsonl"
    subprocess.run([sys.executable, "-m", "bench.train_variants", str(tables), "--out", str(log),
                    "--seeds", *map(str, args.seeds), "--profile", args.profile,
                    "--codebook-seed", str(args.codebook_seed), "--parallel", str(args.parallel)],
                   check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    from bench import report

    print(report.render())
    return 0


def cmd_import_llm(args: argparse.Namespace) -> int:
    from digr_dagster.resources.warehouse import Warehouse
    from mining.call_cache import DuckDBCallCache
    from mining.offline_batch import import_answers

    n = import_answers(args.file, DuckDBCallCache(Warehouse().call_cache_path))
    print(f"imported {n} answers into the call cache")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scientific", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("prepare").set_defaults(func=cmd_prepare)
    every = sub.add_parser("all", help="the whole graph at the CPU budget, each stage timed, then the report")
    every.add_argument("--llm-answers", help="answers file to import into the call cache after ingestion")
    every.set_defaults(func=cmd_all)
    scale = sub.add_parser("scale", help="the nightly stages on user subsamples; 100%% comes from `all`")
    scale.add_argument("--fractions", nargs="+", type=float, default=[0.25, 0.5])
    scale.add_argument("--seed", type=int, default=0)
    scale.add_argument("--llm-answers")
    scale.set_defaults(func=cmd_scale)
    stages = sub.add_parser("stages", help=argparse.SUPPRESS)
    stages.add_argument("log")
    stages.add_argument("--llm-answers")
    stages.set_defaults(func=cmd_stages)
    var = sub.add_parser("variants", help="every generator variant, GRPO and SASRec × seeds (any accelerator)")
    var.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    var.add_argument("--profile", default="gpu", help="named budget (bench.profiles)")
    var.add_argument("--codebook-seed", type=int, required=True,
                     help="the RQ-VAE seed semantic_ids was materialised with in the bench home")
    var.add_argument("--parallel", type=int, default=1)
    var.set_defaults(func=cmd_variants)
    mat = sub.add_parser("materialise", help="materialise these assets with the benchmark config")
    mat.add_argument("assets", nargs="+")
    mat.add_argument("--cpu-budget", action="store_true", help="the CPU budget config of `all` (cpu_ops)")
    mat.set_defaults(func=cmd_materialise)
    exp = sub.add_parser("export-llm")
    exp.add_argument("file")
    exp.set_defaults(func=cmd_export_llm)
    tab = sub.add_parser("export-tables", help="parquet tables for bench.train_variants")
    tab.add_argument("dir")
    tab.set_defaults(func=cmd_export_tables)
    rep = sub.add_parser("report", help="every BENCHMARKS.md table from the raw results (bench/results/*.jsonl)")
    rep.add_argument("log", nargs="?", help="a bench.train_variants log instead: its quality table, dataset, stages")
    rep.add_argument("--results", default=None, help="directory of result records (default bench/results)")
    rep.add_argument("--write", nargs="?", const=str(ROOT / "BENCHMARKS.md"), default=None,
                     help="rewrite the generated section of this file (default BENCHMARKS.md) instead of printing")
    rep.add_argument("--reference", dest="references", action="append", default=None,
                     help="reference model of the paired comparisons (repeatable; default TIGER-style, SASRec)")
    rep.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (default 2000)")
    rep.set_defaults(func=cmd_report)
    imp = sub.add_parser("import-llm")
    imp.add_argument("file")
    imp.set_defaults(func=cmd_import_llm)
    args = parser.parse_args(argv)
    use_bench_home()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
