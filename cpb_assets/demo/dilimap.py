"""SYNTHETIC DILImap stand-in in the release's layout (see :mod:`cpb_assets.sources.dilimap`).

Two counts h5ad files as the release ships them — training counts (the
training and test plates) and validation counts — with ``SPLIT`` written as
words (``Training``, ``Validation``, ``Test``), plus the compound DILI label
table.
"""
from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cpb_assets.demo.world import DESIGNS, SYNTHETIC_NOTE
from cpb_assets.sources.dilimap import CELL_TYPE, DATASETS
from cpb_resources.storage import atomic_path

TRAIN_FILE = "SYNTHETIC_training_data_counts.h5ad"
VALIDATION_FILE = "SYNTHETIC_validation_data_counts.h5ad"
COMPOUND_FILE = "SYNTHETIC_compound_DILI_labels.csv"
SPLIT_WORD = {"train": "Training", "val": "Validation", "test": "Test"}
COMPOUNDS_PER_PLATE = 10
CONTROLS_PER_PLATE = 6
DOSE_LEVELS = ("Low", "Middle", "High")
# the number written for a design dose on a plate of each split (float noise of the real files)
DOSE_WRITTEN = {"train": 1.0, "val": 1.00004, "test": 0.99996}
JITTER_PLATE = 1  # this training plate writes doses × 0.99999 (another near-identical value)


def _plates(world) -> list[tuple[str, str, list[int]]]:
    """(plate name, split, compounds) — compounds grouped by split, as the real data were screened."""
    comps = list(DESIGNS["dilimap_train"].compounds)
    split = world.compounds["dilimap_split"].to_numpy()
    plates = []
    for s in ("train", "val", "test"):
        mine = [c for c in comps if split[c] == s]
        for k in range(0, len(mine), COMPOUNDS_PER_PLATE):
            plates.append((f"SYN-DMAP-{s.upper()}-P{len(plates) + 1:02d}", s, mine[k:k + COMPOUNDS_PER_PLATE]))
    return plates


