"""Ginkgo VCPI-0001 / VCPI-0002 (``vcpi_0001``, ``vcpi_0002``): the VCPI client payload saved as Parquet.

The data are gated (Ginkgo Datapoints' Virtual Cell Pharmacology Initiative):
the official client ``vcpi`` (token in ``TVC_TOKEN``) returns, for
``vcpi.load_experiment("vcpi-0001")``, a dict of three polars DataFrames:

``metadata``
    One row per sequenced sample: ``sequenced_id, container_id, row_id,
    column_id, compound, user_compound_id, compound_concentration,
    compound_concentration_unit, timepoint, cell_line, is_control`` …
    (``row_id`` may be a letter ``A``–``P`` or a 1-based number; rows can
    repeat exactly).
``data``
    ``gene_id`` (Ensembl, sometimes with a version suffix, plus ERCC
    spike-ins) and one count column per ``sequenced_id``.
``chemistry``
    One row per compound: ``compound, user_compound_id,
    canonical_smiles, inchi_key`` …

The user saves that dict with one Parquet file per key (this reader never
unpickles anything)::

    exp = vcpi.load_experiment("vcpi-0001")
    for key, frame in exp.items():
        frame.write_parquet(f"vcpi-0001_{key}.parquet")

giving ``vcpi-0001_metadata.parquet``, ``vcpi-0001_data.parquet`` and
``vcpi-0001_chemistry.parquet`` (the reader also takes ``metadata.parquet`` …
without the prefix; ``cpb ingest`` checks for the prefixed names). The count
table is read a block of samples at a time.

Clean-up (METHODS §1, in this order): ERCC spike-ins (genes); count columns
without a metadata row and metadata rows without counts; samples without a
plate (``container_id``) or with an unreadable well position; zero-count
libraries; controls whose ``user_compound_id`` is not DMSO.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cpb_assets.errors import SourceFormatError
from cpb_assets.harmonize.assemble import is_synthetic
from cpb_assets.harmonize.contexts import resolve_cell_types
from cpb_assets.harmonize.quarantine import Quarantine
from cpb_assets.harmonize.units import UnitError
from cpb_assets.sources.base import Harmonized, RemoteFile
from cpb_assets.sources.drugseq_rules import (apply_sample_filters, clean_records, dose_from_parts, drop_ercc,
                                              ensembl_symbols, finish, integer_counts, present, require_columns,
                                              strip_version, time_hours)
from cpb_assets.sources.readers import check_not_empty, well_name

DATASETS = ("vcpi_0001", "vcpi_0002")
METADATA_REQUIRED = ["sequenced_id", "container_id", "row_id", "column_id", "compound", "user_compound_id",
                     "compound_concentration", "compound_concentration_unit", "timepoint", "cell_line", "is_control"]
PAYLOAD_KEYS = ("metadata", "data", "chemistry")
SAMPLE_BLOCK = 256  # count columns read at a time

# Gated: no URL a downloader could fetch, so nothing to pin a checksum to; the access step that
# `cpb ingest` prints is the SourceSpec.access text in registry.py.
REMOTE_FILES: dict[str, list[RemoteFile]] = {"vcpi_0001": [], "vcpi_0002": []}


def payload_file(folder: str | Path, key: str) -> Path:
    """The one Parquet file of `folder` holding payload table `key` (``<exp>_<key>.parquet`` or ``<key>.parquet``).

    Raises
    ------
    SourceFormatError
        Field ``<file>``: none or several match.
    """
    folder = Path(folder)
    pat = re.compile(rf"^(.*[_-])?{key}([_-][^.]*)?\.parquet$")
    hits = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith(".") and pat.match(p.name))
    if len(hits) != 1:
        problem = "no file matches" if not hits else f"several files match: {[h.name for h in hits]}"
        raise SourceFormatError(folder / f"*{key}*.parquet", "<file>", problem)
    return hits[0]


def _parquet(path: Path):
    import pyarrow.parquet as pq

    check_not_empty(path)
    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError on truncated files
        raise SourceFormatError(path, "<parquet>", f"unreadable or truncated Parquet file: {exc}") from None


def _note(pf) -> str:
    meta = pf.schema_arrow.metadata or {}
    return meta.get(b"note", b"").decode("utf-8", "replace")


def vcpi_well(row_id, column_id) -> str | None:
    """``A01`` from a row given as a letter (``'B'``) or 1-based number (``2``, ``'2'``) and a column.

    None when the position cannot be read (missing, fractional, < 1).
    """
    if not present(row_id) or not present(column_id):
        return None
    r = str(row_id).strip()
    try:
        col = int(float(str(column_id).strip()))
    except ValueError:
        return None
    if col < 1:
        return None
    if re.fullmatch(r"[A-Za-z]{1,2}", r):
        return well_name(r.upper(), col)
    try:
        num = float(r)
    except ValueError:
        return None
    if num != int(num) or num < 1:
        return None
    return well_name(int(num) - 1, col)


def _is_true(v) -> bool:
    return str(v).strip().lower() in {"true", "1", "yes", "t"}


def harmonize(folder: str | Path, dataset: str, registry: pd.DataFrame) -> Harmonized:
    """Read one VCPI experiment's saved payload and return the harmonized AnnData.

    Returns
    -------
    Harmonized
        X: integer counts (samples × Ensembl genes, sparse); doses in µM,
        times in h; controls are the DMSO controls.
    """
    if dataset not in DATASETS:
        raise KeyError(f"vcpi does not serve {dataset!r}")
    folder = Path(folder)
    meta_file, data_file = payload_file(folder, "metadata"), payload_file(folder, "data")
    q = Quarantine(dataset)
    meta_pf, data_pf = _parquet(meta_file), _parquet(data_file)
    meta = meta_pf.read().to_pandas()
    require_columns(meta, METADATA_REQUIRED, meta_file)
    meta["sequenced_id"] = meta["sequenced_id"].astype(str)
    meta = meta.astype({c: object for c in meta.columns}).drop_duplicates()
    dup = meta["sequenced_id"].duplicated()
    if dup.any():
        raise SourceFormatError(meta_file, "sequenced_id", f"conflicting metadata rows for "
                                                           f"{meta.loc[dup, 'sequenced_id'].iloc[0]!r}")
    meta = meta.set_index("sequenced_id")

    names = data_pf.schema_arrow.names
    if "gene_id" not in names:
        raise SourceFormatError(data_file, "gene_id", "required column missing")
    sample_cols = [c for c in names if c != "gene_id"]
    if len(set(sample_cols)) != len(sample_cols):
        raise SourceFormatError(data_file, "<columns>", "duplicate sample columns")
    gene_ids = strip_version(data_pf.read(columns=["gene_id"]).column(0).to_pylist())
    if gene_ids.has_duplicates:
        raise SourceFormatError(data_file, "gene_id", f"duplicate genes {gene_ids[gene_ids.duplicated()][:3].tolist()}")
    gkeep = drop_ercc(gene_ids, None, data_file, q)
    gene_ids = gene_ids[gkeep]
    genes = pd.DataFrame({"symbol": ensembl_symbols(gene_ids).to_numpy()}, index=pd.Index(gene_ids, name="gene"))

    known = [c for c in sample_cols if c in meta.index]
    q.add(data_file, [c for c in sample_cols if c not in meta.index], "count column without a metadata row")
    q.add(meta_file, meta.index[~meta.index.isin(sample_cols)], "metadata row without counts")
    blocks = []
    for k in range(0, len(known), SAMPLE_BLOCK):
        cols = known[k:k + SAMPLE_BLOCK]
        table = data_pf.read(columns=cols)  # genes × samples of this block
        block = np.column_stack([table.column(i).to_numpy(zero_copy_only=False) for i in range(len(cols))])
        del table
        blocks.append(sp.csr_matrix(integer_counts(block, data_file, "data").T)[:, np.flatnonzero(gkeep)])
    X = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, len(gene_ids)), dtype=np.int64)

    meta = meta.loc[known]
    is_ctrl = meta["is_control"].map(_is_true).to_numpy(dtype=bool)
    uid = meta["user_compound_id"].astype(str).str.strip()
    wells = [vcpi_well(r, c) for r, c in zip(meta["row_id"], meta["column_id"])]
    keep = apply_sample_filters(meta.index, [
        ("missing plate ID (container_id)", ~meta["container_id"].map(present).to_numpy(dtype=bool)),
        ("unreadable well position (row_id, column_id)", np.array([w is None for w in wells], dtype=bool)),
        ("zero-count library", np.asarray(X.sum(axis=1)).ravel() == 0),
        ("non-DMSO control", is_ctrl & (uid.str.upper() != "DMSO").to_numpy()),
    ], meta_file, q)
    sel = np.flatnonzero(keep)  # X is indexed once, at the end (it is the large part)
    meta, is_ctrl = meta[keep], is_ctrl[keep]
    wells = [w for w, k in zip(wells, keep) if k]
    cell = resolve_cell_types(meta["cell_line"], q, meta_file)
    rows, ok = [], np.zeros(len(meta), dtype=bool)
    for i, (rid, r, ctrl, ct, well) in enumerate(zip(meta.index, meta.itertuples(index=False), is_ctrl, cell, wells)):
        if ct is None:  # quarantined as unknown cell line
            continue
        try:
            dose = 0.0 if ctrl else dose_from_parts(r.compound_concentration, r.compound_concentration_unit,
                                                    meta_file, "compound_concentration")
            time_h = time_hours(r.timepoint)
        except UnitError as exc:
            q.add(meta_file, [rid], f"unparseable dose or time: {exc}")
            continue
        rows.append({"plate": str(r.container_id).strip().replace(" ", "").replace("-", "_"), "well": well,
                     "cell_type": ct, "perturbagen": str(r.user_compound_id),
                     "perturbagen_name": str(r.user_compound_id),
                     "is_control": bool(ctrl), "pert_dose_uM": dose, "pert_time_h": time_h,
                     "source_id": None if ctrl else str(r.compound), "pert_id": str(r.compound)})
        ok[i] = True
    files = [meta_file, data_file]
    synthetic_note = _note(meta_pf) if is_synthetic(_note(meta_pf)) else ""
    return finish(pd.DataFrame(rows), X[sel[ok]], genes, dataset=dataset, registry=registry, file=meta_file, q=q,
                  notes={"files": [p.name for p in files]},
                  files=files + ([synthetic_note] if synthetic_note else []))


def compound_records(folder: str | Path, dataset: str) -> pd.DataFrame:
    """The compounds of the ``chemistry`` table (DMSO left out); see ``base``."""
    chem_file = payload_file(Path(folder), "chemistry")
    df = _parquet(chem_file).read().to_pandas()
    require_columns(df, ["compound", "user_compound_id"], chem_file)
    df = df[df["user_compound_id"].astype(str).str.strip().str.upper() != "DMSO"]
    get = lambda c: df[c] if c in df.columns else pd.Series([None] * len(df), index=df.index)  # noqa: E731
    return clean_records(pd.DataFrame({"source_id": df["compound"].astype(str), "name": get("user_compound_id"),
                                       "smiles": get("canonical_smiles"), "inchikey": get("inchi_key"),
                                       "catalog_id": get("catalog_id")}), chem_file)
