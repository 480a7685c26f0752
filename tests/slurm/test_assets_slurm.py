"""The platform's own heavy assets on the real one-node SLURM cluster: a single-cell
pseudobulk partition (one job per plate) and a DE partition (one job per stratum) give
the same Parquet content as local mode, with job ids and sacct metrics in the metadata."""
from __future__ import annotations

import shutil
from pathlib import Path

import anndata as ad
import dagster as dg
import numpy as np
import pandas as pd
import pytest

from cpb_assets.effects.assets import de_table
from cpb_assets.harmonize.assets import harmonized_adata
from cpb_jobs.definitions import ALL_ASSETS, ALL_CHECKS
from cpb_jobs.resources import build_resources
from cpb_resources.compute import ComputeResource

pytestmark = pytest.mark.slurm
TESTS = Path(__file__).resolve().parents[1]


def _materialize(selection, key, home: Path, compute: ComputeResource):
    resources = {**build_resources(), "compute": compute}
    resources["storage"] = resources["storage"].model_copy(update={"home": str(home)})
    resources["catalog"] = resources["catalog"].model_copy(update={"home": str(home)})
    with dg.instance_for_test() as instance:
        return dg.materialize([*ALL_ASSETS, *ALL_CHECKS], selection=selection, partition_key=key,
                              instance=instance, resources=resources, raise_on_error=False)


def _metadata(result) -> dict:
    mat = result.get_asset_materialization_events()[0].materialization
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def _frames(folder: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))], ignore_index=True)


def test_pseudobulk_and_de_on_slurm_equal_local(slurm_env, local_home, tmp_path, monkeypatch):
    home = tmp_path / "slurm_home"
    shutil.copytree(local_home, home)
    monkeypatch.setenv("CPB_HOME", str(home))
    monkeypatch.setenv("CPB_COMPUTE", "slurm")
    slurm = ComputeResource.from_env()
    assert slurm.mode == "slurm"

    # single-cell: every plate pseudobulked as its own SLURM job
    res = _materialize(dg.AssetSelection.assets(harmonized_adata), "tahoe100m", home, slurm)
    assert res.success, res.get_step_failure_events()[0].step_failure_data.error.to_string()
    meta = _metadata(res)
    assert int(meta["slurm_job_id"]) > 0 and meta["slurm_state"] == "COMPLETED"
    for key in ("cpu_efficiency_pct", "max_memory_mb", "elapsed_seconds"):
        assert key in meta
    a_local = ad.read_h5ad(local_home / "harmonized" / "tahoe100m.h5ad")
    a_slurm = ad.read_h5ad(home / "harmonized" / "tahoe100m.h5ad")
    assert (a_local.obs_names == a_slurm.obs_names).all() and (a_local.var_names == a_slurm.var_names).all()
    assert (a_local.X != a_slurm.X).nnz == 0
    obs_dir = Path("tables") / "harmonized_obs" / "dataset=tahoe100m"
    pd.testing.assert_frame_equal(_frames(local_home / obs_dir), _frames(home / obs_dir))

    # DE: one SLURM job per stratum; identical Parquet content
    key = dg.MultiPartitionKey({"dataset": "cigs_mce", "mode": "group"})
    res = _materialize(dg.AssetSelection.assets(de_table), key, home, slurm)
    assert res.success, res.get_step_failure_events()[0].step_failure_data.error.to_string()
    meta = _metadata(res)
    assert meta["compute_mode"] == "slurm" and len(meta["slurm_job_ids"]) == meta["strata_ok"] == 2
    assert meta["slurm_state"] == "COMPLETED"
    de_dir = Path("tables") / "de" / "dataset=cigs_mce" / "mode=group"
    local_files = sorted(p.name for p in (local_home / de_dir).glob("*.parquet"))
    assert local_files == sorted(p.name for p in (home / de_dir).glob("*.parquet"))
    for name in local_files:
        assert (local_home / de_dir / name).read_bytes() == (home / de_dir / name).read_bytes()
    de = _frames(home / de_dir)
    assert len(de) > 0 and np.isfinite(de["t"]).all()
