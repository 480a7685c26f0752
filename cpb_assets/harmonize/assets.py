"""Harmonization assets: the compound registry and one harmonized AnnData per dataset."""

import shutil
import time
import uuid
from pathlib import Path

import anndata as ad
import dagster as dg
import numpy as np
import pandas as pd

from cpb_assets.datasets import DATASETS, dataset_partitions
from cpb_assets.errors import SourceFormatError
from cpb_assets.harmonize.schema import check_harmonized
from cpb_assets.sources.assets import raw_source
from cpb_assets.sources.base import SOURCE_MODULE_NAMES, source_module
from cpb_assets.versioning import code_version
from cpb_resources.catalog import CatalogResource
from cpb_resources.compound_registry import CompoundRegistryResource
from cpb_resources.compute import ComputeResource, ResourceRequest
from cpb_resources.sources import SourceCatalogResource
from cpb_resources.storage import StorageResource, write_h5ad, write_parquet

PSEUDOBULK_REQUEST = ResourceRequest(cpus=1, mem_mb=4096, time_min=60)  # one plate, streamed in chunks
HARMONIZE_MODULES = ["cpb_assets.harmonize." + m for m in ("assemble", "schema", "units", "contexts", "genes",
                                                           "quarantine", "pseudobulk", "workloads")]


@dg.asset(deps=[dg.AssetDep(raw_source, partition_mapping=dg.AllPartitionMapping())], group_name="harmonize",
          code_version=code_version("cpb_assets.harmonize.compounds", "cpb_resources.compound_registry"),
          kinds={"python", "duckdb"},
          description="Every source compound -> PubChem CID, InChIKey, SMILES, names, with the method of the match "
                      "(DuckDB view `compounds`).")
def compound_registry(context: dg.AssetExecutionContext, storage: StorageResource, catalog: CatalogResource,
                      compound_resolver: CompoundRegistryResource,
                      source_catalog: SourceCatalogResource) -> dg.MaterializeResult:
    frames, skipped = [], {}
    for ds in DATASETS:
        folder = storage.source_dir(ds)
        if not folder.exists():
            skipped[ds] = "no raw files yet"
            continue
        try:
            rec = source_module(ds).compound_records(folder, ds)
        except SourceFormatError as exc:  # a broken source must not block the others
            skipped[ds] = str(exc)
            context.log.warning(f"{ds}: compound records unreadable: {exc}")
            continue
        frames.append(rec.assign(dataset=ds))
    records = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["dataset", "source_id", "name", "smiles", "inchikey", "catalog_id"])
    resolved = compound_resolver.resolve(records, seed=source_catalog.seed)
    resolved = resolved.astype({c: "string" for c in resolved.columns if resolved[c].dtype == object})
    write_parquet(resolved, storage.table_path("compounds"))
    catalog.refresh()
    methods = resolved["cid_method"].value_counts().to_dict()
    return dg.MaterializeResult(metadata={
        "records": len(resolved),
        "distinct_cids": int(resolved["pubchem_cid"].nunique()),
        "unresolved": int((resolved["cid_method"] == "unresolved").sum()),
        "by_method": dg.MetadataValue.json({str(k): int(v) for k, v in methods.items()}),
        "skipped_datasets": dg.MetadataValue.json(skipped),
    })


@dg.asset(partitions_def=dataset_partitions, deps=[raw_source, compound_registry], group_name="harmonize",
          code_version=code_version(*SOURCE_MODULE_NAMES.values(), *HARMONIZE_MODULES),
          kinds={"python", "anndata"},
          description="One .h5ad per dataset in the harmonized schema (METHODS §2), at "
                      "$CPB_HOME/harmonized/<dataset>.h5ad; obs as the DuckDB view `harmonized_obs`, dropped "
                      "records in `quarantine`.")
