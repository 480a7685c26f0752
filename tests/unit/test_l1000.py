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
from cpb_assets.demo import l1000 as demo_l1000
from cpb_assets.sources.gctx import read_gct, read_gctx, write_gctx
from tests.conftest import REAL_GCT, REAL_GCTX, REPO

FIXTURES = REPO / "tests" / "data"

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
    a = h.to_memory()
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
    demo_l1000.write_synthetic(world, "l1000_phase1", folder)
    return folder


def test_synthetic_files_are_labelled(demo_phase1):
    names = sorted(p.name for p in demo_phase1.iterdir())
    assert all("SYNTHETIC" in n for n in names)
    with h5py.File(next(demo_phase1.glob("*.gctx"))) as fh:
        assert b"SYNTHETIC" in fh.attrs["synthetic"]


def test_synthetic_roundtrip_matches_design(world, demo_phase1):
    from cpb_assets.demo.world import DESIGNS

    d = DESIGNS["l1000_phase1"]
    rec = l1000.compound_records(demo_phase1, "l1000_phase1")
    assert len(rec) == len(d.compounds)
    registry = pd.DataFrame({"source_id": rec["source_id"], "pubchem_cid": "1", "cid_method": "test"})
    a = l1000.harmonize(demo_phase1, "l1000_phase1", registry).to_memory()
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
    truth = world.true_logfc(c, "CVCL_0023", 10.0, 24.0, world.gene_index(a.var_names), "l1000_phase1")
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
    assert err.value.field == "0/META/COL/id"


def test_unknown_dose_unit_quarantines_that_instance_only(demo_phase1, tmp_path):
    src = _copy(demo_phase1, tmp_path)
    inst = pd.read_csv(_inst(src), sep="\t", dtype=str, keep_default_na=False)
    i = inst.index[inst["pert_type"] == "trt_cp"][3]
    inst.loc[i, "pert_dose_unit"] = "furlongs"
    inst.to_csv(_inst(src), sep="\t", index=False)
    before = l1000.harmonize(demo_phase1, "l1000_phase1", NO_REGISTRY).to_memory().n_obs
    h = l1000.harmonize(src, "l1000_phase1", NO_REGISTRY)
    assert h.to_memory().n_obs == before - 1
    q = h.quarantine.to_frame()
    row = q[q["reason"].str.startswith("dose not understood")]
    assert row["record_id"].tolist() == [inst.loc[i, "inst_id"]]
    assert "furlongs" in row["reason"].iloc[0] and "pert_dose_unit" in row["reason"].iloc[0]


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
    assert h.to_memory().uns["synthetic"] is False
    assert set(h.to_memory().obs["assay"]) == {DATASET_INFO["l1000_phase2"].assay} == {"L1000"}


def test_unknown_cell_lines_of_the_real_plate_are_quarantined(real_pair):
    _, gct = real_pair
    inst = l1000._metadata_from_gct(gct)
    kept = inst.index[inst["pert_type"].isin(["trt_cp", "ctl_vehicle"])]
    # two instances of a line nobody knows; a well-formed Cellosaurus ID outside every table is kept
    inst.loc[kept[:2], "cell_id"] = "NOT-A-LINE"
    inst.loc[kept[2], "cell_id"] = "CVCL_9999"
    h = l1000.harmonize_gct(gct, inst, dataset="l1000_phase1", registry=NO_REGISTRY, matrix_file=REAL_GCT,
                            inst_file=REAL_GCT)
    assert h.to_memory().n_obs == 26 + 328 - 2
    q = h.quarantine.to_frame()
    lost = q[q["reason"] == "unknown cell line: NOT-A-LINE"]
    assert sorted(lost["record_id"]) == sorted(inst.loc[kept[:2], "inst_id"]) and lost["n"].sum() == 2
    assert (h.to_memory().obs["cell_type"] == "CVCL_9999").sum() == 1
    assert validate_harmonized(h.to_memory()) == []


