"""The real-data benchmark on Amazon Scientific: the whole asset graph, every stage timed.

    python -m bench.scientific all [--llm-answers F] [--seeds 0 1 2]  # everything below, then the report
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
    """Run config of the published protocol of this split (no dedup of repeats, no extra k-core, history 50)."""
    return {
        "ingest_source": {"config": {"kind": "recbole", "path": str(DATA), "dataset": "Scientific"}},
        "interaction_splits": {"config": {"k_core": 1, "dedup": "event", "max_history": 50}},
        "item_interests": {"config": {"n_descriptors": N_DESCRIPTORS, "seed": MINING_SEED}},
        "user_interests": {"config": {"llm_summary": False}},
    }


def _materialise(selection: list[str], ops: dict) -> None:
    import dagster as dg

    from digr_dagster.definitions import defs

    with dg.DagsterInstance.get() as instance:
        job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={
            dg.AssetKey(s) for s in selection})
        result = job.execute_in_process(instance=instance, run_config={"ops": ops}, raise_on_error=False)
        if not result.success:
            raise SystemExit(f"materialising {selection} failed; see the log above")


def cmd_prepare(_args: argparse.Namespace) -> int:
    _materialise(["raw_interactions", "items", "interaction_splits", "item_captions"], base_ops())
    return 0


def cmd_materialise(args: argparse.Namespace) -> int:
    _materialise(args.assets, base_ops())
    return 0


def _mining_requests():
    from assets.common import active_items, with_captions
    from digr_dagster.resources.models import LLMMiners
    from digr_dagster.resources.warehouse import Warehouse
    from mining.call_cache import DuckDBCallCache
    from mining.item_mining import item_mining_requests
    from mining.prompts import PROMPT_VERSION

    warehouse = Warehouse()
    items = with_captions(warehouse, active_items(warehouse))
    cache = DuckDBCallCache(warehouse.database)
    out = []
    for cfg in LLMMiners().miner_configs():
        cfg = dataclasses.replace(cfg, n_descriptors=N_DESCRIPTORS)
        out.append((cfg, item_mining_requests(items, cfg, seed=MINING_SEED)))
    return out, cache, PROMPT_VERSION, len(items)


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
    from assets.recommender import SftConfig, _vocab, user_prefix_tokens
    from digr_dagster.resources.models import TextEncoderResource
    from digr_dagster.resources.warehouse import Warehouse

    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    warehouse = Warehouse()
    encoder = TextEncoderResource().get()
    sft = SftConfig()
    for name in ("interaction_splits", "semantic_ids", "semantic_ids_plain"):
        warehouse.read(name).to_parquet(out / f"{name}.parquet", index=False)
    for suffix in ("", "_plain"):
        vocab, _ = _vocab(warehouse, f"semantic_ids{suffix}")
        tokens = user_prefix_tokens(warehouse, vocab, encoder, n=sft.interest_tokens, depth=sft.interest_depth,
                                    embeddings=f"item_embeddings{suffix}")
        pd.DataFrame({"user_id": list(tokens), "tokens": [list(map(int, v)) for v in tokens.values()]}).to_parquet(
            out / f"user_interest_tokens{suffix}.parquet", index=False)
    print(f"tables written to {out}")
    return 0


PUBLISHED = {  # this exact split, full ranking (UniSRec/VQ-Rec papers): (R@10, N@10)
    "SASRec": (0.1080, 0.0553), "UniSRec": (0.1235, 0.0634), "VQ-Rec": (0.1211, 0.0643)}
NAMES = {"deepinterestgr": "DeepInterestGR (SFT)", "tiger": "TIGER-style (no interests)",
         "no_item_interests": "w/o interests in item text", "no_user_tokens": "w/o user-interest tokens",
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
    import dagster as dg

    from digr_dagster.definitions import defs

    rows = []
    with dg.DagsterInstance.get() as instance:
        for key in sorted(defs.resolve_asset_graph().get_all_asset_keys(), key=lambda k: k.to_user_string()):
            event = instance.get_latest_materialization_event(key)
            if event is None:
                continue
            stats = {s.step_key: s for s in instance.get_run_step_stats(event.run_id)}
            step = stats.get(key.to_user_string()) or stats.get("ingest_source")
            if step is None or step.end_time is None:
                continue
            rows.append(f"| {key.to_user_string()} | {step.end_time - step.start_time:.0f} |")
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
    import json

    results = [json.loads(line) for line in open(args.results) if line.strip()]
    print("## Dataset\n\n" + dataset_table())
    print("\n## Quality (test split, leave-one-out, full ranking)\n\n" + quality_table(results))
    print("\n## Stage wall time (latest materialisation of each asset)\n\n" + stage_table())
    return 0


TABLE_ASSETS = ["item_captions", "item_interests", "interest_rewards", "user_interests", "item_embeddings",
                "semantic_ids", "item_embeddings_plain", "semantic_ids_plain"]


def cmd_all(args: argparse.Namespace) -> int:
    """Everything: ingest, mine (cache first), codebooks, export, train every variant, report."""
    import subprocess

    cmd_prepare(args)
    if args.llm_answers:
        cmd_import_llm(argparse.Namespace(file=args.llm_answers))
    _materialise(TABLE_ASSETS, base_ops())
    tables = HOME / "tables"
    cmd_export_tables(argparse.Namespace(dir=str(tables)))
    results = HOME / "results.jsonl"
    results.unlink(missing_ok=True)
    subprocess.run([sys.executable, "-m", "bench.train_variants", str(tables), "--out", str(results),
                    "--seeds", *map(str, args.seeds), "--accelerator", args.accelerator,
                    "--parallel", str(args.parallel), "--max-epochs", str(args.max_epochs)],
                   check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return cmd_report(argparse.Namespace(results=str(results)))


def cmd_import_llm(args: argparse.Namespace) -> int:
    from digr_dagster.resources.warehouse import Warehouse
    from mining.call_cache import DuckDBCallCache
    from mining.offline_batch import import_answers

    n = import_answers(args.file, DuckDBCallCache(Warehouse().database))
    print(f"imported {n} answers into the call cache")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scientific", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("prepare").set_defaults(func=cmd_prepare)
    every = sub.add_parser("all", help="the whole benchmark: graph on Scientific, every variant, report")
    every.add_argument("--llm-answers", help="answers file to import into the call cache first")
    every.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    every.add_argument("--accelerator", default="auto")
    every.add_argument("--parallel", type=int, default=1)
    every.add_argument("--max-epochs", type=int, default=20)
    every.set_defaults(func=cmd_all)
    mat = sub.add_parser("materialise", help="materialise these assets with the benchmark config")
    mat.add_argument("assets", nargs="+")
    mat.set_defaults(func=cmd_materialise)
    exp = sub.add_parser("export-llm")
    exp.add_argument("file")
    exp.set_defaults(func=cmd_export_llm)
    tab = sub.add_parser("export-tables", help="parquet tables for bench.train_variants")
    tab.add_argument("dir")
    tab.set_defaults(func=cmd_export_tables)
    rep = sub.add_parser("report", help="markdown tables: dataset, quality (from bench.train_variants), stages")
    rep.add_argument("results")
    rep.set_defaults(func=cmd_report)
    imp = sub.add_parser("import-llm")
    imp.add_argument("file")
    imp.set_defaults(func=cmd_import_llm)
    args = parser.parse_args(argv)
    use_bench_home()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
