"""Mining-stage settings are defined once, in the library: the launchpad configs of item_captions,
item_interests, interest_rewards and user_interests are derived from them (same fields, defaults and
descriptions), unknown keys are errors naming the key, the library's checks refuse bad values, and each
stage's seed travels from run config to the requests its LLM calls send. The whole mining chain run twice
asks the LLM nothing the second time."""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd
import pytest

from assets.ingestion import ingest_source, interaction_splits
from assets.mining import (
    CaptionConfig,
    InterestRewardConfig,
    ItemInterestConfig,
    UserInterestConfig,
    interest_rewards,
    item_captions,
    item_interests,
    user_interests,
)
from config_schema import settings_fields
from digr_dagster.definitions import defs
from digr_dagster.resources.mlflow_tracking import MlflowTracking
from digr_dagster.resources.models import LLMMiners, MinerSpec, TextEncoderResource
from digr_dagster.resources.warehouse import Warehouse
from mining.backends import ChatRequest, Completion, MinerConfig
from mining.call_cache import MemoryCallCache
from mining.captions import CaptionSettings, caption_items, vision_backend
from mining.item_mining import ItemMiningSettings, item_mining_requests, mine_item_interests
from mining.judges import JudgeSettings, LLMJudge, prepare_judge
from mining.prompts import FEW_SHOT_SETS
from mining.user_interests import UserInterestError, UserInterestSettings, summarise_user_interests
from tests.fake_openai_server import FakeOpenAIServer
from tests.helpers import write_shop_source

STAGES = {  # asset: (its Dagster config, the library settings it is derived from)
    "item_captions": (CaptionConfig, CaptionSettings),
    "item_interests": (ItemInterestConfig, ItemMiningSettings),
    "interest_rewards": (InterestRewardConfig, JudgeSettings),
    "user_interests": (UserInterestConfig, UserInterestSettings),
}

# The run-config keys and defaults before the settings moved into the library: existing run configs keep
# working, except user_interests' max_history, renamed recent_items (it is not the sequence models' cap).
# Later additions (prompt domains, restatement and genericity rules) have defaults, so old configs still work.
BEFORE = {
    "item_captions": {"vision_miner": None, "seed": 0},
    "item_interests": {"seed": 0, "n_descriptors": None, "merge_similarity": 0.85, "min_coverage": 0.8,
                       "domain": "auto", "restatement_threshold": 0.6, "max_rejected_share": 0.2},
    "interest_rewards": {"judge": "embedding", "grounding_threshold": 0.2, "specificity_threshold": 0.15,
                         "min_coverage": 0.5, "seed": 0, "max_descriptor_share": 0.05,
                         "max_restatement_share": 0.2, "own_labels": None, "min_own_agreement": 0.7},
    "user_interests": {"top_k": 5, "recency_half_life": 5.0, "recent_items": 20, "llm_summary": True, "seed": 0},
}


def _asset_job() -> dg.JobDefinition:
    return defs.resolve_implicit_global_asset_job_def()


@pytest.mark.parametrize("asset", sorted(STAGES))
def test_launchpad_config_equals_the_library_settings(asset: str) -> None:
    config_class, library_class = STAGES[asset]
    library = {f.name: f for f in settings_fields(library_class)}
    fields = config_class.model_fields
    assert list(fields) == list(library)
    for name, setting in library.items():
        assert fields[name].default == setting.default, name
        assert fields[name].description == setting.description and setting.description, name
    assert {name: f.default for name, f in library.items()} == BEFORE[asset]
    # the config the code location runs with is this one, and builds the library's defaults
    node = next(n for n in defs.resolve_asset_graph().assets_defs if asset in {k.path[-1] for k in n.keys})
    assert node.op.config_schema.as_field().config_type.fields.keys() == set(library)
    assert config_class().build(library_class) == library_class()
    resolved = dg.validate_run_config(_asset_job(), {"ops": {asset: {"config": {}}}})
    assert resolved["ops"][asset]["config"] == BEFORE[asset]


