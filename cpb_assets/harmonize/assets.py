"""Harmonization assets: the compound registry and one harmonized AnnData per dataset."""

import os
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
from cpb_assets.harmonize.assemble import WrittenH5ad, harmonized_scratch
from cpb_assets.harmonize.compounds import compound_coverage, registry_reference, resolve_compounds
from cpb_assets.harmonize.contexts import use_contexts
from cpb_assets.harmonize.schema import check_harmonized
from cpb_assets.reference.assets import cellosaurus
from cpb_assets.sources.assets import raw_source
from cpb_assets.sources.landing import demo_seed
from cpb_assets.sources.registry import SOURCES, reader_modules
from cpb_assets.versioning import code_version
from cpb_resources.catalog import CatalogResource
from cpb_resources.compound_registry import CompoundRegistryResource
from cpb_resources.compute import ComputeResource, ResourceRequest, WorkUnit
from cpb_resources.sources import SourceCatalogResource
from cpb_resources.storage import StorageResource, atomic_bundle, staging_left, write_parquet

PSEUDOBULK_REQUEST = ResourceRequest(cpus=1, mem_mb=4096, time_min=60)  # one plate, streamed in chunks
HARMONIZE_MODULES = ["cpb_assets.harmonize." + m for m in ("assemble", "schema", "units", "contexts", "genes",
                                                           "quarantine", "pseudobulk", "workloads")]


@dg.asset(deps=[dg.AssetDep(raw_source, partition_mapping=dg.AllPartitionMapping())], group_name="harmonize",
          code_version=code_version("cpb_assets.harmonize.compounds", "cpb_resources.compound_registry",
                                    *reader_modules()),
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
            rec = SOURCES[ds].compound_records(folder)
        except SourceFormatError as exc:  # a broken source must not block the others
            skipped[ds] = str(exc)
            context.log.warning(f"{ds}: compound records unreadable: {exc}")
            continue
        frames.append(rec.assign(dataset=ds))
    records = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["dataset", "source_id", "name", "smiles", "inchikey", "catalog_id", "pubchem_cid"])
    reference = registry_reference(compound_resolver.reference_path(),
                                   demo_seed(source_catalog.seed) if compound_resolver.demo_synonyms else None)
    resolved = resolve_compounds(records, reference, manual=compound_resolver.manual(),
                                 pubchem=compound_resolver.pubchem_client())
    resolved = resolved.astype({c: "string" for c in resolved.columns if resolved[c].dtype == object})
    write_parquet(resolved, storage.table_path("compounds"))
    write_parquet(compound_coverage(resolved), storage.table_path("compound_coverage"))
    catalog.refresh()
    methods = resolved["cid_method"].value_counts().to_dict()
    return dg.MaterializeResult(metadata={
        "records": len(resolved),
        "distinct_cids": int(resolved["pubchem_cid"].nunique()),
        "unresolved": int((resolved["cid_method"] == "unresolved").sum()),
        "by_method": dg.MetadataValue.json({str(k): int(v) for k, v in methods.items()}),
        "source_cid_mismatches": int((resolved["source_cid_check"] == "mismatch").sum()),
        "skipped_datasets": dg.MetadataValue.json(skipped),
    })


HARMONIZED_CHECK_SPECS = [
    dg.AssetCheckSpec("harmonized_row_counts", asset="harmonized_adata", blocking=True,
                      description="The .h5ad and the harmonized_obs / harmonized_var / quarantine tables on disk hold "
                                  "the sample, gene and quarantine counts the source's reader produced (and its own "
                                  "kept-instance / kept-cell counts; cells pseudobulked + quarantined = cells in the "
                                  "source matrix where the reader reports it)."),
    dg.AssetCheckSpec("harmonized_quarantine_share", asset="harmonized_adata",
                      description="Quarantined share per level below a threshold (samples 25%, cells 50%); "
                                  "a warning."),
    dg.AssetCheckSpec("harmonized_cids_resolved", asset="harmonized_adata",
                      description="At least 80% of treated samples carry a PubChem CID; a warning."),
    dg.AssetCheckSpec("harmonized_gene_axis", asset="harmonized_adata", blocking=True,
                      description="At least 80% of the source's genes reached the Ensembl gene axis."),
]


