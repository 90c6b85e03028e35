"""The digr command line: orphaned runs of killed processes release their pool slots."""

import subprocess

import dagster as dg

from digr_dagster.cli import PID_TAG, release_orphaned_runs


@dg.op
def noop():
    return 1


@dg.job
def tiny_job():
    noop()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_killed_run_is_failed_and_frees_its_warehouse_slot(digr_env):
    import os

    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        storage.set_concurrency_slots("warehouse", 1)
        dead = instance.create_run_for_job(tiny_job, status=dg.DagsterRunStatus.STARTED,
                                           tags={PID_TAG: str(_dead_pid())})
        alive = instance.create_run_for_job(tiny_job, status=dg.DagsterRunStatus.STARTED,
                                            tags={PID_TAG: str(os.getpid())})
        foreign = instance.create_run_for_job(tiny_job, status=dg.DagsterRunStatus.STARTED)  # not ours: no tag
        claim = storage.claim_concurrency_slot("warehouse", dead.run_id, "ingest_source")
        assert claim.is_claimed
        blocked = storage.claim_concurrency_slot("warehouse", alive.run_id, "semantic_ids")
        assert not blocked.is_claimed  # the dead run holds the only slot

        assert release_orphaned_runs(instance) == [dead.run_id]

        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.STARTED
        assert instance.get_run_by_id(foreign.run_id).status == dg.DagsterRunStatus.STARTED
        assert storage.get_concurrency_info("warehouse").claimed_slots == []
        assert release_orphaned_runs(instance) == []