@pytest.mark.parametrize("asset, key", [("item_captions", "vision"), ("item_interests", "n_descriptor"),
                                        ("interest_rewards", "judge_seed"), ("user_interests", "max_history")])
def test_an_unknown_run_config_key_is_an_error_naming_it(asset: str, key: str) -> None:
    with pytest.raises(dg.DagsterInvalidConfigError, match=f'unexpected config entry "{key}"'):
        dg.validate_run_config(_asset_job(), {"ops": {asset: {"config": {key: 1}}}})
    config_class, _library = STAGES[asset]
    with pytest.raises(ValueError, match=key):
        config_class(**{key: 1})


@pytest.mark.parametrize("asset, values, message", [
    ("item_captions", {"vision_miner": " "}, "CaptionSettings.vision_miner"),
    ("item_interests", {"n_descriptors": 0}, "ItemMiningSettings.n_descriptors must be >= 1"),
    ("item_interests", {"merge_similarity": 1.5}, r"ItemMiningSettings.merge_similarity must be in \(0, 1\]"),
    ("item_interests", {"min_coverage": -0.1}, r"ItemMiningSettings.min_coverage must be in \[0, 1\]"),
    ("interest_rewards", {"min_coverage": 2.0}, r"JudgeSettings.min_coverage must be in \[0, 1\]"),
    ("user_interests", {"top_k": 0}, "UserInterestSettings.top_k must be >= 1"),
    ("user_interests", {"recency_half_life": 0.0}, "UserInterestSettings.recency_half_life must be > 0"),
    ("user_interests", {"recent_items": 0}, "UserInterestSettings.recent_items must be >= 1"),
])
def test_the_library_refuses_bad_values_naming_the_field(asset: str, values: dict, message: str) -> None:
    config_class, library_class = STAGES[asset]
    with pytest.raises(ValueError, match=message):
        library_class(**values)
    with pytest.raises(ValueError, match=message):
        config_class(**values).build(library_class)


def test_judge_must_be_embedding_classifier_or_llm() -> None:
    with pytest.raises(ValueError, match=r"JudgeSettings.judge must be one of \['embedding', 'classifier', 'llm'\]"):
        JudgeSettings(judge="oracle")  # type: ignore[arg-type]
    with pytest.raises(dg.DagsterInvalidConfigError, match="judge"):
        dg.validate_run_config(_asset_job(), {"ops": {"interest_rewards": {"config": {"judge": "oracle"}}}})


def test_a_bad_value_fails_the_step_naming_the_field(digr_env) -> None:
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize([user_interests], instance=instance, raise_on_error=False,
                                resources={"warehouse": Warehouse(), "llm": LLMMiners(miners=[MinerSpec()]),
                                           "text_encoder": TextEncoderResource()},
                                run_config={"ops": {"user_interests": {"config": {"top_k": 0}}}})
    assert not result.success
    failures = [e.event_specific_data.error.to_string() for e in result.all_events
                if e.event_type_value == "STEP_FAILURE"]
    assert len(failures) == 1 and "UserInterestSettings.top_k must be >= 1, got 0" in failures[0]


# ---------------------------------------------------------------- seeds: run config -> library call


class RecordingBackend:
    """A real (trivial) backend: "1" for judge requests, JSON for structured ones, a phrase otherwise."""

    kind = "recording"

    def __init__(self, name: str = "rec") -> None:
        self.name, self.model = name, "rec-1"
        self.requests: list[ChatRequest] = []

    def complete_batch(self, requests: list[ChatRequest]) -> list[Completion]:
        self.requests.extend(requests)
        out = []
        for r in requests:
            if r.choices:
                text = "1"
            elif r.json_schema is not None:
                text = json.dumps({"descriptors": [{"descriptor": "testing soil acidity", "confidence": 0.7}]})
            else:
                text = f"a phrase number {len(self.requests)}"
            out.append(Completion(text=text, mean_logprob=-0.1, prompt_tokens=3, completion_tokens=2))
        return out


