"""Two-stage matching rules on hand-made condition rows (METHODS §4)."""
import numpy as np
import pandas as pd
import pytest

from cpb_assets.agreement import matching


def rows(*specs):
    """specs: (dataset, cid, cell_type, time_h, dose_uM) -> eligible condition rows."""
    df = pd.DataFrame(specs, columns=["dataset", "pubchem_cid", "cell_type", "time_h", "dose_uM"])
    df["stratum"] = df["cell_type"]
    df["contrast_id"] = [f"c{i}" for i in range(len(df))]
    return matching.condition_rows(df)


def edge_doses(edges):
    return sorted(zip(edges["dose_a"], edges["dose_b"]))


@pytest.mark.parametrize("value", ["2244", "2244.0", 2244, 2244.0, " 2244 ", np.int64(2244), "2244.00"])
def test_cid_normalisation(value):
    assert matching.normalise_cid(value) == "2244"


@pytest.mark.parametrize("value", [None, "", "nan", "NaN", "None", "<NA>", float("nan")])
def test_cid_missing(value):
    assert matching.normalise_cid(value) is None


def test_keys_match_across_spellings():
    r = rows(("a", "2244.0", "C1", 24, 1.0), ("b", 2244, "C1", 24.0, 1.00000000000001))
    assert list(r["time_key"]) == ["24", "24"] and list(r["dose_key"]) == ["1", "1"]
    e = matching.mnn_edges(r)
    assert len(e) == 1 and e["pubchem_cid"].iloc[0] == "2244" and e["fold"].iloc[0] == 1.0


def test_ineligible_rows_dropped():
    r = rows(("a", "nan", "C1", 24, 1.0), ("a", "1", "", 24, 1.0), ("a", "1", "C1", np.nan, 1.0),
             ("a", "1", "C1", 24, 0.0), ("a", "1", "C1", 24, 1.0))
    assert len(r) == 1


def test_dose_tie_keeps_both_neighbours():
    # 0.3 vs {0.1, 0.9}: both folds are 3 (to within 1e-12) -> both edges
    e = matching.mnn_edges(rows(("a", "1", "C1", 24, 0.3), ("b", "1", "C1", 24, 0.1), ("b", "1", "C1", 24, 0.9)))
    assert edge_doses(e) == [(0.3, 0.1), (0.3, 0.9)]


def test_mutual_nearest_only_and_ten_fold_cap():
    # a {1, 3}, b {2}: b's nearest is 3 (fold 1.5); 1's only neighbour 2 is not mutual
    e = matching.mnn_edges(rows(("a", "1", "C", 24, 1), ("a", "1", "C", 24, 3), ("b", "1", "C", 24, 2)))
    assert edge_doses(e) == [(3.0, 2.0)]
    assert len(matching.mnn_edges(rows(("a", "1", "C", 24, 1), ("b", "1", "C", 24, 10)))) == 1  # fold 10 kept
    assert len(matching.mnn_edges(rows(("a", "1", "C", 24, 1), ("b", "1", "C", 24, 10.01)))) == 0
    # different time or cell type: never candidates
    assert len(matching.mnn_edges(rows(("a", "1", "C", 24, 1), ("b", "1", "C", 6, 1), ("b", "1", "D", 24, 1)))) == 0


def test_suppression_of_l1000_phases_and_rescue():
    p1, p2, th = "l1000_phase1", "l1000_phase2", "tahoe100m"
    r = rows((p1, "1", "C1", 24, 1), (p2, "1", "C1", 24, 1),   # only in I-II -> suppressed
             (p1, "2", "C2", 24, 1), (p2, "2", "C2", 24, 1),   # cell C2 occurs in I-Tahoe (other CID): rescued
             (p1, "3", "C2", 24, 1), (th, "3", "C2", 24, 1),
             (p1, "4", "C9", 24, 1), (p2, "4", "C9", 24, 1),   # CID 4 occurs in II-Tahoe (other cell): rescued
             (p2, "4", "C8", 24, 1), (th, "4", "C8", 24, 1))
    e = matching.stage1(r)
    flags = {(a, b, c): s for a, b, c, s in zip(e["dataset_a"], e["dataset_b"], e["pubchem_cid"], e["suppressed"])}
    assert flags == {(p1, p2, "1"): True, (p1, p2, "2"): False, (p1, th, "3"): False, (p1, p2, "4"): False,
                     (p2, th, "4"): False}
    kept = matching.retained_rows(r, e)
    assert set(kept["pubchem_cid"]) == {"2", "3", "4"}


def test_stage2_needs_ten_cids_per_stratum():
    specs = [(ds, str(c), "C1", 24, 1) for c in range(10) for ds in ("a", "b")]
    specs += [(ds, str(c), "C2", 24, 1) for c in range(9) for ds in ("a", "b")]
    r = rows(*specs)
    e1 = matching.stage1(r)
    two = matching.stage2(matching.retained_rows(r, e1), "a", "b")
    assert set(two["cell_type"]) == {"C1"} and (two["stratum_n_cids"] == 10).all()
    table = matching.matched_table(e1, two, "a", "b")
    assert (table["stage"] == 1).sum() == 19 and (table["stage"] == 2).sum() == 10


def test_stage2_reruns_mnn_within_retained_rows():
    # b's dose-3 row has no stage-1 edge, so it is not retained and cannot enter stage 2
    r = rows(("a", "1", "C", 24, 1), ("b", "1", "C", 24, 1), ("b", "1", "C", 24, 3))
    e1 = matching.stage1(r)
    assert edge_doses(e1) == [(1.0, 1.0)]
    two = matching.stage2(matching.retained_rows(r, e1), "a", "b", min_cids=1)
    assert edge_doses(two) == [(1.0, 1.0)]
