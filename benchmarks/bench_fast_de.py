"""The fast DE engine (``cpb_resources/fast_limma.py``) against the R route, side by side.

Inputs are SYNTHETIC and seeded (issue 15's two DE workloads):

* L1000-like: 978 genes, compounds with ~5 wells each + DMSO on every plate,
  26 plates, normalized log2 values, ``~0 + cond + plate``,
  ``eBayes(robust = TRUE, trend = TRUE)``;
* DRUG-seq-like: negative-binomial counts, compounds with ~6 wells + DMSO,
  6 plates, the count route (filterByExpr, TMM, voom, weighted lmFit,
  ``eBayes(robust = TRUE)``).

Contenders: ``fit_limma`` (rpy2 + ``r_scripts/limma_de.R``, the reference;
R already started) and ``fit_fast``, same inputs, interleaved, median of
`reps`. R is too slow at the issue's full sizes on a 2-core machine (L1000
10,000 samples ≈ 1 min per fit; DRUG-seq 20,000 × 2,000 ≈ 29 min), so the
side-by-side rows use reduced sizes, and the full sizes are timed for the
fast engine alone (throughput rows, no ratio), with the sample scaling
2.5k / 5k / 10k / 20k of the L1000-like stratum. Every side-by-side row
checks parity (max |Δt|, max |ΔP|, DEG calls at adj. P < 0.05).

One-pass floor rows: for the L1000-like stratum at 10,000 samples and the
DRUG-seq-like stratum at 20,000 × 2,000, one BLAS pass ``x @ design`` (genes ×
samples times samples × coefficients, float64) is timed interleaved with the
fast engine on the same matrix; the row gives the fast engine's time as a
multiple of that floor. A sep batch row times the fast engine alone on one
2,500-well sep batch (≈ one coefficient per treated well, 7 plates, 2,000
genes; ``--quick`` 300 wells × 500 genes), and one L1000-like sep batch
(2,500 compounds in 2,720 samples, 978 genes; ``--quick`` 200 in 300): the
per-gene-sample cost of sep designs at the batch size the DE layer uses, for
the projection (``benchmarks/projection.py``).
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from benchmarks import REPS, median_times, row


def _design(cond: np.ndarray, plate: np.ndarray | None):
    levels = list(dict.fromkeys(cond.tolist()))
    cols = {f"c{i + 1:04d}": (cond == lv).astype(float) for i, lv in enumerate(levels)}
    if plate is not None:
        for j, p in enumerate(list(dict.fromkeys(plate.tolist()))[1:], start=2):
            cols[f"plate{j:02d}"] = (plate == p).astype(float)
    X = pd.DataFrame(cols)
    ci = levels.index("DMSO")
    cm = np.zeros((X.shape[1], len(levels) - 1))
    k = 0
    for i in range(len(levels)):
        if i != ci:
            cm[i, k], cm[ci, k] = 1.0, -1.0
            k += 1
    C = pd.DataFrame(cm, index=X.columns, columns=[f"k{j + 1:04d}" for j in range(cm.shape[1])])
    return X, C


def _layout(rng, n_samples: int, n_compounds: int, n_plates: int, dmso_frac: float):
    """Conditions and plates: DMSO on every plate, compounds' wells spread over plates."""
    n_dmso = max(2 * n_plates, int(round(n_samples * dmso_frac)))
    treated = np.array([f"T{i:05d}" for i in range(n_compounds)])
    cond = np.concatenate([np.repeat("DMSO", n_dmso), rng.choice(treated, n_samples - n_dmso)])
    cond[n_dmso:n_dmso + n_compounds] = treated  # every compound present
    plate = np.array([f"P{i % n_plates:02d}" for i in range(n_samples)])
    rng.shuffle(plate)
    return cond, plate


