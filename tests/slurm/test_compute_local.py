"""Local mode (the default) through a real Dagster materialization; no cluster."""
import hashlib

import pandas as pd

from cpb_resources.compute import ComputeResource
from slurm_helpers import failure_text, materialize_demo


def test_local_mode_writes_the_known_table(tmp_path, monkeypatch):
    monkeypatch.setenv("CPB_HOME", str(tmp_path / "home"))
    out = tmp_path / "t.parquet"
    result = materialize_demo(ComputeResource(), out=str(out), n_rows=50, seed=3)
    assert result.success, failure_text(result)
    # expectations independent of the writer: the contract (50 rows, named genes, value ranges) and the
    # file's own bytes against the digest the workload reported through pipes
    df = pd.read_parquet(out)
    assert list(df.columns) == ["gene", "logfc", "pvalue", "count"] and len(df) == 50
    assert df["gene"].tolist() == [f"G{i:05d}" for i in range(50)]
    assert df["pvalue"].between(0, 1).all() and df["count"].between(0, 999).all()
    assert df["count"].dtype == "int64" and df["logfc"].abs().max() < 10 and df["logfc"].std() > 0.5
    (mat,) = result.asset_materializations_for_node("demo_table")
    assert mat.metadata["rows"].value == 50 and mat.metadata["compute_mode"].value == "local"
    assert mat.metadata["sha256"].value == hashlib.sha256(out.read_bytes()).hexdigest()
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []


def test_local_failure_shows_the_workload_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("CPB_HOME", str(tmp_path / "home"))
    result = materialize_demo(ComputeResource(), workload="cpb_resources.workloads.demo:fail", message="local-boom")
    assert not result.success
    text = failure_text(result)
    assert "ValueError: local-boom" in text and "Remote traceback" in text and "_inner_failure" in text
