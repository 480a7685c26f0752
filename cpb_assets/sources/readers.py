"""Reader helpers every source module shares: finding files, checking tables, building axes.

Pure functions (no Dagster). Every failure is a
:class:`cpb_assets.errors.SourceFormatError` naming the file and the field, so a
bad file stops its own partition with a message a user can act on.
"""
from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from cpb_assets.errors import SourceFormatError

COMPOUND_RECORD_COLUMNS = ["source_id", "name", "smiles", "inchikey", "catalog_id"]
#: optional column of compound_records: the PubChem CID the source ships (``source_cid`` method)
SOURCE_CID_COLUMN = "pubchem_cid"
# texts that mean "no value" in source tables; never kept as an ID (a plate called 'None' is a bug)
MISSING_TEXT = {"", "nan", "NaN", "NA", "N/A", "None", "none", "null", "NULL", "-666", "-666.0"}


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


def check_not_empty(path: str | Path) -> Path:
    """`path` exists and holds at least one byte.

    Raises
    ------
    SourceFormatError
        Field ``<file>``: the file is missing or empty.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceFormatError(path, "<file>", "file not found")
    if path.stat().st_size == 0:
        raise SourceFormatError(path, "<file>", "file is empty (0 bytes); download it again")
    return path


def read_bytes(path: str | Path) -> bytes:
    """The bytes of a source file, gunzipped when it ends in ``.gz``.

    Raises
    ------
    SourceFormatError
        Empty file, or a truncated / corrupt ``.gz`` (instead of ``EOFError`` /
        ``zlib.error`` / ``OSError``).
    """
    path = check_not_empty(path)
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:
            raise SourceFormatError(path, "<gzip>", f"truncated or corrupt gzip stream ({exc})") from exc
    return raw


def require_columns(table: pd.DataFrame, columns: Iterable[str], file: str | Path) -> None:
    """Raise :class:`SourceFormatError` (file, first missing column) unless `table` has all `columns`."""
    for col in columns:
        if col not in table.columns:
            raise SourceFormatError(file, col, "required column missing")


def unique_ids(ids: pd.Series | pd.Index, file: str | Path, field: str) -> None:
    """Raise :class:`SourceFormatError` when `ids` holds duplicates or missing values (first five named)."""
    s = pd.Series(ids, dtype=object)
    missing = s.isna() | s.astype(str).str.strip().isin(MISSING_TEXT)
    if missing.any():
        raise SourceFormatError(file, field, f"{int(missing.sum())} missing IDs (first at row {int(missing.idxmax())})")
    dup = s.duplicated()
    if dup.any():
        raise SourceFormatError(file, field, f"duplicate IDs {s[dup].unique()[:5].tolist()}")


def clean_ids(values, *, missing=MISSING_TEXT) -> pd.Series:
    """Source IDs as strings; missing values (NaN, None, '-666', 'nan', …) become None, never text."""
    s = pd.Series(values, dtype=object)
    out = s.map(lambda v: None if v is None or (isinstance(v, float) and not np.isfinite(v))
                or str(v).strip() in missing else str(v).strip())
    return out.astype(object)


def well_name(row: int | str, col: int | str) -> str:
    """The canonical well name: row letter(s) + two-digit column (``A01`` … ``P24``, ``AF48``).

    `row` is a letter (``"A"``) or a 0-based index; `col` is 1-based.
    """
    if isinstance(row, (int, np.integer)):
        r = int(row)
        letters = ""
        while True:
            letters = chr(ord("A") + r % 26) + letters
            r = r // 26 - 1
            if r < 0:
                break
        row = letters
    return f"{str(row).strip().upper()}{int(col):02d}"


def gene_axis(ids, *, file: str | Path, field: str, kind: str = "ensembl") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Map a source's gene identifiers to the harmonized gene axis (Ensembl IDs).

    Parameters
    ----------
    ids
        One identifier per matrix row/column: Ensembl IDs (``kind='ensembl'``,
        version suffixes dropped), Entrez IDs (``'entrez'``) or symbols
        (``'symbol'``).
    file, field
        Named in the unmapped-gene table (and in errors).

    Returns
    -------
    (axis, unmapped)
        ``axis``: columns ``pos`` (position in `ids`), ``ensembl_id``,
        ``symbol`` — one row per distinct mapped Ensembl ID, first occurrence
        kept; ``unmapped``: ``input, reason`` for the identifiers that did not
        map or mapped to an Ensembl ID already taken.
    """
    from cpb_assets.harmonize import genes as gmap

    raw = pd.Series(list(ids), dtype=object).map(lambda v: None if v is None or str(v).strip() in MISSING_TEXT
                                                 else str(v).strip())
    if kind == "ensembl":
        ens = raw.map(lambda v: v.split(".")[0] if v and v.upper().startswith("ENSG") else None)
        known = gmap.gene_table(gene_type=None)
        known = known[known["ensembl_id"].notna()].drop_duplicates("ensembl_id").set_index("ensembl_id")["symbol"]
        table = pd.DataFrame({"pos": np.arange(len(raw)), "input": raw, "ensembl_id": ens,
                              "symbol": ens.map(known).astype(object)})
    elif kind == "entrez":
        mapped = gmap.entrez_to_ensembl(raw.tolist())
        table = pd.DataFrame({"pos": np.arange(len(raw)), "input": raw,
                              "ensembl_id": mapped["ensembl_id"].to_numpy(), "symbol": mapped["symbol"].to_numpy()})
    elif kind == "symbol":
        mapped = gmap.symbols_to_ensembl(raw.tolist())
        table = pd.DataFrame({"pos": np.arange(len(raw)), "input": raw,
                              "ensembl_id": mapped["ensembl_id"].to_numpy(), "symbol": mapped["symbol"].to_numpy()})
    else:
        raise ValueError(f"unknown gene id kind {kind!r}")
    no_map = table["ensembl_id"].isna()
    dup = ~no_map & table["ensembl_id"].duplicated()
    unmapped = pd.concat([
        pd.DataFrame({"input": table.loc[no_map, "input"].astype(str), "reason": f"{kind} ID without an Ensembl gene"}),
        pd.DataFrame({"input": table.loc[dup, "input"].astype(str),
                      "reason": f"second {kind} ID for the same Ensembl gene"}),
    ], ignore_index=True)
    axis = table[~no_map & ~dup][["pos", "ensembl_id", "symbol"]].reset_index(drop=True)
    return axis, unmapped

