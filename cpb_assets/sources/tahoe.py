"""Tahoe-100M: one cell-level h5ad per plate → QC → pseudobulk → harmonized AnnData.

Native form (Arc Institute's release, ``gs://arc-ctc-tahoe100/2025-02-25/``):

``h5ad/plate{N}_filt_Vevo_Tahoe100M_WServicesFrom_ParseGigalab.h5ad``
    14 plates. X = raw UMI counts (CSR, stored as floats). ``var`` has no
    columns: its index holds gene SYMBOLS, some of them more than once.
    obs is indexed by ``BARCODE_SUB_LIB_ID`` with columns ``sample`` (one
    treatment well, e.g. ``smp_1495``), ``gene_count``, ``tscp_count``,
    ``mread_count``, ``drugname_drugconc`` (a Python literal such as
    ``[('Infigratinib', 0.05, 'uM')]``; the vehicle is ``[('DMSO_TF', 0.0,
    'uM')]``), ``drug``, ``cell_line`` (Cellosaurus ID), ``sublibrary``,
    ``BARCODE``, ``pcnt_mito``, ``S_score``, ``G2M_score``, ``phase``,
    ``pass_filter``, ``cell_name``, ``plate``.
``metadata/gene_metadata.parquet``
    ``gene_symbol, ensembl_id, token_id``: the Ensembl map of the symbols.
``metadata/drug_metadata.parquet``
    ``drug, targets, moa-broad, moa-fine, human-approved, clinical-trials,
    gpt-notes-approval, canonical_smiles, pubchem_cid``.

Every sample is 24 h.

Gene axis: each var symbol takes the Ensembl ID the gene table gives it —
row by row when the table lists exactly the var symbols in var order, else
by symbol (a symbol the table maps to several Ensembl genes is ambiguous and
dropped). Var entries that are already Ensembl IDs keep them. Columns that
end on one Ensembl gene (a duplicated symbol, or a symbol and its alias) are
SUMMED into that gene and recorded in the quarantine (level ``gene``);
symbols without an Ensembl ID are dropped and listed in ``gene_map_unmapped``.

Processing (METHODS §1–2): plates are processed one at a time and, within a
plate, in row chunks of :data:`CHUNK_CELLS` cells, so peak memory does not grow
with the number of plates; single-cell QC (:mod:`cpb_assets.harmonize.pseudobulk`)
is applied before summing counts per (plate, well = ``sample``, perturbagen,
cell_type). A cell whose plate, well, condition or cell line is missing (None,
NaN or blank) fails the ``missing_group`` rule and is counted in the
quarantine; it never joins a group under a text such as ``'nan'``. The
source's own ``pass_filter`` flag is not used: our QC rules replace it. The
minimum-cell filter (50 cells) belongs to the DE layer, so ``psbulk_cells``
is kept exact and no group is dropped here.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cpb_assets.errors import SourceFormatError
from cpb_assets.harmonize import pseudobulk as pb
from cpb_assets.harmonize.assemble import assemble_harmonized, is_synthetic
from cpb_assets.harmonize.contexts import resolve_cell_types
from cpb_assets.harmonize.quarantine import Quarantine
from cpb_assets.harmonize.units import UnitError, dose_to_uM
from cpb_assets.sources.base import Harmonized, RemoteFile, empty_compound_records, find_source_file

DATASET = "tahoe100m"
TIME_H = 24.0  # Tahoe-100M treats every well for 24 h (paper Table 1)
CONTROL_DRUGS = {"DMSO_TF", "DMSO"}
# obs columns that form the pseudobulk group key: plate, well, perturbagen(+dose), cell line
GROUP_OBS = ["plate", "sample", "drugname_drugconc", "cell_line"]
KEY_COLUMNS = ["plate", "well", "condition", "cell_line"]
CHUNK_CELLS = 50_000
PLATE_GLOB = "plate*.h5ad"
GENE_TABLE_GLOB = "*gene_metadata*.parquet"
DRUG_TABLE_GLOB = "*drug_metadata*.parquet"
GENE_TABLE_COLUMNS = ["gene_symbol", "ensembl_id"]
_MISSING_TEXT = {"", "nan", "none", "null", "na"}

_BUCKET = "https://storage.googleapis.com/arc-ctc-tahoe100/2025-02-25"
REMOTE_FILES: dict[str, list[RemoteFile]] = {
    DATASET: [
        RemoteFile(f"{_BUCKET}/h5ad/plate{n}_filt_Vevo_Tahoe100M_WServicesFrom_ParseGigalab.h5ad",
                   f"plate{n}_filt_Vevo_Tahoe100M_WServicesFrom_ParseGigalab.h5ad", None, "CC0-1.0")
        for n in range(1, 15)
    ] + [
        RemoteFile(f"https://huggingface.co/datasets/tahoebio/Tahoe-100M/resolve/main/metadata/{name}",
                   name, None, "CC0-1.0")
        for name in ("gene_metadata.parquet", "drug_metadata.parquet")
    ],
}


# --------------------------------------------------------------------------- reading
_QUOTED = r"""(?:'([^']*)'|"([^"]*)")"""
_CONDITION = re.compile(r"^\s*\[\s*\(\s*" + _QUOTED + r"\s*,\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*,\s*"
                        + _QUOTED + r"\s*\)\s*\]\s*$")


