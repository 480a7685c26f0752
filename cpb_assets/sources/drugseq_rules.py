"""Clean-up rules the three DRUG-seq readers share (Novartis, VCPI, GDPx2) and the count checks of bulk sources.

Pure functions (no Dagster). What is shared is the *rule*, not the layout:
counts are non-negative integers, ERCC spike-ins go, samples are dropped by
ordered rules (each sample counted once, under its first reason), doses are
turned into µM and times into hours (NaN, infinite or negative times are
quarantined), and a source's compound table must not give one ``source_id``
two different structures (METHODS §1).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cpb_assets.errors import SourceFormatError
from cpb_assets.harmonize import genes as gmap
from cpb_assets.harmonize.assemble import assemble_harmonized, is_synthetic
from cpb_assets.harmonize.quarantine import Quarantine
from cpb_assets.harmonize.schema import UNKNOWN
from cpb_assets.harmonize.units import UnitError, dose_to_uM, parse_time
from cpb_assets.sources.base import Harmonized
from cpb_assets.sources import readers
from cpb_assets.sources.readers import COMPOUND_RECORD_COLUMNS, MISSING_TEXT, empty_compound_records

__all__ = ["integer_counts", "require_columns", "drop_ercc", "strip_version", "apply_sample_filters",
           "dose_from_parts", "time_hours", "finish", "clean_records", "ensembl_symbols", "present"]


def integer_counts(values, file, field: str, *, sparse_out: bool = False):
    """Check that a count matrix holds non-negative integers; return it as int64.

    Parameters
    ----------
    values
        Array-like or scipy sparse matrix of counts (any numeric dtype). Of a
        sparse matrix only the stored values are checked.
    file, field
        Named in the error.
    sparse_out
        Return a sparse input as CSR (streaming readers); else dense.

    Returns
    -------
    numpy.ndarray or scipy.sparse.csr_matrix
        int64 counts, same shape.

    Raises
    ------
    SourceFormatError
        Non-numeric, non-finite, negative or fractional entries.
    """
    if sp.issparse(values):
        m = sp.csr_matrix(values)
        _check_integer_values(m.data, file, field, lambda k: tuple(int(v) for v in _sparse_pos(m, k)))
        out = m.astype(np.int64)
        out.eliminate_zeros()
        return out if sparse_out else out.toarray()
    arr = np.asarray(values)
    _check_integer_values(arr.ravel(), file, field, lambda k: tuple(int(v) for v in np.unravel_index(k, arr.shape)))
    return arr.astype(np.int64)


def _sparse_pos(m: sp.csr_matrix, k: int) -> tuple[int, int]:
    row = int(np.searchsorted(m.indptr, k, side="right") - 1)
    return row, int(m.indices[k])


def _check_integer_values(flat: np.ndarray, file, field: str, where) -> None:
    if flat.dtype.kind not in "iuf" and flat.dtype != bool:
        raise SourceFormatError(file, field, f"counts must be numeric, got dtype {flat.dtype}")
    if flat.dtype.kind == "f":
        bad = ~np.isfinite(flat)
        if bad.any():
            raise SourceFormatError(file, field, f"counts contain NaN or infinite values "
                                                 f"({int(bad.sum())}, first at {where(int(np.argmax(bad)))})")
        frac = flat != np.round(flat)
        if frac.any():
            k = int(np.argmax(frac))
            raise SourceFormatError(file, field, f"counts must be integers; {int(frac.sum())} fractional "
                                                 f"values (first {flat[k]!r} at {list(where(k))})")
    neg = flat < 0
    if neg.any():
        k = int(np.argmax(neg))
        raise SourceFormatError(file, field, f"counts must be >= 0; {int(neg.sum())} negative values "
                                             f"(first {flat[k]!r} at {list(where(k))})")


def require_columns(df: pd.DataFrame, required, file, what: str = "column") -> None:
    """:func:`readers.require_columns`; `what` is kept for callers that name the kind of column."""
    readers.require_columns(df, required, file)


def present(value) -> bool:
    """True unless `value` is a missing ID (None, NaN, '', 'nan', 'NA', …; see ``readers.MISSING_TEXT``)."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return False
    return str(value).strip() not in MISSING_TEXT


def ensembl_symbols(ids) -> pd.Series:
    """Symbols for Ensembl gene IDs (org.Hs.eg.db, HGNC ``MT-`` names); the ID itself when unknown."""
    table = gmap.gene_table(gene_type=None)
    sym = dict(zip(table["ensembl_id"], table["symbol"]))
    sym.update({ens: s for s, ens in gmap.MANUAL_ENSEMBL.items()})
    ids = pd.Index(ids).astype(str)
    return pd.Series([sym.get(i, i) for i in ids], index=ids, dtype=object)


