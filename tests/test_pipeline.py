"""End to end: the whole asset graph on a small demo, through a real Dagster instance, DuckDB file and
MLflow store. The miner is an OpenAI-compatible endpoint served by a real HTTP server on loopback (the
stand-in for a hosted LLM); the production client code talks to it."""

import dagster as dg
import duckdb
import mlflow
import pytest

from digr_dagster.definitions import defs
from digr_dagster.resources.mlflow_tracking import MlflowTracking
from digr_dagster.resources.models import LLMMiners, MinerSpec, TextEncoderResource
from digr_dagster.resources.warehouse import Warehouse
from tests.fake_openai_server import FakeOpenAIServer

SMALL = {
    "ingest_source": {"config": {"kind": "demo", "n_users": 160, "seed": 3}},
    "user_interests": {"config": {"llm_summary": True}},
    "semantic_ids": {"config": {"n_levels": 2, "codebook_size": 16, "max_epochs": 6, "seed": 1}},
    "recommender_sft": {"config": {"d_model": 32, "d_ff": 64, "num_encoder_layers": 1, "num_decoder_layers": 1,
                                   "num_heads": 2, "max_epochs": 3,
                                   "patience": 3, "beam_width": 10, "batch_size": 64, "max_history": 6}},
    "recommender_grpo": {"config": {"group_size": 4, "max_epochs": 1}},
    "evaluation_report": {"config": {"sasrec": {"max_epochs": 3}, "examples": 2}},
    "champion_model": {"config": {"model_name": "digr-e2e"}},
}


def _assets():
    return [a for a in defs.assets]


def _resources(server_url: str):
    miner = MinerSpec(name="loopback", backend="openai", model="fake-chat", base_url=server_url,
                      api_key_env="DIGR_TEST_LLM_KEY", n_descriptors=2, max_concurrency=8)
    return {"warehouse": Warehouse(), "mlflow_tracking": MlflowTracking(), "llm": LLMMiners(miners=[miner]),
            "text_encoder": TextEncoderResource(batch_size=64)}


