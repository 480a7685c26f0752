"""Count-based DRUG-seq sources: Novartis DRUG-seq U2OS, Ginkgo VCPI-0001/0002 and GDPx2.

One module serves four dataset partitions, each with its own native form and
clean-up (METHODS §1):

``novartis_drugseq``
    The Novartis DRUG-seq U2OS MoA Box release (Zenodo 10.5281/zenodo.14291446,
    github.com/Novartis/DRUG-seq ``data/Novartis_drugseq_U2OS_MoABox``).
    ``Exp_gzip.RData`` holds the list ``Exp[[batch]][[plate]]`` with
    ``UMI.counts`` (genes × wells, rownames ``SYMBOL,grch38_<chr>``, colnames
    ``<plate_barcode>_<well_index>``) and ``Annotation`` (one row per well:
    batch_id, plate_barcode, well_id, external_biosample_id, cmpd_sample_id,
    well_type SA/RC/EMPTY, cell_line_name, concentration, unit,
    hours_post_treatment …). R data cannot be read without R, so the reader
    takes the same list stored as HDF5 groups (``Exp*.h5``:
    ``/<batch>/<plate>/UMI.counts`` + ``rownames``/``colnames`` and
    ``/<batch>/<plate>/Annotation/<column>``); the real file is converted once
    by an R step at download time. Beside it: the robust reference-control
    table, the compound table and the ``drugseq_ensg_v98`` gene table
    (``geneID`` → ``ensembl_gene_id``). Clean-up: drop EMPTY wells, zero-count
    libraries, wells of the positive controls {BD-11-DV28, EA-18-FP00,
    SE-15-AV21}, and RC (DMSO) wells not listed as robust.
``vcpi_0001``, ``vcpi_0002``
    The VCPI client payload (``vcpi.load_experiment``): three tables,
    ``metadata`` (one row per ``sequenced_id``), ``data`` (``gene_id`` plus
    one count column per sample) and ``chemistry``. They are stored one
    Parquet file per table (the client's frames are Arrow-backed).
    Clean-up: drop ERCC spike-ins, zero-count libraries and controls whose
    ``user_compound_id`` is not DMSO.
``gdpx2``
    The Lamin artifacts of GDPx2 (``laminlabs/pertdata``, keys
    ``ginkgo-datapoints/vcpi/{X.h5ad,obs.parquet,var.parquet}`` and a
    compound CSV). Clean-up: drop ERCC spike-ins, zero-count libraries and
    samples whose ``sample_type`` starts with ``Ginkgo Pos Control``; keep
    ``percent_volume_dmso`` (the DE strata are cell_type × percent_volume_dmso).

Counts must be non-negative integers; anything else raises
:class:`~cpb_assets.errors.SourceFormatError` naming the file and field.
``psbulk_cells`` is −666 (bulk wells), ``psbulk_counts`` the library size
after gene clean-up.
"""
from __future__ import annotations

import re
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd

from cpb_assets.errors import SourceFormatError
from cpb_assets.harmonize import genes as gmap
from cpb_assets.harmonize.assemble import assemble_harmonized, is_synthetic
from cpb_assets.harmonize.contexts import resolve_cell_types
from cpb_assets.harmonize.quarantine import Quarantine
from cpb_assets.harmonize.schema import UNKNOWN
from cpb_assets.harmonize.units import UnitError, dose_to_uM, parse_dose, parse_time
from cpb_assets.sources.base import (COMPOUND_RECORD_COLUMNS, Harmonized, RemoteFile, empty_compound_records,
                                     find_source_file)
from cpb_resources.storage import atomic_path

DATASETS = ("novartis_drugseq", "vcpi_0001", "vcpi_0002", "gdpx2")

# --- Novartis constants (data/Novartis_drugseq_U2OS_MoABox/README.md) -------------------------
NOVARTIS_POSITIVE_CONTROLS = ("BD-11-DV28", "EA-18-FP00", "SE-15-AV21")
NOVARTIS_DMSO_ID = "CB-43-EP73"  # well_type RC
NOVARTIS_WATER_ID = "EC-27-RY89"  # well_type EMPTY
NOVARTIS_WELL_TYPES = {"SA", "RC", "EMPTY"}
NOVARTIS_ANNOTATION_REQUIRED = ["batch_id", "plate_barcode", "well_id", "external_biosample_id",
                                "cmpd_sample_id", "well_type", "cell_line_name", "concentration", "unit",
                                "hours_post_treatment"]
# --- Ginkgo constants ------------------------------------------------------------------------
VCPI_METADATA_REQUIRED = ["sequenced_id", "container_id", "row_id", "column_id", "compound", "user_compound_id",
                          "compound_concentration", "compound_concentration_unit", "timepoint", "cell_line",
                          "is_control"]
GDPX2_OBS_REQUIRED = ["container_id", "row_id", "column_id", "sample_type", "pert_name", "compound",
                      "pert_dose", "pert_time", "percent_volume_dmso", "cell_type"]
GDPX2_DMSO_SAMPLE_TYPE = "Ginkgo Neg Control - DMSO"
GDPX2_POS_CONTROL_PREFIX = "Ginkgo Pos Control"
# GDPx2's own primary cell types (Cell Ontology, underscore form)
GDPX2_CELL_TYPES = {"aortic smooth muscle cell": "CL_0002539", "epithelial melanocyte": "CL_0002484",
                    "fibroblast of dermis": "CL_0002551", "skeletal muscle myoblast": "CL_0000515"}

_ZENODO = "https://zenodo.org/records/14291446/files"
_NVS_GITHUB = "https://raw.githubusercontent.com/Novartis/DRUG-seq/main/data/Novartis_drugseq_U2OS_MoABox"
REMOTE_FILES: dict[str, list[RemoteFile]] = {
    "novartis_drugseq": [
        RemoteFile(f"{_ZENODO}/Exp_gzip.RData?download=1", "Exp_gzip.RData", None, "CC-BY-4.0"),
        RemoteFile(f"{_ZENODO}/robust_RC_ReferenceControl_DMSO_wells.txt?download=1",
                   "robust_RC_ReferenceControl_DMSO_wells.txt", None, "CC-BY-4.0"),
        RemoteFile(f"{_NVS_GITHUB}/MoABox_compounds_metadata.txt", "MoABox_compounds_metadata.txt", None,
                   "CC-BY-4.0"),
        RemoteFile(f"{_NVS_GITHUB}/drugseq_ensembl_v98_annotation_and_entrez_mapping.RData",
                   "drugseq_ensembl_v98_annotation_and_entrez_mapping.RData", None, "CC-BY-4.0"),
    ],
    # The VCPI payloads come through the authenticated VCPI client
    # (vcpi.load_experiment('vcpi-0001'), token in TVC_TOKEN) and GDPx2 through
    # lamindb (instance laminlabs/pertdata); neither has a plain URL.
    "vcpi_0001": [],
    "vcpi_0002": [],
    "gdpx2": [],
}
ACCESS_NOTES = {
    "vcpi_0001": "vcpi.load_experiment('vcpi-0001') with TVC_TOKEN; tables metadata, data, chemistry",
    "vcpi_0002": "vcpi.load_experiment('vcpi-0002') with TVC_TOKEN; tables metadata, data, chemistry",
    "gdpx2": "lamindb laminlabs/pertdata: ginkgo-datapoints/vcpi/X.h5ad, obs.parquet, var.parquet, "
             "compounds-GDPx2-2026-02-09.csv (gated; Hugging Face ginkgo-datapoints/GDPx2)",
}

