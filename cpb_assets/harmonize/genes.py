"""Offline human gene map: Entrez IDs and symbols to Ensembl gene IDs.

The map is read from the SQLite database of Bioconductor's ``org.Hs.eg.db``
(Debian package ``r-bioc-org.hs.eg.db``; NCBI Gene 2022-Sep-12, Ensembl
2022-Jun-28), opened read-only with :mod:`sqlite3`. Its path defaults to
Debian's install location and is overridden by the environment variable
``CPB_ORG_HS_DB``. The file is ~340 MB, so only the four small tables the map
needs (``genes``, ``gene_info``, ``ensembl``, ``alias``, plus ``genetype`` and
``chromosomes`` for :func:`gene_table`) are queried, once per process.

Rules, applied the same way everywhere:

- An Entrez ID or symbol that has several Ensembl IDs maps to the one with the
  lowest ENSG number (string order equals numeric order for ``ENSG`` + 11
  digits); the others are listed in the ``ensembl_alternatives`` column.
- The 13 mitochondrially encoded protein-coding genes are reported under their
  HGNC symbols (``MT-CO1`` …): NCBI names them ``COX1``, ``ND1`` …, and the
  single-cell QC recognises mitochondrial genes by the ``MT-`` prefix.
  ``org.Hs.eg.db`` has no ``MT-`` symbols (and ``MT-CO2`` is an alias of the
  nuclear pseudogene MTCO2P12), so symbol look-ups of these genes go through
  :data:`MANUAL_ENSEMBL` (method ``'manual'``) before the alias table.
- Symbols: the current official symbol first; then the alias table (previous
  symbols and synonyms), accepted only when the alias names exactly one gene;
  an ambiguous alias (``DEC1`` is an alias of both ``BHLHE40`` and
  ``DELEC1``) stays unmapped. Repair Excel-mangled symbols with
  :func:`repair_excel_symbol` before the look-up.
"""
from __future__ import annotations

import datetime as _dt
import functools
import os
import re
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

DEFAULT_ORG_HS_DB = "/usr/lib/R/site-library/org.Hs.eg.db/extdata/org.Hs.eg.sqlite"
ENV_VAR = "CPB_ORG_HS_DB"

# HGNC symbol -> (Entrez, Ensembl) of the 13 mitochondrially encoded protein-coding
# genes. Ensembl IDs checked against org.Hs.eg.db's `ensembl` table for the Entrez IDs.
MITO_GENES: dict[str, tuple[str, str]] = {
    "MT-ND1": ("4535", "ENSG00000198888"),
    "MT-ND2": ("4536", "ENSG00000198763"),
    "MT-CO1": ("4512", "ENSG00000198804"),
    "MT-CO2": ("4513", "ENSG00000198712"),
    "MT-ATP8": ("4509", "ENSG00000228253"),
    "MT-ATP6": ("4508", "ENSG00000198899"),
    "MT-CO3": ("4514", "ENSG00000198938"),
    "MT-ND3": ("4537", "ENSG00000198840"),
    "MT-ND4L": ("4539", "ENSG00000212907"),
    "MT-ND4": ("4538", "ENSG00000198886"),
    "MT-ND5": ("4540", "ENSG00000198786"),
    "MT-ND6": ("4541", "ENSG00000198695"),
    "MT-CYB": ("4519", "ENSG00000198727"),
}
#: Manual fallback: symbol -> Ensembl ID, for symbols org.Hs.eg.db does not know.
MANUAL_ENSEMBL: dict[str, str] = {sym: ens for sym, (_, ens) in MITO_GENES.items()}
_MITO_SYMBOL_BY_ENTREZ = {entrez: sym for sym, (entrez, _) in MITO_GENES.items()}

ENTREZ_COLUMNS = ["input", "entrez_id", "symbol", "ensembl_id", "method", "ensembl_alternatives"]
SYMBOL_COLUMNS = ["input", "symbol", "entrez_id", "ensembl_id", "method", "ensembl_alternatives"]


