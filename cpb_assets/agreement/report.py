"""Agreement report: aggregation, heatmaps, violins, strength scatter, paper-style tables.

Aggregation (METHODS §4, paper C.7): matched-pair scores → mean over matched doses (and contrasts)
within (CID, cell_type, time) ("drug-line-time" rows) → mean per dataset pair. Dataset sets: DEG
metrics leave out GDPx2 and DILImap; signature tables include them; DILImap enters as
``dilimap_train_val`` (``dilimap_train`` never enters the report).
"""
from __future__ import annotations

import base64
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cpb_assets.datasets import DATASET_INFO, DATASETS  # noqa: E402

DLT_KEYS = ["dataset_a", "dataset_b", "pubchem_cid", "cell_type", "time_h"]
COLUMNS = ("observed", "baseline", "adjusted")
NOT_IN_REPORT = {"dilimap_train"}
NOT_IN_DEG = {"gdpx2", "dilimap_train", "dilimap_train_val"}
# the heatmaps of Figure 1 / tables 4–6 (metric, variant, title)
MAIN_METRICS = [("deg_spearman", "p05", "DEG logFC Spearman (adj P < 0.05)"),
                ("direction", "p05", "Direction agreement (adj P < 0.05)"),
                ("spearman_logfc", "all", "All-gene logFC Spearman")]
# paper tables built from the agreement_pairs view: number -> (metric, variant, caption)
PAIR_TABLES = {4: ("deg_spearman", "p05", "DEG-restricted logFC Spearman (adj P < 0.05)"),
               5: ("direction", "p05", "Direction agreement (adj P < 0.05)"),
               6: ("spearman_logfc", "all", "All-gene logFC Spearman")}


REPLICATE_TABLES = {7: ("deg_spearman", "p05", "Replicate DEG-restricted logFC Spearman (adj P < 0.05)"),
                    8: ("direction", "p05", "Replicate direction agreement (adj P < 0.05)"),
                    10: ("spearman_logfc", "all", "Replicate all-gene logFC Spearman")}


def label(ds: str) -> str:
    return DATASET_INFO[ds].label if ds in DATASET_INFO else ds


def in_report(scores: pd.DataFrame, deg: bool) -> pd.Series:
    """Rows of pairs that the report's dataset set admits for a DEG or a signature metric."""
    drop = NOT_IN_DEG if deg else NOT_IN_REPORT
    return ~scores["dataset_a"].isin(drop) & ~scores["dataset_b"].isin(drop)


