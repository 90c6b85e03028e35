"""Codebook health on hand-built codes, with the expected numbers worked out by hand."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.codebook_health import codebook_health, table_health
from training.semantic_ids import SemanticIdTable

REPO = Path(__file__).resolve().parents[1]

# 8 items, 2 levels, 4 codes per level.
# level 0 codes: 0,0,0,0,1,1,2,2  -> used {0,1,2} of 4; distribution 4/8, 2/8, 2/8
# level 1 codes: 0,0,1,2,0,0,3,3  -> used {0,1,2,3};  distribution 4/8, 1/8, 1/8, 2/8
# full codes: (0,0)x2, (0,1), (0,2), (1,0)x2, (2,3)x2 -> 3 collision groups of 2, 6 colliding items
HAND_CODES = np.array([[0, 0], [0, 0], [0, 1], [0, 2], [1, 0], [1, 0], [2, 3], [2, 3]])


def test_hand_built_case() -> None:
    health = codebook_health(HAND_CODES, 4)
    assert health.n_items == 8 and health.n_levels == 2
    assert health.used_codes == [3, 4]
    assert health.usage == [0.75, 1.0]
    h0 = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    h1 = -(0.5 * math.log(0.5) + 2 * 0.125 * math.log(0.125) + 0.25 * math.log(0.25))
    assert health.entropy_nats == pytest.approx([h0, h1])
    assert health.entropy_normalised == pytest.approx([h0 / math.log(4), h1 / math.log(4)])
    assert health.n_unique_codes == 5
    assert health.collision_rate == pytest.approx(6 / 8)
    assert health.n_collision_groups == 3
    assert health.largest_collision_group == 2
    assert health.max_suffix == 1
    assert health.uniqueness_after_suffix == 1.0
    assert health.sids_unique


def test_uniform_codes_have_full_entropy_and_no_collisions() -> None:
    codes = np.array([[i, i] for i in range(4)])
    health = codebook_health(codes, [4, 8])
    assert health.usage == [1.0, 0.5]
    assert health.entropy_nats == pytest.approx([math.log(4), math.log(4)])
    assert health.entropy_normalised == pytest.approx([1.0, math.log(4) / math.log(8)])
    assert health.collision_rate == 0.0
    assert health.n_collision_groups == 0
    assert health.largest_collision_group == 1
    assert health.max_suffix == -1


def test_missing_suffix_shows_as_lost_uniqueness() -> None:
    # The SIDs carry no suffix at all: the three colliding pairs each lose one distinct SID.
    health = codebook_health(HAND_CODES, 4, suffix=np.full(8, -1))
    assert health.uniqueness_after_suffix == pytest.approx(5 / 8)
    assert not health.sids_unique


def test_one_big_group() -> None:
    codes = np.zeros((5, 3), dtype=int)
    health = codebook_health(codes, 2)
    assert health.collision_rate == 1.0
    assert health.largest_collision_group == 5
    assert health.n_collision_groups == 1
    assert health.max_suffix == 4
    assert health.entropy_nats == [0.0, 0.0, 0.0]
    assert health.usage == [0.5, 0.5, 0.5]


def test_to_metadata_is_plain_json() -> None:
    meta = codebook_health(HAND_CODES, 4).to_metadata()
    decoded = json.loads(json.dumps(meta))
    assert decoded == meta
    assert decoded["usage"] == [0.75, 1.0]
    assert decoded["sids_unique"] is True
    assert all(type(v) in (int, float, bool, list) for v in meta.values())


def test_table_health_matches_codes() -> None:
    table = SemanticIdTable.from_codes([f"i{k}" for k in range(8)], HAND_CODES)
    assert table_health(table, 4) == codebook_health(HAND_CODES, 4, suffix=table.suffix)


@pytest.mark.parametrize(
    ("codes", "sizes", "message"),
    [
        (np.array([[0, 5]]), 4, "level 1 uses code 5"),
        (np.array([[0, 1]]), [4, 4, 4], "3 codebook sizes for 2 levels"),
        (np.zeros((0, 2), dtype=int), 4, "at least one item"),
        (np.array([[0, -1]]), 4, ">= 0"),
        (np.array([0, 1]), 4, "2-D"),
    ],
)
def test_bad_input_is_refused(codes: np.ndarray, sizes: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        codebook_health(codes, sizes)  # type: ignore[arg-type]


def test_health_modules_do_not_import_lightning_or_torch() -> None:
    code = (
        "import sys, training.codebook_health, training.semantic_ids; "
        "print(sorted(m for m in ('lightning', 'torch', 'dagster') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
