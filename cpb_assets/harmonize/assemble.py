"""Assemble a harmonized AnnData from a source's per-sample table and matrix, in memory
(:func:`assemble_harmonized`) or written to disk with X block by block (:class:`DenseH5adWriter`)."""
from __future__ import annotations

import contextlib
import contextvars
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import h5py
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
    """Build the METHODS §2 AnnData (arguments: :func:`harmonized_frames`, plus `X`, the
    (n_samples, n_genes) matrix: integer counts or normalized log values)."""
    obs, var, uns = harmonized_frames(samples, genes, dataset=dataset, synthetic=synthetic, registry=registry,
                                      file=file, suspension_type=suspension_type)
    if sp.issparse(X):
        X = sp.csr_matrix(X)
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.uns.update(uns)
    return adata


def harmonized_frames(samples: pd.DataFrame, genes: pd.DataFrame, *, dataset: str, synthetic: bool,
                      registry: pd.DataFrame, file: str = "<source>", suspension_type: str = "na"
                      ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The obs, var and uns of the METHODS §2 AnnData (its X aside).

    Parameters
    ----------
    samples
        One row per sample (rows of X) with at least ``plate, well,
        cell_type, perturbagen, is_control, pert_dose_uM, pert_time_h,
        source_id`` (source_id: the compound key of `registry`, None for
        controls). Donor fields, ``psbulk_cells``, ``psbulk_counts`` and any
        optional schema column are taken from `samples` when present.
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
    return obs, var, {"dataset": dataset, "synthetic": bool(synthetic)}


# --------------------------------------------------------------------------- h5ad written block by block

X_CHUNK_BYTES = 1 << 20  # HDF5 chunk of the streamed X: about 1 MiB of whole rows
_SCRATCH: contextvars.ContextVar[Path | None] = contextvars.ContextVar("cpb_harmonized_scratch", default=None)


@contextlib.contextmanager
def harmonized_scratch(folder: str | Path) -> Iterator[Path]:
    """Readers that write their h5ad themselves write it into `folder` inside the block (the
    asset passes a folder beside the published files, so that publishing is a hard link, not a
    copy). The caller owns `folder` and removes it. Outside such a block they write into a new
    folder of the system's temporary directory."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    token = _SCRATCH.set(folder)
    try:
        yield folder
    finally:
        _SCRATCH.reset(token)


def scratch_h5ad_path(dataset: str) -> Path:
    """A new, unused path for a reader's h5ad of `dataset` (see :func:`harmonized_scratch`)."""
    folder = _SCRATCH.get()
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="cpb-harmonized-"))
    return folder / f"{dataset}-{uuid.uuid4().hex[:12]}.h5ad"


@dataclass(frozen=True)
class WrittenH5ad:
    """A harmonized .h5ad a reader wrote itself (X block by block, :class:`DenseH5adWriter`):
    its path, and the obs / var / uns it holds, in memory (X stays on disk).

    obs is the frame before anndata's writer turned repeated strings into categoricals (as the
    in-memory AnnData of the other readers is before it is written): the catalog tables come
    from it. Offers what the asset reads of an AnnData (`obs`, `var`, `uns`, `n_obs`, `n_vars`,
    `obs_names`, `shape`).
    """

    path: Path
    obs: pd.DataFrame
    var: pd.DataFrame
    uns: dict

    @property
    def n_obs(self) -> int:
        return len(self.obs)

    @property
    def n_vars(self) -> int:
        return len(self.var)

    @property
    def shape(self) -> tuple[int, int]:
        return self.n_obs, self.n_vars

    @property
    def obs_names(self) -> pd.Index:
        return self.obs.index

    @property
    def var_names(self) -> pd.Index:
        return self.var.index

    def x_blocks(self, rows: int = 4_096) -> Iterator[tuple[slice, np.ndarray]]:
        """X from the file, `rows` samples at a time: ``(slice of obs, values)``."""
        with h5py.File(self.path, "r") as fh:
            X = fh["X"]
            for r0 in range(0, X.shape[0], rows):
                sl = slice(r0, min(r0 + rows, X.shape[0]))
                yield sl, X[sl]

    def open_backed(self) -> ad.AnnData:
        """The file as a backed AnnData (obs/var read, X on disk); close with ``.file.close()``."""
        return ad.read_h5ad(self.path, backed="r")

    def to_memory(self) -> ad.AnnData:
        """The whole file in memory (small inputs and tests only)."""
        return ad.read_h5ad(self.path)


