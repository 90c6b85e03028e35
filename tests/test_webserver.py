"""Integration: the Dagster webserver serves the code location; read the asset graph over GraphQL."""

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port, stop_process

REPO = Path(__file__).resolve().parents[1]

QUERY = """
{ assetNodes { assetKey { path } dependencyKeys { path }
               assetChecksOrError { ... on AssetChecks { checks { name blocking } } } } }
"""


@pytest.mark.slow
def test_webserver_serves_every_asset_and_check(digr_env):
    from digr_dagster.definitions import defs

    port = free_port()
    webserver = Path(sys.executable).with_name("dagster-webserver")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [str(webserver), "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, so we can stop it and its code server by pid
    )
    try:
        deadline = time.monotonic() + 180
        nodes = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": QUERY}, timeout=10)
                data = r.json().get("data") or {}
                if data.get("assetNodes"):
                    nodes = data["assetNodes"]
                    break
            except (httpx.TransportError, ValueError):
                pass
            time.sleep(1)
        assert nodes is not None, "webserver did not serve the asset graph within 180 s"
        served = {"/".join(n["assetKey"]["path"]): n for n in nodes}
        expected_assets = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
        assert set(served) == expected_assets
        expected_checks = {(k.asset_key.to_user_string(), k.name) for k in defs.resolve_asset_graph().asset_check_keys}
        served_checks = {(a, c["name"]) for a, n in served.items()
                         for c in (n["assetChecksOrError"] or {}).get("checks", [])}
        assert served_checks == expected_checks
        assert all(c["blocking"] for n in served.values()
                   for c in (n["assetChecksOrError"] or {}).get("checks", []) if c["name"] == "data_contract")
        deps = {"/".join(d["path"]) for d in served["interaction_splits"]["dependencyKeys"]}
        assert deps == {"raw_interactions", "items"}
    finally:
        stop_process(proc, group=True)
    assert proc.returncode is not None
