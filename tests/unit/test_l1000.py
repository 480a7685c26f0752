"""L1000 readers and harmonization on the real plate, the demo world's files and bad input."""
from __future__ import annotations

import shutil

import h5py
import numpy as np
import pandas as pd
import pytest

from cpb_assets.errors import SourceFormatError
from cpb_assets.harmonize.schema import validate_harmonized
from cpb_assets.sources import l1000
from cpb_assets.sources.gctx import read_gct, read_gctx
from tests.conftest import REAL_GCT, REAL_GCTX

NO_REGISTRY = pd.DataFrame(columns=["source_id", "pubchem_cid", "cid_method"])
# fields both real files carry with the same meaning (the GCTX's QC fields were recomputed)
CONDITION_FIELDS = ["cell_id", "det_plate", "det_well", "pert_id", "pert_iname", "pert_type", "pert_dose",
                    "pert_dose_unit", "pert_time", "pert_time_unit", "pert_idose", "rna_plate", "rna_well"]


@pytest.fixture(scope="module")
def real_pair():
    return read_gctx(REAL_GCTX), read_gct(REAL_GCT)


def test_real_plate_shapes(real_pair):
    gctx, gct = real_pair
    assert gctx.data.shape == gct.data.shape == (978, 377)
    assert (gct.col_meta["pert_type"].value_counts().to_dict()
            == {"trt_cp": 328, "ctl_vehicle": 26, "trt_poscon": 23})
    # first value of the text file, read by hand: 200814_at in A03
    assert gct.data[0, 0] == pytest.approx(11.3819)
    assert gct.row_meta.index[0] == "200814_at" and gct.row_meta["pr_gene_id"].iloc[0] == 5720


def test_gct_and_gctx_agree(real_pair):
    """Same IDs and condition metadata; the GCTX holds the plate-normalized values of the GCT
    (provenance +ZSP), which correlate > 0.999 with a per-gene robust z-score of the GCT values."""
    gctx, gct = real_pair
    assert set(gctx.row_meta.index) == set(gct.row_meta.index)
    assert list(gctx.col_meta.index) == list(gct.col_meta.index)
    rows = gct.row_meta.index.get_indexer(gctx.row_meta.index)
    for f in CONDITION_FIELDS:
        a = gctx.col_meta[f].astype(str).to_numpy()
        b = gct.col_meta.loc[gctx.col_meta.index, f].astype(str).to_numpy()
        assert (a == b).all(), f
    B = gct.data[rows]
    med = np.median(B, axis=1, keepdims=True)
    mad = 1.4826 * np.median(np.abs(B - med), axis=1, keepdims=True)
    z = (B - med) / np.maximum(mad, 0.1)
    assert np.corrcoef(gctx.data.ravel(), z.ravel())[0, 1] > 0.999
    assert (gctx.row_meta["pr_gene_symbol"] == gct.row_meta.loc[gctx.row_meta.index, "pr_gene_symbol"]).all()


@pytest.mark.parametrize("reader, name", [(read_gct, "test_l1000.gct"), (read_gctx, "LJP005_Level3_INF.gctx")])
def test_harmonize_real_plate(tmp_path, reader, name):
    src = REAL_GCT if name.endswith(".gct") else REAL_GCTX
    gct = reader(src)
    inst = l1000._metadata_from_gct(gct)
    h = l1000.harmonize_gct(gct, inst, dataset="l1000_phase1", registry=NO_REGISTRY, matrix_file=src,
                            inst_file=src)
    a = h.adata
    assert validate_harmonized(a) == []
    assert a.shape == (26 + 328, 978)  # positive controls dropped, all landmarks mapped
    assert h.quarantine.summary() == {"pert_type trt_poscon not kept (trt_cp and ctl_vehicle only)": 23}
    assert set(a.obs["cell_type"]) == {"CVCL_0132"}  # A375
    assert set(a.obs["pert_time_h"]) == {24.0}
    treated = a.obs[~a.obs["is_control"]]
    assert sorted(treated["pert_dose_uM"].unique()) == [0.04, 0.12, 0.37, 1.11, 3.33, 10.0]
    assert (a.obs.loc[a.obs["is_control"], "pert_dose_uM"] == 0).all()
    assert set(a.obs["plate"]) == {"LJP005_A375_24H_X1_B19"}
    # no compound of this plate is in the offline reference: kept, flagged unresolved
    assert (treated["cid_method"] == "unresolved").all() and treated["pubchem_cid"].isna().all()
    # X is the file's matrix, reordered: check one value by IDs
    i = list(a.obs_names).index("LJP005_A375_24H_X1_B19_A03_DMSO_CVCL_0132")
    j = list(a.var_names).index("ENSG00000092010")  # PSME1, Entrez 5720, row 200814_at
    expected = gct.data[list(gct.row_meta.index).index("200814_at"), list(gct.col_meta.index).index(
        "LJP005_A375_24H_X1_B19:A03")]
    assert a.X[i, j] == pytest.approx(expected, rel=1e-6)


