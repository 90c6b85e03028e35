"""One definition per setting: every stage's launchpad config is derived from its library settings, unknown
keys are errors, and the seed and the history cap travel one road from run config to every stage that
uses them (data order, RQ-VAE, trainer; SFT, GRPO and serving windows) through the checkpoints.

The upstream tables of the trained stages are written directly into a real warehouse and reported to a real
Dagster instance as materialisations, so each test materialises only the assets it follows.
"""

from __future__ import annotations

import inspect
import typing

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from assets.common import frame_hash
from config_schema import REQUIRED, is_settings_class, settings_fields, to_mapping
from digr_dagster.config_models import DerivedConfig
from digr_dagster.definitions import defs
from digr_dagster.resources.mlflow_tracking import MlflowTracking
from digr_dagster.resources.models import TextEncoderResource
from digr_dagster.resources.warehouse import Warehouse
from tests.helpers import toy_sid_frame, toy_splits

#: hand-written configs allowed: a variant's only setting is an override of its reference model's seed
HAND_WRITTEN = {"VariantConfig"}


def _config_classes() -> dict[str, type]:
    """The config class of every asset op that takes one (from its compute function's signature)."""
    out = {}
    for assets_def in defs.assets:
        fn = assets_def.op.compute_fn.decorated_fn
        param = inspect.signature(fn).parameters.get("config")
        if param is not None:
            out[assets_def.op.name] = param.annotation
    return out


def _plain_default(value):
    if isinstance(value, tuple):
        return list(value)
    if is_settings_class(type(value)):
        return to_mapping(value)
    return value


def _assert_parity(config_cls: type[DerivedConfig]) -> int:
    """Every library field but the declared exclusions is in the Dagster config, with the same default, and
    the Dagster config has no field of its own. Returns how many fields were compared."""
    excluded = set(config_cls.__digr_excluded__)
    library = [f for cls in config_cls.library_classes() for f in settings_fields(cls) if f.name not in excluded]
    dagster_fields = config_cls.model_fields
    nested = {k for k, v in dagster_fields.items()
              if isinstance(v.annotation, type) and issubclass(v.annotation, DerivedConfig)
              and k not in {f.name for f in library}}
    assert set(dagster_fields) - nested == {f.name for f in library}, config_cls.__name__
    made = config_cls()
    for f in library:
        got = getattr(made, f.name)
        got = got.model_dump() if isinstance(got, dg.Config) else got
        if f.default is REQUIRED:
            continue
        assert got == _plain_default(f.default), f"{config_cls.__name__}.{f.name}: {got!r} != {f.default!r}"
    for key in nested:  # a baseline's settings nested in the report's config: the same check one level down
        _assert_parity(dagster_fields[key].annotation)
    return len(library)


def test_every_stage_config_is_derived_from_its_library_settings():
    classes = _config_classes()
    assert {"recommender_sft", "recommender_grpo", "semantic_ids", "item_embeddings", "evaluation_report",
            "champion_model", "interaction_splits", "ingest_source", "item_interests"} <= set(classes)
    compared = {}
    for op, cls in classes.items():
        if cls.__name__ in HAND_WRITTEN:
            continue
        assert issubclass(cls, DerivedConfig), f"{op}'s config {cls.__name__} is hand-written"
        compared[op] = _assert_parity(cls)
    assert compared["recommender_sft"] >= 28  # every GeneratorConfig and SequenceSettings field
    # the two exclusions are decided elsewhere, by design: image_dim by the image encoder, and a baseline's
    # history cap / seed / accelerator by the run (the shipped generator's checkpoint, the report's seed)
    assert classes["semantic_ids"].__digr_excluded__ == ("image_dim",)
    sasrec = classes["evaluation_report"].model_fields["sasrec"].annotation
    assert set(sasrec.__digr_excluded__) == {"max_len", "seed", "accelerator"}


def test_unknown_keys_in_any_stage_config_are_named_with_the_allowed_ones():
    job = defs.resolve_job_def("full_study")
    for op, cls in _config_classes().items():
        with pytest.raises(dg.DagsterInvalidConfigError) as info:
            dg.validate_run_config(job, {"ops": {op: {"config": {"not_a_setting": 1}}}})
        message = str(info.value)
        assert '"not_a_setting"' in message and op in message
        some_field = next(iter(cls.model_fields))
        assert some_field in message  # Dagster lists the expected fields
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['max_histroy'\].*allowed: \[.*'max_history'"):
        _config_classes()["recommender_sft"](max_histroy=5)
    with pytest.raises(ValueError, match=r"eval_top_k \(10\) cannot exceed beam_width \(8\)"):
        _config_classes()["recommender_sft"](beam_width=8)  # the library's checks run when the config is made


def test_nested_reward_settings_reach_the_grpo_library_config():
    grpo = _config_classes()["recommender_grpo"](reward={"alpha": 0.0}, seed=4).build()
    assert grpo.reward.alpha == 0.0 and grpo.reward.lambda_pref == 0.3 and grpo.seed == 4


# --------------------------------------------------------------------------- the roads, through real assets


def _resources():
    return {"warehouse": Warehouse(), "mlflow_tracking": MlflowTracking(),
            "text_encoder": TextEncoderResource(batch_size=16)}


def _report(instance, asset: str, frame: pd.DataFrame | None = None, **metadata) -> None:
    """Record ``asset`` as materialised (with its content hash, as the real asset records it)."""
    if frame is not None:
        metadata["content_hash"] = frame_hash(frame)
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset, metadata=metadata))


