"""Novartis DRUG-seq files in the real release layout, written through R: the demo world's stand-in and fixtures.

:func:`write_native` writes what the release ships (see
:mod:`cpb_assets.sources.novartis`): ``Exp_gzip*.RData`` holding the R list
``Exp[[batch]][[plate]]`` with ``UMI.counts`` (numeric genes × wells matrix,
dimnames) and ``Annotation`` (data.frame, the release's 18 columns, row names =
count column names), gzip-compressed by R's ``save()``; the v98 gene
annotation RData with its three objects; the tab-separated robust RC table
and compound table. :func:`write_synthetic` fills it from the SYNTHETIC demo
world: full 384-well plates (16 RC DMSO wells in column 23, the three positive
controls in triplicate in column 24, unused wells EMPTY with water).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cpb_resources.storage import atomic_path

SYNTHETIC_TAG = "SYNTHETIC"
# the release's Annotation columns, in order, with their R types
ANNOTATION_COLUMNS = {
    "batch_id": "int", "plate_barcode": "chr", "plate_index": "chr", "well_id": "chr", "plate_replicate": "int",
    "well_index": "chr", "col": "int", "row": "int", "biosample_id": "int", "external_biosample_id": "chr",
    "cmpd_sample_id": "chr", "well_type": "chr", "cell_line_name": "chr", "cell_line_ncn": "chr",
    "concentration": "num", "unit": "chr", "hours_post_treatment": "chr", "Sample": "chr",
}
GENE_MAP_OBJECTS = ("drugseq_ensg_v98", "drugseq_ensg_v98_entrez_mapping", "drugseq_ensg_v98_entrez_mapping_notNULL")

# demo layout (per plate); counts are documented for tests
COMPOUNDS_PER_BATCH = 20
RC_PER_PLATE = 16  # column 23, as in the release
ROBUST_RC_PER_PLATE = 2  # as in the release: 2 robust RC wells per plate
POSITIVE_CONTROL_REPLICATES = 3  # each positive control 3x per plate, column 24
LIBRARY_SIZE = 40_000.0
DMSO_ID, WATER_ID = "CB-43-EP73", "EC-27-RY89"
POSITIVE_CONTROLS = ("BD-11-DV28", "EA-18-FP00", "SE-15-AV21")
# rows of the real MoABox_compounds_metadata.txt (CC-BY-4.0) for the controls
CONTROL_ROWS = [
    ("CB-43-EP73", "IAZDPXIOMUYVGZ-UHFFFAOYSA-N", "C[S+](C)[O-]", None, None),
    ("EC-27-RY89", "XLYOFNOQVPJJNP-UHFFFAOYSA-N", "O", None, None),
    ("BD-11-DV28", None, None, None, None),
    ("EA-18-FP00", "HYFHYPWGAURHIV-JFIAXGOJSA-N",
     "COC(=O)C[C@](O)(CCCC(C)(C)O)C(=O)O[C@@H]1C(OC)=C[C@]23CCCN2CCc2cc4c(cc2[C@H]13)OCO4", "26833-87-4",
     "Translation inhibitor"),
    ("SE-15-AV21", "NUUSUAWULNXMGF-UHFFFAOYSA-N", "O=C(Nc1ccc(Cl)c(Cl)c1)Nc1ccc2nnsc2c1", "1257423-87-2",
     "Eukaryotic Translation Initiation Factor 2-alpha Kinase 1 (HRI) Activators"),
]

_R_WRITERS = r"""
local({
  plate <- function(x, nr, nc, rn, cn, cols, anno_rn) {
    m <- matrix(x, nrow = nr, ncol = nc, dimnames = list(rn, cn))
    a <- as.data.frame(cols, stringsAsFactors = FALSE, optional = TRUE)
    rownames(a) <- anno_rn
    list(UMI.counts = m, Annotation = a)
  }
  frame <- function(cols) as.data.frame(cols, stringsAsFactors = FALSE, optional = TRUE)
  save_exp <- function(Exp, note, path) {
    attr(Exp, "note") <- note
    save(Exp, file = path, compress = "gzip")
  }
  save_gene_map <- function(a, b, c, path) {
    drugseq_ensg_v98 <- a
    drugseq_ensg_v98_entrez_mapping <- b
    drugseq_ensg_v98_entrez_mapping_notNULL <- c
    save(drugseq_ensg_v98, drugseq_ensg_v98_entrez_mapping, drugseq_ensg_v98_entrez_mapping_notNULL, file = path)
  }
  list(plate = plate, frame = frame, save_exp = save_exp, save_gene_map = save_gene_map)
})
"""
_writers = None


def _r():
    global _writers
    from cpb_resources.limma import r_objects

    ro = r_objects()
    if _writers is None:
        _writers = ro.r(_R_WRITERS)
    return ro, _writers


def _r_vector(ro, values, kind: str):
    v = pd.Series(values, dtype=object)
    if kind == "int":
        return ro.IntVector([ro.NA_Integer if pd.isna(x) else int(x) for x in v])
    if kind == "num":
        return ro.FloatVector([ro.NA_Real if pd.isna(x) else float(x) for x in v])
    return ro.StrVector([ro.NA_Character if x is None or (isinstance(x, float) and np.isnan(x)) else str(x)
                         for x in v])


def _r_columns(ro, df: pd.DataFrame, kinds: dict[str, str] | None = None):
    kinds = kinds or {}
    cols = []
    for c in df.columns:
        kind = kinds.get(c) or ("int" if df[c].dtype.kind in "iu" else "num" if df[c].dtype.kind == "f" else "chr")
        cols.append((c, _r_vector(ro, df[c].to_numpy(), kind)))
    return ro.ListVector.from_length(0) if not cols else ro.vectors.ListVector(cols)


def write_native(folder: str | Path, plates: dict[tuple[str, str], tuple[np.ndarray, list, pd.DataFrame]],
                 gene_ids, gene_table: pd.DataFrame, robust: pd.DataFrame, compounds: pd.DataFrame | None,
                 *, tag: str = SYNTHETIC_TAG, note: str = "") -> list[Path]:
    """Write the Novartis release files (R objects through R's ``save()``).

    Parameters
    ----------
    plates
        ``(batch, plate_barcode) -> (counts, colnames, annotation)``: counts
        (n_genes × n_wells, stored as R ``num`` like the release), the count
        column names, and the Annotation (one row per well, index = its count
        column name, in any order; the release's columns where given, with
        their R types).
    gene_ids
        Row names of every plate's counts (``SYMBOL,grch38_<chr>``).
    gene_table
        ``drugseq_ensg_v98`` (``geneID``, ``ensembl_gene_id``).
    tag
        Appended to every file name (``Exp_gzip_<tag>.RData`` …); '' keeps the release's names.
    compounds
        The compound table; None leaves an existing table in `folder` alone
        (fixtures keep the real one).

    Returns
    -------
    The written paths.
    """
    ro, w = _r()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rn = ro.StrVector([str(g) for g in gene_ids])
    batches: dict[str, list] = {}
    for (batch, plate), (counts, colnames, anno) in plates.items():
        counts = np.asarray(counts, dtype=np.float64)
        r_plate = w.rx2("plate")(ro.FloatVector(counts.ravel(order="F")), counts.shape[0], counts.shape[1], rn,
                                 ro.StrVector([str(c) for c in colnames]),
                                 _r_columns(ro, anno, ANNOTATION_COLUMNS),
                                 ro.StrVector([str(i) for i in anno.index]))
        batches.setdefault(str(batch), []).append((str(plate), r_plate))
    exp = ro.vectors.ListVector([(b, ro.vectors.ListVector(ps)) for b, ps in batches.items()])
    out = []
    sfx = f"_{tag}" if tag else ""
    target = folder / f"Exp_gzip{sfx}.RData"
    with atomic_path(target) as tmp:
        w.rx2("save_exp")(exp, note, str(tmp))
    out.append(target)
    gt = gene_table.reset_index(drop=True)
    frame = w.rx2("frame")
    target = folder / f"drugseq_ensembl_v98_annotation_and_entrez_mapping{sfx}.RData"
    with atomic_path(target) as tmp:
        full = gt.assign(entrezgene_id=None)
        w.rx2("save_gene_map")(frame(_r_columns(ro, gt)), frame(_r_columns(ro, full)),
                               frame(_r_columns(ro, full.iloc[:0])), str(tmp))
    out.append(target)
    for name, df in ((f"robust_RC_ReferenceControl_DMSO_wells{sfx}.txt", robust),
                     (f"MoABox_compounds_metadata{sfx}.txt", compounds)):
        if df is None:
            continue
        with atomic_path(folder / name) as tmp:
            df.to_csv(tmp, sep="\t", index=False)
        out.append(folder / name)
    return out


def _well(row: int, col: int) -> str:
    return f"{chr(ord('A') + row)}{col:02d}"


def _barcode(v: int) -> str:
    """A 10-nt well barcode (``well_index``) from an integer below 4**10."""
    return "".join("ACGT"[(v >> (2 * k)) & 3] for k in range(10))


def compound_id(i: int) -> str:
    """The demo's ``cmpd_sample_id`` of world compound `i` (pattern XX-00-XX00; ``SY`` marks it synthetic)."""
    return f"SY-{i:02d}-ZS{i:02d}"


def write_synthetic(world, dataset: str, folder: str | Path) -> list[Path]:
    """Write the demo world's SYNTHETIC Novartis release into `folder`.

    Quirks planted (a few of each): 384-well plates mostly EMPTY, one
    zero-count library per batch, the three positive controls, 14 non-robust
    RC wells per plate, nM plates on even batches, ``'24.0 hr'`` times in
    batch 2, Annotation rows out of count order, geneIDs without Ensembl IDs,
    patch-contig geneIDs of one gene, compounds without structure and SMILES
    with doubled backslashes.
    """
    from cpb_assets.demo.world import DESIGNS, SYNTHETIC_NOTE
    from cpb_assets.harmonize import genes as gmap
    from cpb_assets.harmonize.contexts import CONTEXTS

    if dataset != "novartis_drugseq":
        raise KeyError(f"the Novartis writer does not serve {dataset!r}")
    d = DESIGNS[dataset]
    rng = world.rng("drugseq", dataset)
    genes = world.genes
    gidx = np.arange(len(genes))
    chrom = gmap.gene_table(gene_type=None).drop_duplicates("ensembl_id").set_index("ensembl_id")["chromosome"]
    chr_of = [("MT" if k == "mito" else str(chrom.get(e, "1"))) for e, k in zip(genes.index, genes["kind"])]
    gene_ids = [f"{s},grch38_{c}" for s, c in zip(genes["symbol"], chr_of)]
    # two genes also counted under a patch-contig geneID (summed back); three geneIDs without Ensembl ID
    patch = [int(i) for i in rng.choice(np.flatnonzero(genes["kind"] == "extra"), 2, replace=False)]
    extra_ids = [f"{genes['symbol'].iloc[i]},grch38_{chr_of[i]}_PATCH" for i in patch]
    orphan_ids = [f"SYNTHETIC-LOC{k},grch38_1" for k in range(1, 4)]
    all_ids = gene_ids + extra_ids + orphan_ids
    gene_table = pd.DataFrame({"geneID": all_ids,
                               "ensembl_gene_id": list(genes.index) + [genes.index[i] for i in patch]
                               + [None] * len(orphan_ids)})
    cell = d.cell_types[0]
    cell_name = str(CONTEXTS.loc[cell, "name"])
    comps = list(d.compounds)
    batches = [comps[i:i + COMPOUNDS_PER_BATCH] for i in range(0, len(comps), COMPOUNDS_PER_BATCH)]
    plates, robust_rows = {}, []
    bio = 1_000_000
    for b, batch_comps in enumerate(batches, start=1):
        nm = b % 2 == 0  # concentrations in nM on even batches
        for rep in range(1, d.replicates + 1):
            plate = f"SYNVH{b:02d}{rep:02d}"
            treated = [(c, dose) for c in batch_comps for dose in d.doses_uM]
            treated = [treated[i] for i in rng.permutation(len(treated))]
            pos = [(r, c) for c in range(1, 23) for r in range(16)]
            lay = {}  # well -> (well_type, compound, dose_uM, zero)
            for (c, dose), (r, col) in zip(treated, pos):
                lay[_well(r, col)] = ("SA", c, dose, False)
            if rep == 1:  # one failed library per batch: an extra replicate well with no reads
                r, col = pos[len(treated)]
                lay[_well(r, col)] = ("SA", batch_comps[0], d.doses_uM[-1], True)
            for r in range(RC_PER_PLATE):
                lay[_well(r, 23)] = ("RC", DMSO_ID, 0.0, False)
            for k, pc in enumerate(np.repeat(POSITIVE_CONTROLS, POSITIVE_CONTROL_REPLICATES)):
                lay[_well(k, 24)] = ("SA", str(pc), 10.0, False)
            wells = [_well(r, c) for r in range(16) for c in range(1, 25)]
            rows = pd.DataFrame([lay.get(w, ("EMPTY", WATER_ID, 0.0, False)) for w in wells],
                                columns=["well_type", "compound", "dose_uM", "zero"], index=wells)
            sim_compound = [c if isinstance(c, (int, np.integer)) else
                            (POSITIVE_CONTROLS.index(c) if c in POSITIVE_CONTROLS else None)
                            for c in rows["compound"]]
            live = (rows["well_type"] != "EMPTY").to_numpy()
            counts = np.zeros((len(rows), len(gidx)), dtype=np.int64)
            sim = pd.DataFrame({"cell_type": cell, "plate": plate, "time_h": d.times_h[0],
                                "compound": [c for c, lv in zip(sim_compound, live) if lv],
                                "dose_uM": rows["dose_uM"].to_numpy()[live]})
            counts[live] = world.count_matrix(sim, gidx, dataset=dataset, library_size=LIBRARY_SIZE, rng=rng)
            counts[~live] = rng.poisson(0.002, (int((~live).sum()), len(gidx)))  # a few stray reads
            counts[rows["zero"].to_numpy()] = 0
            moved = rng.binomial(counts[:, patch], 0.3)  # patch-contig geneIDs take part of their gene's reads
            counts[:, patch] -= moved
            full = np.hstack([counts, moved, rng.poisson(0.5, (len(rows), len(orphan_ids)))])
            barcodes = [_barcode(int(v)) for v in rng.choice(4 ** 10, len(rows), replace=False)]
            colnames = [f"{plate}_{bc}" for bc in barcodes]
            cmpd = [compound_id(int(c)) if isinstance(c, (int, np.integer)) else c for c in rows["compound"]]
            conc = [dose * 1000.0 if (nm and wt == "SA") else dose for dose, wt in zip(rows["dose_uM"],
                                                                                       rows["well_type"])]
            unit = ["nM" if (nm and wt == "SA") else "uM" for wt in rows["well_type"]]
            hours = "24.0" if b != 2 else "24.0 hr"
            anno = pd.DataFrame({
                "batch_id": b, "plate_barcode": plate, "plate_index": "SYNTHETIC", "well_id": wells,
                "plate_replicate": rep, "well_index": barcodes,
                "col": [int(w[1:]) for w in wells], "row": [ord(w[0]) - ord("A") + 1 for w in wells],
                "biosample_id": np.arange(len(rows)) + bio,
                "external_biosample_id": [f"SX-{bio + k}" for k in range(len(rows))],
                "cmpd_sample_id": cmpd, "well_type": rows["well_type"].to_numpy(),
                "cell_line_name": cell_name, "cell_line_ncn": "SYNTHETIC",
                "concentration": np.array(conc, dtype=float), "unit": unit, "hours_post_treatment": hours,
                "Sample": [f"{ci}_{co:g}{u}_{hours}_{b}" for ci, co, u in zip(cmpd, conc, unit)],
            }, index=colnames)
            bio += len(rows)
            rc = anno[anno["well_type"] == "RC"].iloc[:ROBUST_RC_PER_PLATE]
            robust_rows.append(rc[["batch_id", "plate_barcode", "well_id", "external_biosample_id",
                                   "cmpd_sample_id"]])
            # the Annotation rows come in another order than the count columns (the reader realigns)
            plates[(str(b), plate)] = (full.T.astype(np.float64), colnames, anno.iloc[rng.permutation(len(anno))])
    comp = world.compounds.iloc[comps]
    inchi = comp["inchikey"].to_numpy(dtype=object).copy()
    smiles = comp["smiles"].to_numpy(dtype=object).copy()
    no_structure = rng.choice(len(comps), 3, replace=False)  # a few compounds lack any structure
    inchi[no_structure] = None
    smiles[no_structure] = None
    smiles = [s.replace("\\", "\\\\") if isinstance(s, str) else s for s in smiles]  # the table's doubled "\"
    compounds = pd.DataFrame({"cmpd_sample_id": [compound_id(i) for i in comps], "inchi_key": inchi,
                              "smiles": smiles, "cas_number": None, "moa": None})
    controls = pd.DataFrame(CONTROL_ROWS, columns=list(compounds.columns))
    return write_native(folder, plates, all_ids, gene_table, pd.concat(robust_rows),
                        pd.concat([compounds, controls], ignore_index=True), note=SYNTHETIC_NOTE)
