"""Amazon 2018/2023 and tabular loaders, the source dispatcher and the shared line reader.

Every fixture is written here into tmp_path; expected frames are written out by hand.
(RecBole and MovieLens have their own tests in test_loaders_recbole_movielens.py.)
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from ingestion.amazon import find_amazon_files, iter_amazon_interactions, iter_amazon_items, strip_html
from ingestion.errors import IngestionError
from ingestion.schema import INTERACTION_COLUMNS, ITEM_COLUMNS, conform
from ingestion.sources import (
    SourceFiles,
    SourceSpec,
    describe_source_files,
    iter_interaction_chunks,
    iter_item_chunks,
    source_files,
)
from ingestion.tabular import iter_tabular_interactions, iter_tabular_items
from ingestion.text_files import BadLineBudget, iter_lines

NA = pd.NA


def interactions(rows: list[tuple]) -> pd.DataFrame:
    return conform(pd.DataFrame(rows, columns=list(INTERACTION_COLUMNS)), INTERACTION_COLUMNS)


def items(rows: list[tuple]) -> pd.DataFrame:
    return conform(pd.DataFrame(rows, columns=list(ITEM_COLUMNS)), ITEM_COLUMNS)


def concat(chunks) -> pd.DataFrame:
    return pd.concat(list(chunks), ignore_index=True)


def write_lines(path: Path, lines: list[str]) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    if path.suffix == ".gz":
        with gzip.GzipFile(path, "wb", mtime=0) as handle:
            handle.write(data)
    else:
        path.write_bytes(data)
    return path


REVIEWS_2018 = [
    json.dumps({"overall": 5.0, "verified": True, "reviewTime": "01 2, 2016", "reviewerID": "U1",
                "asin": "B001", "reviewerName": "Ann", "unixReviewTime": 1451692800}),
    json.dumps({"overall": 3.0, "reviewerID": "U2", "asin": "B002", "unixReviewTime": 1451779200}),
    "",  # a blank line carries no record
    json.dumps({"overall": "4", "reviewerID": "U1", "asin": "B002", "unixReviewTime": "1451865600"}),
]

META_2018 = [
    json.dumps({"asin": "B001", "title": "Digital  Caliper &amp; Case",
                "description": ["<p>Stainless <b>steel</b> caliper.</p>", "Reads 0.01 mm.<br>Battery incl."],
                "category": ["Industrial &amp; Scientific", "Test, Measure &amp; Inspect", "Calipers"],
                "brand": " Acme ", "imageURL": ["http://img/s.jpg"], "imageURLHighRes": ["http://img/l.jpg"]}),
    # python-literal line, as in some 2018 meta dumps
    str({"asin": "B002", "title": "Lab Beaker 250 ml", "description": [], "category": [],
         "imageURL": ["http://img/b.jpg"]}),
    json.dumps({"asin": "B003", "title": "Bare item"}),
    json.dumps({"asin": "B001", "title": "repeated record"}),
]


@pytest.mark.parametrize("suffix", [".json.gz", ".json"])
def test_amazon_2018_reviews_and_meta(tmp_path: Path, suffix: str) -> None:
    write_lines(tmp_path / f"Tools{suffix}", REVIEWS_2018)
    write_lines(tmp_path / f"meta_Tools{suffix}", META_2018)
    files = find_amazon_files(tmp_path, None, "2018")  # the only category: auto-detected
    assert files.reviews.name == f"Tools{suffix}"

    got = concat(iter_amazon_interactions(files.reviews, "2018"))
    want = interactions([("U1", "B001", 1451692800, 5.0), ("U2", "B002", 1451779200, 3.0),
                         ("U1", "B002", 1451865600, 4.0)])
    pd.testing.assert_frame_equal(got, want)

    got_items = concat(iter_amazon_items(files.meta, "2018"))
    want_items = items([
        ("B001", "Digital Caliper & Case", "Stainless steel caliper. Reads 0.01 mm. Battery incl.",
         "Industrial & Scientific > Test, Measure & Inspect > Calipers", "Acme", "http://img/l.jpg"),
        ("B002", "Lab Beaker 250 ml", "", "", "", "http://img/b.jpg"),
        ("B003", "Bare item", "", "", "", NA),
    ])
    pd.testing.assert_frame_equal(got_items, want_items)


def test_amazon_2023_reviews_and_meta(tmp_path: Path) -> None:
    write_lines(tmp_path / "All_Beauty.jsonl.gz", [
        json.dumps({"rating": 5.0, "title": "Great", "asin": "C1x", "parent_asin": "C1", "user_id": "AG1",
                    "timestamp": 1588687728923, "verified_purchase": True}),
        json.dumps({"rating": 2, "asin": "C2", "parent_asin": "C2", "user_id": "AG2",
                    "timestamp": 1588615855070}),
    ])
    write_lines(tmp_path / "meta_All_Beauty.jsonl.gz", [
        json.dumps({"main_category": "All Beauty", "title": "Hair Clips", "parent_asin": "C1",
                    "description": ["Strong <i>grip</i>."], "categories": ["Beauty", "Hair Care"],
                    "store": "Clipco", "images": [{"thumb": "t1", "large": "l1", "hi_res": None}]}),
        json.dumps({"main_category": "All Beauty", "title": "Nail Kit", "parent_asin": "C2",
                    "description": [], "categories": [], "store": None, "images": []}),
    ])
    files = find_amazon_files(tmp_path, "All_Beauty", "2023")
    got = concat(iter_amazon_interactions(files.reviews, "2023"))
    # milliseconds become whole seconds; the item id is parent_asin
    want = interactions([("AG1", "C1", 1588687728, 5.0), ("AG2", "C2", 1588615855, 2.0)])
    pd.testing.assert_frame_equal(got, want)
    got_items = concat(iter_amazon_items(files.meta, "2023"))
    want_items = items([("C1", "Hair Clips", "Strong grip.", "Beauty > Hair Care", "Clipco", "l1"),
                        ("C2", "Nail Kit", "", "All Beauty", "", NA)])
    pd.testing.assert_frame_equal(got_items, want_items)


def test_chunks_respect_chunk_rows(tmp_path: Path) -> None:
    lines = [json.dumps({"reviewerID": f"U{i}", "asin": "B1", "overall": 4, "unixReviewTime": 1000 + i})
             for i in range(7)]
    path = write_lines(tmp_path / "Cat.json.gz", lines)
    sizes = [len(c) for c in iter_amazon_interactions(path, "2018", chunk_rows=3)]
    assert sizes == [3, 3, 1]


@pytest.mark.parametrize(
    ("record", "column", "fragment"),
    [
        ({"asin": "B1", "overall": 5, "unixReviewTime": 1}, "reviewerID", "missing required field"),
        ({"reviewerID": "U", "overall": 5, "unixReviewTime": 1}, "asin", "missing required field"),
        ({"reviewerID": "U", "asin": "B1", "overall": "five", "unixReviewTime": 1}, "overall", "number"),
        ({"reviewerID": "U", "asin": "B1", "overall": 5, "unixReviewTime": "yesterday"}, "unixReviewTime",
         "number"),
        ({"reviewerID": "U", "asin": "B1", "overall": float("nan"), "unixReviewTime": 1}, "overall", "finite"),
    ],
)
def test_amazon_bad_field_names_file_line_and_column(tmp_path: Path, record: dict, column: str,
                                                      fragment: str) -> None:
    good = json.dumps({"reviewerID": "U", "asin": "B0", "overall": 5, "unixReviewTime": 1})
    path = write_lines(tmp_path / "Cat.json.gz", [good, good, json.dumps(record)])
    with pytest.raises(IngestionError) as info:
        list(iter_amazon_interactions(path, "2018"))
    error = info.value
    assert (error.path, error.line, error.column) == (str(path), 3, column)
    assert fragment in str(error) and "Cat.json.gz" in str(error) and "line 3" in str(error)


def test_amazon_bad_json_line(tmp_path: Path) -> None:
    good = json.dumps({"asin": "B0", "title": "t"})
    path = write_lines(tmp_path / "meta_Cat.json", [good, '{"asin": "B1", "title": '])
    with pytest.raises(IngestionError, match=r"meta_Cat\.json, line 2: not a JSON object"):
        list(iter_amazon_items(path, "2018"))
    # a JSON array is a record of the wrong type, not a silently-skipped line
    path = write_lines(tmp_path / "meta_Arr.json", [good, "[1, 2]"])
    with pytest.raises(IngestionError, match="line 2: expected a JSON object, got list"):
        list(iter_amazon_items(path, "2018"))


def test_utf8_bom_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "Cat.json"
    path.write_bytes(b"\xef\xbb\xbf" + REVIEWS_2018[0].encode() + b"\n")
    assert list(concat(iter_amazon_interactions(path, "2018"))["user_id"]) == ["U1"]


def test_python_literal_lines_only_accepted_for_2018(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "meta_Cat.jsonl", [str({"parent_asin": "C1", "title": "t"})])
    with pytest.raises(IngestionError, match="line 1"):
        list(iter_amazon_items(path, "2023"))


def test_csv_given_as_amazon_json(tmp_path: Path) -> None:
    path = tmp_path / "Cat.json"
    path.write_text("reviewerID,asin,overall,unixReviewTime\nU1,B1,5,1000\n")
    with pytest.raises(IngestionError) as info:
        list(iter_amazon_interactions(path, "2018"))
    assert info.value.line == 1 and info.value.path == str(path)


def test_truncated_gzip_fails_after_streaming_the_good_part(tmp_path: Path) -> None:
    lines = [json.dumps({"reviewerID": f"U{i}", "asin": f"B{i}", "overall": 4, "unixReviewTime": i})
             for i in range(5000)]
    path = write_lines(tmp_path / "Cat.json.gz", lines)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    chunks = iter_amazon_interactions(path, "2018", chunk_rows=100)
    first = next(chunks)  # streaming: the head of the file is usable before the damage is reached
    assert list(first["user_id"][:2]) == ["U0", "U1"]
    with pytest.raises(IngestionError, match="truncated gzip") as info:
        list(chunks)
    assert info.value.path == str(path) and info.value.line is not None and info.value.line > 100


def test_not_gzip_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "Cat.json.gz"
    path.write_text('{"reviewerID": "U"}\n')  # plain text under a .gz name
    with pytest.raises(IngestionError, match="gzip") as info:
        list(iter_amazon_interactions(path, "2018"))
    assert info.value.path == str(path)
    with pytest.raises(IngestionError, match="file not found"):
        list(iter_amazon_interactions(tmp_path / "nope.json.gz", "2018"))


def test_find_amazon_files_errors(tmp_path: Path) -> None:
    with pytest.raises(IngestionError, match="source folder not found"):
        find_amazon_files(tmp_path / "absent", None, "2018")
    write_lines(tmp_path / "A.json.gz", [])
    with pytest.raises(IngestionError, match="candidates .*: none"):
        find_amazon_files(tmp_path, None, "2018")  # reviews without meta_ file
    with pytest.raises(IngestionError, match=r"missing Amazon 2018 file meta_A\.json\.gz"):
        find_amazon_files(tmp_path, "A", "2018")
    write_lines(tmp_path / "meta_A.json.gz", [])
    write_lines(tmp_path / "B.json", [])
    write_lines(tmp_path / "meta_B.json", [])
    with pytest.raises(IngestionError, match="candidates .*: A, B; set `dataset`"):
        find_amazon_files(tmp_path, None, "2018")
    assert find_amazon_files(tmp_path, "B", "2018").meta == tmp_path / "meta_B.json"


def test_bad_line_budget_skips_then_fails(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = [json.dumps({"reviewerID": f"U{i}", "asin": "B", "overall": 4, "unixReviewTime": i}) for i in range(4)]
    lines = [good[0], "not json", good[1], json.dumps({"asin": "B"}), good[2], good[3]]
    path = write_lines(tmp_path / "Cat.json", lines)
    budget = BadLineBudget(2)
    got = concat(iter_amazon_interactions(path, "2018", on_bad_line=budget))
    assert list(got["user_id"]) == ["U0", "U1", "U2", "U3"]
    assert [e.line for e in budget.skipped] == [2, 4]
    assert sum("skipped malformed line" in r.message for r in caplog.records) == 2
    with pytest.raises(IngestionError, match="more than max_bad_lines=1") as info:
        list(iter_amazon_interactions(path, "2018", on_bad_line=BadLineBudget(1)))
    assert info.value.line == 4
    with pytest.raises(ValueError, match="max_bad_lines"):
        BadLineBudget(-1)


def test_strip_html_and_iter_lines(tmp_path: Path) -> None:
    # a non-breaking space is whitespace too
    assert strip_html("<div>A&nbsp;b<script>x()</script> <style>p{}</style>c &lt;3</div>") == "A b c <3"
    assert strip_html("  plain\n text ") == "plain text"
    path = tmp_path / "latin.txt"
    path.write_bytes("caf\xe9\n".encode("latin-1"))
    assert list(iter_lines(path, encoding="latin-1")) == [(1, "café")]
    with pytest.raises(IngestionError, match="not utf-8 text") as info:
        list(iter_lines(path))
    assert info.value.line == 1


# ---------------------------------------------------------------- tabular

MAPPING = {"user_id": "customer", "item_id": "sku", "timestamp": "when", "rating": "stars"}
ITEM_MAPPING = {"item_id": "sku", "title": "name", "categories": "cats", "image_url": "img"}


def test_tabular_csv_with_mapping_and_iso_time(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("sku,customer,extra,when,stars\n"
                    "007,c1,x,2020-01-01T00:00:10Z,5\n"
                    "8,c2,y,2020-01-01 00:01:00,\n"  # naive times are UTC; an empty rating is NaN
                    "9,c1,z,2020-01-02T01:00:00+01:00,3.5\n")
    got = concat(iter_tabular_interactions(path, MAPPING, "iso", chunk_rows=2))
    want = interactions([("c1", "007", 1577836810, 5.0), ("c2", "8", 1577836860, np.nan),
                         ("c1", "9", 1577923200, 3.5)])
    pd.testing.assert_frame_equal(got, want)


def test_tabular_without_time_or_rating_uses_row_order(tmp_path: Path) -> None:
    path = tmp_path / "clicks.tsv"
    path.write_text("u\ti\nA\tx\nB\ty\nA\tz\n")
    got = concat(iter_tabular_interactions(path, {"user_id": "u", "item_id": "i"}, chunk_rows=2))
    pd.testing.assert_frame_equal(got, interactions([("A", "x", 0, np.nan), ("B", "y", 1, np.nan),
                                                     ("A", "z", 2, np.nan)]))


def test_tabular_parquet_ms_and_items(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pq.write_table(pa.table({"customer": ["c1", "c2"], "sku": [7, 8], "when": [1_600_000_000_999, 1_600_000_001_000],
                             "stars": [4.0, None]}), path, row_group_size=1)
    got = concat(iter_tabular_interactions(path, MAPPING, "unix_ms"))
    pd.testing.assert_frame_equal(got, interactions([("c1", "7", 1600000000, 4.0), ("c2", "8", 1600000001, np.nan)]))

    item_path = tmp_path / "items.parquet"
    pq.write_table(pa.table({"sku": ["7", "8", "7"], "name": ["Drill", None, "dup"],
                             "cats": [["Tools", "Power Tools"], [], ["x"]], "img": ["http://i/7.jpg", "", "z"]}),
                   item_path)
    got_items = concat(iter_tabular_items(item_path, ITEM_MAPPING))
    pd.testing.assert_frame_equal(got_items, items([("7", "Drill", "", "Tools > Power Tools", "", "http://i/7.jpg"),
                                                    ("8", "", "", "", "", NA)]))


def test_tabular_unknown_column_names_it_and_the_existing_ones(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("sku,customer\n1,a\n")
    with pytest.raises(IngestionError) as info:
        list(iter_tabular_interactions(path, {"user_id": "user", "item_id": "sku"}))
    assert info.value.column == "user" and "['sku', 'customer']" in str(info.value)
    with pytest.raises(IngestionError, match="unknown canonical column 'price'"):
        list(iter_tabular_interactions(path, {"user_id": "customer", "item_id": "sku", "price": "sku"}))
    with pytest.raises(IngestionError, match="must map 'item_id'"):
        list(iter_tabular_interactions(path, {"user_id": "customer"}))


@pytest.mark.parametrize(
    ("row", "column", "fragment"),
    [("a,,1,2", "sku", "missing id"), ("a,1,soon,2", "when", "unix_s timestamp"),
     ("a,1,1,good", "stars", "expected a number")],
)
def test_tabular_bad_values_name_file_line_column(tmp_path: Path, row: str, column: str, fragment: str) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("customer,sku,when,stars\nb,2,5,4\nc,3,6,1\n" + row + "\n")
    with pytest.raises(IngestionError) as info:
        list(iter_tabular_interactions(path, MAPPING, chunk_rows=2))
    assert (info.value.path, info.value.line, info.value.column) == (str(path), 4, column)
    assert fragment in str(info.value)


def test_tabular_budget_drops_bad_rows_and_wrong_suffix(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("customer,sku,when,stars\nb,2,5,4\nc,3,late,1\nd,4,7,2\n")
    budget = BadLineBudget(1)
    got = concat(iter_tabular_interactions(path, MAPPING, on_bad_line=budget))
    assert list(got["user_id"]) == ["b", "d"] and [e.line for e in budget.skipped] == [3]
    other = tmp_path / "orders.xlsx"
    other.write_text("x")
    with pytest.raises(IngestionError, match="unsupported table file type"):
        list(iter_tabular_interactions(other, MAPPING))
    broken = tmp_path / "broken.parquet"
    broken.write_text("customer,sku\n")
    with pytest.raises(IngestionError, match="cannot read the parquet header"):
        list(iter_tabular_interactions(broken, MAPPING))


# ---------------------------------------------------------------- dispatcher


def test_sources_dispatch_amazon_and_tabular(tmp_path: Path) -> None:
    write_lines(tmp_path / "Tools.json.gz", REVIEWS_2018)
    write_lines(tmp_path / "meta_Tools.json.gz", META_2018)
    spec = SourceSpec(kind="amazon2018", path=str(tmp_path))
    assert len(concat(iter_interaction_chunks(spec))) == 3
    assert list(concat(iter_item_chunks(spec))["item_id"]) == ["B001", "B002", "B003"]
    described = describe_source_files(spec)
    assert [Path(f.path).name for f in described.files] == ["Tools.json.gz", "meta_Tools.json.gz"]
    assert described.files[0].size_bytes == (tmp_path / "Tools.json.gz").stat().st_size
    before = described.fingerprint
    write_lines(tmp_path / "Tools.json.gz", REVIEWS_2018[:2])
    assert describe_source_files(spec).fingerprint != before
    metadata = json.loads(json.dumps(describe_source_files(spec).to_metadata()))  # JSON-ready
    assert metadata["files"][1]["sha256"] == described.files[1].sha256
    assert metadata["total_bytes"] == sum(p.stat().st_size for p in tmp_path.glob("*Tools.json.gz"))
    with pytest.raises(IngestionError, match="file not found"):
        SourceFiles.of("tabular", [tmp_path / "absent.csv"])

    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "inter.csv").write_text("customer,sku,when,stars\nb,2,5,4\n")
    (tmp_path / "t" / "items.csv").write_text("sku,name,cats,img\n2,Saw,Tools,\n")
    tab = SourceSpec(kind="tabular", path=str(tmp_path / "t"), interactions_file="inter.csv",
                     items_file="items.csv", interaction_columns=MAPPING, item_columns=ITEM_MAPPING)
    pd.testing.assert_frame_equal(concat(iter_interaction_chunks(tab)), interactions([("b", "2", 5, 4.0)]))
    pd.testing.assert_frame_equal(concat(iter_item_chunks(tab)), items([("2", "Saw", "", "Tools", "", NA)]))


def test_source_spec_rejects_bad_config(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"unknown source kind 'csv'; registered: \[.*'tabular'"):
        SourceSpec(kind="csv", path=".")
    with pytest.raises(ValidationError, match="items_file"):
        SourceSpec(kind="tabular", path=".", interactions_file="a.csv", interaction_columns=MAPPING)
    with pytest.raises(ValidationError, match="user_id and item_id"):
        SourceSpec(kind="tabular", path=".", interactions_file="a.csv", items_file="b.csv",
                   interaction_columns={"user_id": "u"}, item_columns={"item_id": "i"})
    with pytest.raises(ValidationError, match="max_bad_lines"):
        SourceSpec(kind="amazon2018", path=".", max_bad_lines=-1)
    with pytest.raises(ValidationError, match="typo"):
        SourceSpec(kind="amazon2018", path=".", typo=1)
    tab = SourceSpec(kind="tabular", path=str(tmp_path), interactions_file="a.csv", items_file="b.csv",
                     interaction_columns=MAPPING, item_columns=ITEM_MAPPING)
    with pytest.raises(IngestionError, match="file not found"):
        source_files(tab)
    with pytest.raises(IngestionError, match="source folder not found"):
        list(iter_interaction_chunks(SourceSpec(kind="amazon2023", path=str(tmp_path / "none"))))


def test_sources_budget_from_spec(tmp_path: Path) -> None:
    lines = [*REVIEWS_2018, "garbage"]
    write_lines(tmp_path / "Tools.json", lines)
    write_lines(tmp_path / "meta_Tools.json", META_2018)
    with pytest.raises(IngestionError, match="line 5"):
        list(iter_interaction_chunks(SourceSpec(kind="amazon2018", path=str(tmp_path))))
    tolerant = SourceSpec(kind="amazon2018", path=str(tmp_path), max_bad_lines=1)
    assert len(concat(iter_interaction_chunks(tolerant))) == 3


def test_sources_demo_generates_once_and_reads_through_amazon_2018(tmp_path: Path) -> None:
    spec = SourceSpec(kind="demo", path=str(tmp_path / "demo"), seed=3, n_users=80)
    paths = source_files(spec)  # generates the files on first use
    assert [p.name for p in paths] == ["Demo.json.gz", "meta_Demo.json.gz"]
    stamp = [p.stat().st_mtime_ns for p in paths]
    inter = concat(iter_interaction_chunks(spec, chunk_rows=500))
    item_frame = concat(iter_item_chunks(spec))
    assert [p.stat().st_mtime_ns for p in paths] == stamp  # present and current: not rewritten
    assert inter["user_id"].nunique() == 80
    assert set(inter["item_id"]) <= set(item_frame["item_id"])
    assert item_frame["item_id"].is_unique and (item_frame["title"].str.len() > 0).all()
    # another seed makes other data in the same folder
    other = concat(iter_interaction_chunks(spec.model_copy(update={"seed": 4})))
    assert not other.equals(inter)


def test_sources_dispatch_movielens_and_recbole(tmp_path: Path) -> None:
    ml = tmp_path / "ml-100k"
    ml.mkdir()
    (ml / "u.data").write_text("1\t10\t4\t881250949\n2\t10\t3\t891717742\n")
    flags = ["0"] * 19
    flags[1] = "1"  # Action
    (ml / "u.item").write_bytes(("10|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(flags) + "\n")
                                .encode("latin-1"))
    spec = SourceSpec(kind="movielens", path=str(ml))
    assert [p.name for p in source_files(spec)] == ["u.data", "u.item"]
    pd.testing.assert_frame_equal(concat(iter_interaction_chunks(spec)),
                                  interactions([("1", "10", 881250949, 4.0), ("2", "10", 891717742, 3.0)]))
    assert list(concat(iter_item_chunks(spec))["title"]) == ["Toy Story (1995)"]

    rb = tmp_path / "rb"
    rb.mkdir()
    (rb / "Toy.text").write_text("item_id:token\ttext:token_seq\nA1\tRed Ball. Toys Balls. Acme. \n"
                                 "A2\tBlue Cube. Toys Blocks. Acme. \n")
    (rb / "Toy.item2index").write_text("A1\t0\nA2\t1\n")
    (rb / "Toy.user2index").write_text("u1\t0\n")
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    (rb / "Toy.train.inter").write_text(header)
    (rb / "Toy.valid.inter").write_text(header + "0\t1\t0\n")
    (rb / "Toy.test.inter").write_text(header + "0\t1 0\t1\n")
    spec = SourceSpec(kind="recbole", path=str(rb))
    got = concat(iter_interaction_chunks(spec))
    assert list(got["user_id"]) == ["u1"] * 3 and list(got["item_id"]) == ["A2", "A1", "A2"]
    assert got["timestamp"].is_monotonic_increasing
    assert set(concat(iter_item_chunks(spec))["item_id"]) == {"A1", "A2"}
    assert {p.name for p in source_files(spec)} >= {"Toy.text", "Toy.test.inter"}


@pytest.mark.parametrize("chunk_rows", [1, 2, 5])
def test_output_does_not_depend_on_chunk_size(tmp_path: Path, chunk_rows: int) -> None:
    meta = write_lines(tmp_path / "meta_Tools.json", META_2018)
    whole = concat(iter_amazon_items(meta, "2018", chunk_rows=1000))
    chunked = list(iter_amazon_items(meta, "2018", chunk_rows=chunk_rows))
    assert all(len(c) <= chunk_rows for c in chunked)
    pd.testing.assert_frame_equal(concat(chunked), whole)  # repeats are dropped across chunk borders too

    table = tmp_path / "t.csv"
    table.write_text("customer,sku,stars\n" + "".join(f"u{i % 3},i{i % 4},{i % 5}\n" for i in range(11)))
    mapping = {"user_id": "customer", "item_id": "sku", "rating": "stars"}
    whole = concat(iter_tabular_interactions(table, mapping, chunk_rows=1000))
    pd.testing.assert_frame_equal(concat(iter_tabular_interactions(table, mapping, chunk_rows=chunk_rows)), whole)
    assert list(whole["timestamp"]) == list(range(11))  # row order continues across chunks


def test_chunk_rows_must_be_positive(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "Cat.json", REVIEWS_2018)
    with pytest.raises(ValueError, match="chunk_rows"):
        list(iter_amazon_interactions(path, "2018", chunk_rows=0))