@dg.asset(partitions_def=dataset_partitions, deps=[raw_source, compound_registry, cellosaurus],
          group_name="harmonize", check_specs=HARMONIZED_CHECK_SPECS,
          code_version=code_version(*reader_modules(), "cpb_assets.sources.registry", *HARMONIZE_MODULES),
          kinds={"python", "anndata"},
          description="One .h5ad per dataset in the harmonized schema (METHODS §2), at "
                      "$CPB_HOME/harmonized/<dataset>.h5ad; obs as the DuckDB view `harmonized_obs`, dropped "
                      "records in `quarantine`.")
def harmonized_adata(context: dg.AssetExecutionContext, storage: StorageResource,
                     catalog: CatalogResource, compute: ComputeResource) -> dg.MaterializeResult:
    ds = context.partition_key
    # one run at a time per partition (a second run waits here; the kernel releases the lock if this
    # process dies), so what a killed run left behind can be removed safely
    with storage.partition_lock("harmonized_adata", ds, context.log):
        for orphan in [*storage.path("work", "pseudobulk", ds).glob("*"),
                       *staging_left(storage.bundle_dir("harmonized_adata", ds))]:
            context.log.warning(f"removing what a killed run left: {orphan}")
            shutil.rmtree(orphan, ignore_errors=True)
        return _harmonized_partition(context, storage, catalog, compute, ds)


def _harmonized_partition(context: dg.AssetExecutionContext, storage: StorageResource, catalog: CatalogResource,
                          compute: ComputeResource, ds: str) -> dg.MaterializeResult:
    t0 = time.perf_counter()
    registry = _registry_for(storage, ds)
    spec = SOURCES[ds]
    contexts, contexts_from = _contexts_table(storage)
    # a reader that writes its h5ad itself (X block by block, e.g. L1000) writes it here, beside the
    # published files, so that publishing links it; we hold the partition lock, so whatever is
    # here is what a killed run left
    scratch_root = storage.path("work", "harmonized", ds)
    for orphan in sorted(scratch_root.glob("*")):
        context.log.warning(f"removing what a killed run left: {orphan}")
        shutil.rmtree(orphan, ignore_errors=True)
    scratch = scratch_root / uuid.uuid4().hex[:12]
    try:
        with use_contexts(contexts), harmonized_scratch(scratch):
            result = _harmonize(context, spec, storage, compute, registry)
        result.notes["contexts_table"] = contexts_from
        # the AnnData in memory, or the h5ad the reader wrote (obs/var in memory, X on disk): the
        # schema check and the counts below read obs and var only, never X
        adata = result.product
        problems = check_harmonized(adata)
        bad = {k: v for k, v in problems.items() if v}
        if bad:  # nothing is written for an invalid product
            raise dg.Failure(description=f"{ds}: harmonized AnnData violates the schema: {bad}")
        # the h5ad and its tables are published as one unit
        publish_harmonized(storage, ds, adata, result.quarantine.to_frame(), result.unmapped_genes)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
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
    }, check_results=harmonized_check_results(storage, ds, adata, q, result.unmapped_genes, result.notes))


def _harmonize(context, spec, storage: StorageResource, compute: ComputeResource, registry: pd.DataFrame):
    """The source's reader on its raw files (single-cell plates as units of work on `compute`)."""
    ds = spec.dataset
    if not spec.plate_units:
        return spec.harmonize(storage.source_dir(ds), registry)
    staging = storage.path("work", "pseudobulk", ds, uuid.uuid4().hex[:12])
    try:
        return spec.harmonize(storage.source_dir(ds), registry,
                              plate_runner=compute_plate_runner(context, compute, ds, staging))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _contexts_table(storage: StorageResource) -> tuple[pd.DataFrame | None, str]:
    """The materialized Cellosaurus table, or None (the built-in table is the offline fallback)."""
    path = storage.table_path("cellosaurus")
    if not path.exists():
        return None, "built-in (cellosaurus not materialized)"
    table = pd.read_parquet(path)
    return table.astype(object).where(table.notna(), None), "cellosaurus"


