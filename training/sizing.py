"""Budgets that follow the data: the ``quick``, ``standard`` and ``full`` sizing profiles of ``digr run --size``.

The production defaults (the settings classes' own: SFT up to 30 epochs, GRPO three epochs over every training
window, SASRec up to 100 epochs, an LLM-written summary per user) train to convergence on a GPU; on two CPU
cores they take many hours on a 100k-interaction set. :func:`sized_run_config` turns a profile and the data's
size into run-config ``ops`` overrides for the size-driven settings only; everything else keeps its default,
and a user's own run config wins over every sized value (``digr run`` merges these *under* the ``--config``
files).

The rule: each expensive stage gets a time budget per profile, and its epoch/batch caps are the budget divided
by a cost model of that stage on 2 CPU cores (measured on the 2-core development machine under its usual
shared load, item-level generator ``arch: item_causal``, history cap 20):

- SFT epoch ≈ ``I / 1,000`` s of training (targets ≈ interactions, batch 64) + ``U / 200`` s of validation
  (trie-constrained beam search, width 20, per user); the final valid/test evaluation adds ``2 U / 200`` s.
  Larger batches on larger data (128 from 200k interactions, 256 from 1M) only make it faster (≈ 1.3x, 1.8x):
  epochs are counted at the batch-64 rate, so a larger data set never gets more epochs.
- GRPO batch (64 users, group 16, beam rollouts, 2 updates) ≈ 1.5 s; each validation ``U / 200`` s, plus one
  evaluation of the SFT model before and one of the policy after.
- SASRec epoch ≈ ``I / 3,000`` s + ``U / 2,000`` s (full ranking is one matrix product).
- LLM on CPU (SmolLM2-135M): ≈ 0.9 s per item and descriptor (``item_interests``), 3-5 s per user summary.

With ``I`` interactions, ``U`` users and ``N`` items (what ``interaction_splits`` holds, or the source's rows
before the split when it has not been ingested yet):

================================  =====================================  =====================================
setting                           ``quick``                              ``standard``
================================  =====================================  =====================================
``recommender_sft.max_epochs``    SFT budget 120 s / epoch cost, 1..10   SFT budget 420 s / epoch cost, 1..30
``recommender_sft.patience``      ``max_epochs // 3`` in 2..5            ``max_epochs // 3`` in 2..5
``recommender_sft.batch_size``    64; 128 from 200k, 256 from 1M         same
``recommender_grpo.max_epochs``   1                                      1
``…val_check_interval``           validations per epoch (4, 2 or 1) while they fit half the GRPO budget
``…max_batches_per_epoch``        (budget − validations) / 1.5 s, ≥ 8; GRPO budget 60 s / 240 s
``user_interests.llm_summary``    on up to 50 users                      on up to 200 users
``item_interests.n_descriptors``  ≤ 300 s of cold mining, 1..3           ≤ 900 s of cold mining, 1..3
``evaluation_report.sasrec``      budget 60 s; max_epochs 2..20,         budget 240 s; max_epochs 2..100,
                                  patience ``max_epochs // 4`` in 2..5   patience ``max_epochs // 4`` in 2..5
``evaluation_report.examples``    3                                      5
================================  =====================================  =====================================

``n_descriptors`` is only set when the budget needs fewer than a miner's default (3): otherwise each miner keeps
its own. ``full`` is the production defaults, written out (the settings classes' defaults: train until early
stopping, GRPO uncapped, summaries on); it ignores the size.

Every cap only shrinks as the data grows (more interactions or users never give more epochs, batches,
validations or LLM calls). The target: the nightly job (``nightly_retrain``: SFT, the TIGER-style baseline that
copies its settings, GRPO, evaluation) on a 100k-interaction MovieLens-shaped set (943 users, 1,682 items) at
``standard`` finishes within 30 minutes on 2 cores — SFT and the baseline 3 epochs each (≈ 5.5 min each), GRPO
1 epoch of 141 batches (≈ 4 min), SASRec 7 epochs (≈ 4 min), the item-side stages (judge, embeddings,
codebooks) ≈ 6 min — with the LLM answers of the catalogue already cached (every run after the first; the first
run on a new catalogue adds ≈ 0.9 s × items × ``n_descriptors`` of CPU mining, ≈ 25 min for 1,682 items at
one descriptor, or about a minute mined on a GPU through ``mining.offline_batch``). Checked once on
``ingestion.grouplens_sample`` (99,545 ratings, answers from a loopback LLM): ``digr run nightly_retrain --size
standard`` succeeded in 31 min wall while a two-process benchmark shared the 2 cores from its first minute on;
before the contention, ingestion to codebooks took 2.3 min and SFT's 3 epochs 195 s (modelled: 325 s). Checked
again on the idle machine (commit cea5395, the same sample and loopback LLM): the whole job in 183 s, SFT 26 s,
GRPO 37 s, the TIGER-style baseline 36 s, evaluation with SASRec 18 s, mining 15 s (answers served at once).
``full_study`` adds the ablations: two more SFT-sized trainings and a GRPO, ≈ 15 min at that size.

The same 100k interactions spread over many short histories (Amazon-like, 20k users) cost more per epoch, since
every validation ranks every user: ``standard`` then trains SFT 1 epoch and GRPO 8 batches with one validation.
Above ≈ 1M interactions even one SFT epoch exceeds the ``standard`` budget: every profile trains at least one
epoch, so the run grows linearly with the data from there. ``examples`` is display only (the report always
ranks ``max(200, examples)`` users for them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from evaluation.baselines.sasrec import SASRecConfig
from evaluation.protocol import EvaluationSettings
from mining.backends import MinerConfig
from mining.user_interests import UserInterestSettings
from training.settings import GeneratorConfig, GRPOConfig

PROFILES: tuple[str, ...] = ("quick", "standard", "full")

# --------------------------------------------------------------------------- cost model (2 CPU cores)
SFT_TARGETS_PER_S = 1_000.0  # item_causal training targets per second at batch 64
RANK_USERS_PER_S = 200.0  # trie-constrained beam search (width 20), users per second
GRPO_BATCH_S = 1.5  # one GRPO batch: 64 users x group 16, beam rollouts, 2 updates
SASREC_INTERACTIONS_PER_S = 3_000.0  # default SASRec (hidden 64, windows) training
SASREC_RANK_USERS_PER_S = 2_000.0  # full ranking, one matrix product per batch
LLM_ITEM_CALL_S = 0.9  # SmolLM2-135M, one item descriptor


@dataclass(frozen=True)
class Budget:
    """One profile's time budgets (seconds on 2 CPU cores) and caps."""

    sft_s: float
    sft_max_epochs: int
    grpo_s: float
    sasrec_s: float
    sasrec_max_epochs: int
    summary_max_users: int
    mining_s: float
    examples: int


