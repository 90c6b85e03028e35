"""Interest-aware reward (hand-computed) and GRPO on a toy task."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

from config_schema import from_mapping
from tests.helpers import toy_sid_frame, toy_splits  # noqa: E402
from training.generator import GeneratorConfig, load_generator, train_generator
from training.grpo import GRPOConfig, GRPOModule, quality_vector, sample_rewards, train_grpo
from training.rewards import RewardConfig, interest_aware_reward
from training.sequence_data import SequenceDataModule
from training.sid_vocab import SidVocab

torch.set_num_threads(1)

# ----------------------------------------------------------------------------- rewards

A, B, C, X, Y, EOS, SUF = 8, 12, 16, 9, 13, 1, 20
TARGET = torch.tensor([[A, B, C, EOS, 0]])


def _reward(samples, items, quality=0.6, config=None):
    tokens = torch.tensor([samples])
    return interest_aware_reward(
        tokens, torch.tensor([items]), TARGET, torch.tensor([5]), torch.tensor([quality]), levels=3,
        config=config or RewardConfig(),
    )


def test_reward_hand_computed_cases():
    r = _reward(
        [
            [A, B, C, EOS, 0],  # exact: 1 + 0.1 + 0.3·3/3 + 0.5·0.6
            [A, B, Y, EOS, 0],  # valid, wrong, shares 2 levels: 0.1 + 0.3·2/3
            [X, B, C, EOS, 0],  # valid, wrong at the first level: 0.1 (later matches do not count)
            [A, X, Y, 0, 0],  # invalid (no item) sharing 1 level: 0.3·1/3
            [A, B, C, SUF, EOS],  # same codes, different suffix = another item: 0.1 + 0.3
        ],
        [5, 3, 2, -1, 6],
    )
    expected = torch.tensor([[1.7, 0.3, 0.1, 0.1, 0.4]])
    assert torch.allclose(r.total, expected, atol=1e-6)
    assert r.exact.tolist() == [[1.0, 0.0, 0.0, 0.0, 0.0]]
    assert torch.allclose(r.valid, torch.tensor([[0.1, 0.1, 0.1, 0.0, 0.1]]))
    assert torch.allclose(r.prefix, torch.tensor([[0.3, 0.2, 0.0, 0.1, 0.3]]))
    assert torch.allclose(r.quality, torch.tensor([[0.3, 0, 0, 0, 0]]))
    assert r.means()["total"] == pytest.approx(2.6 / 5)


def test_reward_weights_and_quality():
    cfg = RewardConfig(lambda_valid=0.0, lambda_pref=1.0, alpha=2.0)
    r = _reward([[A, B, C, EOS, 0], [A, B, Y, EOS, 0]], [5, 3], quality=0.25, config=cfg)
    assert torch.allclose(r.total, torch.tensor([[1 + 1 + 0.5, 2 / 3]]))
    # q is only paid on an exact hit
    r0 = _reward([[A, B, Y, EOS, 0]], [3], quality=1.0)
    assert float(r0.quality.sum()) == 0.0


def test_reward_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[B, G, T\]"):
        interest_aware_reward(TARGET, torch.tensor([5]), TARGET, torch.tensor([5]), torch.tensor([0.0]), levels=3)
    with pytest.raises(ValueError, match="target_quality"):
        interest_aware_reward(TARGET[None], torch.tensor([[5]]), TARGET, torch.tensor([5]), torch.tensor([0.0, 1.0]),
                              levels=3)
    with pytest.raises(ValueError, match="levels"):
        interest_aware_reward(TARGET[None], torch.tensor([[5]]), TARGET, torch.tensor([5]), torch.tensor([0.0]),
                              levels=9)


# ----------------------------------------------------------------------------- GRPO

def toy_vocab() -> SidVocab:
    """8 items, 3 levels; items 6 and 7 collide and get suffix tokens."""
    return SidVocab.from_frame(toy_sid_frame())


QUALITY = {f"i{i}": i / 8 for i in range(8)}


def _train_sft(directory, epochs: int):
    vocab = toy_vocab()
    config = GeneratorConfig(arch="t5", d_model=32, d_ff=64, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
                             dropout=0.0, lr=3e-3, lr_schedule="constant", batch_size=20, max_epochs=epochs,
                             val_every_n_epochs=epochs, beam_width=8, eval_top_k=5, seed=7)
    dm = SequenceDataModule(toy_splits(), vocab, batch_size=20, seed=0, max_history=3)
    return vocab, dm, train_generator(dm, vocab, config, checkpoint_dir=directory)


@pytest.fixture(scope="module")
def weak_sft(tmp_path_factory):
    """A weakly trained generator (15 full-batch epochs): far from solving the toy task."""
    return _train_sft(tmp_path_factory.mktemp("weak"), 15)


def _mean_reward(checkpoint, vocab, dm) -> dict[str, float]:
    module = load_generator(checkpoint)
    batch = next(iter(dm.loader("train", batch_size=64)))
    # the policy's expected reward: sampled rollouts, the paper's reward (not the beam/rank defaults)
    measure = GRPOConfig(group_size=32, rollout="sample", reward_shape="exact")
    _, items, rewards = sample_rewards(module, batch, quality_vector(vocab, QUALITY), measure,
                                       torch.Generator().manual_seed(0))
    assert (items >= 0).all()  # constrained sampling only yields catalogue items
    return rewards.means()


def test_grpo_raises_mean_reward(weak_sft, tmp_path):
    vocab, dm, sft = weak_sft
    before = _mean_reward(sft.last_checkpoint, vocab, dm)
    config = GRPOConfig(group_size=8, lr=3e-3, max_epochs=20, updates_per_batch=2, val_every_n_epochs=10, seed=1)
    result = train_grpo(sft.last_checkpoint, dm, vocab, QUALITY, config, checkpoint_dir=tmp_path)
    after = _mean_reward(tmp_path / "last.ckpt", vocab, dm)
    assert before["exact"] < 0.5
    assert after["total"] > before["total"] + 0.2
    assert after["exact"] > before["exact"]
    # the keep/replace decision follows validation NDCG@10
    assert result.kept == ("sft" if result.grpo_val_ndcg < result.sft_val_ndcg else "grpo")
    assert result.checkpoint == (sft.last_checkpoint if result.kept == "sft" else result.grpo_checkpoint)
    assert result.sft_val_ndcg == pytest.approx(sft.best_val_ndcg, abs=1e-6)
    assert [h["epoch"] for h in result.history] == [9, 19]
    # GRPO checkpoints reload as plain generators; the reference model stays the SFT weights
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    sft_state = torch.load(sft.last_checkpoint, weights_only=False)["state_dict"]
    ref = {k[len("reference."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("reference.")}
    assert all(torch.equal(ref[k], sft_state["model." + k]) for k in ref)
    assert not all(torch.equal(ckpt["state_dict"]["model." + k], sft_state["model." + k]) for k in ref)


def test_grpo_keeps_sft_when_validation_gets_worse(tmp_path):
    vocab, dm, sft = _train_sft(tmp_path / "sft", 100)
    assert sft.best_val_ndcg > 0.8
    # a destructive learning rate wrecks the policy in one step
    config = GRPOConfig(group_size=4, lr=5.0, max_epochs=1, updates_per_batch=1, gradient_clip_val=1e6, seed=0)
    result = train_grpo(sft.last_checkpoint, dm, vocab, QUALITY, config, checkpoint_dir=tmp_path / "grpo")
    assert result.grpo_val_ndcg < result.sft_val_ndcg
    assert result.kept == "sft" and result.checkpoint == sft.last_checkpoint
    assert result.grpo_checkpoint != result.checkpoint


def test_grpo_is_reproducible(weak_sft, tmp_path):
    vocab, dm, sft = weak_sft
    config = GRPOConfig(group_size=4, lr=1e-3, max_epochs=2, seed=3)
    a = train_grpo(sft.last_checkpoint, dm, vocab, QUALITY, config, checkpoint_dir=tmp_path / "a")
    b = train_grpo(sft.last_checkpoint, dm, vocab, QUALITY, config, checkpoint_dir=tmp_path / "b")
    assert a.history == b.history
    sa = torch.load(tmp_path / "a" / "last.ckpt", weights_only=False)["state_dict"]
    sb = torch.load(tmp_path / "b" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_grpo_bad_input(weak_sft, tmp_path):
    vocab, dm, sft = weak_sft
    with pytest.raises(ValueError, match="group_size"):
        GRPOConfig(group_size=1)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['beta'\].*allowed: \[.*'kl_beta'"):
        from_mapping(GRPOConfig, {"beta": 0.1})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        quality_vector(vocab, {"i0": 1.5})
    with pytest.raises(ValueError, match="8 items"):
        quality_vector(vocab, [0.1, 0.2])
    other = SidVocab.from_sids(["a", "b"], [(0, 0), (0, 1)])
    with pytest.raises(ValueError, match="different SID vocabulary"):
        train_grpo(sft.last_checkpoint, dm, other, {}, GRPOConfig(), checkpoint_dir=tmp_path)
    with pytest.raises(NotImplementedError, match="item_causal"):
        GRPOModule(vocab, GeneratorConfig(arch="causal_lm_lora", lora_r=0), GRPOConfig(), {})


def test_grpo_max_batches_per_epoch_caps_each_epoch(weak_sft, tmp_path):
    vocab, _, sft = weak_sft
    dm = SequenceDataModule(toy_splits(), vocab, batch_size=4, seed=0, max_history=3)
    dm.setup("fit")
    full = len(dm.train_dataloader())
    assert full > 2  # the cap below must bite
    config = GRPOConfig(group_size=4, max_epochs=2, updates_per_batch=1, max_batches_per_epoch=2, seed=0)
    train_grpo(sft.last_checkpoint, dm, vocab, QUALITY, config, checkpoint_dir=tmp_path)
    # manual optimisation: one optimizer step per (batch, update); 2 epochs × 2 batches
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["global_step"] == 4
    with pytest.raises(ValueError, match="max_batches_per_epoch"):
        GRPOConfig(max_batches_per_epoch=0)
