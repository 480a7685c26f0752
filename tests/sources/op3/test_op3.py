"""OP3 pre-aggregated pseudobulk: filters, gene mapping, round trip, planted truth, bad input."""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cpb_assets.errors import SourceFormatError
from cpb_assets.harmonize.schema import validate_harmonized
from cpb_assets.demo import op3 as demo_op3
from cpb_assets.sources import op3
from cpb_assets.demo.world import DESIGNS, build_world

TP53, BRCA1, MARCHF1 = "ENSG00000141510", "ENSG00000012048", "ENSG00000145416"


def _registry(records):
    return pd.DataFrame({"source_id": records["source_id"], "pubchem_cid": "5090", "cid_method": "test"})


def _fixture(folder, symbols=("TP53", "MARCH1", "SYNTHETIC-AC1.1", "NOTAGENE1"), poison=None):
    """12 pseudobulk rows; 5 fail: 2 positive controls, 1 unknown cell type, 2 unknown donor."""
    kinds = [  # sm_name, control, cell_type, donor
        ("alpha", False, "T cells", "Donor 1"), ("alpha", False, "B cells", "Donor 2"),
        ("beta", False, "NK cells", "Donor 3"), ("beta", False, "T cells", "Donor 2"),
        (op3.DMSO_NAME, True, "T cells", "Donor 1"), (op3.DMSO_NAME, True, "B cells", "Donor 2"),
        (op3.DMSO_NAME, True, "NK cells", "Donor 3"),
        ("Belinostat", True, "T cells", "Donor 1"), ("Dabrafenib", True, "B cells", "Donor 2"),
        ("alpha", False, "Erythrocytes", "Donor 1"),
        ("beta", False, "T cells", "Donor 9"), ("beta", False, "B cells", "Donor 9"),
    ]
    obs = pd.DataFrame({
        "plate_name": "plate 1", "well": [f"A{k + 1}" for k in range(12)],
        "cell_type": [k[2] for k in kinds], "donor_id": [k[3] for k in kinds], "sm_name": [k[0] for k in kinds],
        "sm_lincs_id": [f"LSM-{k[0]}" for k in kinds], "SMILES": "C", "dose_uM": 1.0, "timepoint_hr": 24.0,
        "control": [k[1] for k in kinds], "cell_count_by_well_celltype": list(range(10, 22)),
        "split": ["train"] * 4 + ["control"] * 5 + ["train"] * 3,
    }, index=[f"r{k}" for k in range(12)])
    counts = np.tile(np.array([5.0, 7.0, 2.0, 1.0]), (12, 1))
    if poison is not None:
        counts[poison[0]] = poison[1]
    demo_op3.write_native(folder / "op3_FIXTURE.h5ad", obs, counts, list(symbols))
    pd.DataFrame({"symbol": ["SYNTHETIC-AC1.1"], "ensembl_id": [BRCA1], "note": ["fixture"]}).to_csv(
        folder / "symbol_fallback_FIXTURE.tsv", sep="\t", index=False)


def _listing(folder):
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir())


def test_filters_and_gene_mapping_hand_counted(tmp_path):
    _fixture(tmp_path)
    rec = op3.compound_records(tmp_path, "op3")
    assert sorted(rec["source_id"]) == ["alpha", "beta"]
    h = op3.harmonize(tmp_path, "op3", _registry(rec))
    a = h.adata
    assert validate_harmonized(a) == []
    assert a.n_obs == 7 and int(a.obs["is_control"].sum()) == 3
    assert h.quarantine.summary() == {"positive control (control, not Dimethyl Sulfoxide)": 2,
                                      "unknown cell type": 1, "unknown donor": 2,
                                      "gene symbol without an Ensembl ID": 1}
    # official symbol, previous symbol, fallback table; NOTAGENE1 unmapped
    assert list(a.var_names) == [TP53, MARCHF1, BRCA1]
    assert h.unmapped_genes["input"].tolist() == ["NOTAGENE1"]
    assert a.obs["psbulk_cells"].tolist() == [10, 11, 12, 13, 14, 15, 16]
    assert a.obs["psbulk_counts"].tolist() == [14] * 7
    o = a.obs.set_index("well")
    assert o.at["A2", "cell_type"] == "CL_0000236" and o.at["A3", "cell_type"] == "CL_0000623"
    assert o.at["A4", "cell_type"] == "CL_0000084" and o.at["A1", "cell_type"] == "CL_0000084"
    assert o.at["A2", "sex"] == "male" and o.at["A2", "development_stage"] == "52-year-old stage"
    assert o.at["A1", "sex"] == "female" and o.at["A1", "self_reported_ethnicity"] == "White"
    assert o.at["A5", "perturbagen"] == "DMSO" and o.at["A5", "pert_dose_uM"] == 0.0
    assert o["split"].tolist() == ["train"] * 4 + ["control"] * 3
    assert set(a.obs["plate"]) == {"plate1"}


