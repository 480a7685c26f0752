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
``_PAR_Y`` copies quarantined), versions stripped; 24 h kept (the A549 72 h
subset is quarantined); vehicle cells (``vehicle`` TRUE, product names
``Vehicle``/``DMSO``/``control``) become DMSO with dose 0; doses nM → µM; cell
lines → Cellosaurus; single-cell QC; pseudobulk per (plate = ``plate_oligo``,
well = ``well_oligo``, perturbagen, cell_type). The 10-cell minimum is the DE
layer's, so no group is dropped here.
"""
from __future__ import annotations

import csv
import gzip
import io
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
KEPT_TIME_H = 24.0  # METHODS / paper: sci-Plex restricted to 24 h
CONTROL_NAMES = {"vehicle", "dmso", "control", "ctrl"}
# pData columns the pseudobulk group key and the condition need
REQUIRED_PDATA = ["cell", "plate_oligo", "well_oligo", "cell_type", "time_point", "dose", "vehicle",
                  "product_name", "catalog_number"]
GROUP_FIELDS = ["plate_oligo", "well_oligo", "cell_type", "time_point"]
CONTROL_WELLS_PER_PLATE = 4  # synthetic plates: vehicle wells per culture plate
N_MOUSE_GENES = 15

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

def _text(path: Path) -> str:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceFormatError(path, "<encoding>", f"not UTF-8 ({exc})") from None


def _read_two_columns(path: Path, names: list[str], header_hint: str) -> pd.DataFrame:
    """A two-column annotation table, tab- or space-separated, with or without header."""
    text = _text(path)
    first = text.split("\n", 1)[0]
    sep = "\t" if "\t" in first else " "
    df = pd.read_csv(io.StringIO(text), sep=sep, header=None, dtype=str, quotechar='"', keep_default_na=False)
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


def read_pdata(path: str | Path) -> pd.DataFrame:
    """The per-cell pData table (space-separated, quoted, ``NA`` for missing)."""
    path = Path(path)
    try:
        df = pd.read_csv(io.StringIO(_text(path)), sep=" ", quotechar='"', low_memory=False,
                         na_values=["NA"], keep_default_na=False)
    except pd.errors.ParserError as exc:
        raise SourceFormatError(path, "<table>", f"malformed table: {exc}") from None
    for col in REQUIRED_PDATA:
        if col not in df.columns:
            raise SourceFormatError(path, col, "grouping/condition column missing from the cell table")
    if df["cell"].duplicated().any():
        raise SourceFormatError(path, "cell", "duplicate cell barcodes")
    return df


def read_umi_triplets(path: str | Path, n_genes: int, n_cells: int) -> sp.csr_matrix:
    """The UMI triplet file as a cells × genes CSR int64 matrix.

    Raises
    ------
    SourceFormatError
        Not three columns; indices out of range; negative, zero-free-but-fractional
        or non-numeric counts.
    """
    path = Path(path)
    try:  # pyarrow's CSV reader (multi-threaded C++): the real file has ~1e9 lines
        t = pacsv.read_csv(path, pacsv.ReadOptions(autogenerate_column_names=True),
                           pacsv.ParseOptions(delimiter="\t"))
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceFormatError(path, "count", f"not numeric triplets: {exc}") from None
    if t.num_columns != 3:
        raise SourceFormatError(path, "<columns>", f"{t.num_columns} columns, expected gene_index cell_index count")
    try:
        g, c, v = (t.column(k).to_numpy().astype(np.float64) for k in range(3))
    except (ValueError, TypeError, pa.ArrowInvalid) as exc:
        raise SourceFormatError(path, "count", f"not numeric triplets: {exc}") from None
    for name, idx, n in (("gene_index", g, n_genes), ("cell_index", c, n_cells)):
        if len(idx) and (np.any(idx != np.floor(idx)) or idx.min() < 1 or idx.max() > n):
            raise SourceFormatError(path, name, f"indices outside 1..{n} or not integers")
    problem = pb.check_counts(v)
    if problem:
        raise SourceFormatError(path, "count", problem)
    return sp.csr_matrix((v.astype(np.int64), (c.astype(np.int64) - 1, g.astype(np.int64) - 1)),
                         shape=(n_cells, n_genes))


def _is_true(x) -> bool:
    return str(x).strip().upper() in {"TRUE", "T", "1"}


def harmonize(folder: str | Path, dataset: str, registry: pd.DataFrame) -> Harmonized:
    """Harmonize sci-Plex 3 from its GEO files in `folder`."""
    folder = Path(folder)
    f_mat = find_source_file(folder, "*UMI.count.matrix*")
    f_cells = find_source_file(folder, "*cell.annotations*")
    f_genes = find_source_file(folder, "*gene.annotations*")
    f_pdata = find_source_file(folder, "*pData*")
    genes_raw = read_gene_annotations(f_genes)
    cells = read_cell_annotations(f_cells)
    pdata = read_pdata(f_pdata)
    X = read_umi_triplets(f_mat, len(genes_raw), len(cells))
    q = Quarantine(dataset)
    keep, genes, dropped = pb.ensembl_gene_axis(genes_raw["id"], genes_raw["gene_short_name"])
    for reason, grp in dropped.groupby("reason"):
        q.add(f_genes.name, grp["input"], reason, level="gene")
    X = X[:, keep]
    # pData rows in matrix cell order; cells missing from pData have every field missing
    meta = pdata.set_index("cell").reindex(cells["cell"]).reset_index()
    time_h = pd.to_numeric(meta["time_point"], errors="coerce").to_numpy()
    other_time = np.isfinite(time_h) & (time_h != KEPT_TIME_H)
    for t in sorted(set(time_h[other_time].tolist())):
        q.add_count(f_pdata.name, f"time_point={t:g}", f"time point {t:g} h not kept (24 h only)",
                    int((time_h == t).sum()), level="cell")
    vehicle = (meta["vehicle"].map(_is_true).to_numpy()
               | meta["product_name"].astype(str).str.strip().str.lower().isin(CONTROL_NAMES).to_numpy())
    name = meta["product_name"].astype(object).where(meta["product_name"].notna(), None)
    name = pd.Series([None if v is None else " ".join(str(v).split()) for v in name], dtype=object)
    dose_nM = pd.to_numeric(meta["dose"], errors="coerce").to_numpy()
    # cells without a cell type fail QC rule missing_group below; named but unknown lines are quarantined
    named = meta["cell_type"].notna().to_numpy() & ~other_time
    cell_type = pd.Series(None, index=meta.index, dtype=object)
    cell_type[named] = resolve_cell_types(meta.loc[named, "cell_type"], q, f_pdata.name, n=np.ones(named.sum()))
    unknown_line = named & cell_type.isna().to_numpy()
    missing = (meta[GROUP_FIELDS].isna().any(axis=1).to_numpy()
               | (~vehicle & (name.isna().to_numpy() | ~np.isfinite(dose_nM)
                              | meta["catalog_number"].isna().to_numpy())))
    use = ~other_time & ~unknown_line
    Xu = X[np.flatnonzero(use)]
    mito = pb.mito_mask(genes["symbol"])
    malat1_col = int(genes.index.get_loc(pb.MALAT1_ENSEMBL)) if pb.MALAT1_ENSEMBL in genes.index else None
    res = pb.cell_qc(Xu, mito=mito, malat1_col=malat1_col, group_missing=missing[use])
    for rule in pb.QC_RULES:
        q.add_count(f_pdata.name, "all plates", pb.QC_REASONS[rule], res.counts[rule], level="cell")
    sel = np.flatnonzero(use)[res.passed]
    keys = pd.DataFrame({
        "plate": meta["plate_oligo"].to_numpy()[sel].astype(str),
        "well": meta["well_oligo"].to_numpy()[sel].astype(str),
        "perturbagen": np.where(vehicle[sel], "DMSO", name.to_numpy()[sel]).astype(str),
        "cell_type": cell_type.to_numpy()[sel].astype(str),
        "dose_uM": np.where(vehicle[sel], 0.0, dose_nM[sel] / 1000.0),  # deposited doses are nM
        "time_h": time_h[sel],
        "source_id": np.where(vehicle[sel], "", meta["catalog_number"].astype(str).to_numpy()[sel]),
        "is_control": vehicle[sel],
    })
    groups, sums = pb.pseudobulk(X[sel], keys)
    samples = pd.DataFrame({
        "plate": groups["plate"], "well": groups["well"], "cell_type": groups["cell_type"],
        "perturbagen": groups["perturbagen"], "perturbagen_name": groups["perturbagen"],
        "is_control": groups["is_control"].astype(bool), "pert_dose_uM": groups["dose_uM"].astype(float),
        "pert_time_h": groups["time_h"].astype(float),
        "source_id": groups["source_id"].replace("", None).astype(object),
        "psbulk_cells": groups["psbulk_cells"], "psbulk_counts": groups["psbulk_counts"],
    })
    adata = assemble_harmonized(samples, sums, genes, dataset=dataset,
                                synthetic=is_synthetic(f_mat, f_cells, f_genes, f_pdata), registry=registry,
                                file=str(f_pdata), suspension_type="nucleus")
    notes = {"cells_in_matrix": int(len(cells)), "cells_kept": int(samples["psbulk_cells"].sum()),
             "samples": int(adata.n_obs), "genes": int(adata.n_vars), "qc": q.summary()}
    return Harmonized(adata=adata, quarantine=q, unmapped_genes=dropped, notes=notes)


def compound_records(folder: str | Path, dataset: str) -> pd.DataFrame:
    """Compounds keyed by ``catalog_number``: names and SMILES from the hash table (else pData)."""
    folder = Path(folder)
    f_hash = find_source_file(folder, "*hashTable_metadata*", required=False)
    if f_hash is not None:
        ht = pd.read_csv(io.StringIO(_text(f_hash)), sep="\t", dtype=str, keep_default_na=False,
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
        pdata = pdata[~pdata["vehicle"].map(_is_true) & pdata["catalog_number"].notna()]
        out = pd.DataFrame({"source_id": pdata["catalog_number"].to_numpy(),
                            "name": pdata["product_name"].to_numpy(), "smiles": None, "inchikey": None,
                            "catalog_id": pdata["catalog_number"].to_numpy()})
    out = out.astype(object).where(out.notna(), None).drop_duplicates("source_id").reset_index(drop=True)
    return out if len(out) else empty_compound_records()


# --------------------------------------------------------------------------- synthetic writer
_ROWS = "ABCDEFGH"
_LINE_NAMES = {"CVCL_0023": "A549", "CVCL_0004": "K562", "CVCL_0031": "MCF7"}


def write_synthetic(world, dataset: str, folder: str | Path, *, cells_per_well: tuple[int, int] | None = None,
                    library_size: float = 1400.0, defect_share: float = 0.06) -> list[Path]:
    """Write the SYNTHETIC sci-Plex 3 stand-in as GEO-style files (names say SYNTHETIC).

    Layout from ``DESIGNS['sciplex']``: one culture plate (``plate_oligo``)
    per (cell line, replicate) with :data:`CONTROL_WELLS_PER_PLATE` vehicle
    wells and one hash well per (compound, dose); doses written in nM. Messy
    on purpose: vehicles named ``Vehicle`` or ``DMSO``; an A549 72 h plate
    (quarantined); ~3% hash-failed cells with NA metadata; damaged cells for
    every QC rule; versioned gene IDs, mouse barnyard genes and one
    ``_PAR_Y`` copy in the gene annotations.
    """
    from cpb_assets.sources.demo_world import DESIGNS
    from cpb_assets.sources.tahoe import cell_counts, plant_defects
    from cpb_resources.storage import atomic_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    design = DESIGNS[dataset]
    cpw = cells_per_well or tuple(design.extra.get("cells_per_well", (20, 60)))
    rng = world.rng(dataset, "sciplex")
    wg = world.genes
    n_world = len(wg)
    mito = (wg["kind"] == "mito").to_numpy()
    malat1_col = int(np.flatnonzero((wg["kind"] == "malat1").to_numpy())[0])
    comps = world.compounds
    plates = []  # (plate_oligo, cell_type, replicate, time_h, wells[(comp, dose_uM)])
    k = 41
    for ct in design.cell_types:
        for rep in range(1, design.replicates + 1):
            wells = [(None, 0.0)] * CONTROL_WELLS_PER_PLATE + [(c, d) for c in design.compounds
                                                               for d in design.doses_uM]
            plates.append((f"plate{k}", ct, rep, KEPT_TIME_H, wells))
            k += 1
    # the real screen also has an A549 72 h subset: written, then quarantined by the reader
    a549 = design.cell_types[0]
    plates.append((f"plate{k}", a549, 1, 72.0, [(None, 0.0)] * 2 + [(c, max(design.doses_uM))
                                                                      for c in design.compounds[:5]]))
    blocks, meta = [], []
    for plate, ct, rep, t, wells in plates:
        shift = world.plate_effect(dataset, plate, n_world, 0.1)
        for w, (comp, dose) in enumerate(wells):
            n = int(rng.integers(cpw[0], cpw[1] + 1))
            counts = cell_counts(world, n, ct, comp, dose, t, shift, rng, library_size=library_size,
                                 libsize_cv=0.35)
            code = plant_defects(counts, mito, malat1_col, rng, defect_share)
            blocks.append(counts)
            well = f"plate{1 + rep}_{_ROWS[(w // 12) % 8]}{w % 12 + 1}"
            vehicle = comp is None
            pname = ("Vehicle" if w % 2 == 0 else "DMSO") if vehicle else str(comps["name"].iloc[comp])
            cat = "S0000" if vehicle else str(comps["catalog_id"].iloc[comp])
            m = pd.DataFrame({
                "well_oligo": well, "plate_oligo": plate, "culture_plate": plate, "Combo": well + plate,
                "cell_type": _LINE_NAMES[ct], "replicate": f"rep{rep}", "time_point": t,
                "drug_dose": f"{cat}_{w % 4 + 1}", "catalog_number": cat, "vehicle": vehicle,
                "dose": 0.0 if vehicle else dose * 1000.0, "treatment": cat, "product_name": pname,
                "target": "SYNTHETIC", "pathway": "SYNTHETIC"}, index=range(n))
            # hash failures (and planted code 5): no assignment at all
            fail = (code == 5) | (rng.random(n) < 0.03)
            m.loc[fail, ["well_oligo", "plate_oligo", "culture_plate", "Combo", "cell_type", "replicate",
                         "time_point", "drug_dose", "catalog_number", "dose", "treatment", "product_name",
                         "target", "pathway"]] = np.nan
            m.loc[fail, "vehicle"] = False
            meta.append(m)
    counts = np.vstack(blocks)
    del blocks
    meta = pd.concat(meta, ignore_index=True)
    n_cells = len(meta)
    # gene axis: versioned human IDs, one _PAR_Y copy (all zero), mouse barnyard genes
    versions = rng.integers(1, 20, n_world)
    ids = [f"{g}.{v}" for g, v in zip(wg.index, versions)]
    syms = wg["symbol"].tolist()
    par = wg.index[wg["kind"] == "extra"][0]
    ids.append(f"{par}.{versions[0]}_PAR_Y")
    syms.append(str(wg.loc[par, "symbol"]))
    ids += [f"ENSMUSG{10000000 + i:011d}.1" for i in range(N_MOUSE_GENES)]
    syms += [f"Synmus{i}" for i in range(N_MOUSE_GENES)]
    mouse = rng.poisson(0.3, (n_cells, N_MOUSE_GENES))
    full = sp.csr_matrix(np.hstack([counts, np.zeros((n_cells, 1), np.int64), mouse]))
    del counts, mouse
    barcodes = pd.Series([f"{_ROWS[i % 8]}{i % 12 + 1:02d}_E09_RT_BC_{i // 96 + 1}_Lig_BC_{i}"
                          for i in range(n_cells)])
    total = np.asarray(full.sum(axis=1)).ravel()
    pdata = pd.concat([pd.DataFrame({"cell": barcodes, "sample": "Chem3_Screen2_SYNTHETIC",
                                     "Size_Factor": total / np.median(total), "n.umi": total}), meta], axis=1)
    prefix = "GSM4150378_SYNTHETIC_sciPlex3"
    written = []

    def put(name: str, write) -> None:
        path = folder / name
        with atomic_path(path) as tmp:
            with gzip.open(tmp, "wt", compresslevel=1, encoding="utf-8") as fh:
                write(fh)
        written.append(path)

    coo = full.tocoo()  # CSR → row-major: cell-major triplets, as deposited
    trip = pa.table({"g": coo.col + 1, "c": coo.row + 1, "v": coo.data})
    buf = io.BytesIO()  # pyarrow's CSV writer: ~10x faster than pandas for millions of rows
    pacsv.write_csv(trip, buf, pacsv.WriteOptions(include_header=False, delimiter="\t"))
    path = folder / f"{prefix}_A549_MCF7_K562_screen_UMI.count.matrix.gz"
    with atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(buf.getvalue(), compresslevel=1))
    written.append(path)
    del buf, trip, coo
    put(f"{prefix}_A549_MCF7_K562_screen_cell.annotations.txt.gz",
        lambda fh: pd.DataFrame({"cell": barcodes, "sample": "Chem3_Screen2_SYNTHETIC"}).to_csv(
            fh, sep="\t", header=False, index=False))
    put(f"{prefix}_A549_MCF7_K562_screen_gene.annotations.txt.gz",
        lambda fh: pd.DataFrame({"id": ids, "gene_short_name": syms}).to_csv(fh, sep="\t", header=False,
                                                                              index=False))
    pd_out = pdata.copy()
    pd_out["vehicle"] = np.where(pd_out["vehicle"].astype(bool), "TRUE", "FALSE")
    put(f"{prefix}_pData.txt.gz",
        lambda fh: pd_out.to_csv(fh, sep=" ", index=False, na_rep="NA", quoting=csv.QUOTE_NONNUMERIC))
    used = sorted({c for _, _, _, _, wells in plates for c, _ in wells if c is not None})
    ht = pd.DataFrame({"catalog_number": ["S0000"] + [comps["catalog_id"].iloc[c] for c in used],
                       "vehicle": ["TRUE"] + ["FALSE"] * len(used),
                       "name": ["NA"] + [comps["name"].iloc[c] for c in used],
                       "SMILES": ["NA"] + [comps["smiles"].iloc[c] for c in used],
                       "CAS.Number": "NA", "source": "SYNTHETIC"})
    put(f"{prefix}_A549_MCF7_K562_hashTable_metadata.txt.gz",
        lambda fh: ht.to_csv(fh, sep="\t", index=False))
    return written
