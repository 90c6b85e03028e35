"""Incremental embeddings: only new or changed texts are encoded, and the result equals a full re-encode."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from encoders.embedding_reuse import encode_reusing
from tests.helpers import minilm_embedder


@pytest.fixture(scope="module")
def embed():
    fn, restore = minilm_embedder()
    yield fn
    restore()


def test_only_new_and_changed_texts_are_encoded_and_the_result_equals_a_full_encode(embed) -> None:
    asked: list[list[str]] = []

    def counting(texts: list[str]) -> np.ndarray:
        asked.append(list(texts))
        return embed(texts)

    ids, texts = ["a", "b", "c"], ["garden hose", "pruning shears", "soil meter"]
    first = encode_reusing(ids, texts, counting, None)
    assert (first.reused, first.encoded) == (0, 3)
    previous = pd.DataFrame({"item_id": ids, "text": texts, "embedding": [v.tolist() for v in first.vectors]})
    # tonight: b's text changed, d is new, c left the catalogue, a is as it was
    ids2, texts2 = ["a", "b", "d"], ["garden hose", "pruning shears for roses", "rain barrel"]
    asked.clear()
    second = encode_reusing(ids2, texts2, counting, previous)
    assert asked == [["pruning shears for roses", "rain barrel"]]
    assert (second.reused, second.encoded) == (1, 2) and second.metadata()["reused_share"] == round(1 / 3, 4)
    np.testing.assert_allclose(second.vectors, embed(texts2), atol=1e-5)  # as if everything were re-encoded
    # nothing new: the encoder is not called at all
    asked.clear()
    again = encode_reusing(ids, texts, counting, previous)
    assert asked == [] and again.reused == 3
    np.testing.assert_array_equal(again.vectors, first.vectors)


def test_a_table_from_another_encoder_or_a_bad_frame_is_refused() -> None:
    previous = pd.DataFrame({"item_id": ["a", "b"], "text": ["x", "y"], "embedding": [[0.0] * 3, [0.0] * 3]})
    with pytest.raises(ValueError, match=r"previous embedding of item 'a' has shape \(3,\), the encoder's is \(4,\)"):
        encode_reusing(["a", "c"], ["x", "z"], lambda t: np.ones((len(t), 4)), previous)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['text'\]"):
        encode_reusing(["a"], ["x"], lambda t: np.ones((len(t), 3)), previous.drop(columns="text"))
    with pytest.raises(ValueError, match="2 item ids for 1 texts"):
        encode_reusing(["a", "b"], ["x"], lambda t: np.ones((len(t), 3)), None)


def test_the_asset_encodes_only_new_or_changed_items_on_a_rerun(digr_env) -> None:
    import dagster as dg

    from assets.discretisation import item_embeddings
    from assets.ingestion import ingest_source, interaction_splits
    from digr_dagster.resources.models import TextEncoderResource
    from digr_dagster.resources.warehouse import Warehouse

    resources = {"warehouse": Warehouse(), "text_encoder": TextEncoderResource()}
    plain = {"ops": {"item_embeddings": {"config": {"with_interests": False}}}}
    with dg.DagsterInstance.get() as instance:
        assert dg.materialize([ingest_source, interaction_splits], instance=instance, resources=resources).success
        first = dg.materialize([item_embeddings], instance=instance, resources=resources, run_config=plain)
        meta = first.asset_materializations_for_node("item_embeddings")[0].metadata
        n = meta["dagster/row_count"].value
        assert (meta["embeddings_reused"].value, meta["embeddings_encoded"].value) == (0, n)
        before = Warehouse().read("item_embeddings").set_index("item_id")
        items = Warehouse().read("items")
        changed = items["item_id"].iloc[0]
        items.loc[items["item_id"] == changed, "title"] = "a title the catalogue never had"
        Warehouse().replace({"items": items})
        again = dg.materialize([item_embeddings], instance=instance, resources=resources, run_config=plain)
    meta = again.asset_materializations_for_node("item_embeddings")[0].metadata
    assert (meta["embeddings_reused"].value, meta["embeddings_encoded"].value) == (n - 1, 1)
    after = Warehouse().read("item_embeddings").set_index("item_id")
    kept = after.index != changed
    assert (after.loc[kept, "text"] == before.loc[kept, "text"]).all()
    np.testing.assert_array_equal(np.stack(after.loc[kept, "embedding"]), np.stack(before.loc[kept, "embedding"]))
    assert "a title the catalogue never had" in after.loc[changed, "text"]
    assert not np.allclose(after.loc[changed, "embedding"], before.loc[changed, "embedding"])
