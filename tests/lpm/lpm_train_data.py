"""SYNTHETIC LPM tables from the demo world's planted truth, sharded by the stage's own split code.

Two L1000-keyed datasets measure overlapping compounds (like the demo designs: 0-39 and 10-49) on
partly overlapping panels of the landmark genes the truth moves most, at 2 doses; value = the planted
log2 fold change at 24 h plus N(0, 0.05) noise; the time column is `time_h` (24 unless a test says). The tables go through ``cpb_assets.lpm.prepare.prepare_splits`` (scalar,
molecule-holdout and scaffold shards), so the training tests read exactly what the assets write.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cpb_assets.lpm import prepare, splits, tables

DATASETS = {"l1000_phase1": (range(0, 40), slice(0, 150)), "l1000_phase2": (range(10, 50), slice(50, 200))}
# every compound in both datasets, on disjoint halves of the panel: a molecule held out in one dataset is
# trained in the other on *other* genes, so its held-out values cannot be copied across and only what the
# model learned about the molecule (its structure, with Morgan bits) carries over
DISJOINT_PANELS = {"l1000_phase1": (range(0, 60), slice(0, 100)), "l1000_phase2": (range(0, 60), slice(100, 200))}
N_GENES = 200
CONTEXTS = ["CVCL_0023", "CVCL_0031"]  # A549, MCF7
DOSES_UM = [1.0, 10.0]


def truth_tables(world, out: Path, datasets=None, n_genes: int = N_GENES, time_h: float = 24.0
                 ) -> dict[str, Path]:
    """Write ``<out>/<dataset>/{scalar,multi}.parquet`` in the lpm_table schemas; return the folders."""
    rng = np.random.default_rng(7)
    # the landmark genes the planted truth moves most (variance over compounds), so that the few
    # samples of a test table carry compound-specific signal beyond each gene's mean
    landmark = np.flatnonzero(world.genes["kind"].to_numpy() == "landmark")
    spread = world.effect[:, :, landmark].var(axis=(0, 1))
    landmark = np.sort(landmark[np.argsort(-spread, kind="stable")[:n_genes]])
    gene_ids = world.genes.index.to_numpy()
    dirs = {}
    for ds, (compounds, panel) in (datasets or DATASETS).items():
        genes = landmark[panel]
        rows = []
        for ctx in CONTEXTS:
            for c in compounds:
                cid = str(world.compounds["pubchem_cid"].iloc[c])
                for dose in DOSES_UM:
                    lfc = world.true_logfc(c, ctx, dose, 24.0, genes) + rng.normal(0, 0.05, len(genes))
                    cond = f"{ctx}|{cid}|{dose}"
                    rows.append(pd.DataFrame({
                        "dataset": ds, "context": ctx, "perturbation": cid, "log_dose": np.float32(math.log10(dose)),
                        "time": np.float32(time_h), "readout": gene_ids[genes], "value": lfc.astype(np.float32),
                        "condition": cond}))
        long = pa.Table.from_pandas(pd.concat(rows, ignore_index=True), schema=tables.SCALAR_SCHEMA,
                                    preserve_index=False)
        folder = out / "table" / ds
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(long, folder / "scalar.parquet")
        pq.write_table(tables.multi_rows(long), folder / "multi.parquet")
        dirs[ds] = folder
    return dirs


def build_lpm_home(world, out: Path, **kwargs) -> dict:
    """Tables + splits + shards under `out`; returns prepare_splits' result plus ``root`` and ``fingerprints``."""
    from cpb_assets.lpm import fingerprints as fpm

    dirs = truth_tables(world, out, **kwargs)
    comp = world.compounds
    scaffolds = {str(c): splits.murcko_scaffold(s) for c, s in zip(comp["pubchem_cid"], comp["smiles"])}
    result = prepare.prepare_splits(dirs, scaffolds, out / "lpm", rows_per_shard=20_000, values_per_shard=60_000)
    structures = pd.DataFrame({"pubchem_cid": comp["pubchem_cid"].astype(str), "smiles": comp["smiles"],
                               "smiles_from": "source"})
    fp_path = out / "lpm" / "fingerprints" / "morgan_r2_128.parquet"
    fp_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(fpm.fingerprint_table(structures, 2, 128), fp_path)
    result.update(root=out / "lpm", fingerprints=fp_path)
    return result


def tiny_shards(out: Path, n_pert: int = 8, n_genes: int = 12, seed: int = 0) -> Path:
    """A few SYNTHETIC multi-output shards (2 datasets × 2 contexts × `n_pert` compounds, random values);
    the last compound of each dataset is test, the one before it val. Returns the shard root."""
    rng = np.random.default_rng(seed)
    genes = [f"ENSG{i:011d}" for i in range(n_genes)]
    dirs = {}
    for ds, panel in (("l1000_phase1", genes[: n_genes * 3 // 4]), ("l1000_phase2", genes[n_genes // 3:])):
        rows = []
        for ctx in CONTEXTS:
            for p in range(n_pert):
                rows.append(pd.DataFrame({"dataset": ds, "context": ctx, "perturbation": str(100 + p),
                                          "log_dose": np.float32(0.0), "time": np.float32(24.0), "readout": panel,
                                          "value": rng.normal(0, 1, len(panel)).astype(np.float32),
                                          "condition": f"{ctx}|{p}"}))
        long = pa.Table.from_pandas(pd.concat(rows, ignore_index=True), schema=tables.SCALAR_SCHEMA,
                                    preserve_index=False)
        folder = out / "table" / ds
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(tables.multi_rows(long), folder / "multi.parquet")
        dirs[ds] = folder

    split_of = {(ds, str(100 + p)): "test" if p == n_pert - 1 else "val" if p == n_pert - 2 else "train"
                for ds in dirs for p in range(n_pert)}  # (dataset, perturbation) -> split
    root = out / "shards" / "molecule" / "multi"
    tables.write_multi_shards(dirs, split_of, root, values_per_shard=100)
    return root
