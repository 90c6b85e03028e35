"""The code location of the production profile: the project's Definitions with ``k8s_job_executor``.

Every job of ``digr_dagster.definitions`` (``nightly_retrain``, ``full_study``, ``ingest_new_files`` and the
implicit asset job behind "Materialize" in the UI) sets no executor of its own, so the Definitions' executor
applies: each step runs in a Kubernetes pod of its own, launched by the run's pod. Step pods inherit the run
launcher's settings (image, ConfigMaps, Secrets, the shared $DIGR_HOME volume); per-step resources (a GPU for
the training steps) are run config, see run_config.k8s.yaml. The ``warehouse`` pool limit is enforced by the
instance before a step pod is launched, as with the default executor.

Served by the image built from deploy/production/Dockerfile:
``dagster code-server start --python-file /opt/digr/deploy/production/code_location.py --working-directory
/opt/digr`` (helm/values.yaml sets those arguments).
"""

import dagster as dg
from dagster_k8s import k8s_job_executor

from digr_dagster.definitions import defs as project_defs

defs = dg.Definitions.merge(project_defs, dg.Definitions(executor=k8s_job_executor))
