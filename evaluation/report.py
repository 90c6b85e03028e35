"""The evaluation report: every model × split × metric in one table, and example users a person can read.

The report holds :class:`ModelResult` rows (the generator, its ablations and the baselines, all on the
same split and metrics). :func:`example_users` explains a few users: their history (train prefix),
mined interests and top-5 recommendations, with the held-out target marked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import pandas as pd

Kind = Literal["main", "ablation", "baseline"]
KINDS: tuple[str, ...] = get_args(Kind)
EVAL_SPLITS = ("valid", "test")


class ReportError(ValueError):
    """Bad input to the evaluation report; the message names the model, split or column."""


@dataclass(frozen=True)
class ModelResult:
    """Metrics of one model on one split (``kind``: main, ablation or baseline)."""

    model: str
    split: str
    metrics: dict[str, float]
    kind: Kind
    notes: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ReportError(f"model name must be a non-empty string, got {self.model!r}")
        if self.split not in EVAL_SPLITS:
            raise ReportError(f"{self.model}: split must be one of {EVAL_SPLITS}, got {self.split!r}")
        if self.kind not in KINDS:
            raise ReportError(f"{self.model}: kind must be one of {KINDS}, got {self.kind!r}")
        if not self.metrics:
            raise ReportError(f"{self.model}/{self.split}: no metrics")
        for name, value in self.metrics.items():
            if isinstance(value, bool) or not isinstance(value, int | float | np.number) or not math.isfinite(value):
                raise ReportError(f"{self.model}/{self.split}: metric {name!r} must be a finite number, got {value!r}")


@dataclass(frozen=True)
class EvaluationReport:
    """All model results; ``table`` for frames, ``to_markdown`` for people, ``best`` for promotion logic."""

    results: tuple[ModelResult, ...]
    metric_names: tuple[str, ...] = field(default=())

    def table(self, wide: bool = False) -> pd.DataFrame:
        """Long: one row per (model, kind, split, metric) with ``value``. Wide: one row per (model, kind,
        split), one column per metric (NaN where a model lacks one). Models keep their insertion order."""
        rows = [
            {"model": r.model, "kind": r.kind, "split": r.split, "metric": m, "value": float(v), "notes": r.notes}
            for r in self.results for m, v in r.metrics.items()
        ]
        long = pd.DataFrame(rows, columns=["model", "kind", "split", "metric", "value", "notes"])
        if not wide:
            return long
        models = list(dict.fromkeys(r.model for r in self.results))
        out = long.pivot_table(index=["model", "kind", "split"], columns="metric", values="value", aggfunc="first")
        out = out.reindex(columns=[m for m in self.metric_names if m in out.columns])
        out = out.reset_index()
        out["_m"] = out["model"].map(models.index)
        out["_s"] = out["split"].map(EVAL_SPLITS.index)
        out = out.sort_values(["_m", "_s"]).drop(columns=["_m", "_s"]).reset_index(drop=True)
        out.columns.name = None
        return out

    def to_markdown(self, digits: int = 4) -> str:
        """The wide table as a markdown table, metric values rounded to ``digits``."""
        return self.table(wide=True).round(digits).to_markdown(index=False)

    def best(self, metric: str = "ndcg@10", split: str = "valid") -> ModelResult:
        """The result with the highest ``metric`` on ``split`` (the first one on ties)."""
        candidates = [r for r in self.results if r.split == split and metric in r.metrics]
        if not candidates:
            raise ReportError(f"no model reports {metric!r} on split {split!r}; metrics: {list(self.metric_names)}")
        return max(candidates, key=lambda r: r.metrics[metric])


def build_report(results: Sequence[ModelResult]) -> EvaluationReport:
    """Collect results into a report; at most one result per (model, split), one kind per model."""
    results = tuple(results)
    if not results:
        raise ReportError("no model results to report")
    seen: set[tuple[str, str]] = set()
    kinds: dict[str, str] = {}
    for r in results:
        if not isinstance(r, ModelResult):
            raise ReportError(f"expected ModelResult, got {type(r).__name__}")
        if (r.model, r.split) in seen:
            raise ReportError(f"duplicate result for model {r.model!r} on split {r.split!r}")
        seen.add((r.model, r.split))
        if kinds.setdefault(r.model, r.kind) != r.kind:
            raise ReportError(f"model {r.model!r} is reported as both {kinds[r.model]!r} and {r.kind!r}")
    metric_names = tuple(sorted({m for r in results for m in r.metrics}, key=_metric_order))
    return EvaluationReport(results=results, metric_names=metric_names)


def _metric_order(name: str) -> tuple[str, int, str]:
    # "hr@5" < "hr@10" < "ndcg@5": by family, then numerically by the cut-off
    family, _, k = name.partition("@")
    return (family, int(k) if k.isdigit() else 0, name)


def _require(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ReportError(f"{name}: missing column(s) {missing}; have {list(frame.columns)}")


def example_users(
    splits: pd.DataFrame,
    items: pd.DataFrame,
    user_interests: pd.DataFrame,
    recommendations: Mapping[str, Sequence[str]],
    n: int = 5,
    seed: int = 0,
    *,
    split: Literal["valid", "test"] = "test",
    top_k: int = 5,
    max_history: int = 20,
) -> list[dict]:
    """A few users, drawn with ``seed`` from those with recommendations and a ``split`` target.

    Each dict: ``user_id``, ``history`` (titles of the last ``max_history`` train-prefix items, oldest
    first), ``interests`` (the user's mined interests in rank order), ``target`` ({item_id, title}),
    ``recommendations`` (top ``top_k``: {item_id, title, is_target}) and ``hit``. Titles fall back to the
    item id when ``items`` has none.
    """
    _require(splits, ["user_id", "item_id", "position", "split"], "interaction_splits")
    _require(items, ["item_id", "title"], "items")
    _require(user_interests, ["user_id", "rank", "interest"], "user_interests")
    if split not in EVAL_SPLITS:
        raise ReportError(f"split must be one of {EVAL_SPLITS}, got {split!r}")
    if n < 1 or top_k < 1 or max_history < 1:
        raise ReportError(f"n, top_k and max_history must be >= 1, got {n}, {top_k}, {max_history}")
    frame = splits.assign(user_id=splits["user_id"].astype(str), item_id=splits["item_id"].astype(str))
    targets = frame[frame["split"] == split].set_index("user_id")["item_id"]
    if not targets.index.is_unique:
        raise ReportError(f"interaction_splits has more than one {split!r} row for some user")
    recs = {str(u): [str(i) for i in v] for u, v in recommendations.items()}
    candidates = sorted(u for u in recs if u in targets.index)
    if not candidates:
        raise ReportError(f"no user has both recommendations and a {split!r} target")
    rng = np.random.default_rng(seed)
    chosen = [candidates[i] for i in sorted(rng.choice(len(candidates), size=min(n, len(candidates)), replace=False))]

    titles = dict(zip(items["item_id"].astype(str), items["title"], strict=True))

    def title(item: str) -> str:
        t = titles.get(item)
        return str(t) if isinstance(t, str) and t.strip() else item

    # history = the train prefix: train rows before the user's first held-out row
    held_start = frame[frame["split"] != "train"].groupby("user_id")["position"].min()
    train = frame[frame["split"] == "train"]
    train = train[~(train["position"] >= train["user_id"].map(held_start))].sort_values(
        ["user_id", "position"], kind="stable")
    history = train.groupby("user_id")["item_id"].agg(list)
    ui = user_interests.assign(user_id=user_interests["user_id"].astype(str)).sort_values(
        ["user_id", "rank"], kind="stable")
    interests = ui.groupby("user_id")["interest"].agg(lambda s: [str(x) for x in s])

    out = []
    for user in chosen:
        target = str(targets[user])
        top = recs[user][:top_k]
        out.append({
            "user_id": user,
            "history": [title(i) for i in history.get(user, [])[-max_history:]],
            "interests": list(interests.get(user, [])),
            "target": {"item_id": target, "title": title(target)},
            "recommendations": [{"item_id": i, "title": title(i), "is_target": i == target} for i in top],
            "hit": target in top,
        })
    return out


def examples_markdown(examples: Sequence[Mapping]) -> str:
    """Markdown sections, one per example user from :func:`example_users`."""
    if not examples:
        raise ReportError("no example users to render")
    parts = []
    for ex in examples:
        hit = "hit" if ex["hit"] else "miss"
        lines = [f"### User `{ex['user_id']}` ({hit})", "", "**History** (oldest first):"]
        lines += [f"{i}. {_md(t)}" for i, t in enumerate(ex["history"], 1)] or ["_(empty)_"]
        lines += ["", "**Mined interests:** " + ("; ".join(_md(i) for i in ex["interests"]) or "_(none)_"), ""]
        lines += [f"**Held-out target:** {_md(ex['target']['title'])}", "", "**Top recommendations:**"]
        lines += [f"{i}. {_md(r['title'])}{' ✅ (target)' if r['is_target'] else ''}"
                  for i, r in enumerate(ex["recommendations"], 1)] or ["_(none)_"]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _md(text: str) -> str:
    # titles are data: keep them on one line and stop them from opening markdown structure
    return " ".join(str(text).split()).replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")
