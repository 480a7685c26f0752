"""Local mode (the default) through a real Dagster materialization; no cluster."""
import pandas as pd

from cpb_resources.compute import ComputeResource
from cpb_resources.workloads import demo
from slurm_helpers import failure_text, materialize_demo


def test_local_mode_writes_the_known_table(tmp_path, monkeypatch):
    monkeypatch.setenv("CPB_HOME", str(tmp_path / "home"))
    out = tmp_path / "t.parquet"
    result = materialize_demo(ComputeResource(), out=str(out), n_rows=50, seed=3)
    assert result.success, failure_text(result)
    pd.testing.assert_frame_equal(pd.read_parquet(out), demo._table(50, 3))
    (mat,) = result.asset_materializations_for_node("demo_table")
    assert mat.metadata["rows"].value == 50 and mat.metadata["compute_mode"].value == "local"
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []


def test_local_failure_shows_the_workload_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("CPB_HOME", str(tmp_path / "home"))
    result = materialize_demo(ComputeResource(), workload="cpb_resources.workloads.demo:fail", message="local-boom")
    assert not result.success
    text = failure_text(result)
    assert "ValueError: local-boom" in text and "Remote traceback" in text and "_inner_failure" in text
