"""The item-level generator (arch="item_causal"): every target of a sequence trained at once, conditioning
from the window's own history only, the zero-gated history text, decoding, checkpoints."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from metrics.ranking import hit_rate_at_k
from tests.helpers import toy_sid_frame, toy_splits
from training.generator import GeneratorModule, load_generator, rank_loader, recommend, train_generator
from training.item_generator import ItemCausalModel
from training.sequence_data import SequenceDataModule, SequenceSample, item_chunks
from training.settings import GeneratorConfig, SequenceSettings
from training.sid_vocab import SidVocab

torch.set_num_threads(1)


def vocab() -> SidVocab:
    return SidVocab.from_frame(toy_sid_frame())  # 8 items, 3 levels, i6/i7 collide (suffix tokens)


def config(**kw) -> GeneratorConfig:
    base = {"arch": "item_causal", "d_model": 32, "d_ff": 64, "num_heads": 2, "num_encoder_layers": 2,
            "num_decoder_layers": 1, "dropout": 0.0, "lr": 1e-2, "warmup_ratio": 0.0, "batch_size": 8,
            "beam_width": 8, "eval_top_k": 5, "patience": 1000, "seed": 3, "text_dropout": 0.0}
    base.update(kw)
    return GeneratorConfig(**base)


def seq(max_history: int = 3, history_text: bool = False) -> SequenceSettings:
    return SequenceSettings(max_history=max_history, use_user_interests=False, history_text=history_text)


def text_matrix(n: int = 8, dim: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def test_item_chunks_predict_every_train_target_once():
    assert item_chunks([10, 11, 12], 5) == [[10, 11, 12]]
    # cap 2: chunks of 3 items overlapping by one; targets 11,12 | 13,14 | 15 — each exactly once
    assert item_chunks([10, 11, 12, 13, 14, 15], 2) == [[10, 11, 12], [12, 13, 14], [14, 15]]
    assert item_chunks([10, 11, 12, 13, 14], 2) == [[10, 11, 12], [12, 13, 14]]
    assert item_chunks([10, 11], 4) == [[10, 11]]


def test_chunk_positions_equal_their_sliding_windows():
    """One pass over a chunk gives, at every position, exactly the prediction of that position's window."""
    v = vocab()
    model = ItemCausalModel(v, config(), seq(max_history=6, history_text=True), item_text=text_matrix())
    with torch.no_grad():
        model.text_gate.fill_(0.5)  # make the text path count
    model.eval()
    chunk = torch.tensor([[3, 1, 4, 0, 5]])
    labels = model.sid_tokens[chunk[0, 1:]]
    h = model.encode(chunk)[0, 1:-1]  # states after items 0..3
    chunk_lp = model.head_logprobs(h, labels)
    assert (chunk_lp < 0).any() and (chunk_lp <= 0).all()
    for t in range(1, 5):
        window = model.head_logprobs(model.last_state(chunk[:, :t]), labels[t - 1 : t])[0]
        torch.testing.assert_close(chunk_lp[t - 1], window, atol=1e-5, rtol=1e-5)


def test_conditioning_ignores_the_target_and_every_later_item():
    """A window's state (history items, their SIDs and their interest-enhanced text) is unchanged when its
    target and everything after it change: per-window conditioning, no shortcut through the future."""
    v = vocab()
    model = ItemCausalModel(v, config(), seq(max_history=6, history_text=True), item_text=text_matrix())
    with torch.no_grad():
        model.text_gate.fill_(1.0)
    model.eval()
    a = torch.tensor([[2, 3, 4, 5, 6]])
    b = torch.tensor([[2, 3, 7, 0, 1]])  # same history [2, 3]; target and later items differ
    ha, hb = model.encode(a), model.encode(b)
    torch.testing.assert_close(ha[:, :3], hb[:, :3])  # start + after items 2, 3
    assert not torch.allclose(ha[:, 3], hb[:, 3])  # reading a different item does change the state


