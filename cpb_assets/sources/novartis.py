"""Novartis DRUG-seq U2OS MoA Box (``novartis_drugseq``), read from the real R files through R.

The release (Zenodo 10.5281/zenodo.14291446; github.com/Novartis/DRUG-seq,
``data/Novartis_drugseq_U2OS_MoABox``; CC-BY-4.0) ships:

``Exp_gzip.RData``
    One R object ``Exp``: a list of 52 batches (named ``'1'`` … ``'52'``),
    each a list of 3 replicate plates (named by barcode, ``VH02010536``),
    each a list of ``UMI.counts`` (a numeric genes × 384 matrix, rownames
    ``SYMBOL,grch38_<chr>``, colnames ``<plate>_<well barcode>``) and
    ``Annotation`` (a data.frame, one row per well, row names = the count
    column names, 18 columns: batch_id, plate_barcode, plate_index, well_id,
    plate_replicate, well_index, col, row, biosample_id,
    external_biosample_id, cmpd_sample_id, well_type SA/RC/EMPTY,
    cell_line_name ``U-2 OS``, cell_line_ncn, concentration, unit ``uM``,
    hours_post_treatment ``'24.0'``, Sample). An uncompressed re-save
    (``Exp.RData``, as the authors recommend) is read the same way.
``drugseq_ensembl_v98_annotation_and_entrez_mapping.RData``
    Three objects; ``drugseq_ensg_v98`` maps ``geneID`` (the count rownames)
    to ``ensembl_gene_id`` (Ensembl 98).
``robust_RC_ReferenceControl_DMSO_wells.txt``
    Tab-separated; the reference-control (DMSO) wells kept as robust after
    the authors' TRUE NULL step, by ``external_biosample_id`` (2 per plate).
``MoABox_compounds_metadata.txt``
    Tab-separated ``cmpd_sample_id, inchi_key, smiles, cas_number, moa``;
    4,345 rows, many without any structure; 140 SMILES carry doubled
    backslashes (``C(\\\\C)``), repaired here (see :func:`repair_smiles`).

The RData files are deserialized with R's ``load()`` through rpy2 (data, never
evaluated as code) and the counts are taken plate by plate as sparse
triplets: Python never holds a dense wells × genes matrix. Note that
``load()`` itself brings the whole ``Exp`` object into R's memory (the
uncompressed object of the full release is tens of GB); each batch is
released in R as soon as it has been read.

Clean-up (METHODS §1, in this order, per plate): wells without an
Annotation row or without counts, wells without a plate barcode, EMPTY
wells, zero-count libraries (after the gene mapping), the positive controls
{BD-11-DV28, EA-18-FP00, SE-15-AV21}, and RC (DMSO) wells not listed as
robust. geneIDs without an Ensembl ID and "split" genes (one geneID, several
Ensembl IDs; every geneID of those Ensembl IDs) are quarantined; several
geneIDs of one Ensembl gene are summed.
"""
from __future__ import annotations

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
from cpb_assets.sources.drugseq_rules import (apply_sample_filters, clean_records, dose_from_parts, finish,
                                              integer_counts, present, require_columns, strip_version, time_hours)
from cpb_assets.sources.readers import check_not_empty, find_source_file

DATASET = "novartis_drugseq"
DATASETS = (DATASET,)

POSITIVE_CONTROLS = ("BD-11-DV28", "EA-18-FP00", "SE-15-AV21")
DMSO_ID = "CB-43-EP73"  # well_type RC
WATER_ID = "EC-27-RY89"  # well_type EMPTY
WELL_TYPES = {"SA", "RC", "EMPTY"}
ANNOTATION_REQUIRED = ["batch_id", "plate_barcode", "well_id", "external_biosample_id", "cmpd_sample_id",
                       "well_type", "cell_line_name", "concentration", "unit", "hours_post_treatment"]
GENE_MAP_OBJECT = "drugseq_ensg_v98"

EXP_PATTERN = "Exp*.RData"
GENE_MAP_PATTERN = "drugseq_ensembl_v98_annotation_and_entrez_mapping*.RData"
ROBUST_PATTERN = "robust_RC_ReferenceControl_DMSO_wells*.txt"
COMPOUNDS_PATTERN = "MoABox_compounds_metadata*.txt"

