"""SASRec baseline: learns a deterministic sequence task, never trains on held-out items, is seeded."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from config_schema import UnknownSettingError, field_names, to_mapping
from evaluation.sasrec import (
    SASRecConfig,
    SASRecModule,
    catalogue,
    evaluate_sasrec,
    load_sasrec,
    rank_sasrec,
    rank_split,
    train_sasrec,
    training_sequences,
)
from training.sequence_data import SequenceSample, build_samples

COLUMNS = ["user_id", "item_id", "timestamp", "position", "rating", "split"]


def frame(sequences: dict[str, list[str]]) -> pd.DataFrame:
    """Leave-one-out splits: last item test, second to last valid, the rest train."""
    rows = []
    for user, seq in sequences.items():
        for p, item in enumerate(seq):
            split = "train" if p < len(seq) - 2 else ("valid" if p == len(seq) - 2 else "test")
            rows.append((user, item, 1000 + p, p, 5.0, split))
    return pd.DataFrame(rows, columns=COLUMNS)


def cycle_splits(n_items: int = 12, n_users: int = 36, length: int = 8) -> pd.DataFrame:
    """Every user walks the cycle i -> i+1 (mod n) from a different start: the next item is determined."""
    return frame({f"u{u:02d}": [f"i{(u + t) % n_items:02d}" for t in range(length)] for u in range(n_users)})


FAST = SASRecConfig(max_len=8, lr=1e-2, batch_size=32, dropout=0.1, max_epochs=12, patience=12, seed=3)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    splits = cycle_splits()
    result = train_sasrec(splits, FAST, checkpoint_dir=tmp_path_factory.mktemp("sasrec"))
    return splits, result


def test_learns_deterministic_cycle_to_hr1(trained):
    splits, result = trained
    # test hits need the valid item at the end of the test history (the successor of the last train
    # item is the valid item, not the test item): this also checks the evaluation protocol
    for split in ("valid", "test"):
        metrics = evaluate_sasrec(result.module, splits, split, ks=(1, 5))
        assert metrics["hr@1"] == 1.0, (split, metrics)
    assert result.best_val_ndcg == pytest.approx(1.0)
    assert len(result.history) >= 1 and all("val_ndcg@10" in row for row in result.history)
    # the first epoch has not solved it yet: the model learned during training, not by construction
    assert result.history[0]["val_ndcg@10"] < 1.0


def test_checkpoint_round_trip_gives_same_rankings(trained):
    splits, result = trained
    samples = build_samples(splits, max_history=FAST.max_len)["test"]
    reloaded = load_sasrec(result.checkpoint)
    assert reloaded.item_ids == result.module.item_ids
    np.testing.assert_array_equal(rank_sasrec(reloaded, samples, 5), rank_sasrec(result.module, samples, 5))


def test_checkpoint_carries_every_setting_and_rebuilds_alone(trained, tmp_path):
    splits, result = trained
    state = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    hparams = state["hyper_parameters"]
    assert set(hparams) == {"item_ids", "config"}
    # every SASRecConfig field, with the values it was trained with (history window and seed included)
    assert hparams["config"] == to_mapping(FAST)
    assert set(hparams["config"]) == set(field_names(SASRecConfig))
    assert hparams["config"]["max_len"] == 8 and hparams["config"]["seed"] == 3
    # nothing but the checkpoint: same config, catalogue, rankings and metrics
    reloaded = load_sasrec(result.checkpoint)
    assert reloaded.config == FAST and not reloaded.training
    for split in ("valid", "test"):
        _, ranked, targets = rank_split(reloaded, splits, split, 10)
        _, ranked0, targets0 = rank_split(result.module, splits, split, 10)
        np.testing.assert_array_equal(ranked, ranked0)
        np.testing.assert_array_equal(targets, targets0)
        assert evaluate_sasrec(reloaded, splits, split) == evaluate_sasrec(result.module, splits, split)


def test_checkpoint_with_unknown_config_key_fails_naming_it(trained, tmp_path):
    _, result = trained
    state = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    state["hyper_parameters"]["config"]["max_length"] = 50  # e.g. a setting renamed since
    bad = tmp_path / "unknown-key.ckpt"
    torch.save(state, bad)
    with pytest.raises(UnknownSettingError, match=r"\['max_length'\] in SASRec checkpoint .*unknown-key.ckpt config"):
        load_sasrec(bad)
    del state["hyper_parameters"]["config"]["max_length"]
    state["hyper_parameters"]["extra"] = 1
    torch.save(state, bad)
    with pytest.raises(ValueError, match=r"unknown \['extra'\]"):
        load_sasrec(bad)
    torch.save({"state_dict": state["state_dict"]}, bad)
    with pytest.raises(ValueError, match="not a SASRec checkpoint"):
        load_sasrec(bad)


def test_rank_uses_the_history_not_the_user(trained):
    _, result = trained
    items = result.module.item_ids
    samples = [SequenceSample("anyone", ("i03", "i04", "i05"), "i06", "test"),
               SequenceSample("anyone", ("i09", "i10"), "i11", "test")]
    ranked = rank_sasrec(result.module, samples, 3)
    assert ranked.shape == (2, 3) and ranked.dtype == np.int64
    assert [items[r[0]] for r in ranked] == ["i06", "i11"]
    # a k above the catalogue size pads with -1, which never matches a target
    wide = rank_sasrec(result.module, samples, len(items) + 2)
    assert (wide[:, -2:] == -1).all() and sorted(wide[0, :-2].tolist()) == list(range(len(items)))


def test_training_windows_never_contain_valid_or_test_items():
    # held-out items ("v*", "t*") appear nowhere in train, so any leak would show up by name
    seqs = {f"u{u}": [f"a{(u + t) % 5}" for t in range(30)] + [f"v{u}", f"t{u}"] for u in range(4)}
    splits = frame(seqs)
    windows = training_sequences(splits, max_len=8)
    seen = {item for inputs, targets in windows for item in inputs + targets}
    held_out = set(splits.loc[splits["split"] != "train", "item_id"])
    assert seen and not seen & held_out
    assert seen == set(splits.loc[splits["split"] == "train", "item_id"])
    # 30 train items per user: 29 transitions, each a target exactly once; windows respect max_len
    assert sum(len(t) for _, t in windows) == 4 * 29
    assert all(1 <= len(i) == len(t) <= 8 and i[1:] == t[:-1] for i, t in windows)
    # held-out items are still in the catalogue the model ranks over
    assert held_out <= set(catalogue(splits))


def test_same_seed_same_metrics(tmp_path):
    splits = cycle_splits(n_items=9, n_users=18, length=7)
    cfg = SASRecConfig(max_len=6, lr=5e-3, batch_size=8, max_epochs=2, patience=2, seed=11)
    a = train_sasrec(splits, cfg, checkpoint_dir=tmp_path / "a")
    b = train_sasrec(splits, cfg, checkpoint_dir=tmp_path / "b")
    assert a.history == b.history
    for split in ("valid", "test"):
        assert evaluate_sasrec(a.module, splits, split) == evaluate_sasrec(b.module, splits, split)
    for (name, pa), (_, pb) in zip(a.module.state_dict().items(), b.module.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name
    c = train_sasrec(splits, dataclasses.replace(cfg, seed=12), checkpoint_dir=tmp_path / "c")
    assert not torch.equal(a.module.item_emb.weight, c.module.item_emb.weight)


def test_padding_does_not_change_scores():
    torch.manual_seed(0)
    module = SASRecModule([f"i{i}" for i in range(6)], SASRecConfig(max_len=5, dropout=0.0)).eval()
    short = torch.tensor([[0, 0, 2, 3, 4]])
    with torch.no_grad():
        full = module.scores(module.encode(short)[:, -1])
        # pads before the history are masked as keys, so their position embeddings cannot leak in
        module.pos_emb.weight.data[:2] += 5.0
        moved = module.scores(module.encode(short)[:, -1])
    assert torch.allclose(full, moved, atol=1e-5)
    assert torch.isfinite(full).all()
    # the newest item does change the scores
    with torch.no_grad():
        changed = module.scores(module.encode(torch.tensor([[0, 0, 2, 3, 5]]))[:, -1])
    assert not torch.allclose(full, changed, atol=1e-3)


def test_bad_config_is_rejected_with_the_field_named():
    with pytest.raises(ValueError, match="divisible by heads"):
        SASRecConfig(hidden=10, heads=3)
    with pytest.raises(ValueError, match="max_len"):
        SASRecConfig(max_len=0)
    with pytest.raises(ValueError, match="dropout"):
        SASRecConfig(dropout=1.0)
    with pytest.raises(UnknownSettingError, match="unknown key\\(s\\) \\['hiden'\\] in SASRec config"):
        SASRecModule(["a", "b"], {"hiden": 32})
    assert not hasattr(SASRecConfig, "from_dict")  # one way to build it from a mapping: config_schema.from_mapping


def test_bad_input_is_rejected(trained, tmp_path):
    splits, result = trained
    with pytest.raises(ValueError, match="split must be 'valid' or 'test'"):
        evaluate_sasrec(result.module, splits, "train")
    with pytest.raises(ValueError, match="not in the SASRec catalogue.*nope"):
        rank_sasrec(result.module, [SequenceSample("u", ("nope",), "i01", "test")], 5)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        rank_sasrec(result.module, [SequenceSample("u", ("i01",), "i02", "test")], 0)
    unknown_target = splits.copy()
    unknown_target.loc[unknown_target["split"] == "valid", "item_id"] = "zz"
    with pytest.raises(ValueError, match="valid target item.*not in the SASRec catalogue"):
        evaluate_sasrec(result.module, unknown_target, "valid")
    with pytest.raises(KeyError, match="position"):
        train_sasrec(splits.drop(columns=["position"]), FAST, checkpoint_dir=tmp_path / "x")
    leaky = splits.copy()
    u00 = leaky["user_id"] == "u00"
    leaky.loc[u00 & (leaky["split"] == "valid"), "split"] = "train"
    leaky.loc[u00 & (leaky["position"] == 0), "split"] = "valid"  # a held-out row before the train rows
    with pytest.raises(ValueError, match="out of chronological order"):
        train_sasrec(leaky, FAST, checkpoint_dir=tmp_path / "y")
    no_valid = splits[splits["split"] != "valid"]
    with pytest.raises(ValueError, match="no validation samples"):
        train_sasrec(no_valid, FAST, checkpoint_dir=tmp_path / "z")
    with pytest.raises(ValueError, match="unique"):
        SASRecModule(["a", "a"], FAST)
