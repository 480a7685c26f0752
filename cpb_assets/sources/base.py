"""The contract every source module keeps, and the registry of source modules.

A source module (``cpb_assets/sources/<source>.py``) serves one or more
dataset partitions and provides three pure functions:

``write_synthetic(world, dataset, folder)``
    Write the demo world's SYNTHETIC stand-in of the source into `folder`, in
    the source's native format (file names or metadata say SYNTHETIC).
``compound_records(folder, dataset) -> pd.DataFrame``
    The compounds the source names, one row per ``source_id`` (the key its
    sample metadata uses for a compound), with columns ``source_id, name,
    smiles, inchikey, catalog_id`` (None where the source has nothing).
    Controls (DMSO) are not compounds and are left out.
``harmonize(folder, dataset, registry) -> Harmonized``
    Read the native files and return the harmonized AnnData in the schema of
    METHODS §2. `registry` has columns ``source_id, pubchem_cid, cid_method``
    for this dataset (the compound registry's answer).

and a module-level ``REMOTE_FILES: dict[str, list[RemoteFile]]`` naming the
real files per dataset for the downloader.

Readers raise :class:`cpb_assets.errors.SourceFormatError` (file + field) on
malformed input and never write anything; dropped records go to the
quarantine with a reason.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import anndata as ad
import pandas as pd

from cpb_assets.errors import SourceFormatError
from cpb_assets.harmonize.quarantine import Quarantine

COMPOUND_RECORD_COLUMNS = ["source_id", "name", "smiles", "inchikey", "catalog_id"]


@dataclass(frozen=True)
class RemoteFile:
    """One file of a real source: where it lives and how to check it."""

    url: str
    filename: str
    sha256: str | None = None  # None: recorded on first download (trust on first use)
    licence: str = ""


@dataclass
class Harmonized:
    """What a source's `harmonize` returns."""

    adata: ad.AnnData
    quarantine: Quarantine
    unmapped_genes: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["input", "reason"]))
    notes: dict = field(default_factory=dict)  # counts and facts for materialization metadata


# dataset partition -> module implementing it
SOURCE_MODULE_NAMES: dict[str, str] = {
    "l1000_phase1": "cpb_assets.sources.l1000",
    "l1000_phase2": "cpb_assets.sources.l1000",
    "tahoe100m": "cpb_assets.sources.tahoe",
    "sciplex": "cpb_assets.sources.sciplex",
    "op3": "cpb_assets.sources.op3",
    "novartis_drugseq": "cpb_assets.sources.drugseq",
    "vcpi_0001": "cpb_assets.sources.drugseq",
    "vcpi_0002": "cpb_assets.sources.drugseq",
    "gdpx2": "cpb_assets.sources.drugseq",
    "cigs_mce": "cpb_assets.sources.cigs",
    "cigs_tcm": "cpb_assets.sources.cigs",
    "dilimap_train": "cpb_assets.sources.dilimap",
    "dilimap_train_val": "cpb_assets.sources.dilimap",
}


def source_module(dataset: str) -> ModuleType:
    """The module serving `dataset` (imported lazily)."""
    try:
        return importlib.import_module(SOURCE_MODULE_NAMES[dataset])
    except KeyError:
        raise KeyError(f"unknown dataset partition {dataset!r}") from None


def find_source_file(folder: str | Path, pattern: str, required: bool = True) -> Path | None:
    """The one file of `folder` matching `pattern` (hidden and temporary files ignored).

    Raises
    ------
    SourceFormatError
        Field ``<file>``: no file matches (when `required`), or several do.
    """
    folder = Path(folder)
    hits = sorted(p for p in folder.glob(pattern) if not p.name.startswith("."))
    if not hits:
        if required:
            raise SourceFormatError(folder / pattern, "<file>", "no file matches this pattern")
        return None
    if len(hits) > 1:
        raise SourceFormatError(folder / pattern, "<file>", f"several files match: {[h.name for h in hits]}")
    return hits[0]


def empty_compound_records() -> pd.DataFrame:
    return pd.DataFrame(columns=COMPOUND_RECORD_COLUMNS, dtype=object)