_ZENODO = "https://zenodo.org/records/14291446/files"
_GITHUB = "https://raw.githubusercontent.com/Novartis/DRUG-seq/main/data/Novartis_drugseq_U2OS_MoABox"
# Neither Zenodo nor GitHub publishes sha256 sums for these files (Zenodo lists md5 only, which this
# downloader does not check), and they could not be fetched from this build machine: sha256 is None,
# so the downloader records the checksum of the first download and verifies against it afterwards.
REMOTE_FILES: dict[str, list[RemoteFile]] = {
    DATASET: [
        RemoteFile(f"{_ZENODO}/Exp_gzip.RData?download=1", "Exp_gzip.RData", None, "CC-BY-4.0"),
        RemoteFile(f"{_ZENODO}/robust_RC_ReferenceControl_DMSO_wells.txt?download=1",
                   "robust_RC_ReferenceControl_DMSO_wells.txt", None, "CC-BY-4.0"),
        RemoteFile(f"{_GITHUB}/MoABox_compounds_metadata.txt", "MoABox_compounds_metadata.txt", None, "CC-BY-4.0"),
        RemoteFile(f"{_GITHUB}/drugseq_ensembl_v98_annotation_and_entrez_mapping.RData",
                   "drugseq_ensembl_v98_annotation_and_entrez_mapping.RData", None, "CC-BY-4.0"),
    ],
}


# --- R side: our own helper functions (never anything read from the data) --------------------------
_R_HELPERS = r"""
local({
  columns <- function(a) {
    list(names = names(a), rownames = rownames(a),
         cols = lapply(a, function(v) if (is.numeric(v)) as.double(v) else as.character(v)))
  }
  plate_parts <- function(plate) {
    if (!is.list(plate)) return(list(error = "is not a list"))
    m <- plate[["UMI.counts"]]
    a <- plate[["Annotation"]]
    if (is.null(m)) return(list(error = "has no UMI.counts"))
    if (!is.matrix(m) || !is.numeric(m))
      return(list(error = paste("UMI.counts is not a numeric matrix but", class(m)[1])))
    if (is.null(a)) return(list(error = "has no Annotation"))
    if (!is.data.frame(a)) return(list(error = paste("Annotation is not a data.frame but", class(a)[1])))
    nr <- nrow(m)
    nz <- which(m != 0 | is.na(m))
    list(dim = dim(m), rownames = rownames(m), colnames = colnames(m),
         i = as.integer((nz - 1) %% nr), j = as.integer((nz - 1) %/% nr), x = as.double(m[nz]),
         anno = columns(a))
  }
  exp_batches <- function(e) {
    x <- e$Exp
    if (!is.list(x) || is.data.frame(x) || is.null(names(x))) return(NULL)
    names(x)
  }
  batch_plates <- function(e, b) {
    x <- e$Exp[[b]]
    if (!is.list(x) || is.data.frame(x) || is.null(names(x))) return(NULL)
    names(x)
  }
  plate_at <- function(e, b, p) plate_parts(e$Exp[[b]][[p]])
  exp_note <- function(e) {
    n <- attr(e$Exp, "note")
    if (is.character(n) && length(n) == 1 && !is.na(n)) n else ""
  }
  drop_batch <- function(e, b) {
    e$Exp[[b]] <- list()
    invisible(NULL)
  }
  load_into <- function(path) {
    env <- new.env(parent = emptyenv())
    nms <- load(path, envir = env)
    list(env = env, names = nms)
  }
  list(columns = columns, plate_parts = plate_parts, load_into = load_into, exp_batches = exp_batches,
       batch_plates = batch_plates, plate_at = plate_at, drop_batch = drop_batch,
       exp_note = exp_note)
})
"""
_helpers = None


def _r():
    """rpy2's robjects (R started with the process environment kept) and our helper functions."""
    global _helpers
    from cpb_resources.limma import r_objects

    ro = r_objects()
    if _helpers is None:
        _helpers = ro.r(_R_HELPERS)
    return ro, _helpers