def parse_drugname_drugconc(text: str) -> tuple[str, float, str]:
    """Split Tahoe's ``drugname_drugconc`` text into (drug, concentration, unit).

    ``"[('Erdafitinib ', 0.05, 'uM')]"`` → ``('Erdafitinib', 0.05, 'uM')``: the
    real files carry stray whitespace inside names, which is stripped. The
    text is matched by a regular expression, never evaluated.

    Raises
    ------
    ValueError
        Not a one-element list of (name, number, unit) tuples.
    """
    m = _CONDITION.match(str(text))
    if m is None:
        raise ValueError(f"expected [('drug', conc, 'unit')], got {text!r}")
    name, conc, unit = m.group(1) or m.group(2) or "", m.group(3), m.group(4) or m.group(5) or ""
    return re.sub(r"\s+", " ", name).strip(), float(conc), unit.strip()


def _open_h5(path: Path) -> h5py.File:
    """Open an h5ad for reading; an empty, truncated or non-HDF5 file is a SourceFormatError."""
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise SourceFormatError(path, "<h5ad>", f"not a readable HDF5/h5ad file (empty or truncated?): {exc}") from None


def _read_obs_column(f: h5py.File, col: str, path: Path) -> pd.Series:
    """One obs column as a categorical Series (missing values stay missing, never the text 'nan')."""
    import anndata.io as adio

    if "obs" not in f:
        raise SourceFormatError(path, "obs", "no obs group")
    if col not in f["obs"]:
        raise SourceFormatError(path, f"obs/{col}", "grouping column missing from the cell table")
    try:
        vals = adio.read_elem(f["obs"][col])
    except (OSError, KeyError, ValueError) as exc:
        raise SourceFormatError(path, f"obs/{col}", f"unreadable column: {exc}") from None
    s = pd.Series(vals) if isinstance(vals, pd.Categorical) else pd.Series(np.asarray(vals, dtype=object))
    s = s.astype(object)
    blank = s.map(lambda v: v is None or (isinstance(v, float) and np.isnan(v))
                  or str(v).strip().lower() in _MISSING_TEXT)
    return s.where(~blank, None).astype("category")


