"""Baselines evaluated on the same split and metrics as the generator, one module each.

Each module registers a :class:`~evaluation.baselines.registry.Baseline` when imported;
:func:`registered_baselines` finds them all (no central list). Adding a baseline = adding a module here
that calls :func:`register` (see ``popularity.py`` for the smallest one).
"""

from evaluation.baselines.popularity import evaluate_popularity, popularity_ranking
from evaluation.baselines.registry import (
    Baseline,
    BaselineError,
    BaselineInputs,
    BaselineResult,
    get_baseline,
    metrics_from_ranks,
    register,
    registered_baselines,
    unregister,
    user_ranks,
)

__all__ = [
    "Baseline",
    "BaselineError",
    "BaselineInputs",
    "BaselineResult",
    "evaluate_popularity",
    "get_baseline",
    "metrics_from_ranks",
    "popularity_ranking",
    "register",
    "registered_baselines",
    "unregister",
    "user_ranks",
]