def test_duplicate_var_genes_rejected(tmp_path):
    _fixture(tmp_path, symbols=("TP53", "MARCH1", "TP53", "NOTAGENE1"))
    before = _listing(tmp_path)
    with pytest.raises(SourceFormatError) as err:
        op3.harmonize(tmp_path, "op3", _registry(op3.compound_records(tmp_path, "op3")))
    assert err.value.file.endswith("op3_FIXTURE.h5ad") and err.value.field == "var_names"
    assert "TP53" in err.value.problem
    assert _listing(tmp_path) == before


def test_fractional_counts_rejected(tmp_path):
    _fixture(tmp_path, poison=((3, 2), 0.25))
    before = _listing(tmp_path)
    with pytest.raises(SourceFormatError) as err:
        op3.harmonize(tmp_path, "op3", _registry(op3.compound_records(tmp_path, "op3")))
    assert err.value.file.endswith("op3_FIXTURE.h5ad") and err.value.field == "X"
    assert _listing(tmp_path) == before


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    world = build_world()
    folder = tmp_path_factory.mktemp("op3")
    paths = demo_op3.write_synthetic(world, "op3", folder)
    rec = op3.compound_records(folder, "op3")
    return world, paths, rec, op3.harmonize(folder, "op3", _registry(rec))


def test_synthetic_round_trip(demo):
    world, paths, rec, h = demo
    d = DESIGNS["op3"]
    a = h.adata
    assert all("SYNTHETIC" in p.name for p in paths)
    assert validate_harmonized(a) == []
    treated = len(d.cell_types) * len(d.compounds) * len(d.doses_uM) * len(d.times_h) * d.replicates
    assert int((~a.obs["is_control"]).sum()) == treated
    # controls kept = the DMSO rows of the native file, counted there (not from the writer's constant)
    native = ad.read_h5ad(next(p for p in paths if p.suffix == ".h5ad"), backed="r")
    n_dmso = int((native.obs["sm_name"].astype(str) == "Dimethyl Sulfoxide").sum())
    native.file.close()
    assert int(a.obs["is_control"].sum()) == n_dmso > 0
    assert set(a.obs["cell_type"]) == set(d.cell_types)
    assert len(rec) == len(d.compounds)
    assert h.quarantine.summary()["positive control (control, not Dimethyl Sulfoxide)"] == \
        len(op3.POSITIVE_CONTROLS) * len(d.cell_types) * d.replicates
    # the planted synthetic symbols nothing resolves are reported; the fallback ones are mapped
    assert {f"SYNTHETIC-LINC{k:03d}" for k in range(1, demo_op3.N_UNMAPPED + 1)} <= set(h.unmapped_genes["input"])
    assert not h.unmapped_genes["input"].str.startswith("SYNTHETIC-AC").any()
    assert {"MARCH1", "SEPT7"} <= set(a.var["symbol"])
    assert (a.obs["psbulk_cells"] >= demo_op3.MIN_CELLS).all() and "split" in a.obs


