"""Perturbation strength against cross-dataset agreement (METHODS §4, paper Appendix C.8).

Per matched condition-dose unit: each side's mean |moderated t| over the genes the pair shares,
averaged over the two sides, set against the observed logFC and t Spearman of the pair.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from cpb_assets.agreement.metrics import Signatures

UNIT_KEYS = ["dataset_a", "dataset_b", "cell_type", "time_h", "pubchem_cid", "dose_a", "dose_b"]


def mean_abs_t(left: Signatures, right: Signatures) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean |t| left, mean |t| right, their mean) over genes with finite t on both sides; NaN if none."""
    shared = np.isfinite(left.t) & np.isfinite(right.t)
    n = shared.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.where(shared, np.abs(np.nan_to_num(left.t)), 0.0).sum(axis=1) / n
        b = np.where(shared, np.abs(np.nan_to_num(right.t)), 0.0).sum(axis=1) / n
    a, b = np.where(n > 0, a, np.nan), np.where(n > 0, b, np.nan)
    return a, b, (a + b) / 2.0


def condition_dose_units(pairs: pd.DataFrame) -> pd.DataFrame:
    """Average matched pairs to condition-dose units (dataset pair, cell_type, time, CID, dose pair).

    ``pairs`` holds one row per matched pair with mean_abs_t and the observed spearman_logfc /
    spearman_t; several contrasts of one condition (e.g. two controls) become one unit.
    """
    cols = ["mean_abs_t_a", "mean_abs_t_b", "mean_abs_t", "spearman_logfc", "spearman_t"]
    if pairs.empty:
        return pd.DataFrame(columns=[*UNIT_KEYS, *cols, "n_pairs"])
    g = pairs.groupby(UNIT_KEYS, sort=True, dropna=False)
    out = g[cols].mean()
    out["n_pairs"] = g.size()
    return out.reset_index()


def strength_correlation(units: pd.DataFrame) -> dict[str, float | int]:
    """Spearman of log10 mean |t| against the observed logFC and t Spearman over finite units."""
    out: dict[str, float | int] = {}
    for col in ("spearman_logfc", "spearman_t"):
        ok = np.isfinite(units["mean_abs_t"].to_numpy(float)) & np.isfinite(units[col].to_numpy(float))
        out[f"n_{col}"] = int(ok.sum())
        out[f"rho_{col}"] = (float(spearmanr(units.loc[ok, "mean_abs_t"], units.loc[ok, col]).statistic)
                             if ok.sum() >= 3 else float("nan"))
    return out
