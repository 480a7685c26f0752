"""Bad input (issue 4): a named error or a skip recorded with its reason, never wrong numbers.

Data here are SYNTHETIC (seeded negative binomial) unless stated.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cpb_assets.effects.de import DEInputError, DESkip, run_de_partition
from cpb_resources.limma import LimmaFitError, LimmaResource, fit_limma

pytestmark = pytest.mark.r


@pytest.fixture(scope="module")
def lim():
    return LimmaResource()


@pytest.fixture(scope="module")
def two_strata(make_counts):
    adata, _ = make_counts(seed=5, n_genes=300, reps=3, n_dmso=6, cell_types=("CVCL_0023", "CVCL_0004"))
    return adata


def test_stratum_without_controls_is_skipped_others_fitted(two_strata, lim):
    obs = two_strata.obs
    a = two_strata[~((obs["cell_type"] == "CVCL_0004") & obs["is_control"]).to_numpy()].copy()
    log = []
    de, st = run_de_partition(a, "vcpi_0001", "group", lim, log=log.append)
    st = st.set_index("stratum")
    assert st.loc["CVCL_0004", "status"] == "skipped"
    assert "no control samples" in st.loc["CVCL_0004", "reason"]
    assert st.loc["CVCL_0023", "status"] == "ok"
    assert set(de["stratum"]) == {"CVCL_0023"}
    assert any("CVCL_0004" in line and "skipped" in line for line in log)
    with pytest.raises(DESkip, match="CVCL_0004.*no control samples"):
        run_de_partition(a, "vcpi_0001", "group", lim, strict=True)


def test_single_sample_per_condition_is_skipped(two_strata, lim):
    obs = two_strata.obs
    first = obs.assign(k=obs["perturbagen"] + obs["pert_dose_uM"].astype(str) + obs["cell_type"]) \
        .drop_duplicates("k").index
    a = two_strata[first].copy()
    a.obs["plate"] = "SYN_P1"  # one plate: ~0 + cond, n samples = n coefficients
    de, st = run_de_partition(a, "vcpi_0001", "group", lim)
    assert de.empty
    assert (st["status"] == "skipped").all()
    assert st["reason"].str.contains("no residual degrees of freedom").all()


def test_plate_confounded_contrasts_are_kept_and_flagged(two_strata, lim):
    """A plate holding only one condition: limma returns its contrasts; they are kept and flagged (the
    numbers are checked against R in test_confounded_oracle.py)."""
    a = two_strata[two_strata.obs["cell_type"] == "CVCL_0023"].copy()
    hit = (a.obs["perturbagen"] == "SYN_hit").to_numpy()
    a.obs["plate"] = np.where(hit, "SYN_P9", a.obs["plate"].to_numpy())
    de, st = run_de_partition(a, "vcpi_0001", "group", lim)
    assert st["status"].tolist() == ["ok"]
    reason = st["reason"].item()
    assert "plate-confounded" in reason and "SYN_hit_1uM_24h" in reason and "SYN_P9" in reason
    one = de.drop_duplicates("contrast_id").set_index("treated_label")
    assert sorted(one.index) == ["SYN_hit_1uM_24h", "SYN_null_10uM_24h", "SYN_null_1uM_24h"]  # none dropped
    assert one["plate_confounded"].to_dict() == {"SYN_hit_1uM_24h": True, "SYN_null_10uM_24h": False,
                                                 "SYN_null_1uM_24h": False}
    assert st["n_contrasts"].item() == 3 and st["n_plate_confounded"].item() == 1


def test_zero_library_sample_is_dropped_and_the_rest_fitted(two_strata, lim):
    a = two_strata[two_strata.obs["cell_type"] == "CVCL_0023"].copy()
    victim = a.obs_names[(~a.obs["is_control"]).to_numpy()][0]
    ref, _ = run_de_partition(a[a.obs_names != victim].copy(), "vcpi_0001", "group", lim)
    X = np.asarray(a.X).copy()
    X[a.obs_names.get_loc(victim)] = 0
    a.X = X
    de, st = run_de_partition(a, "vcpi_0001", "group", lim)
    assert st["status"].tolist() == ["ok"]
    assert "1 samples with zero library size dropped" in st["reason"].item() and victim in st["reason"].item()
    assert st["n_samples"].item() == a.n_obs - 1
    m = ref.merge(de, on=["contrast_id", "gene"], suffixes=("_ref", ""))
    assert len(m) == len(ref) == len(de)
    assert np.max(np.abs(m["t"] - m["t_ref"])) <= 1e-10


def test_all_zero_genes_do_not_change_other_genes(two_strata, lim):
    a = two_strata[two_strata.obs["cell_type"] == "CVCL_0023"].copy()
    ref, st_ref = run_de_partition(a, "vcpi_0001", "group", lim)
    zeros = pd.DataFrame(0.0, index=a.obs_names, columns=[f"ENSG99{i:09d}" for i in range(25)])
    import anndata as ad
    b = ad.concat([a, ad.AnnData(zeros.to_numpy(), obs=a.obs, var=pd.DataFrame(
        {"symbol": "ZERO"}, index=zeros.columns))], axis=1, merge="first")
    de, st = run_de_partition(b, "vcpi_0001", "group", lim)
    assert not set(de["gene"]) & set(zeros.columns)  # filterByExpr drops them
    assert st["genes_kept"].item() == st_ref["genes_kept"].item()
    m = ref.merge(de, on=["contrast_id", "gene"], suffixes=("_ref", ""))
    assert len(m) == len(ref)
    assert np.max(np.abs(m["t"] - m["t_ref"])) <= 1e-10


def test_all_genes_zero_is_skipped(two_strata, lim):
    a = two_strata[two_strata.obs["cell_type"] == "CVCL_0023"].copy()
    a.X = np.zeros(a.shape)
    de, st = run_de_partition(a, "vcpi_0001", "group", lim)
    assert de.empty and st["status"].tolist() == ["skipped"]
    assert "zero" in st["reason"].item()


def test_too_few_expressed_genes_is_skipped(two_strata, lim):
    a = two_strata[two_strata.obs["cell_type"] == "CVCL_0023"].copy()
    a.X = np.ones(a.shape)  # 1 count per gene: nothing passes filterByExpr
    de, st = run_de_partition(a, "vcpi_0001", "group", lim)
    assert de.empty and st["status"].tolist() == ["skipped"]
    assert "filterByExpr kept 0 genes" in st["reason"].item()


def test_constant_genes_left_out_on_normalized_route(l1000_plate, lim):
    a = l1000_plate[:60].copy()  # real L1000 plate: its first 60 wells
    a.X = np.array(a.X)
    a.X[:, :5] = 0.0
    de, st = run_de_partition(a, "l1000_phase1", "group", lim)
    assert st["status"].tolist() == ["ok"] and "5 constant genes left out" in st["reason"].item()
    assert de["gene"].nunique() == 973 and not set(de["gene"]) & set(a.var_names[:5])
    assert np.isfinite(de["t"]).all()


def test_non_integer_counts_raise_named_error(two_strata, lim):
    a = two_strata[two_strata.obs["cell_type"] == "CVCL_0023"].copy()
    a.X = np.asarray(a.X) + 0.5
    with pytest.raises(DEInputError, match="stratum 'CVCL_0023'.*non-negative integer counts"):
        run_de_partition(a, "vcpi_0001", "group", lim)


def test_r_error_becomes_named_python_error():
    design = pd.DataFrame({"c0001": [1.0, 1.0, 0.0, 0.0], "c0002": [0.0, 0.0, 1.0, np.nan]})
    contrasts = pd.DataFrame({"k0001": [1.0, -1.0]}, index=design.columns)
    x = np.random.default_rng(0).normal(size=(10, 4))
    with pytest.raises(LimmaFitError, match=r"stratum 'SYN_X'.*NAs not allowed in design"):
        fit_limma(x, [f"g{i}" for i in range(10)], design, contrasts, normalized=True, stratum="SYN_X")
