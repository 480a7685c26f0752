"""Peak memory of materializing one DE partition: flat when the partition doubles.

Input: a SYNTHETIC L1000-shaped harmonized partition (978 genes, normalized
log2 values, float32 X in an ``.h5ad``), written by this module: cell lines
(strata) of 1,250 samples each on four 384-well plates (16 DMSO wells per
plate), compounds × doses in triplicate on three plates, 24 h: ~395
contrasts × 978 genes per stratum. The partition grows by adding cell lines,
as L1000 Phase I does: 50,000 samples = 40 strata, 100,000 = 80 strata
(16 and 31 million rows). Strata are kept at 1,250 samples (one unit each) so
that R's share stays a few minutes: ``lmFit``'s QR costs samples ×
coefficients², ~11 s of R per 2,500-sample batch of 800 contrasts on this
machine, which would make the 100k case take ~10 minutes of R alone.

What runs is the asset's path in local compute mode, in fresh processes so
the peaks do not mix:

* the **step** process (what the Dagster step runs): read obs, plan units,
  start the fit worker as a subprocess, assemble the partition folder
  (``assemble_de``: per-unit files, ``adj_P_across`` per stratum out of core)
  inside ``atomic_path``, then the ``de_values`` check and the metadata as
  DuckDB queries over the files;
* the **fit worker** (``cpb_assets.effects.workloads:de_units``, the compute
  workload): every unit reads only its rows of the ``.h5ad``, fits in R and
  writes its rows at once.

Reported: each process's own peak RSS (``VmHWM``, MB; not ``ru_maxrss``, which a child inherits
from its parent), wall seconds, rows written;
``ok`` when both peaks at the doubled size stay within 20% of the smaller.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import row
from cpb_resources.workloads import own_peak_rss_mb

N_GENES = 978
STRATUM = 1250
PLATE_WELLS, PLATE_DMSO = 384, 16
FLAT = 1.20


def write_partition(path: Path, n_samples: int, seed: int = 0) -> dict:
    """Write the SYNTHETIC partition; return its shape."""
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_samples // STRATUM):
        cell = f"CVCL_{9000 + s:04d}"
        n_plates = -(-STRATUM // PLATE_WELLS)
        plates = [f"SYN_S{s:03d}_X{p:03d}" for p in range(n_plates)]
        wells = {p: 0 for p in plates}
        k = 0
        # DMSO wells first, then compound × dose triplicates on three consecutive plates
        for p in plates:
            for _ in range(PLATE_DMSO):
                rows.append((p, f"W{wells[p]:03d}", cell, "DMSO", True, 0.0, None))
                wells[p] += 1
        n_treated = STRATUM - PLATE_DMSO * n_plates
        while k * 3 < n_treated - 2:
            cmp, dose = f"SYN_BRD{s:03d}{k // 6:05d}", [0.04, 0.12, 0.37, 1.11, 3.33, 10.0][k % 6]
            for r in range(3):
                p = plates[(k + r) % n_plates]
                rows.append((p, f"W{wells[p]:03d}", cell, cmp, False, dose, str(100000 + s * 10000 + k // 6)))
                wells[p] += 1
            k += 1
    obs = pd.DataFrame(rows, columns=["plate", "well", "cell_type", "perturbagen", "is_control", "pert_dose_uM",
                                      "pubchem_cid"])
    obs["pert_time_h"] = 24.0
    obs["psbulk_cells"] = -666
    obs["psbulk_counts"] = -666
    obs["dataset"] = "l1000_phase1"
    obs.index = (obs["plate"] + "_" + obs["well"] + "_" + obs["perturbagen"] + "_" + obs["cell_type"]).to_numpy()
    for c in ["plate", "cell_type", "perturbagen", "pubchem_cid", "dataset"]:
        obs[c] = obs[c].astype("category")
    x = (rng.normal(8.0, 1.0, (len(obs), N_GENES)) + rng.normal(0, 1.0, N_GENES)).astype(np.float32)
    var = pd.DataFrame(index=[f"ENSG{i:011d}" for i in range(N_GENES)])
    a = ad.AnnData(X=x, obs=obs, var=var)
    a.uns["synthetic"] = True
    a.write_h5ad(path)
    return {"n_obs": int(a.n_obs), "strata": n_samples // STRATUM}


def step(h5ad: str, work: str) -> dict:
    """The DE step in local mode; runs in its own process (``python -m benchmarks.bench_de_memory step``)."""
    import anndata as ad

    from cpb_assets.effects.assemble import assemble_de, de_value_problems, partition_summary
    from cpb_assets.effects.strata import plan_units
    from cpb_resources.storage import atomic_path

    t0 = time.perf_counter()
    work = Path(work)
    backed = ad.read_h5ad(h5ad, backed="r")
    obs = backed.obs.copy()
    backed.file.close()
    units, skipped = plan_units(obs, "l1000_phase1", "group")
    del obs
    staging = work / "staging"
    params = work / "params.json"
    params.write_text(json.dumps({"h5ad": h5ad, "units": [u.to_json() for u in units], "out_dir": str(staging)}))
    t_fit = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_de_memory", "fit", str(params)],
                         check=True, capture_output=True, text=True)
    fit = json.loads(out.stdout.strip().splitlines()[-1])
    t_asm = time.perf_counter()
    final = work / "tables" / "de" / "dataset=l1000_phase1" / "mode=group"
    with atomic_path(final, is_dir=True) as tmp:
        strata = assemble_de(staging, units, skipped, tmp, "l1000_phase1", "group")
    rows, problems = de_value_problems(final)
    summary = partition_summary(final)
    return {"step_peak_mb": own_peak_rss_mb(), "fit_peak_mb": fit["peak_mb"], "units": len(units),
            "strata_ok": int((strata["status"] == "ok").sum()), "rows": rows, "problems": problems,
            "contrasts": summary["contrasts"], "fit_s": t_asm - t_fit,
            "assemble_check_s": time.perf_counter() - t_asm, "total_s": time.perf_counter() - t0}


def fit(params_file: str) -> dict:
    """The compute workload, as the local runner calls it."""
    from cpb_assets.effects.workloads import de_units

    res = de_units(json.loads(Path(params_file).read_text()))
    return {"peak_mb": own_peak_rss_mb(), "units": res["metadata"]["units"]}


def measure(n_samples: int, folder: Path) -> dict:
    h5ad = folder / f"syn_{n_samples}.h5ad"
    shape = write_partition(h5ad, n_samples)
    work = folder / f"work_{n_samples}"
    work.mkdir()
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_de_memory", "step", str(h5ad), str(work)],
                         check=True, capture_output=True, text=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    h5ad.unlink()
    return {**shape, **res}


def run(quick: bool = False, reps: int = 1) -> list[dict]:  # noqa: ARG001 - one run per size: peaks, not medians
    sizes = (10_000, 20_000) if quick else (50_000, 100_000)
    results = {}
    with tempfile.TemporaryDirectory(prefix="cpb-bench-de-mem-") as tmp:
        for n in sizes:
            results[n] = measure(n, Path(tmp))
    small, big = (results[n] for n in sizes)
    ratio_step = big["step_peak_mb"] / small["step_peak_mb"]
    ratio_fit = big["fit_peak_mb"] / small["fit_peak_mb"]
    ok = ratio_step <= FLAT and ratio_fit <= FLAT and not small["problems"] and not big["problems"]
    out = []
    for n in sizes:
        r = results[n]
        out.append(row("de_memory", f"DE partition, {n:,} samples", f"{r['strata']} strata × {STRATUM:,} samples, "
                       f"{r['units']} units, {r['rows']:,} rows", project="plan → fit units → assemble_de → checks",
                       project_s=r["total_s"], reps=1,
                       check=f"peak RSS step {r['step_peak_mb']:.0f} MB, fit worker {r['fit_peak_mb']:.0f} MB; "
                             f"de_values problems {len(r['problems'])}",
                       ok=not r["problems"], **{k: v for k, v in r.items() if k != "problems"}))
    out.append(row("de_memory", f"peak RSS at {sizes[1]:,} ÷ at {sizes[0]:,} samples", "", project="ratio",
                   project_s=float("nan"), reps=1,
                   check=f"step {ratio_step:.2f}×, fit worker {ratio_fit:.2f}× (flat: ≤ {FLAT:.2f}×) "
                         f"{'ok' if ok else 'NOT FLAT'}", ok=ok, ratio_step=ratio_step, ratio_fit=ratio_fit))
    return out


if __name__ == "__main__":
    if sys.argv[1] == "step":
        print(json.dumps(step(sys.argv[2], sys.argv[3])))
    elif sys.argv[1] == "fit":
        print(json.dumps(fit(sys.argv[2])))
    else:  # python -m benchmarks.bench_de_memory measure N
        with tempfile.TemporaryDirectory() as d:
            print(json.dumps(measure(int(sys.argv[2]), Path(d)), default=float))