def test_real_level5_metadata_with_cr_line_endings():
    """The real LJP007 signature table: old-Mac CR line endings, pipe-joined replicate fields."""
    df = l1000.read_info_table(REAL_GCT.parent / "LJP_row_metadata.txt", ["det_plate", "distil_id"])
    assert len(df) == 358
    assert set(df["cell_id"]) == {"MCF7"}
    assert df["det_plate"].str.contains(r"\|").any()


@pytest.fixture(scope="module")
def demo_phase1(world, tmp_path_factory):
    folder = tmp_path_factory.mktemp("l1000_phase1")
    l1000.write_synthetic(world, "l1000_phase1", folder)
    return folder


def test_synthetic_files_are_labelled(demo_phase1):
    names = sorted(p.name for p in demo_phase1.iterdir())
    assert all("SYNTHETIC" in n for n in names)
    with h5py.File(next(demo_phase1.glob("*.gctx"))) as fh:
        assert b"SYNTHETIC" in fh.attrs["synthetic"]


def test_synthetic_roundtrip_matches_design(world, demo_phase1):
    from cpb_assets.sources.demo_world import DESIGNS

    d = DESIGNS["l1000_phase1"]
    rec = l1000.compound_records(demo_phase1, "l1000_phase1")
    assert len(rec) == len(d.compounds)
    registry = pd.DataFrame({"source_id": rec["source_id"], "pubchem_cid": "1", "cid_method": "test"})
    a = l1000.harmonize(demo_phase1, "l1000_phase1", registry).adata
    assert validate_harmonized(a) == []
    assert a.uns["synthetic"] is True  # the demo files say SYNTHETIC
    n_24 = len(d.cell_types) * d.replicates * (8 + len(d.compounds) * len(d.doses_uM))
    n_6 = len(d.cell_types) * d.replicates * (8 + len(d.extra["time_6h_compounds"]))
    assert a.n_obs == n_24 + n_6
    assert set(np.round(a.obs.loc[~a.obs["is_control"], "pert_dose_uM"], 6)) == set(d.doses_uM)
    # planted truth visible: treated - control mean vs true logFC for a strong compound in A549
    obs = a.obs
    strong = world.compounds.index[world.compounds["potency"] == 2.0][0]
    c = world.compounds.index.get_loc(strong)
    name = world.compounds.loc[strong, "name"]
    sel = (obs["perturbagen"] == name) & (obs["pert_dose_uM"] == 10.0) & (obs["cell_type"] == "CVCL_0023") \
        & (obs["pert_time_h"] == 24.0)
    ctl = obs["is_control"] & (obs["cell_type"] == "CVCL_0023") & (obs["pert_time_h"] == 24.0)
    observed = a.X[sel.to_numpy()].mean(0) - a.X[ctl.to_numpy()].mean(0)
    truth = world.true_logfc(c, "CVCL_0023", 10.0, 24.0, world.gene_index(a.var_names))
    assert np.corrcoef(observed, truth)[0, 1] > 0.8


# ------------------------------------------------------------------ bad input
def _copy(folder, tmp_path):
    dst = tmp_path / "src"
    shutil.copytree(folder, dst)
    return dst


def _inst(folder):
    return next(folder.glob("*inst_info*"))


