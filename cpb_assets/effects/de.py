"""The DE layer: one limma fit per stratum (or batch), both labelings (METHODS §3).

One execution path, used by the asset, the tests and the benchmarks:

1. :func:`~cpb_assets.effects.strata.plan_units` splits a dataset × mode
   into independent :class:`~cpb_assets.effects.strata.DEUnit` (stratum or
   batch);
2. :func:`fit_units` fits units and writes each unit's rows to a staging
   folder (in process, or inside a compute-resource workload:
   :mod:`cpb_assets.effects.workloads`); a unit reads only its own samples
   (:func:`read_unit_samples`);
3. :func:`cpb_assets.effects.assemble.assemble_de` writes the partition's
   Parquet folder, one file per stratum/batch, with ``adj_P_across`` computed
   per stratum out of core.

:func:`run_de_partition` chains the three in process (tests, benchmarks).

Structural problems of a unit (no controls, no treated samples, no residual
degrees of freedom, nothing to contrast, no expressed genes) are not fitted:
the unit is recorded as ``skipped`` with the reason, and no numbers are
produced for it. A sample with a zero library is dropped from its unit (noted
in ``de_strata.reason``); the rest is fitted. Wrong input (counts that are not
non-negative integers on a count route, missing obs columns) raises
:class:`DEInputError`; an R failure raises
:class:`~cpb_resources.limma.LimmaFitError`. Both name the stratum.
"""
from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from pathlib import Path
from typing import Callable

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from cpb_assets.datasets import DATASET_INFO
from cpb_assets.effects.labels import condition_labels
from cpb_assets.effects.strata import DEUnit, build_design, lmfit_design, plan_units, skip_row
from cpb_resources.limma import NothingToFit
from cpb_resources.storage import atomic_path

log = logging.getLogger(__name__)

DE_COLUMNS = [
    "dataset", "mode", "stratum", "contrast_id", "treated_label", "control_label", "cell_type", "pubchem_cid",
    "perturbagen", "dose_uM", "time_h", "plate", "well", "gene", "logFC", "AveExpr", "t", "P_Value",
    "adj_P_within", "adj_P_across", "B", "CI_L", "CI_R", "stdev_unscaled", "stdev_scaled", "sigma", "df_total",
    "plate_confounded",
]
STRATA_COLUMNS = ["dataset", "mode", "stratum", "batch", "n_samples", "n_controls", "n_contrasts",
                  "n_plate_confounded", "genes_kept", "df_prior", "s2_prior", "status", "reason", "seconds"]
REQUIRED_OBS = ["plate", "well", "cell_type", "perturbagen", "is_control", "pert_dose_uM", "pert_time_h",
                "pubchem_cid", "psbulk_cells"]
_TOPTABLE = {"logFC": "logFC", "AveExpr": "AveExpr", "t": "t", "P_Value": "P.Value", "adj_P_within": "adj.P.Val",
             "B": "B", "CI_L": "CI.L", "CI_R": "CI.R"}
_STRING = {"dataset", "mode", "stratum", "contrast_id", "treated_label", "control_label", "cell_type", "pubchem_cid",
           "perturbagen", "plate", "well", "gene"}
# one Arrow schema for every file of the `de` table (dataset and mode live in the hive folder names)
DE_SCHEMA = pa.schema([(c, pa.string() if c in _STRING else pa.bool_() if c == "plate_confounded" else pa.float64())
                       for c in DE_COLUMNS])
HIVE_KEYS = ["dataset", "mode"]
FILE_SCHEMA = pa.schema([f for f in DE_SCHEMA if f.name not in HIVE_KEYS])


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
    adj = np.minimum.accumulate((n / np.arange(n, 0, -1)) * q[o])
    res = np.empty(n)
    res[o] = np.minimum(adj, 1.0)
    out[ok] = res
    return out


