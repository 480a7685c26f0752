"""Readers and a writer for the Connectivity Map matrix formats.

GCTX 1.0 is HDF5: ``0/DATA/0/matrix`` stored samples × genes (the transpose
of the logical genes × samples matrix), ``0/META/ROW/<field>`` and
``0/META/COL/<field>`` one 1-d dataset per metadata field, ``id`` among them.
GCT 1.3 is tab-separated text: ``#1.3``, a dimensions line
(rows, cols, row-meta fields, col-meta fields), a header, the column
metadata as rows, then one row per gene.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from cpb_assets.errors import SourceFormatError

MATRIX = "0/DATA/0/matrix"
ROW_META = "0/META/ROW"
COL_META = "0/META/COL"


@dataclass
class GCT:
    """A genes × samples matrix with its row (gene) and column (sample) metadata."""

    data: np.ndarray  # (n_genes, n_samples)
    row_meta: pd.DataFrame  # index: row id
    col_meta: pd.DataFrame  # index: column id

    def column_blocks(self, cols: np.ndarray, rows: np.ndarray, block: int = 4_096
                      ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """As :meth:`GCTXFile.column_blocks`, from the matrix in memory: ``(which, values)``,
        `values` (len(which), len(rows)) samples × genes, at most `block` columns each."""
        cols = np.asarray(cols, dtype=np.int64)
        rows = np.asarray(rows, dtype=np.int64)
        for b0 in range(0, len(cols), block):
            which = np.arange(b0, min(b0 + block, len(cols)))
            yield which, self.data.T[np.ix_(cols[which], rows)]


def _typed(values: list | np.ndarray) -> np.ndarray:
    """Decode bytes; numeric-looking columns become float, others str."""
    arr = np.asarray(values)
    if arr.dtype.kind == "S":
        arr = np.char.decode(arr, "utf-8")
    if arr.dtype.kind in "iuf":
        return arr.astype(float)
    as_num = pd.to_numeric(pd.Series(arr, dtype=object), errors="coerce")
    if as_num.notna().all():
        return as_num.to_numpy(dtype=float)
    return arr.astype(str).astype(object)


def _meta_frame(columns: dict[str, np.ndarray], file: Path, where: str) -> pd.DataFrame:
    if "id" not in columns:
        raise SourceFormatError(file, f"{where}/id", "metadata has no 'id' field")
    ids = pd.Index(np.asarray(columns.pop("id"), dtype=str), name="id")
    if ids.has_duplicates:
        raise SourceFormatError(file, f"{where}/id", f"duplicate IDs {ids[ids.duplicated()].unique()[:5].tolist()}")
    frame = pd.DataFrame({k: _typed(v) for k, v in columns.items()}, index=ids)
    return frame


def _open_hdf5(path: str | Path) -> h5py.File:
    path = Path(path)
    if not path.is_file():
        raise SourceFormatError(path, "<file>", "file not found")
    if path.stat().st_size == 0:
        raise SourceFormatError(path, "<hdf5>", "file is empty (0 bytes); download it again")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise SourceFormatError(path, "<hdf5>", f"not a readable HDF5 file, truncated? ({exc})") from exc


def gctx_ids(path: str | Path) -> tuple[pd.Index, pd.Index]:
    """Row and column IDs of a GCTX without reading the matrix (cheap even for 1.3 M columns).

    Raises
    ------
    SourceFormatError
        Unreadable, empty or truncated file, missing or duplicate IDs.
    """
    path = Path(path)
    with _open_hdf5(path) as fh:
        out = []
        for where in (ROW_META, COL_META):
            if f"{where}/id" not in fh:
                raise SourceFormatError(path, f"{where}/id", "missing in the GCTX layout")
            try:
                ids = np.asarray(fh[f"{where}/id"][()])
            except OSError as exc:
                raise SourceFormatError(path, f"{where}/id", f"cannot read, file truncated? ({exc})") from exc
            if ids.dtype.kind == "S":
                ids = np.char.decode(ids, "utf-8")
            idx = pd.Index(ids.astype(str), name="id")
            if idx.has_duplicates:
                dup = idx[idx.duplicated()].unique()[:5].tolist()
                raise SourceFormatError(path, f"{where}/id", f"duplicate IDs {dup}")
            out.append(idx)
    return out[0], out[1]


@dataclass
class GCTXFile:
    """A GCTX on disk: its row and column metadata read, the matrix left in the file
    (:meth:`column_blocks` streams it)."""

    path: Path
    row_meta: pd.DataFrame  # index: row id (all rows of the file)
    col_meta: pd.DataFrame  # index: column id (all columns of the file)

    def column_blocks(self, cols: np.ndarray, rows: np.ndarray, block: int = 4_096
                      ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The matrix values of columns `cols` (file positions, any order) at rows `rows`, one
        window of at most `block` file columns at a time: ``(which, values)`` with `which` the
        positions in `cols` and `values` (len(which), len(rows)), samples × genes.

        Only one window is in memory at once (its slab of ≤ `block` samples × every gene, then the
        selected values), whatever the number of columns.

        Raises
        ------
        SourceFormatError
            The matrix cannot be read (truncated file).
        """
        cols = np.asarray(cols, dtype=np.int64)
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(cols, kind="stable")
        c_sorted = cols[order]
        with _open_hdf5(self.path) as fh:
            dset = fh[MATRIX]
            for w0 in range(0, len(self.col_meta), block):
                lo, hi = np.searchsorted(c_sorted, [w0, w0 + block])
                if lo == hi:
                    continue
                sel = c_sorted[lo:hi]
                try:
                    slab = dset[int(sel[0]):int(sel[-1]) + 1]
                except OSError as exc:  # truncated datasets fail on read, not on open
                    raise SourceFormatError(self.path, MATRIX, f"cannot read data, file truncated? ({exc})") from exc
                values = slab[np.ix_(sel - sel[0], rows)]
                del slab
                yield order[lo:hi], values


