"""DRUG-seq sources (Novartis, VCPI-0001/0002, GDPx2) in their real layouts: filters, round trip, bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cpb_assets.demo import gdpx2 as demo_gdpx2
from cpb_assets.demo import novartis as demo_novartis
from cpb_assets.demo import vcpi as demo_vcpi
from cpb_assets.demo.world import DESIGNS
from cpb_assets.errors import SourceFormatError
from cpb_assets.harmonize.schema import validate_harmonized
from cpb_assets.sources import gdpx2, novartis, vcpi
from cpb_assets.sources.registry import SOURCES

TP53, BRCA1, MARCHF1 = "ENSG00000141510", "ENSG00000012048", "ENSG00000145416"
FIXTURES = Path(__file__).resolve().parents[2] / "data"
DATASETS = ("novartis_drugseq", "vcpi_0001", "vcpi_0002", "gdpx2")
READER = {"novartis_drugseq": novartis, "vcpi_0001": vcpi, "vcpi_0002": vcpi, "gdpx2": gdpx2}


def _registry(records: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"source_id": records["source_id"], "pubchem_cid": "2244", "cid_method": "test"})


def _run(folder, ds):
    mod = READER[ds]
    return mod.harmonize(folder, ds, _registry(mod.compound_records(folder, ds)))


def _listing(folder):
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir())


# --------------------------------------------------------------------------- Novartis hand fixture (R files)
def _novartis_fixture(folder, poison=None, cells=None, plate_ids=None):
    """One batch, one plate, 12 wells; 5 fail: 2 EMPTY, 1 positive control, 1 zero library, 1 non-robust RC."""
    wells = [  # well_type, cmpd_sample_id, concentration, unit
        ("SA", "AA-01-XX01", 100.0, "nM"), ("SA", "AA-01-XX01", 10.0, "uM"),
        ("SA", "AA-02-XX02", 1.0, "uM"), ("SA", "AA-02-XX02", 0.1, "uM"),
        ("SA", "AA-03-XX03", 10.0, "uM"),  # zero-count library
        ("SA", "EA-18-FP00", 10.0, "uM"),  # positive control
        ("RC", novartis.DMSO_ID, 0.0, "uM"), ("RC", novartis.DMSO_ID, 0.0, "uM"),
        ("RC", novartis.DMSO_ID, 0.0, "uM"),  # not robust
        ("EMPTY", novartis.WATER_ID, 0.0, "uM"), ("EMPTY", novartis.WATER_ID, 0.0, "uM"),
        ("SA", "AA-04-XX04", 1000.0, "nM"),
    ]
    n = len(wells)
    colnames = [f"PL1_BC{k:02d}" for k in range(n)]
    anno = pd.DataFrame({
        "batch_id": 1, "plate_barcode": "PL1" if plate_ids is None else plate_ids,
        "well_id": [f"A{k + 1:02d}" for k in range(n)],
        "external_biosample_id": [f"EXT-{k}" for k in range(n)],
        "cmpd_sample_id": [w[1] for w in wells], "well_type": [w[0] for w in wells],
        "cell_line_name": "U-2 OS" if cells is None else cells,
        "concentration": [w[2] for w in wells], "unit": [w[3] for w in wells],
        "hours_post_treatment": ["24.0"] * 6 + ["24.0 hr"] * 6,
    }, index=colnames)
    gene_ids = ["TP53,grch38_17", "TP53,grch38_17_PATCH", "LOC1,grch38_2", "BRCA1,grch38_17"]
    counts = np.tile(np.array([[10], [3], [7], [5]], dtype=np.float64), (1, n))
    counts[:, 4] = 0
    if poison is not None:
        counts[poison[0]] = poison[1]
    gene_table = pd.DataFrame({"geneID": gene_ids, "ensembl_gene_id": [TP53, TP53, None, BRCA1]})
    robust = anno[anno["well_type"] == "RC"].iloc[:2][["batch_id", "plate_barcode", "well_id",
                                                        "external_biosample_id"]]
    compounds = pd.DataFrame({"cmpd_sample_id": ["AA-01-XX01", "AA-02-XX02", "AA-03-XX03", "AA-04-XX04"],
                              "inchi_key": None, "smiles": ["C", "CC", "CCC", "C/C=C(\\\\C)CC"],
                              "cas_number": None, "moa": None})
    # Annotation rows reversed against the count columns: the reader must realign
    return demo_novartis.write_native(folder, {("1", "PL1"): (counts, colnames, anno.iloc[::-1])}, gene_ids,
                                      gene_table, robust, compounds, tag="FIXTURE")


def test_novartis_filters_hand_counted(tmp_path):
    _novartis_fixture(tmp_path)
    rec = novartis.compound_records(tmp_path)
    assert sorted(rec["source_id"]) == ["AA-01-XX01", "AA-02-XX02", "AA-03-XX03", "AA-04-XX04"]
    # the doubled backslash of the MoA Box table is repaired
    assert rec.set_index("source_id").at["AA-04-XX04", "smiles"] == "C/C=C(\\C)CC"
    h = _run(tmp_path, "novartis_drugseq")
    a = h.adata
    assert validate_harmonized(a) == []
    assert a.n_obs == 7 and int(a.obs["is_control"].sum()) == 2
    assert h.quarantine.summary() == {
        "empty well (well_type EMPTY)": 2, "zero-count library": 1,
        "positive control (BD-11-DV28, EA-18-FP00, SE-15-AV21)": 1,
        "reference-control DMSO well not in the robust RC table": 1,
        "no Ensembl ID in the gene annotation table": 1}
    assert h.notes["smiles_repaired"] == ["AA-04-XX04"]
    # the patch-contig geneID is summed into TP53; the orphan geneID is gone
    assert list(a.var_names) == [BRCA1, TP53]
    assert a.X.toarray()[:, 1].tolist() == [13] * 7 and a.X.toarray()[:, 0].tolist() == [5] * 7
    assert a.obs["psbulk_counts"].tolist() == [18] * 7 and set(a.obs["psbulk_cells"]) == {-666}
    doses = a.obs.set_index("well")["pert_dose_uM"]
    assert doses["A01"] == pytest.approx(0.1) and doses["A12"] == pytest.approx(1.0) and doses["A02"] == 10.0
    assert set(a.obs["pert_time_h"]) == {24.0} and set(a.obs["cell_type"]) == {"CVCL_0042"}
    assert a.obs.set_index("well").at["A12", "perturbagen"] == "AA-04-XX04"  # the table has no names


@pytest.mark.parametrize("value,word", [(2.5, "integers"), (-1.0, ">= 0"), (np.nan, "NaN")])
def test_novartis_rejects_bad_counts(tmp_path, value, word):
    _novartis_fixture(tmp_path, poison=((1, 3), value))
    before = _listing(tmp_path)
    with pytest.raises(SourceFormatError) as err:
        _run(tmp_path, "novartis_drugseq")
    assert err.value.file.endswith("Exp_gzip_FIXTURE.RData") and err.value.field == "1/PL1/UMI.counts"
    assert word in err.value.problem
    assert _listing(tmp_path) == before


def test_novartis_missing_plate_ids_are_quarantined_not_pooled(tmp_path):
    _novartis_fixture(tmp_path, plate_ids=[None, "NA"] + ["PL1"] * 10)
    h = _run(tmp_path, "novartis_drugseq")
    q = h.quarantine.to_frame()
    assert sorted(q.loc[q["reason"] == "missing plate ID (plate_barcode)", "record_id"]) == ["1/PL1_BC00",
                                                                                            "1/PL1_BC01"]
    assert set(h.adata.obs["plate"]) == {"PL1"} and h.adata.n_obs == 5


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_novartis_empty_or_truncated_rdata_names_the_file(tmp_path, damage):
    paths = _novartis_fixture(tmp_path)
    exp = paths[0]
    data = exp.read_bytes()
    exp.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    with pytest.raises(SourceFormatError) as err:
        _run(tmp_path, "novartis_drugseq")
    assert err.value.file == str(exp)


def test_novartis_reads_the_real_compound_table():
    """The real MoABox table (tests/data copy): 4,343 compounds, 140 SMILES repaired, all parse in RDKit."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    rec = novartis.compound_records(FIXTURES / "novartis_drugseq")
    assert len(rec) == 4343 and rec["smiles"].notna().sum() == 3835
    assert not rec["smiles"].dropna().str.contains("\\\\", regex=False).any()
    with_smiles = rec.dropna(subset=["smiles"])
    keys = [Chem.MolToInchiKey(Chem.MolFromSmiles(s)) for s in with_smiles["smiles"]]
    assert keys == with_smiles["inchikey"].tolist()


