"""Tahoe-100M route: native round trip, planted truth, bad inputs, flat memory over plates."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cpb_assets.errors import SourceFormatError
from cpb_assets.harmonize.schema import validate_harmonized
from cpb_assets.demo import tahoe as demo_tahoe
from cpb_assets.sources import tahoe
from cpb_assets.demo.world import DESIGNS

REPO = Path(__file__).resolve().parents[3]
REG = pd.DataFrame(columns=["source_id", "pubchem_cid", "cid_method"])


def test_round_trip_is_valid_and_has_the_designed_samples(tahoe_run):
    folder, files, h = tahoe_run
    d = DESIGNS["tahoe100m"]
    per = d.extra["compounds_per_plate"]
    n_plates = -(-len(d.compounds) // per) * d.replicates
    expected = n_plates * (per * len(d.doses_uM) + demo_tahoe.CONTROL_WELLS_PER_PLATE) * len(d.cell_types)
    assert validate_harmonized(h.adata) == []
    assert h.adata.n_obs == expected == 396
    assert h.adata.obs["plate"].nunique() == n_plates
    assert set(h.adata.obs["cell_type"]) == set(d.cell_types)
    assert all("SYNTHETIC" in f.name for f in files)
    # every cell in the files is either in a pseudobulk or in the quarantine
    n_cells = sum(h5py.File(f, "r")["obs"]["sample"]["codes"].shape[0] for f in files if f.suffix == ".h5ad")
    q = h.quarantine.to_frame()
    assert h.adata.obs["psbulk_cells"].sum() + q.loc[q["level"] == "cell", "n"].sum() == n_cells
    # each QC rule removed some planted cells; some groups stay under the 50-cell DE filter
    assert (q[q["level"] == "cell"].groupby("reason")["n"].sum() > 0).sum() == 5
    assert 0 < (h.adata.obs["psbulk_cells"] < 50).sum() < h.adata.n_obs
    assert h.adata.obs.loc[~h.adata.obs["is_control"], "pubchem_cid"].notna().all()
    assert (h.adata.obs.loc[h.adata.obs["is_control"], "pert_dose_uM"] == 0).all()
    assert np.issubdtype(h.adata.X.dtype, np.integer)


def test_planted_truth_is_visible(world, tahoe_run, sc):
    _, _, h = tahoe_run
    comp = 0  # potency 2 (strong)
    assert world.compounds["potency"].iloc[comp] == 2.0
    r = sc.log_ratio_vs_truth(world, h.adata, "CVCL_0023", comp, 5.0, world.compounds["name"].iloc[comp],
                              "tahoe100m")
    assert r > 0.7


def _one_plate(sc, world, tmp_path, **kw):
    X, genes, line = sc.twelve_cells(world)
    return sc.write_plate(tmp_path / "plate1_SYNTHETIC_bad.h5ad", X, genes, line, **kw), X, genes, line


def _assert_rejected(folder, field):
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(SourceFormatError) as exc:
        tahoe.harmonize(folder, "tahoe100m", REG)
    assert exc.value.field == field and "plate1_SYNTHETIC_bad.h5ad" in exc.value.file
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written


@pytest.mark.parametrize("column", ["sample", "cell_line", "drugname_drugconc", "plate"])
def test_cell_file_without_a_grouping_column_is_rejected(world, tmp_path, column, sc):
    _one_plate(sc, world, tmp_path, drop_obs=[column])
    _assert_rejected(tmp_path, f"obs/{column}")


@pytest.mark.parametrize("value", [0.5, -3.0])
def test_fractional_or_negative_counts_are_rejected(world, tmp_path, value, sc):
    X, genes, line = sc.twelve_cells(world)
    X = X.astype(float)
    X[3, 5] = value
    sc.write_plate(tmp_path / "plate1_SYNTHETIC_bad.h5ad", X, genes, line)
    _assert_rejected(tmp_path, "X")


def test_duplicate_var_entries_of_one_gene_are_summed(world, tmp_path, sc):
    X, genes, line = sc.twelve_cells(world)
    idx = genes.index.to_numpy().copy()
    idx[1] = idx[0]  # columns 0 and 1 now name one gene: their counts are summed into it
    with pytest.warns(UserWarning):  # anndata warns about non-unique var names
        sc.write_plate(tmp_path / "plate1_SYNTHETIC_dup.h5ad", X, genes, line, var_index=idx)
    h = tahoe.harmonize(tmp_path, "tahoe100m", REG)
    assert h.adata.n_vars == len(genes) - 1 and h.adata.var_names[0] == idx[0]
    ctrl = h.adata.obs["is_control"].to_numpy()
    # the 6 DMSO cells of cell line A549 pass QC: 6 cells x (2 + 2) counts on the merged gene
    assert h.adata.X[np.flatnonzero(ctrl)[0], 0] == 6 * (X[0, 0] + X[0, 1])
    q = h.quarantine.to_frame()
    assert q.loc[q["level"] == "gene", "record_id"].tolist() == [idx[1]]


def _peak_rss_kib(folder: Path) -> tuple[int, int]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "measure_peak_rss.py"), "tahoe", str(folder),
                          "tahoe100m"], capture_output=True, text=True, env=env, timeout=300, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return res["peak_kib"], res["n_obs"]


def test_peak_memory_does_not_grow_with_the_number_of_plates(world, tahoe_run, tmp_path):
    folder, files, _ = tahoe_run
    plates = [f for f in files if f.suffix == ".h5ad"]
    extra = demo_tahoe.plate_layout(world)[:2]
    for p, k in zip(extra, (5, 6)):
        p["plate"] = f"plate{k}"
    more = demo_tahoe.write_plates(world, tmp_path / "extra", extra)
    two, six = tmp_path / "two", tmp_path / "six"
    two.mkdir(), six.mkdir()
    for f in plates[:2]:
        (two / f.name).symlink_to(f)
    for f in plates + more:
        (six / f.name).symlink_to(f)
    for f in files:  # the gene and drug tables of the release go with every plate set
        if f.suffix == ".parquet":
            (two / f.name).symlink_to(f)
            (six / f.name).symlink_to(f)
    rss2, n2 = _peak_rss_kib(two)
    rss6, n6 = _peak_rss_kib(six)
    assert n6 == 3 * n2  # six plates really were processed
    plate_mib = np.mean([f.stat().st_size for f in plates]) / 2**20
    assert plate_mib > 25  # each plate is big enough that holding 4 more would show
    assert rss6 <= 1.2 * rss2, (rss2, rss6)


def test_unknown_cell_lines_are_quarantined_in_cells(tmp_path):
    """Hand-built pseudobulk groups: a well-formed accession outside the table (kept) and a name nobody knows."""
    from cpb_assets.harmonize.quarantine import Quarantine

    groups = pd.DataFrame({
        "plate": ["plate1"] * 4, "well": ["smp_1", "smp_1", "smp_2", "smp_2"],
        "condition": ["[('DMSO_TF', 0.0, 'uM')]"] * 2 + ["[('drugA', 0.5, 'uM')]"] * 2,
        "cell_line": ["CVCL_0023", "CVCL_1056", "CVCL_0023", "NOT-A-LINE"],
        "psbulk_cells": [60, 41, 55, 12], "psbulk_counts": [9000, 6000, 8000, 2000]})
    X = sp.csr_matrix(np.arange(8, dtype=np.int64).reshape(4, 2))
    q = Quarantine("tahoe100m")
    samples, Xk = tahoe._samples(groups, X, q, tmp_path)
    assert samples["cell_type"].tolist() == ["CVCL_0023", "CVCL_1056", "CVCL_0023"]
    assert Xk.toarray().tolist() == [[0, 1], [2, 3], [4, 5]]
    rows = q.to_frame().set_index("record_id")
    assert rows["n"].to_dict() == {"NOT-A-LINE": 12}
    assert set(rows["reason"]) == {"unknown cell line: NOT-A-LINE"} and set(rows["level"]) == {"cell"}


def test_round_trip_is_labelled_synthetic_and_uses_dataset_assay(tahoe_run):
    from cpb_assets.datasets import DATASET_INFO
    from cpb_assets.harmonize.schema import OBS_COLUMNS, OPTIONAL_OBS

    a = tahoe_run[2].adata
    assert a.uns["synthetic"] is True
    assert set(a.obs["assay"]) == {DATASET_INFO["tahoe100m"].assay}
    assert set(a.obs.columns) - set(OBS_COLUMNS) <= set(OPTIONAL_OBS)
