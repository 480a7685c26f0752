"""DE units of work for the compute resource (local subprocess or SLURM job).

Each call fits one or more :class:`~cpb_assets.effects.strata.DEUnit` of one
dataset × mode and writes, per unit, ``<out_dir>/<unit key>.de.parquet`` and
``<unit key>.stratum.parquet`` atomically. ``adj_P_across`` is recomputed over
whole strata by the asset once every unit is back.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import anndata as ad
import pandas as pd

from cpb_assets.effects.de import run_de_unit
from cpb_assets.effects.strata import DEUnit
from cpb_resources.limma import LimmaResource
from cpb_resources.storage import write_parquet

log = logging.getLogger(__name__)


def unit_key(unit: DEUnit) -> str:
    """A file-name-safe, stable key of one unit (strata IDs may hold '|')."""
    digest = hashlib.sha256(f"{unit.stratum}\0{unit.batch}".encode()).hexdigest()[:10]
    safe = "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in unit.stratum)
    return f"{safe}.b{unit.batch:03d}.{digest}"


def de_units(params: dict) -> dict:
    """Fit DE units.

    Parameters (JSON)
    -----------------
    h5ad
        Absolute path of the harmonized AnnData.
    units
        List of ``DEUnit.to_json()`` strings.
    out_dir
        Absolute folder for the per-unit Parquet files.
    """
    adata = ad.read_h5ad(params["h5ad"])
    out_dir = Path(params["out_dir"])
    limma = LimmaResource()
    outputs, n_rows, n_contrasts = [], 0, 0
    for text in params["units"]:
        unit = DEUnit.from_json(text)
        de, row = run_de_unit(adata, unit, limma)
        key = unit_key(unit)
        write_parquet(de, out_dir / f"{key}.de.parquet")
        write_parquet(pd.DataFrame([row]), out_dir / f"{key}.stratum.parquet")
        outputs += [str(out_dir / f"{key}.de.parquet"), str(out_dir / f"{key}.stratum.parquet")]
        n_rows += len(de)
        n_contrasts += int(row["n_contrasts"] or 0)
        log.info("DE %s/%s stratum %s batch %d/%d: %d samples, %d contrasts, %s, %.1f s", unit.dataset, unit.mode,
                 unit.stratum, unit.batch, unit.n_batches, row["n_samples"], row["n_contrasts"], row["status"],
                 row["seconds"])
    return {"outputs": outputs, "metadata": {"units": len(params["units"]), "rows": n_rows,
                                             "contrasts": n_contrasts}}
