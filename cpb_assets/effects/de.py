"""The DE layer: one limma fit per stratum (or batch), both labelings (METHODS §3).

Entry points:

- :func:`run_de_unit` fits one :class:`~cpb_assets.effects.strata.DEUnit`
  (independent; can run as its own job);
- :func:`run_de_partition` plans and fits every unit of a dataset × mode and
  returns the DE table and the strata table.

Structural problems of a unit (no controls, no treated samples, no residual
degrees of freedom, a design that is not of full rank, nothing to contrast,
no expressed genes) are not fitted: the unit is recorded as ``skipped`` with
the reason, and no numbers are produced for it. Wrong input (counts that
are not non-negative integers on a count route, missing obs columns) raises
:class:`DEInputError`; an R failure raises
:class:`~cpb_resources.limma.LimmaFitError`. Both name the stratum.
"""
from __future__ import annotations

import time
from typing import Callable

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cpb_assets.datasets import DATASET_INFO
from cpb_assets.effects.labels import condition_labels
from cpb_resources.limma import NothingToFit
from cpb_assets.effects.strata import (DEUnit, build_design, estimable_design, non_estimable, plan_units,
                                      skip_row)

DE_COLUMNS = [
    "dataset", "mode", "stratum", "contrast_id", "treated_label", "control_label", "cell_type", "pubchem_cid",
    "perturbagen", "dose_uM", "time_h", "plate", "well", "gene", "logFC", "AveExpr", "t", "P_Value",
    "adj_P_within", "adj_P_across", "B", "CI_L", "CI_R", "stdev_unscaled", "stdev_scaled", "sigma", "df_total",
]
STRATA_COLUMNS = ["dataset", "mode", "stratum", "batch", "n_samples", "n_controls", "n_contrasts", "genes_kept",
                  "df_prior", "s2_prior", "status", "reason", "seconds"]
REQUIRED_OBS = ["plate", "well", "cell_type", "perturbagen", "is_control", "pert_dose_uM", "pert_time_h",
                "pubchem_cid", "psbulk_cells"]
_TOPTABLE = {"logFC": "logFC", "AveExpr": "AveExpr", "t": "t", "P_Value": "P.Value", "adj_P_within": "adj.P.Val",
             "B": "B", "CI_L": "CI.L", "CI_R": "CI.R"}


class DEInputError(ValueError):
    """Input unfit for the DE layer; names the dataset, mode and stratum."""

    def __init__(self, where: str, problem: str):
        self.where = where
        self.problem = problem
        super().__init__(f"DE input {where}: {problem}")


class DESkip(Exception):
    """A unit that cannot be fitted (raised instead of skipping when strict)."""

    def __init__(self, where: str, reason: str):
        self.where = where
        self.reason = reason
        super().__init__(f"DE {where} not fitted: {reason}")


def bh_adjust(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted P values, as R's ``p.adjust(p, "BH")`` (NaN ignored, kept)."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    n = q.size
    if n == 0:
        return out
    o = np.argsort(-q, kind="mergesort")
    adj = np.minimum.accumulate(q[o] * n / np.arange(n, 0, -1))
    res = np.empty(n)
    res[o] = np.minimum(adj, 1.0)
    out[ok] = res
    return out


def empty_de_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=float if c in _NUMERIC else object) for c in DE_COLUMNS})


_NUMERIC = {"dose_uM", "time_h", "logFC", "AveExpr", "t", "P_Value", "adj_P_within", "adj_P_across", "B", "CI_L",
            "CI_R", "stdev_unscaled", "stdev_scaled", "sigma", "df_total"}


def _expression(adata: ad.AnnData) -> np.ndarray:
    """(genes × samples) dense float matrix."""
    x = adata.X
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    return np.asarray(x, dtype=float).T


