"""The agreement metric registry (METHODS §4, paper Appendix C.2–C.3).

Every metric scores P pairs of signatures at once: the inputs are (P, G) arrays on one gene axis
(NaN where a gene is absent), row p of the left against row p of the right. Per metric, genes
non-finite in either vector are dropped row by row.

A side is a :class:`Signatures`: logFC, moderated t and the within-contrast adjusted P value. A
same-context centroid (baselines) has no P values (``adj_p=None``): its DEG "mask" is every finite
gene, DEG-restricted scores use only the other side's mask, and DE overlap ranks all its finite
genes by |value| (paper C.4).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

TOPK = 50
DE_OVERLAP_K = (50, 100, 200)
ADJ_P_MAX = 0.05
LFC_MIN = 0.2
DEG_VARIANTS = ("p05", "p05_lfc02")
ALL_VARIANT = "all"


@dataclass(frozen=True)
class Signatures:
    """P signatures on one gene axis.

    Attributes
    ----------
    logfc, t
        (P, G) float arrays (log2 fold change, moderated t); NaN where absent.
    adj_p
        (P, G) within-contrast BH-adjusted P values, or None for a centroid.
    """

    logfc: np.ndarray
    t: np.ndarray
    adj_p: Optional[np.ndarray] = None
    _orders: dict = field(default_factory=dict, compare=False, repr=False)

    def order(self, key: str) -> np.ndarray:
        """Row-wise stable ascending argsort of ``logfc``, ``t``, ``neg_t`` (−t) or ``neg_abs_logfc``
        (−|logFC|), non-finite last; computed once per signature block and shared by the metrics."""
        if key not in self._orders:
            v = {"logfc": lambda: self.logfc, "t": lambda: self.t, "neg_t": lambda: -self.t,
                 "neg_abs_logfc": lambda: -np.abs(self.logfc)}[key]()
            self._orders[key] = np.argsort(np.where(np.isfinite(v), v, np.inf), axis=1, kind="stable")
        return self._orders[key]

    def take(self, idx) -> "Signatures":
        return Signatures(self.logfc[idx], self.t[idx], None if self.adj_p is None else self.adj_p[idx])

    def restrict(self, keep: np.ndarray) -> "Signatures":
        """NaN outside ``keep`` (a (P, G) bool array), e.g. the genes shared with a partner."""
        nan = np.float64(np.nan)
        return Signatures(np.where(keep, self.logfc, nan), np.where(keep, self.t, nan),
                          None if self.adj_p is None else np.where(keep, self.adj_p, nan))


def deg_mask(sig: Signatures, variant: str) -> Optional[np.ndarray]:
    """DEG mask: finite logFC, finite adj P < 0.05 (``p05``) and |logFC| > 0.2 (``p05_lfc02``).

    None for a centroid (no P values).
    """
    if sig.adj_p is None:
        return None
    with np.errstate(invalid="ignore"):
        mask = np.isfinite(sig.logfc) & np.isfinite(sig.adj_p) & (sig.adj_p < ADJ_P_MAX)
        if variant == "p05_lfc02":
            mask &= np.abs(sig.logfc) > LFC_MIN
        elif variant != "p05":
            raise ValueError(f"unknown DEG variant {variant!r}; expected one of {DEG_VARIANTS}")
    return mask


# ------------------------------------------------------------------ building blocks
def masked_ranks(values: np.ndarray, order: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) of each row's ``mask`` genes among themselves; NaN elsewhere.

    ``order`` is the row-wise stable ascending argsort of ``values`` (non-finite last), so one sort
    serves every mask: ordinal ranks are the running count of mask genes in sorted order, and tied
    values share the mean of their ordinal ranks.
    """
    n_rows, n_genes = values.shape
    rows = np.arange(n_rows)[:, None]
    sv = np.take_along_axis(values, order, axis=1)
    sm = np.take_along_axis(mask, order, axis=1)
    count = np.cumsum(sm, axis=1)
    idx = np.broadcast_to(np.arange(n_genes), (n_rows, n_genes))
    new = np.ones((n_rows, n_genes), bool)
    new[:, 1:] = sv[:, 1:] != sv[:, :-1]
    last = np.ones((n_rows, n_genes), bool)
    last[:, :-1] = new[:, 1:]
    start = np.maximum.accumulate(np.where(new, idx, 0), axis=1)
    stop = np.minimum.accumulate(np.where(last, idx, n_genes - 1)[:, ::-1], axis=1)[:, ::-1]
    before = np.take_along_axis(count, start, axis=1) - np.take_along_axis(sm, start, axis=1)
    avg = (before + 1 + np.take_along_axis(count, stop, axis=1)) / 2.0
    ranks = np.full((n_rows, n_genes), np.nan)
    ranks[rows, order] = np.where(sm, avg, np.nan)
    return ranks


