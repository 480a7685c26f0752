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
    env_home = os.environ.get("CPB_HOME")
    cpb_home = Path(home or env_home or REPO / ".cpb").resolve()
    os.environ["CPB_HOME"] = str(cpb_home)
    if home is not None and (env_home is None or Path(env_home).resolve() != cpb_home):
        # an explicit other home brings its own instance: $DAGSTER_HOME of the old home (as `make`
        # exports it) would record this home's runs in, and read its status from, the wrong instance
        os.environ["DAGSTER_HOME"] = str(cpb_home / "dagster")
    dagster_home = Path(os.environ.setdefault("DAGSTER_HOME", str(cpb_home / "dagster")))
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists():
        shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    return cpb_home


# Rough cost of each DE partition in the demo (seconds on 2 cores), so the heaviest start first
# and the two workers finish together; unknown partitions count as average.
DE_COST = {"novartis_drugseq|sep": 110, "dilimap_train_val|sep": 85, "dilimap_train|sep": 55,
           "l1000_phase1|sep": 40, "sciplex|sep": 40, "novartis_drugseq|group": 32, "l1000_phase2|sep": 29}


def _init_instance() -> None:
    """Create the instance's SQLite databases once, before worker processes would race to."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        instance.get_runs(limit=1)
        instance.event_log_storage.get_asset_records()
        if instance.schedule_storage is not None:
            instance.schedule_storage.all_instigator_state()


def _selection(step: str):
    import dagster as dg

    from cpb_assets.agreement.assets import agreement_scores, matched_conditions

    # agreement: one run per dataset pair materializes the pair's assets together
    groups = {"agreement_pair": [matched_conditions, agreement_scores]}
    from cpb_assets.agreement.assets import (bootstrap_summary, bootstrap_summary_replicates, replicate_agreement,
                                             retrieval_scores)

    groups["agreement_pair"] += [retrieval_scores, bootstrap_summary]
    groups["replicate_dataset"] = [replicate_agreement, bootstrap_summary_replicates]
    if step in groups:
        return dg.AssetSelection.assets(*groups[step]) | dg.AssetSelection.checks_for_assets(*groups[step])
    return dg.AssetSelection.assets(step) | dg.AssetSelection.checks_for_assets(step)


def _materialize(step: str, key: str | dict | None) -> tuple[str, bool, float, list[str]]:
    """One run: `step` (an asset name) for one partition, recorded in the instance of $DAGSTER_HOME.

    Runs in a worker process; returns (label, ok, seconds, error lines).
    """
    warnings.filterwarnings("ignore")
    import dagster as dg

    from cpb_jobs.definitions import ALL_ASSETS, ALL_CHECKS, defs

    partition = dg.MultiPartitionKey(key) if isinstance(key, dict) else key
    label = f"{step}[{'|'.join(key.values()) if isinstance(key, dict) else key}]" if key else step
    t0 = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize([*ALL_ASSETS, *ALL_CHECKS], selection=_selection(step), instance=instance,
                                partition_key=partition, resources=defs.resources, raise_on_error=False,
                                tags={"cpb/launched_by": "make demo"},
                                # one line per run is printed here; the full logs stay in the instance (UI)
                                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
    errors = [f"{ev.step_key}: {ev.step_failure_data.error.message.strip()[:400]}"
              for ev in result.all_events if ev.is_step_failure]
    return label, result.success, time.perf_counter() - t0, errors


def _run_all(step: str, keys: list, workers: int) -> list[str]:
    """Materialize `step` for every key on `workers` processes; print each as it ends; return failures."""
    import concurrent.futures as cf
    import multiprocessing as mp

    failed = []

    def report(label, ok, dt, errors):
        print(f"  [{'ok ' if ok else 'FAILED'}] {label:<40} {dt:6.1f} s", flush=True)
        for line in errors:
            print(f"         {line}", flush=True)
        if not ok:
            failed.append(label)

    if workers <= 1 or len(keys) <= 1:
        for key in keys:
            report(*_materialize(step, key))
        return failed
    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        for fut in cf.as_completed([pool.submit(_materialize, step, k) for k in keys]):
            report(*fut.result())
    return failed


# LPM models in the demo (LpmTrainConfig defaults: few epochs, seeds 13 and 17); `paper: true` in the run
# config of lpm_checkpoint / lpm_finetuned / lpm_results gives METHODS' settings (docs/lpm.md)
DEMO_LPM_VARIANTS = ["all", "all_morgan_fixed", "all_morgan_learned", "scalar_all", "scalar_l1000"]
DEMO_LPM_TARGETS = ["l1000_phase2", "novartis_drugseq"]
OP3_DEMO_SEEDS = ["0", "1"]
STAGES = ["de", "lpm_data", "agreement", "all", "release"]


def _run_lpm_models(lpm_ready: list[str], workers: int) -> list[str]:
    """Checkpoints per demo variant × seed, fine-tune / scratch runs on the demo targets, embeddings, results."""
    from cpb_assets.lpm.results import DEMO_SEEDS, FINETUNE_VARIANTS

    print("LPM models: checkpoints (variant × seed), fine-tune / scratch runs, compound embeddings, results; "
          "every training run an MLflow run (make mlflow-ui)")
    variants = [v for v in DEMO_LPM_VARIANTS if v != "scalar_l1000" or {"l1000_phase1", "l1000_phase2"} & set(lpm_ready)]
    failed = _run_all("lpm_checkpoint", [{"variant": v, "seed": s} for v in variants for s in DEMO_SEEDS], workers)
    targets = [d for d in DEMO_LPM_TARGETS if d in lpm_ready]
    failed += _run_all("lpm_finetuned", [{"dataset": d, "variant": v} for d in targets for v in FINETUNE_VARIANTS],
                       workers)
    failed += _run_all("compound_embeddings", [v for v in variants if f"lpm_checkpoint[{v}|13]" not in failed],
                       workers)
    failed += _run_all("lpm_results", [None], 1)
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", help="CPB_HOME (default ./.cpb)")
    parser.add_argument("--datasets", nargs="*", help="only these dataset partitions")
    parser.add_argument("--workers", type=int, default=2,
                        help="partitions materialized at once, one process each (default 2; capped at the CPUs)")
    parser.add_argument("--compute", choices=["local", "slurm"], default=None,
                        help="where heavy assets run (default: CPB_COMPUTE or local)")
    parser.add_argument("--until", choices=STAGES, default="release",
                        help="stop after this stage (default: everything, ending with release 'demo')")
    args = parser.parse_args(argv)
    home = prepare_environment(args.home)
    if args.compute:
        os.environ["CPB_COMPUTE"] = args.compute
    from cpb_assets.datasets import DATASETS
    from cpb_assets.effects.assets import MODES

    datasets = args.datasets or DATASETS
    workers = max(1, min(args.workers, os.cpu_count() or 1))
    print(f"Chem-PerturBridge demo: SYNTHETIC demo world -> {home} ({workers} worker processes)")
    t_all = time.perf_counter()
    _init_instance()
    print("1/4 native source files (generated from the demo world)")
    failed = _run_all("raw_source", datasets, workers)
    print("2/4 compound registry")
    failed += _run_all("compound_registry", [None], 1)
    failed += _run_all("cellosaurus", [None], 1)  # cell-line contexts (built excerpt in the demo profile)
    print("3/4 harmonized AnnData (+ blocking checks)")
    ready = [ds for ds in datasets if f"raw_source[{ds}]" not in failed]
    failed += _run_all("harmonized_adata", ready, workers)
    print("4/4 DE tables (limma through rpy2; + blocking checks)")
    keys = [{"dataset": ds, "mode": m} for ds in datasets if f"harmonized_adata[{ds}]" not in failed
            and f"raw_source[{ds}]" not in failed for m in MODES]
    keys.sort(key=lambda k: -DE_COST.get(f"{k['dataset']}|{k['mode']}", 15))
    failed += _run_all("de_table", keys, workers)
    if args.until == "de":
        return _done(home, t_all, failed)
    print("LPM: training tables per dataset, Morgan fingerprints, splits + split-pure shards (+ leakage check)")
    lpm_ready = [ds for ds in datasets if {"dataset": ds, "mode": "group"} in keys
                 and f"de_table[{ds}|group]" not in failed]
    failed += _run_all("lpm_table", lpm_ready, workers)
    failed += _run_all("morgan_fingerprints", [None], 1)
    if lpm_ready:
        failed += _run_all("lpm_split", [None], 1)
    if args.until == "lpm_data":
        return _done(home, t_all, failed)
    print("Agreement: stage-1 match candidates, every dataset pair (matches, scores), report")
    de_group = [ds for ds in datasets if f"de_table[{ds}|group]" not in failed
                and {"dataset": ds, "mode": "group"} in keys]
    failed += _run_all("match_candidates", [None], 1)
    if "match_candidates" not in failed:
        from cpb_assets.agreement.assets import PAIRS
        from cpb_assets.agreement.matching import split_pair

        pairs = [p for p in PAIRS if set(split_pair(p)) <= set(de_group)]
        failed += _run_all("agreement_pair", pairs, workers)
        # replicate agreement, replicate retrieval and their bootstrap, per dataset with a sep DE partition
        de_sep = [ds for ds in datasets if {"dataset": ds, "mode": "sep"} in keys and f"de_table[{ds}|sep]" not in failed]
        failed += _run_all("replicate_dataset", de_sep, workers)
        failed += _run_all("agreement_report", [None], 1)
    if args.until == "agreement":
        return _done(home, t_all, failed)
    if lpm_ready and "lpm_split" not in failed:
        failed += _run_lpm_models(lpm_ready, workers)
    if "op3" in de_group:
        print(f"OP3 downstream: targets and re-split, descriptors, two-stage predictor × seeds {OP3_DEMO_SEEDS}, results")
        failed += _run_all("op3_targets", [None], 1)
        descriptors = ["none", "morgan_fixed", "morgan_trainable"] + [
            d for d, v in (("lpm_all", "scalar_all"), ("lpm_l1000", "scalar_l1000"))
            if (home / "tables" / "compound_embeddings" / f"variant={v}").exists()]
        failed += _run_all("op3_descriptors", descriptors, workers)
        failed += _run_all("op3_predictions", [{"descriptor": d, "seed": s} for d in descriptors
                                               for s in OP3_DEMO_SEEDS], workers)
        failed += _run_all("op3_results", [None], 1)
    if args.until == "release" and not failed:
        if (home / "releases" / "demo").exists():
            print("release demo exists (a release is never overwritten): kept; `cpb release TAG` writes another")
        else:
            print("Release 'demo': tables, manifest with lineage, Croissant, licences")
            from cpb_jobs.commands import release

            failed += [] if release("demo", home=str(home)) == 0 else ["release[demo]"]
    return _done(home, t_all, failed)


def _done(home: Path, t_all: float, failed: list[str]) -> int:
    total = time.perf_counter() - t_all
    print(f"\nDone in {total:.0f} s." + (f" FAILED: {', '.join(failed)}" if failed else " Everything materialized."))
    print(f"""
Where things are:
  harmonized AnnData   {home}/harmonized/<dataset>.h5ad
  DE tables            {home}/tables/de/dataset=<dataset>/mode=<group|sep>/*.parquet
  agreement report     {home}/reports/agreement/   (views matched_conditions, agreement_pairs)
  LPM tables, shards   {home}/lpm/{{table,splits,shards,fingerprints}}/   (split counts: view lpm_split_counts)
  LPM runs             {home}/lpm/{{runs,finetune}}/   (views lpm_results, compound_embeddings; make mlflow-ui)
  OP3 evaluation       {home}/reports/op3/   (views op3_split, op3_results)
  release 'demo'       {home}/releases/demo/   (.venv/bin/cpb audit demo)
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
