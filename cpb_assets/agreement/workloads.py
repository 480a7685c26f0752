"""Agreement units of work for the compute resource (local subprocess or SLURM job).

``score_pair`` scores every stage-2 match of one dataset pair: all registered metrics and
variants, their same-context different-compound baselines and the strength inputs.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads

from cpb_assets.agreement.columns import SCORE_COLUMNS, STRENGTH_COLUMNS
from cpb_assets.agreement.baselines import adjusted, baseline_scores, centroid_signatures, pair_baseline
from cpb_assets.agreement.matching import condition_rows
from cpb_assets.agreement.metrics import Signatures, metric_variants, score_all
from cpb_assets.agreement.strength import mean_abs_t
from cpb_resources.storage import write_parquet

log = logging.getLogger(__name__)

DE_READ_COLUMNS = ["stratum", "contrast_id", "cell_type", "pubchem_cid", "dose_uM", "time_h", "gene", "logFC", "t",
                   "adj_P_within"]
CHUNK = 256  # matched pairs scored per array block (bounds memory at CHUNK × genes × a few arrays)


def read_group_de(folder: str | Path, cell_types) -> pd.DataFrame:
    """Group DE rows of one dataset for the given cell types (only the columns scoring reads)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.parquet"))
    if not files:
        return pd.DataFrame(columns=DE_READ_COLUMNS)
    ds = pads.dataset([str(f) for f in files], format="parquet")
    table = ds.to_table(columns=DE_READ_COLUMNS, filter=pads.field("cell_type").isin(sorted(set(cell_types))))
    # labels repeat once per gene: categoricals keep them cheap
    return table.to_pandas(strings_to_categorical=True)


class SideMatrix:
    """One dataset's rows of the scored contexts as (rows × genes) arrays on a shared gene axis."""

    def __init__(self, de: pd.DataFrame, dataset: str, contexts: set, genes: pd.Index):
        # one code per contrast; the condition metadata from each contrast's first row
        codes = de.groupby(["stratum", "contrast_id"], observed=True, sort=False).ngroup().to_numpy()
        _, first = np.unique(codes, return_index=True)
        heads = de.iloc[first]
        rows = condition_rows(heads, dataset)
        ctx = pd.Series(list(zip(rows["cell_type"], rows["time_key"], rows["dose_key"])), dtype=object)
        rows = rows.loc[ctx.isin(contexts).to_numpy()].reset_index(drop=True)
        self.rows = rows
        self.index = pd.Index(rows["row_id"])
        shape = (len(rows), len(genes))
        lfc, t, p = (np.full(shape, np.nan) for _ in range(3))
        if len(rows):
            rid = np.array([f"{dataset}|{s}|{c}" for s, c in zip(heads["stratum"], heads["contrast_id"])], dtype=object)
            r = self.index.get_indexer(rid)[codes]
            g = genes.get_indexer(de["gene"])
            ok = (r >= 0) & (g >= 0)
            for arr, col in ((lfc, "logFC"), (t, "t"), (p, "adj_P_within")):
                arr[r[ok], g[ok]] = pd.to_numeric(de[col], errors="coerce").to_numpy(float)[ok]
        self.sig = Signatures(lfc, t, p)
        context = (rows["cell_type"] + "\t" + rows["time_key"] + "\t" + rows["dose_key"]).to_numpy(object)
        self.centroid = centroid_signatures(self.sig, context, rows["pubchem_cid"].to_numpy(object), skip_nan=False)