def read_plate_var(path: str | Path) -> pd.DataFrame:
    """The gene table of one plate file: ``name`` (var index: symbols in the release) and ``symbol``.

    Older exports carry ``gene_id`` (Ensembl) and ``gene_name`` columns; when
    present they give ``name`` and ``symbol``.
    """
    import anndata.io as adio

    path = Path(path)
    with _open_h5(path) as f:
        if "var" not in f:
            raise SourceFormatError(path, "var", "no var group")
        try:
            var = adio.read_elem(f["var"])
        except (OSError, KeyError, ValueError) as exc:
            raise SourceFormatError(path, "var", f"unreadable gene table: {exc}") from None
    ids = var["gene_id"] if "gene_id" in var.columns else var.index
    sym = var["gene_name"] if "gene_name" in var.columns else ids
    return pd.DataFrame({"name": np.asarray(ids, dtype=object).astype(str),
                         "symbol": np.asarray(sym, dtype=object).astype(str)})


def read_gene_table(folder: str | Path) -> pd.DataFrame | None:
    """The release's gene table (``gene_symbol, ensembl_id``), or None when the folder has none."""
    path = find_source_file(folder, GENE_TABLE_GLOB, required=False)
    if path is None:
        return None
    try:
        gt = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types on truncated files
        raise SourceFormatError(path, "<parquet>", f"not a readable parquet file: {exc}") from None
    for col in GENE_TABLE_COLUMNS:
        if col not in gt.columns:
            raise SourceFormatError(path, col, "column missing from the gene table")
    return pd.DataFrame({"gene_symbol": gt["gene_symbol"].astype(object).to_numpy(),
                         "ensembl_id": gt["ensembl_id"].astype(object).to_numpy()})


