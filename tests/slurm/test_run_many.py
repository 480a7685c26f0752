"""`ComputeResource.run_many`: every unit of a step at once, retries, failures that name
their units, cancellation; locally (a bounded pool of subprocesses) and on the real
one-node SLURM cluster."""

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from cpb_resources.compute import ComputeResource, ResourceRequest, WorkUnit
from slurm_helpers import failure_text, slurm_cmd

HERE = Path(__file__).resolve().parent
WRITE = "cpb_resources.workloads.demo:write_table"
SMALL = ResourceRequest(cpus=1, mem_mb=300, time_min=5)


def _step(compute: ComputeResource, units: list[WorkUnit]) -> tuple[dg.ExecuteInProcessResult, dict]:
    """Materialize one asset whose step runs `units` through run_many; return the run and its results."""
    seen: dict = {}

    @dg.asset(name="many")
    def many(context: dg.AssetExecutionContext, compute: ComputeResource):
        seen["results"] = compute.run_many(context, units)
        return dg.MaterializeResult(metadata={"units": len(units)})

    result = dg.materialize([many], resources={"compute": compute}, raise_on_error=False)
    return result, seen


def _expected_rows(n_rows: int) -> list[str]:
    return [f"G{i:05d}" for i in range(n_rows)]


def test_request_sizing_and_gpu_option():
    req = ResourceRequest.for_matrix(10_000, 978, copies=6.0, base_mb=700, seconds_per_sample=0.01)
    # 10,000 × 978 float64 = 74.6 MB; 6 copies + 700 MB base
    assert req.mem_mb == int(700 + 6 * 10_000 * 978 * 8 / 2**20) + 1 == 1148
    assert req.time_min == int(10 + 3 * 0.01 * 10_000 / 60) + 1 == 16
    assert ResourceRequest(gpus=2, kind="gpu").slurm_opts()["gpus_per_node"] == 2
    assert "gpus_per_node" not in ResourceRequest().slurm_opts()
    with pytest.raises(ValueError, match="kind"):
        ResourceRequest(kind="bigmem")
    profile = ComputeResource(mode="slurm", slurm_partition="short",
                              slurm_partitions={"gpu": "a100", "highmem": "fat"})
    assert profile.partition_for(ResourceRequest(kind="gpu", gpus=1)) == "a100"
    assert profile.partition_for(ResourceRequest(kind="highmem")) == "fat"
    assert profile.partition_for(ResourceRequest()) == "short"


def test_local_pool_returns_results_in_unit_order_and_retries(tmp_path, monkeypatch):
    monkeypatch.setenv("CPB_HOME", str(tmp_path / "home"))
    units = [WorkUnit(f"u{i}", WRITE, {"out": str(tmp_path / f"t{i}.parquet"), "n_rows": 5 + i, "seed": i}, SMALL)
             for i in range(3)]
    units.append(WorkUnit("flaky", "cpb_resources.workloads.demo:fail_once",
                          {"flag": str(tmp_path / "flag"), "out": str(tmp_path / "flaky.parquet"), "n_rows": 4}))
    result, seen = _step(ComputeResource(local_workers=2, max_retries=1), units)
    assert result.success, failure_text(result)
    res = seen["results"]
    assert [r["compute"]["unit"] for r in res] == ["u0", "u1", "u2", "flaky"]
    assert [r["metadata"]["rows"] for r in res] == [5, 6, 7, 4]
    assert [r["compute"]["attempts"] for r in res] == [1, 1, 1, 2]
    assert list(pd.read_parquet(tmp_path / "t2.parquet")["gene"]) == _expected_rows(7)


def test_local_failure_names_every_failed_unit(tmp_path, monkeypatch):
    monkeypatch.setenv("CPB_HOME", str(tmp_path / "home"))
    units = [WorkUnit("good", WRITE, {"out": str(tmp_path / "g.parquet"), "n_rows": 3}),
             WorkUnit("bad-1", "cpb_resources.workloads.demo:fail", {"message": "boom-one"}),
             WorkUnit("bad-2", "cpb_resources.workloads.demo:fail", {"message": "boom-two"})]
    result, _ = _step(ComputeResource(local_workers=2, max_retries=0), units)
    assert not result.success
    text = failure_text(result)
    assert "2 of 3 unit(s) failed" in text
    assert "unit bad-1" in text and "boom-one" in text and "unit bad-2" in text and "boom-two" in text
    assert "unit good" not in text


# ----------------------------------------------------------------------------------- SLURM


