"""DE fit of one stratum: the project's R path vs a direct limma call through rpy2.

Input: the REAL LINCS L1000 plate LJP005 (A375, 24 h; ``data/real/``),
978 genes × 354 samples (328 compound wells + 26 DMSO controls; the 23
positive-control wells are left out), as a harmonized-like AnnData; one
stratum (A375), normalized route, ``group`` labeling: 329 conditions, 328
contrasts (compound × dose − DMSO).

Contenders, all in this process, R and limma already loaded (one untimed
warm-up call of ``fit_limma`` sources the R script and loads the packages):

* ``run_de_partition``: the project's whole DE layer for the partition
  (plan units, labels, design, :func:`fit_limma`, the unit's Parquet file,
  ``assemble_de`` with ``adj_P_across``, the folder read back) — what an
  asset materialization pays, plus the read-back;
* ``fit_limma``: the project's rpy2 wrapper + ``r_scripts/limma_de.R``
  alone, on a design and contrasts built beforehand (not timed);
* direct (baseline): numpy → R matrices, then ``lmFit``, ``contrasts.fit``,
  ``eBayes(robust = TRUE, trend = TRUE)`` and one ``topTable(confint = TRUE)``
  per contrast — the same statistics — and t and P back to numpy.

Ratio = direct seconds ÷ project seconds (< 1: the project's overhead);
the check compares the moderated t statistics of the project with the
direct call's.
"""
from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from benchmarks import REPS, median_times, row
from cpb_assets.harmonize.schema import UNKNOWN
from cpb_assets.sources.gctx import read_gct

REPO = Path(__file__).resolve().parents[1]
PLATE = REPO / "data" / "real" / "l1000_ljp005" / "test_l1000.gct"
DATASET = "l1000_phase1"
CELL = "CVCL_0132"  # A375

# written for this benchmark: plain limma, no project code
DIRECT_R = """
function(x, design, contrasts) {
  suppressPackageStartupMessages(library(limma))
  fit <- lmFit(x, design)
  fit <- eBayes(contrasts.fit(fit, contrasts), robust = TRUE, trend = TRUE)
  k <- ncol(contrasts)
  t <- matrix(NA_real_, nrow(x), k)
  p <- matrix(NA_real_, nrow(x), k)
  for (j in seq_len(k)) {
    tab <- topTable(fit, coef = j, number = Inf, sort.by = "none", confint = TRUE)
    t[, j] <- tab$t
    p[, j] <- tab$P.Value
  }
  list(t = t, p = p)
}
"""


def real_plate() -> ad.AnnData:
    """The real plate as harmonized-like AnnData (compound wells and DMSO; probe IDs as genes)."""
    g = read_gct(PLATE)
    cm = g.col_meta
    keep = cm["pert_type"].isin(["trt_cp", "ctl_vehicle"]).to_numpy()
    cm = cm.loc[keep]
    ctrl = (cm["pert_type"] == "ctl_vehicle").to_numpy()
    n = len(cm)
    obs = pd.DataFrame({
        "dataset": DATASET, "plate": cm["det_plate"].astype(str).to_numpy(),
        "well": cm["det_well"].astype(str).to_numpy(), "cell_type": CELL,
        "perturbagen": cm["pert_id"].astype(str).to_numpy(), "is_control": ctrl,
        "pert_dose_uM": np.where(ctrl, 0.0, cm["pert_dose"].to_numpy(dtype=float)),
        "pert_time_h": cm["pert_time"].to_numpy(dtype=float),
        "pubchem_cid": np.full(n, None, dtype=object), "psbulk_cells": np.full(n, UNKNOWN, dtype=np.int64),
    }, index=pd.Index(cm.index.astype(str), name="sample_id"))
    var = pd.DataFrame(index=pd.Index(g.row_meta.index.astype(str), name="gene"))
    return ad.AnnData(X=np.ascontiguousarray(g.data[:, keep].T), obs=obs, var=var)


def _r_matrix(values: np.ndarray):
    import rpy2.robjects as ro

    values = np.asarray(values, dtype=float)
    return ro.r["matrix"](ro.FloatVector(values.ravel(order="F")), nrow=values.shape[0], ncol=values.shape[1])