class DenseH5adWriter:
    """Write a harmonized h5ad whose dense X arrives in blocks of rows, never whole in memory.

    X is an HDF5 dataset created at its final width and the row count the reader expects
    (chunked whole rows, resizable); :meth:`write_rows` puts one block at its rows and notes the
    rows with NaN/inf values; :meth:`drop_rows` removes rows (one pass over the file, one block
    at a time); :meth:`finish` writes obs, var, uns and the empty obsm/varm/obsp/varp/layers
    with anndata's own element writer (``anndata.io.write_elem``), repeated strings as
    categoricals, as ``AnnData.write_h5ad`` does, so the file reads back as any other h5ad
    (``ad.read_h5ad``, backed or not). On an error call :meth:`abort` (closes and removes the file).
    """

    def __init__(self, path: str | Path, n_obs: int, n_vars: int, dtype=np.float32):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        rows = max(1, min(max(n_obs, 1), X_CHUNK_BYTES // max(1, n_vars * self.dtype.itemsize)))
        self._fh = h5py.File(self.path, "w")
        self._fh.attrs["encoding-type"] = "anndata"
        self._fh.attrs["encoding-version"] = "0.1.0"
        self._X = self._fh.create_dataset("X", shape=(n_obs, n_vars), maxshape=(None, None), dtype=self.dtype,
                                          chunks=(rows, max(1, n_vars)))
        self._X.attrs["encoding-type"] = "array"
        self._X.attrs["encoding-version"] = "0.2.0"
        self._nonfinite: list[np.ndarray] = []

    @property
    def n_obs(self) -> int:
        return int(self._X.shape[0])

    def write_rows(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Write `values` (len(rows), n_vars) at X rows `rows` (any order, no repeats)."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return
        order = np.argsort(rows, kind="stable")
        rows, values = rows[order], np.asarray(values, dtype=self.dtype)[order]
        bad = ~np.isfinite(values).all(axis=1)
        if bad.any():
            self._nonfinite.append(rows[bad])
        if rows[-1] - rows[0] + 1 == len(rows):  # contiguous: one hyperslab
            self._X[int(rows[0]):int(rows[-1]) + 1] = values
        else:
            self._X[rows] = values

    def nonfinite_rows(self) -> np.ndarray:
        """Rows written with a NaN or infinite value, ascending."""
        return np.unique(np.concatenate(self._nonfinite)) if self._nonfinite else np.zeros(0, np.int64)

    def drop_rows(self, rows: np.ndarray, block: int = 4_096) -> None:
        """Remove X rows `rows`: the rows after them move up, block by block, in place."""
        drop = np.zeros(self.n_obs, bool)
        drop[np.asarray(rows, dtype=np.int64)] = True
        if not drop.any():
            return
        done = 0
        for r0 in range(0, self.n_obs, block):  # the destination never passes the rows not yet read
            r1 = min(r0 + block, self.n_obs)
            keep = ~drop[r0:r1]
            if keep.all() and done == r0:
                done = r1
                continue
            values = self._X[r0:r1][keep]
            self._X[done:done + len(values)] = values
            done += len(values)
        self._X.resize(done, axis=0)
        self._nonfinite = [r - np.searchsorted(np.flatnonzero(drop), r) for r in
                           (x[~drop[x]] for x in self._nonfinite)]

    def finish(self, obs: pd.DataFrame, var: pd.DataFrame, uns: dict) -> WrittenH5ad:
        """Write obs, var and uns and close the file."""
        from anndata.io import write_elem

        if (len(obs), len(var)) != self._X.shape:
            raise ValueError(f"{self.path}: obs × var {(len(obs), len(var))} != X {self._X.shape}")
        meta = ad.AnnData(obs=obs.copy(), var=var.copy(), uns=dict(uns))
        meta.strings_to_categoricals()  # what write_h5ad does before writing
        f = self._fh
        # nullable strings (missing values stay missing) as the project writes them everywhere
        # (cpb_resources.storage sets the same for every write_h5ad)
        with ad.settings.override(allow_write_nullable_strings=True):
            write_elem(f, "obs", meta.obs)
            write_elem(f, "var", meta.var)
            for key in ("obsm", "varm", "obsp", "varp", "layers"):
                write_elem(f, key, {})
            write_elem(f, "uns", dict(meta.uns))
        f.close()
        return WrittenH5ad(self.path, obs, var, dict(uns))

    def abort(self) -> None:
        """Close and remove the file (an error stopped the reader)."""
        try:
            self._fh.close()
        finally:
            self.path.unlink(missing_ok=True)
