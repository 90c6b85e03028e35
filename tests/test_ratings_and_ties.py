"""Explicit feedback (``min_rating``) and timestamp ties (source-order tie-break, tied-share report), on
hand-built files and frames."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from ingestion.sources import InteractionCounts, SourceSpec, iter_interaction_chunks
from ingestion.splits import SplitSettings, TimestampTieWarning, split_interactions, tie_shares

GENRES = 19


def _ml100k(folder: Path, rows: list[tuple[str, str, int, int]]) -> Path:
    """A tiny ml-100k folder: ``u.data`` (user, item, rating, time) and a ``u.item`` naming every item."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    flags = "|".join(["0"] * GENRES)
    items = sorted({i for _, i, _, _ in rows})
    (folder / "u.item").write_bytes("".join(f"{i}|Movie {i} (1995)|01-Jan-1995||http://x|{flags}\n"
                                            for i in items).encode("latin-1"))
    return folder


def _tabular(folder: Path, header: str, lines: list[str], **spec) -> SourceSpec:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "events.csv").write_text(header + "\n" + "".join(line + "\n" for line in lines))
    (folder / "items.csv").write_text("sku\nA\nB\nC\n")
    columns = {"user_id": "customer", "item_id": "sku", "timestamp": "when"}
    if "stars" in header:
        columns["rating"] = "stars"
    return SourceSpec(kind="tabular", path=str(folder), interactions_file="events.csv", items_file="items.csv",
                      interaction_columns=columns, item_columns={"item_id": "sku"}, **spec)


def _read(spec: SourceSpec, chunk_rows: int = 200_000) -> tuple[pd.DataFrame, InteractionCounts]:
    counts = InteractionCounts()
    chunks = list(iter_interaction_chunks(spec, chunk_rows, counts=counts))
    return pd.concat(chunks, ignore_index=True), counts


def frame(rows, source_order=None) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"]).astype(
        {"user_id": "string", "item_id": "string", "timestamp": "int64", "rating": "float64"})
    if source_order is not None:
        df["source_order"] = source_order
    return df


def _order(out: pd.DataFrame, user: str) -> list[tuple[str, str]]:
    rows = out[out["user_id"] == user].sort_values("position")
    return list(zip(rows["item_id"], rows["split"], strict=True))


# (a) min_rating drops exactly the rows below it, and says how many

ML_ROWS = [("1", "10", 5, 100), ("1", "11", 2, 101), ("2", "10", 4, 102), ("2", "12", 1, 103),
           ("1", "12", 3, 104), ("3", "11", 4, 105)]


@pytest.mark.parametrize("chunk_rows", [1, 4, 100])  # a threshold never depends on chunk boundaries
def test_min_rating_drops_the_rows_below_it_and_counts_them(tmp_path: Path, chunk_rows: int) -> None:
    folder = _ml100k(tmp_path / "ml", ML_ROWS)
    everything, counts_all = _read(SourceSpec(kind="movielens", path=str(folder)), chunk_rows)
    assert len(everything) == 6 and counts_all.dropped == 0 and counts_all.min_rating is None
    assert (counts_all.read, counts_all.kept) == (6, 6)

    kept, counts = _read(SourceSpec(kind="movielens", path=str(folder), min_rating=4), chunk_rows)
    # ratings 5, 4, 4 stay (>= 4 inclusive), in source order; 2, 1, 3 go
    assert list(zip(kept["user_id"], kept["item_id"], kept["rating"], strict=True)) == [
        ("1", "10", 5.0), ("2", "10", 4.0), ("3", "11", 4.0)]
    assert counts.to_metadata() == {"min_rating": 4.0, "read": 6, "kept": 3, "below_min_rating": 3,
                                    "unrated_dropped": 0}
    assert counts.dropped == 3


def test_min_rating_drops_unrated_rows_and_counts_them_apart(tmp_path: Path) -> None:
    spec = _tabular(tmp_path / "t", "customer,sku,when,stars",
                    ["u1,A,1,5", "u1,B,2,", "u1,C,3,3.5", "u2,A,4,4"], min_rating=3.5)
    kept, counts = _read(spec)
    assert list(kept["item_id"]) == ["A", "C", "A"]
    assert (counts.below_min_rating, counts.unrated_dropped, counts.kept) == (0, 1, 3)