def harmonized_adata(context: dg.AssetExecutionContext, storage: StorageResource,
                     catalog: CatalogResource, compute: ComputeResource) -> dg.MaterializeResult:
    ds = context.partition_key
    t0 = time.perf_counter()
    registry = _registry_for(storage, ds)
    module = source_module(ds)
    if getattr(module, "PLATE_UNITS", False):  # single-cell plates: one unit of work each
        staging = storage.path("work", "pseudobulk", ds, uuid.uuid4().hex[:12])
        try:
            result = module.harmonize(storage.source_dir(ds), ds, registry,
                                      plate_runner=compute_plate_runner(context, compute, ds, staging))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    else:
        result = module.harmonize(storage.source_dir(ds), ds, registry)
    problems = check_harmonized(result.adata)
    bad = {k: v for k, v in problems.items() if v}
    if bad:  # nothing is written for an invalid product
        raise dg.Failure(description=f"{ds}: harmonized AnnData violates the schema: {bad}")
    adata = result.adata
    write_h5ad(adata, storage.harmonized_path(ds))
    write_harmonized_tables(storage, ds, adata, result.quarantine.to_frame(), result.unmapped_genes)
    catalog.refresh()
    q = result.quarantine.to_frame()
    obs = adata.obs
    context.log.info(f"{ds}: {adata.n_obs} samples × {adata.n_vars} genes in {time.perf_counter() - t0:.1f} s")
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(storage.harmonized_path(ds))),
        "n_samples": int(adata.n_obs), "n_genes": int(adata.n_vars),
        "n_controls": int(obs["is_control"].sum()),
        "n_compounds": int(obs.loc[~obs["is_control"], "perturbagen"].nunique()),
        "n_cell_types": int(obs["cell_type"].nunique()),
        "unresolved_compound_samples": int((obs["cid_method"] == "unresolved").sum()) if "cid_method" in obs else 0,
        "quarantined": int(q["n"].sum()) if len(q) else 0,
        "quarantine_reasons": dg.MetadataValue.json(result.quarantine.summary()),
        "notes": dg.MetadataValue.json(result.notes),
        "seconds": round(time.perf_counter() - t0, 2),
    })


def compute_plate_runner(context, compute: ComputeResource, ds: str, staging: Path):
    """A plate runner that pseudobulks each plate as a unit of work on `compute`."""
    from cpb_assets.harmonize.workloads import read_plate_outputs

    def run(plate: Path, axis: dict):
        staging.mkdir(parents=True, exist_ok=True)
        axis_file = staging / f"{plate.name}.axis.npz"
        np.savez(axis_file, keep=axis["keep"], mito=axis["mito"],
                 malat1_col=-1 if axis["malat1_col"] is None else axis["malat1_col"],
                 n_genes=axis["n_genes"], chunk=axis["chunk"])
        compute.run(context, "cpb_assets.harmonize.workloads:pseudobulk_plate",
                    {"dataset": ds, "plate": str(plate), "axis": str(axis_file), "out_dir": str(staging)},
                    request=PSEUDOBULK_REQUEST)
        keep = np.asarray(axis["keep"])  # a boolean mask or the positions of the kept genes
        return read_plate_outputs(staging, plate, int(keep.sum()) if keep.dtype == bool else len(keep))

    return run


def _registry_for(storage: StorageResource, ds: str) -> pd.DataFrame:
    path = storage.table_path("compounds")
    if not path.exists():
        raise dg.Failure(description="the compound registry has not been materialized yet")
    reg = pd.read_parquet(path, columns=["dataset", "source_id", "pubchem_cid", "cid_method"])
    reg = reg[reg["dataset"] == ds].drop(columns="dataset")
    return reg.astype(object).where(reg.notna(), None)


def write_harmonized_tables(storage: StorageResource, ds: str, adata: ad.AnnData, quarantine: pd.DataFrame,
                            unmapped: pd.DataFrame) -> None:
    """The catalog tables of one harmonized partition (hive key `dataset` supplies that column)."""
    obs = adata.obs.reset_index().drop(columns=["dataset"])
    for c in obs.columns:
        if isinstance(obs[c].dtype, pd.CategoricalDtype):
            obs[c] = obs[c].astype("string")
    var = adata.var.reset_index()
    write_parquet(obs, storage.table_path("harmonized_obs", dataset=ds))
    write_parquet(var.astype("string"), storage.table_path("harmonized_var", dataset=ds))
    write_parquet(quarantine.drop(columns=["dataset"]), storage.table_path("quarantine", dataset=ds))
    write_parquet(unmapped.astype("string"), storage.table_path("gene_map_unmapped", dataset=ds))


def _check(category: str, description: str):
    @dg.asset_check(asset=harmonized_adata, name=f"harmonized_{category}", blocking=True,
                    partitions_def=dataset_partitions, description=description)
    def _fn(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
        ds = context.partition_key
        adata = ad.read_h5ad(storage.harmonized_path(ds), backed="r")
        try:
            problems = check_harmonized(adata)[category]
        finally:
            adata.file.close()
        return dg.AssetCheckResult(passed=not problems, metadata={
            "dataset": ds, "problems": dg.MetadataValue.json(problems), "n_samples": int(adata.n_obs)})
    return _fn


harmonized_checks = [
    _check("columns", "Required obs/var columns present with their schema dtypes."),
    _check("ids", "Cell types are CVCL_/CL_ IDs, genes ENSG IDs, CIDs numeric."),
    _check("doses", "Doses in µM are >= 0 and 0 for controls; psbulk fields >= 0 or -666."),
    _check("controls", "Every cell_type stratum has DMSO controls."),
    _check("duplicates", "No duplicate sample or gene IDs."),
]
