"""Cellosaurus flat file → contexts table, and cell-line resolution against it (issue 8, point 3)."""
from __future__ import annotations

import pandas as pd
import pytest

from cpb_assets.errors import SourceFormatError
from cpb_assets.harmonize.cellosaurus import parse_records, read_cellosaurus
from cpb_assets.harmonize.contexts import (UNKNOWN_CELL_LINE, donor_fields, resolve_cell_type, resolve_cell_types,
                                           use_contexts)
from cpb_assets.harmonize.quarantine import Quarantine
from tests.conftest import REPO

EXCERPT = REPO / "data" / "reference" / "cellosaurus" / "cellosaurus_excerpt.txt"


@pytest.fixture(scope="module")
def table():
    return read_cellosaurus(EXCERPT)


def test_excerpt_parses_every_field(table):
    assert len(table) == 19 and table["cell_type"].is_unique
    t = table.set_index("cell_type")
    hek = t.loc["CVCL_0063"]
    assert hek["name"] == "HEK293T" and hek["synonyms"] == "293T; HEK 293T; HEK-293T; 293tsA1609neo"
    assert hek["secondary_accessions"] == "CVCL_1926; CVCL_4V93"
    assert (hek["parent"], hek["parent_name"]) == ("CVCL_0045", "HEK293")
    assert (hek["species"], hek["sex"], hek["age"], hek["category"]) == ("Homo sapiens", "Female", "Fetus",
                                                                        "Transformed cell line")
    assert t.loc["CVCL_0023", "disease"] == "Lung adenocarcinoma" and pd.isna(hek["disease"])
    assert t.loc["CVCL_0594", "species"] == "Mus musculus"


def test_malformed_flat_files_name_the_line():
    with pytest.raises(SourceFormatError, match="not terminated"):
        parse_records(["ID   X", "AC   CVCL_0001"])  # truncated: no //
    with pytest.raises(SourceFormatError) as err:
        parse_records(["ID   X", "AC   CVCL_01", "//"])
    assert err.value.field == "AC"
    with pytest.raises(SourceFormatError, match="no Cellosaurus record"):
        parse_records(["just a preamble"])
    with pytest.raises(SourceFormatError, match="has no accession"):
        parse_records(["ID   X", "SY   Y", "//"])


def test_empty_file(tmp_path):
    (tmp_path / "cellosaurus.txt").write_bytes(b"")
    with pytest.raises(SourceFormatError, match="empty"):
        read_cellosaurus(tmp_path / "cellosaurus.txt")


@pytest.mark.parametrize("label, expected", [
    ("293T", "CVCL_0063"), ("HEK 293T", "CVCL_0063"), ("hek-293t", "CVCL_0063"),  # synonyms, normalised
    ("cell_293T", "CVCL_0063"),  # the cell_ prefix
    ("CVCL_4V93", "CVCL_0063"),  # a secondary accession becomes the primary one
    ("H1299", "CVCL_0060"), ("NCI_H1299", "CVCL_0060"), ("HA1E", "CVCL_VU89"),  # lines outside the built-in table
    ("CVCL_ZZ99", "CVCL_ZZ99"),  # any well-formed accession
    ("NIH3T3", None),  # a mouse line never matches by name
    ("MDA-MB-231-luc", "CVCL_Z906"),
])
def test_resolution_with_the_table(table, label, expected):
    with use_contexts(table):
        assert resolve_cell_type(label) == expected


@pytest.mark.parametrize("label", ["cell_293T", "293T", "cell_231", "231", 231, "cell_MDA_MB_231", "MDA_MB_231"])
def test_cigs_labels_resolve_offline(label):
    """The CIGS labels, built-in table only (no Cellosaurus table): source-specific aliases."""
    expected = "CVCL_0063" if "293" in str(label) else "CVCL_0062"
    assert resolve_cell_type(label, dataset="cigs_mce") == expected
    assert resolve_cell_type(label, dataset="cigs_tcm") == expected


def test_source_aliases_are_source_specific():
    assert resolve_cell_type("231") is None and resolve_cell_type("231", dataset="l1000_phase1") is None


def test_quarantine_keeps_the_raw_label(table):
    q = Quarantine("cigs_mce")
    names = pd.Series(["cell_231", 294, "293T", "HEK293T-XYZ"], index=["s1", "s2", "s3", "s4"])
    with use_contexts(table):
        out = resolve_cell_types(names, q, "meta.xlsx")
    assert out.tolist() == ["CVCL_0062", None, "CVCL_0063", None]
    assert q.summary() == {f"{UNKNOWN_CELL_LINE}: 294": 1, f"{UNKNOWN_CELL_LINE}: HEK293T-XYZ": 1}


def test_donor_fields_from_cellosaurus(table):
    with use_contexts(table):
        d = donor_fields("CVCL_0060")
    assert (d["sex"], d["disease"], d["tissue"]) == ("male", "lung large cell carcinoma", "unknown")
    assert donor_fields("CVCL_0060")["sex"] == "unknown"  # outside the block: the built-in fallback
    assert donor_fields("CVCL_0031")["tissue"] == "breast"  # the built-in table still wins where it knows
