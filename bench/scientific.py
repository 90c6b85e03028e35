"""The real-data benchmark on Amazon Scientific: the whole asset graph, every stage timed.

    python -m bench.scientific prepare            # ingest + split + captions into the bench home
    python -m bench.scientific export-llm FILE    # mining calls the cache lacks (answer them on a GPU box)
    python -m bench.scientific import-llm FILE    # answers from `python -m mining.offline_batch answer`

State lives in ``$DIGR_BENCH_HOME`` (default ``.digr/bench-scientific``), apart from the demo's; the data
path is ``$DIGR_SCIENTIFIC_DATA`` (default ``../shared/data/amazon-scientific``, RecBole atomic files).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

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
    exp = sub.add_parser("export-llm")
    exp.add_argument("file")
    exp.set_defaults(func=cmd_export_llm)
    imp = sub.add_parser("import-llm")
    imp.add_argument("file")
    imp.set_defaults(func=cmd_import_llm)
    args = parser.parse_args(argv)
    use_bench_home()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
