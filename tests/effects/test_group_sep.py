"""Group vs sep labelings on SYNTHETIC counts: contrast counts equal what the labels imply."""
from __future__ import annotations

import numpy as np
import pytest

from cpb_assets.effects.de import run_de_partition
from cpb_resources.limma import LimmaResource

pytestmark = pytest.mark.r


@pytest.fixture(scope="module")
def data(make_counts):
    adata, _ = make_counts(seed=3, n_genes=400, reps=3, n_dmso=6, cell_types=("CVCL_0023", "CVCL_0004"),
                           times=(6.0, 24.0))
    # the inert compound was never run at 6 h in CVCL_0004: the implied counts must follow
    obs = adata.obs
    drop = (obs["cell_type"] == "CVCL_0004") & (obs["pert_time_h"] == 6.0) & (obs["perturbagen"] == "SYN_null")
    return adata[~drop.to_numpy()].copy()


@pytest.fixture(scope="module")
def results(data):
    lim = LimmaResource()
    return {m: run_de_partition(data, "vcpi_0001", m, lim) for m in ("group", "sep")}


def _expected(obs):
    """Contrasts implied by the metadata, counted without the package's label code."""
    group = sep = 0
    for (_, t), sub in obs.groupby(["cell_type", "pert_time_h"]):
        n_ctrl_conditions = sub.loc[sub["is_control"], "perturbagen"].nunique()
        treated = sub.loc[~sub["is_control"]]
        group += len(treated[["perturbagen", "pert_dose_uM"]].drop_duplicates()) * n_ctrl_conditions
        sep += len(treated) * n_ctrl_conditions
    return group, sep


def test_contrast_counts(data, results):
    g_exp, s_exp = _expected(data.obs)
    # 3 treated conditions in 3 cell-type × time cells, 1 in the fourth; 3 replicates each
    assert (g_exp, s_exp) == (10, 30)
    de_g, st_g = results["group"]
    de_s, st_s = results["sep"]
    assert de_g["contrast_id"].nunique() == g_exp == st_g["n_contrasts"].sum()
    assert de_s["contrast_id"].nunique() == s_exp == st_s["n_contrasts"].sum()
    assert (st_g["status"] == "ok").all() and (st_s["status"] == "ok").all()


def test_sep_has_one_contrast_per_replicate(data, results):
    de_s, _ = results["sep"]
    one = de_s.drop_duplicates("contrast_id")
    treated = data.obs.loc[~data.obs["is_control"]]
    assert sorted(zip(one["cell_type"], one["plate"], one["well"])) == sorted(
        zip(treated["cell_type"], treated["plate"], treated["well"]))
    assert (one["treated_label"] == [f"{p}_{'%.15g' % d}uM_{'%.15g' % t}h_{w}_{pl}" for p, d, t, w, pl in
                                     zip(one["perturbagen"], one["dose_uM"], one["time_h"], one["well"],
                                         one["plate"])]).all()


def test_group_has_one_contrast_per_condition(results):
    de_g, _ = results["group"]
    one = de_g.drop_duplicates("contrast_id")
    assert not one.duplicated(["cell_type", "perturbagen", "dose_uM", "time_h"]).any()
    assert (one["control_label"] == [f"DMSO_{'%.15g' % t}h" for t in one["time_h"]]).all()
    assert one["plate"].isna().all()


def test_same_samples_fitted_in_both_modes(results):
    st_g, st_s = results["group"][1], results["sep"][1]
    assert st_g[["stratum", "n_samples", "n_controls"]].equals(st_s[["stratum", "n_samples", "n_controls"]])


def test_batched_stratum_adjusts_across_all_batches(data):
    import rpy2.robjects as ro

    lim = LimmaResource()
    a = data[data.obs["cell_type"] == "CVCL_0023"].copy()
    de, st = run_de_partition(a, "vcpi_0001", "group", lim, max_batch=6)  # 18 treated samples → 3 batches
    assert st["batch"].tolist() == [1, 2, 3] and (st["status"] == "ok").all()
    assert (st["n_controls"] == 12).all()  # every DMSO well (both times) copied into every batch
    assert de["contrast_id"].nunique() == 6
    # adj_P_across is BH over the whole stratum (all batches), as R's p.adjust computes it
    r_adj = np.array(ro.r["p.adjust"](ro.FloatVector(de["P_Value"].to_numpy()), "BH"), dtype=float, copy=True)
    assert np.max(np.abs(de["adj_P_across"].to_numpy() - r_adj)) <= 1e-12


def test_de_dose_is_the_harmonized_dose(make_counts):
    """A dose with more than 4 decimals rounds in the labels only; `dose_uM` keeps the harmonized value."""
    adata, _ = make_counts(seed=4, n_genes=300, reps=3, n_dmso=6)
    obs = adata.obs.copy()
    obs.loc[(obs["perturbagen"] == "SYN_null") & (obs["pert_dose_uM"] == 1.0), "pert_dose_uM"] = 3e-05
    adata.obs = obs
    de, _ = run_de_partition(adata, "vcpi_0001", "group", LimmaResource())
    one = de.drop_duplicates("contrast_id").set_index("treated_label")
    assert one.loc["SYN_null_0uM_24h", "dose_uM"] == 3e-05  # label: half-up to 4 decimals
    assert one.loc["SYN_null_10uM_24h", "dose_uM"] == 10.0
