"""Corrupt artefacts: a truncated, altered or missing SFT checkpoint is refused by recommender_grpo (through
Dagster, naming the file); a corrupted RQ-VAE checkpoint and an altered semantic_ids table are detectable
from what their materialisation recorded."""

import hashlib
import shutil
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest

from tests import fault_runner as fr
from tests.fake_openai_server import FakeOpenAIServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer(latency_s=0.02) as srv:
        yield srv


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return fr.reference_run(tmp_path_factory.getbasetemp())


def _use_home(monkeypatch, home: Path) -> None:
    for key in ("DIGR_HOME", "DAGSTER_HOME", "MLFLOW_TRACKING_URI"):
        monkeypatch.setenv(key, fr.child_env(home)[key])
    monkeypatch.delenv("DIGR_WAREHOUSE", raising=False)
    monkeypatch.delenv("DIGR_CHECKPOINTS", raising=False)


def _materialize(server, selection: list[str], ops: dict):
    """In-process materialisation against the instance in $DAGSTER_HOME (set by ``_use_home``)."""
    import dagster as dg

    from digr_dagster.definitions import defs
    from digr_dagster.resources.mlflow_tracking import MlflowTracking
    from digr_dagster.resources.models import LLMMiners, MinerSpec, TextEncoderResource
    from digr_dagster.resources.warehouse import Warehouse

    miner = MinerSpec(name="loopback", backend="openai", model="fake-chat", base_url=server.base_url,
                      api_key_env="DIGR_TEST_LLM_KEY", n_descriptors=2, max_concurrency=8)
    resources = {"warehouse": Warehouse(), "mlflow_tracking": MlflowTracking(), "llm": LLMMiners(miners=[miner]),
                 "text_encoder": TextEncoderResource(batch_size=64)}
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize(list(defs.assets), instance=instance, resources=resources, selection=selection,
                                run_config={"ops": ops}, raise_on_error=False)
        failures = [str(e.event_specific_data.error) for e in result.all_events
                    if e.event_type_value == "STEP_FAILURE"]
        return result, failures


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextmanager
def _damaged(path: Path, how: str):
    """Damage ``path`` for the body and restore it byte for byte afterwards (the reference is shared)."""
    original = path.read_bytes()
    try:
        if how == "truncated":
            path.write_bytes(original[: len(original) // 2])
        elif how == "altered":  # same size, one byte flipped in the middle (a silent bit rot)
            middle = len(original) // 2
            path.write_bytes(original[:middle] + bytes([original[middle] ^ 0xFF]) + original[middle + 1:])
        elif how == "missing":
            path.unlink()
        else:
            raise ValueError(how)
        yield
    finally:
        path.write_bytes(original)


@pytest.mark.parametrize("how", ["truncated", "altered", "missing"])
def test_grpo_refuses_a_damaged_sft_checkpoint(how, reference, server, monkeypatch):
    home = reference["home"]
    ckpt = Path(reference["summary"]["metadata"]["recommender_sft"]["checkpoint"])
    recorded = reference["summary"]["metadata"]["recommender_sft"]["checkpoint_sha256"]
    assert _sha256(ckpt) == recorded
    _use_home(monkeypatch, home)
    grpo_runs_before = [r["run_id"] for r in fr.mlflow_runs(home) if r["name"] == "recommender_grpo"]
    with _damaged(ckpt, how):
        result, failures = _materialize(server, ["recommender_grpo"],
                                        {"recommender_grpo": fr.SMALL["recommender_grpo"]})
    assert not result.success
    assert failures and all(str(ckpt) in f for f in failures), failures
    expected = "is missing" if how == "missing" else "was altered or truncated"
    assert all(expected in f and "rematerialise recommender_sft" in f for f in failures), failures
    assert result.get_asset_materialization_events() == []
    # refused before any training: no MLflow run was opened for GRPO
    assert [r["run_id"] for r in fr.mlflow_runs(home) if r["name"] == "recommender_grpo"] == grpo_runs_before
    assert _sha256(ckpt) == recorded  # restored for the other tests


def _semantic_ids_table(db: Path):
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT * FROM semantic_ids ORDER BY item_id").df()


def test_altered_semantic_ids_table_differs_from_its_recorded_content_hash(reference, tmp_path):
    """The content_hash recorded at materialisation is a working detector: the table as stored hashes to it,
    and one swapped pair of codes does not."""
    from assets.common import frame_hash

    recorded = reference["summary"]["metadata"]["semantic_ids"]["content_hash"]
    db = tmp_path / "warehouse.duckdb"
    shutil.copy(reference["home"] / "warehouse.duckdb", db)
    table = _semantic_ids_table(db)
    assert frame_hash(table) == recorded
    with duckdb.connect(str(db)) as con:
        a, b = table["item_id"].iloc[0], table["item_id"].iloc[1]
        con.execute("UPDATE semantic_ids SET item_id = CASE item_id WHEN ? THEN ? ELSE ? END "
                    "WHERE item_id IN (?, ?)", [a, b, a, a, b])
    assert frame_hash(_semantic_ids_table(db)) != recorded


def test_sft_refuses_an_altered_semantic_ids_table(reference, server, tmp_path, monkeypatch):
    home = tmp_path / "copy"
    shutil.copytree(reference["home"], home, ignore=shutil.ignore_patterns("child-*"))
    _use_home(monkeypatch, home)
    table = _semantic_ids_table(home / "warehouse.duckdb")
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:  # two items swap their SIDs
        a, b = table["item_id"].iloc[0], table["item_id"].iloc[1]
        con.execute("UPDATE semantic_ids SET item_id = CASE item_id WHEN ? THEN ? ELSE ? END "
                    "WHERE item_id IN (?, ?)", [a, b, a, a, b])
    result, failures = _materialize(server, ["recommender_sft"], {"recommender_sft": fr.SMALL["recommender_sft"]})
    assert not result.success
    assert any("semantic_ids" in f for f in failures), failures


def test_semantic_ids_records_the_rqvae_checkpoint_sha256(reference):
    meta = reference["summary"]["metadata"]["semantic_ids"]
    ckpt = Path(meta["checkpoint"])
    assert ckpt.is_file()
    with _damaged(ckpt, "altered"):
        assert meta.get("checkpoint_sha256") not in (None, _sha256(ckpt))
    assert meta["checkpoint_sha256"] == _sha256(ckpt)
