"""DE assets: one limma DE table per dataset × labeling mode (METHODS §3)."""
import os
import shutil
import time
import uuid

import anndata as ad
import dagster as dg
import pandas as pd

from cpb_assets.datasets import DATASET_INFO, dataset_partitions
from cpb_assets.effects.assemble import assemble_de, de_value_problems, partition_summary
from cpb_assets.effects.de import HIVE_KEYS, unit_memory_mb
from cpb_assets.effects.strata import DEUnit, plan_units
from cpb_assets.harmonize.assets import harmonized_adata
from cpb_assets.versioning import code_version
from cpb_resources.catalog import CatalogResource
from cpb_resources.compute import ComputeResource, ResourceRequest, WorkUnit
from cpb_resources.storage import StorageResource, atomic_bundle, staging_left, require_intact, verify_published

MODES = ["group", "sep"]
mode_partitions = dg.StaticPartitionsDefinition(MODES)
de_partitions = dg.MultiPartitionsDefinition({"dataset": dataset_partitions, "mode": mode_partitions})
DE_TIME_MIN = 120  # per unit (SLURM --time)


def unit_request(units: list[DEUnit], obs: pd.DataFrame, n_genes: int) -> ResourceRequest:
    """SLURM request for fitting `units` in one job: memory from the largest unit's shape."""
    ctrl = obs["is_control"].to_numpy(dtype=bool)
    is_ctrl = pd.Series(ctrl, index=obs.index)
    mem = 0
    for u in units:
        n_treated = int((~is_ctrl.iloc[list(u.rows)]).sum()) if u.rows else len(u.sample_ids)
        # contrasts ≤ treated samples × control labels at their time (one per time in practice)
        mem = max(mem, unit_memory_mb(len(u.sample_ids), n_genes, n_treated))
    return ResourceRequest(cpus=1, mem_mb=max(mem, 1024), time_min=DE_TIME_MIN)


class DEConfig(dg.Config):
    """``engine``: ``r`` (limma/edgeR in R, the reference and default) or ``fast`` (the numpy engine,
    equal to R to ~1e-13 in the parity tests; docs/de.md)."""

    engine: str = "r"


# what de_table runs: its Python modules and the R script the "r" engine sources
DE_CODE_MODULES = ("cpb_assets.effects.de", "cpb_assets.effects.strata", "cpb_assets.effects.labels",
                   "cpb_assets.effects.workloads", "cpb_assets.effects.assemble", "cpb_resources.limma",
                   "cpb_resources.fast_limma")
DE_CODE_SCRIPTS = ("r_scripts/limma_de.R",)


@dg.asset(
    partitions_def=de_partitions,
    deps=[dg.AssetDep(harmonized_adata, partition_mapping=dg.MultiToSingleDimensionPartitionMapping(
        partition_dimension_name="dataset"))],
    group_name="effects",
    code_version=code_version(*DE_CODE_MODULES, scripts=DE_CODE_SCRIPTS),
    kinds={"r", "python", "duckdb"},
    description="limma/edgeR signatures: one row per contrast × gene (DuckDB view `de`), fit diagnostics per "
                "stratum and batch (view `de_strata`). Each stratum/batch is a unit of work on the compute "
                "resource.",
)
def de_table(context: dg.AssetExecutionContext, config: DEConfig, storage: StorageResource,
             catalog: CatalogResource, compute: ComputeResource) -> dg.MaterializeResult:
    keys = context.partition_key.keys_by_dimension
    ds, mode = keys["dataset"], keys["mode"]
    # one run at a time per partition (a second run waits here); the kernel releases it if this process dies
    with storage.partition_lock("de_table", f"{ds}|{mode}", context.log):
        return _de_partition(context, storage, catalog, compute, ds, mode, config.engine)