def gene_axis(var_names, gene_table: pd.DataFrame | None, file, symbols=None
              ) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Map the plate's var entries to the harmonized Ensembl gene axis.

    Parameters
    ----------
    var_names
        The var index (symbols, or Ensembl IDs in older exports).
    gene_table
        ``gene_symbol, ensembl_id`` (see the module docstring), or None.
    file
        Named in errors.
    symbols
        Symbols per var entry for the ``symbol`` column (default: `var_names`).

    Returns
    -------
    col_map
        int64 per var entry: the output gene column, -1 where dropped.
    genes
        Index Ensembl ID (unique), column ``symbol`` (first var entry of the gene).
    dropped
        ``input, reason`` of var entries without a human Ensembl gene.
    merged
        ``input, reason`` of var entries summed into a gene another entry
        also maps to (duplicate symbols).
    """
    names = pd.Series(np.asarray(var_names, dtype=object)).astype(str).str.strip()
    ens = pd.Series([None] * len(names), dtype=object)
    is_id = names.str.match(r"^ENS[A-Z]*G\d{11}").to_numpy()
    ens[is_id] = names[is_id]
    reason = pd.Series([None] * len(names), dtype=object)
    sym = ~is_id
    if sym.any():
        if gene_table is None:
            raise SourceFormatError(Path(file).parent / GENE_TABLE_GLOB, "<file>",
                                    "var holds gene symbols but no gene_metadata table maps them to Ensembl")
        gt_sym = gene_table["gene_symbol"].astype(str).str.strip()
        gt_ens = gene_table["ensembl_id"].astype(object)
        if len(gt_sym) == len(names) and (gt_sym.to_numpy() == names.to_numpy()).all():
            ens[sym] = gt_ens.to_numpy()[sym]  # the table lists the var entries in order
        else:
            ok = gt_ens.notna().to_numpy() & (gt_ens.astype(str).str.strip() != "").to_numpy()
            per = pd.DataFrame({"s": gt_sym[ok], "e": gt_ens[ok].astype(str).str.strip()}).drop_duplicates()
            n_ids = per.groupby("s")["e"].nunique()
            one = per[per["s"].isin(n_ids.index[n_ids == 1])].drop_duplicates("s").set_index("s")["e"]
            looked = names[sym].map(one)
            ens[sym] = looked.to_numpy()
            amb = sym & names.isin(n_ids.index[n_ids > 1]).to_numpy()
            reason[amb] = "symbol maps to several Ensembl genes in gene_metadata"
        none = sym & ens.isna().to_numpy() & reason.isna().to_numpy()
        reason[none] = "symbol without an Ensembl ID in gene_metadata"
    m = ens.astype(str).str.extract(r"^(ENSG\d{11})(\.\d+)?(_PAR_Y)?$")
    mapped = ens.notna().to_numpy()
    not_human = mapped & m[0].isna().to_numpy()
    par_y = mapped & m[2].notna().to_numpy()
    reason[not_human] = "not a human Ensembl gene ID"
    reason[par_y] = "PAR_Y copy of a pseudo-autosomal gene"
    keep = reason.isna().to_numpy()
    gene_of = m[0].where(pd.Series(keep), None)
    order = pd.Index(pd.unique(gene_of[keep]))
    col_map = np.full(len(names), -1, dtype=np.int64)
    col_map[keep] = order.get_indexer(gene_of[keep])
    first = pd.Series(np.flatnonzero(keep)).groupby(col_map[keep]).min().sort_index()
    sym_out = names if symbols is None else pd.Series(np.asarray(symbols, dtype=object)).astype(str)
    genes = pd.DataFrame({"symbol": sym_out.to_numpy()[first.to_numpy()]}, index=pd.Index(order, name="gene"))
    dropped = pd.DataFrame({"input": names[~keep].to_numpy(), "reason": reason[~keep].astype(str).to_numpy()})
    dup = keep & pd.Series(col_map).duplicated(keep="first").to_numpy()
    merged = pd.DataFrame({"input": names[dup].to_numpy(),
                           "reason": "duplicate var entry of one Ensembl gene (counts summed into it)"})
    return col_map, genes, dropped, merged


def summing_matrix(col_map: np.ndarray, n_out: int) -> sp.csr_matrix:
    """(n_var × n_out) 0/1 matrix: ``X @ S`` drops unmapped columns and sums columns of one gene."""
    rows = np.flatnonzero(col_map >= 0)
    return sp.csr_matrix((np.ones(len(rows), dtype=np.int64), (rows, col_map[rows])), shape=(len(col_map), n_out))


def _x_shape(f: h5py.File, path: Path) -> tuple[int, int]:
    if "X" not in f:
        raise SourceFormatError(path, "X", "no count matrix")
    X = f["X"]
    if isinstance(X, h5py.Dataset):
        return int(X.shape[0]), int(X.shape[1])
    enc = X.attrs.get("encoding-type", "")
    enc = enc.decode() if isinstance(enc, bytes) else str(enc)
    if enc != "csr_matrix":
        raise SourceFormatError(path, "X", f"encoding {enc!r}: cells must be rows of a CSR matrix")
    shape = tuple(int(v) for v in X.attrs["shape"])
    if len(X["indptr"]) != shape[0] + 1:
        raise SourceFormatError(path, "X/indptr", f"{len(X['indptr']) - 1} rows but shape says {shape[0]}")
    return shape


def _iter_x_chunks(f: h5py.File, path: Path, n_genes: int, chunk: int):
    """Yield (start, stop, CSR int64 block) over row chunks of X without loading X whole."""
    n_rows, n_cols = _x_shape(f, path)
    if n_cols != n_genes:
        raise SourceFormatError(path, "X", f"{n_cols} columns but var has {n_genes} genes")
    X = f["X"]
    try:
        if isinstance(X, h5py.Dataset):  # dense X
            for s in range(0, n_rows, chunk):
                block = np.asarray(X[s:s + chunk])
                problem = pb.check_counts(block)
                if problem:
                    raise SourceFormatError(path, "X", problem)
                yield s, min(s + chunk, n_rows), sp.csr_matrix(block.astype(np.int64))
            return
        indptr = X["indptr"][:]
        for s in range(0, n_rows, chunk):
            e = min(s + chunk, n_rows)
            lo, hi = int(indptr[s]), int(indptr[e])
            data = X["data"][lo:hi]
            problem = pb.check_counts(data)
            if problem:
                raise SourceFormatError(path, "X", problem)
            block = sp.csr_matrix((data.astype(np.int64), X["indices"][lo:hi], indptr[s:e + 1] - lo),
                                  shape=(e - s, n_cols))
            yield s, e, block
    except OSError as exc:  # a truncated file fails while reading its chunks
        raise SourceFormatError(path, "X", f"unreadable count matrix (truncated file?): {exc}") from None


def pseudobulk_plate(path: str | Path, *, col_map: np.ndarray, n_out: int, mito: np.ndarray, malat1_col: int | None,
                     q: Quarantine, chunk: int = CHUNK_CELLS,
                     thresholds: pb.QCThresholds = pb.QCThresholds()) -> tuple[pd.DataFrame, sp.csr_matrix]:
    """QC and pseudobulk one plate file, streaming its rows in chunks.

    Parameters
    ----------
    path
        The plate h5ad.
    col_map, n_out
        The gene axis (:func:`gene_axis`): output column per var entry (-1
        dropped) and the number of output genes.
    mito, malat1_col
        The ``MT-`` mask and MALAT1 column, both on the output axis.
    q
        Quarantine receiving per-plate, per-rule cell counts.

    Returns
    -------
    The plate's pseudobulk groups (key columns ``plate, well, condition,
    cell_line`` + ``psbulk_cells``, ``psbulk_counts``) and their summed
    counts on the output genes.

    Raises
    ------
    SourceFormatError
        X width differs from var, obs length from X rows, non-count values,
        or an unreadable (empty, truncated) file.
    """
    path = Path(path)
    col_map = np.asarray(col_map, dtype=np.int64)
    S = summing_matrix(col_map, n_out)
    parts = []
    qc_totals = dict.fromkeys(pb.QC_RULES, 0)
    with _open_h5(path) as f:
        n_rows, _ = _x_shape(f, path)
        cols = {c: _read_obs_column(f, c, path) for c in GROUP_OBS}
        for c, v in cols.items():
            if len(v) != n_rows:
                raise SourceFormatError(path, f"obs/{c}", f"{len(v)} obs rows but X has {n_rows} cells")
        keys = pd.DataFrame({"plate": cols["plate"], "well": cols["sample"],
                             "condition": cols["drugname_drugconc"], "cell_line": cols["cell_line"]})
        missing = keys.isna().any(axis=1).to_numpy()
        for s, e, block in _iter_x_chunks(f, path, len(col_map), chunk):
            block = sp.csr_matrix(block @ S)
            res = pb.cell_qc(block, mito=mito, malat1_col=malat1_col, group_missing=missing[s:e],
                             thresholds=thresholds)
            for rule, n in res.counts.items():
                qc_totals[rule] += n
            if res.passed.any():
                k = keys.iloc[s:e][res.passed].astype(str)  # no missing value left here (rule missing_group)
                parts.append(pb.pseudobulk(block[res.passed], k))
            del block, res
    plate_label = ",".join(sorted(keys["plate"].dropna().astype(str).unique())) or path.stem
    for rule in pb.QC_RULES:
        q.add_count(path.name, plate_label, pb.QC_REASONS[rule], qc_totals[rule], level="cell")
    if not parts:
        return pd.DataFrame(columns=KEY_COLUMNS + ["psbulk_cells", "psbulk_counts"]), sp.csr_matrix((0, n_out))
    return pb.combine_pseudobulk(parts, KEY_COLUMNS)


def _plate_files(folder: Path) -> list[Path]:
    files = sorted((p for p in folder.glob(PLATE_GLOB) if not p.name.startswith(".")),
                   key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)])
    if not files:
        raise SourceFormatError(folder / PLATE_GLOB, "<file>", "no Tahoe plate h5ad found")
    return files


# A plate runner pseudobulks one plate file and returns (groups, counts, quarantine rows);
# the default runs in this process, the harmonized asset passes one that runs each
# plate as a unit of work on the compute resource (local subprocesses or SLURM jobs): it receives every
# plate at once, so the plates run side by side, and returns their results in plate order.
PlateRunner = Callable[[list[Path], dict], list[tuple[pd.DataFrame, sp.csr_matrix, list[dict]]]]
PLATE_UNITS = True  # harmonize() accepts a plate_runner


def harmonize(folder: str | Path, dataset: str, registry: pd.DataFrame, *,
              chunk: int = CHUNK_CELLS, plate_runner: PlateRunner | None = None) -> Harmonized:
    """Harmonize Tahoe-100M from its per-plate h5ad files and gene table in `folder`.

    Plates are read one after another (and each in chunks of `chunk` cells);
    only the small per-plate pseudobulks are kept between plates. Each plate
    is one unit of work: `plate_runner` (default: in this process, one plate
    after another) receives every plate file and the gene axis ``{"col_map",
    "n_out", "mito", "malat1_col", "chunk"}`` and returns the plates' results
    in order.
    """
    folder = Path(folder)
    files = _plate_files(folder)
    q = Quarantine(dataset)
    var0 = read_plate_var(files[0])
    col_map, genes, dropped, merged = gene_axis(var0["name"], read_gene_table(folder), files[0], var0["symbol"])
    for reason, grp in dropped.groupby("reason"):
        q.add(files[0].name, grp["input"], reason, level="gene")
    if len(merged):
        q.add(files[0].name, merged["input"], merged["reason"].iloc[0], level="gene")
    mito = pb.mito_mask(genes["symbol"])
    malat1_col = int(genes.index.get_loc(pb.MALAT1_ENSEMBL)) if pb.MALAT1_ENSEMBL in genes.index else None
    axis = {"col_map": col_map, "n_out": len(genes), "mito": mito, "malat1_col": malat1_col, "chunk": chunk}
    for path in files:
        if not read_plate_var(path).equals(var0):
            raise SourceFormatError(path, "var", f"gene axis differs from {files[0].name}")
    plates = []
    if plate_runner is None:
        for path in files:
            plates.append(pseudobulk_plate(path, col_map=col_map, n_out=len(genes), mito=mito,
                                           malat1_col=malat1_col, q=q, chunk=chunk))
    else:
        for groups, counts, qrows in plate_runner(files, axis):
            q.rows.extend(qrows)
            plates.append((groups, counts))
    groups = pd.concat([g for g, _ in plates], ignore_index=True)
    X = sp.vstack([s for _, s in plates], format="csr")
    del plates
    samples, X = _samples(groups, X, q, folder)
    adata = assemble_harmonized(samples, X, genes, dataset=dataset, synthetic=is_synthetic(*files),
                                registry=registry, file=str(folder), suspension_type="cell")
    notes = {"plates": len(files), "cells_kept": int(samples["psbulk_cells"].sum()),
             "samples": int(adata.n_obs), "qc": q.summary(), "var_entries_summed": int(len(merged)),
             "groups_below_50_cells": int((samples["psbulk_cells"] < 50).sum())}
    return Harmonized(adata=adata, quarantine=q, unmapped_genes=dropped, notes=notes)


def _samples(groups: pd.DataFrame, X: sp.csr_matrix, q: Quarantine, folder: Path
             ) -> tuple[pd.DataFrame, sp.csr_matrix]:
    """Per-sample table from pseudobulk groups: parse conditions, map cell lines."""
    parsed = {}
    for cond in groups["condition"].unique():
        try:
            parsed[cond] = parse_drugname_drugconc(cond)
        except ValueError as exc:
            raise SourceFormatError(folder / PLATE_GLOB, "obs/drugname_drugconc", str(exc)) from None
    name = groups["condition"].map(lambda c: parsed[c][0])
    try:
        dose = np.array([dose_to_uM(parsed[c][1], parsed[c][2]) for c in groups["condition"]], dtype=float)
    except UnitError as exc:
        raise SourceFormatError(folder / PLATE_GLOB, "obs/drugname_drugconc", str(exc)) from None
    # cell lines the resolver cannot place are quarantined, counted in cells
    cell_type = resolve_cell_types(groups["cell_line"], q, str(folder), n=groups["psbulk_cells"])
    bad = cell_type.isna().to_numpy()
    ctrl = name.isin(CONTROL_DRUGS).to_numpy()
    samples = pd.DataFrame({
        "plate": groups["plate"].astype(str), "well": groups["well"].astype(str),
        "cell_type": cell_type, "perturbagen": name, "perturbagen_name": name,
        "is_control": ctrl, "pert_dose_uM": np.where(ctrl, 0.0, dose), "pert_time_h": TIME_H,
        "source_id": np.where(ctrl, None, name).astype(object),
        "psbulk_cells": groups["psbulk_cells"].astype(np.int64),
        "psbulk_counts": groups["psbulk_counts"].astype(np.int64),
    })
    keep_rows = np.flatnonzero(~bad)
    return samples.iloc[keep_rows].reset_index(drop=True), X[keep_rows]


def _clean_name(v) -> str:
    return re.sub(r"\s+", " ", str(v)).strip()


def _cid(v) -> str | None:
    """A PubChem CID as the text of a positive integer, else None (``'1234.0'`` → ``'1234'``)."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return None
    try:
        f = float(str(v).strip())
    except ValueError:
        return None
    return str(int(f)) if np.isfinite(f) and f > 0 and f == int(f) else None


