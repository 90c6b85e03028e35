"""The LLM API key lives only in the environment: after the mining assets run against a real loopback
endpoint (some of whose answers are 401 errors that echo the Authorization header back), the key is nowhere
in what the pipeline stored — Dagster event log and compute logs, asset metadata, run config, MLflow runs
and artifacts, every warehouse table, the LLM call cache, any file under DIGR_HOME — nor in logs or output.

Every search also looks for a value that must be there (the miner's model name, the 401 body's marker),
so a search that silently looks nowhere fails the test."""

import json
import logging
import os
import uuid
from pathlib import Path

import dagster as dg
import duckdb
import mlflow
import pytest

from digr_dagster.definitions import defs
from digr_dagster.resources.mlflow_tracking import MlflowTracking
from digr_dagster.resources.models import LLMMiners, MinerSpec, TextEncoderResource
from digr_dagster.resources.warehouse import Warehouse
from mining.backends import ChatRequest, LLMError
from mining.openai_backend import OpenAIBackend
from tests.fake_openai_server import FakeOpenAIServer

KEY_ENV = "DIGR_SECRET_TEST_KEY"
MODEL = "fake-chat-secrets-probe"  # a value that must be found wherever the search looks
REJECT_MARKER = "invalid_api_key_canary"  # part of the 401 body: proves the error text was stored
MINING_ASSETS = ["items", "raw_interactions", "interaction_splits", "item_captions", "item_interests",
                 "interest_rewards", "user_interests"]
SMALL = {
    "ingest_source": {"config": {"kind": "demo", "n_users": 30, "seed": 5}},
    "interaction_splits": {"config": {"k_core": 2}},
    "user_interests": {"config": {"llm_summary": True}},
}
EXCERPT_CHARS = 200  # the backend keeps the first 200 characters of an error body


PREFIX = "sk-digr-canary-"


def _canary() -> str:
    return f"{PREFIX}{uuid.uuid4()}"


def _fragments(key: str) -> list[str]:
    """The key, and the first and last 10 characters of its random part (a truncated echo leaks those)."""
    random_part = key.removeprefix(PREFIX)
    return [key, random_part[:10], random_part[-10:]]


def _leaks(text: str, key: str) -> list[str]:
    return [f for f in _fragments(key) if f in text]