def run(quick: bool = False, reps: int = REPS) -> list[dict]:
    """``quick`` changes nothing here: the real plate is the input either way."""
    try:
        import rpy2.robjects as ro

        from cpb_assets.effects.de import run_de_partition
        from cpb_assets.effects.labels import condition_labels
        from cpb_assets.effects.strata import build_design, plan_units
        from cpb_resources.limma import LimmaResource, fit_limma
    except ImportError as exc:  # the DE layer or rpy2 missing: say so, do not fail the other benchmarks
        return [row("de_fit", "skipped", "", project="", project_s=float("nan"), check=f"not run: {exc}",
                    data="real (LINCS LJP005)", ok=False)]

    adata = real_plate()
    units, skipped = plan_units(adata.obs, DATASET, "group")
    assert len(units) == 1 and not skipped, (units, skipped)
    unit = units[0]
    sub = adata[list(unit.sample_ids)]
    labels = condition_labels(sub.obs, DATASET, "group", round_doses=unit.round_doses)
    des = build_design(sub.obs, labels["label"])
    x = np.asarray(sub.X, dtype=float).T  # genes × samples
    genes = [str(g) for g in sub.var_names]
    limma = LimmaResource()
    direct_fn = ro.r(DIRECT_R)

    def direct():
        res = direct_fn(_r_matrix(x), _r_matrix(des.design.to_numpy(dtype=float)),
                        _r_matrix(des.contrasts.to_numpy(dtype=float)))
        out = dict(zip(res.names, res))
        shape = (x.shape[0], des.contrasts.shape[1])
        return {k: np.array(out[k], dtype=float, copy=True).reshape(shape, order="F") for k in ("t", "p")}

    project_full = lambda: run_de_partition(adata, DATASET, "group", limma)  # noqa: E731
    wrapper = lambda: fit_limma(x, genes, des.design, des.contrasts, normalized=True, stratum="bench")  # noqa: E731
    wrapper()  # warm-up, not timed: sources r_scripts/limma_de.R and loads limma/edgeR/statmod
    med, times, last = median_times({"run_de_partition": project_full, "fit_limma": wrapper,
                                     "direct": direct}, reps)
    d = last["direct"]
    w = last["fit_limma"]
    de, strata = last["run_de_partition"]
    # the wrapper drops nothing here (every probe varies), so rows and contrast columns align
    dt_wrapper = float(np.nanmax(np.abs(w.tables["t"] - d["t"]))) if w.tables["t"].shape == d["t"].shape else np.inf
    # the long table is sorted by contrast_id, then gene: align its rows on (treated, control label) and gene
    ct = des.contrast_table
    con_index = {(t, c): j for j, (t, c) in enumerate(zip(ct["treated_label"], ct["control_label"]))}
    gene_pos = {g: i for i, g in enumerate(genes)}
    rows_at = de["gene"].map(gene_pos).to_numpy()
    cols_at = np.array([con_index[(t, c)] for t, c in zip(de["treated_label"], de["control_label"])])
    dt_full = float(np.nanmax(np.abs(de["t"].to_numpy(dtype=float) - d["t"][rows_at, cols_at])))
    n_con = des.contrasts.shape[1]
    size = f"978 genes × {sub.n_obs} samples ({int(sub.obs['is_control'].sum())} DMSO), {n_con} contrasts"
    ok_w, ok_f = dt_wrapper < 1e-8, dt_full < 1e-8 and strata["status"].tolist() == ["ok"]
    base = "direct limma via rpy2 (lmFit, contrasts.fit, eBayes robust+trend, topTable×k)"
    return [
        row("de_fit", "fit_limma (rpy2 wrapper + limma_de.R) vs direct limma", size, project="fit_limma",
            project_s=med["fit_limma"], baseline=base, baseline_s=med["direct"], data="real (LINCS LJP005)",
            check=f"t equal (max |Δ| {dt_wrapper:.1e})" if ok_w else f"MISMATCH t (max |Δ| {dt_wrapper:.3g})",
            reps=reps, times={"fit_limma": times["fit_limma"], "direct": times["direct"]}, ok=ok_w,
            overhead=med["fit_limma"] / med["direct"]),
        row("de_fit", "run_de_partition (whole DE layer) vs direct limma", size, project="run_de_partition",
            project_s=med["run_de_partition"], baseline=base, baseline_s=med["direct"],
            data="real (LINCS LJP005)",
            check=f"t equal (max |Δ| {dt_full:.1e}), {len(de):,} DE rows" if ok_f
            else f"MISMATCH t (max |Δ| {dt_full:.3g})",
            reps=reps, times={"run_de_partition": times["run_de_partition"], "direct": times["direct"]}, ok=ok_f,
            overhead=med["run_de_partition"] / med["direct"]),
    ]
