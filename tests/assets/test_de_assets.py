"""The DE layer on the demo world through Dagster: planted truth recovered, null contrasts quiet,
contrast counts as the labels imply, the `de` view answers."""
from __future__ import annotations

import anndata as ad
import duckdb
import numpy as np
import pandas as pd
import pytest
from scipy.stats import kstest, spearmanr

from cpb_assets.effects.de import run_de_partition
from cpb_resources.limma import LimmaResource

pytestmark = pytest.mark.r


def _con(home):
    return duckdb.connect(str(home / "catalog.duckdb"), read_only=True)


def _truth_recovery(home, world, dataset: str) -> tuple[float, int]:
    """Spearman of recovered vs planted logFC over the planted genes of strong compounds
    (potency 2) at their highest dose, 24 h, group mode."""
    de = _con(home).execute(
        "select cell_type, pubchem_cid, dose_uM, gene, logFC from de "
        "where dataset = ? and mode = 'group' and time_h = 24", [dataset]).df()
    comp = world.compounds.reset_index()
    strong = comp[comp["potency"] == 2.0]
    obs_all, truth_all = [], []
    for (ct, cid), part in de[de["pubchem_cid"].isin(strong["pubchem_cid"])].groupby(["cell_type", "pubchem_cid"]):
        part = part[part["dose_uM"] == part["dose_uM"].max()]
        c = int(comp.index[comp["pubchem_cid"] == cid][0])
        gidx = world.gene_index(part["gene"])
        truth = world.true_logfc(c, ct, float(part["dose_uM"].iloc[0]), 24.0, gidx, dataset)  # as this source measures it
        planted = truth != 0
        obs_all.append(part["logFC"].to_numpy()[planted])
        truth_all.append(truth[planted])
    rho = spearmanr(np.concatenate(obs_all), np.concatenate(truth_all)).statistic
    return rho, len(obs_all)


@pytest.mark.parametrize("home_fixture, dataset", [("l1000_home", "l1000_phase1"), ("l1000_home", "l1000_phase2"),
                                                   ("count_home", "vcpi_0001")])
def test_planted_truth_recovered(request, world, home_fixture, dataset):
    rho, n = _truth_recovery(request.getfixturevalue(home_fixture), world, dataset)
    assert n >= 4  # several strong compound × cell line signatures
    assert rho >= 0.8


@pytest.mark.parametrize("home_fixture, dataset", [("l1000_home", "l1000_phase1"), ("count_home", "vcpi_0001")])
def test_control_vs_control_is_quiet(request, home_fixture, dataset):
    """Half of the DMSO wells of one stratum relabelled as a treatment: at most 0.5% DEGs, uniform P values."""
    home = request.getfixturevalue(home_fixture)
    a = ad.read_h5ad(home / "harmonized" / f"{dataset}.h5ad")
    ct = sorted(a.obs["cell_type"].astype(str).unique())[0]
    a = a[(a.obs["cell_type"] == ct).to_numpy() & (a.obs["pert_time_h"] == 24).to_numpy()].copy()
    obs = a.obs
    for c in obs.select_dtypes("category").columns:
        obs[c] = obs[c].astype(object)
    ctrl = np.flatnonzero(obs["is_control"].to_numpy())
    fake = ctrl[1::2]  # every other DMSO well, across plates
    obs.iloc[fake, obs.columns.get_loc("is_control")] = False
    obs.iloc[fake, obs.columns.get_loc("perturbagen")] = "DMSO_heldout"
    obs.iloc[fake, obs.columns.get_loc("pert_dose_uM")] = 1.0
    obs.iloc[fake, obs.columns.get_loc("pubchem_cid")] = "999999999"
    keep = obs["is_control"].to_numpy() | (obs["perturbagen"] == "DMSO_heldout").to_numpy()
    a = a[keep].copy()
    de, st = run_de_partition(a, dataset, "group", LimmaResource())
    assert st["status"].tolist() == ["ok"] and de["contrast_id"].nunique() == 1
    assert (de["adj_P_within"] < 0.05).mean() <= 0.005
    assert kstest(de["P_Value"], "uniform").pvalue > 0.01  # demo genes are independent given the condition


def test_contrast_counts_follow_the_labels(l1000_home):
    """group: one contrast per (cell line, compound, dose, time) condition; sep: one per treated sample —
    counted here straight from harmonized_obs, at 24 h only (METHODS §3: L1000's DE is restricted to 24 h;
    the demo's Phase I also has 6 h samples, which stay in harmonized_obs)."""
    con = _con(l1000_home)
    for ds in ("l1000_phase1", "l1000_phase2"):
        got = dict(con.execute("select mode, count(distinct contrast_id) from de where dataset = ? group by 1",
                               [ds]).fetchall())
        # every time point of the demo has DMSO controls on its plates: one control label per time
        want_group = con.execute(
            "select count(*) from (select distinct cell_type, pubchem_cid, pert_dose_uM, pert_time_h "
            "from harmonized_obs where dataset = ? and not is_control and pert_time_h = 24)", [ds]).fetchone()[0]
        want_sep = con.execute("select count(*) from harmonized_obs where dataset = ? and not is_control "
                               "and pert_time_h = 24", [ds]).fetchone()[0]
        assert got == {"group": want_group, "sep": want_sep}


def test_de_view_answers_the_readme_query(l1000_home, count_home):
    for home in (l1000_home, count_home):
        rows = _con(home).execute(
            "select dataset, mode, count(distinct contrast_id) from de group by all order by 1, 2").fetchall()
        assert [r[1] for r in rows] == ["group", "sep"] * (len(rows) // 2) and all(r[2] > 0 for r in rows)
    strata = _con(count_home).execute("select stratum, status, genes_kept, df_prior from de_strata "
                                      "where mode = 'group' order by 1").df()
    assert strata["status"].tolist() == ["ok", "ok"] and (strata["genes_kept"] > 1000).all()
    cols = [r[0] for r in _con(count_home).execute("describe de").fetchall()]
    for c in ["dataset", "mode", "stratum", "contrast_id", "gene", "logFC", "t", "P_Value", "adj_P_within",
              "adj_P_across", "B", "CI_L", "CI_R", "stdev_unscaled", "stdev_scaled", "sigma", "df_total"]:
        assert c in cols


def test_adj_p_across_is_bh_over_the_stratum(count_home):
    from scipy.stats import false_discovery_control

    de = _con(count_home).execute("select stratum, P_Value, adj_P_across from de "
                                  "where mode = 'sep'").df()
    for _, part in de.groupby("stratum"):
        np.testing.assert_allclose(part["adj_P_across"], false_discovery_control(part["P_Value"]), rtol=1e-10)