# ------------------------------------------------------------------ the GEO layout (tests/data fixtures)
def test_geo_gctx_holds_ids_only():
    """The fixture GCTX is in the GEO layout: no META field but the IDs (rows: Entrez IDs as text)."""
    matrix = next((FIXTURES / "l1000_phase1").glob("*Level3*.gctx"))
    with h5py.File(matrix) as fh:
        assert list(fh["0/META/ROW"]) == ["id"] and list(fh["0/META/COL"]) == ["id"]
        assert fh["0/META/ROW/id"][0].decode().isdigit()
    gct = read_gctx(matrix)
    assert gct.row_meta.shape[1] == 0 and gct.data.shape == (993, 200)


@pytest.mark.parametrize("dataset, n_obs, reasons", [
    ("l1000_phase1", 186, {"pert_type trt_poscon not kept (trt_cp and ctl_vehicle only)": 12,
                           l1000.NO_INST_INFO: 1, "dose not understood (pert_dose_unit '0.12 µL')": 1}),
    ("l1000_phase2", 26 + 328, {"pert_type trt_poscon not kept (trt_cp and ctl_vehicle only)": 23,
                                l1000.NO_PROFILE: 1}),
])
def test_real_layout_fixture(dataset, n_obs, reasons):
    """The real LJP005 plate in the GEO layout: landmarks from gene_info.pr_is_lm, plates from inst_id
    (Phase I) or det_plate (Phase II), µM/nM and 'um' doses, quarantine of the planted faults."""
    folder = FIXTURES / dataset
    h = l1000.harmonize(folder, dataset, NO_REGISTRY)
    a = h.to_memory()
    assert validate_harmonized(a) == [] and a.uns["synthetic"] is False
    assert a.shape == (n_obs, 978) and h.quarantine.summary() == reasons
    assert set(a.obs["plate"]) == {"LJP005_A375_24H_X1_B19"} and set(a.obs["cell_type"]) == {"CVCL_0132"}
    treated = a.obs[~a.obs["is_control"]]
    assert sorted(np.round(treated["pert_dose_uM"].unique(), 6)) == [0.04, 0.12, 0.37, 1.11, 3.33, 10.0]
    # one value by IDs against the real GCT: PSME1 (Entrez 5720, probe 200814_at) in well A03
    gct = read_gct(REAL_GCT)
    i = list(a.obs_names).index("LJP005_A375_24H_X1_B19_A03_DMSO_CVCL_0132")
    j = list(a.var_names).index("ENSG00000092010")
    assert a.X[i, j] == pytest.approx(gct.data[0, 0], rel=1e-6)
    # non-landmark rows of the matrix never reach the harmonized data
    assert "ENSG00000133703" not in set(a.var_names)  # KRAS, pr_is_lm = 0 in the fixture


def test_real_layout_compound_records_carry_source_cids():
    rec = l1000.compound_records(FIXTURES / "l1000_phase2", "l1000_phase2")
    assert len(rec) == 55 and rec["smiles"].isna().all()
    cids = rec.set_index("name")["pubchem_cid"]
    assert cids["erlotinib"] == "176870" and cids["vemurafenib"] == "42611257"
    assert cids.notna().sum() == 12  # '-666' is no CID


# ------------------------------------------------------------------ no silent wrong data (issue 8, point 7)
def _geo_copy(tmp_path, dataset="l1000_phase2"):
    dst = tmp_path / dataset
    shutil.copytree(FIXTURES / dataset, dst)
    return dst


def _rewrite_matrix(folder, fn):
    path = next(folder.glob("*Level3*.gctx"))
    g = read_gctx(path)
    g = fn(g)
    path.unlink()
    write_gctx(g, path)