@pytest.mark.slow
def test_whole_graph_materialises_and_is_consistent(digr_env, monkeypatch, capsys):
    monkeypatch.setenv("DIGR_TEST_LLM_KEY", "sk-test-not-a-real-key")
    with FakeOpenAIServer() as server, dg.DagsterInstance.get() as instance:
        result = dg.materialize(_assets(), instance=instance, resources=_resources(server.base_url),
                                run_config={"ops": SMALL}, raise_on_error=False)
        failures = [str(e.event_specific_data.error)[:2000] for e in result.all_events
                    if e.event_type_value == "STEP_FAILURE"]
        assert result.success, failures

        materialised = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        expected = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
        assert materialised == expected
        checks = [e.asset_check_evaluation_data for e in result.all_events
                  if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        assert checks and all(c.passed for c in checks)

        con = duckdb.connect(str(digr_env / "warehouse.duckdb"), read_only=True)
        try:
            sids = con.execute("SELECT count(*), count(DISTINCT sid) FROM semantic_ids").fetchall()[0]
            active = con.execute("SELECT count(DISTINCT item_id) FROM interaction_splits").fetchall()[0][0]
            # leakage at the asset level: every aggregate user interest is a descriptor of one of the
            # user's TRAIN items; none may come only from their valid/test items
            leaked = con.execute("""
                SELECT count(*) FROM user_interests u
                WHERE u.source = 'aggregate' AND NOT EXISTS (
                    SELECT 1 FROM interaction_splits s JOIN interest_rewards r ON r.item_id = s.item_id
                    WHERE s.user_id = u.user_id AND s.split = 'train'
                      AND lower(regexp_replace(r.descriptor, '[^A-Za-z0-9 ]', ' ', 'g'))
                          LIKE '%' || lower(regexp_replace(u.interest, '[^A-Za-z0-9 ]', ' ', 'g')) || '%')
            """).fetchall()[0][0]
            n_user_interests = con.execute("SELECT count(*) FROM user_interests").fetchall()[0][0]
        finally:
            con.close()
        assert sids[0] == sids[1] == active
        assert n_user_interests > 0 and leaked == 0

        sft = result.asset_materializations_for_node("recommender_sft")[0].metadata
        assert 0.0 <= sft["valid_ndcg@10"].value <= 1.0
        assert sft["checkpoint_sha256"].value
        grpo = result.asset_materializations_for_node("recommender_grpo")[0].metadata
        assert grpo["kept"].value in ("sft", "grpo")

        client = mlflow.MlflowClient(MlflowTracking().tracking_uri)
        runs = client.search_runs([client.get_experiment_by_name("deepinterestgr").experiment_id],
                                  f"tags.dagster_run_id = '{result.run_id}'")
        assert {r.info.run_name for r in runs} >= {"item_interests", "semantic_ids", "recommender_sft",
                                                   "recommender_grpo", "evaluation_report", "champion_model"}
        assert all(r.info.status == "FINISHED" for r in runs)
        # the API key reached the server in the Authorization header and nowhere in what we stored
        assert any("sk-test-not-a-real-key" in r["headers"].get("Authorization", "") for r in server.requests)

        report = result.asset_materializations_for_node("evaluation_report")[0].metadata
        assert "SASRec" in report["table"].value and "most-popular" in report["table"].value
        # the TIGER-style baseline and every ablation trained on this split are in the table
        for row in ("TIGER-style (no interests)", "w/o interests in item text", "w/o user-side interests",
                    "GRPO w/o q term (alpha=0)", "w/o GRPO (SFT)"):
            assert row in report["table"].value, row
        assert report["variants_not_shown"].value == "none"
        # variants train exactly like the SFT model (its run config), only their own switch flipped
        params = {r.info.run_name: r.data.params for r in runs}
        for variant, interests in (("tiger_baseline", "False"), ("ablation_no_user_tokens", "False"),
                                   ("ablation_no_item_interests", "True")):
            assert params[variant]["config.d_model"] == "32" and params[variant]["config.max_epochs"] == "3"
            # the default item-level generator takes user-side interests through its history's text
            assert params[variant]["config.arch"] == "item_causal"
            assert params[variant]["config.history_text"] == interests
            assert params[variant]["config.use_user_interests"] == "False"
        assert params["tiger_baseline"]["config.sids"] == "semantic_ids_plain"
        assert params["ablation_no_q_term"]["config.reward_alpha"] == "0.0"
        # the one history cap, set on recommender_sft, is what every later stage read from its checkpoint
        meta = {a: {k: v.value for k, v in result.asset_materializations_for_node(a)[0].metadata.items()}
                for a in ("recommender_sft", "recommender_grpo", "tiger_baseline", "evaluation_report",
                          "champion_model")}
        assert {m["max_history"] for m in meta.values()} == {6}
        assert meta["recommender_sft"]["longest_train_history"] == meta["recommender_grpo"]["longest_test_history"] == 6
        # slices (cold items, popularity deciles, history lengths) for every model, from the per-user ranks
        with duckdb.connect(str(digr_env / "warehouse.duckdb"), read_only=True) as con:
            slices = con.execute("SELECT * FROM evaluation_slices").df()
        all_users = slices[slices["slice"] == "all"].iloc[0]
        for row in ("SASRec", "most-popular", "TIGER-style (no interests)", "w/o GRPO (SFT)"):
            assert 0.0 <= all_users[f"{row} NDCG@10"] <= 1.0, row
        sft_test = meta["recommender_sft"]["test_ndcg@10"]
        assert all_users["w/o GRPO (SFT) NDCG@10"] == pytest.approx(sft_test, abs=1e-5)  # same ranks, same number
        champion = result.asset_materializations_for_node("champion_model")[0].metadata
        assert champion["alias"].value == "champion" and str(champion["version"].value) == "1"  # first model
        served = mlflow.pyfunc.load_model("models:/digr-e2e@champion")
        import pandas as pd

        with duckdb.connect(str(digr_env / "warehouse.duckdb"), read_only=True) as con:
            some_items = [r[0] for r in con.execute("SELECT item_id FROM semantic_ids LIMIT 3").fetchall()]
        out = served.predict(pd.DataFrame([{"history": some_items}]))
        assert len(out.iloc[0]["item_ids"]) == 10

        # the command line answers from the same champion
        from digr_dagster.cli import main

        capsys.readouterr()
        assert main(["recommend", "--history", ",".join(some_items), "--model", "digr-e2e"]) == 0
        printed = capsys.readouterr().out
        assert all(item in printed for item in out.iloc[0]["item_ids"])
        assert main(["status", "--model", "digr-e2e"]) == 0
        assert '"champion"' in capsys.readouterr().out

        # reproducible: rematerialising the codebook gives byte-identical semantic IDs
        first_hash = result.asset_materializations_for_node("semantic_ids")[0].metadata["content_hash"].value
        again = dg.materialize(_assets(), instance=instance, resources=_resources(server.base_url),
                               run_config={"ops": {"semantic_ids": SMALL["semantic_ids"]}},
                               selection=["semantic_ids"])
        assert again.asset_materializations_for_node("semantic_ids")[0].metadata["content_hash"].value == first_hash
