"""Retrieval (METHODS §4): min-rank rule, injected baseline, pools, positives, self-exclusion."""
import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from cpb_assets.agreement import retrieval

SCORES = np.array([[0.5, 0.5, 0.1, 0.0, -1.0]])


def _rank(pos_idx):
    pos = np.zeros_like(SCORES, dtype=bool)
    pos[0, pos_idx] = True
    rank, n, n_pos = retrieval.best_positive_rank(SCORES, pos)
    return rank[0], retrieval.normalized_rank(rank, n)[0], n_pos[0]


def test_min_rank_first_positive_tied_with_negative_is_one():
    assert _rank([0]) == (1.0, 1.0, 1)
    assert _rank([1]) == (1.0, 1.0, 1)  # the tie at 0.5 is not strictly better


@pytest.mark.parametrize("pos_idx, rank, norm", [([2], 3, 0.5), ([3, 4], 4, 0.25), ([4], 5, 0.0),
                                                 ([2, 4], 3, 0.5)])
def test_min_rank_hand_values(pos_idx, rank, norm):
    r, nr, _ = _rank(pos_idx)
    assert r == rank and nr == pytest.approx(norm, abs=1e-15)


def test_no_positive_is_nan_and_candidate_mask_shrinks_n():
    rank, n, n_pos = retrieval.best_positive_rank(SCORES, np.zeros_like(SCORES, bool))
    assert np.isnan(rank[0]) and n_pos[0] == 0
    # drop the two 0.5 candidates: the 0.1 positive is first of three
    cand = np.array([[False, False, True, True, True]])
    pos = np.array([[False, False, True, False, False]])
    rank, n, _ = retrieval.best_positive_rank(SCORES, pos, cand)
    assert rank[0] == 1 and n[0] == 3 and retrieval.normalized_rank(rank, n)[0] == 1.0


def test_injected_baseline_ranks_among_n_plus_one():
    rank, norm = retrieval.injected_rank(SCORES, np.array([0.3]))
    assert rank[0] == 3 and norm[0] == pytest.approx(1 - 2 / 5)  # two candidates strictly better, N = 5
    rank, norm = retrieval.injected_rank(SCORES, np.array([0.5]))
    assert rank[0] == 1 and norm[0] == 1.0
    rank, norm = retrieval.injected_rank(SCORES, np.array([-2.0]))
    assert norm[0] == 0.0
    assert np.isnan(retrieval.injected_rank(SCORES, np.array([np.nan]))[1][0])


def test_similarities_hand_values():
    q = np.array([[1.0, 0.0, 0.0, 2.0]])
    t = np.array([[0.0, 1.0, 0.0, 2.0], [2.0, 0.0, 0.0, 4.0], [4.0, 3.0, 2.0, 1.0]])
    assert retrieval.similarity(q, t, "neg_euclidean")[0] == pytest.approx([-np.sqrt(2), -np.sqrt(5), -np.sqrt(23)])
    assert retrieval.similarity(q, t, "cosine")[0, :2] == pytest.approx([4 / 5, 1.0])
    rho = [spearmanr(q[0], row)[0] for row in t]
    assert retrieval.similarity(q, t, "spearman")[0] == pytest.approx(rho, abs=1e-12)
    zero = np.zeros((1, 4))
    assert not retrieval.valid_rows(zero, "cosine")[0] and retrieval.valid_rows(zero, "neg_euclidean")[0]
    assert not retrieval.valid_rows(np.array([[1.0, 1.0, 1.0, 1.0]]), "spearman")[0]


def test_positive_definitions():
    strict = np.array([[True, False, False]])
    pos = retrieval.positive_masks(["2244"], [1.0], ["2244", "2244", "5"], [1.0, 10.0, 1.0], strict)
    assert pos["strict_matched_condition"].tolist() == [[True, False, False]]
    assert pos["dose_aware_compound"].tolist() == [[True, True, False]]  # 10-fold is within
    pos = retrieval.positive_masks(["2244"], [1.0], ["2244", "2244", "5"], [1.0, 10.5, 1.0], strict)
    assert pos["dose_aware_compound"].tolist() == [[True, False, False]]
    assert pos["compound_across_doses"].tolist() == [[True, True, False]]


def _pool(ds, cids, doses):
    n = len(cids)
    return pd.DataFrame({"row_id": [f"{ds}|s|c{i}" for i in range(n)], "contrast_id": [f"c{i}" for i in range(n)],
                         "pubchem_cid": cids, "dose_uM": doses, "cell_type": "A549", "time_h": 24.0})


def test_cross_dataset_stratum_planted_partners_rank_first():
    rng = np.random.default_rng(0)
    cids = [str(100 + i) for i in range(6)]
    pa, pb = _pool("a", cids, [1.0] * 6), _pool("b", cids, [1.0] * 6)
    xa = rng.normal(size=(6, 40))
    xb = xa + 0.05 * rng.normal(size=(6, 40))
    xa[0, 3] = np.nan  # gene 3 leaves the retrieval genes
    partners = {(pa.row_id[i], pb.row_id[i]) for i in range(5)}  # row 5 has no matched partner
    ca = np.tile(xa.mean(axis=0), (6, 1))
    out = retrieval.cross_dataset_retrieval(pa, xa, ca, pb, xb, np.tile(xb.mean(axis=0), (6, 1)), partners, "a", "b")
    strict = out.loc[out["positive"] == "strict_matched_condition"]
    assert set(strict["direction"]) == {"a_to_b", "b_to_a"}
    assert len(strict) == 2 * 5 * 3  # directions × queries with a partner × similarities
    assert (strict["observed"] == 1.0).all() and (strict["n_candidates"] == 6).all()
    assert (out["n_genes"] == 39).all()
    # every query has the same CID on the other side: compound positives exist for all six
    assert len(out.loc[out["positive"] == "compound_across_doses"]) == 2 * 6 * 3
    # the centroid is NaN on gene 3 only, which left the retrieval genes: every query has a baseline
    assert out["baseline"].notna().all()
    assert np.allclose(out["adjusted"], out["observed"] - out["baseline"])


