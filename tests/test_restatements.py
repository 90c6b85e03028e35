"""Restatements of the item and copies of the prompt's examples are rejected everywhere: the rule itself, the
miner (recorded failures, both prompt styles), the judge (whatever its score says), catalogue-wide generic
descriptors, and the warning of the interest-quality checks."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from mining.backends import ChatRequest, Completion, MinerConfig  # noqa: E402
from mining.call_cache import MemoryCallCache  # noqa: E402
from mining.domains import MOVIES, RETAIL  # noqa: E402
from mining.item_mining import ItemMiningSettings, mine_item_interests  # noqa: E402
from mining.judge_agreement import label_sample  # noqa: E402
from mining.judges import (  # noqa: E402
    GENERIC_ACROSS_CATALOGUE,
    EmbeddingJudge,
    JudgeSettings,
    LLMJudge,
    item_evidence,
    label_interests,
    rule_rejections,
)
from mining.parsing import (  # noqa: E402
    COPIED_EXAMPLE,
    COPIES_DESCRIPTION,
    NAMES_NO_NEED,
    RESTATES_TITLE,
    content_words,
    copies_example,
    restatement_reason,
)
from mining.quality import curated_restatement_share, rejected_answer_share  # noqa: E402
from tests.helpers import minilm_embedder, write_shop_source  # noqa: E402

# ---------------------------------------------------------------- the rule


@pytest.mark.parametrize("descriptor, title, description, expected", [
    # MovieLens: the restatements the issue reports, and needs that merely share a word with the title
    ("the movie Toy Story (1995)", "Toy Story (1995)", None, RESTATES_TITLE),
    ("Toy Story", "Toy Story (1995)", None, RESTATES_TITLE),
    ("watching Toy Story with the kids", "Toy Story (1995)", None, RESTATES_TITLE),  # the title, inside
    ("The Usual Suspects film", "Usual Suspects, The (1995)", None, RESTATES_TITLE),
    ("the movie Heat", "Heat (1995)", None, RESTATES_TITLE),  # one title word: the share rule (1 of 1)
    ("family-friendly animated adventure", "Toy Story (1995)", None, None),
    ("staying cool in the summer heat", "Heat (1995)", None, None),  # 1 of 4 content words
    ("a story to read at bedtime", "Toy Story (1995)", None, None),
    # retail
    ("soil moisture meter", "Digital Soil pH and Moisture Meter", None, RESTATES_TITLE),
    ("growing healthy vegetables in a home garden", "Digital Soil pH and Moisture Meter", None, None),
    ("using gadget 0 for project 3f2a", "Gadget 0", None, None),  # numbers are not content words
    # a run of at least three content words copied from the description
    ("measures soil moisture levels", "Sonkir Meter", "It measures soil moisture levels in seconds.",
     COPIES_DESCRIPTION),
    ("soil moisture", "Sonkir Meter", "It measures soil moisture levels in seconds.", None),
    ("testing soil before planting vegetables", "Sonkir Meter", "It measures soil moisture levels.", None),
    # no content word at all (SmolLM answered "the 1995 movie The (1995)" for "American President, The (1995)")
    ("the 1995 movie The (1995)", "American President, The (1995)", None, NAMES_NO_NEED),
    ("the item", None, None, NAMES_NO_NEED),
    # no title, no words
    ("anything at all", None, None, None),
    ("", "Toy Story (1995)", None, None),
])
def test_restatement_rule(descriptor, title, description, expected) -> None:
    assert restatement_reason(descriptor, title, description) == expected


def test_restatement_threshold_is_a_setting() -> None:
    # content words: watering, house, plants, time; of them, title words: watering, house (2 of 4)
    assert content_words("watering the house plants on time") == ["watering", "house", "plants", "time"]
    assert restatement_reason("watering the house plants on time", "House Plant Watering Can") is None
    assert restatement_reason("watering the house plants on time", "House Plant Watering Can",
                              threshold=0.5) == RESTATES_TITLE
    with pytest.raises(ValueError, match="restatement_threshold"):
        ItemMiningSettings(restatement_threshold=0.0)
    # one definition: the judge applies the threshold the mining used (item_interests' metadata)
    assert "restatement_threshold" not in {f.name for f in dataclasses.fields(JudgeSettings)}


@pytest.mark.parametrize("descriptor, copied", [
    ("repairing a furnace and chimney", True),
    ("Repairing the furnace and the chimney.", True),  # articles, case, punctuation
    ("repairing a chimney and furnace", True),  # the same content words
    ("repairing a furnace", False),
    ("repairing a military vehicle", False),  # a domain mismatch, not a copy
])
def test_copied_few_shot_answers(descriptor: str, copied: bool) -> None:
    assert copies_example(descriptor, RETAIL.example_answers) is copied


# ---------------------------------------------------------------- the miner records them as failures


class ScriptedMiner:
    """Answers each request from ``answers[title]`` (phrase style) or ``structured[title]`` (JSON style)."""

    kind = "scripted-miner"

    def __init__(self, answers: dict[str, str] | None = None, structured: dict[str, list[str]] | None = None):
        self.name, self.model = "scripted", "scripted-1"
        self.answers, self.structured = answers or {}, structured or {}
        self.requests: list[ChatRequest] = []

    def complete_batch(self, requests: list[ChatRequest]) -> list[Completion]:
        self.requests.extend(requests)
        out = []
        for r in requests:
            user = r.messages[-1]["content"]
            title = next(line[len("Title: "):] for line in user.splitlines() if line.startswith("Title: "))
            if r.json_schema is not None:
                text = json.dumps({"descriptors": [{"descriptor": d, "confidence": 0.8 - 0.1 * k}
                                                   for k, d in enumerate(self.structured[title])]})
            else:
                text = self.answers[title]
            out.append(Completion(text=text, mean_logprob=-0.2, prompt_tokens=5, completion_tokens=3))
        return out


MOVIE_ITEMS = pd.DataFrame({"item_id": ["m1", "m2", "m3"],
                            "title": ["Toy Story (1995)", "Full Metal Jacket (1987)", "Heat (1995)"],
                            "categories": ["Movies > Animation, Children's, Comedy", "Movies > Action, Drama, War",
                                           "Movies > Action, Crime, Thriller"]})


def _miner(style: str, n: int = 1) -> MinerConfig:
    return MinerConfig(name="scripted", backend="openai", model="scripted-1", base_url="http://127.0.0.1:9/v1",
                       prompt_style=style, n_descriptors=n)


def test_phrase_miner_records_restatements_and_copies_as_failures() -> None:
    backend = ScriptedMiner({"Toy Story (1995)": "the movie Toy Story (1995)",
                             "Full Metal Jacket (1987)": "a cosy date night at home",  # the movies domain's example
                             "Heat (1995)": "a tense crime thriller night with friends"})
    result = mine_item_interests(MOVIE_ITEMS, [backend], [_miner("few_shot_phrase")], MemoryCallCache(),
                                 progress=False, domain="movies")
    assert result.interests["descriptor"].tolist() == ["a tense crime thriller night with friends"]
    failures = result.failures[result.failures["stage"] == "parse"]
    assert failures[["item_id", "reason"]].values.tolist() == [["m1", RESTATES_TITLE], ["m2", COPIED_EXAMPLE]]
    assert failures["raw_output"].tolist() == ["the movie Toy Story (1995)", "a cosy date night at home"]
    # both items without a descriptor are recorded too, and counted
    assert set(result.failures.loc[result.failures["stage"] == "item", "item_id"]) == {"m1", "m2"}
    stats = result.stats
    assert (stats["answers"], stats["rejected_restatements"], stats["rejected_copies"]) == (3, 1, 1)
    assert stats["items_failed"] == 2 and stats["domain"] == "movies"
    # the movies example is no copy in the retail domain: there it is a descriptor like any other
    again = mine_item_interests(MOVIE_ITEMS.iloc[[1]], [backend], [_miner("few_shot_phrase")], MemoryCallCache(),
                                progress=False)
    assert again.interests["descriptor"].tolist() == ["a cosy date night at home"]


def test_structured_miner_drops_rejected_descriptors_and_reranks() -> None:
    backend = ScriptedMiner(structured={
        "Toy Story (1995)": ["Toy Story", "family-friendly animated adventure", "a cosy date night at home"],
        "Full Metal Jacket (1987)": ["the film Full Metal Jacket"],
        "Heat (1995)": ["a tense crime thriller night with friends"]})
    result = mine_item_interests(MOVIE_ITEMS, [backend], [_miner("structured_json", 3)], MemoryCallCache(),
                                 progress=False, domain="movies")
    kept = result.interests[["item_id", "rank", "descriptor"]].values.tolist()
    assert kept == [["m1", 0, "family-friendly animated adventure"],
                    ["m3", 0, "a tense crime thriller night with friends"]]
    reasons = result.failures[["item_id", "stage", "reason"]].values.tolist()
    assert ["m1", "parse", RESTATES_TITLE] in reasons and ["m1", "parse", COPIED_EXAMPLE] in reasons
    assert ["m2", "parse", RESTATES_TITLE] in reasons
    assert any(r[0] == "m2" and r[1] == "item" and "every descriptor" in r[2] for r in reasons)
    assert (result.stats["answers"], result.stats["rejected_restatements"], result.stats["rejected_copies"]) \
        == (5, 2, 1)


# ---------------------------------------------------------------- the judge cannot be fooled


@pytest.fixture(scope="module")
def embed():
    embed, restore = minilm_embedder()
    yield embed
    restore()


MOVIES_10 = pd.DataFrame({
    "item_id": [f"m{k}" for k in range(10)],
    "title": ["Toy Story (1995)", "Heat (1995)", "Full Metal Jacket (1987)", "Sense and Sensibility (1995)",
              "Jumanji (1995)", "Casino (1995)", "Usual Suspects, The (1995)", "Babe (1995)", "Braveheart (1995)",
              "Clueless (1995)"],
    "categories": ["Movies > Animation, Children's, Comedy", "Movies > Action, Crime, Thriller",
                   "Movies > Action, Drama, War", "Movies > Drama, Romance", "Movies > Adventure, Children's, Fantasy",
                   "Movies > Drama, Thriller", "Movies > Crime, Thriller", "Movies > Children's, Comedy, Drama",
                   "Movies > Action, Drama, War", "Movies > Comedy, Romance"],
})


def test_embedding_judge_rejects_restatements_its_score_would_curate(embed) -> None:
    restated = [f"the movie {t}" for t in MOVIES_10["title"]]
    interests = pd.DataFrame({"item_id": [*MOVIES_10["item_id"], "m0"], "rank": [0] * 10 + [1],
                              "descriptor": [*restated, "family-friendly animated adventure"],
                              "confidence": [0.9] * 11})
    judge = EmbeddingJudge(embed)
    # the bare judge finds every restatement grounded and specific (the issue: 317 of 381 curated on MovieLens)
    bare = judge.judge(interests["descriptor"].tolist(), interests["item_id"].tolist(), item_evidence(MOVIES_10))
    assert bare.labels.tolist() == [1] * 11
    rewards = label_interests(interests, MOVIES_10, judge)
    by_desc = rewards.set_index("descriptor")
    assert (by_desc.loc[restated, "label"] == 0).all()
    assert (by_desc.loc[restated, "reason"] == RESTATES_TITLE).all()
    # the score stays the judge's, so the override is visible next to it
    assert (by_desc.loc[restated, "score"] > 0.8).all()
    kept = by_desc.loc["family-friendly animated adventure"]
    assert kept["label"] == 1 and pd.isna(kept["reason"])


class AlwaysOne:
    """A chat backend that curates everything (the LLM judge's answer "1" at probability 0.9)."""

    kind, name, model = "always-one", "yes", "yes-1"

    def complete_batch(self, requests: list[ChatRequest]) -> list[Completion]:
        return [Completion(text="1", mean_logprob=float(np.log(0.9)), prompt_tokens=1, completion_tokens=1)
                for _ in requests]


def test_llm_judge_is_overridden_too_and_descriptions_count() -> None:
    items = pd.DataFrame({"item_id": ["a", "b"], "title": ["Sonkir Soil Meter", "Escali Scale"],
                          "description": ["It measures soil moisture levels in seconds.", "Weighs flour."]})
    interests = pd.DataFrame({"item_id": ["a", "a", "b"], "rank": [0, 1, 0], "confidence": [0.9, 0.8, 0.7],
                              "descriptor": ["measures soil moisture levels", "testing soil before planting",
                                             "Escali scale"]})
    rewards = label_interests(interests, items, LLMJudge(AlwaysOne()))
    assert rewards["reason"].fillna("").tolist() == [COPIES_DESCRIPTION, "", RESTATES_TITLE]
    assert rewards["label"].tolist() == [0, 1, 0]
    assert np.allclose(rewards["score"], 0.9)


def _catalogue(n: int) -> pd.DataFrame:
    return pd.DataFrame({"item_id": [f"i{k:02d}" for k in range(n)], "title": [f"Widget model {k}" for k in range(n)]})


def test_generic_descriptors_are_rejected_above_the_catalogue_share() -> None:
    items = _catalogue(40)  # 5% of 40 items = 2: a descriptor on 3 items is generic, on 2 it is not
    rows = [("i00", "a great gift for anyone"), ("i01", "A great gift, for anyone!"),
            ("i02", "a great gift for anyone"),
            ("i03", "weekend woodworking projects"), ("i04", "weekend woodworking projects"),
            ("i05", "restoring a vintage motorbike")]
    interests = pd.DataFrame({"item_id": [r[0] for r in rows], "rank": 0, "descriptor": [r[1] for r in rows],
                              "confidence": 0.8})
    reasons = rule_rejections(interests, items, n_catalogue=len(items))
    assert reasons.tolist()[:3] == [GENERIC_ACROSS_CATALOGUE] * 3
    assert reasons.iloc[3:].isna().all()
    # a larger share allows it; one item per descriptor text is never generic
    assert rule_rejections(interests, items, n_catalogue=40, max_descriptor_share=0.1).isna().all()
    # a small catalogue: 2 of 10 items is 20%, but under GENERIC_MIN_ITEMS (3) items
    assert rule_rejections(interests.iloc[3:], _catalogue(10), n_catalogue=10).isna().all()
    # through label_interests, whatever the judge says
    rewards = label_interests(interests, items, LLMJudge(AlwaysOne()))
    assert rewards["label"].tolist() == [0, 0, 0, 1, 1, 1]
    assert rewards["reason"].tolist()[:3] == [GENERIC_ACROSS_CATALOGUE] * 3


def test_judge_settings_check_the_new_shares() -> None:
    assert JudgeSettings().max_descriptor_share == 0.05 and JudgeSettings().max_restatement_share == 0.2
    with pytest.raises(ValueError, match="max_descriptor_share"):
        JudgeSettings(max_descriptor_share=-0.1)
    with pytest.raises(ValueError, match="max_restatement_share"):
        JudgeSettings(max_restatement_share=1.1)


# ---------------------------------------------------------------- the quality warning


def _rewards(n_curated: int, n_restated: int) -> pd.DataFrame:
    """n_curated curated descriptors of which n_restated restate their title, plus 5 uncurated restatements."""
    rows = []
    for k in range(n_curated):
        text = f"the movie Harbor Lights {k}" if k < n_restated else f"a reason number {k} to watch"
        rows.append((f"t{k}", text, 1))
    rows += [(f"t{k}", f"Harbor Lights {k}", 0) for k in range(5)]
    return pd.DataFrame({"item_id": [r[0] for r in rows], "rank": range(len(rows)), "descriptor": [r[1] for r in rows],
                         "confidence": 0.5, "label": [r[2] for r in rows]})


def test_quality_warning_fires_above_the_threshold_only() -> None:
    items = pd.DataFrame({"item_id": [f"t{k}" for k in range(10)], "title": [f"Harbor Lights {k}" for k in range(10)]})
    at = curated_restatement_share(_rewards(10, 2), items, max_share=0.2)
    assert (at.n, at.n_restatements, at.share, at.warn) == (10, 2, 0.2, False)  # at the threshold: no warning
    above = curated_restatement_share(_rewards(10, 3), items, max_share=0.2)
    assert (above.n_restatements, above.warn) == (3, True)
    assert above.examples[0] == {"item_id": "t0", "title": "Harbor Lights 0",
                                 "descriptor": "the movie Harbor Lights 0", "reason": RESTATES_TITLE}
    meta = above.metadata("curated_restatements")
    assert meta["curated_restatements_share"] == 0.3 and meta["curated_restatements_max_share"] == 0.2
    assert not curated_restatement_share(_rewards(0, 0), items).warn  # nothing curated: nothing to warn about
    # the miner's side: answers rejected as restatements or copies
    assert not rejected_answer_share({"answers": 10, "rejected_restatements": 1, "rejected_copies": 1}).warn
    assert rejected_answer_share({"answers": 10, "rejected_restatements": 2, "rejected_copies": 1}).warn
    assert rejected_answer_share({}).share == 0.0


def test_the_checks_are_declared_warn_only() -> None:
    from digr_dagster.definitions import defs

    graph = defs.resolve_asset_graph()
    specs = {(s.asset_key.to_user_string(), s.name): s for a in graph.assets_defs for s in a.check_specs}
    for asset in ("item_interests", "interest_rewards"):
        assert specs[(asset, "restatements")].blocking is False
        assert specs[(asset, "data_contract")].blocking is True


def test_movies_examples_are_not_restatements() -> None:
    for example in MOVIES.examples:
        assert restatement_reason(example.answer, example.item["title"]) is None


# ---------------------------------------------------------------- the asset checks, materialised


def _write_source(folder) -> None:
    """Six items bought by six users (an Amazon 2018 source)."""
    titles = ["Garden Hose", "Pruning Shears", "Soil Meter", "Seed Tray", "Rain Barrel", "Compost Bin"]
    write_shop_source(folder, [{"asin": f"I{i}", "title": t, "description": [f"Sturdy, for job {i}."]}
                               for i, t in enumerate(titles)])


#: the scripted miner restates the first two items' titles ("the Garden Hose") and names a need for the others
ANSWERS = {"Garden Hose": "the Garden Hose", "Pruning Shears": "the pruning shears",
           "Soil Meter": "testing before planting", "Seed Tray": "starting tomatoes indoors",
           "Rain Barrel": "saving water in summer", "Compost Bin": "recycling kitchen scraps"}


@pytest.mark.slow
def test_the_restatement_checks_warn_without_blocking(digr_env, tmp_path) -> None:
    import dagster as dg

    from assets.ingestion import ingest_source, interaction_splits
    from assets.mining import interest_rewards, item_captions, item_interests
    from digr_dagster.resources.mlflow_tracking import MlflowTracking
    from digr_dagster.resources.models import LLMMiners, MinerSpec, TextEncoderResource
    from digr_dagster.resources.warehouse import Warehouse

    class ScriptedMiners(LLMMiners):
        def backends(self):
            return [ScriptedMiner(ANSWERS)]

    _write_source(tmp_path / "src")
    ops = {"ingest_source": {"config": {"kind": "amazon2018", "path": str(tmp_path / "src")}},
           "item_interests": {"config": {"n_descriptors": 1, "min_coverage": 0.5, "restatement_threshold": 0.65}}}
    miner = MinerSpec(name="scripted", backend="openai", model="scripted-1", base_url="http://127.0.0.1:9/v1",
                      prompt_style="few_shot_phrase")
    resources = {"warehouse": Warehouse(), "mlflow_tracking": MlflowTracking(),
                 "llm": ScriptedMiners(miners=[miner]), "text_encoder": TextEncoderResource()}
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize([ingest_source, interaction_splits, item_captions, item_interests, interest_rewards],
                                instance=instance, resources=resources, run_config={"ops": ops})
    assert result.success  # a WARN check that fails does not stop the run
    checks = {(e.asset_check_evaluation_data.asset_key.to_user_string(), e.asset_check_evaluation_data.check_name):
              e.asset_check_evaluation_data for e in result.all_events
              if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    mined = checks[("item_interests", "restatements")]
    assert not mined.passed and mined.severity == dg.AssetCheckSeverity.WARN
    assert mined.metadata["rejected_answers_share"].value == round(2 / 6, 4)
    assert "'retail' prompt domain likely does not fit" in mined.description
    assert checks[("item_interests", "data_contract")].passed
    assert checks[("interest_rewards", "restatements")].passed
    assert checks[("interest_rewards", "restatements")].severity == dg.AssetCheckSeverity.WARN
    meta = result.asset_materializations_for_node("item_interests")[0].metadata
    assert meta["domain"].value.startswith("retail (built-in") and meta["rejected_restatements"].value == 2
    assert meta["failure_reasons"].data[RESTATES_TITLE] == 2
    failures = Warehouse().read("item_interest_failures")
    assert sorted(failures.loc[failures["reason"] == RESTATES_TITLE, "item_id"]) == ["I0", "I1"]
    # one setting, one road: the judge applies the threshold the interests were mined with
    assert meta["restatement_threshold"].value == 0.65
    judged = result.asset_materializations_for_node("interest_rewards")[0].metadata
    assert judged["restatement_threshold"].value == "0.65 (item_interests materialisation)"
    assert meta["domain_spec"].value == "retail" and judged["domain"].value == "retail (item_interests materialisation)"
    rewards = Warehouse().read("interest_rewards")
    assert "reason" in rewards.columns and set(rewards["item_id"]) == {"I2", "I3", "I4", "I5"}

    # the judge measured on this catalogue: unmeasured says so; a person's labels that all disagree warn
    own_check = checks[("interest_rewards", "own_label_agreement")]
    assert own_check.passed and own_check.metadata["measured"].value is False
    assert judged["own_labels"].value.startswith("none: the judge is measured on the shipped retail set only")
    items = Warehouse().read("items")
    sample = label_sample(rewards, items, n=4, seed=0)
    assert len(sample) == 4 and sample["label"].isna().all()
    labels_file = tmp_path / "labels.csv"
    sample.assign(label=1 - sample["pipeline_label"]).to_csv(labels_file, index=False)
    rejudge = {"ops": {"interest_rewards": {"config": {"own_labels": str(labels_file)}}}}
    with dg.DagsterInstance.get() as instance:
        again = dg.materialize([interest_rewards], instance=instance, resources=resources, run_config=rejudge)
    assert again.success  # WARN only
    own_check = next(e.asset_check_evaluation_data for e in again.all_events
                     if e.event_type_value == "ASSET_CHECK_EVALUATION"
                     and e.asset_check_evaluation_data.check_name == "own_label_agreement")
    assert not own_check.passed and own_check.severity == dg.AssetCheckSeverity.WARN
    assert own_check.metadata["own_labels_agreement"].value == 0.0
    assert own_check.metadata["own_labels_matched_rows"].value == 4
    assert "agree with yours on 0% of 4 descriptors" in own_check.description
    # a broken labels file fails the step naming the row, and the stored rewards stay as they were
    before = Warehouse().read("interest_rewards", order_by="item_id, rank")
    sample.assign(label=["1", "yes", "0", "1"]).to_csv(labels_file, index=False)
    with dg.DagsterInstance.get() as instance:
        broken = dg.materialize([interest_rewards], instance=instance, resources=resources, run_config=rejudge,
                                raise_on_error=False)
    assert not broken.success
    error = next(e.event_specific_data.error.to_string() for e in broken.all_events
                 if e.event_type_value == "STEP_FAILURE")
    assert "label must be 1 or 0, got 'yes' (labelled row 2" in error
    pd.testing.assert_frame_equal(Warehouse().read("interest_rewards", order_by="item_id, rank"), before)
