"""Tahoe-like sep-mode stratum whose first plate lost its DMSO wells to the 50-cell filter (SYNTHETIC counts).

limma's lmFit drops the aliased plate column; contrasts.fit returns every
contrast; the first plate's wells carry its plate effect and are flagged
`plate_confounded`. The oracle is edgeR + limma called directly in R on the
full rank-deficient design (filterByExpr, TMM, voom, lmFit, contrasts.fit,
eBayes(robust = TRUE)), written here, with labels written here.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cpb_assets.effects.de import run_de_partition
from cpb_resources.limma import LimmaResource

pytestmark = pytest.mark.r

DIRECT = """
function(counts, cond, plate, treated, control) {
  suppressPackageStartupMessages({library(limma); library(edgeR)})
  f <- factor(cond, levels = sort(unique(cond), method = "radix"))
  p <- factor(plate, levels = sort(unique(plate), method = "radix"))
  design <- model.matrix(~0 + f + p)
  colnames(design) <- c(levels(f), paste0("plate_", levels(p)[-1]))
  dge <- DGEList(counts)
  keep <- filterByExpr(dge, design)
  dge <- calcNormFactors(dge[keep, , keep.lib.sizes = FALSE])
  v <- suppressWarnings(voom(dge, design))
  fit <- suppressWarnings(lmFit(v, design))
  cm <- matrix(0, ncol(design), length(treated), dimnames = list(colnames(design), treated))
  for (j in seq_along(treated)) { cm[treated[j], j] <- 1; cm[control, j] <- -1 }
  fit2 <- eBayes(contrasts.fit(fit, cm), robust = TRUE)
  genes <- rownames(fit2)
  list(genes = genes, contrasts = colnames(fit2$coefficients), t = fit2$t[genes, treated, drop = FALSE],
       logfc = fit2$coefficients[genes, treated, drop = FALSE], na_coef = colnames(design)[is.na(fit$coefficients[1, ])])
}
"""


def tahoe_like(make_obs, seed=21, n_genes=300):
    """3 plates × (6 drug wells + 3 DMSO wells), one cell line, 24 h; plate1's DMSO wells have 20 cells."""
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    base = np.exp(rng.normal(np.log(80), 1.0, n_genes))
    plate_eff = {p: rng.normal(0, 0.2, n_genes) for p in ("plate1", "plate2", "plate3")}
    for plate in ("plate1", "plate2", "plate3"):
        for k in range(9):
            ctrl = k >= 6
            drug = "DMSO" if ctrl else f"SYN_drug{k}"
            dose = 0.0 if ctrl else [0.05, 0.5, 5.0][k % 3]
            mu = base * np.exp2(plate_eff[plate]) * rng.uniform(0.7, 1.3)
            cols.append(rng.negative_binomial(20, 20 / (20 + mu)))
            rows.append({"plate": plate, "well": f"{'ABC'[k // 3]}{k:02d}", "cell_type": "CVCL_0320",
                         "perturbagen": drug, "is_control": ctrl, "pert_dose_uM": dose, "pert_time_h": 24.0,
                         "pubchem_cid": None if ctrl else str(7000 + k),
                         "psbulk_cells": 20 if (ctrl and plate == "plate1") else 120})
    obs = make_obs(rows, "tahoe100m")
    import anndata as ad
    return ad.AnnData(X=np.array(cols, dtype=float), obs=obs,
                      var=pd.DataFrame(index=[f"ENSG{i:011d}" for i in range(n_genes)]))


def test_tahoe_sep_keeps_every_contrast_and_matches_lmfit(make_obs):
    import rpy2.robjects as ro

    a = tahoe_like(make_obs)
    de, st = run_de_partition(a, "tahoe100m", "sep", LimmaResource())
    assert st["status"].tolist() == ["ok"]
    assert "3 samples of the dataset below 50 cells dropped" in st["reason"].item()
    # every treated well is a contrast: 18, none lost to the confounding
    assert st["n_contrasts"].item() == 18 == de["contrast_id"].nunique()
    one = de.drop_duplicates("contrast_id")
    assert one.groupby("plate")["plate_confounded"].agg(["all", "any"]).to_dict("index") == {
        "plate1": {"all": True, "any": True}, "plate2": {"all": False, "any": False},
        "plate3": {"all": False, "any": False}}
    assert st["n_plate_confounded"].item() == 6

    kept = a[~((a.obs["plate"] == "plate1") & a.obs["is_control"]).to_numpy()]
    obs = kept.obs
    # sep labels written out here: {pert}_{dose}uM_{time}h_{well}_{plate}; controls {pert}_{time}h
    cond = ["DMSO_24h" if c else f"{p}_{'%.15g' % d}uM_24h_{w}_{pl}"
            for p, d, c, w, pl in zip(obs["perturbagen"], obs["pert_dose_uM"], obs["is_control"], obs["well"],
                                      obs["plate"])]
    treated = [c for c in cond if c != "DMSO_24h"]
    x = np.asarray(kept.X, dtype=float).T
    m = ro.r["matrix"](ro.FloatVector(x.ravel(order="F")), nrow=x.shape[0], ncol=x.shape[1])
    m = ro.r["rownames<-"](m, ro.StrVector(list(kept.var_names)))
    res = dict(zip(*(lambda r: (r.names, r))(ro.r(DIRECT)(m, ro.StrVector(cond), ro.StrVector(list(obs["plate"])),
                                                           ro.StrVector(treated), ro.StrVector(["DMSO_24h"])))))
    assert list(res["na_coef"]) == ["plate_plate3"]  # lmFit's aliased column
    assert sorted(res["contrasts"]) == sorted(de["treated_label"].unique())  # the same contrast set
    genes = list(res["genes"])
    assert sorted(genes) == sorted(de["gene"].unique())
    got = de.set_index(["treated_label", "gene"])
    idx = pd.MultiIndex.from_product([treated, genes])
    for col, key in (("t", "t"), ("logFC", "logfc")):
        theirs = np.array(res[key], dtype=float, copy=True).reshape((len(genes), len(treated)), order="F")
        diff = np.max(np.abs(got.loc[idx, col].to_numpy() - theirs.T.reshape(-1)))
        assert diff <= 1e-10, f"{col}: {diff:g}"
