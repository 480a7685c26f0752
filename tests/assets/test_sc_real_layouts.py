"""Tahoe-100M, sci-Plex 3, OP3, CIGS and DILImap from their real-layout fixtures (tests/data/<dataset>) through Dagster.

The production path of ``cpb ingest``: raw_source (real profile, a landing
root holding copies of the fixtures under their release names) →
compound_registry (once) → harmonized_adata with its checks. One partition
also goes through the ``cpb ingest`` command itself.
"""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[1] / "data"
# samples kept, controls, genes; hand-counted from tests/data/build_sc_fixtures.py
EXPECTED = {
    # 4 wells × 2 lines (5 cells each); 3 planted cells fail QC; 303 genes (a duplicated symbol summed, 2 unmapped)
    "tahoe100m": (8, 2, 303),
    # 3 lines × 4 wells at 24 h + the A549 72 h plate's 4 wells (kept); 2 hash-failed nuclei; mouse/PAR_Y out
    "sciplex": (16, 4, 303),
    # 2 donors × 4 wells (Belinostat dropped) × 4 cell types; SEPT7 → SEPTIN7, one symbol unmapped
    "op3": (32, 16, 59),
    # 2 lines × (10 wells − Blank − RNA − JQ1); 1-Mar and SEPT7 repaired
    "cigs_mce": (14, 6, 40),
    "cigs_tcm": (14, 6, 40),
    # training plate: 12 wells − 1 LDH-flagged; test plate excluded; + the validation plate's 8 wells
    "dilimap_train": (11, 3, 303),
    "dilimap_train_val": (19, 7, 303),
}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, ingest_real_layouts):
    """raw_source of the seven partitions from a landing root of fixture copies, the registry once, then harmonize."""
    from cpb_resources.sources import SourceCatalogResource

    home = tmp_path_factory.mktemp("sc_real")
    landing = home / "landing"
    for ds in EXPECTED:
        shutil.copytree(DATA / ds, landing / ds)  # exact release names: nothing to download

    def catalog_for(partition):
        # a folder of the user's files, as `cpb ingest` passes it: nothing is downloaded (the fixture
        # holds one Tahoe plate of fourteen)
        return SourceCatalogResource(profile="real", folder=str(landing / (partition or "none")))

    return home, ingest_real_layouts(home, list(EXPECTED), catalog_for)


@pytest.mark.parametrize("ds", list(EXPECTED))
def test_real_layout_through_the_assets(ingested, ds):
    home, logs = ingested
    rc, log = logs[ds]
    assert rc == 0, log
    a = ad.read_h5ad(home / "harmonized" / f"{ds}.h5ad")
    n_obs, n_ctrl, n_genes = EXPECTED[ds]
    assert (a.n_obs, int(a.obs["is_control"].sum()), a.n_vars) == (n_obs, n_ctrl, n_genes)
    assert a.var_names.str.fullmatch(r"ENSG\d{11}").all() and np.issubdtype(a.X.dtype, np.integer)


def test_tahoe_fixture_facts(ingested):
    home, _ = ingested
    a = ad.read_h5ad(home / "harmonized" / "tahoe100m.h5ad")
    obs = a.obs
    assert (obs["psbulk_cells"] == 5).all() and set(obs["cell_type"]) == {"CVCL_0023", "CVCL_0320"}
    assert set(obs["plate"]) == {"plate3"}  # the plate-less cell joined no 'nan'/'None' plate
    # the drug table's own CIDs reach the samples (stray space in 'fixture-drug-2 ' stripped)
    trt = obs[~obs["is_control"]]
    assert dict(zip(trt["perturbagen"], trt["pubchem_cid"].astype(str))) == {"fixture-drug-1": "650001",
                                                                            "fixture-drug-2": "650002"}


def test_sciplex_keeps_72h_and_cigs_labels_resolve(ingested):
    home, _ = ingested
    obs = ad.read_h5ad(home / "harmonized" / "sciplex.h5ad").obs
    assert set(obs["pert_time_h"]) == {24.0, 72.0}
    assert set(obs.loc[obs["pert_time_h"] == 72.0, "cell_type"]) == {"CVCL_0023"}
    for ds in ("cigs_mce", "cigs_tcm"):  # cell_293T / 293T and cell_MDA_MB_231 / 231 (a number)
        obs = ad.read_h5ad(home / "harmonized" / f"{ds}.h5ad").obs
        assert obs["cell_type"].value_counts().to_dict() == {"CVCL_0063": 7, "CVCL_0062": 7}


def test_cpb_ingest_command_on_a_fixture_folder(tmp_path, monkeypatch):
    from cpb_jobs.cli import main

    monkeypatch.setenv("CPB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster"))
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    rc = main(["ingest", "cigs_tcm", str(DATA / "cigs_tcm"), "--home", str(tmp_path / "home")])
    text = out.getvalue()
    assert rc == 0, text
    assert "samples kept        14 (6 controls) × 40 genes" in text
    assert ad.read_h5ad(tmp_path / "home" / "harmonized" / "cigs_tcm.h5ad").n_obs == 14
