"""The one Definitions object of Chem-PerturBridge (loaded by workspace.yaml)."""
from __future__ import annotations

import dagster as dg

from cpb_assets.agreement.assets import AGREEMENT_ASSETS, AGREEMENT_CHECKS
from cpb_assets.effects.assets import de_table, de_values
from cpb_assets.harmonize.assets import compound_registry, harmonized_adata, harmonized_checks
from cpb_assets.lpm.assets import LPM_ASSETS, LPM_CHECKS
from cpb_assets.op3.assets import OP3_ASSETS
from cpb_assets.release.assets import release
from cpb_assets.reference.assets import cellosaurus
from cpb_assets.sources.assets import raw_source, source_files
from cpb_jobs.automation import automation_definitions, with_automation
from cpb_jobs.resources import build_resources

ALL_ASSETS = [source_files, raw_source, cellosaurus, compound_registry, harmonized_adata, de_table, *AGREEMENT_ASSETS, *LPM_ASSETS,
              *OP3_ASSETS, release]
ALL_CHECKS = [*harmonized_checks, de_values, *AGREEMENT_CHECKS, *LPM_CHECKS]

harmonize_job = dg.define_asset_job(
    "harmonize_job", selection=dg.AssetSelection.assets(raw_source, harmonized_adata),
    description="Native files and harmonized AnnData of one dataset partition.",
)

de_job = dg.define_asset_job(
    "de_job", selection=dg.AssetSelection.assets(de_table), partitions_def=de_table.partitions_def,
    description="limma DE tables of one dataset × mode partition.",
)

AUTOMATION_JOBS, SCHEDULES, SENSORS = automation_definitions(source_files)

defs = dg.Definitions(
    assets=with_automation(ALL_ASSETS),
    asset_checks=ALL_CHECKS,
    jobs=[harmonize_job, de_job, *AUTOMATION_JOBS],
    schedules=SCHEDULES,
    sensors=SENSORS,
    resources=build_resources(),
)
