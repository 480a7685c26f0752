"""Real L1000 plate (LJP005, A375, 24 h): the normalized route against a direct limma call.

The oracle is limma itself, called here through rpy2 with R code written in
this test (model.matrix, a hand-built contrast matrix, eBayes(robust=TRUE,
trend=TRUE), topTable), independently of r_scripts/limma_de.R.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from cpb_assets.effects.de import run_de_partition
from cpb_resources.limma import LimmaResource

pytestmark = pytest.mark.r

DIRECT = """
function(x, cond, treated, control) {
  suppressPackageStartupMessages(library(limma))
  f <- factor(cond, levels = unique(cond))
  design <- model.matrix(~0 + f)
  colnames(design) <- levels(f)
  cm <- matrix(0, nrow = ncol(design), ncol = length(treated), dimnames = list(levels(f), treated))
  for (j in seq_along(treated)) { cm[treated[j], j] <- 1; cm[control, j] <- -1 }
  fit <- eBayes(contrasts.fit(lmFit(x, design), cm), robust = TRUE, trend = TRUE)
  pick <- function(col) sapply(seq_along(treated), function(j)
    topTable(fit, coef = j, number = Inf, sort.by = "none", confint = TRUE)[rownames(x), col])
  p <- pick("P.Value")
  list(t = pick("t"), p = p, logfc = pick("logFC"), cil = pick("CI.L"), adj = pick("adj.P.Val"),
       across = matrix(p.adjust(p, "BH"), nrow(p)),
       scaled = fit$stdev.unscaled[rownames(x), treated] * sqrt(fit$s2.post),
       dfprior = fit$df.prior, s2prior = fit$s2.prior)
}
"""


@pytest.fixture(scope="module")
def direct(l1000_plate):
    import rpy2.robjects as ro

    a = l1000_plate
    obs = a.obs
    # labels written out here, independently of cpb_assets.effects.labels
    cond = np.where(obs["is_control"], "DMSO_24h",
                    [f"{p}_{'%.15g' % d}uM_24h" for p, d in zip(obs["perturbagen"], obs["pert_dose_uM"])])
    treated = list(pd.unique(cond[~obs["is_control"].to_numpy()]))
    x = np.asarray(a.X, dtype=float).T
    m = ro.r["matrix"](ro.FloatVector(x.ravel(order="F")), nrow=x.shape[0], ncol=x.shape[1])
    m = ro.r["rownames<-"](m, ro.StrVector(list(a.var_names)))
    res = ro.r(DIRECT)(m, ro.StrVector(list(cond)), ro.StrVector(treated), ro.StrVector(["DMSO_24h"]))
    out = dict(zip(res.names, res))
    shape = (a.n_vars, len(treated))
    # copy: np.asarray would be a view on R memory that R later frees
    mats = {k: np.array(out[k], dtype=float, copy=True).reshape(shape, order="F")
            for k in ["t", "p", "logfc", "cil", "adj", "across", "scaled"]}
    return (treated, list(a.var_names), mats, np.array(out["dfprior"], dtype=float, copy=True),
            np.array(out["s2prior"], dtype=float, copy=True))


@pytest.fixture(scope="module")
def ours(l1000_plate):
    t0 = time.perf_counter()
    de, strata = run_de_partition(l1000_plate, "l1000_phase1", "group", LimmaResource())
    return de, strata, time.perf_counter() - t0


def test_plate_shape(l1000_plate, direct):
    treated, genes, _, _, _ = direct
    assert l1000_plate.n_vars == 978 and (~l1000_plate.obs["is_control"]).sum() == 328
    assert l1000_plate.obs["is_control"].sum() == 26
    assert len(treated) == 328  # one well per compound × dose on this plate


def test_normalized_route_matches_direct_limma(ours, direct):
    de, strata, seconds = ours
    treated, genes, mats, dfprior, s2prior = direct
    assert strata["status"].tolist() == ["ok"] and strata["n_contrasts"].item() == 328
    assert strata["genes_kept"].item() == 978 and strata["n_samples"].item() == 354
    assert de["control_label"].unique().tolist() == ["DMSO_24h"]
    got = de.set_index(["treated_label", "gene"])
    assert len(got) == 328 * 978 and got.index.is_unique
    idx = pd.MultiIndex.from_product([treated, genes])  # contrast-major, like the matrices' Fortran order
    for ours_col, key in [("t", "t"), ("P_Value", "p"), ("logFC", "logfc"), ("CI_L", "cil"),
                          ("adj_P_within", "adj"), ("adj_P_across", "across"), ("stdev_scaled", "scaled")]:
        mine = got.loc[idx, ours_col].to_numpy()
        theirs = mats[key].T.reshape(-1)
        diff = np.max(np.abs(mine - theirs))
        assert diff <= 1e-10, f"{ours_col}: max |diff| {diff:g}"
    assert strata["df_prior"].item() == pytest.approx(np.median(dfprior), abs=1e-10)
    assert strata["s2_prior"].item() == pytest.approx(np.median(s2prior), abs=1e-10)


def test_contrast_metadata(ours, l1000_plate):
    de, _, _ = ours
    one = de.drop_duplicates("contrast_id")
    assert len(one) == 328
    assert set(one["dose_uM"]) == {0.04, 0.12, 0.37, 1.11, 3.33, 10.0}
    assert (one["time_h"] == 24.0).all() and (one["cell_type"] == "CVCL_0132").all()
    assert one["plate"].isna().all() and one["well"].isna().all()  # group mode pools replicates
    expect = {f"{p}_{'%.15g' % d}uM_24h" for p, d in one[["perturbagen", "dose_uM"]].itertuples(index=False)}
    assert expect == set(one["treated_label"])


def test_sep_mode_matches_direct_limma(l1000_plate, direct):
    """sep labeling on the real plate: each treated well its own condition. The plate has one well per
    compound × dose, so limma's numbers for a well equal those of its condition in the direct call."""
    a = l1000_plate
    treated, genes, mats, _, _ = direct
    obs = a.obs.loc[~a.obs["is_control"]]
    assert obs["plate"].nunique() == 1  # one plate: ~0 + cond
    # sep labels written out here: {pert}_{dose}uM_{time}h_{well}_{plate}
    sep_of = {f"{p}_{'%.15g' % d}uM_24h": f"{p}_{'%.15g' % d}uM_24h_{w}_{pl}"
              for p, d, w, pl in zip(obs["perturbagen"], obs["pert_dose_uM"], obs["well"], obs["plate"])}
    assert len(sep_of) == len(treated) == 328
    de, strata = run_de_partition(a, "l1000_phase1", "sep", LimmaResource())
    assert strata["status"].tolist() == ["ok"] and strata["n_contrasts"].item() == 328
    assert sorted(de["treated_label"].unique()) == sorted(sep_of[t] for t in treated)
    one = de.drop_duplicates("contrast_id")
    assert (one["well"].notna() & one["plate"].notna()).all() and not one["plate_confounded"].any()
    got = de.set_index(["treated_label", "gene"])
    idx = pd.MultiIndex.from_product([[sep_of[t] for t in treated], genes])
    for ours_col, key in [("t", "t"), ("P_Value", "p"), ("logFC", "logfc"), ("adj_P_within", "adj"),
                          ("adj_P_across", "across")]:
        diff = np.max(np.abs(got.loc[idx, ours_col].to_numpy() - mats[key].T.reshape(-1)))
        assert diff <= 1e-10, f"{ours_col}: max |diff| {diff:g}"
