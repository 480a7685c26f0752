"""GDPx2 files in the layout of the release's Lamin artifacts: the demo stand-in and fixtures.

:func:`write_native` writes ``X.h5ad`` (counts only; obs/var hold just the
IDs, ``uns['note']``), ``obs.parquet``, ``var.parquet`` (``ensembl_gene_id``,
``symbol``) and ``compounds-GDPx2-<date>.csv`` (see
:mod:`cpb_assets.sources.gdpx2`). :func:`write_synthetic` fills them from the
SYNTHETIC demo world.
"""
from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from cpb_assets.demo.vcpi import ginkgo_counts, ginkgo_layout, world_cell_name
from cpb_resources.storage import atomic_path

SYNTHETIC_TAG = "SYNTHETIC"
DMSO_PER_LEVEL = 4  # DMSO wells per plate and percent_volume_dmso level
POS_CONTROLS = ("Dexamethasone", "Trichostatin A", "Brefeldin A")
DMSO_SAMPLE_TYPE = "Ginkgo Neg Control - DMSO"
POS_CONTROL_PREFIX = "Ginkgo Pos Control"


def write_native(folder: str | Path, obs: pd.DataFrame, counts, var: pd.DataFrame, compounds: pd.DataFrame,
                 *, tag: str = SYNTHETIC_TAG, note: str = "", compounds_date: str = "2026-02-09") -> list[Path]:
    """Write the GDPx2 artifacts (``counts``: n_samples × n_genes, dense or sparse).

    File names are the Lamin keys' (``X.h5ad``, ``obs.parquet``,
    ``var.parquet``, ``compounds-GDPx2-<date>.csv``) with ``_<tag>`` before
    the extension unless `tag` is empty.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sfx = f"_{tag}" if tag else ""
    x = ad.AnnData(X=counts, obs=pd.DataFrame(index=obs.index.astype(str)),
                   var=pd.DataFrame(index=var.index.astype(str)))
    x.uns["note"] = note
    out = [folder / f"X{sfx}.h5ad", folder / f"obs{sfx}.parquet", folder / f"var{sfx}.parquet",
           folder / f"compounds-GDPx2-{compounds_date}{sfx}.csv"]
    with atomic_path(out[0]) as tmp:
        x.write_h5ad(tmp)
    for path, df in ((out[1], obs), (out[2], var)):
        with atomic_path(path) as tmp:
            df.to_parquet(tmp, index=True)
    with atomic_path(out[3]) as tmp:
        compounds.to_csv(tmp, index=False)
    return out


def write_synthetic(world, dataset: str, folder: str | Path) -> list[Path]:
    """Write the demo world's SYNTHETIC GDPx2 artifacts into `folder`.

    Quirks planted: ERCC spike-ins, zero-count libraries, ``Ginkgo Pos
    Control`` samples, nM dose strings and ``%`` vehicle doses, two DMSO
    volume levels, versioned Ensembl IDs, two genes with an NA
    ``ensembl_gene_id`` (filled from the symbol) and one gene listed twice
    (summed back).
    """
    from cpb_assets.demo.world import SYNTHETIC_NOTE

    if dataset != "gdpx2":
        raise KeyError(f"the GDPx2 writer does not serve {dataset!r}")
    ds = dataset
    rng = world.rng("drugseq", ds)
    lay = ginkgo_layout(world, ds, rng, pos_controls=POS_CONTROLS, dmso_per_level=DMSO_PER_LEVEL)
    sim = lay.assign(compound=[c if k != "dmso" else None for c, k in zip(lay["compound"], lay["kind"])])
    counts, ids = ginkgo_counts(world, ds, sim, rng, with_ercc=True)
    n_world = len(world.genes)
    symbols = list(world.genes["symbol"]) + ids[n_world:]
    ens = [f"{e}.{int(rng.integers(1, 9))}" if k % 7 == 0 else e for k, e in enumerate(ids[:n_world])] + ids[n_world:]
    protein = np.flatnonzero(world.genes["kind"].to_numpy() != "mito")
    na = [int(i) for i in rng.choice(protein, 2, replace=False)]
    for i in na:
        ens[i] = None
    # one gene split over two var rows (a second row with the same Ensembl ID): its reads are divided
    twice = int(rng.choice(np.setdiff1d(protein, na)))
    moved = rng.binomial(counts[:, twice], 0.4)
    counts[:, twice] -= moved
    counts = np.hstack([counts, moved[:, None]])
    ens.append(ids[twice])
    symbols.append(symbols[twice])
    comp = world.compounds
    kinds, pos_names = lay["kind"].to_numpy(), lay.get("pos_name", pd.Series([None] * len(lay))).to_numpy()
    sample_type = [("Ginkgo Sample" if k == "treated" else DMSO_SAMPLE_TYPE if k == "dmso"
                    else f"{POS_CONTROL_PREFIX} - {n}") for k, n in zip(kinds, pos_names)]
    pert_dose = [f"{d * 1000:.1f}nM" if k != "dmso" else f"{p}%" for d, k, p in zip(lay["dose_uM"], kinds, lay["pvd"])]
    obs = pd.DataFrame({
        "container_id": lay["plate"], "row_id": lay["row_id"], "column_id": lay["column_id"],
        "sample_type": sample_type,
        "pert_name": [comp["name"].iloc[int(c)] if k == "treated" else "DMSO" if k == "dmso" else n
                      for c, k, n in zip(lay["compound"], kinds, pos_names)],
        "compound": [f"SYNTH-GDPX2-{int(c):03d}" if k == "treated" else "DMSO" if k == "dmso" else
                     f"SYNTH-GDPX2-POS{int(c)}" for c, k in zip(lay["compound"], kinds)],
        "pert_dose": pert_dose, "pert_time": "24.0h",
        "percent_volume_dmso": lay["pvd"].astype(float),
        "cell_type": [world_cell_name(c) for c in lay["cell_type"]],
    })
    obs.index = pd.Index([f"SYNGDPX2-{k:05d}" for k in range(len(lay))], name="sample_id")
    var = pd.DataFrame({"ensembl_gene_id": ens, "symbol": symbols},
                       index=pd.Index([f"g{k:05d}" for k in range(len(ens))], name="gene_id"))
    used = sorted({int(c) for c, k in zip(lay["compound"], kinds) if k == "treated"})
    compounds = pd.DataFrame({"compound": [f"SYNTH-GDPX2-{c:03d}" for c in used] + ["DMSO"],
                              "smiles": list(comp["smiles"].iloc[used]) + ["CS(C)=O"],
                              "inchikey": list(comp["inchikey"].iloc[used]) + ["IAZDPXIOMUYVGZ-UHFFFAOYSA-N"],
                              "catalog_id": list(comp["catalog_id"].iloc[used]) + [None]})
    return write_native(folder, obs, counts, var, compounds, note=SYNTHETIC_NOTE)
