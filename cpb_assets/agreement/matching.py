"""Two-stage cross-dataset condition matching (METHODS §4, paper §5.2 and Appendix C.1).

A *condition row* is one non-control group DE contrast: (dataset, stratum, contrast_id) with its
PubChem CID, cell_type, time (h) and dose (µM). Two rows of different datasets are candidates when
CID, cell_type and the time key agree; doses are then paired by mutual nearest neighbours on the
fold ratio ``max(a/b, b/a)``.

Stage 1 builds every raw MNN edge of every dataset pair at once and suppresses L1000 Phase I–Phase II
edges whose cell_type and CID both occur in no edge of another dataset pair. Stage 2 re-runs MNN
within the rows that kept at least one stage-1 edge and keeps a (dataset pair, cell_type, time)
stratum only with at least ``MIN_STRATUM_CIDS`` distinct matched CIDs.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

FOLD_TOL = 1e-12  # ties of the fold ratio within this are all nearest
MAX_FOLD = 10.0  # a dose pair further apart than 10-fold is never a match
MIN_STRATUM_CIDS = 10
L1000_PHASES = ("l1000_phase1", "l1000_phase2")
MISSING_CID = {"", "nan", "none", "<na>", "null"}
KEYS = ["pubchem_cid", "cell_type", "time_key"]
CONDITION_COLUMNS = ["dataset", "stratum", "contrast_id", "pubchem_cid", "cell_type", "time_h", "dose_uM",
                     "time_key", "dose_key", "row_id"]
EDGE_COLUMNS = ["dataset_a", "dataset_b", "row_a", "row_b", "stratum_a", "stratum_b", "contrast_a", "contrast_b",
                "pubchem_cid", "cell_type", "time_h", "time_key", "dose_a", "dose_b", "dose_key_a", "dose_key_b",
                "fold"]
_INTEGER_TEXT = re.compile(r"^\+?(\d+)(\.0*)?$")


def normalise_cid(value) -> str | None:
    """A PubChem CID as a canonical string ("2244.0" → "2244"); None when missing.

    "", "nan", "none", "<na>" (any case) and non-finite floats are missing. Integral numbers lose
    their decimal part; any other text is kept as written (stripped).
    """
    if value is None:
        return None
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return None
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    text = str(value).strip()
    if text.lower() in MISSING_CID:
        return None
    m = _INTEGER_TEXT.match(text)
    if m:
        return str(int(m.group(1)))
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if np.isfinite(number) and number.is_integer() else text


def number_key(value: float) -> str:
    """The ``%.12g`` key of a time (h) or dose (µM)."""
    return "%.12g" % float(value)


def _normalise_series(values: pd.Series) -> pd.Series:
    uniq = pd.unique(values.astype(object))
    table = {u: normalise_cid(u) for u in uniq if not (isinstance(u, float) and np.isnan(u))}
    return values.astype(object).map(lambda v: table.get(v) if v == v else None)


def condition_rows(de: pd.DataFrame, dataset: str | None = None) -> pd.DataFrame:
    """Eligible condition rows (one per contrast) of group DE rows.

    Eligible: CID present, non-empty cell_type, finite time, dose > 0 (DE rows are treated − control
    contrasts, so none is a control). ``row_id`` is ``dataset|stratum|contrast_id``.

    Parameters
    ----------
    de
        DE rows (any number of genes per contrast) or one row per contrast; columns stratum,
        contrast_id, pubchem_cid, cell_type, time_h (h), dose_uM (µM) and dataset unless given.
    """
    cols = ["stratum", "contrast_id", "pubchem_cid", "cell_type", "time_h", "dose_uM"]
    if dataset is None:
        cols = ["dataset", *cols]
    if de.empty:
        return pd.DataFrame({c: pd.Series(dtype=float if c in ("time_h", "dose_uM") else object)
                             for c in CONDITION_COLUMNS})
    rows = de[cols].drop_duplicates(["dataset", "stratum", "contrast_id"] if dataset is None
                                    else ["stratum", "contrast_id"]).copy()
    if dataset is not None:
        rows.insert(0, "dataset", dataset)
    rows["pubchem_cid"] = _normalise_series(rows["pubchem_cid"])
    rows["cell_type"] = rows["cell_type"].astype(object).where(rows["cell_type"].notna(), "").astype(str).str.strip()
    rows["time_h"] = pd.to_numeric(rows["time_h"], errors="coerce")
    rows["dose_uM"] = pd.to_numeric(rows["dose_uM"], errors="coerce")
    ok = (rows["pubchem_cid"].notna() & (rows["cell_type"] != "") & ~rows["cell_type"].str.lower().isin(
        ["nan", "none", "<na>"]) & np.isfinite(rows["time_h"]) & (rows["dose_uM"] > 0))
    rows = rows.loc[ok].copy()
    rows["time_key"] = rows["time_h"].map(number_key)
    rows["dose_key"] = rows["dose_uM"].map(number_key)
    rows["row_id"] = (rows["dataset"].astype(str) + "|" + rows["stratum"].astype(str) + "|"
                      + rows["contrast_id"].astype(str))
    return rows[CONDITION_COLUMNS].reset_index(drop=True)


def mnn_edges(rows: pd.DataFrame) -> pd.DataFrame:
    """All mutual-nearest-neighbour dose edges between every two datasets in ``rows``.

    A candidate pair shares (CID, cell_type, time key) and comes from datasets ``a < b``. Within each
    dataset pair it is kept when its fold ratio max(a/b, b/a) (on the ``%.12g`` doses) is within
    ``FOLD_TOL`` of the smallest fold of both of its rows and at most ``MAX_FOLD + FOLD_TOL``.

    Returns
    -------
    One row per edge (columns ``EDGE_COLUMNS``), sorted by dataset pair, cell_type, time, CID, rows.
    """
    if rows.empty:
        return pd.DataFrame({c: pd.Series(dtype=float if c in ("time_h", "dose_a", "dose_b", "fold") else object)
                             for c in EDGE_COLUMNS})
    left = rows.rename(columns={"dataset": "dataset_a", "row_id": "row_a", "stratum": "stratum_a",
                                "contrast_id": "contrast_a", "dose_key": "dose_key_a"})
    right = rows.rename(columns={"dataset": "dataset_b", "row_id": "row_b", "stratum": "stratum_b",
                                 "contrast_id": "contrast_b", "dose_key": "dose_key_b"})
    m = left.drop(columns=["dose_uM"]).merge(right.drop(columns=["dose_uM", "time_h"]), on=KEYS)
    m = m.loc[m["dataset_a"] < m["dataset_b"]].copy()
    if m.empty:
        return mnn_edges(rows.iloc[:0])
    # doses as their keys, so equal keys are equal doses
    m["dose_a"] = m["dose_key_a"].astype(float)
    m["dose_b"] = m["dose_key_b"].astype(float)
    m["fold"] = np.maximum(m["dose_a"] / m["dose_b"], m["dose_b"] / m["dose_a"])
    best_a = m.groupby(["row_a", "dataset_b"], sort=False)["fold"].transform("min")
    best_b = m.groupby(["row_b", "dataset_a"], sort=False)["fold"].transform("min")
    keep = (m["fold"] <= best_a + FOLD_TOL) & (m["fold"] <= best_b + FOLD_TOL) & (m["fold"] <= MAX_FOLD + FOLD_TOL)
    out = m.loc[keep, EDGE_COLUMNS]
    return out.sort_values(["dataset_a", "dataset_b", "cell_type", "time_key", "pubchem_cid", "row_a", "row_b"],
                           kind="stable", ignore_index=True)


def suppress_l1000_phases(edges: pd.DataFrame) -> pd.Series:
    """Stage-1 suppression flag: True for an L1000 Phase I–Phase II edge whose cell_type and CID
    both occur in no edge of any other dataset pair."""
    is_phases = (edges["dataset_a"] == L1000_PHASES[0]) & (edges["dataset_b"] == L1000_PHASES[1])
    other = edges.loc[~is_phases]
    rescued = edges["cell_type"].isin(set(other["cell_type"])) | edges["pubchem_cid"].isin(set(other["pubchem_cid"]))
    return (is_phases & ~rescued).rename("suppressed")


def stage1(rows: pd.DataFrame) -> pd.DataFrame:
    """Stage 1 (overlap build): every raw MNN edge of every dataset pair with its ``suppressed`` flag."""
    edges = mnn_edges(rows)
    edges["suppressed"] = suppress_l1000_phases(edges).to_numpy(dtype=bool)
    return edges


def retained_rows(rows: pd.DataFrame, edges: pd.DataFrame) -> pd.DataFrame:
    """Condition rows with at least one unsuppressed stage-1 edge (the stage-2 and retrieval pool)."""
    kept = edges.loc[~edges["suppressed"].astype(bool)]
    ids = set(kept["row_a"]) | set(kept["row_b"])
    return rows.loc[rows["row_id"].isin(ids)].reset_index(drop=True)


def stage2(retained: pd.DataFrame, dataset_a: str, dataset_b: str,
           min_cids: int = MIN_STRATUM_CIDS) -> pd.DataFrame:
    """Stage 2 for one dataset pair: MNN within the retained rows of the two datasets, then keep the
    (cell_type, time) strata with at least ``min_cids`` distinct matched CIDs.

    Returns the kept edges with ``stratum_n_cids``.
    """
    rows = retained.loc[retained["dataset"].isin([dataset_a, dataset_b])]
    edges = mnn_edges(rows)
    lo, hi = sorted((dataset_a, dataset_b))
    edges = edges.loc[(edges["dataset_a"] == lo) & (edges["dataset_b"] == hi)]
    n_cids = edges.groupby(["cell_type", "time_key"])["pubchem_cid"].transform("nunique")
    edges = edges.assign(stratum_n_cids=n_cids.astype("int64"))
    return edges.loc[edges["stratum_n_cids"] >= min_cids].reset_index(drop=True)


def matched_table(edges1: pd.DataFrame, edges2: pd.DataFrame, dataset_a: str, dataset_b: str) -> pd.DataFrame:
    """The ``matched_conditions`` partition of one pair: its stage-1 edges (stage 1, with the
    suppression flag) followed by its kept stage-2 matches (stage 2, never suppressed)."""
    one = edges1.loc[(edges1["dataset_a"] == dataset_a) & (edges1["dataset_b"] == dataset_b)].assign(
        stage=1, stratum_n_cids=np.nan)
    two = edges2.assign(stage=2, suppressed=False)
    out = pd.concat([one, two], ignore_index=True) if len(one) or len(two) else one.iloc[:0]
    cols = [*EDGE_COLUMNS, "stage", "suppressed", "stratum_n_cids"]
    out = out.reindex(columns=cols)
    out["stage"] = out["stage"].astype("int64")
    out["suppressed"] = out["suppressed"].astype(bool)
    out["stratum_n_cids"] = out["stratum_n_cids"].astype(float)
    return out


def pair_key(a: str, b: str) -> str:
    a, b = sorted((a, b))
    return f"{a}__{b}"


def split_pair(key: str) -> tuple[str, str]:
    a, b = key.split("__")
    return a, b