# --------------------------------------------------------------------------- VCPI hand fixture
def _vcpi_fixture(folder, poison=None, cells=None, rows=None, containers=None, chem=None):
    """8 samples; 3 fail: 1 zero library, 2 non-DMSO controls. Genes: 3 + 2 ERCC."""
    meta = pd.DataFrame({
        "sequenced_id": [f"S{k}" for k in range(8)], "container_id": containers or ["P 1"] * 8,
        "row_id": rows or [1, 1, 1, 1, 2, 2, 2, 2], "column_id": [1, 2, 3, 4, 1, 2, 3, 4],
        "compound": ["C1", "C1", "C2", "DMSO", "DMSO", "POS1", "POS2", "C2"],
        "user_compound_id": ["one", "one", "two", "DMSO", "DMSO", "Staurosporine", "Bortezomib", "two"],
        "compound_concentration": [1000.0, 10.0, 1.0, 0, 0, 1, 1, 10.0],
        "compound_concentration_unit": ["nM", "uM", "uM", "uM", "uM", "uM", "uM", "uM"],
        "timepoint": ["24h", "24h", "24.0 H", "24h", "24h", "24h", "24h", "24h"],
        "cell_line": ["A549"] * 4 + ["A-549"] * 4 if cells is None else cells,
        "is_control": [False, False, False, True, True, True, True, False],
    })
    counts = np.tile(np.array([4, 6, 1, 9, 9]), (8, 1))
    counts[7] = 0
    if poison is not None:
        counts = counts.astype(float)
        counts[poison[0]] = poison[1]
    gene_ids = [f"{TP53}.17", BRCA1, MARCHF1, "ERCC-00002", "ERCC-00003"]
    chem = chem if chem is not None else pd.DataFrame({
        "compound": ["C1", "C2", "DMSO"], "user_compound_id": ["one", "two", "DMSO"],
        "canonical_smiles": ["C", "CC", "CS(C)=O"], "inchi_key": [None, None, None]})
    return demo_vcpi.write_native(folder, meta, counts, gene_ids, chem, experiment="vcpi-0001", tag="FIXTURE")


