"""OP3 results: mean ± SD over seeds, a cluster bootstrap by compound, and the bar plot."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cpb_assets.agreement.bootstrap import cluster_bca, table_cell_seed
from cpb_assets.op3.metrics import METRICS

# METHODS §5: reference MRRMSE on the real data, 10 seeds
REFERENCE_MRRMSE = {"lpm_all": 0.8034, "lpm_l1000": 0.8115, "morgan_trainable": 0.8115, "none": 0.8161,
                    "morgan_fixed": 0.8547}
RESULT_COLUMNS = ["descriptor", "metric", "n_seeds", "n_rows", "mean", "sd", "estimate", "lo", "hi", "method",
                  "reference"]


def results_table(rows: pd.DataFrame, n_resamples: int = 2000) -> pd.DataFrame:
    """One row per descriptor × metric.

    ``mean``/``sd``: over seeds of the per-seed metric (mean over test rows); ``sd`` is the
    sample SD (ddof 1; NaN with one seed). ``estimate``/``lo``/``hi``: the cluster BCa of the
    seed-averaged per-row metric, clusters = compound, nested mean over cell types (inner
    stratum), as the agreement bootstrap (METHODS §4).
    """
    out = []
    for (desc, ), part in rows.groupby(["descriptor"], sort=True):
        seeds = sorted(part["seed"].unique())
        per_row = part.groupby(["cell_type", "compound"], sort=True)[list(METRICS)].mean().reset_index()
        for metric in METRICS:
            per_seed = part.groupby("seed")[metric].mean()
            boot = cluster_bca(per_row[metric].to_numpy(float), per_row["compound"].tolist(),
                               seed=table_cell_seed("op3", (desc,), metric, "observed"),
                               inner=per_row["cell_type"].tolist(), n_resamples=n_resamples)
            out.append({"descriptor": desc, "metric": metric, "n_seeds": len(seeds), "n_rows": len(per_row),
                        "mean": float(per_seed.mean()), "sd": float(per_seed.std(ddof=1)) if len(seeds) > 1 else np.nan,
                        "estimate": boot.estimate, "lo": boot.lo, "hi": boot.hi, "method": boot.method,
                        "reference": REFERENCE_MRRMSE.get(desc, np.nan) if metric == "mrrmse" else np.nan})
    return pd.DataFrame(out, columns=RESULT_COLUMNS)


def results_plot(table: pd.DataFrame, path: Path) -> Path:
    """Bar plot of MRRMSE per descriptor (mean ± SD over seeds), the paper's reference beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cpb_resources.storage import atomic_path

    t = table[table["metric"] == "mrrmse"].sort_values("mean")
    x = np.arange(len(t))
    fig, ax = plt.subplots(figsize=(1.6 * max(len(t), 3) + 2, 4))
    ax.bar(x - 0.2, t["mean"], 0.4, yerr=t["sd"].fillna(0), capsize=3, label="this run (mean ± SD over seeds)")
    ax.bar(x + 0.2, t["reference"], 0.4, color="lightgray", label="paper (real OP3, 10 seeds)")
    ax.set_xticks(x, t["descriptor"], rotation=20)
    ax.set_ylabel("MRRMSE (lower is better)")
    ax.set_title("OP3 held-out compounds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
