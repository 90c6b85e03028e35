"""Warm start: a generator continues from a trained one, token rows matched by meaning; a source of other
semantic IDs, sizes or history cap is refused with every reason, and the asset starts cold and says why."""

from __future__ import annotations

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from assets.common import frame_hash
from assets.recommender import recommender_sft
from digr_dagster.resources.mlflow_tracking import MlflowTracking
from digr_dagster.resources.models import TextEncoderResource
from digr_dagster.resources.warehouse import Warehouse
from serving.pyfunc_model import log_recommender, registered_checkpoint
from serving.registry import PromotionSettings
from tests.helpers import toy_sid_frame, toy_splits
from tests.test_pyfunc_model import local_mlflow_store
from training.generator import GeneratorModule
from training.settings import GeneratorConfig, SequenceSettings
from training.sid_vocab import SidVocab
from training.warm_start import (
    WarmStartError,
    WarmStartSource,
    sid_agreement,
    token_correspondence,
    warm_start,
    warm_start_problems,
)

SEQ = SequenceSettings(max_history=6, history_text=False)
TINY = dict(d_model=16, d_ff=32, num_heads=2, num_encoder_layers=1, num_decoder_layers=1, dropout=0.0,
            beam_width=4, eval_top_k=4)


def _frame_with_new_item() -> pd.DataFrame:
    """The toy SIDs plus item i8 on a level-0 code no earlier item had (the vocabulary grows a token)."""
    frame = toy_sid_frame()
    new = pd.DataFrame({"item_id": ["i8"], "c0": [2], "c1": [0], "c2": [1], "suffix": pd.array([None], "Int64")})
    return pd.concat([frame, new], ignore_index=True)


def _module(vocab: SidVocab, seed: int, arch: str = "item_causal", sequence: SequenceSettings = SEQ,
            **overrides) -> GeneratorModule:
    return GeneratorModule(vocab, GeneratorConfig(arch=arch, seed=seed, **{**TINY, **overrides}), sequence)


def _source(module: GeneratorModule, name: str = "source") -> WarmStartSource:
    state = {k: v.clone() for k, v in module.model.state_dict().items()}
    return WarmStartSource(name, module.vocab, module.config, module.sequence, module.text_dim, state)


def test_token_correspondence_pairs_tokens_by_level_code_and_suffix():
    old = SidVocab.from_frame(toy_sid_frame())  # level sizes [2, 2, 2], suffix size 2
    new = SidVocab.from_frame(_frame_with_new_item())  # level 0 grows to 3: every later token moves by one
    new_ids, old_ids = token_correspondence(old, new)
    pairs = dict(zip(old_ids.tolist(), new_ids.tolist(), strict=True))
    assert [pairs[t] for t in range(8)] == list(range(8))  # the specials stay
    assert pairs[8] == 8 and pairs[9] == 9  # level 0 codes 0, 1
    assert pairs[10] == 11 and pairs[11] == 12  # level 1 codes 0, 1 (after the new level-0 code 2 at 10)
    assert pairs[14] == 15 and pairs[15] == 16  # suffixes 0, 1
    assert len(pairs) == old.vocab_size and new.vocab_size == old.vocab_size + 1
    assert sid_agreement(old, new) == (8, 8)


def test_warm_start_copies_what_was_learnt_and_leaves_new_tokens_and_items_fresh():
    old_vocab, new_vocab = SidVocab.from_frame(toy_sid_frame()), SidVocab.from_frame(_frame_with_new_item())
    trained = _module(old_vocab, seed=0)
    fresh = _module(new_vocab, seed=1)
    before = {k: v.clone() for k, v in fresh.model.state_dict().items()}
    report = warm_start(fresh.model, new_vocab, fresh.config, SEQ, _source(trained), min_same_sid_share=0.9)
    assert (report.shared_items, report.same_sid_items, report.new_items) == (8, 8, 1)
    assert (report.tokens_copied, report.tokens_fresh) == (old_vocab.vocab_size, 1)
    after, source = fresh.model.state_dict(), trained.model.state_dict()
    new_ids, old_ids = token_correspondence(old_vocab, new_vocab)
    for key in ("token_in.weight", "token_out.weight", "out.weight", "out.bias"):
        assert torch.equal(after[key][new_ids], source[key][old_ids])
        assert torch.equal(after[key][10], before[key][10])  # the new level-0 code keeps its seeded start
    assert torch.equal(after["layers.layers.0.linear1.weight"], source["layers.layers.0.linear1.weight"])
    # the same history of known items reads the same state and scores every known first code alike
    history = torch.tensor([[old_vocab.item_index(i) for i in ("i1", "i2", "i3")]])
    new_history = torch.tensor([[new_vocab.item_index(i) for i in ("i1", "i2", "i3")]])
    trained.model.eval()
    fresh.model.eval()
    with torch.no_grad():
        old_state, new_state = trained.model.last_state(history), fresh.model.last_state(new_history)
        assert torch.allclose(old_state, new_state, atol=1e-6)
        first_step = torch.zeros(1, 1, dtype=torch.long)  # step 0 reads no earlier token
        old_logits = trained.model.step_logits(trained.model.head_states(old_state, first_step)[:, 0], 0)
        new_logits = fresh.model.step_logits(fresh.model.head_states(new_state, first_step)[:, 0], 0)
    assert old_logits.shape == (1, 2) and new_logits.shape == (1, 3)  # the new level-0 code is a candidate
    assert torch.allclose(old_logits, new_logits[:, :2], atol=1e-5)  # level-0 codes 0 and 1 score alike


