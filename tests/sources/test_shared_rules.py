"""Rules every source shares: cell-line resolution, the SYNTHETIC label, assay strings, optional obs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cpb_assets.datasets import DATASET_INFO
from cpb_assets.harmonize import contexts
from cpb_assets.harmonize.assemble import is_synthetic
from cpb_assets.harmonize.contexts import UNKNOWN_CELL_LINE, donor_fields, resolve_cell_type, resolve_cell_types
from cpb_assets.harmonize.quarantine import Quarantine
from cpb_assets.harmonize.schema import OPTIONAL_OBS
from cpb_assets.sources.registry import SOURCES


def test_resolve_cell_types_quarantines_unknown_records_once_each():
    names = pd.Series(["A-549", "MDA-MB-231", "CVCL_0062", "CVCL_9999", "NOT-A-LINE", None, "hepg2"],
                      index=[f"r{k}" for k in range(7)])
    q = Quarantine("test")
    out = resolve_cell_types(names, q, "meta.tsv")
    # CVCL_9999 is a well-formed Cellosaurus accession: accepted though no table knows it
    assert out.tolist() == ["CVCL_0023", "CVCL_0062", "CVCL_0062", "CVCL_9999", None, None, "CVCL_0027"]
    assert list(out.index) == list(names.index)
    frame = q.to_frame()
    assert sorted(frame["record_id"].tolist()) == ["r4", "r5"]
    assert set(frame["level"]) == {"sample"} and set(frame["file"]) == {"meta.tsv"}
    # the raw label is in the reason
    assert q.summary() == {f"{UNKNOWN_CELL_LINE}: NOT-A-LINE": 1, f"{UNKNOWN_CELL_LINE}: <missing>": 1}


def test_resolve_cell_types_counts_units_per_unknown_label():
    names = pd.Series(["A549", "HeLa-S3", "HeLa-S3", "XYZ", "A549"])
    q = Quarantine("test")
    out = resolve_cell_types(names, q, "plates", n=[40, 7, 5, 3, 60])
    assert out.tolist() == ["CVCL_0023", None, None, None, "CVCL_0023"]
    rows = q.to_frame().set_index("record_id")
    assert rows["n"].to_dict() == {"HeLa-S3": 12, "XYZ": 3} and set(rows["level"]) == {"cell"}
    assert q.summary() == {f"{UNKNOWN_CELL_LINE}: HeLa-S3": 12, f"{UNKNOWN_CELL_LINE}: XYZ": 3}


def test_source_labels_and_real_contexts():
    gdpx2 = {"fibroblast of dermis": "CL_0002551"}
    assert resolve_cell_type("Fibroblast of dermis ", gdpx2) == "CL_0002551"
    assert resolve_cell_type("fibroblast", gdpx2) is None
    # MDA-MB-231 (CIGS) in its spellings; donor fields from the table, no KeyError for IDs outside it
    assert {resolve_cell_type(n) for n in ("MDA-MB-231", "MDA_MB_231", "mda mb 231")} == {"CVCL_0062"}
    assert donor_fields("CVCL_0062")["sex"] == "female" and donor_fields("CVCL_0062")["tissue"] == "breast"
    assert donor_fields("CVCL_9999")["disease"] == "unknown"
    assert donor_fields("CL_0000515")["tissue_type"] == "primary cell"


def test_demo_world_contexts_are_fixed_and_known():
    # the demo world's seeded draws run over its own fixed context list, not the (growing) table
    from cpb_assets.demo.world import WORLD_CONTEXTS, build_world

    assert len(WORLD_CONTEXTS) == 18 and WORLD_CONTEXTS[0] == "CVCL_0023" and WORLD_CONTEXTS[-1] == "CL_0000182"
    assert set(WORLD_CONTEXTS) < set(contexts.CONTEXTS.index)
    assert build_world().contexts == list(WORLD_CONTEXTS)


def test_is_synthetic_reads_names_and_metadata():
    assert is_synthetic(Path("/x/plate1_SYNTHETIC_filt.h5ad"))
    assert not is_synthetic(Path("/SYNTHETIC_folder/validation_data_counts.h5ad"))  # the folder does not count
    assert is_synthetic(Path("validation_data_counts.h5ad"), "Note: SYNTHETIC demo data")
    assert is_synthetic(Path("a.h5ad"), np.bool_(True)) and is_synthetic(b"SYNTHETIC note")
    assert not is_synthetic(Path("a.h5ad"), None, False, "Note: All these datasets are for non-commercial use")


def test_every_source_takes_its_assay_from_dataset_info():
    for spec in SOURCES.values():
        assert not hasattr(spec.module(), "ASSAY")
    assert DATASET_INFO["cigs_tcm"].assay == "HiMAP-seq targeted panel"
    assert DATASET_INFO["cigs_mce"].assay == "HTS2 targeted panel"


def test_optional_obs_lists_what_sources_write():
    assert "qc_pass" not in OPTIONAL_OBS and "inchikey" not in OPTIONAL_OBS
    assert {"subset", "native_sample_id", "cid_method", "split", "percent_volume_dmso"} <= set(OPTIONAL_OBS)