class EchoingRejectServer(FakeOpenAIServer):
    """The first ``n_reject`` chat requests get 401 with a body echoing the Authorization header; the key is
    placed first well inside the 200-character excerpt, then straddling its end (a truncated copy)."""

    def __init__(self, n_reject: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.n_reject = n_reject
        self.rejected = 0

    def _handle(self, handler) -> None:
        with self._lock:
            reject = self.rejected < self.n_reject
            position = self.rejected
            self.rejected += reject
        if not reject:
            super()._handle(handler)
            return
        length = int(handler.headers.get("Content-Length", "0"))
        handler.rfile.read(length)
        auth = handler.headers.get("Authorization", "")
        with self._lock:
            self.requests.append({"path": handler.path, "headers": dict(handler.headers.items()), "body": {}})
        self._send(handler, 401, reject_body(auth, straddle=position % 2 == 1).encode())


def reject_body(auth: str, *, straddle: bool) -> str:
    """A 401 body echoing ``auth``; with ``straddle`` the excerpt ends 12 characters into the key's random part."""
    head = f'{{"error":{{"code":"{REJECT_MARKER}","message":"Incorrect API key","pad":"'
    tail = f'","received":"{auth}"}}}}'
    pad = 8
    if straddle:
        key_offset = len(head) + len('","received":"Bearer ')
        pad = max(EXCERPT_CHARS - len(PREFIX) - 12 - key_offset, 0)
    return head + "x" * pad + tail


def _resources(base_url: str, **miner) -> dict:
    spec = MinerSpec(name="loopback", backend="openai", model=MODEL, base_url=base_url, api_key_env=KEY_ENV,
                     prompt_style="structured_json", n_descriptors=1, max_concurrency=4, **miner)
    return {"warehouse": Warehouse(), "mlflow_tracking": MlflowTracking(), "llm": LLMMiners(miners=[spec]),
            "text_encoder": TextEncoderResource(batch_size=64)}


def _selection(*names: str) -> list[dg.AssetKey]:
    return [dg.AssetKey(n) for n in names]


# --- where the key could have gone -------------------------------------------------------------------------

def _event_log_text(instance: dg.DagsterInstance, run_id: str) -> str:
    from dagster._serdes import serialize_value

    return "\n".join(serialize_value(entry) for entry in instance.all_logs(run_id))


def _run_record_text(instance: dg.DagsterInstance, run_id: str) -> str:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return json.dumps({"run_config": run.run_config, "tags": run.tags}, default=str)


def _mlflow_text(tracking_uri: str) -> str:
    client = mlflow.MlflowClient(tracking_uri)
    parts = []
    for exp in client.search_experiments():
        parts.append(json.dumps({"name": exp.name, "tags": exp.tags, "location": exp.artifact_location}))
        for run in client.search_runs([exp.experiment_id]):
            parts.append(json.dumps({"params": run.data.params, "tags": run.data.tags,
                                     "metrics": sorted(run.data.metrics), "name": run.info.run_name}))
    return "\n".join(parts)


def _artifact_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _warehouse_hits(db: Path, needle: str) -> tuple[list[str], int]:
    """(table.column where ``needle`` occurs, number of columns searched), every column cast to text."""
    hits, searched = [], 0
    con = duckdb.connect(str(db), read_only=True)
    try:
        columns = con.execute("SELECT table_name, column_name FROM information_schema.columns "
                              "WHERE table_schema = 'main'").fetchall()
        for table, column in columns:
            searched += 1
            found = con.execute(f'SELECT count(*) FROM "{table}" WHERE position(? IN CAST("{column}" AS VARCHAR)) > 0',
                                [needle]).fetchall()[0][0]
            if found:
                hits.append(f"{table}.{column}")
    finally:
        con.close()
    return hits, searched


def _files_containing(root: Path, needle: str) -> list[str]:
    raw = needle.encode()
    return [str(p) for p in root.rglob("*") if p.is_file() and raw in p.read_bytes()]


# --- tests -------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_api_key_is_stored_nowhere_after_mining(digr_env, monkeypatch, caplog, capfd):
    key = _canary()
    monkeypatch.setenv(KEY_ENV, key)
    caplog.set_level(logging.DEBUG)
    with EchoingRejectServer(n_reject=4) as server, dg.DagsterInstance.get() as instance:
        result = dg.materialize(defs.assets, instance=instance, resources=_resources(server.base_url),
                                run_config={"ops": SMALL}, selection=_selection(*MINING_ASSETS),
                                raise_on_error=False)
        failures = [str(e.event_specific_data.error)[:1500] for e in result.all_events
                    if e.event_type_value == "STEP_FAILURE"]
        assert result.success, failures
        assert {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()} == set(MINING_ASSETS)

        # the key did reach the endpoint, only in the Authorization header
        auth = [r["headers"].get("Authorization", "") for r in server.requests]
        assert len(auth) > 4 and all(a == f"Bearer {key}" for a in auth)
        assert not any(key in json.dumps(r["body"]) for r in server.requests)
        assert server.rejected >= 4

        events = _event_log_text(instance, result.run_id)
        assert MODEL in events and REJECT_MARKER in events  # the failures' text reached the event log
        assert _leaks(events, key) == []

        metadata = {e.asset_key.to_user_string(): str({k: v.value for k, v in e.materialization.metadata.items()})
                    for e in result.get_asset_materialization_events()}
        assert REJECT_MARKER in metadata["item_interests"]
        assert {a: _leaks(m, key) for a, m in metadata.items() if _leaks(m, key)} == {}

        run_record = _run_record_text(instance, result.run_id)
        assert "demo" in run_record  # the run config is there
        assert _leaks(run_record, key) == []

        # stdout/stderr captured per run (the mining progress bar names the miner)
        compute_logs = "".join(p.read_text(errors="replace") for p in
                               (digr_env / "dagster_home" / "storage" / result.run_id).rglob("compute_logs/*"))
        assert "[loopback]" in compute_logs
        assert _leaks(compute_logs, key) == []

    tracking = MlflowTracking()
    mlflow_text = _mlflow_text(tracking.tracking_uri)
    assert MODEL in mlflow_text  # the miners param names the model
    assert _leaks(mlflow_text, key) == []
    # the mining assets log no artifacts today; any that appear are searched too
    artifacts = _artifact_files(Path(tracking.artifact_location))
    assert all(_leaks(p.read_bytes().decode("utf-8", "replace"), key) == [] for p in artifacts)

    warehouse = digr_env / "warehouse.duckdb"
    model_hits, searched = _warehouse_hits(warehouse, MODEL)
    assert "llm_call_cache.model" in model_hits and searched > 20
    reject_hits, _ = _warehouse_hits(warehouse, REJECT_MARKER)
    assert "item_interest_failures.reason" in reject_hits
    for fragment in _fragments(key):
        assert _warehouse_hits(warehouse, fragment)[0] == [], fragment

    # last line of defence: bytes of every file under DIGR_HOME (the DuckDB file is compressed, hence above)
    assert _files_containing(digr_env, MODEL)  # the sqlite stores are plain enough to find the model
    for fragment in _fragments(key):
        assert _files_containing(digr_env, fragment) == [], fragment

    out, err = capfd.readouterr()
    for fragment in _fragments(key):
        assert fragment not in out + err and fragment not in caplog.text, fragment


def _request(title: str) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": f"<item>\nTitle: {title}\n</item>"}], max_tokens=8)


@pytest.mark.parametrize("straddle", [False, True], ids=["echo-in-excerpt", "echo-cut-by-excerpt"])
def test_rejected_request_error_names_the_endpoint_not_the_key(monkeypatch, caplog, straddle):
    key = _canary()
    monkeypatch.setenv(KEY_ENV, key)
    caplog.set_level(logging.DEBUG)
    with EchoingRejectServer(n_reject=2) as server:
        server.rejected = int(straddle)  # the server alternates: 0 → echo inside the excerpt, 1 → straddling
        backend = OpenAIBackend(name="loopback", model=MODEL, base_url=server.base_url, api_key_env=KEY_ENV,
                                max_retries=0)
        with pytest.raises(LLMError) as info:
            backend.complete_batch([_request("Rejected lamp")])
        body = reject_body(server.requests[0]["headers"]["Authorization"], straddle=straddle)
    assert key in body  # the endpoint really echoed it
    error = info.value
    message = " ".join([str(error), repr(error), *error.errors.values(), repr(backend)])
    assert "HTTP 401" in message and REJECT_MARKER in message and server.base_url in message
    assert _leaks(message, key) == []
    assert _leaks(caplog.text, key) == []
    assert os.environ[KEY_ENV] == key  # the backend read the key but left the environment as it was
