"""Which generator ships: every candidate trained on the current split, compared on validation NDCG@10.

The registry step (``assets.promotion.champion_model``) reads each candidate model asset's latest
materialisation (its metadata: checkpoint, SHA-256, metrics, lineage), turns it into a :class:`Candidate` or a
skip reason with :func:`read_candidate`, and picks the winner with :func:`select_candidate`. Only the
**validation** metric decides; test NDCG@10 is carried for information and never read by the choice. The
winner is then registered and goes through the usual margin rule against the current champion
(:func:`serving.registry.promote`); :func:`record_selection` writes the choice onto its model version.

Ties: the candidate listed first wins (the order of the candidate table is the order of preference; the
pipeline lists DeepInterestGR, the product's method, first).

No Dagster here: the asset does the reading and the checkpoint verification, this module decides.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlflow import MlflowClient

#: the model-version tag naming the candidate (asset) that ships
CANDIDATE_TAG = "candidate"
#: what the selection compares: validation NDCG@10 (the registry's ``metric.val_ndcg_at_10`` too)
SELECTION_METRIC = "val_ndcg@10"


@dataclass(frozen=True)
class CandidateSpec:
    """A model asset that could ship: where its checkpoint and its validation NDCG@10 are in its metadata.

    ``valid_metric`` is the metadata key of its validation NDCG@10; the other metrics the registered version
    carries are read under the same naming (``valid_`` → ``test_``, ``ndcg@10`` → ``hr@10``) when present.
    """

    asset: str
    checkpoint_key: str = "checkpoint"
    valid_metric: str = "valid_ndcg@10"

    def metric_keys(self) -> dict[str, str]:
        """Registry metric name → this asset's metadata key (val/test × NDCG@10/HR@10)."""
        test = self.valid_metric.replace("valid_", "test_", 1)
        return {"val_ndcg@10": self.valid_metric, "val_hr@10": self.valid_metric.replace("ndcg@10", "hr@10"),
                "test_ndcg@10": test, "test_hr@10": test.replace("ndcg@10", "hr@10")}


@dataclass(frozen=True)
class Candidate:
    """One model that could ship, as its asset recorded it."""

    asset: str
    checkpoint: str
    checkpoint_sha256: str
    valid_ndcg: float  # the only number the selection reads
    test_ndcg: float | None = None  # for information
    metrics: Mapping[str, float] = field(default_factory=dict)  # registry metric name → value (val_/test_)
    mlflow_run_id: str | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.valid_ndcg):
            raise ValueError(f"candidate {self.asset}: validation NDCG@10 must be finite, got {self.valid_ndcg}")


@dataclass(frozen=True)
class Selection:
    """The winner among the candidates, the runner-up and the margin between them, and who was skipped."""

    winner: Candidate
    candidates: tuple[Candidate, ...]  # in order of preference
    skipped: Mapping[str, str]  # asset → why it was not a candidate
    runner_up: Candidate | None
    margin: float | None  # winner's validation NDCG@10 minus the runner-up's; None with one candidate
    tie: bool
    reason: str

    def rows(self) -> list[dict[str, Any]]:
        """One row per candidate: name, checkpoint sha, valid/test NDCG@10, chosen (yes/no)."""
        return [{"candidate": c.asset, "checkpoint_sha256": c.checkpoint_sha256[:12],
                 "valid_ndcg@10": round(c.valid_ndcg, 5),
                 "test_ndcg@10": None if c.test_ndcg is None else round(c.test_ndcg, 5),
                 "chosen": "yes" if c is self.winner else "no"} for c in self.candidates]

    def markdown(self) -> str:
        """The candidate table (test NDCG@10 for information only), the skipped assets and what ships."""
        lines = ["| candidate | checkpoint sha256 | valid NDCG@10 | test NDCG@10 (info) | chosen |",
                 "|---|---|---|---|---|"]
        for row in self.rows():
            test = "—" if row["test_ndcg@10"] is None else f"{row['test_ndcg@10']:.5f}"
            lines.append(f"| {row['candidate']} | `{row['checkpoint_sha256']}` | {row['valid_ndcg@10']:.5f} | "
                         f"{test} | {row['chosen']} |")
        lines += ["", f"**ships: {self.winner.asset}** — {self.reason}"]
        if self.skipped:
            lines += ["", "skipped: " + "; ".join(f"{a} ({why})" for a, why in self.skipped.items())]
        return "\n".join(lines)

    def tags(self) -> dict[str, str]:
        """Model-version tags: the winning candidate, every candidate's validation NDCG@10, the margin over the
        runner-up (``candidate.<asset>.val_ndcg_at_10``, ``candidate.margin_over_runner_up``), skip reasons."""
        tags = {CANDIDATE_TAG: self.winner.asset, "candidate.tie": str(self.tie).lower()}
        if self.runner_up is not None:  # a lone candidate has no runner-up and no margin
            tags["candidate.runner_up"] = self.runner_up.asset
            tags["candidate.margin_over_runner_up"] = repr(self.margin)
        for c in self.candidates:
            tags[f"candidate.{c.asset}.{SELECTION_METRIC.replace('@', '_at_')}"] = repr(c.valid_ndcg)
        for asset, why in self.skipped.items():
            tags[f"candidate.{asset}.skipped"] = why
        return tags


