"""The baseline registry: what a baseline is, what it is given, what it returns, and how it is found.

A baseline is one module of the :mod:`evaluation.baselines` package that calls :func:`register` at import
time with a :class:`Baseline`: a key, the display name of its report rows, its settings class (a dataclass,
the one definition of its settings) and one function ``run(inputs, settings) -> BaselineResult``.
:func:`registered_baselines` imports every module of the package (``pkgutil``, no central list) and returns
the baselines in report order. A package outside this one can call :func:`register` the same way.

Settings the caller decides for every model alike (the history cap, the seed, the accelerator) come in
:class:`BaselineInputs`; a baseline names which of its settings fields they fill in ``from_inputs``. Those
fields are **not configurable**: :meth:`Baseline.configurable_fields` leaves them out, a mapping that names
one is an error, and :meth:`Baseline.evaluate` overwrites them on a settings object from the inputs. Whether
seen items are excluded (``BaselineInputs.exclude_seen``) is decided there too, and applied to every baseline
alike by :func:`split_result`, the path every baseline's rankings take.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import pkgutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from config_schema import SettingField, UnknownSettingError, from_mapping, is_settings_class, settings_fields
from evaluation.protocol import exclude_seen_items, seen_indices, seen_items, split_targets
from metrics.ranking import evaluate_rankings, target_ranks

EVAL_SPLITS = ("valid", "test")
DEFAULT_KS = (5, 10)
#: ``BaselineInputs`` attributes a baseline may take settings from (see ``Baseline.from_inputs``)
INPUT_SETTINGS = ("max_history", "seed", "accelerator")
SPLIT_COLUMNS = ("user_id", "item_id", "position", "split")


class BaselineError(ValueError):
    """A baseline that cannot be registered, configured or run; the message names the baseline."""


@dataclass(frozen=True)
class BaselineInputs:
    """What every baseline is given: the same split, catalogue and protocol settings as the generator.

    ``interaction_splits``: the split frame (user_id, item_id, timestamp, rating, position, split).
    ``item_ids``: the catalogue in index order (rankings are indices into it; every target must be in it).
    ``max_history``: the generator's history cap; sequence baselines window histories with it.
    ``checkpoint_dir``: a root folder; :meth:`Baseline.evaluate` hands each baseline ``checkpoint_dir / key``.
    ``ks``: the cut-offs of HR@K / NDCG@K; per-user ranks are cut at ``max(ks)``.
    ``exclude_seen``: every ranking has the user's seen items (:func:`evaluation.protocol.seen_items`) removed
    before it is cut at ``cutoff``; a baseline ranks ``rank_depth`` items deep and hands its rows' users to
    :func:`split_result`, which removes them (and :meth:`Baseline.evaluate` checks it did).
    """

    interaction_splits: pd.DataFrame
    item_ids: tuple[str, ...]
    max_history: int
    seed: int = 0
    logger: Any = None
    checkpoint_dir: Path | None = None
    accelerator: str = "cpu"
    ks: tuple[int, ...] = DEFAULT_KS
    exclude_seen: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "item_ids", tuple(str(i) for i in self.item_ids))
        object.__setattr__(self, "ks", tuple(self.ks))
        if self.checkpoint_dir is not None:
            object.__setattr__(self, "checkpoint_dir", Path(self.checkpoint_dir))
        if not isinstance(self.interaction_splits, pd.DataFrame):
            raise BaselineError(f"interaction_splits must be a DataFrame, got {type(self.interaction_splits).__name__}")
        missing = [c for c in SPLIT_COLUMNS if c not in self.interaction_splits.columns]
        if missing:
            raise BaselineError(f"interaction_splits lacks column(s) {missing}; "
                                f"have {list(self.interaction_splits.columns)}")
        if not self.item_ids:
            raise BaselineError("item_ids is empty: baselines rank over the item catalogue")
        if len(set(self.item_ids)) != len(self.item_ids):
            raise BaselineError("item_ids must be unique")
        if isinstance(self.max_history, bool) or not isinstance(self.max_history, int) or self.max_history < 1:
            raise BaselineError(f"max_history must be a positive integer, got {self.max_history!r}")
        if not self.ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in self.ks):
            raise BaselineError(f"ks must be positive integers, got {self.ks!r}")

    @property
    def cutoff(self) -> int:
        """The K per-user ranks are cut at: ``max(ks)``."""
        return max(self.ks)

    def item_index(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.item_ids)}

    @cached_property
    def _seen(self) -> dict[str, dict[str, tuple[str, ...]]]:
        return {split: seen_items(self.interaction_splits, split) for split in EVAL_SPLITS}

    def seen(self, split: str, users: Sequence[str]) -> list[np.ndarray]:
        """The seen items (indices into ``item_ids``) of each of ``users`` before their ``split`` target."""
        if split not in EVAL_SPLITS:
            raise BaselineError(f"split must be one of {EVAL_SPLITS}, got {split!r}")
        return seen_indices(self._seen[split], users, self.item_index())

    @property
    def rank_depth(self) -> int:
        """How deep a baseline ranks: ``cutoff``, or with ``exclude_seen`` ``cutoff`` + the longest seen set
        (at most the catalogue), so ``cutoff`` items are left after the exclusion whenever the catalogue has them."""
        if not self.exclude_seen:
            return self.cutoff
        longest = max((len(set(v)) for part in self._seen.values() for v in part.values()), default=0)
        return min(len(self.item_ids), self.cutoff + longest)


@dataclass(frozen=True)
class BaselineResult:
    """One baseline on the valid and test splits.

    ``metrics``: ``{"valid": {"hr@5": .., "hr@10": .., "ndcg@5": .., "ndcg@10": ..}, "test": {...}}``.
    ``ranks``: per split, an int64 array with one entry per evaluated user: the 1-based rank of the user's
    target in the top ``cutoff`` (0 = not in it). ``user_ids``: per split, the users, aligned with ``ranks``.
    ``metrics_from_ranks(ranks[s], ks)`` recomputes ``metrics[s]``, so statistics (bootstrap intervals,
    paired tests against another model on the same users) can be computed later from the ranks alone.
    ``info``: JSON-ready facts about the run (e.g. ``best_val_ndcg``, ``epochs``, ``checkpoint``, ``settings``).
    """

    metrics: dict[str, dict[str, float]]
    ranks: dict[str, np.ndarray]
    user_ids: dict[str, tuple[str, ...]]
    cutoff: int
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, part in (("metrics", self.metrics), ("ranks", self.ranks), ("user_ids", self.user_ids)):
            if set(part) != set(EVAL_SPLITS):
                raise BaselineError(f"BaselineResult.{name} must have exactly the splits {EVAL_SPLITS}, "
                                    f"got {sorted(part)}")
        ranks = {s: np.asarray(self.ranks[s], dtype=np.int64) for s in EVAL_SPLITS}
        users = {s: tuple(str(u) for u in self.user_ids[s]) for s in EVAL_SPLITS}
        object.__setattr__(self, "ranks", ranks)
        object.__setattr__(self, "user_ids", users)
        for s in EVAL_SPLITS:
            if ranks[s].ndim != 1 or len(ranks[s]) != len(users[s]):
                raise BaselineError(f"{s}: ranks (shape {ranks[s].shape}) must be 1-D, one per user "
                                    f"({len(users[s])} users)")
            if ((ranks[s] < 0) | (ranks[s] > self.cutoff)).any():
                raise BaselineError(f"{s}: ranks must lie in [0, {self.cutoff}] (0 = miss)")
            for metric, value in self.metrics[s].items():
                if isinstance(value, bool) or not isinstance(value, int | float | np.number) \
                        or not math.isfinite(value):
                    raise BaselineError(f"{s}: metric {metric!r} must be a finite number, got {value!r}")

    def ranks_frame(self) -> pd.DataFrame:
        """Long frame (split, user_id, rank) of the per-user ranks, e.g. for a warehouse table."""
        return pd.DataFrame({
            "split": [s for s in EVAL_SPLITS for _ in self.user_ids[s]],
            "user_id": [u for s in EVAL_SPLITS for u in self.user_ids[s]],
            "rank": np.concatenate([self.ranks[s] for s in EVAL_SPLITS]).astype(np.int64),
        })


RunFn = Callable[[BaselineInputs, Any], BaselineResult]


@dataclass(frozen=True)
class Baseline:
    """A registered baseline.

    ``key``: registry key ("popularity"). ``name``: the display name of its report rows ("most-popular").
    ``settings``: its settings class (a dataclass or pydantic model; an empty dataclass when it has none).
    ``run``: ``run(inputs, settings) -> BaselineResult``, called by :meth:`evaluate` with a settings object
    whose ``from_inputs`` fields are already filled in. ``from_inputs``: settings field -> ``BaselineInputs``
    attribute (one of ``max_history``, ``seed``, ``accelerator``) that decides it. ``order``: report order
    (lower first, ties by key). ``module``: the module that registered it (set by :func:`register`).
    """

    key: str
    name: str
    settings: type
    run: RunFn
    from_inputs: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    order: int = 100
    module: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key.isidentifier():
            raise BaselineError(f"baseline key must be an identifier, got {self.key!r}")
        if not isinstance(self.name, str) or not self.name.strip():
            raise BaselineError(f"baseline {self.key!r}: name must be a non-empty string")
        if not is_settings_class(self.settings):
            raise BaselineError(f"baseline {self.key!r}: settings must be a dataclass or pydantic model class, "
                                f"got {self.settings!r}")
        if not callable(self.run):
            raise BaselineError(f"baseline {self.key!r}: run must be callable")
        object.__setattr__(self, "from_inputs", dict(self.from_inputs))
        names = {f.name for f in settings_fields(self.settings)}
        for setting, attr in self.from_inputs.items():
            if setting not in names:
                raise BaselineError(f"baseline {self.key!r}: from_inputs names {setting!r}, not a field of "
                                    f"{self.settings.__name__} ({sorted(names)})")
            if attr not in INPUT_SETTINGS:
                raise BaselineError(f"baseline {self.key!r}: from_inputs maps {setting!r} to {attr!r}; "
                                    f"inputs offer {INPUT_SETTINGS}")

    def configurable_fields(self) -> list[SettingField]:
        """The settings a caller may configure (every field except those decided by the inputs)."""
        return [f for f in settings_fields(self.settings) if f.name not in self.from_inputs]

    def settings_from(self, data: Mapping[str, Any] | None = None) -> Any:
        """Settings from a mapping of configurable fields; unknown keys and input-decided keys are errors.

        The input-decided fields keep their defaults here; :meth:`evaluate` fills them from the inputs.
        """
        data = dict(data or {})
        decided = sorted(set(data) & set(self.from_inputs))
        if decided:
            raise UnknownSettingError(
                f"baseline {self.key!r}: {decided} cannot be configured, they come from the inputs "
                f"({', '.join(f'{k} <- {self.from_inputs[k]}' for k in decided)}); "
                f"allowed: {[f.name for f in self.configurable_fields()]}")
        return from_mapping(self.settings, data, where=f"baseline {self.key!r} settings")

    def resolve(self, inputs: BaselineInputs, settings: Any = None) -> Any:
        """The settings object ``run`` receives: ``settings`` (None = defaults, a mapping, or an instance)
        with the ``from_inputs`` fields set from ``inputs`` (the inputs win over the instance's values)."""
        if settings is None or isinstance(settings, Mapping):
            settings = self.settings_from(settings)
        elif not isinstance(settings, self.settings):
            raise BaselineError(f"baseline {self.key!r}: settings must be a {self.settings.__name__} or a mapping, "
                                f"got {type(settings).__name__}")
        values = {name: getattr(inputs, attr) for name, attr in self.from_inputs.items()}
        if not values:
            return settings
        if dataclasses.is_dataclass(settings):
            return dataclasses.replace(settings, **values)
        return settings.model_copy(update=values)

    def evaluate(self, inputs: BaselineInputs, settings: Any = None) -> BaselineResult:
        """Run the baseline: settings resolved by :meth:`resolve`, ``checkpoint_dir`` narrowed to ``root / key``."""
        resolved = self.resolve(inputs, settings)
        if inputs.checkpoint_dir is not None:
            inputs = dataclasses.replace(inputs, checkpoint_dir=inputs.checkpoint_dir / self.key)
        result = self.run(inputs, resolved)
        if not isinstance(result, BaselineResult):
            raise BaselineError(f"baseline {self.key!r}: run returned {type(result).__name__}, not BaselineResult")
        if result.cutoff != inputs.cutoff:
            raise BaselineError(f"baseline {self.key!r}: ranks cut at {result.cutoff}, expected {inputs.cutoff}")
        if inputs.exclude_seen:
            self._check_excluded(inputs, result)
        return result

    def _check_excluded(self, inputs: BaselineInputs, result: BaselineResult) -> None:
        """With ``exclude_seen``, a target the user had already seen can never be ranked: a hit on one means
        the baseline ranked without the exclusion (it must rank through :func:`split_result` with its users)."""
        for split in EVAL_SPLITS:
            targets = split_targets(inputs.interaction_splits, split)
            seen = inputs._seen[split]
            leaked = [u for u, r in zip(result.user_ids[split], result.ranks[split], strict=True)
                      if r > 0 and targets.get(u) in set(seen.get(u, ()))]
            if leaked:
                raise BaselineError(f"baseline {self.key!r}: exclude_seen is set, but {len(leaked)} {split} user(s) "
                                    f"have their already-seen target ranked (e.g. {leaked[:3]}); rank through "
                                    "split_result(..., split=, users=) so seen items are removed")


_REGISTRY: dict[str, Baseline] = {}


def register(baseline: Baseline) -> Baseline:
    """Add ``baseline`` to the registry (call it at import time of the baseline's module).

    A key already registered by another module is an error; the same module registering again (a reload)
    replaces its entry.
    """
    if not isinstance(baseline, Baseline):
        raise BaselineError(f"register() takes a Baseline, got {type(baseline).__name__}")
    module = baseline.module or getattr(baseline.run, "__module__", "") or ""
    baseline = dataclasses.replace(baseline, module=module)
    existing = _REGISTRY.get(baseline.key)
    if existing is not None and existing.module != baseline.module:
        raise BaselineError(f"baseline key {baseline.key!r} is already registered by {existing.module}; "
                            f"{baseline.module} cannot register it again")
    _REGISTRY[baseline.key] = baseline
    return baseline


def unregister(key: str) -> None:
    """Remove a baseline (tests and plugins that replace one); unknown keys are an error."""
    if key not in _REGISTRY:
        raise BaselineError(f"no baseline {key!r} registered; have {sorted(_REGISTRY)}")
    del _REGISTRY[key]


def discover(package: str = "evaluation.baselines") -> list[str]:
    """Import every module of ``package`` (names not starting with ``_``) so each registers itself."""
    pkg = importlib.import_module(package)
    names = []
    for info in pkgutil.iter_modules(pkg.__path__, prefix=f"{package}."):
        if info.name.rpartition(".")[2].startswith("_"):
            continue
        if info.name not in sys.modules:
            importlib.import_module(info.name)
        names.append(info.name)
    return names


def registered_baselines() -> dict[str, Baseline]:
    """Every baseline, in report order (``order``, then key), after discovering the package's modules."""
    discover()
    return {b.key: b for b in sorted(_REGISTRY.values(), key=lambda b: (b.order, b.key))}


def get_baseline(key: str) -> Baseline:
    baselines = registered_baselines()
    if key not in baselines:
        raise BaselineError(f"unknown baseline {key!r}; registered: {list(baselines)}")
    return baselines[key]


def user_ranks(ranked: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
    """1-based rank of each row's target within the first ``k`` entries of ``ranked`` (0 = not there).

    ``ranked`` [n, >=k] item indices best first, ``targets`` [n]: as :func:`metrics.ranking.target_ranks`.
    """
    return (target_ranks(ranked, targets, k) + 1).astype(np.int64)


def metrics_from_ranks(ranks: Sequence[int] | np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """HR@K / NDCG@K from 1-based ranks (0 = miss), equal to :func:`metrics.ranking.evaluate_rankings` on the
    rankings the ranks came from (for every K up to the cut-off the ranks were taken at)."""
    r = np.asarray(ranks, dtype=np.int64)
    if r.ndim != 1 or r.size == 0:
        raise BaselineError(f"ranks must be a non-empty 1-D array, got shape {r.shape}")
    out: dict[str, float] = {}
    for k in ks:
        hit = (r >= 1) & (r <= k)
        out[f"hr@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(np.maximum(r, 1) + 1.0), 0.0).mean())
    return out


def split_result(ranked: np.ndarray, targets: np.ndarray, inputs: BaselineInputs, *, split: str | None = None,
                 users: Sequence[str] | None = None) -> tuple[dict[str, float], np.ndarray]:
    """Metrics (via :func:`metrics.ranking.evaluate_rankings`) and per-user ranks of one split's rankings.

    With ``inputs.exclude_seen`` each row's seen items are removed first
    (:func:`evaluation.protocol.exclude_seen_items`; ``split`` and the rows' ``users`` are then required), and
    the rows are cut at ``inputs.cutoff``: rank ``inputs.rank_depth`` deep so the cut still has that many.
    """
    ranked = np.asarray(ranked, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    if inputs.exclude_seen:
        if split is None or users is None:
            raise BaselineError("exclude_seen is set: split_result needs the split and the rows' users")
        if len(users) != len(ranked):
            raise BaselineError(f"{len(users)} users for {len(ranked)} ranked rows")
        ranked = exclude_seen_items(ranked, inputs.seen(split, [str(u) for u in users]), inputs.cutoff)
    return evaluate_rankings(ranked, targets, ks=inputs.ks), user_ranks(ranked, targets, inputs.cutoff)