def strip_version(ids) -> pd.Index:
    """``ENSG00000141510.17`` → ``ENSG00000141510``; other values unchanged (as text)."""
    return pd.Index([re.sub(r"^(ENSG\d{11})\.\d+$", r"\1", str(i)) for i in ids])


def drop_ercc(gene_ids: pd.Index, symbols: pd.Series | None, file, q: Quarantine) -> np.ndarray:
    """Keep-mask without ERCC spike-ins (by ID or symbol); the dropped ones are quarantined (level gene)."""
    ercc = np.asarray(pd.Index(gene_ids).astype(str).str.startswith("ERCC-"))
    if symbols is not None:
        ercc = ercc | np.asarray(pd.Series(symbols).astype(str).str.startswith("ERCC-"))
    q.add(file, pd.Index(gene_ids)[ercc], "ERCC spike-in", level="gene")
    return ~ercc


def apply_sample_filters(index: pd.Index, rules: list[tuple[str, np.ndarray]], file, q: Quarantine) -> np.ndarray:
    """Drop samples by ordered rules; each dropped sample is quarantined once, under its first reason.

    Returns the keep-mask.
    """
    dropped = np.zeros(len(index), dtype=bool)
    for reason, mask in rules:
        new = np.asarray(mask, dtype=bool) & ~dropped
        q.add(file, index[new], reason)
        dropped |= new
    return ~dropped


def dose_from_parts(value, unit, file, field) -> float:
    """A dose given as number + unit (``10``, ``'nM'``) in µM; :class:`UnitError` names file and field."""
    try:
        return dose_to_uM(float(value), str(unit))
    except (UnitError, ValueError, TypeError) as exc:
        raise UnitError(f"{file}: {field}: {exc}") from None


def time_hours(text) -> float:
    """Hours from ``'24.0'`` (hours implied), ``'24h'``, ``'24.0 hr'``, ``'1 d'``.

    Raises
    ------
    UnitError
        Unparseable, NaN, infinite or negative times.
    """
    s = str(text).strip()
    try:
        h = float(s)
    except ValueError:
        h = parse_time(s)
    if not np.isfinite(h) or h < 0:
        raise UnitError(f"time must be a finite number of hours >= 0, got {text!r}")
    return float(h)


def finish(samples: pd.DataFrame, X, genes: pd.DataFrame, *, dataset: str, registry: pd.DataFrame, file,
           q: Quarantine, notes: dict, files: list[Path]) -> Harmonized:
    """Assemble the harmonized AnnData of a bulk count source (``psbulk_cells`` −666, ``psbulk_counts`` = library)."""
    X = sp.csr_matrix(X, dtype=np.int64)
    samples = samples.copy()
    samples["psbulk_cells"] = UNKNOWN
    samples["psbulk_counts"] = np.asarray(X.sum(axis=1)).ravel().astype(np.int64)
    adata = assemble_harmonized(samples, X, genes, dataset=dataset, synthetic=is_synthetic(*files),
                                registry=registry, file=str(file))
    notes = {**notes, "n_samples": int(adata.n_obs), "n_genes": int(adata.n_vars),
             "n_controls": int(adata.obs["is_control"].sum()), "quarantine": q.summary()}
    return Harmonized(adata=adata, quarantine=q, notes=notes)


def clean_records(df: pd.DataFrame, file) -> pd.DataFrame:
    """Compound records in the contract's columns, one row per ``source_id``.

    Exact repeats of a row are merged; one ``source_id`` with two different
    non-empty structures (SMILES or InChIKey) is an error, because either
    choice would silently attach the wrong compound to its samples.

    Raises
    ------
    SourceFormatError
        Field ``smiles`` or ``inchikey``: conflicting rows for one ``source_id``.
    """
    extra = [c for c in df.columns if c not in COMPOUND_RECORD_COLUMNS]
    df = df[COMPOUND_RECORD_COLUMNS + extra].astype(object)
    df = df.map(lambda v: v.strip() if isinstance(v, str) else v)
    df = df.map(lambda v: v if present(v) else None)
    df = df[df["source_id"].notna()]
    for field in ("smiles", "inchikey"):
        per = df.dropna(subset=[field]).groupby("source_id")[field].nunique()
        bad = per[per > 1]
        if len(bad):
            sid = bad.index[0]
            vals = sorted(df.loc[(df["source_id"] == sid) & df[field].notna(), field].unique())
            raise SourceFormatError(file, field, f"source_id {sid!r} has {len(vals)} conflicting rows: {vals[:3]} "
                                                 f"({len(bad)} source_ids affected)")
    # repeats that only add information (a name, a catalog ID) are merged: first non-empty value wins
    df = df.groupby("source_id", sort=False, as_index=False).first()
    df = df.astype(object).where(df.notna(), None).reset_index(drop=True)
    return df if len(df) else empty_compound_records()
