"""Within-dataset replicate agreement from ``sep`` DE rows (METHODS §4, paper Appendix C.5–C.6, C.10).

A *condition* is (cell_type, CID, time key, dose key); its replicates are its ``sep`` contrasts
(one per well × plate). The minimum pseudobulk cell counts (Tahoe 50, sci-Plex 10, OP3 10) are
applied where the samples are formed, in the DE layer (``cpb_assets.effects.strata.MIN_CELLS``),
so every sep row read here already meets them.

Pairs: n = 2 replicates → the one pair; n > 2 → the cyclic pairs (i, i + 1 mod n) after sorting
the replicates by source file (the DE stratum) and row (contrast id). Every metric of the registry
scores each pair (top-k with k_eff = min(k, n)); baselines use the NaN-skipping same-context
other-compound centroid. A condition's observed / baseline / adjusted value is the mean over its
pairs (NaN pairs skipped; NaN when none is finite).

Replicate retrieval: per (cell_type, time) stratum with ≥ 10 CIDs, every replicate row queries the
other rows of the stratum (never itself); strict positives are the other replicates of its
condition.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads

from cpb_assets.agreement import retrieval
from cpb_assets.agreement.baselines import adjusted, baseline_scores, centroid_signatures, pair_baseline
from cpb_assets.agreement.bootstrap import typed_frame
from cpb_assets.agreement.matching import condition_rows
from cpb_assets.agreement.metrics import Signatures, metric_variants, score_all
from cpb_resources.storage import write_parquet

log = logging.getLogger(__name__)

MIN_REPLICATES = 2
CONDITION_KEYS = ["cell_type", "pubchem_cid", "time_key", "dose_key"]
SEP_READ_COLUMNS = ["stratum", "contrast_id", "cell_type", "pubchem_cid", "dose_uM", "time_h", "gene", "logFC", "t",
                    "adj_P_within"]
REPLICATE_COLUMNS = ["dataset", "cell_type", "pubchem_cid", "time_h", "dose_uM", "n_replicates", "n_pairs",
                     "metric", "variant", "observed", "baseline", "adjusted"]


def cyclic_pairs(n: int) -> list[tuple[int, int]]:
    """Replicate pairs of a condition with n replicates: (0, 1) for n = 2, else (i, i + 1 mod n)."""
    if n < MIN_REPLICATES:
        return []
    if n == 2:
        return [(0, 1)]
    return [(i, (i + 1) % n) for i in range(n)]


def replicate_pairs(rows: pd.DataFrame) -> pd.DataFrame:
    """Pairs of row positions of every condition with ≥ 2 replicates.

    Parameters
    ----------
    rows : DataFrame
        Eligible sep condition rows (``matching.condition_rows``), in any order.

    Returns
    -------
    DataFrame with ``i``, ``j`` (positions in ``rows``), ``condition`` (a running number) and
    ``n_replicates``; replicates are ordered by (stratum, contrast_id) before pairing.
    """
    order = rows.reset_index(drop=True).assign(_pos=np.arange(len(rows)))
    order = order.sort_values(["stratum", "contrast_id"], kind="stable")
    out = []
    for c, (_, grp) in enumerate(order.groupby(CONDITION_KEYS, sort=True)):
        pos = grp["_pos"].to_numpy()
        for a, b in cyclic_pairs(len(pos)):
            out.append((pos[a], pos[b], c, len(pos)))
    return pd.DataFrame(out, columns=["i", "j", "condition", "n_replicates"]).astype("int64")


def block_matrix(de: pd.DataFrame, rows: pd.DataFrame, dataset: str) -> tuple[Signatures, pd.Index]:
    """(rows × genes) logFC, t and adj P of the given condition rows (NaN where a gene is absent)."""
    genes = pd.Index(sorted(de["gene"].unique()))
    index = pd.Index(rows["row_id"])
    shape = (len(rows), len(genes))
    lfc, t, p = (np.full(shape, np.nan) for _ in range(3))
    rid = dataset + "|" + de["stratum"].astype(str) + "|" + de["contrast_id"].astype(str)
    r, g = index.get_indexer(rid), genes.get_indexer(de["gene"])
    ok = (r >= 0) & (g >= 0)
    for arr, col in ((lfc, "logFC"), (t, "t"), (p, "adj_P_within")):
        arr[r[ok], g[ok]] = pd.to_numeric(de[col], errors="coerce").to_numpy(float)[ok]
    return Signatures(lfc, t, p), genes


def _condition_means(frame: pd.DataFrame) -> pd.DataFrame:
    keys = ["condition", "metric", "variant"]
    g = frame.groupby(keys, sort=False)
    out = g[["observed", "baseline", "adjusted"]].mean()  # pandas skips NaN pairs
    out["n_pairs"] = g.size()
    return out.reset_index()


def score_block(de: pd.DataFrame, rows: pd.DataFrame, dataset: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Replicate agreement and replicate retrieval of one (cell_type, time) block of sep rows.

    Returns
    -------
    (conditions, retrieval): one row per condition × metric × variant (``REPLICATE_COLUMNS``), and
    one row per query × positive × similarity (``retrieval.RETRIEVAL_COLUMNS``).
    """
    rows = rows.reset_index(drop=True)
    sig, _ = block_matrix(de, rows, dataset)
    context = (rows["cell_type"] + "\t" + rows["time_key"] + "\t" + rows["dose_key"]).to_numpy(object)
    cent = centroid_signatures(sig, context, rows["pubchem_cid"].to_numpy(object), skip_nan=True)
    pairs = replicate_pairs(rows)
    conditions = pd.DataFrame(columns=REPLICATE_COLUMNS)
    if len(pairs):
        i, j = pairs["i"].to_numpy(), pairs["j"].to_numpy()
        left, right = sig.take(i), sig.take(j)
        obs = score_all(left, right, k_rule="full")
        base = baseline_scores(left, right, cent.take(i), cent.take(j), k_rule="full")
        frames = []
        for key in metric_variants():
            b = pair_baseline(*base[key])
            frames.append(pd.DataFrame({"condition": pairs["condition"], "metric": key[0], "variant": key[1],
                                        "observed": obs[key], "baseline": b, "adjusted": adjusted(obs[key], b)}))
        means = _condition_means(pd.concat(frames, ignore_index=True))
        first = pairs.drop_duplicates("condition").set_index("condition")
        meta = rows.iloc[first["i"].to_numpy()][["cell_type", "pubchem_cid", "time_h", "dose_uM"]]
        meta = meta.assign(condition=first.index.to_numpy(), n_replicates=first["n_replicates"].to_numpy())
        conditions = means.merge(meta, on="condition").assign(dataset=dataset)[REPLICATE_COLUMNS]
    rrows = rows.assign(condition=list(zip(*(rows[k] for k in CONDITION_KEYS))))
    ret = retrieval.replicate_retrieval(rrows, sig.logfc, cent.logfc, dataset)
    return conditions, ret


