"""LINCS L1000 Phase I (GSE92742) and Phase II (GSE70138): Level 3 INF GCTX +
instance / perturbagen / gene info tables → harmonized AnnData.

The GEO layout (docs/sources.md): the Level 3 GCTX holds the matrix and only
the row IDs (Entrez gene IDs as text, 12,328 rows) and column IDs
(``inst_id``); everything else is in tab-separated tables beside it:
``*_gene_info.txt`` (``pr_is_lm`` marks the 978 landmarks), ``*_inst_info.txt``
(one row per instance), ``*_pert_info.txt`` (compounds, with ``pubchem_cid``),
``*_cell_info.txt``. Phase I doses are ``µM``/``nM`` (Phase II ``um``);
Phase I ``inst_info`` has no ``det_plate`` (the plate is ``inst_id`` before
``:``). Single-plate GCTX files that carry their own ``0/META`` fields (the
cmapPy / cmapR files) are read too.

Rules (METHODS §1–2): keep ``trt_cp`` and DMSO ``ctl_vehicle``; plate =
``det_plate``; doses to µM and times to hours; the 978 landmark genes, Entrez →
Ensembl; CIDs from the compound registry (the L1000 DE labels use them), which
takes the CIDs pert_info ships as the ``source_cid`` method.
The matrix is never held: the instance metadata are cleaned up first, then the
GCTX is streamed in windows of :data:`WINDOW` columns, each window's kept
instances × landmarks written into the harmonized h5ad (X dense float32,
:class:`~cpb_assets.harmonize.assemble.DenseH5adWriter`) before the next is
read; the reader returns that file (``Harmonized.written``).
Records that cannot be used are quarantined with a reason, one by one (an
unknown dose unit, a missing plate ID, NaN/inf values, a matrix column
without an inst_info row or the reverse); a broken file stops the partition
with :class:`SourceFormatError` naming it.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from cpb_assets.errors import SourceFormatError
from cpb_assets.harmonize.assemble import DenseH5adWriter, harmonized_frames, is_synthetic, scratch_h5ad_path
from cpb_assets.harmonize.contexts import resolve_cell_types
from cpb_assets.harmonize.quarantine import Quarantine
from cpb_assets.harmonize.units import UnitError, dose_to_uM, parse_dose, parse_time, time_to_h
from cpb_assets.sources.base import Harmonized, RemoteFile
from cpb_assets.sources.gctx import GCT, GCTXFile, gctx_ids, open_gctx
from cpb_assets.sources.readers import (check_not_empty, clean_ids, empty_compound_records, find_source_file,
                                        read_bytes, require_columns)

KEPT_PERT_TYPES = {"trt_cp", "ctl_vehicle"}
MISSING = {"-666", "-666.0", "", "nan", "None"}
INST_REQUIRED = ["inst_id", "pert_id", "pert_iname", "pert_type", "cell_id"]
MATRIX_GLOB = "*Level3*.gctx"
WINDOW = 1_024  # GCTX columns read at once (a slab of 1,024 × 12,328 float32 = 48 MiB)
N_GEO_ROWS = 12328  # rows of the real Level 3 matrices (978 landmarks + 11,350 inferred genes)

_GEO = "https://ftp.ncbi.nlm.nih.gov/geo/series"
REMOTE_FILES: dict[str, list[RemoteFile]] = {
    "l1000_phase1": [
        RemoteFile(f"{_GEO}/GSE92nnn/GSE92742/suppl/{f}", f, None, "LINCS data policy")
        for f in ["GSE92742_Broad_LINCS_Level3_INF_mlr12k_n1319138x12328.gctx.gz",
                  "GSE92742_Broad_LINCS_inst_info.txt.gz", "GSE92742_Broad_LINCS_pert_info.txt.gz",
                  "GSE92742_Broad_LINCS_cell_info.txt.gz", "GSE92742_Broad_LINCS_gene_info.txt.gz"]
    ],
    "l1000_phase2": [
        RemoteFile(f"{_GEO}/GSE70nnn/GSE70138/suppl/{f}", f, None, "LINCS data policy")
        for f in ["GSE70138_Broad_LINCS_Level3_INF_mlr12k_n345976x12328_2017-03-06.gctx.gz",
                  "GSE70138_Broad_LINCS_inst_info_2017-03-06.txt.gz",
                  "GSE70138_Broad_LINCS_pert_info_2017-03-06.txt.gz",
                  "GSE70138_Broad_LINCS_cell_info_2017-04-28.txt.gz",
                  "GSE70138_Broad_LINCS_gene_info_2017-03-06.txt.gz"]
    ],
}
GSE = {"l1000_phase1": "GSE92742", "l1000_phase2": "GSE70138"}

# quarantine reasons (one wording each, so that summaries group them)
NO_PROFILE = "inst_info row without a column in the GCTX"
NO_INST_INFO = "GCTX column without an inst_info row"
NO_PLATE = "missing plate ID"
NON_FINITE = "NaN or infinite expression values"


# --------------------------------------------------------------------------- reading

def read_info_table(path: str | Path, required: list[str] = ()) -> pd.DataFrame:
    """Read a LINCS info table (tab-separated, UTF-8, optionally gzipped).

    Any newline convention is accepted (the LINCS files exist with LF, CRLF
    and old-Mac CR endings). Values stay strings; ``-666`` means missing.

    Raises
    ------
    SourceFormatError
        Not UTF-8 (naming the line and column of the first bad byte), a
        required column missing, or a malformed table.
    """
    path = Path(path)
    raw = read_bytes(path)  # empty or truncated .gz -> SourceFormatError
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_no = raw[:exc.start].count(b"\n") + raw[:exc.start].count(b"\r") - raw[:exc.start].count(b"\r\n") + 1
        line_start = max(raw.rfind(b"\n", 0, exc.start), raw.rfind(b"\r", 0, exc.start)) + 1
        header = raw.splitlines()[0].decode("utf-8", "replace").split("\t")
        col = raw[line_start:exc.start].count(b"\t")
        field = header[col] if col < len(header) else f"column {col + 1}"
        raise SourceFormatError(path, field, f"byte 0x{raw[exc.start]:02x} on line {line_no} is not UTF-8 "
                                             f"(a latin-1 'µ'? re-save the file as UTF-8)") from exc
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    try:
        df = pd.read_csv(io.StringIO(text), sep="\t", dtype=str, keep_default_na=False)
    except pd.errors.ParserError as exc:
        raise SourceFormatError(path, "<table>", f"malformed table ({exc})") from exc
    for col in required:
        if col not in df.columns:
            raise SourceFormatError(path, col, "required column missing")
    return df


# (value column, unit column, "<value> <unit>" text column, converter of a pair, parser of a text)
_QUANTITIES = {
    "dose": ("pert_dose", "pert_dose_unit", "pert_idose", dose_to_uM, parse_dose),
    "time": ("pert_time", "pert_time_unit", "pert_itime", time_to_h, parse_time),
}


def _quantity(inst: pd.DataFrame, file: Path, kind: str, q: Quarantine) -> np.ndarray:
    """Dose in µM or time in hours per instance, from ``pert_<x>`` + ``pert_<x>_unit`` or a
    ``pert_i<x>`` string (``"10 µM"``, ``"10.0 um"``, ``"24 h"``); controls get dose 0; missing stays
    NaN. A value or unit that cannot be read quarantines that instance (reason names the field and
    the raw text) and leaves NaN."""
    value, unit, text, from_pair, from_text = _QUANTITIES[kind]
    has_pair = value in inst.columns and unit in inst.columns
    if not has_pair and text not in inst.columns:
        raise SourceFormatError(file, value, f"neither {value}/{unit} nor {text} present")
    out = np.full(len(inst), np.nan)
    control = (inst["pert_type"] != "trt_cp").to_numpy() if kind == "dose" else np.zeros(len(inst), bool)
    for i, row in enumerate(inst.itertuples(index=False)):
        if control[i]:
            out[i] = 0.0
            continue
        try:
            if has_pair and str(getattr(row, value)) not in MISSING:
                raw = f"{getattr(row, value)} {getattr(row, unit)}"
                out[i] = from_pair(float(getattr(row, value)), str(getattr(row, unit)))
            elif text in inst.columns and str(getattr(row, text)) not in MISSING:
                raw = str(getattr(row, text))
                out[i] = from_text(raw)
        except (UnitError, ValueError):
            field = unit if has_pair else text
            q.add(file, [row.inst_id], f"{kind} not understood ({field} {raw!r})")
            out[i] = np.nan
    return out


def _metadata_from_gct(gct: GCT | GCTXFile) -> pd.DataFrame:
    """Instance metadata carried inside a GCT(X) (as in single-plate files)."""
    inst = gct.col_meta.copy()
    for c in inst.columns:
        inst[c] = [("-666" if (isinstance(v, float) and v == -666) else
                    (f"{v:g}" if isinstance(v, float) else str(v))) for v in inst[c]]
    inst.insert(0, "inst_id", inst.index.astype(str))
    return inst.reset_index(drop=True)


def _plates_and_wells(inst: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """``det_plate``/``det_well`` (Phase II), else the parts of ``inst_id = <plate>:<well>`` (Phase I).
    Missing values are None, never the text 'None' or 'nan'."""
    parts = inst["inst_id"].astype(str).str.rsplit(":", n=1)
    from_id_plate = parts.map(lambda p: p[0] if len(p) == 2 else None)
    from_id_well = parts.map(lambda p: p[1] if len(p) == 2 else None)
    plate = clean_ids(inst["det_plate"]) if "det_plate" in inst.columns else clean_ids(from_id_plate)
    well = clean_ids(inst["det_well"]) if "det_well" in inst.columns else clean_ids(from_id_well)
    if "det_plate" in inst.columns:  # a blank det_plate: the inst_id still names the plate
        plate = plate.where(plate.notna(), clean_ids(from_id_plate))
        well = well.where(well.notna(), clean_ids(from_id_well))
    return plate.set_axis(inst.index), well.set_axis(inst.index)


def harmonize_gct(gct: GCT | GCTXFile, inst: pd.DataFrame, *, dataset: str, registry: pd.DataFrame,
                  matrix_file: Path, inst_file: Path, gene_info: pd.DataFrame | None = None,
                  matrix_columns: pd.Index | None = None, block: int = WINDOW) -> Harmonized:
    """Harmonize an L1000 matrix with its instance metadata into an h5ad written block by block
    (``Harmonized.written``; the folder of :func:`~cpb_assets.harmonize.assemble.harmonized_scratch`).

    Parameters
    ----------
    gct
        Level 3 matrix (genes × instances): in memory (:class:`GCT`, it may hold only the wanted
        columns) or a GCTX on disk (:class:`GCTXFile`, streamed `block` columns at a time).
    inst
        Instance metadata (``inst_info`` columns, strings).
    registry
        ``source_id`` (= pert_id) → ``pubchem_cid, cid_method``.
    gene_info
        The ``gene_info`` table (``pr_gene_id``, ``pr_is_lm``); None: the
        GCTX's own row metadata names genes and landmarks.
    matrix_columns
        Every column ID of the matrix file (default: the columns of `gct`),
        so that columns without an inst_info row are quarantined, not lost.
    block
        Matrix columns read (and written) at once: the reader's memory is one such window
        (its slab of every gene), whatever the number of instances.
    """
    q = Quarantine(dataset)
    require_columns(inst, INST_REQUIRED, inst_file)
    if inst["inst_id"].duplicated().any():
        dup = inst.loc[inst["inst_id"].duplicated(), "inst_id"].unique()[:5].tolist()
        raise SourceFormatError(inst_file, "inst_id", f"duplicate instance IDs {dup}")
    all_cols = pd.Index(matrix_columns if matrix_columns is not None else gct.col_meta.index).astype(str)
    orphan = all_cols[~all_cols.isin(inst["inst_id"])]
    q.add(matrix_file, orphan, NO_INST_INFO)
    keep = inst["pert_type"].isin(KEPT_PERT_TYPES)
    for pt, grp in inst[~keep].groupby("pert_type"):
        q.add(inst_file, grp["inst_id"], f"pert_type {pt} not kept (trt_cp and ctl_vehicle only)")
    inst = inst[keep]
    non_dmso = (inst["pert_type"] == "ctl_vehicle") & (inst["pert_iname"].str.upper() != "DMSO")
    q.add(inst_file, inst.loc[non_dmso, "inst_id"], "vehicle control other than DMSO")
    inst = inst[~non_dmso]
    in_matrix = inst["inst_id"].isin(gct.col_meta.index)
    q.add(inst_file, inst.loc[~in_matrix, "inst_id"], NO_PROFILE)
    inst = inst[in_matrix].reset_index(drop=True)

    n_before = len(q.rows)
    dose = _quantity(inst, inst_file, "dose", q)
    time = _quantity(inst, inst_file, "time", q)
    unreadable = set(r["record_id"] for r in q.rows[n_before:])
    bad = (~np.isfinite(dose) | ~np.isfinite(time)) & ~inst["inst_id"].isin(unreadable).to_numpy()
    q.add(inst_file, inst.loc[bad, "inst_id"], "dose or time missing")
    bad |= inst["inst_id"].isin(unreadable).to_numpy()
    plate, well = _plates_and_wells(inst)
    no_plate = ~bad & (plate.isna() | well.isna()).to_numpy()
    q.add(inst_file, inst.loc[no_plate, "inst_id"], NO_PLATE)
    bad |= no_plate
    # the rest are checked for their cell line
    cell = pd.Series(None, index=inst.index, dtype=object)
    cell[~bad] = resolve_cell_types(inst.loc[~bad, "cell_id"].set_axis(inst.loc[~bad, "inst_id"]), q,
                                    inst_file).to_numpy()
    ok = ~bad & cell.notna().to_numpy()

    genes, unmapped = _landmark_genes(gct.row_meta, matrix_file, q, gene_info)
    # the kept instances' landmark values go to the h5ad one window of columns at a time (never all
    # in memory); rows that hold a NaN/inf are noted on the way and removed from the file after
    kept = np.flatnonzero(ok)
    cols = gct.col_meta.index.get_indexer(inst["inst_id"].to_numpy()[kept])
    writer = DenseH5adWriter(scratch_h5ad_path(dataset), len(kept), len(genes), np.float32)
    try:
        for which, values in gct.column_blocks(cols, genes["row"].to_numpy(), block):
            writer.write_rows(which, values)
        nonfinite = writer.nonfinite_rows()
        if len(nonfinite):
            q.add(matrix_file, inst.loc[kept[nonfinite], "inst_id"], NON_FINITE)
            ok[kept[nonfinite]] = False
            writer.drop_rows(nonfinite)
        inst, dose, time = inst[ok].reset_index(drop=True), dose[ok], time[ok]
        cell, plate, well = (cell[ok].reset_index(drop=True), plate[ok].reset_index(drop=True),
                             well[ok].reset_index(drop=True))
        samples = pd.DataFrame({
            "plate": plate.to_numpy(), "well": well.to_numpy(), "cell_type": cell.to_numpy(),
            "perturbagen": inst["pert_iname"].to_numpy(), "perturbagen_name": inst["pert_iname"].to_numpy(),
            "pert_id": inst["pert_id"].to_numpy(),
            "is_control": (inst["pert_type"] == "ctl_vehicle").to_numpy(),
            "pert_dose_uM": dose, "pert_time_h": time,
            "source_id": inst["pert_id"].where(inst["pert_type"] == "trt_cp", None).to_numpy(),
        })
        synthetic = is_synthetic(Path(matrix_file), Path(inst_file), _gctx_synthetic_attr(matrix_file))
        obs, var, uns = harmonized_frames(samples, genes.set_index("ensembl_id"), dataset=dataset,
                                          synthetic=synthetic, registry=registry, file=str(inst_file))
        written = writer.finish(obs, var, uns)
    except BaseException:
        writer.abort()
        raise
    notes = {"instances_kept": int(written.n_obs), "instances_dropped": int(q.to_frame()["n"].sum()),
             "genes": int(written.n_vars), "genes_unmapped": int(len(unmapped))}
    return Harmonized(None, q, unmapped, notes, written=written)


def _gctx_synthetic_attr(path: Path):
    """The GCTX root attribute ``synthetic`` (the demo writer's label), None for other files."""
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            return fh.attrs.get("synthetic")
    except OSError:  # GCT text, not HDF5
        return None


def _entrez_text(v) -> str | None:
    s = str(v).strip()
    try:
        f = float(s)
    except ValueError:
        return None
    return str(int(f)) if np.isfinite(f) and f.is_integer() and f > 0 else None


def _landmark_genes(rm: pd.DataFrame, matrix_file: Path, q: Quarantine, gene_info: pd.DataFrame | None = None
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Landmark rows (positions in the row metadata `rm`) with their Ensembl IDs; unmapped and
    duplicate genes quarantined.

    With `gene_info` (the GEO layout) the row IDs are Entrez IDs and
    ``pr_is_lm`` marks landmarks; without it the GCTX's own row metadata
    (``pr_gene_id``, ``pr_is_lmark``) is used.
    """
    from cpb_assets.harmonize.genes import entrez_to_ensembl

    if gene_info is not None:
        lm_ids = set(gene_info.loc[gene_info["_is_lm"], "_entrez"])
        entrez_all = pd.Series([_entrez_text(i) for i in rm.index], dtype=object)
        rows = np.flatnonzero(entrez_all.isin(lm_ids).to_numpy())
        entrez = entrez_all.iloc[rows].reset_index(drop=True)
    else:
        if "pr_gene_id" not in rm.columns:
            raise SourceFormatError(matrix_file, "0/META/ROW/pr_gene_id",
                                    "Entrez gene IDs missing (and no *_gene_info.txt beside the matrix)")
        rows = np.arange(len(rm))
        if "pr_is_lmark" in rm.columns:
            lm = pd.to_numeric(rm["pr_is_lmark"], errors="coerce").fillna(0).to_numpy() == 1
            rows = rows[lm]
        entrez = pd.Series(rm["pr_gene_id"].to_numpy()[rows]).map(_entrez_text)
    mapped = entrez_to_ensembl(entrez.tolist())
    table = pd.DataFrame({"row": rows, "entrez_id": entrez.to_numpy(),
                          "ensembl_id": mapped["ensembl_id"].to_numpy(), "symbol": mapped["symbol"].to_numpy()})
    unmapped = table[table["ensembl_id"].isna()]
    q.add(matrix_file, unmapped["entrez_id"], "Entrez ID without an Ensembl gene", level="gene")
    table = table[table["ensembl_id"].notna()]
    dup = table["ensembl_id"].duplicated()
    q.add(matrix_file, table.loc[dup, "entrez_id"], "second Entrez ID for the same Ensembl gene", level="gene")
    table = table[~dup]
    unmapped_frame = pd.DataFrame({"input": unmapped["entrez_id"].astype(str).to_numpy(),
                                   "reason": "Entrez ID without an Ensembl gene"})
    return table, unmapped_frame


def read_gene_info(path: Path) -> pd.DataFrame:
    """The ``gene_info`` table with ``_entrez`` (normalized text) and ``_is_lm`` (bool) added.

    Raises
    ------
    SourceFormatError
        No ``pr_gene_id`` or landmark flag (``pr_is_lm``), or no landmark at all.
    """
    info = read_info_table(path, ["pr_gene_id"])
    flag = next((c for c in ("pr_is_lm", "pr_is_lmark") if c in info.columns), None)
    if flag is None:
        raise SourceFormatError(path, "pr_is_lm", "landmark flag column missing")
    info["_entrez"] = info["pr_gene_id"].map(_entrez_text)
    info["_is_lm"] = info[flag].astype(str).str.strip().isin(["1", "1.0"]) & info["_entrez"].notna()
    if not info["_is_lm"].any():
        raise SourceFormatError(path, flag, "no landmark gene (pr_is_lm == 1)")
    return info


def _read_folder(folder: Path, dataset: str) -> tuple[GCTXFile, pd.DataFrame, Path, Path, pd.DataFrame | None]:
    """The GCTX (metadata read, matrix left on disk: the real matrices do not fit in memory), the
    instance metadata, both files, and the gene_info table (None without one)."""
    matrix_file = check_not_empty(find_source_file(folder, MATRIX_GLOB))
    gctx_ids(matrix_file)  # the IDs first: their errors name the ID datasets
    gctx = open_gctx(matrix_file)
    inst_file = find_source_file(folder, "*inst_info*.txt*", required=False)
    if inst_file is None:  # single-plate files carry their metadata in the GCTX columns
        return gctx, _metadata_from_gct(gctx), matrix_file, matrix_file, None
    inst = read_info_table(inst_file, INST_REQUIRED)
    gene_file = find_source_file(folder, "*gene_info*.txt*", required=False)
    gene_info = read_gene_info(gene_file) if gene_file is not None else None
    if gene_info is not None:
        lm = set(gene_info.loc[gene_info["_is_lm"], "_entrez"])
        if not any(_entrez_text(r) in lm for r in gctx.row_meta.index):
            raise SourceFormatError(matrix_file, "0/META/ROW/id",
                                    f"no row ID is a landmark Entrez ID of {gene_file.name}")
    return gctx, inst, matrix_file, inst_file, gene_info


def harmonize(folder: str | Path, dataset: str, registry: pd.DataFrame) -> Harmonized:
    """Harmonize one L1000 phase from its native files in `folder` (the h5ad written block by block)."""
    gctx, inst, matrix_file, inst_file, gene_info = _read_folder(Path(folder), dataset)
    return harmonize_gct(gctx, inst, dataset=dataset, registry=registry, matrix_file=matrix_file,
                         inst_file=inst_file, gene_info=gene_info)


def compound_records(folder: str | Path, dataset: str) -> pd.DataFrame:
    """Compounds named by the pert_info table (or, without one, by the instances), with the
    PubChem CID pert_info ships (``pubchem_cid``, ``-666`` = none) for the ``source_cid`` method."""
    folder = Path(folder)
    pert_file = find_source_file(folder, "*pert_info*.txt*", required=False)
    if pert_file is not None:
        pert = read_info_table(pert_file, ["pert_id", "pert_iname", "pert_type"])
        pert = pert[pert["pert_type"] == "trt_cp"]
    else:
        _, inst, *_ = _read_folder(folder, dataset)
        pert = inst[inst["pert_type"] == "trt_cp"].drop_duplicates("pert_id")
    if pert.empty:
        return empty_compound_records()

    def col(name):
        if name not in pert.columns:
            return [None] * len(pert)
        return [None if str(v) in MISSING else str(v) for v in pert[name]]

    return pd.DataFrame({"source_id": pert["pert_id"].to_numpy(), "name": col("pert_iname"),
                         "smiles": col("canonical_smiles"), "inchikey": col("inchi_key"),
                         "catalog_id": pert["pert_id"].to_numpy(),
                         "pubchem_cid": col("pubchem_cid")}).drop_duplicates("source_id")
