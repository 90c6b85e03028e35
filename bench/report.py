"""Every benchmark table of BENCHMARKS.md, regenerated from the committed raw results (``bench/results/*.jsonl``).

    python -m bench.scientific report [--results DIR] [--write BENCHMARKS.md]

For each (dataset, profile) of the records: the **quality** table (one row per model: runs, valid and test
HR@10 / NDCG@10 as mean ± sample std over runs, how training ended, commits and machines), the **paired
comparisons** of every model with each reference model (per-user NDCG@10 difference over the users both
evaluated, paired bootstrap 95% interval, and the paired-by-seed difference where seeds match) on test and
valid, and the **slices** on test (cold target items, item-popularity deciles, history-length buckets; via
``evaluation.slices``). Everything is deterministic: sorted rows, a fixed bootstrap seed, fixed number
formats, no clock, so rerunning the report on the same records rewrites BENCHMARKS.md byte for byte.

A run is one (model, generator seed, codebook seed); when a results file holds the same run twice (a rerun),
the later record (``recorded_at``, then file order) is used and the table says how many were superseded.
A model with a single run is labelled "(1 run)", shows no ±, and is not compared with a model that has a mean
(unless it was not trained at all, like most-popular: its one run is exact).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.results import RESULTS_DIR, SPLITS, ResultRecord, ResultsError, load, read_split

BEGIN, END = "<!-- bench report: generated begin -->", "<!-- bench report: generated end -->"
REFERENCES: tuple[str, ...] = ("TIGER-style", "SASRec")
K = 10
N_BOOT = 2000
BOOT_SEED = 0
#: the recorded metrics and the ones recomputed from the ranks may differ by rounding only
METRIC_TOLERANCE = 5e-4
MAX_NOTES = 20
STOPPED = {"early_stopping": "early stop", "cap": "hit cap", "not_trained": "not trained"}
MINUS = "\u2212"


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Run:
    """One record and where it came from (``file.jsonl:line``, relative to the results directory)."""

    record: ResultRecord
    source: str

    @property
    def key(self) -> tuple[int, int | None]:
        return (self.record.seed, self.record.codebook_seed)


#: results files of other benchmarks kept beside the quality records, with records of their own kind
OTHER_RECORDS = frozenset({"growth.jsonl"})  # bench.growth: stage costs at multiples of Scientific

#: profiles of baselines with a fixed recipe of their own (not a budget): shown beside every budget profile
SHARED_PROFILES = ("published-recipe", "deterministic")


@dataclass(frozen=True)
class Results:
    """The runs of one results directory, one per (dataset, profile, model, seed, codebook seed)."""

    runs: tuple[Run, ...]
    superseded: tuple[Run, ...]
    split_files: Mapping[str, dict]  # split hash -> the split file (``bench.results.read_split``)

    def groups(self) -> dict[tuple[str, str], list[Run]]:
        """Runs per (dataset, budget profile). Baselines trained under their own fixed recipe
        (``SHARED_PROFILES``) are shown, and compared, beside every budget profile of their dataset; a dataset
        with only such runs gets one group of them."""
        own: dict[tuple[str, str], list[Run]] = {}
        shared: dict[str, list[Run]] = {}
        for run in self.runs:
            if run.record.profile in SHARED_PROFILES:
                shared.setdefault(run.record.dataset, []).append(run)
            else:
                own.setdefault((run.record.dataset, run.record.profile), []).append(run)
        out = {key: runs + shared.get(key[0], []) for key, runs in own.items()}
        for dataset, runs in shared.items():
            if not any(key[0] == dataset for key in own):
                profiles = sorted({r.record.profile for r in runs})
                out[(dataset, " + ".join(profiles))] = runs
        return {key: out[key] for key in sorted(out)}


def load_results(directory: Path = RESULTS_DIR) -> Results:
    """Every record of ``directory/*.jsonl`` (sorted by file name; not ``OTHER_RECORDS``), checked against its split
    file: a malformed line or ranks that do not line up with the split's users is a :class:`ResultsError` naming
    file and line."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ResultsError(f"results directory {directory} does not exist")
    runs = []
    split_files: dict[str, dict] = {}
    for path in sorted(p for p in directory.glob("*.jsonl") if p.name not in OTHER_RECORDS):
        lines = [n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1) if line.strip()]
        records = load([path])  # raises naming path:line for malformed lines
        for number, record in zip(lines, records, strict=True):
            source = f"{path.name}:{number}"
            if record.split_hash not in split_files:
                split_files[record.split_hash] = read_split(record.split_hash, directory)
            split = split_files[record.split_hash]
            for name in SPLITS:
                if len(record.ranks[name]) != len(split["users"]):
                    raise ResultsError(f"{path}:{number}: {record.model!r} seed {record.seed} has "
                                       f"{len(record.ranks[name])} {name} ranks but split {record.split_hash} has "
                                       f"{len(split['users'])} users")
            runs.append(Run(record, source))
    latest: dict[tuple, Run] = {}
    superseded = []
    for _, run in sorted(enumerate(runs), key=lambda pair: (pair[1].record.recorded_at, pair[0])):
        r = run.record
        key = (r.dataset, r.profile, r.model, r.seed, r.codebook_seed)
        if key in latest:
            superseded.append(latest[key])
        latest[key] = run
    kept = sorted(latest.values(), key=lambda run: (run.record.dataset, run.record.profile, run.record.model,
                                                    run.record.seed, _cb_sort(run.record.codebook_seed)))
    return Results(tuple(kept), tuple(sorted(superseded, key=lambda run: run.source)), split_files)


def _cb_sort(codebook_seed: int | None) -> tuple[int, int]:
    return (0, 0) if codebook_seed is None else (1, codebook_seed)


# --------------------------------------------------------------------------- arithmetic


def ndcg_from_ranks(ranks: np.ndarray, k: int = K) -> np.ndarray:
    """Per-user NDCG@k of one held-out item: 1/log2(rank+1) for 1 ≤ rank ≤ k, else 0 (rank 0 = miss)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    hit = (ranks >= 1) & (ranks <= k)
    return np.where(hit, 1.0 / np.log2(np.where(hit, ranks, 1.0) + 1.0), 0.0)


def hits_from_ranks(ranks: np.ndarray, k: int = K) -> np.ndarray:
    ranks = np.asarray(ranks)
    return ((ranks >= 1) & (ranks <= k)).astype(np.float64)


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1); no std for a single value."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), (float(arr.std(ddof=1)) if len(arr) > 1 else None)


def paired_bootstrap(diff: np.ndarray, *, n_boot: int = N_BOOT, seed: int = BOOT_SEED,
                     level: float = 0.95, chunk: int = 100) -> tuple[float, float]:
    """Percentile interval of the mean of ``diff`` (one paired difference per user) over ``n_boot`` resamples
    of the users with replacement (a fixed seed: the same input gives the same interval)."""
    diff = np.asarray(diff, dtype=np.float64)
    if len(diff) == 0:
        raise ValueError("paired bootstrap over no users")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        means[start:start + size] = diff[rng.integers(0, len(diff), size=(size, len(diff)))].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class ModelRuns:
    """The runs of one model in one (dataset, profile) on one split file."""

    model: str
    runs: tuple[Run, ...]
    split_hash: str

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def deterministic(self) -> bool:
        """Not trained (e.g. most-popular): its one run is exact, so it may be compared with a mean."""
        return all(run.record.stopped == "not_trained" for run in self.runs)

    def per_user(self, split: str, evaluated: np.ndarray, kind: str = "ndcg") -> np.ndarray:
        """runs × evaluated users of NDCG@10 (or hits)."""
        f = ndcg_from_ranks if kind == "ndcg" else hits_from_ranks
        return np.stack([f(np.asarray(run.record.ranks[split])[evaluated]) for run in self.runs])


def _models(runs: list[Run]) -> list[ModelRuns]:
    by: dict[str, list[Run]] = {}
    for run in runs:
        by.setdefault(run.record.model, []).append(run)
    out = []
    for model in sorted(by):
        hashes = sorted({run.record.split_hash for run in by[model]})
        if len(hashes) > 1:
            where = ", ".join(run.source for run in by[model])
            raise ResultsError(f"runs of {model!r} ({by[model][0].record.dataset}, profile "
                               f"{by[model][0].record.profile}) use different splits {hashes}: {where}")
        out.append(ModelRuns(model, tuple(by[model]), hashes[0]))
    return out


def _evaluated(split_file: Mapping, split: str) -> np.ndarray:
    """Indices (into the sorted users) of the users with a target in ``split``."""
    return np.array([i for i, t in enumerate(split_file[f"{split}_target"]) if t is not None], dtype=np.int64)


@dataclass(frozen=True)
class Comparison:
    model: str
    reference: str
    split: str
    runs: tuple[int, int]
    users: int
    model_mean: float
    reference_mean: float
    diff: float
    low: float
    high: float
    by_seed: tuple[float, float | None, int] | None  # mean, std, pairs

    @property
    def relative(self) -> float | None:
        return self.diff / self.reference_mean if self.reference_mean else None

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def compare(model: ModelRuns, reference: ModelRuns, split: str, split_file: Mapping, *,
            n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> Comparison:
    """Per-user NDCG@10 (averaged over each model's runs) of ``model`` minus ``reference`` over the users both
    evaluated, its paired-bootstrap 95% interval, and the mean difference over runs with matching seeds."""
    evaluated = _evaluated(split_file, split)
    a = model.per_user(split, evaluated)
    b = reference.per_user(split, evaluated)
    diff = a.mean(axis=0) - b.mean(axis=0)
    low, high = paired_bootstrap(diff, n_boot=n_boot, seed=seed)
    ref_runs = {run.key: i for i, run in enumerate(reference.runs)}
    pairs = [a[i].mean() - b[ref_runs[run.key]].mean() for i, run in enumerate(model.runs) if run.key in ref_runs]
    by_seed = (*mean_std(pairs), len(pairs)) if pairs else None
    return Comparison(model.model, reference.model, split, (model.n, reference.n), len(evaluated),
                      float(a.mean()), float(b.mean()), float(diff.mean()), low, high, by_seed)


# --------------------------------------------------------------------------- formatting


def _num(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}f}"


def _signed(x: float, digits: int = 4) -> str:
    text = f"{x:+.{digits}f}"
    if float(text) == 0.0:
        return f"{0:.{digits}f}"
    return text.replace("-", MINUS)


def _pct(x: float | None) -> str:
    return "–" if x is None else _signed(100 * x, 1) + "%"


def _mean_std_cell(values: Sequence[float]) -> str:
    mean, std = mean_std(values)
    return _num(mean) if std is None else f"{_num(mean)} ± {_num(std)}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _commit(sha: str) -> str:
    if not sha:
        return "?"
    base, _, dirty = sha.partition("+")
    return base[:10] + (f"+{dirty}" if dirty else "")


def _seed_label(run: Run) -> str:
    cb = run.record.codebook_seed
    return f"{run.record.seed}/{'–' if cb is None else cb}"


def provenance(runs: Sequence[Run], superseded: Sequence[Run] = ()) -> str:
    """One line: which records (files, commits, machines, recorded_at range) a table comes from."""
    files = sorted({run.source.rsplit(":", 1)[0] for run in runs})
    commits = sorted({_commit(run.record.commit) for run in runs})
    machines = sorted({run.record.machine or "?" for run in runs})
    times = sorted(run.record.recorded_at for run in runs if run.record.recorded_at)
    when = f"recorded {times[0]} to {times[-1]}" if times else "no recorded_at"
    extra = f"; {len(superseded)} earlier record(s) of the same runs superseded" if superseded else ""
    return (f"_Records: {len(runs)} from {', '.join(f'`{f}`' for f in files)}; commit "
            f"{', '.join(f'`{c}`' for c in commits)}; machine {'; '.join(machines)}; {when}{extra}._")


# --------------------------------------------------------------------------- tables


def quality_table(models: Sequence[ModelRuns]) -> str:
    head = ["model", "runs", "seed/codebook", "valid HR@10", "valid NDCG@10", "test HR@10", "test NDCG@10",
            "training ended", "epochs (cap)", "commit", "machine"]
    rows = []
    for m in models:
        recs = [run.record for run in m.runs]
        cells = [_mean_std_cell([r.metrics[split][metric] for r in recs])
                 for split in ("valid", "test") for metric in ("hr@10", "ndcg@10")]
        ended = Counter(r.stopped for r in recs)
        ended_cell = ", ".join(f"{STOPPED[s]} {ended[s]}/{m.n}" for s in STOPPED if ended[s])
        epochs = ", ".join("–" if r.epochs is None else str(r.epochs) for r in recs)
        caps = sorted({r.max_epochs for r in recs if r.max_epochs is not None})
        epochs += f" (cap {', '.join(map(str, caps))})" if caps else ""
        name = m.model + (" (deterministic)" if m.deterministic else " (1 run)" if m.n == 1 else "")
        rows.append([name, str(m.n), " ".join(_seed_label(run) for run in m.runs), *cells, ended_cell, epochs,
                     ", ".join(sorted({_commit(r.commit) for r in recs})),
                     "; ".join(sorted({r.machine or "?" for r in recs}))])
    return _table(head, rows)


def consistency_notes(models: Sequence[ModelRuns], split_files: Mapping[str, Mapping]) -> list[str]:
    """Runs whose recorded NDCG@10/HR@10 disagree with the ones recomputed from their ranks."""
    notes = []
    for m in models:
        for run in m.runs:
            for split in SPLITS:
                evaluated = _evaluated(split_files[m.split_hash], split)
                ranks = np.asarray(run.record.ranks[split])[evaluated]
                for metric, f in (("ndcg@10", ndcg_from_ranks), ("hr@10", hits_from_ranks)):
                    got = float(f(ranks).mean()) if len(ranks) else 0.0
                    if abs(got - run.record.metrics[split][metric]) > METRIC_TOLERANCE:
                        notes.append(f"{run.source} ({m.model}, {split} {metric}): recorded "
                                     f"{_num(run.record.metrics[split][metric])}, from ranks {_num(got)}")
    return notes


def comparison_table(models: Sequence[ModelRuns], split: str, split_files: Mapping[str, Mapping],
                     references: Sequence[str], *, n_boot: int = N_BOOT,
                     seed: int = BOOT_SEED) -> tuple[str, list[str]]:
    """Markdown table of every model vs every reference present, and notes on pairs left out."""
    by_name = {m.model: m for m in models}
    refs = [r for r in references if r in by_name]
    rows, notes = [], []
    for done, ref_name in enumerate(refs):
        ref = by_name[ref_name]
        for m in models:
            if m.model == ref_name or m.model in refs[:done]:  # each pair of references once
                continue
            if m.split_hash != ref.split_hash:
                notes.append(f"{m.model} vs {ref_name}: different splits, not compared")
                continue
            if (m.n == 1) != (ref.n == 1) and not (m.deterministic or ref.deterministic):
                single = m.model if m.n == 1 else ref_name
                notes.append(f"{m.model} vs {ref_name}: {single} has a single run, not compared with a mean")
                continue
            c = compare(m, ref, split, split_files[m.split_hash], n_boot=n_boot, seed=seed)
            by_seed = "–"
            if c.by_seed is not None:
                mean, std, pairs = c.by_seed
                by_seed = _signed(mean) + ("" if std is None else f" ± {_num(std)}") + \
                    f" ({pairs} pair{'s' if pairs != 1 else ''})"
            rows.append([c.model, c.reference, f"{c.runs[0]} vs {c.runs[1]}", f"{c.users:,}", _num(c.model_mean),
                         _num(c.reference_mean), _signed(c.diff), _pct(c.relative),
                         f"[{_signed(c.low)}, {_signed(c.high)}]", "yes" if c.excludes_zero else "no", by_seed])
    head = ["model", "reference", "runs", "users", "model NDCG@10", "reference NDCG@10", "difference", "relative",
            "95% interval", "excludes 0", "paired by seed"]
    return (_table(head, rows) if rows else ""), notes


def slice_table(models: Sequence[ModelRuns], split_file: Mapping, split: str = "test") -> str:
    """Markdown: NDCG@10 / HR@10 of every model (runs pooled) on each slice of the test users, with counts."""
    from evaluation.slices import slice_metrics, user_slices

    evaluated = _evaluated(split_file, split)
    users = [split_file["users"][i] for i in evaluated]
    targets = [split_file[f"{split}_target"][i] for i in evaluated]
    has_valid = [split_file["valid_target"][i] is not None for i in evaluated]
    # test history = train prefix + the valid item; valid history = train prefix
    lengths = [split_file["train_length"][i] + (1 if split == "test" and v else 0)
               for i, v in zip(evaluated, has_valid, strict=True)]
    slices = user_slices(users, targets, lengths, split_file["train_counts"])
    # pooled over runs: the mean over runs of a slice's mean equals the slice's mean of per-user run means
    owner: dict[str, str] = {}
    ranks: dict[str, np.ndarray] = {}
    for m in models:
        for run in m.runs:
            key = f"run{len(owner)}"
            owner[key] = m.model
            ranks[key] = np.asarray(run.record.ranks[split], dtype=np.int64)[evaluated]
    frame = slice_metrics(slices, ranks, k=K)
    head = ["slice", "users"] + [f"{m.model}{' (deterministic)' if m.deterministic else ' (1 run)' if m.n == 1 else ''}"
                                 for m in models]
    rows = []
    for _, row in frame.iterrows():
        cells = [_slice_label(row["slice"], row["value"]), f"{int(row['users']):,}"]
        for m in models:
            keys = [key for key, model in owner.items() if model == m.model]
            ndcg = float(np.mean([row[f"{key} NDCG@{K}"] for key in keys]))
            hr = float(np.mean([row[f"{key} HR@{K}"] for key in keys]))
            cells.append(f"{_num(ndcg)} / {_num(hr)}")
        rows.append(cells)
    return _table(head, rows)


def variance_table(models: Sequence[ModelRuns], split: str = "test") -> str | None:
    """Markdown: how far NDCG@10 moves when only the generator seed varies (codebook held) and when only the
    RQ-VAE seed varies (generator seed held), per model; None when no model has either kind of run pair."""
    head = ["model", "varies", "held", "runs", f"{split} NDCG@10", "min – max", "range / mean"]
    rows = []
    for m in models:
        recs = [run.record for run in m.runs if run.record.codebook_seed is not None]
        for varies, held_by, label in (("generator seed", "codebook_seed", "codebook"),
                                       ("codebook seed", "seed", "generator")):
            for held in sorted({getattr(r, held_by) for r in recs}):
                group = sorted((r for r in recs if getattr(r, held_by) == held),
                               key=lambda r: r.codebook_seed if held_by == "seed" else r.seed)
                if len(group) < 2:
                    continue
                values = [r.metrics[split]["ndcg@10"] for r in group]
                mean = float(np.mean(values))
                seeds = ",".join(str(r.codebook_seed if held_by == "seed" else r.seed) for r in group)
                rows.append([m.model, f"{varies} {seeds}", f"{label} {held}", str(len(group)),
                             _mean_std_cell(values), f"{_num(min(values))} – {_num(max(values))}",
                             f"{100 * (max(values) - min(values)) / mean:.1f}%" if mean else "–"])
    return _table(head, rows) if rows else None


def _slice_label(name: str, value: str) -> str:
    if name == "all":
        return "all users"
    if name == "cold":
        return f"{value} target item" + (" (no train interaction)" if value == "cold" else "")
    if name == "popularity_decile":
        return "popularity decile 0 (cold)" if value == "0" else f"popularity decile {value}" + (
            " (most popular)" if value == "1" else "")
    return f"history {value}"


# --------------------------------------------------------------------------- the report


def render(results_dir: Path = RESULTS_DIR, *, references: Sequence[str] = REFERENCES, n_boot: int = N_BOOT,
           seed: int = BOOT_SEED) -> str:
    """The generated section of BENCHMARKS.md (without markers) from the records of ``results_dir``."""
    results = load_results(Path(results_dir))
    out = [f"_Generated by `python -m bench.scientific report` from the raw results in `{_shown(results_dir)}/`; "
           "do not edit by hand. Mean ± sample std (ddof=1) over runs (generator seed × codebook seed); NDCG@10 from "
           f"the per-user ranks; paired bootstrap over users, B = {n_boot}, seed {seed}, 95% percentile "
           "interval._"]
    if not results.runs:
        out.append("_No result records yet._")
        return "\n\n".join(out) + "\n"
    for (dataset, profile), runs in results.groups().items():
        models = _models(runs)
        split_files = {m.split_hash: results.split_files[m.split_hash] for m in models}
        profiles = {r.record.profile for r in runs}
        superseded = [r for r in results.superseded if r.record.dataset == dataset and r.record.profile in profiles]
        source = provenance(runs, superseded)
        out.append(f"### {dataset} · profile `{profile}`")
        out.append("#### Quality\n\n" + quality_table(models) + "\n\n" + source)
        notes = consistency_notes(models, split_files)
        if notes:
            shown = notes[:MAX_NOTES] + ([f"... and {len(notes) - MAX_NOTES} more"] if len(notes) > MAX_NOTES else [])
            out.append("Recorded metrics that disagree with their ranks:\n\n" + "\n".join(f"- {n}" for n in shown))
        for split in ("test", "valid"):
            table, skipped = comparison_table(models, split, split_files, references, n_boot=n_boot, seed=seed)
            refs = [r for r in references if any(m.model == r for m in models)]
            title = f"#### Paired comparisons, {split}: NDCG@10 difference vs {', '.join(refs) or 'no reference'}"
            body = table or "_No comparison: no reference model, or no model to compare with it._"
            text = f"{title}\n\n{body}"
            if skipped:
                text += "\n\n" + "\n".join(f"- {n}" for n in skipped)
            out.append(text + "\n\n" + source)
        variance = variance_table(models)
        if variance:
            out.append("#### Variance sources, test: the generator seed vs the RQ-VAE (codebook) seed\n\n"
                       + variance + "\n\n" + source)
        for digest in sorted(split_files):
            on_split = [m for m in models if m.split_hash == digest]
            label = f" (split `{digest}`)" if len(split_files) > 1 else ""
            out.append(f"#### Slices, test{label}: NDCG@10 / HR@10, runs pooled\n\n"
                       + slice_table(on_split, split_files[digest]) + "\n\n"
                       + provenance([run for m in on_split for run in m.runs]))
    return "\n\n".join(out) + "\n"


def _shown(directory: Path) -> str:
    """``directory`` relative to the repository (so the text does not depend on the checkout's location)."""
    path = Path(directory).resolve()
    try:
        return path.relative_to(RESULTS_DIR.parents[1]).as_posix()
    except ValueError:
        return path.name


def replace_generated(text: str, generated: str) -> str:
    """``text`` with the part between the markers replaced by ``generated`` (the block appended when absent);
    the hand-written text outside the markers is kept as it is."""
    block = f"{BEGIN}\n{generated.strip()}\n{END}"
    begins, ends = text.count(BEGIN), text.count(END)
    if begins == ends == 0:
        return (text.rstrip("\n") + "\n\n" if text.strip() else "") + block + "\n"
    if begins != 1 or ends != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"expected one {BEGIN!r} before one {END!r}, found {begins} and {ends}")
    return re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _m: block, text, count=1, flags=re.S)


def write(path: Path, generated: str) -> bool:
    """Write ``generated`` between the markers of ``path``; returns whether the file changed."""
    path = Path(path)
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    new = replace_generated(old, generated)
    if new != old:
        path.write_text(new, encoding="utf-8")
    return new != old


def main(results_dir: Path = RESULTS_DIR, write_to: Path | None = None,
         references: Sequence[str] = REFERENCES) -> str:
    text = render(results_dir, references=references)
    if write_to is not None:
        write(write_to, text)
    return text


__all__ = ["BEGIN", "END", "REFERENCES", "Comparison", "ModelRuns", "Results", "ResultsError", "Run", "compare",
           "hits_from_ranks", "load_results", "main", "mean_std", "ndcg_from_ranks", "paired_bootstrap", "provenance",
           "render", "replace_generated", "write"]
