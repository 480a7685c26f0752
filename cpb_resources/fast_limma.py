"""A second DE engine: limma/edgeR's METHODS §3 fit in numpy/scipy (issue 15).

The R route (``r_scripts/limma_de.R`` through :mod:`cpb_resources.limma`)
is the reference. This module computes the same quantities from the
mathematics of the methods, not from R's code, and is held to R by parity
tests (``tests/effects/test_fast_engine.py``, |Δ| ≤ 1e-8):

- edgeR ``filterByExpr`` (defaults), ``calcNormFactors`` (TMM), limma
  ``voom`` (R's C ``lowess`` reproduced: f = 0.5, 3 robustness iterations,
  delta = 1 % of the x range; ``approxfun(rule = 2)`` with tied x averaged);
- ``lmFit`` for designs whose leading columns are disjoint 0/1 indicators
  (``~0 + cond (+ plate)``): the indicator block is eliminated in closed form
  (Schur complement), so a weighted fit costs genes × samples × q² for the q
  remaining (plate) columns, not genes × coefficients³. Columns that are
  linear combinations of earlier ones (R's pivoting QR, tolerance 1e-7) are
  dropped, as ``lmFit`` reports them NA;
- ``contrasts.fit`` (exact for unweighted fits; limma's approximation
  ``c' D_g C D_g c`` with the unweighted coefficient correlation C for
  weighted fits);
- ``eBayes(robust = TRUE, trend = …)``: ``fitFDist`` (natural-spline trend
  of the log variances on AveExpr), ``fitFDistRobustly`` (Winsorised
  Fisher-z moments, 128-point Gauss–Legendre, R's Brent ``zeroin``), the
  moderated t, P, B (``tmixture``) and the topTable columns (BH, confint).

Pure logic: no dagster, no R. Returns :class:`cpb_resources.limma.LimmaResult`,
the R route's type, so the two engines are interchangeable.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import special, stats
from scipy.interpolate import BSpline

from cpb_resources.limma import TABLE_COLUMNS, LimmaFitError, LimmaResult, NothingToFit, checked_fit_inputs

QR_TOL = 1e-7  # tolerance of R's qr() (LINPACK dqrdc2), which lm.fit uses
DBL_EPS = np.finfo(float).eps


# --------------------------------------------------------------------------- R helpers

def r_quantile(x: np.ndarray, probs) -> np.ndarray:
    """R's default (type 7) quantile."""
    return np.quantile(np.asarray(x, float), probs, method="linear")


def trimmed_mean(x: np.ndarray, trim: float) -> float:
    """R's ``mean(x, trim = trim)``: drop floor(n·trim) values at each end."""
    x = np.sort(np.asarray(x, float))
    n = len(x)
    lo = int(math.floor(n * trim))
    return float(np.mean(x[lo:n - lo]))


def p_adjust_bh(p: np.ndarray) -> np.ndarray:
    """``p.adjust(p, "BH")`` along axis 0 (each column separately)."""
    p = np.asarray(p, float)
    one = p.ndim == 1
    p2 = p[:, None] if one else p
    n = p2.shape[0]
    out = np.empty_like(p2)
    i = np.arange(n, 0, -1, dtype=float)
    for j in range(p2.shape[1]):
        o = np.argsort(-p2[:, j], kind="stable")
        q = np.minimum.accumulate(n / i * p2[o, j])
        res = np.empty(n)
        res[o] = np.minimum(1.0, q)
        out[:, j] = res
    return out[:, 0] if one else out


def zeroin(f, ax: float, bx: float, fa: float, fb: float, tol: float, maxit: int = 1000) -> float:
    """Brent's root finder as R's ``uniroot`` runs it (same steps, same stopping rule)."""
    a, b, c = ax, bx, ax
    fc = fa
    if fa == 0.0:
        return a
    if fb == 0.0:
        return b
    for _ in range(maxit + 1):
        prev_step = b - a
        if abs(fc) < abs(fb):
            a, b, c = b, c, b
            fa, fb, fc = fb, fc, fb
        tol_act = 2 * DBL_EPS * abs(b) + tol / 2
        new_step = (c - b) / 2
        if abs(new_step) <= tol_act or fb == 0.0:
            return b
        if abs(prev_step) >= tol_act and abs(fa) > abs(fb):
            cb = c - b
            if a == c:
                t1 = fb / fa
                p = cb * t1
                q = 1.0 - t1
            else:
                q = fa / fc
                t1 = fb / fc
                t2 = fb / fa
                p = t2 * (cb * q * (q - t1) - (b - a) * (t1 - 1.0))
                q = (q - 1.0) * (t1 - 1.0) * (t2 - 1.0)
            if p > 0:
                q = -q
            else:
                p = -p
            if p < (0.75 * cb * q - abs(tol_act * q) / 2) and p < abs(prev_step * q / 2):
                new_step = p / q
        if abs(new_step) < tol_act:
            new_step = tol_act if new_step > 0 else -tol_act
        a, fa = b, fb
        b += new_step
        fb = f(b)
        if (fb > 0 and fc > 0) or (fb < 0 and fc < 0):
            c, fc = a, fa
    return b


