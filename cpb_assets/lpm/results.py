"""LPM variants, run folders and the test-RMSE summary (METHODS §5). Pure logic, no Dagster.

Run folders under ``$CPB_HOME/lpm``::

    runs/<variant>/seed=<seed>/                    lpm_checkpoint (All variants, scalar models)
    finetune/<dataset>/<variant>/seed=<seed>/      lpm_finetuned (fine-tune and scratch variants)

each with ``epoch-NNN.pt`` (weights, vocabularies, split hash), ``last.pt``,
``history.json`` and ``selection.json`` (dataset → best-validation epoch and
its test RMSE).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pandas as pd

SEEDS = ["13", "17", "19", "23", "29", "31", "37", "41", "43", "47"]
DEMO_SEEDS = ["13", "17"]


@dataclass(frozen=True)
class Variant:
    """One training variant: its paper label, model form, split kind, Morgan mode, training datasets."""

    key: str
    label: str
    form: str                      # "multi" | "scalar"
    split_kind: str                # "molecule" | "scalar"
    morgan: Optional[str] = None   # None | "fixed" | "learned"
    datasets: Optional[tuple[str, ...]] = None  # None: every dataset of the shards
    source: Optional[str] = None   # fine-tune: the lpm_checkpoint variant it starts from
    freeze: bool = False           # fine-tune: perturbation embeddings frozen


CHECKPOINT_VARIANTS: dict[str, Variant] = {v.key: v for v in [
    Variant("all", "All", "multi", "molecule"),
    Variant("all_morgan_fixed", "All Morgan fixed", "multi", "molecule", "fixed"),
    Variant("all_morgan_learned", "All Morgan learned", "multi", "molecule", "learned"),
    # the scalar LPM whose compound embeddings feed the OP3 predictor (METHODS §5 "OP3 downstream")
    Variant("scalar_l1000", "Scalar L1000", "scalar", "scalar", datasets=("l1000_phase1", "l1000_phase2")),
    Variant("scalar_all", "Scalar all data", "scalar", "scalar"),
]}
FINETUNE_VARIANTS: dict[str, Variant] = {v.key: v for v in [
    Variant("ft_frozen_mol", "FT frozen mol", "multi", "molecule", source="all", freeze=True),
    Variant("ft_morgan_fixed", "FT Morgan fixed", "multi", "molecule", source="all_morgan_fixed", freeze=True),
    Variant("ft_morgan_learned_fixmol", "FT Morgan learned fixmol", "multi", "molecule",
            source="all_morgan_learned", freeze=True),
    Variant("scratch", "Scratch", "multi", "molecule"),
    Variant("scratch_morgan_fixed", "Scratch Morgan fixed", "multi", "molecule", "fixed"),
]}
# the 8 columns of the paper's table, in its order
TABLE_VARIANTS = ["All", "FT frozen mol", "Scratch", "All Morgan fixed", "FT Morgan fixed", "Scratch Morgan fixed",
                  "All Morgan learned", "FT Morgan learned fixmol"]
DATASET_LABELS = {"cigs_mce": "CIGS-MCE", "cigs_tcm": "CIGS-TCM", "dilimap_train": "DILImap train",
                  "gdpx2": "GDPx2", "l1000_phase1": "L1000 Phase I", "l1000_phase2": "L1000 Phase II",
                  "novartis_drugseq": "Novartis", "op3": "OP3", "sciplex": "sci-Plex", "tahoe100m": "Tahoe",
                  "vcpi_0001": "VCPI-0001", "vcpi_0002": "VCPI-0002"}
# METHODS §5: reference test RMSE on the real data (10-seed means), columns in TABLE_VARIANTS order
REFERENCE_RMSE: dict[str, list[float]] = {
    "cigs_mce": [.5761, .5784, .5714, .5731, .5867, .5718, .5803, .5750],
    "cigs_tcm": [.4082, .4077, .4081, .4072, .4076, .4079, .4082, .4077],
    "dilimap_train": [.6640, .6090, .6095, .6637, .6088, .6096, .6813, .6095],
    "gdpx2": [.4392, .4431, .4331, .4321, .4378, .4321, .4374, .4380],
    "l1000_phase1": [.6284, .6231, .6326, .6266, .6247, .6266, .6271, .6214],
    "l1000_phase2": [.4849, .4830, .4886, .4861, .4859, .4861, .4834, .4814],
    "novartis_drugseq": [.5557, .5394, .5408, .5553, .5379, .5395, .5553, .5371],
    "op3": [.3572, .3481, .3478, .3545, .3413, .3469, .3564, .3431],
    "sciplex": [.6841, .6896, .6845, .6819, .6861, .6840, .6837, .6899],
    "tahoe100m": [.7383, .7431, .7380, .7288, .7349, .7335, .7319, .7354],
    "vcpi_0001": [.5708, .5707, .5707, .5708, .5707, .5707, .5709, .5706],
}
RESULT_COLUMNS = ["dataset", "variant", "split", "n_seeds", "rmse_mean", "rmse_sd"]


def reference_table() -> pd.DataFrame:
    """The paper's reference table as long rows: dataset, variant, rmse_paper."""
    return pd.DataFrame([(ds, v, r) for ds, vals in REFERENCE_RMSE.items() for v, r in zip(TABLE_VARIANTS, vals)],
                        columns=["dataset", "variant", "rmse_paper"])


