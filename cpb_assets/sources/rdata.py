"""A streaming reader of R's serialization format (RData/RDS, XDR), in pure Python.

R's ``save()`` writes ``RDX2\\n`` or ``RDX3\\n`` followed by one serialized
pairlist (tag = object name, value = the object); ``saveRDS()`` writes the
serialized object alone (``X\\n``). Either may be compressed by gzip (R's
default), bzip2 or xz, or not at all. This module reads that stream
*sequentially*, item by item, from a buffered reader on the decompressed
bytes: a caller walks lists element by element (:meth:`Node.elements`) and
reads (:meth:`Node.read`) or skips (:meth:`Node.skip`) each one, so that
nothing but the item being read is ever held. Nothing is evaluated: the
reader knows data types only and refuses code and environments.

Supported (what R writes for data): ``NULL``; pairlists (attributes);
lists (``VECSXP``) and expression vectors as lists; character vectors
(``NA_character_``; UTF-8, latin1, ASCII and native strings, decoded to
``str``; "bytes" strings are refused); integer, double, logical, complex
and raw vectors; symbols and references to them; S4 objects without slots
that are code; and the ALTREP forms R 4.x writes for such data:
``compact_intseq`` / ``compact_realseq`` (``1:n``, e.g. data.frame row
numbers and columns), ``deferred_string`` (``as.character`` of numbers,
expanded as R would) and the ``wrap_*`` wrappers. Closures, environments,
promises, language objects, bytecode, external pointers, weak references,
built-ins and unknown ALTREP classes raise :class:`SourceFormatError`
naming the file and the object path (``Exp[["3"]][["VH02001"]]``).

Numbers follow R: integers and logicals are ``int32`` arrays with
``NA`` = :data:`NA_INTEGER` (helpers turn them into pandas values), doubles
are ``float64`` (``NA_real_`` is a NaN). Big numeric vectors can be read
*sparse* (:class:`SparseVector`: the flat positions and values of the
entries that are not 0, NA included), in blocks, without the dense vector
ever existing.

The format is that of R's documentation (R Internals, "Serialization
Formats"; ``?serialize``) and of experiments with R 4.2's ``save()``.
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import math
import struct
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from cpb_assets.errors import SourceFormatError

NA_INTEGER = -(2 ** 31)
_BLOCK = 1 << 20  # bytes read from the decompressed stream at a time
_SPARSE_BLOCK = 1 << 20  # elements per block of a sparse read (8 MiB of doubles)

# SEXP types (R Internals)
NILSXP, SYMSXP, LISTSXP, CLOSXP, ENVSXP, PROMSXP, LANGSXP = 0, 1, 2, 3, 4, 5, 6
SPECIALSXP, BUILTINSXP, CHARSXP, LGLSXP, INTSXP, REALSXP, CPLXSXP = 7, 8, 9, 10, 13, 14, 15
STRSXP, DOTSXP, ANYSXP, VECSXP, EXPRSXP, BCODESXP, EXTPTRSXP = 16, 17, 18, 19, 20, 21, 22
WEAKREFSXP, RAWSXP, S4SXP = 23, 24, 25
# pseudo-types of the serialization stream
REFSXP, NILVALUE_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP, MISSINGARG_SXP = 255, 254, 253, 252, 251
BASENAMESPACE_SXP, NAMESPACESXP, PACKAGESXP, PERSISTSXP = 250, 249, 248, 247
CLASSREFSXP, GENERICREFSXP, BCREPDEF, EMPTYENV_SXP, BASEENV_SXP = 246, 245, 244, 242, 241
ATTRLANGSXP, ATTRLISTSXP, ALTREP_SXP, BCREPREF = 240, 239, 238, 243

_IS_OBJECT, _HAS_ATTR, _HAS_TAG = 1 << 8, 1 << 9, 1 << 10
_BYTES_MASK, _LATIN1_MASK, _UTF8_MASK, _ASCII_MASK = 1 << 1, 1 << 2, 1 << 3, 1 << 6

_CODE = {CLOSXP: "a function (closure)", ENVSXP: "an environment", PROMSXP: "a promise",
         LANGSXP: "a language object (call)", SPECIALSXP: "a built-in function", BUILTINSXP: "a built-in function",
         DOTSXP: "a '...' object", ANYSXP: "an 'any' object", BCODESXP: "byte code",
         EXTPTRSXP: "an external pointer", WEAKREFSXP: "a weak reference", GLOBALENV_SXP: "the global environment",
         BASENAMESPACE_SXP: "the base namespace", NAMESPACESXP: "a namespace", PACKAGESXP: "a package environment",
         PERSISTSXP: "a persistent reference", CLASSREFSXP: "a class reference",
         GENERICREFSXP: "a generic reference", BCREPDEF: "byte code", BCREPREF: "byte code",
         EMPTYENV_SXP: "the empty environment", BASEENV_SXP: "the base environment",
         ATTRLANGSXP: "a language object (call)", UNBOUNDVALUE_SXP: "an unbound value",
         MISSINGARG_SXP: "a missing argument"}
_TYPE_NAMES = {LGLSXP: "logical", INTSXP: "integer", REALSXP: "double", CPLXSXP: "complex", STRSXP: "character",
               VECSXP: "list", EXPRSXP: "expression", RAWSXP: "raw"}


@dataclass
class RObject:
    """One R value as read from the stream.

    Attributes
    ----------
    type
        R's ``typeof``: ``"NULL"``, ``"symbol"``, ``"pairlist"``, ``"list"``,
        ``"expression"``, ``"character"``, ``"integer"``, ``"double"``,
        ``"logical"``, ``"complex"``, ``"raw"``, ``"S4"``.
    value
        ``None`` (NULL, S4); ``str`` (symbol); ``list[str | None]``
        (character); ``numpy.ndarray`` (int32 for integer/logical, float64,
        complex128, uint8) or :class:`SparseVector` (numbers read sparse);
        ``list[RObject]`` (list, expression); ``list[tuple[str | None,
        RObject]]`` (pairlist: tag and value of each cell).
    attributes
        Attribute name → value (``names``, ``dim``, ``dimnames``, ``class``,
        ``levels``, ``row.names``, …), in the stream's order.
    tail
        A pairlist whose last cell's CDR is not NULL (a "dotted" pair, as in
        ALTREP states): that CDR.
    """

    type: str
    value: Any = None
    attributes: dict[str, "RObject"] = field(default_factory=dict)
    tail: "RObject | None" = None

    def __len__(self) -> int:
        if self.value is None:
            return 0
        return len(self.value)

    def attr(self, name: str) -> "RObject | None":
        """An attribute, or None."""
        return self.attributes.get(name)


NULL = RObject("NULL")


@dataclass
class SparseVector:
    """A numeric vector read sparse: ``values[k]`` sits at flat position ``index[k]``; all else is 0.

    ``values`` are float64 (integer NA → NaN, as R's ``as.double``); the
    entries kept are those that are not 0 (NA and NaN included).
    """

    length: int
    index: np.ndarray
    values: np.ndarray
    rtype: str

    def __len__(self) -> int:
        return self.length


# --- input ------------------------------------------------------------------------------------------


def _open_decompressed(path: Path):
    """The file's decompressed byte stream (gzip, bzip2, xz or none, told by the magic bytes)."""
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    if magic[:3] == b"BZh":
        return bz2.open(path, "rb")
    if magic[:6] == b"\xfd7zXZ\x00":
        return lzma.open(path, "rb")
    return open(path, "rb")


class _Input:
    """Big-endian (XDR) reads from a decompressed stream through a small buffer of our own."""

    def __init__(self, raw, file: Path):
        self.raw = raw
        self.file = file
        self.buf = b""
        self.pos = 0
        self.where = "<RData>"  # the object path being read, for errors
        self._scratch = None

    def _raw_read(self, n: int) -> bytes:
        try:
            return self.raw.read(n)
        except (EOFError, OSError, zlib.error, lzma.LZMAError, ValueError) as exc:
            raise SourceFormatError(self.file, self.where, f"cannot decompress the file (truncated or damaged): "
                                                           f"{exc}") from None

    def _raw_readinto(self, mv) -> int:
        try:
            return self.raw.readinto(mv)
        except (EOFError, OSError, zlib.error, lzma.LZMAError, ValueError) as exc:
            raise SourceFormatError(self.file, self.where, f"cannot decompress the file (truncated or damaged): "
                                                           f"{exc}") from None

    def _truncated(self):
        raise SourceFormatError(self.file, self.where, "the file ends inside this object (truncated file)")

    def read(self, n: int) -> bytes:
        avail = len(self.buf) - self.pos
        if avail >= n:
            out = self.buf[self.pos:self.pos + n]
            self.pos += n
            return out
        parts = [self.buf[self.pos:]]
        need = n - avail
        while need > 0:
            chunk = self._raw_read(max(need, _BLOCK))
            if not chunk:
                self._truncated()
            if len(chunk) > need:
                parts.append(chunk[:need])
                self.buf, self.pos = chunk, need
            else:
                parts.append(chunk)
                self.buf, self.pos = b"", 0
            need -= min(need, len(chunk))
        return b"".join(parts)

    def int(self) -> int:
        if len(self.buf) - self.pos >= 4:
            (v,) = struct.unpack_from(">i", self.buf, self.pos)
            self.pos += 4
            return v
        return struct.unpack(">i", self.read(4))[0]

    def readinto(self, mv: memoryview) -> None:
        """Fill `mv` (bytes) from the buffer, then straight from the stream."""
        n = len(mv)
        avail = min(len(self.buf) - self.pos, n)
        mv[:avail] = self.buf[self.pos:self.pos + avail]
        self.pos += avail
        got = avail
        while got < n:
            k = self._raw_readinto(mv[got:])
            if not k:
                self._truncated()
            got += k

    def skip(self, n: int) -> None:
        avail = len(self.buf) - self.pos
        if avail >= n:
            self.pos += n
            return
        self.buf, self.pos = b"", 0
        n -= avail
        if self._scratch is None:
            self._scratch = memoryview(bytearray(16 * _BLOCK))
        while n > 0:
            k = self._raw_readinto(self._scratch[:min(n, len(self._scratch))])
            if not k:
                self._truncated()
            n -= k

    def array(self, n: int, dtype: str) -> np.ndarray:
        """`n` big-endian numbers as a native-endian array (one allocation, swapped in place)."""
        out = np.empty(n, dtype=np.dtype(dtype).newbyteorder(">"))
        if n:
            self.readinto(memoryview(out).cast("B"))
        if sys.byteorder == "big":
            return out
        out.byteswap(inplace=True)  # the bytes now native-endian: read them with the native dtype
        return out.view(out.dtype.newbyteorder("="))


# --- the reader ---------------------------------------------------------------------------------------


class _Header:
    __slots__ = ("flags", "type", "levels", "is_obj", "has_attr", "has_tag")

    def __init__(self, flags: int):
        self.flags = flags
        self.type = flags & 0xFF
        self.levels = flags >> 12
        self.is_obj = bool(flags & _IS_OBJECT)
        self.has_attr = bool(flags & _HAS_ATTR)
        self.has_tag = bool(flags & _HAS_TAG)


class RDataReader:
    """Sequential reader of one RData or RDS file.

    Use as a context manager; :meth:`objects` (RData) or :meth:`root` (RDS)
    give :class:`Node` s to read or skip, in file order.

    Raises
    ------
    SourceFormatError
        Not an XDR RData/RDS file (field ``<RData>``), truncated or damaged
        (field: the object being read), or an unsupported object (field: its
        path).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists() or self.path.stat().st_size == 0:
            raise SourceFormatError(self.path, "<RData>", "empty or missing file")
        self._raw = _open_decompressed(self.path)
        self.inp = _Input(self._raw, self.path)
        self.symbols: list[str] = []
        try:
            self.kind = self._read_magic()
        except BaseException:
            self._raw.close()
            raise

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> "RDataReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _bad(self, problem: str, where: str = "<RData>"):
        raise SourceFormatError(self.path, where, problem)

    def _read_magic(self) -> str:
        head = self.inp.read(2)
        kind = "rds"
        if head in (b"RD", ):
            rest = head + self.inp.read(3)
            if rest in (b"RDX2\n", b"RDX3\n"):
                kind = "rdata"
                head = self.inp.read(2)
            elif rest[:3] in (b"RDA", b"RDB"):
                self._bad("an ASCII or native-binary RData file; only the default XDR format (save()'s default) "
                          "is read")
            else:
                self._bad("not an RData file (no RDX2/RDX3 header)")
        if head != b"X\n":
            if head in (b"A\n", b"B\n"):
                self._bad("an ASCII or native-binary serialization; only XDR (the default) is read")
            self._bad("not an RData or RDS file (no RDX2/RDX3 or XDR serialization header)")
        version = self.inp.int()
        self.inp.int()  # R version that wrote it
        self.inp.int()  # oldest R version that reads it
        if version == 3:
            n = self.inp.int()
            self.native_encoding = self.inp.read(n).decode("ascii", "replace")
        elif version == 2:
            self.native_encoding = "latin1"
        else:
            self._bad(f"serialization format version {version} (only 2 and 3 are read)")
        return kind

    # --- top level

    def objects(self) -> Iterator[tuple[str, "Node"]]:
        """The objects of an RData file: ``(name, node)`` in file order; an unread node is skipped."""
        if self.kind != "rdata":
            self._bad("an RDS file (one object): use root()")
        inp = self.inp
        inp.where = "<RData>"
        h = _Header(inp.int())
        while h.type in (LISTSXP, ATTRLISTSXP):
            if h.has_attr:
                self._read(self._next_header(), "<RData>", "skip")
            name = self._symbol_name(self._next_header(), "<RData>") if h.has_tag else ""
            node = Node(self, self._next_header(), name)
            yield name, node
            node._finish()
            inp.where = "<RData>"
            h = self._next_header()
        if h.type != NILVALUE_SXP:
            self._bad("the objects of the file are not a pairlist")

    def root(self, name: str = "<RDS>") -> "Node":
        """The one object of an RDS file."""
        return Node(self, self._next_header(), name)

    def _next_header(self) -> _Header:
        return _Header(self.inp.int())

    def _symbol_name(self, h: _Header, where: str) -> str:
        if h.type == SYMSXP:
            name = self._charsxp(self._next_header(), where)
            self.symbols.append(name)
            return name
        if h.type == REFSXP:
            return self._ref(h, where)
        self._bad(f"a tag is not a symbol but SEXP type {h.type}", where)

    def _ref(self, h: _Header, where: str) -> str:
        idx = h.flags >> 8
        if idx == 0:
            idx = self.inp.int()
        if not 1 <= idx <= len(self.symbols):
            self._bad(f"reference {idx} to an object not in the reference table", where)
        return self.symbols[idx - 1]

    def _length(self) -> int:
        n = self.inp.int()
        if n == -1:
            hi, lo = self.inp.int(), self.inp.int()
            n = (hi << 32) + (lo & 0xFFFFFFFF)
        if n < 0:
            self._bad(f"negative vector length {n}", self.inp.where)
        return n

    def _charsxp(self, h: _Header, where: str) -> str | None:
        if h.type != CHARSXP:
            self._bad(f"a string element is not a CHARSXP but SEXP type {h.type}", where)
        n = self.inp.int()
        if n == -1:
            return None
        raw = self.inp.read(n)
        lv = h.levels
        if lv & _UTF8_MASK or lv & _ASCII_MASK:
            enc = "utf-8"
        elif lv & _LATIN1_MASK:
            enc = "latin-1"
        elif lv & _BYTES_MASK:
            self._bad("a string marked as raw bytes (encoding 'bytes')", where)
        else:
            enc = "latin-1" if self.native_encoding.lower().replace("-", "") in ("latin1", "iso88591") else "utf-8"
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            self._bad(f"a string that is not valid {enc}", where)

    def _strings(self, n: int, where: str, keep: bool) -> list | None:
        inp = self.inp
        out = [] if keep else None
        for _ in range(n):
            h = _Header(inp.int())
            if not keep and h.type == CHARSXP:
                k = inp.int()
                if k > 0:
                    inp.skip(k)
                continue
            s = self._charsxp(h, where)
            if keep:
                out.append(s)
        return out

    def _attributes(self, h: _Header, where: str, mode: str) -> dict:
        if not h.has_attr:
            return {}
        a = self._read(self._next_header(), f"attributes({where})", "full" if mode != "skip" else "skip")
        if mode == "skip":
            return {}
        if a.type != "pairlist":
            self._bad("attributes are not a pairlist", where)
        return {tag: v for tag, v in a.value}

    def _numbers(self, h: _Header, where: str, mode: str) -> RObject | None:
        t = h.type
        n = self._length()
        size, dtype = {LGLSXP: (4, "i4"), INTSXP: (4, "i4"), REALSXP: (8, "f8"), CPLXSXP: (16, "c16"),
                       RAWSXP: (1, "u1")}[t]
        if mode == "skip":
            self.inp.skip(n * size)
            value = None
        elif mode == "sparse" and t in (INTSXP, REALSXP, LGLSXP):
            value = self._sparse(n, t)
        else:
            value = self.inp.array(n, dtype)
        attrs = self._attributes(h, where, mode)
        return None if mode == "skip" else RObject(_TYPE_NAMES[t], value, attrs)

    def _sparse(self, n: int, t: int) -> SparseVector:
        idx, vals = [], []
        dtype = "f8" if t == REALSXP else "i4"
        for start in range(0, n, _SPARSE_BLOCK):
            block = self.inp.array(min(_SPARSE_BLOCK, n - start), dtype)
            if t == REALSXP:
                nz = np.flatnonzero((block != 0) | np.isnan(block))
                v = block[nz]
            else:
                nz = np.flatnonzero(block != 0)
                v = block[nz].astype(np.float64)
                v[block[nz] == NA_INTEGER] = np.nan
            idx.append(nz.astype(np.int64) + start)
            vals.append(v)
        index = np.concatenate(idx) if idx else np.zeros(0, dtype=np.int64)
        values = np.concatenate(vals) if vals else np.zeros(0, dtype=np.float64)
        return SparseVector(n, index, values, _TYPE_NAMES[t])

    def _read(self, h: _Header, where: str, mode: str = "full") -> RObject | None:
        """One item whose header is `h`; mode ``full``, ``skip`` (parse, keep nothing) or ``sparse``."""
        inp = self.inp
        inp.where = where
        t = h.type
        if t == NILVALUE_SXP or t == NILSXP:
            return NULL
        if t == REFSXP:
            return RObject("symbol", self._ref(h, where))
        if t == SYMSXP:
            return RObject("symbol", self._symbol_name(h, where))
        if t in (LGLSXP, INTSXP, REALSXP, CPLXSXP, RAWSXP):
            return self._numbers(h, where, mode)
        if t == STRSXP:
            n = self._length()
            value = self._strings(n, where, mode != "skip")
            attrs = self._attributes(h, where, mode)
            return None if mode == "skip" else RObject("character", value, attrs)
        if t in (VECSXP, EXPRSXP):
            n = self._length()
            sub = "skip" if mode == "skip" else "full"
            items = [self._read(self._next_header(), f"{where}[[{k + 1}]]", sub) for k in range(n)]
            inp.where = where
            attrs = self._attributes(h, where, mode)
            return None if mode == "skip" else RObject(_TYPE_NAMES[t], items, attrs)
        if t in (LISTSXP, ATTRLISTSXP):
            return self._pairlist(h, where, mode)
        if t == S4SXP:
            attrs = self._attributes(h, where, mode)
            return None if mode == "skip" else RObject("S4", None, attrs)
        if t == ALTREP_SXP:
            return self._altrep(where, mode)
        what = _CODE.get(t, f"an object of unknown SEXP type {t}")
        self._bad(f"{what}: only data (vectors, lists, data.frames, matrices) is read; code and environments "
                  f"are refused, never evaluated", where)

    def _pairlist(self, h: _Header, where: str, mode: str) -> RObject | None:
        cells: list = []
        attrs: dict = {}
        first = True
        while True:
            a = self._attributes(h, where, mode)
            if first:
                attrs, first = a, False
            tag = self._symbol_name(self._next_header(), where) if h.has_tag else None
            sub = f"{where}${tag}" if tag else f"{where}[[{len(cells) + 1}]]"
            car = self._read(self._next_header(), sub, "skip" if mode == "skip" else "full")
            cells.append((tag, car))
            self.inp.where = where
            h = self._next_header()
            if h.type in (LISTSXP, ATTRLISTSXP):
                continue
            tail = None if h.type == NILVALUE_SXP else self._read(h, where, "skip" if mode == "skip" else "full")
            break
        if mode == "skip":
            return None
        return RObject("pairlist", cells, attrs, tail)

    def _altrep(self, where: str, mode: str) -> RObject | None:
        info = self._read(self._next_header(), where, "full")
        cls = info.value[0][1].value if info.type == "pairlist" and info.value else None
        if cls not in _ALTREP_CLASSES:
            self._bad(f"an ALTREP object of class {cls!r}, which this reader does not know", where)
        if mode == "skip":
            self._read(self._next_header(), where, "skip")  # the state (a wrapper's whole vector)
            self._read(self._next_header(), where, "skip")  # the attributes
            return None
        state = self._read(self._next_header(), where, "full")
        attr = self._read(self._next_header(), where, "full")
        attrs = {tag: v for tag, v in attr.value} if attr.type == "pairlist" else {}
        obj = _expand_altrep(cls, state)
        if obj is None:
            self._bad(f"an ALTREP object of class {cls!r} with a state this reader does not know", where)
        obj.attributes = {**obj.attributes, **attrs}
        if mode == "sparse" and obj.type in ("integer", "double", "logical"):
            obj.value = _to_sparse(obj.value, obj.type)
        return obj


_ALTREP_CLASSES = {"compact_intseq", "compact_realseq", "deferred_string", "wrap_integer", "wrap_real",
                   "wrap_logical", "wrap_string", "wrap_complex", "wrap_raw", "wrap_list"}


def _to_sparse(arr: np.ndarray, rtype: str) -> SparseVector:
    if rtype == "double":
        nz = np.flatnonzero((arr != 0) | np.isnan(arr))
        v = arr[nz].astype(np.float64)
    else:
        nz = np.flatnonzero(arr != 0)
        v = arr[nz].astype(np.float64)
        v[arr[nz] == NA_INTEGER] = np.nan
    return SparseVector(len(arr), nz.astype(np.int64), v, rtype)


def _expand_altrep(cls: str | None, state: RObject) -> RObject | None:
    """The ordinary vector an ALTREP object stands for (None: unknown class)."""
    if cls in ("compact_intseq", "compact_realseq"):
        n, start, inc = (float(v) for v in state.value[:3])
        seq = start + inc * np.arange(int(n), dtype=np.float64)
        if cls == "compact_intseq":
            return RObject("integer", seq.astype(np.int32))
        return RObject("double", seq)
    if cls == "deferred_string":
        arg = state.value[0][1] if state.type == "pairlist" else state
        scipen = 0
        if state.type == "pairlist" and state.tail is not None and state.tail.type == "integer" and len(state.tail):
            scipen = int(state.tail.value[0])
        if arg.type == "character":
            return RObject("character", list(arg.value))
        if arg.type == "integer":
            return RObject("character", [None if v == NA_INTEGER else str(int(v)) for v in arg.value])
        if arg.type == "double":
            return RObject("character", [format_double(v, scipen) for v in arg.value])
        return None
    if cls and cls.startswith("wrap_"):
        x = state.value[0][1] if state.type == "pairlist" else state.value[0]
        return RObject(x.type, x.value, dict(x.attributes))
    return None


def is_na_real(v: float) -> bool:
    """R's ``NA_real_`` (a NaN whose low word is 1954), as opposed to a plain NaN."""
    return math.isnan(v) and (struct.unpack("<Q", struct.pack("<d", v))[0] & 0xFFFFFFFF) == 1954


def format_double(v: float, scipen: int = 0) -> str | None:
    """``as.character`` of one double as R does it (15 significant digits, fixed or scientific)."""
    if math.isnan(v):
        return None if is_na_real(v) else "NaN"
    if math.isinf(v):
        return "Inf" if v > 0 else "-Inf"
    if v == 0:
        return "0"
    sci = f"{v:.14e}"
    mant, exp = sci.split("e")
    mant = mant.rstrip("0").rstrip(".")
    e = int(exp)
    sig = len(mant.replace("-", "").replace(".", ""))
    sci_s = f"{mant}e{'-' if e < 0 else '+'}{abs(e):02d}"
    decimals = max(0, sig - 1 - e)
    fixed = f"{v:.{decimals}f}"
    return fixed if len(fixed) <= len(sci_s) + scipen else sci_s


class Node:
    """One object in the stream, not yet read: read it, skip it, or walk its elements (a list).

    Attributes
    ----------
    path
        R's expression for the object (``Exp[["3"]][["VH02001"]]``), named in errors.
    rtype
        R's ``typeof`` of the object (ALTREP objects: ``"altrep"``).
    """

    def __init__(self, reader: RDataReader, header: _Header, path: str):
        self.reader = reader
        self.header = header
        self.path = path
        self.done = False
        self._attrs: dict | None = None
        self._walking = False
        self._iter = None
        t = header.type
        self.rtype = (_TYPE_NAMES.get(t) or {NILVALUE_SXP: "NULL", NILSXP: "NULL", LISTSXP: "pairlist",
                                             S4SXP: "S4", SYMSXP: "symbol", REFSXP: "symbol",
                                             ALTREP_SXP: "altrep"}.get(t, f"sexp{t}"))

    @property
    def is_list(self) -> bool:
        """A generic vector (R list, data.frame included)."""
        return self.header.type == VECSXP

    def read(self, sparse: bool = False) -> RObject:
        """Read the whole object; `sparse`: a numeric vector (not its attributes) as :class:`SparseVector`."""
        if self.done or self._walking:
            raise RuntimeError(f"{self.path} has already been read")
        self.done = True
        return self.reader._read(self.header, self.path, "sparse" if sparse else "full")

    def skip(self) -> None:
        """Parse past the object, keeping nothing."""
        if not self.done and not self._walking:
            self.done = True
            self.reader._read(self.header, self.path, "skip")

    def elements(self, names: list | None = None) -> Iterator["Node"]:
        """The elements of a list, in order (an element not read is skipped before the next).

        `names` (if known) label the paths; then :meth:`attributes` gives
        the list's attributes (they follow the elements in the stream).
        """
        if self._iter is None:
            self._iter = self._walk(names)
        return self._iter

    def _walk(self, names):
        if not self.is_list:
            raise SourceFormatError(self.reader.path, self.path, f"is not a list but {self.rtype}")
        if self.done or self._walking:
            raise RuntimeError(f"{self.path} has already been read")
        self._walking = True
        r = self.reader
        r.inp.where = self.path
        n = r._length()
        for k in range(n):
            nm = names[k] if names is not None and k < len(names) and names[k] is not None else None
            sub = f'{self.path}[["{nm}"]]' if nm is not None else f"{self.path}[[{k + 1}]]"
            child = Node(r, r._next_header(), sub)
            yield child
            child._finish()
        r.inp.where = self.path
        self._attrs = r._attributes(self.header, self.path, "full")
        self.done = True

    def attributes(self) -> dict[str, RObject]:
        """The attributes of a list walked to its end by :meth:`elements`."""
        if self._attrs is None:
            raise RuntimeError(f"{self.path}: walk its elements first")
        return self._attrs

    def _finish(self) -> None:
        if self._iter is not None and not self.done:
            for _ in self._iter:  # a walk left half-way: skip the remaining elements
                pass
        if not self.done:
            self.skip()


# --- whole-file helpers and conversions -------------------------------------------------------------------


def read_rdata(path: str | Path, names: list[str] | None = None) -> dict[str, RObject]:
    """The objects of an RData file (only `names` if given; the others are skipped, not kept)."""
    out = {}
    with RDataReader(path) as r:
        for name, node in r.objects():
            if names is None or name in names:
                out[name] = node.read()
    return out


def read_rds(path: str | Path) -> RObject:
    """The object of an RDS file (``saveRDS()``)."""
    with RDataReader(path) as r:
        if r.kind != "rds":
            raise SourceFormatError(path, "<RDS>", "an RData file, not RDS: use read_rdata()")
        return r.root().read()


def r_names(obj: RObject) -> list | None:
    """``names(obj)`` (None for NULL)."""
    n = obj.attr("names")
    return None if n is None or n.type != "character" else list(n.value)


def r_class(obj: RObject) -> list[str]:
    """``class(obj)``: the class attribute, else R's implicit class."""
    c = obj.attr("class")
    if c is not None and c.type == "character" and len(c):
        return [str(v) for v in c.value]
    d = obj.attr("dim")
    if d is not None:
        return ["matrix", "array"] if len(d) == 2 else ["array"]
    return {"double": ["numeric"], "symbol": ["name"], "pairlist": ["pairlist"], "S4": ["S4"]}.get(
        obj.type, [obj.type])


def inherits(obj: RObject, cls: str) -> bool:
    """``inherits(obj, cls)`` on the class attribute only (no implicit class)."""
    c = obj.attr("class")
    return c is not None and c.type == "character" and cls in c.value


def is_data_frame(obj: RObject) -> bool:
    """``is.data.frame(obj)``: a list of class data.frame."""
    return obj.type == "list" and inherits(obj, "data.frame")


def is_numeric(obj: RObject) -> bool:
    """R's ``is.numeric``: integer or double, not a factor (nor Date/POSIXt/difftime)."""
    return obj.type in ("integer", "double") and not any(
        inherits(obj, c) for c in ("factor", "Date", "POSIXt", "difftime"))


def row_names(obj: RObject) -> list[str] | None:
    """``rownames()`` of a data.frame (compact ``c(NA, -n)`` row names → ``"1"`` … ``"n"``)."""
    rn = obj.attr("row.names")
    if rn is None or rn.type == "NULL":
        return None
    if rn.type == "integer":
        v = rn.value
        if len(v) == 2 and v[0] == NA_INTEGER:
            return [str(k) for k in range(1, abs(int(v[1])) + 1)]
        return [None if x == NA_INTEGER else str(int(x)) for x in v]
    return as_character(rn)


def as_character(obj: RObject) -> list:
    """``as.character(obj)`` of a vector (factors by their levels; NA → None)."""
    if obj.type == "character":
        return list(obj.value)
    if obj.type == "integer" and inherits(obj, "factor"):
        levels = obj.attr("levels")
        lv = list(levels.value) if levels is not None else []
        return [None if c == NA_INTEGER or not 1 <= c <= len(lv) else lv[c - 1] for c in obj.value]
    if obj.type == "integer":
        return [None if x == NA_INTEGER else str(int(x)) for x in obj.value]
    if obj.type == "logical":
        return [None if x == NA_INTEGER else ("TRUE" if x else "FALSE") for x in obj.value]
    if obj.type == "double":
        return [format_double(float(x)) for x in obj.value]
    if obj.type == "NULL":
        return []
    raise TypeError(f"as.character of a {obj.type} is not supported")


def as_double(obj: RObject) -> np.ndarray:
    """``as.double`` of an integer, logical or double vector (NA → NaN)."""
    v = obj.value
    if obj.type == "double":
        return np.asarray(v, dtype=np.float64)
    out = np.asarray(v, dtype=np.float64)
    out[np.asarray(v) == NA_INTEGER] = np.nan
    return out


def column_values(col: RObject, file, where: str):
    """One data.frame column as the readers take it: numbers as float64 (NA → NaN), else strings (NA → None)."""
    if is_numeric(col):
        return as_double(col)
    try:
        return pd.Series(as_character(col), dtype=object)
    except TypeError:
        raise SourceFormatError(file, where, f"a column of type {col.type} (class {r_class(col)[0]}) is not "
                                             f"supported") from None
