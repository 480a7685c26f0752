"""Novartis DRUG-seq U2OS MoA Box (``novartis_drugseq``), read from the real R files (without R).

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

The RData files are read by :mod:`cpb_assets.sources.rdata`, a streaming
reader of R's serialization format written for this project (no R, no
``load()``; data only, never evaluated): ``Exp`` is walked sequentially from
the gzip stream, one plate at a time, each count matrix read sparse block by
block, so neither R nor Python ever holds more than one plate (the previous
``load()`` through rpy2 held the whole ``Exp``, tens of GB for the release).

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
from cpb_assets.sources.rdata import (RDataReader, RObject, SparseVector, as_character, column_values,
                                      is_data_frame, is_numeric, r_class, r_names, row_names)
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


def _exp_layout(path: Path):
    """First pass over the file: the names of ``Exp``'s batches, plates and plate elements, and its note.

    R writes a list's names after its elements, so the names of the batches
    are known only at the end of ``Exp``: this pass walks the whole stream,
    skipping (not keeping) every vector, and the second pass reads the
    plates knowing their names.

    Returns
    -------
    (batches, plates, elements, note)
        ``batches``: ``names(Exp)`` (None: ``Exp`` is not a named list);
        ``plates[b]``: ``names(Exp[[b]])`` (None: not a named list);
        ``elements[b][p]``: ``names(Exp[[b]][[p]])`` (None: no names;
        ``False``: the plate is not a list).
    """
    found: list[str] = []
    batches = note = None
    plates: list = []
    elements: list = []
    with RDataReader(path) as r:
        for name, node in r.objects():
            found.append(name)
            if name != "Exp" or batches is not None or plates:
                continue
            if not node.is_list:
                continue
            for b in node.elements():
                if not b.is_list:
                    plates.append(None)
                    elements.append([])
                    continue
                per = []
                for p in b.elements():
                    if p.is_list:
                        for e in p.elements():
                            e.skip()
                        per.append(r_names_of(p.attributes()))
                    else:
                        per.append(False)
                attrs = b.attributes()
                plates.append(None if _inherits(attrs, "data.frame") else r_names_of(attrs))
                elements.append(per)
            attrs = node.attributes()
            batches = None if _inherits(attrs, "data.frame") else r_names_of(attrs)
            n = attrs.get("note")
            note = n.value[0] if (n is not None and n.type == "character" and len(n) == 1
                                  and n.value[0] is not None) else ""
    if "Exp" not in found:
        raise SourceFormatError(path, "Exp", f"no R object 'Exp' in the file (found {found})")
    return batches, plates, elements, note or ""


def r_names_of(attrs: dict) -> list | None:
    """``names()`` from a list's attributes (None for no names)."""
    n = attrs.get("names")
    return None if n is None or n.type != "character" else list(n.value)


def _inherits(attrs: dict, cls: str) -> bool:
    c = attrs.get("class")
    return c is not None and c.type == "character" and cls in c.value


def _frame(obj: RObject, file, field: str) -> pd.DataFrame:
    """A data.frame as pandas: numeric columns float64 (NA → NaN), others strings (NA → None); index = row names."""
    names = r_names(obj) or []
    data = {}
    for k, name in enumerate(names):
        data[name] = column_values(obj.value[k], file, f"{field}/{name}")
    df = pd.DataFrame(data)
    rn = row_names(obj)
    if rn is not None:
        if len(rn) != len(df):
            raise SourceFormatError(file, field, f"{len(rn)} row names for {len(df)} rows")
        df.index = pd.Index(rn, dtype=object)
    return df


def read_gene_map(path: str | Path) -> pd.DataFrame:
    """``drugseq_ensg_v98`` of the v98 annotation RData as pandas (``geneID``, ``ensembl_gene_id``, …).

    Read with :mod:`cpb_assets.sources.rdata` (the file's other objects are skipped).
    """
    path = Path(path)
    check_not_empty(path)
    found, obj = [], None
    with RDataReader(path) as r:
        for name, node in r.objects():
            found.append(name)
            if name == GENE_MAP_OBJECT and obj is None:
                obj = node.read()
    if GENE_MAP_OBJECT not in found:
        raise SourceFormatError(path, GENE_MAP_OBJECT, f"no R object {GENE_MAP_OBJECT!r} in the file (found {found})")
    if not is_data_frame(obj):
        raise SourceFormatError(path, GENE_MAP_OBJECT, "is not a data.frame")
    df = _frame(obj, path, GENE_MAP_OBJECT).reset_index(drop=True)
    require_columns(df, ["geneID", "ensembl_gene_id"], path)
    return df