class NoCandidateError(ValueError):
    """No model asset could ship; the message names each one and why it was skipped."""


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def read_candidate(spec: CandidateSpec, metadata: Mapping[str, Any] | None, *,
                   split_hash: str | None) -> Candidate | str:
    """``spec``'s asset as a :class:`Candidate`, from the plain metadata values of its latest materialisation,
    or the reason it is skipped: not materialised, trained on a split other than ``split_hash`` (the content
    hash of the current ``interaction_splits``: validation numbers on another split are not comparable), or no
    checkpoint / no finite validation NDCG@10 recorded. The checkpoint file itself is not checked here."""
    if metadata is None:
        return "not materialised (not selected in any run so far)"
    trained_on = (((metadata.get("lineage") or {}).get("interaction_splits")) or {}).get("content_hash")
    if split_hash is None:
        return "the current split is unknown (interaction_splits records no content hash)"
    if trained_on != split_hash:
        return (f"trained on another split ({trained_on}, current {split_hash}): not selected since the split "
                "changed; rematerialise it")
    if spec.checkpoint_key not in metadata or f"{spec.checkpoint_key}_sha256" not in metadata:
        return f"records no {spec.checkpoint_key!r} with its sha256; rematerialise it"
    values = {name: _finite(metadata.get(key)) for name, key in spec.metric_keys().items()}
    if values["val_ndcg@10"] is None:
        return f"records no finite validation NDCG@10 ({spec.valid_metric!r})"
    return Candidate(
        asset=spec.asset, checkpoint=str(metadata[spec.checkpoint_key]),
        checkpoint_sha256=str(metadata[f"{spec.checkpoint_key}_sha256"]), valid_ndcg=values["val_ndcg@10"],
        test_ndcg=values["test_ndcg@10"], metrics={k: v for k, v in values.items() if v is not None},
        mlflow_run_id=metadata.get("mlflow_run_id"))


def select_candidate(candidates: Sequence[Candidate], skipped: Mapping[str, str] | None = None) -> Selection:
    """The candidate with the highest validation NDCG@10; on a tie the one listed first (the order of
    ``candidates`` is the order of preference). Test metrics are never read. Raises :class:`NoCandidateError`
    naming every skipped asset when there is no candidate."""
    skipped = dict(skipped or {})
    if not candidates:
        why = "; ".join(f"{a}: {r}" for a, r in skipped.items()) or "no candidate asset is listed"
        raise NoCandidateError(f"no model can be promoted: no candidate was trained on the current split ({why})")
    assets = [c.asset for c in candidates]
    if len(set(assets)) != len(assets):
        raise ValueError(f"candidates must be distinct assets, got {assets}")
    # stable sort: among equal validation values the earlier (preferred) candidate stays first
    ranked = sorted(candidates, key=lambda c: -c.valid_ndcg)
    winner = ranked[0]
    runner_up = ranked[1] if len(ranked) > 1 else None
    margin = None if runner_up is None else winner.valid_ndcg - runner_up.valid_ndcg
    tie = runner_up is not None and runner_up.valid_ndcg == winner.valid_ndcg
    if runner_up is None:
        reason = f"the only candidate (valid NDCG@10 {winner.valid_ndcg:.5f})"
    elif tie:
        reason = (f"ties with {runner_up.asset} on valid NDCG@10 ({winner.valid_ndcg:.5f}); the tie goes to the "
                  f"candidate listed first ({winner.asset})")
    else:
        reason = (f"best valid NDCG@10 {winner.valid_ndcg:.5f}, {margin:.5f} above {runner_up.asset} "
                  f"({runner_up.valid_ndcg:.5f})")
    return Selection(winner=winner, candidates=tuple(candidates), skipped=skipped, runner_up=runner_up,
                     margin=margin, tie=tie, reason=reason)


def record_selection(client: MlflowClient, name: str, version: str | int, selection: Selection) -> None:
    """Write :meth:`Selection.tags` onto model version ``version`` of ``name``."""
    for key, value in selection.tags().items():
        client.set_model_version_tag(name, str(version), key, value)
