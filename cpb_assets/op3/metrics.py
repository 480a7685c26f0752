"""The five OP3 metrics, per row (condition) and averaged over rows.

Non-finite predictions count as 0; a row whose denominator is zero (a constant row for
Pearson/Spearman, a zero vector for cosine) scores 0.
"""
from __future__ import annotations

import numpy as np

METRICS = ("mrrmse", "mae", "pearson", "spearman", "cosine")


def _clean(pred: np.ndarray) -> np.ndarray:
    pred = np.asarray(pred, dtype=np.float64)
    return np.where(np.isfinite(pred), pred, 0.0)


def _row_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    num = (a * b).sum(axis=1)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def row_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric per row of `y` (conditions × genes).

    ``mrrmse`` per row is sqrt(mean over genes (y − ŷ)²); its mean over rows is MRRMSE.
    """
    from scipy.stats import rankdata  # scipy.stats: ~1 s of import the Dagster definitions need not pay

    y = np.asarray(y, dtype=np.float64)
    p = _clean(pred)
    err = y - p
    cos_den = np.linalg.norm(y, axis=1) * np.linalg.norm(p, axis=1)
    cos_num = (y * p).sum(axis=1)
    return {
        "mrrmse": np.sqrt((err ** 2).mean(axis=1)),
        "mae": np.abs(err).mean(axis=1),
        "pearson": _row_corr(y, p),
        "spearman": _row_corr(rankdata(y, axis=1), rankdata(p, axis=1)),
        "cosine": np.divide(cos_num, cos_den, out=np.zeros_like(cos_num), where=cos_den > 0),
    }


def score(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The five metrics averaged over rows."""
    return {k: float(v.mean()) for k, v in row_metrics(y, pred).items()}
