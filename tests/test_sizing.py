"""Budgets that follow the data (``training.sizing``, ``digr run --size``) and the GroupLens sample generator.

(a) every profile's output is a valid run config of every job, (b) the budgets only shrink as the data grows and
the LLM summary goes off above its user count, (c) the user's config files win over the sized values, (d) the
seeded ml-100k-style folder loads through the real ``movielens`` loader and the ingestion assets, ``min_rating``
dropping exactly the rows below it, and ``digr run --size`` counts it from the warehouse or from the files.
"""

from __future__ import annotations

import contextlib
import io
import itertools
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pandas as pd
import pytest

from digr_dagster import cli
from ingestion.grouplens_sample import RATING_SHARES, write_grouplens_sample
from ingestion.movielens import find_movielens_files, iter_movielens_interactions, iter_movielens_items
from training.sizing import PROFILES, sized_run_config

#: (interactions, users, items): empty, the demo, ml-100k, Amazon-like 100k (many short users), ml-1m, ml-25m
SIZES = [(0, 0, 0), (3_000, 300, 121), (100_000, 943, 1_682), (100_000, 20_000, 10_000), (1_000_209, 6_040, 3_706),
         (25_000_095, 162_541, 59_047)]


def _jobs():
    from digr_dagster.definitions import defs

    return {name: defs.resolve_job_def(name) for name in ("full_study", "nightly_retrain", "ingest_new_files")}


def _quiet(fn, *args, **kwargs):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        return fn(*args, **kwargs), out.getvalue()


def _cfg(overrides: dict, op: str) -> dict:
    return overrides[op]["config"]


# --------------------------------------------------------------------------- (a) valid for every job


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_is_a_valid_run_config_of_every_job(profile: str) -> None:
    assert cli.SIZES == PROFILES  # the command line's choices are the library's profiles
    jobs = _jobs()
    for size in SIZES:
        ops = sized_run_config(profile, *size)
        dg.validate_run_config(jobs["full_study"], {"ops": ops})  # raises naming an unknown key or bad value
        dg.validate_run_config(jobs["nightly_retrain"], {"ops": ops})
        for name, job in jobs.items():  # through the CLI: only the job's own ops are sized
            config, _ = _quiet(cli.sized_run_config_for, name, profile, {}, size=size)
            cli._check_config(job, config, None)
        ingest_only, _ = _quiet(cli.sized_run_config_for, "ingest_new_files", profile, {}, size=size)
        assert ingest_only == {"ops": {}}


def test_unknown_profile_or_negative_size_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown sizing profile 'huge'.*quick, standard, full"):
        sized_run_config("huge", 1, 1, 1)
    with pytest.raises(ValueError, match="n_users"):
        sized_run_config("standard", 10, -1, 5)


# --------------------------------------------------------------------------- (b) monotone in the data


def test_budgets_only_shrink_as_the_data_grows() -> None:
    def caps(profile: str, n: int, u: int, i: int) -> tuple:
        ops = sized_run_config(profile, n, u, i)
        grpo = _cfg(ops, "recommender_grpo")
        return (_cfg(ops, "recommender_sft")["max_epochs"], _cfg(ops, "recommender_sft")["patience"],
                grpo["max_batches_per_epoch"], round(1 / grpo["val_check_interval"]),
                _cfg(ops, "evaluation_report")["sasrec"]["max_epochs"],
                _cfg(ops, "item_interests")["n_descriptors"] if "item_interests" in ops else 3)

    grid = [0, 500, 3_000, 30_000, 100_000, 300_000, 1_000_000, 10_000_000]
    users = [0, 50, 200, 201, 943, 5_000, 20_000, 200_000]
    for profile in ("quick", "standard"):
        for n, u, i in itertools.product(grid, users, [0, 121, 1_682, 50_000]):
            here = caps(profile, n, u, i)
            for bigger in ((n * 3 + 1, u, i), (n, u * 3 + 1, i), (n, u, i * 3 + 1)):
                assert all(b <= a for a, b in zip(here, caps(profile, *bigger), strict=True)), (profile, n, u, i)
    # standard never trains less than quick, full (the defaults) never less than standard
    for size in SIZES:
        q, s, f = (_cfg(sized_run_config(p, *size), "recommender_sft")["max_epochs"] for p in PROFILES)
        assert q <= s <= f == 30


