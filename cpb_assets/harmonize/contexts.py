"""Cellular contexts: cell-line names → Cellosaurus IDs, cell types → Cell Ontology.

`cell_type` holds ``CVCL_xxxx`` for cell lines and ``CL_nnnnnnn`` (underscore,
not colon) for primary cell types. Donor fields follow the CELLxGENE schema
names; unknown values are the string ``"unknown"``.
"""
from __future__ import annotations

import re

import pandas as pd

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
]
CONTEXTS = pd.DataFrame(_CONTEXTS, columns=["cell_type", "name", "sex", "disease", "tissue", "tissue_type"]
                        ).set_index("cell_type")

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
