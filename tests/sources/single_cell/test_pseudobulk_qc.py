"""Single-cell QC and pseudobulk aggregation: hand-countable fixtures and direct sums."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cpb_assets.harmonize import pseudobulk as pb
from cpb_assets.sources import tahoe

def test_cell_qc_counts_each_failing_cell_once_under_its_first_rule(world, sc):
    X, genes, line = sc.twelve_cells(world)
    N_REG, EXPECTED = sc.N_REG, sc.EXPECTED
    res = pb.cell_qc(sp.csr_matrix(X), mito=pb.mito_mask(genes["symbol"]), malat1_col=N_REG + 2,
                     group_missing=np.array([v is None for v in line]))
    assert res.counts == EXPECTED
    assert res.passed.tolist() == [True] * 7 + [False] * 5
    assert res.failed_rule[7:].tolist() == [0, 1, 2, 3, 4]
    dense = pb.cell_qc(X, mito=pb.mito_mask(genes["symbol"]), malat1_col=N_REG + 2,
                       group_missing=np.array([v is None for v in line]))
    assert dense.counts == EXPECTED


def test_malat1_rule_is_skipped_when_malat1_is_not_measured(world, sc):
    X, genes, _ = sc.twelve_cells(world)
    res = pb.cell_qc(X[:, :-1], mito=pb.mito_mask(genes["symbol"].iloc[:-1]), malat1_col=None)
    assert res.counts["min_malat1"] == 0
    assert res.failed_rule[11] == -1  # only its MALAT1 was bad


def test_twelve_cell_plate_file_quarantines_exactly_five_cells(world, tmp_path, sc):
    X, genes, line = sc.twelve_cells(world)
    EXPECTED = sc.EXPECTED
    sc.write_plate(tmp_path / "plate1_SYNTHETIC_test.h5ad", X, genes, line)
    reg = pd.DataFrame({"source_id": ["Synthocin"], "pubchem_cid": ["2244"], "cid_method": ["test"]})
    h = tahoe.harmonize(tmp_path, "tahoe100m", reg)
    q = h.quarantine.to_frame()
    cells = q[q["level"] == "cell"].groupby("reason")["n"].sum()
    assert cells.to_dict() == {pb.QC_REASONS[r]: n for r, n in EXPECTED.items()}
    obs = h.adata.obs
    # wells: smp_1 = cells 0-5 (DMSO, all pass); smp_2 = cells 6-11 (only cell 6 passes)
    assert obs.set_index("well")["psbulk_cells"].to_dict() == {"smp_1": 6, "smp_2": 1}
    assert obs.loc[obs["well"] == "smp_2", "perturbagen"].item() == "Synthocin"  # stray space stripped
    assert obs.loc[obs["well"] == "smp_2", "pert_dose_uM"].item() == 0.5
    assert obs.loc[obs["well"] == "smp_2", "pubchem_cid"].item() == "2244"
    assert int(h.adata.X.sum()) == int(X[:7].sum())
    assert obs["psbulk_counts"].sum() == X[:7].sum()


def test_pseudobulk_sums_equal_a_direct_dense_sum():
    rng = np.random.default_rng(7)
    n_cells, n_genes = 500, 40
    dense = rng.poisson(0.7, (n_cells, n_genes)) * (rng.random((n_cells, n_genes)) < 0.4)
    keys = pd.DataFrame({"plate": rng.choice(["p1", "p2"], n_cells), "well": rng.choice(["A01", "B02", "C03"], n_cells),
                         "perturbagen": rng.choice(["DMSO", "x"], n_cells), "cell_type": "CVCL_0023"})
    groups, sums = pb.pseudobulk(sp.csr_matrix(dense), keys)
    assert sp.issparse(sums) and sums.dtype == np.int64
    assert len(groups) == keys.drop_duplicates().shape[0]
    for i, row in groups.iterrows():
        m = ((keys["plate"] == row["plate"]) & (keys["well"] == row["well"])
             & (keys["perturbagen"] == row["perturbagen"])).to_numpy()
        np.testing.assert_array_equal(sums[i].toarray().ravel(), dense[m].sum(0))
        assert row["psbulk_cells"] == m.sum()
        assert row["psbulk_counts"] == dense[m].sum()
    # chunked (as one plate is streamed) and merged gives the same answer
    parts = [pb.pseudobulk(sp.csr_matrix(dense[s:s + 130]), keys.iloc[s:s + 130]) for s in range(0, n_cells, 130)]
    g2, s2 = pb.combine_pseudobulk(parts, list(keys.columns))
    merged = g2.merge(groups, on=list(keys.columns), suffixes=("_chunked", ""))
    assert len(merged) == len(groups)
    assert (merged["psbulk_cells_chunked"] == merged["psbulk_cells"]).all()
    order = [groups.index[(groups[list(keys.columns)] == r[list(keys.columns)]).all(1)][0] for _, r in g2.iterrows()]
    np.testing.assert_array_equal(s2.toarray(), sums.toarray()[order])


@pytest.mark.parametrize("values, problem", [
    (np.array([1.0, 2.5, 3.0]), "fractional"), (np.array([1, -2, 3]), "negative"),
    (np.array([1.0, np.nan]), "non-finite"), (np.array([0.0, 4.0, 7.0]), None)])
def test_check_counts_names_the_problem(values, problem):
    got = pb.check_counts(values)
    assert (got is None) if problem is None else (problem in got)


def test_gene_axis_strips_versions_and_drops_mouse_and_par_y():
    keep, genes, dropped = pb.ensembl_gene_axis(
        ["ENSG00000000003.14", "ENSMUSG00000000001.4", "ENSG00000002586.18_PAR_Y", "ENSG00000002586.18"],
        ["TSPAN6", "Gnai3", "CD99", "CD99"])
    assert keep.tolist() == [0, 3]
    assert genes.index.tolist() == ["ENSG00000000003", "ENSG00000002586"]
    assert sorted(dropped["reason"]) == ["PAR_Y copy of a pseudo-autosomal gene", "not a human Ensembl gene ID"]
    with pytest.raises(ValueError, match="duplicate"):
        pb.ensembl_gene_axis(["ENSG00000000003.1", "ENSG00000000003.2"], ["A", "B"])