def open_gctx(path: str | Path) -> GCTXFile:
    """Read a GCTX's metadata and check its layout; the matrix stays on disk.

    Raises
    ------
    SourceFormatError
        Naming the file and the HDF5 path at fault: unreadable or truncated
        file, missing matrix or metadata, shape mismatch, duplicate IDs, text
        that is not UTF-8.
    """
    path = Path(path)
    with _open_hdf5(path) as fh:
        for need in (MATRIX, ROW_META, COL_META):
            if need not in fh:
                raise SourceFormatError(path, need, "missing in the GCTX layout")
        try:
            rows = {k: fh[ROW_META][k][()] for k in fh[ROW_META]}
            cols = {k: fh[COL_META][k][()] for k in fh[COL_META]}
            row_meta = _meta_frame(rows, path, ROW_META)
            col_meta = _meta_frame(cols, path, COL_META)
        except UnicodeDecodeError as exc:
            raise SourceFormatError(path, "0/META", f"text is not UTF-8 ({exc})") from exc
        except OSError as exc:
            raise SourceFormatError(path, "0/META", f"cannot read metadata, file truncated? ({exc})") from exc
        dset = fh[MATRIX]
        if dset.ndim != 2 or dset.shape != (len(col_meta), len(row_meta)):
            raise SourceFormatError(path, MATRIX, f"shape {dset.shape} does not match "
                                                  f"{len(col_meta)} columns × {len(row_meta)} rows of metadata")
    return GCTXFile(path, row_meta, col_meta)


def read_gctx(path: str | Path, row_ids=None, col_ids=None, block: int = 4_096) -> GCT:
    """Read a GCTX (HDF5) file, optionally only some rows (genes) and columns (samples).

    The real Level 3 matrices are far larger than memory (Phase I: 1.3 M
    samples × 12,328 genes), so the selection is read block by block: at most
    `block` samples of the full gene axis are in memory at once, besides the
    selection itself (the harmonized L1000 reader does not keep even that: it
    streams :meth:`GCTXFile.column_blocks`).

    Parameters
    ----------
    row_ids, col_ids
        IDs to keep (None: all). Unknown IDs are ignored; the result keeps the
        file's order.

    Raises
    ------
    SourceFormatError
        As :func:`open_gctx`, and a matrix that cannot be read.
    """
    f = open_gctx(path)
    r_idx = np.arange(len(f.row_meta)) if row_ids is None else np.flatnonzero(f.row_meta.index.isin(row_ids))
    c_idx = np.arange(len(f.col_meta)) if col_ids is None else np.flatnonzero(f.col_meta.index.isin(col_ids))
    with _open_hdf5(f.path) as fh:
        dtype = fh[MATRIX].dtype
    data = np.empty((len(r_idx), len(c_idx)), dtype=dtype)
    for which, values in f.column_blocks(c_idx, r_idx, block):
        data[:, which] = values.T
    return GCT(data, f.row_meta.iloc[r_idx], f.col_meta.iloc[c_idx])


