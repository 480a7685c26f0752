"""DRUG-seq sources (Novartis, VCPI-0001/0002, GDPx2): filters, round trip, planted truth, bad input."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cpb_assets.errors import SourceFormatError
from cpb_assets.harmonize.schema import validate_harmonized
from cpb_assets.sources import drugseq
from cpb_assets.sources.demo_world import DESIGNS, build_world

TP53, BRCA1, MARCHF1 = "ENSG00000141510", "ENSG00000012048", "ENSG00000145416"


def _registry(records: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"source_id": records["source_id"], "pubchem_cid": "2244", "cid_method": "test"})


def _listing(folder):
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir())


# --------------------------------------------------------------------------- Novartis hand fixture
def _novartis_fixture(folder, counts_dtype=np.float64, poison=None, cells=None):
    """One batch, one plate, 12 wells; 5 fail: 2 EMPTY, 1 positive control, 1 zero library, 1 non-robust RC."""
    wells = [  # well_type, cmpd_sample_id, concentration, unit
        ("SA", "AA-01-XX01", 100.0, "nM"), ("SA", "AA-01-XX01", 10.0, "uM"),
        ("SA", "AA-02-XX02", 1.0, "uM"), ("SA", "AA-02-XX02", 0.1, "uM"),
        ("SA", "AA-03-XX03", 10.0, "uM"),  # zero-count library
        ("SA", "EA-18-FP00", 10.0, "uM"),  # positive control
        ("RC", drugseq.NOVARTIS_DMSO_ID, 0.0, "uM"), ("RC", drugseq.NOVARTIS_DMSO_ID, 0.0, "uM"),
        ("RC", drugseq.NOVARTIS_DMSO_ID, 0.0, "uM"),  # not robust
        ("EMPTY", drugseq.NOVARTIS_WATER_ID, 0.0, "uM"), ("EMPTY", drugseq.NOVARTIS_WATER_ID, 0.0, "uM"),
        ("SA", "AA-04-XX04", 1000.0, "nM"),
    ]
    n = len(wells)
    colnames = [f"PL1_BC{k:02d}" for k in range(n)]
    anno = pd.DataFrame({
        "batch_id": 1, "plate_barcode": "PL1", "well_id": [f"A{k + 1:02d}" for k in range(n)],
        "external_biosample_id": [f"EXT-{k}" for k in range(n)],
        "cmpd_sample_id": [w[1] for w in wells], "well_type": [w[0] for w in wells],
        "cell_line_name": "U-2 OS" if cells is None else cells,
        "concentration": [w[2] for w in wells], "unit": [w[3] for w in wells],
        "hours_post_treatment": ["24.0"] * 6 + ["24.0 hr"] * 6,
    }, index=colnames)
    gene_ids = ["TP53,grch38_17", "TP53,grch38_17_PATCH", "LOC1,grch38_2", "BRCA1,grch38_17"]
    counts = np.tile(np.array([[10], [3], [7], [5]], dtype=counts_dtype), (1, n))
    counts[:, 4] = 0
    if poison is not None:
        counts[poison[0]] = poison[1]
    gene_table = pd.DataFrame({"geneID": gene_ids, "ensembl_gene_id": [TP53, TP53, None, BRCA1]})
    robust = anno[anno["well_type"] == "RC"].iloc[:2][["batch_id", "plate_barcode", "well_id",
                                                        "external_biosample_id"]]
    compounds = pd.DataFrame({"cmpd_sample_id": ["AA-01-XX01", "AA-02-XX02", "AA-03-XX03", "AA-04-XX04"],
                              "chemical_name": ["alpha", "beta", "gamma", None],
                              "inchi_key": None, "smiles": ["C", "CC", "CCC", "CCCC"], "cas_number": None})
    # Annotation rows reversed against the count columns: the reader must realign
    return drugseq.write_novartis_native(folder, {("1", "PL1"): (counts, colnames, anno.iloc[::-1])}, gene_ids,
                                         gene_table, robust, compounds, tag="FIXTURE")


def test_novartis_filters_hand_counted(tmp_path):
    _novartis_fixture(tmp_path)
    rec = drugseq.compound_records(tmp_path, "novartis_drugseq")
    assert sorted(rec["source_id"]) == ["AA-01-XX01", "AA-02-XX02", "AA-03-XX03", "AA-04-XX04"]
    h = drugseq.harmonize(tmp_path, "novartis_drugseq", _registry(rec))
    a = h.adata
    assert validate_harmonized(a) == []
    assert a.n_obs == 7 and int(a.obs["is_control"].sum()) == 2
    assert h.quarantine.summary() == {
        "empty well (well_type EMPTY)": 2, "zero-count library": 1,
        "positive control (BD-11-DV28, EA-18-FP00, SE-15-AV21)": 1,
        "reference-control DMSO well not in the robust RC table": 1,
        "no Ensembl ID in the gene annotation table": 1}
    # the patch-contig geneID is summed into TP53; the orphan geneID is gone
    assert list(a.var_names) == [BRCA1, TP53]
    assert a.X.toarray()[:, 1].tolist() == [13] * 7 and a.X.toarray()[:, 0].tolist() == [5] * 7
    assert a.obs["psbulk_counts"].tolist() == [18] * 7 and set(a.obs["psbulk_cells"]) == {-666}
    doses = a.obs.set_index("well")["pert_dose_uM"]
    assert doses["A01"] == pytest.approx(0.1) and doses["A12"] == pytest.approx(1.0) and doses["A02"] == 10.0
    assert set(a.obs["pert_time_h"]) == {24.0} and set(a.obs["cell_type"]) == {"CVCL_0042"}
    # a compound without a name keeps its source ID as perturbagen
    assert a.obs.set_index("well").at["A12", "perturbagen"] == "AA-04-XX04"


@pytest.mark.parametrize("value,word", [(2.5, "integers"), (-1.0, ">= 0")])
def test_novartis_rejects_non_integer_counts(tmp_path, value, word):
    _novartis_fixture(tmp_path, poison=((1, 3), value))
    before = _listing(tmp_path)
    with pytest.raises(SourceFormatError) as err:
        drugseq.harmonize(tmp_path, "novartis_drugseq", _registry(drugseq.compound_records(tmp_path,
                                                                                           "novartis_drugseq")))
    assert err.value.file.endswith("Exp_FIXTURE.h5") and err.value.field == "1/PL1/UMI.counts"
    assert word in err.value.problem
    assert _listing(tmp_path) == before


# --------------------------------------------------------------------------- VCPI hand fixture
def _vcpi_fixture(folder, poison=None, cells=None):
    """8 samples; 3 fail: 1 zero library, 2 non-DMSO controls. Genes: 3 + 2 ERCC."""
    meta = pd.DataFrame({
        "sequenced_id": [f"S{k}" for k in range(8)], "container_id": ["P 1"] * 8,
        "row_id": [1, 1, 1, 1, 2, 2, 2, 2], "column_id": [1, 2, 3, 4, 1, 2, 3, 4],
        "compound": ["C1", "C1", "C2", "DMSO", "DMSO", "POS1", "POS2", "C2"],
        "user_compound_id": ["one", "one", "two", "DMSO", "DMSO", "Staurosporine", "Bortezomib", "two"],
        "compound_concentration": [1000.0, 10.0, 1.0, 0, 0, 1, 1, 10.0],
        "compound_concentration_unit": ["nM", "uM", "uM", "uM", "uM", "uM", "uM", "uM"],
        "timepoint": ["24h", "24h", "24.0 H", "24h", "24h", "24h", "24h", "24h"],
        "cell_line": ["A549"] * 4 + ["A-549"] * 4 if cells is None else cells,
        "is_control": ["False", "False", "False", "True", "True", "True", "True", "False"],
    })
    counts = np.tile(np.array([4, 6, 1, 9, 9]), (8, 1))
    counts[7] = 0
    if poison is not None:
        counts = counts.astype(float)
        counts[poison[0]] = poison[1]
    gene_ids = [f"{TP53}.17", BRCA1, MARCHF1, "ERCC-00002", "ERCC-00003"]
    chem = pd.DataFrame({"compound": ["C1", "C2", "DMSO"], "user_compound_id": ["one", "two", "DMSO"],
                         "canonical_smiles": ["C", "CC", "CS(C)=O"], "inchi_key": [None, None, None]})
    return drugseq.write_vcpi_native(folder, meta, counts, gene_ids, chem, experiment="vcpi-0001", tag="FIXTURE")


def test_vcpi_filters_hand_counted(tmp_path):
    _vcpi_fixture(tmp_path)
    rec = drugseq.compound_records(tmp_path, "vcpi_0001")
    assert rec["source_id"].tolist() == ["C1", "C2"]
    h = drugseq.harmonize(tmp_path, "vcpi_0001", _registry(rec))
    a = h.adata
    assert validate_harmonized(a) == []
    assert a.n_obs == 5 and int(a.obs["is_control"].sum()) == 2
    assert h.quarantine.summary() == {"ERCC spike-in": 2, "zero-count library": 1, "non-DMSO control": 2}
    assert list(a.var_names) == [TP53, BRCA1, MARCHF1]  # version suffix stripped
    assert a.var["symbol"].tolist() == ["TP53", "BRCA1", "MARCHF1"]
    obs = a.obs.set_index("well")
    assert obs.at["A01", "pert_dose_uM"] == pytest.approx(1.0) and obs.at["A02", "pert_dose_uM"] == 10.0
    assert set(a.obs["plate"]) == {"P1"} and set(a.obs["cell_type"]) == {"CVCL_0023"}
    assert a.obs["psbulk_counts"].tolist() == [11] * 5


def test_vcpi_rejects_fractional_counts(tmp_path):
    _vcpi_fixture(tmp_path, poison=((2, 1), 0.5))
    before = _listing(tmp_path)
    with pytest.raises(SourceFormatError) as err:
        drugseq.harmonize(tmp_path, "vcpi_0001", _registry(drugseq.compound_records(tmp_path, "vcpi_0001")))
    assert err.value.file.endswith("vcpi-0001_data_FIXTURE.parquet") and err.value.field == "data"
    assert _listing(tmp_path) == before


# --------------------------------------------------------------------------- GDPx2 hand fixture
def _gdpx2_fixture(folder, poison=None, cells=None):
    """10 samples; 3 fail: 2 'Ginkgo Pos Control', 1 zero library. Genes 2 + 1 ERCC (by symbol)."""
    st = (["Ginkgo Sample"] * 4 + [drugseq.GDPX2_DMSO_SAMPLE_TYPE] * 3
          + ["Ginkgo Pos Control - Dexamethasone", "Ginkgo Pos Control - Brefeldin A", "Ginkgo Sample"])
    obs = pd.DataFrame({
        "container_id": "G1", "row_id": 1, "column_id": list(range(1, 11)), "sample_type": st,
        "pert_name": ["one", "one", "two", "two", "DMSO", "DMSO", "DMSO", "Dexamethasone", "Brefeldin A", "two"],
        "compound": ["K1", "K1", "K2", "K2", "DMSO", "DMSO", "DMSO", "P1", "P2", "K2"],
        "pert_dose": ["9.5nM", "3000.0nM", "10.0uM", "10000.0nM", "0.1%", "0.5%", "0.5%", "1000.0nM", "1000.0nM",
                      "300.0nM"],
        "pert_time": "24.0h", "percent_volume_dmso": [0.1, 0.5, 0.1, 0.5, 0.1, 0.5, 0.5, 0.1, 0.1, 0.1],
        "cell_type": "MCF7" if cells is None else cells,
    })
    obs.index = pd.Index([f"X{k}" for k in range(10)], name="sample_id")
    counts = np.tile(np.array([3, 2, 50]), (10, 1))
    counts[9, :2] = 0  # only spike-in reads: zero library once ERCC is gone
    if poison is not None:
        counts[poison[0]] = poison[1]
    var = pd.DataFrame({"ensembl_gene_id": [TP53, BRCA1, "ERCC-00002"], "symbol": ["TP53", "BRCA1", "ERCC-00002"]},
                       index=pd.Index(["g1", "g2", "g3"], name="gene_id"))
    compounds = pd.DataFrame({"compound": ["K1", "K2", "DMSO"], "pert_name": ["one", "two", "DMSO"],
                              "smiles": ["C", "CC", "CS(C)=O"]})
    return drugseq.write_gdpx2_native(folder, obs, counts, var, compounds, tag="FIXTURE")


def test_gdpx2_filters_hand_counted(tmp_path):
    _gdpx2_fixture(tmp_path)
    rec = drugseq.compound_records(tmp_path, "gdpx2")
    assert rec["source_id"].tolist() == ["K1", "K2"]
    h = drugseq.harmonize(tmp_path, "gdpx2", _registry(rec))
    a = h.adata
    assert validate_harmonized(a) == []
    assert a.n_obs == 7 and int(a.obs["is_control"].sum()) == 3
    assert h.quarantine.summary() == {"ERCC spike-in": 1, "zero-count library": 1,
                                      "positive control (sample_type 'Ginkgo Pos Control …')": 2}
    obs = a.obs.set_index("well")
    assert obs["pert_dose_uM"].tolist() == pytest.approx([0.0095, 3.0, 10.0, 10.0, 0.0, 0.0, 0.0])
    assert obs["percent_volume_dmso"].tolist() == [0.1, 0.5, 0.1, 0.5, 0.1, 0.5, 0.5]
    # every (cell_type, percent_volume_dmso) stratum has DMSO controls
    assert a.obs.groupby(["cell_type", "percent_volume_dmso"])["is_control"].any().all()


def test_gdpx2_rejects_negative_counts(tmp_path):
    _gdpx2_fixture(tmp_path, poison=((0, 0), -3))
    before = _listing(tmp_path)
    with pytest.raises(SourceFormatError) as err:
        drugseq.harmonize(tmp_path, "gdpx2", _registry(drugseq.compound_records(tmp_path, "gdpx2")))
    assert err.value.file.endswith("gdpx2_X_FIXTURE.h5ad") and err.value.field == "X"
    assert _listing(tmp_path) == before


def test_missing_annotation_column_names_field(tmp_path):
    _vcpi_fixture(tmp_path)
    meta_file = next(tmp_path.glob("*_metadata_*.parquet"))
    pd.read_parquet(meta_file).drop(columns=["timepoint"]).to_parquet(meta_file)
    with pytest.raises(SourceFormatError) as err:
        drugseq.harmonize(tmp_path, "vcpi_0001", _registry(drugseq.compound_records(tmp_path, "vcpi_0001")))
    assert err.value.field == "timepoint" and err.value.file == str(meta_file)


# --------------------------------------------------------------------------- synthetic round trip
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    world = build_world()
    out = {}
    for ds in drugseq.DATASETS:
        folder = tmp_path_factory.mktemp(ds)
        paths = drugseq.write_synthetic(world, ds, folder)
        rec = drugseq.compound_records(folder, ds)
        out[ds] = (paths, rec, drugseq.harmonize(folder, ds, _registry(rec)))
    return world, out


def _expected_treated(ds: str) -> int:
    d = DESIGNS[ds]
    return len(d.cell_types) * len(d.compounds) * len(d.doses_uM) * len(d.times_h) * d.replicates


def _expected_controls(ds: str) -> int:
    d = DESIGNS[ds]
    if ds == "novartis_drugseq":
        plates = -(-len(d.compounds) // drugseq.NOVARTIS_COMPOUNDS_PER_BATCH) * d.replicates
        return plates * drugseq.NOVARTIS_ROBUST_RC_PER_PLATE
    plates = len(d.cell_types) * d.replicates
    if ds == "gdpx2":
        return plates * drugseq.GDPX2_DMSO_PER_LEVEL * len(d.extra["percent_volume_dmso"])
    return plates * drugseq.GINKGO_DMSO_PER_PLATE


@pytest.mark.parametrize("ds", drugseq.DATASETS)
def test_synthetic_round_trip(demo, ds):
    world, out = demo
    paths, rec, h = out[ds]
    assert all("SYNTHETIC" in p.name for p in paths)
    a = h.adata
    assert validate_harmonized(a) == []
    assert int((~a.obs["is_control"]).sum()) == _expected_treated(ds)
    assert int(a.obs["is_control"].sum()) == _expected_controls(ds)
    assert set(a.obs["cell_type"]) == set(DESIGNS[ds].cell_types)
    assert sorted(a.obs.loc[~a.obs["is_control"], "pert_dose_uM"].unique()) == pytest.approx(
        sorted(DESIGNS[ds].doses_uM))
    assert a.X.dtype == np.int64 and a.n_vars == len(world.genes)
    assert a.obs["pubchem_cid"][~a.obs["is_control"]].eq("2244").all()
    reasons = set(h.quarantine.summary())
    assert "zero-count library" in reasons
    if ds != "novartis_drugseq":
        assert "ERCC spike-in" in reasons
    if ds == "gdpx2":
        assert sorted(a.obs["percent_volume_dmso"].unique()) == sorted(DESIGNS[ds].extra["percent_volume_dmso"])
        assert a.obs.groupby(["cell_type", "percent_volume_dmso"])["is_control"].any().all()


def test_novartis_planted_truth(demo):
    """Strong compound 0 at 10 µM vs the robust DMSO wells: log ratio tracks the planted logFC."""
    world, out = demo
    a = out["novartis_drugseq"][2].adata
    name = world.compounds["name"].iloc[0]
    X = a.X.toarray().astype(float)
    cpm = X / X.sum(axis=1, keepdims=True) * 1e6
    trt = ((a.obs["perturbagen"] == name) & (a.obs["pert_dose_uM"] == 10.0)).to_numpy()
    ctl = a.obs["is_control"].to_numpy()
    obs_lfc = np.log2(cpm[trt].mean(0) + 1) - np.log2(cpm[ctl].mean(0) + 1)
    truth = world.true_logfc(0, DESIGNS["novartis_drugseq"].cell_types[0], 10.0, 24.0,
                             genes=world.gene_index(a.var_names))
    expressed = cpm[ctl].mean(0) > 50
    hit = truth != 0
    r = np.corrcoef(obs_lfc[expressed & hit], truth[expressed & hit])[0, 1]
    assert r > 0.7


# --------------------------------------------------------------------------- unknown cell lines
def test_novartis_unknown_cell_line_is_quarantined(tmp_path):
    # wells A01 and A02 (kept by every earlier filter) carry a line nobody knows
    _novartis_fixture(tmp_path, cells=["XYZ-1", "XYZ-1"] + ["U-2 OS"] * 10)
    h = drugseq.harmonize(tmp_path, "novartis_drugseq", _registry(drugseq.compound_records(tmp_path,
                                                                                         "novartis_drugseq")))
    assert h.adata.n_obs == 5 and "A01" not in set(h.adata.obs["well"]) and "A02" not in set(h.adata.obs["well"])
    assert h.quarantine.summary()["unknown cell line"] == 2
    assert validate_harmonized(h.adata) == []


def test_vcpi_unknown_cell_line_is_quarantined(tmp_path):
    _vcpi_fixture(tmp_path, cells=["A549", "NOT-A-LINE", "A549", "A549", "A549", "A549", "A549", "CVCL_9999"])
    h = drugseq.harmonize(tmp_path, "vcpi_0001", _registry(drugseq.compound_records(tmp_path, "vcpi_0001")))
    q = h.quarantine.to_frame()
    # S7 is a zero-count library first (one reason per sample); S1 alone fails on its cell line
    assert q.loc[q["reason"] == "unknown cell line", "record_id"].tolist() == ["S1"]
    assert h.adata.n_obs == 4 and set(h.adata.obs["cell_type"]) == {"CVCL_0023"}


def test_gdpx2_primary_cell_types_and_unknown_labels(tmp_path):
    cells = (["fibroblast of dermis", "aortic smooth muscle cell", "fibroblast of dermis", "skeletal muscle myoblast",
              "fibroblast of dermis", "aortic smooth muscle cell", "skeletal muscle myoblast", "MCF7", "MCF7",
              "epithelial melanocyte"])
    cells[2] = "keratinocyte"  # not a GDPx2 label: quarantined
    _gdpx2_fixture(tmp_path, cells=cells)
    h = drugseq.harmonize(tmp_path, "gdpx2", _registry(drugseq.compound_records(tmp_path, "gdpx2")))
    obs = h.adata.obs.set_index("well")
    assert obs["cell_type"].to_dict() == {"A01": "CL_0002551", "A02": "CL_0002539", "A04": "CL_0000515",
                                          "A05": "CL_0002551", "A06": "CL_0002539", "A07": "CL_0000515"}
    q = h.quarantine.to_frame()
    assert q.loc[q["reason"] == "unknown cell line", "record_id"].tolist() == ["X2"]
    assert set(h.adata.obs["tissue_type"]) == {"primary cell"}


@pytest.mark.parametrize("ds", drugseq.DATASETS)
def test_round_trip_is_labelled_synthetic_and_uses_dataset_assay(demo, ds):
    from cpb_assets.datasets import DATASET_INFO
    from cpb_assets.harmonize.schema import OBS_COLUMNS, OPTIONAL_OBS

    a = demo[1][ds][2].adata
    assert a.uns["synthetic"] is True
    assert set(a.obs["assay"]) == {DATASET_INFO[ds].assay} == {"DRUG-seq"}
    assert set(a.obs.columns) - set(OBS_COLUMNS) <= set(OPTIONAL_OBS)


def test_hand_fixture_not_named_synthetic_is_not_labelled_synthetic(tmp_path):
    _vcpi_fixture(tmp_path)  # files tagged FIXTURE, no SYNTHETIC in names
    h = drugseq.harmonize(tmp_path, "vcpi_0001", _registry(drugseq.compound_records(tmp_path, "vcpi_0001")))
    assert h.adata.uns["synthetic"] is False
