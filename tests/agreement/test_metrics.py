"""Hand-computed answers for every agreement metric and the baselines (METHODS §4)."""
import numpy as np
import pytest
from scipy.stats import spearmanr

from cpb_assets.agreement import baselines, metrics
from cpb_assets.agreement.metrics import Signatures

NAN = np.nan


def sig(lfc, t=None, adj_p=None, centroid=False):
    lfc = np.atleast_2d(np.asarray(lfc, float))
    t = lfc.copy() if t is None else np.atleast_2d(np.asarray(t, float))
    if centroid:
        return Signatures(lfc, t, None)
    adj_p = np.full(lfc.shape, 0.01) if adj_p is None else np.atleast_2d(np.asarray(adj_p, float))
    return Signatures(lfc, t, adj_p)


def test_spearman_ties_match_hand_value_and_scipy():
    left, right = sig([1, 2, 2, 3]), sig([1, 2, 3, 4])
    # ranks [1, 2.5, 2.5, 4] vs [1, 2, 3, 4]: cov 4.5, var 4.5 and 5
    assert metrics.spearman_logfc(left, right)[0] == pytest.approx(4.5 / np.sqrt(22.5), abs=1e-12)
    assert metrics.spearman_logfc(left, right)[0] == pytest.approx(spearmanr([1, 2, 2, 3], [1, 2, 3, 4])[0])


def test_spearman_drops_nan_genes_per_metric():
    # logFC: gene 1 NaN on the left -> [1, 3, 2] vs [1, 2, 3] -> 1 - 6*2/(3*8) = 0.5
    left = sig([1, NAN, 3, 2], t=[1, 2, 3, 4])
    right = sig([1, 5, 2, 3], t=[1, 2, 3, 4])
    assert metrics.spearman_logfc(left, right)[0] == pytest.approx(0.5, abs=1e-12)
    assert metrics.spearman_t(left, right)[0] == pytest.approx(1.0, abs=1e-12)  # t keeps all four genes


def test_spearman_two_genes_is_plus_minus_one_and_degenerate_is_nan():
    out = metrics.spearman_logfc(sig([[1, 2], [1, 2], [1, 2], [1, 1]]), sig([[3, 4], [4, 3], [5, NAN], [1, 2]]))
    assert out[0] == 1.0 and out[1] == -1.0
    assert np.isnan(out[2])  # one finite pair
    assert np.isnan(out[3])  # constant ranks


def test_topk_overlap_ties_by_gene_order():
    # n = 6 -> k_eff = min(50, 3) = 3 (k above the gene count)
    left, right = sig([0] * 6, t=[2, 1, 1, 1, 0, -1]), sig([0] * 6, t=[3, 0, 0, 2, 1, -1])
    # up: L {0,1,2} (ties 1,1,1 -> genes 1, 2), R {0,3,4} -> 1/3; down: L {5,4,1}, R {5,1,2} -> 2/3
    assert metrics.topk_overlap_t(left, right)[0] == pytest.approx(0.5, abs=1e-12)
    # replicates: k_eff = min(50, n) = 6 -> every gene on both sides
    assert metrics.topk_overlap_t(left, right, k_rule="full")[0] == 1.0


def test_topk_overlap_plain_and_empty():
    left, right = sig([0] * 6, t=[5, 4, 3, -1, -2, -3]), sig([0] * 6, t=[5, 3, -3, 4, -2, -1])
    assert metrics.topk_overlap_t(left, right)[0] == pytest.approx(2 / 3, abs=1e-12)
    assert np.isnan(metrics.topk_overlap_t(sig([0], t=[1.0]), sig([0], t=[2.0]))[0])  # k_eff = 0


LFC_L = [3, -2, 1, 0.5, 0.4, 0.3]
P_L = [0.01, 0.01, 0.01, 0.5, 0.5, 0.5]
LFC_R = [0.5, 4, 3, -2, 1, 0.1]
P_R = [0.01, 0.01, 0.01, 0.01, 0.01, 0.5]


def test_deg_spearman_symmetric_mean():
    left, right = sig(LFC_L, adj_p=P_L), sig(LFC_R, adj_p=P_R)
    # L mask {0,1,2}: [3,-2,1] vs [.5,4,3] -> -1; R mask {0..4}: sum d^2 = 30 -> 1 - 180/120 = -0.5
    assert metrics.deg_spearman(left, right, "p05")[0] == pytest.approx(-0.75, abs=1e-12)


def test_deg_masks_two_genes_and_empty():
    left = sig([1, 2, 3, 4], adj_p=[0.01, 0.01, 0.9, 0.9])
    right = sig([5, 6, 1, 0], adj_p=[0.01, 0.01, 0.9, 0.9])
    assert metrics.deg_spearman(left, right, "p05")[0] == 1.0
    right_down = sig([6, 5, 1, 0], adj_p=[0.01, 0.01, 0.9, 0.9])
    assert metrics.deg_spearman(left, right_down, "p05")[0] == -1.0
    none = sig([1, 2, 3, 4], adj_p=[0.9] * 4)
    assert np.isnan(metrics.deg_spearman(none, right, "p05")[0])
    assert np.isnan(metrics.direction(none, right, "p05")[0])
    assert np.isnan(metrics.de_overlap_refn(none, none, "p05")[0])


