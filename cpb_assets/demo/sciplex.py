"""SYNTHETIC sci-Plex 3 stand-in in GEO's layout (see :mod:`cpb_assets.sources.sciplex`).

Files named like GSM4150378's supplementary files with ``SYNTHETIC`` in the
name: headerless cell-major UMI triplets (gzip), headerless cell and gene
annotations, the space-separated quoted ``pData`` table and the hash table
with compound structures.
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

from cpb_assets.demo.tahoe import cell_counts, plant_defects
from cpb_assets.demo.world import DESIGNS
from cpb_resources.storage import atomic_path

TIME_H = 24.0
CONTROL_WELLS_PER_PLATE = 4  # vehicle wells per culture plate
N_MOUSE_GENES = 15
_ROWS = "ABCDEFGH"
_LINE_NAMES = {"CVCL_0023": "A549", "CVCL_0004": "K562", "CVCL_0031": "MCF7"}


def write_synthetic(world, dataset: str, folder: str | Path, *, cells_per_well: tuple[int, int] | None = None,
                    library_size: float = 1400.0, defect_share: float = 0.06) -> list[Path]:
    """Write the SYNTHETIC sci-Plex 3 stand-in as GEO-style files (names say SYNTHETIC).

    Layout from ``DESIGNS['sciplex']``: one culture plate (``plate_oligo``)
    per (cell line, replicate) with :data:`CONTROL_WELLS_PER_PLATE` vehicle
    wells and one hash well per (compound, dose); doses written in nM. Messy
    on purpose: vehicles named ``Vehicle`` or ``DMSO``; an A549 72 h plate
    (kept; the DE layer uses 24 h); ~3% hash-failed cells with NA metadata; damaged cells for
    every QC rule; versioned gene IDs, mouse barnyard genes and one
    ``_PAR_Y`` copy in the gene annotations.
    """
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
            plates.append((f"plate{k}", ct, rep, TIME_H, wells))
            k += 1
    # the real screen also has an A549 72 h subset: kept by the reader, left out by the DE layer
    a549 = design.cell_types[0]
    plates.append((f"plate{k}", a549, 1, 72.0, [(None, 0.0)] * 2 + [(c, max(design.doses_uM))
                                                                      for c in design.compounds[:5]]))
    blocks, meta = [], []
    for plate, ct, rep, t, wells in plates:
        shift = world.plate_effect(dataset, plate, n_world, 0.1)
        for w, (comp, dose) in enumerate(wells):
            n = int(rng.integers(cpw[0], cpw[1] + 1))
            counts = cell_counts(world, n, ct, comp, dose, t, shift, rng, dataset=dataset,
                                 library_size=library_size,
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
