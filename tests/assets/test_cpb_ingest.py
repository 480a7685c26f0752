"""`cpb ingest DATASET FOLDER`: the real-layout L1000 fixtures through Dagster, recorded with lineage."""
from __future__ import annotations

import io

import anndata as ad
import dagster as dg
import duckdb
import pytest

from cpb_jobs.cli import ingest, main
from tests.conftest import REPO, make_home, home_environment

FIXTURES = REPO / "tests" / "data"
EXCERPT = REPO / "data" / "reference" / "cellosaurus" / "cellosaurus_excerpt.txt"


@pytest.fixture(scope="module")
def ingest_home(tmp_path_factory):
    """One home where both L1000 fixtures were ingested (raw_source → cellosaurus → compound_registry →
    harmonized_adata), the second without --cellosaurus."""
    home = make_home(tmp_path_factory.mktemp("ingest"))
    outputs = {}
    with home_environment(home):
        for ds, extra in (("l1000_phase1", {"cellosaurus_file": str(EXCERPT)}), ("l1000_phase2", {})):
            out = io.StringIO()
            outputs[ds] = (ingest(ds, FIXTURES / ds, home=str(home), out=out, **extra), out.getvalue())
    return home, outputs


@pytest.mark.parametrize("dataset, kept, quarantined, n_source_cid", [
    ("l1000_phase1", 186, 14, 12), ("l1000_phase2", 354, 24, 12)])
def test_ingest_real_layout(ingest_home, dataset, kept, quarantined, n_source_cid):
    home, outputs = ingest_home
    rc, text = outputs[dataset]
    assert rc == 0, text
    assert f"samples kept        {kept} (" in text and f"quarantined         {quarantined}\n" in text
    assert f"{n_source_cid:>8,}  source_cid" in text
    a = ad.read_h5ad(home / "harmonized" / f"{dataset}.h5ad")
    assert a.shape == (kept, 978) and a.uns["synthetic"] is False
    con = duckdb.connect(str(home / "catalog.duckdb"), read_only=True)
    cov = dict(con.execute("select cid_method, n_compounds from compound_coverage where dataset = ?",
                           [dataset]).fetchall())
    assert cov["source_cid"] == n_source_cid and cov["unresolved"] == 55 - n_source_cid
    # the treated samples with a shipped CID carry it into the harmonized obs
    obs = a.obs[~a.obs["is_control"]]
    assert set(obs.loc[obs["perturbagen_name"] == "neratinib", "pubchem_cid"].astype(str)) == {"9915743"}


def test_ingest_runs_are_recorded_with_lineage(ingest_home, monkeypatch):
    home, _ = ingest_home
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    with dg.DagsterInstance.get() as instance:
        assert instance.get_materialized_partitions(dg.AssetKey("raw_source")) == {"l1000_phase1", "l1000_phase2"}
        assert instance.get_materialized_partitions(dg.AssetKey("harmonized_adata")) == {"l1000_phase1",
                                                                                          "l1000_phase2"}
        cello = instance.get_latest_materialization_event(dg.AssetKey("cellosaurus")).asset_materialization
        assert cello.metadata["file"].value == str(EXCERPT) and cello.metadata["built_excerpt"].value is True
        assert len(cello.metadata["sha256"].value) == 64
        ev = instance.get_latest_materialization_event(dg.AssetKey("raw_source")).asset_materialization
        assert ev.metadata["synthetic"].value is False and ev.metadata["profile"].value == "real"
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"cpb/launched_by": "cpb ingest"}))
        assert len(runs) == 7  # 4 steps for phase 1 (with cellosaurus), 3 for phase 2


def test_missing_files_name_the_downloads(tmp_path, capsys):
    (tmp_path / "l1000").mkdir()
    rc = main(["ingest", "l1000_phase2", str(tmp_path / "l1000"), "--home", str(tmp_path / "home")])
    text = capsys.readouterr().out
    assert rc == 2
    assert "*Level3*.gctx*" in text and str(tmp_path / "l1000") in text
    assert "GSE70138_Broad_LINCS_Level3_INF_mlr12k_n345976x12328_2017-03-06.gctx.gz" in text
    assert "https://ftp.ncbi.nlm.nih.gov/geo/series/GSE70nnn/GSE70138/suppl/" in text