def test_a_threshold_that_keeps_nothing_is_an_error_naming_min_rating(tmp_path: Path) -> None:
    folder = _ml100k(tmp_path / "ml", ML_ROWS)
    with pytest.raises(ValueError, match=r"`min_rating` = 5.5 keeps none of the 6 .*highest rating is 5"):
        _read(SourceSpec(kind="movielens", path=str(folder), min_rating=5.5))


def test_ingestion_asset_reports_the_drop_and_the_split_reports_ties(digr_env: Path, tmp_path: Path) -> None:
    """Through the assets: rows dropped in raw_interactions' metadata, the tied share in the split's, and
    the warehouse's row order (not item ids) breaking the tie."""
    import dagster as dg

    from assets.ingestion import ingest_source, interaction_splits
    from digr_dagster.resources.warehouse import Warehouse

    # u1: b9 and b10 at t=3 (b9 first in the file); u2: no tie; 1-star rows dropped by min_rating=2
    rows = [("u1", "a", 1, 5), ("u1", "x", 2, 1), ("u1", "b9", 3, 4), ("u1", "b10", 3, 4),
            ("u2", "a", 1, 5), ("u2", "b9", 2, 4), ("u2", "b10", 3, 4), ("u2", "x", 4, 1)]
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "events.csv").write_text("u,i,t,r\n" + "".join(f"{u},{i},{t},{r}\n" for u, i, t, r in rows))
    (folder / "items.csv").write_text("i,title\n" + "".join(f"{i},Item {i}\n" for i in ("a", "x", "b9", "b10")))
    source = {"kind": "tabular", "path": str(folder), "interactions_file": "events.csv", "items_file": "items.csv",
              "interaction_columns": {"user_id": "u", "item_id": "i", "timestamp": "t", "rating": "r"},
              "item_columns": {"item_id": "i", "title": "title"}, "timestamp_format": "unix_s", "min_rating": 2.0}
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize(
            [ingest_source, interaction_splits], instance=instance, resources={"warehouse": Warehouse()},
            run_config={"ops": {"ingest_source": {"config": source},
                                "interaction_splits": {"config": {"k_core": 1, "tie_warning_share": 0.4}}}},
            raise_on_error=False)
        assert result.success
        raw_md = result.asset_materializations_for_node("ingest_source")
        raw_md = next(m for m in raw_md if m.asset_key.to_user_string() == "raw_interactions").metadata
        assert raw_md["min_rating_dropped"].value == 2 and raw_md["rows_read"].value == 8
        assert raw_md["rating_filter"].value["below_min_rating"] == 2
        md = result.asset_materializations_for_node("interaction_splits")[0].metadata
        assert md["tied_valid_test_share"].value == 0.5 and md["tied_train_valid_share"].value == 0.0
        assert md["split_settings"].value["tie_warning_share"] == 0.4
        logged = [e.message for e in instance.all_logs(result.run_id) if e.level == 30]  # logging.WARNING
        assert any("50.0% of users have valid and test items with the same timestamp" in m for m in logged)
        import duckdb

        con = duckdb.connect(str(digr_env / "warehouse.duckdb"), read_only=True)
        try:
            u1 = con.execute("SELECT item_id, split FROM interaction_splits WHERE user_id = 'u1' "
                             "ORDER BY position").fetchall()
        finally:
            con.close()
        assert u1 == [("a", "train"), ("b9", "valid"), ("b10", "test")]


# (b) ties follow the source order, never the item ids


def test_tied_timestamps_follow_the_row_order_not_the_item_ids() -> None:
    # as text "b10" < "b9"; the file lists b9 first, so b9 is the earlier interaction
    df = frame([("u", "a", 1, 5), ("u", "b9", 7, 5), ("u", "b10", 7, 5),
                ("v", "a", 1, 5), ("v", "b10", 7, 5), ("v", "b9", 7, 5)])
    with pytest.warns(TimestampTieWarning, match="100.0% of users"):  # every user's valid and test tie
        out, _ = split_interactions(df, k_core=1)
    assert _order(out, "u") == [("a", "train"), ("b9", "valid"), ("b10", "test")]
    assert _order(out, "v") == [("a", "train"), ("b10", "valid"), ("b9", "test")]
    # the frame's index is not the order: a shuffled index changes nothing
    reindexed, _ = split_interactions(df.set_axis([5, 3, 9, 0, 1, 2]), k_core=1, warn=False)
    pd.testing.assert_frame_equal(reindexed, out)