ITEMS = pd.DataFrame({"item_id": ["i0", "i1"], "title": ["Soil meter", "Beaker"], "image_url": ["http://i/0", None]})


def _seeds(backend: RecordingBackend) -> set[int]:
    return {r.seed for r in backend.requests}


def test_item_mining_seed_reaches_every_request() -> None:
    n = len(FEW_SHOT_SETS) + 1  # one sampled variant past the few-shot sets
    settings = ItemInterestConfig(seed=12, n_descriptors=n).build(ItemMiningSettings)
    cfg = MinerConfig(name="rec", backend="openai", model="rec-1", base_url="http://127.0.0.1:9/v1",
                      prompt_style="few_shot_phrase", n_descriptors=2)
    (configured,) = settings.miner_configs([cfg])
    assert configured.n_descriptors == n
    backend = RecordingBackend()
    mine_item_interests(ITEMS, [backend], [configured], MemoryCallCache(), progress=False, seed=settings.seed)
    # one request per few-shot set with the seed itself, then sampled variants with seed + k
    assert sorted(r.seed for r in backend.requests) == sorted(([12] * (n - 1) + [12 + n - 1]) * len(ITEMS))
    assert [r.seed for r in item_mining_requests(ITEMS, configured, seed=settings.seed)][:3] == [12, 12, 12]


def test_caption_seed_reaches_every_request() -> None:
    settings = CaptionConfig(vision_miner="rec", seed=11).build(CaptionSettings)
    cfg = MinerConfig(name="rec", backend="openai", model="rec-1", base_url="http://127.0.0.1:9/v1", vision=True)
    backend = RecordingBackend()
    assert vision_backend(settings, [cfg], [backend]) is backend
    assert vision_backend(CaptionSettings(), [cfg], [backend]) is None
    with pytest.raises(ValueError, match="not a configured miner with vision=True"):
        vision_backend(CaptionSettings(vision_miner="rec"), [MinerConfig(name="rec", backend="openai", model="m",
                                                                         base_url="http://x/v1")], [backend])
    caption_items(ITEMS, backend, MemoryCallCache(), seed=settings.seed)
    assert len(backend.requests) == 1 and _seeds(backend) == {11}


def test_judge_seed_reaches_the_judge_and_its_requests() -> None:
    settings = InterestRewardConfig(judge="llm", seed=13).build(JudgeSettings)
    backend = RecordingBackend()
    interests = pd.DataFrame({"item_id": ["i0"], "rank": [0], "descriptor": ["testing soil"], "confidence": [0.9]})
    judge, _extra = prepare_judge(settings, lambda texts: None, interests, ITEMS, llm_backend=backend)
    assert isinstance(judge, LLMJudge)
    judge.judge(["testing soil"], ["i0"], {"i0": "Soil meter"})
    assert _seeds(backend) == {13}
    embedding, _ = prepare_judge(InterestRewardConfig(seed=13).build(JudgeSettings), lambda t: None, interests, ITEMS)
    assert embedding.seed == 13


def test_user_interest_seed_reaches_the_summary_requests() -> None:
    settings = UserInterestConfig(seed=14, recent_items=1).build(UserInterestSettings)
    splits = pd.DataFrame({"user_id": ["u"] * 4, "item_id": ["i0", "i1", "v", "t"], "position": [0, 1, 2, 3],
                           "split": ["train", "train", "valid", "test"]})
    rewards = pd.DataFrame({"item_id": ["i0", "i1"], "descriptor": ["testing soil", "mixing"],
                            "confidence": [0.9, 0.8], "label": [1, 1]})
    backend = RecordingBackend()
    out = summarise_user_interests(splits, rewards, settings, backend=backend)
    assert _seeds(backend) == {14}
    assert out[out["source"] == "aggregate"]["interest"].tolist() == ["mixing"]  # recent_items=1: the last one
    off = summarise_user_interests(splits, rewards, UserInterestSettings(llm_summary=False), backend=backend)
    assert len(backend.requests) == 1 and set(off["source"]) == {"aggregate"}
    with pytest.raises(UserInterestError, match="recent_items"):
        UserInterestSettings(recent_items=0)