def unit_key(unit: DEUnit) -> str:
    """A file-name-safe, stable key of one unit (strata IDs may hold '|')."""
    digest = hashlib.sha256(f"{unit.stratum}\0{unit.batch}".encode()).hexdigest()[:10]
    safe = "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in unit.stratum)
    return f"{safe}.b{unit.batch:03d}.{digest}"


# ------------------------------------------------------------------ reading one unit's samples
def _h5_obs_rows(group, rows: np.ndarray) -> pd.DataFrame:
    """obs rows `rows` (increasing positions) of an h5ad, column by column, without reading other rows."""
    import h5py
    from anndata.io import read_elem

    def col(elem):
        enc = elem.attrs.get("encoding-type", "")
        if enc == "categorical":
            cats = read_elem(elem["categories"])
            codes = elem["codes"][rows]
            return pd.Categorical.from_codes(codes, categories=cats, ordered=bool(elem.attrs.get("ordered", False)))
        if enc.startswith("nullable-"):
            values = elem["values"][rows]
            mask = elem["mask"][rows]
            if enc == "nullable-string-array":
                arr = pd.array(np.asarray(values.astype(str) if values.dtype.kind == "S" else
                                          [v.decode() if isinstance(v, bytes) else v for v in values], dtype=object),
                               dtype="string")
            else:
                arr = pd.array(values, dtype={"nullable-integer": "Int64", "nullable-boolean": "boolean"}.get(enc))
            arr[mask] = pd.NA
            return arr
        if isinstance(elem, h5py.Dataset):
            if elem.dtype.kind in ("S", "O"):
                return np.asarray(elem.asstr()[rows], dtype=object)
            return elem[rows]
        raise DEInputError(f"obs/{elem.name}", f"unsupported obs encoding {enc!r}")

    index_name = group.attrs["_index"]
    order = list(group.attrs.get("column-order", []))
    data = {c: col(group[c]) for c in order}
    index = pd.Index(np.asarray(group[index_name].asstr()[rows], dtype=object), name=None)
    return pd.DataFrame(data, index=index)


def read_unit_samples(h5ad: str | Path, unit: DEUnit) -> ad.AnnData:
    """The unit's samples of a harmonized ``.h5ad``, read by row (dense or CSR X), in memory.

    Only ``unit.rows`` are read from X and obs (var in full); the names read
    must equal ``unit.sample_ids`` (a file changed since planning fails here).
    """
    import h5py
    from anndata.io import read_elem, sparse_dataset

    rows = np.asarray(unit.rows, dtype=np.int64)
    where = f"{unit.dataset}/{unit.mode} stratum '{unit.stratum}' batch {unit.batch}/{unit.n_batches}"
    if len(rows) != len(unit.sample_ids) or (len(rows) > 1 and np.any(np.diff(rows) <= 0)):
        raise DEInputError(where, "unit rows must be increasing positions, one per sample ID")
    with h5py.File(h5ad, "r") as f:
        obs = _h5_obs_rows(f["obs"], rows)
        var = read_elem(f["var"])
        xe = f["X"]
        if isinstance(xe, h5py.Dataset):
            x = xe[rows, :] if len(rows) else np.zeros((0, xe.shape[1]), dtype=xe.dtype)
        else:
            x = sparse_dataset(xe)[rows]
    if list(obs.index) != list(unit.sample_ids):
        raise DEInputError(where, f"{h5ad} changed since the units were planned (sample IDs at the unit's rows "
                                  "differ)")
    return ad.AnnData(X=x, obs=obs, var=var)


def _expression(adata: ad.AnnData) -> np.ndarray:
    """(genes × samples) dense float matrix (the unit only)."""
    x = adata.X
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    return np.asarray(x, dtype=float).T


