"""Cellular contexts: cell-line names → Cellosaurus IDs, cell types → Cell Ontology.

`cell_type` holds ``CVCL_xxxx`` for cell lines and ``CL_nnnnnnn`` (underscore,
not colon) for primary cell types. Donor fields follow the CELLxGENE schema
names; unknown values are the string ``"unknown"``.

Resolution of a source label, first hit wins:

1. a well-formed Cellosaurus accession (``CVCL_`` + 4 characters) is accepted
   as it is, whether or not a table knows it (a secondary accession becomes
   its primary one);
2. the source's own labels (``extra=`` of the reader) and the source-specific
   aliases of :data:`SOURCE_ALIASES`;
3. the built-in table :data:`CONTEXTS` (names, after normalisation);
4. the Cellosaurus table in use (:func:`use_contexts`; the ``cellosaurus``
   asset's parse of ``cellosaurus.txt``): recommended names, then synonyms.

Names are normalised before matching: case, spaces, ``-``, ``_``, ``.`` and
``/`` are ignored, and a leading ``cell_`` / ``cell `` prefix is dropped when
the label does not match with it. Without a Cellosaurus table (readers called
outside the assets, tests) the built-in table is the offline fallback. Labels
that resolve nowhere are quarantined with the raw label in the reason.
"""
from __future__ import annotations

import contextlib
import contextvars
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
UNKNOWN_CELL_LINE = "unknown cell line"  # quarantine reason prefix, one for every source: "unknown cell line: <label>"

# Source-specific aliases: labels one source uses that are no Cellosaurus name or synonym of the
# line meant (or are too short to trust globally). dataset -> {label (normalised) -> accession}.
# CIGS labels its lines cell_293T / 293T (HEK293T) and cell_231 / 231 (MDA-MB-231), sometimes as ints.
SOURCE_ALIASES: dict[str, dict[str, str]] = {
    "cigs_mce": {"293T": "CVCL_0063", "231": "CVCL_0062"},
    "cigs_tcm": {"293T": "CVCL_0063", "231": "CVCL_0062"},
}

# OP3's own cell-type labels (METHODS §1)
OP3_CELL_TYPES = {"NK cells": "CL_0000623", "T cells": "CL_0000084", "Myeloid cells": "CL_0000763",
                  "B cells": "CL_0000236", "NK": "CL_0000623", "T": "CL_0000084", "Myeloid": "CL_0000763",
                  "B": "CL_0000236"}


def _norm(name) -> str:
    return re.sub(r"[^A-Z0-9]", "", str(name).upper())


def _strip_cell_prefix(name: str) -> str | None:
    m = re.match(r"^\s*cell[\s_\-]+(.+)$", str(name), flags=re.IGNORECASE)
    return m.group(1) if m else None


_BY_NAME = {_norm(n): ct for ct, n in zip(CONTEXTS.index, CONTEXTS["name"])}
_ACCESSION = re.compile(r"^CVCL_[0-9A-Z]{4}$")


class ContextTable:
    """Name → accession look-ups over a Cellosaurus contexts table (``cellosaurus`` asset).

    Recommended names win over synonyms; a normalised synonym shared by
    several lines is ambiguous and answers None. Only human lines match by
    name (``species`` Homo sapiens); accessions of any species are accepted.
    """

    def __init__(self, table: pd.DataFrame):
        self.table = table.set_index("cell_type", drop=False)
        self.by_name: dict[str, str] = {}
        self.by_synonym: dict[str, set[str]] = {}
        self.secondary: dict[str, str] = {}
        human = set(table.loc[table["species"].astype(str).str.startswith("Homo sapiens"), "cell_type"])
        by_name: dict[str, set[str]] = {}
        for r in table.itertuples(index=False):
            if r.cell_type not in human:  # the compendium is human: other species never match a name
                continue
            by_name.setdefault(_norm(r.name), set()).add(r.cell_type)
            for syn in str(r.synonyms or "").split(";"):
                if syn.strip():
                    self.by_synonym.setdefault(_norm(syn), set()).add(r.cell_type)
            for acc in str(r.secondary_accessions or "").split(";"):
                if acc.strip():
                    self.secondary[acc.strip()] = r.cell_type
        for key, acs in by_name.items():
            pick = self._pick(acs, human)
            if pick:
                self.by_name[key] = pick
        self._human = human

    @staticmethod
    def _pick(acs: set[str], human: set[str]) -> str | None:
        if len(acs) == 1:
            return next(iter(acs))
        hs = acs & human
        return next(iter(hs)) if len(hs) == 1 else None

    def lookup(self, name) -> str | None:
        key = _norm(name)
        if key in self.by_name:
            return self.by_name[key]
        return self._pick(self.by_synonym.get(key, set()), self._human)

    def row(self, accession: str) -> pd.Series | None:
        return self.table.loc[accession] if accession in self.table.index else None


_ACTIVE: contextvars.ContextVar[ContextTable | None] = contextvars.ContextVar("cpb_contexts", default=None)


