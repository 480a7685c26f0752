"""The harmonized asset checks can fail on fresh output: each one is driven to failure here (SYNTHETIC data)."""
from __future__ import annotations

import anndata as ad
import dagster as dg
import numpy as np
import pandas as pd
import pytest

from cpb_assets.harmonize.assets import (HARMONIZED_CHECK_SPECS, harmonized_adata, harmonized_check_results,
                                         publish_harmonized)
from cpb_assets.harmonize.quarantine import QUARANTINE_COLUMNS
from cpb_resources.storage import StorageResource, write_parquet

DS = "vcpi_0001"


def _adata(n=20, n_genes=50, cid=True):
    cids = pd.array([None if (i % 5 == 0 or not cid) else str(100 + i) for i in range(n)], dtype="string")
    obs = pd.DataFrame({"dataset": DS, "is_control": np.arange(n) % 5 == 0, "psbulk_cells": -666,
                        "pubchem_cid": cids}, index=[f"SYN_s{i:03d}" for i in range(n)])
    var = pd.DataFrame({"symbol": [f"G{i}" for i in range(n_genes)]},
                       index=[f"ENSG{i:011d}" for i in range(n_genes)])
    return ad.AnnData(X=np.ones((n, n_genes), dtype=np.float32), obs=obs, var=var)


def _quarantine(n_samples=0, n_genes=0):
    rows = [{"dataset": DS, "file": "f", "record_id": f"r{i}", "level": "sample", "reason": "test", "n": 1}
            for i in range(n_samples)]
    rows += [{"dataset": DS, "file": "f", "record_id": "genes", "level": "gene", "reason": "test", "n": n_genes}] \
        if n_genes else []
    return pd.DataFrame(rows, columns=QUARANTINE_COLUMNS)


def _run(tmp_path, adata, q, unmapped=None, notes=None):
    storage = StorageResource(home=str(tmp_path))
    unmapped = pd.DataFrame(columns=["input", "reason"]) if unmapped is None else unmapped
    publish_harmonized(storage, DS, adata, q, unmapped)
    return storage, {r.check_name: r for r in harmonized_check_results(storage, DS, adata, q, unmapped,
                                                                       notes or {})}


def test_specs_on_the_asset_one_result_each(tmp_path):
    names = {s.name for s in HARMONIZED_CHECK_SPECS}
    assert {k.name for k in harmonized_adata.check_keys} == names
    _, res = _run(tmp_path, _adata(), _quarantine(2))
    assert set(res) == names and all(r.passed for r in res.values())
    blocking = {s.name for s in HARMONIZED_CHECK_SPECS if s.blocking}
    assert blocking == {"harmonized_row_counts", "harmonized_gene_axis"}


def test_row_counts_fail_when_a_table_disagrees_with_the_source(tmp_path):
    a = _adata()
    storage, _ = _run(tmp_path, a, _quarantine())
    obs = pd.read_parquet(storage.table_path("harmonized_obs", dataset=DS))
    write_parquet(obs.iloc[:-1], storage.table_path("harmonized_obs", dataset=DS))  # one sample row lost
    res = {r.check_name: r for r in harmonized_check_results(storage, DS, a, _quarantine(), pd.DataFrame(), {})}
    assert not res["harmonized_row_counts"].passed
    assert "obs_rows: 19 written, 20 from the source" in str(res["harmonized_row_counts"].metadata["problems"])
    _, res = _run(tmp_path, a, _quarantine(), notes={"instances_kept": 21})
    assert not res["harmonized_row_counts"].passed


def test_cells_are_conserved_against_the_source_matrix(tmp_path):
    a = _adata()
    a.obs["psbulk_cells"] = 10  # 200 cells pseudobulked
    q = pd.concat([_quarantine(), pd.DataFrame([{"dataset": DS, "file": "f", "record_id": "p1", "level": "cell",
                                                 "reason": "QC", "n": 50}])], ignore_index=True)
    _, res = _run(tmp_path, a, q, notes={"cells_in_matrix": 250, "cells_kept": 200})
    assert res["harmonized_row_counts"].passed
    _, res = _run(tmp_path, a, q, notes={"cells_in_matrix": 260, "cells_kept": 200})  # 10 cells unaccounted for
    assert not res["harmonized_row_counts"].passed


@pytest.mark.parametrize("case, check", [("quarantine", "harmonized_quarantine_share"),
                                         ("cids", "harmonized_cids_resolved"),
                                         ("genes", "harmonized_gene_axis")])
def test_thresholds_fail(tmp_path, case, check):
    a = _adata(cid=case != "cids")
    q = _quarantine(n_samples=10 if case == "quarantine" else 0, n_genes=20 if case == "genes" else 0)
    _, res = _run(tmp_path, a, q)
    assert not res[check].passed
    assert all(r.passed for name, r in res.items() if name != check)
    want = dg.AssetCheckSeverity.WARN if case in ("quarantine", "cids") else dg.AssetCheckSeverity.ERROR
    assert res[check].severity == want
