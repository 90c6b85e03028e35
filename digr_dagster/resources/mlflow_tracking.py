"""MLflow tracking for assets: one MLflow run per asset materialisation, always closed.

dagster-mlflow's ``mlflow_tracking`` resource sets up tracking for a whole Dagster run (tracking URI,
experiment, one MLflow run found or created by the ``dagster_run_id`` tag, so that steps in several
processes share it). Two parts of it do not serve assets, so this resource wraps it instead of
working around it silently:

- its run-closing hook (``end_mlflow_on_run_finished``) attaches only to jobs and closes the run when
  the job's topologically last op succeeds; materialising assets from the UI or with ``materialize()``
  never triggers it, so the run would stay RUNNING forever;
- it is a legacy function-style resource whose config cannot be overridden per run (dagster #21797).

What this resource does: each asset materialisation opens the Dagster run's MLflow run through
dagster-mlflow's ``MlFlow`` class (same lookup by ``dagster_run_id``), starts a nested child run for
the asset (tags: Dagster run id, asset key, job), and closes both in ``finally`` — FINISHED on success,
FAILED (or KILLED on interrupt) on error. The next asset of the same Dagster run reopens the parent.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace

from dagster import ConfigurableResource, get_dagster_logger
from pydantic import Field

from digr_dagster import settings


class TrackingStoreUnavailable(RuntimeError):
    """The MLflow tracking store cannot be reached (or answers that it is down); the message names it."""


# A gateway in front of a stopped tracking server answers these; MLflow's client would retry them for minutes.
_DOWN_STATUS = {502, 503, 504}


def display_uri(uri: str) -> str:
    """``uri`` with the password of ``scheme://user:password@host`` masked, for messages and metadata."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def check_tracking_store(uri: str, timeout_s: float = 5.0) -> None:
    """Raise TrackingStoreUnavailable at once when an http(s) tracking server is unreachable or down.

    MLflow's REST client retries a dead server for minutes (7 retries with exponential backoff, 120 s
    timeout per request by default), so one short probe without retries comes first. Other URI schemes
    (sqlite, file, databricks) are not probed here.
    """
    if not uri.startswith(("http://", "https://")):
        return
    import httpx

    probe = uri.rstrip("/") + "/health"
    try:
        response = httpx.get(probe, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise TrackingStoreUnavailable(
            f"MLflow tracking store {display_uri(uri)!r} is unreachable ({type(exc).__name__} within "
            f"{timeout_s:g} s); "
            "start the tracking server or point MLFLOW_TRACKING_URI at a reachable store") from exc
    if response.status_code in _DOWN_STATUS:
        raise TrackingStoreUnavailable(
            f"MLflow tracking store {display_uri(uri)!r} is down: GET /health answered HTTP {response.status_code}")


@dataclass(frozen=True)
class AssetRun:
    """Handle on the MLflow run of one asset materialisation."""

    run_id: str
    parent_run_id: str
    experiment_id: str
    tracking_uri: str

    def metadata(self) -> dict:
        """Dagster metadata linking the materialisation to its MLflow run."""
        return {
            "mlflow_run_id": self.run_id,
            "mlflow_parent_run_id": self.parent_run_id,
            "mlflow_experiment_id": self.experiment_id,
            "mlflow_tracking_uri": display_uri(self.tracking_uri),
        }


class MlflowTracking(ConfigurableResource):
    """MLflow tracking and registry (defaults: sqlite store and local artifacts under ``.digr/``)."""

    tracking_uri: str = Field(default_factory=settings.mlflow_tracking_uri,
                              description="MLflow tracking URI (env MLFLOW_TRACKING_URI).")
    registry_uri: str | None = Field(default=None, description="Model registry URI; default = tracking URI.")
    experiment_name: str = Field(default_factory=settings.mlflow_experiment,
                                 description="Experiment every asset run is logged to.")
    artifact_location: str = Field(default_factory=settings.mlflow_artifact_root,
                                   description="Artifact root for a newly created experiment.")
    probe_timeout_s: float = Field(default=5.0, gt=0,
                                   description="Seconds an http(s) tracking server has to answer the start-up probe.")

    def configure_client(self) -> str:
        """Point the mlflow module at this store, creating the experiment; returns its id.

        Fails fast with a message naming the store when it cannot be reached.
        """
        import mlflow

        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        for uri in dict.fromkeys([self.tracking_uri, self.registry_uri or self.tracking_uri]):
            check_tracking_store(uri, self.probe_timeout_s)
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri or self.tracking_uri)
        try:
            client = mlflow.MlflowClient()
            exp = client.get_experiment_by_name(self.experiment_name)
            if exp is None:
                location = self.artifact_location
                if "://" not in location:
                    os.makedirs(location, exist_ok=True)
                    location = "file://" + os.path.abspath(location)
                return client.create_experiment(self.experiment_name, artifact_location=location)
            return exp.experiment_id
        except Exception as exc:  # re-raised with the store named; the original is chained
            raise TrackingStoreUnavailable(
                f"MLflow tracking store {display_uri(self.tracking_uri)!r} is unreachable or broken: {exc}"
            ) from exc

    @contextmanager
    def asset_run(self, context, *, params: dict | None = None, tags: dict | None = None) -> Iterator[AssetRun]:
        """Open the MLflow run of one asset materialisation; it is closed whatever happens."""
        import mlflow
        from dagster_mlflow.resources import MlFlow
        from mlflow.entities import RunStatus

        experiment_id = self.configure_client()
        keys = list(context.assets_def.keys) if context.has_assets_def else []
        asset_key = keys[0].to_user_string() if len(keys) == 1 else context.op.name
        dagster_run = context.run
        # Children carry the dagster_run_id tag too, so find the parent by role ourselves and hand
        # its id to MlFlow (its own lookup by dagster_run_id alone could pick up a child).
        existing = mlflow.MlflowClient().search_runs(
            [experiment_id],
            f"tags.dagster_run_id = '{dagster_run.run_id}' AND tags.digr_role = 'dagster_run'",
            max_results=1,
        )
        init_like = SimpleNamespace(
            log=context.log,
            dagster_run=SimpleNamespace(job_name=dagster_run.job_name),
            run_id=dagster_run.run_id,
            resource_config={
                "experiment_name": self.experiment_name,
                "mlflow_tracking_uri": self.tracking_uri,
                "mlflow_run_id": existing[0].info.run_id if existing else None,
                "extra_tags": {"dagster_job": dagster_run.job_name, "digr_role": "dagster_run"},
            },
        )
        while mlflow.active_run() is not None:  # a leftover from an earlier step in this process
            mlflow.end_run()
        parent = MlFlow(init_like)  # finds or starts the Dagster run's MLflow run (by dagster_run_id)
        parent_id = mlflow.active_run().info.run_id
        status_child = RunStatus.to_string(RunStatus.FINISHED)
        status_parent = status_child
        child = mlflow.start_run(
            run_name=asset_key,
            nested=True,
            tags={
                "dagster_run_id": dagster_run.run_id,
                "dagster_asset_key": asset_key,
                "dagster_job": dagster_run.job_name,
                "digr_role": "asset",
            },
        )
        try:
            if params:
                # prefixed: Lightning's logger logs the module's own hyper-parameters into the same run,
                # and MLflow refuses a param key logged twice with different values
                mlflow.log_params({f"config.{k}": v for k, v in params.items()})
            if tags:
                mlflow.set_tags(tags)
            yield AssetRun(child.info.run_id, parent_id, experiment_id, self.tracking_uri)
        except KeyboardInterrupt:
            status_child = status_parent = RunStatus.to_string(RunStatus.KILLED)
            raise
        except BaseException:
            status_child = status_parent = RunStatus.to_string(RunStatus.FAILED)
            raise
        finally:
            mlflow.end_run(status=status_child)
            # The parent may already be inactive in this process if the body ended it; end by id.
            if mlflow.active_run() is not None:
                mlflow.end_run(status=status_parent)
            else:
                mlflow.MlflowClient().set_terminated(parent_id, status=status_parent)
            del parent
            get_dagster_logger().debug(f"closed MLflow run {child.info.run_id} ({status_child})")



def lightning_logger(run: AssetRun, experiment_name: str):
    """A Lightning MLFlowLogger that writes into the asset's MLflow run (not a new one)."""
    from lightning.pytorch.loggers import MLFlowLogger

    return MLFlowLogger(experiment_name=experiment_name, tracking_uri=run.tracking_uri, run_id=run.run_id)