def _is_null(ro, obj) -> bool:
    return obj is ro.NULL or type(obj).__name__ == "NULLType"


def _strings(ro, obj) -> list | None:
    """An R character vector as Python strings (NA → None); None for R's NULL."""
    if _is_null(ro, obj):
        return None
    return [None if v is ro.NA_Character else str(v) for v in obj]


def _load_rdata(path: Path, wanted: str):
    """``load()`` one RData file into a fresh R environment (parent: the empty environment).

    Returns ``(robjects, helpers, env)``; the caller takes what it needs from
    `env` (object `wanted` is there). Loading deserializes data only; nothing
    of the file is called or evaluated.

    Raises
    ------
    SourceFormatError
        Empty, truncated or non-RData file (field ``<RData>``), or no object
        called `wanted` (field `wanted`).
    """
    check_not_empty(path)
    ro, h = _r()
    from rpy2.rinterface_lib.embedded import RRuntimeError

    try:
        loaded = h.rx2("load_into")(str(path))
    except RRuntimeError as exc:
        raise SourceFormatError(path, "<RData>", f"R cannot load this file (truncated or not an RData file): "
                                                 f"{str(exc).strip()}") from None
    names = _strings(ro, loaded.rx2("names")) or []
    if wanted not in names:
        raise SourceFormatError(path, wanted, f"no R object {wanted!r} in the file (found {names})")
    return ro, h, loaded.rx2("env")


def _frame(ro, parts, file, field: str) -> pd.DataFrame:
    """A data.frame handed over by the ``columns`` helper as pandas (text columns keep None for NA)."""
    names = _strings(ro, parts.rx2("names")) or []
    cols = parts.rx2("cols")
    data = {}
    for k, name in enumerate(names):
        v = cols[k]
        data[name] = (np.asarray(v, dtype=float) if type(v).__name__ == "FloatVector"
                      else pd.Series(_strings(ro, v), dtype=object))
    df = pd.DataFrame(data)
    rn = _strings(ro, parts.rx2("rownames"))
    if rn is not None:
        if len(rn) != len(df):
            raise SourceFormatError(file, field, f"{len(rn)} row names for {len(df)} rows")
        df.index = pd.Index(rn, dtype=object)
    return df


def read_gene_map(path: str | Path) -> pd.DataFrame:
    """``drugseq_ensg_v98`` of the v98 annotation RData as pandas (``geneID``, ``ensembl_gene_id``, …)."""
    path = Path(path)
    ro, h, env = _load_rdata(path, GENE_MAP_OBJECT)
    obj = ro.r["get"](GENE_MAP_OBJECT, envir=env)
    if not ro.r["is.data.frame"](obj)[0]:
        raise SourceFormatError(path, GENE_MAP_OBJECT, "is not a data.frame")
    df = _frame(ro, h.rx2("columns")(obj), path, GENE_MAP_OBJECT).reset_index(drop=True)
    require_columns(df, ["geneID", "ensembl_gene_id"], path)
    return df