def _condition_meta(obs: pd.DataFrame, labels: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Treated-condition metadata by label (first sample in obs order; sets joined with '|').

    ``dose_uM`` is the harmonized dose of the condition's first sample, not the
    4-decimal label dose (rounding belongs to the labels only).
    """
    df = obs.assign(_label=labels["label"].to_numpy())
    df = df.loc[~df["is_control"].to_numpy(dtype=bool)]

    def first_or_join(s: pd.Series):
        vals = [v for v in pd.unique(s.astype(object)) if v is not None and v is not pd.NA
                and not (isinstance(v, float) and np.isnan(v))]
        return None if not vals else (str(vals[0]) if len(vals) == 1 else "|".join(sorted(map(str, vals))))

    g = df.groupby("_label", sort=False)
    meta = pd.DataFrame({
        "cell_type": g["cell_type"].agg(first_or_join),
        "pubchem_cid": g["pubchem_cid"].agg(first_or_join),
        "perturbagen": g["perturbagen"].agg(first_or_join),
        "dose_uM": g["pert_dose_uM"].first().astype(float),
        "time_h": g["pert_time_h"].first().astype(float),
    })
    if mode == "sep":
        meta["plate"] = g["plate"].agg(first_or_join)
        meta["well"] = g["well"].agg(first_or_join)
    else:  # a group condition pools replicates across wells and plates
        meta["plate"] = None
        meta["well"] = None
    return meta


def _plain_obs(obs: pd.DataFrame) -> pd.DataFrame:
    obs = obs.copy()
    for c in obs.columns:
        if isinstance(obs[c].dtype, pd.CategoricalDtype) or str(obs[c].dtype) == "string":
            obs[c] = obs[c].astype(object).where(obs[c].notna(), None)
    return obs


def run_de_unit(adata_subset: ad.AnnData, unit: DEUnit, limma, *, strict: bool = False
                ) -> tuple[pa.Table, dict]:
    """Fit one stratum / batch.

    Parameters
    ----------
    adata_subset
        AnnData holding at least ``unit.sample_ids`` (selected by name).
    unit
        The unit spec from :func:`~cpb_assets.effects.strata.plan_units`.
    limma
        A :class:`~cpb_resources.limma.LimmaResource` (anything with its ``fit``).
    strict
        Raise :class:`DESkip` instead of returning a skipped row.

    Returns
    -------
    table
        Arrow table (:data:`FILE_SCHEMA`, no hive keys), one row per contrast
        × gene, sorted by contrast_id then gene; logFC in log2 units;
        ``adj_P_across`` is NaN here (set per stratum by the assembly).
    stratum_row
        The unit's strata-table row (:data:`STRATA_COLUMNS`).
    """
    t0 = time.perf_counter()
    where = f"{unit.dataset}/{unit.mode} stratum '{unit.stratum}' batch {unit.batch}/{unit.n_batches}"
    missing = [c for c in REQUIRED_OBS if c not in adata_subset.obs.columns]
    if missing:
        raise DEInputError(where, f"obs lacks columns {missing}")
    ids = list(unit.sample_ids)
    if list(adata_subset.obs_names) != ids:
        absent = [s for s in ids if s not in adata_subset.obs_names]
        if absent:
            raise DEInputError(where, f"{len(absent)} unit samples absent from the AnnData, e.g. {absent[:3]}")
        adata_subset = adata_subset[ids]
    obs = _plain_obs(adata_subset.obs)
    normalized = DATASET_INFO[unit.dataset].route == "normalized" if unit.dataset in DATASET_INFO else False
    notes = list(unit.notes)

    def skip(reason: str, **counts):
        if strict:
            raise DESkip(where, reason)
        row = skip_row(unit.dataset, unit.mode, unit.stratum, unit.batch, reason="; ".join([reason, *notes]),
                       seconds=time.perf_counter() - t0, **counts)
        return FILE_SCHEMA.empty_table(), row

    x = _expression(adata_subset)
    genes = [str(g) for g in adata_subset.var_names]
    del adata_subset
    if not normalized:
        if not np.all(np.isfinite(x)) or np.any(x < 0) or np.any(x != np.round(x)):
            raise DEInputError(where, "the count route needs non-negative integer counts in X")
        empty = x.sum(axis=0) == 0
        if empty.any() and not empty.all():
            # one empty library must not cost the stratum: the sample goes, the rest is fitted
            notes.append(f"{int(empty.sum())} samples with zero library size dropped "
                         f"({', '.join(map(str, obs.index[empty][:5]))})")
            x, obs = x[:, ~empty], obs.loc[~empty]
    labels = condition_labels(obs, unit.dataset, unit.mode, round_doses=unit.round_doses)
    ctrl = obs["is_control"].to_numpy(dtype=bool)
    n_all = len(obs)
    if not ctrl.any():
        return skip("no control samples", n_samples=n_all)
    if ctrl.all():
        return skip("no treated samples", n_samples=n_all, n_controls=n_all)
    # treated samples without a control at their time have nothing to be contrasted with
    times = obs["pert_time_h"].to_numpy(dtype=float)
    orphan = ~ctrl & ~pd.Series(times).isin(pd.Series(times[ctrl])).to_numpy()
    if orphan.any():
        notes.append(f"{int(orphan.sum())} treated samples at times without controls dropped")
        keep = ~orphan
        x, obs, labels, ctrl = x[:, keep], obs.loc[keep], labels.loc[keep], ctrl[keep]
    n_samples, n_controls = len(obs), int(ctrl.sum())

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
    elif not np.any(x > 0):
        return skip("all genes are zero in every sample", n_samples=n_samples, n_controls=n_controls)

    des = build_design(obs, labels["label"])
    n_con = len(des.contrast_table)
    if n_con == 0:
        return skip("no treated condition shares a time with a control", n_samples=n_samples, n_controls=n_controls)
    des, aliased, confounded = lmfit_design(des)
    if aliased:
        notes.append(f"{len(aliased)} aliased plate terms dropped as lmFit does (e.g. {aliased[:3]})")
    if confounded.any():
        bad = des.contrast_table.loc[confounded, "treated_label"].tolist()
        notes.append(f"{int(confounded.sum())} contrasts plate-confounded, kept and flagged (e.g. {bad[:3]})")
    if n_samples - des.design.shape[1] < 1:
        return skip("no residual degrees of freedom (a single sample per condition)", n_samples=n_samples,
                    n_controls=n_controls, n_contrasts=n_con)

    try:
        res = limma.fit(x, genes, des.design, des.contrasts, normalized=normalized, stratum=where)
    except NothingToFit as exc:
        return skip(exc.problem, n_samples=n_samples, n_controls=n_controls, n_contrasts=n_con)
    del x

    ct = des.contrast_table.set_index("contrast").loc[res.contrasts]
    meta = _condition_meta(obs, labels, unit.mode).loc[ct["treated_label"]]
    table = _long_table(unit, res, ct, meta)
    if res.warnings:
        notes.append("R warnings: " + " | ".join(res.warnings))
    row = {"dataset": unit.dataset, "mode": unit.mode, "stratum": unit.stratum, "batch": unit.batch,
           "n_samples": n_samples, "n_controls": n_controls, "n_contrasts": len(res.contrasts),
           "n_plate_confounded": int(ct["plate_confounded"].sum()), "genes_kept": res.genes_kept,
           # robust eBayes gives per-gene priors: the median summarises them
           "df_prior": float(np.median(res.df_prior)), "s2_prior": float(np.median(res.s2_prior)),
           "status": "ok", "reason": "; ".join(notes), "seconds": time.perf_counter() - t0}
    return table, row


def _long_table(unit: DEUnit, res, ct: pd.DataFrame, meta: pd.DataFrame) -> pa.Table:
    """contrasts × genes as an Arrow table, rows sorted by contrast_id then gene (built column-wise)."""
    ng, nc = len(res.genes), len(res.contrasts)
    cid = np.array([f"{unit.stratum}|{t}|{c}" for t, c in zip(ct["treated_label"], ct["control_label"])],
                   dtype=object)
    co = np.argsort(cid.astype(str), kind="stable")  # contrast order
    genes = np.asarray(res.genes, dtype=object)
    go = np.argsort(genes.astype(str), kind="stable")  # gene order within a contrast
    per_contrast = np.repeat(co, ng)  # row -> contrast (original position)
    per_gene = np.tile(go, nc)

    def rep(values, typ):
        return pa.array(list(values), type=typ).take(pa.array(per_contrast))

    def flat(m):  # (genes × contrasts) -> rows
        return np.asarray(m, dtype=float)[per_gene, per_contrast]

    cols: dict[str, pa.Array] = {
        "stratum": pa.array(np.full(ng * nc, unit.stratum, dtype=object), pa.string()) if ng * nc else
        pa.array([], pa.string()),
        "contrast_id": rep(cid, pa.string()),
        "treated_label": rep(ct["treated_label"], pa.string()),
        "control_label": rep(ct["control_label"], pa.string()),
    }
    for c in ["cell_type", "pubchem_cid", "perturbagen", "plate", "well"]:
        cols[c] = rep([None if v is None else str(v) for v in meta[c]], pa.string())
    for c in ["dose_uM", "time_h"]:
        cols[c] = pa.array(meta[c].to_numpy(dtype=float)[per_contrast])
    cols["gene"] = pa.array(genes.astype(str)[per_gene], pa.string())
    for out, src in _TOPTABLE.items():
        cols[out] = pa.array(flat(res.tables[src]))
    cols["adj_P_across"] = pa.array(np.full(ng * nc, np.nan))  # per stratum, by the assembly
    cols["stdev_unscaled"] = pa.array(flat(res.stdev_unscaled))
    cols["stdev_scaled"] = pa.array(flat(res.stdev_unscaled * np.sqrt(res.s2_post)[:, None]))
    cols["sigma"] = pa.array(np.asarray(res.sigma, dtype=float)[per_gene])
    cols["df_total"] = pa.array(np.asarray(res.df_total, dtype=float)[per_gene])
    cols["plate_confounded"] = pa.array(ct["plate_confounded"].to_numpy(dtype=bool)[per_contrast])
    return pa.table([cols[f.name] for f in FILE_SCHEMA], schema=FILE_SCHEMA)


# ------------------------------------------------------------------ fitting units
def staged_paths(staging: Path, unit: DEUnit) -> tuple[Path, Path]:
    """The staging files of one unit: its DE rows and its strata row."""
    key = unit_key(unit)
    return staging / f"{key}.de.parquet", staging / f"{key}.stratum.parquet"


def fit_units(source: str | Path | ad.AnnData, units: list[DEUnit], limma, staging: str | Path, *,
              strict: bool = False, log_line: Callable[[str], None] | None = None,
              row_group_rows: int = 1 << 17) -> list[dict]:
    """Fit `units` one after the other, each unit's rows written to `staging` at once (atomically).

    Parameters
    ----------
    source
        The harmonized ``.h5ad`` path (each unit reads only its rows) or an
        in-memory AnnData (tests).
    units
        Units of one dataset × mode.
    limma
        :class:`~cpb_resources.limma.LimmaResource`.
    staging
        Folder for ``<unit key>.de.parquet`` and ``<unit key>.stratum.parquet``.
    strict
        Raise on a unit that cannot be fitted instead of recording a skip.
    log_line
        Called with one progress line per unit.
    row_group_rows
        Parquet row-group size of the staged files (rows).

    Returns
    -------
    The strata rows of the units, in order.
    """
    staging = Path(staging)
    staging.mkdir(parents=True, exist_ok=True)
    rows = []
    for unit in units:
        where = f"{unit.dataset}/{unit.mode} stratum '{unit.stratum}' batch {unit.batch}/{unit.n_batches}"
        if isinstance(source, ad.AnnData):
            missing = [c for c in REQUIRED_OBS if c not in source.obs.columns]
            if missing:
                raise DEInputError(where, f"obs lacks columns {missing}")
            absent = [s for s in unit.sample_ids if s not in source.obs_names]
            if absent:
                raise DEInputError(where, f"{len(absent)} unit samples absent from the AnnData, e.g. {absent[:3]}")
            sub = source[list(unit.sample_ids)]
        else:
            sub = read_unit_samples(source, unit)
        table, row = run_de_unit(sub, unit, limma, strict=strict)
        del sub
        de_path, row_path = staged_paths(staging, unit)
        with atomic_path(de_path) as tmp:
            pq.write_table(table, tmp, row_group_size=row_group_rows)
        with atomic_path(row_path) as tmp:
            pd.DataFrame([row], columns=STRATA_COLUMNS).to_parquet(tmp, index=False)
        rows.append(row)
        line = (f"DE {unit.dataset}/{unit.mode} stratum {unit.stratum} batch {unit.batch}/{unit.n_batches}: "
                f"{row['n_samples']} samples ({row['n_controls']} controls), {row['n_contrasts']} contrasts "
                f"({row['n_plate_confounded']} plate-confounded), {row['genes_kept']} genes, {row['status']}"
                f"{' (' + row['reason'] + ')' if row['status'] != 'ok' else ''}, {row['seconds']:.1f} s")
        log.info(line)
        if log_line is not None:
            log_line(line)
        del table
    return rows


def run_de_partition(adata: ad.AnnData | str | Path, dataset: str, mode: str, limma,
                     log: Callable[[str], None] | None = None, *, max_batch: int = 2500, strict: bool = False,
                     workdir: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Plan, fit in process and assemble one dataset × mode; return the tables (tests, benchmarks).

    The same three steps as the asset (:func:`plan_units`, :func:`fit_units`,
    :func:`~cpb_assets.effects.assemble.assemble_de`); the assembled Parquet
    folder is read back, so what is returned is what the asset writes.

    Returns
    -------
    de_table
        :data:`DE_COLUMNS`, ``adj_P_across`` over each whole stratum, rows in
        the files' order (stratum, batch, contrast_id, gene).
    strata_table
        :data:`STRATA_COLUMNS`, one row per unit (and per skipped stratum).
    """
    from cpb_assets.effects.assemble import assemble_de, read_de_folder

    if isinstance(adata, ad.AnnData):
        obs = adata.obs
    else:
        backed = ad.read_h5ad(adata, backed="r")
        obs = backed.obs.copy()
        backed.file.close()
    missing = [c for c in REQUIRED_OBS if c not in obs.columns]
    if missing:
        raise DEInputError(f"{dataset}/{mode}", f"obs lacks columns {missing}")
    units, skipped = plan_units(obs, dataset, mode, max_batch=max_batch)
    if strict and skipped:
        raise DESkip(f"{dataset}/{mode} stratum '{skipped[0]['stratum']}'", skipped[0]["reason"])
    with tempfile.TemporaryDirectory(prefix="cpb-de-", dir=workdir) as tmp:
        staging, out = Path(tmp) / "staging", Path(tmp) / "de"
        fit_units(adata, units, limma, staging, strict=strict, log_line=log)
        strata = assemble_de(staging, units, skipped, out, dataset, mode)
        de = read_de_folder(out, dataset, mode)
    return de, strata


def unit_memory_mb(n_samples: int, n_genes: int, n_contrasts: int) -> int:
    """Memory (MB) to ask for one unit's fit, from its shape.

    The worker holds the unit's (genes × samples) matrix a few times over
    (the AnnData rows, the dense float64 copy, R's counts, voom's E and
    weights, lmFit's fitted values: ~60 bytes per gene × sample) and the
    contrasts × genes results (R's topTable matrices, their numpy copies and
    the Arrow table written: ~400 bytes per row), on top of ~1 GB for
    Python, R and their libraries; 25% headroom, rounded up to 256 MB.
    """
    need = 1024 + (60 * n_genes * n_samples + 400 * n_genes * max(n_contrasts, 1)) / 2 ** 20
    return int(np.ceil(need * 1.25 / 256) * 256)
