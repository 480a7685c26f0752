"""Cluster BCa bootstrap of the agreement tables (METHODS §4, paper Appendix C).

Every table cell (a mean score of one dataset pair, pair × cell line,
replicate table or retrieval table) gets a 95% bias-corrected and
accelerated interval from resampling *clusters* (compounds, by CID) with
replacement, so rows of one compound (its doses, lines, directions) move
together.

The statistic is a plain mean over the finite rows, or the nested mean of
the retrieval aggregation (mean within inner groups, then within outer
groups, then over outer groups). Both are computed for all resamples at
once: per-cluster sums and counts of each inner group form a (clusters ×
groups) matrix, a resample is a row of cluster multiplicities, and the
resampled sums and counts are one matrix product.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Hashable, Sequence

import numpy as np
from scipy.special import ndtr, ndtri

__all__ = [
    "BASE_SEED",
    "N_RESAMPLES",
    "CONFIDENCE",
    "BootstrapResult",
    "table_cell_seed",
    "resample_counts",
    "ClusteredTable",
    "cluster_bca",
]

BASE_SEED = 20260505
N_RESAMPLES = 2000
CONFIDENCE = 0.95
MIN_CLUSTERS = 2
MIN_FINITE_BOOTSTRAP = 20
MIN_FINITE_JACKKNIFE = 3
MAX_BLOCK_CELLS = 1 << 22  # resample counts held at once (32 MiB of float64)
# bootstrap values within this (relative) distance of the estimate count as
# "all equal": a matrix-product mean of identical values can differ from
# them in the last bit
_EQUAL_RTOL = 1e-12


@dataclass(frozen=True)
class BootstrapResult:
    """One table cell: estimate and its 95% interval.

    Attributes
    ----------
    estimate : float
        The statistic on the observed rows (NaN when no row is finite).
    lo, hi : float
        Interval bounds (NaN when ``method == "nan"``).
    n_clusters : int
        Distinct clusters (CIDs) among the finite rows.
    n_rows : int
        Finite rows.
    method : str
        ``"bca"``, ``"percentile"`` (BCa fallback) or ``"nan"``.
    """

    estimate: float
    lo: float
    hi: float
    n_clusters: int
    n_rows: int
    method: str


def table_cell_seed(level: str, group_values: tuple, metric: str, column: str) -> int:
    """Seed of one table cell: 20260505 + blake2b-64 of its repr, mod 2**32 − 1.

    Parameters
    ----------
    level : str
        Table level (e.g. ``"pair"``, ``"pair_cell"``, ``"replicate"``).
    group_values : tuple
        The cell's group keys in table order (e.g. ``("lincs", "tahoe")``).
    metric, column : str
        Metric (with variant where it has one) and column
        (``observed``/``baseline``/``adjusted``).
    """
    key = repr((level, group_values, metric, column)).encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return (BASE_SEED + int.from_bytes(digest, "little")) % (2**32 - 1)


def resample_counts(rng: np.random.Generator, n_clusters: int, n_resamples: int) -> np.ndarray:
    """Cluster multiplicities of `n_resamples` bootstrap resamples.

    The indices are drawn as ``rng.integers(0, C, size=(B, C))`` (the draw
    ``scipy.stats.bootstrap`` makes, so both see the same resamples); row b of
    the result counts how often each cluster was drawn.

    Returns
    -------
    numpy.ndarray
        (B × C) float64 counts.
    """
    idx = rng.integers(0, n_clusters, size=(n_resamples, n_clusters))
    flat = idx + n_clusters * np.arange(n_resamples)[:, None]
    counts = np.bincount(flat.ravel(), minlength=n_resamples * n_clusters)
    return counts.reshape(n_resamples, n_clusters).astype(np.float64)


def _resample_blocks(rng: np.random.Generator, n_clusters: int, n_resamples: int, max_cells: int | None = None):
    """:func:`resample_counts` in blocks of whole rows (≤ `max_cells` counts each).

    Consecutive ``integers`` calls continue the same stream, so the blocks
    stacked equal the one-matrix draw (tested); memory stays bounded for
    tables with many thousand clusters.
    """
    max_cells = MAX_BLOCK_CELLS if max_cells is None else max_cells
    rows = max(2, (max_cells // max(n_clusters, 1)) // 2 * 2)
    for start in range(0, n_resamples, rows):
        yield resample_counts(rng, n_clusters, min(rows, n_resamples - start))


def _codes(keys: Sequence[Hashable]) -> tuple[np.ndarray, list]:
    """Integer codes in order of first appearance."""
    seen: dict = {}
    codes = np.empty(len(keys), dtype=np.int64)
    for i, k in enumerate(keys):
        codes[i] = seen.setdefault(k, len(seen))
    return codes, list(seen)


class ClusteredTable:
    """Finite rows of one table cell, reduced to per-cluster group sums.

    Parameters
    ----------
    values : array-like of float
        One value per row; non-finite rows are dropped before anything else
        (they neither count as rows nor found clusters).
    clusters : sequence
        Cluster key per row (the CID; for retrieval the query's CID).
    inner, outer : sequence, optional
        Nested-mean keys per row. With neither, the statistic is the mean of
        the rows. With `inner` (e.g. (direction, cell_type, time)) and `outer`
        (e.g. direction; must be constant within an inner group), it is the
        mean over outer groups of the mean over their inner groups of the
        row mean; groups absent from a resample are skipped.
    """

    def __init__(self, values, clusters, inner=None, outer=None):
        v = np.asarray(values, dtype=np.float64)
        keep = np.isfinite(v)
        self.n_rows = int(keep.sum())
        v = v[keep]
        kept = np.flatnonzero(keep)
        cl = [clusters[i] for i in kept]
        cluster_codes, self.cluster_keys = _codes(cl)
        self.n_clusters = len(self.cluster_keys)
        if inner is None:
            inner_codes = np.zeros(self.n_rows, dtype=np.int64)
            n_inner = 1
            outer_of_inner = np.zeros(1, dtype=np.int64)
        else:
            inner_keys = [inner[i] for i in kept]
            inner_codes, inner_list = _codes(inner_keys)
            n_inner = len(inner_list)
            if outer is None:
                outer_of_inner = np.zeros(n_inner, dtype=np.int64)
            else:
                outer_codes, _ = _codes([outer[i] for i in kept])
                outer_of_inner = np.full(n_inner, -1, dtype=np.int64)
                for g, o in zip(inner_codes, outer_codes):
                    if outer_of_inner[g] not in (-1, o):
                        raise ValueError("outer key varies within an inner group")
                    outer_of_inner[g] = o
        n_outer = int(outer_of_inner.max()) + 1 if n_inner else 0
        self.sums = np.zeros((self.n_clusters, n_inner))
        self.counts = np.zeros((self.n_clusters, n_inner))
        np.add.at(self.sums, (cluster_codes, inner_codes), v)
        np.add.at(self.counts, (cluster_codes, inner_codes), 1.0)
        self.membership = np.zeros((n_inner, max(n_outer, 1)))
        self.membership[np.arange(n_inner), outer_of_inner] = 1.0

    def statistic(self, weights: np.ndarray) -> np.ndarray:
        """Nested mean for each row of cluster `weights` (R × C) at once."""
        return self._reduce(weights @ self.sums, weights @ self.counts)

    def _reduce(self, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Nested mean from (R × inner groups) sums and counts; absent groups are skipped."""
        with np.errstate(invalid="ignore", divide="ignore"):
            inner = sums / counts
            present = np.isfinite(inner)
            outer = (np.where(present, inner, 0.0) @ self.membership) / (
                present.astype(np.float64) @ self.membership
            )
            has = np.isfinite(outer)
            return np.where(has, outer, 0.0).sum(axis=1) / has.sum(axis=1)

    def estimate(self) -> float:
        """The statistic on the observed rows (every cluster once)."""
        if self.n_rows == 0:
            return float("nan")
        return float(self.statistic(np.ones((1, self.n_clusters)))[0])

    def jackknife(self) -> np.ndarray:
        """Leave-one-cluster-out statistics (C values): totals minus each cluster's sums."""
        return self._reduce(self.sums.sum(axis=0) - self.sums, self.counts.sum(axis=0) - self.counts)


def _percentile_interval(boot: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def cluster_bca(
    values,
    clusters,
    *,
    seed: int,
    inner=None,
    outer=None,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> BootstrapResult:
    """Cluster BCa interval of the (nested) mean of `values`.

    Parameters
    ----------
    values : array-like of float
        One score per row; non-finite rows are dropped first.
    clusters : sequence
        Cluster key (CID) per row; clusters are indexed in order of first
        appearance among the finite rows, which fixes the resamples a seed
        gives.
    seed : int
        Seed of numpy's ``default_rng`` (see :func:`table_cell_seed`).
    inner, outer : sequence, optional
        Nested-mean keys (see :class:`ClusteredTable`).
    n_resamples : int
        Bootstrap resamples B (2,000 in the paper).
    confidence : float
        Two-sided level (0.95).

    Returns
    -------
    BootstrapResult
        ``method="nan"`` with fewer than 2 clusters or fewer than 20 finite
        bootstrap values; ``(estimate, estimate)`` when every bootstrap
        value equals it; ``"percentile"`` when the acceleration is undefined
        (fewer than 3 finite jackknife values, zero or non-finite
        denominator); else ``"bca"``.
    """
    table = ClusteredTable(values, clusters, inner=inner, outer=outer)
    est = table.estimate()
    nan = BootstrapResult(est, float("nan"), float("nan"), table.n_clusters, table.n_rows, "nan")
    if table.n_clusters < MIN_CLUSTERS or not np.isfinite(est):
        return nan
    rng = np.random.default_rng(seed)
    boot = np.concatenate([table.statistic(w) for w in _resample_blocks(rng, table.n_clusters, n_resamples)])
    boot = boot[np.isfinite(boot)]
    if boot.size < MIN_FINITE_BOOTSTRAP:
        return nan
    if np.all(np.abs(boot - est) <= _EQUAL_RTOL * max(1.0, abs(est))):
        return BootstrapResult(est, est, est, table.n_clusters, table.n_rows, "bca")
    alpha = 1.0 - confidence
    b = boot.size
    share = np.clip(np.count_nonzero(boot < est) / b, 1.0 / (2 * b), 1.0 - 1.0 / (2 * b))
    z0 = float(ndtri(share))

    jack = table.jackknife()
    jack = jack[np.isfinite(jack)]
    if jack.size < MIN_FINITE_JACKKNIFE:
        lo, hi = _percentile_interval(boot, alpha)
        return BootstrapResult(est, lo, hi, table.n_clusters, table.n_rows, "percentile")
    d = jack.mean() - jack
    den = 6.0 * np.sum(d**2) ** 1.5
    if not np.isfinite(den) or den == 0.0:
        lo, hi = _percentile_interval(boot, alpha)
        return BootstrapResult(est, lo, hi, table.n_clusters, table.n_rows, "percentile")
    accel = float(np.sum(d**3) / den)

    z = ndtri(np.array([alpha / 2, 1 - alpha / 2]))
    q = ndtr(z0 + (z0 + z) / (1.0 - accel * (z0 + z)))
    q = np.clip(q, 0.0, 1.0)
    lo, hi = np.quantile(boot, q)
    return BootstrapResult(est, float(lo), float(hi), table.n_clusters, table.n_rows, "bca")


# ------------------------------------------------------------------ table cells of a summary
SUMMARY_COLUMNS = ["level", "pair", "dataset", "cell_type", "group_values", "metric", "variant", "column", "estimate",
                   "lo", "hi", "n_clusters", "n_rows", "method"]
VALUE_COLUMNS = ("observed", "baseline", "adjusted")


def bootstrap_cells(rows, *, level: str, group_cols: Sequence[str], cluster_col: str = "pubchem_cid",
                    inner_cols: Sequence[str] | None = None, outer_col: str | None = None,
                    columns: Sequence[str] = VALUE_COLUMNS, n_resamples: int = N_RESAMPLES):
    """The cluster BCa of every cell of one summary table.

    Parameters
    ----------
    rows : pandas.DataFrame
        The rows a cell averages (drug-line-time rows, replicate conditions, retrieval queries)
        with ``metric``, ``variant``, the group columns, the cluster column and the value columns.
    level : str
        Table level written to the output and hashed into the seed (``pair``, ``pair_cell``,
        ``retrieval``, ``dataset``, ``replicate_retrieval``).
    group_cols : sequence of str
        The cell's group keys (e.g. ``["pair"]``, ``["pair", "cell_type"]``, ``["dataset"]``).
    inner_cols, outer_col : optional
        Nested-mean keys (retrieval: (direction, cell_type, time_h) and direction).

    Returns
    -------
    pandas.DataFrame
        One row per group × metric × variant × column (``SUMMARY_COLUMNS``); the seed of a cell is
        :func:`table_cell_seed` of (level, group values, metric, column).
    """
    import pandas as pd

    out = []
    if len(rows) == 0:
        return typed_frame(pd.DataFrame(columns=SUMMARY_COLUMNS))
    keys = [*group_cols, "metric", "variant"]
    for key, sub in rows.groupby(keys, sort=True, dropna=False):
        group_values = tuple(str(k) for k in key[:len(group_cols)])
        metric, variant = key[-2], key[-1]
        cl = sub[cluster_col].astype(str).tolist()
        inner = list(zip(*(sub[c] for c in inner_cols))) if inner_cols else None
        outer = sub[outer_col].tolist() if outer_col else None
        named = dict(zip(group_cols, group_values))
        for column in columns:
            seed = table_cell_seed(level, group_values, metric, column)
            r = cluster_bca(sub[column].to_numpy(dtype=float), cl, seed=seed, inner=inner, outer=outer,
                            n_resamples=n_resamples)
            out.append({"level": level, "pair": named.get("pair"), "dataset": named.get("dataset"),
                        "cell_type": named.get("cell_type"), "group_values": "|".join(group_values),
                        "metric": metric, "variant": variant, "column": column, "estimate": r.estimate,
                        "lo": r.lo, "hi": r.hi, "n_clusters": r.n_clusters, "n_rows": r.n_rows,
                        "method": r.method})
    return typed_frame(pd.DataFrame(out, columns=SUMMARY_COLUMNS))


_INT_COLUMNS = {"n_clusters", "n_rows", "n_candidates", "n_positives", "n_genes", "n_replicates", "n_pairs"}
_FLOAT_COLUMNS = {"estimate", "lo", "hi", "time_h", "dose_uM", "rank", "observed", "baseline_rank", "baseline",
                  "adjusted"}


def typed_frame(df):
    """Fixed column types for Parquet: text as string (an all-missing column stays string, not null),
    counts int64, scores float64, so partitions with and without values read as one table."""
    out = df.copy()
    for c in out.columns:
        if c in _INT_COLUMNS:
            out[c] = out[c].astype("int64")
        elif c in _FLOAT_COLUMNS:
            out[c] = out[c].astype("float64")
        else:
            out[c] = out[c].astype("string")
    return out
