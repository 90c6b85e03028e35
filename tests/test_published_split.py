"""The pipeline's split is exactly the published UniSRec split: every user's valid and test target and the
history before each (and the whole train prefix), on a synthetic fixture that reproduces what rebuilding from
the test rows alone lost. The same check on the real Scientific data is a benchmark, not a test (tests run on
data the project makes): ``python -m bench.published_split``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bench.published_split import compare, main, pipeline_split, read_published, summary
from ingestion.recbole import RecBoleFiles, find_recbole_files, iter_recbole_interactions
from ingestion.splits import SplitSettings, split_interactions

CAP = 3  # the fixture's history cap (50 in the published data)
HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
#: item indexes per user index; the comments say which discrepancy each reproduces
SEQUENCES = {
    0: [0, 1, 2, 3, 4, 5, 6, 7, 8],  # longer than the cap + 1: its test row lacks the first 5 items
    1: [2, 5, 1],  # the shortest a user can be: no train row, a 1-item valid history
    2: [3, 3, 4, 3, 4],  # repeats: consecutive, valid/test targets the user had before; the test row lacks 1
    3: [6, 6, 6, 6, 7, 6, 6, 6, 8, 0, 1],  # capped train rows with equal histories and different targets
    4: [1, 2, 3, 4],  # exactly cap + 1: the test history is capped but nothing is lost
    5: [4, 3, 2, 1, 0],  # cap + 2: the test row lacks exactly the first item
}

#: users whose test row lacks their first items (and how many): those longer than cap + 1
LOST = {"A0": 5, "A2": 1, "A3": 7, "A5": 1}


def unisrec_rows(sequences: dict[int, list[int]], cap: int) -> dict[str, list[str]]:
    """The split files' rows as UniSRec's preprocessing writes them (train rows latest target first)."""
    rows: dict[str, list[str]] = {"train": [], "valid": [], "test": []}

    def row(user: int, history: list[int], target: int) -> str:
        return f"{user}\t{' '.join(map(str, history[-cap:]))}\t{target}\n"

    for user, s in sequences.items():
        train = s[:-2]
        rows["train"].extend(row(user, train[:j], train[j]) for j in range(len(train) - 1, 0, -1))
        rows["valid"].append(row(user, train, s[-2]))
        rows["test"].append(row(user, s[:-1], s[-1]))
    return rows


def write_unisrec(folder: Path, sequences: dict[int, list[int]], cap: int, stem: str = "Tiny") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    n_items = 1 + max(i for s in sequences.values() for i in s)
    # index files list the ids in another order than their indexes
    (folder / f"{stem}.user2index").write_text("".join(f"A{u}\t{u}\n" for u in sorted(sequences, reverse=True)))
    (folder / f"{stem}.item2index").write_text("".join(f"B{i}\t{i}\n" for i in range(n_items)))
    (folder / f"{stem}.text").write_text("item_id:token\ttext:token_seq\n"
                                         + "".join(f"B{i}\tThing {i}. Lab Tools. Acme. \n" for i in range(n_items)))
    for split, rows in unisrec_rows(sequences, cap).items():
        (folder / f"{stem}.{split}.inter").write_text(HEADER + "".join(rows))
    return folder


def _ids(sequences: dict[int, list[int]]) -> dict[str, list[str]]:
    return {f"A{u}": [f"B{i}" for i in s] for u, s in sequences.items()}


def _per_user(frame: pd.DataFrame) -> dict[str, list[str]]:
    ordered = frame.sort_values(["user_id", "timestamp"], kind="stable")
    return {str(u): list(g["item_id"]) for u, g in ordered.groupby("user_id")}


@pytest.fixture
def published(tmp_path: Path) -> Path:
    return write_unisrec(tmp_path / "published", SEQUENCES, CAP)


def test_the_fixture_reproduces_the_loss_of_the_test_rows(published: Path) -> None:
    """Rebuilding from the test rows alone (the old loader) loses the first items of users longer than cap + 1."""
    files = find_recbole_files(published, None)
    only_test = RecBoleFiles(inter={"test": files.inter["test"]}, text=files.text, item2index=files.item2index,
                             user2index=files.user2index)
    lost = {u: s[: len(s) - CAP - 1] for u, s in _ids(SEQUENCES).items() if len(s) > CAP + 1}
    assert {u: len(items) for u, items in lost.items()} == LOST
    got = _per_user(pd.concat(iter_recbole_interactions(only_test)))
    assert got == {u: s[len(lost.get(u, [])):] for u, s in _ids(SEQUENCES).items()}


def test_the_loader_rebuilds_every_sequence_from_the_train_rows(published: Path) -> None:
    got = pd.concat(iter_recbole_interactions(find_recbole_files(published, None)), ignore_index=True)
    assert _per_user(got) == _ids(SEQUENCES)  # the lost items, the repeats and the tied windows included
    assert len(got) == sum(map(len, SEQUENCES.values())) == 37
    # the published order is the order: one synthetic day apart, no ties the split would have to break
    steps = got.groupby("user_id")["timestamp"].diff().dropna()
    assert steps.eq(86_400).all()


def test_the_split_is_the_published_one(published: Path) -> None:
    splits = pipeline_split(published)
    result = compare(splits, read_published(published), cap=CAP)
    assert result.ok, summary(result)
    assert result.checked["valid history"] == result.matched["train prefix"] == len(SEQUENCES)
    assert result.train_rows == result.train_rows_matched == sum(max(len(s) - 3, 0) for s in SEQUENCES.values())
    # and spelled out against the fixture: targets, histories before each, whole train prefixes
    ours = {u: g.sort_values("position") for u, g in splits.groupby("user_id")}
    for user, s in _ids(SEQUENCES).items():
        g = ours[user]
        assert list(g["split"]) == ["train"] * (len(s) - 2) + ["valid", "test"]
        assert list(g.loc[g["split"] == "train", "item_id"]) == s[:-2]
        assert g.loc[g["split"] == "valid", "item_id"].item() == s[-2]
        assert g.loc[g["split"] == "test", "item_id"].item() == s[-1]
        rows = read_published(published)[user]
        assert rows.valid == (tuple(s[:-2][-CAP:]), s[-2]) and rows.test == (tuple(s[:-1][-CAP:]), s[-1])


def test_the_check_names_what_a_test_rows_only_rebuild_loses(published: Path, monkeypatch, capsys) -> None:
    files = find_recbole_files(published, None)
    only_test = RecBoleFiles(inter={"test": files.inter["test"]}, text=files.text, item2index=files.item2index,
                             user2index=files.user2index)
    raw = pd.concat(iter_recbole_interactions(only_test), ignore_index=True)
    short, _ = split_interactions(raw, SplitSettings(k_core=1, dedup="event"))
    result = compare(short, read_published(published), cap=CAP)
    assert not result.ok
    assert result.matched["valid target"] == result.matched["test target"] == len(SEQUENCES)
    assert result.matched["test history"] == len(SEQUENCES)  # the last CAP items survive in the test rows...
    assert result.matched["valid history"] == len(SEQUENCES) - len(LOST)  # ...but not the valid rows' history
    assert result.matched["train prefix"] == len(SEQUENCES) - len(LOST)
    assert {m.split(": ")[1] for m in result.mismatches} == {f"user {u}" for u in LOST}

    monkeypatch.setattr("bench.published_split.pipeline_split", lambda *_a, **_k: short)
    assert main(["--data", str(published)]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "valid history: user A0" in out and "train prefix: user A3" in out


def test_the_check_passes_on_the_fixture_from_the_command_line(published: Path, capsys) -> None:
    assert main(["--data", str(published)]) == 0
    out = capsys.readouterr().out
    assert "OK: the pipeline's split is exactly the published one" in out
    assert "6 / 6" in out and "37 interactions" in out and "history cap 3" in out