def _de_partition(context: dg.AssetExecutionContext, storage: StorageResource, catalog: CatalogResource,
                  compute: ComputeResource, ds: str, mode: str, engine: str) -> dg.MaterializeResult:
    t0 = time.perf_counter()
    final = storage.de_dir(ds, mode, verify=False)
    # under the partition lock, staging and temporary folders of this partition belong to a run that
    # died (SIGKILL, power loss): remove them before starting
    bundle = storage.bundle_dir("de_table", ds, mode)
    for orphan in [*storage.path("work", "de", ds, mode).glob("*"), *staging_left(bundle)]:
        context.log.warning(f"removing what a killed run left: {orphan}")
        shutil.rmtree(orphan, ignore_errors=True)
    # a damaged harmonized file is never fitted (cpb verify --rebuild repairs it)
    require_intact(storage.harmonized_path(ds), f"cpb verify --rebuild (re-materializes harmonized_adata[{ds}])")
    source = storage.harmonized_path(ds).resolve()
    staging = storage.path("work", "de", ds, mode, uuid.uuid4().hex[:12])
    staging.mkdir(parents=True, exist_ok=True)
    # the units read the exact harmonized version they were planned from: a hard link to it (a
    # re-harmonization meanwhile replaces the path by rename, never the linked file)
    h5ad = staging / "planned.h5ad"
    try:
        os.link(source, h5ad)
    except OSError:
        shutil.copy2(source, h5ad)
    backed = ad.read_h5ad(h5ad, backed="r")
    obs, n_genes = backed.obs.copy(), backed.n_vars
    backed.file.close()
    units, skipped = plan_units(obs, ds, mode)
    context.log.info(f"DE {ds}/{mode}: {len(units)} units of work, {len(skipped)} strata skipped while planning")
    # local: one unit of work fits every stratum (R starts once); SLURM: one job per stratum/batch, all
    # submitted at once (run_many), memory sized per unit
    groups = [g for g in ([units] if compute.mode == "local" else [[u] for u in units]) if g]
    work = [WorkUnit(f"{ds}-{mode}-{i:04d}", "cpb_assets.effects.workloads:de_units",
                     {"h5ad": str(h5ad), "units": [u.to_json() for u in group], "out_dir": str(staging),
                      "engine": engine}, unit_request(group, obs, n_genes)) for i, group in enumerate(groups)]
    requests = [w.request.mem_mb for w in work]
    try:
        results = compute.run_many(context, work)
        job_ids = [r["compute"]["slurm_job_id"] for r in results if r["compute"].get("slurm_job_id")]
        fit_usage = [{k: r["compute"].get(k) for k in ("unit", "max_rss_mb", "elapsed_s", "attempts")}
                     for r in results]
        del obs
        # de and de_strata appear together, whole, or not at all
        entries = {"de": final, "de_strata": storage.table_dir("de_strata", dataset=ds, mode=mode)}
        with atomic_bundle(bundle, entries, about={"asset": "de_table", "partition": {"dataset": ds, "mode": mode}}
                           ) as tmp:
            (tmp / "de").mkdir()
            strata = assemble_de(staging, units, skipped, tmp / "de", ds, mode)
            (tmp / "de_strata").mkdir()
            strata.drop(columns=HIVE_KEYS).to_parquet(tmp / "de_strata" / "part.parquet", index=False)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    catalog.refresh()
    summary = partition_summary(final)
    ok = strata["status"] == "ok"
    table = strata[["stratum", "batch", "n_samples", "n_controls", "n_contrasts", "n_plate_confounded",
                    "genes_kept", "df_prior", "s2_prior", "status", "reason"]].round({"df_prior": 2, "s2_prior": 4})
    return dg.MaterializeResult(metadata={
        **summary,
        "strata_ok": int(ok.sum()), "strata_skipped": int((~ok).sum()),
        "route": DATASET_INFO[ds].route, "compute_mode": compute.mode, "engine": engine,
        "slurm_job_ids": dg.MetadataValue.json(job_ids),
        "mem_mb_requested_max": max(requests) if requests else 0,
        "units": dg.MetadataValue.json(fit_usage),
        "strata": dg.MetadataValue.md(table.to_markdown(index=False)),
        "seconds": round(time.perf_counter() - t0, 2),
    })


@dg.asset_check(asset=de_table, name="de_values", blocking=True, partitions_def=de_partitions,
                description="P values in [0, 1], adj_P_within and adj_P_across ≥ P_Value and ≤ 1, CI_L ≤ logFC ≤ "
                            "CI_R, finite statistics, no duplicate contrast × gene rows, and every contrast of the "
                            "fitted strata present (DuckDB over the partition's files).")
def de_values(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    keys = context.partition_key.keys_by_dimension
    folder = storage.de_dir(keys["dataset"], keys["mode"], verify=False)
    rows, problems = de_value_problems(folder)
    problems += verify_published(folder)  # the files as published (sha256 manifest)
    strata = pd.read_parquet(storage.table_path("de_strata", dataset=keys["dataset"], mode=keys["mode"]))
    want = int(strata.loc[strata["status"] == "ok", "n_contrasts"].sum())
    got = partition_summary(folder)["contrasts"]
    if got != want:
        problems.append(f"{got} contrasts in de, {want} fitted according to de_strata")
    return dg.AssetCheckResult(passed=not problems, metadata={"rows": rows, "contrasts": got,
                                                              "problems": dg.MetadataValue.json(problems)})
