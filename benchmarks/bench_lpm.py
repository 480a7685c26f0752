"""LPM training throughput: the scalar and the multi-output model, side by side, on SYNTHETIC batches.

Both forms see the same number of observed values per optimizer step (the
scalar model one value per row, the multi-output model every observed gene
of a sample), so the ratio of their step times is the value throughput of
the multi-output form relative to the scalar one (> 1: multi-output trains
more values per second). A third row times the full loop of
:func:`cpb_assets.lpm.train.train` over in-memory chunks (encoding, CSR →
dense batches, evaluation excluded by an empty val/test split) for the
multi-output form.

Standalone (GPU runs)::

    .venv/bin/python -m benchmarks.bench_lpm --device cuda [--quick] [--amp] [--compile]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import torch

from benchmarks import REPS, median_times, row
from cpb_assets.lpm.model import MultiOutputLPM, ScalarLPM, masked_mse, seed_everything

SEED = 20261201
# vocabulary sizes of the order of the real compendium's multi-output model (datasets, contexts, molecules, genes)
VOCAB = {"datasets": 12, "contexts": 60}
FULL = {"genes": 5_000, "observed": 978, "samples": 64, "steps": 5, "perturbations": 20_000}
QUICK = {"genes": 2_000, "observed": 978, "samples": 16, "steps": 3, "perturbations": 5_000}


def _inputs(n: int, rng: np.random.Generator, device, n_pert: int) -> dict:
    t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    return {"dataset": t(rng.integers(0, VOCAB["datasets"], n)), "context": t(rng.integers(0, VOCAB["contexts"], n)),
            "perturbation": t(rng.integers(1, n_pert, (n, 1))),
            "log_dose": t(rng.normal(0, 1, n).astype(np.float32)), "time": t(np.full(n, 24.0, np.float32))}


def _stepper(model, inputs, target, mask, steps: int, amp: bool):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3, weight_decay=0.01)
    dev = next(model.parameters()).device

    def run():
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp and dev.type == "cuda"):
                pred = model(**inputs)
            loss = masked_mse(pred, target, mask) if mask is not None else (pred.float() - target).pow(2).mean()
            loss.backward()
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return float(loss.detach())
    return run


def _loop_frame(cfg: dict, rng: np.random.Generator) -> pd.DataFrame:
    genes = np.array([f"ENSG{i:011d}" for i in range(cfg["genes"])], dtype=object)
    n = cfg["samples"] * cfg["steps"]
    rows = {"dataset": [f"d{i}" for i in rng.integers(0, VOCAB["datasets"], n)],
            "context": [f"c{i}" for i in rng.integers(0, VOCAB["contexts"], n)],
            "perturbation": [str(i) for i in rng.integers(1, 2000, n)],
            "log_dose": rng.normal(0, 1, n).astype(np.float32), "time": np.full(n, 24.0, np.float32),
            "readouts": [genes[np.sort(rng.choice(cfg["genes"], cfg["observed"], replace=False))] for _ in range(n)],
            "value": [rng.normal(0, 1, cfg["observed"]).astype(np.float32) for _ in range(n)]}
    return pd.DataFrame(rows)


def run(quick: bool = False, reps: int = REPS, device: str = "cpu", amp: bool = False,
        compile: bool = False) -> list[dict]:
    cfg = QUICK if quick else FULL
    dev = torch.device(device)
    seed_everything(SEED, deterministic=dev.type == "cpu")
    rng = np.random.default_rng(SEED)
    n_values = cfg["samples"] * cfg["observed"]  # observed values per step, equal for both forms
    n_pert = cfg["perturbations"]
    multi = MultiOutputLPM(VOCAB["datasets"], VOCAB["contexts"], n_pert, cfg["genes"]).to(dev)
    scalar = ScalarLPM(VOCAB["datasets"], VOCAB["contexts"], n_pert, cfg["genes"]).to(dev)
    if compile and dev.type == "cuda":
        multi, scalar = torch.compile(multi), torch.compile(scalar)
    m_in = _inputs(cfg["samples"], rng, dev, n_pert)
    mask = np.zeros((cfg["samples"], cfg["genes"]), bool)
    for i in range(cfg["samples"]):
        mask[i, rng.choice(cfg["genes"], cfg["observed"], replace=False)] = True
    m_mask = torch.from_numpy(mask).to(dev)
    m_target = torch.randn(cfg["samples"], cfg["genes"], device=dev)
    s_in = {**_inputs(n_values, rng, dev, n_pert), "readout": torch.from_numpy(rng.integers(0, cfg["genes"], n_values)).to(dev)}
    s_target = torch.randn(n_values, device=dev)
    fns = {"project": _stepper(multi, m_in, m_target, m_mask, cfg["steps"], amp),
           "baseline": _stepper(scalar, s_in, s_target, None, cfg["steps"], amp)}
    fns["project"](), fns["baseline"]()  # warm-up (allocator, kernels, compile)
    med, times, last = median_times(fns, reps)
    steps = cfg["steps"]
    tag = f"{dev.type}{' bf16' if amp and dev.type == 'cuda' else ''}{' compiled' if compile and dev.type == 'cuda' else ''}"
    size = (f"{steps} steps × {n_values:,} observed values ({cfg['samples']} samples × {cfg['observed']} of "
            f"{cfg['genes']:,} genes; {n_pert:,} molecules)")
    ok = all(np.isfinite(v) for v in last.values())
    rows = [row("lpm_train", f"multi-output vs scalar training step, same values ({tag})", size,
                project="MultiOutputLPM step", project_s=med["project"], baseline="ScalarLPM step",
                baseline_s=med["baseline"], reps=reps, times=times,
                check="finite losses" if ok else "NON-FINITE loss", ok=ok,
                multi_samples_per_s=steps * cfg["samples"] / med["project"],
                multi_values_per_s=steps * n_values / med["project"],
                scalar_samples_per_s=steps * n_values / med["baseline"],
                scalar_values_per_s=steps * n_values / med["baseline"])]

    # the full loop (encoding, batching, CSR -> dense, optimizer) of train() over in-memory chunks
    from cpb_assets.lpm.train import FrameSource, TrainConfig, train

    frame = _loop_frame(cfg, rng)
    src = FrameSource({"train": frame}, chunk_rows=cfg["samples"] * 2)
    results = []

    def loop():
        with tempfile.TemporaryDirectory(prefix="cpb_bench_lpm_") as tmp:
            r = train(TrainConfig(form="multi", epochs=1, batch_size=cfg["samples"], device=dev.type, amp=amp,
                                  deterministic=dev.type == "cpu"), src, tmp)
        results.append(r)
        return r

    loop()
    med2, times2, last2 = median_times({"project": loop}, reps)
    r = last2["project"]
    rows.append(row("lpm_train", f"train() loop, multi-output, 1 epoch ({tag})",
                    f"{len(frame)} samples × {cfg['observed']} observed of {cfg['genes']:,} genes",
                    project="train(FrameSource)", project_s=med2["project"], reps=reps, times=times2,
                    check=f"{r.samples_per_s:,.0f} samples/s, {r.values_per_s:,.0f} values/s in the training pass",
                    ok=bool(np.isfinite(r.history[-1]["train_rmse"])),
                    samples_per_s=len(frame) / med2["project"],
                    values_per_s=len(frame) * cfg["observed"] / med2["project"]))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_lpm", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=REPS)
    ap.add_argument("--amp", action="store_true", help="bfloat16 autocast (CUDA)")
    ap.add_argument("--compile", action="store_true", help="torch.compile (CUDA)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows = run(args.quick, args.reps, args.device, args.amp, args.compile)
    for r in rows:
        keep = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in r.items() if k != "times"}
        print(json.dumps(keep, default=str))
    print(f"total {time.perf_counter() - t0:.0f} s; device {torch.cuda.get_device_name(0) if args.device == 'cuda' else 'cpu'}")
    return 0 if all(r.get("ok", True) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
