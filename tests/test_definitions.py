"""The code location loads and validates through Dagster's own CLI, as `dagster dev` would load it."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_dagster_definitions_validate(digr_env):
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run([str(dagster), "definitions", "validate", "-w", str(REPO / "workspace.yaml")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "deepinterestgr" in proc.stdout + proc.stderr


def test_every_asset_has_a_group_description_and_the_graph_is_wired():
    from digr_dagster.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {"items", "raw_interactions", "interaction_splits", "item_interests", "interest_rewards",
                    "user_interests", "item_embeddings", "semantic_ids", "recommender_sft", "recommender_grpo",
                    "evaluation_report", "champion_model", "item_captions", "item_embeddings_plain",
                    "semantic_ids_plain", "tiger_baseline", "ablation_no_item_interests", "ablation_no_user_tokens",
                    "ablation_no_q_term", "user_recommendations"}
    parents = {k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys}
               for k in graph.get_all_asset_keys()}
    assert parents["user_interests"] == {"interaction_splits", "interest_rewards"}
    assert "user_interests" in parents["recommender_sft"] and "semantic_ids" in parents["recommender_sft"]
    assert parents["recommender_grpo"] == {"recommender_sft", "interest_rewards"}
    assert parents["champion_model"] == {"recommender_grpo", "evaluation_report"}
    # batch scoring reads the champion promoted in the same run, and the histories it scores
    assert parents["user_recommendations"] == {"champion_model", "interaction_splits"}
    # the TIGER-style baseline never sees a mined interest: plain-text SIDs, no user_interests input
    assert "user_interests" not in parents["tiger_baseline"] and "semantic_ids_plain" in parents["tiger_baseline"]
    assert "interest_rewards" not in parents["item_embeddings_plain"]
    assert {"tiger_baseline", "ablation_no_item_interests", "ablation_no_user_tokens",
            "ablation_no_q_term"} <= parents["evaluation_report"]
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.group_name != "default" and node.description, key