def test_a_source_order_column_wins_over_the_row_order() -> None:
    df = frame([("u", "a", 1, 5), ("u", "b9", 7, 5), ("u", "b10", 7, 5)], source_order=[0, 2, 1])
    out, _ = split_interactions(df, k_core=1, warn=False)
    assert _order(out, "u") == [("a", "train"), ("b10", "valid"), ("b9", "test")]
    assert "source_order" not in out.columns


def test_dedup_keeps_the_first_repeat_in_source_order_and_ties_follow_it() -> None:
    # x twice at t=5 with the same rating: the first x (row 1) is kept, so x precedes y (row 2)
    rows = [("u", "a", 1, 5), ("u", "x", 5, 3), ("u", "y", 5, 3), ("u", "x", 5, 3), ("u", "z", 9, 3)]
    out, stats = split_interactions(frame(rows), k_core=1)
    assert _order(out, "u") == [("a", "train"), ("x", "train"), ("y", "valid"), ("z", "test")]
    assert stats.duplicates_removed == 1
    # a higher-rated repeat at the same time is still preferred, and takes its own place in the order
    rows[3] = ("u", "x", 5, 4)
    out, _ = split_interactions(frame(rows), k_core=1)
    assert _order(out, "u") == [("a", "train"), ("y", "train"), ("x", "valid"), ("z", "test")]
    # "event" keeps one row per (user, item, timestamp) at the first occurrence's place
    out, stats = split_interactions(frame(rows), k_core=1, dedup="event")
    assert _order(out, "u") == [("a", "train"), ("x", "train"), ("y", "valid"), ("z", "test")]
    assert out.loc[out["item_id"] == "x", "rating"].item() == 4.0 and stats.duplicates_removed == 1


# (c) the tied share, hand-counted, and the warning above the threshold only

# u1: valid/test tie (t=3); u2: train/valid tie (t=2); u3: both tie; u4: no tie
TIES = [("u1", "a", 1, 5), ("u1", "b", 3, 5), ("u1", "c", 3, 5),
        ("u2", "a", 2, 5), ("u2", "b", 2, 5), ("u2", "c", 3, 5),
        ("u3", "a", 4, 5), ("u3", "b", 4, 5), ("u3", "c", 4, 5),
        ("u4", "a", 1, 5), ("u4", "b", 2, 5), ("u4", "c", 3, 5)]


def test_tied_shares_are_counted_per_user() -> None:
    out, stats = split_interactions(frame(TIES), k_core=1, warn=False)
    assert stats.tied_valid_test_share == pytest.approx(2 / 4)  # u1, u3
    assert stats.tied_train_valid_share == pytest.approx(2 / 4)  # u2, u3
    assert tie_shares(out) == (stats.tied_valid_test_share, stats.tied_train_valid_share)
    # the last train item is the one compared: u5's first train item ties nothing, its second ties valid
    u5 = frame([("u5", "a", 1, 5), ("u5", "b", 2, 5), ("u5", "c", 2, 5), ("u5", "d", 3, 5)])
    assert split_interactions(u5, k_core=1)[1].tied_train_valid_share == 1.0
    assert "tied_valid_test_share" in stats.to_dict()


@pytest.mark.parametrize(("threshold", "fires"), [(0.0, True), (0.49, True), (0.5, False), (0.9, False)])
def test_the_tie_warning_fires_above_the_threshold_only(threshold: float, fires: bool) -> None:
    settings = SplitSettings(k_core=1, tie_warning_share=threshold)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, stats = split_interactions(frame(TIES), settings)
    ties = [w for w in caught if issubclass(w.category, TimestampTieWarning)]
    assert len(ties) == int(fires) and (stats.tie_warning is not None) == fires
    if fires:
        assert "50.0% of users" in str(ties[0].message) and f"tie_warning_share={threshold:g}" in stats.tie_warning
    with warnings.catch_warnings(record=True) as caught:  # warn=False: the text only, for the asset's log
        warnings.simplefilter("always")
        _, quiet = split_interactions(frame(TIES), settings, warn=False)
    assert not caught and quiet.tie_warning == stats.tie_warning


