"""Sliding-window SID samples, leakage, encoding and the seeded DataModule."""

import pandas as pd
import pytest
import torch

from training.sequence_data import (
    LABEL_PAD,
    SampleEncoder,
    SequenceDataModule,
    SequenceSample,
    build_samples,
    collate,
)
from training.sid_vocab import SidVocab


def _splits(seqs: dict[str, list[str]]) -> pd.DataFrame:
    rows = []
    for user, items in seqs.items():
        n = len(items)
        for pos, item in enumerate(items):
            split = "test" if pos == n - 1 else "valid" if pos == n - 2 else "train"
            rows.append({"user_id": user, "item_id": item, "timestamp": 100 + pos, "rating": 5.0,
                         "position": pos, "split": split})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # row order must not matter


SEQS = {"u1": ["a", "b", "c", "d", "e"], "u2": ["c", "a", "f"]}


def _vocab() -> SidVocab:
    # items a..f; "a" and "b" collide on (0, 0) and get suffixes
    frame = pd.DataFrame({
        "item_id": list("abcdef"),
        "c0": [0, 0, 1, 1, 2, 2],
        "c1": [0, 0, 1, 2, 0, 1],
        "suffix": pd.array([0, 1, None, None, None, None], dtype="Int64"),
    })
    return SidVocab.from_frame(frame)


def test_exact_samples_by_hand():
    out = build_samples(_splits(SEQS), max_history=2)
    assert out["train"] == [
        SequenceSample("u1", ("a",), "b", "train"),
        SequenceSample("u1", ("a", "b"), "c", "train"),
        # u2 has a single train item: no training window
    ]
    assert out["valid"] == [
        SequenceSample("u1", ("b", "c"), "d", "valid"),
        SequenceSample("u2", ("c",), "a", "valid"),
    ]
    assert out["test"] == [
        SequenceSample("u1", ("c", "d"), "e", "test"),
        SequenceSample("u2", ("c", "a"), "f", "test"),
    ]


def test_held_out_items_never_reach_training_samples():
    seqs = {f"u{i}": [f"i{(i * 7 + j * 3) % 23}" for j in range(6 + i % 5)] for i in range(30)}
    splits = _splits(seqs)
    out = build_samples(splits, max_history=20)
    held = splits[splits.split != "train"]
    for s in out["train"]:
        user_held = set(held[held.user_id == s.user_id].item_id)
        user_train = seqs[s.user_id][: len(seqs[s.user_id]) - 2]
        # items can repeat across positions only through the train prefix itself
        assert s.target in user_train and set(s.history) <= set(user_train)
        assert not (user_held - set(user_train)) & ({s.target} | set(s.history))
    assert len(out["train"]) == sum(len(v) - 3 for v in seqs.values())


def test_encoding_uses_sid_tokens_prefix_and_eos():
    vocab = _vocab()
    enc = SampleEncoder(vocab, user_prefix={"u1": [vocab.vocab_size - 1]})
    row = enc.encode(SequenceSample("u1", ("a", "c"), "b", "train"))
    sid_a = vocab.item_tokens("a")[:-1]
    sid_c = vocab.item_tokens("c")[:-1]
    assert len(sid_a) == 3 and len(sid_c) == 2  # suffix only on the colliding item
    assert row["input_ids"] == [vocab.vocab_size - 1, *sid_a, *sid_c, vocab.eos_id]
    assert row["labels"] == vocab.item_tokens("b")
    assert row["target_index"] == vocab.item_ids.index("b")
    # no prefix for other users
    assert enc.encode(SequenceSample("u2", ("c",), "a", "valid"))["input_ids"] == [*sid_c, vocab.eos_id]


