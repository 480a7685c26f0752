"""The harmonized AnnData schema (METHODS §2) and its validation."""
from __future__ import annotations

import re
from typing import Protocol

import anndata as ad
import numpy as np
import pandas as pd

UNKNOWN = -666  # sentinel for psbulk_cells / psbulk_counts when not meaningful

DONOR_FIELDS = [
    "organism", "sex", "development_stage", "disease", "tissue", "tissue_type",
    "suspension_type", "self_reported_ethnicity",
]
# column -> pandas dtype kind the column must have ("O" string/object, "f" float, "i" int, "b" bool)
OBS_COLUMNS: dict[str, str] = {
    "plate": "O", "well": "O", "cell_type": "O", "perturbagen": "O", "pert_type": "O",
    "is_control": "b", "pert_dose_uM": "f", "pert_time_h": "f", "assay": "O", "dataset": "O",
    **{f: "O" for f in DONOR_FIELDS},
    "pubchem_cid": "O", "psbulk_cells": "i", "psbulk_counts": "i",
}
# optional obs columns, each written by some source: cid_method (every dataset, assemble.py),
# perturbagen_name, pert_id (most), split (OP3, DILImap), percent_volume_dmso (GDPx2),
# subset, native_sample_id (CIGS)
OPTIONAL_OBS = ["perturbagen_name", "split", "percent_volume_dmso", "pert_id", "cid_method", "subset",
                "native_sample_id"]
VAR_COLUMNS = {"symbol": "O"}

CELL_TYPE_PATTERN = re.compile(r"^(CVCL_[0-9A-Z]{4}|CL_\d{7})$")
ENSEMBL_PATTERN = re.compile(r"^ENSG\d{11}$")
CID_PATTERN = re.compile(r"^\d+$")
CONTROL_NAME = "DMSO"


def make_sample_id(plate, well, perturbagen, cell_type) -> pd.Series:
    """``plate_well_perturbagen_cell_type``, the harmonized obs index."""
    parts = [pd.Series(np.asarray(x, dtype=object)).astype(str) for x in (plate, well, perturbagen, cell_type)]
    return parts[0] + "_" + parts[1] + "_" + parts[2] + "_" + parts[3]


CHECK_CATEGORIES = ("columns", "ids", "doses", "controls", "duplicates")


class ObsAndVar(Protocol):
    """What the schema checks read: an AnnData, or a reader's written h5ad
    (:class:`cpb_assets.harmonize.assemble.WrittenH5ad`, obs and var in memory, X on disk)."""

    obs: pd.DataFrame
    var: pd.DataFrame


def check_harmonized(adata: ad.AnnData | ObsAndVar) -> dict[str, list[str]]:
    """Schema violations of a harmonized AnnData, by category (obs and var only: X is never read).

    Categories: ``columns`` (required obs/var columns and dtypes), ``ids``
    (``CVCL_``/``CL_`` cell types, ``ENSG`` genes, numeric CIDs),
    ``doses`` (≥ 0, 0 for controls, psbulk sentinels), ``controls`` (DMSO
    present in every DE stratum: cell_type, × percent_volume_dmso for GDPx2), ``duplicates`` (sample and gene IDs).
    """
    out: dict[str, list[str]] = {k: [] for k in CHECK_CATEGORIES}
    obs, var = adata.obs, adata.var
    for col, kind in OBS_COLUMNS.items():
        if col not in obs.columns:
            out["columns"].append(f"obs: missing column '{col}'")
            continue
        dt = obs[col].dtype
        actual = "O" if (dt == object or isinstance(dt, (pd.CategoricalDtype, pd.StringDtype))) else dt.kind
        if kind != actual:
            out["columns"].append(f"obs['{col}']: dtype {dt} but the schema wants kind '{kind}'")
    for col in VAR_COLUMNS:
        if col not in var.columns:
            out["columns"].append(f"var: missing column '{col}'")
    if obs.index.has_duplicates:
        dups = obs.index[obs.index.duplicated()].unique()[:5].tolist()
        out["duplicates"].append(f"obs: duplicate sample IDs {dups}")
    if var.index.has_duplicates:
        out["duplicates"].append(f"var: duplicate gene IDs {var.index[var.index.duplicated()].unique()[:5].tolist()}")
    bad_genes = [g for g in var.index if not ENSEMBL_PATTERN.match(str(g))]
    if bad_genes:
        out["ids"].append(f"var: {len(bad_genes)} gene IDs are not Ensembl (e.g. {bad_genes[:3]})")
    if out["columns"]:
        return out  # the value checks below need the columns
    bad_ct = sorted({c for c in obs["cell_type"].astype(str) if not CELL_TYPE_PATTERN.match(c)})
    if bad_ct:
        out["ids"].append(f"obs['cell_type']: not CVCL_/CL_ IDs: {bad_ct[:5]}")
    cid = obs["pubchem_cid"].dropna().astype(str)
    bad_cid = sorted({c for c in cid if not CID_PATTERN.match(c)})
    if bad_cid:
        out["ids"].append(f"obs['pubchem_cid']: not numeric CIDs: {bad_cid[:5]}")
    dose = obs["pert_dose_uM"].to_numpy(dtype=float)
    ctrl = obs["is_control"].to_numpy(dtype=bool)
    if np.any(~np.isfinite(dose)) or np.any(dose < 0):
        out["doses"].append("obs['pert_dose_uM']: negative or non-finite doses")
    if np.any(dose[ctrl] != 0):
        out["doses"].append("obs['pert_dose_uM']: controls must have dose 0")
    for col in ("psbulk_cells", "psbulk_counts"):
        v = obs[col].to_numpy()
        if np.any((v < 0) & (v != UNKNOWN)):
            out["doses"].append(f"obs['{col}']: negative values other than {UNKNOWN}")
    # the DE strata: cell_type, and GDPx2's percent_volume_dmso where present
    stratum = obs["cell_type"].astype(str)
    if "percent_volume_dmso" in obs.columns:
        stratum = stratum + "|dmso" + obs["percent_volume_dmso"].astype(str)
    strata = pd.Series(ctrl).groupby(stratum.to_numpy()).any()
    missing = strata.index[~strata.to_numpy()].tolist()
    if missing:
        out["controls"].append(f"no DMSO controls in strata {missing[:5]}")
    return out


def validate_harmonized(adata: ad.AnnData | ObsAndVar) -> list[str]:
    """Every schema violation of a harmonized AnnData (empty list: valid)."""
    return [p for probs in check_harmonized(adata).values() for p in probs]


def finalize_obs(obs: pd.DataFrame) -> pd.DataFrame:
    """Cast obs columns to their schema dtypes and index by ``sample_id``."""
    obs = obs.copy()
    for col, kind in OBS_COLUMNS.items():
        if col not in obs.columns:
            raise KeyError(f"harmonized obs lacks required column '{col}'")
        if kind == "O":
            # nullable strings: missing stays missing (NULL in SQL) and h5ad can store it
            obs[col] = pd.array([None if (v is None or (isinstance(v, float) and np.isnan(v))) else str(v)
                                 for v in obs[col]], dtype="string")
        elif kind == "f":
            obs[col] = obs[col].astype(float)
        elif kind == "i":
            obs[col] = obs[col].astype(np.int64)
        elif kind == "b":
            obs[col] = obs[col].astype(bool)
    obs.index = make_sample_id(obs["plate"], obs["well"], obs["perturbagen"], obs["cell_type"]).to_numpy()
    obs.index.name = "sample_id"
    return obs