def test_t5_warm_start_with_the_same_vocabulary_reproduces_the_source():
    vocab = SidVocab.from_frame(toy_sid_frame())
    seq = SequenceSettings(max_history=6, history_text=False)
    trained, fresh = _module(vocab, 0, "t5", seq), _module(vocab, 1, "t5", seq)
    report = warm_start(fresh.model, vocab, fresh.config, seq, _source(trained), min_same_sid_share=1.0)
    assert report.tokens_fresh == 0 and report.same_sid_share == 1.0
    for key, value in trained.model.state_dict().items():
        assert torch.equal(fresh.model.state_dict()[key], value), key


def test_a_source_of_other_sids_sizes_or_history_cap_is_refused_and_the_model_is_untouched():
    vocab = SidVocab.from_frame(toy_sid_frame())
    shuffled = toy_sid_frame()
    shuffled[["c0", "c1", "c2"]] = shuffled[["c0", "c1", "c2"]].to_numpy()[[5, 4, 0, 1, 2, 3, 6, 7]]
    other_sids = SidVocab.from_frame(shuffled)
    fresh = _module(vocab, seed=1)
    before = {k: v.clone() for k, v in fresh.model.state_dict().items()}

    with pytest.raises(WarmStartError, match=r"only 25\.0% of the 8 shared items keep their semantic ID"):
        warm_start(fresh.model, vocab, fresh.config, SEQ, _source(_module(other_sids, 0)), min_same_sid_share=0.9)
    wider = _module(vocab, 0, d_model=32)
    longer = _module(vocab, 0, sequence=SequenceSettings(max_history=9, history_text=False))
    problems = warm_start_problems(_source(wider), vocab, fresh.config, SEQ, min_same_sid_share=0.9)
    assert problems == ["d_model: source 32, new 16"]
    with pytest.raises(WarmStartError, match=r"sequence\.max_history: source 9, new 6"):
        warm_start(fresh.model, vocab, fresh.config, SEQ, _source(longer), min_same_sid_share=0.9)
    strangers = toy_sid_frame().assign(item_id=[f"x{i}" for i in range(8)])
    with pytest.raises(WarmStartError, match="knows none of the new catalogue's items"):
        warm_start(fresh.model, vocab, fresh.config, SEQ, _source(_module(SidVocab.from_frame(strangers), 0)),
                   min_same_sid_share=0.9)
    lora = GeneratorConfig(arch="causal_lm_lora", **TINY)
    assert "arch 'causal_lm_lora' has no warm start" in " ".join(
        warm_start_problems(_source(fresh), vocab, lora, SEQ, min_same_sid_share=0.9))
    for key, value in before.items():
        assert torch.equal(fresh.model.state_dict()[key], value), key


def test_a_file_that_is_not_a_generator_checkpoint_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(WarmStartError, match=r"not a self-describing generator checkpoint \(lacks \['vocab'"):
        WarmStartSource.from_checkpoint(path)


def test_warm_start_settings_are_checked():
    with pytest.raises(ValueError, match="warm_start must be 'off', 'champion' or 'previous', got 'latest'"):
        GeneratorConfig(warm_start="latest")
    with pytest.raises(ValueError, match=r"warm_start_min_same_sid must lie in \[0, 1\], got 1.5"):
        GeneratorConfig(warm_start_min_same_sid=1.5)


