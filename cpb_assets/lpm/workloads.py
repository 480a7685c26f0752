"""LPM training units of work for the compute resource (local subprocess or SLURM job, GPU when granted).

:func:`train_runs` trains one or more runs (the seeds of a fine-tune /
scratch partition, or the one seed of an ``lpm_checkpoint`` partition), each
an MLflow run, each resumable: a run folder that already holds ``last.pt`` of
the same configuration, vocabulary and split continues from its last epoch
(a killed job), one that holds another run's files is cleared first.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from cpb_assets.lpm.config import TrainConfig, select_per_dataset
from cpb_assets.lpm.train import SPLITS, RunResult, ShardSource, train
from cpb_resources.storage import atomic_path

log = logging.getLogger(__name__)


def run_identity(params: dict) -> str:
    """Hash of everything that defines a run's result (config, data, init checkpoint, split)."""
    keys = ("config", "shard_root", "form", "datasets", "split_hash", "fingerprints", "select_datasets")
    return hashlib.sha256(json.dumps({k: params.get(k) for k in keys}, sort_keys=True).encode()).hexdigest()[:16]


def _fingerprints(path: str | None) -> dict | None:
    if not path:
        return None
    from cpb_assets.lpm.fingerprints import load_fingerprints

    cids, mat = load_fingerprints(path)
    return {c: mat[i] for i, c in enumerate(cids)}


def _prepare_dir(out: Path, identity: str, fresh: bool) -> None:
    """Keep `out` when it belongs to this run (resume); clear it when it holds another run's files."""
    marker = out / "run.json"
    if out.exists() and (fresh or not marker.exists() or json.loads(marker.read_text()).get("identity") != identity):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    if not marker.exists():
        with atomic_path(marker) as tmp:
            tmp.write_text(json.dumps({"identity": identity}))


def train_one(params: dict) -> dict:
    """Train (or resume, or reuse) one run; log it to MLflow when ``params["mlflow"]`` is set.

    Parameters (JSON)
    -----------------
    config
        :class:`~cpb_assets.lpm.train.TrainConfig` fields (``init_checkpoint``: a source epoch file).
    shard_root, form
        Shards of one split kind (``tables.shard_root``) and the model form.
    datasets
        Train on the shards of these datasets only (fine-tune / scratch: the target); None: all.
    select_datasets
        Datasets to select best epochs for (default: every dataset of the vocabulary with validation rows).
    fingerprints
        Morgan fingerprint Parquet (``morgan_fingerprints``) for Morgan variants.
    split_hash, out_dir, fresh
        The split's hash; the run folder; True to start over even when a finished run is there.
    mlflow
        ``MlflowResource.worker_spec`` plus ``run_name`` and ``tags``; None: no tracking.

    Returns
    -------
    dict
        out_dir, epochs_done, resumed_from, selection (dataset → epoch, val_rmse, test_rmse),
        mlflow_run_id, experiment_id, throughput.
    """
    out = Path(params["out_dir"])
    identity = run_identity(params)
    _prepare_dir(out, identity, bool(params.get("fresh")))
    cfg = TrainConfig(**params["config"])
    source = ShardSource(params["shard_root"], params["form"], params.get("datasets"))
    tracker = None
    ml = params.get("mlflow")
    run_file = out / "mlflow_run.json"
    if ml:
        from cpb_resources.mlflow import MlflowTracker

        previous = json.loads(run_file.read_text())["run_id"] if run_file.exists() else None
        tracker = MlflowTracker(ml["tracking_uri"], ml["experiment_id"], run_id=previous,
                                run_name=ml.get("run_name"), tags=ml.get("tags"))
        if previous is None:
            with atomic_path(run_file) as tmp:
                tmp.write_text(json.dumps({"run_id": tracker.run_id, "experiment_id": ml["experiment_id"]}))
            tracker.log_params({"variant": ml.get("tags", {}).get("variant", ""),
                                "datasets": ",".join(params.get("datasets") or []) or "all",
                                "shard_root": params["shard_root"],
                                "init_checkpoint": cfg.init_checkpoint or "",
                                **{f"n_shards_{s}": len(source.files[s]) for s in SPLITS}})
    try:
        result = train(cfg, source, out, fingerprints=_fingerprints(params.get("fingerprints")),
                       split_hash=params.get("split_hash", ""), tracker=tracker,
                       stop_after=params.get("stop_after"))
    except BaseException as exc:  # a cancelled job (SIGTERM) shows as KILLED and resumes later
        if tracker is not None:
            tracker.finish("FAILED" if isinstance(exc, Exception) else "KILLED")
        raise
    datasets = params.get("select_datasets") or result.vocab.datasets
    selection = select_per_dataset(result.history, datasets)
    with atomic_path(out / "selection.json") as tmp:
        tmp.write_text(json.dumps(selection, indent=1))
    with atomic_path(out / "vocab.json") as tmp:
        tmp.write_text(json.dumps(result.vocab.to_dict()))
    done = result.epochs_done >= cfg.epochs
    if tracker is not None and done:
        epochs = sorted({v["epoch"] for v in selection.values()})
        tracker.set_tags({"chosen_epochs": json.dumps({d: v["epoch"] for d, v in selection.items()}),
                          "split_hash": params.get("split_hash", "")})
        tracker.log_metrics({f"chosen_test_rmse/{d}": v["test_rmse"] for d, v in selection.items()
                             if v["test_rmse"] == v["test_rmse"]}, step=cfg.epochs)
        for name in ("vocab.json", "history.json", "selection.json"):
            tracker.log_artifact(out / name)
        for e in epochs:  # the weights the selection uses (every epoch stays on disk)
            tracker.log_artifact(result.epoch_path(e), "weights")
        tracker.finish("FINISHED")
    return {"out_dir": str(out), "epochs_done": result.epochs_done, "resumed_from": result.resumed_from,
            "finished": done, "selection": selection,
            "mlflow_run_id": tracker.run_id if tracker else None,
            "experiment_id": ml["experiment_id"] if ml else None,
            "samples_per_s": round(result.samples_per_s, 1), "values_per_s": round(result.values_per_s, 1),
            "seconds": result.seconds}


def train_runs(params: dict) -> dict:
    """Train several runs one after the other (``params["runs"]``: a list of :func:`train_one` params).

    Returns ``{"runs": [train_one results], "metadata": {...}}``.
    """
    results = []
    for p in params["runs"]:
        log.info("LPM run %s", p["out_dir"])
        results.append(train_one(p))
    return {"runs": results, "outputs": [r["out_dir"] for r in results],
            "metadata": {"runs": len(results), "epochs": sum(r["epochs_done"] for r in results)}}


__all__ = ["train_one", "train_runs", "run_identity", "RunResult"]