def test_nan_and_inf_values_quarantine_their_instances(tmp_path):
    src = _geo_copy(tmp_path)
    cols = read_gctx(next(src.glob("*Level3*.gctx"))).col_meta.index

    def spoil(g):
        g.data[list(g.row_meta.index).index("5720"), 0] = np.nan  # PSME1, a landmark
        g.data[list(g.row_meta.index).index("7416"), 1] = -np.inf  # VDAC1, a landmark
        g.data[list(g.row_meta.index).index("3845"), 2] = np.nan  # KRAS, not a landmark: never read
        return g
    _rewrite_matrix(src, spoil)
    h = l1000.harmonize(src, "l1000_phase2", NO_REGISTRY)
    q = h.quarantine.to_frame()
    assert sorted(q.loc[q["reason"] == l1000.NON_FINITE, "record_id"]) == sorted(cols[[0, 1]])
    assert h.to_memory().n_obs == 26 + 328 - 2  # the NaN in a non-landmark row (instance 3) costs nothing
    assert np.isfinite(h.to_memory().X).all()


def test_empty_and_truncated_files_name_the_file(tmp_path):
    src = _geo_copy(tmp_path)
    matrix = next(src.glob("*Level3*.gctx"))
    matrix.write_bytes(b"")
    with pytest.raises(SourceFormatError) as err:
        l1000.harmonize(src, "l1000_phase2", NO_REGISTRY)
    assert matrix.name in str(err.value) and "empty" in str(err.value)
    src = _geo_copy(tmp_path / "b")
    inst = next(src.glob("*inst_info*"))
    inst.write_bytes(inst.read_bytes()[:200])  # a truncated .gz
    with pytest.raises(SourceFormatError) as err:
        l1000.harmonize(src, "l1000_phase2", NO_REGISTRY)
    assert inst.name in str(err.value) and err.value.field == "<gzip>"


def test_missing_plate_ids_are_quarantined_never_the_text_none(tmp_path):
    """Phase I plates come from inst_id; an inst_id without '<plate>:' has no plate (quarantined)."""
    src = _geo_copy(tmp_path, "l1000_phase1")
    inst_path = next(src.glob("*inst_info*"))
    inst = l1000.read_info_table(inst_path)
    victim = inst.index[inst["pert_type"] == "trt_cp"][10]
    old = inst.loc[victim, "inst_id"]
    new = old.split(":")[1] + "_noplate"
    inst.loc[victim, "inst_id"] = new
    inst.to_csv(inst_path, sep="\t", index=False)
    _rewrite_matrix(src, lambda g: GCTrename(g, old, new))
    h = l1000.harmonize(src, "l1000_phase1", NO_REGISTRY)
    q = h.quarantine.to_frame()
    assert q.loc[q["reason"] == l1000.NO_PLATE, "record_id"].tolist() == [new]
    assert not h.to_memory().obs["plate"].astype(str).isin(["None", "nan", ""]).any()
    # Phase II: a blank det_plate falls back to the inst_id's plate part
    src2 = _geo_copy(tmp_path / "p2")
    inst_path = next(src2.glob("*inst_info*"))
    inst = l1000.read_info_table(inst_path)
    inst.loc[3, "det_plate"] = "-666"
    inst.to_csv(inst_path.with_name(inst_path.name[:-3]), sep="\t", index=False)
    inst_path.unlink()
    h2 = l1000.harmonize(src2, "l1000_phase2", NO_REGISTRY)
    assert set(h2.to_memory().obs["plate"]) == {"LJP005_A375_24H_X1_B19"}


def GCTrename(g, old, new):
    g.col_meta = g.col_meta.rename(index={old: new})
    return g


def test_duplicate_sample_headers_in_gct(tmp_path):
    text = REAL_GCT.read_text(encoding="utf-8").split("\n")
    header = text[2].split("\t")
    header[13] = header[12]  # two samples under one name: pandas would rename one silently
    text[2] = "\t".join(header)
    bad = tmp_path / "dup.gct"
    bad.write_text("\n".join(text), encoding="utf-8")
    with pytest.raises(SourceFormatError) as err:
        read_gct(bad)
    assert err.value.field == "<header>" and header[12] in str(err.value)
