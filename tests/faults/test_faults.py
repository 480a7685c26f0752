"""Faults: a run killed mid-write, two runs of one partition at once. Nothing is lost or mixed."""
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
PARTITION = ("de_table", "vcpi_0001|group")


def _home_copy(count_home: Path, dest: Path) -> Path:
    shutil.copytree(count_home, dest, symlinks=True)
    return dest


def _launch(home: Path) -> subprocess.Popen:
    env = {**os.environ, "CPB_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    return subprocess.Popen([sys.executable, str(HERE / "materialize_one.py"), str(home), *PARTITION], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.resolve().glob("*.parquet"))}


def _de_folder(home: Path) -> Path:
    return home / "tables" / "de" / "dataset=vcpi_0001" / "mode=group"


@pytest.mark.r
def test_run_killed_mid_write_leaves_the_old_partition_and_a_rerun_is_identical(count_home, tmp_path):
    home = _home_copy(count_home, tmp_path / "home")
    before = _digest(_de_folder(home))
    assert before
    proc = _launch(home)
    staging = home / "work" / "de" / "vcpi_0001" / "group"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # kill once the units have started writing their rows
        if any(staging.glob("*/*.parquet")) or any(_de_folder(home).parent.glob(".mode=group.*.tmp")):
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its compute subprocess, no cleanup at all
    proc.wait()
    # readers still see the complete previous partition
    assert _digest(_de_folder(home)) == before
    rerun = _launch(home)
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, out
    assert "removing what a killed run left" in out  # the killed run's staging, cleaned under the lock
    assert _digest(_de_folder(home)) == before  # the same bytes as the undisturbed run
    assert not any((home / "work" / "de" / "vcpi_0001" / "group").glob("*"))  # no staging left behind
    assert not any(_de_folder(home).parent.glob(".mode=group.*.tmp"))


@pytest.mark.r
def test_two_concurrent_runs_of_one_partition_take_turns(count_home, tmp_path):
    home = _home_copy(count_home, tmp_path / "home")
    before = _digest(_de_folder(home))
    first, second = _launch(home), _launch(home)
    out1, _ = first.communicate(timeout=900)
    out2, _ = second.communicate(timeout=900)
    assert first.returncode == 0, out1
    assert second.returncode == 0, out2
    assert _digest(_de_folder(home)) == before  # one consistent result
    assert "another run is materializing it; waiting" in out1 + out2  # one waited for the other
