"""The four DRUG-seq partitions from their real-layout fixtures (tests/data/<dataset>) through the Dagster assets.

The production path of ``cpb ingest``: raw_source (real profile, landing
folders holding the fixtures) → compound_registry → harmonized_adata with its
checks; the registry runs once for all four (it resolves the 4,343 compounds
of the real MoA Box table).
"""
from __future__ import annotations

import io
from pathlib import Path

import anndata as ad
import pandas as pd
import pytest

DATA = Path(__file__).resolve().parents[1] / "data"
# samples kept, controls, genes; hand-counted from tests/data/build_drugseq_fixtures.py
EXPECTED = {
    # 6 plates × 24 SA wells − 2 zero libraries, + 2 robust RC per plate; 20 geneIDs → 16 genes (patch summed;
    # orphan, split and the split gene's other geneID quarantined)
    "novartis_drugseq": (154, 12, 16),
    # 24 samples − 1 zero library − 2 non-DMSO controls (2 exact repeats merged); 13 genes + 2 ERCC
    "vcpi_0001": (21, 4, 13),
    "vcpi_0002": (21, 4, 13),
    # 32 samples − 4 positive controls − 1 zero library; 12 var rows: ERCC out, NA filled, ACTB twice summed
    "gdpx2": (27, 12, 10),
}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, ingest_real_layouts):
    """raw_source of the four partitions from a landing root of fixture copies, the registry once, then harmonize."""
    import shutil

    from cpb_resources.sources import SourceCatalogResource

    home = tmp_path_factory.mktemp("drugseq_real")
    landing = home / "landing"
    for ds in EXPECTED:
        shutil.copytree(DATA / ds, landing / ds)  # exact release names: nothing to download
    catalog = SourceCatalogResource(profile="real", landing=str(landing))
    return home, ingest_real_layouts(home, list(EXPECTED), lambda partition: catalog)


@pytest.mark.parametrize("ds", list(EXPECTED))
def test_real_layout_through_the_assets(ingested, ds):
    home, logs = ingested
    rc, log = logs[ds]
    assert rc == 0, log
    a = ad.read_h5ad(home / "harmonized" / f"{ds}.h5ad")
    n_obs, n_ctrl, n_genes = EXPECTED[ds]
    assert (a.n_obs, int(a.obs["is_control"].sum()), a.n_vars) == (n_obs, n_ctrl, n_genes)
    assert a.uns["synthetic"] in (True, "True")  # the built fixtures say SYNTHETIC inside their files
    q = pd.read_parquet(home / "tables" / "quarantine" / f"dataset={ds}" / "part.parquet")
    assert "zero-count library" in set(q["reason"])
    assert f"summary of {ds}:" in log


def test_novartis_compounds_from_the_real_table(ingested):
    home, _ = ingested
    comp = pd.read_parquet(home / "tables" / "compounds" / "part.parquet")
    comp = comp[comp["dataset"] == "novartis_drugseq"]
    assert len(comp) == 4343  # every compound of the real MoA Box table but DMSO and water


@pytest.mark.parametrize("ds,words", [("vcpi_0001", ["vcpi.load_experiment('vcpi-0001')",
                                                     "vcpi-0001_metadata.parquet"]),
                                      ("gdpx2", ["laminlabs/pertdata", "ginkgo-datapoints/vcpi/X.h5ad"]),
                                      ("novartis_drugseq", ["zenodo.org/records/14291446", "Exp_gzip.RData"])])
def test_ingest_says_what_to_download_and_where(tmp_path, ds, words):
    from cpb_jobs.cli import ingest

    empty = tmp_path / "landing"
    empty.mkdir()
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CPB_HOME", str(tmp_path / "home"))
        mp.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster"))
        assert ingest(ds, empty, home=str(tmp_path / "home"), out=out) == 2
    msg = out.getvalue()
    assert str(empty) in msg and all(w in msg for w in words), msg
