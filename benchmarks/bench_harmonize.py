"""Harmonization throughput per dataset partition, on the SYNTHETIC demo world.

Setup (not timed): the seeded demo world is built once and each dataset's
SYNTHETIC native files are written with ``SOURCES[ds].write_synthetic``
into a temporary folder. The compound registry is a stand-in (every
``source_id`` of ``compound_records`` → ``pubchem_cid`` "1", ``cid_method``
"bench"), so PubChem is never contacted.

Timed: ``SOURCES[ds].harmonize(folder, registry)`` — reading the
native files, QC, pseudobulk (single-cell sources), units, genes, contexts,
schema. Reported as harmonized samples (obs rows) per second; single-cell
sources also give input cells per second. There is no baseline: these rows
are throughput, to compare between versions of the project on one machine.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks import REPS, median_times, row
from cpb_assets.datasets import DATASETS
from cpb_assets.harmonize.assemble import harmonized_scratch
from cpb_assets.sources.registry import SOURCES
from cpb_assets.demo.world import build_world

QUICK_DATASETS = ["l1000_phase2", "op3", "vcpi_0001", "cigs_mce", "dilimap_train"]


def stand_in_registry(folder: Path, dataset: str) -> pd.DataFrame:
    rec = SOURCES[dataset].compound_records(folder)
    return pd.DataFrame({"source_id": rec["source_id"].astype(str).to_numpy(),
                         "pubchem_cid": "1", "cid_method": "bench"})


def run(quick: bool = False, reps: int = REPS) -> list[dict]:
    datasets = QUICK_DATASETS if quick else DATASETS
    rows = []
    t0 = time.perf_counter()
    world = build_world()
    setup = {"build_world_s": round(time.perf_counter() - t0, 2)}
    # readers that write their h5ad themselves (L1000) write it into tmp (removed with it)
    with tempfile.TemporaryDirectory(prefix="cpb_bench_harmonize_") as tmp, \
            harmonized_scratch(Path(tmp) / "_h5ad"):
        for ds in datasets:
            spec = SOURCES[ds]
            folder = Path(tmp) / ds
            folder.mkdir()
            try:
                t0 = time.perf_counter()
                spec.write_synthetic(world, folder)
                write_s = time.perf_counter() - t0
                registry = stand_in_registry(folder, ds)
                med, times, last = median_times({"project": lambda: spec.harmonize(folder, registry)}, reps)
            except Exception as exc:  # one broken source must not hide the others' numbers
                rows.append(row("harmonize", ds, "", project=f"{spec.reader}.harmonize", project_s=float("nan"),
                                check=f"FAILED: {type(exc).__name__}: {exc}"[:300], reps=reps, ok=False))
                continue
            h = last["project"]
            n_obs, n_vars = h.shape
            cells = h.notes.get("cells_in_matrix", h.notes.get("cells_kept"))
            size = f"{n_obs:,} samples × {n_vars:,} genes"
            if cells:
                size += f" (from {int(cells):,} cells)"
            extra = {"samples_per_s": n_obs / med["project"], "n_obs": n_obs, "n_vars": n_vars,
                     "write_synthetic_s": round(write_s, 2), **setup}
            if cells:
                extra["cells_per_s"] = int(cells) / med["project"]
            rows.append(row("harmonize", ds, size, project=f"{spec.reader}.harmonize",
                            project_s=med["project"], check=f"{n_obs / med['project']:,.0f} samples/s"
                            + (f", {int(cells) / med['project']:,.0f} cells/s" if cells else ""),
                            reps=reps, times=times, ok=n_obs > 0, **extra))
            del h, last
    return rows