def test_vcpi_filters_hand_counted(tmp_path):
    _vcpi_fixture(tmp_path)
    assert vcpi.compound_records(tmp_path, "vcpi_0001")["source_id"].tolist() == ["C1", "C2"]
    h = _run(tmp_path, "vcpi_0001")
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


def test_vcpi_letter_row_ids_and_plain_payload_names(tmp_path):
    """Row IDs as letters (int('B') used to crash); files saved without the experiment prefix are accepted."""
    paths = _vcpi_fixture(tmp_path, rows=["A", "A", "A", "A", "B", "B", "B", "B"])
    for p in paths:  # metadata.parquet, data.parquet, chemistry.parquet
        p.rename(p.with_name(p.name.replace("vcpi-0001_", "").replace("_FIXTURE", "")))
    h = _run(tmp_path, "vcpi_0001")
    assert sorted(h.adata.obs["well"]) == ["A01", "A02", "A03", "A04", "B01"]
    assert vcpi.vcpi_well("2", "03") == "B03" and vcpi.vcpi_well("p", 24) == "P24"
    assert vcpi.vcpi_well(None, 1) is None and vcpi.vcpi_well("1.5", 1) is None


def test_vcpi_missing_plate_ids_and_orphans_are_quarantined(tmp_path):
    _vcpi_fixture(tmp_path, containers=["P 1", None, "P 1", "P 1", "nan", "P 1", "P 1", "P 1"])
    meta_file = next(tmp_path.glob("*_metadata_*.parquet"))
    meta = pd.read_parquet(meta_file)
    extra = meta.iloc[[0]].assign(sequenced_id="S99")  # a metadata row without counts
    pd.concat([meta, extra]).to_parquet(meta_file, index=False)
    h = _run(tmp_path, "vcpi_0001")
    q = h.quarantine.to_frame().set_index("record_id")["reason"]
    assert q["S1"] == q["S4"] == "missing plate ID (container_id)"
    assert q["S99"] == "metadata row without counts"
    assert "None" not in set(h.adata.obs["plate"]) and "nan" not in set(h.adata.obs["plate"])


