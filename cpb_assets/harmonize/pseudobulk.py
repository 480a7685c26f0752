"""Single-cell QC and pseudobulk aggregation (METHODS §2, paper Appendix B).

Pure functions on sparse (or dense) cell × gene count matrices:

* :func:`cell_qc` applies the five single-cell filters and says, per cell,
  which rule removed it;
* :func:`pseudobulk` sums counts per group of cells with one sparse
  indicator-matrix product (no Python loop over cells);
* :func:`combine_pseudobulk` merges partial pseudobulks (row chunks of one
  plate) by re-aggregating on the group key, so a plate can be streamed.

QC rules, evaluated in this order; a cell failing several rules is counted
once, under the FIRST rule it fails (:data:`QC_RULES` is that order):

1. ``missing_group``     a grouping field (plate, well, perturbagen, cell_type,
                         ...) is missing: the cell cannot be aggregated at all;
2. ``min_genes``         genes detected (count > 0) < 250;
3. ``min_counts``        total counts < 700;
4. ``max_mito_fraction`` counts on genes whose symbol starts with ``MT-`` /
                         total counts > 0.2;
5. ``min_malat1``        log1p(MALAT1 / total × 1e4) < 3.5 (MALAT1 =
                         ENSG00000251562); skipped when MALAT1 is not measured.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

MALAT1_ENSEMBL = "ENSG00000251562"
QC_RULES: tuple[str, ...] = ("missing_group", "min_genes", "min_counts", "max_mito_fraction", "min_malat1")
QC_REASONS: dict[str, str] = {
    "missing_group": "missing grouping field",
    "min_genes": "genes detected < 250",
    "min_counts": "total counts < 700",
    "max_mito_fraction": "mitochondrial fraction > 0.2",
    "min_malat1": "log1p(MALAT1 / total * 1e4) < 3.5",
}


@dataclass(frozen=True)
class QCThresholds:
    """Single-cell QC thresholds (METHODS §2).

    Attributes
    ----------
    min_genes
        Minimum number of genes with a count > 0.
    min_counts
        Minimum total counts (UMIs) per cell.
    max_mito_fraction
        Maximum share of counts on ``MT-`` genes (0–1).
    min_malat1
        Minimum log1p(MALAT1 counts / total counts × 1e4).
    """

    min_genes: int = 250
    min_counts: int = 700
    max_mito_fraction: float = 0.2
    min_malat1: float = 3.5


@dataclass
class QCResult:
    """Outcome of :func:`cell_qc`.

    Attributes
    ----------
    passed
        Boolean mask over cells.
    failed_rule
        Per cell, the index into :data:`QC_RULES` of the first failed rule, −1 if passed.
    counts
        Rule name → number of cells removed under it (first failing rule only).
    """

    passed: np.ndarray
    failed_rule: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)


def mito_mask(symbols) -> np.ndarray:
    """Boolean mask of mitochondrially encoded genes: symbol starts with ``MT-``."""
    s = pd.Series(np.asarray(symbols, dtype=object)).astype(str).str.upper()
    return s.str.startswith("MT-").to_numpy()


def cell_qc_metrics(X, mito: np.ndarray, malat1_col: int | None) -> pd.DataFrame:
    """Per-cell QC metrics of a cell × gene count matrix.

    Parameters
    ----------
    X
        (n_cells, n_genes) counts, scipy sparse or numpy.
    mito
        Boolean mask over genes (mitochondrial genes).
    malat1_col
        Column of MALAT1, or None when it is not measured.

    Returns
    -------
    DataFrame with ``n_genes`` (genes with count > 0), ``total_counts``,
    ``mito_fraction`` (0–1; 0 for empty cells) and ``malat1_log1p``
    (log1p(MALAT1 / total × 1e4); NaN without MALAT1, 0 for empty cells).
    """
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        n_genes = np.asarray((X > 0).sum(axis=1)).ravel()
        total = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
        mito_counts = (np.asarray(X[:, np.flatnonzero(mito)].sum(axis=1), dtype=np.float64).ravel()
                       if mito.any() else np.zeros(X.shape[0]))
        malat = (np.asarray(X[:, [malat1_col]].todense(), dtype=np.float64).ravel()
                 if malat1_col is not None else None)
    else:
        X = np.asarray(X)
        n_genes = (X > 0).sum(axis=1)
        total = X.sum(axis=1, dtype=np.float64)
        mito_counts = X[:, mito].sum(axis=1, dtype=np.float64)
        malat = X[:, malat1_col].astype(np.float64) if malat1_col is not None else None
    safe = np.where(total > 0, total, 1.0)
    mito_frac = np.where(total > 0, mito_counts / safe, 0.0)
    if malat is None:
        malat_l = np.full(len(total), np.nan)
    else:
        malat_l = np.where(total > 0, np.log1p(malat / safe * 1e4), 0.0)
    return pd.DataFrame({"n_genes": n_genes.astype(np.int64), "total_counts": total,
                         "mito_fraction": mito_frac, "malat1_log1p": malat_l})


def cell_qc(X, *, mito: np.ndarray, malat1_col: int | None, group_missing: np.ndarray | None = None,
            thresholds: QCThresholds = QCThresholds()) -> QCResult:
    """Apply the single-cell QC rules; count each failing cell once, under its first failed rule.

    Parameters
    ----------
    X
        (n_cells, n_genes) integer counts (sparse or dense).
    mito
        Boolean mask over genes marking ``MT-`` genes.
    malat1_col
        Column of MALAT1 (ENSG00000251562) or None (rule skipped).
    group_missing
        Boolean mask over cells: some grouping field is missing.
    thresholds
        The QC thresholds.

    Returns
    -------
    QCResult with the pass mask, the per-cell first failed rule and the
    per-rule counts (every rule of :data:`QC_RULES` present, possibly 0).
    """
    m = cell_qc_metrics(X, np.asarray(mito, dtype=bool), malat1_col)
    n = len(m)
    fails = [
        np.zeros(n, bool) if group_missing is None else np.asarray(group_missing, dtype=bool),
        m["n_genes"].to_numpy() < thresholds.min_genes,
        m["total_counts"].to_numpy() < thresholds.min_counts,
        m["mito_fraction"].to_numpy() > thresholds.max_mito_fraction,
        (m["malat1_log1p"].to_numpy() < thresholds.min_malat1) if malat1_col is not None else np.zeros(n, bool),
    ]
    failed_rule = np.full(n, -1, dtype=np.int64)
    for k in range(len(QC_RULES) - 1, -1, -1):  # last rule first, so earlier rules overwrite
        failed_rule[fails[k]] = k
    counts = {rule: int((failed_rule == k).sum()) for k, rule in enumerate(QC_RULES)}
    return QCResult(passed=failed_rule < 0, failed_rule=failed_rule, counts=counts)


def pseudobulk(X, keys: pd.DataFrame) -> tuple[pd.DataFrame, sp.csr_matrix]:
    """Sum counts of cells sharing a group key.

    Parameters
    ----------
    X
        (n_cells, n_genes) integer counts, sparse or dense.
    keys
        One row per cell; every column is part of the group key (e.g. plate,
        well, perturbagen, cell_type[, guide]). No missing values allowed.

    Returns
    -------
    groups
        One row per group (key columns, in first-appearance order) plus
        ``psbulk_cells`` (number of cells) and ``psbulk_counts`` (total counts).
    sums
        (n_groups, n_genes) CSR int64: summed counts, computed as the
        sparse product of a group × cell indicator matrix with `X`.
    """
    keys = keys.reset_index(drop=True)
    if len(keys) != X.shape[0]:
        raise ValueError(f"{len(keys)} key rows for {X.shape[0]} cells")
    if keys.isna().any().any():
        raise ValueError("group keys contain missing values; filter them with cell_qc first")
    cols = list(keys.columns)
    if len(keys) == 0:
        empty = keys.copy()
        empty["psbulk_cells"] = np.array([], dtype=np.int64)
        empty["psbulk_counts"] = np.array([], dtype=np.int64)
        return empty, sp.csr_matrix((0, X.shape[1]), dtype=np.int64)
    codes = keys.groupby(cols, sort=False, observed=True).ngroup().to_numpy()
    n_groups = int(codes.max()) + 1
    indicator = sp.csr_matrix((np.ones(len(codes), dtype=np.int64), (codes, np.arange(len(codes)))),
                              shape=(n_groups, len(codes)))
    Xi = sp.csr_matrix(X, dtype=np.int64) if sp.issparse(X) else sp.csr_matrix(np.asarray(X, dtype=np.int64))
    sums = sp.csr_matrix(indicator @ Xi)
    first = np.unique(codes, return_index=True)[1]
    groups = keys.iloc[first].reset_index(drop=True).copy()
    groups["psbulk_cells"] = np.bincount(codes, minlength=n_groups).astype(np.int64)
    groups["psbulk_counts"] = np.asarray(sums.sum(axis=1), dtype=np.int64).ravel()
    return groups, sums


def combine_pseudobulk(parts: list[tuple[pd.DataFrame, sp.csr_matrix]], key_columns: list[str]
                       ) -> tuple[pd.DataFrame, sp.csr_matrix]:
    """Merge partial pseudobulks (e.g. row chunks of one plate) into one.

    Groups with the same key are summed (counts and ``psbulk_cells``); the
    merge is again one indicator-matrix product, over group rows.
    """
    parts = [p for p in parts if len(p[0])]
    if not parts:
        raise ValueError("no pseudobulk parts to combine")
    groups = pd.concat([g for g, _ in parts], ignore_index=True)
    sums = sp.vstack([s for _, s in parts], format="csr")
    codes = groups.groupby(key_columns, sort=False, observed=True).ngroup().to_numpy()
    n = int(codes.max()) + 1
    indicator = sp.csr_matrix((np.ones(len(codes), dtype=np.int64), (codes, np.arange(len(codes)))),
                              shape=(n, len(codes)))
    merged = sp.csr_matrix(indicator @ sums)
    first = np.unique(codes, return_index=True)[1]
    out = groups.iloc[first][key_columns].reset_index(drop=True).copy()
    out["psbulk_cells"] = np.bincount(codes, weights=groups["psbulk_cells"].to_numpy(), minlength=n).astype(np.int64)
    out["psbulk_counts"] = np.asarray(merged.sum(axis=1), dtype=np.int64).ravel()
    return out, merged


def check_counts(data: np.ndarray) -> str | None:
    """Why `data` (the stored values of a count matrix) is not integer counts, or None."""
    data = np.asarray(data)
    if data.size == 0:
        return None
    if not np.all(np.isfinite(data)):
        return "non-finite values where integer counts are required"
    if np.any(data < 0):
        return f"negative counts (min {data.min()!r}) where integer counts are required"
    if data.dtype.kind == "f" and np.any(data != np.floor(data)):
        bad = data[data != np.floor(data)][:3].tolist()
        return f"fractional counts (e.g. {bad}) where integer counts are required"
    return None


_ENSG_VERSION = r"^(ENSG\d{11})(\.\d+)?(_PAR_Y)?$"


def ensembl_gene_axis(ids, symbols) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Turn a source's gene IDs into the harmonized Ensembl gene axis.

    Versions are stripped (``ENSG00000000003.14`` → ``ENSG00000000003``).
    Dropped, with a reason: IDs that are not human Ensembl gene IDs (e.g. the
    mouse ``ENSMUSG`` genes of a human–mouse barnyard) and GENCODE's
    ``_PAR_Y`` copies of pseudo-autosomal genes (their X copy is kept).

    Parameters
    ----------
    ids
        The source's gene IDs, in matrix column order.
    symbols
        Gene symbols, same order (used for the ``symbol`` column and the
        ``MT-`` rule).

    Returns
    -------
    keep
        Integer column indices of the kept genes.
    genes
        Index Ensembl ID (unique), column ``symbol``, one row per kept gene.
    dropped
        Columns ``input`` and ``reason``.

    Raises
    ------
    ValueError
        When two kept columns share one Ensembl ID (the caller names the file).
    """
    ids_s = pd.Series(np.asarray(ids, dtype=object)).astype(str).str.strip()
    sym = pd.Series(np.asarray(symbols, dtype=object)).astype(str).str.strip()
    m = ids_s.str.extract(_ENSG_VERSION)
    par_y = m[2].notna().to_numpy()
    human = m[0].notna().to_numpy() & ~par_y
    dropped = pd.DataFrame({
        "input": np.concatenate([ids_s[~m[0].notna().to_numpy()].to_numpy(), ids_s[par_y].to_numpy()]),
        "reason": (["not a human Ensembl gene ID"] * int((~m[0].notna()).sum())
                   + ["PAR_Y copy of a pseudo-autosomal gene"] * int(par_y.sum())),
    })
    keep = np.flatnonzero(human)
    ens = m[0].to_numpy()[keep]
    dup = pd.Index(ens)[pd.Index(ens).duplicated()].unique().tolist()
    if dup:
        raise ValueError(f"duplicate genes {dup[:5]}")
    genes = pd.DataFrame({"symbol": sym.to_numpy()[keep]}, index=pd.Index(ens, name="gene"))
    return keep, genes, dropped
