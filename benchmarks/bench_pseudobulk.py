"""Pseudobulk aggregation: the project's sparse indicator product vs a naive pandas groupby-sum.

Input (SYNTHETIC, seeded): a cells × genes CSR count matrix, ~5% non-zero,
integer counts 1–19, cells assigned at random to groups keyed by three
string columns (plate, well, perturbagen), in no particular order.

* project:  :func:`cpb_assets.harmonize.pseudobulk.pseudobulk` on the CSR matrix
* baseline: the same counts as a dense int64 numpy array (densified once,
  outside the timing) wrapped in a DataFrame, ``groupby(key columns,
  sort=False).sum()``

Both return groups in first-appearance order; the check compares the keys
and every summed count exactly.

Second row, against the tool users have: decoupler's ``dc.pp.pseudobulk``
(a benchmark extra: ``make bench`` installs :data:`DECOUPLER`; without it the
row says "decoupler not installed") and the project's ``pseudobulk`` on the
same SYNTHETIC single-cell workload (:func:`single_cell`: 200,000 cells ×
20,000 genes, ~2,000 non-zeros per cell, int32 counts 1–5, 5,000 groups;
``--quick`` 20,000 × 5,000, 500 per cell, 500 groups; override with
``CPB_BENCH_SC=cells,genes,nnz_per_cell,groups``). The workload is written once
to raw files; every timing runs in a fresh process (``python -m
benchmarks.bench_pseudobulk child TOOL DIR``) that loads it, warms the tool up
on 50 cells, times one call and reports its own peak RSS (``VmHWM``, via
``own_peak_rss_mb``; the loaded input is part of it) and a SHA-256 of the
sums (groups sorted by label, int64), so "equal sums" means every count of
every group. Processes alternate (project, decoupler, …), median of ``reps``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from benchmarks import REPS, median_times, row
from cpb_assets.harmonize.pseudobulk import pseudobulk

SEED = 20261121
FULL = (50_000, 2_000, 1_000)  # cells, genes, groups
QUICK = (10_000, 1_000, 200)
DENSITY = 0.05
SC_FULL = (200_000, 20_000, 2_000, 5_000)  # cells, genes, non-zeros per cell, groups
SC_QUICK = (20_000, 5_000, 500, 500)
SC_ENV = "CPB_BENCH_SC"
DECOUPLER = "decoupler==2.2.0"  # the version `make bench` installs (works with the pinned anndata/numpy/pandas)
REPO = Path(__file__).resolve().parents[1]


def synthetic_counts(n_cells: int, n_genes: int, n_groups: int, seed: int = SEED):
    """SYNTHETIC sparse counts and group keys (seeded)."""
    rng = np.random.default_rng(seed)
    nnz = int(n_cells * n_genes * DENSITY)
    # draw (cell, gene) positions; duplicates are summed, so density ends just under 5%
    r = rng.integers(0, n_cells, nnz)
    c = rng.integers(0, n_genes, nnz)
    v = rng.integers(1, 20, nnz).astype(np.int64)
    X = sp.csr_matrix((v, (r, c)), shape=(n_cells, n_genes), dtype=np.int64)
    X.sum_duplicates()
    g = rng.integers(0, n_groups, n_cells)
    keys = pd.DataFrame({
        "plate": np.array([f"SYN_P{k % 7:02d}" for k in g], dtype=object),
        "well": np.array([f"W{k:04d}" for k in g], dtype=object),
        "perturbagen": np.array([f"SYN_CPD{k % 97:03d}" for k in g], dtype=object),
    })
    return X, keys


def naive_groupby_sum(dense: np.ndarray, keys: pd.DataFrame) -> pd.DataFrame:
    """Plain pandas: dense DataFrame, groupby the key columns, sum."""
    return pd.DataFrame(dense).groupby([keys[c] for c in keys.columns], sort=False).sum()


def single_cell(folder: Path, n_cells: int, n_genes: int, nnz_per_cell: int, n_groups: int,
                seed: int = SEED, chunk: int = 10_000) -> int:
    """Write a SYNTHETIC single-cell workload (seeded) to `folder`; return its non-zeros.

    Per cell, genes are drawn with geometric gaps (p = nnz_per_cell / n_genes):
    sorted, distinct, ~nnz_per_cell of them; counts uniform 1–5 (int32); each
    cell in one of `n_groups` groups at random. Written chunk by chunk as raw
    int32 ``data``, ``indices``, int64 ``indptr`` and int32 group ``codes``, so
    the full matrix is never held here.
    """
    rng = np.random.default_rng(seed)
    p = nnz_per_cell / n_genes
    width = int(nnz_per_cell + 8 * np.sqrt(nnz_per_cell) + 16)  # gaps drawn per cell, ≥ 8 sd above the mean
    nnz = 0
    with open(folder / "data", "wb") as fd, open(folder / "indices", "wb") as fi, open(folder / "indptr", "wb") as fp:
        np.zeros(1, np.int64).tofile(fp)
        for start in range(0, n_cells, chunk):
            m = min(chunk, n_cells - start)
            pos = np.cumsum(rng.geometric(p, (m, width)), axis=1) - 1
            keep = pos < n_genes
            pos[keep].astype(np.int32).tofile(fi)
            rng.integers(1, 6, int(keep.sum()), dtype=np.int32).tofile(fd)
            (nnz + np.cumsum(keep.sum(axis=1))).astype(np.int64).tofile(fp)
            nnz += int(keep.sum())
    rng.integers(0, n_groups, n_cells, dtype=np.int32).tofile(folder / "codes")
    (folder / "shape.json").write_text(json.dumps({"cells": n_cells, "genes": n_genes, "groups": n_groups}))
    return nnz


def _load(folder: Path):
    shape = json.loads((folder / "shape.json").read_text())
    X = sp.csr_matrix((np.fromfile(folder / "data", np.int32), np.fromfile(folder / "indices", np.int32),
                       np.fromfile(folder / "indptr", np.int64)), shape=(shape["cells"], shape["genes"]))
    labels = pd.Categorical.from_codes(np.fromfile(folder / "codes", np.int32),
                                       categories=[f"SYN_S{i:05d}" for i in range(shape["groups"])])
    return X, labels


def _digest(names, S) -> tuple[str, int]:
    """SHA-256 of the group labels and sums, groups sorted by label, sums as int64; and the grand total."""
    names = np.asarray(names, dtype=str)
    order = np.argsort(names, kind="stable")
    h = hashlib.sha256("\n".join(names[order]).encode())
    total = 0
    for i in range(0, len(order), 256):
        block = S[order[i:i + 256]]
        block = (block.toarray() if sp.issparse(block) else np.asarray(block)).astype(np.int64)
        h.update(np.ascontiguousarray(block).tobytes())
        total += int(block.sum())
    return h.hexdigest()[:16], total


def _child(tool: str, folder: str) -> None:
    """One timed pseudobulk in this (fresh) process; prints JSON."""
    from cpb_resources.workloads import own_peak_rss_mb

    X, labels = _load(Path(folder))
    if tool == "decoupler":
        import anndata as ad
        import decoupler as dc

        adata = ad.AnnData(X=X, obs=pd.DataFrame({"sample": labels}, index=[f"c{i}" for i in range(X.shape[0])]),
                           var=pd.DataFrame(index=[f"g{j}" for j in range(X.shape[1])]))
        dc.pp.pseudobulk(adata[:50].copy(), sample_col="sample", groups_col=None)  # warm-up, not timed
        t0 = time.perf_counter()
        pb = dc.pp.pseudobulk(adata, sample_col="sample", groups_col=None)
        seconds = time.perf_counter() - t0
        peak = own_peak_rss_mb()
        names, S = pb.obs_names, pb.X
    else:
        keys = pd.DataFrame({"sample": labels})
        pseudobulk(X[:50], keys.iloc[:50])  # warm-up, not timed
        t0 = time.perf_counter()
        groups, S = pseudobulk(X, keys)
        seconds = time.perf_counter() - t0
        peak = own_peak_rss_mb()
        names = groups["sample"]
    digest, total = _digest(names, S)
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak, "groups": len(names), "digest": digest,
                      "total": total, "input_mb": (X.data.nbytes + X.indices.nbytes + X.indptr.nbytes) / 2**20}))


def _run_child(tool: str, folder: Path) -> dict:
    p = subprocess.run([sys.executable, "-m", "benchmarks.bench_pseudobulk", "child", tool, str(folder)],
                       cwd=REPO, capture_output=True, text=True)
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {p.returncode}: {tail[:200]}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def run_single_cell(quick: bool, reps: int) -> dict:
    """The project's pseudobulk vs decoupler's on the single-cell workload, each call in a fresh process."""
    env = os.environ.get(SC_ENV)
    n_cells, n_genes, per_cell, n_groups = (tuple(int(v) for v in env.split(",")) if env
                                            else SC_QUICK if quick else SC_FULL)
    have_dc = importlib.util.find_spec("decoupler") is not None
    tools = ["project"] + (["decoupler"] if have_dc else [])
    with tempfile.TemporaryDirectory(prefix="cpb-bench-sc-") as tmp:
        t0 = time.perf_counter()
        nnz = single_cell(Path(tmp), n_cells, n_genes, per_cell, n_groups)
        gen_s = time.perf_counter() - t0
        got: dict[str, list[dict]] = {t: [] for t in tools}
        for _ in range(max(reps, 1)):
            for t in tools:
                got[t].append(_run_child(t, Path(tmp)))
    size = (f"{n_cells:,} cells × {n_genes:,} genes, {nnz / 1e6:.1f} M non-zeros "
            f"({nnz / n_cells:,.0f} per cell), {n_groups:,} groups")
    errors = {t: r["error"] for t, v in got.items() for r in v if "error" in r}
    med = {t: statistics.median(r["seconds"] for r in v) for t, v in got.items() if t not in errors}
    peak = {t: max(r["peak_rss_mb"] for r in v) for t, v in got.items() if t not in errors}
    last = {t: v[-1] for t, v in got.items() if t not in errors}
    ok: bool | None = None
    if "project" in errors:
        check, ok = f"project FAILED: {errors['project']}", False
    elif not have_dc:
        check = f"decoupler not installed (`make bench` installs {DECOUPLER}); project only"
    elif "decoupler" in errors:
        check, ok = f"decoupler FAILED: {errors['decoupler']}", False
    else:
        ok = last["project"]["digest"] == last["decoupler"]["digest"]
        check = (f"identical sums ({last['project']['groups']:,} groups, total {last['project']['total']:,})"
                 if ok else f"MISMATCH: sha256 {last['project']['digest']} vs {last['decoupler']['digest']}")
    if peak:
        inp = next(iter(last.values()))["input_mb"]
        check += "; peak RSS " + ", ".join(f"{t} {m:,.0f} MiB" for t, m in peak.items()) + f" (input {inp:,.0f} MiB)"
    version = ""
    if have_dc:
        from importlib.metadata import version as _v
        version = _v("decoupler")
    return row("pseudobulk_sc", "project pseudobulk vs decoupler pseudobulk, fresh process each",
               size, project="pseudobulk(X_csr, keys)", project_s=med.get("project", float("nan")),
               baseline=f"decoupler {version} dc.pp.pseudobulk(adata, 'sample', None)" if have_dc else "",
               baseline_s=med.get("decoupler"), check=check, reps=reps,
               times={t: [r.get("seconds") for r in v] for t, v in got.items()}, ok=ok,
               peak_rss_mb=peak, generate_s=round(gen_s, 1), nnz=nnz)


def run(quick: bool = False, reps: int = REPS) -> list[dict]:
    return [run_groupby(quick, reps), run_single_cell(quick, reps)]


def run_groupby(quick: bool, reps: int) -> dict:
    n_cells, n_genes, n_groups = QUICK if quick else FULL
    X, keys = synthetic_counts(n_cells, n_genes, n_groups)
    dense = X.toarray()  # int64, the baseline's input; densifying is not timed
    med, times, last = median_times({
        "project": lambda: pseudobulk(X, keys),
        "baseline": lambda: naive_groupby_sum(dense, keys),
    }, reps)
    groups, sums = last["project"]
    naive = last["baseline"]
    same_keys = (len(groups) == len(naive)
                 and all((groups[c].to_numpy() == naive.index.get_level_values(c).to_numpy()).all()
                         for c in keys.columns))
    same_sums = same_keys and np.array_equal(sums.toarray(), naive.to_numpy().astype(np.int64))
    check = (f"identical sums ({len(groups)} groups)" if same_sums
             else f"MISMATCH (keys equal: {same_keys})")
    return row("pseudobulk", "sparse indicator product vs pandas groupby-sum",
                f"{n_cells:,} cells × {n_genes:,} genes, {X.nnz / (n_cells * n_genes):.1%} nonzero → "
                f"{len(groups):,} groups",
                project="pseudobulk(X_csr, keys)", project_s=med["project"],
                baseline="pd.DataFrame(X_dense_int64).groupby(keys).sum()", baseline_s=med["baseline"],
                check=check, reps=reps, times=times, ok=bool(same_sums),
                dense_mb=round(dense.nbytes / 1e6, 1))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "child":
        _child(sys.argv[2], sys.argv[3])
    else:
        for r in run(quick="--quick" in sys.argv, reps=REPS):
            print(r["case"], r["size"], r["project_s"], r["baseline_s"], r["check"])