@pytest.mark.parametrize(("profile", "limit"), [("quick", 50), ("standard", 200)])
def test_llm_summary_is_off_above_the_profiles_user_count(profile: str, limit: int) -> None:
    summary = [_cfg(sized_run_config(profile, 50 * u, u, 100), "user_interests")["llm_summary"]
               for u in (1, limit, limit + 1, 100_000)]
    assert summary == [True, True, False, False]
    assert _cfg(sized_run_config("full", 10**7, 10**6, 10**5), "user_interests")["llm_summary"] is True


def test_standard_on_an_ml100k_shaped_set_is_the_documented_budget() -> None:
    """The numbers the module docstring's 30-minute target is worked out with (943 users, 1,682 items)."""
    ops = sized_run_config("standard", 100_000, 943, 1_682)
    assert _cfg(ops, "recommender_sft") == {"max_epochs": 3, "patience": 2, "batch_size": 64}
    assert _cfg(ops, "recommender_grpo") == {"max_epochs": 1, "max_batches_per_epoch": 141, "val_check_interval": 0.25}
    assert _cfg(ops, "user_interests") == {"llm_summary": False}
    assert _cfg(ops, "item_interests") == {"n_descriptors": 1}
    assert _cfg(ops, "evaluation_report") == {"sasrec": {"max_epochs": 7, "patience": 2}, "examples": 5}
    full = sized_run_config("full", 100_000, 943, 1_682)  # the production defaults, whatever the size
    assert _cfg(full, "recommender_grpo")["max_batches_per_epoch"] is None
    assert full == sized_run_config("full", 0, 0, 0)


# --------------------------------------------------------------------------- (c) the user's files win


def test_the_users_config_files_win_over_the_sized_values(tmp_path: Path) -> None:
    first = tmp_path / "source.yaml"
    first.write_text("ops:\n  recommender_sft:\n    config: {max_epochs: 12, batch_size: 32}\n"
                     "  evaluation_report:\n    config: {sasrec: {max_epochs: 40}}\n")
    second = tmp_path / "mine.yaml"
    second.write_text("ops:\n  recommender_sft:\n    config: {max_epochs: 7}\n"
                      "  user_interests:\n    config: {llm_summary: true}\n")
    user = cli.load_run_config([str(first), str(second)])
    merged, printed = _quiet(cli.sized_run_config_for, "full_study", "standard", user, size=(100_000, 943, 1_682))
    ops = merged["ops"]
    assert _cfg(ops, "recommender_sft") == {"max_epochs": 7, "patience": 2, "batch_size": 32}  # later file wins
    assert _cfg(ops, "user_interests") == {"llm_summary": True}
    assert _cfg(ops, "evaluation_report") == {"sasrec": {"max_epochs": 40, "patience": 2}, "examples": 5}
    assert _cfg(ops, "recommender_grpo")["max_batches_per_epoch"] == 141  # not in the files: sized
    assert "100,000 interactions, 943 users, 1,682 items" in printed
    assert ("your --config files set: recommender_sft.max_epochs, recommender_sft.batch_size, "
            "user_interests.llm_summary, evaluation_report.sasrec.max_epochs") in printed
    cli._check_config(_jobs()["full_study"], merged, None)


# --------------------------------------------------------------------------- (d) the GroupLens sample


