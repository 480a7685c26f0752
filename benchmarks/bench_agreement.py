"""The agreement stage (matching + scores + baselines) on demo-world-shaped DE tables.

Inputs (SYNTHETIC, seeded): group-DE-like tables built from the demo world's designs
(``cpb_assets.demo.world.DESIGNS``: every dataset's compounds × cell types × doses × times, with
the DE layer's 24 h restriction for L1000, Tahoe, sci-Plex and OP3), 978 genes for L1000 and 2,000
for the others, logFC = planted truth + noise, t = logFC / 0.3, BH-adjusted normal P values.

Rows:
* ``agreement_metrics``: the 15 metric × variant scores of one stratum's matched pairs as array
  operations (``metrics.score_all``) against a plain loop over the pairs (scipy ``spearmanr``,
  Python sorts, sets); check: the two agree to 1e-12 everywhere (NaN where NaN);
* ``agreement_stage``: stage 1 over all datasets, stage 2 for all 78 pairs and every pair's scores
  and baselines (``workloads.score_matches``), without Dagster; no baseline (throughput).
"""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy.stats import norm, spearmanr

from benchmarks import REPS, median_times, row
from cpb_assets.agreement import matching, metrics
from cpb_assets.agreement.metrics import Signatures
from cpb_assets.agreement.workloads import score_matches

DE_24H_ONLY = {"l1000_phase1", "l1000_phase2", "tahoe100m", "sciplex", "op3"}


def _bh(p: np.ndarray) -> np.ndarray:
    """Row-wise Benjamini–Hochberg."""
    n = p.shape[1]
    order = np.argsort(p, axis=1)
    ranked = np.take_along_axis(p, order, axis=1) * n / np.arange(1, n + 1)
    ranked = np.minimum.accumulate(ranked[:, ::-1], axis=1)[:, ::-1]
    out = np.empty_like(p)
    np.put_along_axis(out, order, np.minimum(ranked, 1.0), axis=1)
    return out


def demo_de_tables(quick: bool = False) -> dict[str, pd.DataFrame]:
    """Group-DE-like long tables per dataset (SYNTHETIC)."""
    from cpb_assets.demo.world import DESIGNS, build_world

    world = build_world()
    rng = np.random.default_rng(17)
    landmark = np.flatnonzero(world.genes["is_landmark"].to_numpy(bool))
    other = np.flatnonzero(~world.genes["is_landmark"].to_numpy(bool))
    cids = world.compounds["pubchem_cid"].astype(int).astype(str).to_numpy()
    tables = {}
    for ds, d in DESIGNS.items():
        if quick and ds not in ("l1000_phase1", "l1000_phase2", "sciplex", "cigs_mce", "cigs_tcm"):
            continue
        gidx = landmark if ds.startswith("l1000") else np.sort(np.concatenate([landmark, other])[:2000])
        genes = world.genes.index.to_numpy()[gidx]
        times = [24.0] if ds in DE_24H_ONLY else list(d.times_h)
        conds = [(c, cell, t, dose) for c in d.compounds for cell in d.cell_types for t in times for dose in d.doses_uM]
        lfc = np.vstack([world.true_logfc(c, cell, dose, t, gidx) for c, cell, t, dose in conds])
        lfc += rng.normal(0, 0.25, lfc.shape)
        t_stat = lfc / 0.3
        adj = _bh(2 * norm.sf(np.abs(t_stat)))
        n_g = len(genes)
        meta = pd.DataFrame(conds, columns=["compound", "cell_type", "time_h", "dose_uM"])
        tables[ds] = pd.DataFrame({
            "stratum": np.repeat(meta["cell_type"].to_numpy(), n_g),
            "contrast_id": np.repeat([f"{ds}_{i}" for i in range(len(conds))], n_g),
            "cell_type": np.repeat(meta["cell_type"].to_numpy(), n_g),
            "pubchem_cid": np.repeat(cids[meta["compound"].to_numpy()], n_g),
            "dose_uM": np.repeat(meta["dose_uM"].to_numpy(), n_g),
            "time_h": np.repeat(meta["time_h"].to_numpy(), n_g),
            "gene": np.tile(genes, len(conds)),
            "logFC": lfc.ravel(), "t": t_stat.ravel(), "adj_P_within": adj.ravel()})
    return tables


def whole_stage(tables: dict[str, pd.DataFrame]) -> int:
    """Stage 1, stage 2 for every pair, scores for every pair with matches; returns the score rows."""
    rows = pd.concat([matching.condition_rows(t.drop_duplicates(["stratum", "contrast_id"]), ds)
                      for ds, t in tables.items()], ignore_index=True)
    edges = matching.stage1(rows)
    retained = matching.retained_rows(rows, edges)
    n = 0
    for a, b in itertools.combinations(sorted(tables), 2):
        two = matching.stage2(retained, a, b)
        if len(two):
            scores, _ = score_matches(two, tables[a], tables[b])
            n += len(scores)
    return n


# ------------------------------------------------------------------ plain per-pair reference
def _sp(x, y):
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return np.nan
    return float(spearmanr(x[ok], y[ok]).statistic)