def test_vcpi_rejects_fractional_counts(tmp_path):
    _vcpi_fixture(tmp_path, poison=((2, 1), 0.5))
    before = _listing(tmp_path)
    with pytest.raises(SourceFormatError) as err:
        _run(tmp_path, "vcpi_0001")
    assert err.value.file.endswith("vcpi-0001_data_FIXTURE.parquet") and err.value.field == "data"
    assert _listing(tmp_path) == before


def test_vcpi_conflicting_compound_rows_name_file_and_field(tmp_path):
    chem = pd.DataFrame({"compound": ["C1", "C1", "C2", "C2"], "user_compound_id": ["one", "one", "two", "two"],
                         "canonical_smiles": ["C", "C", "CC", "CCO"], "inchi_key": None})
    paths = _vcpi_fixture(tmp_path, chem=chem)
    with pytest.raises(SourceFormatError) as err:
        vcpi.compound_records(tmp_path, "vcpi_0001")
    assert err.value.file == str(paths[2]) and err.value.field == "smiles" and "'C2'" in err.value.problem


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_vcpi_empty_or_truncated_parquet_names_the_file(tmp_path, damage):
    paths = _vcpi_fixture(tmp_path)
    data = paths[1].read_bytes()
    paths[1].write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    with pytest.raises(SourceFormatError) as err:
        _run(tmp_path, "vcpi_0001")
    assert err.value.file == str(paths[1])


def test_missing_metadata_column_names_field(tmp_path):
    _vcpi_fixture(tmp_path)
    meta_file = next(tmp_path.glob("*_metadata_*.parquet"))
    pd.read_parquet(meta_file).drop(columns=["timepoint"]).to_parquet(meta_file)
    with pytest.raises(SourceFormatError) as err:
        _run(tmp_path, "vcpi_0001")
    assert err.value.field == "timepoint" and err.value.file == str(meta_file)