def org_hs_db_path() -> Path:
    """Path of the ``org.Hs.eg.db`` SQLite file (``$CPB_ORG_HS_DB`` or Debian's)."""
    return Path(os.environ.get(ENV_VAR, DEFAULT_ORG_HS_DB))


def _connect(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise FileNotFoundError(
            f"org.Hs.eg.db SQLite not found at {path}; install r-bioc-org.hs.eg.db or set {ENV_VAR}")
    # mode=ro: never create or modify the package's file
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


@functools.lru_cache(maxsize=4)
def _tables(path: str) -> dict[str, object]:
    """Load the small look-up tables once per database path."""
    with _connect(Path(path)) as con:
        genes = pd.read_sql_query(
            "SELECT g._id, g.gene_id AS entrez_id, i.symbol, i.gene_name, t.gene_type "
            "FROM genes g JOIN gene_info i USING(_id) LEFT JOIN genetype t USING(_id)", con)
        ens = pd.read_sql_query("SELECT _id, ensembl_id FROM ensembl ORDER BY _id, ensembl_id", con)
        alias = pd.read_sql_query("SELECT DISTINCT _id, alias_symbol FROM alias", con)
        chrom = pd.read_sql_query("SELECT _id, min(chromosome) AS chromosome FROM chromosomes GROUP BY _id", con)
    # official symbols index the look-up as NCBI spells them (COX1 …); the
    # reported symbol of the 13 mitochondrial genes is HGNC's (MT-CO1 …)
    genes["db_symbol"] = genes["symbol"]
    genes["symbol"] = genes["entrez_id"].map(_MITO_SYMBOL_BY_ENTREZ).fillna(genes["symbol"])
    # rows come sorted by (_id, ensembl_id): the first is the lowest ENSG, the rest alternatives
    ens_ids: dict[int, list[str]] = {}
    for gid, eid in zip(ens["_id"].tolist(), ens["ensembl_id"].tolist()):
        ens_ids.setdefault(gid, []).append(eid)
    genes["ensembl_id"] = genes["_id"].map({k: v[0] for k, v in ens_ids.items()})
    genes["ensembl_alternatives"] = genes["_id"].map({k: ";".join(v[1:]) for k, v in ens_ids.items() if len(v) > 1})
    genes = genes.merge(chrom, on="_id", how="left").set_index("_id")
    by_entrez = genes.reset_index().set_index("entrez_id")
    # official symbol -> _ids (a few symbols name several loci, mostly tRNAs)
    sym_ids: dict[str, list[int]] = {}
    for gid, sym in zip(genes.index.tolist(), genes["db_symbol"].tolist()):
        sym_ids.setdefault(sym, []).append(gid)
    # SELECT DISTINCT: each list holds distinct genes; only its length and sole member are used
    alias_ids: dict[str, list[int]] = {}
    for gid, sym in zip(alias["_id"].tolist(), alias["alias_symbol"].tolist()):
        alias_ids.setdefault(sym, []).append(gid)
    # _id -> (symbol, entrez_id, ensembl_id, ensembl_alternatives): plain tuples for fast row look-ups
    cols = [genes[c].astype(object).where(genes[c].notna(), None).tolist()
            for c in ("symbol", "entrez_id", "ensembl_id", "ensembl_alternatives")]
    info = dict(zip(genes.index.tolist(), zip(*cols)))
    return {"genes": genes, "by_entrez": by_entrez, "sym_ids": sym_ids, "alias_ids": alias_ids, "info": info}


def _load() -> dict[str, object]:
    return _tables(str(org_hs_db_path()))


def _norm_entrez(value) -> str | None:
    """'5720', 5720, 5720.0 and ' 5720 ' all become '5720'; anything else None."""
    if value is None:
        return None
    if isinstance(value, float):
        if value != value or not value.is_integer():
            return None
        return str(int(value))
    text = str(value).strip()
    if re.fullmatch(r"\d+", text):
        return str(int(text))
    if re.fullmatch(r"\d+\.0*", text):
        return str(int(float(text)))
    return None


def entrez_to_ensembl(entrez_ids: Iterable) -> pd.DataFrame:
    """Map Entrez Gene IDs to Ensembl gene IDs.

    Parameters
    ----------
    entrez_ids
        Entrez IDs as int, float (``5720.0``, as GCT readers return them) or str.

    Returns
    -------
    pandas.DataFrame
        One row per input, in input order, columns ``input`` (as given),
        ``entrez_id`` (normalized str), ``symbol`` (official; HGNC ``MT-``
        names for mitochondrial genes), ``ensembl_id``, ``method``
        (``'entrez'``: found in org.Hs.eg.db; ``'manual'``: a mitochondrial
        gene the database lacks an Ensembl ID for, from
        :data:`MITO_GENES`; ``'unmapped'``: unknown ID or no Ensembl ID) and
        ``ensembl_alternatives`` (``;``-joined other Ensembl IDs of the gene).
        When a gene has several Ensembl IDs the lowest ENSG number is chosen,
        e.g. Entrez 5720 (PSME1) has ENSG00000092010 and ENSG00000284916 and
        maps to ENSG00000092010.
    """
    inputs = list(entrez_ids)
    t = _load()
    by_entrez: pd.DataFrame = t["by_entrez"]  # type: ignore[assignment]
    keys = [_norm_entrez(v) for v in inputs]
    hit = by_entrez.reindex([k if k is not None else "" for k in keys])
    out = pd.DataFrame({
        "input": pd.Series(inputs, dtype=object),
        "entrez_id": pd.Series(keys, dtype=object),
        "symbol": hit["symbol"].to_numpy(dtype=object),
        "ensembl_id": hit["ensembl_id"].to_numpy(dtype=object),
        "ensembl_alternatives": hit["ensembl_alternatives"].to_numpy(dtype=object),
    })
    out["method"] = "entrez"
    missing = out["ensembl_id"].isna()
    manual = out["entrez_id"].map(_MITO_SYMBOL_BY_ENTREZ)
    use_manual = missing & manual.notna()
    out.loc[use_manual, "symbol"] = manual[use_manual]
    out.loc[use_manual, "ensembl_id"] = manual[use_manual].map(MANUAL_ENSEMBL)
    out.loc[use_manual, "method"] = "manual"
    out.loc[missing & ~use_manual, "method"] = "unmapped"
    return _clean(out[ENTREZ_COLUMNS])


def _clean(df: pd.DataFrame) -> pd.DataFrame:
    """Object columns with None (not NaN) for missing values."""
    return df.astype(object).where(df.notna(), None)


def symbols_to_ensembl(symbols: Iterable, manual: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Map gene symbols (current or previous) to Ensembl gene IDs.

    Parameters
    ----------
    symbols
        Gene symbols as given by the source (surrounding whitespace ignored).
        Excel-mangled symbols are not repaired here: call
        :func:`repair_excel_symbol` first.
    manual
        Extra symbol -> Ensembl ID fallbacks for one dataset, consulted only
        for symbols the database does not map.

    Returns
    -------
    pandas.DataFrame
        One row per input, in input order, columns ``input``, ``symbol``
        (current official symbol), ``entrez_id``, ``ensembl_id``, ``method``
        and ``ensembl_alternatives``. ``method`` is ``'symbol'`` (an official
        symbol, matched exactly, else case-insensitively), ``'previous_symbol'``
        (an entry of the alias table that names exactly one gene, e.g.
        TMEM2 -> CEMIP2, MARCH1 -> MARCHF1, SEPT7 -> SEPTIN7),
        ``'manual'`` (the mitochondrial table :data:`MANUAL_ENSEMBL`, checked
        before the aliases because ``MT-CO2`` is also an alias of the nuclear
        pseudogene MTCO2P12; then the dataset's ``manual`` table, checked
        last) or ``'unmapped'`` (unknown, ambiguous alias, or a gene without
        an Ensembl ID). An official symbol shared by
        several loci maps only if exactly one of them has an Ensembl ID.
        Several Ensembl IDs: the lowest ENSG number, as in
        :func:`entrez_to_ensembl`.
    """
    inputs = list(symbols)
    t = _load()
    info: dict = t["info"]  # type: ignore[assignment]
    sym_ids: dict = t["sym_ids"]  # type: ignore[assignment]
    alias_ids: dict = t["alias_ids"]  # type: ignore[assignment]
    upper_ids = _upper_symbol_ids(str(org_hs_db_path()))
    extra = dict(manual) if manual else {}

    def pick(ids: list) -> int | None:
        # several loci under one symbol: keep the one that has an Ensembl gene
        if len(ids) == 1:
            return ids[0]
        with_ens = [i for i in ids if info[i][2] is not None]
        return with_ens[0] if len(with_ens) == 1 else None

    rows = []
    for value in inputs:
        s = value.strip() if isinstance(value, str) else None
        gid, method = None, "unmapped"
        if s:
            if s in sym_ids:
                gid, method = pick(sym_ids[s]), "symbol"
            elif s.upper() in upper_ids:
                gid, method = pick(upper_ids[s.upper()]), "symbol"
            elif s.upper() in MANUAL_ENSEMBL:
                # before the aliases: 'MT-CO2' is also an alias of the nuclear pseudogene MTCO2P12
                sym = s.upper()
                rows.append((value, sym, MITO_GENES[sym][0], MANUAL_ENSEMBL[sym], "manual", None))
                continue
            elif s in alias_ids and len(alias_ids[s]) == 1:
                gid, method = alias_ids[s][0], "previous_symbol"
        if gid is not None and info[gid][2] is not None:
            sym, entrez, ens, alts = info[gid]
            rows.append((value, sym, entrez, ens, method, alts))
        elif s and s in extra:
            rows.append((value, s, None, extra[s], "manual", None))
        else:
            # a known gene without an Ensembl ID still reports its current symbol
            sym, entrez = info[gid][:2] if gid is not None else (None, None)
            rows.append((value, sym, entrez, None, "unmapped", None))
    out = pd.DataFrame(rows, columns=["input", "symbol", "entrez_id", "ensembl_id", "method",
                                      "ensembl_alternatives"], dtype=object)
    return _clean(out[SYMBOL_COLUMNS])


@functools.lru_cache(maxsize=4)
def _upper_symbol_ids(path: str) -> dict[str, list]:
    sym_ids: dict = _tables(path)["sym_ids"]  # type: ignore[assignment]
    upper: dict[str, list] = {}
    for sym, ids in sym_ids.items():
        upper.setdefault(sym.upper(), []).extend(ids)
    return upper


def gene_table(gene_type: str | None = "protein-coding", entrez: Iterable | None = None) -> pd.DataFrame:
    """Genes of org.Hs.eg.db that have an Ensembl ID, in a fixed order.

    Parameters
    ----------
    gene_type
        NCBI gene type to keep (``'protein-coding'``, ``'ncRNA'`` …); None keeps all.
    entrez
        Optional Entrez IDs to restrict to (e.g. the L1000 landmark genes).

    Returns
    -------
    pandas.DataFrame
        Columns ``entrez_id`` (str), ``symbol``, ``ensembl_id`` (lowest ENSG
        of the gene), ``gene_name``, ``gene_type``, ``chromosome``, sorted by
        numeric Entrez ID, with a fresh RangeIndex. Deterministic for a given
        database file, so a seeded generator can sample from it.
    """
    genes: pd.DataFrame = _load()["genes"]  # type: ignore[assignment]
    sel = genes[genes["ensembl_id"].notna()]
    if gene_type is not None:
        sel = sel[sel["gene_type"] == gene_type]
    if entrez is not None:
        wanted = {k for k in (_norm_entrez(e) for e in entrez) if k is not None}
        sel = sel[sel["entrez_id"].isin(wanted)]
    sel = sel.assign(_n=sel["entrez_id"].astype("int64")).sort_values("_n")
    cols = ["entrez_id", "symbol", "ensembl_id", "gene_name", "gene_type", "chromosome"]
    return sel[cols].reset_index(drop=True)


# --- Excel symbol repair -------------------------------------------------------------

# month -> (symbol prefix, allowed numbers): the gene families Excel turns into dates
_MONTH_FAMILIES = {
    3: ("MARCHF", set(range(1, 12))),
    9: ("SEPTIN", set(range(1, 13)) | {14}),
    12: ("DELEC", {1}),
}
# special cases whose old symbol did not become <prefix><n>
_SPECIAL = {(9, 13): "SEPTIN7P2"}  # SEPT13 was renamed SEPTIN7P2 (org.Hs.eg.db alias table)
_MONTHS = {"MAR": 3, "MARCH": 3, "SEP": 9, "SEPT": 9, "SEPTEMBER": 9, "DEC": 12, "DECEMBER": 12}
_DAY_MON = re.compile(r"^(\d{1,2})[-/ ]([A-Za-z]{3,9})(?:[-/ ]\d{2,4})?$")  # 1-Mar, 01-Mar-2023
_MON_DAY = re.compile(r"^([A-Za-z]{3,9})[-/ ](\d{1,2})$")  # Mar-01, Sep-7
_ISO = re.compile(r"^\d{4}-(\d{2})-(\d{2})(?:[ T]00:00(?::00(?:\.0+)?)?)?$")  # 2023-09-07 00:00:00
_OLD = re.compile(r"^(MARCH|SEPT|DEC)(\d{1,2})$", re.IGNORECASE)  # pre-2020 HGNC symbols


def _family(month: int, number: int) -> str | None:
    if (month, number) in _SPECIAL:
        return _SPECIAL[(month, number)]
    fam = _MONTH_FAMILIES.get(month)
    if fam and number in fam[1]:
        return f"{fam[0]}{number}"
    return None


def repair_excel_symbol(s):
    """Undo Excel's conversion of gene symbols into dates.

    Excel reads ``MARCH1``, ``SEPT7`` and ``DEC1`` as dates and shows them as
    ``1-Mar``, ``Mar-01``, ``7-Sep`` …; openpyxl returns such cells as
    :class:`datetime.datetime`, and a str() of that is ``2023-09-07 00:00:00``.
    All of these, and the pre-2020 symbols themselves, become the current
    HGNC symbols: MARCH1..11 -> MARCHF1..11, SEPT1..12, 14 -> SEPTIN1..12, 14,
    SEPT13 -> SEPTIN7P2, DEC1 -> DELEC1.

    Parameters
    ----------
    s
        A symbol as read from a workbook: str, datetime/date/Timestamp, or
        anything else.

    Returns
    -------
    str or object
        The repaired symbol. A string that is not a mangled symbol comes back
        unchanged (whitespace included); a date of another month or day comes
        back as its str(); any other object (None, numbers) is returned as is.
    """
    if isinstance(s, (_dt.date, pd.Timestamp)):  # datetime is a subclass of date
        fixed = _family(s.month, s.day)
        return fixed if fixed else str(s)
    if not isinstance(s, str):
        return s
    text = s.strip()
    m = _OLD.match(text)
    if m:
        month = _MONTHS[m.group(1).upper()]
        return _family(month, int(m.group(2))) or s
    m = _DAY_MON.match(text)
    if m and m.group(2).upper() in _MONTHS:
        return _family(_MONTHS[m.group(2).upper()], int(m.group(1))) or s
    m = _MON_DAY.match(text)
    if m and m.group(1).upper() in _MONTHS:
        return _family(_MONTHS[m.group(1).upper()], int(m.group(2))) or s
    m = _ISO.match(text)
    if m:
        return _family(int(m.group(1)), int(m.group(2))) or s
    return s
