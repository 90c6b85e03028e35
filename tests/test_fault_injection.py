"""Killed runs: SIGKILL a materialisation inside each stage, rerun the same selection in a fresh process.

One chain of child processes shares one DIGR_HOME (a champion is registered first), in two phases so that
the expensive upstream stages are not recomputed by every rerun:
  tables (items .. semantic_ids):  A killed while mining (LLM calls half done) -> B killed in semantic_ids
                                   (RQ-VAE training) -> C completes;
  models (recommender_sft, recommender_grpo): D killed in SFT (after its first epoch checkpoint) ->
                                   E killed in GRPO (after its epoch-1 checkpoint) -> F completes.
Each rerun uses the same selection as the run killed before it; the final state is compared with an
uninterrupted reference run of all of UP_TO_GRPO with the same config (run beside the chain).
"""


import pandas as pd
import pytest

from tests import fault_runner as fr
from tests.fake_openai_server import FakeOpenAIServer

pytestmark = pytest.mark.slow

STAGES = ("item_interests", "semantic_ids", "recommender_sft", "recommender_grpo")
COMPARED = ["items", "raw_interactions", "interaction_splits", "item_interests", "item_interests_raw",
            "interest_rewards", "item_quality", "user_interests", "item_embeddings", "semantic_ids",
            "user_interest_tokens", "llm_call_cache"]
METRICS = ["valid_ndcg@10", "valid_hr@10", "test_ndcg@10", "test_hr@10"]


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer(latency_s=0.02) as srv:
        yield srv


@pytest.fixture(scope="module")
def reference(tmp_path_factory, chain):
    return fr.reference_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def chain(server, tmp_path_factory):
    """Runs A..F (the reference run goes on beside them); returns what was observed after every kill and at
    the end of each phase."""
    fr.start_reference(tmp_path_factory.getbasetemp())
    home = fr.make_home(tmp_path_factory.mktemp("killed"))
    out = {"home": home, "champion_before": fr.set_champion(home), "kills": {}, "phases": {}}

    def kill_when(stage, select, condition, what, after=None, poll_s=0.05):
        child = fr.ChildRun(home, server.base_url, select=select)
        served_before = len(server.requests)
        fr.wait_until(condition, child, what=what, timeout=400, poll_s=poll_s)
        if after:
            after()
        child.kill()
        run_id = fr.latest_run_id(home)
        out["kills"][stage] = {
            "run_id": run_id,
            "started": fr.started_steps(home, run_id),
            "materialised": fr.run_materializations(home, run_id),
            "requests": len(server.requests) - served_before,
            "tables": fr.read_tables(home / "warehouse.duckdb"),
        }

    def complete(phase, select):
        child = fr.ChildRun(home, server.base_url, select=select)
        served_before = len(server.requests)
        summary = child.wait(timeout=500)
        assert summary and summary["success"], f"{phase} rerun failed: {summary and summary['failures']}\n" \
                                              f"{child.tail()}"
        out["phases"][phase] = {**summary, "requests": len(server.requests) - served_before}

    tables, models = fr.UP_TO_GRPO[:-2], fr.UP_TO_GRPO[-2:]
    served = len(server.requests)
    # 100 calls: past the first cache write (64 calls per chunk), before the last of 365
    kill_when("item_interests", tables, lambda: len(server.requests) - served >= 100, "100 LLM calls")
    kill_when("semantic_ids", tables, lambda: bool(fr.checkpoint_files(home, "rqvae")),
              "the first RQ-VAE epoch checkpoint")
    complete("tables", tables)
    kill_when("recommender_sft", models, lambda: bool(fr.checkpoint_files(home, "sft", "last.ckpt")),
              "the SFT last.ckpt after epoch 1 of 2")
    # an observable point inside the stage (a fixed delay after STEP_START landed after GRPO had finished
    # once the machine was idle)
    kill_when("recommender_grpo", models, lambda: bool(fr.checkpoint_files(home, "grpo", "last.ckpt")),
              "the GRPO last.ckpt after epoch 1 of 3")
    complete("models", models)
    out["tables"] = fr.read_tables(home / "warehouse.duckdb")
    out["mlflow"] = fr.mlflow_runs(home)
    out["statuses"] = fr.run_statuses(home)
    out["champion_after"] = fr.champion_version(home)
    return out