def compute_plate_runner(context, compute: ComputeResource, ds: str, staging: Path):
    """A plate runner that pseudobulks every plate as its own unit of work on `compute`, all at once
    (`run_many`: side by side on SLURM, a bounded pool locally), results in plate order."""
    from cpb_assets.harmonize.workloads import read_plate_outputs

    def run(plates: list[Path], axis: dict):
        staging.mkdir(parents=True, exist_ok=True)
        axis_file = staging / "axis.npz"
        np.savez(axis_file, col_map=axis["col_map"], n_out=axis["n_out"], mito=axis["mito"],
                 malat1_col=-1 if axis["malat1_col"] is None else axis["malat1_col"], chunk=axis["chunk"])
        compute.run_many(context, [
            WorkUnit(f"plate-{i:04d}-{plate.stem}", "cpb_assets.harmonize.workloads:pseudobulk_plate",
                     {"dataset": ds, "plate": str(plate), "axis": str(axis_file), "out_dir": str(staging)},
                     PSEUDOBULK_REQUEST) for i, plate in enumerate(plates)])
        return [read_plate_outputs(staging, plate, int(axis["n_out"])) for plate in plates]

    return run


def _registry_for(storage: StorageResource, ds: str) -> pd.DataFrame:
    path = storage.table_path("compounds")
    if not path.exists():
        raise dg.Failure(description="the compound registry has not been materialized yet")
    reg = pd.read_parquet(path, columns=["dataset", "source_id", "pubchem_cid", "cid_method"])
    reg = reg[reg["dataset"] == ds].drop(columns="dataset")
    return reg.astype(object).where(reg.notna(), None)


HARMONIZED_TABLES = ("harmonized_obs", "harmonized_var", "quarantine", "gene_map_unmapped")


def publish_harmonized(storage: StorageResource, ds: str, adata: ad.AnnData | WrittenH5ad,
                       quarantine: pd.DataFrame, unmapped: pd.DataFrame) -> None:
    """Publish the .h5ad and its four catalog tables as one unit (``storage.atomic_bundle``): after a
    crash, readers see every file of one run, never a new h5ad beside old tables. The hive key
    `dataset` supplies that column of the tables.

    `adata`: the AnnData in memory (written here), or the h5ad a reader already wrote
    (:class:`WrittenH5ad`, X block by block): that file is hard-linked into the bundle (copied, in
    blocks, where a link cannot be made), never read whole or written again."""
    obs = adata.obs.reset_index().drop(columns=["dataset"])
    for c in obs.columns:
        if isinstance(obs[c].dtype, pd.CategoricalDtype):
            obs[c] = obs[c].astype("string")
    frames = {"harmonized_obs": obs, "harmonized_var": adata.var.reset_index().astype("string"),
              "quarantine": quarantine.drop(columns=["dataset"]), "gene_map_unmapped": unmapped.astype("string")}
    entries = {"adata.h5ad": storage.harmonized_path(ds),
               **{t: storage.table_dir(t, dataset=ds) for t in HARMONIZED_TABLES}}
    bundle = storage.bundle_dir("harmonized_adata", ds)
    with atomic_bundle(bundle, entries, about={"asset": "harmonized_adata", "partition": ds}) as staging:
        if isinstance(adata, WrittenH5ad):
            try:
                os.link(adata.path, staging / "adata.h5ad")
            except OSError:  # another file system (or no hard links): a streamed copy
                shutil.copyfile(adata.path, staging / "adata.h5ad")
        else:
            adata.write_h5ad(staging / "adata.h5ad")
        for table, frame in frames.items():
            (staging / table).mkdir()
            frame.to_parquet(staging / table / "part.parquet", index=False)


# --- checks of harmonized_adata: what the asset did not already enforce (check_specs on the asset; the
# schema itself is validated before anything is written, so re-running it here could never fail)
QUARANTINE_WARN_SHARE = {"sample": 0.25, "cell": 0.5}  # dropped ÷ (kept + dropped), per level
CID_RESOLVED_MIN = 0.8  # treated samples with a PubChem CID
GENE_AXIS_MIN = 0.8  # source genes that reached the Ensembl axis