def drug_line_time(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean of observed / baseline / adjusted over matched doses within (pair, CID, cell_type, time),
    per metric and variant; ``n_rows`` = matched pairs averaged."""
    if scores.empty:
        return pd.DataFrame(columns=[*DLT_KEYS, "metric", "variant", *COLUMNS, "n_rows"])
    g = scores.groupby([*DLT_KEYS, "metric", "variant"], sort=True, dropna=False)
    out = g[list(COLUMNS)].mean()
    out["n_rows"] = g.size()
    return out.reset_index()


def pair_summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Dataset-pair summary per metric × variant: mean over drug-line-time rows of each column.

    ``n_compounds`` and ``n_rows`` count the distinct CIDs and the drug-line-time rows with a finite
    observed score (the paper's table columns); observed, baseline and adjusted skip NaN rows.
    """
    dlt = drug_line_time(scores)
    if dlt.empty:
        return pd.DataFrame(columns=["dataset_a", "dataset_b", "metric", "variant", "n_compounds", "n_rows",
                                     *COLUMNS])
    finite = dlt.loc[np.isfinite(dlt["observed"].astype(float))]
    g = dlt.groupby(["dataset_a", "dataset_b", "metric", "variant"], sort=True)
    out = g[list(COLUMNS)].mean()
    gf = finite.groupby(["dataset_a", "dataset_b", "metric", "variant"], sort=True)
    out["n_compounds"] = gf["pubchem_cid"].nunique()
    out["n_rows"] = gf.size()
    out[["n_compounds", "n_rows"]] = out[["n_compounds", "n_rows"]].fillna(0).astype(int)
    return out.reset_index()


def dataset_summary(conditions: pd.DataFrame) -> pd.DataFrame:
    """Per-dataset summary of condition-level replicate scores (mean over conditions; counts of CIDs and
    of conditions with a finite observed score)."""
    keys = ["dataset", "metric", "variant"]
    if conditions.empty:
        return pd.DataFrame(columns=[*keys, "n_compounds", "n_rows", *COLUMNS])
    conditions = conditions.copy()
    if "adjusted" not in conditions.columns:
        conditions["adjusted"] = conditions["observed"] - conditions["baseline"]
    out = conditions.groupby(keys, sort=True)[list(COLUMNS)].mean()
    finite = conditions.loc[np.isfinite(conditions["observed"].astype(float))].groupby(keys, sort=True)
    out["n_compounds"] = finite["pubchem_cid"].nunique() if "pubchem_cid" in conditions.columns else finite.size()
    out["n_rows"] = finite.size()
    out[["n_compounds", "n_rows"]] = out[["n_compounds", "n_rows"]].fillna(0).astype(int)
    out = out.reset_index()
    return out.loc[~out["dataset"].isin(NOT_IN_REPORT)]


RETRIEVAL_HEADLINE = ("retrieval_neg_euclidean", "strict_matched_condition",
                      "Strict cross-dataset logFC retrieval (normalized best-positive rank, negative Euclidean)")


def retrieval_summary(bootstrap: pd.DataFrame) -> pd.DataFrame:
    """Pair-level retrieval cells (the nested mean) from the bootstrap summary, in ``pair_summary``'s
    layout; n compounds / n rows = the cell's query-CID clusters and queries."""
    cols = ["dataset_a", "dataset_b", "metric", "variant", "n_compounds", "n_rows", *COLUMNS]
    need = {"level", "pair", "metric", "variant", "column", "estimate", "n_clusters", "n_rows"}
    if bootstrap is None or bootstrap.empty or not need <= set(bootstrap.columns):
        return pd.DataFrame(columns=cols)
    sel = bootstrap.loc[bootstrap["level"] == "retrieval"]
    if sel.empty:
        return pd.DataFrame(columns=cols)
    wide = sel.pivot_table(index=["pair", "metric", "variant"], columns="column", values="estimate", aggfunc="first")
    counts = sel.loc[sel["column"] == "observed"].set_index(["pair", "metric", "variant"])[["n_clusters", "n_rows"]]
    out = wide.join(counts).reset_index()
    out[["dataset_a", "dataset_b"]] = out["pair"].str.split("__", expand=True)
    out = out.rename(columns={"n_clusters": "n_compounds"})
    for c in COLUMNS:
        if c not in out.columns:
            out[c] = np.nan
    out[["n_compounds", "n_rows"]] = out[["n_compounds", "n_rows"]].fillna(0).astype(int)
    return out[cols]


def heatmap_matrix(summary: pd.DataFrame, metric: str, variant: str, column: str, datasets: list[str]
                   ) -> np.ndarray:
    """Symmetric dataset × dataset matrix of one summary column (NaN where a pair has no value)."""
    idx = {d: i for i, d in enumerate(datasets)}
    mat = np.full((len(datasets), len(datasets)), np.nan)
    sel = summary.loc[(summary["metric"] == metric) & (summary["variant"] == variant)]
    for a, b, v in zip(sel["dataset_a"], sel["dataset_b"], sel[column]):
        if a in idx and b in idx:
            mat[idx[a], idx[b]] = mat[idx[b], idx[a]] = v
    return mat


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def heatmap_figure(summary: pd.DataFrame, metric: str, variant: str, title: str, note: str = "") -> tuple[bytes, int]:
    """Observed, baseline and adjusted heatmaps of one metric side by side; returns (PNG, filled cells)."""
    deg = metric not in ("spearman_logfc", "spearman_t", "topk_overlap_t")
    present = set(summary["dataset_a"]) | set(summary["dataset_b"])
    datasets = [d for d in DATASETS if d in present and d not in (NOT_IN_DEG if deg else NOT_IN_REPORT)]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), constrained_layout=True)
    mats = {column: heatmap_matrix(summary, metric, variant, column, datasets) for column in COLUMNS}
    # observed and baseline share one scale so the two panels compare by colour
    shared = np.concatenate([mats["observed"].ravel(), mats["baseline"].ravel()])
    shared = shared[np.isfinite(shared)]
    lo, hi = (min(0.0, float(shared.min())), max(float(shared.max()), 1e-9)) if shared.size else (0.0, 1.0)
    names = [label(d) for d in datasets]
    filled = 0
    for k, (ax, column) in enumerate(zip(axes, COLUMNS)):
        mat = mats[column]
        filled += int(np.isfinite(mat).sum())
        finite = mat[np.isfinite(mat)]
        if column == "adjusted":
            vmax = max(float(np.abs(finite).max()), 1e-9) if finite.size else 1.0
            cmap, vmin = "RdBu_r", -vmax
            dark = lambda v: abs(v) > 0.6 * vmax  # noqa: E731
        else:
            cmap, vmin, vmax = ("RdBu_r", -max(abs(lo), hi), max(abs(lo), hi)) if lo < 0 else ("viridis", lo, hi)
            dark = (lambda v: abs(v) > 0.6 * vmax) if lo < 0 else (lambda v: v < lo + 0.55 * (hi - lo))  # noqa: E731
        im = ax.imshow(np.ma.masked_invalid(mat), cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_xticks(range(len(datasets)), names, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(datasets)), names if k == 0 else [""] * len(datasets), fontsize=7)
        for i, j in zip(*np.where(np.isfinite(mat))):
            ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if dark(mat[i, j]) else "black")
        ax.set_title(column, fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(f"{title} [{variant}]{note}", fontsize=10)
    return _png(fig), filled


def violin_figure(rows: pd.DataFrame, metric: str, variant: str, title: str, note: str = "") -> bytes:
    """Per-dataset violins of condition-level observed and baseline scores (replicate agreement)."""
    sel = rows.loc[(rows["metric"] == metric) & (rows["variant"] == variant)]
    datasets = [d for d in DATASETS if d in set(sel["dataset"])]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(datasets) + 1), 3.6))
    for k, (column, color, shift) in enumerate((("observed", "tab:blue", -0.2), ("baseline", "tab:gray", 0.2))):
        data = [sel.loc[sel["dataset"] == d, column].dropna().to_numpy(float) for d in datasets]
        pos = [i + shift for i, v in enumerate(data) if len(v) > 1]
        data = [v for v in data if len(v) > 1]
        if data:
            parts = ax.violinplot(data, positions=pos, widths=0.35, showmedians=True)
            for body in parts["bodies"]:
                body.set_facecolor(color)
        ax.plot([], [], color=color, label=column)
    ax.set_xticks(range(len(datasets)), [label(d) for d in datasets], rotation=45, ha="right", fontsize=7)
    ax.set_title(f"{title} [{variant}]{note}", fontsize=9)
    ax.legend(fontsize=7)
    return _png(fig)


