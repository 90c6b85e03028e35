"""RecBole/UniSRec and MovieLens loaders on tiny hand-written files, their errors, and the real Scientific data."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from ingestion.errors import IngestionError
from ingestion.movielens import find_movielens_files, iter_movielens_interactions, iter_movielens_items
from ingestion.recbole import (
    SYNTHETIC_EPOCH,
    SYNTHETIC_STEP,
    find_recbole_files,
    iter_recbole_interactions,
    iter_recbole_items,
)
from ingestion.schema import INTERACTION_COLUMNS, ITEM_COLUMNS, conform

DAY = 86_400
T0 = 1_000_000_000
INTER_HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"


def _interactions(rows: list[tuple]) -> pd.DataFrame:
    return conform(pd.DataFrame(rows, columns=list(INTERACTION_COLUMNS)), INTERACTION_COLUMNS)


def _items(rows: list[tuple]) -> pd.DataFrame:
    return conform(pd.DataFrame(rows, columns=list(ITEM_COLUMNS)), ITEM_COLUMNS)


def _concat(chunks) -> pd.DataFrame:
    return pd.concat(list(chunks), ignore_index=True)


# ---------------------------------------------------------------- RecBole / UniSRec


@pytest.fixture
def tiny_recbole(tmp_path: Path) -> Path:
    (tmp_path / "Tiny.item2index").write_text("I_a\t0\nI_b\t1\nI_c\t2\nI_d\t3\n")
    (tmp_path / "Tiny.user2index").write_text("U_x\t0\nU_y\t1\nU_z\t2\nU_w\t3\n")
    (tmp_path / "Tiny.text").write_text(
        "item_id:token\ttext:token_seq\n"
        "I_a\tRed Mug 12 oz. Home Kitchen Mugs. Acme. \n"
        "I_b\tNo. 2 Pencils. Office Writing. Graphix. \n"
        "I_c\tPlain title only\n"
        "I_d\tLab Bottle. . Continental. \n"
    )
    # U_x has every row; U_y only a test row; U_z only a valid row; U_w only train rows
    (tmp_path / "Tiny.test.inter").write_text(INTER_HEADER + "0\t0 1 2\t3\n1\t2\t0\n")
    (tmp_path / "Tiny.valid.inter").write_text(INTER_HEADER + "0\t0 1\t2\n2\t3 1\t0\n")
    (tmp_path / "Tiny.train.inter").write_text(INTER_HEADER + "0\t0\t1\n3\t1\t2\n3\t1 2\t0\n2\t3\t1\n")
    return tmp_path


def test_recbole_interactions_rebuild_full_sequences(tiny_recbole: Path) -> None:
    files = find_recbole_files(tiny_recbole, None)
    got = _concat(iter_recbole_interactions(files))
    nan = math.nan
    expected = _interactions([
        ("U_x", "I_a", T0, nan), ("U_x", "I_b", T0 + DAY, nan), ("U_x", "I_c", T0 + 2 * DAY, nan),
        ("U_x", "I_d", T0 + 3 * DAY, nan),
        ("U_y", "I_c", T0, nan), ("U_y", "I_a", T0 + DAY, nan),
        ("U_z", "I_d", T0, nan), ("U_z", "I_b", T0 + DAY, nan), ("U_z", "I_a", T0 + 2 * DAY, nan),
        ("U_w", "I_b", T0, nan), ("U_w", "I_c", T0 + DAY, nan), ("U_w", "I_a", T0 + 2 * DAY, nan),
    ])
    pd.testing.assert_frame_equal(got, expected)
    assert (SYNTHETIC_EPOCH, SYNTHETIC_STEP) == (T0, DAY)


def test_recbole_chunks_respect_chunk_rows(tiny_recbole: Path) -> None:
    files = find_recbole_files(tiny_recbole, "Tiny")
    chunks = list(iter_recbole_interactions(files, chunk_rows=5))
    assert [len(c) for c in chunks] == [5, 5, 2]
    assert all(list(c.dtypes.astype(str)) == ["string", "string", "int64", "float64"] for c in chunks)
    pd.testing.assert_frame_equal(_concat(chunks), _concat(iter_recbole_interactions(files)))


def test_recbole_items_split_title_from_the_rest(tiny_recbole: Path) -> None:
    got = _concat(iter_recbole_items(find_recbole_files(tiny_recbole, None), chunk_rows=3))
    expected = _items([
        ("I_a", "Red Mug 12 oz", "Home Kitchen Mugs. Acme.", "", "", None),
        # the documented heuristic splits at the first ". ", even inside a title
        ("I_b", "No", "2 Pencils. Office Writing. Graphix.", "", "", None),
        ("I_c", "Plain title only", "", "", "", None),
        ("I_d", "Lab Bottle", ". Continental.", "", "", None),
    ])
    pd.testing.assert_frame_equal(got, expected)
    assert got["image_url"].isna().all()


def test_recbole_lists_the_files_it_reads(tiny_recbole: Path) -> None:
    files = find_recbole_files(tiny_recbole, None)
    assert [p.name for p in files.all()] == ["Tiny.text", "Tiny.item2index", "Tiny.user2index",
                                             "Tiny.test.inter", "Tiny.valid.inter", "Tiny.train.inter"]


def test_recbole_works_with_only_a_test_split(tiny_recbole: Path) -> None:
    (tiny_recbole / "Tiny.valid.inter").unlink()
    (tiny_recbole / "Tiny.train.inter").unlink()
    got = _concat(iter_recbole_interactions(find_recbole_files(tiny_recbole, None)))
    assert got["user_id"].tolist() == ["U_x"] * 4 + ["U_y"] * 2


def _rebuilt(folder: Path) -> dict[str, list[str]]:
    got = _concat(iter_recbole_interactions(find_recbole_files(folder, None)))
    assert got.groupby("user_id")["timestamp"].diff().dropna().eq(DAY).all()
    return {str(u): list(g["item_id"]) for u, g in got.groupby("user_id", sort=False)}


def _write_inters(folder: Path, train: str, valid: str, test: str) -> None:
    for split, rows in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"Tiny.{split}.inter").write_text(INTER_HEADER + rows)


def test_recbole_rebuilds_what_the_capped_test_row_lacks_from_the_train_rows(tiny_recbole: Path) -> None:
    # histories capped at 2 items: U_x's sequence a b c d a b c has 7 items, its test row only the last 3
    _write_inters(tiny_recbole, "0\tc d\ta\n0\tb c\td\n0\ta b\tc\n0\ta\tb\n".translate(_INDEX),
                  "0\td a\tb\n".translate(_INDEX), "0\ta b\tc\n".translate(_INDEX))
    assert _rebuilt(tiny_recbole) == {"U_x": ["I_a", "I_b", "I_c", "I_d", "I_a", "I_b", "I_c"]}


def test_recbole_order_comes_from_the_rows_not_the_file_order(tiny_recbole: Path) -> None:
    # the train rows of the test above, earliest first instead of the published latest first
    _write_inters(tiny_recbole, "0\ta\tb\n0\ta b\tc\n0\tb c\td\n0\tc d\ta\n".translate(_INDEX),
                  "0\td a\tb\n".translate(_INDEX), "0\ta b\tc\n".translate(_INDEX))
    assert _rebuilt(tiny_recbole) == {"U_x": ["I_a", "I_b", "I_c", "I_d", "I_a", "I_b", "I_c"]}


def test_recbole_capped_rows_with_equal_histories_follow_the_published_file_order(tiny_recbole: Path) -> None:
    # a a a b a a c d (cap 2): the windows "a a" come before a, b and c; the file lists the latest first
    train = "0\ta a\tc\n0\tb a\ta\n0\ta b\ta\n0\ta a\tb\n0\ta a\ta\n0\ta\ta\n"
    _write_inters(tiny_recbole, train.translate(_INDEX), "0\ta c\td\n".translate(_INDEX),
                  "0\tc d\ta\n".translate(_INDEX))
    assert "".join(i[-1] for i in _rebuilt(tiny_recbole)["U_x"]) == "aaabaacda"


@pytest.mark.parametrize("train, valid, test, file_name, line, column", [
    # the valid row's history is not the train prefix
    ("0\ta\tb\n", "0\tb\tc\n", "0\ta b c\td\n", "Tiny.valid.inter", 2, "item_id_list"),
    # an uncapped history (cap 3 here) that is only the end of the sequence
    ("0\ta b\tc\n0\ta\tb\n", "0\ta b c\td\n", "0\tc d\ta\n", "Tiny.test.inter", 2, "item_id_list"),
    # a train row missing: nothing continues a b
    ("0\ta b c\td\n0\ta\tb\n", "0\tb c d\ta\n", "0\tc d a\tb\n", "Tiny.train.inter", 2, "item_id_list"),
    # a second test row for U_x
    ("0\ta\tb\n", "0\ta b\tc\n", "0\ta b c\td\n0\ta b c\ta\n", "Tiny.test.inter", 3, "user_id"),
])
def test_recbole_rows_that_contradict_each_other_name_file_and_line(tiny_recbole: Path, train: str, valid: str,
                                                                    test: str, file_name: str, line: int,
                                                                    column: str) -> None:
    _write_inters(tiny_recbole, train.translate(_INDEX), valid.translate(_INDEX), test.translate(_INDEX))
    with pytest.raises(IngestionError) as info:
        _rebuilt(tiny_recbole)
    assert info.value.path is not None and info.value.path.endswith(file_name), str(info.value)
    assert (info.value.line, info.value.column) == (line, column), str(info.value)
    assert "U_x" in str(info.value)


_INDEX = str.maketrans("abcd", "0123")  # item letters of the tests above -> Tiny's item indexes


@pytest.mark.parametrize("file_name, content, line, column", [
    ("Tiny.test.inter", INTER_HEADER + "0\t0 1 2\t3\n1\t2 9\t0\n", 3, "item_id_list"),
    ("Tiny.test.inter", INTER_HEADER + "7\t0 1 2\t3\n", 2, "user_id"),
    ("Tiny.test.inter", INTER_HEADER + "0\t0 1 2\t3\n1\t2\n", 3, None),
    ("Tiny.test.inter", "user\thistory\tnext\n0\t0\t1\n", 1, None),
    ("Tiny.item2index", "I_a\t0\nI_b 1\n", 2, None),
    ("Tiny.item2index", "I_a\t0\nI_b\tone\n", 2, None),
    ("Tiny.user2index", "U_x\t0\nU_y\t0\n", 2, None),
])
def test_recbole_malformed_lines_name_file_and_line(tiny_recbole: Path, file_name: str, content: str,
                                                     line: int, column: str | None) -> None:
    (tiny_recbole / file_name).write_text(content)
    with pytest.raises(IngestionError) as info:
        _concat(iter_recbole_interactions(find_recbole_files(tiny_recbole, None)))
    assert info.value.path is not None and info.value.path.endswith(file_name)
    assert info.value.line == line
    assert info.value.column == column
    assert file_name in str(info.value) and f"line {line}" in str(info.value)


def test_recbole_text_file_errors(tiny_recbole: Path) -> None:
    (tiny_recbole / "Tiny.text").write_text("item_id:token\ttext:token_seq\nI_a\n")
    with pytest.raises(IngestionError, match=r"Tiny\.text, line 2: expected 2 tab-separated fields"):
        _concat(iter_recbole_items(find_recbole_files(tiny_recbole, None)))
    (tiny_recbole / "Tiny.text").write_text("")
    with pytest.raises(IngestionError, match="empty file"):
        _concat(iter_recbole_items(find_recbole_files(tiny_recbole, None)))


def test_recbole_missing_or_ambiguous_files(tiny_recbole: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    (tiny_recbole / "Tiny.user2index").unlink()
    with pytest.raises(IngestionError, match=r"missing files \['Tiny.user2index'\]"):
        find_recbole_files(tiny_recbole, None)
    (tiny_recbole / "Other.text").write_text("item_id:token\ttext:token_seq\n")
    with pytest.raises(IngestionError, match="several"):
        find_recbole_files(tiny_recbole, None)
    with pytest.raises(IngestionError, match="Nope"):
        find_recbole_files(tiny_recbole, "Nope")
    with pytest.raises(IngestionError, match="folder not found"):
        find_recbole_files(tmp_path_factory.mktemp("x") / "absent", None)


@pytest.fixture
def plain_recbole(tmp_path: Path) -> Path:
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "ml.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                     "1\t1193\t5\t978300760\n1\t661\t3\t978302109.0\n2\t1193\t4\t978298413\n")
    (folder / "ml.item").write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tgenre:token_seq\n"
                                    "1193\tOne Flew Over the Cuckoo's Nest\t1975\tDrama\n"
                                    "661\tJames and the  Giant Peach\t1996\tAnimation Children's Musical\n")
    return folder


def test_plain_recbole_layout(plain_recbole: Path) -> None:
    files = find_recbole_files(plain_recbole, None)
    assert [p.name for p in files.all()] == ["ml.item", "ml.inter"]
    pd.testing.assert_frame_equal(_concat(iter_recbole_interactions(files)), _interactions([
        ("1", "1193", 978300760, 5.0), ("1", "661", 978302109, 3.0), ("2", "1193", 978298413, 4.0)]))
    pd.testing.assert_frame_equal(_concat(iter_recbole_items(files)), _items([
        ("1193", "One Flew Over the Cuckoo's Nest", "", "Drama", "", None),
        ("661", "James and the Giant Peach", "", "Animation Children's Musical", "", None)]))


def test_plain_recbole_without_time_or_rating_keeps_file_order(plain_recbole: Path) -> None:
    (plain_recbole / "ml.inter").write_text("user_id:token\titem_id:token\nu1\ti1\nu2\ti1\nu1\ti2\n")
    got = _concat(iter_recbole_interactions(find_recbole_files(plain_recbole, "ml")))
    pd.testing.assert_frame_equal(got, _interactions([
        ("u1", "i1", T0, math.nan), ("u2", "i1", T0, math.nan), ("u1", "i2", T0 + DAY, math.nan)]))


def test_plain_recbole_errors(plain_recbole: Path) -> None:
    (plain_recbole / "ml.inter").write_text("user_id:token\titem_id:token\trating:float\n1\t2\t4\n1\t3\tgood\n")
    with pytest.raises(IngestionError, match=r"ml\.inter, line 3, column 'rating': rating 'good' is not a number"):
        _concat(iter_recbole_interactions(find_recbole_files(plain_recbole, None)))
    (plain_recbole / "ml.inter").write_text("user:token\titem:token\n1\t2\n")
    with pytest.raises(IngestionError, match=r"line 1: header lacks columns \['user_id', 'item_id'\]"):
        _concat(iter_recbole_interactions(find_recbole_files(plain_recbole, None)))
    (plain_recbole / "ml.item").unlink()
    with pytest.raises(IngestionError, match=r"missing files \['ml.item'\]"):
        find_recbole_files(plain_recbole, None)


# ---------------------------------------------------------------- MovieLens


def _flags(*genres: int) -> str:
    return "|".join("1" if i in genres else "0" for i in range(19))


@pytest.fixture
def ml100k(tmp_path: Path) -> Path:
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t4\t891717742\n\n")
    (folder / "u.item").write_bytes(
        ("1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|"
         f"{_flags(3, 4, 5)}\n"
         f"2|Misérables, Les (1995)|01-Jan-1995||http://x|{_flags(0)}\n").encode("latin-1"))
    return folder


@pytest.fixture
def ml1m(tmp_path: Path) -> Path:
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_text("1::1193::5::978300760\n2::661::3::978302109\n")
    (folder / "movies.dat").write_bytes(
        "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Café au lait (1993)::Comedy\n".encode("latin-1"))
    return folder


@pytest.fixture
def ml_latest(tmp_path: Path) -> Path:
    folder = tmp_path / "ml-latest-small"
    folder.mkdir()
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,3.5,964981247\n")
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n"
        '1,"American President, The (1995)",Comedy|Drama|Romance\n'
        "3,Amélie (Fabuleux destin d'Amélie Poulain Le) (2001),Comedy|Romance\n"
        "4,Some Documentary (2015),(no genres listed)\n", encoding="utf-8")
    return folder


def test_ml100k_frames(ml100k: Path) -> None:
    files = find_movielens_files(ml100k)
    assert files.release == "ml-100k"
    pd.testing.assert_frame_equal(_concat(iter_movielens_interactions(files)), _interactions([
        ("196", "242", 881250949, 3.0), ("186", "302", 891717742, 4.0)]))
    pd.testing.assert_frame_equal(_concat(iter_movielens_items(files)), _items([
        ("1", "Toy Story (1995)", "", "Movies > Animation, Children's, Comedy", "", None),
        ("2", "Misérables, Les (1995)", "", "Movies", "", None)]))


def test_ml1m_frames(ml1m: Path) -> None:
    files = find_movielens_files(ml1m)
    assert files.release == "ml-1m"
    pd.testing.assert_frame_equal(_concat(iter_movielens_interactions(files, chunk_rows=1)), _interactions([
        ("1", "1193", 978300760, 5.0), ("2", "661", 978302109, 3.0)]))
    pd.testing.assert_frame_equal(_concat(iter_movielens_items(files)), _items([
        ("1", "Toy Story (1995)", "", "Movies > Animation, Children's, Comedy", "", None),
        ("2", "Café au lait (1993)", "", "Movies > Comedy", "", None)]))


def test_ml_latest_csv_frames(ml_latest: Path) -> None:
    files = find_movielens_files(ml_latest)
    assert files.release == "ml-latest"
    pd.testing.assert_frame_equal(_concat(iter_movielens_interactions(files)), _interactions([
        ("1", "1", 964982703, 4.0), ("1", "3", 964981247, 3.5)]))
    pd.testing.assert_frame_equal(_concat(iter_movielens_items(files)), _items([
        ("1", "American President, The (1995)", "", "Movies > Comedy, Drama, Romance", "", None),
        ("3", "Amélie (Fabuleux destin d'Amélie Poulain Le) (2001)", "", "Movies > Comedy, Romance", "", None),
        ("4", "Some Documentary (2015)", "", "Movies", "", None)]))


@pytest.mark.parametrize("release, file_name, content, line, column", [
    ("ml-100k", "u.data", "196\t242\t3\t881250949\n186\t302\tfour\t891717742\n", 2, "rating"),
    ("ml-100k", "u.data", "196\t242\t3\t8812.5\n", 1, "timestamp"),
    ("ml-100k", "u.data", "196 242 3 881250949\n", 1, None),
    ("ml-100k", "u.item", f"1|Toy Story (1995)|x||y|{_flags(1)}\n2|Short|line\n", 2, None),
    ("ml-100k", "u.item", f"1|Toy Story (1995)|x||y|{_flags(1).replace('1', '2')}\n", 1, "genres"),
    ("ml-1m", "ratings.dat", "1::1193::5::978300760\n\n2::661::3\n", 3, None),
    ("ml-1m", "ratings.dat", "::1193::5::978300760\n", 1, "user_id"),
    ("ml-1m", "ratings.dat", "1::1193::nan::978300760\n", 1, "rating"),
    ("ml-1m", "movies.dat", "1::Toy Story (1995)\n", 1, None),
    ("ml-latest", "ratings.csv", "user,item,rating,time\n1,1,4.0,964982703\n", 1, None),
    ("ml-latest", "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,x,964982703\n", 3,
     "rating"),
    ("ml-latest", "movies.csv", 'movieId,title,genres\n1,"Bad "quote,Comedy\n', 2, None),
])
def test_movielens_malformed_lines_name_file_and_line(ml100k: Path, ml1m: Path, ml_latest: Path, release: str,
                                                       file_name: str, content: str, line: int,
                                                       column: str | None) -> None:
    folder = {"ml-100k": ml100k, "ml-1m": ml1m, "ml-latest": ml_latest}[release]
    (folder / file_name).write_text(content)
    files = find_movielens_files(folder)
    with pytest.raises(IngestionError) as info:
        _concat(iter_movielens_interactions(files))
        _concat(iter_movielens_items(files))
    assert info.value.path is not None and info.value.path.endswith(file_name)
    assert (info.value.line, info.value.column) == (line, column)


def test_movielens_max_bad_lines_skips_up_to_the_budget(ml100k: Path) -> None:
    (ml100k / "u.data").write_text("196\t242\t3\t881250949\nbad line\n186\t302\t4\t891717742\n")
    files = find_movielens_files(ml100k)
    got = _concat(iter_movielens_interactions(files, max_bad_lines=1))
    assert got["user_id"].tolist() == ["196", "186"]
    (ml100k / "u.data").write_text("bad\n196\t242\t3\t881250949\nalso bad\n")
    with pytest.raises(IngestionError, match="max_bad_lines=1") as info:
        _concat(iter_movielens_interactions(files, max_bad_lines=1))
    assert info.value.line == 3


def test_movielens_missing_files(tmp_path: Path) -> None:
    (tmp_path / "README").write_text("nothing here")
    with pytest.raises(IngestionError, match=r"no MovieLens ratings file.*README"):
        find_movielens_files(tmp_path)
    (tmp_path / "u.data").write_text("1\t2\t3\t4\n")
    with pytest.raises(IngestionError, match="u.item not found"):
        find_movielens_files(tmp_path)
    with pytest.raises(IngestionError, match="folder not found"):
        find_movielens_files(tmp_path / "absent")
