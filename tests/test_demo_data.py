"""The demo generator: deterministic, realistic enough, readable by the Amazon 2018 loader, and learnable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ingestion.amazon import iter_amazon_interactions, iter_amazon_items
from ingestion.demo_data import (
    META_FILE,
    MOTIVATIONS_FILE,
    REVIEWS_FILE,
    DemoManifest,
    demo_files_exist,
    read_motivations,
    write_demo_dataset,
)
from ingestion.schema import INTERACTION_COLUMNS, ITEM_COLUMNS
from ingestion.splits import split_interactions


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoManifest, pd.DataFrame, pd.DataFrame, dict]:
    manifest = write_demo_dataset(tmp_path_factory.mktemp("demo"), seed=7)
    interactions = pd.concat(iter_amazon_interactions(manifest.reviews_path, "2018"), ignore_index=True)
    items = pd.concat(iter_amazon_items(manifest.meta_path, "2018"), ignore_index=True)
    return manifest, interactions, items, read_motivations(manifest.out_dir)


def _sequences(interactions: pd.DataFrame) -> dict[str, list[str]]:
    ordered = interactions.sort_values(["user_id", "timestamp"], kind="stable")
    return {user: group.tolist() for user, group in ordered.groupby("user_id", sort=True)["item_id"]}


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    first = write_demo_dataset(tmp_path / "a", seed=3, n_users=80)
    second = write_demo_dataset(tmp_path / "b", seed=3, n_users=80)
    for name in (REVIEWS_FILE, META_FILE, MOTIVATIONS_FILE):
        assert (first.out_dir / name).read_bytes() == (second.out_dir / name).read_bytes(), name
    assert first.n_interactions == second.n_interactions


def test_another_seed_gives_other_data(tmp_path: Path) -> None:
    first = write_demo_dataset(tmp_path / "a", seed=3, n_users=80)
    other = write_demo_dataset(tmp_path / "b", seed=4, n_users=80)
    assert first.reviews_path.read_bytes() != other.reviews_path.read_bytes()
    assert read_motivations(first.out_dir)["users"] != read_motivations(other.out_dir)["users"]


def test_reads_through_the_amazon_2018_loader(demo) -> None:
    manifest, interactions, items, _ = demo
    assert list(interactions.columns) == list(INTERACTION_COLUMNS)
    assert list(items.columns) == list(ITEM_COLUMNS)
    assert len(interactions) == manifest.n_interactions
    assert len(items) == manifest.n_items
    assert interactions["user_id"].nunique() == manifest.n_users == 600
    assert 350 <= manifest.n_items <= 450
    assert 20 <= manifest.n_motivations <= 30
    assert set(interactions["item_id"]) <= set(items["item_id"])
    assert items["item_id"].is_unique
    # the generator sprinkles HTML into some descriptions; the loader must hand back plain text
    assert not items["description"].str.contains("<|&amp;", regex=True).any()
    assert items["description"].str.len().gt(10).all()
    assert items["title"].str.len().gt(5).all()
    assert items["categories"].str.count(" > ").ge(1).all()
    assert items["brand"].ne("").all()
    assert items["image_url"].isna().all()  # no images: nothing for a captioner to download


def test_ratings_lengths_and_times_are_plausible(demo) -> None:
    _, interactions, _, _ = demo
    assert set(interactions["rating"].unique()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert interactions["rating"].mean() > 3.5  # skewed high, as on Amazon
    lengths = interactions.groupby("user_id").size()
    assert lengths.min() >= 6 and lengths.max() <= 30
    assert lengths.std() > 2  # not one fixed length
    times = pd.to_datetime(interactions["timestamp"], unit="s", utc=True)
    assert times.min() >= pd.Timestamp("2015-01-01", tz="UTC")
    assert times.max() <= pd.Timestamp("2021-01-01", tz="UTC")
    strictly_increasing = interactions.sort_values(["user_id", "timestamp"]).groupby("user_id")["timestamp"].apply(
        lambda t: bool(np.all(np.diff(t.to_numpy()) > 0)))
    assert strictly_increasing.all()
    assert not interactions.duplicated(["user_id", "item_id"]).any()


def test_items_serve_several_motivations_and_generic_items_are_popular(demo) -> None:
    _, interactions, _, truth = demo
    serves: dict[str, int] = {}
    for motivation in truth["motivations"]:
        for asin in motivation["items"]:
            serves[asin] = serves.get(asin, 0) + 1
    assert sum(1 for n in serves.values() if n >= 2) >= 5
    popularity = interactions["item_id"].value_counts()
    generic_mean = popularity.reindex(truth["generic_items"]).fillna(0).mean()
    assert generic_mean > 2 * popularity.mean()


def test_motivations_structure_the_sequences(demo) -> None:
    _, interactions, items, truth = demo
    members = {m["id"]: set(m["items"]) for m in truth["motivations"]}
    shares, chances = [], []
    for user, sequence in _sequences(interactions).items():
        own = set().union(*(members[s["motivation"]] for s in truth["users"][user]))
        shares.append(np.mean([item in own for item in sequence]))
        chances.append(len(own) / len(items))
    # far above what a user buying at random would show
    assert np.mean(shares) > 0.75
    assert np.mean(shares) > 8 * np.mean(chances)


def test_switching_users_move_to_their_second_motivation(demo) -> None:
    _, interactions, _, truth = demo
    members = {m["id"]: set(m["items"]) for m in truth["motivations"]}
    sequences = _sequences(interactions)
    switchers = {u: s for u, s in truth["users"].items() if len(s) == 2}
    assert 0.2 * len(sequences) < len(switchers) < 0.5 * len(sequences)
    before, after = [], []
    for user, (first, second) in switchers.items():
        sequence, cut = sequences[user], second["from_position"]
        assert 0 < cut < len(sequence) and sequence[cut] in members[second["motivation"]]
        before.append(np.mean([i in members[first["motivation"]] for i in sequence[:cut]]))
        after.append(np.mean([i in members[first["motivation"]] for i in sequence[cut:]]))
    assert np.mean(before) > 0.7 > 0.3 > np.mean(after)


def test_starter_items_come_first(demo) -> None:
    _, interactions, _, truth = demo
    stage = truth["item_stage"]
    members = {m["id"]: set(m["items"]) for m in truth["motivations"]}
    correlations = []
    for user, sequence in _sequences(interactions).items():
        own = members[truth["users"][user][0]["motivation"]]
        stages = pd.Series([stage[i] for i in sequence if i in own])
        if len(stages) >= 4 and stages.nunique() > 1:
            # Spearman: Pearson correlation of the ranks (position ranks are 0..n-1)
            correlations.append(np.corrcoef(stages.rank().to_numpy(), np.arange(len(stages)))[0, 1])
    assert np.mean(correlations) > 0.5


def test_knowing_the_motivation_beats_popularity_for_the_next_item(demo) -> None:
    _, interactions, _, truth = demo
    members = {m["id"]: m["items"] for m in truth["motivations"]}
    sequences = _sequences(interactions)
    counts = pd.Series([i for s in sequences.values() for i in s[:-1]]).value_counts()
    ranked = counts.index.tolist()  # popularity from the histories only, never the targets
    hits_popular = hits_motivation = 0
    for user, sequence in sequences.items():
        history, target = set(sequence[:-1]), sequence[-1]
        current = truth["users"][user][-1]["motivation"]
        popular = [i for i in ranked if i not in history][:10]
        in_motivation = sorted((i for i in members[current] if i not in history),
                               key=lambda i: -counts.get(i, 0))
        informed = (in_motivation + [i for i in popular if i not in in_motivation])[:10]
        hits_popular += target in popular
        hits_motivation += target in informed
    assert hits_motivation > 3 * hits_popular
    assert hits_motivation / len(sequences) > 0.3


def test_survives_5_core_filtering(demo) -> None:
    _, interactions, _, _ = demo
    kept, stats = split_interactions(interactions, k_core=5)
    assert kept["user_id"].nunique() >= 0.95 * interactions["user_id"].nunique()
    assert kept["item_id"].nunique() >= 0.85 * interactions["item_id"].nunique()
    assert stats.interactions >= 0.95 * len(interactions)


def test_demo_files_exist_checks_presence_and_parameters(tmp_path: Path) -> None:
    assert not demo_files_exist(tmp_path)
    write_demo_dataset(tmp_path, seed=5, n_users=40)
    assert demo_files_exist(tmp_path)
    assert demo_files_exist(tmp_path, seed=5, n_users=40)
    assert not demo_files_exist(tmp_path, seed=6)
    assert not demo_files_exist(tmp_path, n_users=41)
    (tmp_path / META_FILE).unlink()
    assert not demo_files_exist(tmp_path)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files behind


@pytest.mark.parametrize("min_length, max_length", [(2, 3), (20, 25), (30, 30)])
def test_sequence_length_bounds_are_honoured(tmp_path: Path, min_length: int, max_length: int) -> None:
    manifest = write_demo_dataset(tmp_path, seed=1, n_users=60, min_length=min_length, max_length=max_length)
    lengths = pd.concat(iter_amazon_interactions(manifest.reviews_path, "2018")).groupby("user_id").size()
    assert len(lengths) == 60
    assert lengths.min() >= min_length and lengths.max() <= max_length


@pytest.mark.parametrize("kwargs, message", [
    ({"n_users": 0}, "n_users"),
    ({"min_length": 8, "max_length": 7}, "min_length"),
    ({"min_length": 1}, "min_length"),
])
def test_bad_arguments_are_rejected(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_demo_dataset(tmp_path, **kwargs)
    assert not (tmp_path / REVIEWS_FILE).exists()
