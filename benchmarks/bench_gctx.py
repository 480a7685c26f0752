"""L1000 matrix reading: :func:`read_gctx` (HDF5) vs :func:`read_gct` (GCT 1.3 text).

Cases:

1. the real LJP005 plate as distributed in ``data/real/l1000_ljp005/``
   (978 × 377): the GCT is Level 3, the GCTX the plate-normalized values of
   the same plate (same IDs and shape, different numbers: see
   ``data/real/README.md``), so the check compares IDs and shape only;
2. the real plate's GCT content re-written as GCTX with the project's
   :func:`write_gctx`: identical content in both formats;
3. a larger SYNTHETIC plate (978 × N, seeded, values rounded to 4 decimals
   like Level 3 GCTs) written by :func:`write_gctx` and, for the baseline,
   by a plain GCT 1.3 text writer in this module.

Files are written to a temporary folder (not timed) and removed afterwards.
"""
from __future__ import annotations

import inspect
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import REPS, median_times, row
from cpb_assets.sources.gctx import GCT, read_gct, read_gctx, write_gctx

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / "data" / "real" / "l1000_ljp005"
REAL_GCT = REAL / "test_l1000.gct"
REAL_GCTX = REAL / "test_l1000_highprecision.gctx"
SEED = 20261121
FULL_SAMPLES = 8_000
QUICK_SAMPLES = 1_000


def write_gct_text(gct: GCT, path: Path) -> None:
    """Plain GCT 1.3 writer (baseline input only): metadata as strings, values with 4 decimals."""
    rm, cm = gct.row_meta, gct.col_meta
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write("#1.3\n")
        fh.write(f"{len(rm)}\t{len(cm)}\t{rm.shape[1]}\t{cm.shape[1]}\n")
        fh.write("\t".join(["id", *map(str, rm.columns), *map(str, cm.index)]) + "\n")
        pad = ["-666"] * rm.shape[1]
        for c in cm.columns:
            fh.write("\t".join([str(c), *pad, *map(str, cm[c].tolist())]) + "\n")
        values = np.round(np.asarray(gct.data, dtype=np.float64), 4).tolist()
        meta = rm.astype(str).to_numpy().tolist()
        for gid, m, vals in zip(rm.index.astype(str), meta, values):
            fh.write("\t".join([gid, *m, *map(repr, vals)]) + "\n")


def synthetic_plate(n_samples: int, seed: int = SEED) -> GCT:
    """SYNTHETIC 978-gene plate with L1000-like metadata (IDs say SYN)."""
    rng = np.random.default_rng(seed)
    n_genes = 978
    data = np.round(rng.normal(8.0, 2.0, (n_genes, n_samples)), 4)
    row_meta = pd.DataFrame({"pr_gene_symbol": [f"SYNGENE{i}" for i in range(n_genes)],
                             "pr_is_lmark": ["Y"] * n_genes},
                            index=pd.Index([f"{200800 + i}_at" for i in range(n_genes)], name="id"))
    col_meta = pd.DataFrame({
        "pert_id": [f"BRD-SYN{i % 500:05d}" for i in range(n_samples)],
        "pert_type": np.where(np.arange(n_samples) % 20 == 0, "ctl_vehicle", "trt_cp"),
        "pert_dose": rng.choice([0.04, 0.12, 0.37, 1.11, 3.33, 10.0], n_samples),
        "pert_time": np.full(n_samples, 24.0),
        "det_plate": [f"SYN_PLATE{i // 384:03d}" for i in range(n_samples)],
        "det_well": [f"{'ABCDEFGHIJKLMNOP'[(i % 384) // 24]}{(i % 24) + 1:02d}" for i in range(n_samples)],
    }, index=pd.Index([f"SYN_PLATE{i // 384:03d}:{i % 384:03d}" for i in range(n_samples)], name="id"))
    return GCT(data, row_meta, col_meta)


def _same_ids(a: GCT, b: GCT) -> bool:
    return (a.data.shape == b.data.shape and a.row_meta.index.equals(b.row_meta.index)
            and a.col_meta.index.equals(b.col_meta.index))


def _mb(p: Path) -> float:
    return os.path.getsize(p) / 1e6


