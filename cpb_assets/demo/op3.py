"""SYNTHETIC OP3 stand-in in the layout of Open Problems' pseudobulk h5ad (see :mod:`cpb_assets.sources.op3`).

One pseudobulk AnnData (X = summed counts as float32 CSR, var index = gene
symbols with no columns, the release's obs columns) and a symbol fallback table.
"""
from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cpb_assets.demo.world import DESIGNS, SYNTHETIC_NOTE
from cpb_assets.harmonize.contexts import OP3_CELL_TYPES
from cpb_assets.sources.op3 import DATASET, DMSO_NAME, DONORS, POSITIVE_CONTROLS, SYNTHETIC_TAG
from cpb_resources.storage import atomic_path

def write_native(path: str | Path, obs: pd.DataFrame, counts: np.ndarray, symbols, *, note: str = "") -> Path:
    """Write an OP3-style pseudobulk h5ad (X = counts, var index = symbols) atomically."""
    adata = ad.AnnData(X=sp.csr_matrix(np.asarray(counts, dtype=np.float32)), obs=obs,
                       var=pd.DataFrame(index=pd.Index([str(s) for s in symbols])))
    adata.uns["note"] = note
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
    return Path(path)


WELLS_DMSO = 4
MIN_CELLS, MAX_CELLS = 5, 150
CELLS_PER_TYPE = {"CL_0000084": (60, 150), "CL_0000623": (15, 50), "CL_0000763": (8, 40), "CL_0000236": (5, 30)}
READS_PER_CELL = 800.0
# source symbols planted for the gene-mapping quirks of the demo
PREVIOUS_SYMBOLS = {"MARCHF1": "MARCH1", "SEPTIN7": "SEPT7", "SEPTIN2": "SEPT2"}
N_FALLBACK, N_UNMAPPED = 2, 2


def write_synthetic(world, dataset: str, folder: str | Path) -> list[Path]:
    """Write the SYNTHETIC OP3 stand-in: one pseudobulk h5ad and its symbol fallback table.

    One plate per donor (the design's replicates); each well holds the four
    immune cell types. Quirks: positive-control wells (Belinostat, Dabrafenib),
    a few previous gene symbols (MARCH1, SEPT7 …), two clone-style symbols that
    only the fallback table resolves, two symbols nothing resolves, low-cell
    pseudobulks, and a ``split`` column.
    """
    if dataset != DATASET:
        raise KeyError(f"op3 does not serve {dataset!r}")
    folder = Path(folder)
    d = DESIGNS[DATASET]
    rng = world.rng("op3", DATASET)
    inv_ct = {v: k for k, v in OP3_CELL_TYPES.items() if k.endswith("cells")}
    rows = []
    for rep in range(d.replicates):
        donor = DONORS["donor_id"].iloc[rep % len(DONORS)]
        plate = f"plate_SYN{rep + 1}"
        wells = ([("trt", c) for c in d.compounds] + [("dmso", None)] * WELLS_DMSO
                 + [("pos", n) for n in POSITIVE_CONTROLS])
        wells = [wells[i] for i in rng.permutation(len(wells))]
        for k, (kind, c) in enumerate(wells):
            well = f"{chr(ord('A') + k // 12)}{k % 12 + 1}"
            for ct in d.cell_types:
                lo, hi = CELLS_PER_TYPE[ct]
                rows.append({"kind": kind, "compound": c, "plate": plate, "well": well, "cell_type": ct,
                             "donor": donor, "cells": int(rng.integers(lo, hi + 1)), "rep": rep})
    lay = pd.DataFrame(rows)
    gidx = np.arange(len(world.genes))
    counts = np.zeros((len(lay), len(gidx)), dtype=np.int64)
    for cells, grp in lay.groupby("cells"):
        sim = pd.DataFrame({"cell_type": grp["cell_type"], "plate": grp["plate"], "time_h": d.times_h[0],
                            "dose_uM": np.where(grp["kind"] == "dmso", 0.0, d.doses_uM[0]),
                            "compound": [c if k == "trt" else (POSITIVE_CONTROLS.index(c) if k == "pos" else None)
                                         for k, c in zip(grp["kind"], grp["compound"])]})
        counts[grp.index.to_numpy()] = world.count_matrix(sim, gidx, dataset=DATASET,
                                                          library_size=cells * READS_PER_CELL, rng=rng)
    symbols = world.genes["symbol"].astype(str).tolist()
    for new, old in PREVIOUS_SYMBOLS.items():
        if new in symbols:
            symbols[symbols.index(new)] = old
    extra = np.flatnonzero((world.genes["kind"] == "extra").to_numpy())
    picks = rng.choice(extra, N_FALLBACK, replace=False)
    fallback = []
    for k, j in enumerate(picks, start=1):
        symbols[j] = f"SYNTHETIC-AC{900000 + k}.1"
        fallback.append({"symbol": symbols[j], "ensembl_id": world.genes.index[j],
                         "note": "SYNTHETIC clone-style symbol of the demo world"})
    junk = [f"SYNTHETIC-LINC{k:03d}" for k in range(1, N_UNMAPPED + 1)]
    counts = np.hstack([counts, rng.poisson(2.0, (len(lay), N_UNMAPPED))])
    symbols += junk
    comp = world.compounds
    is_t, is_d = (lay["kind"] == "trt").to_numpy(), (lay["kind"] == "dmso").to_numpy()
    name = [comp["name"].iloc[int(c)] if k == "trt" else (DMSO_NAME if k == "dmso" else c)
            for k, c in zip(lay["kind"], lay["compound"])]
    split = np.array(["control" if k != "trt" else ("public_test" if int(c) % 4 == 0 else "train")
                      for k, c in zip(lay["kind"], lay["compound"])], dtype=object)
    obs = pd.DataFrame({
        "plate_name": lay["plate"].to_numpy(), "well": lay["well"].to_numpy(),
        "cell_type": [inv_ct[c] for c in lay["cell_type"]], "donor_id": lay["donor"].to_numpy(),
        "sm_name": name,
        "sm_lincs_id": [comp["brd_id"].iloc[int(c)] if k == "trt" else ("LSM-36361" if k == "dmso" else f"SYN-POS-{c}")
                        for k, c in zip(lay["kind"], lay["compound"])],
        "SMILES": [comp["smiles"].iloc[int(c)] if k == "trt" else ("CS(C)=O" if k == "dmso" else None)
                   for k, c in zip(lay["kind"], lay["compound"])],
        "dose_uM": d.doses_uM[0], "timepoint_hr": d.times_h[0], "control": ~is_t,
        "library_id": [f"library_SYN{r}" for r in lay["rep"]],
        "cell_count_by_well_celltype": lay["cells"].to_numpy(),
        "cell_count_by_plate_well": lay.groupby(["plate", "well"])["cells"].transform("sum").to_numpy(),
        "split": split,
    })
    obs.index = [f"{p}_{w}_{c}" for p, w, c in zip(obs["plate_name"], obs["well"], obs["cell_type"])]
    out = [write_native(folder / f"op3_pseudobulk_{SYNTHETIC_TAG}.h5ad", obs, counts, symbols, note=SYNTHETIC_NOTE)]
    fb = folder / f"symbol_fallback_{SYNTHETIC_TAG}.tsv"
    with atomic_path(fb) as tmp:
        pd.DataFrame(fallback).to_csv(tmp, sep="\t", index=False)
    out.append(fb)
    assert is_d.sum() == WELLS_DMSO * len(d.cell_types) * d.replicates
    return out