SYNTHETIC_TAG = "SYNTHETIC"


# =========================================================================== shared helpers
def integer_counts(values, file, field: str) -> np.ndarray:
    """Check that a count matrix holds non-negative integers and return it as int64.

    Parameters
    ----------
    values
        Array-like or sparse matrix of counts (any numeric dtype).
    file, field
        Named in the error.

    Raises
    ------
    SourceFormatError
        Non-numeric, non-finite, negative or fractional entries.
    """
    import scipy.sparse as sp

    arr = values.toarray() if sp.issparse(values) else np.asarray(values)
    if arr.dtype.kind not in "iuf" and arr.dtype != bool:
        raise SourceFormatError(file, field, f"counts must be numeric, got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise SourceFormatError(file, field, "counts contain NaN or infinite values")
        frac = arr != np.round(arr)
        if frac.any():
            i, j = np.argwhere(frac)[0]
            raise SourceFormatError(file, field, f"counts must be integers; {int(frac.sum())} fractional "
                                                 f"values (first {arr[i, j]!r} at [{i}, {j}])")
    if (arr < 0).any():
        i, j = np.argwhere(arr < 0)[0]
        raise SourceFormatError(file, field, f"counts must be >= 0; {int((arr < 0).sum())} negative values "
                                             f"(first {arr[i, j]!r} at [{i}, {j}])")
    return arr.astype(np.int64)


def require_columns(df: pd.DataFrame, required, file, what: str = "column") -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise SourceFormatError(file, missing[0], f"required {what} missing")


def ensembl_symbols(ids) -> pd.Series:
    """Symbols for Ensembl gene IDs (org.Hs.eg.db, HGNC ``MT-`` names); the ID itself when unknown."""
    table = gmap.gene_table(gene_type=None)
    sym = dict(zip(table["ensembl_id"], table["symbol"]))
    sym.update({ens: s for s, ens in gmap.MANUAL_ENSEMBL.items()})
    ids = pd.Index(ids).astype(str)
    return pd.Series([sym.get(i, i) for i in ids], index=ids, dtype=object)


def well_name(row: int, col: int) -> str:
    """384-well name from 1-based row/column (row 1 → A, column 3 → 03)."""
    return f"{chr(ord('A') + int(row) - 1)}{int(col):02d}"


def _drop_ercc(gene_ids: pd.Index, symbols: pd.Series | None, file, q: Quarantine) -> np.ndarray:
    """Boolean keep-mask without ERCC spike-ins (by ID or symbol); dropped ones are quarantined."""
    ercc = gene_ids.astype(str).str.startswith("ERCC-")
    if symbols is not None:
        ercc = ercc | symbols.astype(str).str.startswith("ERCC-").to_numpy()
    q.add(file, gene_ids[ercc], "ERCC spike-in", level="gene")
    return ~np.asarray(ercc)


def _strip_version(ids: pd.Index) -> pd.Index:
    # ENSG00000141510.17 -> ENSG00000141510
    return pd.Index([re.sub(r"^(ENSG\d{11})\.\d+$", r"\1", str(i)) for i in ids])


def _apply_sample_filters(records: pd.DataFrame, rules: list[tuple[str, np.ndarray]], file,
                          q: Quarantine) -> np.ndarray:
    """Drop samples by ordered rules; each dropped sample is quarantined once, under its first reason.

    Returns the keep-mask.
    """
    dropped = np.zeros(len(records), dtype=bool)
    for reason, mask in rules:
        new = np.asarray(mask, dtype=bool) & ~dropped
        q.add(file, records.index[new], reason)
        dropped |= new
    return ~dropped


def _dose_from_parts(value, unit, file, field) -> float:
    try:
        return dose_to_uM(float(value), str(unit))
    except (UnitError, ValueError, TypeError) as exc:
        raise UnitError(f"{file}: {field}: {exc}") from None


def _time_hours(text) -> float:
    """Hours from ``'24.0'`` (hours implied), ``'24h'``, ``'24.0 hr'``, ``'1 d'``."""
    s = str(text).strip()
    try:
        return float(s)
    except ValueError:
        return parse_time(s)


def _finish(samples: pd.DataFrame, X: np.ndarray, genes: pd.DataFrame, *, dataset: str, registry: pd.DataFrame,
            file, q: Quarantine, notes: dict, files: list[Path]) -> Harmonized:
    samples = samples.copy()
    samples["psbulk_cells"] = UNKNOWN
    samples["psbulk_counts"] = X.sum(axis=1).astype(np.int64)
    import scipy.sparse as sp

    adata = assemble_harmonized(samples, sp.csr_matrix(X), genes, dataset=dataset, synthetic=is_synthetic(*files),
                                registry=registry, file=str(file))
    notes = {**notes, "n_samples": int(adata.n_obs), "n_genes": int(adata.n_vars),
             "n_controls": int(adata.obs["is_control"].sum()), "quarantine": q.summary()}
    return Harmonized(adata=adata, quarantine=q, notes=notes)



def read_novartis_exp(path: str | Path) -> tuple[np.ndarray, pd.Index, pd.DataFrame]:
    """Read the Novartis ``Exp`` list (HDF5 layout) into one wells × genes matrix.

    Returns
    -------
    counts
        (n_wells, n_genes) int64 UMI counts.
    gene_ids
        The DRUG-seq ``geneID`` values (``SYMBOL,grch38_<chr>``), first plate's order.
    annotation
        One row per well, index ``<batch>/<colname>``, the Annotation columns.

    Raises
    ------
    SourceFormatError
        Missing datasets or Annotation columns, wells without annotation,
        plates with a different gene set, non-integer or negative counts.
    """
    path = Path(path)
    blocks, annos = [], []
    gene_ids: pd.Index | None = None
    with h5py.File(path, "r") as f:
        if not list(f.keys()):
            raise SourceFormatError(path, "Exp", "no batches in the file")
        for batch in sorted(f.keys(), key=lambda k: (len(k), k)):
            for plate in f[batch].keys():
                g = f[batch][plate]
                loc = f"{batch}/{plate}"
                for name in ("UMI.counts", "rownames", "colnames", "Annotation"):
                    if name not in g:
                        raise SourceFormatError(path, f"{loc}/{name}", "missing in plate group")
                counts = integer_counts(g["UMI.counts"][()], path, f"{loc}/UMI.counts")
                rows = pd.Index(np.char.decode(g["rownames"][()].astype("S"), "utf-8"))
                cols = pd.Index(np.char.decode(g["colnames"][()].astype("S"), "utf-8"))
                if counts.shape != (len(rows), len(cols)):
                    raise SourceFormatError(path, f"{loc}/UMI.counts",
                                            f"shape {counts.shape} does not match dimnames "
                                            f"({len(rows)}, {len(cols)})")
                anno = {}
                for col in g["Annotation"].keys():
                    v = g["Annotation"][col][()]
                    anno[col] = np.char.decode(v.astype("S"), "utf-8") if v.dtype.kind in "SO" else v
                anno = pd.DataFrame(anno)
                require_columns(anno, ["_rownames"] + NOVARTIS_ANNOTATION_REQUIRED, path,
                                what=f"Annotation column (plate {loc})")
                anno = anno.set_index("_rownames")
                missing = cols.difference(anno.index)
                if len(missing):
                    raise SourceFormatError(path, f"{loc}/Annotation",
                                            f"{len(missing)} count columns have no annotation row, "
                                            f"e.g. {missing[0]!r}")
                anno = anno.loc[cols]  # Annotation row order differs from the count columns
                if gene_ids is None:
                    gene_ids = rows
                elif not rows.equals(gene_ids):
                    if len(rows) != len(gene_ids) or set(rows) != set(gene_ids):
                        raise SourceFormatError(path, f"{loc}/rownames", "plate has a different gene set")
                    counts = counts[rows.get_indexer(gene_ids)]
                blocks.append(counts.T)
                anno.index = [f"{batch}/{c}" for c in anno.index]
                annos.append(anno)
    return np.vstack(blocks), gene_ids, pd.concat(annos)


def _novartis_genes(gene_ids: pd.Index, table: pd.DataFrame, file, q: Quarantine
                    ) -> tuple[np.ndarray, pd.DataFrame]:
    """Map DRUG-seq geneIDs to Ensembl: returns a (n_geneIDs × n_ensembl) 0/1 summing matrix and genes.

    geneIDs without an Ensembl ID, and every geneID of a "split" gene (one
    geneID with several Ensembl IDs), are quarantined; several geneIDs of one
    Ensembl gene are summed.
    """
    require_columns(table, ["geneID", "ensembl_gene_id"], file)
    t = table[["geneID", "ensembl_gene_id"]].astype(object)
    t = t[t["geneID"].isin(gene_ids)]
    t["ensembl_gene_id"] = _strip_version(t["ensembl_gene_id"].fillna("").astype(str))
    t.loc[t["ensembl_gene_id"].isin(["", "nan", "NA", "None"]), "ensembl_gene_id"] = None
    per = t.dropna().drop_duplicates().groupby("geneID")["ensembl_gene_id"].agg(list)
    split = per[per.str.len() > 1]
    bad_ens = {e for lst in split for e in lst}
    q.add(file, split.index, "split gene: one geneID with several Ensembl IDs", level="gene")
    mapped = {g: v[0] for g, v in per.items() if len(v) == 1 and v[0] not in bad_ens}
    no_ens = [g for g in gene_ids if g not in mapped and g not in split.index]
    q.add(file, no_ens, "no Ensembl ID in the gene annotation table", level="gene")
    keep = [g for g in gene_ids if g in mapped]
    ens = pd.Index(sorted({mapped[g] for g in keep}))
    import scipy.sparse as sp

    pos = gene_ids.get_indexer(keep)
    S = sp.csc_matrix((np.ones(len(keep), dtype=np.int64), (pos, ens.get_indexer([mapped[g] for g in keep]))),
                      shape=(len(gene_ids), len(ens)))
    # symbol: the geneID's symbol part (first geneID of the gene)
    first = {}
    for g in keep:
        first.setdefault(mapped[g], g.split(",")[0])
    genes = pd.DataFrame({"symbol": [first[e] for e in ens]}, index=pd.Index(ens, name="gene"))
    return S, genes


def harmonize_novartis(folder: Path, dataset: str, registry: pd.DataFrame) -> Harmonized:
    exp_file = find_source_file(folder, "Exp*.h5")
    robust_file = find_source_file(folder, "robust_RC_ReferenceControl_DMSO_wells*.txt")
    gene_file = find_source_file(folder, "drugseq_ensg_v98*.csv")
    cmpd_file = find_source_file(folder, "MoABox_compounds_metadata*.txt")
    q = Quarantine(dataset)
    counts, gene_ids, anno = read_novartis_exp(exp_file)
    robust = pd.read_csv(robust_file, sep="\t", dtype=str)
    require_columns(robust, ["external_biosample_id"], robust_file)
    compounds = pd.read_csv(cmpd_file, sep="\t", dtype=str)
    require_columns(compounds, ["cmpd_sample_id"], cmpd_file)
    S, genes = _novartis_genes(gene_ids, pd.read_csv(gene_file, dtype=str), gene_file, q)
    X = np.asarray((S.T @ counts.T).T)  # sparse summing matrix: int64 dense matmul has no BLAS

    wt = anno["well_type"].astype(str).str.strip().str.upper()
    unknown = sorted(set(wt) - NOVARTIS_WELL_TYPES)
    if unknown:
        raise SourceFormatError(exp_file, "Annotation/well_type", f"unknown well types {unknown}")
    cmpd = anno["cmpd_sample_id"].astype(str).str.strip()
    keep = _apply_sample_filters(anno, [
        ("empty well (well_type EMPTY)", (wt == "EMPTY").to_numpy()),
        ("zero-count library", X.sum(axis=1) == 0),
        ("positive control (BD-11-DV28, EA-18-FP00, SE-15-AV21)",
         ((wt == "SA") & cmpd.isin(NOVARTIS_POSITIVE_CONTROLS)).to_numpy()),
        ("reference-control DMSO well not in the robust RC table",
         ((wt == "RC") & ~anno["external_biosample_id"].astype(str).isin(
             robust["external_biosample_id"].astype(str))).to_numpy()),
    ], exp_file, q)
    anno, X, wt, cmpd = anno[keep], X[keep], wt[keep], cmpd[keep]

    names = compounds.set_index("cmpd_sample_id")
    name_col = next((c for c in ("chemical_name", "name", "compound_name") if c in names.columns), None)
    cell = resolve_cell_types(anno["cell_line_name"], q, exp_file)
    rows, ok = [], []
    for rid, r, w, c, ct in zip(anno.index, anno.itertuples(index=False), wt, cmpd, cell):
        if ct is None:  # quarantined above
            ok.append(False)
            continue
        ctrl = w == "RC"
        try:
            dose = 0.0 if ctrl else _dose_from_parts(r.concentration, r.unit, exp_file, "concentration")
            time_h = _time_hours(r.hours_post_treatment)
        except UnitError as exc:
            q.add(exp_file, [rid], f"unparseable dose or time: {exc}")
            ok.append(False)
            continue
        nm = names.at[c, name_col] if (name_col and c in names.index) else None
        label = nm if isinstance(nm, str) and nm.strip() else c
        rows.append({"plate": str(r.plate_barcode), "well": str(r.well_id), "cell_type": ct,
                     "perturbagen": label, "perturbagen_name": label, "is_control": ctrl,
                     "pert_dose_uM": dose, "pert_time_h": time_h, "source_id": None if ctrl else c,
                     "pert_id": c})
        ok.append(True)
    ok = np.array(ok, dtype=bool)
    samples = pd.DataFrame(rows)
    files = [exp_file, robust_file, gene_file, cmpd_file]
    return _finish(samples, X[ok], genes, dataset=dataset, registry=registry, file=exp_file, q=q,
                   notes={"files": [p.name for p in files]}, files=files)


def novartis_compound_records(folder: Path) -> pd.DataFrame:
    cmpd_file = find_source_file(folder, "MoABox_compounds_metadata*.txt")
    df = pd.read_csv(cmpd_file, sep="\t", dtype=str)
    require_columns(df, ["cmpd_sample_id"], cmpd_file)
    df = df[~df["cmpd_sample_id"].isin([NOVARTIS_DMSO_ID, NOVARTIS_WATER_ID])]
    pick = lambda *cs: next((df[c] for c in cs if c in df.columns), pd.Series([None] * len(df), index=df.index))  # noqa: E731
    out = pd.DataFrame({"source_id": df["cmpd_sample_id"], "name": pick("chemical_name", "name"),
                        "smiles": pick("smiles", "SMILES"), "inchikey": pick("inchi_key", "inchikey"),
                        "catalog_id": pick("cas_number")})
    return _clean_records(out)


def _clean_records(df: pd.DataFrame) -> pd.DataFrame:
    df = df[COMPOUND_RECORD_COLUMNS].astype(object)
    df = df.where(df.notna(), None)
    df = df.drop_duplicates("source_id").reset_index(drop=True)
    return df if len(df) else empty_compound_records()


# =========================================================================== VCPI: reading
def harmonize_vcpi(folder: Path, dataset: str, registry: pd.DataFrame) -> Harmonized:
    meta_file = find_source_file(folder, "*_metadata*.parquet")
    data_file = find_source_file(folder, "*_data*.parquet")
    q = Quarantine(dataset)
    meta = pd.read_parquet(meta_file)
    require_columns(meta, VCPI_METADATA_REQUIRED, meta_file)
    meta = meta.astype({"sequenced_id": str}).drop_duplicates()
    if meta["sequenced_id"].duplicated().any():
        dup = meta.loc[meta["sequenced_id"].duplicated(), "sequenced_id"].iloc[0]
        raise SourceFormatError(meta_file, "sequenced_id", f"conflicting metadata rows for {dup!r}")
    meta = meta.set_index("sequenced_id")
    data = pd.read_parquet(data_file)
    require_columns(data, ["gene_id"], data_file)
    sample_cols = [c for c in data.columns if c != "gene_id"]
    missing = [c for c in sample_cols if c not in meta.index]
    if missing:
        raise SourceFormatError(meta_file, "sequenced_id", f"{len(missing)} count columns have no metadata row, "
                                                           f"e.g. {missing[0]!r}")
    counts = integer_counts(data[sample_cols].to_numpy(), data_file, "data").T  # samples × genes
    gene_ids = _strip_version(pd.Index(data["gene_id"].astype(str)))
    if gene_ids.has_duplicates:
        raise SourceFormatError(data_file, "gene_id", f"duplicate genes {gene_ids[gene_ids.duplicated()][:3].tolist()}")
    gkeep = _drop_ercc(gene_ids, None, data_file, q)
    counts, gene_ids = counts[:, gkeep], gene_ids[gkeep]
    genes = pd.DataFrame({"symbol": ensembl_symbols(gene_ids).to_numpy()}, index=pd.Index(gene_ids, name="gene"))

    meta = meta.loc[sample_cols]
    is_ctrl = meta["is_control"].astype(str).str.strip().str.lower().isin(["true", "1", "yes"])
    uid = meta["user_compound_id"].astype(str).str.strip()
    keep = _apply_sample_filters(meta, [
        ("zero-count library", counts.sum(axis=1) == 0),
        ("non-DMSO control", (is_ctrl & (uid.str.upper() != "DMSO")).to_numpy()),
    ], meta_file, q)
    meta, counts, is_ctrl = meta[keep], counts[keep], is_ctrl[keep]
    cell = resolve_cell_types(meta["cell_line"], q, meta_file)
    rows, ok = [], []
    for rid, r, ctrl, ct in zip(meta.index, meta.itertuples(index=False), is_ctrl, cell):
        if ct is None:  # quarantined above
            ok.append(False)
            continue
        try:
            dose = 0.0 if ctrl else _dose_from_parts(r.compound_concentration, r.compound_concentration_unit,
                                                     meta_file, "compound_concentration")
            time_h = _time_hours(r.timepoint)
        except UnitError as exc:
            q.add(meta_file, [rid], f"unparseable dose or time: {exc}")
            ok.append(False)
            continue
        rows.append({"plate": str(r.container_id).replace(" ", "").replace("-", "_"),
                     "well": well_name(r.row_id, r.column_id), "cell_type": ct,
                     "perturbagen": str(r.user_compound_id), "perturbagen_name": str(r.user_compound_id),
                     "is_control": bool(ctrl), "pert_dose_uM": dose, "pert_time_h": time_h,
                     "source_id": None if ctrl else str(r.compound), "pert_id": str(r.compound)})
        ok.append(True)
    ok = np.array(ok, dtype=bool)
    return _finish(pd.DataFrame(rows), counts[ok], genes, dataset=dataset, registry=registry, file=meta_file,
                   q=q, notes={"files": [meta_file.name, data_file.name]}, files=[meta_file, data_file])


def vcpi_compound_records(folder: Path) -> pd.DataFrame:
    chem_file = find_source_file(folder, "*_chemistry*.parquet")
    df = pd.read_parquet(chem_file)
    require_columns(df, ["compound", "user_compound_id"], chem_file)
    df = df[df["user_compound_id"].astype(str).str.upper() != "DMSO"]
    get = lambda c: df[c] if c in df.columns else pd.Series([None] * len(df), index=df.index)  # noqa: E731
    return _clean_records(pd.DataFrame({"source_id": df["compound"].astype(str), "name": get("user_compound_id"),
                                        "smiles": get("canonical_smiles"), "inchikey": get("inchi_key"),
                                        "catalog_id": get("catalog_id")}))


# =========================================================================== GDPx2: reading
def harmonize_gdpx2(folder: Path, dataset: str, registry: pd.DataFrame) -> Harmonized:
    x_file = find_source_file(folder, "*X*.h5ad")
    obs_file = find_source_file(folder, "*obs*.parquet")
    var_file = find_source_file(folder, "*var*.parquet")
    q = Quarantine(dataset)
    raw = ad.read_h5ad(x_file)
    counts = integer_counts(raw.X, x_file, "X")
    obs = pd.read_parquet(obs_file)
    var = pd.read_parquet(var_file)
    require_columns(obs, GDPX2_OBS_REQUIRED, obs_file)
    require_columns(var, ["symbol"], var_file)
    obs.index, var.index = obs.index.astype(str), var.index.astype(str)
    missing = raw.obs_names.difference(obs.index)
    if len(missing):
        raise SourceFormatError(obs_file, "index", f"{len(missing)} samples of X have no obs row, "
                                                   f"e.g. {missing[0]!r}")
    if raw.var_names.has_duplicates:
        raise SourceFormatError(x_file, "var_names", "duplicate genes")
    missing = raw.var_names.difference(var.index)
    if len(missing):
        raise SourceFormatError(var_file, "index", f"{len(missing)} genes of X have no var row")
    obs, var = obs.loc[raw.obs_names], var.loc[raw.var_names]
    gene_ids = _strip_version(pd.Index(var["ensembl_gene_id"] if "ensembl_gene_id" in var.columns else var.index))
    gkeep = _drop_ercc(gene_ids, var["symbol"], var_file, q)
    counts, gene_ids, var = counts[:, gkeep], gene_ids[gkeep], var[gkeep]
    genes = pd.DataFrame({"symbol": var["symbol"].astype(str).to_numpy()}, index=pd.Index(gene_ids, name="gene"))

    st = obs["sample_type"].astype(str).str.strip()
    keep = _apply_sample_filters(obs, [
        ("zero-count library", counts.sum(axis=1) == 0),
        ("positive control (sample_type 'Ginkgo Pos Control …')", st.str.startswith(GDPX2_POS_CONTROL_PREFIX)
         .to_numpy()),
    ], obs_file, q)
    obs, counts, st = obs[keep], counts[keep], st[keep]
    cell = resolve_cell_types(obs["cell_type"], q, obs_file, extra=GDPX2_CELL_TYPES)
    rows, ok = [], []
    for rid, r, s, ct in zip(obs.index, obs.itertuples(index=False), st, cell):
        if ct is None:  # quarantined above
            ok.append(False)
            continue
        ctrl = s == GDPX2_DMSO_SAMPLE_TYPE
        try:
            # controls carry their vehicle volume ('0.5%') in pert_dose, not a molar dose
            dose = 0.0 if ctrl else parse_dose(str(r.pert_dose))
            time_h = _time_hours(r.pert_time)
            pvd = float(str(r.percent_volume_dmso).rstrip("%"))
        except (UnitError, ValueError) as exc:
            q.add(obs_file, [rid], f"unparseable dose, time or percent_volume_dmso: {exc}")
            ok.append(False)
            continue
        rows.append({"plate": str(r.container_id), "well": well_name(r.row_id, r.column_id), "cell_type": ct,
                     "perturbagen": str(r.pert_name), "perturbagen_name": str(r.pert_name), "is_control": ctrl,
                     "pert_dose_uM": dose, "pert_time_h": time_h, "percent_volume_dmso": pvd,
                     "source_id": None if ctrl else str(r.compound), "pert_id": str(r.compound)})
        ok.append(True)
    ok = np.array(ok, dtype=bool)
    return _finish(pd.DataFrame(rows), counts[ok], genes, dataset=dataset, registry=registry, file=obs_file,
                   q=q, notes={"files": [x_file.name, obs_file.name, var_file.name],
                               "strata": "cell_type x percent_volume_dmso"}, files=[x_file, obs_file, var_file])


def gdpx2_compound_records(folder: Path) -> pd.DataFrame:
    f = find_source_file(folder, "*compounds*.csv")
    df = pd.read_csv(f, dtype=str)
    require_columns(df, ["compound"], f)
    get = lambda c: df[c] if c in df.columns else pd.Series([None] * len(df), index=df.index)  # noqa: E731
    name = get("pert_name")
    df = df[name.astype(str).str.upper() != "DMSO"]
    return _clean_records(pd.DataFrame({"source_id": df["compound"], "name": get("pert_name")[df.index],
                                        "smiles": get("smiles")[df.index], "inchikey": get("inchikey")[df.index],
                                        "catalog_id": get("catalog_id")[df.index]}))


# =========================================================================== the contract
def harmonize(folder: str | Path, dataset: str, registry: pd.DataFrame) -> Harmonized:
    """Read one DRUG-seq partition's native files and return the harmonized AnnData.

    Parameters
    ----------
    folder
        The partition's source folder (native files as written by the
        downloader or :func:`write_synthetic`).
    dataset
        One of ``novartis_drugseq``, ``vcpi_0001``, ``vcpi_0002``, ``gdpx2``.
    registry
        ``source_id, pubchem_cid, cid_method`` for this dataset.

    Returns
    -------
    Harmonized
        X: integer UMI counts (samples × Ensembl genes); doses in µM, times in h.
    """
    folder = Path(folder)
    if dataset == "novartis_drugseq":
        return harmonize_novartis(folder, dataset, registry)
    if dataset in ("vcpi_0001", "vcpi_0002"):
        return harmonize_vcpi(folder, dataset, registry)
    if dataset == "gdpx2":
        return harmonize_gdpx2(folder, dataset, registry)
    raise KeyError(f"drugseq does not serve {dataset!r}")


def compound_records(folder: str | Path, dataset: str) -> pd.DataFrame:
    """The compounds a DRUG-seq partition names (DMSO, water left out); see ``base``."""
    folder = Path(folder)
    if dataset == "novartis_drugseq":
        return novartis_compound_records(folder)
    if dataset in ("vcpi_0001", "vcpi_0002"):
        return vcpi_compound_records(folder)
    if dataset == "gdpx2":
        return gdpx2_compound_records(folder)
    raise KeyError(f"drugseq does not serve {dataset!r}")


# =========================================================================== native writers
def write_novartis_native(folder: str | Path, plates: dict[tuple[str, str], tuple[np.ndarray, list, pd.DataFrame]],
                          gene_ids, gene_table: pd.DataFrame, robust: pd.DataFrame, compounds: pd.DataFrame,
                          *, tag: str = SYNTHETIC_TAG, note: str = "") -> list[Path]:
    """Write the Novartis native files.

    Parameters
    ----------
    plates
        ``(batch_id, plate_barcode) -> (counts, colnames, annotation)``:
        counts (n_genes × n_wells, stored as given; R keeps them as float
        ``num``), the count column names, and the Annotation (one row per
        well, index = its column name, in any order).
    gene_ids
        Row names of every plate's counts.
    """
    folder = Path(folder)
    out = []
    exp = folder / f"Exp_{tag}.h5"
    with atomic_path(exp) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["note"] = note
            f.attrs["layout"] = "Exp[[batch]][[plate]]$UMI.counts (genes x wells) and $Annotation"
            for (batch, plate), (counts, colnames, anno) in plates.items():
                g = f.require_group(str(batch)).create_group(str(plate))
                g.create_dataset("UMI.counts", data=np.asarray(counts), compression="gzip")
                g.create_dataset("rownames", data=np.array([str(x) for x in gene_ids], dtype="S"))
                g.create_dataset("colnames", data=np.array([str(x) for x in colnames], dtype="S"))
                a = g.create_group("Annotation")
                a.create_dataset("_rownames", data=np.array([str(x) for x in anno.index], dtype="S"))
                for col in anno.columns:
                    v = anno[col].to_numpy()
                    if v.dtype.kind in "iuf":
                        a.create_dataset(col, data=v)
                    else:
                        a.create_dataset(col, data=np.array([str(x).encode("utf-8") for x in v], dtype="S"))
    out.append(exp)
    for name, df, kw in ((f"robust_RC_ReferenceControl_DMSO_wells_{tag}.txt", robust, {"sep": "\t"}),
                         (f"MoABox_compounds_metadata_{tag}.txt", compounds, {"sep": "\t"}),
                         (f"drugseq_ensg_v98_{tag}.csv", gene_table, {})):
        with atomic_path(folder / name) as tmp:
            df.to_csv(tmp, index=False, **kw)
        out.append(folder / name)
    return out


def write_vcpi_native(folder: str | Path, metadata: pd.DataFrame, counts: np.ndarray, gene_ids,
                      chemistry: pd.DataFrame, *, experiment: str, tag: str = SYNTHETIC_TAG,
                      note: str = "") -> list[Path]:
    """Write a VCPI payload as three Parquet tables (``counts``: n_samples × n_genes)."""
    folder = Path(folder)
    data = pd.DataFrame(np.asarray(counts).T, columns=metadata["sequenced_id"].astype(str).tolist())
    data.insert(0, "gene_id", [str(g) for g in gene_ids])
    out = []
    for name, df in ((f"{experiment}_metadata_{tag}.parquet", metadata), (f"{experiment}_data_{tag}.parquet", data),
                     (f"{experiment}_chemistry_{tag}.parquet", chemistry)):
        with atomic_path(folder / name) as tmp:
            df.attrs = {}
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(df, preserve_index=False)
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"note": note.encode()})
            pq.write_table(table, tmp)
        out.append(folder / name)
    return out


