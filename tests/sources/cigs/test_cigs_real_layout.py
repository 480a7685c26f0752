"""CIGS on copies of its real-layout fixtures (tests/data/cigs_mce, cigs_tcm): quirks and bad input."""
from __future__ import annotations

import shutil
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from cpb_assets.errors import SourceFormatError
from cpb_assets.sources import cigs

DATA = Path(__file__).resolve().parents[2] / "data"
SUPPLEMENT = "41592_2025_2781_MOESM3_ESM.xlsx"


@pytest.fixture()
def tcm(tmp_path):
    shutil.copytree(DATA / "cigs_tcm", tmp_path / "tcm")
    return tmp_path / "tcm"


def _reg(folder, ds):
    recs = cigs.compound_records(folder, ds)
    return pd.DataFrame({"source_id": recs["source_id"], "pubchem_cid": None, "cid_method": "unresolved"})


def test_tcm_sheet_with_two_catalog_number_columns_gives_the_catalog_not_the_cas(tcm):
    rec = cigs.compound_records(tcm, "cigs_tcm")
    assert rec[["source_id", "name"]].values.tolist() == [["Cpd0001", "fixture-drug-9"],
                                                          ["Cpd0002", "fixture-drug-10"]]
    assert rec["smiles"].notna().all()


def test_catalog_column_that_cannot_be_told_apart_is_a_format_error(tcm):
    wb = openpyxl.load_workbook(tcm / SUPPLEMENT)
    ws = wb["Supplementary Table 4"]
    ws.cell(row=3, column=2).value = "Cpd9001"  # both columns now look like catalog numbers
    ws.cell(row=4, column=2).value = "Cpd9002"
    wb.save(tcm / SUPPLEMENT)
    with pytest.raises(SourceFormatError) as e:
        cigs.compound_records(tcm, "cigs_tcm")
    assert e.value.file.endswith(SUPPLEMENT) and e.value.field == "Supplementary Table 4/Catalog Number"


def test_one_catalog_number_with_conflicting_rows_is_a_format_error(tcm):
    wb = openpyxl.load_workbook(tcm / SUPPLEMENT)
    ws = wb["Supplementary Table 4"]
    ws.append(["another name", "7440-44-0", "Cpd0002", "CCO"])
    wb.save(tcm / SUPPLEMENT)
    with pytest.raises(SourceFormatError) as e:
        cigs.compound_records(tcm, "cigs_tcm")
    assert "Cpd0002" in e.value.problem


def test_tcm_row_wider_than_its_header_names_file_sheet_and_row(tcm):
    path = tcm / "TCM_Compounds_MDA_MB_231_10_Counts.xlsx"
    wb = openpyxl.load_workbook(path)
    ws = wb.worksheets[0]
    ws.cell(row=7, column=ws.max_column + 1).value = 17  # one count too many on sample row 7
    wb.save(path)
    with pytest.raises(SourceFormatError) as e:
        cigs.harmonize(tcm, "cigs_tcm", _reg(tcm, "cigs_tcm"))
    assert e.value.file == str(path) and e.value.field == "TCM_MDA_MB_231!row 7"
    assert "42 cells but the header has 41 columns" in e.value.problem


@pytest.mark.parametrize("how", ["empty", "truncated"])
def test_empty_or_truncated_workbook_is_a_source_format_error(tcm, how):
    path = tcm / "TCM_Compounds_HEK293T_10_MetaData.xlsx"
    raw = path.read_bytes()
    path.write_bytes(b"" if how == "empty" else raw[: len(raw) // 2])
    with pytest.raises(SourceFormatError) as e:
        cigs.harmonize(tcm, "cigs_tcm", _reg(tcm, "cigs_tcm"))
    assert e.value.file == str(path) and e.value.field == "<workbook>"


def test_labels_231_stored_as_a_number_and_293T_resolve(tcm):
    wb = openpyxl.load_workbook(tcm / "TCM_Compounds_MDA_MB_231_10_MetaData.xlsx", read_only=True)
    cells = {r[4] for r in wb.worksheets[0].iter_rows(min_row=3, values_only=True)}
    wb.close()
    assert cells == {231}  # the fixture stores the label as a number, as some real workbooks do
    h = cigs.harmonize(tcm, "cigs_tcm", _reg(tcm, "cigs_tcm"))
    assert h.adata.obs["cell_type"].value_counts().to_dict() == {"CVCL_0063": 7, "CVCL_0062": 7}
    assert not h.quarantine.to_frame()["reason"].str.startswith("unknown cell line").any()
