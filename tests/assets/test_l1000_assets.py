"""L1000 I and II end to end through Dagster: files, catalog, checks, registry, bad partitions."""
from __future__ import annotations

import hashlib

import anndata as ad
import dagster as dg
import duckdb
import pandas as pd
import pytest

from cpb_assets.harmonize.assets import harmonized_adata
from cpb_assets.sources.assets import raw_source
from cpb_assets.demo.world import DESIGNS
from cpb_jobs.definitions import ALL_ASSETS, ALL_CHECKS
from cpb_jobs.resources import build_resources


def test_outputs_land_under_home(l1000_home):
    for ds in ("l1000_phase1", "l1000_phase2"):
        a = ad.read_h5ad(l1000_home / "harmonized" / f"{ds}.h5ad")
        assert a.n_vars == 978 and a.n_obs > 1000
        assert set(a.obs["dataset"].astype(str)) == {ds}
        # the reader wrote the h5ad itself (X block by block), the asset linked it into the bundle
        assert a.X.dtype == "float32" and a.X.shape == (a.n_obs, 978)
    assert not any((l1000_home / "work" / "harmonized").glob("*/*"))  # the reader's scratch removed
    assert (l1000_home / "catalog.duckdb").exists()
    assert (l1000_home / "sources" / "_truth" / "effects.npz").exists()


def test_catalog_views(l1000_home):
    con = duckdb.connect(str(l1000_home / "catalog.duckdb"), read_only=True)
    n = dict(con.execute("select dataset, count(*) from harmonized_obs group by 1").fetchall())
    for ds in n:
        a = ad.read_h5ad(l1000_home / "harmonized" / f"{ds}.h5ad", backed="r")
        assert n[ds] == a.n_obs
    assert set(n) == {"l1000_phase1", "l1000_phase2"}
    cols = {r[0] for r in con.execute("describe harmonized_obs").fetchall()}
    assert {"sample_id", "pubchem_cid", "pert_dose_uM", "cell_type", "dataset"} <= cols
    # controls are NULL-CID rows, treated rows all carry a CID in the demo world
    nulls = con.execute("select count(*) from harmonized_obs where pubchem_cid is null and not is_control").fetchone()
    assert nulls == (0,)
    reasons = dict(con.execute("select reason, sum(n) from quarantine where dataset='l1000_phase1' group by 1")
                   .fetchall())
    d = DESIGNS["l1000_phase1"]
    plates = len(d.cell_types) * d.replicates * len(d.times_h)
    assert reasons == {"pert_type trt_poscon not kept (trt_cp and ctl_vehicle only)": plates,
                       "vehicle control other than DMSO": plates}


def test_compound_registry_resolves_every_demo_compound(l1000_home, world):
    con = duckdb.connect(str(l1000_home / "catalog.duckdb"), read_only=True)
    reg = con.execute("select dataset, source_id, pubchem_cid, cid_method, source_cid, source_cid_check "
                      "from compounds").df()
    truth = world.compounds.set_index("brd_id")["pubchem_cid"]
    assert (reg["pubchem_cid"].to_numpy() == truth.loc[reg["source_id"]].to_numpy()).all()
    # structures first; without structure the CID pert_info ships, then the BRD ID
    idx = {world.compounds["brd_id"].iloc[c]: c for c in range(len(world.compounds))}
    for r in reg.itertuples():
        c = idx[r.source_id]
        expected = ("inchikey" if c % 7 != 3 else "source_cid" if c % 2 else "catalog_id")
        assert r.cid_method == expected, (r.dataset, r.source_id)
    # the planted wrong CID of each phase is flagged; the structure's CID was kept (checked above)
    bad = reg[reg["source_cid_check"] == "mismatch"]
    assert sorted(bad["dataset"]) == ["l1000_phase1", "l1000_phase2"] and set(bad["cid_method"]) == {"inchikey"}
    cov = con.execute("select dataset, cid_method, n_compounds, source_cid_mismatches from compound_coverage "
                      "where n_compounds > 0 order by 1, 2").df()
    got = {(r.dataset, r.cid_method): r.n_compounds for r in cov.itertuples()}
    assert got == reg.groupby(["dataset", "cid_method"]).size().to_dict()
    assert cov["source_cid_mismatches"].sum() == 2


