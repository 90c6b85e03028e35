"""`mlflow models serve -m models:/<name>@champion` answers a real /invocations request on a loopback port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow
import pytest

from serving.pyfunc_model import log_recommender
from serving.registry import promote
from tests.servers import free_port
from tests.test_pyfunc_model import BEAM, TITLES, K, local_mlflow_store, train_tiny_recommender
from training.generator import load_generator, recommend
from training.sequence_data import SequenceSample

REPO_ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 150


def wait_for_ping(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mlflow models serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.5)
    raise AssertionError(f"no /ping answer within {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@pytest.mark.slow  # ~20-40 s: starts an MLflow scoring server in a subprocess
def test_served_champion_answers_invocations_like_in_process_model(tmp_path):
    with local_mlflow_store(tmp_path) as uri:
        ckpt, user_prefix = train_tiny_recommender(tmp_path / "ckpt")
        mv = log_recommender(ckpt, TITLES, name="digr-served", k=K, beam_width=BEAM,
                             metrics={"val_ndcg@10": 0.3}, user_prefix=user_prefix)
        assert promote(mlflow.MlflowClient(), "digr-served", mv.version).alias == "champion"

    records = [{"history": ["i1", "i2", "i3"], "user_id": "u0"}, {"history": ["i5", "unknown-item"]}]
    module = load_generator(ckpt)
    samples = [SequenceSample("u0", ("i1", "i2", "i3"), "", "test"), SequenceSample("", ("i5",), "", "test")]
    expected = recommend(module, samples, k=K, beam_width=BEAM, user_prefix=user_prefix)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # the server execs `uvicorn` from PATH and unpickles serving.* classes: venv bin and repo root must be visible
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri,
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/digr-served@champion",
             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_for_ping(proc, url, log)
        resp = httpx.post(f"{url}/invocations", json={"dataframe_records": records}, timeout=60)
        assert resp.status_code == 200, resp.text
        predictions = resp.json()["predictions"]
        assert [p["item_ids"] for p in predictions] == expected
        assert predictions[1]["unknown_items"] == ["unknown-item"]
        assert all(len(p["scores"]) == K for p in predictions)

        bad = httpx.post(f"{url}/invocations", json={"dataframe_records": [{"history": ["nope"]}]}, timeout=60)
        assert bad.status_code == 400 and "nope" in bad.text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the uvicorn worker goes with it
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
