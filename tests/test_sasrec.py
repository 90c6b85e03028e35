"""SASRec baseline: learns a deterministic sequence task, never trains on held-out items, is seeded."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from config_schema import UnknownSettingError, field_names, to_mapping
from evaluation.baselines import BaselineInputs, get_baseline
from evaluation.sasrec import (
    PROFILES,
    PUBLISHED_RECIPE,
    SASRecConfig,
    SASRecModule,
    _prefix_dataset,
    catalogue,
    evaluate_sasrec,
    load_sasrec,
    profile,
    rank_sasrec,
    rank_split,
    train_sasrec,
    training_prefixes,
    training_sequences,
)
from tests.helpers import cycle_splits
from tests.helpers import loo_frame as frame
from training.sequence_data import SequenceSample, build_samples
from training.settings import DistributedSettings

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
    assert hparams["config"]["distributed"] == to_mapping(DistributedSettings())  # trained on one process
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


# --------------------------------------------------------------------------- the published recipe's knobs

#: the published recipe's architecture and training at toy size (RecBole encoder, right padding, prefixes)
RECIPE_TOY = dataclasses.replace(PUBLISHED_RECIPE, hidden=32, inner=24, dropout=0.1, attn_dropout=0.1, lr=1e-2,
                                 batch_size=32, eval_batch_size=64, max_epochs=15, patience=15, max_len=8, seed=5)


def test_prefix_augmentation_one_example_per_train_interaction_without_leakage():
    # users of 3, 4, 13 and 30 train items (held-out "v*", "t*" items appear nowhere in train)
    lengths = {"a": 3, "b": 4, "c": 13, "d": 30}
    seqs = {u: [f"{u}{t}" for t in range(n)] + [f"v{u}", f"t{u}"] for u, n in lengths.items()}
    splits = frame(seqs)
    max_len = 5
    examples = training_prefixes(splits, max_len)
    # exactly one example per train interaction after each user's first
    assert len(examples) == sum(n - 1 for n in lengths.values())
    expected = [(tuple(seqs[u][max(0, t - max_len):t]), seqs[u][t])
                for u in sorted(lengths) for t in range(1, lengths[u])]
    assert examples == expected
    # the history is the up-to-max_len items right before the target, oldest first
    assert examples[0] == (("a0",), "a1")
    assert (("d20", "d21", "d22", "d23", "d24"), "d25") in examples
    assert all(1 <= len(history) <= max_len for history, _ in examples)
    held_out = set(splits.loc[splits["split"] != "train", "item_id"])
    seen = {item for history, target in examples for item in (*history, target)}
    assert seen and not seen & held_out
    # a user's train rows out of order in the frame are still read chronologically
    shuffled = splits.sample(frac=1.0, random_state=0)
    assert training_prefixes(shuffled, max_len) == examples
    with pytest.raises(ValueError, match="max_len must be >= 1"):
        training_prefixes(splits, 0)


def test_prefix_training_rows_hold_history_and_target():
    splits = frame({"u": ["x0", "x1", "x2", "x3", "v", "t"]})
    for padding in ("left", "right"):
        cfg = dataclasses.replace(RECIPE_TOY, padding=padding, max_len=4)
        module = SASRecModule(catalogue(splits), cfg)
        seqs, targets = _prefix_dataset(module, training_prefixes(splits, 4)).tensors
        rows = {item: i + 1 for i, item in enumerate(module.item_ids)}
        x = [rows[f"x{i}"] for i in range(4)]
        if padding == "right":
            assert seqs.tolist() == [[x[0], 0, 0, 0], [x[0], x[1], 0, 0], [x[0], x[1], x[2], 0]]
        else:
            assert seqs.tolist() == [[0, 0, 0, x[0]], [0, 0, x[0], x[1]], [0, x[0], x[1], x[2]]]
        assert (targets + 1).tolist() == x[1:]


@pytest.mark.parametrize("encoder", ["torch", "recbole"])
@pytest.mark.parametrize("padding", ["left", "right"])
def test_length_groups_are_exact_and_padding_does_not_change_scores(encoder, padding):
    torch.manual_seed(0)
    cfg = SASRecConfig(max_len=7, hidden=16, inner=12, dropout=0.0, encoder=encoder, padding=padding,
                       init_range=0.02 if encoder == "recbole" else None)
    module = SASRecModule([f"i{i}" for i in range(9)], cfg).eval()
    histories = [[3], [1, 2], [4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7], [9, 8, 7, 6, 5], []]
    seqs = torch.zeros(len(histories), 7, dtype=torch.long)
    for row, h in enumerate(histories):
        if h:
            seqs[row, slice(7 - len(h), 7) if padding == "left" else slice(0, len(h))] = torch.tensor(h)
    with torch.no_grad():
        grouped = module.last_hidden(seqs)
        # one row at a time at full width, read at the newest item: what grouping must reproduce
        for row, h in enumerate(histories):
            full = module.encode(seqs[row:row + 1])[0]
            at = 6 if padding == "left" else max(len(h), 1) - 1
            assert torch.allclose(grouped[row], full[at], atol=1e-5), row
        assert torch.equal(grouped[-1], torch.zeros_like(grouped[-1]))  # empty history: zero state
        # moving the pads' position embeddings (the slots no history reaches) changes nothing
        before = module.scores(grouped[:3])
        if padding == "left":
            module.pos_emb.weight.data[:4] += 5.0
        else:
            module.pos_emb.weight.data[3:] += 5.0
        assert torch.allclose(module.scores(module.last_hidden(seqs[:3])), before, atol=1e-4)


def test_published_recipe_profile():
    r = PUBLISHED_RECIPE
    assert (r.layers, r.heads, r.hidden, r.inner, r.dropout, r.attn_dropout) == (2, 2, 300, 256, 0.5, 0.5)
    assert (r.layer_norm_eps, r.init_range, r.encoder, r.padding, r.training) == (
        1e-12, 0.02, "recbole", "right", "prefixes")
    assert (r.batch_size, r.lr, r.adam_beta2, r.weight_decay, r.patience, r.max_epochs) == (
        2048, 1e-3, 0.999, 0.0, 10, 300)
    assert PROFILES["published-recipe"] is r and PROFILES["default"] == SASRecConfig()
    # the caller decides the history cap, seed and accelerator, through the registry as everywhere
    p = profile("published-recipe", max_len=50, seed=2)
    assert (p.max_len, p.seed, p.hidden) == (50, 2, 300)
    with pytest.raises(ValueError, match="only max_len, seed and accelerator"):
        profile("published-recipe", hidden=64)
    with pytest.raises(ValueError, match="unknown SASRec profile"):
        profile("recbole")
    sasrec = get_baseline("sasrec")
    inputs = BaselineInputs(cycle_splits(), tuple(catalogue(cycle_splits())), max_history=50, seed=1)
    resolved = sasrec.resolve(inputs, PUBLISHED_RECIPE)
    assert resolved == dataclasses.replace(PUBLISHED_RECIPE, max_len=50, seed=1)
    names = {f.name for f in sasrec.configurable_fields()}
    assert {"inner", "attn_dropout", "layer_norm_eps", "init_range", "encoder", "padding", "training",
            "adam_beta2"} <= names


def test_defaults_keep_the_original_architecture():
    cfg = SASRecConfig()
    assert (cfg.inner, cfg.attn_dropout, cfg.init_range, cfg.encoder, cfg.padding, cfg.training) == (
        None, None, None, "torch", "left", "windows")
    assert (cfg.ffn_size, cfg.attn_dropout_p, cfg.adam_beta2, cfg.layer_norm_eps) == (64, 0.2, 0.98, 1e-5)
    module = SASRecModule(["a", "b", "c"], SASRecConfig(hidden=16, max_len=4))
    state = module.state_dict()
    assert state["encoder.layers.0.linear1.weight"].shape == (16, 16)  # feed-forward size = hidden
    assert not any(k.startswith(("blocks.", "emb_norm.")) for k in state)
    layer = module.encoder.layers[0]
    assert layer.norm_first and layer.self_attn.dropout == 0.2
    recbole = SASRecModule(["a", "b", "c"], dataclasses.replace(RECIPE_TOY, hidden=16, inner=12))
    state = recbole.state_dict()
    assert state["blocks.1.ff_in.weight"].shape == (12, 16) and "encoder.layers.0.linear1.weight" not in state
    assert state["blocks.0.query.bias"].abs().sum() == 0  # RecBole init: biases 0, weights ~ N(0, 0.02)
    assert 0.015 < float(state["blocks.0.query.weight"].std()) < 0.025


@pytest.fixture(scope="module")
def recipe_trained(tmp_path_factory):
    splits = cycle_splits()
    return splits, train_sasrec(splits, RECIPE_TOY, checkpoint_dir=tmp_path_factory.mktemp("recipe"))


def test_recipe_model_learns_trains_and_reloads(recipe_trained):
    splits, result = recipe_trained
    # one example per train interaction after the first: 36 users x (6 train items - 1)
    assert result.train_examples == 36 * 5
    assert result.history[0]["val_ndcg@10"] < 1.0
    for split in ("valid", "test"):
        assert evaluate_sasrec(result.module, splits, split, ks=(1, 5))["hr@1"] == 1.0, split
    reloaded = load_sasrec(result.checkpoint)
    assert reloaded.config == RECIPE_TOY and isinstance(reloaded.blocks[0].ff_in, torch.nn.Linear)
    for split in ("valid", "test"):
        _, ranked, _ = rank_split(reloaded, splits, split, 10)
        _, ranked0, _ = rank_split(result.module, splits, split, 10)
        np.testing.assert_array_equal(ranked, ranked0)


def test_new_fields_round_trip_through_the_checkpoint(recipe_trained, tmp_path):
    _, result = recipe_trained
    state = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    saved = state["hyper_parameters"]["config"]
    assert saved == to_mapping(RECIPE_TOY) and set(saved) == set(field_names(SASRecConfig))
    assert {k: saved[k] for k in ("inner", "attn_dropout", "layer_norm_eps", "init_range", "encoder", "padding",
                                  "training", "adam_beta2")} == {
        "inner": 24, "attn_dropout": 0.1, "layer_norm_eps": 1e-12, "init_range": 0.02, "encoder": "recbole",
        "padding": "right", "training": "prefixes", "adam_beta2": 0.999}


def test_checkpoint_without_the_new_fields_loads_with_the_original_behaviour(trained, tmp_path):
    splits, result = trained
    state = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    for key in ("inner", "attn_dropout", "layer_norm_eps", "init_range", "encoder", "padding", "training",
                "adam_beta2"):
        del state["hyper_parameters"]["config"][key]  # as written before these fields existed
    old = tmp_path / "old.ckpt"
    torch.save(state, old)
    reloaded = load_sasrec(old)
    assert reloaded.config == FAST
    _, ranked, _ = rank_split(reloaded, splits, "test", 10)
    np.testing.assert_array_equal(ranked, rank_split(result.module, splits, "test", 10)[1])


def test_recipe_is_seeded(tmp_path):
    splits = cycle_splits(n_items=9, n_users=18, length=7)
    cfg = dataclasses.replace(RECIPE_TOY, max_len=6, max_epochs=2, patience=2, batch_size=8)
    a = train_sasrec(splits, cfg, checkpoint_dir=tmp_path / "a")
    b = train_sasrec(splits, cfg, checkpoint_dir=tmp_path / "b")
    assert a.history == b.history and a.stopped_early is False
    for (name, pa), (_, pb) in zip(a.module.state_dict().items(), b.module.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name


def test_bad_new_fields_are_rejected_with_the_field_named():
    for bad, match in (({"inner": 0}, "inner"), ({"attn_dropout": 1.0}, "attn_dropout"),
                       ({"init_range": 0.0}, "init_range"), ({"layer_norm_eps": 0.0}, "layer_norm_eps"),
                       ({"encoder": "keras"}, "encoder"), ({"padding": "middle"}, "padding"),
                       ({"training": "all"}, "training"), ({"adam_beta2": 1.0}, "adam_beta2")):
        with pytest.raises(ValueError, match=match):
            SASRecConfig(**bad)
