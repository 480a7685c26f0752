"""Pseudobulk aggregation: the project's sparse indicator product vs a naive pandas groupby-sum.

Input (SYNTHETIC, seeded): a cells × genes CSR count matrix, ~5% non-zero,
integer counts 1–19, cells assigned at random to groups keyed by three
string columns (plate, well, perturbagen), in no particular order.

* project:  :func:`cpb_assets.harmonize.pseudobulk.pseudobulk` on the CSR matrix
* baseline: the same counts as a dense int64 numpy array (densified once,
  outside the timing) wrapped in a DataFrame, ``groupby(key columns,
  sort=False).sum()``

Both return groups in first-appearance order; the check compares the keys
and every summed count exactly.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from benchmarks import REPS, median_times, row
from cpb_assets.harmonize.pseudobulk import pseudobulk

SEED = 20261121
FULL = (50_000, 2_000, 1_000)  # cells, genes, groups
QUICK = (10_000, 1_000, 200)
DENSITY = 0.05


def synthetic_counts(n_cells: int, n_genes: int, n_groups: int, seed: int = SEED):
    """SYNTHETIC sparse counts and group keys (seeded)."""
    rng = np.random.default_rng(seed)
    nnz = int(n_cells * n_genes * DENSITY)
    # draw (cell, gene) positions; duplicates are summed, so density ends just under 5%
    r = rng.integers(0, n_cells, nnz)
    c = rng.integers(0, n_genes, nnz)
    v = rng.integers(1, 20, nnz).astype(np.int64)
    X = sp.csr_matrix((v, (r, c)), shape=(n_cells, n_genes), dtype=np.int64)
    X.sum_duplicates()
    g = rng.integers(0, n_groups, n_cells)
    keys = pd.DataFrame({
        "plate": np.array([f"SYN_P{k % 7:02d}" for k in g], dtype=object),
        "well": np.array([f"W{k:04d}" for k in g], dtype=object),
        "perturbagen": np.array([f"SYN_CPD{k % 97:03d}" for k in g], dtype=object),
    })
    return X, keys


def naive_groupby_sum(dense: np.ndarray, keys: pd.DataFrame) -> pd.DataFrame:
    """Plain pandas: dense DataFrame, groupby the key columns, sum."""
    return pd.DataFrame(dense).groupby([keys[c] for c in keys.columns], sort=False).sum()


def run(quick: bool = False, reps: int = REPS) -> list[dict]:
    n_cells, n_genes, n_groups = QUICK if quick else FULL
    X, keys = synthetic_counts(n_cells, n_genes, n_groups)
    dense = X.toarray()  # int64, the baseline's input; densifying is not timed
    med, times, last = median_times({
        "project": lambda: pseudobulk(X, keys),
        "baseline": lambda: naive_groupby_sum(dense, keys),
    }, reps)
    groups, sums = last["project"]
    naive = last["baseline"]
    same_keys = (len(groups) == len(naive)
                 and all((groups[c].to_numpy() == naive.index.get_level_values(c).to_numpy()).all()
                         for c in keys.columns))
    same_sums = same_keys and np.array_equal(sums.toarray(), naive.to_numpy().astype(np.int64))
    check = (f"identical sums ({len(groups)} groups)" if same_sums
             else f"MISMATCH (keys equal: {same_keys})")
    return [row("pseudobulk", "sparse indicator product vs pandas groupby-sum",
                f"{n_cells:,} cells × {n_genes:,} genes, {X.nnz / (n_cells * n_genes):.1%} nonzero → "
                f"{len(groups):,} groups",
                project="pseudobulk(X_csr, keys)", project_s=med["project"],
                baseline="pd.DataFrame(X_dense_int64).groupby(keys).sum()", baseline_s=med["baseline"],
                check=check, reps=reps, times=times, ok=bool(same_sums),
                dense_mb=round(dense.nbytes / 1e6, 1))]
