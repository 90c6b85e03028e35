"""Promotion picks the best candidate: every generator that could ship (DeepInterestGR, the TIGER-style
baseline) is compared on validation NDCG@10 only, the winner is registered in a real MLflow sqlite registry,
tagged with the comparison, and goes through the margin rule against the current champion."""

from __future__ import annotations

import shutil

import dagster as dg
import mlflow
import pandas as pd
import pytest

from assets.common import md, sha256_file
from assets.promotion import CANDIDATES, champion_model
from digr_dagster.resources.mlflow_tracking import MlflowTracking
from digr_dagster.resources.warehouse import Warehouse
from serving.candidates import (
    CANDIDATE_TAG,
    CandidateSpec,
    NoCandidateError,
    read_candidate,
    record_selection,
    select_candidate,
)
from serving.pyfunc_model import log_recommender
from serving.registry import CHALLENGER, CHAMPION, promote
from tests.test_pyfunc_model import BEAM, TITLES, K, local_mlflow_store, toy_vocab, train_tiny_recommender
from tests.test_registry import add_version

SPLIT = "split-hash-1"
SPECS = {s.asset: s for s in CANDIDATES}
GRPO, TIGER = "recommender_grpo", "tiger_baseline"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two tiny generator checkpoints (distinct files), one per candidate, and the user tokens they read."""
    grpo, prefix = train_tiny_recommender(tmp_path_factory.mktemp("grpo"))
    tiger, _ = train_tiny_recommender(tmp_path_factory.mktemp("tiger"))
    return {GRPO: str(grpo), TIGER: str(tiger)}, prefix


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with local_mlflow_store(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


def model_metadata(checkpoint: str, valid: float, test: float, *, split: str = SPLIT, run: str = "run") -> dict:
    """What a model asset records (train_sft / train_grpo_stage): checkpoint + sha, metrics, split lineage."""
    return {"checkpoint": checkpoint, "checkpoint_sha256": sha256_file(checkpoint), "mlflow_run_id": run,
            "valid_ndcg@10": valid, "valid_hr@10": min(1.0, 2 * valid), "test_ndcg@10": test,
            "test_hr@10": min(1.0, 2 * test), "lineage": {"interaction_splits": {"content_hash": split}}}


def candidates_from(metas: dict[str, dict | None]):
    """Candidates and skip reasons, in the pipeline's candidate order (= the order of preference)."""
    found, skipped = [], {}
    for spec in CANDIDATES:
        got = read_candidate(spec, metas.get(spec.asset), split_hash=SPLIT)
        if isinstance(got, str):
            skipped[spec.asset] = got
        else:
            found.append(got)
    return found, skipped


def test_candidate_table_prefers_deepinterestgr_and_is_one_line_per_candidate():
    assert [c.asset for c in CANDIDATES] == [GRPO, TIGER]  # order = preference on a tie
    assert all(c.checkpoint_key == "checkpoint" and c.valid_metric == "valid_ndcg@10" for c in CANDIDATES)
    assert SPECS[GRPO].metric_keys() == {"val_ndcg@10": "valid_ndcg@10", "val_hr@10": "valid_hr@10",
                                         "test_ndcg@10": "test_ndcg@10", "test_hr@10": "test_hr@10"}
    # a GRPO variant compared through its policy names its own keys; the rest follow
    policy = CandidateSpec("ablation_no_q_term", "policy_checkpoint", "policy_valid_ndcg@10")
    assert policy.metric_keys()["test_hr@10"] == "policy_test_hr@10"


def test_better_on_validation_wins_even_when_worse_on_test(checkpoints, store):
    paths, prefix = checkpoints
    found, skipped = candidates_from({GRPO: model_metadata(paths[GRPO], 0.20, 0.40, run="grpo-run"),
                                      TIGER: model_metadata(paths[TIGER], 0.25, 0.10, run="tiger-run")})
    selection = select_candidate(found, skipped)
    assert not skipped and selection.winner.asset == TIGER and selection.runner_up.asset == GRPO
    assert selection.margin == pytest.approx(0.05) and not selection.tie
    assert selection.winner.checkpoint == paths[TIGER] and selection.winner.mlflow_run_id == "tiger-run"

    # the table: name, checkpoint sha, valid / test NDCG@10, chosen
    rows = {r["candidate"]: r for r in selection.rows()}
    assert rows[TIGER] == {"candidate": TIGER, "checkpoint_sha256": sha256_file(paths[TIGER])[:12],
                           "valid_ndcg@10": 0.25, "test_ndcg@10": 0.10, "chosen": "yes"}
    assert rows[GRPO]["chosen"] == "no" and rows[GRPO]["test_ndcg@10"] == 0.40
    table = selection.markdown()
    assert "**ships: tiger_baseline**" in table and "test NDCG@10 (info)" in table and "skipped" not in table

    # registered and tagged in a real registry; no champion yet, so it becomes the first champion
    name = "digr-candidates"
    mv = log_recommender(selection.winner.checkpoint, TITLES, name=name, k=K, beam_width=BEAM,
                         lineage_tags={"candidate": selection.winner.asset}, metrics=selection.winner.metrics,
                         user_prefix=prefix)
    client = mlflow.MlflowClient()
    record_selection(client, name, mv.version, selection)
    decision = promote(client, name, mv.version)
    assert decision.alias == CHAMPION and decision.new_value == pytest.approx(0.25)
    tags = client.get_model_version(name, mv.version).tags
    assert tags[CANDIDATE_TAG] == TIGER and tags["lineage.candidate"] == TIGER
    assert float(tags["candidate.recommender_grpo.val_ndcg_at_10"]) == 0.20
    assert float(tags["candidate.tiger_baseline.val_ndcg_at_10"]) == 0.25
    assert tags["candidate.runner_up"] == GRPO and tags["candidate.tie"] == "false"
    assert float(tags["candidate.margin_over_runner_up"]) == pytest.approx(0.05)
    # the version carries the winner's metrics: validation decides promotion, test is the winner's own
    assert float(tags["metric.val_ndcg_at_10"]) == 0.25 and float(tags["metric.test_ndcg_at_10"]) == 0.10
    assert not any(k.endswith(".skipped") for k in tags)