def write_gdpx2_native(folder: str | Path, obs: pd.DataFrame, counts: np.ndarray, var: pd.DataFrame,
                       compounds: pd.DataFrame, *, tag: str = SYNTHETIC_TAG, note: str = "") -> list[Path]:
    """Write the GDPx2 Lamin artifacts: X h5ad (counts only), obs/var Parquet, compound CSV."""
    folder = Path(folder)
    x = ad.AnnData(X=np.asarray(counts), obs=pd.DataFrame(index=obs.index.astype(str)),
                   var=pd.DataFrame(index=var.index.astype(str)))
    x.uns["note"] = note
    out = []
    with atomic_path(folder / f"gdpx2_X_{tag}.h5ad") as tmp:
        x.write_h5ad(tmp)
    out.append(folder / f"gdpx2_X_{tag}.h5ad")
    for name, df in ((f"gdpx2_obs_{tag}.parquet", obs), (f"gdpx2_var_{tag}.parquet", var)):
        with atomic_path(folder / name) as tmp:
            df.to_parquet(tmp, index=True)
        out.append(folder / name)
    with atomic_path(folder / f"gdpx2_compounds_{tag}.csv") as tmp:
        compounds.to_csv(tmp, index=False)
    out.append(folder / f"gdpx2_compounds_{tag}.csv")
    return out


