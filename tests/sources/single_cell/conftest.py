"""Fixtures of the single-cell route tests: the demo world and its SYNTHETIC Tahoe / sci-Plex files.

Each synthetic source is written and harmonized once per test session.
"""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp



@pytest.fixture(scope="session")
def tahoe_run(world, tmp_path_factory):
    from cpb_assets.demo import tahoe as demo_tahoe
    from cpb_assets.sources import tahoe

    folder = tmp_path_factory.mktemp("tahoe")
    files = demo_tahoe.write_synthetic(world, "tahoe100m", folder)
    return folder, files, tahoe.harmonize(folder, "tahoe100m", registry_by(world, "name"))


@pytest.fixture(scope="session")
def sciplex_run(world, tmp_path_factory):
    from cpb_assets.demo import sciplex as demo_sciplex
    from cpb_assets.sources import sciplex

    folder = tmp_path_factory.mktemp("sciplex")
    files = demo_sciplex.write_synthetic(world, "sciplex", folder)
    return folder, files, sciplex.harmonize(folder, "sciplex", registry_by(world, "catalog_id"))


def registry_by(world, key: str) -> pd.DataFrame:
    """The compound registry's answer for a source keyed by world column `key` (true CIDs)."""
    return pd.DataFrame({"source_id": world.compounds[key].to_numpy(),
                         "pubchem_cid": world.compounds["pubchem_cid"].astype(str).to_numpy(),
                         "cid_method": "test"})


def log_ratio_vs_truth(world, adata, cell_type: str, compound: int, dose_uM: float, name: str, dataset: str) -> float:
    """Pearson r between the pseudobulk log2 ratio (treated CPM / control CPM) and the true log2FC as `dataset`
    measures it."""
    obs = adata.obs
    X = np.asarray(adata.X.todense() if hasattr(adata.X, "todense") else adata.X, dtype=float)
    cpm = X / X.sum(1, keepdims=True) * 1e6
    ct = (obs["cell_type"] == cell_type).to_numpy()
    trt = ct & (obs["perturbagen"] == name).to_numpy() & np.isclose(obs["pert_dose_uM"], dose_uM)
    ctl = ct & obs["is_control"].to_numpy()
    assert trt.sum() >= 2 and ctl.sum() >= 2
    ratio = np.log2(cpm[trt].mean(0) + 1) - np.log2(cpm[ctl].mean(0) + 1)
    truth = world.true_logfc(compound, cell_type, dose_uM, 24.0, world.gene_index(adata.var_names), dataset)
    expressed = cpm[ctl].mean(0) > 50  # well-measured genes; weak genes are Poisson noise
    return float(np.corrcoef(ratio[expressed], truth[expressed])[0, 1])


N_REG = 300


def twelve_cells(world):
    """12 cells × (300 ordinary + 2 MT- + MALAT1) genes; cells 7–11 fail QC, one rule each as counted.

    Returns counts, gene table (Ensembl index, symbol) and the cell line per cell (None = missing).
    """
    g = world.genes
    reg = g[g["kind"] == "extra"].iloc[:N_REG]
    mito = g[g["kind"] == "mito"].iloc[:2]
    malat = g[g["kind"] == "malat1"]
    genes = pd.concat([reg, mito, malat])[["symbol"]]
    X = np.zeros((12, len(genes)), dtype=np.int64)
    MT, MAL = slice(N_REG, N_REG + 2), N_REG + 2
    for i in range(7):  # good: 300 genes x2 + 2x20 MT + 100 MALAT1 = 740 counts, mito 5.4%
        X[i, :N_REG] = 2
        X[i, MT] = 20
        X[i, MAL] = 100
    X[6, :N_REG] = 3  # still good (900 + 40 + 100)
    # 7: grouping field missing AND too few counts -> counted once, under missing_group
    X[7, :N_REG] = 1
    X[7, MAL] = 50
    # 8: 200 genes detected (x4 = 800 counts) -> min_genes
    X[8, :200] = 4
    X[8, MT] = 20
    X[8, MAL] = 100
    # 9: 303 genes but 300 + 20 + 50 = 370 counts -> min_counts
    X[9, :N_REG] = 1
    X[9, MT] = 10
    X[9, MAL] = 50
    # 10: mito 200 / 902 = 0.22 and MALAT1 log1p(2/902e4) = 3.1 -> counted under max_mito_fraction
    X[10, :N_REG] = 2
    X[10, MT] = 100
    X[10, MAL] = 2
    # 11: 900 + 40 + 2 counts, MALAT1 log1p(2/942e4) = 3.1 -> min_malat1
    X[11, :N_REG] = 3
    X[11, MT] = 20
    X[11, MAL] = 2
    line = ["CVCL_0023"] * 12
    line[7] = None
    return X, genes, line


EXPECTED = {"missing_group": 1, "min_genes": 1, "min_counts": 1, "max_mito_fraction": 1, "min_malat1": 1}


def write_plate(path, X, genes, line, *, sample=None, drop_obs=(), var_index=None):
    """A Tahoe-format plate h5ad from a count matrix (float32 CSR, categorical obs)."""
    n = X.shape[0]
    obs = pd.DataFrame({
        "sample": sample if sample is not None else ["smp_1"] * 6 + ["smp_2"] * (n - 6),
        "drugname_drugconc": ["[('DMSO_TF', 0.0, 'uM')]"] * 6 + ["[('Synthocin ', 0.5, 'uM')]"] * (n - 6),
        "drug": ["DMSO_TF"] * 6 + ["Synthocin"] * (n - 6),
        "cell_line": np.array(line, dtype=object), "plate": "plate1",
    }, index=[f"c{i}" for i in range(n)])
    obs = obs.drop(columns=list(drop_obs))
    for c in obs.columns:
        obs[c] = obs[c].astype("category")
    idx = var_index if var_index is not None else genes.index.to_numpy()
    var = pd.DataFrame({"gene_name": genes["symbol"].to_numpy()}, index=pd.Index(idx, name="gene_id"))
    a = ad.AnnData(X=sp.csr_matrix(np.asarray(X, dtype=np.float32)), obs=obs, var=var)
    a.write_h5ad(path)
    return path


class Helpers:
    """The helpers above, handed to tests as the `sc` fixture (test folders are not packages)."""

    N_REG = N_REG
    EXPECTED = EXPECTED
    registry_by = staticmethod(registry_by)
    log_ratio_vs_truth = staticmethod(log_ratio_vs_truth)
    twelve_cells = staticmethod(twelve_cells)
    write_plate = staticmethod(write_plate)


@pytest.fixture(scope="session")
def sc():
    return Helpers
