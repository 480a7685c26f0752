"""CIGS (MCE / TCM) source: filters on hand-countable workbooks, native round trip, bad input."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest

from cpb_assets.errors import SourceFormatError
from cpb_assets.harmonize.schema import validate_harmonized
from cpb_assets.demo import cigs as demo_cigs
from cpb_assets.sources import cigs
from cpb_assets.demo.world import DESIGNS, EXCEL_PRONE_SYMBOLS

NOTE = "Note: SYNTHETIC test workbook"


def _registry(folder, dataset):
    recs = cigs.compound_records(folder, dataset)
    return pd.DataFrame({"source_id": recs["source_id"], "pubchem_cid": [str(1000 + i) for i in range(len(recs))],
                         "cid_method": "test"})


# ---------------------------------------------------------------- hand-countable fixture

GENES_A = [dt.datetime(2023, 3, 1), "SEPT7", "TP53", "GAPDH", "ACTB", "EGFR", "SYNTHETIC-PROBE-1"]
GENES_B = ["1-Mar", "SEPTIN7", "TP53", "GAPDH", "ACTB", "SYNTHETIC-PROBE-1"]  # lacks EGFR


def _write_pair(folder: Path, stem: str, genes, wells: list[tuple[str, str, list[int]]], cell="cell_MCF7"):
    """wells: (sample_id, treatment, counts) on plate PL-<stem>."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = f"{stem}_counts"  # the reader takes the first sheet, whatever its name
    ws.append([NOTE])
    ws.append(["Sample_id"] + genes)
    for sid, _, counts in wells:
        ws.append([sid] + counts)
    wb.save(folder / f"SYNTHETIC_MCE_{stem}_Counts.xlsx")
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = f"{stem}_meta"
    ws.append([NOTE])
    ws.append(["unique_ID", "treatment", "sample_plate", "sample_row", "sample_column", "cell_id",
               "pert_idose", "pert_itime"])
    for i, (sid, treat, _) in enumerate(wells):
        ctrl = treat in ("DMSO", "Blank", "RNA")
        ws.append([sid, treat, f"PL-{stem}", 1, i + 1, cell, "-666" if ctrl else "10 uM", "-666" if ctrl else "24 h"])
    wb.save(folder / f"SYNTHETIC_MCE_{stem}_MetaData.xlsx")


def _write_compounds(folder: Path):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Supplementary Table 3"
    ws.append(["Supplementary Table 3. SYNTHETIC"])
    ws.append(["Compound Name", "Catalog Number", "CAS Number", "Smiles"])
    ws.append(["alpha", "HY-1", None, "CCO"])
    ws.append(["beta", "HY-2", None, "CCN"])
    wb.save(folder / cigs.COMPOUND_WORKBOOK)


def _row(scale: float, n: int) -> list[int]:
    return [int(round(scale * v)) for v in (30, 20, 200, 400, 300, 50, 10)][:n]


@pytest.fixture()
def hand_folder(tmp_path):
    # subset A: 12 wells, exactly 5 fail: Blank, RNA, zero-count, low-read (~1% reads), JQ1
    a = [("A01", "HY-1", _row(1.0, 7)), ("A02", "HY-1", _row(1.05, 7)), ("A03", "HY-2", _row(0.95, 7)),
         ("A04", "HY-2", _row(1.0, 7)), ("A05", "DMSO", _row(1.02, 7)), ("A06", "DMSO", _row(0.98, 7)),
         ("A07", "DMSO", _row(1.01, 7)),
         ("A08", "Blank", [0, 0, 1, 0, 0, 0, 0]), ("A09", "RNA", _row(1.0, 7)), ("A10", "DMSO", [0] * 7),
         ("A11", "DMSO", _row(0.01, 7)), ("A12", "JQ1", _row(1.0, 7))]
    # subset B: 6 clean wells
    b = [(f"B0{i}", t, _row(1 + 0.02 * i, 6)) for i, t in enumerate(["HY-1", "HY-1", "HY-2", "HY-2", "DMSO", "DMSO"])]
    _write_pair(tmp_path, "A", GENES_A, a)
    _write_pair(tmp_path, "B", GENES_B, b, cell="cell_HepG2")
    _write_compounds(tmp_path)
    return tmp_path


