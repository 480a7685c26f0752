"""Batches against R fitted per batch, adj_P_across against BH over the whole stratum, and null calibration.

Data are SYNTHETIC (seeded negative binomial, tests/effects/conftest.py) unless stated.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kstest

from cpb_assets.effects.assemble import bh_across_files
from cpb_assets.effects.de import run_de_partition
from cpb_resources.limma import LimmaResource

pytestmark = pytest.mark.r

VOOM = """
function(counts, cond, plate, treated, control) {
  suppressPackageStartupMessages({library(limma); library(edgeR)})
  f <- factor(cond, levels = sort(unique(cond), method = "radix"))
  p <- factor(plate, levels = sort(unique(plate), method = "radix"))
  design <- if (nlevels(p) > 1) model.matrix(~0 + f + p) else model.matrix(~0 + f)
  colnames(design) <- c(levels(f), if (nlevels(p) > 1) paste0("plate_", levels(p)[-1]))
  dge <- DGEList(counts)
  dge <- calcNormFactors(dge[filterByExpr(dge, design), , keep.lib.sizes = FALSE])
  fit <- lmFit(voom(dge, design), design)
  cm <- matrix(0, ncol(design), length(treated), dimnames = list(colnames(design), treated))
  for (j in seq_along(treated)) { cm[treated[j], j] <- 1; cm[control[j], j] <- -1 }
  fit <- eBayes(contrasts.fit(fit, cm), robust = TRUE)
  g <- rownames(fit)
  list(genes = g, t = fit$t[g, , drop = FALSE], logfc = fit$coefficients[g, , drop = FALSE],
       p = fit$p.value[g, , drop = FALSE])
}
"""


def _r_voom(adata):
    """limma-voom on `adata` in R; labels written here (group mode, one time)."""
    import rpy2.robjects as ro

    obs = adata.obs
    cond = [f"DMSO_{'%.15g' % t}h" if c else f"{p}_{'%.15g' % d}uM_{'%.15g' % t}h"
            for p, d, t, c in zip(obs["perturbagen"], obs["pert_dose_uM"], obs["pert_time_h"], obs["is_control"])]
    treated = sorted({c for c, k in zip(cond, obs["is_control"]) if not k})
    control = [f"DMSO_{t.rsplit('_', 1)[1]}" for t in treated]
    x = np.asarray(adata.X, dtype=float).T
    m = ro.r["matrix"](ro.FloatVector(x.ravel(order="F")), nrow=x.shape[0], ncol=x.shape[1])
    m = ro.r["rownames<-"](m, ro.StrVector(list(adata.var_names)))
    out = dict(zip(*(lambda r: (r.names, r))(ro.r(VOOM)(m, ro.StrVector(cond), ro.StrVector(list(obs["plate"])),
                                                         ro.StrVector(treated), ro.StrVector(control)))))
    genes = list(out["genes"])
    shape = (len(genes), len(treated))
    return {k: pd.DataFrame(np.array(out[k], dtype=float, copy=True).reshape(shape, order="F"), index=genes,
                            columns=treated) for k in ("t", "logfc", "p")}


@pytest.fixture(scope="module")
def one_line(make_counts):
    adata, _ = make_counts(seed=3, n_genes=400, reps=3, n_dmso=8)
    return adata


def test_batches_equal_r_fitted_per_batch_and_bh_over_the_stratum(one_line):
    import rpy2.robjects as ro

    de, st = run_de_partition(one_line, "vcpi_0001", "group", LimmaResource(), max_batch=4)
    # 3 conditions × 3 replicates, at most ~4 per batch: whole conditions, one per batch
    assert st["batch"].tolist() == [1, 2, 3] and (st["status"] == "ok").all() and (st["n_controls"] == 8).all()
    obs = one_line.obs
    treated = obs.loc[~obs["is_control"]]
    groups = treated.groupby(["perturbagen", "pert_dose_uM"]).groups
    seen = set()
    for key, ids in groups.items():
        batch = one_line[obs["is_control"].to_numpy() | obs.index.isin(ids)].copy()
        r = _r_voom(batch)  # R on this batch's samples only: its controls and its one condition
        (label,) = r["t"].columns
        seen.add(label)
        mine = de[de["treated_label"] == label].set_index("gene")
        assert sorted(mine.index) == sorted(r["t"].index)
        for ours, theirs in (("t", "t"), ("logFC", "logfc"), ("P_Value", "p")):
            diff = np.max(np.abs(mine.loc[r[theirs].index, ours].to_numpy() - r[theirs][label].to_numpy()))
            assert diff <= 1e-10, f"{label} {ours}: {diff:g}"
    assert seen == set(de["treated_label"])
    # adj_P_across: BH over every contrast × gene of the stratum, all batches together, as R computes it
    r_adj = np.array(ro.r["p.adjust"](ro.FloatVector(de["P_Value"].to_numpy()), "BH"), dtype=float, copy=True)
    assert np.max(np.abs(de["adj_P_across"].to_numpy() - r_adj)) <= 1e-15


def test_out_of_core_bh_equals_p_adjust_with_ties_and_nan(tmp_path):
    """bh_across_files in groups of 1,000 values over 3 files equals R's p.adjust over their union."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import rpy2.robjects as ro

    rng = np.random.default_rng(5)
    parts = [rng.uniform(size=n) ** 4 for n in (2500, 40, 3000)]
    parts[0][:300] = 0.25  # a tie spanning files
    parts[2][:200] = 0.25
    parts[2][200:260] = 1.0
    parts[1][:5] = np.nan
    paths = []
    for i, p in enumerate(parts):
        paths.append(tmp_path / f"u{i}.parquet")
        pq.write_table(pa.table({"P_Value": p}), paths[-1])
    qs = [np.load(q) for q in bh_across_files(paths, tmp_path / "work", chunk=1000)]
    allp = np.concatenate(parts)
    ok = ~np.isnan(allp)
    r = np.array(ro.r["p.adjust"](ro.FloatVector(allp[ok]), "BH"), dtype=float, copy=True)
    got = np.concatenate(qs)
    assert np.isnan(got[~ok]).all()
    assert np.array_equal(got[ok], r)  # bit-identical: the same arithmetic, (n / i) * p


