"""Real servers on loopback for the production-profile tests: PostgreSQL and an S3-protocol object store.

PostgreSQL is the Debian package's server (``make``/``.ci/run`` install it), started by the test in a temp
folder on a free port; as root it runs as the ``postgres`` user (the server refuses root). The object store
is moto's S3 server (``moto_server``, a real HTTP server speaking the S3 protocol: boto3, pyarrow and MLflow
talk to it as to AWS). Both are skipped with the reason when their binaries are missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout:.0f} s")


def stop_process(process: subprocess.Popen, *, group: bool = False, timeout: float = 30) -> None:
    """Stop a server: SIGTERM, then SIGKILL if it has not exited within ``timeout``; ``group``: its whole
    process group (a server started with ``start_new_session=True`` and its workers)."""
    if process.poll() is not None:
        return
    if group:
        os.killpg(process.pid, signal.SIGTERM)
    else:
        process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
        process.wait(timeout=10)


def _pg_tool(name: str) -> str | None:
    for folder in PG_BIN_DIRS:
        if (folder / name).exists():
            return str(folder / name)
    return shutil.which(name)


@dataclass
class PostgresServer:
    """A running PostgreSQL server; ``create_database()`` hands out a fresh database per use."""

    host: str
    port: int
    user: str

    def url(self, database: str, driver: str = "postgresql") -> str:
        return f"{driver}://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, prefix: str = "digr") -> str:
        import psycopg2

        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return name


@dataclass
class S3Server:
    """A running S3-protocol server; ``create_bucket()`` hands out a fresh bucket per use."""

    endpoint_url: str
    access_key: str = "testing"
    secret_key: str = "testing"
    region: str = "us-east-1"

    def env(self) -> dict[str, str]:
        """The standard AWS/MLflow variables that point boto3, pyarrow and MLflow at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
        }

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def create_bucket(self, prefix: str = "digr") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=name)
        return name


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("running as root without runuser: PostgreSQL refuses to start as root")
    return [runuser, "-u", "postgres", "--", *cmd]


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """A PostgreSQL server for the whole session (trust auth on loopback only)."""
    initdb, pg_ctl = _pg_tool("initdb"), _pg_tool("pg_ctl")
    postgres = _pg_tool("postgres")
    if not (initdb and pg_ctl and postgres):
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql; `make setup` does it)")
    root = tmp_path_factory.mktemp("pg")
    data = root / "data"
    user = "postgres" if os.geteuid() == 0 else os.environ.get("USER", "digr")
    if os.geteuid() == 0:
        os.chmod(root, 0o777)
        for parent in root.parents:  # the postgres user must reach the data folder
            if str(parent) in ("/", "/tmp"):
                break
            os.chmod(parent, os.stat(parent).st_mode | 0o011)
    subprocess.run(
        _as_postgres([initdb, "-D", str(data), "-U", user, "--auth=trust", "--no-sync", "-E", "UTF8"]),
        check=True,
        capture_output=True,
    )
    port = free_port()
    log = root / "postgres.log"
    process = subprocess.Popen(
        _as_postgres(
            [postgres, "-D", str(data), "-p", str(port), "-h", "127.0.0.1", "-k", str(root),
             "-c", "fsync=off", "-c", "max_connections=200"]
        ),
        stdout=subprocess.DEVNULL,
        stderr=open(log, "wb"),  # noqa: SIM115 - the server writes it for its whole life
    )
    try:
        _wait_for_port(port, process, "postgres")
        yield PostgresServer(host="127.0.0.1", port=port, user=user)
    finally:
        stop_process(process)


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on a loopback port for the whole session."""
    moto_server = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    if not Path(moto_server).exists():
        pytest.skip("moto_server not installed (`pip install 'moto[server]'`; `make setup` does it)")
    port = free_port()
    process = subprocess.Popen(
        [moto_server, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, process, "moto_server")
        yield S3Server(endpoint_url=f"http://127.0.0.1:{port}")
    finally:
        stop_process(process)