def _top(values, members, k, key):
    idx = [i for i in range(len(values)) if members[i]]
    return set(sorted(idx, key=lambda i: (key(values[i]), i))[:k])


def loop_scores(lfc_l, t_l, p_l, lfc_r, t_r, p_r) -> dict[tuple[str, str], np.ndarray]:
    """The 15 metric × variant scores, one pair at a time (the plain reference)."""
    out = {k: [] for k in metrics.metric_variants()}
    for i in range(lfc_l.shape[0]):
        xl, xr, tl, tr = lfc_l[i], lfc_r[i], t_l[i], t_r[i]
        out[("spearman_logfc", "all")].append(_sp(xl, xr))
        out[("spearman_t", "all")].append(_sp(tl, tr))
        ok = np.isfinite(tl) & np.isfinite(tr)
        k = min(50, int(ok.sum()) // 2)
        if k == 0:
            out[("topk_overlap_t", "all")].append(np.nan)
        else:
            up = len(_top(tl, ok, k, lambda v: -v) & _top(tr, ok, k, lambda v: -v)) / k
            down = len(_top(tl, ok, k, lambda v: v) & _top(tr, ok, k, lambda v: v)) / k
            out[("topk_overlap_t", "all")].append((up + down) / 2)
        valid = np.isfinite(xl) & np.isfinite(xr)
        for variant in metrics.DEG_VARIANTS:
            masks = []
            for x, p in ((xl, p_l[i]), (xr, p_r[i])):
                with np.errstate(invalid="ignore"):
                    m = valid & np.isfinite(p) & (p < 0.05)
                    if variant == "p05_lfc02":
                        m &= np.abs(x) > 0.2
                masks.append(m)
            terms = [_sp(np.where(m, xl, np.nan), np.where(m, xr, np.nan)) for m in masks]
            out[("deg_spearman", variant)].append(np.mean(terms))
            ranked = [sorted([j for j in range(len(x)) if m[j]], key=lambda j, x=x: (-abs(x[j]), j))
                      for x, m in zip((xl, xr), masks)]
            counts = [len(r) for r in ranked]
            refs = []
            for ref in (0, 1):
                n = counts[ref]
                refs.append(np.nan if n == 0 or counts[1 - ref] < n else
                            len(set(ranked[0][:n]) & set(ranked[1][:n])) / n)
            out[("de_overlap_refn", variant)].append(np.nan if np.all(np.isnan(refs)) else np.nanmean(refs))
            for kk in metrics.DE_OVERLAP_K:
                out[(f"de_overlap_{kk}", variant)].append(
                    np.nan if min(counts) < kk else len(set(ranked[0][:kk]) & set(ranked[1][:kk])) / kk)
            both = masks[0] & masks[1]
            out[("direction", variant)].append(
                np.nan if both.sum() == 0 else float(np.mean(np.sign(xl[both]) == np.sign(xr[both]))))
    return {k: np.asarray(v, float) for k, v in out.items()}


def _stratum(n_pairs: int, n_genes: int, seed: int = 5):
    rng = np.random.default_rng(seed)
    shared = rng.normal(0, 1, (n_pairs, n_genes)) * (rng.random((n_pairs, n_genes)) < 0.1)
    sides = []
    for _ in range(2):
        lfc = shared + rng.normal(0, 0.3, shared.shape)
        lfc[rng.random(shared.shape) < 0.02] = np.nan  # genes missing on one side
        t = lfc / 0.3
        sides.append(Signatures(lfc, t, _bh(2 * norm.sf(np.abs(np.nan_to_num(t))))))
    return sides


def run(quick: bool = False, reps: int = REPS) -> list[dict]:
    n_pairs, n_genes = (60, 978) if quick else (300, 978)
    left, right = _stratum(n_pairs, n_genes)
    med, times, last = median_times({
        "vectorised": lambda: metrics.score_all(left, right),
        "loop": lambda: loop_scores(left.logfc, left.t, left.adj_p, right.logfc, right.t, right.adj_p)}, reps)
    agree = all(np.allclose(last["vectorised"][k], last["loop"][k], rtol=0, atol=1e-12, equal_nan=True)
                for k in last["loop"])
    rows = [row("agreement_metrics", "15 metric × variant scores of one stratum: arrays vs per-pair loop",
                f"{n_pairs} matched pairs × {n_genes} genes", project="metrics.score_all", project_s=med["vectorised"],
                baseline="per-pair loop (scipy spearmanr, sorted sets)", baseline_s=med["loop"],
                check="equal to 1e-12" if agree else "DIFFERENT", reps=reps, times=times, ok=agree)]
    tables = demo_de_tables(quick)
    med, times, last = median_times({"stage": lambda: whole_stage(tables)}, reps)
    pairs = len(list(itertools.combinations(tables, 2)))
    rows.append(row("agreement_stage", "stage 1 + stage 2 of every pair + scores and baselines (no Dagster)",
                    f"{len(tables)} datasets of the demo designs, {pairs} pairs", project="matching + score_matches",
                    project_s=med["stage"], check=f"{last['stage']:,} score rows", reps=reps, times=times,
                    ok=last["stage"] > 0))
    return rows