def test_cross_dataset_pool_rules():
    rng = np.random.default_rng(1)
    pa, pb = _pool("a", list("1234"), [1.0] * 4), _pool("b", list("1234"), [1.0] * 4)
    x = rng.normal(size=(4, 10))
    partners = {(pa.row_id[i], pb.row_id[i]) for i in range(4)}
    assert retrieval.cross_dataset_retrieval(pa, x, x, pb, x, x, partners, "a", "b").empty  # < 5 rows
    pa, pb = _pool("a", ["7"] * 5, [1.0] * 5), _pool("b", ["7"] * 5, [1.0] * 5)
    x = rng.normal(size=(5, 10))
    assert retrieval.cross_dataset_retrieval(pa, x, x, pb, x, x, set(), "a", "b").empty  # one CID


def test_nan_centroid_means_no_baseline():
    rng = np.random.default_rng(2)
    cids = [str(i) for i in range(5)]
    pa, pb = _pool("a", cids, [1.0] * 5), _pool("b", cids, [1.0] * 5)
    x = rng.normal(size=(5, 8))
    cent = np.full((5, 8), np.nan)
    partners = {(pa.row_id[i], pb.row_id[i]) for i in range(5)}
    out = retrieval.cross_dataset_retrieval(pa, x, cent, pb, x, cent, partners, "a", "b")
    assert len(out) and out["baseline"].isna().all() and out["adjusted"].isna().all()


def test_replicate_retrieval_never_retrieves_itself():
    rng = np.random.default_rng(3)
    base = rng.normal(size=(10, 30))
    x = np.repeat(base, 2, axis=0) + 0.01 * rng.normal(size=(20, 30))
    rows = pd.DataFrame({"row_id": [f"r{i}" for i in range(20)], "contrast_id": [f"c{i}" for i in range(20)],
                         "pubchem_cid": [str(i // 2) for i in range(20)], "dose_uM": 1.0, "cell_type": "A549",
                         "time_h": 24.0})
    rows["condition"] = rows["pubchem_cid"]
    out = retrieval.replicate_retrieval(rows, x, np.tile(x.mean(axis=0), (20, 1)), "ds")
    strict = out.loc[out["positive"] == "strict_matched_condition"]
    assert len(strict) == 20 * 3 and (strict["n_candidates"] == 19).all() and (strict["n_positives"] == 1).all()
    assert (strict["observed"] == 1.0).all()
    # fewer than 10 CIDs: no stratum
    assert retrieval.replicate_retrieval(rows.iloc[:18], x[:18], x[:18], "ds").empty


def test_summarize_nested_mean():
    df = pd.DataFrame({"dataset_a": "a", "dataset_b": "b", "positive": "p", "similarity": "s",
                       "direction": ["a_to_b", "a_to_b", "a_to_b", "b_to_a"],
                       "cell_type": ["x", "x", "y", "x"], "time_h": 24.0, "pubchem_cid": ["1", "2", "3", "1"],
                       "observed": [1.0, 0.0, 1.0, 0.25], "baseline": 0.5, "adjusted": 0.0})
    s = retrieval.summarize(df)
    # a_to_b: mean(mean(1, 0), 1) = 0.75; b_to_a: 0.25 → 0.5 (a flat mean would be 0.5625)
    assert s["observed"].iloc[0] == pytest.approx(0.5)
    assert s["n_queries"].iloc[0] == 4 and s["n_compounds"].iloc[0] == 3


def _l1000_pair(home):
    """The demo L1000 I–II pair matched without the stage-1 suppression (no third dataset in this home)."""
    from cpb_assets.agreement import matching
    from cpb_assets.agreement.workloads import read_group_de

    a, b = "l1000_phase1", "l1000_phase2"
    de = {ds: read_group_de(home / "tables" / "de" / f"dataset={ds}" / "mode=group", ["CVCL_0023", "CVCL_0031",
                                                                                      "CVCL_0132", "CVCL_0035"])
          for ds in (a, b)}
    rows = pd.concat([matching.condition_rows(de[ds], ds) for ds in (a, b)], ignore_index=True)
    matched = matching.stage2(rows, a, b).assign(stage=2)
    return a, b, de, rows, matched


@pytest.mark.r
def test_demo_world_strict_retrieval_beats_half(l1000_home):
    a, b, de, rows, matched = _l1000_pair(l1000_home)
    assert matched["pubchem_cid"].nunique() >= 10
    out = retrieval.pair_retrieval(matched, rows.assign(retained=True), de[a], de[b], a, b)
    assert retrieval.check_columns(out) == []
    summary = retrieval.summarize(out).set_index(["positive", "similarity"])
    strict = summary.loc[("strict_matched_condition", "spearman")]
    # planted: the same compound's true effect underlies both phases, so its partner ranks near the top
    assert strict["observed"] > 0.5
    assert set(out["direction"]) == {"a_to_b", "b_to_a"}


def test_paired_similarity_equals_matrix_diagonal():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(7, 20)), rng.normal(size=(7, 20))
    y[3] = 0.0  # invalid for cosine and Spearman, fine for Euclidean
    for kind in retrieval.SIMILARITIES:
        full = np.diag(retrieval.similarity(x, y, kind)).copy()
        got = retrieval.paired_similarity(x, y, kind)
        if kind != "neg_euclidean":
            assert np.isnan(got[3])
            full[3] = np.nan
        assert got == pytest.approx(full, abs=1e-12, nan_ok=True)
