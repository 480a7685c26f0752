"""Faults: a run killed mid-write, two runs of one partition at once. Nothing is lost or mixed."""
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

HERE = Path(__file__).resolve().parent
PARTITION = ("de_table", "vcpi_0001|group")


def _home_copy(count_home: Path, dest: Path) -> Path:
    shutil.copytree(count_home, dest, symlinks=True)
    return dest


def _launch(home: Path, partition: tuple[str, str] = PARTITION) -> subprocess.Popen:
    env = {**os.environ, "CPB_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    return subprocess.Popen([sys.executable, str(HERE / "materialize_one.py"), str(home), *partition], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.resolve().glob("*.parquet"))}


def _de_folder(home: Path) -> Path:
    return home / "tables" / "de" / "dataset=vcpi_0001" / "mode=group"


def _bundle(home: Path, asset: str, *keys: str) -> Path:
    """The versions folder of one partition of a multi-file product (storage.atomic_bundle)."""
    return home.joinpath(".bundles", asset, *keys, "versions")


@pytest.mark.r
def test_run_killed_mid_write_leaves_the_old_partition_and_a_rerun_is_identical(count_home, tmp_path):
    home = _home_copy(count_home, tmp_path / "home")
    before = _digest(_de_folder(home))
    assert before
    proc = _launch(home)
    staging = home / "work" / "de" / "vcpi_0001" / "group"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # kill once the units have started writing their rows
        if any(staging.glob("*/*.parquet")) or any(_bundle(home, "de_table", "vcpi_0001", "group").glob(".staging.*")):
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
    assert not any(_bundle(home, "de_table", "vcpi_0001", "group").glob(".staging.*"))


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


def _h5ad_content(path: Path) -> tuple:
    import anndata as ad

    a = ad.read_h5ad(path)
    x = a.X.toarray() if hasattr(a.X, "toarray") else a.X
    return x.tobytes(), a.obs.to_json(), a.var.to_json()


def _catalog_rows(home: Path, view: str) -> int:
    import duckdb

    with duckdb.connect(str(home / "catalog.duckdb"), read_only=True) as con:
        return con.execute(f"select count(*) from {view} where dataset = 'vcpi_0001'").fetchone()[0]


@pytest.mark.r
def test_run_killed_while_publishing_a_harmonized_partition_leaves_the_old_one_whole(count_home, tmp_path):
    home = _home_copy(count_home, tmp_path / "home")
    h5ad = home / "harmonized" / "vcpi_0001.h5ad"
    versions = _bundle(home, "harmonized_adata", "vcpi_0001")
    current = os.readlink(versions.parent / "current")
    before, obs_rows = _h5ad_content(h5ad), _catalog_rows(home, "harmonized_obs")
    proc = _launch(home, ("harmonized_adata", "vcpi_0001"))
    seen = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and seen is None and proc.poll() is None:
        seen = next(iter(versions.glob(".staging.*")), None)  # the h5ad and its tables are being written
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert seen is not None, "the run ended before it started publishing"
    assert os.readlink(versions.parent / "current") == current  # nothing of the killed run was published
    # readers see the whole previous partition: h5ad, its tables and the catalog's view agree
    assert _h5ad_content(h5ad) == before
    assert _catalog_rows(home, "harmonized_obs") == obs_rows == len(pd.read_parquet(
        home / "tables" / "harmonized_obs" / "dataset=vcpi_0001" / "part.parquet"))
    rerun = _launch(home, ("harmonized_adata", "vcpi_0001"))
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, out
    assert "removing what a killed run left" in out
    assert _h5ad_content(h5ad) == before  # the same content as the undisturbed run
    assert not any(versions.glob(".staging.*")) and not any((home / "work" / "pseudobulk").glob("*/*"))
    assert len(list(versions.iterdir())) == 2  # the new version and the previous one, kept for open readers


def _cpb(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CPB_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    return subprocess.run([sys.executable, "-m", "cpb_jobs.cli", *args], env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.r
def test_corrupted_products_are_detected_never_served_and_rebuilt(count_home, tmp_path):
    home = _home_copy(count_home, tmp_path / "home")
    h5ad = home / "harmonized" / "vcpi_0001.h5ad"
    before_h5ad, before_de = _h5ad_content(h5ad), _digest(_de_folder(home))
    assert _cpb(home, "verify").returncode == 0
    damaged_parquet = sorted(_de_folder(home).glob("*.parquet"))[0]
    data = bytearray(damaged_parquet.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit, the size unchanged
    damaged_parquet.write_bytes(bytes(data))
    with open(h5ad, "r+b") as fh:  # a truncated h5ad
        fh.truncate(h5ad.stat().st_size // 3)
    # the next run reading the h5ad stops before fitting anything, naming the file
    run = _launch(home, ("de_table", "vcpi_0001|sep"))
    out, _ = run.communicate(timeout=600)
    assert run.returncode == 1, out
    assert "corrupted published product, not used" in out and f"{h5ad}: " in out and "truncated" in out
    report = _cpb(home, "verify")
    assert report.returncode == 1
    assert f"{h5ad}: " in report.stdout and f"{damaged_parquet}: sha256 differs" in report.stdout
    assert "3 published product(s) checked, 2 damaged" in report.stdout
    repair = _cpb(home, "verify", "--rebuild")
    assert repair.returncode == 0, repair.stdout + repair.stderr
    rebuilt = re.findall(r"\[ok \] (\S+)", repair.stdout)
    assert rebuilt == ["harmonized_adata[vcpi_0001]", "de_table[vcpi_0001|group]"]  # upstream first
    assert _cpb(home, "verify").returncode == 0
    assert _h5ad_content(h5ad) == before_h5ad
    assert _digest(_de_folder(home)) == before_de  # rebuilt to the same bytes
    assert len(list((home / "corrupt").iterdir())) == 2  # the damaged versions, withdrawn, kept for inspection
