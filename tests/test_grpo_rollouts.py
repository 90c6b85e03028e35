"""GRPO's beam rollouts, the rank-aware reward (q paid on hits only), the masked group normalisation and the
validation cadence (issue 15)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

from config_schema import from_mapping
from tests.helpers import toy_splits
from tests.test_grpo import EOS, QUALITY, SUF, TARGET, A, B, C, X, Y, toy_vocab
from tests.test_grpo import weak_sft as weak_sft  # noqa: F401  (module fixture: a weakly trained T5 SFT model)
from training.generator import GeneratorModule, load_generator
from training.grpo import GRPOConfig, GRPOModule, group_advantages, quality_vector, sample_rewards, train_grpo
from training.rewards import RewardConfig, interest_aware_reward
from training.sequence_data import SequenceDataModule
from training.settings import GeneratorConfig, SequenceSettings

torch.set_num_threads(1)

# ----------------------------------------------------------------------------- rewards


def _reward(samples, items, quality, shape, config=None):
    return interest_aware_reward(torch.tensor([samples]), torch.tensor([items]), TARGET, torch.tensor([5]),
                                 torch.tensor([quality]), levels=3, config=config or RewardConfig(), shape=shape)


GROUP = [
    [A, B, C, EOS, 0],  # the target (item 5)
    [A, B, Y, EOS, 0],  # valid miss sharing 2 levels
    [X, B, C, EOS, 0],  # valid miss, wrong at the first level (later matches do not count)
    [A, X, Y, 0, 0],  # invalid (no item) sharing 1 level
    [A, B, C, SUF, EOS],  # same codes, another item (suffix): a miss sharing every level
]
GROUP_ITEMS = [5, 3, 2, -1, 6]


def test_rank_reward_hand_computed():
    r = _reward(GROUP, GROUP_ITEMS, quality=1.0, shape="rank")
    # hit: 1 + α·q = 1.5 and nothing else; misses: λ_valid·valid + λ_pref·LCP/3, no q
    expected = torch.tensor([[1.5, 0.1 + 0.2, 0.1, 0.1, 0.1 + 0.3]])
    assert torch.allclose(r.total, expected, atol=1e-6)
    assert r.exact.tolist() == [[1.0, 0.0, 0.0, 0.0, 0.0]]
    assert torch.allclose(r.quality, torch.tensor([[0.5, 0, 0, 0, 0]]))
    assert torch.allclose(r.valid, torch.tensor([[0.0, 0.1, 0.1, 0.0, 0.1]]))  # no validity credit on the hit
    assert torch.allclose(r.prefix, torch.tensor([[0.0, 0.2, 0.0, 0.1, 0.3]]), atol=1e-6)  # none on the hit
    assert torch.allclose(r.exact + r.valid + r.prefix + r.quality, r.total)
    # q never rewards a miss: every miss earns the same whatever the target's quality; the hit earns 1 + α·q
    for q in (0.0, 0.3, 1.0):
        rq = _reward(GROUP, GROUP_ITEMS, quality=q, shape="rank")
        assert torch.equal(rq.total[0, 1:], r.total[0, 1:])
        assert float(rq.quality[0, 1:].abs().sum()) == 0.0
        assert float(rq.total[0, 0]) == pytest.approx(1 + 0.5 * q)
    # the hit outranks every miss, however much of the target's prefix the miss shares
    assert float(r.total[0, 0]) > float(r.total[0, 1:].max())
    cfg = RewardConfig(lambda_valid=0.0, lambda_pref=0.9, alpha=2.0)
    r2 = _reward(GROUP, GROUP_ITEMS, quality=0.25, shape="rank", config=cfg)
    assert torch.allclose(r2.total, torch.tensor([[1.5, 0.6, 0.0, 0.3, 0.9]]), atol=1e-6)


def _old_reward(tokens, items, target_tokens, target_item, target_quality, levels, config):
    """The reward before issue 15, verbatim."""
    exact = (items == target_item[:, None]) & (items >= 0)
    valid = items >= 0
    same = tokens[..., :levels] == target_tokens[:, None, :levels]
    lcp = same.long().cumprod(dim=-1).sum(dim=-1)
    q = target_quality.to(torch.float32)[:, None]
    return (exact.float() + config.lambda_valid * valid.float() + config.lambda_pref * lcp.float() / levels
            + config.alpha * q * exact.float())


def test_exact_reward_is_unchanged():
    r = _reward(GROUP, GROUP_ITEMS, quality=0.6, shape="exact")
    assert torch.allclose(r.total, torch.tensor([[1.7, 0.3, 0.1, 0.1, 0.4]]), atol=1e-6)
    # a fixed random batch: the same numbers as the old formula, bit for bit; "exact" stays the function default
    g = torch.Generator().manual_seed(0)
    b, grp, t = 6, 10, 5
    tokens = torch.randint(2, 6, (b, grp, t), generator=g)
    target_tokens = torch.randint(2, 6, (b, t), generator=g)
    tokens[:, :3] = target_tokens[:, None]  # some full-prefix candidates
    target = torch.randint(0, 4, (b,), generator=g)
    items = torch.randint(-1, 4, (b, grp), generator=g)
    items[:, 0] = target
    quality = torch.rand(b, generator=g)
    cfg = RewardConfig(lambda_valid=0.2, lambda_pref=0.7, alpha=1.3)
    old = _old_reward(tokens, items, target_tokens, target, quality, 3, cfg)
    new = interest_aware_reward(tokens, items, target_tokens, target, quality, levels=3, config=cfg, shape="exact")
    assert torch.equal(new.total, old)
    default = interest_aware_reward(tokens, items, target_tokens, target, quality, levels=3, config=cfg)
    assert torch.equal(default.total, old)
    with pytest.raises(ValueError, match="shape"):
        interest_aware_reward(tokens, items, target_tokens, target, quality, levels=3, shape="ndcg")


def test_group_advantages_mask_unfound_candidates():
    r = torch.tensor([[1.5, 0.3, 0.1, 0.0], [1.0, 0.2, 0.0, 0.0], [0.4, 0.0, 0.0, 0.0]])
    found = torch.tensor([[True, True, True, True], [True, True, False, False], [True, False, False, False]])
    adv, weight = group_advantages(r, found, 1e-6)
    # row 0: every candidate found, the plain normalisation
    full = (r[0] - r[0].mean()) / (r[0].std() + 1e-6)
    torch.testing.assert_close(adv[0], full)
    # row 1: normalised over its two found candidates only; the unfound slots carry no weight or advantage
    two = r[1, :2]
    torch.testing.assert_close(adv[1, :2], (two - two.mean()) / (two.std() + 1e-6))
    assert weight[1].tolist() == [1.0, 1.0, 0.0, 0.0] and adv[1, 2:].abs().sum() == 0
    # row 2: one candidate has nothing to be ranked against
    assert weight[2].sum() == 0 and adv[2].abs().sum() == 0
    # all found: bit for bit the original formula
    plain, ones = group_advantages(r, torch.ones_like(found), 1e-6)
    assert torch.equal(plain, (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-6))
    assert torch.equal(ones, torch.ones_like(r))


# ----------------------------------------------------------------------------- beam rollouts


def _scores(module: GeneratorModule, batch, tokens: torch.Tensor) -> torch.Tensor:
    """Sum of the policy's token log-probabilities [B, G] of the group's SIDs, as GRPO computes them."""
    b, g, t = tokens.shape
    with torch.no_grad():
        lp, mask = GRPOModule._group_logprobs(module, module.model, batch, tokens.reshape(b * g, t), g)
    return (lp * mask).sum(1).view(b, g)


def _check_beam_group(module: GeneratorModule, batch) -> None:
    vocab = module.vocab
    q = quality_vector(vocab, QUALITY)
    # group_size = the catalogue (8 items): the beam is exhaustive, so it is every item, best first
    tokens, items, rewards = sample_rewards(module, batch, q, GRPOConfig(group_size=8, rollout="beam"))
    assert (items >= 0).all()
    assert all(sorted(row) == list(range(8)) for row in items.tolist())  # distinct, valid, all of them
    scores = _scores(module, batch, tokens)
    assert (scores[:, :-1] >= scores[:, 1:] - 1e-4).all()  # ranked by the policy
    assert torch.equal(items[:, 0], items.gather(1, scores.argmax(1, keepdim=True))[:, 0])  # the policy's top-1
    for row in range(len(items)):  # each rollout's tokens are its item's SID
        for j in range(8):
            sid = [tok for tok in vocab.sid_tokens[int(items[row, j])] if tok != vocab.pad_id]
            assert tokens[row, j, :len(sid)].tolist() == sid
    # exactly one hit per row (the target is in the exhaustive group), paid 1 + α·q
    assert rewards.exact.sum(1).tolist() == [1.0] * len(items)
    hit_reward = (rewards.total * rewards.exact).sum(1)
    torch.testing.assert_close(hit_reward, 1 + 0.5 * q[batch["target_index"]])
    # a narrower group: the top-4 distinct valid items, starting with the policy's beam top-1
    _, top4, _ = sample_rewards(module, batch, q, GRPOConfig(group_size=4, rollout="beam"))
    assert top4.shape == (len(items), 4) and (top4 >= 0).all()
    assert all(len(set(row)) == 4 for row in top4.tolist())
    assert torch.equal(top4[:, 0], torch.as_tensor(module.rank(batch, beam_width=4, top_k=1))[:, 0])
    # a group wider than the catalogue: the slots the search cannot fill are -1 (masked out of the loss)
    _, wide, wide_r = sample_rewards(module, batch, q, GRPOConfig(group_size=12, rollout="beam"))
    assert ((wide >= 0).sum(1) == 8).all() and (wide[:, 8:] == -1).all()
    assert wide_r.means(wide >= 0)["exact"] == pytest.approx(1 / 8)


def test_beam_rollouts_t5(weak_sft):
    vocab, dm, sft = weak_sft
    module = load_generator(sft.last_checkpoint)
    _check_beam_group(module, next(iter(dm.loader("train", batch_size=64))))


def test_beam_rollouts_item_causal():
    vocab = toy_vocab()
    sequence = SequenceSettings(max_history=3, use_user_interests=False, history_text=False)
    config = GeneratorConfig(arch="item_causal", d_model=32, d_ff=64, num_heads=2, dropout=0.0, beam_width=8,
                             eval_top_k=5, seed=3)
    module = GeneratorModule(vocab, config, sequence)  # untrained: any policy's beam is its own ranking
    windows = SequenceDataModule.for_settings(toy_splits(), vocab, sequence, batch_size=16, seed=0,
                                              user_prefix=None, layout="items", train_windows=True)
    windows.setup("fit")
    _check_beam_group(module, next(iter(windows.train_dataloader())))


# ----------------------------------------------------------------------------- training


def _policy_quality(checkpoint, dm) -> dict[str, float]:
    """Beam HR@1 on the training windows and the rank reward of the policy's beam top-4 (the training group):
    its mean, and that of its top-1."""
    module = load_generator(checkpoint)
    batch = next(iter(dm.loader("train", batch_size=64)))
    top1 = torch.as_tensor(module.rank(batch, beam_width=8, top_k=1))[:, 0]
    q = quality_vector(module.vocab, QUALITY)
    _, _, r = sample_rewards(module, batch, q, GRPOConfig(group_size=4, rollout="beam", reward_shape="rank"))
    return {"hr@1": float((top1 == batch["target_index"]).float().mean()), "reward": r.means()["total"],
            "top1_reward": float(r.total[:, 0].mean())}


def test_grpo_with_beam_rollouts_learns_keeps_by_validation_and_is_reproducible(weak_sft, tmp_path):
    vocab, dm, sft = weak_sft
    before = _policy_quality(sft.last_checkpoint, dm)
    config = GRPOConfig(rollout="beam", reward_shape="rank", group_size=4, lr=3e-3, max_epochs=10,
                        updates_per_batch=2, seed=1)
    a = train_grpo(sft.last_checkpoint, dm, vocab, QUALITY, config, checkpoint_dir=tmp_path / "a")
    after = _policy_quality(tmp_path / "a" / "last.ckpt", dm)
    assert after["hr@1"] > before["hr@1"] + 0.2  # the target is pushed up the policy's list
    assert after["top1_reward"] > before["top1_reward"] + 0.2
    assert after["reward"] > before["reward"]
    # the keep/replace decision follows validation NDCG@10 (here GRPO improves it: 0.38 -> 0.70)
    assert a.grpo_val_ndcg > a.sft_val_ndcg + 0.1 and a.kept == "grpo"
    assert a.kept == ("sft" if a.grpo_val_ndcg < a.sft_val_ndcg else "grpo")
    assert a.checkpoint == (sft.last_checkpoint if a.kept == "sft" else a.grpo_checkpoint)
    assert a.grpo_val_ndcg == pytest.approx(max(h["val_ndcg@10"] for h in a.history))
    # same seed, same run
    b = train_grpo(sft.last_checkpoint, dm, vocab, QUALITY, config, checkpoint_dir=tmp_path / "b")
    assert a.history == b.history and a.kept == b.kept
    sa = torch.load(tmp_path / "a" / "last.ckpt", weights_only=False)["state_dict"]
    sb = torch.load(tmp_path / "b" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_grpo_validates_every_val_check_interval(weak_sft, tmp_path):
    vocab, _, sft = weak_sft
    dm = SequenceDataModule(toy_splits(), vocab, batch_size=4, seed=0, max_history=3)
    config = GRPOConfig(group_size=12, max_epochs=2, updates_per_batch=1, max_batches_per_epoch=4,
                        val_check_interval=0.5, seed=0)  # 12 > 8 items: every group has masked slots
    result = train_grpo(sft.last_checkpoint, dm, vocab, QUALITY, config, checkpoint_dir=tmp_path)
    # 4 batches an epoch, validated after batches 2 and 4 of both epochs
    assert [(h["epoch"], h["global_step"]) for h in result.history] == [(0, 2), (0, 4), (1, 6), (1, 8)]
    assert result.grpo_val_ndcg == pytest.approx(max(h["val_ndcg@10"] for h in result.history))
    assert result.kept == ("sft" if result.grpo_val_ndcg < result.sft_val_ndcg else "grpo")


def test_mid_epoch_validation_resumes_like_an_uninterrupted_run(weak_sft, tmp_path):
    vocab, _, sft = weak_sft

    def windows():
        return SequenceDataModule(toy_splits(), vocab, batch_size=4, seed=0, max_history=3)

    config = GRPOConfig(group_size=4, lr=1e-3, max_epochs=2, updates_per_batch=1, seed=2)  # val_check_interval 0.25
    full = train_grpo(sft.last_checkpoint, windows(), vocab, QUALITY, config, checkpoint_dir=tmp_path / "full")
    train_grpo(sft.last_checkpoint, windows(), vocab, QUALITY, config, checkpoint_dir=tmp_path / "part", max_epochs=1)
    resumed = train_grpo(sft.last_checkpoint, windows(), vocab, QUALITY, config, checkpoint_dir=tmp_path / "part")
    assert len(full.history) > 2 * config.max_epochs  # several validations per epoch
    assert resumed.history == full.history
    assert (resumed.kept, resumed.grpo_val_ndcg) == (full.kept, full.grpo_val_ndcg)
    sa = torch.load(tmp_path / "full" / "last.ckpt", weights_only=False)["state_dict"]
    sb = torch.load(tmp_path / "part" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


# ----------------------------------------------------------------------------- settings


def test_recommended_defaults():
    c = GRPOConfig()
    assert (c.rollout, c.reward_shape, c.group_size) == ("beam", "rank", 16)
    assert (c.lr, c.kl_beta, c.val_check_interval) == (1e-5, 1e-3, 0.25)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"rollout must be 'sample' or 'beam', got 'greedy'"):
        GRPOConfig(rollout="greedy")
    with pytest.raises(ValueError, match="rollout"):
        from_mapping(GRPOConfig, {"rollout": "top_k"})
    with pytest.raises(ValueError, match=r"reward_shape must be 'exact' or 'rank', got 'ndcg'"):
        GRPOConfig(reward_shape="ndcg")
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=r"val_check_interval must lie in \(0, 1\]"):
            GRPOConfig(val_check_interval=bad)
    GRPOConfig(val_check_interval=1.0)  # once an epoch is allowed
    with pytest.raises(ValueError, match="lambda_valid.*lambda_pref"):
        GRPOConfig(reward=RewardConfig(lambda_valid=0.2, lambda_pref=0.8))  # a near miss would tie the hit
    GRPOConfig(reward_shape="exact", reward=RewardConfig(lambda_valid=0.2, lambda_pref=0.8))  # fine there
