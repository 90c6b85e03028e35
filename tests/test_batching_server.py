"""The micro-batching scoring server: a real subprocess on a loopback port, serving a tiny trained champion from a
real MLflow store, answers like the pyfunc called per request, isolates a bad request, and batches."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import scoring_server

from serving.batching_server import BATCH_REQUESTS_HEADER, MicroBatcher
from serving.pyfunc_model import RecommendationInputError, log_recommender
from serving.registry import promote
from tests.servers import free_port, stop_process
from tests.test_model_serving import wait_for_ping
from tests.test_pyfunc_model import BEAM, TITLES, K, local_mlflow_store, train_tiny_recommender

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL = "digr-batching"
SCORE_TOL = 1e-5  # a row's beam scores in a batch differ from its scores alone by float32 rounding only

#: (request body, the records and params the same request means to the pyfunc), in every input format
GOOD = [
    ({"dataframe_records": [{"history": ["i1", "i2", "i3"], "user_id": "u0"}]},
     [{"history": ["i1", "i2", "i3"], "user_id": "u0"}], None),
    ({"dataframe_split": {"columns": ["history"], "data": [[["i4", "i5"]]]}}, [{"history": ["i4", "i5"]}], None),
    ({"inputs": [{"history": ["i6", "zz-unknown"]}]}, [{"history": ["i6", "zz-unknown"]}], None),
    ({"dataframe_records": [{"history": ["i2", "i3", "i4"]}, {"history": ["i0"], "user_id": "u3"}]},
     [{"history": ["i2", "i3", "i4"]}, {"history": ["i0"], "user_id": "u3"}], None),
    ({"dataframe_records": [{"history": ["i1", "i2"]}], "params": {"exclude_seen": True}},
     [{"history": ["i1", "i2"]}], {"exclude_seen": True}),
    ({"dataframe_records": [{"history": ["i7", "i0", "i1"], "interests": ["star gazing"]}]},
     [{"history": ["i7", "i0", "i1"], "interests": ["star gazing"]}], None),
    ({"dataframe_records": [{"history": ["i3"]}], "params": {"exclude_seen": False}},
     [{"history": ["i3"]}], {"exclude_seen": False}),
    ({"dataframe_records": [{"history": ["i5", "i6", "i7"], "user_id": "u1"}]},
     [{"history": ["i5", "i6", "i7"], "user_id": "u1"}], None),
]


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """A tiny trained recommender registered as MODEL@champion in a sqlite store; (tracking URI, loaded pyfunc)."""
    root = tmp_path_factory.mktemp("batching")
    with local_mlflow_store(root) as uri:
        ckpt, user_prefix = train_tiny_recommender(root / "ckpt")
        mv = log_recommender(ckpt, TITLES, name=MODEL, k=K, beam_width=BEAM, metrics={"val_ndcg@10": 0.3},
                             user_prefix=user_prefix, user_interests={"u0": ["astronomy at night"]})
        assert promote(mlflow.MlflowClient(), MODEL, mv.version).alias == "champion"
        yield uri, mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")


@pytest.fixture(scope="module")
def server(champion, tmp_path_factory):
    """``python -m serving.batching_server`` in its own session on a free loopback port; yields its URL."""
    uri, _ = champion
    root = tmp_path_factory.mktemp("server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri,
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    log = root / "server.log"
    with log.open("w") as out:
        # a long wait window makes the concurrent requests of the tests share batches even on a loaded machine
        proc = subprocess.Popen(
            [sys.executable, "-m", "serving.batching_server", "--model", MODEL, "--alias", "champion",
             "--host", "127.0.0.1", "--port", str(port), "--max-batch-rows", "64", "--max-wait-ms", "300",
             "--torch-threads", "1"],
            cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_ping(proc, url, log)
        yield url
    finally:
        stop_process(proc, group=True, timeout=20)


def post_together(url: str, bodies: list) -> list[httpx.Response]:
    """POST every body to /invocations from its own thread, all released at once."""
    barrier = threading.Barrier(len(bodies))
    answers: list = [None] * len(bodies)

    def send(i: int) -> None:
        with httpx.Client(timeout=120) as client:
            barrier.wait()
            answers[i] = client.post(f"{url}/invocations", json=bodies[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def assert_same_predictions(served: list[dict], expected: pd.DataFrame) -> None:
    assert len(served) == len(expected)
    for got, (_, want) in zip(served, expected.iterrows(), strict=True):
        assert got["item_ids"] == list(want["item_ids"])  # exact: the same items in the same order
        assert got["explanations"] == list(want["explanations"])
        assert got["unknown_items"] == list(want["unknown_items"])
        assert got["scores"] == pytest.approx(list(want["scores"]), abs=SCORE_TOL)


@pytest.mark.slow  # starts the server in a subprocess
def test_concurrent_requests_are_batched_and_answer_like_the_pyfunc(server, champion):
    _, model = champion
    before = httpx.get(f"{server}/metrics").json()
    cases = GOOD * 2  # 16 requests in every input format, two params groups, 1-2 rows each
    answers = post_together(server, [body for body, _, _ in cases])
    for answer, (_, records, params) in zip(answers, cases, strict=True):
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("application/json")
        assert_same_predictions(answer.json()["predictions"], model.predict(pd.DataFrame(records), params=params))
    after = httpx.get(f"{server}/metrics").json()
    requests = after["requests"] - before["requests"]
    calls = after["predict_calls"] - before["predict_calls"]
    assert requests == len(cases)
    assert calls < requests, after  # batched: fewer beam searches than requests
    assert after["largest_batch_requests"] > 1
    assert max(int(a.headers[BATCH_REQUESTS_HEADER]) for a in answers) > 1
    assert after["model"]["name"] == MODEL and after["model"]["version"] == "1"


@pytest.mark.slow  # starts the server in a subprocess
def test_a_bad_request_gets_400_and_the_others_in_its_batch_200(server, champion):
    _, model = champion
    bad = {"dataframe_records": [{"history": ["nope-1", "nope-2"]}]}
    bodies = [GOOD[0][0], GOOD[1][0], bad, GOOD[3][0], GOOD[7][0], GOOD[2][0]]
    answers = post_together(server, bodies)
    assert answers[2].status_code == 400
    error = answers[2].json()
    assert error["error_code"] == "BAD_REQUEST"
    assert "nope-1" in error["message"] and "no item of the history is in the model's catalogue" in error["message"]
    for i in (0, 1, 3, 4, 5):
        assert answers[i].status_code == 200, answers[i].text
        body, records, params = next(c for c in GOOD if c[0] is bodies[i])
        assert_same_predictions(answers[i].json()["predictions"],
                                model.predict(pd.DataFrame(records), params=params))


@pytest.mark.slow  # starts the server in a subprocess
def test_protocol_matches_mlflow_scoring_server(server, champion):
    """Health routes, and per request the status and error code MLflow's own ``invocations`` gives."""
    _, model = champion
    assert httpx.get(f"{server}/ping").status_code == 200
    assert httpx.get(f"{server}/health").status_code == 200
    assert httpx.get(f"{server}/version").text == mlflow.__version__
    schema = model.metadata.get_input_schema()
    cases = [
        (json.dumps(GOOD[0][0]), "application/json"),
        (json.dumps(GOOD[4][0]), "application/json; charset=utf-8"),
        (json.dumps({"dataframe_records": [{"items": ["i1"]}]}), "application/json"),  # no history column
        (json.dumps({"dataframe_records": [{"history": []}]}), "application/json"),  # empty history
        (json.dumps({"dataframe_records": [{"history": ["i1"]}], "params": {"nope": 1}}), "application/json"),
        (json.dumps({"records": [{"history": ["i1"]}]}), "application/json"),  # not a scoring format
        (json.dumps({"inputs": {"history": [["i1"]]}}), "application/json"),  # columnar list cells: MLflow refuses
        (json.dumps({"instances": [{"history": ["i1", "i2"]}]}), "application/json"),
        ("{not json", "application/json"),
        (json.dumps(GOOD[0][0]), "text/plain"),
        (json.dumps(GOOD[0][0]), "application/json; charset=latin-1"),
    ]
    for body, content_type in cases:
        ours = httpx.post(f"{server}/invocations", content=body.encode(), headers={"content-type": content_type},
                          timeout=60)
        try:
            theirs = scoring_server.invocations(body.encode(), content_type, model, schema)
        except MlflowException as exc:
            assert ours.status_code == exc.get_http_status_code(), (body, ours.text)
            assert ours.json()["error_code"] == exc.error_code, (body, ours.text)
            continue
        assert ours.status_code == theirs.status, (body, ours.text)
        if theirs.status == 200:
            assert_same_predictions(ours.json()["predictions"],
                                    pd.DataFrame(json.loads(theirs.response)["predictions"]))
        else:
            assert ours.text == theirs.response


def test_a_failing_batch_predict_is_retried_per_request_so_only_the_bad_one_fails(champion):
    """The batcher alone, with the real model's predict and no per-request check in front: the bad frame fails
    the batch's predict, every request is then ranked alone and only the bad one gets the error."""
    _, model = champion
    frames = [pd.DataFrame({"history": [["i1", "i2"]]}), pd.DataFrame({"history": [["zz"]]}),
              pd.DataFrame({"history": [["i4"], ["i5", "i6"]]})]

    async def scenario():
        batcher = MicroBatcher(lambda f, p: model.predict(f, params=p), max_batch_rows=64, max_wait_ms=200)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(f, None) for f in frames), return_exceptions=True), \
                batcher.stats
        finally:
            await batcher.stop()

    (good1, bad, good2), stats = asyncio.run(scenario())
    assert isinstance(bad, RecommendationInputError) and "zz" in str(bad)
    for answer, frame in ((good1, frames[0]), (good2, frames[2])):
        assert_same_predictions(answer.predictions.to_dict("records"), model.predict(frame))
    assert stats.batches == 1 and stats.fallback_predict_calls == 3 and stats.predict_calls == 4
    assert stats.failed_requests == 1
