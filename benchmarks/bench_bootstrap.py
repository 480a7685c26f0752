"""Cluster BCa bootstrap of one agreement table cell: matrix-product resamples vs a per-resample loop.

Input (SYNTHETIC, seeded): one table cell of 1,000 CID clusters with 1–5 rows each (about 3,000
rows), 2,000 resamples (the paper's), 95% BCa. The project (``cpb_assets.agreement.bootstrap``)
draws the (B × clusters) index matrix once, turns it into cluster counts and gets every resample's
mean from two matrix products; the baseline draws the same index matrix and, per resample,
concatenates the drawn clusters' rows and takes their mean (the textbook loop), then applies the
same BCa formula. Check: identical intervals (|Δ| < 1e-9). A second row times the retrieval
statistic (nested mean over (direction, cell line, time) groups) on the project's path alone.
"""
from __future__ import annotations

import numpy as np
from scipy.special import ndtr, ndtri

from benchmarks import REPS, median_times, row
from cpb_assets.agreement.bootstrap import cluster_bca


def _table(n_clusters: int, seed: int = 17):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 6, size=n_clusters)
    clusters = np.repeat(np.arange(n_clusters), sizes)
    values = rng.normal(size=n_clusters)[clusters] * 0.3 + rng.normal(size=len(clusters))
    direction = rng.integers(0, 2, size=len(clusters))
    cell = rng.integers(0, 6, size=len(clusters))
    return values, clusters, direction, cell


def _loop_bca(values, clusters, seed, n_resamples):
    """The textbook cluster bootstrap: rows of the drawn clusters, one resample at a time."""
    n = int(clusters.max()) + 1
    rows_of = [values[clusters == c] for c in range(n)]
    est = values.mean()
    idx = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    boot = np.array([np.concatenate([rows_of[c] for c in draw]).mean() for draw in idx])
    jack = np.array([np.concatenate(rows_of[:c] + rows_of[c + 1:]).mean() for c in range(n)])
    b = boot.size
    z0 = ndtri(np.clip(np.mean(boot < est), 1 / (2 * b), 1 - 1 / (2 * b)))
    d = jack.mean() - jack
    a = np.sum(d ** 3) / (6 * np.sum(d ** 2) ** 1.5)
    z = ndtri(np.array([0.025, 0.975]))
    lo, hi = np.quantile(boot, np.clip(ndtr(z0 + (z0 + z) / (1 - a * (z0 + z))), 0, 1))
    return est, lo, hi


def run(quick: bool = False, reps: int = REPS) -> list[dict]:
    n_clusters, n_resamples = (300, 2000) if quick else (1000, 2000)
    values, clusters, direction, cell = _table(n_clusters)
    seed = 20260505
    med, times, last = median_times({
        "project": lambda: cluster_bca(values, clusters, seed=seed, n_resamples=n_resamples),
        "loop": lambda: _loop_bca(values, clusters, seed, n_resamples)}, reps)
    p, (est, lo, hi) = last["project"], last["loop"]
    same = abs(p.lo - lo) < 1e-9 and abs(p.hi - hi) < 1e-9 and abs(p.estimate - est) < 1e-12
    size = f"{n_clusters:,} clusters, {len(values):,} rows, {n_resamples:,} resamples"
    rows = [row("bootstrap", "cluster BCa of one table cell (mean): matrix products vs per-resample loop", size,
                project="cluster_bca", project_s=med["project"], baseline="per-resample row concatenation",
                baseline_s=med["loop"], check="same interval (|Δ| < 1e-9)" if same else "INTERVALS DIFFER",
                reps=reps, times=times, ok=same)]
    inner = list(zip(direction, cell))
    med2, times2, last2 = median_times({"project": lambda: cluster_bca(
        values, clusters, seed=seed, n_resamples=n_resamples, inner=inner, outer=list(direction))}, reps)
    r = last2["project"]
    rows.append(row("bootstrap", "cluster BCa, retrieval nested mean (2 directions × 6 cell lines)", size,
                    project="cluster_bca(inner, outer)", project_s=med2["project"],
                    check=f"method {r.method}, lo < estimate < hi: {r.lo < r.estimate < r.hi}", reps=reps,
                    times=times2, ok=bool(r.lo < r.estimate < r.hi)))
    return rows