def iter_plates(path: str | Path, info: dict | None = None):
    """Yield the plates of ``Exp`` one at a time, counts as sparse matrices.

    Yields
    ------
    (batch, plate, counts, gene_ids, colnames, annotation)
        counts: CSR (wells × geneIDs) int64; gene_ids: the rownames;
        colnames: the count column names; annotation: the plate's
        Annotation data.frame as pandas, index = its row names. `info`
        (if given) receives ``note``: a ``note`` attribute of ``Exp`` (the
        project's SYNTHETIC writers set one; the release has none).

    Raises
    ------
    SourceFormatError
        File unreadable, ``Exp`` not a list of lists, a plate without
        ``UMI.counts``/``Annotation``, counts without dimnames, NaN,
        negative or fractional counts (field ``<batch>/<plate>/UMI.counts``).
    """
    path = Path(path)
    # Python keeps no reference to Exp itself, so that R can free each batch once it has been read
    ro, h, env = _load_rdata(path, "Exp")
    batches = _strings(ro, h.rx2("exp_batches")(env))
    if info is not None:
        info["note"] = _strings(ro, h.rx2("exp_note")(env))[0]
    if not batches:
        raise SourceFormatError(path, "Exp", "must be a named list of batches (Exp[[batch]][[plate]])")
    for b_idx, batch in enumerate(batches, start=1):
        plates = _strings(ro, h.rx2("batch_plates")(env, b_idx))
        if not plates:
            raise SourceFormatError(path, f"Exp/{batch}", "must be a named list of plates")
        for p_idx, plate in enumerate(plates, start=1):
            loc = f"{batch}/{plate}"
            parts = h.rx2("plate_at")(env, b_idx, p_idx)
            if "error" in list(parts.names):
                raise SourceFormatError(path, loc, f"plate {_strings(ro, parts.rx2('error'))[0]}")
            n_genes, n_wells = (int(v) for v in parts.rx2("dim"))
            rows, cols = _strings(ro, parts.rx2("rownames")), _strings(ro, parts.rx2("colnames"))
            if rows is None or cols is None:
                raise SourceFormatError(path, f"{loc}/UMI.counts", "matrix has no row or column names")
            x = np.asarray(parts.rx2("x"), dtype=float)
            counts = sp.csr_matrix((x, (np.asarray(parts.rx2("j")), np.asarray(parts.rx2("i")))),
                                   shape=(n_wells, n_genes))
            counts = integer_counts(counts, path, f"{loc}/UMI.counts", sparse_out=True)
            anno = _frame(ro, parts.rx2("anno"), path, f"{loc}/Annotation")
            del parts
            yield batch, plate, counts, pd.Index(rows), pd.Index(cols), anno
        h.rx2("drop_batch")(env, b_idx)


def gene_summing_matrix(gene_ids: pd.Index, table: pd.DataFrame, file, q: Quarantine
                        ) -> tuple[sp.csc_matrix, pd.DataFrame]:
    """Map DRUG-seq geneIDs to Ensembl: a (n_geneIDs × n_ensembl) 0/1 summing matrix and the genes table.

    geneIDs without an Ensembl ID, and every geneID of a "split" gene (one
    geneID with several Ensembl IDs, and every geneID of those Ensembl IDs),
    are quarantined; several geneIDs of one Ensembl gene are summed. The
    symbol is the geneID's part before the comma (first geneID of the gene).
    """
    require_columns(table, ["geneID", "ensembl_gene_id"], file)
    t = table[["geneID", "ensembl_gene_id"]].astype(object)
    t = t[t["geneID"].isin(gene_ids)].copy()
    t["ensembl_gene_id"] = [e if present(e) else None for e in strip_version(t["ensembl_gene_id"])]
    per = t.dropna().drop_duplicates().groupby("geneID")["ensembl_gene_id"].agg(list)
    split = per[per.str.len() > 1]
    bad_ens = {e for lst in split for e in lst}
    q.add(file, split.index, "split gene: one geneID with several Ensembl IDs", level="gene")
    mapped = {g: v[0] for g, v in per.items() if len(v) == 1 and v[0] not in bad_ens}
    caught = [g for g, v in per.items() if len(v) == 1 and v[0] in bad_ens]
    q.add(file, caught, "geneID of an Ensembl gene that is split elsewhere", level="gene")
    no_ens = [g for g in gene_ids if g not in per.index]
    q.add(file, no_ens, "no Ensembl ID in the gene annotation table", level="gene")
    keep = [g for g in gene_ids if g in mapped]
    ens = pd.Index(sorted({mapped[g] for g in keep}))
    pos = gene_ids.get_indexer(keep)
    S = sp.csc_matrix((np.ones(len(keep), dtype=np.int64), (pos, ens.get_indexer([mapped[g] for g in keep]))),
                      shape=(len(gene_ids), len(ens)))
    first: dict[str, str] = {}
    for g in keep:
        first.setdefault(mapped[g], g.split(",")[0])
    genes = pd.DataFrame({"symbol": [first[e] for e in ens]}, index=pd.Index(ens, name="gene"))
    return S, genes


def _read_tsv(path: Path, required) -> pd.DataFrame:
    check_not_empty(path)
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise SourceFormatError(path, "<table>", f"unreadable tab-separated table: {exc}") from None
    require_columns(df, required, path)
    return df


