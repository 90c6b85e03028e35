"""Growth beyond Scientific, measured: the nightly stages on synthetic catalogues at multiples of Scientific.

    python -m bench.growth run --scales 1 10 100 [--stage-timeout 1800] [--llm fake|smollm2]
    python -m bench.growth report [--results bench/results/growth.jsonl] [--write [BENCHMARKS.md]]

``run`` writes, for each scale, the synthetic data set of that multiple of Scientific's users, items and
interactions (``bench.synthetic_scale``) into a fresh home ``.digr/bench-growth/scale-<s>`` (wiped first: a warm LLM
call cache or a resumable checkpoint would make the timings lie), then materialises the nightly stages
(``bench.scientific.NIGHTLY_STAGES``) one child process each, as ``bench.scientific.run_stages`` does, and appends
one JSON line per (scale, stage) to ``bench/results/growth.jsonl``: Dagster step seconds, the process's wall
seconds, its peak RSS (``os.wait4``), and the outcome — ``ok``, ``timeout`` (killed after ``--stage-timeout``),
``oom`` (MemoryError / out-of-memory message, or SIGKILL from outside: the kernel's OOM killer) or ``failed``, with
the error's last line. The first stage that is not ``ok`` ends that scale: the later stages depend on it.

Choices, so the numbers say what they measure:

- **Mining talks to an endpoint, not to a CPU model.** SmolLM2-135M on 2 cores mines about 1.5 items/s
  (``SMOLLM2_CPU_ITEMS_PER_S``): 100× would take a week. ``--llm fake`` (the default) starts the loopback
  OpenAI-compatible server of ``tests/fake_openai_server.py`` (a real HTTP server speaking the protocol, answers
  derived from the item text) and points one ``openai`` miner at it through ``DIGR_MINERS``, with SmolLM2's prompt
  style and call count (few-shot phrases, 2 descriptors per item). The stage then measures what the pipeline adds
  around the model (HTTP, call cache, parsing, merge with descriptor embeddings); the model's own time enters the
  extrapolation from the measured SmolLM2 rate. ``--llm smollm2`` mines with the real model instead.
- **Training is capped, and says so.** The 2-core CPU budget of ``bench.scientific.cpu_ops`` (SFT 3 epochs, GRPO
  2 epochs of 16 batches, SASRec 3 epochs), plus SFT at most ``SFT_MAX_BATCHES`` batches per epoch (about one
  full epoch at 1×), so an epoch is bounded at every scale. The caps go into every record (``caps``), and the
  report marks these stages as cost at the cap, not to convergence: what still grows in them is data preparation,
  validation and evaluation. SASRec's epochs have no batch cap in its settings: its training grows with the users.
  The RQ-VAE keeps its library defaults (30 epochs; k-means on at most 50,000 items).
- **One thread.** Run it with ``OMP_NUM_THREADS=1`` as the other benchmarks on this machine are; the records
  note the value.

``report`` renders from the results file alone: (a) per stage × scale, step seconds with the ratio to the
smallest scale, peak RSS and outcome; (b) which stage breaks first; (c) on paper, each stage at 10M items and 1B
interactions: time fitted against the stage's driving size (``DRIVERS``) with the log-log slope between the two
largest measured ``ok`` scales (exponent 1 assumed, and said, while only one is measured), memory from a
straight-line fit, and the engine each stage would run on at that size (``ENGINES``). ``--write`` replaces
BENCHMARKS.md's section between the ``bench growth`` markers; rerunning it on the same records changes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.results import RESULTS_DIR

ROOT = Path(__file__).resolve().parents[1]
RESULTS = RESULTS_DIR / "growth.jsonl"
HOMES = ROOT / ".digr" / "bench-growth"
BENCHMARKS = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- bench growth: generated begin -->", "<!-- bench growth: generated end -->"
HEADING = "## Growth beyond Scientific"
DEFAULT_STAGE_TIMEOUT_S = 1800
SFT_MAX_BATCHES = 128  # 8,442 users / 64 per batch ≈ 132 batches: about one full epoch at 1×

#: the real small model's mining rate: SmolLM2-135M-Instruct, transformers backend on this 2-core CPU, batch 64 cut
#: into prefix batches (mining.transformers_backend.prefix_batches), 2 descriptors per item (few-shot phrases, one
#: call each): `bench.scientific materialise item_interests` on Scientific, 2026-12-08, commit 2692d82, items 803 to
#: 867 in 43 s with the machine otherwise idle (0.74 items/s before prefix_batches, at batch 32). The fake endpoint
#: stands in for it in ``run``; the extrapolation adds items / this rate to the mining stage
SMOLLM2_CPU_ITEMS_PER_S = 1.5
SMOLLM2_CPU_SOURCE = ("SmolLM2-135M-Instruct, transformers backend on this 2-core CPU, batch 64 in prefix batches, "
                      "2 descriptors per item: Scientific's item_interests, 2026-12-08")

#: the on-paper target of the extrapolation
TARGET = {"items": 10_000_000, "interactions": 1_000_000_000}

#: what each stage's cost follows: the catalogue (items) or the interactions (and with them the users)
DRIVERS: dict[str, str] = {
    "raw_interactions+items": "interactions", "interaction_splits": "interactions", "item_captions": "items",
    "item_interests": "items", "interest_rewards": "items", "user_interests": "interactions",
    "item_embeddings": "items", "semantic_ids": "items", "recommender_sft": "interactions",
    "recommender_grpo": "interactions", "evaluation_report": "interactions"}

#: where each stage would run at 10M items / 1B interactions (the scale-out column of DESIGN.md, per stage)
ENGINES: dict[str, str] = {
    "raw_interactions+items": "Parquet on S3 partitioned by day (`DIGR_WAREHOUSE=s3://…`, warehouse.object_store); "
                              "DuckDB per partition, incremental loads",
    "interaction_splits": "DuckDB window functions per user-hash partition over Parquet (or Spark SQL)",
    "item_captions": "vision-model endpoint pool (vLLM), new items with images only, call cache",
    "item_interests": "vLLM/SGLang endpoint pool through the `openai` backend (deploy/production/miners.json) or "
                      "`mining.offline_batch` on GPUs; nightly only new items (call cache)",
    "interest_rewards": "embedding judge on GPU, then the lightweight reward classifier (RLDI) for the bulk",
    "user_interests": "DuckDB aggregation per user partition (no LLM summary)",
    "item_embeddings": "GPU batch encode sharded over items (one encoder per GPU); new items only",
    "semantic_ids": "RQ-VAE on one GPU trained on a sample (`kmeans_max_samples`), then batch assignment; "
                    "`refresh=auto` gives new items codes without retraining",
    "recommender_sft": "multi-GPU Lightning DDP (`training/distributed.py`, `distributed.devices/num_nodes`)",
    "recommender_grpo": "multi-GPU Lightning DDP (`training/distributed.py`), capped batches per epoch",
    "evaluation_report": "sharded evaluation: users split over GPU workers (beam search / SASRec scoring), "
                         "sampled users nightly, full set weekly"}

#: why a stage's row is not its cost to convergence
CAPPED: dict[str, str] = {
    "recommender_sft": "training at the cap (epochs × batches per epoch); uncapped, an epoch grows with the users",
    "recommender_grpo": "training at the cap; validation (beam search over valid users) grows with the users",
    "evaluation_report": "SASRec at its epoch cap (its epochs are uncapped in batches); full ranking: users × items"}

OUTCOMES = ("ok", "timeout", "oom", "failed")
REQUIRED = ("run", "scale", "users", "items", "interactions", "stage", "outcome", "step_s", "process_s",
            "peak_rss_mib", "machine", "commit", "recorded_at", "caps")
_OOM = re.compile(r"MemoryError|out of memory|Cannot allocate memory|OutOfMemory|std::bad_alloc", re.IGNORECASE)


class GrowthError(ValueError):
    """Bad input to the growth benchmark: a scale, a results file or a record that cannot be used."""


def stage_name(assets: Sequence[str]) -> str:
    return "+".join(assets)


def stages() -> list[list[str]]:
    from bench.scientific import NIGHTLY_STAGES

    return NIGHTLY_STAGES


def parse_scale(text: str) -> float:
    """A scale from the command line: a positive number (1, 10, 100, 0.02)."""
    try:
        value = float(text)
    except ValueError:
        raise GrowthError(f"unknown scale {text!r}: give a positive number of times Scientific's size, "
                          f"such as 1, 10 or 100") from None
    if not (math.isfinite(value) and value > 0):
        raise GrowthError(f"scale {text!r} must be a positive finite number (times Scientific's size)")
    return value


def scale_label(scale: float) -> str:
    return f"{scale:g}×"


# --------------------------------------------------------------------------- run


def growth_ops(data: Path) -> dict:
    """The benchmark's run config: the 2-core CPU budget of ``bench.scientific`` on the synthetic files, SFT
    epochs capped at ``SFT_MAX_BATCHES`` batches."""
    from bench.scientific import cpu_ops
    from bench.synthetic_scale import STEM

    ops = cpu_ops()
    ops["ingest_source"] = {"config": {"kind": "recbole", "path": str(data), "dataset": STEM}}
    ops["recommender_sft"] = {"config": {**ops["recommender_sft"]["config"],
                                         "max_batches_per_epoch": SFT_MAX_BATCHES}}
    return ops


def training_caps(ops: dict) -> dict:
    """What bounds the training stages (the record's ``caps``)."""
    return {"recommender_sft": ops["recommender_sft"]["config"], "recommender_grpo": ops["recommender_grpo"]["config"],
            "evaluation_report": ops["evaluation_report"]["config"], "semantic_ids": "library defaults"}


def fake_miners(base_url: str) -> str:
    """``DIGR_MINERS`` for one openai miner at the fake endpoint, prompted as SmolLM2 is (a call per descriptor)."""
    return json.dumps([{"name": "fake-smollm2", "backend": "openai", "base_url": base_url, "model": "fake-smollm2",
                        "prompt_style": "few_shot_phrase", "max_concurrency": 16, "timeout_s": 60.0}])


def cmd_stage(args: argparse.Namespace) -> int:
    """Child process: materialise one stage in ``$DIGR_BENCH_HOME``; its step time and error go to ``--result``."""
    from bench.scientific import use_bench_home

    use_bench_home()
    outcome = materialise(args.assets, growth_ops(Path(args.data)))
    Path(args.result).write_text(json.dumps(outcome))
    return 0 if outcome["ok"] else 1


def materialise(selection: list[str], ops: dict) -> dict:
    """Materialise ``selection`` in process; ``{"ok", "step_s" (sum of the run's steps), "error"}``."""
    import dagster as dg

    from digr_dagster.cli import PID_TAG, release_orphaned_runs
    from digr_dagster.definitions import defs

    with dg.DagsterInstance.get() as instance:
        release_orphaned_runs(instance)  # a killed earlier run would hold the warehouse pool slot
        job = defs.resolve_implicit_global_asset_job_def().get_subset(
            asset_selection={dg.AssetKey(s) for s in selection})
        result = job.execute_in_process(instance=instance, run_config={"ops": ops}, raise_on_error=False,
                                        tags={PID_TAG: str(os.getpid())})
        steps = instance.get_run_step_stats(result.run_id)
        step_s = sum(s.end_time - s.start_time for s in steps if s.end_time is not None and s.start_time is not None)
        error = None
        if not result.success:
            failures = [e for e in result.all_events if e.is_step_failure]
            error = (_innermost(failures[-1].step_failure_data.error) if failures
                     else "the run failed without a step failure event")
    return {"ok": bool(result.success), "step_s": round(step_s, 1), "error": error}


def _innermost(info) -> str:
    """``Class: last line`` of the deepest cause of a Dagster error (the user code's exception, not the wrapper)."""
    while info is not None and info.cause is not None:
        info = info.cause
    if info is None:
        return "unknown error"
    lines = [line.strip() for line in (info.message or "").splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    # the class names what the message may not (numpy's MemoryError says "Unable to allocate 40.0 GiB ...")
    name = info.cls_name or ""
    text = last if not name or last.startswith(name) else (f"{name}: {last}" if last else name)
    return _short(text or "unknown error")


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run_stage(assets: list[str], *, home: Path, data: Path, env: dict, timeout_s: float) -> dict:
    """One stage in a child process: outcome, step and wall seconds, peak RSS, error (``run_child``)."""
    log_dir = home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    result_file = log_dir / f"{stage_name(assets)}.result.json"
    cmd = [sys.executable, "-m", "bench.growth", "stage", "--data", str(data), "--result", str(result_file), *assets]
    return run_child(cmd, log=log_dir / f"{stage_name(assets)}.log", result_file=result_file, env=env,
                     timeout_s=timeout_s)


def run_child(cmd: list[str], *, log: Path, result_file: Path, env: dict, timeout_s: float) -> dict:
    """Run ``cmd`` in its own process group (output to ``log``), killed after ``timeout_s``; the outcome from its
    exit and the ``{"ok", "step_s", "error"}`` it wrote to ``result_file``, its wall seconds and peak RSS."""
    result_file.unlink(missing_ok=True)
    started = time.perf_counter()
    timed_out, killed_at = False, 0.0
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            now = time.perf_counter()
            if not timed_out and now - started > timeout_s:
                timed_out, killed_at = True, now
                _signal_group(proc.pid, signal.SIGTERM)
            elif timed_out and now - killed_at > 20:  # SIGTERM ignored (a native call): no more waiting
                _signal_group(proc.pid, signal.SIGKILL)
            time.sleep(0.2)
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    child = json.loads(result_file.read_text()) if result_file.is_file() else None
    row = {"outcome": "ok", "step_s": child["step_s"] if child else None, "process_s": round(wall, 1),
           "peak_rss_mib": round(usage.ru_maxrss / 1024), "error": None}
    if timed_out:
        row.update(outcome="timeout", step_s=None, error=f"killed after the stage timeout of {timeout_s:g} s")
    elif code == -signal.SIGKILL:
        row.update(outcome="oom", error="killed by SIGKILL from outside the benchmark (the kernel's OOM killer)")
    elif code != 0 or child is None or not child["ok"]:
        error = (child or {}).get("error") or _last_line(log) or f"exit status {code}"
        row.update(outcome="oom" if _OOM.search(error) else "failed", error=_short(error))
    return row


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _last_line(path: Path) -> str | None:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else None


def cmd_run(args: argparse.Namespace) -> int:
    from bench.results import code_commit, machine_description

    run_id = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    context = {"run": run_id, "llm": args.llm, "stage_timeout_s": args.stage_timeout, "seed": args.seed,
               "omp_threads": os.environ.get("OMP_NUM_THREADS"), "machine": machine_description(),
               "commit": code_commit()}
    with contextlib.ExitStack() as stack:
        miners = None
        if args.llm == "fake":
            from tests.fake_openai_server import FakeOpenAIServerProcess

            miners = fake_miners(stack.enter_context(FakeOpenAIServerProcess(record=False)).base_url)
        for scale in args.scales:
            run_scale(scale, Path(args.homes) / f"scale-{scale:g}", Path(args.results), miners=miners,
                      context=context, timeout_s=args.stage_timeout)
    return 0


def run_scale(scale: float, home: Path, results: Path, *, miners: str | None, context: dict,
              timeout_s: float) -> None:
    """The data set of ``scale`` in a fresh ``home``, then each stage until one is not ok; a record per stage."""
    from bench.synthetic_scale import write_scaled_dataset

    shutil.rmtree(home, ignore_errors=True)
    started = time.perf_counter()
    manifest = write_scaled_dataset(home / "data", scale, seed=context["seed"])
    data = {"data_write_s": round(time.perf_counter() - started, 1), "data_mib": round(manifest["bytes"] / 2**20, 1)}
    counts = {k: manifest[k] for k in ("users", "items", "interactions")}
    print(f"[growth] {scale_label(scale)}: {counts}, written in {data['data_write_s']} s ({data['data_mib']} MiB)",
          flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DIGR_BENCH_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("DIGR_MINERS", None)  # --llm smollm2: the shipped model, whatever the caller's environment says
    if miners is not None:
        env["DIGR_MINERS"] = miners
    caps = training_caps(growth_ops(home / "data"))
    results.parent.mkdir(parents=True, exist_ok=True)
    for assets in stages():
        load = round(os.getloadavg()[0], 2)  # other work on the machine: the report shows it beside the timings
        row = run_stage(assets, home=home, data=home / "data", env=env, timeout_s=timeout_s)
        record = {**context, "scale": scale, **counts, "stage": stage_name(assets), **row, "caps": caps, **data,
                  "load_1min_before": load, "recorded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        with results.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record, sort_keys=True) + "\n")
        error = f": {row['error']}" if row["error"] else ""
        print(f"[growth] {scale_label(scale)} {record['stage']}: {row['outcome']}, step {row['step_s']} s, process "
              f"{row['process_s']} s, peak RSS {row['peak_rss_mib']} MiB{error}", flush=True)
        if row["outcome"] != "ok":
            print(f"[growth] {scale_label(scale)}: {record['stage']} broke first; the later stages need it", flush=True)
            return


# --------------------------------------------------------------------------- report


def load_records(path: Path) -> list[dict]:
    """Every record of the results file; a missing file, a line that is not JSON, a missing field, an unknown
    stage or outcome is a :class:`GrowthError` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise GrowthError(f"results file {path} does not exist: run `python -m bench.growth run` first")
    known = {stage_name(s) for s in stages()}
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GrowthError(f"{where}: not a JSON line ({exc})") from None
        if not isinstance(record, dict):
            raise GrowthError(f"{where}: expected a JSON object, got {type(record).__name__}")
        missing = [f for f in REQUIRED if f not in record]
        if missing:
            raise GrowthError(f"{where}: record lacks field(s) {missing}")
        if record["stage"] not in known:
            raise GrowthError(f"{where}: unknown stage {record['stage']!r}; known: {sorted(known)}")
        if record["outcome"] not in OUTCOMES:
            raise GrowthError(f"{where}: unknown outcome {record['outcome']!r}; known: {list(OUTCOMES)}")
        if not (isinstance(record["scale"], int | float) and record["scale"] > 0):
            raise GrowthError(f"{where}: scale must be a positive number, got {record['scale']!r}")
        if record["outcome"] == "ok" and not isinstance(record["step_s"], int | float):
            raise GrowthError(f"{where}: an ok stage needs a number of step seconds, got {record['step_s']!r}")
        records.append({**record, "_line": number})
    return records


def latest_runs(records: list[dict]) -> dict[float, dict[str, dict]]:
    """Per scale, the records of its latest run (by run start, then file order), by stage."""
    out: dict[float, dict[str, dict]] = {}
    for scale in sorted({r["scale"] for r in records}):
        of_scale = [r for r in records if r["scale"] == scale]
        last = max(of_scale, key=lambda r: (r["run"], r["_line"]))["run"]
        out[scale] = {r["stage"]: r for r in of_scale if r["run"] == last}
    return out


def first_broken(by_stage: dict[str, dict]) -> dict | None:
    """The first stage (in pipeline order) that was not ok, or None."""
    for assets in stages():
        record = by_stage.get(stage_name(assets))
        if record is not None and record["outcome"] != "ok":
            return record
    return None


def fit_exponent(sizes: Sequence[float], seconds: Sequence[float]) -> float | None:
    """Least-squares slope of log(seconds) against log(size); None with fewer than two distinct sizes."""
    if len(set(sizes)) < 2:
        return None
    return float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0])


def fit_memory(sizes: Sequence[float], mib: Sequence[float], target: float) -> float | None:
    """Peak MiB at ``target`` from a straight line through (size, MiB), never below the largest measured; None
    with fewer than two distinct sizes (a process's memory is mostly a constant at small sizes: no ratio)."""
    if len(set(sizes)) < 2:
        return None
    slope, intercept = np.polyfit(np.asarray(sizes, dtype=float), np.asarray(mib, dtype=float), 1)
    return max(float(intercept + max(slope, 0.0) * target), max(mib))


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    if seconds < 2 * 365 * 86400:
        return f"{seconds / 86400:.0f} d"
    return f"{seconds / (365 * 86400):.1f} y"


def memory(mib: float) -> str:
    if mib < 1024:
        return f"{mib:.0f} MiB"
    if mib < 1024**2:
        return f"{mib / 1024:.1f} GiB"
    return f"{mib / 1024**2:.1f} TiB"


def _outcome_cell(record: dict) -> str:
    if record["outcome"] == "timeout":
        return f"**timeout** > {_number(record.get('stage_timeout_s'))} s"
    return f"**{record['outcome']}** after {record['process_s']:.0f} s"


def measured_table(runs: dict[float, dict[str, dict]]) -> str:
    scales = sorted(runs)
    base = scales[0]
    head = ["stage", "driver"]
    for s in scales:
        head += [f"{scale_label(s)} step s" + (f" (× {scale_label(base)})" if s != base else ""),
                 f"{scale_label(s)} peak MiB"]
    rows = []
    for assets in stages():
        name = stage_name(assets)
        cells = [f"`{name}`", DRIVERS[name]]
        base_s = runs[base].get(name, {}).get("step_s") if runs[base].get(name, {}).get("outcome") == "ok" else None
        for s in scales:
            record = runs[s].get(name)
            if record is None:
                cells += ["not reached", "–"]
            elif record["outcome"] != "ok":
                cells += [_outcome_cell(record), str(record["peak_rss_mib"])]
            else:
                ratio = f" (× {record['step_s'] / base_s:.2f})" if s != base and base_s else ""
                cells += [f"{record['step_s']:.1f}{ratio}", str(record["peak_rss_mib"])]
        rows.append(cells)
    totals = ["total (process wall)", ""]
    for s in scales:
        totals += [duration(sum(r["process_s"] for r in runs[s].values())), ""]
    rows.append(totals)
    return _table(head, rows)


def datasets_table(runs: dict[float, dict[str, dict]]) -> str:
    rows = []
    for s in sorted(runs):
        any_record = next(iter(runs[s].values()))
        written = any_record.get("data_write_s")
        size = any_record.get("data_mib")
        rows.append([scale_label(s), f"{any_record['users']:,}", f"{any_record['items']:,}",
                     f"{any_record['interactions']:,}", "–" if written is None else f"{written:.1f} s",
                     "–" if size is None else f"{size:.1f} MiB"])
    return _table(["scale", "users", "items", "interactions", "written in", "on disk"], rows)


def breaks_section(runs: dict[float, dict[str, dict]]) -> str:
    lines = []
    first_scale = None
    for s in sorted(runs):
        broken = first_broken(runs[s])
        ok = sum(r["outcome"] == "ok" for r in runs[s].values())
        if broken is None:
            done = f"all {len(runs[s])}" if len(runs[s]) == len(stages()) else f"{len(runs[s])} of {len(stages())}"
            lines.append(f"- {scale_label(s)}: none ({done} stages ok)")
            continue
        first_scale = first_scale or (s, broken)
        lines.append(f"- {scale_label(s)}: `{broken['stage']}` — {broken['outcome']}"
                     f" ({broken['error'] or 'no message'}); {ok} stage(s) before it ok")
    if first_scale is None:
        summary = f"No stage broke up to {scale_label(max(runs))}."
    else:
        summary = (f"First to break as the data grows: `{first_scale[1]['stage']}` at "
                   f"{scale_label(first_scale[0])} ({first_scale[1]['outcome']}).")
    return summary + "\n\n" + "\n".join(lines)


def extrapolation_table(runs: dict[float, dict[str, dict]]) -> str:
    rows = []
    for assets in stages():
        name = stage_name(assets)
        driver = DRIVERS[name]
        ok = [(r[driver], r["step_s"], r["peak_rss_mib"]) for s in sorted(runs)
              if (r := runs[s].get(name)) is not None and r["outcome"] == "ok"]
        notes = []
        broken = [runs[s][name] for s in sorted(runs) if name in runs[s] and runs[s][name]["outcome"] != "ok"]
        if broken:
            b = broken[0]
            notes.append(f"{b['outcome']} at {scale_label(b['scale'])}: the fit uses the scales below")
        if name in CAPPED:
            notes.append(CAPPED[name])
        target = TARGET[driver]
        if not ok:
            rows.append([f"`{name}`", driver, "–", "–", "–", "–", ENGINES[name], "; ".join(notes or ["not measured"])])
            continue
        size0, t0, _ = max(ok)
        # the slope between the two largest scales: fixed costs (imports, model loading, MLflow) flatten it at
        # the small ones, and the largest sizes are the nearest guide to the target
        top = sorted(ok)[-2:]
        exponent = fit_exponent([o[0] for o in top], [max(o[1], 0.1) for o in top])
        shown = f"{exponent:.2f}" if exponent is not None else "1 (assumed: one scale)"
        seconds = t0 * (target / size0) ** (max(exponent, 0.0) if exponent is not None else 1.0)
        mem = fit_memory([o[0] for o in ok], [o[2] for o in ok], target)
        mem_cell = memory(mem) if mem is not None else f"≥ {memory(max(o[2] for o in ok))} (one scale: no fit)"
        rows.append([f"`{name}`", driver, f"{max(o[0] for o in ok):,}", shown, duration(seconds), mem_cell,
                     ENGINES[name], "; ".join(notes)])
        if name == "item_interests":
            llm = TARGET["items"] / SMOLLM2_CPU_ITEMS_PER_S
            rows.append(["↳ the LLM itself (SmolLM2 on CPU)", "items", "–", "1 (one call per item and descriptor)",
                         duration(llm), "–", ENGINES[name],
                         f"{TARGET['items']:,} items / {SMOLLM2_CPU_ITEMS_PER_S} items/s; the row above is the "
                         "pipeline around the model (fake endpoint)"])
    return _table(["stage", "driver", "measured up to", "fitted exponent", "one machine (2 cores)",
                   "peak memory", "engine at that size", "notes"], rows)


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, int | float) else "?"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cell = lambda text: str(text).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(cell, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def provenance(runs: dict[float, dict[str, dict]], path: Path) -> str:
    parts = []
    for s in sorted(runs):
        r = next(iter(runs[s].values()))
        loads = [x["load_1min_before"] for x in runs[s].values() if isinstance(x.get("load_1min_before"), int | float)]
        load = f", 1-min load average before the stages {min(loads):.1f}–{max(loads):.1f}" if loads else ""
        parts.append(f"{scale_label(s)}: run {r['run']}, commit `{str(r['commit'])[:10]}"
                     f"{'+dirty' if str(r['commit']).endswith('+dirty') else ''}`, {r['machine']}, LLM "
                     f"{r.get('llm', '?')}, stage timeout {_number(r.get('stage_timeout_s'))} s, OMP threads "
                     f"{r.get('omp_threads') or 'unset'}{load}")
    caps = next(iter(runs[max(runs)].values()))["caps"]
    return (f"Records: `{_shown(path)}`; " + "; ".join(parts) + ". Training caps: "
            + ", ".join(f"{k} {json.dumps(v, sort_keys=True)}" for k, v in sorted(caps.items())) + ".")


def _shown(path: Path) -> str:
    try:
        return Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return Path(path).name


def render(path: Path = RESULTS) -> str:
    """The generated section (without markers) from the results file alone."""
    records = load_records(path)
    if not records:
        raise GrowthError(f"results file {path} holds no records")
    runs = latest_runs(records)
    ratio = {k: TARGET[k] / v for k, v in (("items", 4_385), ("interactions", 59_427))}
    return "\n\n".join([
        f"_Generated by `python -m bench.growth report` from `{_shown(path)}`; do not edit by hand. Synthetic "
        "catalogues from the demo generator's vocabulary at multiples of Scientific (`bench.synthetic_scale`), the "
        "nightly stages one process each at the 2-core CPU budget; the latest run of each scale._",
        "#### Data sets\n\n" + datasets_table(runs),
        "#### Measured: Dagster step seconds (× the smallest scale), peak RSS, outcome\n\n" + measured_table(runs),
        "#### Which stage breaks first\n\n" + breaks_section(runs),
        f"#### On paper: {TARGET['items']:,} items, {TARGET['interactions']:,} interactions\n\n"
        f"{ratio['items']:,.0f}× Scientific's items and {ratio['interactions']:,.0f}× its interactions. Time: the "
        "largest measured `ok` point times (target / its driver size) ^ exponent, the exponent the log-log slope "
        "between the two largest measured scales (fixed costs flatten it at the small ones; items and "
        "interactions grow together in the synthetic sets, so a stage that reads both, like full ranking, gets one "
        "exponent against its driver). Memory: a straight line through (size, peak MiB), never below the largest "
        f"measured. LLM inference: {SMOLLM2_CPU_ITEMS_PER_S} items/s ({SMOLLM2_CPU_SOURCE}).\n\n"
        + extrapolation_table(runs),
        provenance(runs, path)]) + "\n"


def replace_section(text: str, generated: str) -> str:
    """``text`` with the part between the growth markers replaced by ``generated``; when there are no markers, a
    "Growth beyond Scientific" heading with them is appended. Nothing outside the markers changes."""
    block = f"{BEGIN}\n{generated.strip()}\n{END}"
    begins, ends = text.count(BEGIN), text.count(END)
    if begins == ends == 0:
        return text.rstrip("\n") + f"\n\n{HEADING}\n\n{block}\n"
    if begins != 1 or ends != 1 or text.index(BEGIN) > text.index(END):
        raise GrowthError(f"expected one {BEGIN!r} before one {END!r}, found {begins} and {ends}")
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + block + text[stop:]


def cmd_report(args: argparse.Namespace) -> int:
    text = render(Path(args.results))
    if args.write:
        path = Path(args.write)
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        new = replace_section(old, text)
        if new != old:
            path.write_text(new, encoding="utf-8")
        print(f"{path}: growth section {'rewritten' if new != old else 'unchanged'}", file=sys.stderr)
    else:
        print(text, end="")
    return 0


def _scale_arg(text: str) -> float:
    try:
        return parse_scale(text)
    except GrowthError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.growth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="the nightly stages at each scale; one record per (scale, stage)")
    run.add_argument("--scales", nargs="+", type=_scale_arg, default=[1.0, 10.0, 100.0],
                     help="multiples of Scientific's users, items and interactions (default 1 10 100)")
    run.add_argument("--stage-timeout", type=float, default=DEFAULT_STAGE_TIMEOUT_S,
                     help=f"seconds before a stage is killed and recorded as timeout (default "
                          f"{DEFAULT_STAGE_TIMEOUT_S})")
    run.add_argument("--llm", choices=("fake", "smollm2"), default="fake",
                     help="fake: the loopback OpenAI-compatible server (default); smollm2: the real CPU model")
    run.add_argument("--seed", type=int, default=0, help="seed of the synthetic data sets")
    run.add_argument("--results", default=str(RESULTS), help="results file to append to")
    run.add_argument("--homes", default=str(HOMES), help="folder of the per-scale bench homes (wiped per scale)")
    run.set_defaults(func=cmd_run)
    stage = sub.add_parser("stage", help=argparse.SUPPRESS)
    stage.add_argument("assets", nargs="+")
    stage.add_argument("--data", required=True)
    stage.add_argument("--result", required=True)
    stage.set_defaults(func=cmd_stage)
    rep = sub.add_parser("report", help="the tables and the extrapolation from the results file alone")
    rep.add_argument("--results", default=str(RESULTS))
    rep.add_argument("--write", nargs="?", const=str(BENCHMARKS), default=None,
                     help="replace the growth section of this file (default BENCHMARKS.md) instead of printing")
    rep.set_defaults(func=cmd_report)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except GrowthError as exc:
        raise SystemExit(f"bench.growth {args.command}: {exc}") from None


if __name__ == "__main__":
    sys.exit(main())