def _condition_meta(obs: pd.DataFrame, labels: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Treated-condition metadata by label (first sample in obs order; sets joined with '|')."""
    df = obs.assign(_label=labels["label"].to_numpy(), _dose=labels["dose_uM"].to_numpy())
    df = df.loc[~df["is_control"].to_numpy(dtype=bool)]

    def first_or_join(s: pd.Series):
        vals = [v for v in pd.unique(s.astype(object)) if v is not None and not (isinstance(v, float) and np.isnan(v))]
        return None if not vals else (str(vals[0]) if len(vals) == 1 else "|".join(sorted(map(str, vals))))

    g = df.groupby("_label", sort=False)
    meta = pd.DataFrame({
        "cell_type": g["cell_type"].agg(first_or_join),
        "pubchem_cid": g["pubchem_cid"].agg(first_or_join),
        "perturbagen": g["perturbagen"].agg(first_or_join),
        "dose_uM": g["_dose"].first().astype(float),
        "time_h": g["pert_time_h"].first().astype(float),
    })
    if mode == "sep":
        meta["plate"] = g["plate"].agg(first_or_join)
        meta["well"] = g["well"].agg(first_or_join)
    else:  # a group condition pools replicates across wells and plates
        meta["plate"] = None
        meta["well"] = None
    return meta


def run_de_unit(adata_subset: ad.AnnData, unit: DEUnit, limma, *, strict: bool = False
                ) -> tuple[pd.DataFrame, dict]:
    """Fit one stratum / batch.

    Parameters
    ----------
    adata_subset
        Harmonized AnnData holding at least ``unit.sample_ids`` (selected by name).
    unit
        The unit spec from :func:`~cpb_assets.effects.strata.plan_units`.
    limma
        A :class:`~cpb_resources.limma.LimmaResource` (anything with its ``fit``).
    strict
        Raise :class:`DESkip` instead of returning a skipped row.

    Returns
    -------
    de_table
        One row per contrast × gene with :data:`DE_COLUMNS` (logFC in log2
        units; ``adj_P_across`` is BH over this unit's contrasts × genes).
    stratum_row
        The unit's strata-table row (:data:`STRATA_COLUMNS`).
    """
    t0 = time.perf_counter()
    where = f"{unit.dataset}/{unit.mode} stratum '{unit.stratum}' batch {unit.batch}/{unit.n_batches}"
    missing = [c for c in REQUIRED_OBS if c not in adata_subset.obs.columns]
    if missing:
        raise DEInputError(where, f"obs lacks columns {missing}")
    ids = list(unit.sample_ids)
    absent = [s for s in ids if s not in adata_subset.obs_names]
    if absent:
        raise DEInputError(where, f"{len(absent)} unit samples absent from the AnnData, e.g. {absent[:3]}")
    adata = adata_subset[ids]
    obs = adata.obs
    normalized = DATASET_INFO[unit.dataset].route == "normalized" if unit.dataset in DATASET_INFO else False
    notes = list(unit.notes)

    def skip(reason: str, **counts):
        if strict:
            raise DESkip(where, reason)
        row = skip_row(unit.dataset, unit.mode, unit.stratum, unit.batch, reason="; ".join([reason, *notes]),
                       seconds=time.perf_counter() - t0, **counts)
        return empty_de_table(), row

    labels = condition_labels(obs, unit.dataset, unit.mode, round_doses=unit.round_doses)
    ctrl = obs["is_control"].to_numpy(dtype=bool)
    n_all = len(obs)
    if not ctrl.any():
        return skip("no control samples", n_samples=n_all)
    if ctrl.all():
        return skip("no treated samples", n_samples=n_all, n_controls=n_all)
    # treated samples without a control at their time have nothing to be contrasted with
    times = obs["pert_time_h"].to_numpy(dtype=float)
    ctrl_times = pd.Series(times[ctrl])
    orphan = ~ctrl & ~pd.Series(times).isin(ctrl_times).to_numpy()
    if orphan.any():
        notes.append(f"{int(orphan.sum())} treated samples at times without controls dropped")
        keep = ~orphan
        adata, obs, labels, ctrl = adata[keep], obs.loc[keep], labels.loc[keep], ctrl[keep]
        if ctrl.all():
            return skip("no treated samples at a time with controls", n_samples=int(keep.sum()),
                        n_controls=int(ctrl.sum()))
    n_samples, n_controls = len(obs), int(ctrl.sum())

    x = _expression(adata)
    genes = [str(g) for g in adata.var_names]
    if normalized:
        # genes constant across the stratum carry no information and would
        # bias the variance prior towards zero; they are left out (counted in genes_kept)
        with np.errstate(invalid="ignore"):
            sd = np.nanstd(x, axis=1)
        informative = np.isfinite(sd) & (sd > 0)
        if not informative.any():
            return skip("every gene is constant (e.g. all zero) across the stratum", n_samples=n_samples,
                        n_controls=n_controls)
        if not informative.all():
            notes.append(f"{int((~informative).sum())} constant genes left out")
            x, genes = x[informative], [g for g, k in zip(genes, informative) if k]
    else:
        if not np.all(np.isfinite(x)) or np.any(x < 0) or np.any(x != np.round(x)):
            raise DEInputError(where, "the count route needs non-negative integer counts in X")
        if not np.any(x > 0):
            return skip("all genes are zero in every sample", n_samples=n_samples, n_controls=n_controls)
        empty = np.flatnonzero(x.sum(axis=0) == 0)
        if empty.size:
            return skip(f"{empty.size} samples with zero library size, e.g. {list(obs.index[empty[:3]])}",
                        n_samples=n_samples, n_controls=n_controls)

    des = build_design(obs, labels["label"])
    n_con = len(des.contrast_table)
    if n_con == 0:
        return skip("no treated condition shares a time with a control", n_samples=n_samples, n_controls=n_controls)
    bad = non_estimable(des.design, des.coef_labels)
    if bad and not any(c.startswith("plate") for c in des.design.columns):
        return skip(f"design ~0 + cond is not of full rank (confounded: {bad[:5]})", n_samples=n_samples,
                    n_controls=n_controls, n_contrasts=n_con)
    des, aliased, lost = estimable_design(des)
    if aliased:
        notes.append(f"{len(aliased)} aliased plate terms dropped (e.g. {aliased[:3]})")
    if lost:
        notes.append(f"{len(lost)} contrasts not estimable, a plate confounded with the condition "
                     f"(e.g. {lost[:3]})")
    if des.contrast_table.empty:
        return skip(f"design ~0 + cond + plate is not of full rank and no contrast is estimable "
                    f"(confounded: {lost[:5]})", n_samples=n_samples, n_controls=n_controls, n_contrasts=n_con)
    if n_samples - des.design.shape[1] < 1:
        return skip("no residual degrees of freedom (a single sample per condition)", n_samples=n_samples,
                    n_controls=n_controls, n_contrasts=n_con)

    try:
        res = limma.fit(x, genes, des.design, des.contrasts, normalized=normalized, stratum=where)
    except NothingToFit as exc:
        return skip(exc.problem, n_samples=n_samples, n_controls=n_controls, n_contrasts=n_con)

    # --- long table: contrasts × genes, joined by contrast name and gene ID
    ng, nc = len(res.genes), len(res.contrasts)
    ct = des.contrast_table.set_index("contrast").loc[res.contrasts]
    meta = _condition_meta(obs, labels, unit.mode).loc[ct["treated_label"]]
    rep = lambda v: np.repeat(np.asarray(v, dtype=object), ng)  # noqa: E731 - one value per contrast
    cols: dict[str, object] = {
        "dataset": unit.dataset, "mode": unit.mode, "stratum": unit.stratum,
        "contrast_id": rep([f"{unit.stratum}|{t}|{c}" for t, c in zip(ct["treated_label"], ct["control_label"])]),
        "treated_label": rep(ct["treated_label"]), "control_label": rep(ct["control_label"]),
    }
    for c in ["cell_type", "pubchem_cid", "perturbagen", "dose_uM", "time_h", "plate", "well"]:
        cols[c] = rep(meta[c])
    cols["gene"] = np.tile(np.asarray(res.genes, dtype=object), nc)
    flat = lambda m: np.asarray(m, dtype=float).T.reshape(-1)  # noqa: E731 - (genes × contrasts) → contrast-major
    for out, src in _TOPTABLE.items():
        cols[out] = flat(res.tables[src])
    cols["adj_P_across"] = bh_adjust(cols["P_Value"])
    cols["stdev_unscaled"] = flat(res.stdev_unscaled)
    cols["stdev_scaled"] = flat(res.stdev_unscaled * np.sqrt(res.s2_post)[:, None])
    cols["sigma"] = np.tile(res.sigma, nc)
    cols["df_total"] = np.tile(res.df_total, nc)
    de = pd.DataFrame(cols)[DE_COLUMNS]
    de["dose_uM"] = de["dose_uM"].astype(float)
    de["time_h"] = de["time_h"].astype(float)

    if res.warnings:
        notes.append("R warnings: " + " | ".join(res.warnings))
    row = {"dataset": unit.dataset, "mode": unit.mode, "stratum": unit.stratum, "batch": unit.batch,
           "n_samples": n_samples, "n_controls": n_controls, "n_contrasts": nc, "genes_kept": res.genes_kept,
           # robust eBayes gives per-gene priors: the median summarises them
           "df_prior": float(np.median(res.df_prior)), "s2_prior": float(np.median(res.s2_prior)),
           "status": "ok", "reason": "; ".join(notes), "seconds": time.perf_counter() - t0}
    return de, row


def adjust_across(de: pd.DataFrame) -> pd.DataFrame:
    """Recompute ``adj_P_across``: BH over all contrasts × genes of each stratum (all its batches)."""
    if de.empty:
        return de
    de = de.copy()
    for _, idx in de.groupby(["dataset", "mode", "stratum"], sort=False).indices.items():
        de.iloc[idx, de.columns.get_loc("adj_P_across")] = bh_adjust(de["P_Value"].to_numpy()[idx])
    return de


def run_de_partition(adata: ad.AnnData, dataset: str, mode: str, limma, log: Callable[[str], None] | None = None,
                     *, max_batch: int = 2500, strict: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fit every stratum / batch of one dataset × labeling mode.

    Parameters
    ----------
    adata
        Harmonized AnnData of the dataset (METHODS §2).
    dataset, mode
        Dataset key and ``group`` / ``sep``.
    limma
        :class:`~cpb_resources.limma.LimmaResource`.
    log
        Called with one progress line per unit (size and seconds).
    max_batch
        Non-control samples per fit before a stratum is batched.
    strict
        Raise on a unit that cannot be fitted instead of recording a skip.

    Returns
    -------
    de_table
        :data:`DE_COLUMNS`, ``adj_P_across`` over each whole stratum.
    strata_table
        :data:`STRATA_COLUMNS`, one row per unit (and per skipped stratum).
    """
    missing = [c for c in REQUIRED_OBS if c not in adata.obs.columns]
    if missing:
        raise DEInputError(f"{dataset}/{mode}", f"obs lacks columns {missing}")
    units, rows = plan_units(adata.obs, dataset, mode, max_batch=max_batch)
    if strict and rows:
        raise DESkip(f"{dataset}/{mode} stratum '{rows[0]['stratum']}'", rows[0]["reason"])
    tables = []
    for unit in units:
        de, row = run_de_unit(adata, unit, limma, strict=strict)
        rows.append(row)
        if not de.empty:
            tables.append(de)
        if log is not None:
            log(f"DE {dataset}/{mode} stratum {unit.stratum} batch {unit.batch}/{unit.n_batches}: "
                f"{row['n_samples']} samples ({row['n_controls']} controls), {row['n_contrasts']} contrasts, "
                f"{row['genes_kept']} genes, {row['status']}"
                f"{' (' + row['reason'] + ')' if row['status'] != 'ok' else ''}, {row['seconds']:.1f} s")
    de = adjust_across(pd.concat(tables, ignore_index=True)) if tables else empty_de_table()
    strata = pd.DataFrame(rows, columns=STRATA_COLUMNS)
    return de, strata