BUDGETS: dict[str, Budget] = {
    "quick": Budget(sft_s=120, sft_max_epochs=10, grpo_s=60, sasrec_s=60, sasrec_max_epochs=20,
                    summary_max_users=50, mining_s=300, examples=3),
    "standard": Budget(sft_s=420, sft_max_epochs=GeneratorConfig.max_epochs, grpo_s=240, sasrec_s=240,
                       sasrec_max_epochs=SASRecConfig().max_epochs, summary_max_users=200, mining_s=900,
                       examples=EvaluationSettings.examples),
}

MIN_GRPO_BATCHES = 8
#: SFT batch size from this many interactions on (quick/standard): larger batches train faster per target on CPU
SFT_BATCH_STEPS: tuple[tuple[int, int], ...] = ((1_000_000, 256), (200_000, 128), (0, 64))


def _clamp(value: float, lo: int, hi: int) -> int:
    return int(min(max(math.floor(value), lo), hi))


def _check(profile: str, n_interactions: int, n_users: int, n_items: int) -> None:
    if profile not in PROFILES:
        raise ValueError(f"unknown sizing profile {profile!r}; profiles: {', '.join(PROFILES)}")
    counts = {"n_interactions": n_interactions, "n_users": n_users, "n_items": n_items}
    bad = {k: v for k, v in counts.items() if isinstance(v, bool) or not isinstance(v, int) or v < 0}
    if bad:
        raise ValueError(f"data sizes must be integers >= 0, got {bad}")


def sft_epoch_seconds(n_interactions: int, n_users: int) -> float:
    """Modelled seconds of one SFT epoch on 2 cores: training at the batch-64 rate + one validation."""
    return n_interactions / SFT_TARGETS_PER_S + n_users / RANK_USERS_PER_S