# =========================================================================== synthetic demo
# per plate, beside the treated wells (the demo layout; counts documented for tests)
NOVARTIS_COMPOUNDS_PER_BATCH = 20
NOVARTIS_RC_PER_PLATE = 4  # column 23; the first two are listed as robust
NOVARTIS_ROBUST_RC_PER_PLATE = 2
NOVARTIS_EMPTY_PER_PLATE = 2
GINKGO_DMSO_PER_PLATE = 6  # VCPI DMSO wells per plate
GDPX2_DMSO_PER_LEVEL = 4  # GDPx2 DMSO wells per plate and percent_volume_dmso level
VCPI_NON_DMSO_CONTROLS = ("Staurosporine", "Bortezomib")
GDPX2_POS_CONTROLS = ("Dexamethasone", "Trichostatin A", "Brefeldin A")
LIBRARY_SIZE = 40_000.0
N_ERCC = 6


def _well_positions(n: int, start_col: int = 1, last_col: int = 22) -> list[str]:
    cols = range(start_col, last_col + 1)
    out = []
    for c in cols:
        for r in range(1, 17):
            out.append(well_name(r, c))
            if len(out) == n:
                return out
    raise ValueError("plate full")


def _world_cell_name(cell_type: str) -> str:
    from cpb_assets.harmonize.contexts import CONTEXTS

    return str(CONTEXTS.loc[cell_type, "name"])


