"""Cross-dataset and replicate retrieval (METHODS §4, paper §5.3 and Appendix C.8).

A query signature (one condition row of one dataset) ranks every candidate of a target pool by
similarity; the score of the query is the normalized rank of its best positive candidate.

Rank rule (min rank): r = 1 + the number of candidates scoring *strictly* better than the best
positive, so a tie with a negative never costs the positive; normalized rank
1 − (r − 1)/(N − 1) over N candidates (1 = first, 0 = last). Baseline: the query side's
same-context other-compound centroid injected as an extra candidate and ranked the same way among
N + 1 (1 − (r − 1)/N); adjusted = observed − baseline.

Everything for one stratum is array work: one (queries × candidates) similarity matrix per
similarity, positives and admissible candidates as boolean masks of the same shape.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist
from scipy.stats import rankdata

from cpb_assets.agreement.baselines import centroids
from cpb_assets.agreement.matching import FOLD_TOL, MAX_FOLD

SIMILARITIES = ("neg_euclidean", "cosine", "spearman")
POSITIVES = ("strict_matched_condition", "dose_aware_compound", "compound_across_doses")
HEADLINE = ("strict_matched_condition", "spearman")
MIN_POOL_ROWS = 5
MIN_POOL_CIDS = 2
MIN_REPLICATE_STRATUM_CIDS = 10

RETRIEVAL_COLUMNS = ["dataset_a", "dataset_b", "direction", "query_dataset", "target_dataset", "cell_type", "time_h",
                     "query_row", "query_contrast", "pubchem_cid", "dose_uM", "positive", "similarity",
                     "n_candidates", "n_positives", "n_genes", "rank", "observed", "baseline_rank", "baseline",
                     "adjusted"]


# ------------------------------------------------------------------ ranks
def best_positive_rank(scores: np.ndarray, positive: np.ndarray, candidate: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Min rank of each query's best positive among its candidates.

    Parameters
    ----------
    scores : (Q, N) float
        Similarity of query q to candidate n (higher = more similar).
    positive : (Q, N) bool
        Positive candidates of each query.
    candidate : (Q, N) bool, optional
        Admissible candidates (e.g. not the query itself); all when None.

    Returns
    -------
    rank : (Q,) float
        1 + candidates scoring strictly better than the best positive; NaN without a positive.
    n_candidates, n_positives : (Q,) int
    """
    scores = np.asarray(scores, dtype=float)
    cand = np.ones(scores.shape, bool) if candidate is None else np.asarray(candidate, bool)
    pos = np.asarray(positive, bool) & cand
    n_pos = pos.sum(axis=1)
    best = np.where(pos, scores, -np.inf).max(axis=1, initial=-np.inf)
    better = (cand & (scores > best[:, None])).sum(axis=1)
    rank = np.where(n_pos > 0, 1.0 + better, np.nan)
    return rank, cand.sum(axis=1), n_pos


def normalized_rank(rank: np.ndarray, n: np.ndarray) -> np.ndarray:
    """1 − (r − 1)/(n − 1): 1 for the first of n, 0 for the last; NaN when n < 2."""
    rank, n = np.asarray(rank, float), np.asarray(n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n >= 2, 1.0 - (rank - 1.0) / (n - 1.0), np.nan)