def _plate_parts(node, names: list | None, path: Path, loc: str):
    """Read one plate: ``(counts RObject, Annotation RObject)``; its other elements are skipped.

    ``UMI.counts`` is read sparse (only its non-zero entries are kept, block
    by block). Raises the reader's error for a plate that is not a list, or
    lacks a numeric matrix ``UMI.counts`` or a data.frame ``Annotation``.
    """
    if names is False or not node.is_list:
        node.skip()
        raise SourceFormatError(path, loc, "plate is not a list")
    names = names or []
    first = lambda key: next((k for k, n in enumerate(names) if n == key), None)  # noqa: E731
    k_m, k_a = first("UMI.counts"), first("Annotation")
    m = a = None
    for k, e in enumerate(node.elements(names)):
        if k == k_m:
            m = e.read(sparse=True)
        elif k == k_a:
            a = e.read()
        else:
            e.skip()
    if m is None or m.type == "NULL":
        raise SourceFormatError(path, loc, "plate has no UMI.counts")
    dim = m.attr("dim")
    if dim is None or len(dim) != 2 or not is_numeric(m):
        raise SourceFormatError(path, loc, f"plate UMI.counts is not a numeric matrix but {r_class(m)[0]}")
    if a is None or a.type == "NULL":
        raise SourceFormatError(path, loc, "plate has no Annotation")
    if not is_data_frame(a):
        raise SourceFormatError(path, loc, f"plate Annotation is not a data.frame but {r_class(a)[0]}")
    return m, a


def _dimnames(m: RObject):
    dn = m.attr("dimnames")
    if dn is None or dn.type != "list" or len(dn.value) != 2:
        return None, None
    return tuple(None if v.type == "NULL" else as_character(v) for v in dn.value)


def iter_plates(path: str | Path, info: dict | None = None):
    """Yield the plates of ``Exp`` one at a time, counts as sparse matrices.

    The file is read by :mod:`cpb_assets.sources.rdata` in two sequential
    passes over its (decompressed) stream: the first collects the names
    (R writes them after the elements), the second reads one plate at a
    time, its count matrix sparse, block by block; no other plate is held.

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
        negative or fractional counts (field ``<batch>/<plate>/UMI.counts``),
        or anything but data in the file (code, environments).
    """
    path = Path(path)
    check_not_empty(path)
    batches, plates, elements, note = _exp_layout(path)
    if info is not None:
        info["note"] = note
    if not batches:
        raise SourceFormatError(path, "Exp", "must be a named list of batches (Exp[[batch]][[plate]])")
    with RDataReader(path) as r:
        exp = next(node for name, node in r.objects() if name == "Exp")
        for b_idx, bnode in enumerate(exp.elements(batches)):
            batch = batches[b_idx]
            if not plates[b_idx]:
                raise SourceFormatError(path, f"Exp/{batch}", "must be a named list of plates")
            for p_idx, pnode in enumerate(bnode.elements(plates[b_idx])):
                plate = plates[b_idx][p_idx]
                loc = f"{batch}/{plate}"
                m, a = _plate_parts(pnode, elements[b_idx][p_idx], path, loc)
                n_genes, n_wells = (int(v) for v in m.attr("dim").value)
                rows, cols = _dimnames(m)
                if rows is None or cols is None:
                    raise SourceFormatError(path, f"{loc}/UMI.counts", "matrix has no row or column names")
                sv = m.value if isinstance(m.value, SparseVector) else None
                idx, x = (sv.index, sv.values) if sv is not None else (np.zeros(0, np.int64), np.zeros(0))
                nr = max(n_genes, 1)
                counts = sp.csr_matrix((x, ((idx // nr).astype(np.int32), (idx % nr).astype(np.int32))),
                                       shape=(n_wells, n_genes))
                del m, sv, idx, x
                counts = integer_counts(counts, path, f"{loc}/UMI.counts", sparse_out=True)
                anno = _frame(a, path, f"{loc}/Annotation")
                del a
                yield batch, plate, counts, pd.Index(rows), pd.Index(cols), anno


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

