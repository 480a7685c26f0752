"""Reference assets: the Cellosaurus contexts table."""

from pathlib import Path

import dagster as dg

from cpb_assets.harmonize.cellosaurus import CELLOSAURUS_URL, read_cellosaurus, release_of
from cpb_assets.sources.base import RemoteFile
from cpb_assets.versioning import code_version
from cpb_resources.catalog import CatalogResource
from cpb_resources.sources import SourceCatalogResource, sha256_file
from cpb_resources.storage import StorageResource, write_parquet

REPO = Path(__file__).resolve().parents[2]
EXCERPT = REPO / "data" / "reference" / "cellosaurus" / "cellosaurus_excerpt.txt"


class CellosaurusConfig(dg.Config):
    """path: a local ``cellosaurus.txt`` to parse instead (``cpb ingest --cellosaurus``)."""

    path: str = ""


def cellosaurus_file(profile: str, home: Path, path: str = "") -> Path:
    """The flat file to parse: `path` when given, else the shipped BUILT excerpt (demo profile) or
    ``cellosaurus.txt`` downloaded to ``$CPB_HOME/landing/cellosaurus`` (real profile)."""
    if path:
        return Path(path)
    if profile != "real":
        return EXCERPT
    from cpb_assets.sources.download import download
    return download(RemoteFile(CELLOSAURUS_URL, "cellosaurus.txt", None, "CC BY 4.0"), home / "landing" / "cellosaurus")


@dg.asset(group_name="reference", code_version=code_version("cpb_assets.harmonize.cellosaurus",
                                                            "cpb_assets.reference.assets"),
          kinds={"python", "duckdb"},
          description="Cellosaurus cell lines (ID, AC, AS, SY, OX, SX, AG, CA, DI, HI of cellosaurus.txt) as a "
                      "contexts table (DuckDB view `cellosaurus`); harmonization resolves cell-line labels "
                      "against it. Demo profile: a BUILT excerpt shipped in data/reference/cellosaurus.")
def cellosaurus(context: dg.AssetExecutionContext, config: CellosaurusConfig, storage: StorageResource,
                catalog: CatalogResource, source_catalog: SourceCatalogResource) -> dg.MaterializeResult:
    path = cellosaurus_file(source_catalog.profile, storage.root, config.path)
    table = read_cellosaurus(path)
    digest = sha256_file(path)
    write_parquet(table.astype("string"), storage.table_path("cellosaurus"))
    catalog.refresh()
    context.log.info(f"cellosaurus: {len(table)} cell lines from {path.name}")
    return dg.MaterializeResult(metadata={
        "file": dg.MetadataValue.path(str(path)), "sha256": digest, "release": release_of(path) or "unknown",
        "built_excerpt": path == EXCERPT, "n_lines": len(table),
        "n_human": int(table["species"].eq("Homo sapiens").sum()),
    }, data_version=dg.DataVersion(digest[:16]))