def _novartis_id(i: int) -> str:
    # cmpd_sample_id pattern XX-00-XX00; 'SY' marks these invented IDs as synthetic
    return f"SY-{i:02d}-ZS{i:02d}"


def _synthetic_rng(world, dataset):
    return world.rng("drugseq", dataset)


def _write_novartis_synthetic(world, folder: Path) -> list[Path]:
    from cpb_assets.sources.demo_world import DESIGNS, SYNTHETIC_NOTE

    ds = "novartis_drugseq"
    d = DESIGNS[ds]
    rng = _synthetic_rng(world, ds)
    genes = world.genes
    gidx = np.arange(len(genes))
    chrom = gmap.gene_table(gene_type=None).drop_duplicates("ensembl_id").set_index("ensembl_id")["chromosome"]
    chr_of = [("MT" if k == "mito" else str(chrom.get(e, "1"))) for e, k in zip(genes.index, genes["kind"])]
    gene_ids = [f"{s},grch38_{c}" for s, c in zip(genes["symbol"], chr_of)]
    # quirks in the gene table: two genes also counted under a patch-contig geneID (summed back),
    # three geneIDs without any Ensembl ID (quarantined)
    patch = [int(i) for i in rng.choice(np.flatnonzero(genes["kind"] == "extra"), 2, replace=False)]
    extra_ids = [f"{genes['symbol'].iloc[i]},grch38_{chr_of[i]}_PATCH" for i in patch]
    orphan_ids = [f"SYNTHETIC-LOC{k},grch38_1" for k in range(1, 4)]
    all_ids = gene_ids + extra_ids + orphan_ids
    gene_table = pd.DataFrame({"geneID": all_ids,
                               "ensembl_gene_id": list(genes.index) + [genes.index[i] for i in patch]
                               + [None] * len(orphan_ids)})
    cell = d.cell_types[0]
    comps = list(d.compounds)
    batches = [comps[i:i + NOVARTIS_COMPOUNDS_PER_BATCH] for i in range(0, len(comps), NOVARTIS_COMPOUNDS_PER_BATCH)]
    plates, robust_rows = {}, []
    bio = 1_000_000
    for b, batch_comps in enumerate(batches, start=1):
        for rep in range(1, d.replicates + 1):
            plate = f"SYNVH{b:02d}{rep:02d}"
            wells = []
            for c in batch_comps:
                for dose in d.doses_uM:
                    wells.append(("SA", c, dose))
            order = rng.permutation(len(wells))
            wells = [wells[i] for i in order]
            pos = _well_positions(len(wells))
            rows = [dict(well_type=w, compound=c, dose_uM=dose, well_id=p) for (w, c, dose), p in zip(wells, pos)]
            rows += [dict(well_type="RC", compound=None, dose_uM=0.0, well_id=well_name(r, 23))
                     for r in range(1, NOVARTIS_RC_PER_PLATE + 1)]
            rows += [dict(well_type="SA", compound=pc, dose_uM=10.0, well_id=well_name(r, 24))
                     for r, pc in enumerate(NOVARTIS_POSITIVE_CONTROLS, start=1)]
            rows += [dict(well_type="EMPTY", compound=NOVARTIS_WATER_ID, dose_uM=0.0, well_id=well_name(16, 24 - k))
                     for k in range(NOVARTIS_EMPTY_PER_PLATE)]
            if rep == 1:  # one failed library per batch: an extra replicate well with no reads
                rows.append(dict(well_type="SA", compound=batch_comps[0], dose_uM=d.doses_uM[-1],
                                 well_id=well_name(16, 22), zero=True))
            lay = pd.DataFrame(rows)
            lay["zero"] = lay["zero"].eq(True) if "zero" in lay else False
            # counts from the planted truth; positive controls act as strong compounds 0-2 (a big effect)
            sim = pd.DataFrame({
                "cell_type": cell, "plate": plate, "time_h": d.times_h[0],
                "compound": [c if isinstance(c, (int, np.integer)) else
                             (NOVARTIS_POSITIVE_CONTROLS.index(c) if c in NOVARTIS_POSITIVE_CONTROLS else None)
                             for c in lay["compound"]],
                "dose_uM": lay["dose_uM"]})
            counts = world.count_matrix(sim, gidx, dataset=ds, library_size=LIBRARY_SIZE, rng=rng)
            empty = (lay["well_type"] == "EMPTY").to_numpy()
            counts[empty] = rng.poisson(0.002, (int(empty.sum()), len(gidx)))  # a few stray reads
            counts[lay["zero"].to_numpy()] = 0
            # patch-contig geneIDs take part of their gene's reads
            moved = rng.binomial(counts[:, patch], 0.3)
            counts[:, patch] -= moved
            full = np.hstack([counts, moved, rng.poisson(0.5, (len(lay), len(orphan_ids)))])
            idx = [f"{plate}_{''.join(rng.choice(list('ACGT'), 10))}" for _ in range(len(lay))]
            ext = [f"SX-{bio + k}" for k in range(len(lay))]
            bio += len(lay)
            cmpd_ids = [NOVARTIS_DMSO_ID if w == "RC" else (c if isinstance(c, str) else _novartis_id(int(c)))
                        for w, c in zip(lay["well_type"], lay["compound"])]
            # concentration strings as the plates carry them: µM on odd batches, nM on even ones
            nm = b % 2 == 0
            conc = [(dose * 1000.0 if nm else dose) for dose in lay["dose_uM"]]
            anno = pd.DataFrame({
                "batch_id": b, "plate_barcode": plate, "well_id": lay["well_id"].to_numpy(), "plate_replicate": rep,
                "biosample_id": np.arange(len(lay)) + bio, "external_biosample_id": ext,
                "cmpd_sample_id": cmpd_ids, "well_type": lay["well_type"].to_numpy(),
                "cell_line_name": "U-2 OS", "concentration": np.array(conc, dtype=float),
                "unit": np.where(lay["well_type"] == "SA", "nM" if nm else "uM", "uM"),
                "hours_post_treatment": "24.0" if b != 2 else "24.0 hr",
                "Sample": [f"{ci}_{co:g}{'nM' if nm else 'uM'}_24.0hr_{b}" for ci, co in zip(cmpd_ids, conc)],
            }, index=idx)
            rc = anno[anno["well_type"] == "RC"].iloc[:NOVARTIS_ROBUST_RC_PER_PLATE]
            robust_rows.append(rc[["batch_id", "plate_barcode", "well_id", "external_biosample_id",
                                   "cmpd_sample_id"]])
            # the Annotation rows come in another order than the count columns (the reader realigns)
            perm = rng.permutation(len(anno))
            plates[(str(b), plate)] = (full.T.astype(np.float64), idx, anno.iloc[perm])
    comp = world.compounds.iloc[comps]
    inchi = comp["inchikey"].to_numpy(dtype=object).copy()
    inchi[rng.choice(len(inchi), 3, replace=False)] = None  # a few compounds lack an InChIKey
    compounds = pd.DataFrame({"cmpd_sample_id": [_novartis_id(i) for i in comps], "chemical_name": comp["name"],
                              "inchi_key": inchi, "smiles": comp["smiles"].to_numpy(), "cas_number": None})
    controls = pd.DataFrame({"cmpd_sample_id": [NOVARTIS_DMSO_ID, NOVARTIS_WATER_ID, *NOVARTIS_POSITIVE_CONTROLS],
                             "chemical_name": ["Dimethyl Sulfoxide", "Water", "BD-11-DV28", "Homoharringtonine",
                                               "BTdCPU"],
                             "inchi_key": ["IAZDPXIOMUYVGZ-UHFFFAOYSA-N", "XLYOFNOQVPJJNP-UHFFFAOYSA-N", None, None,
                                           None],
                             "smiles": ["CS(C)=O", "O", None, None, None], "cas_number": None})
    return write_novartis_native(folder, plates, all_ids, gene_table, pd.concat(robust_rows),
                                 pd.concat([compounds, controls], ignore_index=True), note=SYNTHETIC_NOTE)


