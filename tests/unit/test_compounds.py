"""Compound registry: parent standardization and the CID matching order.

Uses the real PubChem sample (data/real/pubchem_sample): 100 compounds, among
them five salts stored beside their free bases (650049/650050, 650059/650060,
650061/650062, 650063/650064, 650065/650066).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from rdkit import Chem

from cpb_assets.harmonize.compounds import (
    CompoundReference, method_counts, normalize_catalog_id, normalize_name, resolve_compounds,
    standardize_parent,
)

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "real" / "pubchem_sample"
SALT_TO_BASE = {"650049": "650050", "650059": "650060", "650061": "650062", "650063": "650064",
                "650065": "650066"}
# 650010 as drawn by PubChem, and its parent as RDKit writes it
SMI_650010 = "CC1=NC2=CC(=NN2C(=C1)NCCN(C)C)C3=CC=CS3"
PARENT_650010 = "Cc1cc(NCCN(C)C)n2nc(-c3cccs3)cc2n1"
KEY_650010 = "VUWFMNIAVRCQHW-UHFFFAOYSA-N"


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return pd.read_csv(SAMPLE / "compounds.tsv", sep="\t", dtype=str)


@pytest.fixture()
def ref() -> CompoundReference:
    r = CompoundReference.from_pubchem_sample(SAMPLE / "compounds.tsv")
    # invented names and catalog IDs, as the demo world gives them
    r.add_names("650001", ["Alphamycin"])
    r.add_catalog_ids("650001", ["BRD-K00000001-001-01-1"])
    r.add_names("650002", "Betamycin")
    r.add_catalog_ids("650002", "HY-10002")
    return r


def smiles_of(sample, cid):
    return sample.loc[sample["pubchem_cid"] == cid, "isomeric_smiles"].item()


@pytest.mark.parametrize("smiles, parent, key", [
    (SMI_650010, PARENT_650010, KEY_650010),
    (SMI_650010 + ".Cl", PARENT_650010, KEY_650010),  # hydrochloride
    ("CC1=NC2=CC(=NN2C(=C1)NCC[NH+](C)C)C3=CC=CS3", PARENT_650010, KEY_650010),  # protonated amine
    ("[H+].CC(C)OC1=C(C=C(C=C1)C(=O)C)CN2CCCCC2.[Cl-]", "CC(=O)c1ccc(OC(C)C)c(CN2CCCCC2)c1", None),
    ("C1COC2=C(O1)C=CC(=C2)NCCC(=O)[O-].[Na+]", "O=C(O)CCNc1ccc2c(c1)OCCO2", "VOWKZYWNFALNAK-UHFFFAOYSA-N"),
    ("CC(=O)Oc1ccccc1C(=O)O", "CC(=O)Oc1ccccc1C(=O)O", "BSYNRYMUTXBXSQ-UHFFFAOYSA-N"),  # aspirin
])
def test_standardize_parent(smiles, parent, key):
    got = standardize_parent(smiles)
    assert got is not None and got[0] == parent
    if key:
        assert got[1] == key


def test_standardize_keeps_stereo_and_unneutralizable_charges():
    r, s = standardize_parent("C[C@H](N)C(=O)O"), standardize_parent("C[C@@H](N)C(=O)O")
    assert r[1] != s[1] and r[1] == "QNAYBMKLOCPYGJ-REOHCLBHSA-N"  # L-alanine
    # a nitro group and a quaternary ammonium stay charged
    assert standardize_parent("C[N+](C)(C)C.[Cl-]")[0] == "C[N+](C)(C)C"
    assert standardize_parent("O=[N+]([O-])c1ccccc1")[0] == "O=[N+]([O-])c1ccccc1"


@pytest.mark.parametrize("garbage", ["not a smiles", "C1CC", "C(((C", "", "   ", None, float("nan"), 42,
                                     "[Xx]", "c1ccccc1)("])
def test_garbage_smiles_gives_none_and_never_raises(garbage):
    assert standardize_parent(garbage) is None


def test_rdkit_inchikeys_equal_pubchems_for_the_whole_sample():
    ref = CompoundReference.from_pubchem_sample(SAMPLE / "compounds.tsv")
    n = 0
    for mol in Chem.SDMolSupplier(str(SAMPLE / "compounds.sdf"), sanitize=False):
        props = mol.GetPropsAsDict()
        assert ref._rows[str(props["PUBCHEM_COMPOUND_CID"])]["own_inchikey"] == props["PUBCHEM_NIST_INCHIKEY"]
        n += 1
    assert n == 100


def test_tsv_and_sdf_readers_agree():
    a = CompoundReference.from_pubchem_sample(SAMPLE / "compounds.tsv").to_frame()
    b = CompoundReference.from_pubchem_sample(SAMPLE / "compounds.sdf").to_frame()
    assert len(a) == len(b) == 100
    assert a["pubchem_cid"].tolist() == b["pubchem_cid"].tolist()
    assert a["parent_inchikey"].tolist() == b["parent_inchikey"].tolist()
    assert a["is_parent"].sum() == 95
    assert sorted(a.loc[~a["is_parent"], "pubchem_cid"]) == sorted(SALT_TO_BASE)


def test_the_sample_resolves_to_itself_salts_to_their_free_bases(ref, sample):
    records = pd.DataFrame({"dataset": "demo", "source_id": sample["pubchem_cid"],
                            "smiles": sample["isomeric_smiles"]})
    out = resolve_compounds(records, ref)
    assert (out["cid_method"] == "inchikey").all()
    expected = sample["pubchem_cid"].map(lambda c: SALT_TO_BASE.get(c, c))
    assert out["pubchem_cid"].tolist() == expected.tolist()


def test_matching_order(ref, sample):
    s1, s2 = smiles_of(sample, "650001"), smiles_of(sample, "650002")
    key2 = standardize_parent(s2)[1]
    records = pd.DataFrame([
        # 0: structure of 650001, name and catalog ID of 650002 -> InChIKey wins
        {"dataset": "a", "smiles": s1, "name": "Betamycin", "catalog_id": "HY-10002"},
        # 1: no SMILES, InChIKey of 650002, name of 650001 -> InChIKey wins
        {"dataset": "a", "inchikey": key2.lower(), "name": "Alphamycin"},
        # 2: catalog ID of 650001 (another batch), name of 650002 -> catalog wins
        {"dataset": "a", "catalog_id": "BRD-K00000001-003-05-9", "name": "Betamycin"},
        # 3: the source ID is a vendor number of 650002, name of 650001 -> catalog wins
        {"dataset": "a", "source_id": "hy 10002", "name": "Alphamycin"},
        # 4: name only, punctuation and case differ -> name; the manual entry is not needed
        {"dataset": "a", "source_id": "x4", "name": "  ALPHA-mycin "},
        # 5: unknown name, manual fallback of its dataset
        {"dataset": "a", "source_id": "x5", "name": "Mystery-1"},
        # 6: same unknown name in another dataset: that manual table does not apply
        {"dataset": "b", "source_id": "x6", "name": "Mystery-1"},
        # 7: garbage SMILES falls through to the name
        {"dataset": "a", "smiles": "C1CC((", "name": "betamycin"},
        # 8: nothing at all
        {"dataset": "a"},
    ], index=[f"r{i}" for i in range(9)])
    manual = {"a": {"Mystery-1": 650003, "x4": "650004"}}
    out = resolve_compounds(records, ref, manual=manual)
    assert out.index.tolist() == records.index.tolist()
    assert out["pubchem_cid"].tolist() == [
        "650001", "650002", "650001", "650002", "650001", "650003", None, "650002", None]
    assert out["cid_method"].tolist() == [
        "inchikey", "inchikey", "catalog_id", "catalog_id", "name", "manual", "unresolved", "name", "unresolved"]
    # structures: computed from the SMILES, or borrowed from the resolved compound
    assert out.loc["r0", "parent_inchikey"] == ref.parent_of("650001")[1]
    assert out.loc["r1", "parent_inchikey"] == key2
    assert out.loc["r7", "parent_smiles"] == ref.parent_of("650002")[0]
    assert out.loc["r6", "parent_smiles"] is None
    counts = method_counts(out).set_index("cid_method")["n"]
    assert counts["inchikey"] == 2 and counts["unresolved"] == 2 and counts["smiles"] == 0


def test_smiles_route_when_the_reference_inchikey_disagrees():
    # a reference whose InChIKey came from elsewhere and differs from RDKit's
    ref = CompoundReference([
        {"pubchem_cid": 1, "smiles": SMI_650010, "inchikey": "AAAAAAAAAAAAAA-BBBBBBBBBB-N"},
        {"pubchem_cid": 2, "smiles": "CCO", "catalog_ids": ["CAT-2"], "names": ["ethanol"]},
    ])
    records = pd.DataFrame({"smiles": [SMI_650010 + ".Cl", "CCO"], "catalog_id": ["CAT-2", None],
                            "name": ["ethanol", None]})
    out = resolve_compounds(records, ref)
    assert out["pubchem_cid"].tolist() == ["1", "2"]
    assert out["cid_method"].tolist() == ["smiles", "inchikey"]


def test_salt_and_charged_forms_resolve_through_the_parent(ref, sample):
    records = pd.DataFrame({"smiles": [
        SMI_650010 + ".Cl",  # hydrochloride of 650010
        "CC1=NC2=CC(=NN2C(=C1)NCC[NH+](C)C)C3=CC=CS3",  # protonated, no counter-ion
        "C1COC2=C(O1)C=CC(=C2)NCCC(=O)[O-].[Na+]",  # sodium salt of 650034
        "CCC1=CC=C(C=C1)OCC2=NN=C(N2C)SCCN3CCOCC3.Br",  # hydrobromide of 650050 (the sample has its oxalate)
    ]})
    out = resolve_compounds(records, ref)
    assert out["pubchem_cid"].tolist() == ["650010", "650010", "650034", "650050"]
    assert (out["cid_method"] == "inchikey").all()
    assert out.loc[0, "parent_smiles"] == PARENT_650010


def test_a_source_inchikey_of_the_salt_itself_finds_the_salt_cid(ref, sample):
    salt_key = Chem.MolToInchiKey(Chem.MolFromSmiles(smiles_of(sample, "650059")))
    out = resolve_compounds(pd.DataFrame({"inchikey": [salt_key]}), ref)
    assert out["pubchem_cid"].tolist() == ["650059"]


def test_ambiguous_names_and_catalog_ids_do_not_resolve(ref):
    ref.add_names("650003", "Alphamycin")  # now two compounds share the name
    ref.add_catalog_ids("650004", "HY-10002")
    out = resolve_compounds(pd.DataFrame({"name": ["alphamycin", None], "catalog_id": [None, "HY10002"]}), ref)
    assert out["cid_method"].tolist() == ["unresolved", "unresolved"]
    assert out["pubchem_cid"].tolist() == [None, None]


def test_missing_columns_and_empty_input(ref):
    out = resolve_compounds(pd.DataFrame({"name": ["Betamycin"]}), ref)
    assert out["pubchem_cid"].tolist() == ["650002"]
    empty = resolve_compounds(pd.DataFrame(columns=["name", "smiles"]), ref)
    assert len(empty) == 0 and {"pubchem_cid", "cid_method"} <= set(empty.columns)


@pytest.mark.parametrize("a, b, same", [
    ("Trichostatin A", "trichostatin-a", True),
    ("TRICHOSTATIN  A", "Trichostatin_A", True),
    ("(+)-JQ1", "(-)-JQ1", False),
    ("(+)-JQ1", "(+) JQ-1", True),
    ("1,12-diol", "11,2-diol", False),
    ("5-Azacytidine", "5 azacytidine", True),
    ("α-amanitin", "Α-Amanitin", True),
])
def test_normalize_name(a, b, same):
    assert (normalize_name(a) == normalize_name(b)) is same


@pytest.mark.parametrize("raw, norm", [
    ("BRD-K12345678-001-01-1", "BRD-K12345678"), ("brd-k12345678", "BRD-K12345678"),
    ("BRDK12345678", "BRD-K12345678"), ("HY-10002", "HY10002"), (" s 1234 ", "S1234"), (None, None), ("--", None),
])
def test_normalize_catalog_id(raw, norm):
    assert normalize_catalog_id(raw) == norm
