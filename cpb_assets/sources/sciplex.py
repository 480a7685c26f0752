"""sci-Plex 3 (Srivatsan et al. 2020, GEO GSE139944 / GSM4150378) → QC → pseudobulk.

Native form (GEO supplementary files of GSM4150378):

* ``…_screen_UMI.count.matrix.gz`` — headerless, tab-separated coordinate
  triplets ``gene_index  cell_index  count`` (1-based; genes × cells, cell-major);
* ``…_screen_cell.annotations.txt.gz`` — headerless TSV ``cell  sample``, the
  matrix's cell order;
* ``…_screen_gene.annotations.txt.gz`` — ``id  gene_short_name`` (versioned
  GENCODE IDs; human ``ENSG`` and mouse ``ENSMUSG`` genes: a barnyard design);
* ``…_pData.txt.gz`` — space-separated, quoted, with header: per-cell hash
  assignments (``well_oligo``, ``plate_oligo``, ``culture_plate``, ``Combo``),
  ``cell_type`` (A549 / K562 / MCF7), ``replicate``, ``time_point`` (h),
  ``dose`` (nM), ``vehicle`` (TRUE/FALSE), ``product_name``,
  ``catalog_number``; cells whose hash failed have NA there;
* ``…_hashTable_metadata.txt.gz`` — the legal conditions with ``name``,
  ``SMILES`` and ``CAS.Number`` per ``catalog_number`` (compound records).

Clean-up (METHODS §1–2, Appendix B): human genes only (mouse genes and
``_PAR_Y`` copies quarantined), versions stripped; every time point is kept
(24 h and the A549 72 h subset: the DE layer restricts to 24 h, not this
reader); vehicle cells (``vehicle`` TRUE, product names
``Vehicle``/``DMSO``/``control``) become DMSO with dose 0; doses nM → µM; cell
lines → Cellosaurus; single-cell QC; pseudobulk per (plate = ``plate_oligo``,
well = ``well_oligo``, perturbagen, cell_type, time). Cells whose time is
negative or infinite are quarantined with that reason; a missing time is a
missing grouping field. The 10-cell minimum is the DE layer's, so no group is
dropped here.

Streaming: the triplet file (~1e9 lines in the real screen) is read in blocks
of :data:`TRIPLET_BLOCK_BYTES`; the cells a block completes are turned into
an int32 CSR chunk, QC'd and summed into their pseudobulk groups at once, so
only one chunk of cells is ever held. This needs the file's cell-major order
(all triplets of a cell together, cells ascending), which the deposited file
has; a file out of that order is rejected with the ``sort`` command that
fixes it. A (gene, cell) pair listed twice is a format error.
"""
from __future__ import annotations

import csv
import gzip
import io
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import scipy.sparse as sp

from cpb_assets.errors import SourceFormatError
from cpb_assets.harmonize import pseudobulk as pb
from cpb_assets.harmonize.assemble import assemble_harmonized, is_synthetic
from cpb_assets.harmonize.contexts import resolve_cell_types
from cpb_assets.harmonize.quarantine import Quarantine
from cpb_assets.sources.base import Harmonized, RemoteFile, empty_compound_records, find_source_file

DATASET = "sciplex"
TRIPLET_BLOCK_BYTES = 1 << 22  # ~330 k triplet lines (4 MiB of text) per streamed block
CONTROL_NAMES = {"vehicle", "dmso", "control", "ctrl"}
# pData columns the pseudobulk group key and the condition need
REQUIRED_PDATA = ["cell", "plate_oligo", "well_oligo", "cell_type", "time_point", "dose", "vehicle",
                  "product_name", "catalog_number"]
GROUP_FIELDS = ["plate_oligo", "well_oligo", "cell_type", "time_point"]

_GEO = "https://ftp.ncbi.nlm.nih.gov/geo/samples/GSM4150nnn/GSM4150378/suppl"
_FILES = {  # sha256 as recorded in two independent public ingest scripts; None where only one
    "GSM4150378_sciPlex3_A549_MCF7_K562_screen_UMI.count.matrix.gz": None,
    "GSM4150378_sciPlex3_A549_MCF7_K562_screen_cell.annotations.txt.gz": None,
    "GSM4150378_sciPlex3_A549_MCF7_K562_screen_gene.annotations.txt.gz":
        "fbe43028cfb75dc5ebf383cbbbb100da6b51e7be8e2e74f6354f7c59b9fda7c2",
    "GSM4150378_sciPlex3_pData.txt.gz": None,
    "GSM4150378_sciPlex3_A549_MCF7_K562_hashTable_metadata.txt.gz":
        "98a65191d343d149c5742cf6e7b734d403e853d165da800fa2daea41b978a2ff",
}
REMOTE_FILES: dict[str, list[RemoteFile]] = {
    DATASET: [RemoteFile(f"{_GEO}/{name}", name, sha, "GEO public (NCBI GEO data policy)")
              for name, sha in _FILES.items()],
}