def test_the_grouplens_sample_reads_through_the_movielens_loader(tmp_path: Path) -> None:
    sample = write_grouplens_sample(tmp_path / "ml", n_users=40, n_items=90, mean_ratings=35, seed=3)
    files = find_movielens_files(sample.folder)
    assert files.release == "ml-100k"
    rows = pd.concat(iter_movielens_interactions(files), ignore_index=True)
    items = pd.concat(iter_movielens_items(files), ignore_index=True)
    assert len(rows) == sample.n_ratings and rows["user_id"].nunique() == 40 and len(items) == 90
    assert rows.groupby("user_id").size().min() >= 20  # every user rates at least min_ratings, as in ml-100k
    assert set(rows["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert rows["rating"].value_counts().sort_index().tolist() == [sample.rating_counts[s] for s in range(1, 6)]
    shares = rows["rating"].value_counts(normalize=True).sort_index().to_numpy()
    assert max(abs(a - b) for a, b in zip(shares, RATING_SHARES, strict=True)) < 0.03
    tied = rows.groupby(["user_id", "timestamp"])["item_id"].transform("size") > 1
    assert int(tied.sum()) == sample.tied_rows > 0  # same-user same-second ratings, as MovieLens pages produce
    assert not rows["user_id"].is_monotonic_increasing  # u.data is in no particular order
    assert items["categories"].str.startswith("Movies").all() and items["title"].str.contains("é").any()
    assert items["title"].str.fullmatch(r".+ \(\d{4}\)").all()
    again = write_grouplens_sample(tmp_path / "again", n_users=40, n_items=90, mean_ratings=35, seed=3)
    assert (again.folder / "u.data").read_bytes() == (sample.folder / "u.data").read_bytes()  # seeded


def test_min_rating_through_the_assets_and_digr_run_size_counts_it(digr_env: Path, tmp_path: Path,
                                                                  monkeypatch) -> None:
    from assets.ingestion import ingest_source, interaction_splits
    from digr_dagster.resources.warehouse import Warehouse

    sample = write_grouplens_sample(tmp_path / "ml", n_users=60, n_items=120, seed=1)
    source = {"kind": "movielens", "path": str(sample.folder), "min_rating": 4}
    run_config = {"ops": {"ingest_source": {"config": source}}}
    assert cli.data_size(run_config)[1].startswith("the source's files")  # not ingested yet: streamed
    assert cli.data_size(run_config)[0] == (sample.kept(4), 60, 120)
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize([ingest_source, interaction_splits], instance=instance,
                                resources={"warehouse": Warehouse()}, run_config=run_config, raise_on_error=False)
    assert result.success
    raw = next(m for m in result.asset_materializations_for_node("ingest_source")
               if m.asset_key.to_user_string() == "raw_interactions").metadata
    assert raw["dagster/row_count"].value == sample.kept(4) < sample.n_ratings
    assert raw["min_rating_dropped"].value == sample.n_ratings - sample.kept(4)
    assert raw["rating_filter"].value["below_min_rating"] == sum(sample.rating_counts[s] for s in (1, 2, 3))
    split_md = result.asset_materializations_for_node("interaction_splits")[0].metadata
    in_split = (split_md["dagster/row_count"].value, split_md["users"].value, split_md["items"].value)

    # the same source: counted from the warehouse's split (after dedup and 5-core)
    size, where = cli.data_size(run_config)
    assert size == in_split and where.startswith("the warehouse's interaction_splits, this source")
    # another min_rating or other files: the warehouse does not describe them, the files are counted
    all_rows = {"ops": {"ingest_source": {"config": {**source, "min_rating": None}}}}
    assert cli.data_size(all_rows)[0] == (sample.n_ratings, 60, 120)
    other = write_grouplens_sample(tmp_path / "other", n_users=30, n_items=80, seed=2)
    elsewhere = {"ops": {"ingest_source": {"config": {"kind": "movielens", "path": str(other.folder)}}}}
    assert cli.data_size(elsewhere)[0] == (other.n_ratings, 30, 80)
    # a source that cannot be read: the warehouse's tables, saying why
    missing = {"ops": {"ingest_source": {"config": {"kind": "movielens", "path": str(tmp_path / "gone")}}}}
    size, where = cli.data_size(missing)
    assert size == in_split and "cannot be read" in where and "gone" in where

    # `digr run --size` end to end, the run itself replaced: what it would launch
    launched = {}

    def fake_run_job(job_name, config, select=None):
        launched.update(job=job_name, config=config, select=select)
        return SimpleNamespace(success=True, run_id="fake", get_asset_materialization_events=lambda: [],
                               all_events=[])

    monkeypatch.setattr(cli, "run_job", fake_run_job)
    source_file = tmp_path / "my_source.yaml"
    source_file.write_text(f"ops:\n  ingest_source:\n    config: {{kind: movielens, path: '{sample.folder}', "
                           "min_rating: 4}\n  recommender_sft:\n    config: {patience: 9}\n")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["run", "full_study", "--size", "quick", "--config", str(source_file)])
    assert code == 0 and launched["job"] == "full_study"
    ops = launched["config"]["ops"]
    expected = sized_run_config("quick", *in_split)
    assert _cfg(ops, "recommender_sft") == {**_cfg(expected, "recommender_sft"), "patience": 9}
    assert _cfg(ops, "ingest_source") == source and _cfg(ops, "user_interests") == {"llm_summary": False}
    assert (f"{in_split[0]:,} interactions, {in_split[1]:,} users, {in_split[2]:,} items (from the warehouse's "
            "interaction_splits") in out.getvalue()
    assert "recommender_sft.patience" in out.getvalue()
