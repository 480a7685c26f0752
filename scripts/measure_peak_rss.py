"""Harmonize one source folder and print the process's peak RSS (JSON).

Usage: ``python scripts/measure_peak_rss.py <source> <folder> <dataset>`` with
``<source>`` a module under ``cpb_assets.sources`` (``tahoe``, ``l1000``, …).
Prints ``{"peak_kib": …, "n_obs": …}``; ``peak_kib`` is this process's own
peak RSS (``own_peak_rss_mb``: ``VmHWM``, not ``ru_maxrss``, which a child
started by ``subprocess`` inherits from its parent — from pytest, say — so it
would never read below the parent's peak). Used by the flat-memory test and
``benchmarks/bench_reader_memory.py``, which run it in a fresh subprocess per
input so the peaks do not mix.
"""
from __future__ import annotations

import importlib
import json
import sys
import tempfile

import pandas as pd

from cpb_assets.harmonize.assemble import harmonized_scratch
from cpb_resources.workloads import own_peak_rss_mb


def main(argv: list[str]) -> None:
    source, folder, dataset = argv[1], argv[2], argv[3]
    mod = importlib.import_module(f"cpb_assets.sources.{source}")
    recs = mod.compound_records(folder, dataset)
    registry = pd.DataFrame({"source_id": recs["source_id"], "pubchem_cid": None, "cid_method": "unresolved"})
    # a reader that writes its h5ad itself (L1000) writes it here, removed at the end
    with tempfile.TemporaryDirectory(prefix="cpb-peak-rss-") as tmp, harmonized_scratch(tmp):
        h = mod.harmonize(folder, dataset, registry)
        print(json.dumps({"peak_kib": round(own_peak_rss_mb() * 1024), "n_obs": int(h.n_obs)}))


if __name__ == "__main__":
    main(sys.argv)
