"""Raw benchmark results as data: one JSON line per trained (model, seed, codebook seed), committed under
``bench/results/``, from which every table of BENCHMARKS.md is regenerated (``bench.report``).

A record holds the metrics on valid and test, the per-user rank of each target (so any statistic, interval
or slice can be recomputed later), how training ended, cost, where it ran, the code commit and content hashes
of the split, the SIDs and the config. Per-user ranks are aligned with the split's users in sorted order; the
user list is stored once per split hash in ``bench/results/splits/<hash>.json`` (with each user's target items
and history lengths, for slices), not in every record.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from config_schema import from_mapping

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SCHEMA = 1
SPLITS = ("valid", "test")
METRIC_NAMES = ("hr@5", "hr@10", "ndcg@5", "ndcg@10")
#: ranks are recorded up to this depth (the beam width of the generators); deeper hits count as misses
RANK_CUTOFF = 20


class ResultsError(ValueError):
    """A result record or file that cannot be trusted (missing field, misaligned ranks, unknown split)."""


@dataclass(frozen=True)
class ResultRecord:
    """One trained model evaluated once. ``ranks[split]`` is 1-based within ``cutoff`` (0 = miss), aligned with
    the sorted user ids of the split file named by ``split_hash``."""

    dataset: str
    model: str  # a row of the report, e.g. "SASRec", "TIGER-style", "DeepInterestGR"
    profile: str  # the named budget it trained under: "cpu", "gpu", "published-recipe", ...
    seed: int
    metrics: dict[str, dict[str, float]]
    ranks: dict[str, list[int]]
    split_hash: str
    codebook_seed: int | None = None  # None for models without semantic IDs
    cutoff: int = RANK_CUTOFF
    epochs: int | None = None
    max_epochs: int | None = None
    stopped: Literal["early_stopping", "cap", "not_trained"] = "early_stopping"
    wall_s: float | None = None
    device: str = ""
    machine: str = ""
    commit: str = ""
    sids_hash: str | None = None
    config_hash: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    recorded_at: str = ""
    schema: int = SCHEMA

    def __post_init__(self) -> None:
        problems = []
        for split in SPLITS:
            if split not in self.metrics or split not in self.ranks:
                problems.append(f"no {split} metrics/ranks")
                continue
            missing = [m for m in METRIC_NAMES if m not in self.metrics[split]]
            if missing:
                problems.append(f"{split} metrics lack {missing}")
            bad = [r for r in self.ranks[split] if not 0 <= int(r) <= self.cutoff]
            if bad:
                problems.append(f"{split} ranks outside 0..{self.cutoff}: {bad[:3]}")
            infinite = [m for m, v in self.metrics[split].items() if not np.isfinite(float(v))]
            if infinite:
                problems.append(f"{split} metrics not finite: {infinite}")
        if all(s in self.ranks for s in SPLITS) and len(self.ranks["valid"]) != len(self.ranks["test"]):
            problems.append("valid and test ranks must both be aligned with the split's users (lengths differ)")
        if self.stopped not in ("early_stopping", "cap", "not_trained"):
            problems.append(f"unknown stopped value {self.stopped!r}")
        if self.schema != SCHEMA:
            problems.append(f"schema {self.schema} (this code reads {SCHEMA})")
        if problems:
            raise ResultsError(f"result record {self.model!r} seed {self.seed}: " + "; ".join(problems))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


def config_hash(config: Mapping[str, Any]) -> str:
    """A short content hash of a config mapping (key order does not matter)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def code_commit(root: Path | None = None) -> str:
    """The git commit of the code that produced a result, with ``+dirty`` when the tree had changes."""
    root = root or Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        # results files are data the benchmark itself appends to, not code: they do not make the tree dirty
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)bench/results"], cwd=root, capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def machine_description() -> str:
    """Where a result was measured: host CPU count and platform (and the GPU when torch sees one)."""
    desc = f"{platform.machine()} {os.cpu_count()} cores, {platform.system()}"
    try:
        import torch

        if torch.cuda.is_available():
            desc += f", {torch.cuda.get_device_name(0)}"
    except ImportError:  # results can be read without torch
        pass
    return desc


# --------------------------------------------------------------------------- the split file


