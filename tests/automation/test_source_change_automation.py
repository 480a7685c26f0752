"""Change one byte of one source file: after observation exactly that dataset's partitions and
their dependants are requested, and once they are materialized nothing more is."""
import warnings

import dagster as dg
import pytest

warnings.filterwarnings("ignore")


@pytest.fixture
def automated(tmp_path, monkeypatch):
    from cpb_assets.datasets import DATASETS
    from cpb_assets.sources.assets import source_files
    from cpb_jobs.automation import automation_definitions, with_automation
    from cpb_jobs.definitions import ALL_ASSETS, ALL_CHECKS
    from cpb_jobs.resources import build_resources
    from cpb_resources.sources import SourceCatalogResource
    from cpb_resources.storage import StorageResource

    monkeypatch.setenv("CPB_HOME", str(tmp_path))
    landing = tmp_path / "landing"
    for ds in DATASETS:  # a landing folder per dataset: its checksum is the partition's data version
        (landing / ds).mkdir(parents=True)
        (landing / ds / "counts.bin").write_bytes(ds.encode() * 10)
    jobs, schedules, sensors = automation_definitions(source_files)
    defs = dg.Definitions(assets=with_automation(ALL_ASSETS), asset_checks=ALL_CHECKS, jobs=jobs,
                          schedules=schedules, sensors=sensors,
                          resources={**build_resources(), "storage": StorageResource(home=str(tmp_path)),
                                     "source_catalog": SourceCatalogResource(profile="real", landing=str(landing))})
    return defs, landing


def _observe(defs, instance):
    job = defs.resolve_job_def("observe_sources")
    assert job.execute_in_process(instance=instance).success


def _requested(result) -> set[str]:
    """'asset[partition]' (or 'asset') for every asset partition the evaluation requested."""
    return {f"{ap.asset_key.to_user_string()}[{ap.partition_key}]" if ap.partition_key else ap.asset_key.to_user_string()
            for ap in result._requested_asset_partitions}


def _all_partitions(defs) -> set[str]:
    graph = defs.resolve_asset_graph()
    out = set()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if not node.is_materializable:
            continue
        name = key.to_user_string()
        out |= {f"{name}[{p}]" for p in node.partitions_def.get_partition_keys()} if node.partitions_def else {name}
    return out


def _report(instance, requested: set[str]):
    """Record the requested partitions as materialized (what the runs would do)."""
    for item in requested:
        key, _, part = item.partition("[")
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=part[:-1] or None))


def _run_ticks(defs, instance, cursor, max_ticks: int = 12):
    """Sensor ticks until nothing more is requested; each tick's requests are 'run' (recorded as
    materialized) before the next tick. Returns (all requested, cursor, number of ticks)."""
    requested: set[str] = set()
    for tick in range(max_ticks):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        cursor, now = result.cursor, _requested(result)
        if not now:
            return requested, cursor, tick
        requested |= now
        _report(instance, now)
    raise AssertionError(f"automation still requesting after {max_ticks} ticks: {sorted(now)[:10]}")


def test_one_changed_byte_requests_only_that_dataset_and_its_dependants(automated):
    defs, landing = automated
    with dg.DagsterInstance.ephemeral() as instance:
        _observe(defs, instance)
        _report(instance, _all_partitions(defs))  # a compendium that is built
        settled, cursor, _ = _run_ticks(defs, instance, None)
        _observe(defs, instance)  # nothing changed: nothing to do
        again, cursor, ticks = _run_ticks(defs, instance, cursor)
        assert again == set() and ticks == 0

        data = bytearray((landing / "cigs_tcm" / "counts.bin").read_bytes())
        data[3] ^= 0x01  # one byte of one source file
        (landing / "cigs_tcm" / "counts.bin").write_bytes(bytes(data))
        _observe(defs, instance)
        requested, cursor, _ = _run_ticks(defs, instance, cursor)

        partitioned = {r for r in requested if "[" in r}

        # the changed dataset's own partitions, and every pair that includes it…
        assert {"raw_source[cigs_tcm]", "harmonized_adata[cigs_tcm]", "de_table[cigs_tcm|group]",
                "de_table[cigs_tcm|sep]"} <= partitioned
        others = {r.split("[")[0] for r in partitioned if "cigs_tcm" not in r}
        # …and no partition of another dataset or pair: the only other partitions are the models
        # trained on all datasets (cigs_tcm included) and what is built from their embeddings
        assert others <= {"lpm_checkpoint", "lpm_finetuned", "compound_embeddings", "op3_descriptors",
                          "op3_predictions"}, others
        pairs = {r for r in partitioned if r.startswith("matched_conditions[")}
        assert pairs and all("cigs_tcm" in p for p in pairs)
        assert "release" not in {r.split("[")[0] for r in requested}
        # after they ran, the sources observed again: nothing is left to do
        _observe(defs, instance)
        done, _, ticks = _run_ticks(defs, instance, cursor)
        assert done == set() and ticks == 0