def harmonize(folder: str | Path, dataset: str, registry: pd.DataFrame) -> Harmonized:
    """Read the Novartis release files of `folder` and return the harmonized AnnData.

    Parameters
    ----------
    folder
        Holds ``Exp*.RData``, the v98 gene annotation RData, the robust RC
        table and the compound table (real file names, optional suffixes).
    dataset
        ``novartis_drugseq``.
    registry
        ``source_id, pubchem_cid, cid_method`` for this dataset.

    Returns
    -------
    Harmonized
        X: integer UMI counts (wells × Ensembl genes, sparse); doses in µM,
        times in h; controls are the robust RC (DMSO) wells.
    """
    if dataset != DATASET:
        raise KeyError(f"novartis does not serve {dataset!r}")
    folder = Path(folder)
    exp_file = find_source_file(folder, EXP_PATTERN)
    gene_file = find_source_file(folder, GENE_MAP_PATTERN)
    robust_file = find_source_file(folder, ROBUST_PATTERN)
    cmpd_file = find_source_file(folder, COMPOUNDS_PATTERN)
    q = Quarantine(dataset)
    robust_ids = set(_read_tsv(robust_file, ["external_biosample_id"])["external_biosample_id"].dropna())
    gene_table = read_gene_map(gene_file)

    S = genes = gene_ids = None
    blocks, annos = [], []
    info: dict = {}
    for batch, plate, counts, rows, cols, anno in iter_plates(exp_file, info):
        loc = f"{batch}/{plate}"
        if gene_ids is None:
            gene_ids = rows
            S, genes = gene_summing_matrix(gene_ids, gene_table, gene_file, q)
        elif not rows.equals(gene_ids):
            if len(rows) != len(gene_ids) or set(rows) != set(gene_ids):
                raise SourceFormatError(exp_file, f"{loc}/UMI.counts", "plate has another gene set than the "
                                                                       "first plate")
            counts = counts[:, rows.get_indexer(gene_ids)]
        for col in ANNOTATION_REQUIRED:
            if col not in anno.columns:
                raise SourceFormatError(exp_file, f"{loc}/Annotation/{col}", "required column missing")
        if cols.has_duplicates or anno.index.has_duplicates:
            raise SourceFormatError(exp_file, f"{loc}/UMI.counts", "duplicate well (column or Annotation row) names")
        ids = pd.Index([f"{batch}/{c}" for c in cols])
        no_anno = ~cols.isin(anno.index)
        q.add(exp_file, ids[no_anno], "count column without an Annotation row")
        orphan = anno.index[~anno.index.isin(cols)]
        q.add(exp_file, [f"{batch}/{c}" for c in orphan], "Annotation row without a count column")
        X = (counts[~no_anno] @ S).tocsr()
        anno = anno.loc[cols[~no_anno]]  # Annotation rows come in their own order: align to the counts
        anno.index = ids[~no_anno]
        wt = anno["well_type"].astype(str).str.strip().str.upper()
        unknown = sorted(set(wt) - WELL_TYPES)
        if unknown:
            raise SourceFormatError(exp_file, f"{loc}/Annotation/well_type", f"unknown well types {unknown}")
        cmpd = anno["cmpd_sample_id"].astype(str).str.strip()
        lib = np.asarray(X.sum(axis=1)).ravel()
        keep = apply_sample_filters(anno.index, [
            ("missing plate ID (plate_barcode)", ~anno["plate_barcode"].map(present).to_numpy(dtype=bool)),
            ("empty well (well_type EMPTY)", (wt == "EMPTY").to_numpy()),
            ("zero-count library", lib == 0),
            ("positive control (BD-11-DV28, EA-18-FP00, SE-15-AV21)",
             ((wt == "SA") & cmpd.isin(POSITIVE_CONTROLS)).to_numpy()),
            ("reference-control DMSO well not in the robust RC table",
             ((wt == "RC") & ~anno["external_biosample_id"].astype(str).isin(robust_ids)).to_numpy()),
        ], exp_file, q)
        blocks.append(X[keep])
        annos.append(anno[keep].assign(wt_norm=wt[keep].to_numpy()))
    anno = pd.concat(annos)
    X = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, len(genes)), dtype=np.int64)

    comp = _read_tsv(cmpd_file, ["cmpd_sample_id"]).set_index("cmpd_sample_id")
    name_col = next((c for c in ("chemical_name", "name", "compound_name") if c in comp.columns), None)
    cell = resolve_cell_types(anno["cell_line_name"], q, exp_file)
    rows, ok = [], np.zeros(len(anno), dtype=bool)
    for k, (rid, r, ct) in enumerate(zip(anno.index, anno.itertuples(index=False), cell)):
        if ct is None:  # quarantined as unknown cell line
            continue
        ctrl = r.wt_norm == "RC"
        c = str(r.cmpd_sample_id).strip()
        try:
            dose = 0.0 if ctrl else dose_from_parts(r.concentration, r.unit, exp_file, "concentration")
            time_h = time_hours(r.hours_post_treatment)
        except UnitError as exc:
            q.add(exp_file, [rid], f"unparseable dose or time: {exc}")
            continue
        nm = comp.at[c, name_col] if (name_col and c in comp.index) else None
        label = nm if isinstance(nm, str) and nm.strip() else c
        rows.append({"plate": str(r.plate_barcode).strip(), "well": str(r.well_id).strip(), "cell_type": ct,
                     "perturbagen": label, "perturbagen_name": label, "is_control": bool(ctrl),
                     "pert_dose_uM": dose, "pert_time_h": time_h, "source_id": None if ctrl else c, "pert_id": c})
        ok[k] = True
    files = [exp_file, gene_file, robust_file, cmpd_file]
    return finish(pd.DataFrame(rows), X[ok], genes, dataset=dataset, registry=registry, file=exp_file, q=q,
                  notes={"files": [p.name for p in files], "smiles_repaired": _repaired_ids(cmpd_file)},
                  files=files + ([info["note"]] if is_synthetic(info.get("note", "")) else []))