def test_low_read_fence_flags_exactly_the_two_low_libraries():
    libs = np.array([90000, 95000, 100000, 100000, 105000, 110000, 98000, 102000, 97000, 103000, 800, 1000])
    assert np.flatnonzero(cigs.low_read_outliers(libs)).tolist() == [10, 11]
    assert not cigs.low_read_outliers(np.array([5, 100000, 100000])).any()  # < 4 wells: not assessable


def test_filters_on_hand_countable_workbooks(hand_folder):
    h = cigs.harmonize(hand_folder, "cigs_mce", _registry(hand_folder, "cigs_mce"))
    q = h.quarantine.to_frame()
    samples = q[q["level"] == "sample"].set_index("record_id")["reason"]
    # 5 of 12 wells of subset A fail, each for its stated reason; subset B loses none
    assert len(samples) == 5
    assert samples["A08"].startswith("BLANK") and samples["A09"].startswith("RNA")
    assert samples["A10"] == "zero-count library"
    assert samples["A11"].startswith("low-read outlier")
    assert samples["A12"].startswith("JQ1")
    assert h.adata.n_obs == 7 + 6
    assert int(h.adata.obs["is_control"].sum()) == 3 + 2
    # symbols repaired before lookup, inner join drops EGFR, the probe is unmapped
    assert h.adata.var["symbol"].tolist() == ["MARCHF1", "SEPTIN7", "TP53", "GAPDH", "ACTB"]
    genes = q[q["level"] == "gene"].set_index("record_id")["reason"]
    assert genes["EGFR"].startswith("gene not in every workbook")
    assert genes["SYNTHETIC-PROBE-1"] == "gene symbol not mapped to Ensembl"
    obs = h.adata.obs
    assert set(obs["cell_type"]) == {"CVCL_0031", "CVCL_0027"}
    assert obs.loc[~obs["is_control"], "pert_dose_uM"].eq(10.0).all()
    assert obs["pert_time_h"].eq(24.0).all()  # controls (-666) take the subset's design time
    assert set(obs.loc[~obs["is_control"], "pubchem_cid"]) == {"1000", "1001"}
    assert validate_harmonized(h.adata) == []


# ---------------------------------------------------------------- bad input