# --------------------------------------------------------------------------- reading

_GZIP_ERRORS = (EOFError, OSError, zlib.error, UnicodeDecodeError)


def _open_text(path: Path):
    """A UTF-8 text stream of `path`, decompressing gzip (found by its magic bytes, not its name)."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if not magic:
        raise SourceFormatError(path, "<file>", "empty file")
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _read_table(path: Path, **kw) -> pd.DataFrame:
    """pandas.read_csv on the (decompressed) stream; gzip, encoding and parse failures name the file."""
    try:
        with _open_text(path) as fh:
            return pd.read_csv(fh, **kw)
    except pd.errors.ParserError as exc:
        raise SourceFormatError(path, "<table>", f"malformed table: {exc}") from None
    except pd.errors.EmptyDataError:
        raise SourceFormatError(path, "<file>", "no rows") from None
    except _GZIP_ERRORS as exc:
        raise SourceFormatError(path, "<gzip>", f"truncated or corrupt file, or not UTF-8: {exc}") from None


def _read_two_columns(path: Path, names: list[str], header_hint: str) -> pd.DataFrame:
    """A two-column annotation table, tab- or space-separated, with or without header."""
    try:
        with _open_text(path) as fh:
            first = fh.readline()
    except _GZIP_ERRORS as exc:
        raise SourceFormatError(path, "<gzip>", f"truncated or corrupt file, or not UTF-8: {exc}") from None
    sep = "\t" if "\t" in first else " "
    df = _read_table(path, sep=sep, header=None, dtype=str, quotechar='"', keep_default_na=False,
                     usecols=[0, 1] if len(first.split(sep)) >= 2 else None)
    if df.shape[1] < 2:
        raise SourceFormatError(path, names[1], "expected two columns")
    df = df.iloc[:, :2]
    df.columns = names
    if len(df) and df.iloc[0, 0].strip().lower() in {header_hint, names[0].lower()}:
        df = df.iloc[1:].reset_index(drop=True)  # a header row
    return df


def read_gene_annotations(path: str | Path) -> pd.DataFrame:
    """``id``, ``gene_short_name`` in matrix row order."""
    path = Path(path)
    df = _read_two_columns(path, ["id", "gene_short_name"], "id")
    if df["id"].duplicated().any():
        raise SourceFormatError(path, "id", f"duplicate genes {df['id'][df['id'].duplicated()].unique()[:5].tolist()}")
    return df


def read_cell_annotations(path: str | Path) -> pd.DataFrame:
    """``cell``, ``sample`` in matrix column order."""
    path = Path(path)
    df = _read_two_columns(path, ["cell", "sample"], "cell")
    if df["cell"].duplicated().any():
        raise SourceFormatError(path, "cell", "duplicate cell barcodes")
    return df


_PDATA_CATEGORIES = ["plate_oligo", "well_oligo", "cell_type", "vehicle", "product_name", "catalog_number"]


def read_pdata(path: str | Path) -> pd.DataFrame:
    """The per-cell pData columns the reader needs (space-separated, quoted, ``NA`` for missing).

    Only :data:`REQUIRED_PDATA` is read, text columns as categoricals: one
    row per nucleus is the one thing held per cell.
    """
    path = Path(path)
    try:
        with _open_text(path) as fh:
            header = next(csv.reader([fh.readline()], delimiter=" ", quotechar='"'), [])
    except _GZIP_ERRORS as exc:
        raise SourceFormatError(path, "<gzip>", f"truncated or corrupt file, or not UTF-8: {exc}") from None
    for col in REQUIRED_PDATA:
        if col not in header:
            raise SourceFormatError(path, col, "grouping/condition column missing from the cell table")
    df = _read_table(path, sep=" ", quotechar='"', usecols=REQUIRED_PDATA, na_values=["NA"],
                     keep_default_na=False, dtype={c: "category" for c in _PDATA_CATEGORIES} | {"cell": str},
                     low_memory=False)
    if df["cell"].duplicated().any():
        raise SourceFormatError(path, "cell", "duplicate cell barcodes")
    return df


def _triplet_blocks(path: Path, block_bytes: int):
    """Parsed blocks of the triplet file: about `block_bytes` of text each, cut at line ends.

    The file is read with Python's gzip module (found by its magic bytes,
    not its name) one block at a time and each block parsed by pyarrow alone,
    so no reader reads ahead of the block being processed.
    """
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if not magic:
        raise SourceFormatError(path, "<file>", "empty file")
    opts = pacsv.ReadOptions(column_names=["g", "c", "v"], use_threads=False)
    conv = pacsv.ConvertOptions(column_types={"g": pa.int64(), "c": pa.int64(), "v": pa.float64()})
    parse = pacsv.ParseOptions(delimiter="\t")
    fh = gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")
    with fh:
        rest = b""
        while True:
            data = fh.read(block_bytes)
            if not data:
                break
            data = rest + data
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # no line end yet: keep reading
                rest = data
                continue
            rest = data[cut:]
            yield pacsv.read_csv(io.BytesIO(data[:cut]), read_options=opts, parse_options=parse,
                                 convert_options=conv)
        if rest.strip():
            yield pacsv.read_csv(io.BytesIO(rest), read_options=opts, parse_options=parse, convert_options=conv)


def iter_umi_triplets(path: str | Path, n_genes: int, n_cells: int, *, block_bytes: int | None = None):
    """Stream the UMI triplet file as int32 CSR chunks of whole cells.

    Yields
    ------
    (first_cell, stop_cell, chunk)
        0-based cell range [first_cell, stop_cell) and its (cells × genes)
        int32 CSR counts. Ranges are consecutive and together cover
        0..n_cells (cells without any triplet are empty rows).

    Raises
    ------
    SourceFormatError
        Not three numeric columns, indices out of range, counts that are not
        non-negative integers, a (gene, cell) pair listed twice, triplets not
        in cell-major order, or an empty / truncated file.
    """
    path = Path(path)
    done = 0  # cells [0, done) are yielded
    carry = None  # triplets of the last, possibly incomplete, cell

    def build(g, c, v, stop):
        nonlocal done
        key = c * n_genes + g
        order = np.argsort(key, kind="stable")
        key = key[order]
        if len(key) > 1 and np.any(key[1:] == key[:-1]):
            k = int(key[1:][key[1:] == key[:-1]][0])
            raise SourceFormatError(path, "gene_index/cell_index",
                                    f"(gene {k % n_genes + 1}, cell {k // n_genes + 1}) listed twice")
        rows = (c[order] - done).astype(np.int64)
        indptr = np.zeros(stop - done + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=stop - done), out=indptr[1:])
        chunk = sp.csr_matrix((v[order].astype(np.int32), g[order].astype(np.int32), indptr),
                              shape=(stop - done, n_genes))
        first = done
        done = stop
        return first, stop, chunk

    try:
        for batch in _triplet_blocks(path, block_bytes or TRIPLET_BLOCK_BYTES):
            if batch.num_columns != 3:
                raise SourceFormatError(path, "<columns>",
                                        f"{batch.num_columns} columns, expected gene_index cell_index count")
            g = batch.column(0).to_numpy(zero_copy_only=False)
            c = batch.column(1).to_numpy(zero_copy_only=False)
            v = batch.column(2).to_numpy(zero_copy_only=False)
            for name, idx, n in (("gene_index", g, n_genes), ("cell_index", c, n_cells)):
                if len(idx) and (idx.min() < 1 or idx.max() > n):
                    raise SourceFormatError(path, name, f"indices outside 1..{n}")
            problem = pb.check_counts(v)
            if problem:
                raise SourceFormatError(path, "count", problem)
            g, c = g - 1, c - 1
            if carry is not None:
                g, c, v = (np.concatenate([a, b]) for a, b in zip(carry, (g, c, v)))
            if len(c) and (np.any(np.diff(c) < 0) or c[0] < done):
                raise SourceFormatError(path, "cell_index",
                                        "triplets are not in cell-major order (all lines of a cell together, "
                                        "cells ascending); sort the file with: zcat FILE | sort -k2,2n -k1,1n")
            if not len(c):
                continue
            last = int(c[-1])
            tail = c == last
            carry = (g[tail], c[tail], v[tail])
            if last > done:
                yield build(g[~tail], c[~tail], v[~tail], last)
    except (pa.ArrowInvalid, OSError, EOFError, zlib.error) as exc:
        raise SourceFormatError(path, "count", f"not numeric tab-separated triplets, or a truncated file: {exc}"
                                ) from None
    g, c, v = carry if carry is not None else (np.zeros(0, np.int64),) * 3
    yield build(g, c, v, n_cells)


def read_umi_triplets(path: str | Path, n_genes: int, n_cells: int) -> sp.csr_matrix:
    """The whole triplet file as a cells × genes int32 CSR (small files and tests only)."""
    chunks = [chunk for _, _, chunk in iter_umi_triplets(path, n_genes, n_cells)]
    return sp.vstack(chunks, format="csr").astype(np.int32)


def _is_true(x) -> bool:
    return str(x).strip().upper() in {"TRUE", "T", "1"}


def harmonize(folder: str | Path, dataset: str, registry: pd.DataFrame, *,
              block_bytes: int | None = None) -> Harmonized:
    """Harmonize sci-Plex 3 from its GEO files in `folder`, streaming the triplets."""
    folder = Path(folder)
    f_mat = find_source_file(folder, "*UMI.count.matrix*")
    f_cells = find_source_file(folder, "*cell.annotations*")
    f_genes = find_source_file(folder, "*gene.annotations*")
    f_pdata = find_source_file(folder, "*pData*")
    genes_raw = read_gene_annotations(f_genes)
    cells = read_cell_annotations(f_cells)
    pdata = read_pdata(f_pdata)
    q = Quarantine(dataset)
    keep, genes, dropped = pb.ensembl_gene_axis(genes_raw["id"], genes_raw["gene_short_name"])
    for reason, grp in dropped.groupby("reason"):
        q.add(f_genes.name, grp["input"], reason, level="gene")
    # pData rows in matrix cell order; cells missing from pData have every field missing
    meta = pdata.set_index("cell").reindex(cells["cell"]).reset_index()
    time_h = pd.to_numeric(meta["time_point"], errors="coerce").to_numpy(dtype=float)
    bad_time = ~np.isnan(time_h) & (~np.isfinite(time_h) | (time_h < 0))
    for t in sorted(set(time_h[bad_time].tolist())):
        q.add_count(f_pdata.name, f"time_point={t:g}", "time point negative or infinite",
                    int((time_h == t).sum()), level="cell")
    vehicle = (meta["vehicle"].astype(object).map(_is_true).to_numpy(dtype=bool)
               | meta["product_name"].astype(str).str.strip().str.lower().isin(CONTROL_NAMES).to_numpy())
    name = pd.Series([None if v is None or (isinstance(v, float) and np.isnan(v)) else " ".join(str(v).split())
                      for v in meta["product_name"].astype(object)], dtype=object)
    dose_nM = pd.to_numeric(meta["dose"], errors="coerce").to_numpy()
    # cells without a cell type fail QC rule missing_group; named but unknown lines are quarantined
    named = meta["cell_type"].notna().to_numpy() & ~bad_time
    cell_type = pd.Series(None, index=meta.index, dtype=object)
    cell_type[named] = resolve_cell_types(meta.loc[named, "cell_type"], q, f_pdata.name, n=np.ones(named.sum()))
    unknown_line = named & cell_type.isna().to_numpy()
    missing = (meta[GROUP_FIELDS].isna().any(axis=1).to_numpy()
               | (~vehicle & (name.isna().to_numpy() | ~np.isfinite(dose_nM)
                              | meta["catalog_number"].isna().to_numpy())))
    use = ~bad_time & ~unknown_line
    # the group of every cell that can be grouped (-1: cannot)
    keys = pd.DataFrame({
        "plate": meta["plate_oligo"].astype(object), "well": meta["well_oligo"].astype(object),
        "perturbagen": np.where(vehicle, "DMSO", name.to_numpy()).astype(object),
        "cell_type": cell_type.to_numpy(),
        "dose_uM": np.where(vehicle, 0.0, dose_nM / 1000.0),  # deposited doses are nM
        "time_h": time_h,
        "source_id": np.where(vehicle, "", meta["catalog_number"].astype(object)).astype(object),
        "is_control": vehicle,
    })
    groupable = use & ~missing
    code = np.full(len(keys), -1, dtype=np.int64)
    kg = keys[groupable].astype({c: str for c in ["plate", "well", "perturbagen", "cell_type", "source_id"]})
    code[groupable] = kg.groupby(list(kg.columns), sort=False).ngroup().to_numpy()
    n_groups = int(code.max()) + 1 if groupable.any() else 0
    # row g of the group table is group g (ngroup numbers groups in first-appearance order)
    first = pd.Series(np.flatnonzero(groupable)).groupby(code[groupable]).min().sort_index().to_numpy()
    group_table = kg.loc[first].reset_index(drop=True) if n_groups else kg.iloc[:0]
    mito = pb.mito_mask(genes["symbol"])
    malat1_col = int(genes.index.get_loc(pb.MALAT1_ENSEMBL)) if pb.MALAT1_ENSEMBL in genes.index else None
    sums = sp.csr_matrix((n_groups, len(genes)), dtype=np.int64)
    n_cells_group = np.zeros(n_groups, dtype=np.int64)
    qc_totals = dict.fromkeys(pb.QC_RULES, 0)
    for s, e, chunk in iter_umi_triplets(f_mat, len(genes_raw), len(cells), block_bytes=block_bytes):
        sel = np.flatnonzero(use[s:e])
        if not len(sel):
            continue
        block = chunk[sel][:, keep]
        res = pb.cell_qc(block, mito=mito, malat1_col=malat1_col, group_missing=missing[s:e][sel])
        for rule, n in res.counts.items():
            qc_totals[rule] += n
        passed = sel[res.passed]
        if len(passed):
            g = code[s:e][passed]
            ind = sp.csr_matrix((np.ones(len(g), dtype=np.int64), (g, np.arange(len(g)))), shape=(n_groups, len(g)))
            sums = sums + sp.csr_matrix(ind @ sp.csr_matrix(block[res.passed], dtype=np.int64))
            n_cells_group += np.bincount(g, minlength=n_groups)
        del chunk, block, res
    for rule in pb.QC_RULES:
        q.add_count(f_pdata.name, "all plates", pb.QC_REASONS[rule], qc_totals[rule], level="cell")
    present = np.flatnonzero(n_cells_group > 0)
    groups = group_table.iloc[present].reset_index(drop=True)
    sums = sums[present]
    samples = pd.DataFrame({
        "plate": groups["plate"], "well": groups["well"], "cell_type": groups["cell_type"],
        "perturbagen": groups["perturbagen"], "perturbagen_name": groups["perturbagen"],
        "is_control": groups["is_control"].astype(bool), "pert_dose_uM": groups["dose_uM"].astype(float),
        "pert_time_h": groups["time_h"].astype(float),
        "source_id": groups["source_id"].replace("", None).astype(object),
        "psbulk_cells": n_cells_group[present],
        "psbulk_counts": np.asarray(sums.sum(axis=1), dtype=np.int64).ravel(),
    })
    adata = assemble_harmonized(samples, sums, genes, dataset=dataset,
                                synthetic=is_synthetic(f_mat, f_cells, f_genes, f_pdata), registry=registry,
                                file=str(f_pdata), suspension_type="nucleus")
    notes = {"cells_in_matrix": int(len(cells)), "cells_kept": int(samples["psbulk_cells"].sum()),
             "samples": int(adata.n_obs), "genes": int(adata.n_vars), "qc": q.summary(),
             "time_points_h": sorted(float(t) for t in pd.unique(samples["pert_time_h"]))}
    return Harmonized(adata=adata, quarantine=q, unmapped_genes=dropped, notes=notes)


def compound_records(folder: str | Path, dataset: str) -> pd.DataFrame:
    """Compounds keyed by ``catalog_number``: names and SMILES from the hash table (else pData)."""
    folder = Path(folder)
    f_hash = find_source_file(folder, "*hashTable_metadata*", required=False)
    if f_hash is not None:
        ht = _read_table(f_hash, sep="\t", dtype=str, keep_default_na=False,
                         na_values=["NA", ""])
        for col in ("catalog_number", "vehicle"):
            if col not in ht.columns:
                raise SourceFormatError(f_hash, col, "column missing")
        ht = ht[~ht["vehicle"].map(_is_true)]
        out = pd.DataFrame({"source_id": ht["catalog_number"].to_numpy(),
                            "name": ht.get("name", pd.Series([None] * len(ht))).to_numpy(),
                            "smiles": ht.get("SMILES", pd.Series([None] * len(ht))).to_numpy(),
                            "inchikey": None, "catalog_id": ht["catalog_number"].to_numpy()})
    else:
        pdata = read_pdata(find_source_file(folder, "*pData*"))
        pdata = pdata[~pdata["vehicle"].astype(object).map(_is_true).astype(bool) & pdata["catalog_number"].notna()]
        out = pd.DataFrame({"source_id": pdata["catalog_number"].to_numpy(),
                            "name": pdata["product_name"].to_numpy(), "smiles": None, "inchikey": None,
                            "catalog_id": pdata["catalog_number"].to_numpy()})
    out = out.astype(object).where(out.notna(), None).drop_duplicates("source_id").reset_index(drop=True)
    return out if len(out) else empty_compound_records()


