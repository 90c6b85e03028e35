"""PNG plots for the evaluation report: metrics per model, codebook usage, GRPO reward curves.

Figures are built with matplotlib's object API (``Figure`` + Agg canvas), never ``pyplot``: no display,
no global figure state, safe in Dagster worker processes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from evaluation.report import EVAL_SPLITS, EvaluationReport

REWARD_PREFIX = "grpo/reward_"
KL_KEY = "grpo/kl"
VAL_KEY = "val_ndcg@10"


class PlotError(ValueError):
    """Input a plot cannot be drawn from; the message names the missing or bad field."""


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=110, bbox_inches="tight")
    return path


def plot_metrics(report: EvaluationReport, path: str | Path) -> Path:
    """Grouped bars, one panel per split (valid, test): metrics on the x axis, one bar per model."""
    if not isinstance(report, EvaluationReport):
        raise PlotError(f"plot_metrics needs an EvaluationReport, got {type(report).__name__}")
    long = report.table()
    splits = [s for s in EVAL_SPLITS if (long["split"] == s).any()]
    metrics = list(report.metric_names)
    models = list(dict.fromkeys(long["model"]))
    width_in = max(6.0, 0.4 * len(metrics) * len(models) + 3)
    fig = Figure(figsize=(width_in, 3.6 * len(splits)), layout="constrained")
    width = 0.8 / len(models)
    for row, split in enumerate(splits, 1):
        ax = fig.add_subplot(len(splits), 1, row)
        part = long[long["split"] == split].set_index(["model", "metric"])["value"]
        x = np.arange(len(metrics))
        for j, model in enumerate(models):
            values = [part.get((model, m), np.nan) for m in metrics]
            ax.bar(x + (j - (len(models) - 1) / 2) * width, values, width, label=model)
        ax.set_xticks(x, metrics)
        ax.set_title(f"{split} split")
        ax.set_ylabel("score")
        ax.grid(axis="y", alpha=0.3)
    fig.axes[0].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def plot_codebook_usage(health_metadata: Mapping[str, Any], path: str | Path) -> Path:
    """Per-level code usage and normalised entropy (both in [0, 1]) from ``CodebookHealth.to_metadata()``;
    the collision rate goes in the title."""
    missing = [k for k in ("usage", "entropy_normalised") if k not in health_metadata]
    if missing:
        raise PlotError(f"codebook health metadata lacks {missing}; expected CodebookHealth.to_metadata()")
    usage = _numbers(health_metadata["usage"], "usage")
    entropy = _numbers(health_metadata["entropy_normalised"], "entropy_normalised")
    if len(usage) != len(entropy):
        raise PlotError(f"usage has {len(usage)} levels but entropy_normalised has {len(entropy)}")
    if not usage:
        raise PlotError("codebook health metadata has no levels")
    levels = np.arange(len(usage))
    fig = Figure(figsize=(max(4.5, 1.3 * len(usage) + 2), 3.6), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(levels - 0.2, usage, 0.4, label="code usage")
    ax.bar(levels + 0.2, entropy, 0.4, label="normalised entropy")
    sizes = health_metadata.get("codebook_sizes")
    labels = [f"level {i}" + (f"\n(K={sizes[i]})" if sizes and i < len(sizes) else "") for i in levels]
    ax.set_xticks(levels, labels)
    ax.set_ylim(0, 1.05)
    title = "Codebook health"
    if "collision_rate" in health_metadata:
        title += f" (collision rate {float(health_metadata['collision_rate']):.3f})"
    ax.set_title(title)
    ax.legend(fontsize="small", loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_reward_curves(history: Sequence[Mapping[str, float]], path: str | Path) -> Path:
    """GRPO per-epoch reward components, KL and validation NDCG@10, one panel each where present.

    Keys ``grpo/reward_*``, ``grpo/kl`` and ``val_ndcg@10`` are read (Lightning's ``*_epoch`` variants
    too; ``*_step`` ones are ignored). Rows missing a key leave a gap; x is ``epoch`` when given.
    """
    if not history:
        raise PlotError("reward history is empty: nothing to plot")
    rows = [{_epoch_key(k): v for k, v in row.items() if not k.endswith("_step")} for row in history]
    keys = list(dict.fromkeys(k for row in rows for k in row))
    rewards = [k for k in keys if k.startswith(REWARD_PREFIX)]
    panels = [(p, t) for p, t in ((rewards, "reward components"), ([KL_KEY], "KL to reference"),
                                  ([VAL_KEY], "validation NDCG@10")) if any(k in keys for k in p)]
    if not panels:
        raise PlotError(f"reward history has none of {REWARD_PREFIX}*, {KL_KEY}, {VAL_KEY}; keys: {keys[:10]}")
    x = [float(row.get("epoch", i)) for i, row in enumerate(rows)]
    fig = Figure(figsize=(6.5, 2.8 * len(panels)), layout="constrained")
    for i, (panel_keys, title) in enumerate(panels, 1):
        ax = fig.add_subplot(len(panels), 1, i)
        for key in panel_keys:
            y = [_value(row.get(key)) for row in rows]
            if all(math.isnan(v) for v in y):
                continue
            ax.plot(x, y, marker="o", label=key.removeprefix(REWARD_PREFIX))
        ax.set_title(title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if len(panel_keys) > 1:
            ax.legend(fontsize="small")
    fig.axes[-1].set_xlabel("epoch")
    return _save(fig, path)


def _epoch_key(key: str) -> str:
    return key.removesuffix("_epoch")


def _value(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _numbers(values: Any, name: str) -> list[float]:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise PlotError(f"{name} must be a list of numbers, got {values!r}") from exc
    if any(not math.isfinite(v) for v in out):
        raise PlotError(f"{name} has non-finite values: {out}")
    return out
