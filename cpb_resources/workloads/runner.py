"""Compute-side entry point: run one workload and talk back through dagster-pipes.

Executed as ``python -m cpb_resources.workloads.runner`` in local mode and as
``python runner.py`` (this file, uploaded by dagster-slurm into the job's run
folder) inside a SLURM job; in both cases the Python environment must have the
project installed so ``cpb_resources`` and the workload modules import.

Input (pipes extras)::

    {"workload": "package.module:function", "params": {...}}

Output: one pipes custom message ``{"cpb_result": <dict returned by the
workload, plus "compute">}``.

A **pack** (several small units in one SLURM job, see ``ComputeResource.run_many``)
comes as::

    {"pack": "pack-003", "units": [{"key": ..., "workload": ..., "params": {...},
                                    "result_file": ..., "error_file": ...}, ...]}

The units run one after another in this one process (one interpreter start,
imports paid once). Each unit's result goes to its ``result_file`` (JSON,
written atomically on the shared filesystem, so that results of finished units
survive a pack killed later) and as a pipes custom message
``{"cpb_result": ..., "cpb_unit": key}``; a unit that raises writes its
traceback to its ``error_file`` and the pack goes on with the next unit. The
exit status is 1 when any unit failed, 143 on SIGTERM (the unit running then is
interrupted like a single workload, the units after it do not run). On failure the formatted traceback is logged,
written to ``$CPB_WORKLOAD_ERROR_FILE`` when that is set (a path on the shared
filesystem the caller reads back), and re-raised inside the message of a
``WorkloadError`` so that any pipes client shows it; the exit status is 1.
SIGTERM (``scancel``, time limit, Dagster run termination) becomes a
``WorkloadCancelled`` exception so ``with atomic_output(...)`` blocks remove
their temporary files before the process exits.
"""
from __future__ import annotations

import gc
import json
import logging
import os
import signal
import socket
import sys
import time
import traceback

from dagster_pipes import PipesDefaultMessageWriter, open_dagster_pipes

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
        self.prefix = ""  # "unit KEY: " while a unit of a pack runs

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._pipes_log.log(record.levelno, f"{self.prefix}{record.name}: {self.format(record)}")
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


def _write_error_file(text: str, path: str | None = None) -> None:
    path = path or os.environ.get(ERROR_FILE_ENV)
    if not path:
        return
    try:
        with atomic_output(path) as tmp:
            tmp.write_text(text)
    except Exception:
        pass


def _call(ref: str | None, params: dict, t0: float) -> dict:
    """Import and call one workload; its JSON-checked result with the ``compute`` entry."""
    if not ref:
        raise ValueError("pipes extras carry no 'workload' reference")
    fn = resolve(ref)
    result = fn(params)
    if not isinstance(result, dict):
        raise TypeError(f"workload {ref} returned {type(result).__name__}, expected dict")
    result = json.loads(json.dumps(result))  # fails loudly on non-JSON values
    result["compute"] = _compute_info(t0)
    return result


def _failure_text(ref: str | None, exc: BaseException) -> str:
    tb = traceback.format_exc()
    where = socket.gethostname()
    if "SLURM_JOB_ID" in os.environ:
        where += f", SLURM job {os.environ['SLURM_JOB_ID']}"
    return f"workload {ref} failed on {where}: {type(exc).__name__}: {exc}\n\nRemote traceback:\n{tb}"


def _run_pack(pipes, handler: _PipesLogHandler, extras: dict) -> None:
    """Run the units of a pack one after another; raise WorkloadError when any of them failed."""
    name = extras.get("pack") or "pack"
    units = list(extras.get("units") or [])
    pipes.log.info(f"{name}: {len(units)} unit(s) in one process on {socket.gethostname()}")
    failed = []
    for unit in units:
        key, ref = unit.get("key"), unit.get("workload")
        handler.prefix = f"unit {key}: "
        t0 = time.monotonic()
        try:
            pipes.log.info(f"unit {key}: workload {ref} starting")
            result = _call(ref, unit.get("params") or {}, t0)
            with atomic_output(unit["result_file"]) as tmp:
                tmp.write_text(json.dumps({"key": key, "result": result}))
            pipes.report_custom_message({RESULT_KEY: result, "cpb_unit": key})
            pipes.log.info(f"unit {key}: workload {ref} finished in {result['compute']['wall_s']}s")
        except BaseException as exc:  # noqa: BLE001 - a cancellation is re-raised below
            text = _failure_text(ref, exc)
            _write_error_file(text, unit.get("error_file"))
            print(f"unit {key}: {text}", file=sys.stderr, flush=True)
            try:
                pipes.log.error(f"unit {key}: {text}")
            except Exception:
                pass
            if isinstance(exc, (WorkloadCancelled, KeyboardInterrupt)):
                raise
            failed.append(key)
        finally:
            handler.prefix = ""
            gc.collect()  # what one unit held is garbage before the next one starts
    if failed:
        raise WorkloadError(f"{name}: {len(failed)} of {len(units)} unit(s) failed: {', '.join(map(str, failed))}")


class _MessagesWithoutStdio(PipesDefaultMessageWriter):
    """The default message writer, minus the copy of stdout/stderr into the messages.

    dagster-slurm asks for that copy, but it already tails the job's output files into the
    Dagster log, and stopping the copy costs the job about 5 s at exit (each of the two stream
    threads sleeps a second, twice): seconds paid by every job of every step.
    """

    def open(self, params):
        return super().open({k: v for k, v in params.items() if k != self.INCLUDE_STDIO_IN_MESSAGES_KEY})


def run_in_pipes() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    t0 = time.monotonic()
    with open_dagster_pipes(message_writer=_MessagesWithoutStdio()) as pipes:
        extras = dict(pipes.extras or {})
        ref = extras.get("workload")
        params = extras.get("params") or {}
        handler = _PipesLogHandler(pipes.log)
        handler.setFormatter(logging.Formatter("%(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
        if "units" in extras:
            try:
                _run_pack(pipes, handler, extras)
            except WorkloadError as exc:
                print(str(exc), file=sys.stderr, flush=True)
                raise
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                # outside any unit (bad extras) or a cancellation: the pack's own error file
                text = _failure_text(extras.get("pack"), exc)
                if not isinstance(exc, (WorkloadCancelled, KeyboardInterrupt)):
                    _write_error_file(text)
                    print(text, file=sys.stderr, flush=True)
                    raise WorkloadError(text) from None
                raise
            finally:
                root.removeHandler(handler)
            return
        try:
            if ref:
                pipes.log.info(f"workload {ref} starting on {socket.gethostname()}")
            result = _call(ref, params, t0)
            pipes.report_custom_message({RESULT_KEY: result})
            pipes.log.info(f"workload {ref} finished in {result['compute']['wall_s']}s")
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            text = _failure_text(ref, exc)
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
