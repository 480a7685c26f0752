"""The fast DE engine (cpb_resources/fast_limma.py) against R limma/edgeR.

Oracle: the R route itself (``cpb_resources.limma.fit_limma`` running
``r_scripts/limma_de.R``: filterByExpr, TMM, voom, lmFit, contrasts.fit,
eBayes(robust = TRUE), topTable columns) on the same inputs, plus R's own
``lowess``, ``calcNormFactors``, ``filterByExpr`` and ``uniroot`` for the
pieces. Parity: |Δ| ≤ 1e-8 on every topTable column and identical DEG calls
at adjusted P < 0.05. Matrices are small (R calls well under a second).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cpb_resources import fast_limma as fl
from cpb_resources.limma import LimmaFitError, NothingToFit, fit_limma, r_objects

pytestmark = pytest.mark.r

TOL = 1e-8


def design_of(cond, plate=None):
    """``~0 + cond (+ plate)`` with generated names, levels in order of appearance."""
    cond = np.asarray(cond)
    levels = list(dict.fromkeys(cond.tolist()))
    X = pd.DataFrame({f"c{i + 1:04d}": (cond == lv).astype(float) for i, lv in enumerate(levels)})
    if plate is not None:
        plate = np.asarray(plate)
        for j, p in enumerate(list(dict.fromkeys(plate.tolist()))[1:], start=2):
            X[f"plate{j:02d}"] = (plate == p).astype(float)
    return X, levels


def contrasts_of(X, levels, control):
    """Every level minus `control`."""
    ci = levels.index(control)
    cols = {}
    for i in range(len(levels)):
        if i != ci:
            c = np.zeros(X.shape[1])
            c[i], c[ci] = 1.0, -1.0
            cols[f"k{i:04d}"] = c
    return pd.DataFrame(cols, index=X.columns)


def assert_parity(x, X, C, normalized, tol=TOL):
    genes = [f"G{i}" for i in range(x.shape[0])]
    r = fit_limma(x, genes, X, C, normalized, "parity")
    f = fl.fit_fast(x, genes, X, C, normalized, "parity")
    assert f.genes == r.genes and f.contrasts == r.contrasts and f.genes_kept == r.genes_kept
    for k in fl.TABLE_COLUMNS:
        a, b = r.tables[k], f.tables[k]
        assert a.shape == b.shape, k
        assert np.array_equal(np.isnan(a), np.isnan(b)), k
        diff = np.nanmax(np.abs(a - b))
        assert diff <= tol, f"{k}: max |Δ| {diff:.3g}"
    np.testing.assert_allclose(f.sigma, r.sigma, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(f.s2_prior, r.s2_prior, rtol=1e-10)
    np.testing.assert_allclose(f.df_prior, r.df_prior, rtol=1e-8)
    np.testing.assert_array_equal(f.tables["adj.P.Val"] < 0.05, r.tables["adj.P.Val"] < 0.05)
    return r, f


def normalized_values(rng, n_genes, n_samples):
    """SYNTHETIC log2 expression: gene means and gene-specific noise (so the trend matters)."""
    mean = rng.normal(8, 1.5, (n_genes, 1))
    sd = 0.15 + 0.1 * np.exp(-(mean - 6) / 2) * rng.gamma(3, 1 / 3, (n_genes, 1))
    return mean + rng.normal(0, 1, (n_genes, n_samples)) * sd


def counts_of(rng, n_genes, n_samples, effect_rows=(), effect_cols=()):
    """SYNTHETIC negative-binomial counts with a few planted changes."""
    mu = rng.gamma(0.6, 80, (n_genes, 1)) * rng.uniform(0.6, 1.6, (1, n_samples))
    mu[np.ix_(effect_rows, effect_cols)] *= 4
    return rng.negative_binomial(8, 8 / (8 + mu)).astype(float)


# --------------------------------------------------------------------------- pieces


def test_lowess_matches_r_with_ties_and_delta():
    ro = r_objects()
    rng = np.random.default_rng(3)
    x = np.round(rng.normal(0, 2, 400), 1)  # many ties
    y = np.sin(x) + rng.standard_t(2, 400) * 0.3  # outliers for the robustness steps
    for f in (0.5, 0.4, 0.1):
        out = ro.r["lowess"](ro.FloatVector(x), ro.FloatVector(y), f=f)
        rx, ry = np.array(out[0], float), np.array(out[1], float)
        px, py = fl.lowess(x, y, f=f, iters=3)
        np.testing.assert_array_equal(px, rx)
        np.testing.assert_allclose(py, ry, rtol=0, atol=1e-12)


def test_tmm_and_filter_by_expr_match_edger():
    ro = r_objects()
    rng = np.random.default_rng(5)
    x = counts_of(rng, 200, 12)
    x[:20] = rng.poisson(0.3, (20, 12))  # lowly expressed: some filtered
    X, _ = design_of(["a"] * 4 + ["b"] * 3 + ["c"] * 5)
    m = ro.r["matrix"](ro.FloatVector(x.ravel(order="F")), nrow=x.shape[0])
    d = ro.r["matrix"](ro.FloatVector(X.to_numpy().ravel(order="F")), nrow=X.shape[0])
    ro.r("suppressPackageStartupMessages(library(edgeR))")
    keep_r = np.array(ro.r("function(x, d) filterByExpr(DGEList(x), d)")(m, d), bool)
    np.testing.assert_array_equal(fl.filter_by_expr(x, X.to_numpy()), keep_r)
    assert (~keep_r[:20]).all() and 100 < keep_r.sum() < 200  # both kept and filtered genes
    nf_r = np.array(ro.r("function(x) calcNormFactors(DGEList(x))$samples$norm.factors")(m), float)
    np.testing.assert_allclose(fl.calc_norm_factors_tmm(x, x.sum(axis=0)), nf_r, rtol=1e-13)


def test_zeroin_matches_uniroot():
    ro = r_objects()
    r_root = ro.r("uniroot(function(x) log(x) - 0.3 + x^3, c(0.1, 3), tol = 1e-8)$root")[0]
    f = lambda v: np.log(v) - 0.3 + v ** 3  # noqa: E731
    assert fl.zeroin(f, 0.1, 3.0, f(0.1), f(3.0), 1e-8) == pytest.approx(r_root, abs=1e-15)


def test_estimable_columns_follow_r_qr():
    ro = r_objects()
    X, _ = design_of(["a", "a", "b", "b", "c", "c"], plate=["p1", "p1", "p2", "p2", "p3", "p3"])
    d = ro.r["matrix"](ro.FloatVector(X.to_numpy().ravel(order="F")), nrow=X.shape[0])
    qr = ro.r["qr"](d)
    rank = int(qr.rx2("rank")[0])
    kept_r = sorted(int(i) - 1 for i in qr.rx2("pivot")[:rank])
    assert fl.estimable_columns(X.to_numpy()).nonzero()[0].tolist() == kept_r == [0, 1, 2]


def test_bh_matches_p_adjust_with_ties():
    ro = r_objects()
    p = np.array([0.01, 0.04, 0.04, 0.2, 0.001, 0.5, 0.04, 1.0])
    np.testing.assert_array_equal(fl.p_adjust_bh(p), np.array(ro.r["p.adjust"](ro.FloatVector(p), "BH")))


# --------------------------------------------------------------------------- normalized route (L1000)


def test_real_ljp005_plate(l1000_plate):
    a = l1000_plate
    obs = a.obs
    cond = np.where(obs["is_control"], "DMSO", obs["perturbagen"].astype(str) + "_"
                    + obs["pert_dose_uM"].map("{:.15g}".format))
    X, levels = design_of(cond)
    C = contrasts_of(X, levels, "DMSO")
    x = np.asarray(a.X, dtype=float).T
    r, _ = assert_parity(x, X, C, normalized=True)
    assert len(r.contrasts) == 328 and (r.tables["adj.P.Val"] < 0.05).sum() > 0


def test_single_plate_unequal_replicates_zero_variance_genes():
    rng = np.random.default_rng(11)
    cond = ["D"] * 9 + sum(([f"T{i}"] * (1 + i % 4) for i in range(25)), [])
    X, levels = design_of(cond)
    x = normalized_values(rng, 250, len(cond))
    x[:8, 9:10] += 2.5  # planted changes in T0
    x[20] = 7.0  # constant gene
    x[21] = np.where(np.asarray(cond) == "D", 6.0, 6.5)  # no variance within any condition
    assert_parity(x, X, contrasts_of(X, levels, "D"), normalized=True)


def test_plates_and_aliased_plates_normalized():
    rng = np.random.default_rng(12)
    cond = ["D"] * 12 + sum(([f"T{i}"] * 3 for i in range(12)), []) + ["L"] * 3
    plate = [f"p{i % 4}" for i in range(len(cond) - 3)] + ["p9"] * 3  # p9 holds only condition L: aliased
    X, levels = design_of(cond, plate)
    assert not fl.estimable_columns(X.to_numpy()).all()
    x = normalized_values(rng, 200, len(cond)) + rng.normal(0, 0.2, (1, 4))[:, [int(p[1]) % 4 for p in plate]]
    assert_parity(x, X, contrasts_of(X, levels, "D"), normalized=True)


# --------------------------------------------------------------------------- count route (voom)


def test_count_route_with_plates_and_filtered_genes():
    rng = np.random.default_rng(21)
    cond = ["D"] * 10 + sum(([f"T{i}"] * (2 + i % 3) for i in range(12)), [])
    cond = cond[:40]
    plate = [f"p{i % 3}" for i in range(len(cond))]
    X, levels = design_of(cond, plate)
    x = counts_of(rng, 300, len(cond), effect_rows=range(10), effect_cols=range(10, 12))
    x[-15:] = rng.poisson(0.2, (15, len(cond)))  # filtered out by filterByExpr
    r, f = assert_parity(x, X, contrasts_of(X, levels, "D"), normalized=False)
    assert 200 <= r.genes_kept <= 285  # the 15 near-empty genes and some others filtered


def test_count_route_single_plate_and_aliased_plate():
    rng = np.random.default_rng(22)
    cond = ["D"] * 8 + sum(([f"T{i}"] * 3 for i in range(8)), []) + ["L"] * 2
    plate = ["p1", "p2"] * 16 + ["p3"] * 2  # p3 holds only L: its column is aliased
    x = counts_of(rng, 300, len(cond), effect_rows=range(12), effect_cols=range(8, 11))
    X1, lv1 = design_of(cond)
    assert_parity(x, X1, contrasts_of(X1, lv1, "D"), normalized=False)
    X2, lv2 = design_of(cond, plate)
    assert_parity(x, X2, contrasts_of(X2, lv2, "D"), normalized=False)


def test_sep_design_one_coefficient_per_well():
    rng = np.random.default_rng(23)
    cond = ["D"] * 10 + [f"W{i}" for i in range(30)]  # sep mode: every treated well its own condition
    plate = [f"p{i % 3}" for i in range(len(cond))]
    X, levels = design_of(cond, plate)
    x = counts_of(rng, 300, len(cond), effect_rows=range(10), effect_cols=range(10, 13))
    assert_parity(x, X, contrasts_of(X, levels, "D"), normalized=False)


def test_nothing_to_fit_and_no_residual_df():
    rng = np.random.default_rng(24)
    X, levels = design_of(["D", "D", "T", "T"])
    with pytest.raises(NothingToFit):
        fl.fit_fast(np.zeros((5, 4)), list("abcde"), X, contrasts_of(X, levels, "D"), False, "s1")
    X, levels = design_of(["D", "T"])
    with pytest.raises(LimmaFitError, match="stratum 's2'"):
        fl.fit_fast(normalized_values(rng, 10, 2), list("abcdefghij"), X, contrasts_of(X, levels, "D"), True, "s2")


def test_t_quantile_in_the_deep_log_tail_matches_r():
    ro = r_objects()
    logp = np.array([-1.0, -50.0, -400.0, -800.0, -2000.0])
    for df in (4.0, 30.0, 250.0):
        r = np.array(ro.r["qt"](ro.FloatVector(logp), df, lower_tail=False, log_p=True))
        np.testing.assert_allclose(fl._qt_log_upper(logp, df), r, rtol=1e-8)  # R: Newton to ~1e-9