def strength_figure(units: pd.DataFrame, corr: dict, note: str = "") -> bytes:
    """log10 mean |t| against the observed logFC and t Spearman of matched condition-dose units."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharex=True)
    x = np.log10(units["mean_abs_t"].to_numpy(float)) if len(units) else np.array([])
    for ax, col, name in zip(axes, ("spearman_logfc", "spearman_t"), ("logFC", "moderated t")):
        y = units[col].to_numpy(float) if len(units) else np.array([])
        ax.scatter(x, y, s=6, alpha=0.5)
        ax.set_xlabel("log10 mean |t| (both datasets)")
        ax.set_ylabel(f"observed {name} Spearman")
        rho, n = corr.get(f"rho_{col}", float("nan")), corr.get(f"n_{col}", 0)
        ax.set_title(f"ρ = {rho:.3f} (n = {n}){note}", fontsize=9)
    return _png(fig)


def fmt_ci(est, lo=None, hi=None) -> str:
    if est is None or not np.isfinite(est):
        return "—"
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{est:.3f}"
    return f"{est:.3f} [{lo:.3f}, {hi:.3f}]"


def ci_lookup(bootstrap: pd.DataFrame | None, level: str, key: str, metric: str, variant: str, column: str):
    """(estimate, lo, hi) of one table cell from the bootstrap summary, or None when absent.

    ``key`` is the cell's group value as the bootstrap writes it (``a__b`` for a dataset pair, the
    dataset key for replicates); rows are looked up by the columns the summary has.
    """
    if bootstrap is None or bootstrap.empty:
        return None
    sel = bootstrap
    for col, val in (("level", level), ("metric", metric), ("variant", variant), ("column", column)):
        if col in sel.columns:
            sel = sel.loc[sel[col].astype(str) == val]
    key_cols = [c for c in ("pair", "group", "group_values", "dataset") if c in sel.columns]
    hit = sel.iloc[0:0]
    for c in key_cols:
        hit = sel.loc[sel[c].astype(str) == key]
        if len(hit):
            break
    if hit.empty:
        return None
    r = hit.iloc[0]
    return float(r["estimate"]), float(r["lo"]), float(r["hi"])


def markdown_table(summary: pd.DataFrame, metric: str, variant: str, caption: str, number: int,
                   bootstrap: pd.DataFrame | None = None, level: str = "pair", unit: str = "Dataset pair") -> str:
    """One table in the layout of the paper's tables 4–10: unit, n compounds, n rows, observed,
    baseline, Δ (observed − baseline), each with its 95% BCa interval when the bootstrap has it."""
    deg = metric not in ("spearman_logfc", "spearman_t", "topk_overlap_t")
    sel = summary.loc[(summary["metric"] == metric) & (summary["variant"] == variant)]
    if "dataset_b" in sel.columns:
        sel = sel.loc[in_report(sel, deg)]
    lines = [f"**Table {number}.** {caption} [{variant}]", "",
             f"| {unit} | n compounds | n rows | Observed | Baseline | Δ (observed − baseline) |",
             "|---|---:|---:|---|---|---|"]
    for _, r in sel.iterrows():
        if "dataset_b" in sel.columns:
            key, name = f"{r['dataset_a']}__{r['dataset_b']}", f"{label(r['dataset_a'])}–{label(r['dataset_b'])}"
        else:
            key, name = str(r["dataset"]), label(r["dataset"])
        cells = []
        for column in COLUMNS:
            ci = ci_lookup(bootstrap, level, key, metric, variant, column)
            cells.append(fmt_ci(*ci) if ci else fmt_ci(float(r[column])))
        lines.append(f"| {name} | {int(r['n_compounds']):,} | {int(r['n_rows']):,} | {' | '.join(cells)} |")
    if len(lines) == 4:
        lines.append("| (no pair or dataset has enough matched or replicate-supported conditions) | | | | | |")
    return "\n".join(lines)


def write_png(data: bytes, path: Path) -> Path:
    from cpb_resources.storage import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def embed(data: bytes, alt: str) -> str:
    """Markdown with the PNG inline (the Dagster UI renders data URIs in Markdown metadata)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(data).decode()})"
