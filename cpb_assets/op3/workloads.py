"""Compute-side OP3 work: one (descriptor, seed) run of the two-stage predictor (a compute-resource workload)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cpb_assets.op3.metrics import METRICS, row_metrics
from cpb_assets.op3.predictor import Descriptors, PredictorConfig, two_stage_predict
from cpb_resources.storage import atomic_path, write_parquet


def load_targets(folder: str | Path) -> tuple[pd.DataFrame, list[str], np.ndarray]:
    folder = Path(folder)
    conditions = pd.read_parquet(folder / "conditions.parquet")
    genes = json.loads((folder / "genes.json").read_text())
    return conditions, genes, np.load(folder / "y.npy")


def load_descriptors(folder: str | Path) -> Descriptors:
    folder = Path(folder)
    index = json.loads((folder / "index.json").read_text())
    matrix = np.load(folder / "matrix.npy")
    return Descriptors({c: i for i, c in enumerate(index)}, matrix)


def predict(params: dict) -> dict:
    """params: targets (folder), descriptors (folder), descriptor (name), seed (int), freeze (bool),
    config (PredictorConfig fields), out (Parquet of per-row metrics), predictions (.npy),
    mlflow (MlflowResource.worker_spec + run_name, or None)."""
    t0 = time.time()
    conditions, genes, y = load_targets(params["targets"])
    desc = load_descriptors(params["descriptors"])
    cfg = PredictorConfig(**{**params.get("config", {}), "freeze_descriptors": bool(params.get("freeze"))})
    is_test = (conditions["split"] == "test").to_numpy()
    pred = two_stage_predict(conditions["cell_type"].tolist(), conditions["compound"].tolist(), y, is_test, desc,
                             seed=int(params["seed"]), cfg=cfg)
    per_row = row_metrics(y[is_test], pred)
    rows = conditions.loc[is_test, ["cell_type", "compound", "pubchem_cid", "contrast_id"]].reset_index(drop=True)
    for m in METRICS:
        rows[m] = per_row[m]
    rows.insert(0, "seed", int(params["seed"]))
    rows.insert(0, "descriptor", params["descriptor"])
    write_parquet(rows, params["out"])
    with atomic_path(params["predictions"]) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, pred.astype(np.float32))
    summary = {m: float(per_row[m].mean()) for m in METRICS}
    run_id = None
    ml = params.get("mlflow")
    if ml:
        from cpb_resources.mlflow import MlflowTracker

        tracker = MlflowTracker(ml["tracking_uri"], ml["experiment_id"], run_name=ml.get("run_name"),
                                tags={"descriptor": params["descriptor"], "seed": str(params["seed"])})
        tracker.log_params({"descriptor": params["descriptor"], "seed": params["seed"],
                            "n_train": int((~is_test).sum()), "n_test": int(is_test.sum()), "n_genes": len(genes),
                            "descriptor_compounds": len(desc.index), **{f"cfg_{k}": v for k, v in vars(cfg).items()}})
        tracker.log_metrics(summary, step=0)
        tracker.log_artifact(params["out"])
        tracker.finish()
        run_id = tracker.run_id
    return {"metrics": summary, "n_test": int(is_test.sum()), "seconds": round(time.time() - t0, 2),
            "mlflow_run_id": run_id, "experiment_id": (ml or {}).get("experiment_id")}