def _seed_upstream(instance, *, users: int = 6, length: int = 10) -> pd.DataFrame:
    """interaction_splits, semantic_ids and item_quality as the upstream assets would leave them."""
    splits = toy_splits(n_users=users, length=length)
    sids = toy_sid_frame()
    quality = pd.DataFrame({"item_id": [f"i{i}" for i in range(8)], "q": np.linspace(0, 1, 8)})
    # the embeddings the SIDs came from: the default generator reads them as its history text
    vectors = np.random.default_rng(1).normal(size=(8, 6)).astype(np.float32)
    embeddings = pd.DataFrame({"item_id": [f"i{i}" for i in range(8)], "embedding": [v.tolist() for v in vectors]})
    Warehouse().replace({"interaction_splits": splits, "semantic_ids": sids, "item_quality": quality,
                         "item_embeddings": embeddings})
    hashed = splits.sort_values(["user_id", "position"])[["user_id", "item_id", "split"]]
    _report(instance, "interaction_splits", hashed)
    _report(instance, "semantic_ids", sids)
    _report(instance, "interest_rewards")
    return splits


def _materialise(instance, asset_names: list[str], ops: dict) -> dg.ExecuteInProcessResult:
    by_name = {k.to_user_string(): a for a in defs.assets for k in a.keys}
    assets = list({id(by_name[n]): by_name[n] for n in asset_names}.values())
    ops = {op: c for op, c in ops.items() if op in asset_names}  # Dagster refuses config for unselected ops
    result = dg.materialize(assets, instance=instance, resources=_resources(), run_config={"ops": ops},
                            selection=asset_names, raise_on_error=False)
    failures = [str(e.event_specific_data.error)[:1500] for e in result.all_events
                if e.event_type_value == "STEP_FAILURE"]
    assert result.success, failures
    return result


def _meta(result, asset: str) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(asset)[0].metadata.items()}


