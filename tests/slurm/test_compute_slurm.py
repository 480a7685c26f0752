"""The compute layer against the real local SLURM cluster (scripts/slurm-up)."""
import hashlib
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from cpb_resources.compute import ComputeResource
from cpb_resources.workloads import demo
from slurm_helpers import failure_text, materialize_demo, slurm_cmd

pytestmark = pytest.mark.slurm


def _sacct_state(job_id: int) -> str:
    return slurm_cmd("sacct", "-n", "-X", "-P", "-j", str(job_id), "-o", "State").strip()


def _metadata(result) -> dict:
    (mat,) = result.asset_materializations_for_node("demo_table")
    return {k: v.value for k, v in mat.metadata.items()}


def _reference_bytes(tmp_path: Path, n_rows: int, seed: int) -> bytes:
    """The same workload called in this process: the bytes both modes must produce."""
    ref = tmp_path / "reference" / "table.parquet"
    demo.write_table({"out": str(ref), "n_rows": n_rows, "seed": seed})
    return ref.read_bytes()


def test_local_and_slurm_give_identical_parquet_and_sacct_metadata(slurm_env, tmp_path, monkeypatch):
    monkeypatch.setenv("CPB_HOME", str(tmp_path / "home"))
    local_out, slurm_out = tmp_path / "local" / "t.parquet", tmp_path / "slurm" / "t.parquet"

    local = materialize_demo(ComputeResource(), out=str(local_out), n_rows=200, seed=7)
    assert local.success, failure_text(local)
    monkeypatch.setenv("CPB_COMPUTE", "slurm")
    slurm = materialize_demo(ComputeResource.from_env(), out=str(slurm_out), n_rows=200, seed=7)
    assert slurm.success, failure_text(slurm)

    # Identical content, and the known answer (200 rows from seed 7).
    assert slurm_out.read_bytes() == local_out.read_bytes() == _reference_bytes(tmp_path, 200, 7)
    df = pd.read_parquet(slurm_out)
    pd.testing.assert_frame_equal(df, demo._table(200, 7))
    assert df["gene"].iloc[-1] == "G00199"

    lm, sm = _metadata(local), _metadata(slurm)
    assert lm["compute_mode"] == "local" and "slurm_job_id" not in lm
    assert sm["compute_mode"] == "slurm"
    assert lm["sha256"] == sm["sha256"] == hashlib.sha256(slurm_out.read_bytes()).hexdigest()
    job_id = int(sm["slurm_job_id"])
    assert job_id > 0
    # sacct metrics reached the materialization metadata, and agree with sacct.
    assert sm["slurm_state"] == "COMPLETED" == _sacct_state(job_id)
    for key in ("cpu_efficiency_pct", "max_memory_mb", "elapsed_seconds"):
        assert key in sm, f"{key} missing from {sorted(sm)}"
    assert float(sm["elapsed_seconds"]) >= 1
    assert float(sm["max_memory_mb"]) > 10  # a Python with pandas loaded


def test_raising_workload_fails_step_with_remote_traceback(slurm_env, tmp_path, monkeypatch):
    monkeypatch.setenv("CPB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CPB_COMPUTE", "slurm")
    token = f"boom-{tmp_path.name}"
    monkeypatch.setenv("CPB_COMPUTE_RETRIES", "0")
    result = materialize_demo(ComputeResource.from_env(), workload="cpb_resources.workloads.demo:fail", message=token)
    assert not result.success
    text = failure_text(result)
    assert f"ValueError: {token}" in text
    assert "Remote traceback" in text
    # Frames from inside the workload, as the job saw them.
    assert "_inner_failure" in text and "cpb_resources/workloads/demo.py" in text
    job_id = int(text.split("SLURM job ", 1)[1].split(":", 1)[0])
    assert _sacct_state(job_id) == "FAILED"
    # The caller's error hand-off file was cleaned up.
    assert list((tmp_path / "home" / "compute" / "errors").iterdir()) == []
    assert list((tmp_path / "home" / "compute" / "packs").iterdir()) == []  # and the pack's result hand-off


def test_scancel_mid_run_leaves_no_partial_output_and_rerun_is_identical(slurm_env, tmp_path, monkeypatch):
    monkeypatch.setenv("CPB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CPB_COMPUTE", "slurm")
    out_dir = tmp_path / "cancel"
    out = out_dir / "t.parquet"
    cancelled: dict = {}

    def cancel_when_half_written():
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if out_dir.exists() and any(".tmp" in p.name for p in out_dir.iterdir()):
                jobs = slurm_cmd("squeue", "-h", "-t", "R", "-o", "%i").split()
                if jobs:
                    cancelled["job"] = int(jobs[0])
                    cancelled["tmp_seen"] = [p.name for p in out_dir.iterdir()]
                    slurm_cmd("scancel", *jobs)
                    return
            time.sleep(0.2)

    watcher = threading.Thread(target=cancel_when_half_written, daemon=True)
    watcher.start()
    monkeypatch.setenv("CPB_COMPUTE_RETRIES", "0")  # a killed unit is not run again
    result = materialize_demo(ComputeResource.from_env(), out=str(out), n_rows=300, seed=11, sleep_s=120)
    monkeypatch.delenv("CPB_COMPUTE_RETRIES")
    watcher.join(timeout=5)
    assert "job" in cancelled, "the job never reached its half-written state"
    assert not result.success
    assert any(".tmp" in n for n in cancelled["tmp_seen"])  # it was mid-write (storage.atomic_path temp name)
    assert _sacct_state(cancelled["job"]).startswith("CANCELLED")
    # No partial output: no final file, and the temporary file was removed.
    deadline = time.monotonic() + 10
    while list(out_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert list(out_dir.iterdir()) == []

    rerun = materialize_demo(ComputeResource.from_env(), out=str(out), n_rows=300, seed=11)
    assert rerun.success, failure_text(rerun)
    assert out.read_bytes() == _reference_bytes(tmp_path, 300, 11)
    assert sorted(p.name for p in out_dir.iterdir()) == ["t.parquet"]
