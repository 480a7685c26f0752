"""Source assets: the observed origin of each dataset and its native files."""

import dagster as dg

from cpb_assets.datasets import DATASET_INFO, DATASETS, dataset_partitions
from cpb_assets.sources.landing import demo_seed, materialize_source, origin_version
from cpb_assets.sources.registry import SOURCES, writer_modules
from cpb_assets.versioning import code_version
from cpb_resources.sources import SourceCatalogResource, combined_version, folder_fingerprint
from cpb_resources.storage import StorageResource, atomic_path

SOURCE_CODE_VERSION = code_version(*writer_modules(), "cpb_assets.demo.world", "cpb_assets.sources.landing",
                                   "cpb_resources.sources")


@dg.observable_source_asset(partitions_def=dataset_partitions, group_name="sources",
                            description="The origin of each dataset's files, observed by checksum: the demo "
                                        "world's generator (code + seed) or the landing folder of real downloads.")
def source_files(storage: StorageResource, source_catalog: SourceCatalogResource) -> dg.DataVersionsByPartition:
    return dg.DataVersionsByPartition({
        ds: origin_version(SOURCES[ds], source_catalog.profile, source_catalog.seed,
                           source_catalog.landing_dir(storage.root, ds)) for ds in DATASETS})


@dg.asset(partitions_def=dataset_partitions, deps=[source_files], group_name="sources",
          code_version=SOURCE_CODE_VERSION, kinds={"python"},
          description="Native files of one source under $CPB_HOME/sources/<dataset>/ (downloaded, or generated "
                      "from the SYNTHETIC demo world in the demo profile).")
def raw_source(context: dg.AssetExecutionContext, storage: StorageResource,
               source_catalog: SourceCatalogResource) -> dg.MaterializeResult:
    ds = context.partition_key
    dest = storage.source_dir(ds)
    with atomic_path(dest, is_dir=True) as tmp:
        materialize_source(SOURCES[ds], tmp, profile=source_catalog.profile, seed=source_catalog.seed,
                           landing=source_catalog.landing_dir(storage.root, ds), download=source_catalog.download)
        fingerprint = folder_fingerprint(tmp)
    if source_catalog.profile == "demo":
        _ensure_truth(storage, demo_seed(source_catalog.seed))
    context.log.info(f"{ds}: {len(fingerprint)} files in {dest}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(dest)),
            "profile": source_catalog.profile,
            "synthetic": source_catalog.profile == "demo",
            "source": DATASET_INFO[ds].source,
            "licence": DATASET_INFO[ds].licence,
            "files": dg.MetadataValue.md("\n".join(f"- `{n}` sha256 `{h[:16]}…`" for n, h in fingerprint.items())),
        },
        data_version=dg.DataVersion(combined_version(fingerprint)),
    )


def _ensure_truth(storage: StorageResource, seed: int) -> None:
    """The demo world's planted truth, written once beside the sources."""
    from cpb_assets.demo.world import build_world, write_truth

    truth = storage.path("sources", "_truth")
    if not (truth / "README.json").exists():
        write_truth(build_world(seed), truth)
