"""The evaluation protocol every model in the report shares, and the report's own settings."""

from __future__ import annotations

from dataclasses import dataclass, field

PROTOCOL = ("leave-one-out per user; full ranking over every item of the filtered catalogue; seen items are not "
            "excluded; HR@K and NDCG@K; valid history = train prefix, test history = train prefix + valid item, "
            "both cut to the shipped generator's history cap (from its checkpoint); identical for every model")


@dataclass(frozen=True)
class EvaluationSettings:
    """Settings of the evaluation report (each baseline's own settings nest beside these)."""

    examples: int = field(default=5, metadata={"description": "example users shown with their recommendations"})
    seed: int = field(default=0, metadata={"description": "seeds the baselines' training and the example users"})

    def __post_init__(self) -> None:
        if self.examples < 0:
            raise ValueError(f"EvaluationSettings.examples must be >= 0, got {self.examples}")