def test_a_tie_goes_to_deepinterestgr(checkpoints):
    paths, _ = checkpoints
    found, _ = candidates_from({GRPO: model_metadata(paths[GRPO], 0.30, 0.10),
                                TIGER: model_metadata(paths[TIGER], 0.30, 0.50)})
    selection = select_candidate(found)
    assert selection.winner.asset == GRPO and selection.runner_up.asset == TIGER
    assert selection.tie and selection.margin == 0.0
    assert "ties with tiger_baseline" in selection.reason and selection.tags()["candidate.tie"] == "true"


def test_a_missing_or_stale_candidate_is_skipped_and_reported(checkpoints):
    paths, _ = checkpoints
    assert "not materialised" in read_candidate(SPECS[TIGER], None, split_hash=SPLIT)
    stale = read_candidate(SPECS[TIGER], model_metadata(paths[TIGER], 0.9, 0.9, split="older"), split_hash=SPLIT)
    assert "another split (older" in stale
    no_metric = {k: v for k, v in model_metadata(paths[TIGER], 0.9, 0.9).items() if k != "valid_ndcg@10"}
    assert "no finite validation NDCG@10" in read_candidate(SPECS[TIGER], no_metric, split_hash=SPLIT)
    no_ckpt = {k: v for k, v in model_metadata(paths[TIGER], 0.9, 0.9).items() if k != "checkpoint_sha256"}
    assert "records no 'checkpoint'" in read_candidate(SPECS[TIGER], no_ckpt, split_hash=SPLIT)

    found, skipped = candidates_from({GRPO: model_metadata(paths[GRPO], 0.2, 0.2)})  # tiger never materialised
    selection = select_candidate(found, skipped)
    assert selection.winner.asset == GRPO and selection.runner_up is None and selection.margin is None
    assert set(selection.skipped) == {TIGER} and "not materialised" in selection.skipped[TIGER]
    assert f"skipped: {TIGER} (not materialised" in selection.markdown()
    tags = selection.tags()
    assert tags[CANDIDATE_TAG] == GRPO and "not materialised" in tags["candidate.tiger_baseline.skipped"]
    assert "candidate.margin_over_runner_up" not in tags and "candidate.tiger_baseline.val_ndcg_at_10" not in tags


def test_the_winner_still_has_to_beat_the_champion_by_the_margin(checkpoints, store):
    paths, prefix = checkpoints
    name = "digr-candidates-margin"
    client = mlflow.MlflowClient()
    champion = add_version(client, name, 0.50)
    client.set_registered_model_alias(name, CHAMPION, champion)
    found, skipped = candidates_from({GRPO: model_metadata(paths[GRPO], 0.45, 0.6),
                                      TIGER: model_metadata(paths[TIGER], 0.30, 0.7)})
    selection = select_candidate(found, skipped)
    assert selection.winner.asset == GRPO
    mv = log_recommender(selection.winner.checkpoint, TITLES, name=name, k=K, beam_width=BEAM,
                         metrics=selection.winner.metrics, user_prefix=prefix)
    record_selection(client, name, mv.version, selection)
    decision = promote(client, name, mv.version, margin=0.01)
    assert decision.alias == CHALLENGER and decision.previous_champion == champion
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == champion
    assert client.get_model_version(name, mv.version).tags[CANDIDATE_TAG] == GRPO


def test_no_candidate_is_a_clear_error():
    found, skipped = candidates_from({})
    with pytest.raises(NoCandidateError, match="no candidate was trained on the current split") as err:
        select_candidate(found, skipped)
    message = str(err.value)
    assert "recommender_grpo: not materialised" in message and "tiger_baseline: not materialised" in message
    with pytest.raises(NoCandidateError, match="no candidate asset is listed"):
        select_candidate([])