def write_synthetic(world, dataset: str, folder: str | Path) -> list[Path]:
    """Write the SYNTHETIC DILImap counts h5ad and compound table into `folder`.

    Layout: plates of 10 compounds of one split × 3 doses × 2 replicates + 6
    DMSO wells. Planted, as extra wells beyond the design: per plate one
    LDH-flagged well, and on selected plates a DMSO_replaced well, a low-RNA
    well, a high-mito well and a scrambled (uncorrelated) DMSO well. Doses are
    written with split-specific float noise (10, 10.0004, 9.9996 µM) and one
    training plate writes × 0.99999.
    """
    if dataset not in DATASETS:
        raise KeyError(dataset)
    d = DESIGNS[dataset]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    g = world.genes
    gidx = np.arange(len(g))
    mito_cols = (g["kind"] == "mito").to_numpy()
    rows = []
    for pi, (plate, split, comps) in enumerate(_plates(world)):
        wells = []
        for c in comps:
            for lvl, dose in zip(DOSE_LEVELS, d.doses_uM):
                for r in range(d.replicates):
                    wells.append(dict(kind="treated", compound=c, dose_uM=dose, level=lvl, rep=r + 1))
        wells += [dict(kind="dmso", compound=None, dose_uM=0.0, level="Control", rep=r + 1)
                  for r in range(CONTROLS_PER_PLATE)]
        # planted QC failures, extra to the design
        wells.append(dict(kind="ldh", compound=comps[0], dose_uM=d.doses_uM[-1], level=DOSE_LEVELS[-1],
                          rep=d.replicates + 1))
        if pi % 2 == 0:
            wells.append(dict(kind="replaced", compound=None, dose_uM=0.0, level="Control", rep=1))
        if pi in (0, 4):
            wells.append(dict(kind="low_rna", compound=None, dose_uM=0.0, level="Control", rep=CONTROLS_PER_PLATE + 1))
        if pi in (1, 4):
            wells.append(dict(kind="high_mito", compound=None, dose_uM=0.0, level="Control",
                              rep=CONTROLS_PER_PLATE + 2))
        if pi in (2, 4):
            wells.append(dict(kind="scrambled", compound=None, dose_uM=0.0, level="Control",
                              rep=CONTROLS_PER_PLATE + 3))
        order = world.rng("dilimap", "layout", plate).permutation(len(wells))
        for pos, w in enumerate(order):
            rows.append({**wells[w], "plate": plate, "split": split, "pos": pos, "pi": pi})
    rows = pd.DataFrame(rows)
    rows["cell_type"] = CELL_TYPE
    rows["time_h"] = d.times_h[0]
    rng = world.rng("dilimap", "counts")
    X = world.count_matrix(rows, gidx, dataset="dilimap", library_size=3e6, libsize_cv=0.2, plate_sd=0.1,
                           dispersion=0.05, rng=rng)
    kind = rows["kind"].to_numpy()
    X[kind == "low_rna"] = rng.binomial(X[kind == "low_rna"], 0.01)
    hm = np.where(kind == "high_mito")[0]
    X[np.ix_(hm, np.where(mito_cols)[0])] *= 8
    for i in np.where(kind == "scrambled")[0]:
        X[i] = X[i, rng.permutation(X.shape[1])]  # a mis-assigned library: genes shuffled

    names = world.compounds["name"].to_numpy()
    comp_name = [("DMSO_replaced" if k == "replaced" else "DMSO") if pd.isna(c) else names[int(c)]
                 for c, k in zip(rows["compound"], kind)]
    written = []
    for r in rows.itertuples(index=False):
        if r.dose_uM <= 0:
            written.append(0.0)
        else:
            f = DOSE_WRITTEN[r.split] * (0.99999 if r.pi == JITTER_PLATE else 1.0)
            written.append(round(r.dose_uM * f, 6))
    well = [f"{chr(ord('A') + p // 24)}{p % 24 + 1:02d}" for p in rows["pos"]]
    obs = pd.DataFrame({
        "COMPOUND": comp_name,
        "CONCENTRATION_UM": np.array(written, dtype=float),
        "TIMEPOINT_HOURS": rows["time_h"].astype(float).to_numpy(),
        "DOSE_LEVEL": rows["level"].to_numpy(),
        "PLATE_NAME": rows["plate"].to_numpy(), "WELL_ID": well,
        "LIBRARY_ID": [f"SYN-LIB-{i:05d}" for i in range(len(rows))],
        "BATCH_ID": [f"SYN-BATCH-{s.upper()}" for s in rows["split"]],
        "SPECIES": "Human", "DONOR": "SYN-DONOR-01", "REPLICATE": rows["rep"].astype(int).to_numpy(),
        "LDH_QC": np.where(kind == "ldh", "LDH > threshold", ""),
        "SPLIT": rows["split"].map(SPLIT_WORD).to_numpy(),
    })
    obs["CMPD_DOSE"] = obs["COMPOUND"] + "_" + obs["DOSE_LEVEL"]
    obs.index = [f"{p}_{w}" for p, w in zip(obs["PLATE_NAME"], obs["WELL_ID"])]
    sym = g["symbol"].astype(str).to_numpy()
    gene_id = g.index.to_numpy().astype(object)
    for j in (3, 50, 700):  # a few versioned Ensembl IDs, as GENCODE-based counts carry
        gene_id[j] = f"{gene_id[j]}.{j % 9 + 2}"
    var = pd.DataFrame({"gene_id": gene_id}, index=pd.Index(sym))
    adata = ad.AnnData(X=sp.csr_matrix(X.astype(np.float32)), obs=obs, var=var)
    adata.uns["synthetic"] = True
    adata.uns["note"] = SYNTHETIC_NOTE
    # the release's two files: training counts (training + test plates) and public validation counts
    val = (rows["split"] == "val").to_numpy()
    outs = []
    for name, mask in ((TRAIN_FILE, ~val), (VALIDATION_FILE, val)):
        path = folder / name
        with atomic_path(path) as tmp:
            adata[mask].copy().write_h5ad(tmp)
        outs.append(path)
    comp = sorted(set(c for c in rows["compound"].dropna().astype(int)))
    table = pd.DataFrame({"compound_name": names[comp], "smiles": world.compounds["smiles"].to_numpy()[comp],
                          "DILI_label": "SYNTHETIC", "split": world.compounds["dilimap_split"].to_numpy()[comp]})
    cpath = folder / COMPOUND_FILE
    with atomic_path(cpath) as tmp:
        table.to_csv(tmp, index=False)
    return [*outs, cpath]