def test_de_overlap_refn_nan_when_other_side_has_fewer_degs():
    left, right = sig(LFC_L, adj_p=P_L), sig(LFC_R, adj_p=P_R)
    # ref L (n=3): L top {0,1,2}, R top-3 by |logFC| {1,2,3} -> 2/3; ref R (n=5): L has 3 < 5 -> NaN
    (ml, pl, nl, _), (mr, pr, nr, _) = metrics._deg_lists(left, right, "p05")
    assert np.isnan(metrics.overlap_at(pl, nl, pr, nr, ml, mr, nr)[0])
    assert metrics.de_overlap_refn(left, right, "p05")[0] == pytest.approx(2 / 3, abs=1e-12)
    assert metrics.de_overlap_k(left, right, "p05", k=2)[0] == pytest.approx(0.5, abs=1e-12)  # {0,1} vs {1,2}
    assert np.isnan(metrics.METRICS["de_overlap_50"](left, right, "p05")[0])  # fewer than 50 DEGs


def test_direction_variants():
    lfc_l, lfc_r = [1, -1, 2, -2, 0.1], [1, 1, 3, -1, -0.1]
    left, right = sig(lfc_l), sig(lfc_r)
    assert metrics.direction(left, right, "p05")[0] == pytest.approx(3 / 5)
    assert metrics.direction(left, right, "p05_lfc02")[0] == pytest.approx(3 / 4)  # gene 4 fails |logFC| > 0.2


def test_registry_covers_the_issue_names_and_variants():
    assert metrics.METRIC_NAMES == ["spearman_logfc", "spearman_t", "topk_overlap_t", "deg_spearman",
                                    "de_overlap_refn", "de_overlap_50", "de_overlap_100", "de_overlap_200",
                                    "direction"]
    assert metrics.METRICS["direction"].variants == ("p05", "p05_lfc02")
    assert metrics.METRICS["spearman_t"].variants == ("all",)
    assert len(metrics.metric_variants()) == 3 + 6 * 2


def test_vectorised_rows_equal_one_at_a_time():
    rng = np.random.default_rng(3)
    lfc_l, lfc_r = rng.normal(size=(7, 300)), rng.normal(size=(7, 300))
    lfc_l[lfc_l > 2.2] = NAN
    p_l, p_r = rng.uniform(0, 0.2, (7, 300)), rng.uniform(0, 0.2, (7, 300))
    left, right = Signatures(lfc_l, lfc_l * 2, p_l), Signatures(lfc_r, lfc_r * 3, p_r)
    full = metrics.score_all(left, right)
    for i in range(7):
        one = metrics.score_all(left.take([i]), right.take([i]))
        for key, val in one.items():
            np.testing.assert_allclose(val[0], full[key][i], rtol=0, atol=1e-14, err_msg=str(key))


def test_centroids_propagate_or_skip_nan():
    values = np.array([[1, 2], [3, NAN], [5, 6], [7, 8], [9, 9]], float)
    ctx = np.array(["c", "c", "c", "c", "other"], object)
    cid = np.array(["A", "A", "B", "C", "A"], object)
    prop = baselines.centroids(values, ctx, cid, skip_nan=False)
    skip = baselines.centroids(values, ctx, cid, skip_nan=True)
    np.testing.assert_allclose(prop[0], [6, 7])
    np.testing.assert_allclose(prop[1], [6, 7])
    np.testing.assert_allclose(prop[2], [11 / 3, NAN])
    np.testing.assert_allclose(skip[2], [11 / 3, 5])
    np.testing.assert_allclose(skip[3], [3, 4])
    assert np.isnan(prop[4]).all() and np.isnan(skip[4]).all()  # no peer of another compound


def test_baseline_uses_the_sample_mask_and_pair_rules():
    left = sig([1, -1, 2, 0.5], adj_p=[0.01, 0.01, 0.01, 0.9])
    centroid = sig([0.1, 5, 3, 4], centroid=True)
    # direction on the sample's DEGs {0,1,2} with the centroid's finite genes: 2 of 3 agree
    assert metrics.direction(left, centroid, "p05")[0] == pytest.approx(2 / 3)
    # DE overlap: the sample is the only reference (n = 3); the centroid ranks all its finite genes by |value|:
    # sample top-3 {2, 0, 1} vs centroid top-3 {1, 3, 2} -> 2/3
    assert metrics.de_overlap_refn(left, centroid, "p05")[0] == pytest.approx(2 / 3)
    # DEG Spearman baseline: only the sample's mask ([1, -1, 2] vs [0.1, 5, 3] -> ranks [2,1,3] vs [1,3,2] -> -0.5)
    assert metrics.deg_spearman(left, centroid, "p05")[0] == pytest.approx(-0.5)
    bl, br = np.array([0.2, NAN, NAN]), np.array([0.4, 0.1, NAN])
    np.testing.assert_allclose(baselines.pair_baseline(bl, br), [0.3, 0.1, NAN])
    np.testing.assert_allclose(baselines.adjusted(np.array([0.5, 0.5, 0.5]), baselines.pair_baseline(bl, br)),
                               [0.2, 0.4, NAN])