def _sacct_intervals(job_ids: list[str]) -> list[tuple[datetime, datetime]]:
    out = slurm_cmd("sacct", "-n", "-X", "-P", "-j", ",".join(job_ids), "-o", "JobID,Start,End")
    spans = []
    for line in out.splitlines():
        _, start, end = line.split("|")
        spans.append((datetime.fromisoformat(start), datetime.fromisoformat(end)))
    return spans


def _sleepers() -> set[int]:
    """`sleep infinity` processes on the login node (here: this machine)."""
    out = subprocess.run(["pgrep", "-f", "^sleep infinity$"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


@pytest.mark.slurm
def test_slurm_units_run_as_concurrent_jobs_with_metrics(slurm_env, tmp_path, monkeypatch):
    monkeypatch.setenv("CPB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CPB_COMPUTE", "slurm")
    monkeypatch.setenv("CPB_SLURM_PACK_MAX_UNITS", "1")  # one job per unit: this test is about jobs side by side
    compute = ComputeResource.from_env()
    sleep_s = 8.0
    units = [WorkUnit(f"u{i}", WRITE, {"out": str(tmp_path / f"t{i}.parquet"), "n_rows": 10 + i, "seed": i,
                                      "sleep_s": sleep_s}, SMALL) for i in range(4)]
    sleepers = _sleepers()
    t0 = time.monotonic()
    result, seen = _step(compute, units)
    wall = time.monotonic() - t0
    assert result.success, failure_text(result)
    res = seen["results"]
    assert [r["metadata"]["rows"] for r in res] == [10, 11, 12, 13]
    # the jobs' log streams left nothing running on the login node (each would hold an SSH session)
    time.sleep(1.0)
    assert not _sleepers() - sleepers
    jobs = [str(r["compute"]["slurm_job_id"]) for r in res]
    assert len(set(jobs)) == 4
    spans = sorted(_sacct_intervals(jobs))
    # some job started before another one ended: they ran side by side
    assert any(spans[i + 1][0] < spans[i][1] for i in range(len(spans) - 1)), spans
    per_unit = [r["compute"]["unit_wall_s"] for r in res]
    assert wall < 0.8 * sum(per_unit), (wall, per_unit)
    for r in res:
        c = r["compute"]
        assert c["sacct_state"] == "COMPLETED" and c["elapsed_s"] >= sleep_s
        assert c["max_rss_mb"] > 10 and c["request"]["mem_mb"] == 300


@pytest.mark.slurm
def test_slurm_retry_then_success_and_failure_names_the_job(slurm_env, tmp_path, monkeypatch):
    monkeypatch.setenv("CPB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CPB_COMPUTE", "slurm")
    monkeypatch.setenv("CPB_COMPUTE_RETRIES", "1")
    compute = ComputeResource.from_env()
    assert compute.max_retries == 1
    units = [WorkUnit("flaky", "cpb_resources.workloads.demo:fail_once",
                      {"flag": str(tmp_path / "flag"), "out": str(tmp_path / "f.parquet"), "n_rows": 6}, SMALL),
             WorkUnit("doomed", "cpb_resources.workloads.demo:fail", {"message": "always-fails"}, SMALL)]
    result, _ = _step(compute, units)
    assert not result.success
    text = failure_text(result)
    assert "1 of 2 unit(s) failed after 2 attempt(s)" in text
    assert "unit doomed, SLURM job " in text and "always-fails" in text
    job = text.split("unit doomed, SLURM job ")[1].split(":")[0]
    assert slurm_cmd("sacct", "-n", "-X", "-P", "-j", job, "-o", "State").strip() == "FAILED"
    # the flaky unit failed once and then wrote its table
    assert (tmp_path / "flag").exists()
    assert list(pd.read_parquet(tmp_path / "f.parquet")["gene"]) == _expected_rows(6)


@pytest.mark.slurm
def test_interrupted_step_cancels_all_its_jobs_and_publishes_nothing(slurm_env, tmp_path):
    env = {**os.environ, **slurm_env, "CPB_HOME": str(tmp_path / "home"), "CPB_COMPUTE": "slurm",
           "PYTHONPATH": str(HERE)}
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(HERE / "run_many_step.py"), str(out), "3", "120"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        running: list[str] = []
        while time.monotonic() < deadline:
            rows = slurm_cmd("squeue", "-h", "-o", "%i %T %Z").splitlines()
            running = [r.split()[0] for r in rows if "/cpb-steps/" in r and r.split()[1] == "RUNNING"]
            if len(running) >= 2:
                break
            time.sleep(0.5)
        assert len(running) >= 2, slurm_cmd("squeue")
        proc.send_signal(signal.SIGINT)  # what a terminated Dagster run worker sees
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, output
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = [r for r in slurm_cmd("squeue", "-h", "-o", "%i %Z").splitlines() if "/cpb-steps/" in r]
        if not left:
            break
        time.sleep(0.5)
    assert not left, left
    assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())


# ----------------------------------------------------------------------------- SLURM packs


def _own_remote_base(monkeypatch) -> str:
    """A remote folder of this test's own (under the run's, so run-tests still cancels its jobs)."""
    base = f"{os.environ['CPB_SLURM_REMOTE_BASE'].rstrip('/')}/pack-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("CPB_SLURM_REMOTE_BASE", base)
    return base


def _jobs_under(base: str) -> list[dict]:
    """sacct: every job whose working folder lies under `base` (job id, state, folder)."""
    out = slurm_cmd("sacct", "-n", "-X", "-P", "-S", "now-1days", "-o", "JobID,State,WorkDir")
    jobs = []
    for line in out.splitlines():
        job, state, workdir = line.split("|", 2)
        if workdir.startswith(base + "/"):
            jobs.append({"job_id": job, "state": state, "folder": workdir[len(base):].split("/")[3]})
    return jobs


def _cluster_cpus() -> int:
    out = slurm_cmd("sinfo", "-h", "-o", "%P %C")
    line = next(x for x in out.splitlines() if x.split()[0].endswith("*"))
    return int(line.split()[1].split("/")[3])


@pytest.mark.slurm
def test_slurm_packs_units_into_fewer_jobs_with_local_results(slurm_env, tmp_path, monkeypatch):
    """6 short units, default packing (slots = the cluster's CPUs): fewer jobs than units, results in
    unit order equal to local mode's, each naming its pack and its pack's job and sacct metrics."""
    monkeypatch.setenv("CPB_HOME", str(tmp_path / "home"))

    def units(where: str) -> list[WorkUnit]:
        return [WorkUnit(f"u{i}", WRITE, {"out": str(tmp_path / where / f"t{i}.parquet"), "n_rows": 10 + i,
                                          "seed": i, "sleep_s": 1.0}, SMALL) for i in range(6)]

    local, seen_local = _step(ComputeResource(), units("local"))
    assert local.success, failure_text(local)
    monkeypatch.setenv("CPB_COMPUTE", "slurm")
    base = _own_remote_base(monkeypatch)
    compute = ComputeResource.from_env()
    assert compute.slurm_pack_slots == 0 and compute.slurm_pack_max_units > 1  # the defaults: packing on
    t0 = time.monotonic()
    result, seen = _step(compute, units("slurm"))
    wall = time.monotonic() - t0
    assert result.success, failure_text(result)
    res, res_local = seen["results"], seen_local["results"]

    # the same results in unit order as local mode (bar where they ran), and the same bytes
    assert [r["compute"]["unit"] for r in res] == [f"u{i}" for i in range(6)]
    strip = [{k: v for k, v in r.items() if k not in ("compute", "outputs")} for r in res]
    strip_local = [{k: v for k, v in r.items() if k not in ("compute", "outputs")} for r in res_local]
    for a, b in zip(strip, strip_local):
        a["metadata"].pop("path"), b["metadata"].pop("path")
    assert strip == strip_local
    for i in range(6):
        assert (tmp_path / "slurm" / f"t{i}.parquet").read_bytes() == (tmp_path / "local" / f"t{i}.parquet").read_bytes()

    # fewer jobs than units (sacct), one per pack, as many packs as the cluster has CPUs
    jobs = _jobs_under(base)
    n_packs = min(6, _cluster_cpus())
    assert len(jobs) == n_packs < 6, jobs
    assert all(j["state"] == "COMPLETED" for j in jobs), jobs
    assert sorted(j["folder"] for j in jobs) == [f"pack-{p:03d}-a0" for p in range(n_packs)]
    by_job: dict[str, list[str]] = {}
    for r in res:
        c = r["compute"]
        by_job.setdefault(str(c["slurm_job_id"]), []).append(c["unit"])
        assert c["attempts"] == 1 and c["sacct_state"] == "COMPLETED" and c["request"]["mem_mb"] == 300
        assert c["max_rss_mb"] > 10 and c["elapsed_s"] >= 1
        assert c["pack"]["size"] == len([x for x in res if x["compute"]["pack"]["name"] == c["pack"]["name"]])
    assert sorted(by_job) == sorted(j["job_id"] for j in jobs)
    # a pack's units share its job (one interpreter): same pid on the same host, one after another
    for r in res:
        mates = [x for x in res if x["compute"]["slurm_job_id"] == r["compute"]["slurm_job_id"]]
        assert {x["compute"]["pid"] for x in mates} == {r["compute"]["pid"]}
    assert max(len(v) for v in by_job.values()) == -(-6 // n_packs)
    print(f"6 units in {len(jobs)} SLURM jobs: step {wall:.1f} s")


@pytest.mark.slurm
def test_slurm_unit_failing_inside_a_pack_fails_alone(slurm_env, tmp_path, monkeypatch):
    """In packs of 3 (2 slots), one unit raises and one fails once: the rest of their packs still run and
    write; the retry runs only the units without a result; the step fails naming the failed unit, its
    job and its traceback."""
    monkeypatch.setenv("CPB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CPB_COMPUTE", "slurm")
    monkeypatch.setenv("CPB_SLURM_PACK_SLOTS", "2")
    monkeypatch.setenv("CPB_COMPUTE_RETRIES", "1")
    base = _own_remote_base(monkeypatch)
    compute = ComputeResource.from_env()
    units = [WorkUnit(f"u{i}", WRITE, {"out": str(tmp_path / f"t{i}.parquet"), "n_rows": 5 + i, "seed": i}, SMALL)
             for i in range(6)]
    # packs [0, 2, 4] and [1, 3, 5]: "doomed" mid-pack-000, "flaky" mid-pack-001
    units[2] = WorkUnit("doomed", "cpb_resources.workloads.demo:fail", {"message": "always-fails-in-pack"}, SMALL)
    units[3] = WorkUnit("flaky", "cpb_resources.workloads.demo:fail_once",
                        {"flag": str(tmp_path / "flag"), "out": str(tmp_path / "t3.parquet"), "n_rows": 8}, SMALL)
    result, _ = _step(compute, units)
    assert not result.success
    text = failure_text(result)
    assert "1 of 6 unit(s) failed after 2 attempt(s)" in text
    assert "unit doomed, SLURM job " in text and "always-fails-in-pack" in text and "_inner_failure" in text
    for other in ("u0", "u1", "flaky", "u4", "u5"):
        assert f"unit {other}" not in text, text
    job = text.split("unit doomed, SLURM job ")[1].split(":")[0]
    # every other unit wrote its table, also u4, after doomed in the same job, and flaky on its retry
    for i, n_rows in ((0, 5), (1, 6), (3, 8), (4, 9), (5, 10)):
        assert list(pd.read_parquet(tmp_path / f"t{i}.parquet")["gene"]) == _expected_rows(n_rows)
    assert not (tmp_path / "t2.parquet").exists()
    jobs = {j["folder"]: j for j in _jobs_under(base)}
    # 2 packs, then one retry per pack holding only its unit without a result
    assert sorted(jobs) == ["pack-000-a0", "pack-000-a1", "pack-001-a0", "pack-001-a1"], jobs
    assert job == jobs["pack-000-a1"]["job_id"]  # the doomed unit's last job
    assert {jobs[f]["state"] for f in jobs} == {"FAILED", "COMPLETED"}
    assert jobs["pack-000-a0"]["state"] == jobs["pack-000-a1"]["state"] == jobs["pack-001-a0"]["state"] == "FAILED"
    assert jobs["pack-001-a1"]["state"] == "COMPLETED"


@pytest.mark.slurm
def test_slurm_pack_retry_runs_only_units_without_result(slurm_env, tmp_path, monkeypatch):
    """A unit failing once inside a pack: the step succeeds; the others ran once in the full pack, it ran
    twice, the second time in a pack of its own."""
    monkeypatch.setenv("CPB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CPB_COMPUTE", "slurm")
    monkeypatch.setenv("CPB_SLURM_PACK_SLOTS", "1")
    monkeypatch.setenv("CPB_COMPUTE_RETRIES", "1")
    compute = ComputeResource.from_env()
    units = [WorkUnit(f"u{i}", WRITE, {"out": str(tmp_path / f"t{i}.parquet"), "n_rows": 5 + i, "seed": i}, SMALL)
             for i in range(3)]
    units.insert(1, WorkUnit("flaky", "cpb_resources.workloads.demo:fail_once",
                             {"flag": str(tmp_path / "flag"), "out": str(tmp_path / "f.parquet"), "n_rows": 4}, SMALL))
    result, seen = _step(compute, units)
    assert result.success, failure_text(result)
    res = seen["results"]
    assert [r["compute"]["unit"] for r in res] == ["u0", "flaky", "u1", "u2"]
    assert [r["metadata"]["rows"] for r in res] == [5, 4, 6, 7]
    assert [r["compute"]["attempts"] for r in res] == [1, 2, 1, 1]
    assert [r["compute"]["pack"]["size"] for r in res] == [4, 1, 4, 4]
    assert len({r["compute"]["slurm_job_id"] for r in res}) == 2
    assert res[1]["compute"]["sacct_state"] == "COMPLETED" and res[0]["compute"]["sacct_state"] == "FAILED"
