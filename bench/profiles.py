"""The named budgets the Scientific benchmark trains under: one definition each, used by every entry point
(``bench.scientific``, ``bench.train_variants``) and recorded in every result record (``profile``).

Every model trains until its own early stopping fires (validation NDCG@10, patience >= 5); ``max_epochs`` is a
cap it should not reach — a run that hits it is recorded as ``stopped="cap"`` and the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BenchProfile:
    """How much each model of the benchmark trains, and over which seeds."""

    name: str
    description: str
    max_history: int = 50  # the published protocol of the Scientific split
    generator_max_epochs: int = 60
    generator_patience: int = 5
    generator_batch_size: int = 256
    generator_lr: float = 2e-3
    #: GeneratorConfig fields of the item-level generator (arch item_causal), over the defaults
    item_recipe: tuple[tuple[str, object], ...] = ()
    grpo_epochs: int = 2
    #: (generator seed, codebook seed) pairs; the codebook (RQ-VAE) seed moves NDCG@10 as much as the generator's
    seed_pairs: tuple[tuple[int, int], ...] = ((0, 0), (1, 1), (2, 2))
    sasrec_recipe: str = "published-recipe"
    sasrec_seeds: tuple[int, ...] = (0, 1, 2)
    threads: int = 2
    accelerator: str = "cpu"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.generator_patience < 5:
            raise ValueError(f"profile {self.name!r}: patience must be >= 5 (equal budgets), got "
                             f"{self.generator_patience}")
        if not self.seed_pairs:
            raise ValueError(f"profile {self.name!r} needs at least one (generator seed, codebook seed) pair")

    @property
    def generator_seeds(self) -> list[int]:
        return sorted({g for g, _ in self.seed_pairs})

    @property
    def codebook_seeds(self) -> list[int]:
        return sorted({c for _, c in self.seed_pairs})


PROFILES: dict[str, BenchProfile] = {
    "cpu": BenchProfile(
        name="cpu",
        description="2 CPU cores (`make bench`): three paired generator/codebook seeds, every model to early "
                    "stopping",
    ),
    "cpu-large": BenchProfile(
        name="cpu-large",
        description="the `cpu` budget with the item-level generator at TIGER's size (4 layers, d_ff 1024, dropout "
                    "0.2): does capacity close the gap to SASRec?",
        item_recipe=(("num_encoder_layers", 4), ("d_ff", 1024), ("dropout", 0.2)),
    ),
    "gpu": BenchProfile(
        name="gpu",
        description="one GPU where lent: 3 x 3 generator x codebook seeds, every model to early stopping",
        generator_max_epochs=200,
        generator_patience=10,
        generator_batch_size=512,
        seed_pairs=tuple((g, c) for g in (0, 1, 2) for c in (0, 1, 2)),
        threads=8,
        accelerator="auto",
    ),
}


def get_profile(name: str) -> BenchProfile:
    if name not in PROFILES:
        raise ValueError(f"unknown benchmark profile {name!r}; profiles: {sorted(PROFILES)}")
    return PROFILES[name]