def injected_rank(scores: np.ndarray, injected: np.ndarray, candidate: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Rank of an injected extra candidate (the baseline centroid) among N + 1.

    Returns
    -------
    rank : (Q,) 1 + candidates scoring strictly better than the injected score (NaN where it is NaN)
    normalized : (Q,) 1 − (r − 1)/N
    """
    cand = np.ones(scores.shape, bool) if candidate is None else np.asarray(candidate, bool)
    injected = np.asarray(injected, float)
    better = (cand & (scores > injected[:, None])).sum(axis=1)
    rank = np.where(np.isfinite(injected), 1.0 + better, np.nan)
    n = cand.sum(axis=1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(n >= 1, 1.0 - (rank - 1.0) / n, np.nan)
    return rank, norm


# ------------------------------------------------------------------ similarities
def _prepare(x: np.ndarray, kind: str) -> np.ndarray:
    """Row transform of a similarity: ranks (average) for Spearman, the values otherwise."""
    return rankdata(x, axis=1) if kind == "spearman" else x


def valid_rows(x: np.ndarray, kind: str) -> np.ndarray:
    """Rows a similarity can score: finite, and non-zero norm (cosine) / non-constant (Spearman)."""
    ok = np.isfinite(x).all(axis=1) & (x.shape[1] > 0)
    if kind == "cosine":
        ok &= np.linalg.norm(np.nan_to_num(x), axis=1) > 0
    elif kind == "spearman":
        ok &= np.ptp(np.nan_to_num(x), axis=1) > 0
    return ok


def similarity(queries: np.ndarray, targets: np.ndarray, kind: str) -> np.ndarray:
    """(Q, N) similarity: negative Euclidean distance, cosine, or Spearman (Pearson of average ranks)."""
    if kind not in SIMILARITIES:
        raise ValueError(f"unknown similarity {kind!r}; expected one of {SIMILARITIES}")
    if len(queries) == 0 or len(targets) == 0:
        return np.empty((len(queries), len(targets)))
    q, t = _prepare(queries, kind), _prepare(targets, kind)
    if kind == "neg_euclidean":
        return -cdist(q, t, "euclidean")
    return 1.0 - cdist(q, t, "cosine" if kind == "cosine" else "correlation")


def paired_similarity(x: np.ndarray, y: np.ndarray, kind: str) -> np.ndarray:
    """Similarity of row i of x with row i of y (the injected centroid's score); NaN where undefined.

    The same formulas as :func:`similarity`, row by row.
    """
    out = np.full(len(x), np.nan)
    ok = valid_rows(x, kind) & valid_rows(y, kind)
    if not ok.any():
        return out
    a, b = _prepare(x[ok], kind), _prepare(y[ok], kind)
    if kind == "neg_euclidean":
        out[ok] = -np.sqrt(((a - b) ** 2).sum(axis=1))
        return out
    if kind == "spearman":  # Pearson of the ranks = cosine of the centred ranks
        a, b = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    out[ok] = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return out


# ------------------------------------------------------------------ positives
def dose_fold(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """max(a/b, b/a) for every pair of doses (Q × N)."""
    a, b = np.asarray(a, float)[:, None], np.asarray(b, float)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.maximum(a / b, b / a)


def positive_masks(query_cid, query_dose, target_cid, target_dose, strict: np.ndarray) -> dict[str, np.ndarray]:
    """The three positive definitions as (Q, N) masks.

    ``strict`` (the matched partner rows of each query) is given; ``dose_aware_compound`` = same CID
    within 10-fold dose (+1e-12); ``compound_across_doses`` = same CID at any dose.
    """
    same = np.asarray(query_cid, object)[:, None] == np.asarray(target_cid, object)[None, :]
    fold = dose_fold(query_dose, target_dose)
    return {"strict_matched_condition": np.asarray(strict, bool),
            "dose_aware_compound": same & (fold <= MAX_FOLD + FOLD_TOL),
            "compound_across_doses": same}


def partner_mask(query_ids, target_ids, pairs) -> np.ndarray:
    """(Q, N) mask of the (query, target) row-id pairs listed in ``pairs``."""
    mask = np.zeros((len(query_ids), len(target_ids)), dtype=bool)
    if pairs:
        qs, ts = zip(*pairs)
        qi = pd.Index(query_ids).get_indexer(list(qs))
        ti = pd.Index(target_ids).get_indexer(list(ts))
        ok = (qi >= 0) & (ti >= 0)
        mask[qi[ok], ti[ok]] = True
    return mask


# ------------------------------------------------------------------ one stratum
def shared_finite_genes(*pools: np.ndarray) -> np.ndarray:
    """Genes finite in every row of every pool (bool over the gene axis)."""
    keep = None
    for x in pools:
        f = np.isfinite(x).all(axis=0)
        keep = f if keep is None else keep & f
    return keep


def score_queries(q_values: np.ndarray, t_values: np.ndarray, q_centroid: np.ndarray | None,
                  positives: dict[str, np.ndarray], candidate: np.ndarray | None, kind: str,
                  q_cids, t_cids) -> list[dict]:
    """Rank every query of one stratum and direction under one similarity.

    Rows invalid for the similarity are dropped from both sides first; the pools then need
    ≥ 5 rows and ≥ 2 CIDs (else no query is scored); a query needs ≥ 1 positive and ≥ 1 negative
    among its admissible candidates.

    Returns
    -------
    One dict per (scored query, positive definition): query index ``q``, ``positive``, ``rank``,
    ``observed``, ``n_candidates``, ``n_positives``, ``baseline_rank``, ``baseline``.
    """
    qv, tv = valid_rows(q_values, kind), valid_rows(t_values, kind)
    q_cids, t_cids = np.asarray(q_cids, object), np.asarray(t_cids, object)
    if not pool_ok(q_cids[qv]) or not pool_ok(t_cids[tv]):
        return []
    qi, ti = np.flatnonzero(qv), np.flatnonzero(tv)
    scores = similarity(q_values[qi], t_values[ti], kind)
    cand = np.ones(scores.shape, bool) if candidate is None else np.asarray(candidate, bool)[np.ix_(qi, ti)]
    inj = (paired_similarity(q_values[qi], q_centroid[qi], kind) if q_centroid is not None
           else np.full(len(qi), np.nan))
    b_rank, b_norm = injected_rank(scores, inj, cand)
    out = []
    for name, mask in positives.items():
        pos = np.asarray(mask, bool)[np.ix_(qi, ti)] & cand
        rank, n_cand, n_pos = best_positive_rank(scores, pos, cand)
        keep = (n_pos >= 1) & (n_cand - n_pos >= 1)
        obs = normalized_rank(rank, n_cand)
        for j in np.flatnonzero(keep):
            out.append({"q": int(qi[j]), "positive": name, "rank": float(rank[j]), "observed": float(obs[j]),
                        "n_candidates": int(n_cand[j]), "n_positives": int(n_pos[j]),
                        "baseline_rank": float(b_rank[j]), "baseline": float(b_norm[j])})
    return out


def pool_ok(cids) -> bool:
    """A pool is usable with ≥ 5 rows and ≥ 2 distinct CIDs."""
    return len(cids) >= MIN_POOL_ROWS and len(set(cids)) >= MIN_POOL_CIDS


def _finish(records: list[dict], meta: pd.DataFrame, extra: dict) -> pd.DataFrame:
    if not records:
        return pd.DataFrame(columns=RETRIEVAL_COLUMNS)
    df = pd.DataFrame(records)
    m = meta.iloc[df["q"].to_numpy()].reset_index(drop=True)
    df = pd.concat([m, df.drop(columns=["q"]).reset_index(drop=True)], axis=1)
    for k, v in extra.items():
        df[k] = v
    df["adjusted"] = np.where(np.isfinite(df["observed"]) & np.isfinite(df["baseline"]),
                              df["observed"] - df["baseline"], np.nan)
    return df


def cross_dataset_retrieval(pool_a: pd.DataFrame, x_a: np.ndarray, centroid_a: np.ndarray,
                            pool_b: pd.DataFrame, x_b: np.ndarray, centroid_b: np.ndarray,
                            partners: set[tuple[str, str]], dataset_a: str, dataset_b: str,
                            similarities=SIMILARITIES) -> pd.DataFrame:
    """Retrieval in one (dataset pair, cell_type, time) stratum, both directions.

    Parameters
    ----------
    pool_a, pool_b : DataFrame
        The retained (stage-1) non-control rows of each dataset in the context: row_id, contrast_id,
        pubchem_cid, dose_uM (µM), cell_type, time_h (h).
    x_a, x_b : (rows, G) float
        Their logFC vectors on one gene axis (NaN where absent).
    centroid_a, centroid_b : (rows, G) float
        Each row's same-context other-compound centroid (NaN-propagating).
    partners : set of (row_id_a, row_id_b)
        The stratum's stage-2 matched pairs (the strict positives).

    Returns
    -------
    One row per query × positive definition × similarity (``RETRIEVAL_COLUMNS``).
    """
    if len(pool_a) == 0 or len(pool_b) == 0:
        return pd.DataFrame(columns=RETRIEVAL_COLUMNS)
    genes = shared_finite_genes(x_a, x_b)
    xa, xb = x_a[:, genes], x_b[:, genes]
    ca, cb = centroid_a[:, genes], centroid_b[:, genes]
    frames = []
    for direction, (qp, qx, qc, qds, tp, tx, tds) in {
            "a_to_b": (pool_a, xa, ca, dataset_a, pool_b, xb, dataset_b),
            "b_to_a": (pool_b, xb, cb, dataset_b, pool_a, xa, dataset_a)}.items():
        pairs = partners if direction == "a_to_b" else {(b, a) for a, b in partners}
        qid, tid = qp["row_id"].to_numpy(object), tp["row_id"].to_numpy(object)
        strict = partner_mask(qid, tid, pairs)
        pos = positive_masks(qp["pubchem_cid"], qp["dose_uM"], tp["pubchem_cid"], tp["dose_uM"], strict)
        meta = pd.DataFrame({"query_row": qid, "query_contrast": qp["contrast_id"].to_numpy(object),
                             "pubchem_cid": qp["pubchem_cid"].to_numpy(object),
                             "dose_uM": qp["dose_uM"].to_numpy(float),
                             "cell_type": qp["cell_type"].to_numpy(object), "time_h": qp["time_h"].to_numpy(float)})
        for kind in similarities:
            rec = score_queries(qx, tx, qc, pos, None, kind, qp["pubchem_cid"], tp["pubchem_cid"])
            frames.append(_finish(rec, meta, {"dataset_a": dataset_a, "dataset_b": dataset_b,
                                              "direction": direction, "query_dataset": qds, "target_dataset": tds,
                                              "similarity": kind, "n_genes": int(genes.sum())}))
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=RETRIEVAL_COLUMNS)
    return pd.concat(frames, ignore_index=True)[RETRIEVAL_COLUMNS]


def replicate_retrieval(rows: pd.DataFrame, x: np.ndarray, centroid: np.ndarray, dataset: str,
                        similarities=SIMILARITIES) -> pd.DataFrame:
    """Replicate retrieval in one (cell_type, time) stratum of one dataset's ``sep`` rows.

    Queries and candidates are the same replicate rows; a query never retrieves itself. Strict
    positives are the other replicates of the query's condition (cell_type, CID, time, dose).
    The stratum needs ≥ 10 distinct CIDs (else an empty table).

    Parameters
    ----------
    rows : DataFrame
        row_id, contrast_id, pubchem_cid, dose_uM, cell_type, time_h, condition (hashable key).
    x, centroid : (rows, G) float
        logFC vectors and their same-context other-compound centroids (NaN-skipping).
    """
    if rows["pubchem_cid"].nunique() < MIN_REPLICATE_STRATUM_CIDS:
        return pd.DataFrame(columns=RETRIEVAL_COLUMNS)
    genes = shared_finite_genes(x)
    xv, cv = x[:, genes], centroid[:, genes]
    cond = rows["condition"].to_numpy(object)
    strict = cond[:, None] == cond[None, :]
    pos = positive_masks(rows["pubchem_cid"], rows["dose_uM"], rows["pubchem_cid"], rows["dose_uM"], strict)
    not_self = ~np.eye(len(rows), dtype=bool)
    meta = pd.DataFrame({"query_row": rows["row_id"].to_numpy(object),
                         "query_contrast": rows["contrast_id"].to_numpy(object),
                         "pubchem_cid": rows["pubchem_cid"].to_numpy(object), "dose_uM": rows["dose_uM"].to_numpy(float),
                         "cell_type": rows["cell_type"].to_numpy(object), "time_h": rows["time_h"].to_numpy(float)})
    frames = []
    for kind in similarities:
        rec = score_queries(xv, xv, cv, pos, not_self, kind, rows["pubchem_cid"], rows["pubchem_cid"])
        frames.append(_finish(rec, meta, {"dataset_a": dataset, "dataset_b": dataset, "direction": "within",
                                          "query_dataset": dataset, "target_dataset": dataset, "similarity": kind,
                                          "n_genes": int(genes.sum())}))
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=RETRIEVAL_COLUMNS)
    return pd.concat(frames, ignore_index=True)[RETRIEVAL_COLUMNS]


def context_centroids(values: np.ndarray, rows: pd.DataFrame, skip_nan: bool) -> np.ndarray:
    """Same (cell_type, time key, dose key) other-CID centroid of every row (baselines.centroids)."""
    context = (rows["cell_type"].astype(str) + "\t" + rows["time_key"].astype(str) + "\t"
               + rows["dose_key"].astype(str)).to_numpy(object)
    return centroids(values, context, rows["pubchem_cid"].to_numpy(object), skip_nan=skip_nan)


def check_columns(df: pd.DataFrame) -> list[str]:
    """Schema problems of a retrieval table (empty list: none)."""
    return [f"missing column {c}" for c in RETRIEVAL_COLUMNS if c not in df.columns]


def summarize(retrieval: pd.DataFrame, keys=("dataset_a", "dataset_b", "positive", "similarity")) -> pd.DataFrame:
    """Nested mean of observed / baseline / adjusted: queries → (direction, cell_type, time) → direction → mean."""
    if retrieval.empty:
        return pd.DataFrame(columns=[*keys, "observed", "baseline", "adjusted", "n_queries", "n_compounds"])
    keys = list(keys)
    inner = retrieval.groupby([*keys, "direction", "cell_type", "time_h"])[["observed", "baseline", "adjusted"]].mean()
    outer = inner.groupby(level=list(range(len(keys) + 1))).mean()
    out = outer.groupby(level=list(range(len(keys)))).mean()
    g = retrieval.groupby(keys)
    out["n_queries"] = g.size()
    out["n_compounds"] = g["pubchem_cid"].nunique()
    return out.reset_index()


# ------------------------------------------------------------------ one dataset pair (workload)
def _stratum_matrix(de: pd.DataFrame, rows: pd.DataFrame, genes: pd.Index) -> np.ndarray:
    """(rows × genes) logFC of the given condition rows (NaN where absent)."""
    x = np.full((len(rows), len(genes)), np.nan)
    if len(rows) and len(de):
        rid = rows["dataset"].iloc[0] + "|" + de["stratum"].astype(str) + "|" + de["contrast_id"].astype(str)
        r = pd.Index(rows["row_id"]).get_indexer(rid)
        g = genes.get_indexer(de["gene"])
        ok = (r >= 0) & (g >= 0)
        x[r[ok], g[ok]] = pd.to_numeric(de["logFC"], errors="coerce").to_numpy(float)[ok]
    return x


def pair_retrieval(matched: pd.DataFrame, match_rows: pd.DataFrame, de_a: pd.DataFrame, de_b: pd.DataFrame,
                   dataset_a: str, dataset_b: str) -> pd.DataFrame:
    """Retrieval of one dataset pair over its stage-2 (cell_type, time) strata.

    Parameters
    ----------
    matched : DataFrame
        The pair's ``matched_conditions`` rows (stage 2 gives the strata and the strict partners).
    match_rows : DataFrame
        Stage-1 condition rows of the two datasets with ``retained`` (view ``match_rows``).
    de_a, de_b : DataFrame
        Group DE rows of the two datasets (at least every row of the strata's cell types).
    """
    from cpb_assets.agreement.matching import condition_rows

    two = matched.loc[matched["stage"] == 2]
    if two.empty:
        return pd.DataFrame(columns=RETRIEVAL_COLUMNS)
    out = []
    strata = sorted(set(zip(two["cell_type"], two["time_key"])))
    parts = {}  # dataset -> {(cell_type, time key): (context rows, their DE rows)}
    for ds, de in ((dataset_a, de_a), (dataset_b, de_b)):
        rows = condition_rows(de, ds)
        keys = pd.Series(list(zip(rows["cell_type"], rows["time_key"])), index=rows.index, dtype=object)
        rows, keys = rows.loc[keys.isin(strata)], keys.loc[keys.isin(strata)]
        # one pass over the long DE table: each DE row's stratum key via its condition row
        rid = ds + "|" + de["stratum"].astype(str) + "|" + de["contrast_id"].astype(str)
        de_key = rid.map(pd.Series(keys.to_numpy(), index=rows["row_id"].to_numpy()))
        has = de_key.notna().to_numpy()
        de_parts = dict(iter(de.loc[has].groupby(de_key.loc[has].to_numpy(), sort=False)))
        parts[ds] = {k: (g.reset_index(drop=True), de_parts.get(k, de.iloc[:0]))
                     for k, g in rows.groupby(keys.to_numpy(), sort=False)}
    for (cell, tkey), part in two.groupby(["cell_type", "time_key"], sort=True):
        sides = {}
        for ds in (dataset_a, dataset_b):
            ctx, sub = parts[ds].get((cell, tkey), (condition_rows(pd.DataFrame(), ds), de_a.iloc[:0]))
            genes = pd.Index(sorted(sub["gene"].unique()))
            x = _stratum_matrix(sub, ctx, genes)
            cent = context_centroids(x, ctx, skip_nan=False)  # over every valid row of the context
            kept = set(match_rows.loc[(match_rows["dataset"] == ds) & match_rows["retained"].astype(bool),
                                      "row_id"])
            pool = ctx["row_id"].isin(kept).to_numpy()
            sides[ds] = (ctx.loc[pool].reset_index(drop=True), x[pool], cent[pool], genes)
        (pa, xa, ca, ga), (pb, xb, cb, gb) = sides[dataset_a], sides[dataset_b]
        genes = ga.intersection(gb)
        ia, ib = ga.get_indexer(genes), gb.get_indexer(genes)
        partners = set(zip(part["row_a"], part["row_b"]))
        out.append(cross_dataset_retrieval(pa, xa[:, ia], ca[:, ia], pb, xb[:, ib], cb[:, ib], partners,
                                           dataset_a, dataset_b))
    out = [o for o in out if len(o)]
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=RETRIEVAL_COLUMNS)


def score_pair_retrieval(params: dict) -> dict:
    """Retrieval of one dataset pair (compute-resource workload).

    Parameters (JSON)
    -----------------
    matched, match_rows
        Absolute paths of the pair's ``matched_conditions`` file and of the ``match_rows`` table.
    de_a, de_b
        Absolute folders of the two datasets' group DE Parquet files.
    dataset_a, dataset_b, out
        The pair and the output path (written atomically).
    """
    from cpb_assets.agreement.bootstrap import typed_frame
    from cpb_assets.agreement.workloads import read_group_de
    from cpb_resources.storage import write_parquet

    matched = pd.read_parquet(params["matched"])
    a, b = params["dataset_a"], params["dataset_b"]
    cells = set(matched.loc[matched["stage"] == 2, "cell_type"])
    rows = pd.read_parquet(params["match_rows"], filters=[("dataset", "in", [a, b])])
    de_a = read_group_de(params["de_a"], cells) if cells else None
    de_b = read_group_de(params["de_b"], cells) if cells else None
    out = pair_retrieval(matched, rows, de_a, de_b, a, b) if cells else pd.DataFrame(columns=RETRIEVAL_COLUMNS)
    write_parquet(typed_frame(out), params["out"])
    return {"outputs": [params["out"]], "metadata": {"retrieval_rows": int(len(out))}}