# ----------------------------------------------------------------------------------------------- the asset

def _sft_config(warm_start: str) -> dict:
    generator = {**TINY, "max_epochs": 2, "batch_size": 8, "lr": 1e-2, "warmup_ratio": 0.0, "warm_start": warm_start}
    return {"ops": {"recommender_sft": {"config": {**generator, "max_history": 6, "history_text": False}}}}


def _meta(result) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node("recommender_sft")[0].metadata.items()}


def test_recommender_sft_warm_starts_from_its_previous_model_or_the_champion(digr_env, tmp_path):
    warehouse = Warehouse()
    (tmp_path / "mlflow").mkdir()
    with local_mlflow_store(tmp_path / "mlflow") as uri, dg.DagsterInstance.get() as instance:
        resources = {"warehouse": warehouse, "text_encoder": TextEncoderResource(),
                     "mlflow_tracking": MlflowTracking(tracking_uri=uri)}

        def store(**tables: pd.DataFrame) -> None:  # what the upstream assets would write and record
            warehouse.replace(tables)
            for name in tables:
                stored = warehouse.read(name, order_by="item_id" if name == "semantic_ids" else None)
                instance.report_runless_asset_event(dg.AssetMaterialization(
                    asset_key=name, metadata={"content_hash": frame_hash(stored)}))

        store(interaction_splits=toy_splits(n_users=6), semantic_ids=toy_sid_frame())

        def run(warm: str) -> dict:
            return _meta(dg.materialize([recommender_sft], instance=instance, resources=resources,
                                        run_config=_sft_config(warm)))

        first = run("previous")  # nothing earlier: a cold start that says so
        assert first["warm_start"] == "cold: recommender_sft has no earlier materialisation"
        assert "warm_start_source" not in first
        second = run("previous")
        assert second["warm_start"].startswith("from recommender_sft (run ")
        assert second["warm_start_same_sid_share"] == 1.0 and second["warm_start_new_items"] == 0
        assert second["checkpoint"] != first["checkpoint"]  # its own run folder, not a resume of the first

        # a new item with a SID from a code no item had: the previous model still seeds the run
        store(semantic_ids=_frame_with_new_item(),
              interaction_splits=pd.concat([toy_splits(n_users=6), toy_splits(n_users=1).assign(
                  user_id="u9", item_id=lambda f: np.where(f["position"] == 3, "i8", f["item_id"]))]))
        third = run("previous")
        assert third["warm_start_new_items"] == 1 and third["warm_start_tokens_fresh"] == 1

        # codes reshuffled (another codebook): the run starts cold and names the reason
        shuffled = _frame_with_new_item()
        shuffled[["c0", "c1", "c2"]] = shuffled[["c0", "c1", "c2"]].to_numpy()[[5, 4, 0, 1, 2, 3, 6, 7, 8]]
        store(semantic_ids=shuffled)
        cold = run("previous")
        assert cold["warm_start"].startswith("cold: cannot warm-start from recommender_sft (run ")
        assert "keep their semantic ID" in cold["warm_start"]

        # the champion: none registered yet, then the third model registered and promoted
        store(semantic_ids=_frame_with_new_item())
        name = PromotionSettings().model_name
        assert run("champion")["warm_start"].startswith(f"cold: registered model {name!r} has no version aliased")
        version = log_recommender(third["checkpoint"], {f"i{i}": f"item {i}" for i in range(9)}, name=name,
                                  k=4, beam_width=4)
        mlflow.MlflowClient().set_registered_model_alias(name, "champion", version.version)
        warm = run("champion")
        assert warm["warm_start"] == f"from models:/{name}/{version.version}"
        assert warm["warm_start_same_sid_share"] == 1.0 and warm["warm_start_new_items"] == 0
        assert mlflow.get_run(warm["mlflow_run_id"]).data.tags["warm_start"] == warm["warm_start"]

        # weights that differ from what the version recorded never seed a model
        mlflow.MlflowClient().set_model_version_tag(name, version.version, "digr.weights_sha256", "0" * 64)
        with pytest.raises(ValueError, match="refusing altered weights"):
            registered_checkpoint(name, version.version, tmp_path / "download")
        failed = dg.materialize([recommender_sft], instance=instance, resources=resources,
                                run_config=_sft_config("champion"), raise_on_error=False)
        assert not failed.success