def repair_smiles(smiles: str | None) -> tuple[str | None, bool]:
    """Undo the doubled backslashes of the MoA Box table (``C(\\\\C)`` → ``C(\\C)``).

    The table stores some double-bond directions as two backslashes (an
    escaping artefact); RDKit rejects some of these and misreads none of the
    repaired ones (checked: all 140 repaired SMILES give the table's own
    InChIKey). Returns the SMILES and whether it was changed.
    """
    if smiles is None or "\\\\" not in smiles:
        return smiles, False
    s = smiles
    while "\\\\" in s:
        s = s.replace("\\\\", "\\")
    return s, True


def _repaired_ids(cmpd_file: Path) -> list[str]:
    df = _read_tsv(cmpd_file, ["cmpd_sample_id"])
    if "smiles" not in df.columns:
        return []
    return [i for i, s in zip(df["cmpd_sample_id"], df["smiles"]) if isinstance(s, str) and "\\\\" in s]


def compound_records(folder: str | Path, dataset: str = DATASET) -> pd.DataFrame:
    """The compounds of the MoA Box table (DMSO and water left out), SMILES repaired; see ``base``.

    The table has no compound names: ``name`` stays None (the registry
    resolves by InChIKey/SMILES; the samples carry the ``cmpd_sample_id``).
    ``catalog_id`` is the CAS number.
    """
    cmpd_file = find_source_file(Path(folder), COMPOUNDS_PATTERN)
    df = _read_tsv(cmpd_file, ["cmpd_sample_id"])
    df = df[~df["cmpd_sample_id"].str.strip().isin([DMSO_ID, WATER_ID])]
    empty = pd.Series([None] * len(df), index=df.index, dtype=object)
    pick = lambda *cs: next((df[c] for c in cs if c in df.columns), empty)  # noqa: E731
    smiles = [repair_smiles(s if isinstance(s, str) else None)[0] for s in pick("smiles", "SMILES")]
    out = pd.DataFrame({"source_id": df["cmpd_sample_id"], "name": pick("chemical_name", "name"),
                        "smiles": smiles, "inchikey": pick("inchi_key", "inchikey"),
                        "catalog_id": pick("cas_number")})
    return clean_records(out, cmpd_file)