def compound_records(folder: str | Path, dataset: str) -> pd.DataFrame:
    """Compounds from ``drug_metadata.parquet`` (else the plates' drug names), controls left out.

    The table's ``pubchem_cid`` is passed on as the optional ``pubchem_cid``
    column (a source-supplied CID the registry cross-checks against the
    structure).

    Raises
    ------
    SourceFormatError
        Field ``drug``: one drug listed twice with different structures or CIDs.
    """
    folder = Path(folder)
    meta = find_source_file(folder, DRUG_TABLE_GLOB, required=False)
    if meta is not None:
        try:
            dm = pd.read_parquet(meta)
        except Exception as exc:
            raise SourceFormatError(meta, "<parquet>", f"not a readable parquet file: {exc}") from None
        if "drug" not in dm.columns:
            raise SourceFormatError(meta, "drug", "column missing")
        names = dm["drug"].map(_clean_name)
        smiles = dm["canonical_smiles"] if "canonical_smiles" in dm.columns else pd.Series([None] * len(dm))
        cids = dm["pubchem_cid"] if "pubchem_cid" in dm.columns else pd.Series([None] * len(dm))
        out = pd.DataFrame({"source_id": names.to_numpy(), "name": names.to_numpy(),
                            "smiles": [None if s is None or (isinstance(s, float) and np.isnan(s)) or not str(s).strip()
                                       else str(s).strip() for s in smiles],
                            "inchikey": None, "catalog_id": None, "pubchem_cid": [_cid(c) for c in cids]})
        out = out.drop_duplicates()
        clash = out["source_id"].duplicated(keep=False)
        if clash.any():
            bad = sorted(out.loc[clash, "source_id"].unique())[:5]
            raise SourceFormatError(meta, "drug", f"drugs listed twice with different structures or CIDs: {bad}")
    else:
        names = set()
        for path in _plate_files(folder):
            with _open_h5(path) as f:
                cats = _read_obs_column(f, "drugname_drugconc", path).cat.categories
            try:
                names |= {parse_drugname_drugconc(c)[0] for c in cats}
            except ValueError as exc:
                raise SourceFormatError(path, "obs/drugname_drugconc", str(exc)) from None
        out = pd.DataFrame({"source_id": sorted(names), "name": sorted(names), "smiles": None,
                            "inchikey": None, "catalog_id": None, "pubchem_cid": None})
    out = out[~out["source_id"].isin(CONTROL_DRUGS)].reset_index(drop=True)
    return out if len(out) else empty_compound_records()
