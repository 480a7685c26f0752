"""`make demo`: generate the SYNTHETIC demo sources and materialize every asset.

Runs are recorded in the Dagster instance under $DAGSTER_HOME (default
$CPB_HOME/dagster), so `make ui` shows the materialized partitions.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def prepare_environment(home: str | None = None) -> Path:
    """Set CPB_HOME / DAGSTER_HOME and put dagster.yaml where Dagster reads it."""
    cpb_home = Path(home or os.environ.get("CPB_HOME") or REPO / ".cpb").resolve()
    os.environ["CPB_HOME"] = str(cpb_home)
    dagster_home = Path(os.environ.setdefault("DAGSTER_HOME", str(cpb_home / "dagster")))
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists():
        shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    return cpb_home


def _materialize(selection, label: str, instance, partition_key: str | None = None) -> tuple[bool, float]:
    import dagster as dg

    from cpb_jobs.definitions import ALL_ASSETS, ALL_CHECKS, defs

    t0 = time.perf_counter()
    result = dg.materialize([*ALL_ASSETS, *ALL_CHECKS], selection=selection, instance=instance,
                            partition_key=partition_key, resources=defs.resources, raise_on_error=False,
                            tags={"cpb/launched_by": "make demo"})
    dt = time.perf_counter() - t0
    ok = result.success
    status = "ok " if ok else "FAILED"
    print(f"  [{status}] {label:<40} {dt:6.1f} s", flush=True)
    if not ok:
        for ev in result.all_events:
            if ev.is_step_failure:
                print(f"         {ev.step_key}: {ev.step_failure_data.error.message.strip()[:400]}")
    return ok, dt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", help="CPB_HOME (default ./.cpb)")
    parser.add_argument("--datasets", nargs="*", help="only these dataset partitions")
    parser.add_argument("--compute", choices=["local", "slurm"], default=None,
                        help="where heavy assets run (default: CPB_COMPUTE or local)")
    args = parser.parse_args(argv)
    home = prepare_environment(args.home)
    if args.compute:
        os.environ["CPB_COMPUTE"] = args.compute
    warnings.filterwarnings("ignore")
    import dagster as dg

    from cpb_assets.datasets import DATASETS
    from cpb_assets.effects.assets import MODES, de_table
    from cpb_assets.harmonize.assets import compound_registry, harmonized_adata
    from cpb_assets.sources.assets import raw_source

    datasets = args.datasets or DATASETS
    instance = dg.DagsterInstance.get()
    print(f"Chem-PerturBridge demo: SYNTHETIC demo world -> {home}")
    t_all = time.perf_counter()
    failed: list[str] = []
    print("1/4 native source files (generated from the demo world)")
    for ds in datasets:
        ok, _ = _materialize([raw_source], f"raw_source[{ds}]", instance, ds)
        failed += [] if ok else [f"raw_source[{ds}]"]
    print("2/4 compound registry")
    ok, _ = _materialize([compound_registry], "compound_registry", instance)
    failed += [] if ok else ["compound_registry"]
    print("3/4 harmonized AnnData (+ blocking checks)")
    checks = dg.AssetSelection.checks_for_assets(harmonized_adata)
    for ds in datasets:
        ok, _ = _materialize(dg.AssetSelection.assets(harmonized_adata) | checks, f"harmonized_adata[{ds}]",
                             instance, ds)
        failed += [] if ok else [f"harmonized_adata[{ds}]"]
    print("4/4 DE tables (limma through rpy2; + blocking checks)")
    de_sel = dg.AssetSelection.assets(de_table) | dg.AssetSelection.checks_for_assets(de_table)
    for ds in datasets:
        if f"harmonized_adata[{ds}]" in failed:
            continue
        for mode in MODES:
            key = dg.MultiPartitionKey({"dataset": ds, "mode": mode})
            ok, _ = _materialize(de_sel, f"de_table[{ds}|{mode}]", instance, key)
            failed += [] if ok else [f"de_table[{ds}|{mode}]"]
    total = time.perf_counter() - t_all
    print(f"\nDone in {total:.0f} s." + (f" FAILED: {', '.join(failed)}" if failed else " Everything materialized."))
    print(f"""
Where things are:
  harmonized AnnData   {home}/harmonized/<dataset>.h5ad
  DE tables            {home}/tables/de/dataset=<dataset>/mode=<group|sep>/*.parquet
  native source files  {home}/sources/<dataset>/   (SYNTHETIC; planted truth in sources/_truth/)
  SQL catalog          {home}/catalog.duckdb
Query it:
  .venv/bin/python -c "import duckdb; print(duckdb.connect('{home}/catalog.duckdb', read_only=True).sql(
      'select dataset, mode, count(distinct contrast_id) contrasts from de group by all order by 1, 2'))"
Browse the asset graph:
  make ui   (then open http://127.0.0.1:3000)""")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