def test_planted_truth(demo):
    """Strong compound 30 vs DMSO in T cells: the log ratio tracks the planted logFC."""
    world, _, _, h = demo
    a = h.adata
    c = DESIGNS["op3"].compounds[0]
    assert world.compounds["potency"].iloc[c] == 2.0
    X = a.X.toarray().astype(float)
    cpm = X / X.sum(axis=1, keepdims=True) * 1e6
    t = (a.obs["cell_type"] == "CL_0000084").to_numpy()
    trt = t & (a.obs["perturbagen"] == world.compounds["name"].iloc[c]).to_numpy()
    ctl = t & a.obs["is_control"].to_numpy()
    lfc = np.log2(cpm[trt].mean(0) + 1) - np.log2(cpm[ctl].mean(0) + 1)
    idx = world.gene_index(a.var_names)
    known = idx >= 0
    truth = world.true_logfc(c, "CL_0000084", 1.0, 24.0, genes=idx[known], dataset=op3.DATASET)
    sel = (truth != 0) & (cpm[ctl].mean(0)[known] > 50)
    r = np.corrcoef(lfc[known][sel], truth[sel])[0, 1]
    assert r > 0.7


def test_round_trip_is_labelled_synthetic_and_uses_dataset_assay(demo):
    from cpb_assets.datasets import DATASET_INFO
    from cpb_assets.harmonize.schema import OBS_COLUMNS, OPTIONAL_OBS

    a = demo[3].adata
    assert a.uns["synthetic"] is True
    # one assay string per dataset, from DATASET_INFO (OP3's module used to write its own)
    assert set(a.obs["assay"]) == {DATASET_INFO["op3"].assay} == {"10x scRNA-seq pseudobulk"}
    assert set(a.obs.columns) - set(OBS_COLUMNS) <= set(OPTIONAL_OBS)


# ---------------------------------------------------------------- real-layout fixture (tests/data/op3)

def _real_fixture(tmp_path):
    import shutil
    from pathlib import Path

    src = Path(__file__).resolve().parents[2] / "data" / "op3"
    shutil.copytree(src, tmp_path / "op3")
    return tmp_path / "op3"


def test_real_layout_fixture_maps_symbols_with_the_fallback(tmp_path):
    folder = _real_fixture(tmp_path)
    reg = pd.DataFrame(columns=["source_id", "pubchem_cid", "cid_method"])
    h = op3.harmonize(folder, "op3", reg)
    assert h.adata.shape == (32, 59) and int(h.adata.obs["is_control"].sum()) == 16
    assert h.adata.var.loc["ENSG00000122545", "symbol"] == "SEPT7"  # the previous symbol of SEPTIN7
    assert h.unmapped_genes["input"].tolist() == ["AC000061.1"]
    assert h.quarantine.summary()["positive control (control, not Dimethyl Sulfoxide)"] == 8


@pytest.mark.parametrize("how", ["empty", "truncated"])
def test_empty_or_truncated_h5ad_is_a_source_format_error(tmp_path, how):
    folder = _real_fixture(tmp_path)
    path = folder / "pseudobulk_filtered_with_uns.h5ad"
    raw = path.read_bytes()
    path.write_bytes(b"" if how == "empty" else raw[: len(raw) // 2])
    for call in (lambda: op3.compound_records(folder, "op3"),
                 lambda: op3.harmonize(folder, "op3", pd.DataFrame(columns=["source_id", "pubchem_cid",
                                                                            "cid_method"]))):
        with pytest.raises(SourceFormatError) as e:
            call()
        assert e.value.file == str(path) and e.value.field == "<h5ad>"


def test_one_compound_with_two_structures_is_a_format_error(tmp_path):
    import anndata as ad

    folder = _real_fixture(tmp_path)
    path = folder / "pseudobulk_filtered_with_uns.h5ad"
    a = ad.read_h5ad(path)
    smiles = a.obs["SMILES"].astype(object)
    smiles.iloc[(a.obs["sm_name"] == "fixture-drug-5").to_numpy().nonzero()[0][0]] = "CCCC"
    a.obs["SMILES"] = smiles.astype("category")
    a.write_h5ad(path)
    with pytest.raises(SourceFormatError) as e:
        op3.compound_records(folder, "op3")
    assert e.value.field == "obs/sm_name" and "fixture-drug-5" in e.value.problem