def read_gct(path: str | Path) -> GCT:
    """Read a GCT 1.3 text file (the same content as a GCTX)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise SourceFormatError(path, "<file>", "file missing or empty (0 bytes)")
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            version = fh.readline().strip()
            dims = fh.readline().rstrip("\r\n").split("\t")
            header = fh.readline().rstrip("\r\n").split("\t")
    except UnicodeDecodeError as exc:
        raise SourceFormatError(path, "<header>", f"not UTF-8 text ({exc})") from exc
    if version != "#1.3":
        raise SourceFormatError(path, "<version>", f"expected '#1.3', got {version!r}")
    try:
        n_rows, n_cols, n_rmeta, n_cmeta = (int(x) for x in dims[:4])
    except ValueError as exc:
        raise SourceFormatError(path, "<dimensions>", f"bad dimension line {dims!r}") from exc
    seen, dups = set(), []
    for h in header:
        if h in seen:
            dups.append(h)
        seen.add(h)
    if dups:  # pandas would rename them 'x.1' silently: two samples under one name is an error
        raise SourceFormatError(path, "<header>", f"duplicate column headers {sorted(set(dups))[:5]}")
    try:
        table = pd.read_csv(path, sep="\t", skiprows=2, header=0, dtype=str, keep_default_na=False,
                            encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SourceFormatError(path, "<body>", f"not UTF-8 text ({exc})") from exc
    if table.shape != (n_cmeta + n_rows, 1 + n_rmeta + n_cols):
        raise SourceFormatError(path, "<dimensions>", f"table is {table.shape}, header promises "
                                                      f"{(n_cmeta + n_rows, 1 + n_rmeta + n_cols)}")
    id_col = table.columns[0]
    rmeta_cols = list(table.columns[1:1 + n_rmeta])
    sample_cols = list(table.columns[1 + n_rmeta:])
    col_block = table.iloc[:n_cmeta]
    gene_block = table.iloc[n_cmeta:]
    cols = {"id": np.array(sample_cols, dtype=object)}
    for _, r in col_block.iterrows():
        cols[r[id_col]] = r[sample_cols].to_numpy(dtype=object)
    rows = {"id": gene_block[id_col].to_numpy(dtype=object)}
    for c in rmeta_cols:
        rows[c] = gene_block[c].to_numpy(dtype=object)
    try:
        data = gene_block[sample_cols].to_numpy(dtype=float)
    except ValueError as exc:
        raise SourceFormatError(path, "<matrix>", f"non-numeric expression values ({exc})") from exc
    return GCT(data, _meta_frame(rows, path, "row"), _meta_frame(cols, path, "column"))


def write_gctx(gct: GCT, path: str | Path, attrs: dict | None = None) -> None:
    """Write a GCTX 1.0 file (used by the demo world's L1000 writer)."""
    def put(group, frame: pd.DataFrame):
        group.create_dataset("id", data=np.array(frame.index.astype(str), dtype="S"))
        for c in frame.columns:
            v = frame[c].to_numpy()
            data = v.astype(float) if v.dtype.kind in "iuf" else np.array([str(x).encode("utf-8") for x in v],
                                                                          dtype="S")
            group.create_dataset(c, data=data)

    with h5py.File(path, "w") as fh:
        fh.attrs["version"] = np.bytes_(b"GCTX1.0")
        for k, v in (attrs or {}).items():
            fh.attrs[k] = v
        fh.create_dataset(MATRIX, data=np.asarray(gct.data, dtype=np.float32).T, compression="gzip")
        put(fh.create_group(ROW_META), gct.row_meta)
        put(fh.create_group(COL_META), gct.col_meta)