def run_dir(lpm_root: Path, variant: str, seed: str, target: Optional[str] = None) -> Path:
    if target is None:
        return Path(lpm_root) / "runs" / variant / f"seed={seed}"
    return Path(lpm_root) / "finetune" / target / variant / f"seed={seed}"


def read_json(path: Path):
    return json.loads(Path(path).read_text()) if Path(path).exists() else None


def seed_rows(lpm_root: Path, seeds: Iterable[str], targets: Optional[Iterable[str]] = None) -> pd.DataFrame:
    """One row per (dataset, variant, seed) with the selected epoch's test RMSE, from the finished runs on disk.

    "All" and scalar variants: per dataset and seed, the best-validation epoch on that dataset.
    Fine-tune / scratch: the target's best-validation epoch of each seed.
    """
    rows = []
    for v in CHECKPOINT_VARIANTS.values():
        for s in seeds:
            sel = _finished_selection(run_dir(lpm_root, v.key, s))
            for ds, r in (sel or {}).items():
                rows.append((ds, v.label, v.split_kind, s, r["epoch"], r["test_rmse"]))
    ft_root = Path(lpm_root) / "finetune"
    targets = sorted(targets) if targets is not None else sorted(p.name for p in ft_root.glob("*") if p.is_dir())
    for ds in targets:
        for v in FINETUNE_VARIANTS.values():
            for s in seeds:
                sel = _finished_selection(run_dir(lpm_root, v.key, s, ds))
                if sel and ds in sel:
                    rows.append((ds, v.label, v.split_kind, s, sel[ds]["epoch"], sel[ds]["test_rmse"]))
    return pd.DataFrame(rows, columns=["dataset", "variant", "split", "seed", "epoch", "test_rmse"])


def _finished_selection(folder: Path) -> Optional[dict]:
    return read_json(folder / "selection.json") if (folder / "selection.json").exists() else None


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample SD (ddof 1; NaN for one seed) of test RMSE over seeds per dataset × variant × split.

    Seeds without a test RMSE (a dataset with no test split, e.g. VCPI-0002) are left out.
    """
    ok = rows[np.isfinite(rows["test_rmse"].astype(float))]
    if ok.empty:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    g = ok.groupby(["dataset", "variant", "split"], sort=True)["test_rmse"]
    out = g.agg(n_seeds="count", rmse_mean="mean", rmse_sd=lambda x: float(np.std(x, ddof=1)) if len(x) > 1
                else float("nan")).reset_index()
    return out[RESULT_COLUMNS]


def report_markdown(results: pd.DataFrame) -> str:
    """Dataset × variant table of "ours ± sd (paper)" for the 8 molecule-holdout variants."""
    ref = reference_table().set_index(["dataset", "variant"])["rmse_paper"]
    res = results[results["split"] == "molecule"].set_index(["dataset", "variant"])
    datasets = sorted(set(res.index.get_level_values(0)) | set(REFERENCE_RMSE), key=lambda d: DATASET_LABELS.get(d, d))
    lines = ["| dataset | " + " | ".join(TABLE_VARIANTS) + " |", "|---" * (len(TABLE_VARIANTS) + 1) + "|"]
    for ds in datasets:
        cells = []
        for v in TABLE_VARIANTS:
            ours = res.loc[(ds, v)] if (ds, v) in res.index else None
            paper = ref.get((ds, v))
            txt = "–" if ours is None else (f"{ours['rmse_mean']:.4f}" + (
                f" ± {ours['rmse_sd']:.4f}" if math.isfinite(ours["rmse_sd"]) else ""))
            cells.append(txt + (f" ({paper:.4f})" if paper is not None else ""))
        lines.append(f"| {DATASET_LABELS.get(ds, ds)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = ["SEEDS", "DEMO_SEEDS", "Variant", "CHECKPOINT_VARIANTS", "FINETUNE_VARIANTS", "TABLE_VARIANTS",
           "DATASET_LABELS", "REFERENCE_RMSE", "RESULT_COLUMNS", "reference_table", "run_dir", "seed_rows",
           "summarize", "report_markdown"]
