"""Pseudobulk units of work: one single-cell plate per call (local subprocess or SLURM job)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cpb_assets.harmonize.quarantine import Quarantine
from cpb_resources.storage import write_parquet

log = logging.getLogger(__name__)


def plate_outputs(out_dir: Path, plate: Path) -> dict[str, Path]:
    stem = plate.name.removesuffix(".h5ad")
    return {k: out_dir / f"{stem}.{k}.parquet" for k in ("groups", "counts", "quarantine")}


def pseudobulk_plate(params: dict) -> dict:
    """QC and pseudobulk one plate file.

    Parameters (JSON)
    -----------------
    dataset
        Dataset key (for quarantine rows).
    plate
        Absolute path of the plate's cell-level h5ad.
    axis
        Absolute path of an ``.npz`` with the gene axis: ``col_map`` (output
        gene column per var entry, -1 dropped), ``n_out`` (output genes),
        ``mito`` (bool per output gene), ``malat1_col`` (-1: none), ``chunk``.
    out_dir
        Folder for ``<plate>.groups.parquet`` (pseudobulk keys and sizes),
        ``<plate>.counts.parquet`` (the summed counts as sparse triplets
        ``row, col, count``) and ``<plate>.quarantine.parquet``.
    """
    from cpb_assets.sources.tahoe import pseudobulk_plate as run_plate

    plate, out_dir = Path(params["plate"]), Path(params["out_dir"])
    axis = np.load(params["axis"])
    malat1 = int(axis["malat1_col"])
    q = Quarantine(params["dataset"])
    groups, counts = run_plate(plate, col_map=axis["col_map"], n_out=int(axis["n_out"]), mito=axis["mito"],
                               malat1_col=None if malat1 < 0 else malat1, q=q, chunk=int(axis["chunk"]))
    coo = sp.coo_matrix(counts)
    triplets = pd.DataFrame({"row": coo.row.astype(np.int64), "col": coo.col.astype(np.int64),
                             "count": coo.data.astype(np.int64)}).sort_values(["row", "col"], ignore_index=True)
    paths = plate_outputs(out_dir, plate)
    write_parquet(groups.reset_index(drop=True), paths["groups"])
    write_parquet(triplets, paths["counts"])
    write_parquet(q.to_frame(), paths["quarantine"])
    log.info("pseudobulk %s: %d groups from %d cells", plate.name, len(groups), int(groups["psbulk_cells"].sum()))
    return {"outputs": [str(p) for p in paths.values()],
            "metadata": {"plate": plate.name, "groups": len(groups), "cells": int(groups["psbulk_cells"].sum()),
                         "n_genes": int(counts.shape[1])}}


def read_plate_outputs(out_dir: Path, plate: Path, n_genes: int) -> tuple[pd.DataFrame, sp.csr_matrix, list[dict]]:
    """Load what :func:`pseudobulk_plate` wrote, as the in-process runner returns it."""
    paths = plate_outputs(out_dir, plate)
    groups = pd.read_parquet(paths["groups"])
    t = pd.read_parquet(paths["counts"])
    counts = sp.csr_matrix((t["count"].to_numpy(), (t["row"].to_numpy(), t["col"].to_numpy())),
                           shape=(len(groups), n_genes))
    return groups, counts, pd.read_parquet(paths["quarantine"]).to_dict("records")