def test_text_gate_starts_closed_and_opens_with_training(tmp_path):
    v = vocab()
    items = torch.tensor([[0, 1, 2]])
    m1 = ItemCausalModel(v, config(), seq(history_text=True), item_text=text_matrix(seed=1)).eval()
    m2 = ItemCausalModel(v, config(), seq(history_text=True), item_text=text_matrix(seed=2)).eval()
    m2.load_state_dict({**m1.state_dict(), "item_text": m2.item_text})
    # gate zero: different text, same predictions (the model starts as the SID-only one)
    torch.testing.assert_close(m1.last_state(items), m2.last_state(items))
    dm = SequenceDataModule.for_settings(toy_splits(), v, seq(history_text=True), batch_size=8, seed=0,
                                         user_prefix=None, layout="items")
    result = train_generator(dm, v, config(max_epochs=3), sequence=seq(history_text=True),
                             checkpoint_dir=tmp_path, item_text=text_matrix())
    trained = load_generator(result.last_checkpoint)
    assert float(trained.model.text_gate.detach().abs().sum()) > 0
    # the text travels in the checkpoint: the reloaded model reads the same matrix
    expected = torch.as_tensor(text_matrix())
    torch.testing.assert_close(trained.model.item_text, expected / expected.norm(dim=1, keepdim=True))


@pytest.mark.slow  # a few seconds on 2 shared cores
def test_overfits_toy_task_and_recommends(tmp_path):
    v = vocab()
    cfg = config(max_epochs=150, lr=3e-3, lr_schedule="constant", val_every_n_epochs=50, batch_size=4)
    sequence = seq(max_history=6)
    dm = SequenceDataModule.for_settings(toy_splits(), v, sequence, batch_size=4, seed=cfg.seed, user_prefix=None,
                                         layout="items")
    assert len(dm.datasets["train"]) == 4  # each user's 6 train items: one chunk, 5 targets
    result = train_generator(dm, v, cfg, sequence=sequence, checkpoint_dir=tmp_path)
    module = load_generator(result.last_checkpoint)
    assert module.config.arch == "item_causal" and module.sequence == sequence
    windows = SequenceDataModule.for_settings(toy_splits(), v, sequence, batch_size=4, seed=0, user_prefix=None,
                                              layout="items", train_windows=True)
    ranked, targets = rank_loader(module, windows.loader("train"), top_k=5)
    # one pass over the chunk trained every window: each is now predicted first
    assert len(targets) == 4 * 5 and hit_rate_at_k(ranked, targets, 1) == 1.0
    assert result.best_val_ndcg >= 0.8
    assert all(len(set(r)) == len(r) for r in ranked.tolist())
    recs = recommend(module, [SequenceSample("u", ("i3", "i4", "i5"), "", "test"),
                              SequenceSample("u", ("i7", "i6", "i1", "i2", "i3", "i4", "i5", "i6"), "", "test"),
                              SequenceSample("u", (), "", "test")], k=3)
    assert recs[0][0] == "i6" and recs[1][0] == "i7"  # the longer history is cut to its last 6 items
    assert len(recs[2]) == 3  # an empty history still decodes to catalogue items


def test_beam_search_matches_brute_force_scores():
    v = vocab()
    model = ItemCausalModel(v, config(seed=11), seq()).eval()
    module = GeneratorModule(v, config(seed=11), seq())
    module.model.load_state_dict(model.state_dict())
    items = torch.tensor([[0, 1, -1], [5, 6, 7]])
    ranked = module.rank({"items": items}, beam_width=8, top_k=8)
    # exhaustive: the log-probability of every item's SID + eos
    tokens = model.sid_tokens.repeat(2, 1)
    with torch.no_grad():
        lp = model.token_logprobs(items, tokens, group=8)
    scores = (lp * (tokens != 0)).sum(dim=1).view(2, 8)
    expected = scores.argsort(dim=1, descending=True).numpy()
    np.testing.assert_array_equal(ranked, expected)


def test_bad_settings_are_refused():
    v = vocab()
    with pytest.raises(ValueError, match="use_user_interests=False"):
        ItemCausalModel(v, config(), SequenceSettings(use_user_interests=True))
    with pytest.raises(ValueError, match="item_text"):
        ItemCausalModel(v, config(), seq(history_text=True))
    with pytest.raises(ValueError, match=r"n_items=8"):
        ItemCausalModel(v, config(), seq(history_text=True), item_text=np.zeros((5, 4)))
    with pytest.raises(ValueError, match="history_text=True is read by arch='item_causal' only"):
        GeneratorModule(v, config(arch="t5"), seq(history_text=True))
    with pytest.raises(ValueError, match="text_dropout"):
        config(text_dropout=1.0)
    model = ItemCausalModel(v, config(), seq(max_history=2))
    with pytest.raises(ValueError, match="exceed the model's 3 positions"):
        model.encode(torch.tensor([[0, 1, 2, 3]]))
    dm = SequenceDataModule(toy_splits(), v, batch_size=4, max_history=3)  # the T5 windows layout
    with pytest.raises(ValueError, match="layout"):
        train_generator(dm, v, config(), sequence=seq(), checkpoint_dir="/nonexistent")
    with pytest.raises(ValueError, match="no user-prefix"):
        SequenceDataModule(toy_splits(), v, batch_size=4, layout="items", user_prefix={"u0": [9]})