def test_materializations_and_checks_recorded(l1000_home, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(l1000_home / "dagster"))
    with dg.DagsterInstance.get() as instance:
        mats = instance.get_materialized_partitions(dg.AssetKey("harmonized_adata"))
        assert mats == {"l1000_phase1", "l1000_phase2"}
        checks = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("harmonized_adata"), n) for n in
             ("harmonized_row_counts", "harmonized_quarantine_share", "harmonized_cids_resolved",
              "harmonized_gene_axis")])
        assert len(checks) == 4
        assert all(c.status.value == "SUCCEEDED" for c in checks.values())


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(selection, key, instance):
    return dg.materialize([*ALL_ASSETS, *ALL_CHECKS], selection=selection, partition_key=key, instance=instance,
                          resources=build_resources(), raise_on_error=False)


def test_bad_partition_fails_alone(l1000_home, tmp_path, monkeypatch):
    """A corrupt source stops its own partition with file + field named; the other is untouched."""
    import shutil

    cpb_home = tmp_path / "cpb"
    shutil.copytree(l1000_home, cpb_home)  # a private copy of the materialized demo home
    monkeypatch.setenv("CPB_HOME", str(cpb_home))
    monkeypatch.setenv("DAGSTER_HOME", str(cpb_home / "dagster"))
    good = cpb_home / "harmonized" / "l1000_phase2.h5ad"
    bad = cpb_home / "harmonized" / "l1000_phase1.h5ad"
    good_sha, bad_sha = _sha(good), _sha(bad)
    obs_before = pd.read_parquet(cpb_home / "tables" / "harmonized_obs" / "dataset=l1000_phase2")
    inst = next((cpb_home / "sources" / "l1000_phase1").glob("*inst_info*"))
    text = inst.read_text(encoding="utf-8")
    assert "µM" in text  # Phase I writes µM (Phase II 'um')
    inst.write_bytes(text.encode("latin-1"))  # a latin-1 µ byte
    with dg.DagsterInstance.get() as instance:
        checks = dg.AssetSelection.checks_for_assets(harmonized_adata)
        result = _run(dg.AssetSelection.assets(harmonized_adata) | checks, "l1000_phase1", instance)
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        msg = failure.step_failure_data.error.cause.message if failure.step_failure_data.error.cause else \
            failure.step_failure_data.error.message
        assert inst.name in msg and ("pert_idose" in msg or "pert_dose_unit" in msg)
        # checks did not run on the failed partition (blocked), nothing rewritten
        assert _sha(bad) == bad_sha and _sha(good) == good_sha
        leftovers = [p.name for p in (cpb_home / "harmonized").iterdir() if p.name.startswith(".")]
        assert leftovers == []
        scratch = cpb_home / "work" / "harmonized"  # where the L1000 reader writes its h5ad
        assert not any(scratch.glob("*/*"))  # the failed run's folder removed
        # what a killed run left there is removed by the next run of that partition (under its lock)
        orphan = scratch / "l1000_phase2" / "deadbeef0000" / "l1000_phase2-deadbeef0000.h5ad"
        orphan.parent.mkdir(parents=True)
        orphan.write_bytes(b"partial")
        # the other partition still materializes
        assert _run(dg.AssetSelection.assets(harmonized_adata), "l1000_phase2", instance).success
        assert not any(scratch.glob("*/*"))
    pd.testing.assert_frame_equal(
        pd.read_parquet(cpb_home / "tables" / "harmonized_obs" / "dataset=l1000_phase2"), obs_before)


def test_raw_source_data_version_is_content_hash(l1000_home, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(l1000_home / "dagster"))
    from cpb_resources.sources import combined_version, folder_fingerprint

    with dg.DagsterInstance.get() as instance:
        ev = instance.get_latest_materialization_event(dg.AssetKey("raw_source"))
        assert ev is not None
        mat = ev.asset_materialization
        version = mat.tags.get("dagster/data_version")
        folder = l1000_home / "sources" / mat.partition
        assert version == combined_version(folder_fingerprint(folder))
        assert mat.metadata["synthetic"].value is True