def _hp(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["hyper_parameters"]


SFT = {"d_model": 16, "d_ff": 32, "num_encoder_layers": 1, "num_decoder_layers": 1, "num_heads": 2,
       "max_epochs": 1, "patience": 1, "beam_width": 10, "batch_size": 8, "use_user_interests": False}


@pytest.mark.slow
def test_history_cap_set_once_shapes_sft_grpo_and_served_windows(digr_env):
    from serving.pyfunc_model import log_recommender

    with dg.DagsterInstance.get() as instance:
        _seed_upstream(instance, length=12)
        ops = {"recommender_sft": {"config": {**SFT, "max_history": 3}},
               "recommender_grpo": {"config": {"group_size": 2, "max_epochs": 1, "batch_size": 8}}}
        result = _materialise(instance, ["recommender_sft", "recommender_grpo"], ops)
        sft, grpo = _meta(result, "recommender_sft"), _meta(result, "recommender_grpo")
        for meta in (sft, grpo):  # SFT and GRPO windows: at most 3 items, and the cap is reached
            assert meta["max_history"] == 3
            assert meta["longest_train_history"] == meta["longest_valid_history"] == meta["longest_test_history"] == 3
        assert _hp(sft["checkpoint"])["sequence"]["max_history"] == 3
        assert _hp(grpo["policy_checkpoint"])["sequence"]["max_history"] == 3

        # the same cap changed in the same one place changes every stage
        ops["recommender_sft"]["config"]["max_history"] = 5
        wider = _materialise(instance, ["recommender_sft", "recommender_grpo"], ops)
        assert _meta(wider, "recommender_sft")["longest_train_history"] == 5
        assert _meta(wider, "recommender_grpo")["longest_test_history"] == 5

    # serving: the pyfunc keeps the last 5 items, because the checkpoint says so
    titles = {f"i{i}": f"item {i}" for i in range(8)}
    version = log_recommender(_meta(wider, "recommender_grpo")["checkpoint"], titles, name="roads", k=3,
                              beam_width=10)
    served = mlflow.pyfunc.load_model(f"models:/roads/{version.version}")
    history = [f"i{j % 8}" for j in range(11)]
    assert served.unwrap_python_model().module.sequence.max_history == 5
    other_past = [f"i{(j + 3) % 8}" for j in range(6)] + history[-5:]
    out = served.predict(pd.DataFrame({"history": [history, history[-5:], other_past]}))
    # only the last 5 count: same items, same scores (up to float rounding between rows of one batch)
    assert list(out["item_ids"][0]) == list(out["item_ids"][1]) == list(out["item_ids"][2])
    np.testing.assert_allclose(list(out["scores"][0]), list(out["scores"][1]), atol=1e-5)
    np.testing.assert_allclose(list(out["scores"][0]), list(out["scores"][2]), atol=1e-5)


@pytest.mark.slow
def test_seed_reaches_data_order_trainer_and_variants(digr_env):
    with dg.DagsterInstance.get() as instance:
        _seed_upstream(instance)
        grpo_ops = {"group_size": 2, "max_epochs": 1, "batch_size": 8}
        ops = {"recommender_sft": {"config": {**SFT, "seed": 7}},
               "recommender_grpo": {"config": {**grpo_ops, "seed": 11}},
               "ablation_no_q_term": {"config": {"seed": 12}}}
        first = _materialise(instance, ["recommender_sft", "recommender_grpo", "ablation_no_q_term"], ops)
        sft, grpo, variant = (_meta(first, a) for a in ("recommender_sft", "recommender_grpo", "ablation_no_q_term"))
        assert sft["seed"] == 7 and _hp(sft["checkpoint"])["config"]["seed"] == 7
        assert grpo["seed"] == 11 and _hp(grpo["policy_checkpoint"])["grpo"]["seed"] == 11
        # the variant: its own seed orders its windows, the rest copied from the GRPO checkpoint, alpha flipped
        assert variant["seed"] == 12 and variant["alpha"] == 0.0
        assert variant["window_order_sha256"] != grpo["window_order_sha256"]
        trained = _hp(variant["policy_checkpoint"])["grpo"]
        assert {**trained, "seed": 11, "reward": {**trained["reward"], "alpha": 0.5}} == \
            _hp(grpo["policy_checkpoint"])["grpo"]
        params = mlflow.get_run(sft["mlflow_run_id"]).data.params
        assert params["config.seed"] == "7" and params["config.max_history"] == "20"

        ops["recommender_sft"]["config"]["seed"] = 8
        second = _materialise(instance, ["recommender_sft"], ops)
        assert _meta(second, "recommender_sft")["window_order_sha256"] != sft["window_order_sha256"]
        ops["recommender_sft"]["config"]["seed"] = 7
        again = _materialise(instance, ["recommender_sft"], ops)
        assert _meta(again, "recommender_sft")["window_order_sha256"] == sft["window_order_sha256"]
        assert _meta(again, "recommender_sft")["valid_ndcg@10"] == sft["valid_ndcg@10"]


@pytest.mark.slow
def test_rqvae_seed_from_run_config_to_checkpoint_and_plain_codebook(digr_env):
    rng = np.random.default_rng(0)
    items = [f"i{i:02d}" for i in range(40)]
    vectors = rng.normal(size=(40, 12)).astype(np.float32)
    emb = pd.DataFrame({"item_id": items, "text": items, "n_descriptors": 0,
                        "embedding": [v.tolist() for v in vectors]})
    plain = emb.assign(embedding=[(v + 0.01).tolist() for v in vectors])
    Warehouse().replace({"item_embeddings": emb, "item_embeddings_plain": plain})
    ops = {"semantic_ids": {"config": {"n_levels": 2, "codebook_size": 4, "max_epochs": 3, "seed": 5}}}
    with dg.DagsterInstance.get() as instance:
        _report(instance, "item_embeddings", emb[["item_id", "text"]])
        _report(instance, "item_embeddings_plain", plain[["item_id", "text"]])
        result = _materialise(instance, ["semantic_ids", "semantic_ids_plain"], ops)
    sids, plain_sids = _meta(result, "semantic_ids"), _meta(result, "semantic_ids_plain")
    assert sids["seed"] == 5 and _hp(sids["checkpoint"])["config"]["seed"] == 5
    assert mlflow.get_run(sids["mlflow_run_id"]).data.params["config.seed"] == "5"
    # the plain codebook is trained with exactly the settings the interest codebook's checkpoint carries
    assert _hp(plain_sids["checkpoint"])["config"] == _hp(sids["checkpoint"])["config"]


def test_derived_types_are_dagster_compatible_spellings():
    sem = _config_classes()["semantic_ids"]
    hidden = sem.model_fields["hidden_dims"]
    assert typing.get_origin(hidden.annotation) is list and sem().hidden_dims == [256, 128]
    assert sem(hidden_dims=[64]).build().hidden_dims == (64,)  # back to the library's tuple


def test_shipped_run_configs_validate_against_the_derived_configs():
    """`make demo`'s run config and the benchmark's both name only settings that exist."""
    from pathlib import Path

    import yaml

    from bench.scientific import base_ops, cpu_ops

    job = defs.resolve_job_def("full_study")
    demo = yaml.safe_load((Path(__file__).resolve().parents[1] / "deploy" / "demo_run_config.yaml").read_text())
    for run_config in (demo, {"ops": base_ops()}, {"ops": cpu_ops()}):
        result = dg.validate_run_config(job, run_config)
        assert result["ops"]  # validated (an unknown key raises DagsterInvalidConfigError)
    assert cpu_ops()["recommender_sft"]["config"]["max_history"] == base_ops()["recommender_sft"]["config"][
        "max_history"] == 50
