"""The source_cid method: CIDs the sources ship, cross-checked against structures (issue 8, point 4)."""
from __future__ import annotations

import pandas as pd
import pytest

from cpb_assets.harmonize.compounds import (CompoundReference, METHODS, compound_coverage, resolve_compounds)

ASPIRIN = "CC(=O)OC1=CC=CC=C1C(=O)O"
CAFFEINE = "CN1C=NC2=C1C(=O)N(C(=O)N2C)C"
IBUPROFEN = "CC(C)CC1=CC=C(C=C1)C(C)C(=O)O"


@pytest.fixture(scope="module")
def reference():
    return CompoundReference([{"pubchem_cid": 2244, "smiles": ASPIRIN}, {"pubchem_cid": 2519, "smiles": CAFFEINE}])


def test_source_cid_when_the_structure_does_not_resolve(reference):
    rec = pd.DataFrame({
        "dataset": "l1000_phase1",
        "source_id": ["a", "b", "c", "d", "e", "f"],
        "smiles": [ASPIRIN, None, CAFFEINE, IBUPROFEN, None, None],
        "pubchem_cid": ["2244", "3672", "2244", "3672", "-666", "0"],
    })
    out = resolve_compounds(rec, reference).set_index("source_id")
    # a: structure and shipped CID agree
    assert (out.loc["a", "pubchem_cid"], out.loc["a", "cid_method"], out.loc["a", "source_cid_check"]) == \
        ("2244", "inchikey", "agrees")
    # b: no structure, the shipped CID is taken
    assert (out.loc["b", "pubchem_cid"], out.loc["b", "cid_method"], out.loc["b", "source_cid_check"]) == \
        ("3672", "source_cid", "unchecked")
    # c: caffeine shipped with aspirin's CID: the structure wins, the mismatch is recorded
    assert (out.loc["c", "pubchem_cid"], out.loc["c", "cid_method"], out.loc["c", "source_cid_check"],
            out.loc["c", "source_cid"]) == ("2519", "inchikey", "mismatch", "2244")
    # d: a structure the reference lacks, the shipped CID unknown to it too: taken, unchecked
    assert (out.loc["d", "pubchem_cid"], out.loc["d", "cid_method"]) == ("3672", "source_cid")
    # e, f: '-666' and 0 are no CIDs
    assert out.loc[["e", "f"], "cid_method"].tolist() == ["unresolved", "unresolved"]
    assert out.loc[["e", "f"], "source_cid"].isna().all()


def test_a_shipped_cid_contradicting_an_unmatched_structure_is_not_taken(reference):
    # ibuprofen's structure is not in the reference, but the shipped CID (aspirin) is, with another structure
    out = resolve_compounds(pd.DataFrame({"source_id": ["x"], "smiles": [IBUPROFEN], "pubchem_cid": [2244.0]}),
                            reference)
    assert out["source_cid_check"].tolist() == ["mismatch"] and out["cid_method"].tolist() == ["unresolved"]


def test_compound_coverage_counts_methods_per_dataset(reference):
    rec = pd.DataFrame({"dataset": ["d1", "d1", "d1", "d2"], "source_id": ["a", "b", "c", "a"],
                        "smiles": [ASPIRIN, None, None, CAFFEINE], "pubchem_cid": [None, "3672", None, "2244"]})
    cov = compound_coverage(resolve_compounds(rec, reference))
    assert len(cov) == 2 * len(METHODS)
    d1 = cov[cov["dataset"] == "d1"].set_index("cid_method")
    assert d1.loc[["inchikey", "source_cid", "unresolved"], "n_compounds"].tolist() == [1, 1, 1]
    assert d1["n_compounds"].sum() == 3 and d1["fraction"].sum() == pytest.approx(1.0)
    d2 = cov[cov["dataset"] == "d2"].set_index("cid_method")
    assert d2.loc["inchikey", "source_cid_mismatches"] == 1