@contextlib.contextmanager
def use_contexts(table: pd.DataFrame | None):
    """Resolve cell lines against `table` (the Cellosaurus contexts table) inside the block;
    None keeps the built-in table only (the offline fallback)."""
    token = _ACTIVE.set(ContextTable(table) if table is not None and len(table) else None)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def active_contexts() -> ContextTable | None:
    """The Cellosaurus table in use (None: the built-in table only)."""
    return _ACTIVE.get()


def cell_line_to_cellosaurus(name: str) -> str | None:
    """Map a cell-line name (``A-549``, ``MCF 7``, ``HepG2``, ``cell_MDA_MB_231`` …) or a
    ``CVCL_`` accession to its Cellosaurus accession.

    Returns None when the name is not known; callers quarantine such samples.
    """
    text = str(name).strip()
    if _ACCESSION.match(text.upper()):
        acc = text.upper()
        active = _ACTIVE.get()
        return active.secondary.get(acc, acc) if active is not None else acc
    for candidate in (text, _strip_cell_prefix(text)):
        if candidate is None:
            continue
        hit = _BY_NAME.get(_norm(candidate))
        if hit is None and _ACTIVE.get() is not None:
            hit = _ACTIVE.get().lookup(candidate)
        if hit is not None:
            return hit
    return None


def donor_fields(cell_type: str, *, suspension_type: str = "na", development_stage: str = "unknown",
                 sex: str | None = None) -> dict[str, str]:
    """The donor block of the obs schema for one context (``unknown`` for contexts not in the table)."""
    active = _ACTIVE.get()
    cello = active.row(cell_type) if active is not None and cell_type not in CONTEXTS.index else None
    if cello is not None:  # a line the built-in table lacks: what Cellosaurus says (no tissue field there)
        sex = str(cello["sex"] or "").lower()
        row = {"sex": sex if sex in ("male", "female") else "unknown",
               "disease": (str(cello["disease"]).split(";")[0].strip().lower() if cello["disease"] else "unknown"),
               "tissue": "unknown", "tissue_type": "cell line"}
    elif cell_type not in CONTEXTS.index:
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


def resolve_cell_type(name, extra: dict[str, str] | None = None, dataset: str | None = None) -> str | None:
    """One source label → a context ID, else None (see the module docstring for the order).

    `name` is a cell-line name, synonym or ``CVCL_xxxx`` (:func:`cell_line_to_cellosaurus`;
    integers are read as text), a label of `extra` (a source's own labels → IDs, matched
    case-insensitively) or a source-specific alias of `dataset` (:data:`SOURCE_ALIASES`).
    Cell Ontology IDs must be in :data:`CONTEXTS`.
    """
    if _missing(name):
        return None
    text = str(int(name)) if isinstance(name, float) and float(name).is_integer() else str(name).strip()
    if extra:
        ct = {str(k).strip().lower(): v for k, v in extra.items()}.get(text.lower())
        if ct is not None:
            return ct
    aliases = SOURCE_ALIASES.get(dataset or "", {})
    for candidate in (text, _strip_cell_prefix(text)):
        if candidate is not None and _norm(candidate) in aliases:
            return aliases[_norm(candidate)]
    ct = cell_line_to_cellosaurus(text)
    if ct is None and re.fullmatch(r"CL_\d{7}", text):
        ct = text
    if ct is None:
        return None
    return ct if ct.startswith("CVCL_") or ct in CONTEXTS.index else None


def resolve_cell_types(names, quarantine: Quarantine, file, *, n=None, extra: dict[str, str] | None = None,
                       level: str | None = None) -> pd.Series:
    """Map source cell-line/cell-type labels to context IDs; quarantine the unknown ones.

    Parameters
    ----------
    names
        One label per record (Series; its index holds the record IDs).
    quarantine, file
        Where unknown labels are recorded, reason ``"unknown cell line: <raw label>"``
        (:data:`UNKNOWN_CELL_LINE`); the quarantine's dataset selects the
        source-specific aliases of :data:`SOURCE_ALIASES`.
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
    ds = getattr(quarantine, "dataset", None)
    lookup = {v: resolve_cell_type(v, extra, ds) for v in pd.unique(names.astype(object)) if not _missing(v)}
    out = pd.Series([None if _missing(v) else lookup[v] for v in names.astype(object)], index=names.index,
                    dtype=object)
    bad = out.isna().to_numpy()
    if bad.any():
        if n is None:
            raw = names[bad].map(lambda v: "<missing>" if _missing(v) else str(v))
            for label, idx in raw.groupby(raw.to_numpy()).groups.items():
                quarantine.add(file, idx, f"{UNKNOWN_CELL_LINE}: {label}", level=level or "sample")
        else:
            units = pd.Series(pd.Series(n).to_numpy()[bad], dtype="int64")
            labels = names[bad].map(lambda v: "<missing>" if _missing(v) else str(v)).to_numpy()
            for label, k in units.groupby(labels).sum().items():
                quarantine.add_count(file, label, f"{UNKNOWN_CELL_LINE}: {label}", int(k), level=level or "cell")
    return out