# --------------------------------------------------------------------------- through the Dagster asset


def _report(instance: dg.DagsterInstance, asset: str, metadata: dict) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset, metadata=md(metadata)))


def _warehouse_tables(prefix: dict[str, list[int]]) -> dict[str, pd.DataFrame]:
    items = toy_vocab().item_ids
    return {
        "items": pd.DataFrame({"item_id": items, "title": [TITLES[i] for i in items]}),
        "interest_rewards": pd.DataFrame({"item_id": ["i5"], "rank": [0], "descriptor": ["astronomy hobby"],
                                          "label": [1]}),
        "user_interests": pd.DataFrame({"user_id": ["u0"], "rank": [0], "interest": ["astronomy at night"]}),
        "user_interest_tokens": pd.DataFrame({"user_id": list(prefix), "tokens": list(prefix.values())}),
    }


def test_champion_model_asset_ships_the_best_candidate(checkpoints, digr_env, tmp_path):
    paths, prefix = checkpoints
    # copies under DIGR_HOME: the asset reads each checkpoint through the verified (SHA-256) path
    local = {a: shutil.copy(p, tmp_path / f"{a}.ckpt") for a, p in paths.items()}
    Warehouse().replace(_warehouse_tables(prefix))
    (tmp_path / "mlflow").mkdir()
    with local_mlflow_store(tmp_path / "mlflow") as uri, dg.DagsterInstance.get() as instance:
        resources = {"warehouse": Warehouse(), "mlflow_tracking": MlflowTracking(tracking_uri=uri)}
        run_config = {"ops": {"champion_model": {"config": {"model_name": "digr-asset", "k": K}}}}

        # nothing trained yet: a clear failure naming every candidate
        _report(instance, "interaction_splits", {"content_hash": SPLIT})
        with pytest.raises(dg.Failure, match="no candidate was trained on the current split") as err:
            dg.materialize([champion_model], instance=instance, resources=resources, run_config=run_config)
        assert "tiger_baseline: not materialised" in str(err.value)

        # DeepInterestGR on this split, the TIGER-style baseline only on an older one: skipped, GRPO ships
        _report(instance, "recommender_sft", {"mlflow_run_id": "sft-run"})
        _report(instance, GRPO, {**model_metadata(local[GRPO], 0.30, 0.20, run="grpo-run"), "kept": "grpo"})
        _report(instance, TIGER, model_metadata(local[TIGER], 0.90, 0.90, split="older"))
        first = dg.materialize([champion_model], instance=instance, resources=resources, run_config=run_config)
        meta = {k: v.value for k, v in first.asset_materializations_for_node("champion_model")[0].metadata.items()}
        assert meta["ships"] == GRPO and meta["alias"] == CHAMPION and str(meta["version"]) == "1"
        assert "another split" in meta["candidate_selection"]["skipped"][TIGER]
        assert "skipped: tiger_baseline (trained on another split" in meta["candidates"]

        # both on this split: better on validation, worse on test → the TIGER-style model ships and is promoted
        _report(instance, TIGER, model_metadata(local[TIGER], 0.40, 0.05, run="tiger-run"))
        second = dg.materialize([champion_model], instance=instance, resources=resources, run_config=run_config)
        meta = {k: v.value for k, v in second.asset_materializations_for_node("champion_model")[0].metadata.items()}
        assert meta["ships"] == TIGER and meta["alias"] == CHAMPION and meta["new_val_ndcg@10"] == pytest.approx(0.4)
        selection = meta["candidate_selection"]
        assert selection["winner"] == TIGER and selection["runner_up"] == GRPO and not selection["skipped"]
        assert selection["margin_over_runner_up"] == pytest.approx(0.10)
        assert [(r["candidate"], r["chosen"]) for r in selection["rows"]] == [(GRPO, "no"), (TIGER, "yes")]
        assert f"| {TIGER} | `{sha256_file(local[TIGER])[:12]}` | 0.40000 | 0.05000 | yes |" in meta["candidates"]
        tags = mlflow.MlflowClient().get_model_version("digr-asset", str(meta["version"])).tags
        assert tags[CANDIDATE_TAG] == TIGER and tags["lineage.candidate_mlflow_run_id"] == "tiger-run"
        assert tags["lineage.checkpoint_sha256"] == sha256_file(local[TIGER])
        assert float(tags["candidate.recommender_grpo.val_ndcg_at_10"]) == pytest.approx(0.30)
        assert float(tags["metric.val_ndcg_at_10"]) == pytest.approx(0.40)

        # a candidate whose checkpoint was altered is refused, not silently skipped
        with open(local[GRPO], "ab") as fh:
            fh.write(b"tampered")
        with pytest.raises(dg.Failure, match="altered or truncated"):
            dg.materialize([champion_model], instance=instance, resources=resources, run_config=run_config)
