"""Dead dependencies fail fast and cleanly: an LLM endpoint that dies mid-run (then answers only 503) or
that nobody listens on fails item_interests after its retries, materialises nothing downstream and leaves
only real answers in the LLM call cache; an unreachable MLflow store fails an asset (and ``digr demo``) in
seconds, naming the store, instead of minutes of MLflow's HTTP retries."""

import copy
import json
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

import dagster as dg
import duckdb
import mlflow
import pytest

from assets.mining import item_interests
from digr_dagster.cli import main
from digr_dagster.definitions import defs
from digr_dagster.resources.mlflow_tracking import MlflowTracking, TrackingStoreUnavailable, check_tracking_store
from digr_dagster.resources.models import LLMMiners, MinerSpec, TextEncoderResource
from digr_dagster.resources.warehouse import Warehouse
from mining.backends import ChatRequest, LLMError
from mining.openai_backend import OpenAIBackend
from tests.fake_openai_server import FakeOpenAIServer

KEY_ENV = "DIGR_DEAD_DEPS_TEST_KEY"
KEY = "sk-digr-dead-deps-not-a-real-key-5f0c"
SOURCE = {"ingest_source": {"config": {"kind": "demo", "n_users": 50, "seed": 5}},
          "interaction_splits": {"config": {"k_core": 3}}}
BACKEND_RETRIES = 0  # MinerSpec.max_retries: its backoff (0.25-0.5 s per retry) is not configurable, so none
ANSWERED = 10  # the endpoint answers this many requests, then dies


def _free_port() -> int:
    """A loopback port nobody listens on (bound, read, released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DyingServer(FakeOpenAIServer):
    """Answers the first ``answered`` chat requests, then 503 to every request; records what it answered."""

    def __init__(self, answered: int) -> None:
        super().__init__()
        self.answered = answered
        self.served: dict[str, str] = {}  # canonical messages JSON -> the answer text sent
        self.unavailable = 0

    def _handle(self, handler) -> None:
        with self._lock:
            alive = len(self.served) + self.in_flight < self.answered
            if alive:
                self.in_flight += 1  # reserve the slot; released in finally
        if alive:
            try:
                super()._handle(handler)
            finally:
                with self._lock:
                    self.in_flight -= 1
            return
        handler.rfile.read(int(handler.headers.get("Content-Length", "0")))
        with self._lock:
            self.unavailable += 1
        self._send(handler, 503, b'{"error": {"message": "upstream unavailable"}}')

    def _answer(self, body: dict, fault: str | None) -> dict:
        answer = super()._answer(body, fault)
        with self._lock:
            self.served[json.dumps(body["messages"], sort_keys=True)] = answer["choices"][0]["message"]["content"]
        return answer


def _without_retry_delay(asset: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """The same asset and retry count, without the policy's 10 s + 20 s of waiting between attempts."""
    op = copy.copy(asset.op)
    op._retry_policy = dg.RetryPolicy(max_retries=asset.op.retry_policy.max_retries, delay=0)
    return dg.AssetsDefinition.dagster_internal_init(**{**asset.get_attributes_dict(), "node_def": op})


def _resources(base_url: str) -> dict:
    spec = MinerSpec(name="remote", backend="openai", model="fake-chat", base_url=base_url, api_key_env=KEY_ENV,
                     prompt_style="structured_json", n_descriptors=2, max_concurrency=4,
                     max_retries=BACKEND_RETRIES, timeout_s=5.0)
    return {"warehouse": Warehouse(), "mlflow_tracking": MlflowTracking(), "llm": LLMMiners(miners=[spec]),
            "text_encoder": TextEncoderResource(batch_size=64)}