def split_users(splits: pd.DataFrame) -> dict[str, Any]:
    """What the report needs of a leave-one-out split: sorted users, each one's valid/test target, its history
    length at test time, and every item's train count (for cold-item and popularity slices)."""
    frame = splits.sort_values(["user_id", "position"], kind="stable")
    users = sorted(frame["user_id"].astype(str).unique())
    held = frame[frame["split"] != "train"].pivot(index="user_id", columns="split", values="item_id")
    held.index = held.index.astype(str)
    train = frame[frame["split"] == "train"]
    train_len = train.groupby(train["user_id"].astype(str)).size()
    return {
        "users": users,
        "valid_target": [str(held.at[u, "valid"]) if u in held.index else None for u in users],
        "test_target": [str(held.at[u, "test"]) if u in held.index else None for u in users],
        "train_length": [int(train_len.get(u, 0)) for u in users],
        "train_counts": {str(k): int(v) for k, v in train["item_id"].astype(str).value_counts().items()},
    }


def split_hash_of(splits: pd.DataFrame) -> str:
    """Content hash of the split (users, items, labels in order), as ``interaction_splits`` records it."""
    frame = splits.sort_values(["user_id", "position"], kind="stable")[["user_id", "item_id", "split"]]
    hashed = pd.util.hash_pandas_object(frame.astype(str), index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes() + ",".join(frame.columns).encode()).hexdigest()[:16]


def write_split(splits: pd.DataFrame, directory: Path = RESULTS_DIR) -> str:
    """Store the split's user file once (by content hash) and return the hash records refer to."""
    digest = split_hash_of(splits)
    path = directory / "splits" / f"{digest}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(split_users(splits), sort_keys=True, separators=(",", ":")))
        tmp.replace(path)
    return digest


def read_split(digest: str, directory: Path = RESULTS_DIR) -> dict[str, Any]:
    path = directory / "splits" / f"{digest}.json"
    if not path.is_file():
        raise ResultsError(f"split file {path} is missing: records refer to split {digest}")
    return json.loads(path.read_text())


def ranks_by_user(user_ids: Sequence[str], ranks: Sequence[int], split_hash: str,
                  directory: Path = RESULTS_DIR) -> list[int]:
    """Per-user ranks (any user order) aligned with the split file's sorted users; users the model did not
    rank (no target in this split) get 0."""
    users = read_split(split_hash, directory)["users"]
    given = dict(zip(map(str, user_ids), (int(r) for r in ranks), strict=True))
    unknown = set(given) - set(users)
    if unknown:
        raise ResultsError(f"{len(unknown)} ranked user(s) are not in split {split_hash}, e.g. {sorted(unknown)[:3]}")
    return [given.get(u, 0) for u in users]


def append_baseline(result: Any, splits: pd.DataFrame, *, dataset: str, model: str, profile: str, seed: int,
                    stopped: str, config: Mapping[str, Any], wall_s: float, name: str, epochs: int | None = None,
                    max_epochs: int | None = None, commit: str | None = None, device: str = "cpu",
                    directory: Path = RESULTS_DIR) -> Path:
    """Append a registered baseline's ``BaselineResult`` (metrics, per-user ranks, cutoff) as one record; the
    split file is stored first. ``commit``: the code the run started from (default: now)."""
    split_hash = write_split(splits, directory)
    config = dict(config)
    return append(ResultRecord(
        dataset=dataset, model=model, profile=profile, seed=seed,
        metrics={s: {m: float(result.metrics[s][m]) for m in METRIC_NAMES} for s in SPLITS},
        ranks={s: ranks_by_user(result.user_ids[s], result.ranks[s].tolist(), split_hash, directory) for s in SPLITS},
        split_hash=split_hash, cutoff=result.cutoff, epochs=epochs, max_epochs=max_epochs, stopped=stopped,
        wall_s=round(wall_s, 1), device=device, machine=machine_description(), commit=commit or code_commit(),
        config=config, config_hash=config_hash(config)), name, directory)


# --------------------------------------------------------------------------- the results file


def append(record: ResultRecord, name: str, directory: Path = RESULTS_DIR) -> Path:
    """Append ``record`` to ``<directory>/<name>.jsonl`` (one line, written whole)."""
    if not record.recorded_at:
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        record = ResultRecord(**{**asdict(record), "recorded_at": now})
    path = directory / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(record.to_json() + "\n")
    return path


def load(paths: Iterable[Path]) -> list[ResultRecord]:
    """Every record of the given JSONL files; a malformed line is an error naming the file and line."""
    out = []
    for path in paths:
        for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                out.append(from_mapping(ResultRecord, json.loads(line), where=f"{path}:{number}"))
            except (ValueError, TypeError) as exc:
                raise ResultsError(f"{path}:{number}: {exc}") from exc
    return out


def ranks_array(record: ResultRecord, split: str) -> np.ndarray:
    return np.asarray(record.ranks[split], dtype=np.int64)