def _ginkgo_counts(world, ds: str, lay: pd.DataFrame, rng, with_ercc: bool) -> tuple[np.ndarray, list[str]]:
    gidx = np.arange(len(world.genes))
    sim = lay.rename(columns={"time": "time_h"})[["cell_type", "compound", "dose_uM", "time_h", "plate"]]
    counts = world.count_matrix(sim, gidx, dataset=ds, library_size=LIBRARY_SIZE, rng=rng)
    counts[lay["zero"].to_numpy()] = 0
    ids = list(world.genes.index)
    if with_ercc:
        ercc = rng.poisson(30.0, (len(lay), N_ERCC))
        ercc[lay["zero"].to_numpy()] = 0
        counts = np.hstack([counts, ercc])
        ids += [f"ERCC-{k:05d}" for k in (2, 3, 4, 9, 12, 13)[:N_ERCC]]
    return counts, ids


def _ginkgo_layout(world, ds: str, rng) -> pd.DataFrame:
    """One plate per (cell type, replicate): treated wells, DMSO, controls to drop, one empty library."""
    from cpb_assets.sources.demo_world import DESIGNS

    d = DESIGNS[ds]
    pvds = d.extra.get("percent_volume_dmso", (None,))
    rows = []
    for ci, cell in enumerate(d.cell_types):
        for rep in range(1, d.replicates + 1):
            plate = f"SYN-{ds.upper().replace('_', '')}-P{ci + 1}{rep}"
            wells = [dict(kind="treated", compound=c, dose_uM=dose, pvd=pvds[k % len(pvds)])
                     for k, c in enumerate(d.compounds) for dose in d.doses_uM]
            wells = [wells[i] for i in rng.permutation(len(wells))]
            if ds == "gdpx2":
                wells += [dict(kind="dmso", compound=None, dose_uM=0.0, pvd=p)
                          for p in pvds for _ in range(GDPX2_DMSO_PER_LEVEL)]
                wells += [dict(kind="pos", compound=k, dose_uM=1.0, pvd=pvds[0], pos_name=n)
                          for k, n in enumerate(GDPX2_POS_CONTROLS)]
            else:
                wells += [dict(kind="dmso", compound=None, dose_uM=0.0, pvd=None)
                          for _ in range(GINKGO_DMSO_PER_PLATE)]
                wells += [dict(kind="pos", compound=k, dose_uM=1.0, pvd=None, pos_name=n)
                          for k, n in enumerate(VCPI_NON_DMSO_CONTROLS)]
            wells.append(dict(kind="treated", compound=d.compounds[rep], dose_uM=d.doses_uM[0],
                              pvd=pvds[rep % len(pvds)], zero=True))
            for k, w in enumerate(wells):
                r, c = divmod(k, 24)
                rows.append({**w, "cell_type": cell, "plate": plate, "row_id": r + 1, "column_id": c + 1,
                             "time_h": d.times_h[0], "rep": rep})
    lay = pd.DataFrame(rows)
    lay["zero"] = lay["zero"].eq(True) if "zero" in lay else False
    return lay