def test_collate_pads_inputs_and_labels():
    vocab = _vocab()
    enc = SampleEncoder(vocab)
    rows = [enc.encode(SequenceSample("u", ("a", "b"), "c", "train")),
            enc.encode(SequenceSample("u", ("c",), "a", "train"))]
    batch = collate(rows, vocab.pad_id)
    assert batch["input_ids"].shape == (2, 7)
    assert batch["attention_mask"].sum(1).tolist() == [7, 3]
    assert batch["input_ids"][1, 3:].eq(vocab.pad_id).all()
    assert batch["labels"][0].tolist() == [*vocab.item_tokens("c"), LABEL_PAD]
    assert batch["labels"][1].tolist() == vocab.item_tokens("a")


def test_datamodule_seeded_shuffle_per_epoch():
    seqs = {f"u{i}": [list("abcdef")[(i + j) % 6] for j in range(6)] for i in range(6)}
    dm = SequenceDataModule(_splits(seqs), _vocab(), batch_size=4, seed=3)

    def order(dm, epoch):
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return [b["target_index"].tolist() + b["input_ids"].flatten().tolist() for b in loader]

    dm2 = SequenceDataModule(_splits(seqs), _vocab(), batch_size=4, seed=3)
    assert order(dm, 0) == order(dm2, 0)
    assert order(dm, 1) == order(dm2, 1)
    assert order(dm, 0) != order(dm, 1)
    assert len(dm.datasets["train"]) == 6 * 3
    assert len(dm.val_dataloader().dataset) == 6 and len(dm.test_dataloader().dataset) == 6
    first = next(iter(dm.val_dataloader()))
    assert isinstance(first["input_ids"], torch.Tensor) and first["input_ids"].dtype == torch.long


def test_bad_inputs_are_named():
    splits = _splits(SEQS)
    with pytest.raises(KeyError, match="position"):
        build_samples(splits.drop(columns="position"))
    with pytest.raises(ValueError, match="unknown split labels"):
        build_samples(splits.assign(split=splits.split.replace("valid", "validation")))
    leaky = splits.copy()
    leaky.loc[(leaky.user_id == "u1") & (leaky.position == 0), "split"] = "test"
    leaky.loc[(leaky.user_id == "u1") & (leaky.position == 4), "split"] = "train"
    with pytest.raises(ValueError, match="chronological order|one"):
        build_samples(leaky)
    with pytest.raises(KeyError, match="'zz'"):
        SampleEncoder(_vocab()).encode(SequenceSample("u", ("zz",), "a", "train"))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        SampleEncoder(_vocab(), user_prefix={"u": [10_000]})
    with pytest.raises(ValueError, match="max_history"):
        build_samples(splits, max_history=0)


def test_interest_prefix_tokens_nearest_item_codes():
    import numpy as np

    from training.sequence_data import interest_prefix_tokens

    vocab = _vocab()
    emb = np.eye(6)  # item k points along axis k
    users = {
        "u1": np.array([[0.1, 0, 0, 0.9, 0, 0], [0, 0, 0, 0, 0.2, 1.0]]),  # nearest: d, then f
        "u2": np.array([[1.0, 0.1, 0, 0, 0, 0], [0.1, 1.0, 0, 0, 0, 0]]),  # a and b share codes (0, 0)
        "u3": np.zeros((0, 6)),
    }
    out = interest_prefix_tokens(users, emb, vocab, n=4, depth=2)
    assert out["u1"] == vocab.item_tokens("d")[:2] + vocab.item_tokens("f")[:2]
    assert out["u2"] == vocab.item_tokens("a")[:2]  # the repeated code group appears once
    assert out["u3"] == []
    assert interest_prefix_tokens(users, emb, vocab, n=1, depth=1)["u1"] == vocab.item_tokens("d")[:1]
    # the prefix feeds the encoder directly
    enc = SampleEncoder(vocab, user_prefix=out)
    assert enc.encode_input("u1", ("c",))[:4] == out["u1"]
    with pytest.raises(ValueError, match="item_embeddings"):
        interest_prefix_tokens(users, np.eye(5), vocab)
    with pytest.raises(ValueError, match="depth"):
        interest_prefix_tokens(users, emb, vocab, depth=3)
    with pytest.raises(ValueError, match="expected \\[k, 6\\]"):
        interest_prefix_tokens({"u": np.ones((1, 4))}, emb, vocab)
