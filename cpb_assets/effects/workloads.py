"""DE units of work for the compute resource (local subprocess or SLURM job).

Each call fits one or more :class:`~cpb_assets.effects.strata.DEUnit` of one
dataset × mode through :func:`~cpb_assets.effects.de.fit_units`: every unit
reads only its own rows of the harmonized ``.h5ad`` and writes, atomically,
``<out_dir>/<unit key>.de.parquet`` and ``<unit key>.stratum.parquet``.
``adj_P_across`` is set per whole stratum by the asset's assembly
(:func:`~cpb_assets.effects.assemble.assemble_de`) once every unit is back.
"""
from __future__ import annotations

from pathlib import Path

from cpb_assets.effects.de import fit_units, staged_paths
from cpb_assets.effects.strata import DEUnit
from cpb_resources.limma import LimmaResource
from cpb_resources.workloads import own_peak_rss_mb


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
    engine
        ``r`` (default) or ``fast`` (:class:`~cpb_resources.limma.LimmaResource`).
    """
    units = [DEUnit.from_json(text) for text in params["units"]]
    out_dir = Path(params["out_dir"])
    rows = fit_units(params["h5ad"], units, LimmaResource(engine=params.get("engine", "r")), out_dir)
    outputs = [str(p) for u in units for p in staged_paths(out_dir, u)]
    return {"outputs": outputs, "metadata": {
        "units": len(units), "contrasts": int(sum(int(r["n_contrasts"] or 0) for r in rows)),
        "skipped": int(sum(r["status"] != "ok" for r in rows)),
        "peak_rss_mb": round(own_peak_rss_mb(), 1)}}
