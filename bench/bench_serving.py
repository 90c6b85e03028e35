"""Serving at production rates: ``mlflow models serve`` (the baseline, one predict per request) vs the micro-batching
server (``serving.batching_server``: concurrent requests ranked by one constrained beam search), same registered
model, same requests; plus batch scoring throughput (``serving.batch_scoring.score_users``).

Each server runs as a subprocess on a loopback port (one worker, ``--env-manager local``); a closed-loop client
keeps ``c`` requests in flight (c = 8 and 32), ``--requests`` requests per level after a warm-up, one user history
per request (5-20 items drawn from the model's catalogue, seeded: both servers get the same requests). Reported:
p50 / p99 latency, requests/s, errors (non-200 answers), the ratio against the baseline measured in the same run,
and how many answers list the same items as the baseline's. The client shares the machine's cores with the
server; on a loaded machine both servers suffer alike (they run one after the other, the baseline first).

    .venv/bin/python bench/bench_serving.py --model deepinterestgr --tracking-uri sqlite:///.digr/mlflow.db
    .venv/bin/python bench/bench_serving.py --synthetic   # a Scientific-sized item_causal model in a temp store

``--synthetic`` trains (one short epoch) the default generator (``arch="item_causal"``, history text) on synthetic
data with Scientific's catalogue size (4,385 items) and history cap (50, the published protocol) and registers it
in a temporary MLflow store: the serving cost is the model's shape, not its accuracy.

Three servers: ``mlflow models serve`` as it comes (the baseline: torch takes every core in each of its request
threads), the same with ``OMP_NUM_THREADS=1`` (one torch thread per request: what threading alone buys), and the
batching server with its defaults. Batch scoring runs in this process with ``--score-threads`` torch threads.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

SCIENTIFIC_ITEMS = 4385


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def synthetic_model(root: Path, n_items: int, n_users: int, seed: int = 0, max_history: int = 50) -> str:
    """Train the default generator one short epoch on synthetic data and register it as champion in a sqlite store
    under ``root``; returns the tracking URI (model name ``deepinterestgr``)."""
    import mlflow
    import torch

    from bench.bench_generator import synthetic
    from serving.pyfunc_model import log_recommender
    from serving.registry import promote
    from training.generator import GeneratorConfig, train_generator
    from training.sequence_data import SequenceDataModule, layout_of
    from training.settings import SequenceSettings

    torch.set_num_threads(2)
    splits, vocab = synthetic(n_users, n_items, seed)
    config = GeneratorConfig(max_epochs=1, seed=seed)  # the defaults: item_causal, d_model 128, beam 20
    sequence = SequenceSettings(max_history=max_history)  # history text on (the default)
    text = np.random.default_rng(seed).normal(size=(n_items, 384)).astype(np.float32)
    dm = SequenceDataModule.for_settings(splits, vocab, sequence, batch_size=config.batch_size, seed=seed,
                                         user_prefix=None, layout=layout_of(config.arch))
    result = train_generator(dm, vocab, config, sequence=sequence, checkpoint_dir=root / "ckpt", item_text=text)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment("bench-serving")
    titles = {i: f"synthetic item {i}" for i in vocab.item_ids}
    mv = log_recommender(result.last_checkpoint, titles, name="deepinterestgr", k=10, beam_width=20,
                         metrics={"val_ndcg@10": 0.0})
    promote(mlflow.MlflowClient(), "deepinterestgr", mv.version)
    return uri


def request_bodies(catalogue: list[str], n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length = int(rng.integers(5, 21))
        out.append({"dataframe_records": [{"history": [catalogue[i] for i in
                                                      rng.choice(len(catalogue), size=length, replace=False)]}]})
    return out


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of process group ``pgid`` (Linux /proc): a
    server's cost per request that the machine's load does not distort, unlike its latency."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended meanwhile
        if int(fields[2]) == pgid:  # fields[0] is the state: pgrp is the 5th field of the whole line
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


class Server:
    """A scoring server subprocess in its own session, stopped (with its workers) on exit."""

    def __init__(self, argv: list[str], env: dict, log: Path, url: str) -> None:
        self.argv, self.env, self.log, self.url = argv, env, log, url

    def __enter__(self) -> Server:
        import httpx

        with self.log.open("w") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.argv[:4]} exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/ping", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"no /ping within 300 s:\n{self.log.read_text()[-3000:]}")

    def __exit__(self, *exc) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


async def _load(url: str, bodies: list[dict], concurrency: int) -> dict:
    """Closed loop: ``concurrency`` clients, each sends its next request when the previous one is answered."""
    import httpx

    latencies, errors, answers = [], 0, [None] * len(bodies)
    next_index = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        async def worker() -> None:
            nonlocal next_index, errors
            while next_index < len(bodies):
                i = next_index
                next_index += 1
                t0 = time.perf_counter()
                try:
                    response = await client.post(f"{url}/invocations", json=bodies[i])
                except httpx.HTTPError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                if response.status_code != 200:
                    errors += 1
                else:
                    answers[i] = [p["item_ids"] for p in response.json()["predictions"]]

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    lat = np.asarray(latencies) * 1000.0
    return {"p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p99": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
            "rps": len(bodies) / wall, "errors": errors, "answers": answers, "n": len(bodies)}


def batch_scoring_rate(model, ref, catalogue: list[str], n_users: int, batch_users: int, seed: int,
                       threads: int) -> tuple:
    from serving.batch_scoring import score_users

    rng = np.random.default_rng(seed + 1)
    histories = {f"user{u:06d}": [catalogue[i] for i in rng.choice(len(catalogue), size=int(rng.integers(5, 21)),
                                                                     replace=False)] for u in range(n_users)}
    scores = score_users(model, histories, ref=ref, batch_users=batch_users, num_threads=threads)
    return scores.users_per_s, scores.users_scored, scores.seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="deepinterestgr", help="registered model name")
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                        help="MLflow tracking/registry URI (default $MLFLOW_TRACKING_URI)")
    parser.add_argument("--synthetic", action="store_true",
                        help="train and register a Scientific-sized item_causal model in a temp store instead")
    parser.add_argument("--synthetic-items", type=int, default=SCIENTIFIC_ITEMS)
    parser.add_argument("--synthetic-train-users", type=int, default=1500)
    parser.add_argument("--synthetic-history", type=int, default=50, help="history cap of the synthetic model")
    parser.add_argument("--requests", type=int, default=200, help="requests per server and concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--max-batch-rows", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--score-users", type=int, default=2000, help="users for the batch-scoring rate")
    parser.add_argument("--batch-users", type=int, default=1024)
    parser.add_argument("--score-threads", type=int, default=1, help="torch threads of batch scoring")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--servers", nargs="+", choices=["mlflow", "mlflow-1-thread", "batching"],
                        default=["mlflow", "mlflow-1-thread", "batching"],
                        help="which servers to run (ratios need mlflow, the baseline)")
    args = parser.parse_args(argv)

    import mlflow
    import torch

    from serving.batch_scoring import load_model, resolve_model

    tmp = tempfile.TemporaryDirectory(prefix="digr-bench-serving-")
    root = Path(tmp.name)
    if args.synthetic:
        t0 = time.perf_counter()
        uri = synthetic_model(root, args.synthetic_items, args.synthetic_train_users, args.seed,
                              args.synthetic_history)
        name = "deepinterestgr"
        print(f"synthetic model trained and registered in {time.perf_counter() - t0:.0f} s")
    else:
        if not args.tracking_uri:
            parser.error("give --tracking-uri (or set MLFLOW_TRACKING_URI), or --synthetic")
        uri, name = args.tracking_uri, args.model
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    ref = resolve_model(mlflow.MlflowClient(), name, args.alias)
    model = load_model(ref)
    python_model = model.unwrap_python_model()
    module = python_model.module
    catalogue = sorted(python_model.known_items)
    print(f"model {ref.uri} ({args.alias}): arch {module.config.arch}, {len(catalogue):,} items, "
          f"{sum(p.numel() for p in module.parameters()):,} parameters, history cap {module.sequence.max_history}, "
          f"k {python_model.meta.k}, beam {python_model.meta.beam_width}; {os.cpu_count()} cores, "
          f"torch {torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f} at start")

    rate, scored, seconds = batch_scoring_rate(model, ref, catalogue, args.score_users, args.batch_users, args.seed,
                                               args.score_threads)
    del model, python_model, module

    bodies = request_bodies(catalogue, args.requests, args.seed)
    warmup = request_bodies(catalogue, 16, args.seed + 99)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri,
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    mlflow_serve = [sys.executable, "-m", "mlflow", "models", "serve", "-m", ref.uri, "--env-manager", "local",
                    "-h", "127.0.0.1", "-w", "1", "-p"]
    servers = {  # label -> (argv without the port, extra environment)
        "mlflow models serve": (mlflow_serve, {}),
        "mlflow models serve, OMP_NUM_THREADS=1": (mlflow_serve, {"OMP_NUM_THREADS": "1"}),
        "batching server": ([sys.executable, "-m", "serving.batching_server", "--model-uri", ref.uri, "--host",
                             "127.0.0.1", "--max-batch-rows", str(args.max_batch_rows), "--max-wait-ms",
                             str(args.max_wait_ms), "--port"], {}),
    }
    chosen = dict(zip(["mlflow", "mlflow-1-thread", "batching"], servers, strict=True))
    servers = {label: servers[label] for key, label in chosen.items() if key in args.servers}
    results: dict[tuple[str, int], dict] = {}
    for n, (label, (argv_, extra)) in enumerate(servers.items()):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with Server([*argv_, str(port)], {**env, **extra}, root / f"server{n}.log", url) as server:
            for c in args.concurrency:
                asyncio.run(_load(url, warmup, c))
                cpu0 = group_cpu_seconds(server.proc.pid)
                results[label, c] = r = asyncio.run(_load(url, bodies, c))
                r["cpu_ms"] = (group_cpu_seconds(server.proc.pid) - cpu0) * 1000.0 / len(bodies)
                print(f"{label}, c={c}: p50 {r['p50']:.0f} ms, p99 {r['p99']:.0f} ms, {r['rps']:.1f} req/s, "
                      f"{r['errors']} errors, {r['cpu_ms']:.1f} server CPU ms per request (load average "
                      f"{os.getloadavg()[0]:.1f})", flush=True)
            if label == "batching server":
                import httpx

                stats = httpx.get(f"{url}/metrics").json()
                print(f"batching server: {stats['requests']} requests in {stats['predict_calls']} predict calls "
                      f"(mean {stats['mean_batch_requests']} requests per batch, largest "
                      f"{stats['largest_batch_requests']})")

    base_label = "mlflow models serve"
    print("\n| server | concurrency | requests | errors | p50 (ms) | p99 (ms) | req/s | p99 vs baseline | "
          "req/s vs baseline | server CPU ms/request | vs baseline | same items as baseline |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (label, c), r in results.items():
        base = results.get((base_label, c), r)  # without the baseline, ratios are against the row itself
        same = sum(a is not None and a == b for a, b in zip(r["answers"], base["answers"], strict=True))
        print(f"| {label} | {c} | {r['n']} | {r['errors']} | {r['p50']:.0f} | {r['p99']:.0f} | {r['rps']:.1f} | "
              f"{r['p99'] / base['p99']:.2f}× | {r['rps'] / base['rps']:.2f}× | {r['cpu_ms']:.1f} | "
              f"{r['cpu_ms'] / base['cpu_ms']:.2f}× | {same}/{r['n']} |")
    print(f"\nbatch scoring (serving.batch_scoring.score_users, {args.batch_users} users per predict, "
          f"{args.score_threads} torch thread(s)): "
          f"{scored:,} users in {seconds:.1f} s = {rate:,.0f} users/s")
    if ("batching server", 8) in results:
        p99 = results["batching server", 8]["p99"]
        print(f"batching server p99 at concurrency 8: {p99:.0f} ms (target <= 150 ms on 2 cores: "
              f"{'met' if p99 <= 150 else 'NOT met'}); load average {os.getloadavg()[0]:.1f} at the end")
    tmp.cleanup()
    errors = sum(r["errors"] for r in results.values())
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