def test_every_kill_landed_inside_its_stage(chain):
    for stage in STAGES:
        kill = chain["kills"][stage]
        assert stage in kill["started"], f"{stage}: the kill came before the stage started"
        assert stage not in kill["materialised"], f"{stage}: the kill came after the stage had finished"


def test_reruns_after_kills_complete_and_release_the_killed_runs(chain):
    phases, kills = chain["phases"], chain["kills"]
    # each rerun released the Dagster run killed just before it (its pool slot too, or it would wait forever)
    assert kills["semantic_ids"]["run_id"] != kills["item_interests"]["run_id"]
    assert phases["tables"]["released"] == [kills["semantic_ids"]["run_id"]]
    assert phases["models"]["released"] == [kills["recommender_grpo"]["run_id"]]
    for stage in STAGES:
        assert chain["statuses"][kills[stage]["run_id"]] == "FAILURE"
    assert chain["statuses"][phases["tables"]["run_id"]] == chain["statuses"][phases["models"]["run_id"]] == "SUCCESS"


def test_results_equal_the_uninterrupted_reference(chain, reference):
    ref = reference["summary"]["metadata"]
    final = {**chain["phases"]["tables"]["metadata"], **chain["phases"]["models"]["metadata"]}
    for asset in ("item_interests", "interest_rewards", "user_interests", "item_embeddings", "semantic_ids"):
        assert final[asset]["content_hash"] == ref[asset]["content_hash"], asset
    for name in COMPARED:
        got, want = chain["tables"][name], reference["tables"][name]
        if name == "llm_call_cache":  # when a call was made differs; what was asked and answered may not
            got, want = got.drop(columns="created_at"), want.drop(columns="created_at")
        pd.testing.assert_frame_equal(fr.sorted_frame(got), fr.sorted_frame(want), obj=name)
    for asset in ("recommender_sft", "recommender_grpo"):
        for metric in METRICS:
            assert final[asset][metric] == ref[asset][metric], (asset, metric)
    assert final["recommender_grpo"]["kept"] == ref["recommender_grpo"]["kept"]


def test_sft_resumed_from_its_checkpoint_and_equals_the_reference(chain, reference):
    # run E (the rerun after the SFT kill) trained SFT from the killed run's last.ckpt, not from scratch
    sft = chain["kills"]["recommender_grpo"]["materialised"]["recommender_sft"]
    assert "recommender_sft" in chain["kills"]["recommender_sft"]["started"]
    assert sft["resumed_from"].endswith("last.ckpt")
    ref = reference["summary"]["metadata"]["recommender_sft"]
    assert sft["epochs_completed"] == ref["epochs_completed"]
    for metric in [*METRICS, "best_val_ndcg@10"]:
        assert sft[metric] == ref[metric], metric


def test_mining_resumed_from_the_call_cache(chain, reference):
    ref_calls = len(reference["tables"]["llm_call_cache"])
    cached_at_kill = len(chain["kills"]["item_interests"]["tables"].get("llm_call_cache", []))
    assert reference["requests"] == ref_calls  # the uninterrupted run called each request once
    assert 0 < cached_at_kill < ref_calls, "the mining kill should leave a partly filled cache"
    # the rerun paid exactly for the calls the killed run had not stored, none twice
    assert chain["kills"]["semantic_ids"]["requests"] == ref_calls - cached_at_kill
    assert chain["phases"]["tables"]["requests"] == chain["phases"]["models"]["requests"] == 0


def test_no_duplicated_or_half_written_rows_after_any_kill(chain, reference):
    for stage in STAGES:
        tables = chain["kills"][stage]["tables"]
        assert fr.warehouse_problems(tables) == [], stage
        for name, df in tables.items():
            # a table is either absent or complete: never a partial copy of what the reference wrote
            if name in reference["tables"] and name not in ("__tables__", "llm_call_cache"):
                assert len(df) == len(reference["tables"][name]), f"{stage}: {name} has {len(df)} rows"
    assert fr.warehouse_problems(chain["tables"]) == []
    assert chain["tables"]["__tables__"] == reference["tables"]["__tables__"]


def test_champion_set_before_the_kills_is_unchanged(chain):
    assert chain["champion_after"] == chain["champion_before"] == "1"


def test_no_mlflow_run_left_running_after_the_rerun(chain):
    running = [(r["name"], r["dagster_run_id"]) for r in chain["mlflow"] if r["status"] == "RUNNING"]
    assert running == []