def test_grpo_trains_the_item_model_on_windows(tmp_path):
    """GRPO samples groups from the item model's head and updates it; the checkpoint keeps the history text."""
    from training.grpo import GRPOConfig, train_grpo

    v = vocab()
    sequence = seq(history_text=True)
    chunks = SequenceDataModule.for_settings(toy_splits(), v, sequence, batch_size=4, seed=0, user_prefix=None,
                                             layout="items")
    sft = train_generator(chunks, v, config(max_epochs=4), sequence=sequence, checkpoint_dir=tmp_path / "sft",
                          item_text=text_matrix())
    windows = SequenceDataModule.for_settings(toy_splits(), v, sequence, batch_size=4, seed=0, user_prefix=None,
                                              layout="items", train_windows=True)
    quality = {f"i{k}": k / 8 for k in range(8)}
    cfg = GRPOConfig(group_size=4, lr=1e-3, max_epochs=2, updates_per_batch=1, seed=0)
    result = train_grpo(sft.last_checkpoint, windows, v, quality, cfg, checkpoint_dir=tmp_path / "grpo")
    # validated in both epochs, several times each (GRPOConfig.val_check_interval defaults to 0.25)
    assert sorted({h["epoch"] for h in result.history}) == [0.0, 1.0] and len(result.history) > 2
    assert result.kept in ("sft", "grpo")
    policy = load_generator(result.grpo_checkpoint)
    before = load_generator(sft.last_checkpoint)
    assert policy.config.arch == "item_causal" and policy.sequence.history_text
    torch.testing.assert_close(policy.model.item_text, before.model.item_text)
    changed = [n for n, p in policy.model.named_parameters()
               if not torch.equal(p, dict(before.model.named_parameters())[n])]
    assert changed  # the policy moved
    again = train_grpo(sft.last_checkpoint, windows, v, quality, cfg, checkpoint_dir=tmp_path / "again")
    assert again.history == result.history  # seeded sampling: reproducible


def test_length_grouped_batches_cover_every_row_once_and_follow_the_seed():
    from training.sequence_data import LengthGroupedBatchSampler

    lengths = [2, 9, 3, 9, 2, 5, 7, 3, 2, 8, 4, 6]
    sampler = LengthGroupedBatchSampler(lengths, batch_size=3, seed=5, pool=2)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 4
    assert sorted(i for b in batches for i in b) == list(range(12))
    # within a pool of 2 batches rows are sorted by length: a batch spans less than the whole range
    assert all(max(lengths[i] for i in b) - min(lengths[i] for i in b) < 7 for b in batches)
    assert list(LengthGroupedBatchSampler(lengths, 3, seed=5, pool=2)) == batches  # seeded
    sampler.set_epoch(1)
    assert list(sampler) != batches  # a new order each epoch


def test_max_batches_per_epoch_caps_each_sft_epoch(tmp_path):
    v = vocab()
    sequence = seq(max_history=6)
    steps = {}
    for cap in (None, 2):
        dm = SequenceDataModule.for_settings(toy_splits(), v, sequence, batch_size=1, seed=0, user_prefix=None,
                                             layout="items")
        assert len(dm.datasets["train"]) == 4  # four chunks: four batches of one per full epoch
        result = train_generator(dm, v, config(max_epochs=2, batch_size=1, max_batches_per_epoch=cap),
                                 sequence=sequence, checkpoint_dir=tmp_path / str(cap))
        steps[cap] = torch.load(result.last_checkpoint, map_location="cpu", weights_only=False)["global_step"]
    assert steps == {None: 8, 2: 4}
    with pytest.raises(ValueError, match="GeneratorConfig.max_batches_per_epoch must be >= 1 or None, got 0"):
        config(max_batches_per_epoch=0)
