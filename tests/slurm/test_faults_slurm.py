"""A SLURM DE job killed with SIGKILL (its processes, not scancel): the step fails cleanly naming the
job, nothing is published, and a rerun gives the same bytes as the undisturbed local run."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from cpb_assets.effects.assets import de_table
from cpb_jobs.definitions import ALL_ASSETS, ALL_CHECKS
from cpb_jobs.resources import build_resources
from cpb_resources.compute import ComputeResource
from slurm_helpers import slurm_cmd

pytestmark = pytest.mark.slurm
KEY = dg.MultiPartitionKey({"dataset": "cigs_mce", "mode": "group"})


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


def _job_processes(job: str) -> list[int]:
    """PIDs whose environment says they belong to SLURM job `job` (the one node is this machine)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"SLURM_JOB_ID={job}".encode() in env:
            pids.append(int(proc.name))
    return pids


def _materialize(home: Path, compute: ComputeResource):
    resources = {**build_resources(), "compute": compute}
    resources["storage"] = resources["storage"].model_copy(update={"home": str(home)})
    resources["catalog"] = resources["catalog"].model_copy(update={"home": str(home)})
    with dg.instance_for_test() as instance:
        return dg.materialize([*ALL_ASSETS, *ALL_CHECKS], selection=dg.AssetSelection.assets(de_table),
                              partition_key=KEY, instance=instance, resources=resources, raise_on_error=False)


def test_sigkilled_de_job_fails_the_step_cleanly_and_a_rerun_is_identical(slurm_env, local_home, tmp_path,
                                                                         monkeypatch):
    home = tmp_path / "home"
    shutil.copytree(local_home, home, symlinks=True)  # local_home: the undisturbed local run (conftest)
    de_dir = home / "tables" / "de" / "dataset=cigs_mce" / "mode=group"
    before = _digest(de_dir)
    assert before
    monkeypatch.setenv("CPB_HOME", str(home))
    monkeypatch.setenv("CPB_COMPUTE", "slurm")
    monkeypatch.setenv("CPB_COMPUTE_RETRIES", "0")  # the killed unit is not run again in this step
    killed: dict = {}

    def kill_a_running_job():
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            for job in slurm_cmd("squeue", "-h", "-t", "R", "-o", "%i").split():
                pids = _job_processes(job)
                if pids:
                    for pid in pids:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    killed.update(job=job, pids=pids)
                    return
            time.sleep(0.1)

    watcher = threading.Thread(target=kill_a_running_job, daemon=True)
    watcher.start()
    result = _materialize(home, ComputeResource.from_env())
    watcher.join(timeout=5)
    assert "job" in killed, "no DE job was seen running"
    assert not result.success
    message = result.get_step_failure_events()[0].step_failure_data.error.to_string()
    assert f"SLURM job {killed['job']}" in message and "failed after 1 attempt(s)" in message
    state = slurm_cmd("sacct", "-n", "-X", "-P", "-j", killed["job"], "-o", "State").strip()
    assert state and not state.startswith("COMPLETED"), state
    assert _digest(de_dir) == before  # nothing of the failed step was published
    assert not any((home / "work" / "de" / "cigs_mce" / "group").glob("*"))  # its staging was removed
    assert not any((home / ".bundles" / "de_table" / "cigs_mce" / "group" / "versions").glob(".staging.*"))

    monkeypatch.setenv("CPB_COMPUTE_RETRIES", "1")
    rerun = _materialize(home, ComputeResource.from_env())
    assert rerun.success, rerun.get_step_failure_events()[0].step_failure_data.error.to_string()
    assert _digest(de_dir) == before  # the same bytes as the undisturbed local run