def _asset_check_result(name: str, problems: list[str], metadata: dict,
                        severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(check_name=name, passed=not problems, severity=severity,
                               metadata={**metadata, "problems": dg.MetadataValue.json(problems)})


def harmonized_check_results(storage: StorageResource, ds: str, adata: ad.AnnData | WrittenH5ad,
                             quarantine: pd.DataFrame, unmapped: pd.DataFrame, notes: dict
                             ) -> list[dg.AssetCheckResult]:
    """One AssetCheckResult per spec of :data:`HARMONIZED_CHECK_SPECS`, computed on the written files
    (the .h5ad opened backed: its obs and var, never X) against what the reader produced (`adata`:
    in memory or the h5ad it wrote; only its obs, var and counts are read)."""
    import duckdb

    results = []
    # 1. row counts: the files on disk against what the source's reader produced
    problems = []
    backed = ad.read_h5ad(storage.harmonized_path(ds), backed="r")
    try:
        disk = {"h5ad_samples": int(backed.n_obs), "h5ad_genes": int(backed.n_vars)}
        if list(backed.obs_names) != list(adata.obs_names):
            problems.append("sample IDs of the .h5ad differ from the reader's")
    finally:
        backed.file.close()
    con = duckdb.connect()
    for key, table in (("obs_rows", "harmonized_obs"), ("var_rows", "harmonized_var"),
                       ("quarantine_rows", "quarantine")):
        path = str(storage.table_path(table, dataset=ds)).replace("'", "''")
        disk[key] = int(con.execute(f"select count(*) from read_parquet('{path}')").fetchone()[0])
    con.close()
    want = {"h5ad_samples": adata.n_obs, "h5ad_genes": adata.n_vars, "obs_rows": adata.n_obs,
            "var_rows": adata.n_vars, "quarantine_rows": len(quarantine)}
    problems += [f"{k}: {disk[k]} written, {v} from the source" for k, v in want.items() if disk[k] != v]
    cells = adata.obs["psbulk_cells"].to_numpy()
    if "cells_kept" in notes and int(cells[cells >= 0].sum()) != int(notes["cells_kept"]):
        problems.append(f"psbulk_cells sum {int(cells[cells >= 0].sum())} != cells kept by the reader "
                        f"{notes['cells_kept']}")
    q_cells = int(quarantine.loc[quarantine["level"] == "cell", "n"].sum()) if len(quarantine) else 0
    if "cells_in_matrix" in notes and int(cells[cells >= 0].sum()) + q_cells != int(notes["cells_in_matrix"]):
        problems.append(f"{int(cells[cells >= 0].sum())} cells pseudobulked + {q_cells} quarantined != "
                        f"{notes['cells_in_matrix']} cells in the source matrix")
    if "instances_kept" in notes and int(notes["instances_kept"]) != adata.n_obs:
        problems.append(f"{adata.n_obs} samples, the reader kept {notes['instances_kept']} instances")
    results.append(_asset_check_result("harmonized_row_counts", problems, {k: int(v) for k, v in disk.items()}))
    # 2. quarantine share per level (a warning: some sources drop many records by design)
    problems, shares = [], {}
    for level, limit in QUARANTINE_WARN_SHARE.items():
        dropped = int(quarantine.loc[quarantine["level"] == level, "n"].sum()) if len(quarantine) else 0
        kept = adata.n_obs if level == "sample" else int(cells[cells >= 0].sum())
        if dropped + kept:
            shares[level] = round(dropped / (dropped + kept), 4)
            if shares[level] > limit:
                problems.append(f"{shares[level]:.1%} of {level}s quarantined (> {limit:.0%})")
    results.append(_asset_check_result("harmonized_quarantine_share", problems,
                                       {"shares": dg.MetadataValue.json(shares)}, dg.AssetCheckSeverity.WARN))
    # 3. PubChem CIDs resolved for treated samples (unresolved compounds stay, flagged)
    treated = ~adata.obs["is_control"].to_numpy(dtype=bool)
    cid = adata.obs["pubchem_cid"].astype(object).to_numpy()[treated]
    share = float(np.mean([isinstance(c, str) and c != "" for c in cid])) if treated.any() else 1.0
    results.append(_asset_check_result(
        "harmonized_cids_resolved", [f"{share:.1%} of treated samples have a CID (< {CID_RESOLVED_MIN:.0%})"]
        if share < CID_RESOLVED_MIN else [], {"share": share}, dg.AssetCheckSeverity.WARN))
    # 4. gene axis coverage: genes of the source that reached the Ensembl axis
    lost = int(quarantine.loc[quarantine["level"] == "gene", "n"].sum()) if len(quarantine) else 0
    lost = max(lost, len(unmapped))
    coverage = adata.n_vars / (adata.n_vars + lost) if adata.n_vars + lost else 0.0
    results.append(_asset_check_result(
        "harmonized_gene_axis", [f"{coverage:.1%} of source genes mapped (< {GENE_AXIS_MIN:.0%})"]
        if coverage < GENE_AXIS_MIN else [], {"coverage": coverage, "genes": int(adata.n_vars), "lost": lost}))
    return results


# the specs travel on the asset (check_specs): no separate check functions
harmonized_checks: list = []