def _pearson_of_ranks(rx: np.ndarray, ry: np.ndarray, valid: np.ndarray) -> np.ndarray:
    n = valid.sum(axis=1)
    out = np.full(rx.shape[0], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = np.where(valid, rx - np.nansum(rx, axis=1, keepdims=True) / n[:, None], 0.0)
        dy = np.where(valid, ry - np.nansum(ry, axis=1, keepdims=True) / n[:, None], 0.0)
        vx, vy = (dx * dx).sum(axis=1), (dy * dy).sum(axis=1)
        r = (dx * dy).sum(axis=1) / np.sqrt(vx * vy)
    ok = (n >= 2) & (vx > 0) & (vy > 0)
    out[ok] = np.clip(r[ok], -1.0, 1.0)
    return out


def spearman_on(left: "Signatures", right: "Signatures", vector: str, mask: Optional[np.ndarray] = None
                ) -> np.ndarray:
    """Row-wise Spearman of ``vector`` ("logfc" or "t") over genes in ``mask`` finite on both sides.

    NaN where fewer than 2 genes are valid or either side's ranks are constant.
    """
    x, y = getattr(left, vector), getattr(right, vector)
    valid = np.isfinite(x) & np.isfinite(y)
    if mask is not None:
        valid &= mask
    if x.size == 0:
        return np.full(x.shape[0], np.nan)
    return _pearson_of_ranks(masked_ranks(x, left.order(vector), valid),
                             masked_ranks(y, right.order(vector), valid), valid)


def rowwise_spearman(x: np.ndarray, y: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Spearman of each row of x and y over the genes in ``valid`` finite in both (average ranks)."""
    return spearman_on(Signatures(x, x), Signatures(y, y), "logfc", valid)


def member_positions(order: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Position of each member gene among the row's members in ``order`` (ties: gene order);
    meaningless for non-members."""
    sm = np.take_along_axis(members, order, axis=1)
    pos = np.empty(order.shape, dtype=np.int64)
    pos[np.arange(order.shape[0])[:, None], order] = np.cumsum(sm, axis=1) - 1
    return pos


def overlap_at(pos_l, n_l, pos_r, n_r, members_l, members_r, k) -> np.ndarray:
    """|top-k(left) ∩ top-k(right)| / k per row; NaN where k < 1 or a side has fewer than k members."""
    k = np.broadcast_to(np.asarray(k, dtype=float), n_l.shape)
    top_l = members_l & (pos_l < k[:, None])
    top_r = members_r & (pos_r < k[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = (top_l & top_r).sum(axis=1) / k
    return np.where((k >= 1) & (n_l >= k) & (n_r >= k), frac, np.nan)


# ------------------------------------------------------------------ metrics
def spearman_logfc(left: Signatures, right: Signatures, variant: str = ALL_VARIANT) -> np.ndarray:
    """Spearman of logFC over genes finite in both."""
    return spearman_on(left, right, "logfc")


def spearman_t(left: Signatures, right: Signatures, variant: str = ALL_VARIANT) -> np.ndarray:
    """Spearman of moderated t over genes finite in both."""
    return spearman_on(left, right, "t")


def topk_overlap_t(left: Signatures, right: Signatures, variant: str = ALL_VARIANT, k: int = TOPK,
                   k_rule: str = "half") -> np.ndarray:
    """Signed top-k overlap on t: mean of the top-up and top-down overlap fractions.

    k_eff = min(k, n // 2) (``k_rule="half"``, cross-dataset) or min(k, n) (``"full"``, replicates),
    n = genes with finite t on both sides; ties broken by gene order. NaN when k_eff = 0.
    """
    valid = np.isfinite(left.t) & np.isfinite(right.t)
    n = valid.sum(axis=1)
    k_eff = np.minimum(k, n // 2 if k_rule == "half" else n)
    out = []
    for key in ("neg_t", "t"):  # -t ascending = top up; t ascending = top down
        pl, pr = member_positions(left.order(key), valid), member_positions(right.order(key), valid)
        out.append(overlap_at(pl, n, pr, n, valid, valid, k_eff))
    return (out[0] + out[1]) / 2.0


def deg_spearman(left: Signatures, right: Signatures, variant: str = "p05") -> np.ndarray:
    """DEG-restricted logFC Spearman: mean of the Spearman on each side's DEG mask (NaN if either is)."""
    terms = []
    for side in (left, right):
        mask = deg_mask(side, variant)
        if mask is not None:
            terms.append(spearman_on(left, right, "logfc", mask))
    return np.mean(terms, axis=0)


_LISTS_CACHE: dict = {}  # the DE-overlap metrics of one (left, right, variant) share their ranked lists


def _deg_lists(left: Signatures, right: Signatures, variant: str):
    key = (id(left), id(right), variant)
    hit = _LISTS_CACHE.get(key)
    if hit is not None and hit[0] is left and hit[1] is right:
        return hit[2]
    lists = _compute_deg_lists(left, right, variant)
    _LISTS_CACHE.clear()  # one entry: score_all runs the metrics of one pair block back to back
    _LISTS_CACHE[key] = (left, right, lists)
    return lists


def _compute_deg_lists(left: Signatures, right: Signatures, variant: str):
    valid = np.isfinite(left.logfc) & np.isfinite(right.logfc)
    lists = []
    for side in (left, right):
        mask = deg_mask(side, variant)
        members = valid if mask is None else (mask & valid)
        pos = member_positions(side.order("neg_abs_logfc"), members)
        lists.append((members, pos, members.sum(axis=1), mask is not None))
    return lists


def de_overlap_refn(left: Signatures, right: Signatures, variant: str = "p05") -> np.ndarray:
    """DE overlap at the reference side's DEG count n, symmetrised over the references.

    Per reference: |top-n(ref) ∩ top-n(other)| / n, NaN when the other side has fewer than n DEGs
    (or n = 0). Symmetric score: mean of the references that are defined (a centroid is never a
    reference); NaN when none is.
    """
    (ml, pl, nl, refl), (mr, pr, nr, refr) = _deg_lists(left, right, variant)
    terms = []
    if refl:
        terms.append(overlap_at(pl, nl, pr, nr, ml, mr, nl))
    if refr:
        terms.append(overlap_at(pl, nl, pr, nr, ml, mr, nr))
    stacked = np.vstack(terms)
    with np.errstate(invalid="ignore"):
        counts = np.isfinite(stacked).sum(axis=0)
        total = np.nansum(stacked, axis=0)
    return np.where(counts > 0, total / np.maximum(counts, 1), np.nan)


def de_overlap_k(left: Signatures, right: Signatures, variant: str = "p05", k: int = 50) -> np.ndarray:
    """DE overlap at fixed k: |top-k(left) ∩ top-k(right)| / k by |logFC|; NaN when a side has < k DEGs."""
    (ml, pl, nl, _), (mr, pr, nr, _) = _deg_lists(left, right, variant)
    return overlap_at(pl, nl, pr, nr, ml, mr, k)


def direction(left: Signatures, right: Signatures, variant: str = "p05") -> np.ndarray:
    """Share of genes in (mask_L ∧ mask_R) (finite logFC both) with the same logFC sign; NaN if empty."""
    m = np.isfinite(left.logfc) & np.isfinite(right.logfc)
    for side in (left, right):
        mask = deg_mask(side, variant)
        if mask is not None:
            m &= mask
    same = np.sign(np.nan_to_num(left.logfc)) == np.sign(np.nan_to_num(right.logfc))
    n = m.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (same & m).sum(axis=1) / n, np.nan)


@dataclass(frozen=True)
class Metric:
    """One registered agreement metric.

    Attributes
    ----------
    name
        Column value ``metric`` in the outputs (the paper's words).
    function
        ``f(left, right, variant) -> (P,)`` scores.
    nan_rule
        When the score is NaN.
    deg
        True: computed for the DEG variants ``p05`` and ``p05_lfc02``; False: variant ``all``.
    vector
        The vector the metric reads ("logFC" or "t"); the baseline centroid averages that vector.
    """

    name: str
    function: Callable[..., np.ndarray]
    nan_rule: str
    deg: bool
    vector: str

    @property
    def variants(self) -> tuple[str, ...]:
        return DEG_VARIANTS if self.deg else (ALL_VARIANT,)

    def __call__(self, left: Signatures, right: Signatures, variant: str, **options) -> np.ndarray:
        return self.function(left, right, variant, **options)


def _fixed_k(k: int) -> Callable[..., np.ndarray]:
    def f(left, right, variant="p05"):
        return de_overlap_k(left, right, variant, k=k)
    f.__name__ = f"de_overlap_{k}"
    return f


METRICS: dict[str, Metric] = {m.name: m for m in [
    Metric("spearman_logfc", spearman_logfc, "< 2 genes finite in both, or constant ranks", False, "logFC"),
    Metric("spearman_t", spearman_t, "< 2 genes finite in both, or constant ranks", False, "t"),
    Metric("topk_overlap_t", topk_overlap_t, "k_eff = min(50, n // 2) is 0", False, "t"),
    Metric("deg_spearman", deg_spearman, "either side's DEG-restricted Spearman is NaN", True, "logFC"),
    Metric("de_overlap_refn", de_overlap_refn, "no reference side with n ≥ 1 whose partner has ≥ n DEGs", True,
           "logFC"),
    *[Metric(f"de_overlap_{k}", _fixed_k(k), f"either side has fewer than {k} DEGs", True, "logFC")
      for k in DE_OVERLAP_K],
    Metric("direction", direction, "no gene in both DEG masks", True, "logFC"),
]}
METRIC_NAMES = list(METRICS)


def metric_variants() -> list[tuple[str, str]]:
    """Every (metric, variant) pair, in registry order."""
    return [(m.name, v) for m in METRICS.values() for v in m.variants]


def score_all(left: Signatures, right: Signatures, **options) -> dict[tuple[str, str], np.ndarray]:
    """Every registered metric and variant for row-paired signatures: {(metric, variant): (P,)}.

    ``options`` are passed to the metrics that accept them (``k_rule`` for ``topk_overlap_t``).
    """
    out = {}
    for m in METRICS.values():
        opts = options if m.name == "topk_overlap_t" else {}
        for v in m.variants:
            out[(m.name, v)] = m(left, right, v, **opts)
    return out
