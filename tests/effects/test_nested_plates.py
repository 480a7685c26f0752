"""Plates nested in time points (as L1000 plates are): aliased plate terms are dropped and every
within-time contrast stays estimable, exactly as R's lmFit on the rank-deficient design."""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cpb_assets.effects.de import run_de_partition
from cpb_assets.effects.strata import Design, build_design, estimable_design
from cpb_resources.limma import LimmaResource

pytestmark = pytest.mark.r

DIRECT = """
function(x, cond, plate, treated, control) {
  suppressPackageStartupMessages(library(limma))
  f <- factor(cond, levels = sort(unique(cond), method = "radix"))
  p <- factor(plate, levels = sort(unique(plate), method = "radix"))
  design <- model.matrix(~0 + f + p)
  colnames(design) <- c(levels(f), paste0("plate_", levels(p)[-1]))
  cm <- matrix(0, nrow = ncol(design), ncol = length(treated), dimnames = list(colnames(design), treated))
  for (j in seq_along(treated)) { cm[treated[j], j] <- 1; cm[control[j], j] <- -1 }
  fit <- suppressWarnings(lmFit(x, design))  # warns: coefficients not estimable (the aliased plate)
  fit <- eBayes(contrasts.fit(fit, cm), robust = TRUE, trend = TRUE)
  list(t = fit$t[rownames(x), treated], est = sum(is.na(lmFit(x, design)$coefficients[1, ])))
}
"""


def nested_plate_data(seed=3, n_genes=200):
    """SYNTHETIC: 2 time points × 3 plates each; DMSO and 2 compounds on every plate, 2 wells each."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in (6.0, 24.0):
        for p in range(3):
            plate = f"SYN_{int(t)}H_X{p + 1}"
            for pert, dose in (("DMSO", 0.0), ("SYN_a", 1.0), ("SYN_b", 10.0)):
                for w in range(2):
                    rows.append({"plate": plate, "well": f"{pert}{w}", "cell_type": "CVCL_0023", "perturbagen": pert,
                                 "is_control": pert == "DMSO", "pert_dose_uM": dose, "pert_time_h": t,
                                 "pubchem_cid": None, "psbulk_cells": -666})
    obs = pd.DataFrame(rows)
    obs.index = (obs["plate"] + "_" + obs["well"]).to_numpy()
    plate_shift = {p: rng.normal(0, 0.5, n_genes) for p in obs["plate"].unique()}
    effect = {"SYN_a": rng.normal(0, 1, n_genes) * (rng.random(n_genes) < 0.1), "DMSO": 0.0}
    effect["SYN_b"] = 2 * effect["SYN_a"]
    X = np.vstack([8 + effect[r.perturbagen] + plate_shift[r.plate] + rng.normal(0, 0.3, n_genes)
                   for r in obs.itertuples()])
    return ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"G{i:04d}" for i in range(n_genes)]))


def test_estimable_design_drops_one_plate_per_time_and_keeps_contrasts():
    a = nested_plate_data()
    labels = a.obs["perturbagen"] + "_" + a.obs["pert_time_h"].astype(int).astype(str) + "h"
    des = build_design(a.obs, labels)
    reduced, aliased, lost = estimable_design(des)
    assert len(aliased) == 1 and lost == []  # 6 plates, 2 time points: one aliased plate column
    assert reduced.contrasts.shape[1] == des.contrasts.shape[1] == 4  # 2 compounds × 2 times
    assert np.linalg.matrix_rank(reduced.design.to_numpy()) == reduced.design.shape[1]


def test_plate_holding_one_condition_makes_it_non_estimable():
    a = nested_plate_data()
    obs = a.obs.copy()
    obs.loc[(obs["perturbagen"] == "SYN_b") & (obs["pert_time_h"] == 24), "plate"] = "SYN_24H_only_b"
    labels = obs["perturbagen"] + "_" + obs["pert_time_h"].astype(int).astype(str) + "h"
    reduced, aliased, lost = estimable_design(build_design(obs, labels))
    assert lost == ["SYN_b_24h − DMSO_24h"]
    assert "SYN_24H_only_b" in aliased
    assert set(reduced.contrast_table["treated_label"]) == {"SYN_a_6h", "SYN_b_6h", "SYN_a_24h"}


def test_matches_lmfit_on_the_rank_deficient_design():
    import rpy2.robjects as ro

    a = nested_plate_data()
    de, st = run_de_partition(a, "l1000_phase1", "group", LimmaResource())
    assert st["status"].tolist() == ["ok"] and "aliased plate" in st["reason"].item()
    obs = a.obs
    dose = {"SYN_a": "1", "SYN_b": "10", "DMSO": ""}
    cond = [f"{p}_{dose[p]}uM_{int(t)}h" if p != "DMSO" else f"DMSO_{int(t)}h"
            for p, t in zip(obs["perturbagen"], obs["pert_time_h"])]
    treated = ["SYN_a_1uM_6h", "SYN_b_10uM_6h", "SYN_a_1uM_24h", "SYN_b_10uM_24h"]
    control = ["DMSO_6h", "DMSO_6h", "DMSO_24h", "DMSO_24h"]
    x = np.asarray(a.X, dtype=float).T
    m = ro.r["matrix"](ro.FloatVector(x.ravel(order="F")), nrow=x.shape[0], ncol=x.shape[1])
    m = ro.r["rownames<-"](m, ro.StrVector(list(a.var_names)))
    out = ro.r(DIRECT)(m, ro.StrVector(cond), ro.StrVector(list(obs["plate"])), ro.StrVector(treated),
                       ro.StrVector(control))
    res = dict(zip(out.names, out))
    assert int(res["est"][0]) == 1  # R too finds exactly one non-estimable plate coefficient
    t_r = np.array(res["t"], dtype=float, copy=True).reshape((a.n_vars, 4), order="F")
    ours = de.pivot(index="gene", columns="treated_label", values="t").loc[list(a.var_names), treated]
    assert np.max(np.abs(ours.to_numpy() - t_r)) < 1e-10
