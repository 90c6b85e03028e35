"""Benchmark of the mining machinery (not a test): endpoint throughput vs ideal, warm-cache speed-up, SmolLM2 speed.

Run: .venv/bin/python bench/bench_mining.py [--items N] [--skip-smollm2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from mining.backends import ChatRequest, MinerConfig, build_backend, default_smollm2_config  # noqa: E402
from mining.call_cache import DuckDBCallCache  # noqa: E402
from mining.item_mining import mine_item_interests  # noqa: E402
from mining.openai_backend import OpenAIBackend  # noqa: E402
from mining.prompts import few_shot_phrase_messages  # noqa: E402
from tests.fake_openai_server import FakeOpenAIServerProcess  # noqa: E402

LATENCY_S = 0.2


def demo_items(n: int) -> pd.DataFrame:
    """Demo-like Scientific catalogue items."""
    kinds = [("Chimney Sweep Brush Kit", "Tools & Home Improvement > Heating", "Rutland"),
             ("Digital pH Meter", "Industrial & Scientific > Lab Instruments", "Apera"),
             ("Anti-Fog Safety Goggles", "Industrial & Scientific > Safety", "Uvex"),
             ("PVC Pipe Cement", "Industrial & Scientific > Plumbing", "Oatey"),
             ("Borosilicate Beaker Set", "Industrial & Scientific > Lab Supplies", "Karter"),
             ("Nitrile Gloves 100 ct", "Industrial & Scientific > Food Service", "Medline"),
             ("Infrared Thermometer", "Industrial & Scientific > Test & Measurement", "Etekcity"),
             ("Epoxy Resin Kit", "Arts & Crafts > Resin", "Let's Resin")]
    rows = []
    for i in range(n):
        title, categories, brand = kinds[i % len(kinds)]
        rows.append({"item_id": f"item{i}", "title": f"{title}, model {i}", "description": f"{title} for daily use.",
                     "categories": categories, "brand": brand, "image_url": None})
    return pd.DataFrame(rows)


def bench_concurrency() -> list[tuple]:
    rows = []
    # the server runs in a child process so that it does not share the client's GIL
    with FakeOpenAIServerProcess(latency_s=LATENCY_S) as server:
        for concurrency in (1, 8, 32):
            n = 16 * concurrency
            backend = OpenAIBackend(name="bench", model="fake", base_url=server.base_url,
                                    max_concurrency=concurrency, timeout_s=30)
            requests = [ChatRequest(messages=few_shot_phrase_messages({"title": f"item {concurrency}-{i}"}, 0),
                                    stop=("\n",)) for i in range(n)]
            started = time.perf_counter()
            backend.complete_batch(requests)
            wall = time.perf_counter() - started
            throughput = n / wall
            ideal = concurrency / LATENCY_S
            rows.append((concurrency, n, round(wall, 2), round(throughput, 1), ideal, round(throughput / ideal, 3)))
    return rows


def bench_warm_cache(n_items: int) -> dict:
    items = demo_items(n_items)
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServerProcess(latency_s=LATENCY_S) as server:
        cfg = MinerConfig(name="bench", backend="openai", model="fake", base_url=server.base_url,
                          prompt_style="few_shot_phrase", n_descriptors=3, max_concurrency=32)
        backend = build_backend(cfg)
        db = Path(tmp) / "w.duckdb"
        started = time.perf_counter()
        cold = mine_item_interests(items, [backend], [cfg], DuckDBCallCache(db), progress=False)
        cold_s = time.perf_counter() - started
        started = time.perf_counter()
        warm = mine_item_interests(items, [backend], [cfg], DuckDBCallCache(db), progress=False)
        warm_s = time.perf_counter() - started
    assert warm.stats["calls"] == 0 and warm.interests.equals(cold.interests)
    return {"items": n_items, "calls": cold.stats["calls"], "cold_s": round(cold_s, 3), "warm_s": round(warm_s, 4),
            "speedup": round(cold_s / warm_s, 1)}


def bench_smollm2(n_items: int) -> dict:
    import torch

    torch.set_num_threads(1)  # the machine is shared; one thread gives comparable numbers
    cfg = default_smollm2_config(n_descriptors=3, batch_size=8)
    backend = build_backend(cfg)
    started = time.perf_counter()
    backend.complete_batch([ChatRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=1)])
    load_s = time.perf_counter() - started

    prompts = [ChatRequest(messages=few_shot_phrase_messages(item, 0), max_tokens=24, stop=("\n",))
               for item in demo_items(8).to_dict("records")]
    started = time.perf_counter()
    batched = backend.complete_batch(prompts)
    batched_s = time.perf_counter() - started
    started = time.perf_counter()
    single = [backend.complete_batch([p])[0] for p in prompts]
    single_s = time.perf_counter() - started
    batched_tokens = sum(c.completion_tokens for c in batched)
    single_tokens = sum(c.completion_tokens for c in single)

    items = demo_items(n_items)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "w.duckdb"
        started = time.perf_counter()
        mined = mine_item_interests(items, [backend], [cfg], DuckDBCallCache(db), progress=False)
        mine_s = time.perf_counter() - started
        started = time.perf_counter()
        rerun = mine_item_interests(items, [backend], [cfg], DuckDBCallCache(db), progress=False)
        rerun_s = time.perf_counter() - started
    assert rerun.stats["calls"] == 0 and rerun.interests.equals(mined.interests)
    return {"load_s": round(load_s, 1), "batched_tok_s": round(batched_tokens / batched_s, 1),
            "single_tok_s": round(single_tokens / single_s, 1),
            "batched_speedup": round((batched_tokens / batched_s) / (single_tokens / single_s), 2),
            "mine_items": n_items, "mine_calls": mined.stats["calls"], "mine_s": round(mine_s, 1),
            "calls_per_s": round(mined.stats["calls"] / mine_s, 2), "s_per_item": round(mine_s / n_items, 2),
            "items_covered": int(mined.interests["item_id"].nunique()), "failures": len(mined.failures),
            "rerun_s": round(rerun_s, 3), "rerun_speedup": round(mine_s / rerun_s, 1),
            "example": mined.interests.head(6)[["item_id", "descriptor", "confidence"]].to_string(index=False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=16, help="demo-like items SmolLM2 mines (n_descriptors=3)")
    parser.add_argument("--cache-items", type=int, default=256, help="items for the warm-cache rerun")
    parser.add_argument("--skip-smollm2", action="store_true")
    args = parser.parse_args()
    print("load average at start:", " ".join(f"{x:.2f}" for x in os.getloadavg()))

    print(f"\nEndpoint throughput (loopback fake server, fixed {LATENCY_S * 1000:.0f} ms latency)")
    print(f"{'concurrency':>11} {'requests':>8} {'wall_s':>7} {'req/s':>7} {'ideal':>6} {'ratio':>6}")
    for row in bench_concurrency():
        print(f"{row[0]:>11} {row[1]:>8} {row[2]:>7} {row[3]:>7} {row[4]:>6.0f} {row[5]:>6}")

    warm = bench_warm_cache(args.cache_items)
    print(f"\nWarm-cache rerun ({warm['items']} items x 3 descriptors, DuckDB cache, concurrency 32)")
    print(f"cold {warm['cold_s']} s for {warm['calls']} calls; warm {warm['warm_s']} s; speed-up {warm['speedup']}x")

    if not args.skip_smollm2:
        s = bench_smollm2(args.items)
        print("\nSmolLM2-135M-Instruct (transformers, GGUF de-quantised, 1 thread)")
        print(f"load {s['load_s']} s; tokens/s batched(8) {s['batched_tok_s']} vs one at a time {s['single_tok_s']}"
              f" -> {s['batched_speedup']}x")
        print(f"mining {s['mine_items']} items x 3 descriptors: {s['mine_calls']} calls in {s['mine_s']} s "
              f"({s['calls_per_s']} calls/s, {s['s_per_item']} s/item); items covered {s['items_covered']}, "
              f"failure rows {s['failures']}")
        print(f"warm-cache rerun of that mining: {s['rerun_s']} s -> {s['rerun_speedup']}x faster")
        print(s["example"])
    print("load average at end:", " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
