"""The `release` asset: a frozen, audited folder of the compendium (docs/releases.md)."""
import datetime as _dt
import re
import shutil
import uuid

import dagster as dg

from cpb_assets.datasets import DATASETS
from cpb_assets.effects.assets import de_table
from cpb_assets.harmonize.assets import harmonized_adata
from cpb_assets.release.croissant import croissant_metadata
from cpb_assets.release.licences import licence_manifest
from cpb_assets.release.manifest import (PartitionRecord, ReleaseError, build_manifest, copy_products,
                                         released_files, write_json)
from cpb_assets.versioning import code_version
from cpb_resources.sources import SourceCatalogResource, folder_fingerprint
from cpb_resources.storage import StorageResource

TAG_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
RAW_SOURCE = "raw_source"
from cpb_assets.agreement.assets import agreement_report  # noqa: E402
from cpb_assets.lpm.assets import lpm_results  # noqa: E402
from cpb_assets.op3.assets import op3_results  # noqa: E402

# the products a release freezes (their ancestors enter the manifest's lineage)
RELEASED_ASSETS = [harmonized_adata, de_table, agreement_report, lpm_results, op3_results]


class ReleaseConfig(dg.Config):
    tag: str = "demo"


def stage_graph():
    """The asset graph of every stage (a run's own job may hold only the release and its direct deps)."""
    from cpb_assets.agreement.assets import AGREEMENT_ASSETS
    from cpb_assets.lpm.assets import LPM_ASSETS
    from cpb_assets.op3.assets import OP3_ASSETS
    from cpb_assets.reference.assets import cellosaurus
    from cpb_assets.harmonize.assets import compound_registry
    from cpb_assets.sources.assets import raw_source, source_files

    assets = [source_files, raw_source, cellosaurus, compound_registry, harmonized_adata, de_table,
              *AGREEMENT_ASSETS, *LPM_ASSETS, *OP3_ASSETS, release]
    from dagster._core.definitions.assets.graph.asset_graph import AssetGraph

    return AssetGraph.from_assets(assets)  # the graph only: no resources are needed to read lineage


def partition_records(context: dg.AssetExecutionContext, storage: StorageResource) -> list[PartitionRecord]:
    """Every materialized partition of every asset upstream of the release, as the instance recorded it."""
    graph = stage_graph()
    instance = context.instance
    keys = graph.get_ancestor_asset_keys(context.asset_key)
    records = []
    for key in sorted(keys, key=lambda k: k.to_user_string()):
        node = graph.get(key)
        if not node.is_materializable:
            continue
        pdef = node.partitions_def
        for pk in (pdef.get_partition_keys() if pdef else [None]):
            flt = dg.AssetRecordsFilter(asset_key=key, asset_partitions=[pk] if pk else None)
            found = instance.fetch_materializations(flt, limit=1).records
            if not found:
                continue
            rec = found[0]
            tags = rec.asset_materialization.tags or {}
            upstream = []
            for parent in sorted(graph.get_parents_partitions(key, pk).parent_partitions,
                                 key=lambda p: (p.asset_key.to_user_string(), p.partition_key or "")):
                parent_tags = {}
                if graph.get(parent.asset_key).is_materializable:
                    pflt = dg.AssetRecordsFilter(asset_key=parent.asset_key,
                                                 asset_partitions=[parent.partition_key] if parent.partition_key else None)
                    prec = instance.fetch_materializations(pflt, limit=1).records
                    parent_tags = (prec[0].asset_materialization.tags or {}) if prec else {}
                upstream.append({"asset": parent.asset_key.to_user_string(), "partition": parent.partition_key,
                                 "data_version": parent_tags.get("dagster/data_version")})
            sources = {}
            if key.to_user_string() == RAW_SOURCE and pk and storage.source_dir(pk).exists():
                sources = folder_fingerprint(storage.source_dir(pk).resolve())
            records.append(PartitionRecord(asset=key.to_user_string(), partition=pk,
                                           code_version=tags.get("dagster/code_version"),
                                           data_version=tags.get("dagster/data_version"),
                                           run_id=rec.run_id, upstream=upstream, source_files=sources))
    return records


@dg.asset(
    deps=[dg.AssetDep(a, partition_mapping=dg.AllPartitionMapping()) for a in RELEASED_ASSETS],
    group_name="release",
    code_version=code_version("cpb_assets.release.manifest", "cpb_assets.release.croissant",
                              "cpb_assets.release.licences", "cpb_assets.release.assets"),
    kinds={"python", "json"},
    description="A frozen copy of the compendium's tables under $CPB_HOME/releases/<tag>/ with a manifest "
                "(sha256, size, rows of every file; code and data versions, run ids and upstream lineage of "
                "every partition back to the source files), Croissant metadata and a licence manifest. "
                "`cpb audit <tag>` re-checks it.",
)
def release(context: dg.AssetExecutionContext, config: ReleaseConfig, storage: StorageResource,
            source_catalog: SourceCatalogResource) -> dg.MaterializeResult:
    tag = config.tag
    if not TAG_PATTERN.match(tag):
        raise ReleaseError(f"release tag {tag!r}: use letters, digits, '.', '_' or '-' (e.g. 2026.12)")
    root = storage.path("releases")
    final = root / tag
    if final.exists():
        raise ReleaseError(f"release {tag!r} exists at {final}; a release is never overwritten — choose a new tag")
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{tag}.{uuid.uuid4().hex[:8]}.tmp"
    synthetic = source_catalog.profile == "demo"
    try:
        tmp.mkdir()
        files = released_files(storage.root)
        context.log.info(f"release {tag}: copying {len(files)} files")

        def progress(i: int, n: int) -> None:
            if i == n or i % 50 == 0:
                context.log.info(f"release {tag}: {i}/{n} files")

        entries = copy_products(storage.root, tmp, files, progress)
        partitions = partition_records(context, storage)
        created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
        licences = licence_manifest(DATASETS, synthetic)
        manifest = build_manifest(tag, entries, partitions, created=created, synthetic=synthetic,
                                  code={"release_code_version": context.assets_def.code_versions_by_key.get(
                                      context.asset_key)})
        write_json(tmp / "manifest.json", manifest)
        write_json(tmp / "licences.json", licences)
        summary = "; ".join(sorted({f"{v['licence']} ({v['status']})" for v in licences.values()}))
        write_json(tmp / "croissant.json", croissant_metadata(
            tag, entries, tmp, synthetic=synthetic, date_published=created[:10], licence_summary=summary,
            description="Harmonized small-molecule perturbation transcriptomics: harmonized samples, limma "
                        "signatures and the products built on them (Chem-PerturBridge)."))
        tmp.chmod(0o755)
        tmp.rename(final)  # one step: the tag appears complete or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    total = sum(e["bytes"] for e in entries)
    return dg.MaterializeResult(metadata={
        "tag": tag, "path": dg.MetadataValue.path(str(final)), "files": len(entries),
        "bytes": total, "partitions": len(partitions), "synthetic": synthetic,
        "tables": dg.MetadataValue.json(sorted({e["path"].split("/")[1] for e in entries
                                               if e["path"].startswith("tables/")})),
    })
