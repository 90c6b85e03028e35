"""Jobs, the nightly retraining schedule, and the new-files sensor."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import dagster as dg

from digr_dagster import settings

INGESTION_ASSETS = dg.AssetSelection.assets("items", "raw_interactions", "interaction_splits")

#: from ingestion to promotion, with the TIGER-style baseline; the ablation study is not retrained nightly
#: (the report lists ablations trained on an older split as "not shown" instead of mixing them in)
nightly_retrain_job = dg.define_asset_job(
    "nightly_retrain",
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups("ablations"),
    description="Ingest → mine → codebooks → train (+ TIGER-style baseline) → evaluate → promote.",
    tags={"digr/trigger": "schedule"},
)

#: the whole graph, ablations included: what `make demo` and the benchmark run
full_study_job = dg.define_asset_job(
    "full_study",
    selection=dg.AssetSelection.all(),
    description="Everything in nightly_retrain plus the ablations (interests in item text, user tokens, q term).",
)

ingestion_job = dg.define_asset_job(
    "ingest_new_files",
    selection=INGESTION_ASSETS,
    description="Re-ingest and re-split the source when new files arrive.",
)

nightly_schedule = dg.ScheduleDefinition(
    name="nightly_retrain_0200",
    job=nightly_retrain_job,
    cron_schedule="0 2 * * *",
    execution_timezone=os.environ.get("DIGR_TIMEZONE", "UTC"),
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Nightly retraining over the whole graph at 02:00.",
)

#: files the sensor reacts to (raw Amazon, RecBole, MovieLens and tabular inputs)
WATCHED_SUFFIXES = (".json", ".json.gz", ".jsonl", ".jsonl.gz", ".csv", ".parquet", ".inter", ".text",
                    ".dat", ".data", ".item")


def snapshot_folder(folder: str | Path) -> dict[str, list[int]]:
    """{file name: [size, mtime_ns]} for the watched files directly in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    snap = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name.endswith(WATCHED_SUFFIXES) and not p.name.startswith("."):
            st = p.stat()
            snap[p.name] = [st.st_size, st.st_mtime_ns]
    return snap


@dg.sensor(
    name="new_files_sensor",
    job=ingestion_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Starts ingestion when files appear or change in $DIGR_INPUT_DIR.",
)
def new_files_sensor(context: dg.SensorEvaluationContext):
    folder = settings.input_dir()
    snap = snapshot_folder(folder)
    previous = json.loads(context.cursor) if context.cursor else {}
    changed = sorted(name for name, sig in snap.items() if previous.get(name) != sig)
    if not changed:
        return dg.SkipReason(f"no new or changed files in {folder}")
    state = hashlib.sha256(json.dumps(snap, sort_keys=True).encode()).hexdigest()[:16]
    context.update_cursor(json.dumps(snap, sort_keys=True))
    kind = os.environ.get("DIGR_INPUT_KIND", "amazon2018")
    return dg.RunRequest(
        run_key=f"inbox-{state}",
        run_config={"ops": {"ingest_source": {"config": {"kind": kind, "path": str(Path(folder).resolve())}}}},
        tags={"digr/trigger": "new_files", "digr/changed_files": ",".join(changed)[:200]},
    )
