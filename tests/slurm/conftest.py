"""Fixtures for the compute layer's tests.

`slurm_env` (session) brings the local one-node cluster up with
scripts/slurm-up when it is not up (idempotent; ~8 s cold, ~3 s warm) and
exports the settings it prints. The test runner tears it down with
scripts/slurm-down afterwards, also when tests fail.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# pytest runs with --import-mode=importlib: make slurm_helpers.py importable.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def slurm_env() -> dict[str, str]:
    if os.geteuid() != 0:
        pytest.fail("the slurm tests start daemons and must run as root")
    proc = subprocess.run(
        [str(ROOT / "scripts" / "slurm-up")], capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/slurm-up failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout}")
    sys.stderr.write(proc.stderr.splitlines()[-1] + "\n" if proc.stderr else "")
    env: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export "):].partition("=")
            env[key] = value
    assert {"SLURM_CONF", "CPB_SLURM_KEY", "CPB_SLURM_ENV_PATH"} <= env.keys(), proc.stdout
    if os.environ.get("CPB_TEST_SLURM_WORK"):  # scripts/run-tests: cancel exactly these jobs on exit
        env["CPB_SLURM_REMOTE_BASE"] = os.environ["CPB_TEST_SLURM_WORK"]
    env["DAGSTER_SLURM_SSH_CONTROL_DIR"] = str(Path(env["CPB_SLURM_DIR"]) / "sshctl")
    # the masters expire 5 s after their last use (and slurm-down stops any left). Not closed on exit:
    # units of one step run in parallel threads over the one shared socket, and a unit that closed it
    # on finishing cut the others' scp mid-upload ("scp: Connection closed", seen in CI)
    env["DAGSTER_SLURM_SSH_CONTROL_PERSIST"] = "5s"
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def local_home(tmp_path_factory):
    """Tahoe-100M (4 plates) and CIGS-MCE (2 strata) materialized in local mode up to the DE tables: the
    reference of the SLURM asset tests (pseudobulk, DE), which work on copies of it."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.conftest import make_home

    home = make_home(tmp_path_factory.mktemp("slurm_local"))
    saved = {k: os.environ.get(k) for k in ("CPB_HOME", "DAGSTER_HOME", "CPB_COMPUTE")}
    os.environ.update({"CPB_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "CPB_COMPUTE": "local"})
    try:
        from cpb_jobs.demo import main
        assert main(["--home", str(home), "--datasets", "tahoe100m", "cigs_mce", "--until", "de"]) == 0
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return home
