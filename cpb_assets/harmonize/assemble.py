"""Assemble a harmonized AnnData from a source's per-sample table and matrix."""
from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cpb_assets.datasets import DATASET_INFO
from cpb_assets.errors import SourceFormatError
from cpb_assets.harmonize.contexts import donor_fields
from cpb_assets.harmonize.schema import CONTROL_NAME, DONOR_FIELDS, UNKNOWN, finalize_obs, make_sample_id

SAMPLE_COLUMNS = ["plate", "well", "cell_type", "perturbagen", "is_control", "pert_dose_uM", "pert_time_h",
                  "source_id"]
SYNTHETIC_MARK = "SYNTHETIC"


def is_synthetic(*evidence) -> bool:
    """True when any native file name or metadata value given says SYNTHETIC.

    `evidence`: file paths (only the file name counts, not the folder),
    metadata strings (a workbook note, an ``uns`` note), or ``True`` (a
    ``synthetic`` flag the file carries). Every synthetic writer of the project
    marks its files so; real downloads never are.
    """
    for e in evidence:
        if e is True or (isinstance(e, (bool, np.bool_)) and bool(e)):
            return True
        if isinstance(e, Path):
            e = e.name
        if isinstance(e, bytes):
            e = e.decode("utf-8", "replace")
        if isinstance(e, str) and SYNTHETIC_MARK in e:
            return True
    return False


def assemble_harmonized(samples: pd.DataFrame, X, genes: pd.DataFrame, *, dataset: str, synthetic: bool,
                        registry: pd.DataFrame, file: str = "<source>",
                        suspension_type: str = "na") -> ad.AnnData:
    """Build the METHODS §2 AnnData.

    Parameters
    ----------
    samples
        One row per sample (rows of `X`) with at least ``plate, well,
        cell_type, perturbagen, is_control, pert_dose_uM, pert_time_h,
        source_id`` (source_id: the compound key of `registry`, None for
        controls). Donor fields, ``psbulk_cells``, ``psbulk_counts`` and any
        optional schema column are taken from `samples` when present.
    X
        (n_samples, n_genes) matrix: integer counts or normalized log values.
    genes
        Index Ensembl IDs (unique), column ``symbol``.
    dataset
        A key of ``DATASET_INFO``; obs ``assay`` is its ``assay`` (the one place
        assay strings live).
    synthetic
        Whether the native files were SYNTHETIC (:func:`is_synthetic`); stored
        as ``uns['synthetic']``, the only place it is set.
    registry
        ``source_id, pubchem_cid, cid_method`` for this dataset.
    file
        Named in errors.
    """
    if dataset not in DATASET_INFO:
        raise KeyError(f"unknown dataset partition {dataset!r}")
    assay = DATASET_INFO[dataset].assay
    missing = [c for c in SAMPLE_COLUMNS if c not in samples.columns]
    if missing:
        raise SourceFormatError(file, missing[0], "required sample field missing")
    if genes.index.has_duplicates:
        raise SourceFormatError(file, "genes", f"duplicate genes {genes.index[genes.index.duplicated()][:5].tolist()}")
    obs = samples.reset_index(drop=True).copy()
    ctrl = obs["is_control"].astype(bool).to_numpy()
    obs.loc[ctrl, "pert_dose_uM"] = 0.0
    obs.loc[ctrl, "perturbagen"] = CONTROL_NAME
    obs.loc[ctrl, "source_id"] = None
    obs["pert_type"] = np.where(ctrl, "ctl_vehicle", "trt_cp")
    reg = registry.drop_duplicates("source_id").set_index("source_id")
    sid = obs["source_id"].astype(object)
    obs["pubchem_cid"] = [None if (s is None or pd.isna(s) or s not in reg.index) else reg.at[s, "pubchem_cid"]
                          for s in sid]
    obs["pubchem_cid"] = [None if (c is None or pd.isna(c)) else str(c) for c in obs["pubchem_cid"]]
    obs["cid_method"] = ["control" if c else (reg.at[s, "cid_method"] if s in reg.index else "unresolved")
                         for s, c in zip(sid, ctrl)]
    obs["dataset"] = dataset
    obs["assay"] = assay
    for col in ("psbulk_cells", "psbulk_counts"):
        if col not in obs.columns:
            obs[col] = UNKNOWN
    donors = {ct: donor_fields(ct, suspension_type=suspension_type) for ct in obs["cell_type"].unique()}
    for f in DONOR_FIELDS:
        if f not in obs.columns:
            obs[f] = [donors[ct][f] for ct in obs["cell_type"]]
    obs = obs.drop(columns=["source_id"])
    ids = make_sample_id(obs["plate"], obs["well"], obs["perturbagen"], obs["cell_type"])
    if ids.duplicated().any():
        dup = ids[ids.duplicated()].unique()[:5].tolist()
        raise SourceFormatError(file, "plate/well", f"duplicate samples (same plate, well, perturbagen, "
                                                    f"cell_type): {dup}")
    obs = finalize_obs(obs)
    var = pd.DataFrame({"symbol": genes["symbol"].astype(str).to_numpy()}, index=genes.index.astype(str))
    var.index.name = "gene"
    if sp.issparse(X):
        X = sp.csr_matrix(X)
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.uns["dataset"] = dataset
    adata.uns["synthetic"] = bool(synthetic)
    return adata
