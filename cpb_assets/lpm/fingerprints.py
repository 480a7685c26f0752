"""Morgan fingerprints of the perturbation molecules (METHODS §5), keyed by PubChem CID.

Pure logic (RDKit / pandas; no Dagster). Two generators:

- LPM initialisation: ``rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=128)``;
- OP3 descriptors: radius 1, 2,000 bits.

Bits are float32 0/1 of the fingerprint of the structure *as given* (no
standardisation): the source SMILES of the compound, else PubChem's SMILES of
its CID. Controls and compounds without a valid structure get a zero vector.

API for the training loop (h8): :func:`load_fingerprints` (path) → (CIDs,
float32 matrix [n, n_bits]); :func:`fingerprint_matrix` (symbols, table) → the
rows for a vocabulary's perturbation symbols (Control and unknown → zeros).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

LPM_FP = {"name": "morgan_r2_128", "radius": 2, "n_bits": 128}
OP3_FP = {"name": "morgan_r1_2000", "radius": 1, "n_bits": 2000}
FINGERPRINTS = [LPM_FP, OP3_FP]
CONTROL = "Control"


def morgan_bits(smiles: str | None, radius: int = 2, n_bits: int = 128) -> np.ndarray:
    """float32 0/1 Morgan bits of one SMILES as drawn; zeros when missing or unparsable.

    Parameters
    ----------
    smiles
        Any SMILES (salts and charges are kept: no standardisation).
    radius, n_bits
        ``GetMorganGenerator(radius=radius, fpSize=n_bits)``.
    """
    out = np.zeros(n_bits, dtype=np.float32)
    mol = _mol(smiles)
    if mol is None:
        return out
    from rdkit.Chem import rdFingerprintGenerator

    fp = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits).GetFingerprintAsNumPy(mol)
    return fp.astype(np.float32)


def _mol(smiles):
    if not isinstance(smiles, str) or not smiles.strip():
        return None
    from rdkit import Chem, rdBase

    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles.strip())
    return mol if mol is not None and mol.GetNumAtoms() else None


def choose_structures(registry: pd.DataFrame, pubchem: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One structure per CID: the first parsable source SMILES, else PubChem's.

    Parameters
    ----------
    registry
        The compound registry (columns dataset, source_id, smiles, pubchem_cid);
        source records are taken in (dataset, source_id) order.
    pubchem
        CID → PubChem SMILES (the compound reference).

    Returns
    -------
    pandas.DataFrame
        pubchem_cid, smiles (None without a valid structure), smiles_from
        (``source`` / ``pubchem`` / ``none``), one row per CID, sorted.
    """
    pubchem = pubchem or {}
    reg = registry[registry["pubchem_cid"].notna()].copy()
    reg["pubchem_cid"] = reg["pubchem_cid"].astype(str)
    reg = reg.sort_values(["pubchem_cid", "dataset", "source_id"], kind="stable")
    rows = []
    for cid, grp in reg.groupby("pubchem_cid", sort=True):
        chosen, origin = None, "none"
        for s in grp["smiles"]:
            if _mol(s) is not None:
                chosen, origin = s.strip(), "source"
                break
        if chosen is None and _mol(pubchem.get(cid)) is not None:
            chosen, origin = pubchem[cid].strip(), "pubchem"
        rows.append((cid, chosen, origin))
    return pd.DataFrame(rows, columns=["pubchem_cid", "smiles", "smiles_from"])


def reference_smiles(path: str | Path) -> dict[str, str]:
    """CID → SMILES of the compound reference (PubChem's structures; TSV or SDF, see
    :meth:`cpb_assets.harmonize.compounds.CompoundReference.from_pubchem_sample`)."""
    from cpb_assets.harmonize.compounds import CompoundReference

    ref = CompoundReference.from_pubchem_sample(path).to_frame()
    return {str(c): s for c, s in zip(ref["pubchem_cid"], ref["smiles"]) if isinstance(s, str) and s}


def fingerprint_table(structures: pd.DataFrame, radius: int, n_bits: int) -> pa.Table:
    """Fingerprints of chosen structures plus a ``Control`` row of zeros.

    Returns
    -------
    pyarrow.Table
        pubchem_cid, smiles, smiles_from, valid (bool), bits (fixed-size list of float32).
    """
    cids = [CONTROL, *structures["pubchem_cid"].astype(str)]
    smiles = [None, *structures["smiles"]]
    origin = ["control", *structures["smiles_from"]]
    mat = np.stack([morgan_bits(s, radius, n_bits) for s in smiles]) if cids else np.zeros((0, n_bits), np.float32)
    valid = [s is not None and _mol(s) is not None for s in smiles]
    bits = pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1), pa.float32()), n_bits)
    return pa.table({"pubchem_cid": cids, "smiles": smiles, "smiles_from": origin, "valid": valid, "bits": bits})


def load_fingerprints(path: str | Path) -> tuple[list[str], np.ndarray]:
    """(CIDs, float32 matrix [n, n_bits]) of a fingerprint Parquet file."""
    t = pq.read_table(path, columns=["pubchem_cid", "bits"])
    n_bits = t.schema.field("bits").type.list_size
    mat = t["bits"].combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, n_bits)
    return t["pubchem_cid"].to_pylist(), mat.astype(np.float32)


def fingerprint_matrix(symbols: Sequence[str], cids: Sequence[str], mat: np.ndarray) -> np.ndarray:
    """Rows of `mat` for perturbation symbols in order; Control and CIDs without a row → zeros."""
    pos = {c: i for i, c in enumerate(cids)}
    out = np.zeros((len(symbols), mat.shape[1]), dtype=np.float32)
    for i, s in enumerate(symbols):
        j = pos.get(str(s))
        if j is not None and s != CONTROL:
            out[i] = mat[j]
    return out