def _dmso_split(adata, every=3):
    """Relabel every `every`-th DMSO well as a mock treatment; keep controls and the mock only."""
    obs = adata.obs.copy()
    for c in obs.select_dtypes("category").columns:
        obs[c] = obs[c].astype(object)
    ctrl = np.flatnonzero(obs["is_control"].to_numpy())
    held = obs.index[ctrl[::every]]
    obs.loc[held, ["is_control", "perturbagen", "pert_dose_uM"]] = [False, "DMSO_heldout", 1.0]
    adata = adata.copy()
    adata.obs = obs
    return adata[(obs["is_control"] | (obs["perturbagen"] == "DMSO_heldout")).to_numpy()].copy()


def _permuted(adata, seed):
    """Condition labels (perturbagen, dose, control flag) shuffled across the samples of each plate."""
    rng = np.random.default_rng(seed)
    obs = adata.obs.copy()
    cols = ["perturbagen", "pert_dose_uM", "is_control", "pubchem_cid"]
    for _, idx in obs.groupby("plate").indices.items():
        obs.iloc[idx, [obs.columns.get_loc(c) for c in cols]] = obs.iloc[rng.permutation(idx)][cols].to_numpy()
    obs["is_control"] = obs["is_control"].astype(bool)
    obs["pert_dose_uM"] = obs["pert_dose_uM"].astype(float)
    adata = adata.copy()
    adata.obs = obs
    return adata


@pytest.fixture(scope="module")
def null_results(make_counts):
    lim = LimmaResource()
    adata, _ = make_counts(seed=13, n_genes=1500, reps=4, n_dmso=24)
    dmso, _ = run_de_partition(_dmso_split(adata), "vcpi_0001", "group", lim)
    perm, _ = run_de_partition(_permuted(adata, 1), "vcpi_0001", "group", lim)
    return {"dmso_vs_dmso": dmso, "permuted_labels": perm}


@pytest.mark.parametrize("case", ["dmso_vs_dmso", "permuted_labels"])
def test_null_contrasts_are_calibrated(null_results, case):
    de = null_results[case]
    assert de["contrast_id"].nunique() == (1 if case == "dmso_vs_dmso" else 3)
    assert (de["adj_P_within"] < 0.05).mean() <= 0.005  # at most 0.5% DEGs
    assert (de["adj_P_across"] < 0.05).mean() <= 0.005
    # null P values are uniform: each contrast's genes are independent in this synthetic world
    for _, part in de.groupby("contrast_id"):
        assert kstest(part["P_Value"], "uniform").pvalue > 0.01


def test_real_plate_dmso_vs_dmso_is_quiet(l1000_plate):
    """REAL LJP005 DMSO wells (26): every third relabelled as a mock treatment, at most 0.5% DEGs."""
    de, st = run_de_partition(_dmso_split(l1000_plate), "l1000_phase1", "group", LimmaResource())
    assert st["status"].tolist() == ["ok"] and de["contrast_id"].nunique() == 1
    assert (de["adj_P_within"] < 0.05).mean() <= 0.005
