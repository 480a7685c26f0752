"""OP3 downstream targets and the compound re-split (METHODS §5 "OP3 downstream").

Target of a (cell type, compound) condition, per gene: ``sign(logFC) · −log10(P)``
from the `op3` group DE rows, clipped to ±:data:`TARGET_CLIP`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

# −log10 P beyond 10 (P < 1e-10) carries rank, not size: clip so a few extreme genes do not
# dominate the squared error (docs/methods.md, "OP3 downstream")
TARGET_CLIP = 10.0
TEST_FRACTION = 0.25
SPLIT_SEED = 42
CONDITION_KEYS = ["cell_type", "compound"]


def target_matrix(de: pd.DataFrame, clip: float = TARGET_CLIP) -> tuple[pd.DataFrame, list[str], np.ndarray]:
    """The conditions × genes target matrix of the OP3 group DE rows.

    Parameters
    ----------
    de
        DE rows with ``cell_type``, ``pubchem_cid``, ``perturbagen``, ``contrast_id``, ``gene``,
        ``logFC``, ``P_Value`` (treated-vs-DMSO contrasts of one dose and time, as OP3 has).
    clip
        Bound of |target|.

    Returns
    -------
    conditions
        One row per condition: cell_type, compound (the CID, else the source name), perturbagen,
        pubchem_cid, contrast_id; sorted by (cell_type, compound).
    genes
        The genes measured (finite logFC and P) in every condition, sorted: each cell type is
        its own limma fit with its own filterByExpr, so only the common genes make a full matrix.
    Y
        float32 (n_conditions, n_genes).
    """
    need = {"cell_type", "pubchem_cid", "perturbagen", "contrast_id", "gene", "logFC", "P_Value"}
    missing = need - set(de.columns)
    if missing:
        raise ValueError(f"OP3 DE rows lack columns {sorted(missing)}")
    de = de[np.isfinite(de["logFC"].to_numpy(float)) & np.isfinite(de["P_Value"].to_numpy(float))].copy()
    cid = de["pubchem_cid"].astype("string")
    de["compound"] = cid.where(cid.notna() & (cid != ""), de["perturbagen"].astype("string")).astype(str)
    conditions = (de[["cell_type", "compound", "perturbagen", "pubchem_cid", "contrast_id"]]
                  .drop_duplicates("contrast_id").sort_values(CONDITION_KEYS, kind="stable").reset_index(drop=True))
    dup = conditions.duplicated(CONDITION_KEYS)
    if dup.any():
        raise ValueError(f"OP3 DE rows hold several contrasts per (cell type, compound): "
                         f"{conditions.loc[dup, CONDITION_KEYS].head(3).to_dict('records')}")
    per_gene = de.groupby("gene")["contrast_id"].nunique()
    genes = sorted(per_gene.index[per_gene == len(conditions)])
    value = np.sign(de["logFC"].to_numpy(float)) * -np.log10(np.clip(de["P_Value"].to_numpy(float), 1e-300, 1.0))
    wide = (de.assign(value=np.clip(value, -clip, clip))[de["gene"].isin(genes)]
            .pivot(index="contrast_id", columns="gene", values="value"))
    y = wide.loc[conditions["contrast_id"], genes].to_numpy(np.float32)
    return conditions, genes, y


def compound_resplit(compounds, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED) -> set[str]:
    """The test compounds: round(25 %) of the sorted unique compounds, drawn without replacement
    by ``numpy.random.RandomState(42).choice`` (the legacy generator `np.random.seed(42)` drives)."""
    unique = sorted(set(map(str, compounds)))
    n_test = int(round(test_fraction * len(unique)))
    rng = np.random.RandomState(seed)
    return set(rng.choice(np.array(unique, dtype=object), size=n_test, replace=False).tolist())


def split_conditions(conditions: pd.DataFrame, test_compounds: set[str]) -> pd.Series:
    """'test' for every condition of a test compound, else 'train'."""
    return pd.Series(np.where(conditions["compound"].isin(test_compounds), "test", "train"), index=conditions.index,
                     name="split")