@pytest.fixture(scope="module")
def dying_llm_run(tmp_path_factory):
    """One run of the source tables, item_interests and everything downstream against an endpoint that dies."""
    home = tmp_path_factory.mktemp("dead_llm") / "digr"
    (home / "dagster_home").mkdir(parents=True)
    (home / "dagster_home" / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n")
    downstream = dg.AssetSelection.assets("item_interests").downstream()
    source = dg.AssetSelection.assets("items", "raw_interactions", "interaction_splits", "item_captions")
    assets = [_without_retry_delay(a) if a is item_interests else a for a in defs.assets]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIGR_HOME", str(home))
        mp.setenv("DAGSTER_HOME", str(home / "dagster_home"))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
        mp.setenv(KEY_ENV, KEY)
        mp.delenv("DIGR_WAREHOUSE", raising=False)
        with DyingServer(ANSWERED) as server, dg.DagsterInstance.get() as instance:
            result = dg.materialize(assets, instance=instance, resources=_resources(server.base_url),
                                    run_config={"ops": SOURCE}, selection=source | downstream,
                                    raise_on_error=False)
            events = list(instance.all_logs(result.run_id))
        con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
        try:
            n_items = con.execute("SELECT count(DISTINCT item_id) FROM interaction_splits").fetchall()[0][0]
            tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
            cache = con.execute("SELECT request_json, response_text FROM llm_call_cache").fetchall() \
                if "llm_call_cache" in tables else []
        finally:
            con.close()
        yield {"result": result, "events": events, "server": server, "n_items": n_items, "tables": tables,
               "cache": cache, "downstream": downstream.resolve(defs.resolve_asset_graph()), "home": home}


def _failure(run: dict, step: str) -> str:
    errors = [e.event_specific_data.error for e in run["result"].all_events
              if e.event_type_value == "STEP_FAILURE" and e.step_key == step]
    assert len(errors) == 1, errors
    return errors[0].to_string()


@pytest.mark.slow
def test_dying_llm_endpoint_fails_item_interests_after_its_retries(dying_llm_run):
    run, server = dying_llm_run, dying_llm_run["server"]
    result = run["result"]
    assert not result.success
    message = _failure(run, "item_interests")
    assert "Exceeded max_retries of 2" in message and "coverage" in message
    assert KEY not in message
    # step attempts: 3 (policy), each request tried BACKEND_RETRIES + 1 times; answered calls come from the
    # cache on the 2nd and 3rd attempt, so the dead endpoint is asked only for what is still missing
    missing = run["n_items"] - ANSWERED
    assert len(server.served) == ANSWERED
    assert server.unavailable == 3 * missing * (BACKEND_RETRIES + 1)
    started = [e.step_key for e in result.all_events if e.event_type_value in ("STEP_START", "STEP_RESTARTED")]
    assert started.count("item_interests") == 3
    # nothing downstream of item_interests ran, and no table of theirs was written
    downstream = {k.to_user_string() for k in run["downstream"]}
    assert {"item_interests", "interest_rewards", "user_interests", "item_embeddings", "semantic_ids"} <= downstream
    materialised = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialised == {"items", "raw_interactions", "interaction_splits", "item_captions"}
    assert not set(started) & (downstream - {"item_interests"})
    assert not {"item_interests", "interest_rewards", "item_quality", "user_interests", "item_embeddings"} \
        & run["tables"]
    # its MLflow runs were closed as failed, not left RUNNING
    client = mlflow.MlflowClient(f"sqlite:///{run['home'] / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              "tags.dagster_asset_key = 'item_interests'")
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FAILED"}


@pytest.mark.slow
def test_llm_call_cache_holds_only_real_answers_after_the_endpoint_died(dying_llm_run):
    cache, server = dying_llm_run["cache"], dying_llm_run["server"]
    assert len(cache) == ANSWERED
    for request_json, response_text in cache:
        messages = json.dumps(json.loads(request_json)["messages"], sort_keys=True)
        assert server.served[messages] == response_text


@pytest.mark.slow
def test_dead_llm_endpoint_is_named_in_the_run_failure(dying_llm_run):
    message = _failure(dying_llm_run, "item_interests")
    assert dying_llm_run["server"].base_url in message


def test_unreachable_llm_endpoint_error_names_it_not_the_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    dead = f"http://127.0.0.1:{_free_port()}/v1"
    backend = OpenAIBackend(name="remote", model="fake-chat", base_url=dead, api_key_env=KEY_ENV, max_retries=1,
                            backoff_base_s=0.01)
    request = ChatRequest(messages=[{"role": "user", "content": "Title: lamp"}])
    with pytest.raises(LLMError) as info:
        backend.complete_batch([request, request])
    for text in [str(info.value), *info.value.errors.values()]:
        assert dead in text and "connection error" in text and "2 attempts" in text
        assert KEY not in text


# --- MLflow tracking store ---------------------------------------------------------------------------------

class _StatusServer:
    """Loopback HTTP server answering every request with one status; counts the requests."""

    def __init__(self, status: int) -> None:
        owner = self
        self.hits = 0

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                owner.hits += 1
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = _answer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "_StatusServer":
        Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@dg.asset
def tracked_asset(context: dg.AssetExecutionContext, mlflow_tracking: MlflowTracking):
    with mlflow_tracking.asset_run(context) as run:
        return dg.MaterializeResult(metadata=run.metadata())


@pytest.mark.parametrize("store", ["dead-port", "http-503"])
def test_unreachable_tracking_store_fails_an_asset_fast_naming_it(digr_env, monkeypatch, store):
    with _StatusServer(503) as down:
        uri = f"http://127.0.0.1:{_free_port()}" if store == "dead-port" else down.uri
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        started = time.monotonic()
        result = dg.materialize([tracked_asset], resources={"mlflow_tracking": MlflowTracking()},
                                raise_on_error=False)
        elapsed = time.monotonic() - started
    assert not result.success
    error = [e.event_specific_data.error for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert error.cause is not None and error.cause.cls_name == "TrackingStoreUnavailable", error.to_string()
    assert uri in error.cause.message
    assert elapsed < 20, f"took {elapsed:.0f} s: MLflow's HTTP retries were not cut short"
    assert down.hits == (1 if store == "http-503" else 0)  # one probe, no retry storm
    assert mlflow.active_run() is None


def test_tracking_store_probe_passes_a_live_server_and_ignores_local_stores(tmp_path):
    with _StatusServer(200) as live:
        check_tracking_store(live.uri)
        check_tracking_store(live.uri + "/")
    assert live.hits == 2
    check_tracking_store(f"sqlite:///{tmp_path / 'mlflow.db'}")  # not probed: local stores fail fast already
    port = _free_port()
    with pytest.raises(TrackingStoreUnavailable, match=f"127.0.0.1:{port}") as info:
        check_tracking_store(f"http://ops:s3cret-pw@127.0.0.1:{port}", timeout_s=2)
    assert "s3cret-pw" not in str(info.value) and "ops:***@" in str(info.value)  # credentials in a URI stay out


def test_digr_demo_refuses_to_start_without_a_tracking_store(digr_env, monkeypatch, capsys):
    uri = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # a source that fails at once: should the check regress, the run fails in seconds instead of building the demo
    config = digr_env / "run_config.yaml"
    config.write_text(f"ops:\n  ingest_source:\n    config: {{kind: recbole, path: {digr_env / 'missing'}}}\n")
    started = time.monotonic()
    code = main(["demo", "--config", str(config)])
    elapsed = time.monotonic() - started
    assert code == 2 and elapsed < 20
    err = capsys.readouterr().err
    assert uri in err and "unreachable" in err
    with dg.DagsterInstance.get() as instance:
        assert instance.get_runs() == []  # refused before any run was created