def _snapshot(folder: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_row_wider_than_the_header_names_file_and_row(hand_folder):
    path = hand_folder / "SYNTHETIC_MCE_B_MetaData.xlsx"
    wb = openpyxl.load_workbook(path)
    ws = wb.worksheets[0]
    ws.cell(row=5, column=10).value = "shifted"  # sample B02's row: 10 cells under an 8-column header
    wb.save(path)
    before = _snapshot(hand_folder)
    with pytest.raises(SourceFormatError) as e:
        cigs.harmonize(hand_folder, "cigs_mce", _registry(hand_folder, "cigs_mce"))
    assert e.value.file == str(path) and e.value.field == "B_meta!row 5"
    assert _snapshot(hand_folder) == before


@pytest.mark.parametrize("bad", [2.5, -3])
def test_fractional_or_negative_count_rejected(hand_folder, bad):
    path = hand_folder / "SYNTHETIC_MCE_A_Counts.xlsx"
    wb = openpyxl.load_workbook(path)
    wb.worksheets[0].cell(row=4, column=4).value = bad  # sample A02, gene TP53
    wb.save(path)
    before = _snapshot(hand_folder)
    with pytest.raises(SourceFormatError) as e:
        cigs.harmonize(hand_folder, "cigs_mce", _registry(hand_folder, "cigs_mce"))
    assert e.value.file == str(path) and e.value.field == "TP53"
    assert _snapshot(hand_folder) == before


# ---------------------------------------------------------------- native round trip

@pytest.fixture(scope="module")
def demo(world, tmp_path_factory):
    out = {}
    for ds in cigs.DATASETS:
        folder = tmp_path_factory.mktemp(ds)
        files = demo_cigs.write_synthetic(world, ds, folder)
        out[ds] = (folder, files, cigs.harmonize(folder, ds, _registry(folder, ds)))
    return out


@pytest.mark.parametrize("dataset", cigs.DATASETS)
def test_round_trip_schema_and_counts(demo, dataset):
    folder, files, h = demo[dataset]
    assert all("SYNTHETIC" in f.name for f in files)
    assert validate_harmonized(h.adata) == []
    d = DESIGNS[dataset]
    obs = h.adata.obs
    for ct in d.cell_types:
        sub = obs[obs["cell_type"] == ct]
        assert int((~sub["is_control"]).sum()) == len(d.compounds) * len(d.doses_uM) * len(d.times_h) * d.replicates
        assert int(sub["is_control"].sum()) == demo_cigs.CONTROL_WELLS_PER_PLATE * d.replicates
    assert not obs["perturbagen"].str.upper().isin(["JQ1", "BLANK", "RNA"]).any()
    assert obs["pubchem_cid"].notna().sum() == int((~obs["is_control"]).sum())
    summary = h.quarantine.summary()
    n_sub = len(d.cell_types)
    assert summary["zero-count library"] == n_sub
    assert summary["BLANK well (no cells)"] == n_sub * d.replicates
    assert summary["JQ1 (excluded BET inhibitor)"] == n_sub * d.replicates
    assert sum(v for k, v in summary.items() if k.startswith("low-read")) == 2 * n_sub
    assert np.issubdtype(h.adata.X.dtype, np.integer)


def test_excel_prone_genes_survive_and_landmarks_shared_with_l1000(demo, world):
    for ds in cigs.DATASETS:
        sym = set(demo[ds][2].adata.var["symbol"])
        in_world = set(world.genes["symbol"]) & set(EXCEL_PRONE_SYMBOLS)
        assert in_world <= sym, in_world - sym
    var = demo["cigs_mce"][2].adata.var
    assert world.genes.loc[var.index, "is_landmark"].sum() >= 200  # the L1000 I - CIGS-MCE overlap has genes


def test_mangled_cells_really_are_dates_in_the_workbook(demo):
    folder = demo["cigs_mce"][0]
    path = next(folder.glob("*MCF7*_Counts.xlsx"))
    wb = openpyxl.load_workbook(path, read_only=True)
    header = next(wb.worksheets[0].iter_rows(min_row=2, max_row=2, values_only=True))
    wb.close()
    assert dt.datetime(2023, 3, 1) in header and "SEPT7" in header and "MARCHF1" not in header


def test_planted_truth_visible(demo, world):
    _, _, h = demo["cigs_mce"]
    a = h.adata
    obs = a.obs
    ct = "CVCL_0031"
    strong = [c for c in DESIGNS["cigs_mce"].compounds if world.compounds["potency"].iloc[c] == 2.0][0]
    name = world.compounds["name"].iloc[strong]
    X = np.asarray(a.X, dtype=float)
    cpm = X / X.sum(1, keepdims=True) * 1e6
    trt = cpm[((obs["perturbagen"] == name) & (obs["cell_type"] == ct)).to_numpy()].mean(0)
    ctl = cpm[((obs["is_control"]) & (obs["cell_type"] == ct)).to_numpy()].mean(0)
    lfc = np.log2(trt + 1) - np.log2(ctl + 1)
    truth = world.true_logfc(strong, ct, 10.0, 24.0, genes=world.gene_index(a.var_names), dataset="cigs_mce")
    moved = np.abs(truth) > 0.5
    assert moved.sum() >= 10
    assert np.corrcoef(lfc[moved], truth[moved])[0, 1] > 0.8


# ---------------------------------------------------------------- real file names, unknown cell lines

def _same_adata(a, b):
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(a.var, b.var)
    assert np.array_equal(np.asarray(a.X), np.asarray(b.X))
    assert dict(a.uns) == dict(b.uns)


def test_remote_file_names_match_the_reader_patterns():
    import fnmatch

    for ds in cigs.DATASETS:
        names = [f.filename for f in cigs.REMOTE_FILES[ds]]
        counts = [n for n in names if fnmatch.fnmatch(n, cigs.COUNTS_GLOB.format(lib=cigs.LIBRARY[ds]))]
        assert len(counts) == (len(names) - 1) // 2  # one counts + one metadata per subset, one supplement
        assert all(n[: -len("Counts.xlsx")] + "MetaData.xlsx" in names for n in counts)
        assert [n for n in names if fnmatch.fnmatch(n, cigs.COMPOUND_WORKBOOK_GLOB)] == \
            ["41592_2025_2781_MOESM3_ESM.xlsx"]
    assert fnmatch.fnmatch(cigs.COMPOUND_WORKBOOK, cigs.COMPOUND_WORKBOOK_GLOB)


@pytest.mark.parametrize("dataset", cigs.DATASETS)
def test_files_under_their_real_names_give_the_same_anndata(demo, dataset, tmp_path):
    import shutil

    folder, files, h = demo[dataset]
    for f in files:  # the real downloads are the synthetic names without the SYNTHETIC_ prefix
        shutil.copy(f, tmp_path / f.name.removeprefix("SYNTHETIC_"))
    assert not any("SYNTHETIC" in p.name for p in tmp_path.iterdir())
    assert (tmp_path / "41592_2025_2781_MOESM3_ESM.xlsx").exists()
    h2 = cigs.harmonize(tmp_path, dataset, _registry(tmp_path, dataset))
    _same_adata(h.adata, h2.adata)
    # the workbooks' note rows still say SYNTHETIC, so the product stays labelled
    assert h2.adata.uns["synthetic"] is True and h.adata.uns["synthetic"] is True
    assert h2.quarantine.summary() == h.quarantine.summary()


@pytest.mark.parametrize("extra", [None, "copy"])
def test_compound_workbook_missing_or_ambiguous(hand_folder, extra):
    import shutil

    src = hand_folder / cigs.COMPOUND_WORKBOOK
    if extra:
        shutil.copy(src, hand_folder / "41592_2025_2781_MOESM3_ESM.xlsx")
    else:
        src.unlink()
    with pytest.raises(SourceFormatError) as e:
        cigs.compound_records(hand_folder, "cigs_mce")
    assert e.value.field == "<file>" and e.value.file == str(hand_folder / cigs.COMPOUND_WORKBOOK_GLOB)
    assert ("several" in e.value.problem) == bool(extra)


def test_no_counts_workbook_names_the_pattern(tmp_path):
    _write_compounds(tmp_path)
    with pytest.raises(SourceFormatError) as e:
        cigs.harmonize(tmp_path, "cigs_mce", _registry(tmp_path, "cigs_mce"))
    assert e.value.field == "<file>" and e.value.file == str(tmp_path / "*MCE_*_Counts.xlsx")


@pytest.mark.parametrize("label", ["cell_231", "231", 231, "cell_MDA_MB_231", "MDA_MB_231", "cell_MDA-MB-231"])
def test_real_cigs_labels_resolve_and_unknown_lines_are_quarantined(tmp_path, label):
    # subset A: MDA-MB-231 under one of the labels the real workbooks use; subset B: a line nobody knows
    a = [("A01", "HY-1", _row(1.0, 7)), ("A02", "HY-2", _row(1.02, 7)), ("A03", "DMSO", _row(0.98, 7))]
    b = [(f"B0{i}", t, _row(1 + 0.02 * i, 6)) for i, t in enumerate(["HY-1", "HY-2", "DMSO", "DMSO"])]
    _write_pair(tmp_path, "A", GENES_A, a, cell=label)
    _write_pair(tmp_path, "B", GENES_B, b, cell="cell_NOT-A-LINE")
    _write_compounds(tmp_path)
    h = cigs.harmonize(tmp_path, "cigs_mce", _registry(tmp_path, "cigs_mce"))
    assert h.adata.n_obs == 3 and set(h.adata.obs["cell_type"]) == {"CVCL_0062"}
    q = h.quarantine.to_frame()
    lost = q[q["reason"].str.startswith("unknown cell line")]
    assert sorted(lost["record_id"]) == ["B00", "B01", "B02", "B03"]
    assert set(lost["reason"]) == {"unknown cell line: cell_NOT-A-LINE"}
    assert set(lost["file"]) == {"SYNTHETIC_MCE_B_MetaData.xlsx"}
    assert validate_harmonized(h.adata) == []


def test_obs_columns_are_schema_columns(demo):
    from cpb_assets.harmonize.schema import OBS_COLUMNS, OPTIONAL_OBS

    for ds in cigs.DATASETS:
        obs = demo[ds][2].adata.obs
        assert set(obs.columns) - set(OBS_COLUMNS) == {"perturbagen_name", "pert_id", "cid_method", "subset",
                                                       "native_sample_id"}
        assert set(obs.columns) - set(OBS_COLUMNS) <= set(OPTIONAL_OBS)
    from cpb_assets.datasets import DATASET_INFO
    assert set(demo["cigs_tcm"][2].adata.obs["assay"]) == {DATASET_INFO["cigs_tcm"].assay}
