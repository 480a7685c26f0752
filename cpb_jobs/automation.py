"""Keeping the compendium fresh: a schedule observes the sources; declarative automation
materializes exactly the downstream partitions whose upstream data changed (docs/automation.md).

- ``observe_sources`` (job) observes ``source_files``: per dataset, the checksum of its
  landing files (real profile) or of its generator code and seed (demo profile), as the
  partition's data version.
- ``observe_sources_schedule`` runs it daily at 03:00 (``CPB_OBSERVE_CRON`` sets another cron).
- Every asset downstream of the sources, except ``release`` (a release is made on purpose,
  with a tag), carries ``AutomationCondition.eager()``: a partition is requested when a
  partition it depends on got a new data version (or it is missing), once its upstream
  partitions are present and not in progress. A changed dataset therefore requests its own
  raw, harmonized and DE partitions, the dataset pairs that include it, and what is trained
  on it — nothing else.
- ``cpb_automation`` (sensor) evaluates those conditions. Both the schedule and the sensor
  start STOPPED (turn them on in the UI's Automation tab, or set ``CPB_AUTOMATION=1``), so
  opening the UI on a fresh home does not start materializing the whole compendium.
"""
from __future__ import annotations

import os

import dagster as dg

NOT_AUTOMATED = {"source_files", "release"}
EAGER = dg.AutomationCondition.eager()
# Shared tables built from every dataset at once (the compound registry, the Cellosaurus contexts,
# stage 1 of the matching): a partition downstream of one would otherwise re-run whenever any
# dataset changed. A partition re-runs when its own partition's inputs change; what such a shared
# table changes for other partitions (a new PubChem answer, an L1000 I–II edge rescued through
# another pair) shows as stale in the UI and `cpb status` (docs/automation.md).
SHARED_TABLES = ("compound_registry", "cellosaurus", "match_candidates")
PARTITION_EAGER = EAGER.ignore(dg.AssetSelection.assets(*SHARED_TABLES))


def _automated(asset) -> bool:
    return isinstance(asset, dg.AssetsDefinition) and asset.is_materializable and not (
        {k.to_user_string() for k in asset.keys} & NOT_AUTOMATED)


def _condition(spec: dg.AssetSpec) -> dg.AutomationCondition:
    shared = any(d.asset_key.to_user_string() in SHARED_TABLES for d in spec.deps)
    return PARTITION_EAGER if shared and spec.partitions_def is not None else EAGER


def with_automation(assets: list) -> list:
    """The assets, each downstream one carrying its eager automation condition."""
    return [a.map_asset_specs(lambda spec: spec.replace_attributes(automation_condition=_condition(spec)))
            if _automated(a) else a for a in assets]


def automation_definitions(source_asset) -> tuple[list, list, list]:
    """(jobs, schedules, sensors) of the automation."""
    on = dg.DefaultScheduleStatus.RUNNING if os.environ.get("CPB_AUTOMATION") == "1" else dg.DefaultScheduleStatus.STOPPED
    sensor_on = dg.DefaultSensorStatus.RUNNING if os.environ.get("CPB_AUTOMATION") == "1" else dg.DefaultSensorStatus.STOPPED
    observe = dg.define_asset_job("observe_sources", selection=dg.AssetSelection.assets(source_asset.key),
                                  description="Observe every source's files; a changed checksum is a new data version.")
    schedule = dg.ScheduleDefinition(name="observe_sources_schedule", job=observe,
                                     cron_schedule=os.environ.get("CPB_OBSERVE_CRON", "0 3 * * *"),
                                     default_status=on, description="Observe the sources (daily by default).")
    sensor = dg.AutomationConditionSensorDefinition(
        "cpb_automation", target=dg.AssetSelection.all() - dg.AssetSelection.assets(*NOT_AUTOMATED),
        default_status=sensor_on, minimum_interval_seconds=60,
        description="Materializes the partitions whose upstream data versions changed.")
    return [observe], [schedule], [sensor]
