"""The judge measured on the user's own catalogue: sampling, the labels file, agreement statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mining.judge_agreement import (
    SAMPLE_COLUMNS,
    cohen_kappa,
    label_sample,
    load_own_labels,
    measure_agreement,
    wilson_interval,
)
from mining.judges import EmbeddingJudge, JudgeError, label_interests
from mining.parsing import RESTATES_TITLE
from tests.helpers import minilm_embedder

ITEMS = pd.DataFrame({"item_id": [f"i{k}" for k in range(6)],
                      "title": ["Garden Hose", "Pruning Shears", "Soil Meter", "Seed Tray", "Rain Barrel",
                                "Compost Bin"],
                      "description": ["Sturdy hose.", "Sharp blades.", "Reads pH.", "Holds seedlings.",
                                      "Collects rain.", "Turns scraps into soil."]})


def _rewards(n_curated: int, n_rejected: int) -> pd.DataFrame:
    labels = [1] * n_curated + [0] * n_rejected
    return pd.DataFrame({"item_id": [f"i{k % 6}" for k in range(len(labels))],
                         "rank": [k // 6 for k in range(len(labels))],
                         "descriptor": [f"need number {k}" for k in range(len(labels))],
                         "confidence": 0.8, "label": labels, "judge": "embedding", "score": 0.5,
                         "reason": pd.array([pd.NA] * len(labels), dtype="string")})


def test_wilson_interval_matches_hand_computation() -> None:
    # 8 of 10: centre (0.8 + 1.96²/20) / (1 + 1.96²/10), half 1.96·sqrt(0.016 + 1.96²/400) / (1 + 1.96²/10)
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0
    with pytest.raises(ValueError, match="n >= 1"):
        wilson_interval(0, 0)


def test_cohen_kappa_matches_hand_computation() -> None:
    # observed 35/50 = 0.7; expected (30·25 + 20·25) / 50² = 0.5; kappa (0.7 - 0.5) / 0.5 = 0.4
    assert cohen_kappa(np.array([[20, 5], [10, 15]])) == pytest.approx(0.4)
    assert cohen_kappa(np.array([[0, 0], [0, 7]])) == 0.0  # one class everywhere: nothing beyond chance


def test_label_sample_balances_the_classes_and_is_seeded() -> None:
    rewards = _rewards(30, 10)
    sample = label_sample(rewards, ITEMS, n=12, seed=3)
    assert list(sample.columns) == SAMPLE_COLUMNS and len(sample) == 12
    assert sample["pipeline_label"].value_counts().to_dict() == {1: 6, 0: 6}
    assert sample["label"].isna().all() and set(sample["title"]) <= set(ITEMS["title"])
    pd.testing.assert_frame_equal(sample, label_sample(rewards, ITEMS, n=12, seed=3))
    assert not sample["descriptor"].equals(label_sample(rewards, ITEMS, n=12, seed=4)["descriptor"])
    # fewer rejected rows than half: the rest comes from the curated ones
    few = label_sample(_rewards(30, 2), ITEMS, n=12, seed=0)
    assert few["pipeline_label"].value_counts().to_dict() == {1: 10, 0: 2}
    with pytest.raises(JudgeError, match="n must be >= 2"):
        label_sample(rewards, ITEMS, n=1)
    with pytest.raises(JudgeError, match="interest_rewards is empty"):
        label_sample(rewards.iloc[:0], ITEMS)


def test_own_labels_file_errors_name_the_problem(tmp_path) -> None:
    ids = set(ITEMS["item_id"])
    path = tmp_path / "labels.csv"
    with pytest.raises(JudgeError, match="does not exist"):
        load_own_labels(path, ids)
    pd.DataFrame({"item_id": ["i1"], "descriptor": ["x"]}).to_csv(path, index=False)
    with pytest.raises(JudgeError, match=r"missing column\(s\) \['label'\]"):
        load_own_labels(path, ids)
    pd.DataFrame({"item_id": ["i1", "i2"], "descriptor": ["x", "y"], "label": [None, None]}).to_csv(path, index=False)
    with pytest.raises(JudgeError, match="no row has a label"):
        load_own_labels(path, ids)
    pd.DataFrame({"item_id": ["i1", "i2", "i3"], "descriptor": ["x", "y", "z"],
                  "label": ["1", "", "2"]}).to_csv(path, index=False)
    with pytest.raises(JudgeError, match=r"label must be 1 or 0, got '2' \(labelled row 2, item 'i3'\)"):
        load_own_labels(path, ids)
    pd.DataFrame({"item_id": ["i1", "nope"], "descriptor": ["x", "y"], "label": [1, 0]}).to_csv(path, index=False)
    with pytest.raises(JudgeError, match=r"1 item id\(s\) not in the catalogue, e.g. \['nope'\]"):
        load_own_labels(path, ids)
    # blank rows are skipped, a relabelled row keeps its last label
    pd.DataFrame({"item_id": ["i1", "i2", "i1"], "descriptor": ["x", "y", "x"],
                  "label": ["1", "", "0"]}).to_csv(path, index=False)
    own = load_own_labels(path, ids)
    assert own.to_dict("records") == [{"item_id": "i1", "descriptor": "x", "label": 0}]


def test_agreement_on_stored_rows_matches_the_confusion_by_hand() -> None:
    rewards = _rewards(4, 4)  # need number 0-3 curated, 4-7 rejected
    own = pd.DataFrame({"item_id": rewards["item_id"], "descriptor": rewards["descriptor"],
                        "label": [1, 1, 1, 0, 0, 0, 1, 1]})
    agreement = measure_agreement(own, rewards, ITEMS, judge=None, restatement_threshold=0.6,  # type: ignore[arg-type]
                                  max_descriptor_share=0.05)
    # truth x pipeline: tn 2 (rows 4, 5), fp 1 (row 3), fn 2 (rows 6, 7), tp 3 (rows 0-2)
    assert agreement.confusion.tolist() == [[2, 1], [2, 3]]
    assert (agreement.n, agreement.accuracy, agreement.matched) == (8, 5 / 8, 8)
    assert agreement.curated_precision == pytest.approx(3 / 4)
    assert agreement.interval == pytest.approx(wilson_interval(5, 8))
    meta = agreement.metadata()
    assert meta["own_labels_confusion"] == {"tn": 2, "fp": 1, "fn": 2, "tp": 3}


def test_rows_missing_from_the_rewards_are_judged_now_with_the_rules() -> None:
    embed, restore = minilm_embedder()
    judge = EmbeddingJudge(embed)
    try:
        _check_fresh_rows(judge)
    finally:
        restore()


def _check_fresh_rows(judge: EmbeddingJudge) -> None:
    rewards = _rewards(2, 0)
    own = pd.DataFrame({"item_id": ["i0", "i4", "i4"],
                        "descriptor": ["need number 0", "the Rain Barrel", "saving rain water for the garden"],
                        "label": [1, 0, 1]})
    agreement = measure_agreement(own, rewards, ITEMS, judge, restatement_threshold=0.6, max_descriptor_share=0.05)
    assert agreement.matched == 1 and agreement.n == 3
    # "the Rain Barrel" restates its title: rejected by the rule whatever the judge scores, as the user says
    fresh = label_interests(own.iloc[1:].assign(rank=0, confidence=1.0), ITEMS, judge)
    assert fresh.loc[fresh["descriptor"] == "the Rain Barrel", "reason"].tolist() == [RESTATES_TITLE]
    expected = [1, 0, int(fresh.loc[fresh["descriptor"] != "the Rain Barrel", "label"].iloc[0])]
    assert agreement.accuracy == pytest.approx(np.mean(np.array(expected) == own["label"].to_numpy()))


def test_digr_label_sample_writes_a_file_to_fill_in_and_never_overwrites_labels(digr_env, tmp_path) -> None:
    from digr_dagster.cli import main
    from digr_dagster.resources.warehouse import Warehouse

    out = tmp_path / "labels.csv"
    with pytest.raises(SystemExit, match="no interest_rewards table in the warehouse"):
        main(["label-sample", "--out", str(out)])
    Warehouse().replace({"interest_rewards": _rewards(5, 5), "items": ITEMS})
    assert main(["label-sample", "--out", str(out), "--n", "6"]) == 0
    written = pd.read_csv(out)
    assert list(written.columns) == SAMPLE_COLUMNS and len(written) == 6 and written["label"].isna().all()
    assert written["pipeline_label"].sum() == 3
    out.write_text(out.read_text().replace(",,", ",,1", 1))  # the user starts labelling
    kept = out.read_text()
    with pytest.raises(SystemExit, match="pass --force to overwrite it"):
        main(["label-sample", "--out", str(out)])
    assert out.read_text() == kept
    # the filled file loads as the judge's own labels
    written.assign(label=written["pipeline_label"]).to_csv(out, index=False)
    assert len(load_own_labels(out, set(ITEMS["item_id"]))) == 6
