"""The one Definitions object of Chem-PerturBridge (loaded by workspace.yaml)."""
from __future__ import annotations

import dagster as dg

from cpb_assets.harmonize.assets import compound_registry, harmonized_adata, harmonized_checks
from cpb_assets.sources.assets import raw_source, source_files
from cpb_jobs.resources import build_resources

ALL_ASSETS = [source_files, raw_source, compound_registry, harmonized_adata]
ALL_CHECKS = [*harmonized_checks]

harmonize_job = dg.define_asset_job(
    "harmonize_job", selection=dg.AssetSelection.assets(raw_source, harmonized_adata),
    description="Native files and harmonized AnnData of one dataset partition.",
)

defs = dg.Definitions(
    assets=ALL_ASSETS,
    asset_checks=ALL_CHECKS,
    jobs=[harmonize_job],
    resources=build_resources(),
)
