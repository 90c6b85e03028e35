"""The real-data benchmark's own logic: user subsamples for the scaling table, the table, BENCHMARKS.md's
generated section. (The benchmark itself runs on Amazon Scientific, outside the test suite.)"""

from pathlib import Path

import pandas as pd
import pytest

from bench.__main__ import BEGIN, END, replace_generated
from bench.scientific import scaling_table, write_subsample
from ingestion.recbole import find_recbole_files, iter_recbole_interactions, iter_recbole_items


def _unisrec(folder: Path) -> None:
    """A UniSRec-layout dataset: 4 users, 6 items (item 5 named by nobody), leave-one-out split files."""
    folder.mkdir()
    (folder / "Scientific.user2index").write_text("".join(f"U{u}\t{u}\n" for u in range(4)))
    (folder / "Scientific.item2index").write_text("".join(f"I{i}\t{i}\n" for i in range(6)))
    (folder / "Scientific.text").write_text("item_id:token\ttext:token_seq\n"
                                            + "".join(f"I{i}\tTitle {i}. Some words. \n" for i in range(6)))
    sequences = {0: [0, 1, 2, 3], 1: [1, 2, 3, 4], 2: [0, 2, 4, 1], 3: [3, 4, 0, 2]}
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    for split, cut in (("train", 2), ("valid", 3), ("test", 4)):
        rows = [f"{u}\t{' '.join(map(str, s[: cut - 1]))}\t{s[cut - 1]}\n" for u, s in sequences.items()]
        (folder / f"Scientific.{split}.inter").write_text(header + "".join(rows))


def test_write_subsample_keeps_a_seeded_fraction_of_users_and_only_their_items(tmp_path):
    _unisrec(tmp_path / "src")
    counts = write_subsample(tmp_path / "src", tmp_path / "half", 0.5, seed=0)
    again = write_subsample(tmp_path / "src", tmp_path / "again", 0.5, seed=0)
    assert counts == again and counts["users"] == 2 and counts["rows"] == 6
    for name in ("Scientific.train.inter", "Scientific.valid.inter", "Scientific.test.inter", "Scientific.text"):
        assert (tmp_path / "half" / name).read_text() == (tmp_path / "again" / name).read_text()

    files = find_recbole_files(tmp_path / "half", "Scientific")
    interactions = pd.concat(iter_recbole_interactions(files))
    items = pd.concat(iter_recbole_items(files))
    assert interactions["user_id"].nunique() == 2
    assert set(items["item_id"]) == set(interactions["item_id"])  # no item nobody in the sample touched
    assert "I5" not in set(items["item_id"])
    assert counts["items"] == len(items)
    assert interactions.groupby("user_id").size().eq(4).all()  # each kept user keeps the whole sequence

    everyone = write_subsample(tmp_path / "src", tmp_path / "all", 1.0)
    assert everyone == {"users": 4, "items": 5, "rows": 12}


def test_scaling_table_ratios_against_the_smallest_fraction():
    def rows(sft, grpo):
        return [{"stage": "recommender_sft", "step_s": sft, "peak_rss_mib": 900},
                {"stage": "recommender_grpo", "step_s": grpo, "peak_rss_mib": 1000}]

    table = scaling_table({0.5: rows(30.0, 50.0), 0.25: rows(10.0, 40.0)})
    lines = table.splitlines()
    assert lines[0].startswith("| stage | 25% s (× 25%) | peak MiB | 50% s (× 25%)")
    sft = next(line for line in lines if line.startswith("| SFT |"))
    grpo = next(line for line in lines if line.startswith("| GRPO |"))
    assert sft == "| SFT | 10 (× 1.00) | 900 | 30 (× 3.00) | 900 |"
    assert grpo == "| GRPO | 40 (× 1.00) | 1000 | 50 (× 1.25) | 1000 |"
    assert next(line for line in lines if line.startswith("| RQ-VAE |")) == "| RQ-VAE | – | – | – | – |"


def test_replace_generated_keeps_the_hand_written_text():
    text = f"# Benchmarks\n\nanalysis\n\n{BEGIN}\nold tables\n{END}\n\nmore analysis\n"
    out = replace_generated(text, "new tables")
    assert out == f"# Benchmarks\n\nanalysis\n\n{BEGIN}\nnew tables\n{END}\n\nmore analysis\n"
    appended = replace_generated("# Benchmarks\n", "tables with \\1 backslashes")
    assert appended.endswith(f"{BEGIN}\ntables with \\1 backslashes\n{END}\n")


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_write_subsample_rejects_a_fraction_outside_0_1(tmp_path, fraction):
    _unisrec(tmp_path / "src")
    with pytest.raises(ValueError, match="fraction must be in"):
        write_subsample(tmp_path / "src", tmp_path / "bad", fraction)
    assert not (tmp_path / "bad").exists()  # nothing half-written
