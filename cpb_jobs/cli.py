"""The ``cpb`` command.

``cpb ingest DATASET FOLDER``
    Materialize one dataset partition from a folder of real files (the
    source's downloads) through Dagster — ``raw_source`` → ``cellosaurus``
    (when a Cellosaurus file is given or already landed) →
    ``compound_registry`` → ``harmonized_adata`` with its checks — recorded in
    the instance of ``$DAGSTER_HOME`` (default ``$CPB_HOME/dagster``), so the
    runs and their lineage show in the UI. Prints progress and a summary:
    samples kept, quarantined by reason, compounds resolved by method.
``cpb status`` / ``cpb sql QUERY`` / ``cpb release TAG`` / ``cpb audit TAG [--lineage A/P]`` / ``cpb verify [--rebuild]``
    See :mod:`cpb_jobs.commands` and docs/releases.md.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path


def _steps(dataset: str, cellosaurus_file: str | None) -> list[tuple[str, str | None]]:
    steps: list[tuple[str, str | None]] = [("raw_source", dataset)]
    if cellosaurus_file:
        steps.append(("cellosaurus", None))
    return steps + [("compound_registry", None), ("harmonized_adata", dataset)]


def _bar(done: int, total: int, width: int = 20) -> str:
    full = int(width * done / total)
    return "[" + "#" * full + "-" * (width - full) + f"] {done}/{total}"


def ingest(dataset: str, folder: str | Path, *, home: str | None = None, cellosaurus_file: str | None = None,
           out=None) -> int:
    """Materialize `dataset` from the real files in `folder` through Dagster; 0 on success.

    Missing files: nothing runs, the message says what to download and where
    to put it (exit status 2).
    """
    warnings.filterwarnings("ignore")
    from cpb_jobs.demo import prepare_environment

    cpb_home = prepare_environment(home)
    from cpb_assets.datasets import DATASETS
    from cpb_assets.sources.landing import missing_files_message
    from cpb_assets.sources.registry import SOURCES

    def say(text: str = "") -> None:
        print(text, file=out or sys.stdout, flush=True)

    if dataset not in DATASETS:
        say(f"cpb ingest: unknown dataset {dataset!r}; one of: {', '.join(DATASETS)}")
        return 2
    spec = SOURCES[dataset]
    folder = Path(folder).resolve()
    missing = spec.missing_files(folder) if folder.is_dir() else list(spec.files) or ["<folder>"]
    if missing:
        say(missing_files_message(spec, folder, missing))
        return 2
    import dagster as dg

    from cpb_jobs.definitions import ALL_ASSETS, ALL_CHECKS
    from cpb_jobs.resources import build_resources
    from cpb_resources.compound_registry import CompoundRegistryResource
    from cpb_resources.sources import SourceCatalogResource

    if cellosaurus_file is None:  # a Cellosaurus file landed earlier is used again
        landed = cpb_home / "landing" / "cellosaurus" / "cellosaurus.txt"
        cellosaurus_file = str(landed) if landed.exists() else None
    resources = {**build_resources(),
                 "source_catalog": SourceCatalogResource(profile="real", folder=str(folder)),
                 "compound_resolver": CompoundRegistryResource(demo_synonyms=False)}
    steps = _steps(dataset, cellosaurus_file)
    say(f"cpb ingest {dataset} from {folder} -> {cpb_home} (runs recorded in {cpb_home / 'dagster'})")
    by_key = {a.key.to_user_string(): a for a in ALL_ASSETS}
    t_all = time.perf_counter()
    for k, (step, partition) in enumerate(steps):
        label = f"{step}[{partition}]" if partition else step
        say(f"{_bar(k, len(steps))} {label} …")
        asset = by_key[step]
        selection = dg.AssetSelection.assets(asset) | dg.AssetSelection.checks_for_assets(asset)
        run_config = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        if step == "cellosaurus":
            run_config["ops"] = {"cellosaurus": {"config": {"path": str(Path(cellosaurus_file).resolve())}}}
        t0 = time.perf_counter()
        with dg.DagsterInstance.get() as instance:
            result = dg.materialize([*ALL_ASSETS, *ALL_CHECKS], selection=selection, instance=instance,
                                    partition_key=partition, resources=resources, raise_on_error=False,
                                    tags={"cpb/launched_by": "cpb ingest", "cpb/folder": str(folder)},
                                    run_config=run_config)
        if not result.success:
            say(f"{_bar(k, len(steps))} {label} FAILED after {time.perf_counter() - t0:.1f} s")
            for ev in result.all_events:
                if ev.is_step_failure:
                    err = ev.step_failure_data.error
                    cause = err.cause.message if err.cause else err.message
                    say("  " + cause.strip().replace("\n", "\n  ")[:1500])
            return 1
        say(f"{_bar(k + 1, len(steps))} {label} ok ({time.perf_counter() - t0:.1f} s)")
    say(f"done in {time.perf_counter() - t_all:.1f} s")
    for line in summary_lines(cpb_home, dataset):
        say(line)
    return 0


def summary_lines(home: Path, dataset: str) -> list[str]:
    """Samples kept, quarantined by reason, compounds resolved by method, for one partition."""
    import anndata as ad
    import pandas as pd

    a = ad.read_h5ad(home / "harmonized" / f"{dataset}.h5ad", backed="r")
    try:
        n_obs, n_vars = a.n_obs, a.n_vars
        n_ctrl = int(a.obs["is_control"].sum())
    finally:
        a.file.close()
    lines = [f"summary of {dataset}:",
             f"  samples kept        {n_obs:,} ({n_ctrl:,} controls) × {n_vars:,} genes"]
    qpath = home / "tables" / "quarantine" / f"dataset={dataset}" / "part.parquet"
    q = pd.read_parquet(qpath) if qpath.exists() else pd.DataFrame(columns=["reason", "n", "level"])
    lines.append(f"  quarantined         {int(q['n'].sum()) if len(q) else 0:,}")
    for (level, reason), n in (q.groupby(["level", "reason"])["n"].sum().sort_values(ascending=False).items()
                               if len(q) else []):
        lines.append(f"    {int(n):>8,}  {level:<8} {reason}")
    comp = pd.read_parquet(home / "tables" / "compounds" / "part.parquet")
    comp = comp[comp["dataset"] == dataset]
    lines.append(f"  compounds           {len(comp):,}")
    for method, n in comp["cid_method"].value_counts().items():
        lines.append(f"    {int(n):>8,}  {method}")
    if "source_cid_check" in comp.columns and (comp["source_cid_check"] == "mismatch").any():
        lines.append(f"    {int((comp['source_cid_check'] == 'mismatch').sum()):>8,}  shipped CID contradicts "
                     "the structure (structure kept)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cpb", description="Chem-PerturBridge command line.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ingest", help="materialize one dataset from a folder of real files through Dagster")
    p.add_argument("dataset", help="dataset partition, e.g. l1000_phase1")
    p.add_argument("folder", help="folder holding the source's files as downloaded")
    p.add_argument("--home", help="CPB_HOME (default $CPB_HOME or ./.cpb)")
    p.add_argument("--cellosaurus", metavar="FILE",
                   help="a cellosaurus.txt to resolve cell lines against (default: one landed earlier under "
                        "$CPB_HOME/landing/cellosaurus, else the built-in table)")
    p = sub.add_parser("status", help="per asset and partition: materialized, stale (with the reason) or missing")
    p.add_argument("--asset", help="only this asset")
    p.add_argument("--all", action="store_true", help="list fresh partitions too")
    p.add_argument("--home", help="CPB_HOME (default $CPB_HOME or ./.cpb)")
    p = sub.add_parser("sql", help="a read-only SQL query on the DuckDB catalog")
    p.add_argument("query", help='e.g. "select dataset, count(*) from de group by 1"')
    p.add_argument("--csv", metavar="FILE", help="write all rows as CSV")
    p.add_argument("--parquet", metavar="FILE", help="write all rows as Parquet")
    p.add_argument("--home", help="CPB_HOME (default $CPB_HOME or ./.cpb)")
    p = sub.add_parser("release", help="write release TAG under $CPB_HOME/releases/ (never overwrites)")
    p.add_argument("tag")
    p.add_argument("--home", help="CPB_HOME (default $CPB_HOME or ./.cpb)")
    p = sub.add_parser("audit", help="re-hash release TAG; exit 1 on any missing or modified file")
    p.add_argument("tag")
    p.add_argument("--lineage", metavar="ASSET/PARTITION",
                   help='print the lineage of one released partition, e.g. "de_table/l1000_phase1|group"')
    p.add_argument("--home", help="CPB_HOME (default $CPB_HOME or ./.cpb)")
    p = sub.add_parser("verify", help="check every published h5ad/DE product against its sha256 manifest; "
                                      "exit 1 on damage")
    p.add_argument("--rebuild", action="store_true",
                   help="withdraw damaged products (to $CPB_HOME/corrupt/) and materialize them again")
    p.add_argument("--home", help="CPB_HOME (default $CPB_HOME or ./.cpb)")
    args = parser.parse_args(argv)
    if args.command == "ingest":
        return ingest(args.dataset, args.folder, home=args.home, cellosaurus_file=args.cellosaurus)
    from cpb_jobs import commands

    if args.command == "status":
        return commands.status(home=args.home, asset=args.asset, show_all=args.all)
    if args.command == "sql":
        return commands.sql(args.query, home=args.home, csv=args.csv, parquet=args.parquet)
    if args.command == "release":
        return commands.release(args.tag, home=args.home)
    if args.command == "verify":
        return commands.verify(home=args.home, rebuild=args.rebuild)
    if args.command == "audit":
        return commands.audit(args.tag, home=args.home, lineage_key=args.lineage)
    return 2


if __name__ == "__main__":
    sys.exit(main())
