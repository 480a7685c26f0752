"""Compute-side entry point: run one workload and talk back through dagster-pipes.

Executed as ``python -m cpb_resources.workloads.runner`` in local mode and as
``python runner.py`` (this file, uploaded by dagster-slurm into the job's run
folder) inside a SLURM job; in both cases the Python environment must have the
project installed so ``cpb_resources`` and the workload modules import.

Input (pipes extras)::

    {"workload": "package.module:function", "params": {...}}

Output: one pipes custom message ``{"cpb_result": <dict returned by the
workload, plus "compute">}``. On failure the formatted traceback is logged,
written to ``$CPB_WORKLOAD_ERROR_FILE`` when that is set (a path on the shared
filesystem the caller reads back), and re-raised inside the message of a
``WorkloadError`` so that any pipes client shows it; the exit status is 1.
SIGTERM (``scancel``, time limit, Dagster run termination) becomes a
``WorkloadCancelled`` exception so ``with atomic_output(...)`` blocks remove
their temporary files before the process exits.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import time
import traceback

from dagster_pipes import open_dagster_pipes

from cpb_resources.workloads import atomic_output, resolve

RESULT_KEY = "cpb_result"
ERROR_FILE_ENV = "CPB_WORKLOAD_ERROR_FILE"
MODE_ENV = "CPB_COMPUTE_MODE"


class WorkloadError(RuntimeError):
    """A workload raised; the message carries the remote traceback."""


class WorkloadCancelled(BaseException):
    """The process got SIGTERM (scancel, time limit, run termination)."""


def _on_sigterm(signum, frame):  # noqa: ARG001
    raise WorkloadCancelled(f"received signal {signum} (job cancelled or out of time)")


class _PipesLogHandler(logging.Handler):
    """Forward standard-library log records to the Dagster event log."""

    def __init__(self, pipes_log: logging.Logger):
        super().__init__(level=logging.INFO)
        self._pipes_log = pipes_log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._pipes_log.log(record.levelno, f"{record.name}: {self.format(record)}")
        except Exception:  # never let logging break a workload
            pass


def _compute_info(t0: float) -> dict:
    info = {
        "mode": os.environ.get(MODE_ENV, "slurm" if "SLURM_JOB_ID" in os.environ else "local"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "wall_s": round(time.monotonic() - t0, 3),
    }
    if "SLURM_JOB_ID" in os.environ:
        info["slurm_job_id"] = int(os.environ["SLURM_JOB_ID"])
        info["slurm_cpus"] = int(os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("SLURM_CPUS_ON_NODE") or 0)
        if os.environ.get("SLURM_MEM_PER_NODE"):
            info["slurm_mem_mb"] = int(os.environ["SLURM_MEM_PER_NODE"])
    return info


def _write_error_file(text: str) -> None:
    path = os.environ.get(ERROR_FILE_ENV)
    if not path:
        return
    try:
        with atomic_output(path) as tmp:
            tmp.write_text(text)
    except Exception:
        pass


def run_in_pipes() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    t0 = time.monotonic()
    with open_dagster_pipes() as pipes:
        extras = dict(pipes.extras or {})
        ref = extras.get("workload")
        params = extras.get("params") or {}
        handler = _PipesLogHandler(pipes.log)
        handler.setFormatter(logging.Formatter("%(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
        try:
            if not ref:
                raise ValueError("pipes extras carry no 'workload' reference")
            pipes.log.info(f"workload {ref} starting on {socket.gethostname()}")
            fn = resolve(ref)
            result = fn(params)
            if not isinstance(result, dict):
                raise TypeError(f"workload {ref} returned {type(result).__name__}, expected dict")
            result = json.loads(json.dumps(result))  # fails loudly on non-JSON values
            result["compute"] = _compute_info(t0)
            pipes.report_custom_message({RESULT_KEY: result})
            pipes.log.info(f"workload {ref} finished in {result['compute']['wall_s']}s")
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            tb = traceback.format_exc()
            where = socket.gethostname()
            if "SLURM_JOB_ID" in os.environ:
                where += f", SLURM job {os.environ['SLURM_JOB_ID']}"
            text = f"workload {ref} failed on {where}: {type(exc).__name__}: {exc}\n\nRemote traceback:\n{tb}"
            _write_error_file(text)
            print(text, file=sys.stderr, flush=True)
            try:
                pipes.log.error(text)
            except Exception:
                pass
            if isinstance(exc, (WorkloadCancelled, KeyboardInterrupt)):
                raise
            raise WorkloadError(text) from None
        finally:
            root.removeHandler(handler)


def main() -> int:
    try:
        run_in_pipes()
    except WorkloadCancelled:
        return 143
    except WorkloadError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
