"""DE assets: one limma DE table per dataset × labeling mode (METHODS §3)."""
import shutil
import time
import uuid

import anndata as ad
import dagster as dg
import numpy as np
import pandas as pd

from cpb_assets.datasets import DATASET_INFO, dataset_partitions
from cpb_assets.effects.de import DE_COLUMNS, STRATA_COLUMNS, adjust_across, empty_de_table
from cpb_assets.effects.strata import plan_units
from cpb_assets.effects.workloads import unit_key
from cpb_assets.harmonize.assets import harmonized_adata
from cpb_assets.versioning import code_version
from cpb_resources.catalog import CatalogResource
from cpb_resources.compute import ComputeResource, ResourceRequest
from cpb_resources.storage import StorageResource, atomic_path

MODES = ["group", "sep"]
mode_partitions = dg.StaticPartitionsDefinition(MODES)
de_partitions = dg.MultiPartitionsDefinition({"dataset": dataset_partitions, "mode": mode_partitions})
# a DE fit holds the stratum's expression matrix and R's copies of it
DE_REQUEST = ResourceRequest(cpus=1, mem_mb=4096, time_min=60)
HIVE_KEYS = ["dataset", "mode"]


@dg.asset(
    partitions_def=de_partitions,
    deps=[dg.AssetDep(harmonized_adata, partition_mapping=dg.MultiToSingleDimensionPartitionMapping(
        partition_dimension_name="dataset"))],
    group_name="effects",
    code_version=code_version("cpb_assets.effects.de", "cpb_assets.effects.strata", "cpb_assets.effects.labels",
                              "cpb_assets.effects.workloads", "cpb_resources.limma"),
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
    obs = backed.obs.copy()
    backed.file.close()
    units, skipped = plan_units(obs, ds, mode)
    context.log.info(f"DE {ds}/{mode}: {len(units)} units of work, {len(skipped)} strata skipped while planning")
    staging = storage.path("work", "de", ds, mode, uuid.uuid4().hex[:12])
    # local: one call fits every unit (R starts once); SLURM: one job per stratum/batch
    groups = [units] if compute.mode == "local" else [[u] for u in units]
    job_ids = []
    try:
        for group in groups:
            if not group:
                continue
            result = compute.run(context, "cpb_assets.effects.workloads:de_units",
                                 {"h5ad": str(h5ad), "units": [u.to_json() for u in group], "out_dir": str(staging)},
                                 request=DE_REQUEST)
            job_ids += [result["compute"]["slurm_job_id"]] if result["compute"].get("slurm_job_id") else []
        de, strata = _collect(staging, units, skipped, ds, mode)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_de_partition(storage, ds, mode, de, strata)
    catalog.refresh()
    ok = strata["status"] == "ok"
    table = strata[["stratum", "batch", "n_samples", "n_controls", "n_contrasts", "genes_kept", "df_prior",
                    "s2_prior", "status", "reason"]].round({"df_prior": 2, "s2_prior": 4})
    return dg.MaterializeResult(metadata={
        "rows": len(de), "contrasts": int(de["contrast_id"].nunique()) if len(de) else 0,
        "strata_ok": int(ok.sum()), "strata_skipped": int((~ok).sum()),
        "genes": int(de["gene"].nunique()) if len(de) else 0,
        "deg_share_adjp_0_05": float((de["adj_P_within"] < 0.05).mean()) if len(de) else 0.0,
        "route": DATASET_INFO[ds].route, "compute_mode": compute.mode,
        "slurm_job_ids": dg.MetadataValue.json(job_ids),
        "strata": dg.MetadataValue.md(table.to_markdown(index=False)),
        "seconds": round(time.perf_counter() - t0, 2),
    })


def _collect(staging, units, skipped, ds: str, mode: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read every unit's output back (by name), adjust across whole strata, sort stably."""
    tables, rows = [], list(skipped)
    for unit in units:
        key = unit_key(unit)
        tables.append(pd.read_parquet(staging / f"{key}.de.parquet"))
        rows += pd.read_parquet(staging / f"{key}.stratum.parquet").to_dict("records")
    tables = [t for t in tables if len(t)]
    de = adjust_across(pd.concat(tables, ignore_index=True)) if tables else empty_de_table()
    de = de.sort_values(["stratum", "contrast_id", "gene"], kind="stable", ignore_index=True)
    strata = pd.DataFrame(rows, columns=STRATA_COLUMNS).sort_values(["stratum", "batch"], ignore_index=True)
    return de[DE_COLUMNS], strata


def write_de_partition(storage: StorageResource, ds: str, mode: str, de: pd.DataFrame, strata: pd.DataFrame
                       ) -> None:
    """Swap in the partition's Parquet folder atomically: one file per stratum (hive keys dataset/mode)."""
    final = storage.path("tables", "de", f"dataset={ds}", f"mode={mode}")
    with atomic_path(final, is_dir=True) as tmp:
        for i, (stratum, part) in enumerate(de.groupby("stratum", sort=True)):
            part.drop(columns=HIVE_KEYS).to_parquet(tmp / f"stratum-{i:03d}.parquet", index=False)
        if de.empty:  # keep the schema visible to the view
            de.drop(columns=HIVE_KEYS).to_parquet(tmp / "empty.parquet", index=False)
    strata_dir = storage.path("tables", "de_strata", f"dataset={ds}", f"mode={mode}")
    with atomic_path(strata_dir, is_dir=True) as tmp:
        strata.drop(columns=HIVE_KEYS).to_parquet(tmp / "part.parquet", index=False)


@dg.asset_check(asset=de_table, name="de_values", blocking=True, partitions_def=de_partitions,
                description="P values in [0, 1], adj_P_within ≥ P_Value, CI_L ≤ logFC ≤ CI_R, finite statistics, "
                            "no duplicate contrast × gene rows.")
def de_values(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    keys = context.partition_key.keys_by_dimension
    folder = storage.path("tables", "de", f"dataset={keys['dataset']}", f"mode={keys['mode']}")
    de = pd.concat([pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))], ignore_index=True)
    problems = []
    if len(de):
        if not de["P_Value"].between(0, 1).all():
            problems.append("P_Value outside [0, 1]")
        if (de["adj_P_within"] < de["P_Value"] - 1e-12).any():
            problems.append("adj_P_within < P_Value")
        if ((de["CI_L"] > de["logFC"] + 1e-9) | (de["CI_R"] < de["logFC"] - 1e-9)).any():
            problems.append("logFC outside its confidence interval")
        if not np.isfinite(de[["logFC", "t", "AveExpr"]].to_numpy()).all():
            problems.append("non-finite logFC / t / AveExpr")
        if de.duplicated(["contrast_id", "gene"]).any():
            problems.append("duplicate contrast × gene rows")
    return dg.AssetCheckResult(passed=not problems, metadata={"rows": len(de), "problems": problems})
