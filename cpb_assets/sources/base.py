"""The contract every source module keeps (the registry is :mod:`cpb_assets.sources.registry`).

A source module (``cpb_assets/sources/<source>.py``) serves one or more
dataset partitions and provides two pure functions:

``compound_records(folder, dataset) -> pd.DataFrame``
    The compounds the source names, one row per ``source_id`` (the key its
    sample metadata uses for a compound), with columns ``source_id, name,
    smiles, inchikey, catalog_id`` (None where the source has nothing) and
    optionally ``pubchem_cid`` (a CID the source itself ships).
    Controls (DMSO) are not compounds and are left out.
``harmonize(folder, dataset, registry) -> Harmonized``
    Read the native files and return the harmonized AnnData in the schema of
    METHODS §2. `registry` has columns ``source_id, pubchem_cid, cid_method``
    for this dataset (the compound registry's answer).

and a module-level ``REMOTE_FILES: dict[str, list[RemoteFile]]`` naming the
real files per dataset for the downloader. The demo world's SYNTHETIC
stand-in of each source is written by ``cpb_assets/demo/<source>.py``
(``write_synthetic(world, dataset, folder)``), in the source's real layout.

Readers raise :class:`cpb_assets.errors.SourceFormatError` (file + field) on
malformed input and never write anything; dropped records go to the
quarantine with a reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import anndata as ad
import pandas as pd

from cpb_assets.harmonize.quarantine import Quarantine
# the shared reader helpers live in readers.py; re-exported here for the source modules' imports
from cpb_assets.sources.readers import (COMPOUND_RECORD_COLUMNS, empty_compound_records,  # noqa: F401
                                        find_source_file)


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
