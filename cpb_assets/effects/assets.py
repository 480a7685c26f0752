"""DE assets: one limma DE table per dataset × labeling mode (METHODS §3)."""
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
from cpb_resources.compute import ComputeResource, ResourceRequest
from cpb_resources.storage import StorageResource, atomic_path

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


@dg.asset(
    partitions_def=de_partitions,
    deps=[dg.AssetDep(harmonized_adata, partition_mapping=dg.MultiToSingleDimensionPartitionMapping(
        partition_dimension_name="dataset"))],
    group_name="effects",
    code_version=code_version("cpb_assets.effects.de", "cpb_assets.effects.strata", "cpb_assets.effects.labels",
                              "cpb_assets.effects.workloads", "cpb_assets.effects.assemble", "cpb_resources.limma"),
    kinds={"r", "python", "duckdb"},
    description="limma/edgeR signatures: one row per contrast × gene (DuckDB view `de`), fit diagnostics per "
                "stratum and batch (view `de_strata`). Each stratum/batch is a unit of work on the compute "
                "resource.",
)
def de_table(context: dg.AssetExecutionContext, storage: StorageResource, catalog: CatalogResource,
             compute: ComputeResource) -> dg.MaterializeResult:
    keys = context.partition_key.keys_by_dimension
    ds, mode = keys["dataset"], keys["mode"]
    t0 = time.perf_counter()
    h5ad = storage.harmonized_path(ds)
    backed = ad.read_h5ad(h5ad, backed="r")
    obs, n_genes = backed.obs.copy(), backed.n_vars
    backed.file.close()
    units, skipped = plan_units(obs, ds, mode)
    context.log.info(f"DE {ds}/{mode}: {len(units)} units of work, {len(skipped)} strata skipped while planning")
    staging = storage.path("work", "de", ds, mode, uuid.uuid4().hex[:12])
    # local: one call fits every unit (R starts once); SLURM: one job per stratum/batch, memory sized per unit
    groups = [units] if compute.mode == "local" else [[u] for u in units]
    job_ids, requests = [], []
    final = storage.path("tables", "de", f"dataset={ds}", f"mode={mode}")
    try:
        for group in groups:
            if not group:
                continue
            request = unit_request(group, obs, n_genes)
            requests.append(request.mem_mb)
            result = compute.run(context, "cpb_assets.effects.workloads:de_units",
                                 {"h5ad": str(h5ad), "units": [u.to_json() for u in group], "out_dir": str(staging)},
                                 request=request)
            job_ids += [result["compute"]["slurm_job_id"]] if result["compute"].get("slurm_job_id") else []
        del obs
        with atomic_path(final, is_dir=True) as tmp:  # the partition appears whole or not at all
            strata = assemble_de(staging, units, skipped, tmp, ds, mode)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    strata_dir = storage.path("tables", "de_strata", f"dataset={ds}", f"mode={mode}")
    with atomic_path(strata_dir, is_dir=True) as tmp:
        strata.drop(columns=HIVE_KEYS).to_parquet(tmp / "part.parquet", index=False)
    catalog.refresh()
    summary = partition_summary(final)
    ok = strata["status"] == "ok"
    table = strata[["stratum", "batch", "n_samples", "n_controls", "n_contrasts", "n_plate_confounded",
                    "genes_kept", "df_prior", "s2_prior", "status", "reason"]].round({"df_prior": 2, "s2_prior": 4})
    return dg.MaterializeResult(metadata={
        **summary,
        "strata_ok": int(ok.sum()), "strata_skipped": int((~ok).sum()),
        "route": DATASET_INFO[ds].route, "compute_mode": compute.mode,
        "slurm_job_ids": dg.MetadataValue.json(job_ids),
        "mem_mb_requested_max": max(requests) if requests else 0,
        "strata": dg.MetadataValue.md(table.to_markdown(index=False)),
        "seconds": round(time.perf_counter() - t0, 2),
    })


@dg.asset_check(asset=de_table, name="de_values", blocking=True, partitions_def=de_partitions,
                description="P values in [0, 1], adj_P_within and adj_P_across ≥ P_Value and ≤ 1, CI_L ≤ logFC ≤ "
                            "CI_R, finite statistics, no duplicate contrast × gene rows, and every contrast of the "
                            "fitted strata present (DuckDB over the partition's files).")
def de_values(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    keys = context.partition_key.keys_by_dimension
    folder = storage.path("tables", "de", f"dataset={keys['dataset']}", f"mode={keys['mode']}")
    rows, problems = de_value_problems(folder)
    strata = pd.read_parquet(storage.path("tables", "de_strata", f"dataset={keys['dataset']}",
                                          f"mode={keys['mode']}", "part.parquet"))
    want = int(strata.loc[strata["status"] == "ok", "n_contrasts"].sum())
    got = partition_summary(folder)["contrasts"]
    if got != want:
        problems.append(f"{got} contrasts in de, {want} fitted according to de_strata")
    return dg.AssetCheckResult(passed=not problems, metadata={"rows": rows, "contrasts": got,
                                                              "problems": dg.MetadataValue.json(problems)})
