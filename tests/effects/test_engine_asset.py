"""The DE asset with `engine: fast` gives R's numbers on a demo partition (the one execution path, both engines)."""
import shutil

import dagster as dg
import numpy as np
import pandas as pd
import pytest


@pytest.mark.r
def test_fast_engine_through_the_asset_equals_r(count_home, tmp_path, monkeypatch):
    from cpb_jobs.definitions import ALL_ASSETS, ALL_CHECKS, defs

    home = tmp_path / "home"
    shutil.copytree(count_home, home, symlinks=True)
    monkeypatch.setenv("CPB_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    folder = home / "tables" / "de" / "dataset=vcpi_0001" / "mode=group"
    r_table = pd.concat([pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))], ignore_index=True)
    key = dg.MultiPartitionKey({"dataset": "vcpi_0001", "mode": "group"})
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize([*ALL_ASSETS, *ALL_CHECKS], selection=dg.AssetSelection.assets("de_table"),
                                partition_key=key, instance=instance, resources=defs.resources,
                                run_config={"ops": {"de_table": {"config": {"engine": "fast"}}}})
    assert result.success
    (mat,) = result.asset_materializations_for_node("de_table")
    assert mat.metadata["engine"].value == "fast"
    fast = pd.concat([pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))], ignore_index=True)
    keys = ["contrast_id", "gene"]
    r_table, fast = r_table.sort_values(keys, ignore_index=True), fast.sort_values(keys, ignore_index=True)
    assert len(r_table) == len(fast) > 0 and (r_table[keys] == fast[keys]).all().all()
    for col in ("logFC", "t", "P_Value", "adj_P_within", "adj_P_across", "B", "CI_L", "CI_R", "AveExpr"):
        np.testing.assert_allclose(fast[col], r_table[col], rtol=1e-8, atol=1e-8, err_msg=col)
    assert ((fast["adj_P_within"] < 0.05) == (r_table["adj_P_within"] < 0.05)).all()
