"""The warm-start nightly benchmark: one night's data is a sample of users' last items, split again
leave-one-out; the report compares warm with cold from the records alone."""

from __future__ import annotations

import json

import pytest

from bench.bench_warm_start import report, resplit, yesterday_interactions
from tests.helpers import loo_frame


def _today():
    return loo_frame({f"u{u}": [f"i{(u + t) % 9}" for t in range(4 + u % 3)] for u in range(10)})


def test_yesterday_drops_one_last_item_per_sampled_user_and_splits_again():
    today = _today()
    yesterday, users = yesterday_interactions(today, 0.1, seed=3)
    assert len(users) == round(0.1 * len(today)) == 5 and len(yesterday) == len(today) - 5
    again, same = yesterday_interactions(today, 0.1, seed=3)
    assert same == users and again.equals(yesterday)  # seeded
    split = resplit(yesterday)
    for user, rows in split.groupby("user_id"):
        ordered = rows.sort_values("position")
        before = today[today["user_id"] == user].sort_values("position")
        expected = before["item_id"].tolist()[:-1] if user in users else before["item_id"].tolist()
        assert ordered["item_id"].tolist() == expected
        assert ordered["split"].tolist() == ["train"] * (len(expected) - 2) + ["valid", "test"]
    # a sampled user's test item yesterday is the item they had before today's new one
    sampled = today[today["user_id"] == users[0]].sort_values("position")["item_id"].tolist()
    assert split[(split["user_id"] == users[0]) & (split["split"] == "test")]["item_id"].item() == sampled[-2]


def test_bad_shares_are_refused_with_the_numbers():
    with pytest.raises(ValueError, match=r"new_share must lie in \(0, 1\), got 1.5"):
        yesterday_interactions(_today(), 1.5, seed=0)
    with pytest.raises(ValueError, match="new_share 0.6 of 49 interactions is 29 users' last items; 10 users have "
                                         "at least 4"):
        yesterday_interactions(_today(), 0.6, seed=0)
    with pytest.raises(ValueError, match=r"lacks columns \['position'\]"):
        yesterday_interactions(_today().drop(columns="position"), 0.1, seed=0)


def test_report_compares_warm_with_cold_from_the_records(tmp_path):
    def rec(run, seconds, epochs, test):
        return {"run": run, "users": 100, "interactions": 1000, "seconds": seconds, "epochs": epochs,
                "best_epoch": epochs - 5, "valid": {"ndcg@10": 0.05}, "test": {"ndcg@10": test}, "new_share": 0.01,
                "profile": "cpu", "seed": 0, "machine": "m", "commit": "abc"}
    path = tmp_path / "warm_start.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (rec("yesterday_cold", 500, 20, 0.050),
                                                       rec("today_cold", 600, 20, 0.050),
                                                       rec("today_warm", 150, 6, 0.051))) + "\n")
    text = report(path)
    assert "| today_warm | 100 | 1,000 | 6 (1) | 150 | 0.0500 | 0.0510 |" in text
    assert "Warm start: 0.25x the cold run's wall time (6 vs 20 epochs)" in text and "(+2.0%)" in text
    path.write_text(json.dumps(rec("today_cold", 600, 20, 0.05)) + "\n")
    with pytest.raises(ValueError, match=r"lacks runs \['yesterday_cold', 'today_warm'\]"):
        report(path)
    with pytest.raises(FileNotFoundError, match="no warm-start results"):
        report(tmp_path / "none.jsonl")
