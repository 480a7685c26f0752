"""MLflow tracking: every LPM training run is an MLflow run (params, per-epoch metrics, artifacts).

Default store: ``sqlite:///$CPB_HOME/mlflow/mlflow.db`` (backend) with file
artifacts under ``$CPB_HOME/mlflow/artifacts/<experiment>``. Experiments are
created with an explicit ``artifact_location``, because without a server
MLflow would otherwise put artifacts into ``./mlruns`` of whatever the working
directory is (PLATFORM-NOTES, "MLflow"). Any other tracking URI (an
``http://`` server that a SLURM job can reach, say) comes from the resource's
configuration or ``CPB_MLFLOW_URI``.

The Dagster step owns the experiment (:meth:`MlflowResource.experiment`,
which also creates the SQLite schema, under a file lock so that steps
starting together on a fresh store do not run the migrations twice); the
training workload, local subprocess or SLURM job, logs through
:class:`MlflowTracker` with the plain dict of :meth:`MlflowResource.worker_spec`.
``make mlflow-ui`` serves the same store on 127.0.0.1.
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Mapping, Optional

import dagster as dg

from cpb_resources.storage import default_home

DEFAULT_UI = "http://127.0.0.1:5000"


def default_tracking_uri(home: Path | None = None) -> str:
    return f"sqlite:///{(home or default_home()) / 'mlflow' / 'mlflow.db'}"


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


@contextlib.contextmanager
def _sqlite_store_lock(uri: str):
    """Exclusive ``fcntl`` lock on ``<database>.lock`` for a ``sqlite:///`` URI (nothing for other stores)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    lock = Path(uri[len("sqlite:///"):]).with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _retry(fn, *args, attempts: int = 20, **kwargs):
    """SQLite allows one writer: concurrent training runs retry a locked database (0.25-2 s back-off)."""
    for i in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # mlflow wraps sqlalchemy's OperationalError in MlflowException
            if "locked" not in str(exc).lower() or i == attempts - 1:
                raise
            time.sleep(min(2.0, 0.25 * (i + 1)))


class MlflowTracker:
    """Log one MLflow run from any process (no global MLflow state; the client talks to the store directly).

    Parameters
    ----------
    tracking_uri, experiment_id
        From :meth:`MlflowResource.worker_spec`.
    run_id
        Continue this run (a resumed training job) instead of creating one.
    run_name, tags
        For a new run.
    """

    def __init__(self, tracking_uri: str, experiment_id: str, run_id: Optional[str] = None,
                 run_name: Optional[str] = None, tags: Optional[Mapping[str, str]] = None) -> None:
        self.client = _client(tracking_uri)
        self.tracking_uri, self.experiment_id = tracking_uri, experiment_id
        if run_id:
            self.run_id = run_id
            _retry(self.client.update_run, run_id, status="RUNNING")
        else:
            run = _retry(self.client.create_run, experiment_id, run_name=run_name,
                         tags={k: str(v) for k, v in (tags or {}).items()})
            self.run_id = run.info.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, "None" if v is None else str(v)[:6000]) for k, v in sorted(params.items())]
        for a in range(0, len(items), 100):
            _retry(self.client.log_batch, self.run_id, params=items[a:a + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(_metric_key(k), float(v), ts, int(step)) for k, v in sorted(metrics.items())]
        for a in range(0, len(items), 900):
            _retry(self.client.log_batch, self.run_id, metrics=items[a:a + 900])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            _retry(self.client.set_tag, self.run_id, k, str(v))

    def log_artifact(self, path: str | Path, artifact_path: Optional[str] = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        _retry(self.client.set_terminated, self.run_id, status)


def _metric_key(key: str) -> str:
    """MLflow keys allow [\\w./ -]; dataset and context names may hold other characters."""
    return "".join(ch if (ch.isalnum() or ch in "_-./ ") else "_" for ch in key)


class MlflowResource(dg.ConfigurableResource):
    """Where training runs are tracked.

    Attributes
    ----------
    tracking_uri
        Empty: ``sqlite:///$CPB_HOME/mlflow/mlflow.db`` (resolved when used).
    artifact_root
        Empty: ``$CPB_HOME/mlflow/artifacts``; experiments get
        ``<artifact_root>/<experiment name>`` as their artifact location
        (ignored for ``http(s)://`` servers, which own their artifacts).
    ui_url
        Base of the links put into Dagster metadata (``make mlflow-ui``).
    """

    tracking_uri: str = ""
    artifact_root: str = ""
    ui_url: str = DEFAULT_UI

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "MlflowResource":
        """``CPB_MLFLOW_URI``, ``CPB_MLFLOW_ARTIFACTS``, ``CPB_MLFLOW_UI`` (all optional)."""
        e = os.environ if environ is None else environ
        return cls(tracking_uri=(e.get("CPB_MLFLOW_URI") or "").strip(),
                   artifact_root=(e.get("CPB_MLFLOW_ARTIFACTS") or "").strip(),
                   ui_url=(e.get("CPB_MLFLOW_UI") or DEFAULT_UI).strip())

    @property
    def uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        (default_home() / "mlflow").mkdir(parents=True, exist_ok=True)
        return default_tracking_uri()

    def artifact_location(self, experiment: str) -> Optional[str]:
        if self.uri.startswith(("http://", "https://")) and not self.artifact_root:
            return None
        root = Path(self.artifact_root).resolve() if self.artifact_root else default_home() / "mlflow" / "artifacts"
        return (root / experiment).as_uri()

    def experiment(self, name: str) -> str:
        """The id of experiment `name`, created (with its artifact location) when missing.

        On a SQLite store the first use also creates the schema (MLflow's migrations). Two steps doing
        that at once (two partitions of a backfill on a fresh home) fail with "table … already exists",
        so the whole get-or-create holds an exclusive lock on ``<database>.lock``.
        """
        with _sqlite_store_lock(self.uri):
            client = _client(self.uri)
            exp = _retry(client.get_experiment_by_name, name)
            if exp is not None:
                return exp.experiment_id
            try:
                return _retry(client.create_experiment, name, artifact_location=self.artifact_location(name))
            except Exception:  # a server store: another process created it meanwhile
                exp = _retry(client.get_experiment_by_name, name)
                if exp is None:
                    raise
                return exp.experiment_id

    def worker_spec(self, experiment: str) -> dict:
        """JSON-able settings a training workload needs to log into `experiment`."""
        return {"tracking_uri": self.uri, "experiment_id": self.experiment(experiment), "experiment": experiment}

    def run_link(self, experiment_id: str, run_id: str) -> str:
        return f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def run_metadata(self, experiment_id: str, run_id: str) -> dict:
        """Dagster materialization metadata: the run id and a link into the MLflow UI."""
        return {"mlflow_run_id": dg.MetadataValue.text(run_id),
                "mlflow_experiment_id": dg.MetadataValue.text(str(experiment_id)),
                "mlflow_run": dg.MetadataValue.url(self.run_link(experiment_id, run_id)),
                "mlflow_tracking_uri": dg.MetadataValue.text(self.uri)}

    def get_run(self, run_id: str):
        return _client(self.uri).get_run(run_id)


__all__ = ["MlflowResource", "MlflowTracker", "default_tracking_uri"]
