"""Same-context different-compound baselines (METHODS §4, paper Appendix C.4).

For a row of dataset D, the baseline vector is the gene-wise mean over every valid non-control row
of D with the same cell_type, time key and dose key and a different CID. Cross-dataset scores use
the NaN-propagating mean (a gene non-finite in any peer row is NaN); replicate scores skip NaN.
All centroids of a dataset are computed at once from per-context and per-(context, CID) sums:
centroid = (sum over context − sum over own CID) / (count over context − count over own CID).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse

from cpb_assets.agreement.metrics import METRICS, Signatures


def _group_sums(codes: np.ndarray, n_groups: int, values: np.ndarray) -> np.ndarray:
    """(n_groups, G) sums of the rows of ``values`` per group code."""
    ind = sparse.csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(n_groups, len(codes)))
    return np.asarray(ind @ values)


def centroids(values: np.ndarray, context: np.ndarray, cid: np.ndarray, skip_nan: bool = False) -> np.ndarray:
    """Same-context other-compound mean of every row.

    Parameters
    ----------
    values
        (N, G) one vector per row of one dataset (NaN where missing).
    context
        (N,) hashable context keys (cell_type, time key, dose key joined).
    cid
        (N,) normalised CIDs.
    skip_nan
        False: NaN-propagating mean (cross-dataset); True: mean of the finite peer values (replicates).

    Returns
    -------
    (N, G) centroids; all NaN where a row has no peer of another CID.
    """
    values = np.asarray(values, dtype=float)
    if values.shape[0] == 0:
        return values.copy()
    ctx_codes, ctx_uniq = pd.factorize(pd.Series(context, dtype=object))
    own_codes, own_uniq = pd.factorize(pd.Series(list(zip(context, cid)), dtype=object))
    finite = np.isfinite(values)
    filled = np.where(finite, values, 0.0)
    s_ctx = _group_sums(ctx_codes, len(ctx_uniq), filled)[ctx_codes]
    s_own = _group_sums(own_codes, len(own_uniq), filled)[own_codes]
    f_ctx = _group_sums(ctx_codes, len(ctx_uniq), finite.astype(float))[ctx_codes]
    f_own = _group_sums(own_codes, len(own_uniq), finite.astype(float))[own_codes]
    n_ctx = np.bincount(ctx_codes, minlength=len(ctx_uniq))[ctx_codes]
    n_own = np.bincount(own_codes, minlength=len(own_uniq))[own_codes]
    n_peer = (n_ctx - n_own).astype(float)[:, None]
    f_peer = f_ctx - f_own
    with np.errstate(invalid="ignore", divide="ignore"):
        if skip_nan:
            out = np.where(f_peer > 0, (s_ctx - s_own) / f_peer, np.nan)
        else:
            out = np.where((n_peer > 0) & (f_peer == n_peer), (s_ctx - s_own) / n_peer, np.nan)
    return out


def centroid_signatures(sig: Signatures, context, cid, skip_nan: bool = False) -> Signatures:
    """Centroids of logFC and t (no P values: a centroid has none)."""
    return Signatures(centroids(sig.logfc, context, cid, skip_nan), centroids(sig.t, context, cid, skip_nan), None)


def present(sig: Signatures) -> np.ndarray:
    """Genes a signature row has (finite logFC or t)."""
    return np.isfinite(sig.logfc) | np.isfinite(sig.t)


def baseline_scores(left: Signatures, right: Signatures, left_centroid: Signatures, right_centroid: Signatures,
                    **options) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """Each side's own vector against its centroid, on the genes the pair shares.

    Returns
    -------
    {(metric, variant): (baseline_left, baseline_right)}, each (P,).
    """
    shared = present(left) & present(right)
    out = {}
    sides = [(left.restrict(shared), left_centroid.restrict(shared)),
             (right.restrict(shared), right_centroid.restrict(shared))]
    for m in METRICS.values():
        opts = options if m.name == "topk_overlap_t" else {}
        for v in m.variants:
            out[(m.name, v)] = tuple(m(s, c, v, **opts) for s, c in sides)
    return out


def pair_baseline(b_left: np.ndarray, b_right: np.ndarray) -> np.ndarray:
    """Mean of the sides that are defined (NaN when neither is)."""
    stacked = np.vstack([b_left, b_right])
    n = np.isfinite(stacked).sum(axis=0)
    return np.where(n > 0, np.nansum(stacked, axis=0) / np.maximum(n, 1), np.nan)


def adjusted(observed: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """observed − baseline, defined only when both are."""
    return np.where(np.isfinite(observed) & np.isfinite(baseline), observed - baseline, np.nan)
