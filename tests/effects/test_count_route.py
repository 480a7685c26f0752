"""Count route on SYNTHETIC negative-binomial data (seeded; not real data).

Checks: planted DE genes come out on top, controls contrasted with controls
give few DEGs, and the whole route equals a direct edgeR/limma call written
here (filterByExpr, TMM, voom, ~0 + cond + plate, eBayes(robust=TRUE)).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from cpb_assets.effects.de import run_de_partition
from cpb_resources.limma import LimmaResource

pytestmark = pytest.mark.r

DIRECT_VOOM = """
function(counts, cond, plate, treated, control) {
  suppressPackageStartupMessages({library(limma); library(edgeR)})
  f <- factor(cond, levels = unique(cond))
  p <- factor(plate, levels = sort(unique(plate)))
  design <- model.matrix(~0 + f + p)
  colnames(design) <- c(levels(f), paste0("plate_", levels(p)[-1]))
  dge <- DGEList(counts)
  keep <- filterByExpr(dge, design)
  dge <- calcNormFactors(dge[keep, , keep.lib.sizes = FALSE])
  fit <- lmFit(voom(dge, design), design)
  cm <- matrix(0, ncol(design), length(treated), dimnames = list(colnames(design), treated))
  for (j in seq_along(treated)) { cm[treated[j], j] <- 1; cm[control, j] <- -1 }
  fit <- eBayes(contrasts.fit(fit, cm), robust = TRUE)
  genes <- rownames(fit)
  list(genes = genes,
       t = sapply(seq_along(treated), function(j) topTable(fit, coef = j, number = Inf, sort.by = "none")[genes, "t"]),
       p = sapply(seq_along(treated), function(j) topTable(fit, coef = j, number = Inf, sort.by = "none")[genes, "P.Value"]))
}
"""


@pytest.fixture(scope="module")
def synth(make_counts):
    return make_counts(seed=7)


@pytest.fixture(scope="module")
def fitted(synth):
    adata, _ = synth
    return run_de_partition(adata, "vcpi_0001", "group", LimmaResource())


def test_planted_genes_recovered(fitted, synth):
    de, strata = fitted
    _, planted = synth
    assert strata["status"].tolist() == ["ok"]
    hit = de[de["treated_label"] == "SYN_hit_1uM_24h"].set_index("gene")
    top = hit["t"].abs().sort_values(ascending=False).index[:len(planted)]
    assert set(top) == set(planted)
    rho = spearmanr(hit.loc[list(planted), "logFC"], list(planted.values())).statistic
    assert rho >= 0.8
    assert (hit.loc[list(planted), "adj_P_within"] < 0.05).all()
    # inert compound: nothing significant
    null = de[de["treated_label"].str.startswith("SYN_null")]
    assert (null["adj_P_within"] < 0.05).mean() <= 0.05


def test_count_route_matches_direct_voom(fitted, synth):
    import rpy2.robjects as ro

    de, _ = fitted
    adata, _ = synth
    obs = adata.obs
    cond = np.where(obs["is_control"], "DMSO_24h",
                    [f"{p}_{'%.15g' % d}uM_24h" for p, d in zip(obs["perturbagen"], obs["pert_dose_uM"])])
    treated = list(pd.unique(cond[~obs["is_control"].to_numpy()]))
    x = np.asarray(adata.X, dtype=float).T
    m = ro.r["matrix"](ro.FloatVector(x.ravel(order="F")), nrow=x.shape[0], ncol=x.shape[1])
    m = ro.r["rownames<-"](m, ro.StrVector(list(adata.var_names)))
    res = dict(zip(*(lambda r: (r.names, r))(ro.r(DIRECT_VOOM)(
        m, ro.StrVector(list(cond)), ro.StrVector(list(obs["plate"])), ro.StrVector(treated),
        ro.StrVector(["DMSO_24h"])))))
    genes = list(res["genes"])
    assert len(genes) == de["gene"].nunique()
    got = de.set_index(["treated_label", "gene"])
    idx = pd.MultiIndex.from_product([treated, genes])
    for col, key in [("t", "t"), ("P_Value", "p")]:
        theirs = np.array(res[key], dtype=float, copy=True).reshape((len(genes), len(treated)), order="F")
        diff = np.max(np.abs(got.loc[idx, col].to_numpy() - theirs.T.reshape(-1)))
        assert diff <= 1e-10, f"{col}: {diff:g}"


def test_control_vs_control_few_degs(make_counts):
    adata, _ = make_counts(seed=11, n_dmso=12)
    obs = adata.obs.copy()
    held = obs.index[obs["is_control"].to_numpy()][::3]  # 4 of 12 DMSO wells, both plates
    obs.loc[held, "is_control"] = False
    obs.loc[held, "perturbagen"] = "DMSO_heldout"
    obs.loc[held, "pert_dose_uM"] = 1.0
    adata.obs = obs
    de, strata = run_de_partition(adata, "vcpi_0001", "group", LimmaResource())
    cc = de[de["treated_label"] == "DMSO_heldout_1uM_24h"]
    assert len(cc) == strata["genes_kept"].item() > 1000
    assert (cc["adj_P_within"] < 0.05).mean() <= 0.05


def test_output_columns_and_derived_values(fitted):
    de, strata = fitted
    from cpb_assets.effects.de import DE_COLUMNS, STRATA_COLUMNS

    assert list(de.columns) == DE_COLUMNS and list(strata.columns) == STRATA_COLUMNS
    assert np.allclose(de["stdev_scaled"], de["logFC"] / de["t"], rtol=1e-8)  # t = logFC / (s.u. · sqrt(s2.post))
    assert (de["CI_L"] < de["logFC"]).all() and (de["logFC"] < de["CI_R"]).all()
    assert (de["adj_P_across"] >= de["P_Value"] * (1 - 1e-12)).all()  # BH never lowers a P value
    assert not de.duplicated(["contrast_id", "gene"]).any()
    assert strata["genes_kept"].item() == de["gene"].nunique()
    assert strata["df_prior"].item() > 0 and strata["s2_prior"].item() > 0
