"""Speed benchmarks of Chem-PerturBridge (``make bench`` → ``python -m benchmarks.run``).

Project rule: speed targets live here and in ``docs/benchmarks.md``, never in
timed tests. Every benchmark times the project's implementation and a plain
baseline side by side, in the same process and run, interleaved (project,
baseline, project, …) so that load on a shared machine hits both alike, and
reports the median of several repetitions and the RATIO of the medians:
absolute seconds vary between machines, ratios much less.

Inputs are seeded and SYNTHETIC (labelled so in every result row), except
where a row says it uses the real LINCS L1000 plate of ``data/real/``.

Each ``bench_*`` module has ``run(quick: bool, reps: int) -> list[dict]``;
every dict is one row of the results table (see :func:`row`).
"""
from __future__ import annotations

import gc
import os
import platform
import statistics
import sys
import time
from typing import Callable

REPS = 3  # repetitions per timing; the median is reported (project rule: >= 3)


def median_times(fns: dict[str, Callable[[], object]], reps: int = REPS) -> tuple[dict[str, float], dict[str, list[float]], dict[str, object]]:
    """Time each callable `reps` times, interleaved, and return medians, all times and the last results.

    Interleaving (a, b, a, b, …) spreads the load of a shared machine over
    every contender instead of charging it to whichever ran during a spike.
    """
    times: dict[str, list[float]] = {k: [] for k in fns}
    last: dict[str, object] = {}
    for _ in range(max(reps, 1)):
        for name, fn in fns.items():
            last[name] = None  # let the previous result be freed before the next run
            gc.collect()
            t0 = time.perf_counter()
            last[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, times, last


def row(benchmark: str, case: str, size: str, *, project: str, project_s: float, baseline: str = "",
        baseline_s: float | None = None, check: str = "", data: str = "synthetic", reps: int = REPS,
        times: dict[str, list[float]] | None = None, **extra) -> dict:
    """One result row.

    ``ratio`` is baseline seconds ÷ project seconds (> 1: the project's code
    is faster; < 1: it is slower, e.g. a wrapper's overhead). Rows without a
    baseline (throughput rows) have ``ratio`` None.
    """
    return {"benchmark": benchmark, "case": case, "size": size, "data": data,
            "project": project, "project_s": project_s, "baseline": baseline, "baseline_s": baseline_s,
            "ratio": (baseline_s / project_s) if (baseline_s is not None and project_s > 0) else None,
            "check": check, "reps": reps, "times": times or {}, **extra}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    """Describe the machine the numbers were measured on."""
    import numpy
    import pandas
    import scipy

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    try:
        import h5py
        h5 = h5py.__version__
    except ImportError:
        h5 = "absent"
    mem = ""
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            kb = int(next(l for l in fh if l.startswith("MemTotal")).split()[1])
        mem = f"{kb / 1024 ** 2:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return {"nproc": usable, "cpu_model": _cpu_model(), "memory": mem,
            "python": sys.version.split()[0], "numpy": numpy.__version__, "scipy": scipy.__version__,
            "pandas": pandas.__version__, "h5py": h5, "platform": platform.platform(),
            "loadavg_at_start": [round(x, 2) for x in load]}
