"""The T5 generative recommender: overfitting a toy task, checkpoint resume, reproducibility, bad input."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
import torch

from config_schema import from_mapping
from metrics.ranking import hit_rate_at_k
from tests.helpers import toy_sid_frame, toy_splits  # noqa: E402
from training.generator import (
    GeneratorConfig,
    GeneratorModule,
    load_generator,
    rank_loader,
    recommend,
    train_generator,
)
from training.sequence_data import SequenceDataModule, SequenceSample
from training.sid_trie import SidTrie
from training.sid_vocab import SidVocab

torch.set_num_threads(1)


def toy_vocab() -> SidVocab:
    """8 items, 3 levels; items 6 and 7 collide and get suffix tokens."""
    return SidVocab.from_frame(toy_sid_frame())


def tiny_config(**kw) -> GeneratorConfig:
    base = {"arch": "t5", "d_model": 32, "d_ff": 64, "num_heads": 2, "num_encoder_layers": 1, "num_decoder_layers": 1,
            "dropout": 0.0, "lr": 1e-2, "warmup_ratio": 0.0, "batch_size": 8, "beam_width": 8,
            "eval_top_k": 5, "patience": 1000, "seed": 7}
    base.update(kw)
    return GeneratorConfig(**base)


@pytest.mark.slow  # ~10-20 s on 2 shared cores
def test_overfits_toy_task_to_hr_at_1(tmp_path):
    vocab = toy_vocab()
    config = tiny_config(max_epochs=200, lr=3e-3, lr_schedule="constant", warmup_ratio=0.05,
                         batch_size=20, val_every_n_epochs=100)
    dm = SequenceDataModule(toy_splits(), vocab, batch_size=config.batch_size, seed=config.seed, max_history=3)
    result = train_generator(dm, vocab, config, checkpoint_dir=tmp_path)
    module = load_generator(result.last_checkpoint)
    ranked, targets = rank_loader(module, dm.loader("train"), top_k=5)
    assert hit_rate_at_k(ranked, targets, 1) == 1.0
    # the rule carries over to the held-out positions (every transition is in some user's train prefix)
    assert result.best_val_ndcg >= 0.8
    assert [h["epoch"] for h in result.history] == [99, 199]
    # ranked lists are valid, distinct catalogue items
    assert ((ranked >= 0) & (ranked < 8)).all()
    assert all(len(set(r)) == len(r) for r in ranked.tolist())
    # recommend() speaks item ids: the collided pair i6/i7 is told apart by its suffix
    recs = recommend(module, [SequenceSample("u", ("i3", "i4", "i5"), "", "test"),
                              SequenceSample("u", ("i4", "i5", "i6"), "", "test")], k=3)
    assert [r[0] for r in recs] == ["i6", "i7"]
    assert all(len(r) == 3 for r in recs)


def test_resume_continues_and_matches_uninterrupted_run(tmp_path):
    vocab = toy_vocab()
    config = tiny_config(max_epochs=4, dropout=0.1, lr=3e-3, warmup_ratio=0.25)

    def dm():
        return SequenceDataModule(toy_splits(), vocab, batch_size=config.batch_size, seed=config.seed)

    first = train_generator(dm(), vocab, config, checkpoint_dir=tmp_path / "a", max_epochs=2)
    assert first.resumed_from is None and first.epochs_completed == 2
    resumed = train_generator(dm(), vocab, config, checkpoint_dir=tmp_path / "a")
    assert resumed.resumed_from == str(tmp_path / "a" / "last.ckpt")
    assert resumed.epochs_completed == 4
    assert resumed.global_step == 2 * first.global_step
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3]  # history survives the restart

    fresh = train_generator(dm(), vocab, config, checkpoint_dir=tmp_path / "b")
    assert fresh.global_step == resumed.global_step
    a = torch.load(resumed.last_checkpoint, weights_only=False)["state_dict"]
    b = torch.load(fresh.last_checkpoint, weights_only=False)["state_dict"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["val_ndcg@10"] for h in resumed.history] == [h["val_ndcg@10"] for h in fresh.history]

    # resume=False ignores the existing last.ckpt and trains from scratch
    again = train_generator(dm(), vocab, config, checkpoint_dir=tmp_path / "a", resume=False, max_epochs=1)
    assert again.resumed_from is None and again.epochs_completed == 1


def test_same_seed_same_model_and_metrics(tmp_path):
    vocab = toy_vocab()
    config = tiny_config(max_epochs=2, dropout=0.1)
    runs = []
    for d in ("x", "y"):
        dm = SequenceDataModule(toy_splits(), vocab, batch_size=config.batch_size, seed=config.seed)
        runs.append(train_generator(dm, vocab, config, checkpoint_dir=tmp_path / d))
    assert runs[0].history == runs[1].history and len(runs[0].history) == 2
    m0, m1 = load_generator(runs[0].last_checkpoint), load_generator(runs[1].last_checkpoint)
    assert all(torch.equal(p, q) for p, q in zip(m0.parameters(), m1.parameters(), strict=True))
    other = tiny_config(max_epochs=2, dropout=0.1, seed=8)
    m2 = GeneratorModule(vocab, other)
    assert not torch.equal(next(m2.parameters()), next(GeneratorModule(vocab, config).parameters()))


def test_checkpoint_reloads_vocab_and_config(tmp_path):
    vocab = toy_vocab()
    config = tiny_config(max_epochs=1)
    dm = SequenceDataModule(toy_splits(), vocab, batch_size=8, seed=0)
    result = train_generator(dm, vocab, config, checkpoint_dir=tmp_path)
    module = load_generator(result.last_checkpoint)
    assert module.vocab.item_ids == vocab.item_ids and module.vocab.vocab_size == vocab.vocab_size
    assert module.config == config
    assert module.model.config.vocab_size == vocab.vocab_size


def test_bad_config_and_inputs(tmp_path):
    with pytest.raises(ValueError, match="arch"):
        GeneratorConfig(arch="gpt")
    with pytest.raises(ValueError, match="divisible"):
        GeneratorConfig(d_model=30, num_heads=4)
    with pytest.raises(ValueError, match="eval_top_k"):
        GeneratorConfig(beam_width=5, eval_top_k=10)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['d_modle'\].*allowed: \[.*'d_model'"):
        from_mapping(GeneratorConfig, {"d_modle": 12})
    with pytest.raises(ValueError, match="not a self-describing generator checkpoint"):
        path = tmp_path / "x.ckpt"
        torch.save({"state_dict": {}}, path)
        load_generator(path)
    vocab = toy_vocab()
    module = GeneratorModule(vocab, tiny_config())
    other = SidVocab.from_sids(["a", "b"], [(0, 0), (0, 1)])
    with pytest.raises(ValueError, match="differs from the model's"):
        recommend(module, [SequenceSample("u", ("i1",), "", "test")], SidTrie.from_vocab(other), other)
    with pytest.raises(ValueError, match="trie"):
        recommend(module, [SequenceSample("u", ("i1",), "", "test")], SidTrie.from_vocab(other))
    with pytest.raises(ValueError, match="k must be"):
        recommend(module, [SequenceSample("u", ("i1",), "", "test")], k=0)
    with pytest.raises(KeyError, match="nope"):
        recommend(module, [SequenceSample("u", ("nope",), "", "test")])
    splits = toy_splits()
    dm = SequenceDataModule(splits[splits.split != "valid"], vocab, batch_size=8)
    with pytest.raises(ValueError, match="no validation samples"):
        train_generator(dm, vocab, tiny_config(), checkpoint_dir=tmp_path / "n")


def test_rank_shapes_and_padding():
    vocab = toy_vocab()
    module = GeneratorModule(vocab, tiny_config())
    ids = torch.tensor([[vocab.eos_id, 0, 0]])
    ranked = module.rank({"input_ids": ids, "attention_mask": torch.tensor([[1, 0, 0]])}, beam_width=10, top_k=10)
    assert ranked.shape == (1, 10)
    # only 8 items exist: the last two slots are padding, the rest distinct items
    assert (ranked[0, 8:] == -1).all() and sorted(ranked[0, :8].tolist()) == list(range(8))
    assert np.issubdtype(ranked.dtype, np.integer)


def test_causal_lm_path_trains_and_ranks_valid_items(tmp_path):
    vocab = toy_vocab()
    config = tiny_config(arch="causal_lm_lora", lora_r=0, max_epochs=100, lr=3e-3, lr_schedule="constant",
                         batch_size=20, val_every_n_epochs=50)
    dm = SequenceDataModule(toy_splits(), vocab, batch_size=20, seed=config.seed, max_history=3)
    module = GeneratorModule(vocab, config)
    batch = next(iter(dm.loader("train", batch_size=20)))
    with torch.no_grad():
        loss_before = float(module(batch))
    result = train_generator(dm, vocab, config, checkpoint_dir=tmp_path)
    trained = load_generator(result.last_checkpoint)
    with torch.no_grad():
        loss_after = float(trained(batch))
    assert loss_after < 0.5 * loss_before
    # the SID tokens sit after the LM's own vocabulary
    assert trained.model.lm.get_input_embeddings().num_embeddings == trained.model.offset + vocab.vocab_size
    ranked, targets = rank_loader(trained, dm.loader("train"), beam_width=8, top_k=5)
    assert ((ranked >= 0) & (ranked < 8)).all()  # every beam decodes to a catalogue item
    assert all(len(set(r)) == 5 for r in ranked.tolist())
    assert hit_rate_at_k(ranked, targets, 5) > 5 / 8  # better than chance


def test_causal_lm_lora_needs_peft():
    config = tiny_config(arch="causal_lm_lora", lora_r=4)
    try:
        import peft  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="peft"):
            GeneratorModule(toy_vocab(), config)
        return
    module = GeneratorModule(toy_vocab(), config)
    trainable = [n for n, p in module.model.named_parameters() if p.requires_grad]
    assert any("lora" in n for n in trainable)
