"""Morgan fingerprints (METHODS §5): bits checked against RDKit's own APIs."""
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator

from cpb_assets.lpm import fingerprints as fpm

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
ASPIRIN_SODIUM = "CC(=O)Oc1ccccc1C(=O)[O-].[Na+]"


def _on_bits(smiles, radius, n_bits):
    """Independently of the module: the generator's ExplicitBitVect and its on-bits."""
    fp = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits).GetFingerprint(
        Chem.MolFromSmiles(smiles))
    return list(fp.GetOnBits())


def test_aspirin_bits_match_rdkit():
    for radius, n_bits in ((2, 128), (1, 2000)):
        bits = fpm.morgan_bits(ASPIRIN, radius, n_bits)
        assert bits.dtype == np.float32 and bits.shape == (n_bits,)
        assert set(np.unique(bits)) <= {0.0, 1.0}
        assert np.flatnonzero(bits).tolist() == _on_bits(ASPIRIN, radius, n_bits)
    # the ECFP4-style count of distinct environments of aspirin folds to at most 128 bits
    arr = np.zeros(128)
    DataStructs.ConvertToNumpyArray(rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=128)
                                    .GetFingerprint(Chem.MolFromSmiles(ASPIRIN)), arr)
    np.testing.assert_array_equal(fpm.morgan_bits(ASPIRIN), arr.astype(np.float32))


def test_no_standardisation_and_zero_vectors():
    # a salt keeps its counter-ion and charge: different bits from the free acid
    assert not np.array_equal(fpm.morgan_bits(ASPIRIN_SODIUM), fpm.morgan_bits(ASPIRIN))
    assert np.flatnonzero(fpm.morgan_bits(ASPIRIN_SODIUM)).tolist() == _on_bits(ASPIRIN_SODIUM, 2, 128)
    for bad in (None, "", "not_a_smiles", "C1CC", float("nan")):
        assert not fpm.morgan_bits(bad).any()


def test_structures_source_first_then_pubchem_and_control_rows(tmp_path):
    registry = pd.DataFrame({
        "dataset": ["d1", "d2", "d1", "d1", "d2"],
        "source_id": ["a", "b", "c", "d", "e"],
        "smiles": ["garbage(", ASPIRIN_SODIUM, None, None, "CS(C)=O"],
        "pubchem_cid": ["2244", "2244", "3672", "999", None],
    })
    pubchem = {"2244": ASPIRIN, "3672": "CC(C)Cc1ccc(cc1)C(C)C(=O)O"}
    st = fpm.choose_structures(registry, pubchem)
    got = {r.pubchem_cid: (r.smiles, r.smiles_from) for r in st.itertuples()}
    # 2244: the first record does not parse, the second (a salt, as drawn) does → source SMILES wins
    assert got == {"2244": (ASPIRIN_SODIUM, "source"), "3672": (pubchem["3672"], "pubchem"), "999": (None, "none")}
    table = fpm.fingerprint_table(st, 2, 128)
    path = tmp_path / "fp.parquet"
    pq.write_table(table, path)
    cids, mat = fpm.load_fingerprints(path)
    assert cids == ["Control", "2244", "3672", "999"] and mat.dtype == np.float32 and mat.shape == (4, 128)
    assert not mat[0].any() and not mat[3].any()  # Control and a CID without structure → zeros
    np.testing.assert_array_equal(mat[1], fpm.morgan_bits(ASPIRIN_SODIUM))
    # rows for a vocabulary: Control and unknown CIDs → zeros
    rows = fpm.fingerprint_matrix(["Control", "3672", "123456"], cids, mat)
    assert not rows[0].any() and not rows[2].any()
    np.testing.assert_array_equal(rows[1], mat[2])