def _write_vcpi_synthetic(world, ds: str, folder: Path) -> list[Path]:
    from cpb_assets.sources.demo_world import SYNTHETIC_NOTE

    rng = _synthetic_rng(world, ds)
    lay = _ginkgo_layout(world, ds, rng)
    sim = lay.assign(compound=[c if k != "dmso" else None for c, k in zip(lay["compound"], lay["kind"])])
    counts, ids = _ginkgo_counts(world, ds, sim, rng, with_ercc=True)
    # a few gene IDs come with an Ensembl version suffix
    for j in rng.choice(len(world.genes), 3, replace=False):
        ids[j] = f"{ids[j]}.{int(rng.integers(1, 20))}"
    exp = ds.replace("_", "-")
    comp = world.compounds
    cid = lambda c: f"SYNTH-{exp.upper()}-{int(c):03d}"  # noqa: E731
    is_t = lay["kind"] == "treated"
    nm_unit = rng.random(len(lay)) < 0.3  # some concentrations arrive in nM
    conc = np.where(is_t, lay["dose_uM"] * np.where(nm_unit, 1000.0, 1.0), np.where(lay["kind"] == "pos", 1.0, 0.0))
    meta = pd.DataFrame({
        "sequenced_id": [f"SYNSEQ{ds[-4:]}{k:05d}" for k in range(len(lay))],
        "container_id": lay["plate"].str.replace("-", " ", n=1),  # 'SYN VCPI0001-P11': spaces/dashes get cleaned
        "row_id": lay["row_id"], "column_id": lay["column_id"],
        "compound": [cid(c) if k == "treated" else ("DMSO" if k == "dmso" else f"SYNTH-POS-{int(c)}")
                     for c, k in zip(lay["compound"], lay["kind"])],
        "user_compound_id": [comp["name"].iloc[int(c)] if k == "treated" else
                             ("DMSO" if k == "dmso" else VCPI_NON_DMSO_CONTROLS[int(c)])
                             for c, k in zip(lay["compound"], lay["kind"])],
        "compound_concentration": conc,
        "compound_concentration_unit": np.where(is_t & nm_unit, "nM", "uM"),
        "timepoint": np.where(rng.random(len(lay)) < 0.5, "24h", "24.0 H"),
        "cell_line": [_world_cell_name(c) for c in lay["cell_type"]],
        "is_control": np.where(lay["kind"] == "treated", "False", "True"),
    })
    used = sorted({int(c) for c, k in zip(lay["compound"], lay["kind"]) if k == "treated"})
    chem = pd.DataFrame({"compound": [cid(c) for c in used], "user_compound_id": comp["name"].iloc[used].to_numpy(),
                         "canonical_smiles": comp["smiles"].iloc[used].to_numpy(),
                         "inchi_key": comp["inchikey"].iloc[used].to_numpy(),
                         "catalog_id": comp["catalog_id"].iloc[used].to_numpy()})
    chem = pd.concat([chem, pd.DataFrame({"compound": ["DMSO"], "user_compound_id": ["DMSO"],
                                          "canonical_smiles": ["CS(C)=O"],
                                          "inchi_key": ["IAZDPXIOMUYVGZ-UHFFFAOYSA-N"], "catalog_id": [None]})],
                     ignore_index=True)
    return write_vcpi_native(folder, meta, counts, ids, chem, experiment=exp, note=SYNTHETIC_NOTE)