def score_matches(matched: pd.DataFrame, de_a: pd.DataFrame, de_b: pd.DataFrame, chunk: int = CHUNK
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score the stage-2 matches of one dataset pair.

    Parameters
    ----------
    matched
        Stage-2 rows of ``matched_conditions`` (one dataset pair).
    de_a, de_b
        Group DE rows of the two datasets (at least every row of the matched contexts).

    Returns
    -------
    (scores, strength): one row per matched pair × metric × variant (``SCORE_COLUMNS``), and one row
    per matched pair with the strength inputs (``STRENGTH_COLUMNS``).
    """
    if matched.empty:
        return pd.DataFrame(columns=SCORE_COLUMNS), pd.DataFrame(columns=STRENGTH_COLUMNS)
    ds_a, ds_b = matched["dataset_a"].iloc[0], matched["dataset_b"].iloc[0]
    # every metric needs a gene on both sides: the axis is the genes both datasets have
    genes = pd.Index(sorted(set(de_a["gene"]) & set(de_b["gene"])))
    ctx_a = set(zip(matched["cell_type"], matched["time_key"], matched["dose_key_a"]))
    ctx_b = set(zip(matched["cell_type"], matched["time_key"], matched["dose_key_b"]))
    side_a, side_b = SideMatrix(de_a, ds_a, ctx_a, genes), SideMatrix(de_b, ds_b, ctx_b, genes)
    ia, ib = side_a.index.get_indexer(matched["row_a"]), side_b.index.get_indexer(matched["row_b"])
    if (ia < 0).any() or (ib < 0).any():
        raise ValueError(f"{ds_a}__{ds_b}: matched rows missing from the DE tables "
                         f"({int((ia < 0).sum())} of {ds_a}, {int((ib < 0).sum())} of {ds_b})")
    keys = metric_variants()
    obs = {k: [] for k in keys}
    base = {k: ([], []) for k in keys}
    strength, n_genes = [], []
    for start in range(0, len(matched), chunk):
        sl = slice(start, start + chunk)
        left, right = side_a.sig.take(ia[sl]), side_b.sig.take(ib[sl])
        o = score_all(left, right)
        b = baseline_scores(left, right, side_a.centroid.take(ia[sl]), side_b.centroid.take(ib[sl]))
        for k in keys:
            obs[k].append(o[k])
            base[k][0].append(b[k][0])
            base[k][1].append(b[k][1])
        strength.append(np.vstack(mean_abs_t(left, right)))
        n_genes.append((np.isfinite(left.logfc) & np.isfinite(right.logfc)).sum(axis=1))
    meta = matched[["dataset_a", "dataset_b", "contrast_a", "contrast_b", "stratum_a", "stratum_b", "cell_type",
                    "time_h", "pubchem_cid", "dose_a", "dose_b"]].reset_index(drop=True)
    n_genes = np.concatenate(n_genes)
    blocks = []
    for k in keys:
        o = np.concatenate(obs[k])
        bl, br = np.concatenate(base[k][0]), np.concatenate(base[k][1])
        bp = pair_baseline(bl, br)
        blocks.append(meta.assign(metric=k[0], variant=k[1], observed=o, baseline=bp, baseline_a=bl,
                                  baseline_b=br, adjusted=adjusted(o, bp), n_genes=n_genes))
    scores = pd.concat(blocks, ignore_index=True)[SCORE_COLUMNS]
    st = np.hstack(strength)
    strength_df = meta.drop(columns=["stratum_a", "stratum_b"]).assign(
        n_genes=n_genes, mean_abs_t_a=st[0], mean_abs_t_b=st[1], mean_abs_t=st[2],
        spearman_logfc=np.concatenate(obs[("spearman_logfc", "all")]),
        spearman_t=np.concatenate(obs[("spearman_t", "all")]))[STRENGTH_COLUMNS]
    return scores, strength_df


def score_pair(params: dict) -> dict:
    """Score one dataset pair (compute-resource workload).

    Parameters (JSON)
    -----------------
    matched
        Absolute path of the pair's ``matched_conditions`` Parquet file.
    de_a, de_b
        Absolute folders of the two datasets' group DE Parquet files.
    scores_out, strength_out
        Absolute output paths (written atomically).
    """
    matched = pd.read_parquet(params["matched"])
    matched = matched.loc[matched["stage"] == 2].reset_index(drop=True)
    cells = set(matched["cell_type"])
    de_a = read_group_de(params["de_a"], cells) if len(matched) else pd.DataFrame(columns=DE_READ_COLUMNS)
    de_b = read_group_de(params["de_b"], cells) if len(matched) else pd.DataFrame(columns=DE_READ_COLUMNS)
    scores, strength = score_matches(matched, de_a, de_b)
    write_parquet(scores, params["scores_out"])
    write_parquet(strength, params["strength_out"])
    log.info("agreement %s: %d matched pairs, %d score rows", Path(params["matched"]).parent.name, len(matched),
             len(scores))
    return {"outputs": [params["scores_out"], params["strength_out"]],
            "metadata": {"matched_pairs": int(len(matched)), "score_rows": int(len(scores))}}