def run(quick: bool = False, reps: int = REPS) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="cpb_bench_gctx_") as tmp:
        tmp = Path(tmp)
        # 1. the real plate as distributed
        med, times, last = median_times({"project": lambda: read_gctx(REAL_GCTX),
                                         "baseline": lambda: read_gct(REAL_GCT)}, reps)
        a, b = last["project"], last["baseline"]
        rows.append(row("gctx_read", "real plate as distributed (GCTX +ZSP vs GCT Level 3)",
                        f"978 × {a.data.shape[1]} (GCTX {_mb(REAL_GCTX):.1f} MB, GCT {_mb(REAL_GCT):.1f} MB)",
                        project="read_gctx", project_s=med["project"], baseline="read_gct",
                        baseline_s=med["baseline"], data="real (LINCS LJP005)", reps=reps, times=times,
                        check="same IDs and shape" if _same_ids(a, b) else "ID/shape MISMATCH",
                        ok=_same_ids(a, b)))

        # 2. identical content: the real GCT re-written as GCTX
        real = read_gct(REAL_GCT)
        same_gctx = tmp / "real_as.gctx"
        write_gctx(real, same_gctx)
        med, times, last = median_times({"project": lambda: read_gctx(same_gctx),
                                         "baseline": lambda: read_gct(REAL_GCT)}, reps)
        a, b = last["project"], last["baseline"]
        diff = float(np.nanmax(np.abs(a.data - b.data)))
        ok = _same_ids(a, b) and diff < 1e-5 * max(1.0, float(np.nanmax(np.abs(b.data))))
        rows.append(row("gctx_read", "real plate, same content in both formats",
                        f"978 × {a.data.shape[1]} (GCTX {_mb(same_gctx):.1f} MB, GCT {_mb(REAL_GCT):.1f} MB)",
                        project="read_gctx", project_s=med["project"], baseline="read_gct",
                        baseline_s=med["baseline"], data="real (LINCS LJP005), GCTX re-written", reps=reps,
                        times=times, check=f"same IDs, values equal to float32 (max |Δ| {diff:.1e})"
                        if ok else f"MISMATCH (max |Δ| {diff:.3g})", ok=ok))
        del real, a, b, last

        # 3. larger synthetic plate
        n = QUICK_SAMPLES if quick else FULL_SAMPLES
        syn = synthetic_plate(n)
        gx, gt = tmp / "SYNTHETIC_plate.gctx", tmp / "SYNTHETIC_plate.gct"
        write_gctx(syn, gx, attrs={"note": "SYNTHETIC benchmark plate"})
        write_gct_text(syn, gt)
        del syn
        med, times, last = median_times({"project": lambda: read_gctx(gx),
                                         "baseline": lambda: read_gct(gt)}, reps)
        a, b = last["project"], last["baseline"]
        diff = float(np.max(np.abs(a.data.astype(np.float64) - b.data)))
        ok = _same_ids(a, b) and diff < 1e-5
        rows.append(row("gctx_read", "synthetic plate, same content in both formats",
                        f"978 × {n:,} (GCTX {_mb(gx):.0f} MB gzip, GCT {_mb(gt):.0f} MB)",
                        project="read_gctx", project_s=med["project"], baseline="read_gct",
                        baseline_s=med["baseline"], reps=reps, times=times,
                        check=f"same IDs, values equal to float32 (max |Δ| {diff:.1e})" if ok
                        else f"MISMATCH (max |Δ| {diff:.3g})", ok=ok,
                        gctx_mb_per_s=round(_mb(gx) / med["project"], 1)))
        del a, b, last

        # 4. subset read: one 384-well plate of the synthetic file (if read_gctx takes col_ids)
        if "col_ids" in inspect.signature(read_gctx).parameters:
            col_ids = [f"SYN_PLATE001:{i:03d}" for i in range(384)]
            med, times, last = median_times({
                "project": lambda: read_gctx(gx, col_ids=col_ids),
                "baseline": lambda: _subset_after_full_read(gx, col_ids)}, reps)
            a, b = last["project"], last["baseline"]
            ok = _same_ids(a, b) and np.array_equal(a.data, b.data)
            rows.append(row("gctx_read", "synthetic plate, subset read of one 384-well plate",
                            f"384 of {n:,} samples × 978 genes (GCTX {_mb(gx):.0f} MB gzip)",
                            project="read_gctx(col_ids=…)", project_s=med["project"],
                            baseline="read_gctx() then select columns", baseline_s=med["baseline"], reps=reps,
                            times=times, check="identical subset" if ok else "MISMATCH", ok=ok))
    return rows


def _subset_after_full_read(path: Path, col_ids: list[str]) -> GCT:
    g = read_gctx(path)
    pos = np.flatnonzero(g.col_meta.index.isin(col_ids))
    return GCT(np.ascontiguousarray(g.data[:, pos]), g.row_meta, g.col_meta.iloc[pos])