def _write_gdpx2_synthetic(world, folder: Path) -> list[Path]:
    from cpb_assets.sources.demo_world import SYNTHETIC_NOTE

    ds = "gdpx2"
    rng = _synthetic_rng(world, ds)
    lay = _ginkgo_layout(world, ds, rng)
    sim = lay.assign(compound=[c if k != "dmso" else None for c, k in zip(lay["compound"], lay["kind"])])
    counts, ids = _ginkgo_counts(world, ds, sim, rng, with_ercc=True)
    comp = world.compounds
    sample_type = [("Ginkgo Sample" if k == "treated" else GDPX2_DMSO_SAMPLE_TYPE if k == "dmso"
                    else f"{GDPX2_POS_CONTROL_PREFIX} - {n}")
                   for k, n in zip(lay["kind"], lay.get("pos_name", pd.Series([None] * len(lay))))]
    # doses as Ginkgo writes them: nM strings; vehicle rows carry '%'
    pert_dose = [f"{d * 1000:.1f}nM" if k != "dmso" else f"{p}%" for d, k, p in
                 zip(lay["dose_uM"], lay["kind"], lay["pvd"])]
    obs = pd.DataFrame({
        "container_id": lay["plate"], "row_id": lay["row_id"], "column_id": lay["column_id"],
        "sample_type": sample_type,
        "pert_name": [comp["name"].iloc[int(c)] if k == "treated" else "DMSO" if k == "dmso" else n
                      for c, k, n in zip(lay["compound"], lay["kind"], lay.get("pos_name", [None] * len(lay)))],
        "compound": [f"SYNTH-GDPX2-{int(c):03d}" if k == "treated" else "DMSO" if k == "dmso" else
                     f"SYNTH-GDPX2-POS{int(c)}" for c, k in zip(lay["compound"], lay["kind"])],
        "pert_dose": pert_dose, "pert_time": "24.0h",
        "percent_volume_dmso": lay["pvd"].astype(float),
        "cell_type": [_world_cell_name(c) for c in lay["cell_type"]],
    })
    obs.index = pd.Index([f"SYNGDPX2-{k:05d}" for k in range(len(lay))], name="sample_id")
    var = pd.DataFrame({"ensembl_gene_id": ids,
                        "symbol": list(world.genes["symbol"]) + ids[len(world.genes):]},
                       index=pd.Index(ids, name="gene_id"))
    used = sorted({int(c) for c, k in zip(lay["compound"], lay["kind"]) if k == "treated"})
    compounds = pd.DataFrame({"compound": [f"SYNTH-GDPX2-{c:03d}" for c in used],
                              "pert_name": comp["name"].iloc[used].to_numpy(),
                              "smiles": comp["smiles"].iloc[used].to_numpy(),
                              "inchikey": comp["inchikey"].iloc[used].to_numpy(),
                              "catalog_id": comp["catalog_id"].iloc[used].to_numpy()})
    return write_gdpx2_native(folder, obs, counts, var, compounds, note=SYNTHETIC_NOTE)


def write_synthetic(world, dataset: str, folder: str | Path) -> list[Path]:
    """Write the demo world's SYNTHETIC stand-in of one DRUG-seq partition in its native form.

    Quirks planted (a few of each): Novartis — EMPTY wells, one zero-count
    library per batch, the three positive controls, non-robust RC wells, nM
    vs µM plates, ``'24.0 hr'`` time strings, Annotation rows out of count
    order, geneIDs without Ensembl IDs, patch-contig geneIDs of one gene;
    VCPI — ERCC spike-ins, Ensembl version suffixes, a zero-count library
    per plate, non-DMSO controls, nM/µM units, ``'24h'``/``'24.0 H'``;
    GDPx2 — ERCC, zero-count libraries, ``Ginkgo Pos Control`` samples, nM
    dose strings and ``%`` vehicle doses, two DMSO volume levels.

    Returns the written paths.
    """
    folder = Path(folder)
    if dataset == "novartis_drugseq":
        return _write_novartis_synthetic(world, folder)
    if dataset in ("vcpi_0001", "vcpi_0002"):
        return _write_vcpi_synthetic(world, dataset, folder)
    if dataset == "gdpx2":
        return _write_gdpx2_synthetic(world, folder)
    raise KeyError(f"drugseq does not serve {dataset!r}")
