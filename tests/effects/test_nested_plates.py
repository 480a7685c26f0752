"""Plates nested in time points, and a plate holding one condition only: aliased plate terms are
dropped as R's lmFit drops them, every contrast contrasts.fit returns is kept, and the ones whose
estimate carries an aliased plate effect are flagged `plate_confounded`; numbers equal lmFit +
contrasts.fit called directly on the rank-deficient design."""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cpb_assets.effects.de import run_de_partition
from cpb_assets.effects import strata
from cpb_assets.effects.strata import build_design, lmfit_design
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
  fit1 <- suppressWarnings(lmFit(x, design))  # warns: coefficients not estimable (the aliased plate)
  fit <- eBayes(contrasts.fit(fit1, cm), robust = TRUE, trend = TRUE)
  list(t = fit$t[rownames(x), treated, drop = FALSE], logfc = fit$coefficients[rownames(x), treated, drop = FALSE],
       contrasts = colnames(fit$coefficients), est = sum(is.na(fit1$coefficients[1, ])))
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


@pytest.fixture
def all_times(monkeypatch):
    """These designs need several time points; L1000 keeps only 24 h in the DE layer, so the time
    restriction is lifted here (as for a dataset that keeps every time)."""
    monkeypatch.setattr(strata, "de_times_h", lambda dataset: None)


def _labels(obs):
    return obs["perturbagen"] + "_" + obs["pert_time_h"].astype(int).astype(str) + "h"


def test_nested_plates_drop_one_plate_per_time_and_flag_nothing():
    a = nested_plate_data()
    des = build_design(a.obs, _labels(a.obs))
    reduced, aliased, confounded = lmfit_design(des)
    assert len(aliased) == 1 and not confounded.any()  # 6 plates, 2 time points: one aliased plate column
    assert reduced.contrasts.shape[1] == des.contrasts.shape[1] == 4  # 2 compounds × 2 times
    assert np.linalg.matrix_rank(reduced.design.to_numpy()) == reduced.design.shape[1]


def test_plate_holding_one_condition_is_flagged_not_dropped():
    a = nested_plate_data()
    obs = a.obs.copy()
    obs.loc[(obs["perturbagen"] == "SYN_b") & (obs["pert_time_h"] == 24), "plate"] = "SYN_24H_only_b"
    reduced, aliased, confounded = lmfit_design(build_design(obs, _labels(obs)))
    assert "SYN_24H_only_b" in aliased
    table = reduced.contrast_table
    assert table.loc[confounded, "treated_label"].tolist() == ["SYN_b_24h"]
    assert sorted(table["treated_label"]) == ["SYN_a_24h", "SYN_a_6h", "SYN_b_24h", "SYN_b_6h"]


def _direct(a, obs, treated, control):
    """R: model.matrix(~0 + cond + plate), lmFit, contrasts.fit, eBayes — written here, not the project's R."""
    import rpy2.robjects as ro

    dose = {"SYN_a": "1", "SYN_b": "10", "DMSO": ""}
    cond = [f"{p}_{dose[p]}uM_{int(t)}h" if p != "DMSO" else f"DMSO_{int(t)}h"
            for p, t in zip(obs["perturbagen"], obs["pert_time_h"])]
    x = np.asarray(a.X, dtype=float).T
    m = ro.r["matrix"](ro.FloatVector(x.ravel(order="F")), nrow=x.shape[0], ncol=x.shape[1])
    m = ro.r["rownames<-"](m, ro.StrVector(list(a.var_names)))
    out = ro.r(DIRECT)(m, ro.StrVector(cond), ro.StrVector(list(obs["plate"])), ro.StrVector(treated),
                       ro.StrVector(control))
    res = dict(zip(out.names, out))
    shape = (a.n_vars, len(treated))
    return {"t": np.array(res["t"], dtype=float, copy=True).reshape(shape, order="F"),
            "logFC": np.array(res["logfc"], dtype=float, copy=True).reshape(shape, order="F"),
            "contrasts": list(res["contrasts"]), "est": int(res["est"][0])}


TREATED = ["SYN_a_1uM_6h", "SYN_b_10uM_6h", "SYN_a_1uM_24h", "SYN_b_10uM_24h"]
CONTROL = ["DMSO_6h", "DMSO_6h", "DMSO_24h", "DMSO_24h"]


@pytest.mark.parametrize("case", ["nested", "one_condition_plate"])
def test_matches_lmfit_on_the_rank_deficient_design(all_times, case):
    a = nested_plate_data()
    if case == "one_condition_plate":  # SYN_b at 24 h alone on a plate of its own
        obs = a.obs.copy()
        obs.loc[(obs["perturbagen"] == "SYN_b") & (obs["pert_time_h"] == 24), "plate"] = "SYN_24H_only_b"
        a.obs = obs
    de, st = run_de_partition(a, "l1000_phase1", "group", LimmaResource())
    assert st["status"].tolist() == ["ok"] and "aliased plate" in st["reason"].item()
    r = _direct(a, a.obs, TREATED, CONTROL)
    # R too finds non-estimable plate coefficients: one per time when nested, plus the lone plate
    assert r["est"] == (1 if case == "nested" else 2)
    assert sorted(r["contrasts"]) == sorted(de["treated_label"].unique())  # the same contrast set
    for col in ("t", "logFC"):
        ours = de.pivot(index="gene", columns="treated_label", values=col).loc[list(a.var_names), TREATED]
        assert np.max(np.abs(ours.to_numpy() - r[col])) < 1e-10, col
    flagged = de.drop_duplicates("treated_label").set_index("treated_label")["plate_confounded"]
    want = {t: case == "one_condition_plate" and t == "SYN_b_10uM_24h" for t in TREATED}
    assert flagged.to_dict() == want
