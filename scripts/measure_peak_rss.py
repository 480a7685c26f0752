"""Harmonize one source folder and print the process's peak RSS (JSON).

Usage: ``python scripts/measure_peak_rss.py <source> <folder> <dataset>`` with
``<source>`` a module under ``cpb_assets.sources`` (``tahoe``, ``l1000``, …).
Prints ``{"maxrss_kib": …, "hwm_kib": …, "n_obs": …}``; ``maxrss_kib`` is
``ru_maxrss`` of this process (KiB on Linux), ``hwm_kib`` its ``VmHWM`` (None
off Linux). Only ``hwm_kib`` is this process's own peak: ``ru_maxrss`` of a
child started by ``subprocess`` also counts the parent's high-water mark (the
kernel carries it over at ``exec``), so it is never below the parent's peak.
Used by the flat-memory test and ``benchmarks/bench_reader_memory.py``, which
run it in a fresh subprocess per input so the peaks do not mix.
"""
from __future__ import annotations

import importlib
import json
import resource
import sys

import pandas as pd

from cpb_resources.workloads import own_peak_rss_mb


def main(argv: list[str]) -> None:
    source, folder, dataset = argv[1], argv[2], argv[3]
    mod = importlib.import_module(f"cpb_assets.sources.{source}")
    recs = mod.compound_records(folder, dataset)
    registry = pd.DataFrame({"source_id": recs["source_id"], "pubchem_cid": None, "cid_method": "unresolved"})
    h = mod.harmonize(folder, dataset, registry)
    print(json.dumps({"maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "hwm_kib": round(own_peak_rss_mb() * 1024), "n_obs": int(h.adata.n_obs)}))


if __name__ == "__main__":
    main(sys.argv)