def sized_run_config(profile: str, n_interactions: int, n_users: int, n_items: int) -> dict[str, Any]:
    """Run-config ``ops`` overrides of the size-driven settings for ``profile`` and a data set of
    ``n_interactions`` interactions, ``n_users`` users and ``n_items`` items (zeros: the small-data values).

    Returns ``{op: {"config": {...}}}`` for ``recommender_sft``, ``recommender_grpo``, ``user_interests``,
    ``item_interests`` and ``evaluation_report``, with the key names of their run configs. The rule is the
    module docstring's table; ``full`` returns the production defaults whatever the size.
    """
    _check(profile, n_interactions, n_users, n_items)
    sft_default, grpo_default, sasrec_default = GeneratorConfig(), GRPOConfig(), SASRecConfig()
    if profile == "full":
        return {
            "recommender_sft": {"config": {"max_epochs": sft_default.max_epochs, "patience": sft_default.patience,
                                           "batch_size": sft_default.batch_size}},
            "recommender_grpo": {"config": {"max_epochs": grpo_default.max_epochs,
                                            "max_batches_per_epoch": grpo_default.max_batches_per_epoch,
                                            "val_check_interval": grpo_default.val_check_interval}},
            "user_interests": {"config": {"llm_summary": UserInterestSettings.llm_summary}},
            "evaluation_report": {"config": {"sasrec": {"max_epochs": sasrec_default.max_epochs,
                                                        "patience": sasrec_default.patience},
                                             "examples": EvaluationSettings.examples}},
        }
    budget = BUDGETS[profile]
    rank_s = n_users / RANK_USERS_PER_S

    # SFT (the TIGER-style baseline and the ablations copy these through the SFT checkpoint)
    epochs = _clamp((budget.sft_s - 2 * rank_s) / max(sft_epoch_seconds(n_interactions, n_users), 1e-9),
                    1, budget.sft_max_epochs)
    patience = _clamp(epochs // 3, 2, sft_default.patience)
    batch = next(size for threshold, size in SFT_BATCH_STEPS if n_interactions >= threshold)

    # GRPO: one epoch; as many validations (4, 2, 1) as fit half the budget; the rest trains
    validations = next((v for v in (4, 2) if v * rank_s <= budget.grpo_s / 2), 1)
    batches = _clamp((budget.grpo_s - (validations + 2) * rank_s) / GRPO_BATCH_S, MIN_GRPO_BATCHES, 1 << 30)

    # SASRec (evaluation_report)
    sasrec_epoch_s = n_interactions / SASREC_INTERACTIONS_PER_S + n_users / SASREC_RANK_USERS_PER_S
    sasrec_epochs = _clamp(budget.sasrec_s / max(sasrec_epoch_s, 1e-9), 2, budget.sasrec_max_epochs)
    sasrec_patience = _clamp(sasrec_epochs // 4, 2, sasrec_default.patience)

    out: dict[str, Any] = {
        "recommender_sft": {"config": {"max_epochs": epochs, "patience": patience, "batch_size": batch}},
        "recommender_grpo": {"config": {"max_epochs": 1, "max_batches_per_epoch": batches,
                                        "val_check_interval": 1 / validations}},
        "user_interests": {"config": {"llm_summary": n_users <= budget.summary_max_users}},
        "evaluation_report": {"config": {"sasrec": {"max_epochs": sasrec_epochs, "patience": sasrec_patience},
                                         "examples": budget.examples}},
    }
    # cold item mining: items x descriptors LLM calls; set only when fewer than a miner's default fit the budget
    default_descriptors = MinerConfig.n_descriptors
    descriptors = _clamp(budget.mining_s / max(n_items * LLM_ITEM_CALL_S, 1e-9), 1, default_descriptors)
    if descriptors < default_descriptors:
        out["item_interests"] = {"config": {"n_descriptors": descriptors}}
    return out


def describe(overrides: dict[str, Any]) -> list[str]:
    """One line per op of :func:`sized_run_config`'s output: ``op: key=value, ...`` (nested keys dotted)."""

    def flat(config: dict[str, Any], prefix: str = "") -> list[str]:
        items = []
        for key, value in config.items():
            if isinstance(value, dict):
                items += flat(value, f"{prefix}{key}.")
            else:
                items.append(f"{prefix}{key}={value:g}" if isinstance(value, float) else f"{prefix}{key}={value}")
        return items

    return [f"{op}: {', '.join(flat(entry.get('config', {})))}" for op, entry in overrides.items()]


__all__ = ["BUDGETS", "PROFILES", "Budget", "describe", "sft_epoch_seconds", "sized_run_config"]
