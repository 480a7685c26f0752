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
    for this dataset (the compound registry's answer). A reader whose matrix
    does not fit in memory writes the harmonized h5ad itself, X block by block
    (:class:`cpb_assets.harmonize.assemble.DenseH5adWriter`, into the folder of
    :func:`cpb_assets.harmonize.assemble.harmonized_scratch`), and returns it
    as :attr:`Harmonized.written` instead of :attr:`Harmonized.adata`.

and a module-level ``REMOTE_FILES: dict[str, list[RemoteFile]]`` naming the
real files per dataset for the downloader. The demo world's SYNTHETIC
stand-in of each source is written by ``cpb_assets/demo/<source>.py``
(``write_synthetic(world, dataset, folder)``), in the source's real layout.

Readers raise :class:`cpb_assets.errors.SourceFormatError` (file + field) on
malformed input and write nothing but that h5ad; dropped records go to the
quarantine with a reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import anndata as ad
import pandas as pd

from cpb_assets.harmonize.assemble import WrittenH5ad
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
    """What a source's `harmonize` returns: the harmonized AnnData in memory (`adata`), or the
    h5ad the reader already wrote (`written`: its path, obs, var and uns; X stays on disk).
    Exactly one of the two is set; :attr:`product` is the one that is."""

    adata: ad.AnnData | None
    quarantine: Quarantine
    unmapped_genes: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["input", "reason"]))
    notes: dict = field(default_factory=dict)  # counts and facts for materialization metadata
    written: WrittenH5ad | None = None

    def __post_init__(self):
        if (self.adata is None) == (self.written is None):
            raise ValueError("Harmonized holds either an in-memory AnnData or a written h5ad, exactly one")

    @property
    def product(self) -> ad.AnnData | WrittenH5ad:
        """What the asset publishes; both offer obs, var, uns, n_obs, n_vars, obs_names and shape."""
        return self.adata if self.adata is not None else self.written

    @property
    def n_obs(self) -> int:
        return self.product.n_obs

    @property
    def shape(self) -> tuple[int, int]:
        return self.product.shape

    def to_memory(self) -> ad.AnnData:
        """The AnnData in memory (reads a written h5ad whole: small inputs and tests only)."""
        return self.adata if self.adata is not None else self.written.to_memory()
