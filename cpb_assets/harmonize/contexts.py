"""Cellular contexts: cell-line names → Cellosaurus IDs, cell types → Cell Ontology.

`cell_type` holds ``CVCL_xxxx`` for cell lines and ``CL_nnnnnnn`` (underscore,
not colon) for primary cell types. Donor fields follow the CELLxGENE schema
names; unknown values are the string ``"unknown"``.
"""
from __future__ import annotations

import re

import pandas as pd

from cpb_assets.harmonize.quarantine import Quarantine

# cell_type, preferred name, sex, disease, tissue, tissue_type
_CONTEXTS = [
    ("CVCL_0023", "A549", "male", "lung adenocarcinoma", "lung", "cell line"),
    ("CVCL_0031", "MCF7", "female", "breast adenocarcinoma", "breast", "cell line"),
    ("CVCL_0004", "K562", "female", "chronic myelogenous leukemia", "blood", "cell line"),
    ("CVCL_0132", "A375", "female", "amelanotic melanoma", "skin", "cell line"),
    ("CVCL_0035", "PC3", "male", "prostate carcinoma", "prostate", "cell line"),
    ("CVCL_0320", "HT29", "female", "colon adenocarcinoma", "colon", "cell line"),
    ("CVCL_0042", "U2OS", "female", "osteosarcoma", "bone", "cell line"),
    ("CVCL_0027", "HEPG2", "male", "hepatoblastoma", "liver", "cell line"),
    ("CVCL_0030", "HELA", "female", "cervical adenocarcinoma", "cervix", "cell line"),
    ("CVCL_0063", "HEK293T", "female", "normal", "kidney", "cell line"),
    ("CVCL_0291", "HCT116", "male", "colon carcinoma", "colon", "cell line"),
    ("CVCL_2235", "VCAP", "male", "prostate carcinoma", "prostate", "cell line"),
    ("CVCL_0006", "THP1", "male", "acute monocytic leukemia", "blood", "cell line"),
    ("CL_0000623", "NK cell", "unknown", "normal", "blood", "primary cell"),
    ("CL_0000084", "T cell", "unknown", "normal", "blood", "primary cell"),
    ("CL_0000763", "myeloid cell", "unknown", "normal", "blood", "primary cell"),
    ("CL_0000236", "B cell", "unknown", "normal", "blood", "primary cell"),
    ("CL_0000182", "hepatocyte", "unknown", "normal", "liver", "primary cell"),
    # CIGS (MCE and TCM panels)
    ("CVCL_0062", "MDA-MB-231", "female", "breast adenocarcinoma", "breast", "cell line"),
    # GDPx2's four primary cell types (Cell Ontology IDs and labels)
    ("CL_0002539", "aortic smooth muscle cell", "unknown", "normal", "aorta", "primary cell"),
    ("CL_0002484", "epithelial melanocyte", "unknown", "normal", "skin", "primary cell"),
    ("CL_0002551", "fibroblast of dermis", "unknown", "normal", "skin", "primary cell"),
    ("CL_0000515", "skeletal muscle myoblast", "unknown", "normal", "skeletal muscle", "primary cell"),
]
#: every context a source may map to
CONTEXTS = pd.DataFrame(_CONTEXTS, columns=["cell_type", "name", "sex", "disease", "tissue", "tissue_type"]
                        ).set_index("cell_type")
UNKNOWN_CELL_LINE = "unknown cell line"  # quarantine reason, one for every source

# OP3's own cell-type labels (METHODS §1)
OP3_CELL_TYPES = {"NK cells": "CL_0000623", "T cells": "CL_0000084", "Myeloid cells": "CL_0000763",
                  "B cells": "CL_0000236", "NK": "CL_0000623", "T": "CL_0000084", "Myeloid": "CL_0000763",
                  "B": "CL_0000236"}


