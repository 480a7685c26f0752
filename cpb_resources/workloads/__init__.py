"""Heavy units of work, run through :class:`cpb_resources.compute.ComputeResource`.

The workload contract
=====================
A *workload* is a plain, importable Python function::

    def my_unit(params: dict) -> dict: ...

referred to as ``"package.module:function"``. It must

* take **one JSON-able dict** of parameters (absolute paths on the shared
  filesystem, partition keys, seeds, thresholds ...) and nothing else: no
  Dagster context, no open handles. The same call must work in the Dagster
  process's subprocess (``local`` mode) and inside a SLURM job (``slurm``);
* read its inputs from, and write its outputs to, the **shared filesystem**
  (``$CPB_HOME`` or paths passed in ``params``), each output written
  **atomically**: under a temporary name in the same folder, renamed onto the
  final name only once complete (``cpb_resources.storage.atomic_path`` or
  :func:`atomic_output` below). A killed or cancelled job then leaves either
  the previous output or none, never a half file;
* be **deterministic**: same inputs and params -> byte-identical outputs
  (fixed seeds, sorted rows, no timestamps inside files);
* **return a JSON-able dict**. Conventional keys: ``"outputs"`` (list of the
  paths written) and ``"metadata"`` (flat dict of str -> number/str/bool,
  meant for Dagster materialization metadata). Anything else is passed back
  untouched. The runner adds a ``"compute"`` entry (mode, host, wall time,
  SLURM job id);
* log with the standard :mod:`logging` module (``logging.getLogger(__name__)``);
  the runner forwards records at INFO and above to Dagster through
  dagster-pipes;
* signal failure by **raising**: the step fails and shows the remote
  traceback.

The runner (:mod:`cpb_resources.workloads.runner`) is what actually executes
on the compute side: ``python -m cpb_resources.workloads.runner`` (local) or
``python runner.py`` uploaded by dagster-slurm. It reads
``{"workload": ..., "params": ...}`` from the dagster-pipes extras, imports and
calls the function, and sends the result back as a pipes custom message.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from cpb_resources.storage import atomic_path

Workload = Callable[[dict], dict]


def own_peak_rss_mb() -> float:
    """This process's own peak resident memory (MiB): ``VmHWM`` from ``/proc/self/status``.

    Not ``ru_maxrss``: a process started by ``subprocess`` (a workload's runner, a benchmark's
    child) inherits its parent's high-water mark there (Linux carries it over at ``exec``), so
    ``ru_maxrss`` never reads below the parent's peak. Off Linux, ``ru_maxrss`` is the fallback.
    """
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def resolve(ref: str) -> Workload:
    """Import ``"package.module:function"`` and return the function."""
    if ":" not in ref:
        raise ValueError(f"workload reference must look like 'package.module:function', got {ref!r}")
    module_name, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"workload {ref!r} is not callable")
    return obj


# Workloads write through the one atomic writer of the storage layer.
atomic_output = atomic_path


__all__ = ["Workload", "resolve", "atomic_output"]