# --------------------------------------------------------------------------- GDPx2 hand fixture
def _gdpx2_fixture(folder, poison=None, cells=None, var=None, counts=None):
    """10 samples; 3 fail: 2 'Ginkgo Pos Control', 1 zero library. Genes 2 + 1 ERCC (by symbol)."""
    st = (["Ginkgo Sample"] * 4 + [gdpx2.DMSO_SAMPLE_TYPE] * 3
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
    if counts is None:
        counts = np.tile(np.array([3, 2, 50]), (10, 1))
        counts[9, :2] = 0  # only spike-in reads: zero library once ERCC is gone
    if poison is not None:
        counts[poison[0]] = poison[1]
    if var is None:
        var = pd.DataFrame({"ensembl_gene_id": [TP53, BRCA1, "ERCC-00002"], "symbol": ["TP53", "BRCA1", "ERCC-00002"]},
                           index=pd.Index(["g1", "g2", "g3"], name="gene_id"))
    compounds = pd.DataFrame({"compound": ["K1", "K2", "DMSO"], "smiles": ["C", "CC", "CS(C)=O"]})
    return demo_gdpx2.write_native(folder, obs, counts, var, compounds, tag="FIXTURE")


def test_gdpx2_filters_hand_counted(tmp_path):
    _gdpx2_fixture(tmp_path)
    rec = gdpx2.compound_records(tmp_path)
    assert rec["source_id"].tolist() == ["K1", "K2"] and rec["name"].tolist() == ["one", "two"]  # names from obs
    h = _run(tmp_path, "gdpx2")
    a = h.adata
    assert validate_harmonized(a) == []
    assert a.n_obs == 7 and int(a.obs["is_control"].sum()) == 3
    assert h.quarantine.summary() == {"ERCC spike-in": 1, "zero-count library": 1,
                                      "positive control (sample_type 'Ginkgo Pos Control …')": 2}
    obs = a.obs.set_index("well")
    assert obs["pert_dose_uM"].tolist() == pytest.approx([0.0095, 3.0, 10.0, 10.0, 0.0, 0.0, 0.0])
    assert obs["percent_volume_dmso"].tolist() == [0.1, 0.5, 0.1, 0.5, 0.1, 0.5, 0.5]
    assert a.obs.groupby(["cell_type", "percent_volume_dmso"])["is_control"].any().all()


def test_gdpx2_na_and_duplicate_ensembl_ids(tmp_path):
    """NA ensembl_gene_id: filled from the symbol via the gene map; repeated ID: summed; unmappable: quarantined."""
    var = pd.DataFrame({"ensembl_gene_id": [f"{TP53}.3", None, TP53, None, "ERCC-00002"],
                        "symbol": ["TP53", "BRCA1", "TP53", "NOT-A-GENE", "ERCC-00002"]},
                       index=pd.Index([f"g{k}" for k in range(5)], name="gene_id"))
    counts = np.tile(np.array([3, 2, 4, 7, 50]), (10, 1))
    counts[9, :4] = 0
    _gdpx2_fixture(tmp_path, var=var, counts=counts)
    h = _run(tmp_path, "gdpx2")
    assert list(h.adata.var_names) == [BRCA1, TP53] and h.adata.var["symbol"].tolist() == ["BRCA1", "TP53"]
    assert h.adata.X.toarray()[0].tolist() == [2, 7]  # TP53 = 3 + 4
    q = h.quarantine.to_frame()
    assert q.loc[q["level"] == "gene"].set_index("record_id")["reason"].to_dict() == {
        "ERCC-00002": "ERCC spike-in", "g3": "NA ensembl_gene_id and a symbol the gene map does not know"}


def test_gdpx2_rejects_negative_counts(tmp_path):
    _gdpx2_fixture(tmp_path, poison=((0, 0), -3))
    before = _listing(tmp_path)
    with pytest.raises(SourceFormatError) as err:
        _run(tmp_path, "gdpx2")
    assert err.value.file.endswith("X_FIXTURE.h5ad") and err.value.field == "X"
    assert _listing(tmp_path) == before


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_gdpx2_empty_or_truncated_h5ad_names_the_file(tmp_path, damage):
    paths = _gdpx2_fixture(tmp_path)
    data = paths[0].read_bytes()
    paths[0].write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    with pytest.raises(SourceFormatError) as err:
        _run(tmp_path, "gdpx2")
    assert err.value.file == str(paths[0])


# --------------------------------------------------------------------------- synthetic round trip (demo writers)
@pytest.fixture(scope="module")
def demo(tmp_path_factory, world):
    out = {}
    for ds in DATASETS:
        folder = tmp_path_factory.mktemp(ds)
        paths = SOURCES[ds].write_synthetic(world, folder)
        rec = SOURCES[ds].compound_records(folder)
        out[ds] = (paths, rec, SOURCES[ds].harmonize(folder, _registry(rec)))
    return world, out


def _expected_treated(ds: str) -> int:
    d = DESIGNS[ds]
    return len(d.cell_types) * len(d.compounds) * len(d.doses_uM) * len(d.times_h) * d.replicates


def _expected_controls(ds: str) -> int:
    d = DESIGNS[ds]
    if ds == "novartis_drugseq":
        plates = -(-len(d.compounds) // demo_novartis.COMPOUNDS_PER_BATCH) * d.replicates
        return plates * demo_novartis.ROBUST_RC_PER_PLATE
    plates = len(d.cell_types) * d.replicates
    if ds == "gdpx2":
        return plates * demo_gdpx2.DMSO_PER_LEVEL * len(d.extra["percent_volume_dmso"])
    return plates * demo_vcpi.DMSO_PER_PLATE


@pytest.mark.parametrize("ds", DATASETS)
def test_synthetic_round_trip(demo, ds):
    from cpb_assets.datasets import DATASET_INFO

    world, out = demo
    paths, rec, h = out[ds]
    assert all("SYNTHETIC" in p.name for p in paths)
    a = h.adata
    assert validate_harmonized(a) == []
    assert a.uns["synthetic"] is True and set(a.obs["assay"]) == {DATASET_INFO[ds].assay} == {"DRUG-seq"}
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
    X = a.X.toarray().astype(float)
    cpm = X / X.sum(axis=1, keepdims=True) * 1e6
    trt = ((a.obs["pert_id"] == demo_novartis.compound_id(0)) & (a.obs["pert_dose_uM"] == 10.0)).to_numpy()
    ctl = a.obs["is_control"].to_numpy()
    obs_lfc = np.log2(cpm[trt].mean(0) + 1) - np.log2(cpm[ctl].mean(0) + 1)
    truth = world.true_logfc(0, DESIGNS["novartis_drugseq"].cell_types[0], 10.0, 24.0,
                             genes=world.gene_index(a.var_names), dataset="novartis_drugseq")
    expressed = cpm[ctl].mean(0) > 50
    hit = truth != 0
    assert np.corrcoef(obs_lfc[expressed & hit], truth[expressed & hit])[0, 1] > 0.7


# --------------------------------------------------------------------------- unknown cell lines
def test_novartis_unknown_cell_line_is_quarantined(tmp_path):
    _novartis_fixture(tmp_path, cells=["XYZ-1", "XYZ-1"] + ["U-2 OS"] * 10)
    h = _run(tmp_path, "novartis_drugseq")
    assert h.adata.n_obs == 5 and not {"A01", "A02"} & set(h.adata.obs["well"])
    assert sum(n for r, n in h.quarantine.summary().items() if r.startswith("unknown cell line")) == 2
    assert validate_harmonized(h.adata) == []


def test_vcpi_unknown_cell_line_is_quarantined(tmp_path):
    _vcpi_fixture(tmp_path, cells=["A549", "NOT-A-LINE", "A549", "A549", "A549", "A549", "A549", "A549"])
    h = _run(tmp_path, "vcpi_0001")
    q = h.quarantine.to_frame()
    assert q.loc[q["reason"].str.startswith("unknown cell line"), "record_id"].tolist() == ["S1"]
    assert h.adata.n_obs == 4 and set(h.adata.obs["cell_type"]) == {"CVCL_0023"}


def test_gdpx2_primary_cell_types_and_unknown_labels(tmp_path):
    cells = ["fibroblast of dermis", "aortic smooth muscle cell", "keratinocyte", "skeletal muscle myoblast",
             "fibroblast of dermis", "aortic smooth muscle cell", "skeletal muscle myoblast", "MCF7", "MCF7",
             "epithelial melanocyte"]
    _gdpx2_fixture(tmp_path, cells=cells)
    h = _run(tmp_path, "gdpx2")
    obs = h.adata.obs.set_index("well")
    assert obs["cell_type"].to_dict() == {"A01": "CL_0002551", "A02": "CL_0002539", "A04": "CL_0000515",
                                          "A05": "CL_0002551", "A06": "CL_0002539", "A07": "CL_0000515"}
    q = h.quarantine.to_frame()
    assert q.loc[q["reason"].str.startswith("unknown cell line"), "record_id"].tolist() == ["X2"]
    assert set(h.adata.obs["tissue_type"]) == {"primary cell"}


def test_hand_fixture_not_named_synthetic_is_not_labelled_synthetic(tmp_path):
    _vcpi_fixture(tmp_path)  # files tagged FIXTURE, no SYNTHETIC in names or notes
    assert _run(tmp_path, "vcpi_0001").adata.uns["synthetic"] is False
