"""Cellosaurus flat file (``cellosaurus.txt``) → a table of cell-line contexts.

The flat file is a sequence of records, each ending with ``//``; every line is
a two-letter code, three spaces and a value (the file starts with a free-text
preamble, skipped). The lines used here:

``ID``  recommended name (one per record)
``AC``  primary accession, ``CVCL_xxxx``
``AS``  secondary accessions (merged records), ``; ``-separated
``SY``  synonyms, ``; ``-separated
``OX``  species, ``NCBI_TaxID=9606; ! Homo sapiens (Human)`` (one line per species)
``SX``  sex of the donor
``AG``  age of the donor at sampling
``CA``  category (``Cancer cell line``, ``Transformed cell line`` …)
``DI``  disease, ``<terminology>; <id>; <name>`` (one line per term)
``HI``  hierarchy: the parent line, ``CVCL_xxxx ! <name>``

Pure module (no Dagster).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from cpb_assets.errors import SourceFormatError

CELLOSAURUS_URL = "https://ftp.expasy.org/databases/cellosaurus/cellosaurus.txt"
COLUMNS = ["cell_type", "name", "synonyms", "secondary_accessions", "species", "sex", "age", "category",
           "disease", "parent", "parent_name"]
ACCESSION = re.compile(r"^CVCL_[0-9A-Z]{4}$")
_LINE = re.compile(r"^([A-Z]{2})   (.*)$")


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(";") if v.strip()]


def parse_records(lines: Iterable[str], file: str | Path = "cellosaurus.txt") -> pd.DataFrame:
    """Parse flat-file lines into one row per record (columns :data:`COLUMNS`).

    Multi-valued fields are ``; ``-joined strings (``synonyms``,
    ``secondary_accessions``, ``disease``: the DI names); ``species`` is the
    first OX line's name (``Homo sapiens``); missing fields are None.

    Raises
    ------
    SourceFormatError
        A record without ``AC`` or with a malformed accession, two ``ID``
        lines in one record, or no record at all (naming the line).
    """
    rows: list[dict] = []
    rec: dict | None = None
    for n, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if line.startswith("//"):
            if rec is not None:
                rows.append(_finish(rec, file, n))
            rec = None
            continue
        m = _LINE.match(line)
        if not m:
            continue  # preamble and blank lines
        code, value = m.group(1), m.group(2).strip()
        if code == "ID":
            if rec is not None:
                raise SourceFormatError(file, "ID", f"line {n}: new ID before the record of line {rec['_line']} "
                                                    "ended with //")
            rec = {"_line": n, "ID": value, "AS": [], "SY": [], "OX": [], "DI": [], "HI": []}
            continue
        if rec is None:
            continue
        if code in ("AS", "SY"):
            rec[code] += _split(value)
        elif code in ("OX", "DI", "HI"):
            rec[code].append(value)
        elif code in ("AC", "SX", "AG", "CA"):
            rec[code] = value
    if rec is not None:
        raise SourceFormatError(file, "//", f"record of line {rec['_line']} ({rec['ID']}) is not terminated "
                                            "(truncated file?)")
    if not rows:
        raise SourceFormatError(file, "ID", "no Cellosaurus record found")
    table = pd.DataFrame(rows, columns=COLUMNS)
    dup = table["cell_type"].duplicated()
    if dup.any():
        raise SourceFormatError(file, "AC", f"duplicate accessions {table.loc[dup, 'cell_type'].tolist()[:5]}")
    return table


def _finish(rec: dict, file, n: int) -> dict:
    ac = rec.get("AC")
    if ac is None:
        raise SourceFormatError(file, "AC", f"record {rec['ID']!r} (line {rec['_line']}) has no accession")
    if not ACCESSION.match(ac):
        raise SourceFormatError(file, "AC", f"line {rec['_line']}: malformed accession {ac!r}")
    species = None
    if rec["OX"]:
        m = re.search(r"!\s*([^(]+?)\s*(\(|$)", rec["OX"][0])
        species = m.group(1) if m else rec["OX"][0]
    diseases = [d.split(";", 2)[2].strip() for d in rec["DI"] if d.count(";") >= 2]
    parent = parent_name = None
    if rec["HI"]:
        head, _, tail = rec["HI"][0].partition("!")
        parent, parent_name = head.strip() or None, tail.strip() or None
    return {"cell_type": ac, "name": rec["ID"], "synonyms": "; ".join(rec["SY"]) or None,
            "secondary_accessions": "; ".join(rec["AS"]) or None, "species": species,
            "sex": rec.get("SX"), "age": rec.get("AG"), "category": rec.get("CA"),
            "disease": "; ".join(dict.fromkeys(diseases)) or None, "parent": parent, "parent_name": parent_name}


def read_cellosaurus(path: str | Path) -> pd.DataFrame:
    """Parse a ``cellosaurus.txt`` file (UTF-8) into the contexts table.

    Raises
    ------
    SourceFormatError
        Empty, not UTF-8, truncated, or malformed (see :func:`parse_records`).
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise SourceFormatError(path, "<file>", "file missing or empty")
    try:
        with open(path, encoding="utf-8") as fh:
            return parse_records(fh, path)
    except UnicodeDecodeError as exc:
        raise SourceFormatError(path, "<text>", f"not UTF-8 ({exc})") from exc


def release_of(path: str | Path) -> str | None:
    """The release the preamble names (``Version: 52.0``), None when absent."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for _, line in zip(range(200), fh):
            m = re.search(r"Version:\s*([0-9][0-9.]*)", line)
            if m:
                return m.group(1)
    return None