def test_no_ties_no_warning_with_the_default_threshold() -> None:
    assert SplitSettings().tie_warning_share == 0.05
    untied = frame([row for row in TIES if row[0] == "u4"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, stats = split_interactions(untied, k_core=1)
    assert (stats.tied_valid_test_share, stats.tied_train_valid_share, stats.tie_warning) == (0.0, 0.0, None)


# (d) min_rating on a source without ratings names the setting


def test_min_rating_on_a_tabular_source_without_a_rating_column_is_refused_at_once(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"`min_rating` = 4 .*'tabular' source has none.*no `rating` column"):
        _tabular(tmp_path / "t", "customer,sku,when", ["u1,A,1"], min_rating=4)
    _tabular(tmp_path / "t", "customer,sku,when", ["u1,A,1"])  # without it the same source is fine


def test_min_rating_on_a_recbole_source_without_ratings_is_refused_before_reading(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "Toy.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\nu1\tA\t1\n")
    (plain / "Toy.item").write_text("item_id:token\ttitle:token_seq\nA\tRed Ball\n")
    spec = SourceSpec(kind="recbole", path=str(plain), min_rating=4)  # only the files can tell
    with pytest.raises(ValueError, match=r"`min_rating` = 4 .*'recbole' source has none.*Toy.inter has no rating"):
        _read(spec)

    unisrec = tmp_path / "unisrec"
    unisrec.mkdir()
    (unisrec / "Toy.text").write_text("item_id:token\ttext:token_seq\nA1\tRed Ball. \n")
    (unisrec / "Toy.item2index").write_text("A1\t0\n")
    (unisrec / "Toy.user2index").write_text("u1\t0\n")
    (unisrec / "Toy.test.inter").write_text("user_id:token\titem_id_list:token_seq\titem_id:token\n0\t0\t0\n")
    with pytest.raises(ValueError, match="min_rating.*UniSRec layout has no rating"):
        _read(SourceSpec(kind="recbole", path=str(unisrec), min_rating=1))

    rated = tmp_path / "rated"
    rated.mkdir()
    (rated / "Toy.inter").write_text("user_id:token\titem_id:token\trating:float\nu1\tA\t5\nu1\tB\t2\n")
    (rated / "Toy.item").write_text("item_id:token\nA\nB\n")
    kept, counts = _read(SourceSpec(kind="recbole", path=str(rated), min_rating=3))
    assert list(kept["item_id"]) == ["A"] and counts.below_min_rating == 1


def test_min_rating_on_a_source_whose_rows_all_lack_a_rating_names_it(tmp_path: Path) -> None:
    spec = _tabular(tmp_path / "t", "customer,sku,when,stars", ["u1,A,1,", "u1,B,2,"], min_rating=1)
    with pytest.raises(ValueError, match=r"`min_rating` = 1 .*has none \(none of its 2 rows has a rating\)"):
        _read(spec)


# (e) bad values are refused with a clear message


@pytest.mark.parametrize("bad", [-1, -0.5, math.nan, math.inf])
def test_bad_min_rating_is_refused(tmp_path: Path, bad: float) -> None:
    with pytest.raises(ValidationError, match=r"min_rating must be a finite rating >= 0"):
        SourceSpec(kind="movielens", path=str(tmp_path), min_rating=bad)


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan])
def test_bad_tie_warning_share_is_refused(bad: float) -> None:
    with pytest.raises(ValidationError, match=r"tie_warning_share must be a share in \[0, 1\]"):
        SplitSettings(tie_warning_share=bad)


def test_the_launchpad_refuses_the_same_values() -> None:
    from assets.ingestion import SourceConfig, SplitConfig

    with pytest.raises(Exception, match="min_rating must be a finite rating >= 0"):
        SourceConfig(kind="movielens", path=".", min_rating=-2)
    with pytest.raises(Exception, match="tie_warning_share must be a share"):
        SplitConfig(tie_warning_share=math.nan)
    assert SourceConfig(kind="movielens", path=".", min_rating=4).build(SourceSpec).min_rating == 4.0