def read_sep_de(folder: str | Path) -> pd.DataFrame:
    """The sep DE rows of one dataset (only the columns replicate scoring reads)."""
    files = sorted(Path(folder).glob("*.parquet"))
    if not files:
        return pd.DataFrame(columns=SEP_READ_COLUMNS)
    return pads.dataset([str(f) for f in files], format="parquet").to_table(columns=SEP_READ_COLUMNS).to_pandas()


def replicate_agreement(de: pd.DataFrame, dataset: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Replicate agreement and replicate retrieval of one dataset's sep DE rows, block by block.

    Blocks are (cell_type, time key): a centroid context (cell_type, time, dose) never crosses a
    block, so each block's arrays are all that is held at once.
    """
    rows = condition_rows(de, dataset)
    conds, rets = [], []
    blocks = rows.groupby(["cell_type", "time_key"], sort=True).ngroup()
    rid = dataset + "|" + de["stratum"].astype(str) + "|" + de["contrast_id"].astype(str)
    de_block = rid.map(pd.Series(blocks.to_numpy(), index=rows["row_id"])).fillna(-1).to_numpy(int)
    de_parts = {b: part for b, part in de.groupby(de_block, sort=False)}
    for b, block in rows.groupby(blocks.to_numpy(), sort=True):
        c, r = score_block(de_parts.get(b, de.iloc[:0]), block, dataset)
        conds.append(c)
        rets.append(r)
    conds = [c for c in conds if len(c)]
    rets = [r for r in rets if len(r)]
    out_c = pd.concat(conds, ignore_index=True) if conds else pd.DataFrame(columns=REPLICATE_COLUMNS)
    out_r = pd.concat(rets, ignore_index=True) if rets else pd.DataFrame(columns=retrieval.RETRIEVAL_COLUMNS)
    return out_c, out_r


def score_dataset(params: dict) -> dict:
    """Replicate agreement of one dataset (compute-resource workload).

    Parameters (JSON)
    -----------------
    dataset
        The dataset partition key.
    de_sep
        Absolute folder of the dataset's sep DE Parquet files.
    conditions_out, retrieval_out
        Absolute output paths (written atomically).
    """
    de = read_sep_de(params["de_sep"])
    conds, ret = replicate_agreement(de, params["dataset"])
    # the dataset is the partition's hive key (dataset=...), not a column of the file
    write_parquet(typed_frame(conds.drop(columns=["dataset"])), params["conditions_out"])
    write_parquet(typed_frame(ret), params["retrieval_out"])
    log.info("replicates %s: %d condition rows, %d retrieval rows", params["dataset"], len(conds), len(ret))
    return {"outputs": [params["conditions_out"], params["retrieval_out"]],
            "metadata": {"condition_rows": int(len(conds)), "retrieval_rows": int(len(ret))}}