def _norm(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", str(name).upper())


_BY_NAME = {_norm(n): ct for ct, n in zip(CONTEXTS.index, CONTEXTS["name"])}


def cell_line_to_cellosaurus(name: str) -> str | None:
    """Map a cell-line name (``A-549``, ``MCF 7``, ``HepG2`` …) to its Cellosaurus ID.

    Returns None when the name is not known; callers quarantine such samples.
    """
    if re.fullmatch(r"CVCL_[0-9A-Z]{4}", str(name)):
        return str(name)
    return _BY_NAME.get(_norm(name))


def donor_fields(cell_type: str, *, suspension_type: str = "na", development_stage: str = "unknown",
                 sex: str | None = None) -> dict[str, str]:
    """The donor block of the obs schema for one context (``unknown`` for contexts not in the table)."""
    if cell_type not in CONTEXTS.index:
        row = {"sex": "unknown", "disease": "unknown", "tissue": "unknown",
               "tissue_type": "primary cell" if cell_type.startswith("CL_") else "cell line"}
    else:
        row = CONTEXTS.loc[cell_type]
    return {
        "organism": "Homo sapiens",
        "sex": sex or row["sex"],
        "development_stage": development_stage,
        "disease": row["disease"],
        "tissue": row["tissue"],
        "tissue_type": row["tissue_type"],
        "suspension_type": suspension_type,
        "self_reported_ethnicity": "unknown",
    }


def _missing(v) -> bool:
    return v is None or (not isinstance(v, str) and pd.isna(v)) or str(v).strip() == ""


def resolve_cell_type(name, extra: dict[str, str] | None = None) -> str | None:
    """One source label → a context ID of :data:`CONTEXTS`, else None.

    `name` is a cell-line name or ``CVCL_xxxx`` (:func:`cell_line_to_cellosaurus`),
    or a label of `extra` (a source's own labels → IDs, matched case-insensitively).
    IDs outside the table give None too: their donor metadata would be unknown.
    """
    if _missing(name):
        return None
    ct = cell_line_to_cellosaurus(str(name).strip())
    if ct is None and extra:
        ct = {str(k).strip().lower(): v for k, v in extra.items()}.get(str(name).strip().lower())
    return ct if ct in CONTEXTS.index else None


def resolve_cell_types(names, quarantine: Quarantine, file, *, n=None, extra: dict[str, str] | None = None,
                       level: str | None = None) -> pd.Series:
    """Map source cell-line/cell-type labels to context IDs; quarantine the unknown ones.

    Parameters
    ----------
    names
        One label per record (Series; its index holds the record IDs).
    quarantine, file
        Where unknown labels are recorded, reason :data:`UNKNOWN_CELL_LINE`.
    n
        Units per record (e.g. cells of a pseudobulk group). None: one
        quarantine row per record (record_id = the index, level ``sample``);
        else one row per unknown label with the summed units (record_id =
        the label, level ``cell``).
    extra
        The source's own labels → IDs (see :func:`resolve_cell_type`).

    Returns
    -------
    The context ID per record (None where unknown), same index as `names`.
    """
    names = names if isinstance(names, pd.Series) else pd.Series(list(names), dtype=object)
    lookup = {v: resolve_cell_type(v, extra) for v in pd.unique(names.astype(object)) if not _missing(v)}
    out = pd.Series([None if _missing(v) else lookup[v] for v in names.astype(object)], index=names.index,
                    dtype=object)
    bad = out.isna().to_numpy()
    if bad.any():
        if n is None:
            quarantine.add(file, names.index[bad], UNKNOWN_CELL_LINE, level=level or "sample")
        else:
            units = pd.Series(pd.Series(n).to_numpy()[bad], dtype="int64")
            labels = names[bad].map(lambda v: "<missing>" if _missing(v) else str(v)).to_numpy()
            for label, k in units.groupby(labels).sum().items():
                quarantine.add_count(file, label, UNKNOWN_CELL_LINE, int(k), level=level or "cell")
    return out