def l1000_like(n_samples: int, n_compounds: int = 500, n_plates: int = 26, n_genes: int = 978, seed: int = 1):
    """SYNTHETIC normalized L1000-like stratum: (x, design, contrasts)."""
    rng = np.random.default_rng(seed)
    cond, plate = _layout(rng, n_samples, n_compounds, n_plates, 0.05)
    mean = rng.normal(8, 1.5, (n_genes, 1))
    sd = 0.2 + 0.15 * rng.gamma(3, 1 / 3, (n_genes, 1))
    x = mean + rng.normal(0, 1, (n_genes, n_samples)) * sd
    x += rng.normal(0, 0.1, (n_genes, n_plates))[:, [int(p[1:]) for p in plate]]
    hit = np.isin(cond, [f"T{i:05d}" for i in range(0, n_compounds, 10)])
    x[:40, hit] += 1.0
    X, C = _design(cond, plate)
    return x, X, C


def drugseq_like(n_genes: int, n_samples: int, n_compounds: int = 300, n_plates: int = 6, seed: int = 2):
    """SYNTHETIC DRUG-seq-like count stratum: (counts, design, contrasts)."""
    rng = np.random.default_rng(seed)
    cond, plate = _layout(rng, n_samples, n_compounds, n_plates, 0.08)
    mu = rng.gamma(0.5, 40, (n_genes, 1)) * rng.uniform(0.5, 1.5, (1, n_samples))
    hit = np.isin(cond, [f"T{i:05d}" for i in range(0, n_compounds, 10)])
    mu[: n_genes // 50, hit] *= 3
    x = rng.negative_binomial(10, 10 / (10 + mu)).astype(float)
    X, C = _design(cond, plate)
    return x, X, C


def _parity(r, f) -> tuple[str, bool]:
    dt = float(np.max(np.abs(r.tables["t"] - f.tables["t"])))
    dp = float(np.max(np.abs(r.tables["P.Value"] - f.tables["P.Value"])))
    same = bool(np.array_equal(r.tables["adj.P.Val"] < 0.05, f.tables["adj.P.Val"] < 0.05)) and r.genes == f.genes
    ok = same and dt <= 1e-8 and dp <= 1e-8
    return f"max |Δt| {dt:.1e}, max |ΔP| {dp:.1e}, DEG calls {'identical' if same else 'DIFFER'}", ok


def _side_by_side(name, case, size, x, X, C, normalized, reps):
    from cpb_resources.fast_limma import fit_fast
    from cpb_resources.limma import fit_limma

    genes = [f"G{i}" for i in range(x.shape[0])]
    med, times, last = median_times({
        "fast": lambda: fit_fast(x, genes, X, C, normalized, name),
        "R": lambda: fit_limma(x, genes, X, C, normalized, name)}, reps)
    check, ok = _parity(last["R"], last["fast"])
    return row("fast_de", case, size, project="fit_fast", project_s=med["fast"], baseline="fit_limma (R limma)",
               baseline_s=med["R"], check=check, reps=reps, times=times, ok=ok, workload=name,
               genes=x.shape[0], samples=x.shape[1], coefficients=X.shape[1])


def _alone(case, size, x, X, C, normalized, reps, workload: str, floor: bool = False):
    """The fast engine alone; with `floor`, also one BLAS pass ``x @ design`` interleaved (a second row)."""
    from cpb_resources.fast_limma import fit_fast

    genes = [f"G{i}" for i in range(x.shape[0])]
    fns = {"fast": lambda: fit_fast(x, genes, X, C, normalized, "bench")}
    if floor:
        D = np.ascontiguousarray(X.to_numpy(dtype=float))
        fns["floor"] = lambda: x @ D
    med, times, _ = median_times(fns, reps)
    rows = [row("fast_de", case, size, project="fit_fast", project_s=med["fast"],
                check=f"{med['fast'] / x.shape[1] * 1e3:.2f} ms per sample", reps=reps,
                times={"fast": times["fast"]}, per_sample_s=med["fast"] / x.shape[1],
                genes=x.shape[0], samples=x.shape[1], coefficients=X.shape[1], workload=workload)]
    if floor:
        rows.append(row("fast_de_floor", f"{case.split(',')[0]}: fast engine vs one-pass floor", size,
                        project="fit_fast", project_s=med["fast"],
                        baseline=f"x @ design ({x.shape[0]} × {x.shape[1]} @ {X.shape[0]} × {X.shape[1]}, float64 BLAS)",
                        baseline_s=med["floor"], reps=reps, times=times,
                        check=f"fast = {med['fast'] / med['floor']:.0f}× the floor (target ≤ 10×)",
                        multiple_of_floor=med["fast"] / med["floor"], workload=workload))
    return rows


def run(quick: bool = False, reps: int = REPS) -> list[dict]:
    from cpb_resources.limma import fit_limma

    rows = []
    # warm R (script sourced, packages loaded) outside the timings
    x, X, C = drugseq_like(200, 40, n_compounds=8, n_plates=2)
    fit_limma(x, [f"G{i}" for i in range(200)], X, C, False, "warm-up")

    n = 600 if quick else 2500
    k = 60 if quick else 500
    x, X, C = l1000_like(n, n_compounds=k)
    rows.append(_side_by_side("l1000", f"L1000-like, trend=TRUE: fast vs R",
                              f"978 genes × {n} samples, {k} compounds + DMSO, 26 plates", x, X, C, True, reps))
    g, n, k = (300, 200, 30) if quick else (1000, 600, 100)
    x, X, C = drugseq_like(g, n, n_compounds=k)
    rows.append(_side_by_side("drugseq", "DRUG-seq-like voom: fast vs R",
                              f"{g} genes × {n} samples, {k} compounds + DMSO, 6 plates", x, X, C, False, reps))
    g, n = (300, 120) if quick else (500, 400)
    x, X, C = drugseq_like(g, n, n_compounds=n - 40, n_plates=6, seed=3)
    X_sep = X  # every treated well its own coefficient when compounds ≈ wells
    rows.append(_side_by_side("sep", "sep-like voom (≈ one coefficient per well): fast vs R",
                              f"{g} genes × {n} samples, {X_sep.shape[1]} coefficients", x, X_sep, C, False, reps))
    # the fast engine alone at the sizes
    sizes = [2500] if quick else [2500, 5000, 10000, 20000]
    for n in sizes:
        x, X, C = l1000_like(n)
        rows += _alone("L1000-like, fast engine alone (scaling)", f"978 genes × {n} samples, 500 compounds, 26 plates",
                       x, X, C, True, reps, "l1000_alone", floor=n == min(10000, sizes[-1]))
    g, n = (5000, 1000) if quick else (20000, 2000)
    x, X, C = drugseq_like(g, n)
    rows += _alone("DRUG-seq-like voom, fast engine alone", f"{g} genes × {n} samples, 300 compounds, 6 plates",
                   x, X, C, False, reps, "drugseq_alone", floor=True)
    # one sep batch at the DE layer's batch size: ≈ one coefficient per treated well
    g, k = (500, 300) if quick else (2000, 2500)
    x, X, C = drugseq_like(g, k + 220 if not quick else k + 40, n_compounds=k, n_plates=7, seed=4)
    rows += _alone("sep batch (one coefficient per treated well) voom, fast engine alone",
                   f"{g} genes × {x.shape[1]} samples, {X.shape[1]} coefficients, 7 plates", x, X, C, False, reps,
                   "sep_batch")
    n, k = (300, 200) if quick else (2720, 2500)
    x, X, C = l1000_like(n, n_compounds=k, seed=5)
    rows += _alone("L1000-like sep batch (one coefficient per treated well), fast engine alone",
                   f"978 genes × {n} samples, {X.shape[1]} coefficients, 26 plates", x, X, C, True, reps,
                   "sep_batch_l1000")
    return rows


if __name__ == "__main__":  # a quick look without benchmarks.run
    t0 = time.perf_counter()
    for r in run(quick=True, reps=3):
        print(r["case"], r["size"], r["project_s"], r["baseline_s"], r["check"])
    print(f"{time.perf_counter() - t0:.0f} s")
