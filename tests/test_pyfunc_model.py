"""The recommender pyfunc: logged, registered, loaded back through models:/<name>@champion, same answers."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import fluent
from mlflow.tracking._model_registry import utils as registry_utils
from mlflow.tracking._tracking_service import utils as tracking_utils

from serving.pyfunc_model import (
    OUTPUT_COLUMNS,
    RecommendationInputError,
    explain,
    log_recommender,
)
from serving.registry import CHAMPION, promote
from tests.helpers import toy_sid_frame
from tests.helpers import toy_splits as shared_toy_splits
from training.generator import GeneratorConfig, load_generator, recommend, train_generator
from training.sequence_data import SequenceDataModule, SequenceSample
from training.sid_vocab import SidVocab

torch.set_num_threads(1)

N_ITEMS = 8
TITLES = {
    "i0": "brass telescope eyepiece", "i1": "glass beaker set", "i2": "digital lab scale",
    "i3": "microscope slide covers", "i4": "bunsen burner tubing", "i5": "telescope star chart",
    "i6": "pipette tips box", "i7": "pipette tips rack",
}
K, BEAM = 4, 6


def toy_vocab() -> SidVocab:
    """8 items on 3 levels; i6 and i7 share codes, so they carry suffix tokens."""
    return SidVocab.from_frame(toy_sid_frame())


def toy_splits(n_users: int = 4, length: int = 7) -> pd.DataFrame:
    """User k sees items k, k+1, ... (mod 8), split leave-one-out."""
    return shared_toy_splits(n_users, length)


def train_tiny_recommender(out_dir: Path) -> tuple[Path, dict[str, list[int]]]:
    """A 2-epoch tiny T5 checkpoint and the per-user interest tokens it was trained with."""
    vocab = toy_vocab()
    user_prefix = {"u0": [int(t) for t in vocab.item_tokens("i5")[:2]]}
    config = GeneratorConfig(arch="t5", d_model=32, d_ff=64, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
                             dropout=0.0, lr=1e-2, warmup_ratio=0.0, batch_size=8, beam_width=BEAM, eval_top_k=K,
                             max_epochs=2, seed=3)
    dm = SequenceDataModule(toy_splits(), vocab, batch_size=8, seed=3, user_prefix=user_prefix)
    result = train_generator(dm, vocab, config, checkpoint_dir=out_dir)
    return Path(result.last_checkpoint), user_prefix


@contextmanager
def local_mlflow_store(root: Path) -> Iterator[str]:
    """MLflow pointed at a sqlite store and an artifact folder under ``root``; yields the tracking URI.

    ``set_tracking_uri``/``set_experiment`` write module globals and environment variables; all of them are
    recorded first, so leaving the block restores them and no later test inherits this store.
    """
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tracking_utils, "_tracking_uri", uri)
        mp.setattr(registry_utils, "_registry_uri", uri)
        mp.setattr(fluent, "_active_experiment_id", None)
        for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID"):
            mp.setenv(var, "")  # records the original value (delenv of an unset variable records nothing)
            mp.delenv(var)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        experiment = "digr-serving-tests"
        if mlflow.get_experiment_by_name(experiment) is None:
            mlflow.create_experiment(experiment, artifact_location=(root / "artifacts").as_uri())
        mlflow.set_experiment(experiment)
        yield uri


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny_recommender(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with local_mlflow_store(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


@pytest.fixture(scope="module")
def champion(trained, store):
    """Version 1 of 'digr-test', promoted to champion, and the same model loaded back from the registry."""
    ckpt, user_prefix = trained
    mv = log_recommender(
        ckpt, TITLES, name="digr-test", k=K, beam_width=BEAM,
        lineage_tags={"dagster_run_id": "run-1", "semantic_ids_hash": "abc123"},
        metrics={"val_ndcg@10": 0.25, "val_hr@10": 0.5},
        item_interests={"i5": ["astronomy hobby"]},
        user_prefix=user_prefix, user_interests={"u0": ["pipette work", "astronomy at night"]},
    )
    promote(mlflow.MlflowClient(), "digr-test", mv.version)
    return mv, mlflow.pyfunc.load_model("models:/digr-test@champion")


def test_registered_version_carries_lineage_metrics_and_hashes(champion):
    mv, _ = champion
    assert mv.tags["lineage.dagster_run_id"] == "run-1" and mv.tags["lineage.semantic_ids_hash"] == "abc123"
    assert float(mv.tags["metric.val_ndcg_at_10"]) == 0.25 and float(mv.tags["metric.val_hr_at_10"]) == 0.5
    assert len(mv.tags["digr.sid_vocab_sha256"]) == 64 and len(mv.tags["digr.weights_sha256"]) == 64
    assert mv.run_id  # logged inside an MLflow run
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("digr-test", CHAMPION).version) == str(mv.version)
    run = client.get_run(mv.run_id)
    assert run.info.status == "FINISHED"  # the run opened for registration is closed again


def test_loaded_champion_matches_in_process_recommendations(trained, champion):
    ckpt, user_prefix = trained
    _, model = champion
    histories = [["i1", "i2", "i3"], ["i4", "i5"], ["i6"], ["i2", "i3", "i4", "i5", "i6"]]
    users = ["u0", "u1", None, "u3"]
    out = model.predict(pd.DataFrame({"history": histories, "user_id": users}))
    assert list(out.columns) == list(OUTPUT_COLUMNS) and len(out) == len(histories)

    module = load_generator(ckpt)
    samples = [SequenceSample(u or "", tuple(h), "", "test") for u, h in zip(users, histories, strict=True)]
    expected = recommend(module, samples, k=K, beam_width=BEAM, user_prefix=user_prefix)
    assert [list(r) for r in out["item_ids"]] == expected
    # the interest tokens of u0 change its input, so they must reach the model
    without_prefix = recommend(module, samples[:1], k=K, beam_width=BEAM)
    first_scores = list(out["scores"][0])
    plain = model.predict(pd.DataFrame({"history": [histories[0]]}))
    assert list(plain["item_ids"][0]) == without_prefix[0]
    assert list(plain["scores"][0]) != first_scores

    for items, scores in zip(out["item_ids"], out["scores"], strict=True):
        assert len(items) == K and len(set(items)) == K and set(items) <= set(TITLES)
        scores = list(scores)
        assert all(math.isfinite(s) and s <= 0 for s in scores)  # log-probabilities
        assert scores == sorted(scores, reverse=True)
    # deterministic
    again = model.predict(pd.DataFrame({"history": histories, "user_id": users}))
    assert [list(r) for r in again["scores"]] == [list(r) for r in out["scores"]]


def test_explanations_use_interests_or_history_titles(champion):
    _, model = champion
    out = model.predict(pd.DataFrame({
        "history": [["i1", "i2"], ["i1", "i2"], ["i3"]],
        "interests": [["home chemistry"], None, None],
        "user_id": [None, "u0", "u2"],
    }))
    assert list(out["explanations"][0]) == ["home chemistry"]  # given interests win
    assert sorted(out["explanations"][1]) == ["astronomy at night", "pipette work"]  # stored for u0
    assert list(out["explanations"][2]) == [TITLES["i3"]]  # no interests: the history's titles
    newest_first = model.predict(pd.DataFrame({"history": [["i1", "i2", "i1"]]}))
    assert list(newest_first["explanations"][0]) == [TITLES["i1"], TITLES["i2"]]


def test_explain_orders_interests_by_overlap_with_recommendations():
    texts = ["pipette tips box", "pipette tips rack", "telescope star chart"]
    interests = ["astronomy", "stargazing with a telescope", "liquid handling with a pipette"]
    assert explain(interests, texts, 5) == [
        "liquid handling with a pipette", "stargazing with a telescope", "astronomy"
    ]
    assert explain(interests, texts, 1) == ["liquid handling with a pipette"]
    assert explain([], texts, 3) == []


def test_long_histories_keep_their_most_recent_items(trained, champion):
    ckpt, _ = trained
    _, model = champion
    assert load_generator(ckpt).sequence.max_history == 20  # the cap the checkpoint was trained with
    long = [f"i{j % N_ITEMS}" for j in range(27)]
    out = model.predict(pd.DataFrame({"history": [long, long[-20:], long[-21:]]}))
    assert list(out["item_ids"][0]) == list(out["item_ids"][1])
    assert list(out["scores"][0]) == list(out["scores"][1]) == list(out["scores"][2])


def test_unknown_items_are_dropped_and_reported(trained, champion):
    ckpt, _ = trained
    _, model = champion
    out = model.predict(pd.DataFrame({"history": [["zz-9", "i2", "i3", "nope"]]}))
    assert list(out["unknown_items"][0]) == ["zz-9", "nope"]
    expected = recommend(load_generator(ckpt), [SequenceSample("", ("i2", "i3"), "", "test")], k=K, beam_width=BEAM)
    assert list(out["item_ids"][0]) == expected[0]


def test_bad_input_gives_clear_errors(champion):
    _, model = champion
    with pytest.raises(RecommendationInputError, match=r"unknown items: \['x1', 'x2'\]"):
        model.predict(pd.DataFrame({"history": [["i1"], ["x1", "x2"]]}))
    with pytest.raises(RecommendationInputError, match="empty"):
        model.predict(pd.DataFrame({"history": [np.array([], dtype=object)]}))
    with pytest.raises(Exception, match="history"):  # MLflow's schema check names the missing column
        model.predict(pd.DataFrame({"items": [["i1"]]}))
    raw = model.unwrap_python_model()
    with pytest.raises(RecommendationInputError, match="'history' must be a list"):
        raw.predict(None, pd.DataFrame({"history": ["i1 i2"]}))
    with pytest.raises(RecommendationInputError, match="needs a 'history' column"):
        raw.predict(None, pd.DataFrame({"items": [["i1"]]}))


def test_log_recommender_rejects_bad_arguments(trained, store, tmp_path):
    ckpt, _ = trained
    with pytest.raises(FileNotFoundError, match="does not exist"):
        log_recommender(tmp_path / "missing.ckpt", TITLES, name="bad")
    with pytest.raises(ValueError, match="k <= beam_width"):
        log_recommender(ckpt, TITLES, name="bad", k=8, beam_width=4)
    with pytest.raises(ValueError, match="finite"):
        log_recommender(ckpt, TITLES, name="bad", metrics={"val_ndcg@10": float("nan")})
    with pytest.raises(ValueError, match="outside the vocabulary"):
        log_recommender(ckpt, TITLES, name="bad", k=2, beam_width=4, user_prefix={"u0": [10_000]})
    not_a_generator = tmp_path / "x.ckpt"
    torch.save({"state_dict": {}}, not_a_generator)
    with pytest.raises(ValueError, match="not a self-describing generator checkpoint"):
        log_recommender(not_a_generator, TITLES, name="bad")
    causal = tmp_path / "causal.ckpt"
    torch.save({"hyper_parameters": {"vocab": toy_vocab().to_dict(), "config": {"arch": "causal_lm_lora"},
                                     "sequence": {}}, "state_dict": {}}, causal)
    with pytest.raises(ValueError, match="got 'causal_lm_lora'"):
        log_recommender(causal, TITLES, name="bad")
    with pytest.raises(mlflow.exceptions.MlflowException):
        mlflow.MlflowClient().get_registered_model("bad")  # nothing was registered by the failures


def test_item_level_generator_is_served_with_its_history_text(store, tmp_path):
    """An arch="item_causal" model with history text: logged, registered, loaded back, same answers."""
    from training.sequence_data import layout_of
    from training.settings import SequenceSettings

    vocab = toy_vocab()
    sequence = SequenceSettings(max_history=3, use_user_interests=False, history_text=True)
    config = GeneratorConfig(arch="item_causal", d_model=32, d_ff=64, num_heads=2, num_encoder_layers=1,
                             dropout=0.0, lr=1e-2, warmup_ratio=0.0, batch_size=8, beam_width=BEAM, eval_top_k=K,
                             max_epochs=2, seed=3)
    text = np.random.default_rng(0).normal(size=(N_ITEMS, 5)).astype(np.float32)
    dm = SequenceDataModule.for_settings(toy_splits(), vocab, sequence, batch_size=8, seed=3, user_prefix=None,
                                         layout=layout_of(config.arch))
    result = train_generator(dm, vocab, config, sequence=sequence, checkpoint_dir=tmp_path, item_text=text)
    mv = log_recommender(Path(result.last_checkpoint), TITLES, name="digr-item-test", k=K, beam_width=BEAM,
                         lineage_tags={"dagster_run_id": "run-2"}, metrics={"val_ndcg@10": 0.1})
    model = mlflow.pyfunc.load_model(f"models:/digr-item-test/{mv.version}")
    histories = [["i1", "i2", "i3"], ["i0", "i1", "i2", "i3", "i4"]]
    out = model.predict(pd.DataFrame({"history": histories}))
    module = load_generator(result.last_checkpoint)
    expected = recommend(module, [SequenceSample("", tuple(h), "", "test") for h in histories], k=K, beam_width=BEAM)
    assert [list(r) for r in out["item_ids"]] == expected
    assert all(len(set(r)) == K for r in out["item_ids"])
    assert all(s <= 0 for row in out["scores"] for s in row)
