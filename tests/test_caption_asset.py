"""item_captions: captions only for active items with an image, from a configured vision miner over the
OpenAI protocol (loopback server); an empty table, with the reason, when no vision model is configured."""

import gzip
import json

import dagster as dg
import pytest

from assets.ingestion import ingest_source, interaction_splits
from assets.mining import item_captions
from digr_dagster.resources.models import LLMMiners, MinerSpec
from digr_dagster.resources.warehouse import Warehouse
from tests.fake_openai_server import FakeOpenAIServer


def _write_source(folder):
    folder.mkdir()
    with gzip.open(folder / "Shop.json.gz", "wt") as f:
        for u in range(6):
            for i in range(6):
                f.write(json.dumps({"reviewerID": f"U{u}", "asin": f"I{i}", "overall": 5.0,
                                    "unixReviewTime": 1500000000 + 100 * i + u}) + "\n")
    with gzip.open(folder / "meta_Shop.json.gz", "wt") as f:
        for i in range(6):
            meta = {"asin": f"I{i}", "title": f"Thing {i}", "description": ["A sturdy thing."]}
            if i < 4:
                meta["imageURL"] = [f"http://images.example/I{i}.jpg"]
            f.write(json.dumps(meta) + "\n")


@pytest.mark.parametrize("with_vision", [True, False])
def test_item_captions(digr_env, tmp_path, with_vision):
    _write_source(tmp_path / "src")
    with FakeOpenAIServer() as server, dg.DagsterInstance.get() as instance:
        miner = MinerSpec(name="eyes", backend="openai", model="fake-vision", base_url=server.base_url,
                          vision=True)
        resources = {"warehouse": Warehouse(), "llm": LLMMiners(miners=[miner])}
        ops = {"ingest_source": {"config": {"kind": "amazon2018", "path": str(tmp_path / "src")}},
               "item_captions": {"config": {"vision_miner": "eyes" if with_vision else None}}}
        result = dg.materialize([ingest_source, interaction_splits, item_captions], instance=instance,
                                resources=resources, run_config={"ops": ops})
        assert result.success
        captions = Warehouse().read("item_captions", order_by="item_id")
        md = result.asset_materializations_for_node("item_captions")[0].metadata
        assert md["items_with_image"].value == 4
        if with_vision:
            assert captions["item_id"].tolist() == ["I0", "I1", "I2", "I3"]
            assert captions["caption"].str.len().min() > 0
            sent = [json.dumps(r["body"]) for r in server.requests]
            assert any("http://images.example/I0.jpg" in s for s in sent)
        else:
            assert len(captions) == 0 and "no vision miner" in md["reason"].value
            assert server.requests == []