# ---------------------------------------------------------------- the whole mining chain, twice

KEY_ENV = "DIGR_MINING_SETTINGS_TEST_KEY"
SEEDS = {"item_captions": 11, "item_interests": 12, "interest_rewards": 13, "user_interests": 14}
# each call site's system prompt opens with these words
SYSTEM_OPENINGS = {"item_captions": "You describe product photos", "item_interests": "You are an analyst",
                   "interest_rewards": "You check purchase-motivation", "user_interests": "You name a shopper"}


def _write_source(folder) -> None:
    metas = [{"asin": f"I{i}", "title": f"Thing {i}", "description": [f"A sturdy thing for job {i}."],
              **({"imageURL": [f"http://images.example/I{i}.jpg"]} if i < 4 else {})} for i in range(6)]
    write_shop_source(folder, metas)


def _call_site(body: dict) -> str:
    system = body["messages"][0]["content"]
    return next(site for site, opening in SYSTEM_OPENINGS.items() if system.startswith(opening))


@pytest.mark.slow
def test_mining_chain_sends_each_stage_seed_and_a_rerun_asks_nothing(digr_env, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-mining-settings-test")
    _write_source(tmp_path / "src")
    mining = [item_captions, item_interests, interest_rewards, user_interests]
    ops = {asset: {"config": {"seed": seed}} for asset, seed in SEEDS.items()}
    ops["item_captions"]["config"]["vision_miner"] = "remote"
    ops["interest_rewards"]["config"]["judge"] = "llm"
    ops["ingest_source"] = {"config": {"kind": "amazon2018", "path": str(tmp_path / "src")}}
    with FakeOpenAIServer() as server, dg.DagsterInstance.get() as instance:
        miner = MinerSpec(name="remote", backend="openai", model="fake-chat", base_url=server.base_url,
                          api_key_env=KEY_ENV, prompt_style="structured_json", n_descriptors=2, vision=True,
                          max_retries=0, timeout_s=5.0)
        resources = {"warehouse": Warehouse(), "mlflow_tracking": MlflowTracking(),
                     "llm": LLMMiners(miners=[miner], judge="remote"), "text_encoder": TextEncoderResource()}
        first = dg.materialize([ingest_source, interaction_splits, *mining], instance=instance, resources=resources,
                               run_config={"ops": ops})
        assert first.success
        bodies = [r["body"] for r in server.requests]
        sent: dict[str, set[int]] = {}
        for body in bodies:
            sent.setdefault(_call_site(body), set()).add(body["seed"])
        assert sent == {asset: {seed} for asset, seed in SEEDS.items()}
        summaries = Warehouse().read("user_interests").query("source == 'llm_summary'")
        assert len(summaries) > 0

        # the same run again: every call site answers from the warehouse's call cache
        ops.pop("ingest_source")
        again = dg.materialize(mining, instance=instance, resources=resources, run_config={"ops": ops})
        assert again.success
        assert len(server.requests) == len(bodies)
        md = again.asset_materializations_for_node("item_captions")[0].metadata
        assert (md["calls"].value, md["cache_hits"].value) == (0, 4)
        md = again.asset_materializations_for_node("item_interests")[0].metadata
        assert md["calls"].value == 0 and md["cache_hits"].value == 6
        md = again.asset_materializations_for_node("interest_rewards")[0].metadata
        assert md["llm_calls"].data["calls"] == 0 and md["llm_calls"].data["cache_hits"] > 0
