"""Compound registry: parent-structure standardization and PubChem CID resolution.

Standardization (:func:`standardize_parent`), with RDKit's ``rdMolStandardize``:

1. ``Cleanup``: remove explicit hydrogens, disconnect metal–organic bonds,
   normalize functional-group drawings (nitro, N-oxides …), reionize.
2. ``LargestFragmentChooser(preferOrganic=True)``: keep the largest organic
   fragment, dropping counter-ions, salts and solvents (``.Cl``, ``[Na+]``,
   ``[H+].[Cl-]``, oxalic acid …).
3. ``Uncharger``: neutralize what can be neutralized by adding or removing
   protons (carboxylates, protonated amines); zwitterions that cannot be
   neutralized (quaternary N, N-oxides) keep their charges.

Stereochemistry and isotopes are kept, so enantiomers stay apart. No tautomer
canonicalization: it is slow, it can rewrite a drawing into a form nobody
registered, and the standard InChI already merges mobile-H tautomers.

Resolution (:func:`resolve_compounds`), first hit wins, recorded in
``cid_method``:

``inchikey``
    the standard InChIKey of the record's parent structure (or, without a
    usable SMILES, the InChIKey the source gave) equals a reference InChIKey;
``smiles``
    the canonical isomeric parent SMILES equals a reference parent SMILES;
``source_cid``
    the CID the source itself ships (column ``pubchem_cid`` of the records,
    e.g. L1000 ``pert_info.pubchem_cid``), taken when the structure did not
    resolve. Where a record has both a structure and a source CID they are
    cross-checked (``source_cid_check``: ``agrees``, ``mismatch`` or
    ``unchecked`` when the reference knows neither); on a mismatch the
    structure wins and the source CID is not used;
``catalog_id``
    the record's ``catalog_id`` (then its ``source_id``) equals a reference
    catalog ID after normalization (BRD IDs reduced to ``BRD-K12345678``);
``name``
    the normalized name equals a reference name or synonym;
``pubchem_inchikey`` / ``pubchem_name``
    only when a PubChem client is passed: PUG-REST look-up (from its cache
    when offline);
``manual``
    the dataset's manual fallback table;
``unresolved``
    none of the above: kept with ``pubchem_cid`` None, never dropped.

Matching is at the parent level: a hydrochloride and its free base get the
same CID, the CID of whichever form the reference holds (the parent form when
it holds both).
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rdkit import Chem, rdBase
from rdkit.Chem.MolStandardize import rdMolStandardize

RECORD_COLUMNS = ["dataset", "source_id", "name", "smiles", "inchikey", "catalog_id"]
OUTPUT_COLUMNS = ["pubchem_cid", "parent_smiles", "parent_inchikey", "cid_method", "source_cid", "source_cid_check"]
METHODS = ["inchikey", "smiles", "source_cid", "catalog_id", "name", "pubchem_inchikey", "pubchem_name", "manual",
           "unresolved"]
INCHIKEY_PATTERN = re.compile(r"^[A-Z]{14}-[A-Z]{10}-[A-Z]$")
_BRD = re.compile(r"^BRD[-_ ]?([A-Z])[-_ ]?(\d{8})(?:\D.*)?$")  # BRD-K12345678-001-01-1 -> BRD-K12345678

_CHOOSER = rdMolStandardize.LargestFragmentChooser(preferOrganic=True)
_UNCHARGER = rdMolStandardize.Uncharger()


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA or (
        isinstance(value, str) and not value.strip())


def standardize_parent(smiles: Any) -> tuple[str, str | None] | None:
    """Parent structure of a SMILES and its standard InChIKey.

    Parameters
    ----------
    smiles
        A SMILES string; anything else (None, NaN, numbers) counts as missing.

    Returns
    -------
    tuple of (str, str or None), or None
        ``(parent_smiles, inchikey)``: canonical isomeric RDKit SMILES of the
        cleaned, largest-organic-fragment, neutralized structure (see the
        module docstring) and its standard InChIKey (None if InChI generation
        fails). None when the input is missing or does not parse; never raises.
    """
    if _missing(smiles) or not isinstance(smiles, str):
        return None
    with rdBase.BlockLogs():  # RDKit's parse warnings would flood the run log
        try:
            mol = Chem.MolFromSmiles(smiles.strip())
            if mol is None or mol.GetNumAtoms() == 0:
                return None
            mol = rdMolStandardize.Cleanup(mol)
            mol = _CHOOSER.choose(mol)
            mol = _UNCHARGER.uncharge(mol)
            Chem.SanitizeMol(mol)
            parent = Chem.MolToSmiles(mol)
            key = Chem.MolToInchiKey(mol) or None
        except Exception:  # noqa: BLE001 - garbage input must never stop a run
            return None
    return parent, key


def _inchikey_of(smiles: str) -> str | None:
    """InChIKey of a structure as drawn (salts included)."""
    with rdBase.BlockLogs():
        try:
            mol = Chem.MolFromSmiles(smiles)
            return (Chem.MolToInchiKey(mol) or None) if mol is not None else None
        except Exception:  # noqa: BLE001
            return None


def normalize_name(name: Any) -> str | None:
    """Case-, whitespace- and punctuation-insensitive key of a compound name.

    Unicode NFKC, casefold, ``(+)``/``(-)``/``(±)`` spelled out as
    ``plus``/``minus``/``rac`` so enantiomer names stay apart, then every run
    of non-alphanumerics removed, except that a comma is kept between two
    digits ("1,12-" and "11,2-" stay distinct). "Trichostatin A",
    "trichostatin-a" and "TRICHOSTATIN  A" share the key ``trichostatina``.
    """
    if _missing(name) or not isinstance(name, str):
        return None
    s = unicodedata.normalize("NFKC", name).casefold()
    s = s.replace("−", "-")
    s = s.replace("(+/-)", " rac ").replace("(±)", " rac ").replace("(+)", " plus ").replace("(-)", " minus ")
    parts = [p for p in re.split(r"[\W_]+", s) if p]
    if not parts:
        return None
    key = parts[0]
    for p in parts[1:]:
        key += ("," if key[-1].isdigit() and p[0].isdigit() else "") + p
    return key


def normalize_catalog_id(value: Any) -> str | None:
    """Normalized catalog ID: BRD IDs to ``BRD-X12345678``, others upper-case alphanumerics only."""
    if _missing(value):
        return None
    s = str(value).strip().upper()
    m = _BRD.match(s)
    if m:
        return f"BRD-{m.group(1)}{m.group(2)}"
    s = re.sub(r"[^0-9A-Z]+", "", s)
    return s or None


def _split_ids(value: Any) -> list[str]:
    """Catalog IDs may come pipe- or semicolon-joined (LINCS tables)."""
    if _missing(value):
        return []
    return [p for p in re.split(r"[|;]", str(value)) if p.strip()]


def _cid_str(value: Any) -> str | None:
    if _missing(value):
        return None
    if isinstance(value, float):
        return str(int(value))
    s = str(value).strip()
    return str(int(float(s))) if re.fullmatch(r"\d+(\.0*)?", s) else s


def _cid_sort_key(cid: str):
    return (0, int(cid)) if cid.isdigit() else (1, cid)


class CompoundReference:
    """Known compounds with their PubChem CIDs, indexed for look-up.

    Parameters
    ----------
    rows
        Records (dicts) or a DataFrame with ``pubchem_cid`` and optionally
        ``smiles``, ``inchikey``, ``names`` (list of str) and ``catalog_ids``
        (list of str). A given ``inchikey`` is trusted (e.g. PubChem's own);
        otherwise it is computed with RDKit from the parent structure.

    Notes
    -----
    Look-ups by InChIKey or SMILES that hit several CIDs prefer the compound
    whose own structure is the parent, then the lowest CID. Names and catalog
    IDs that hit several CIDs are ambiguous and answer None.
    """

    def __init__(self, rows: Iterable[Mapping[str, Any]] | pd.DataFrame = ()):
        records = rows.to_dict("records") if isinstance(rows, pd.DataFrame) else list(rows)
        self._rows: dict[str, dict[str, Any]] = {}
        for r in records:
            self.add_compound(**{k: r.get(k) for k in ("pubchem_cid", "smiles", "inchikey", "names", "catalog_ids")})

    # -- building ------------------------------------------------------------------------
    def add_compound(self, pubchem_cid, smiles=None, inchikey=None, names=None, catalog_ids=None) -> None:
        """Add a compound, or merge names and catalog IDs into a known CID."""
        cid = _cid_str(pubchem_cid)
        if cid is None:
            raise ValueError("a reference compound needs a pubchem_cid")
        row = self._rows.get(cid)
        if row is None:
            std = standardize_parent(smiles)
            given = str(inchikey).strip().upper() if not _missing(inchikey) else None
            row = {
                "pubchem_cid": cid,
                "smiles": smiles if not _missing(smiles) else None,
                "parent_smiles": std[0] if std else None,
                "parent_inchikey": given or (std[1] if std else None),
                "own_inchikey": given or (_inchikey_of(smiles) if isinstance(smiles, str) else None),
                "names": [],
                "catalog_ids": [],
            }
            self._rows[cid] = row
        self.add_names(cid, names or [])
        self.add_catalog_ids(cid, catalog_ids or [])
        self._index = None

    def add_names(self, cid, names: Iterable[str] | str) -> None:
        """Attach names or synonyms to a known CID (e.g. the demo world's invented names)."""
        row = self._rows[_cid_str(cid)]
        for n in [names] if isinstance(names, str) else names:
            if not _missing(n) and n not in row["names"]:
                row["names"].append(n)
        self._index = None

    def add_catalog_ids(self, cid, ids: Iterable[str] | str) -> None:
        """Attach catalog IDs (BRD IDs, vendor numbers) to a known CID."""
        row = self._rows[_cid_str(cid)]
        for i in [ids] if isinstance(ids, str) else ids:
            if not _missing(i) and i not in row["catalog_ids"]:
                row["catalog_ids"].append(i)
        self._index = None

    @classmethod
    def from_pubchem_sample(cls, path: str | Path) -> "CompoundReference":
        """Read the project's PubChem sample (``compounds.tsv`` or ``compounds.sdf``).

        The TSV gives ``pubchem_cid``, ``isomeric_smiles`` and ``iupac_name``
        (kept as a name when present); the SD file gives the CID, the OpenEye
        isomeric SMILES and the IUPAC names. InChIKeys are computed with RDKit
        from the parent structures in both cases.
        """
        path = Path(path)
        rows = []
        if path.suffix.lower() in (".sdf", ".sd"):
            with rdBase.BlockLogs():
                for mol in Chem.SDMolSupplier(str(path), sanitize=False, removeHs=False):
                    if mol is None:
                        continue
                    props = mol.GetPropsAsDict()
                    names = [props[k] for k in ("PUBCHEM_IUPAC_NAME", "PUBCHEM_IUPAC_TRADITIONAL_NAME")
                             if props.get(k)]
                    rows.append({"pubchem_cid": props["PUBCHEM_COMPOUND_CID"],
                                 "smiles": props.get("PUBCHEM_OPENEYE_ISO_SMILES"), "names": names})
        else:
            frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
            for r in frame.itertuples(index=False):
                rows.append({"pubchem_cid": r.pubchem_cid, "smiles": r.isomeric_smiles or r.canonical_smiles,
                             "names": [r.iupac_name] if r.iupac_name else []})
        return cls(rows)

    # -- look-up -------------------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        """One row per CID, in insertion order.

        Columns pubchem_cid, smiles, parent_smiles, parent_inchikey, names,
        catalog_ids and ``is_parent`` (the structure is its own parent, i.e.
        no salt or charge to strip: a record drawn like it resolves to this
        very CID; a salt's records resolve to its parent's CID when the
        reference holds the parent too).
        """
        cols = ["pubchem_cid", "smiles", "parent_smiles", "parent_inchikey", "names", "catalog_ids"]
        frame = pd.DataFrame([{k: r[k] for k in cols} for r in self._rows.values()], columns=cols)
        frame["is_parent"] = [r["own_inchikey"] == r["parent_inchikey"] for r in self._rows.values()]
        return frame

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, cid) -> bool:
        return _cid_str(cid) in self._rows

    def _build(self) -> dict[str, dict[str, list[str]]]:
        idx: dict[str, dict[str, list[str]]] = {"inchikey": {}, "smiles": {}, "catalog_id": {}, "name": {}}

        def put(kind, key, cid):
            if key is not None and cid not in idx[kind].setdefault(key, []):
                idx[kind][key].append(cid)

        for cid, r in self._rows.items():
            put("inchikey", r["parent_inchikey"], cid)
            put("inchikey", r["own_inchikey"], cid)
            put("smiles", r["parent_smiles"], cid)
            for c in r["catalog_ids"]:
                put("catalog_id", normalize_catalog_id(c), cid)
            for n in r["names"]:
                put("name", normalize_name(n), cid)
        return idx

    @property
    def index(self) -> dict[str, dict[str, list[str]]]:
        if getattr(self, "_index", None) is None:
            self._index = self._build()
        return self._index

    def _structure_pick(self, cids: list[str], kind: str, key: str) -> str:
        if len(cids) == 1:
            return cids[0]
        # prefer the compound drawn exactly so (InChIKey) or drawn as its own parent (SMILES)
        if kind == "inchikey":
            own = [c for c in cids if self._rows[c]["own_inchikey"] == key]
        else:
            own = [c for c in cids if self._rows[c]["own_inchikey"] == self._rows[c]["parent_inchikey"]]
        return sorted(own or cids, key=_cid_sort_key)[0]

    def lookup(self, kind: str, key: Any) -> str | None:
        """CID for one key of ``kind`` ('inchikey', 'smiles', 'catalog_id', 'name'), or None.

        ``catalog_id`` and ``name`` keys are normalized here; ``inchikey`` and
        ``smiles`` keys must already be a standard InChIKey / parent SMILES.
        """
        if kind == "catalog_id":
            key = normalize_catalog_id(key)
        elif kind == "name":
            key = normalize_name(key)
        elif kind == "inchikey" and isinstance(key, str):
            key = key.strip().upper()
        if key is None:
            return None
        cids = self.index[kind].get(key)
        if not cids:
            return None
        if kind in ("inchikey", "smiles"):
            return self._structure_pick(cids, kind, key)
        return cids[0] if len(cids) == 1 else None  # ambiguous name / catalog ID

    def parent_of(self, cid) -> tuple[str | None, str | None]:
        """(parent_smiles, parent_inchikey) of a reference CID (Nones if unknown)."""
        r = self._rows.get(_cid_str(cid))
        return (r["parent_smiles"], r["parent_inchikey"]) if r else (None, None)


def _given_inchikey(value: Any) -> str | None:
    if _missing(value):
        return None
    s = str(value).strip().upper()
    return s if INCHIKEY_PATTERN.match(s) else None


def _manual_lookup(manual: Mapping[str, Mapping[str, Any]], dataset: Any, source_id: Any, name: Any) -> str | None:
    for table_key in (dataset, "*"):
        table = manual.get(table_key) if isinstance(table_key, str) else None
        if not table:
            continue
        if not _missing(source_id) and str(source_id) in table:
            return _cid_str(table[str(source_id)])
        key = normalize_name(name)
        if key is not None:
            for k, v in table.items():
                if normalize_name(k) == key:
                    return _cid_str(v)
    return None


def resolve_compounds(records: pd.DataFrame, reference: CompoundReference,
                      manual: Mapping[str, Mapping[str, Any]] | None = None,
                      pubchem: Any | None = None) -> pd.DataFrame:
    """Resolve compound records to PubChem CIDs, recording how.

    Parameters
    ----------
    records
        One row per compound record, with any of the columns ``dataset``,
        ``source_id``, ``name``, ``smiles``, ``inchikey``, ``catalog_id``
        (missing columns and missing values are allowed). ``catalog_id`` may
        hold several IDs joined by ``|`` or ``;``. An optional ``pubchem_cid``
        column holds CIDs the source ships (the ``source_cid`` method).
    reference
        The known compounds (:class:`CompoundReference`).
    manual
        Per-dataset manual fallbacks, ``{dataset: {source_id or name: cid}}``;
        the table under ``"*"`` applies to every dataset. Keys are compared
        with the record's ``source_id`` exactly, then with its name
        normalized as in :func:`normalize_name`.
    pubchem
        Optional :class:`cpb_resources.pubchem.PubChemClient` (anything with
        ``cids_by_inchikey`` and ``cids_by_name``), asked after the local
        reference and before the manual table. An ``OfflineError`` (offline
        cache miss) counts as no answer; PubChem's first CID is taken.

    Returns
    -------
    pandas.DataFrame
        The records (same index, order and columns) plus ``pubchem_cid`` (str
        or None), ``parent_smiles``, ``parent_inchikey`` (from the record's
        SMILES; for a record without usable SMILES, the resolved reference
        compound's), ``cid_method`` (see the module docstring),
        ``source_cid`` (the CID the source shipped, normalized; None when it
        shipped none) and ``source_cid_check``. Every record is kept;
        unresolved ones have ``cid_method == 'unresolved'``.
    """
    out = records.copy()
    shipped = (out["pubchem_cid"] if "pubchem_cid" in out.columns else pd.Series(None, index=out.index))
    source_cid = np.array([_source_cid(v) for v in shipped.astype(object)], dtype=object)
    out = out.drop(columns=[c for c in ("pubchem_cid",) if c in out.columns])
    for col in RECORD_COLUMNS:
        if col not in out.columns:
            out[col] = None
    n = len(out)
    # standardize each distinct SMILES once
    smiles = out["smiles"].astype(object).to_numpy()
    cache = {s: standardize_parent(s) for s in pd.unique(pd.Series(smiles, dtype=object).dropna())}
    std = [cache.get(s) if not _missing(s) else None for s in smiles]
    parent_smiles = np.array([t[0] if t else None for t in std], dtype=object)
    parent_key = np.array([t[1] if t else None for t in std], dtype=object)
    given_key = np.array([_given_inchikey(v) for v in out["inchikey"].astype(object)], dtype=object)

    cid = np.full(n, None, dtype=object)
    method = np.full(n, "unresolved", dtype=object)

    def attempt(label: str, keys: Iterable[Any], kind: str) -> None:
        for i, key in enumerate(keys):
            if cid[i] is None and key is not None:
                hit = reference.lookup(kind, key)
                if hit is not None:
                    cid[i], method[i] = hit, label

    attempt("inchikey", parent_key, "inchikey")
    attempt("inchikey", given_key, "inchikey")  # the source's own key: salt forms, no SMILES
    attempt("smiles", parent_smiles, "smiles")
    check = _cross_check(source_cid, cid, parent_key, given_key, reference)
    for i in range(n):
        if cid[i] is None and source_cid[i] is not None and check[i] != "mismatch":
            cid[i], method[i] = source_cid[i], "source_cid"
    for col in ("catalog_id", "source_id"):
        ids = [_split_ids(v) for v in out[col].astype(object)]
        for i, options in enumerate(ids):
            if cid[i] is None:
                hits = {h for h in (reference.lookup("catalog_id", o) for o in options) if h is not None}
                if len(hits) == 1:
                    cid[i], method[i] = hits.pop(), "catalog_id"
    attempt("name", out["name"].astype(object).to_numpy(), "name")

    if pubchem is not None:
        _pubchem_step(pubchem, cid, method, [k or g for k, g in zip(parent_key, given_key)],
                      out["name"].astype(object).to_numpy())

    if manual:
        for i, (ds, sid, nm) in enumerate(zip(out["dataset"], out["source_id"], out["name"])):
            if cid[i] is None:
                hit = _manual_lookup(manual, ds, sid, nm)
                if hit is not None:
                    cid[i], method[i] = hit, "manual"

    # records without a usable structure borrow the resolved compound's parent
    for i in range(n):
        if parent_smiles[i] is None and cid[i] is not None:
            ps, pk = reference.parent_of(cid[i])
            parent_smiles[i], parent_key[i] = ps, pk
    out["pubchem_cid"] = pd.Series(cid, index=out.index, dtype=object)
    out["parent_smiles"] = pd.Series(parent_smiles, index=out.index, dtype=object)
    out["parent_inchikey"] = pd.Series(parent_key, index=out.index, dtype=object)
    out["cid_method"] = pd.Series(method, index=out.index, dtype=object)
    out["source_cid"] = pd.Series(source_cid, index=out.index, dtype=object)
    out["source_cid_check"] = pd.Series(check, index=out.index, dtype=object)
    return out


def _source_cid(value: Any) -> str | None:
    """A shipped CID as digits ('2244', 2244.0 → '2244'); '-666', 0 and junk → None."""
    c = _cid_str(value)
    return c if c is not None and c.isdigit() and int(c) > 0 else None


def _cross_check(source_cid: np.ndarray, cid: np.ndarray, parent_key: np.ndarray, given_key: np.ndarray,
                 reference: CompoundReference) -> np.ndarray:
    """Per record: does the shipped CID name the record's structure?

    ``agrees``: the structure resolved to that CID, or the reference's parent
    InChIKey of that CID equals the record's; ``mismatch``: either differs;
    ``unchecked``: no structure, or neither is known to the reference;
    None: the source shipped no CID.
    """
    out = np.full(len(source_cid), None, dtype=object)
    for i, sc in enumerate(source_cid):
        if sc is None:
            continue
        key = parent_key[i] or given_key[i]
        if cid[i] is not None:
            if cid[i] == sc:
                out[i] = "agrees"
            else:  # a salt-form CID with the same parent still agrees
                _, ref_key = reference.parent_of(sc)
                out[i] = "agrees" if ref_key is not None and ref_key == key else "mismatch"
        elif key is not None and sc in reference:
            _, ref_key = reference.parent_of(sc)
            out[i] = "agrees" if ref_key == key else "mismatch"
        else:
            out[i] = "unchecked"
    return out


def registry_reference(path: str | Path, demo_seed: int | None = None) -> CompoundReference:
    """The offline reference of the compound registry: a PubChem table, plus (for the demo profile,
    `demo_seed` set) the demo world's invented SYNTHETIC names and catalog IDs as synonyms of its real
    compounds, as PubChem's synonym table would hold them."""
    ref = CompoundReference.from_pubchem_sample(path)
    if demo_seed is not None:
        from cpb_assets.demo.world import build_world
        for r in build_world(demo_seed).compounds.itertuples():
            ref.add_names(r.pubchem_cid, [r.name])
            ref.add_catalog_ids(r.pubchem_cid, [r.brd_id, r.catalog_id])
    return ref


def _pubchem_step(client: Any, cid: np.ndarray, method: np.ndarray, keys: list, names: np.ndarray) -> None:
    from cpb_resources.pubchem import OfflineError

    def ask(fn, query):
        try:
            found = fn(query)
        except OfflineError:
            return None
        return str(found[0]) if found else None

    for i in range(len(cid)):
        if cid[i] is None and keys[i] is not None:
            hit = ask(client.cids_by_inchikey, keys[i])
            if hit is not None:
                cid[i], method[i] = hit, "pubchem_inchikey"
        if cid[i] is None and not _missing(names[i]):
            hit = ask(client.cids_by_name, str(names[i]).strip())
            if hit is not None:
                cid[i], method[i] = hit, "pubchem_name"


def method_counts(resolved: pd.DataFrame) -> pd.DataFrame:
    """Summary of a resolution: counts per ``cid_method`` (all methods listed, zeros included)."""
    counts = resolved["cid_method"].value_counts()
    return pd.DataFrame({"cid_method": METHODS, "n": [int(counts.get(m, 0)) for m in METHODS]})


def compound_coverage(resolved: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, how its compounds were resolved (the ``compound_coverage`` catalog view).

    Returns
    -------
    pandas.DataFrame
        One row per (dataset, method of :data:`METHODS`, zeros included):
        ``dataset, cid_method, n_compounds, fraction`` (of the dataset's
        records) and ``source_cid_mismatches`` (records of that method whose
        shipped CID contradicts their structure).
    """
    cols = ["dataset", "cid_method", "n_compounds", "fraction", "source_cid_mismatches"]
    if resolved.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    mismatch = (resolved["source_cid_check"] == "mismatch") if "source_cid_check" in resolved else \
        pd.Series(False, index=resolved.index)
    for ds, grp in resolved.groupby("dataset", sort=True):
        counts = grp["cid_method"].value_counts()
        mm = mismatch[grp.index].groupby(grp["cid_method"]).sum()
        for m in METHODS:
            rows.append((str(ds), m, int(counts.get(m, 0)), float(counts.get(m, 0)) / len(grp), int(mm.get(m, 0))))
    return pd.DataFrame(rows, columns=cols)