def lowess(x: np.ndarray, y: np.ndarray, f: float = 2 / 3, iters: int = 3,
           delta: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """R's ``lowess`` (Cleveland's algorithm as R's C ``clowess`` runs it).

    Returns the x values sorted (stable) and the fitted values at them.
    Local linear fits with tricube weights over the ``ns = floor(f·n)``
    nearest points, points within `delta` of the last fit interpolated,
    `iters` bisquare robustness iterations (cut at 6 MAD).
    """
    o = np.argsort(x, kind="stable")
    x = np.asarray(x, float)[o]
    y = np.asarray(y, float)[o]
    n = len(x)
    if delta is None:
        delta = 0.01 * (x[-1] - x[0])
    if n < 2:
        return x, y.copy()
    ns = max(2, min(n, int(f * n + 1e-7)))
    ys = np.zeros(n)
    rw = np.ones(n)
    xrange = x[-1] - x[0]
    for it in range(1, iters + 2):
        nleft, nright, last, i = 0, ns - 1, -1, 0
        while True:
            if nright < n - 1:
                if x[i] - x[nleft] > x[nright + 1] - x[i]:
                    nleft += 1
                    nright += 1
                    continue
            # local fit at x[i]
            xs = x[i]
            h = max(xs - x[nleft], x[nright] - xs)
            h9, h1 = 0.999 * h, 0.001 * h
            # window: from nleft to the last point within h9 (ties on the right included)
            j_end = max(nleft, int(np.searchsorted(x, xs + h9, side="right")))
            while j_end < n and abs(x[j_end] - xs) <= h9:  # the exact test of the C loop
                j_end += 1
            while j_end > nleft and x[j_end - 1] > xs and abs(x[j_end - 1] - xs) > h9:
                j_end -= 1
            xw = x[nleft:j_end]
            r = np.abs(xw - xs)
            w = np.where(r <= h1, 1.0, (1.0 - (r / h) ** 3) ** 3) if h > 0 else np.ones_like(r)
            w = np.where(r <= h9, w, 0.0)
            if it > 1:
                w = w * rw[nleft:j_end]
            a = w.sum()
            if a <= 0:
                ys[i] = y[i]
            else:
                w = w / a
                if h > 0:
                    xm = np.sum(w * xw)
                    b = xs - xm
                    cc = np.sum(w * (xw - xm) ** 2)
                    if math.sqrt(cc) > 0.001 * xrange:
                        w = w * (b / cc * (xw - xm) + 1.0)
                ys[i] = np.sum(w * y[nleft:j_end])
            if last < i - 1:
                denom = x[i] - x[last]
                jj = np.arange(last + 1, i)
                alpha = (x[jj] - x[last]) / denom
                ys[jj] = alpha * ys[i] + (1 - alpha) * ys[last]
            last = i
            cut = x[last] + delta
            i = last + 1
            while i < n:
                if x[i] > cut:
                    break
                if x[i] == x[last]:
                    ys[i] = ys[last]
                    last = i
                i += 1
            i = max(last + 1, i - 1)
            if last >= n - 1:
                break
        res = y - ys
        sc = np.sum(np.abs(res)) / n
        if it > iters:
            break
        ar = np.sort(np.abs(res))
        m1 = n // 2
        cmad = 3.0 * (ar[m1] + ar[n - m1 - 1]) if n % 2 == 0 else 6.0 * ar[m1]
        if cmad < 1e-7 * sc:
            break
        c9, c1 = 0.999 * cmad, 0.001 * cmad
        r = np.abs(res)
        rw = np.where(r <= c1, 1.0, np.where(r <= c9, (1.0 - (r / cmad) ** 2) ** 2, 0.0))
    return x, ys


def approx_rule2(xk: np.ndarray, yk: np.ndarray, xout: np.ndarray) -> np.ndarray:
    """``approxfun(xk, yk, rule = 2, ties = mean)`` evaluated at `xout` (xk sorted)."""
    ux, inv = np.unique(xk, return_inverse=True)
    uy = np.bincount(inv, weights=yk) / np.bincount(inv)
    return np.interp(xout, ux, uy)


# F distribution with df2 possibly infinite (then chi²(df1)/df1)
def _qf(p, df1, df2):
    if np.isinf(df2):
        return stats.chi2.ppf(p, df1) / df1
    return stats.f.ppf(p, df1, df2)


def _df(x, df1, df2):
    if np.isinf(df2):
        return stats.chi2.pdf(x * df1, df1) * df1
    return stats.f.pdf(x, df1, df2)


def _log_t_sf(u: np.ndarray, df: float) -> np.ndarray:
    """log P(T > t) at t = exp(u), for large t, without underflow or overflow.

    P(T > t) = I_x(df/2, 1/2) / 2 with x = df/(df + t²), and
    I_x(a, b) = x^a (1−x)^b / (a B(a, b)) · Σ_k [(a+b)_k / (a+1)_k] x^k,
    evaluated in logs of t.
    """
    a, b = df / 2, 0.5
    u = np.asarray(u, float)
    lr = math.log(df) - 2 * u  # log(df / t²)
    log1m = -np.logaddexp(0.0, lr)  # log(t² / (df + t²)) = log(1 − x)
    logx = lr + log1m  # log(df / (df + t²))
    x = np.exp(logx)
    total, term = np.ones_like(x), np.ones_like(x)
    for k in range(100000):
        term = term * (a + b + k) / (a + 1 + k) * x
        total = total + term
        if np.all(term <= 1e-17 * total):
            break
    return math.log(0.5) + a * logx + b * log1m - math.log(a) - special.betaln(a, b) + np.log(total)


def _qt_log_upper(logp: np.ndarray, df: float) -> np.ndarray:
    """``qt(logp, df, lower.tail = FALSE, log.p = TRUE)``, also where exp(logp) underflows."""
    logp = np.asarray(logp, float)
    out = stats.t.isf(np.exp(logp), df)
    out[logp == -np.inf] = np.inf  # P underflowed entirely: |t| beyond any finite quantile
    deep = (~np.isfinite(out) | (logp < -700)) & (logp > -np.inf)
    if np.any(deep):  # bisection on log t of the series tail (monotone)
        lo, hi = np.zeros(deep.sum()), np.full(deep.sum(), 700.0)
        target = logp[deep]
        for _ in range(90):
            mid = (lo + hi) / 2
            above = _log_t_sf(mid, df) > target
            lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
        out[deep] = np.exp((lo + hi) / 2)
    return out


# --------------------------------------------------------------------------- design

def _leading_indicators(x: np.ndarray) -> int:
    """How many leading columns are non-zero 0/1 indicators of disjoint sample sets."""
    covered = np.zeros(x.shape[0], bool)
    for j in range(x.shape[1]):
        col = x[:, j]
        on = col == 1
        if not np.all(on | (col == 0)) or not on.any() or np.any(covered & on):
            return j
        covered |= on
    return x.shape[1]


def estimable_columns(design: np.ndarray, tol: float = QR_TOL) -> np.ndarray:
    """Boolean mask of the columns R's pivoting QR keeps (the rest are NA in ``lmFit``).

    A column is aliased when the norm of its part orthogonal to the kept
    columns before it is below `tol` times its own norm (a zero column is
    always aliased), the rule of LINPACK ``dqrdc2`` used by ``lm.fit``.
    Leading disjoint indicators are independent by construction; projecting a
    later column on them is subtracting its group means, so only the
    remaining (plate) columns need Gram–Schmidt.
    """
    x = np.asarray(design, float)
    n, p = x.shape
    m = _leading_indicators(x)
    keep = np.zeros(p, bool)
    keep[:m] = True
    group = np.full(n, -1)
    for j in range(m):
        group[x[:, j] == 1] = j
    ing = group >= 0
    cnt = np.bincount(group[ing], minlength=m)
    basis = np.empty((n, p - m))
    nb = 0
    for j in range(m, p):
        col = x[:, j]
        norm = np.linalg.norm(col)
        if norm == 0:
            continue
        r = col.copy()
        if m:
            r[ing] -= (np.bincount(group[ing], weights=col[ing], minlength=m) / cnt)[group[ing]]
        B = basis[:, :nb]
        for _ in range(2):  # classical Gram–Schmidt, repeated once for stability
            r -= B @ (B.T @ r)
        rn = np.linalg.norm(r)
        if rn >= tol * norm:
            keep[j] = True
            basis[:, nb] = r / rn
            nb += 1
    return keep


class _Design:
    """A design split as [A | P]: A disjoint 0/1 indicator columns, P the rest.

    Attributes
    ----------
    kept
        Indices (into the full design) of the estimable columns, in order.
    ind, dense
        Positions within `kept` of indicator and remaining columns.
    group
        Per sample, the indicator column (position in `ind`) it belongs to, -1 if none.
    """

    def __init__(self, design: np.ndarray):
        x = np.asarray(design, float)
        self.n, self.p_full = x.shape
        self.kept = np.flatnonzero(estimable_columns(x))
        xk = x[:, self.kept]
        self.K = _leading_indicators(xk)
        self.ind = np.arange(self.K)
        self.dense = np.arange(self.K, xk.shape[1])
        self.q = len(self.dense)
        self.group = np.full(self.n, -1)
        for k in range(self.K):
            self.group[xk[:, k] == 1] = k
        covered = self.group >= 0
        self.A = sp.csr_matrix((np.ones(int(covered.sum())), (np.flatnonzero(covered), self.group[covered])),
                               shape=(self.n, self.K))
        # samples ordered by indicator, for group sums by np.add.reduceat
        self.perm = np.argsort(np.where(covered, self.group, self.K), kind="stable")[: int(covered.sum())]
        self.starts = np.searchsorted(self.group[self.perm], np.arange(self.K))
        self.sorted = bool(covered.all() and np.all(np.diff(self.group) >= 0))
        self.P = xk[:, self.dense]

    def group_sums(self, m: np.ndarray) -> np.ndarray:
        """(rows × K) sums of the columns (samples) of `m` within each indicator."""
        if self.K == 0:
            return np.zeros((m.shape[0], 0))
        if self.sorted:  # samples already grouped: no permuted copy
            return np.add.reduceat(m, self.starts, axis=1)
        return np.add.reduceat(m[:, self.perm], self.starts, axis=1)

    def cov_unscaled(self) -> np.ndarray:
        """(X'X)⁻¹ over the kept columns (the unweighted ``cov.coefficients``).

        Block inverse: with n_k the indicator counts, B = P'A diag(1/n),
        S = P'P − B A'P, the blocks are diag(1/n) + B'S⁻¹B, −B'S⁻¹ and S⁻¹.
        """
        cnt = np.bincount(self.group[self.group >= 0], minlength=self.K).astype(float)
        if not self.q:
            return np.diag(1.0 / cnt)
        PA = self.group_sums(self.P.T)  # q × K
        b = PA / cnt
        Sinv = np.linalg.inv(self.P.T @ self.P - b @ PA.T)
        bS = b.T @ Sinv  # K × q
        AA = bS @ b
        AA[np.diag_indices(self.K)] += 1.0 / cnt
        return np.block([[AA, -bS], [-bS.T, Sinv]])


# --------------------------------------------------------------------------- lmFit

def lm_fit(y: np.ndarray, design: np.ndarray, weights: np.ndarray | None = None) -> dict:
    """``lmFit(y, design, weights)`` for an indicator-led design.

    Parameters
    ----------
    y
        (genes × samples) log-expression.
    design
        (samples × coefficients).
    weights
        (genes × samples) precision weights (voom), or None.

    Returns
    -------
    dict with ``coefficients`` and ``stdev_unscaled`` (genes × all
    coefficients, NaN for aliased columns), ``sigma``, ``df_residual``,
    ``cov_unscaled`` ((X'X)⁻¹ over the kept columns), ``kept``, ``Amean``.
    """
    y = np.asarray(y, float)
    G, n = y.shape
    d = _Design(design)
    K, q = d.K, d.q
    rank = K + q
    df_res = n - rank
    A = d.A
    P = d.P
    if weights is None:
        cnt = np.asarray(A.sum(axis=0)).ravel()
        AY = d.group_sums(y).T  # K × G
        if q:
            V = d.cov_unscaled()
            PY = P.T @ y.T  # q × G
            PA = (A.T @ P).T  # q × K
            b = PA / cnt
            S = P.T @ P - b @ PA.T
            Sinv = np.linalg.inv(S)
            bP = Sinv @ (PY - b @ AY)
            bA = (AY - PA.T @ bP) / cnt[:, None]
            fitted = (A @ bA).T + (P @ bP).T
        else:
            V = np.diag(1.0 / cnt)
            bA = AY / cnt[:, None]
            bP = np.zeros((0, G))
            fitted = (A @ bA).T
        resid = y - fitted
        rss = np.einsum("gs,gs->g", resid, resid)
        su_kept = np.broadcast_to(np.sqrt(np.diag(V)), (G, rank)).copy()
    else:
        # samples reordered by indicator once (the fit does not depend on their order),
        # so every group sum below is a contiguous reduceat
        order = np.argsort(np.where(d.group >= 0, d.group, d.K), kind="stable")
        d = _Design(np.asarray(design, float)[order])
        y = y[:, order]
        w = np.asarray(weights, float)[:, order]
        # genes in chunks: the per-gene blocks P'W_gA are q × K each
        step = max(1, int(2e7 // max(1, q * K)))
        bA, bP = np.empty((K, G)), np.empty((q, G))
        rss, su_kept = np.empty(G), np.empty((G, rank))
        for g0 in range(0, G, step):
            sl = slice(g0, min(G, g0 + step))
            cA, cP, vA, vP, rss[sl] = _wls_block(y[sl], w[sl], d)
            bA[:, sl], bP[:, sl] = cA.T, cP.T
            su_kept[sl][:, d.ind] = np.sqrt(vA)
            su_kept[sl][:, d.dense] = np.sqrt(vP)
        fitted = None
        V = d.cov_unscaled()
    coef_kept = np.empty((G, rank))
    coef_kept[:, d.ind] = bA.T
    coef_kept[:, d.dense] = bP.T
    coef = np.full((G, d.p_full), np.nan)
    su = np.full((G, d.p_full), np.nan)
    coef[:, d.kept] = coef_kept
    su[:, d.kept] = su_kept
    sigma = np.sqrt(rss / df_res) if df_res > 0 else np.full(G, np.nan)
    return {"coefficients": coef, "stdev_unscaled": su, "sigma": sigma,
            "df_residual": np.full(G, float(df_res)), "cov_unscaled": V, "kept": d.kept,
            "Amean": y.mean(axis=1), "fitted": fitted}


def _wls_block(y: np.ndarray, w: np.ndarray, d: _Design) -> tuple:
    """Weighted least squares of each gene (row) of `y` on the design, indicator block eliminated.

    With X = [A | P], A disjoint indicators: X'W_gX has a diagonal A-block
    a_g (sums of weights per indicator), so (X'W_gX)⁻¹ follows from the
    q × q Schur complement S_g = P'W_gP − P'W_gA diag(1/a_g) A'W_gP.
    Returns the indicator and dense coefficients, their unscaled variances
    (diagonal of (X'W_gX)⁻¹) and the weighted residual sums of squares.
    """
    G = y.shape[0]
    K, q, P = d.K, d.q, d.P
    WY = w * y
    a = d.group_sums(w)  # G × K   sum of weights per indicator
    AWy = d.group_sums(WY)  # G × K
    if q:
        # P'W_gA for every gene: one sparse product per dense column (cost G·n each)
        PWA = np.stack([d.group_sums(w * P[:, l]) for l in range(q)], axis=1)  # G × q × K
        PWP = np.empty((G, q, q))
        for l in range(q):
            for m in range(l, q):
                PWP[:, l, m] = PWP[:, m, l] = w @ (P[:, l] * P[:, m])
        PWy = WY @ P  # G × q
        b = PWA / a[:, None, :]  # G × q × K
        S = PWP - np.einsum("glk,gmk->glm", b, PWA)
        Sinv = np.linalg.inv(S)
        rhs = PWy - np.einsum("glk,gk->gl", b, AWy)
        bP = np.einsum("glm,gm->gl", Sinv, rhs)
        bA = (AWy - np.einsum("glk,gl->gk", PWA, bP)) / a
        Sb = np.einsum("glm,gmk->glk", Sinv, b)
        varA = 1.0 / a + np.einsum("glk,glk->gk", b, Sb)
        varP = np.einsum("gll->gl", Sinv)
        fitted = bA[:, np.maximum(d.group, 0)] * (d.group >= 0) + bP @ P.T
    else:
        bA = AWy / a
        varA = 1.0 / a
        varP = np.zeros((G, 0))
        bP = np.zeros((G, 0))
        fitted = bA[:, np.maximum(d.group, 0)] * (d.group >= 0)
    resid = y - fitted
    return bA, bP, varA, varP, np.einsum("gs,gs,gs->g", w, resid, resid)


def contrasts_fit(fit: dict, contrasts: np.ndarray, weighted: bool) -> tuple[np.ndarray, np.ndarray]:
    """``contrasts.fit``: (genes × contrasts) logFC and stdev.unscaled.

    Unweighted: u² = c'(X'X)⁻¹c (exact). Weighted: limma's approximation
    u_g² = c' D_g C D_g c, D_g = diag(stdev.unscaled of gene g), C the
    correlation matrix of the unweighted (X'X)⁻¹.
    """
    cm = np.asarray(contrasts, float)
    kept = fit["kept"]
    dropped = np.setdiff1d(np.arange(cm.shape[0]), kept)
    if dropped.size and np.any(cm[dropped] != 0):
        raise ValueError("trying to take contrast of non-estimable coefficient")
    ck = cm[kept]
    coef = fit["coefficients"][:, kept]
    logfc = coef @ ck
    V = fit["cov_unscaled"]
    if not weighted:
        u2 = np.einsum("ij,ij->j", ck, V @ ck)
        return logfc, np.broadcast_to(np.sqrt(u2), logfc.shape).copy()
    sd = np.sqrt(np.diag(V))
    C = V / np.outer(sd, sd)
    su = fit["stdev_unscaled"][:, kept]
    G, J = logfc.shape
    u = np.empty((G, J))
    nnz = (ck != 0).sum(axis=0)
    two = np.flatnonzero(nnz <= 2)
    if two.size:
        sub = ck[:, two]
        idx = np.argsort(sub == 0, axis=0, kind="stable")[:2]  # rows of the (≤2) non-zeros
        i1, i2 = idx[0], idx[1]
        c1 = sub[i1, np.arange(two.size)]
        c2 = np.where(nnz[two] == 2, sub[i2, np.arange(two.size)], 0.0)
        v1 = su[:, i1] * c1
        v2 = su[:, i2] * c2
        u[:, two] = np.sqrt(v1 ** 2 * C[i1, i1] + v2 ** 2 * C[i2, i2] + 2 * v1 * v2 * C[i1, i2])
    for j in np.flatnonzero(nnz > 2):
        s = np.flatnonzero(ck[:, j])
        v = su[:, s] * ck[s, j]
        u[:, j] = np.sqrt(np.einsum("gi,ij,gj->g", v, C[np.ix_(s, s)], v))
    return logfc, u


# --------------------------------------------------------------------------- eBayes

def trigamma_inverse(x: float) -> float:
    """Solve trigamma(y) = x by limma's Newton iteration (scalar)."""
    if x > 1e7:
        return 1 / math.sqrt(x)
    if x < 1e-6:
        return 1 / x
    y = 0.5 + 1 / x
    for _ in range(51):
        tri = special.polygamma(1, y)
        dif = tri * (1 - tri / x) / special.polygamma(2, y)
        y = y + dif
        if -dif / y < 1e-8:
            break
    return float(y)


def ns_basis(x: np.ndarray, df: int) -> np.ndarray:
    """A basis of the span of ``splines::ns(x, df, intercept = TRUE)``.

    Cubic B-splines on the boundary knots range(x) and df − 2 interior knots
    at the type-7 quantiles, constrained to zero second derivative at both
    boundaries (only the span matters: the fit and its residuals).
    """
    x = np.asarray(x, float)
    lo, hi = float(x.min()), float(x.max())
    n_int = df - 2
    inner = r_quantile(x, np.linspace(0, 1, n_int + 2)[1:-1]) if n_int > 0 else np.array([])
    t = np.concatenate([[lo] * 4, inner, [hi] * 4])
    nb = len(t) - 4
    B = BSpline.design_matrix(np.clip(x, lo, hi), t, 3).toarray()
    cons = np.zeros((2, nb))
    for j in range(nb):
        c = np.zeros(nb)
        c[j] = 1
        d2 = BSpline(t, c, 3).derivative(2)
        cons[0, j], cons[1, j] = d2(lo), d2(hi)
    _, _, vt = np.linalg.svd(cons)
    return B @ vt[2:].T


def fit_f_dist(x: np.ndarray, df1: float, covariate: np.ndarray | None, warns: list[str]) -> dict:
    """limma's ``fitFDist``: moments of log s² (a natural-spline trend on the covariate)."""
    x = np.asarray(x, float)
    n = len(x)
    splinedf = 1
    if covariate is not None:
        splinedf = 1 + (n >= 3) + (n >= 6) + (n >= 30)
        splinedf = min(splinedf, len(np.unique(covariate)))
        if splinedf < 2:
            out = fit_f_dist(x, df1, None, warns)
            out["scale"] = np.full(n, out["scale"])
            return out
    x = np.maximum(x, 0)
    m = np.median(x)
    if m == 0:
        warns.append("More than half of residual variances are exactly zero: eBayes unreliable")
        m = 1
    elif np.any(x == 0):
        warns.append("Zero sample variances detected, have been offset away from zero")
    x = np.maximum(x, 1e-5 * m)
    e = np.log(x) - special.digamma(df1 / 2) + math.log(df1 / 2)
    if covariate is None:
        emean = float(np.mean(e))
        evar = float(np.sum((e - emean) ** 2) / (n - 1))
    else:
        X = ns_basis(covariate, splinedf)
        coef, _, rank, _ = np.linalg.lstsq(X, e, rcond=None)
        emean = X @ coef
        evar = float(np.sum((e - emean) ** 2) / (n - rank))
    evar -= float(special.polygamma(1, df1 / 2))
    if evar > 0:
        df2 = 2 * trigamma_inverse(evar)
        s20 = np.exp(emean + special.digamma(df2 / 2) - math.log(df2 / 2))
    else:
        df2 = math.inf
        s20 = float(np.mean(x)) if covariate is None else np.exp(emean)
    return {"scale": s20, "df2": df2}


def _winsorized_moments(df1: float, df2: float, wtp: np.ndarray, nodes: np.ndarray,
                        weights: np.ndarray) -> tuple[float, float]:
    """Mean and variance of the Winsorised log F(df1, df2) (Gauss–Legendre on F/(1+F))."""
    fq = np.array([_qf(wtp[0], df1, df2), _qf(1 - wtp[1], df1, df2)])
    zq = np.log(fq)
    q = fq / (1 + fq)
    nd = q[0] + (q[1] - q[0]) * nodes
    fn = nd / (1 - nd)
    zn = np.log(fn)
    dens = _df(fn, df1, df2) / (1 - nd) ** 2
    q21 = q[1] - q[0]
    m = q21 * np.sum(weights * dens * zn) + np.sum(zq * wtp)
    v = q21 * np.sum(weights * dens * (zn - m) ** 2) + np.sum((zq - m) ** 2 * wtp)
    return float(m), float(v)


def fit_f_dist_robustly(x: np.ndarray, df1: float, covariate: np.ndarray | None, warns: list[str],
                        winsor_tail_p=(0.05, 0.1)) -> dict:
    """limma's ``fitFDistRobustly`` for a common residual df (the case of every fit here)."""
    x = np.asarray(x, float).copy()
    n = len(x)
    if n <= 2:
        out = fit_f_dist(x, df1, covariate, warns)
        out["df2_shrunk"] = np.full(n, out["df2"])
        return out
    m = np.median(x)
    if m <= 0:
        raise ValueError("Variances are mostly <= 0")
    tiny = x < m * 1e-12
    if np.any(tiny):
        warns.append(f"{int(tiny.sum())} very small variances detected, have been offset away from zero")
        x[tiny] = m * 1e-12
    nonrobust = fit_f_dist(x, df1, covariate, warns)
    wtp = np.array(winsor_tail_p, float)
    prob = np.array([wtp[0], 1 - wtp[1]])
    if np.all(wtp < 1 / n):
        nonrobust["df2_shrunk"] = np.full(n, nonrobust["df2"])
        return nonrobust
    z = np.log(x)
    if covariate is None:
        ztrend = trimmed_mean(z, wtp[1])
        zresid = z - ztrend
    else:
        _, fit_sorted = lowess(covariate, z, f=0.4, iters=3)
        o = np.argsort(covariate, kind="stable")
        ztrend = np.empty(n)
        ztrend[o] = fit_sorted
        zresid = z - ztrend
    zrq = r_quantile(zresid, prob)
    zwins = np.minimum(np.maximum(zresid, zrq[0]), zrq[1])
    zwmean = float(np.mean(zwins))
    zwvar = float(np.mean((zwins - zwmean) ** 2) * n / (n - 1))
    gx, gw = np.polynomial.legendre.leggauss(128)
    nodes, weights = (gx + 1) / 2, gw / 2

    def linkinv(v):
        return v / (1 - v)

    mom_inf = _winsorized_moments(df1, math.inf, wtp, nodes, weights)
    funval_inf = math.log(zwvar / mom_inf[1])
    if funval_inf <= 0:
        df2 = math.inf
        ztc = ztrend + zwmean - mom_inf[0]
        s20 = np.exp(ztc)
        fstat = np.exp(z - ztc)
        tailp = stats.chi2.sf(fstat * df1, df1)
        r = stats.rankdata(fstat)
        pno = np.minimum(tailp / ((n - r + 0.5) / n), 1)
        df2_shrunk = np.full(n, df2)
        outl = pno < 1
        if np.any(outl):
            df2_shrunk[outl] = pno[outl] * n * df1
            o = np.argsort(tailp, kind="stable")
            df2_shrunk[o] = np.maximum.accumulate(df2_shrunk[o])
        return {"scale": s20, "df2": df2, "df2_shrunk": df2_shrunk}
    if math.isinf(nonrobust["df2"]):
        nonrobust["df2_shrunk"] = np.full(n, nonrobust["df2"])
        return nonrobust

    def fun(v):
        return math.log(zwvar / _winsorized_moments(df1, linkinv(v), wtp, nodes, weights)[1])

    rbx = nonrobust["df2"] / (1 + nonrobust["df2"])
    funval_low = fun(rbx)
    if funval_low >= 0:
        df2 = nonrobust["df2"]
    else:
        df2 = linkinv(zeroin(fun, rbx, 1.0, funval_low, funval_inf, 1e-8))
    mom = _winsorized_moments(df1, df2, wtp, nodes, weights)
    ztc = ztrend + zwmean - mom[0]
    s20 = np.exp(ztc)
    fstat = np.exp(z - ztc)
    log_tailp = stats.f.logsf(fstat, df1, df2)
    r = stats.rankdata(fstat)
    log_emp = np.log(n - r + 0.5) - math.log(n)
    log_pno = np.minimum(log_tailp - log_emp, 0)
    pno = np.exp(log_pno)
    pout = -np.expm1(log_pno)
    if np.any(log_pno < 0):
        min_lt = float(np.min(log_tailp))
        if min_lt == -math.inf:
            df2_shrunk = pno * df2
        else:
            df2_out = math.log(0.5) / min_lt * df2
            new_lt = float(stats.f.logsf(np.max(fstat), df1, df2_out))
            df2_out = math.log(0.5) / new_lt * df2_out
            df2_shrunk = pno * df2 + pout * df2_out
        o = np.argsort(log_tailp, kind="stable")
        ordered = df2_shrunk[o]
        mm = np.cumsum(ordered) / np.arange(1, n + 1)
        imin = int(np.argmin(mm))
        ordered[: imin + 1] = mm[imin]
        df2_shrunk = np.empty(n)
        df2_shrunk[o] = np.maximum.accumulate(ordered)
    else:
        df2_shrunk = np.full(n, df2)
    return {"scale": s20, "df2": df2, "df2_shrunk": df2_shrunk}


def squeeze_var(var: np.ndarray, df: float, covariate: np.ndarray | None, robust: bool,
                warns: list[str]) -> dict:
    """limma's ``squeezeVar``: prior df and scale, posterior variances."""
    n = len(var)
    if n == 1:
        return {"df_prior": np.zeros(1), "var_prior": var.copy(), "var_post": var.copy()}
    if robust:
        fit = fit_f_dist_robustly(var, df, covariate, warns)
        df_prior = np.asarray(fit["df2_shrunk"], float)
    else:
        fit = fit_f_dist(var, df, covariate, warns)
        df_prior = np.full(n, fit["df2"])
    var_prior = np.broadcast_to(np.asarray(fit["scale"], float), (n,)).copy()
    fin = np.isfinite(df_prior)
    var_post = var_prior.copy()
    var_post[fin] = (df * var[fin] + df_prior[fin] * var_prior[fin]) / (df + df_prior[fin])
    # var_prior: one value without a trend, one per gene with it (as limma returns it)
    return {"df_prior": df_prior, "var_prior": np.atleast_1d(np.asarray(fit["scale"], float)).copy(),
            "var_post": var_post}


def tmixture_matrix(t: np.ndarray, su: np.ndarray, df: np.ndarray, proportion: float, lim) -> np.ndarray:
    """limma's ``tmixture.matrix``: the prior variance of the non-null coefficients, per contrast.

    The |t| of genes with fewer df than the largest are first moved to the
    largest df at equal tail probability; then, per contrast, the
    ``ceil(proportion/2 · genes)`` largest |t| give target quantiles whose
    implied variances (clipped to `lim`) are averaged.
    """
    G, J = t.shape
    ntarget = int(math.ceil(proportion / 2 * G))
    if ntarget < 1:
        return np.full(J, np.nan)
    p = max(ntarget / G, proportion)
    tabs = np.abs(t)
    maxdf = float(np.max(df))
    low = df < maxdf
    # the |t| moved to maxdf are monotone in the log tail probability, so the
    # ntarget largest are found on log P first and only those are converted
    logp = stats.t.logsf(tabs, df[:, None]) if np.any(low) else -tabs
    top = np.argpartition(logp, ntarget - 1, axis=0)[:ntarget] if ntarget < G else \
        np.broadcast_to(np.arange(G)[:, None], (G, J))
    tt = np.take_along_axis(tabs, top, axis=0)
    if np.any(low):
        conv = low[top]
        tt[conv] = _qt_log_upper(np.take_along_axis(logp, top, axis=0)[conv], maxdf)
    # decreasing order (ties: original order, as R's order())
    o = np.lexsort((top, -tt), axis=0)
    top = np.take_along_axis(top, o, axis=0)
    tt = np.take_along_axis(tt, o, axis=0)
    v1 = np.take_along_axis(su, top, axis=0) ** 2
    r = np.arange(1, ntarget + 1)[:, None]
    p0 = 2 * special.stdtr(maxdf, -tt)
    ptarget = ((r - 0.5) / G - (1 - p) * p0) / p
    v0 = np.zeros_like(tt)
    pos = ptarget > p0
    if np.any(pos):
        qtarget = -special.stdtrit(maxdf, ptarget[pos] / 2)
        v0[pos] = v1[pos] * ((tt[pos] / qtarget) ** 2 - 1)
    v0 = np.minimum(np.maximum(v0, lim[0]), lim[1])
    return v0.mean(axis=0)


def ebayes(coef: np.ndarray, su: np.ndarray, sigma: np.ndarray, df_residual: np.ndarray,
           amean: np.ndarray | None, robust: bool, warns: list[str], proportion: float = 0.01,
           stdev_coef_lim=(0.1, 4)) -> dict:
    """limma's ``eBayes`` on a contrast fit; `amean` given means ``trend = TRUE``."""
    df = np.asarray(df_residual, float)
    if np.max(df) == 0:
        raise ValueError("No residual degrees of freedom in linear model fits")
    if np.any(df != df[0]):
        raise ValueError("the fast engine needs one residual df for every gene")
    sq = squeeze_var(sigma ** 2, float(df[0]), amean, robust, warns)
    s2_post = sq["var_post"]
    t = coef / su / np.sqrt(s2_post)[:, None]
    df_prior = sq["df_prior"]
    df_total = np.minimum(df + df_prior, np.nansum(df))
    pval = 2 * stats.t.sf(np.abs(t), df_total[:, None])
    lim = np.array(stdev_coef_lim, float) ** 2 / np.median(sq["var_prior"])
    var_prior = tmixture_matrix(t, su, df_total, proportion, lim)
    if np.any(np.isnan(var_prior)):
        var_prior[np.isnan(var_prior)] = 1 / sq["var_prior"][0]
        warns.append("Estimation of var.prior failed - set to default value")
    r = (su ** 2 + var_prior[None, :]) / su ** 2
    t2 = t ** 2
    dft = df_total[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        kernel = (1 + dft) / 2 * np.log((t2 + dft) / (t2 / r + dft))
    inf_df = df_prior > 1e6
    if np.any(inf_df):
        kernel[inf_df] = (t2 * (1 - 1 / r) / 2)[inf_df]
    lods = math.log(proportion / (1 - proportion)) - np.log(r) / 2 + kernel
    return {"t": t, "p_value": pval, "lods": lods, "s2_post": s2_post, "df_total": df_total,
            "df_prior": df_prior, "s2_prior": sq["var_prior"], "var_prior": var_prior}


# --------------------------------------------------------------------------- edgeR / voom

def hat_values(design: np.ndarray) -> np.ndarray:
    """Leverages of R's ``hat(design)`` (intercept added): diag of X (X'X)⁻¹ X' over the span.

    The intercept is appended last (only the span matters); with indicators
    covering every sample it is aliased and dropped.
    """
    x = np.column_stack([design, np.ones(design.shape[0])])
    d = _Design(x)
    V = d.cov_unscaled()
    K = d.K
    P = d.P
    h = np.zeros(d.n)
    g = d.group
    ing = g >= 0
    h[ing] = np.diag(V)[:K][g[ing]]
    if d.q:
        VAP, VPP = V[:K, K:], V[K:, K:]
        h[ing] += 2 * np.einsum("sl,sl->s", VAP[g[ing]], P[ing])
        h += np.einsum("sl,lm,sm->s", P, VPP, P)
    return h


def filter_by_expr(counts: np.ndarray, design: np.ndarray, min_count: float = 10,
                   min_total_count: float = 15, large_n: float = 10, min_prop: float = 0.7) -> np.ndarray:
    """edgeR ``filterByExpr(DGEList(counts), design)`` with its defaults (boolean keep)."""
    lib = counts.sum(axis=0)
    h = hat_values(np.asarray(design, float))
    min_size = 1 / np.max(h)
    if min_size > large_n:
        min_size = large_n + (min_size - large_n) * min_prop
    with np.errstate(divide="ignore", invalid="ignore"):  # all-zero input: nothing passes
        cutoff = min_count / np.median(lib) * 1e6
        cpm = counts / lib * 1e6
    tol = 1e-14
    return ((cpm >= cutoff).sum(axis=1) >= min_size - tol) & (counts.sum(axis=1) >= min_total_count - tol)


def calc_norm_factors_tmm(counts: np.ndarray, lib: np.ndarray, logratio_trim: float = 0.3,
                          sum_trim: float = 0.05) -> np.ndarray:
    """edgeR ``calcNormFactors(method = "TMM")`` with its defaults."""
    x = counts[(counts > 0).any(axis=1)]
    ns = x.shape[1]
    if x.shape[0] == 0 or ns == 1:
        return np.ones(ns)
    f75 = np.array([r_quantile(x[:, j], 0.75) for j in range(ns)]) / lib
    if np.median(f75) < 1e-20:
        ref = int(np.argmax(np.sqrt(x).sum(axis=0)))
    else:
        ref = int(np.argmin(np.abs(f75 - np.mean(f75))))
    f = np.empty(ns)
    rr, nR = x[:, ref][:, None], lib[ref]
    for c0 in range(0, ns, 128):  # samples in blocks: every quantity below is genes × block
        cols = slice(c0, min(ns, c0 + 128))
        obs, nO = x[:, cols], lib[cols][None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            logR = np.log2((obs / nO) / (rr / nR))
            absE = (np.log2(obs / nO) + np.log2(rr / nR)) / 2
            v = (nO - obs) / nO / obs + (nR - rr) / nR / rr
        fin = np.isfinite(logR) & np.isfinite(absE) & (absE > -1e10)
        n = fin.sum(axis=0)
        # ranks among the finite values of each column (non-finite ones pushed after them)
        rl = stats.rankdata(np.where(fin, logR, np.inf), axis=0)
        ra = stats.rankdata(np.where(fin, absE, np.inf), axis=0)
        loL = np.floor(n * logratio_trim) + 1
        hiL = n + 1 - loL
        loS = np.floor(n * sum_trim) + 1
        hiS = n + 1 - loS
        keep = fin & (rl >= loL) & (rl <= hiL) & (ra >= loS) & (ra <= hiS)
        with np.errstate(divide="ignore", invalid="ignore"):
            num = np.nansum(np.where(keep, logR / v, 0.0), axis=0)
            den = np.nansum(np.where(keep, 1 / v, 0.0), axis=0)
            val = num / den
        maxabs = np.max(np.where(fin, np.abs(logR), 0.0), axis=0)
        val = np.where(np.isnan(val), 0.0, val)
        f[cols] = np.where(maxabs < 1e-6, 1.0, 2.0 ** val)
    return f / np.exp(np.mean(np.log(f)))


def voom(counts: np.ndarray, design: np.ndarray, lib_size: np.ndarray, span: float = 0.5
         ) -> tuple[np.ndarray, np.ndarray]:
    """limma ``voom``: log-CPM and precision weights (genes × samples)."""
    y = np.log2((counts + 0.5) / (lib_size + 1) * 1e6)
    fit = lm_fit(y, design)
    sx = fit["Amean"] + np.mean(np.log2(lib_size + 1)) - math.log2(1e6)
    sy = np.sqrt(fit["sigma"])
    allzero = counts.sum(axis=1) == 0
    lx, ly = lowess(sx[~allzero], sy[~allzero], f=span, iters=3)
    fitted_logcount = np.log2(1e-6 * 2 ** fit["fitted"] * (lib_size + 1))
    w = 1 / approx_rule2(lx, ly, fitted_logcount.ravel()).reshape(fitted_logcount.shape) ** 4
    return y, w


# --------------------------------------------------------------------------- the stratum fit



def fit_fast(x: np.ndarray, genes: list[str], design: pd.DataFrame, contrasts: pd.DataFrame,
             normalized: bool, stratum: str) -> LimmaResult:
    """The METHODS §3 fit of one stratum, same contract as :func:`cpb_resources.limma.fit_limma`.

    Parameters
    ----------
    x
        (genes × samples): integer counts (count route) or normalized log2
        expression (normalized route).
    genes, design, contrasts, normalized, stratum
        As for ``fit_limma``.

    Raises
    ------
    NothingToFit
        filterByExpr keeps fewer than 2 genes.
    LimmaFitError
        The fit is impossible (no residual df, a contrast on an aliased column …).
    """
    x = checked_fit_inputs(x, genes, design, contrasts, stratum)
    n_genes, n_samples = x.shape
    X = design.to_numpy(dtype=float)
    cm = contrasts.to_numpy(dtype=float)
    warns: list[str] = []
    try:
        if normalized:
            keep = np.ones(n_genes, bool)
            fit = lm_fit(x, X)
        else:
            keep = filter_by_expr(x, X)
            if keep.sum() < 2:
                raise NothingToFit(stratum, f"filterByExpr kept {int(keep.sum())} genes", int(keep.sum()))
            counts = x[keep]
            lib = counts.sum(axis=0)
            nf = calc_norm_factors_tmm(counts, lib)
            E, w = voom(counts, X, lib * nf)
            fit = lm_fit(E, X, weights=w)
        logfc, su = contrasts_fit(fit, cm, weighted=not normalized)
        eb = ebayes(logfc, su, fit["sigma"], fit["df_residual"], fit["Amean"] if normalized else None,
                    robust=True, warns=warns)
    except ValueError as exc:
        raise LimmaFitError(stratum, str(exc)) from None
    margin = np.sqrt(eb["s2_post"])[:, None] * su * stats.t.ppf(0.975, eb["df_total"])[:, None]
    tables = {"logFC": logfc, "AveExpr": np.repeat(fit["Amean"][:, None], cm.shape[1], axis=1),
              "t": eb["t"], "P.Value": eb["p_value"], "adj.P.Val": p_adjust_bh(eb["p_value"]),
              "B": eb["lods"], "CI.L": logfc - margin, "CI.R": logfc + margin}
    return LimmaResult(
        genes=[g for g, k in zip(genes, keep) if k], contrasts=[str(c) for c in contrasts.columns],
        tables=tables, stdev_unscaled=su, sigma=fit["sigma"], s2_post=eb["s2_post"],
        df_total=eb["df_total"], df_prior=eb["df_prior"], s2_prior=eb["s2_prior"],
        df_residual=fit["df_residual"], genes_kept=int(keep.sum()), n_samples=n_samples,
        warnings=list(dict.fromkeys(warns)))
