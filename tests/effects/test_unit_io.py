"""A unit reads only its own rows of the harmonized .h5ad; SLURM memory is sized from the unit's shape."""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import cpb_resources.storage  # noqa: F401 - sets anndata's nullable-string writing, as the harmonized writer does
from cpb_assets.effects.de import DEInputError, read_unit_samples, unit_memory_mb
from cpb_assets.effects.strata import plan_units


@pytest.fixture(params=["dense", "csr"])
def h5ad(request, tmp_path, make_counts):
    adata, _ = make_counts(seed=2, n_genes=60, reps=2, n_dmso=4, cell_types=("CVCL_0023", "CVCL_0004"))
    obs = adata.obs.copy()
    obs["plate"] = obs["plate"].astype("category")
    obs["pubchem_cid"] = pd.array(obs["pubchem_cid"].tolist(), dtype="string")  # nullable, as harmonized
    adata.obs = obs
    if request.param == "csr":
        adata.X = sp.csr_matrix(adata.X)
    path = tmp_path / "h.h5ad"
    adata.write_h5ad(path)
    return path, adata


def test_unit_rows_read_back_equal_the_subset(h5ad):
    path, adata = h5ad
    units, _ = plan_units(adata.obs, "vcpi_0001", "sep")
    assert len(units) == 2
    for u in units:
        got = read_unit_samples(path, u)
        want = adata[list(u.sample_ids)]
        assert list(got.obs_names) == list(u.sample_ids)
        x_got = got.X.toarray() if sp.issparse(got.X) else got.X
        x_want = want.X.toarray() if sp.issparse(want.X) else want.X
        assert np.array_equal(x_got, x_want) and got.n_obs < adata.n_obs
        for c in ["plate", "well", "perturbagen", "is_control", "pert_dose_uM", "pert_time_h", "psbulk_cells"]:
            assert got.obs[c].astype(object).tolist() == want.obs[c].astype(object).tolist(), c
        assert got.obs["pubchem_cid"].isna().tolist() == want.obs["pubchem_cid"].isna().tolist()
        assert list(got.var_names) == list(adata.var_names)


def test_a_file_changed_since_planning_is_refused(h5ad):
    path, adata = h5ad
    units, _ = plan_units(adata.obs, "vcpi_0001", "group")
    shuffled = adata[::-1].copy()
    shuffled.write_h5ad(path)
    with pytest.raises(DEInputError, match="changed since the units were planned"):
        read_unit_samples(path, units[0])


def test_memory_request_grows_with_the_unit():
    small = unit_memory_mb(300, 978, 100)
    assert small % 256 == 0 and small >= 1280  # 1 GB base + headroom
    assert unit_memory_mb(6000, 978, 2000) > small
    # a Tahoe-sized batch: 62k genes × 2,600 pseudobulks, 2,500 contrasts → tens of GB, not the old fixed 4 GB
    assert unit_memory_mb(2600, 62_000, 2500) > 60_000
