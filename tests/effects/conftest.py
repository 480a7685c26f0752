"""Fixtures of the DE-layer tests: the real L1000 plate and seeded synthetic counts."""
from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cpb_assets.sources.gctx import read_gct

REPO = Path(__file__).resolve().parents[2]
PLATE = REPO / "data" / "real" / "l1000_ljp005" / "test_l1000.gct"

DONOR = {"organism": "NCBITaxon_9606", "sex": "unknown", "development_stage": "unknown", "disease": "unknown",
         "tissue": "unknown", "tissue_type": "cell line", "suspension_type": "na", "self_reported_ethnicity": "na"}


def obs_frame(rows: list[dict], dataset: str) -> pd.DataFrame:
    """A harmonized-like obs from minimal per-sample dicts (defaults fill the rest)."""
    obs = pd.DataFrame(rows)
    obs["dataset"] = dataset
    obs["assay"] = "test"
    for k, v in DONOR.items():
        obs[k] = v
    if "psbulk_cells" not in obs:
        obs["psbulk_cells"] = -666
    obs["psbulk_counts"] = -666
    obs["pert_type"] = np.where(obs["is_control"], "ctl_vehicle", "trt_cp")
    obs["pert_dose_uM"] = obs["pert_dose_uM"].astype(float)
    obs["pert_time_h"] = obs["pert_time_h"].astype(float)
    obs["is_control"] = obs["is_control"].astype(bool)
    obs.index = (obs["plate"] + "_" + obs["well"] + "_" + obs["perturbagen"] + "_" + obs["cell_type"]).to_numpy()
    obs.index.name = "sample_id"
    return obs


def make_l1000_plate() -> ad.AnnData:
    """The real LJP005 A375 24 h plate as a harmonized-like AnnData (trt_cp + DMSO only).

    Genes keep their L1000 probe IDs (Ensembl mapping is not this layer's job);
    pubchem_cid is left empty, so labels use the Broad pert_id.
    """
    g = read_gct(PLATE)
    cm = g.col_meta
    keep = cm["pert_type"].isin(["trt_cp", "ctl_vehicle"]).to_numpy()
    cm = cm.loc[keep]
    ctrl = (cm["pert_type"] == "ctl_vehicle").to_numpy()
    assert set(cm.loc[~ctrl, "pert_dose_unit"]) == {"um"}
    rows = [{"plate": p, "well": w, "cell_type": "CVCL_0132", "perturbagen": pid, "is_control": c,
             "pert_dose_uM": 0.0 if c else float(d), "pert_time_h": float(t), "pubchem_cid": None}
            for p, w, pid, c, d, t in zip(cm["det_plate"], cm["det_well"], cm["pert_id"], ctrl, cm["pert_dose"],
                                          cm["pert_time"])]
    obs = obs_frame(rows, "l1000_phase1")
    var = pd.DataFrame({"symbol": g.row_meta["pr_gene_symbol"].astype(str).to_numpy()},
                       index=pd.Index(g.row_meta.index.astype(str), name="gene"))
    return ad.AnnData(X=np.ascontiguousarray(g.data[:, keep].T), obs=obs, var=var)


@pytest.fixture(scope="session")
def l1000_plate() -> ad.AnnData:
    return make_l1000_plate()


def synthetic_counts(seed: int = 7, n_genes: int = 1500, reps: int = 4, n_dmso: int = 12, n_planted: int = 20,
                     plates: tuple[str, ...] = ("SYN_P1", "SYN_P2"), cell_types: tuple[str, ...] = ("CVCL_0023",),
                     times: tuple[float, ...] = (24.0,), dataset: str = "vcpi_0001"):
    """SYNTHETIC negative-binomial counts with planted effects (labelled synthetic: not real data).

    Per cell type and time: DMSO controls (`n_dmso`), compound ``SYN_hit`` at
    1 µM whose first `n_planted` genes change by ±2 log2 units (alternating
    signs), and an inert compound ``SYN_null`` at 1 and 10 µM; replicates
    spread over `plates`, which add a plate effect.

    Returns
    -------
    adata, planted
        The harmonized-like AnnData and the planted log2 fold changes (gene → value).
    """
    rng = np.random.default_rng(seed)
    genes = [f"ENSG{i:011d}" for i in range(1, n_genes + 1)]
    base = np.exp(rng.normal(np.log(60), 1.2, n_genes))  # mean counts per gene
    lfc = np.zeros(n_genes)
    lfc[:n_planted] = np.where(np.arange(n_planted) % 2 == 0, 2.0, -2.0)
    plate_eff = {p: rng.normal(0, 0.15, n_genes) for p in plates}
    rows, cols = [], []
    for ct in cell_types:
        for t in times:
            conds = [("DMSO", 0.0, True, n_dmso), ("SYN_hit", 1.0, False, reps), ("SYN_null", 1.0, False, reps),
                     ("SYN_null", 10.0, False, reps)]
            for pert, dose, ctrl, n in conds:
                for r in range(n):
                    plate = plates[r % len(plates)]
                    well = f"{pert[:5]}{dose:g}_{t:g}_{r:02d}"
                    mu = base * np.exp2(plate_eff[plate] + (lfc if pert == "SYN_hit" else 0.0))
                    mu = mu * rng.uniform(0.7, 1.4)  # library size
                    disp = 0.05
                    counts = rng.negative_binomial(1 / disp, 1 / (1 + mu * disp))
                    cols.append(counts)
                    rows.append({"plate": plate, "well": well, "cell_type": ct, "perturbagen": pert, "is_control": ctrl,
                                 "pert_dose_uM": dose, "pert_time_h": t,
                                 "pubchem_cid": None if ctrl else str(900000 + len(pert))})
    obs = obs_frame(rows, dataset)
    var = pd.DataFrame({"symbol": [f"SYN{i}" for i in range(n_genes)]}, index=pd.Index(genes))
    adata = ad.AnnData(X=np.array(cols, dtype=np.int64).astype(np.float32), obs=obs, var=var)
    adata.uns["synthetic"] = True
    return adata, dict(zip(genes[:n_planted], lfc[:n_planted]))


# pytest runs with --import-mode=importlib: test modules cannot import this
# file, so its helpers are handed out as fixtures.
@pytest.fixture(scope="session")
def make_obs():
    """:func:`obs_frame`, a harmonized-like obs from per-sample dicts."""
    return obs_frame


@pytest.fixture(scope="session")
def make_counts():
    """:func:`synthetic_counts`, SYNTHETIC negative-binomial data with planted effects."""
    return synthetic_counts
