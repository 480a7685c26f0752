"""Cluster BCa bootstrap (METHODS §4): authors' known answer, scipy parity, coverage, fallbacks."""
import hashlib

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cpb_assets.agreement import bootstrap
from cpb_assets.agreement.bootstrap import cluster_bca

KNOWN = (-0.349548235142246, -0.639382564080838, 0.055702994198866)


def _authors_table() -> pd.DataFrame:
    """METHODS §4 known-answer table: 48 rows, m1 = default_rng(7).normal(size=48) (the draw that
    reproduces the authors' estimate to the last digit), NaN at rows 2, 19, 33."""
    i = np.arange(48)
    df = pd.DataFrame({"pair": np.where(i < 24, "ab", "cd"), "cluster": [f"c{k % 8}" for k in i],
                       "direction": i % 2, "cell": [f"l{k % 3}" for k in i],
                       "m1": np.random.default_rng(7).normal(size=48)})
    df.loc[[2, 19, 33], "m1"] = np.nan
    return df


def _authors_result():
    d = _authors_table().query("pair == 'ab'")
    return cluster_bca(d["m1"].to_numpy(), list(d["cluster"]), seed=99, n_resamples=101,
                       inner=list(zip(d["direction"], d["cell"])), outer=list(d["direction"]))


def test_known_answer_estimate():
    r = _authors_result()
    assert r.estimate == pytest.approx(KNOWN[0], abs=1e-12)
    assert (r.n_clusters, r.n_rows, r.method) == (8, 22, "bca")
    assert r.lo < r.estimate < r.hi


@pytest.mark.xfail(strict=True, reason="interval not reproduced: the authors' resample draw is not pinned down "
                                       "by METHODS §4; their interval arithmetic is ours, only the 101 drawn "
                                       "resamples differ (see docs/methods.md §4S)")
def test_known_answer_interval():
    r = _authors_result()
    assert (r.lo, r.hi) == pytest.approx(KNOWN[1:], abs=1e-12)


def test_parity_with_scipy_bca_one_row_per_cluster():
    for seed, x in ((11, np.random.default_rng(5).gamma(2.0, size=30)),
                    (3, np.random.default_rng(6).normal(size=57) ** 3)):
        ref = stats.bootstrap((x,), np.mean, n_resamples=2000, method="BCa", confidence_level=0.95,
                              rng=np.random.default_rng(seed))
        ours = cluster_bca(x, list(range(len(x))), seed=seed)
        assert ours.method == "bca"
        assert ours.lo == pytest.approx(ref.confidence_interval.low, abs=1e-12)
        assert ours.hi == pytest.approx(ref.confidence_interval.high, abs=1e-12)


def test_coverage_of_clustered_mean():
    # 300 simulated tables: 25 clusters × 4 rows, cluster effect sd 1, row noise sd 1, true mean 0
    rng = np.random.default_rng(2026)
    clusters = np.repeat(np.arange(25), 4)
    hits, row_hits = 0, 0
    for rep in range(300):
        v = rng.normal(size=25)[clusters] + rng.normal(size=100)
        r = cluster_bca(v, clusters, seed=rep, n_resamples=400)
        hits += r.lo <= 0.0 <= r.hi
        naive = cluster_bca(v, np.arange(100), seed=rep, n_resamples=400)  # rows as if independent
        row_hits += naive.lo <= 0.0 <= naive.hi
    assert 0.90 <= hits / 300 <= 0.99
    assert row_hits / 300 < 0.85  # ignoring the clusters under-covers: the clustering matters


def test_fallbacks():
    assert cluster_bca([1.0, 2.0, 3.0], ["a", "a", "a"], seed=1).method == "nan"  # one cluster
    assert cluster_bca([np.nan, np.nan], ["a", "b"], seed=1).method == "nan"
    r = cluster_bca([0.3, 0.3, 0.3, 0.3], ["a", "b", "c", "d"], seed=1)
    assert (r.lo, r.hi, r.method) == (0.3, 0.3, "bca")  # all bootstrap values equal
    assert cluster_bca(np.arange(10.0), list("abcdefghij"), seed=1, n_resamples=19).method == "nan"  # < 20
    r = cluster_bca([0.0, 1.0, 0.5, 0.2], ["a", "b", "a", "b"], seed=4)  # 2 clusters → 2 jackknife values
    assert r.method == "percentile" and 0.0 <= r.lo <= r.hi <= 1.0


def test_nan_rows_do_not_found_clusters():
    r = cluster_bca([np.nan, 1.0, 2.0, 4.0], ["z", "a", "b", "c"], seed=2)
    assert (r.n_clusters, r.n_rows) == (3, 3) and r.estimate == pytest.approx(7 / 3)


def test_nested_mean_statistic():
    # inner groups (d, cell): (0,x)=[1,3] → 2, (0,y)=[6] → 6, (1,x)=[0] → 0; outer: d0 = 4, d1 = 0 → 2
    t = bootstrap.ClusteredTable([1.0, 3.0, 6.0, 0.0], ["a", "b", "a", "c"],
                                 inner=[(0, "x"), (0, "x"), (0, "y"), (1, "x")], outer=[0, 0, 0, 1])
    assert t.estimate() == pytest.approx(2.0)
    # drop cluster a: (0,x)=[3] → 3, (1,x)=0 → mean(3, 0) = 1.5; drop b: d0 = mean(1, 6), d1 = 0 → 1.75
    assert t.jackknife() == pytest.approx([1.5, 1.75, 4.0])


def test_resample_counts_match_the_index_matrix():
    idx = np.random.default_rng(9).integers(0, 7, size=(50, 7))
    w = bootstrap.resample_counts(np.random.default_rng(9), 7, 50)
    assert w.shape == (50, 7) and (w.sum(axis=1) == 7).all()
    assert all((np.bincount(idx[b], minlength=7) == w[b]).all() for b in range(50))


def test_table_cell_seed_formula():
    key = ("pair", ("lincs", "tahoe"), "deg_spearman/p05", "adjusted")
    h = int.from_bytes(hashlib.blake2b(repr(key).encode(), digest_size=8).digest(), "little")
    assert bootstrap.table_cell_seed(*key) == (20260505 + h) % (2**32 - 1)
    assert bootstrap.table_cell_seed(*key) != bootstrap.table_cell_seed("pair", ("lincs", "tahoe"),
                                                                        "deg_spearman/p05", "observed")


def test_resample_blocks_equal_one_matrix(monkeypatch):
    x = np.random.default_rng(8).normal(size=301)
    whole = cluster_bca(x, list(range(301)), seed=5, n_resamples=500)
    monkeypatch.setattr(bootstrap, "MAX_BLOCK_CELLS", 301 * 7)  # blocks of 6 resamples
    blocks = list(bootstrap._resample_blocks(np.random.default_rng(5), 301, 500))
    assert len(blocks) > 50 and sum(len(b) for b in blocks) == 500
    assert cluster_bca(x, list(range(301)), seed=5, n_resamples=500) == whole