def test_truncated_hdf5(demo_phase1, tmp_path):
    src = _copy(demo_phase1, tmp_path)
    gctx = next(src.glob("*.gctx"))
    data = gctx.read_bytes()
    gctx.write_bytes(data[: len(data) // 3])
    with pytest.raises(SourceFormatError) as err:
        l1000.harmonize(src, "l1000_phase1", NO_REGISTRY)
    assert gctx.name in str(err.value) and err.value.field in ("<hdf5>", "0/DATA/0/matrix")


def test_missing_metadata_column(demo_phase1, tmp_path):
    src = _copy(demo_phase1, tmp_path)
    inst = pd.read_csv(_inst(src), sep="\t", dtype=str).drop(columns=["pert_type"])
    inst.to_csv(_inst(src), sep="\t", index=False)
    with pytest.raises(SourceFormatError) as err:
        l1000.harmonize(src, "l1000_phase1", NO_REGISTRY)
    assert err.value.field == "pert_type" and "inst_info" in err.value.file


def test_missing_matrix_dataset(demo_phase1, tmp_path):
    src = _copy(demo_phase1, tmp_path)
    with h5py.File(next(src.glob("*.gctx")), "a") as fh:
        del fh["0/META/COL"]
    with pytest.raises(SourceFormatError) as err:
        l1000.harmonize(src, "l1000_phase1", NO_REGISTRY)
    assert err.value.field == "0/META/COL"


def test_unknown_dose_unit(demo_phase1, tmp_path):
    src = _copy(demo_phase1, tmp_path)
    inst = pd.read_csv(_inst(src), sep="\t", dtype=str, keep_default_na=False)
    i = inst.index[inst["pert_type"] == "trt_cp"][3]
    inst.loc[i, "pert_dose_unit"] = "furlongs"
    inst.to_csv(_inst(src), sep="\t", index=False)
    with pytest.raises(SourceFormatError) as err:
        l1000.harmonize(src, "l1000_phase1", NO_REGISTRY)
    assert err.value.field == "pert_dose_unit" and inst.loc[i, "inst_id"] in str(err.value)
    assert "furlongs" in str(err.value)


def test_duplicate_instance_ids(demo_phase1, tmp_path):
    src = _copy(demo_phase1, tmp_path)
    inst = pd.read_csv(_inst(src), sep="\t", dtype=str, keep_default_na=False)
    inst = pd.concat([inst, inst.iloc[[5]]])
    inst.to_csv(_inst(src), sep="\t", index=False)
    with pytest.raises(SourceFormatError) as err:
        l1000.harmonize(src, "l1000_phase1", NO_REGISTRY)
    assert err.value.field == "inst_id" and "duplicate" in err.value.problem


def test_latin1_micro_sign(demo_phase1, tmp_path):
    src = _copy(demo_phase1, tmp_path)
    path = _inst(src)
    text = path.read_text(encoding="utf-8")
    assert "µM" in text
    path.write_bytes(text.encode("latin-1"))  # µ becomes the single byte 0xB5
    with pytest.raises(SourceFormatError) as err:
        l1000.harmonize(src, "l1000_phase1", NO_REGISTRY)
    assert err.value.field in ("pert_dose_unit", "pert_idose") and "0xb5" in str(err.value)
    assert path.name in str(err.value)


# ------------------------------------------------------------------ shared source rules on the real plate
def test_real_plate_is_not_labelled_synthetic_and_takes_the_dataset_assay(real_pair):
    from cpb_assets.datasets import DATASET_INFO

    _, gct = real_pair
    h = l1000.harmonize_gct(gct, l1000._metadata_from_gct(gct), dataset="l1000_phase2", registry=NO_REGISTRY,
                            matrix_file=REAL_GCT, inst_file=REAL_GCT)
    assert h.adata.uns["synthetic"] is False
    assert set(h.adata.obs["assay"]) == {DATASET_INFO["l1000_phase2"].assay} == {"L1000"}


def test_unknown_cell_lines_of_the_real_plate_are_quarantined(real_pair):
    _, gct = real_pair
    inst = l1000._metadata_from_gct(gct)
    kept = inst.index[inst["pert_type"].isin(["trt_cp", "ctl_vehicle"])]
    # two instances of a line nobody knows, one Cellosaurus ID outside the context table
    inst.loc[kept[:2], "cell_id"] = "NOT-A-LINE"
    inst.loc[kept[2], "cell_id"] = "CVCL_9999"
    h = l1000.harmonize_gct(gct, inst, dataset="l1000_phase1", registry=NO_REGISTRY, matrix_file=REAL_GCT,
                            inst_file=REAL_GCT)
    assert h.adata.n_obs == 26 + 328 - 3
    q = h.quarantine.to_frame()
    lost = q[q["reason"] == "unknown cell line"]
    assert sorted(lost["record_id"]) == sorted(inst.loc[kept[:3], "inst_id"]) and lost["n"].sum() == 3
    assert validate_harmonized(h.adata) == []
