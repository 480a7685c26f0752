"""OP3 downstream evaluation: metrics, the compound re-split, descriptor plumbing, the predictor."""
import numpy as np
import pandas as pd
import pytest
import torch

from cpb_assets.op3.metrics import row_metrics, score
from cpb_assets.op3.predictor import (CompoundEmbedding, Descriptors, PredictorConfig, seed_everything,
                                      two_stage_predict)
from cpb_assets.op3.targets import TARGET_CLIP, compound_resplit, split_conditions, target_matrix


def test_metrics_hand_computed_with_a_constant_row_and_a_nan_prediction():
    y = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0]])
    p = np.array([[1.0, 2.0, 5.0], [np.nan, 1.0, 3.0]])  # NaN -> 0
    m = row_metrics(y, p)
    np.testing.assert_allclose(m["mrrmse"], [np.sqrt(4 / 3), np.sqrt((4 + 1 + 1) / 3)])
    np.testing.assert_allclose(m["mae"], [2 / 3, 4 / 3])
    # row 1: y (1,2,3) vs p (1,2,5): centred (-1,0,1) and (-5/3,-2/3,7/3)
    np.testing.assert_allclose(m["pearson"][0], 4 / np.sqrt(2 * (25 + 4 + 49) / 9))
    assert m["spearman"][0] == pytest.approx(1.0)
    # row 2: y is constant -> zero denominator -> 0
    assert m["pearson"][1] == 0.0 and m["spearman"][1] == 0.0
    np.testing.assert_allclose(m["cosine"], [(1 + 4 + 15) / (np.sqrt(14) * np.sqrt(30)), (0 + 2 + 6) / (np.sqrt(12) * np.sqrt(10))])
    assert score(y, p)["mae"] == pytest.approx(1.0)
    assert score(y, np.zeros_like(y))["cosine"] == 0.0


def _de_rows():
    rows = []
    for cell in ("CL_0000623", "CL_0000084"):
        for k, cid in enumerate(["2244", "3672", "5090"]):
            for g, (lfc, p) in enumerate([(1.0, 1e-3), (-2.0, 1e-20), (0.5, 0.5)]):
                rows.append({"cell_type": cell, "pubchem_cid": cid, "perturbagen": f"c{k}", "contrast_id": f"{cell}-{cid}",
                             "gene": f"ENSG{g:011d}", "logFC": lfc, "P_Value": p})
    rows.append({**rows[0], "gene": "ENSG_ONLY_ONCE"})  # a gene missing from the other conditions
    return pd.DataFrame(rows)


def test_target_matrix_signs_clips_and_keeps_common_genes():
    cond, genes, y = target_matrix(_de_rows())
    assert genes == ["ENSG00000000000", "ENSG00000000001", "ENSG00000000002"]
    assert len(cond) == 6 and list(cond["compound"][:3]) == ["2244", "3672", "5090"]
    np.testing.assert_allclose(y[0], [3.0, -TARGET_CLIP, -np.log10(0.5)], rtol=1e-6)


def test_resplit_puts_every_condition_of_a_test_compound_in_test():
    compounds = [f"cid{i}" for i in range(40)]
    test = compound_resplit(compounds)
    assert len(test) == 10
    assert test == compound_resplit(list(reversed(compounds)))  # order of input does not matter
    np.random.seed(42)  # the documented draw
    assert test == set(np.random.choice(np.array(sorted(compounds), dtype=object), 10, replace=False).tolist())
    cond = pd.DataFrame({"compound": [c for c in compounds for _ in range(4)],
                         "cell_type": [f"l{j}" for _ in compounds for j in range(4)]})
    split = split_conditions(cond, test)
    for compound, s in split.groupby(cond["compound"]):
        assert s.nunique() == 1 and (s.iloc[0] == "test") == (compound in test)


def test_descriptor_plumbing():
    seed_everything(0)
    desc = {1: np.array([1.0, 0.0, 2.0], np.float32)}
    emb = CompoundEmbedding(3, 4, desc, freeze=True)
    out = emb(torch.tensor([0, 1, 2]))
    # a compound with a descriptor gets its projected vector at initialisation …
    expected = emb.projection(torch.tensor([[1.0, 0.0, 2.0]]))
    torch.testing.assert_close(out[1:2], expected)
    # … one without keeps its learned embedding
    torch.testing.assert_close(out[[0, 2]], emb.learned.weight[[0, 2]])
    assert not emb.descriptor.requires_grad  # fixed descriptors are frozen
    assert CompoundEmbedding(3, 4, desc, freeze=False).descriptor.requires_grad
    none = CompoundEmbedding(3, 4, {}, freeze=False)  # the descriptor-free variant
    torch.testing.assert_close(none(torch.tensor([1])), none.learned.weight[[1]])


def test_a_descriptor_that_carries_the_structure_signal_beats_none_on_held_out_compounds():
    rng = np.random.default_rng(0)
    n_comp, n_bits, n_genes = 40, 24, 60
    fp = (rng.random((n_comp, n_bits)) < 0.3).astype(np.float32)
    effect = fp @ rng.normal(size=(n_bits, n_genes)) * 0.7
    cells = [f"l{j}" for j in range(3)]
    cell_shift = rng.normal(size=(3, n_genes))
    comp_ids = [f"c{i:02d}" for i in range(n_comp)]
    rows_cell, rows_comp, ys = [], [], []
    for i in range(n_comp):
        for j in range(3):
            rows_cell.append(cells[j]); rows_comp.append(comp_ids[i])
            ys.append(effect[i] + cell_shift[j] + rng.normal(scale=0.3, size=n_genes))
    y = np.array(ys, np.float32)
    test = compound_resplit(comp_ids)
    is_test = np.isin(rows_comp, sorted(test))
    cfg = PredictorConfig(epochs=120, ranks=(8, 16))
    desc = Descriptors({c: i for i, c in enumerate(comp_ids)}, fp)
    with_desc = two_stage_predict(rows_cell, rows_comp, y, is_test, desc, seed=0, cfg=cfg)
    without = two_stage_predict(rows_cell, rows_comp, y, is_test, Descriptors.none(), seed=0, cfg=cfg)
    assert with_desc.shape == (is_test.sum(), n_genes)
    assert score(y[is_test], with_desc)["mrrmse"] < score(y[is_test], without)["mrrmse"] - 0.05



def test_one_network_is_deterministic_under_a_seed():
    from cpb_assets.op3.predictor import fit_predict_member

    rng = np.random.default_rng(1)
    y = rng.normal(size=(30, 12)).astype(np.float32)
    cells, comps = rng.integers(0, 3, 30), rng.integers(0, 10, 30)
    desc = {2: np.ones(5, np.float32)}
    cfg = PredictorConfig(epochs=20)
    a = fit_predict_member(cells, comps, y, cells[:4], comps[:4], 3, 10, desc, 4, 5, cfg)
    b = fit_predict_member(cells, comps, y, cells[:4], comps[:4], 3, 10, desc, 4, 5, cfg)
    np.testing.assert_array_equal(a, b)
