"""The agreement stage on the demo world through Dagster: matched pairs equal the planted overlaps,
planted compounds agree in direction beyond their baseline, the views answer, the report has images.

Datasets: L1000 Phase I and II (from the shared `l1000_home` session fixture; group DE copied) and
sci-Plex (raw → harmonized → group DE here). With these three, the Phase I–II edges in A375 whose
CID is not a sci-Plex compound are suppressed, the rest are rescued by cell type or by CID.
"""
from __future__ import annotations

import itertools
import shutil
import warnings

import duckdb
import numpy as np
import pandas as pd
import pytest

from cpb_assets.demo.world import DESIGNS

pytestmark = pytest.mark.r

DATASETS = ["l1000_phase1", "l1000_phase2", "sciplex"]
PAIRS = ["l1000_phase1__l1000_phase2", "l1000_phase1__sciplex", "l1000_phase2__sciplex"]
DE_TIME_H = 24.0  # METHODS §3: L1000 and sci-Plex enter the DE layer at 24 h only


@pytest.fixture(scope="session")
def agreement_home(tmp_path_factory, l1000_home):
    """A CPB_HOME with group DE of the three datasets and the agreement stage materialized."""
    import dagster as dg

    from tests.conftest import make_home, home_environment

    home = make_home(tmp_path_factory.mktemp("agreement_home"))
    for ds in DATASETS[:2]:
        shutil.copytree(l1000_home / "tables" / "de" / f"dataset={ds}" / "mode=group",
                        home / "tables" / "de" / f"dataset={ds}" / "mode=group")
    with home_environment(home):
        from cpb_jobs.demo import _init_instance, _materialize
        _init_instance()
        for step, key in [("raw_source", "sciplex"), ("compound_registry", None), ("cellosaurus", None),
                          ("harmonized_adata", "sciplex"), ("de_table", {"dataset": "sciplex", "mode": "group"})]:
            label, ok, _, errors = _materialize(step, key)
            assert ok, (label, errors)
        warnings.filterwarnings("ignore")
        from cpb_assets.agreement.assets import agreement_report, agreement_scores, match_candidates, matched_conditions
        from cpb_jobs.definitions import ALL_ASSETS, ALL_CHECKS, defs

        results = {}
        with dg.DagsterInstance.get() as instance:
            def run(assets, partition=None):
                sel = dg.AssetSelection.assets(*assets) | dg.AssetSelection.checks_for_assets(*assets)
                r = dg.materialize([*ALL_ASSETS, *ALL_CHECKS], selection=sel, instance=instance,
                                   partition_key=partition, resources=defs.resources, raise_on_error=True)
                checks = [ev.event_specific_data for ev in r.all_events if ev.event_type_value == "ASSET_CHECK_EVALUATION"]
                assert all(c.passed for c in checks), [(c.check_name, c.metadata) for c in checks]
                return r
            run([match_candidates])
            for pair in PAIRS:
                run([matched_conditions, agreement_scores], pair)
            results["report"] = run([agreement_report])
    return home, results


def _sql(home, query):
    con = duckdb.connect(str(home / "catalog.duckdb"), read_only=True)
    try:
        return con.execute(query).df()
    finally:
        con.close()


def _fold(a, b):
    return max(a / b, b / a)


def _mnn(doses_a, doses_b):
    """Brute-force mutual nearest neighbours on the fold ratio, ties within 1e-12, fold ≤ 10."""
    out = set()
    for x in doses_a:
        for y in doses_b:
            f = _fold(x, y)
            if (f <= 10 + 1e-12 and f <= min(_fold(x, v) for v in doses_b) + 1e-12
                    and f <= min(_fold(u, y) for u in doses_a) + 1e-12):
                out.add((x, y))
    return out


def planted_matches(world) -> set:
    """Stage-2 matches implied by the generator's designs: (pair, CID, cell, dose_a, dose_b)."""
    cid = world.compounds["pubchem_cid"].astype(int).astype(str).to_numpy()
    cond = {ds: {(cid[c], cell): DESIGNS[ds].doses_uM for c in DESIGNS[ds].compounds for cell in DESIGNS[ds].cell_types
                 if DE_TIME_H in DESIGNS[ds].times_h} for ds in DATASETS}

    def edges(conditions):
        out = set()
        for a, b in itertools.combinations(DATASETS, 2):
            for key in set(conditions[a]) & set(conditions[b]):
                out |= {(f"{a}__{b}", *key, x, y) for x, y in _mnn(conditions[a][key], conditions[b][key])}
        return out

    stage1 = edges(cond)
    phases = "l1000_phase1__l1000_phase2"
    other = [e for e in stage1 if e[0] != phases]
    other_cells, other_cids = {e[2] for e in other}, {e[1] for e in other}
    kept = {e for e in stage1 if e[0] != phases or e[2] in other_cells or e[1] in other_cids}
    retained = {ds: {} for ds in DATASETS}
    for pair, c, cell, x, y in kept:
        a, b = pair.split("__")
        retained[a].setdefault((c, cell), set()).add(x)
        retained[b].setdefault((c, cell), set()).add(y)
    stage2 = edges({ds: {k: tuple(sorted(v)) for k, v in r.items()} for ds, r in retained.items()})
    n_cids = {}
    for pair, c, cell, _, _ in stage2:
        n_cids.setdefault((pair, cell), set()).add(c)
    return {e for e in stage2 if len(n_cids[(e[0], e[2])]) >= 10}


def test_matched_pairs_equal_planted_overlaps(agreement_home, world):
    home, _ = agreement_home
    got = _sql(home, "select pair, pubchem_cid, cell_type, dose_a, dose_b from matched_conditions where stage = 2")
    found = {(p, c, cell, round(a, 9), round(b, 9)) for p, c, cell, a, b in got.itertuples(index=False)}
    expected = {(p, c, cell, round(a, 9), round(b, 9)) for p, c, cell, a, b in planted_matches(world)}
    assert len(expected) > 100
    assert found == expected
    # the A375 Phase I–II edges of compounds sci-Plex does not measure are suppressed, nothing else
    sup = _sql(home, "select dataset_a, dataset_b, cell_type, count(*) n from matched_conditions "
                     "where stage = 1 and suppressed group by all")
    assert set(sup["cell_type"]) == {"CVCL_0132"} and set(sup["dataset_b"]) == {"l1000_phase2"}
    # one group contrast per condition in these datasets: no duplicate stage-2 rows
    assert len(got) == len(found)


def test_direction_of_strong_planted_compounds_beats_baseline(agreement_home, world):
    home, _ = agreement_home
    comp = world.compounds
    strong = set(comp.loc[comp["potency"] >= comp["potency"].median(), "pubchem_cid"].astype(int).astype(str))
    df = _sql(home, "select pair, pubchem_cid, observed, baseline, adjusted from agreement_pairs "
                    "where metric = 'direction' and variant = 'p05'")
    df = df[df["pubchem_cid"].isin(strong)]
    for pair, part in df.groupby("pair"):
        assert part["observed"].notna().sum() >= 5, pair
        assert part["observed"].mean() > part["baseline"].mean(), pair
        assert part["adjusted"].mean() > 0, pair


def test_views_answer_and_scores_are_complete(agreement_home):
    home, _ = agreement_home
    counts = _sql(home, "select metric, variant, count(*) n, count(observed) n_obs from agreement_pairs group by all")
    assert len(counts) == 15 and counts["n"].nunique() == 1
    assert set(counts["metric"]) == {"spearman_logfc", "spearman_t", "topk_overlap_t", "deg_spearman",
                                     "de_overlap_refn", "de_overlap_50", "de_overlap_100", "de_overlap_200",
                                     "direction"}
    strength = _sql(home, "select count(*) n, avg(mean_abs_t) t from agreement_strength")
    assert strength["n"].iloc[0] == counts["n"].iloc[0] and strength["t"].iloc[0] > 0
    cols = set(_sql(home, "select * from matched_conditions limit 1").columns)
    assert {"dataset_a", "dataset_b", "contrast_a", "contrast_b", "pubchem_cid", "cell_type", "time_h", "dose_a",
            "dose_b", "fold", "stage", "suppressed"} <= cols


def test_report_has_heatmaps_in_metadata(agreement_home):
    home, results = agreement_home
    mat = results["report"].asset_materializations_for_node("agreement_report")[0]
    md = mat.metadata["heatmap_direction"].value
    assert md.startswith("![") and "data:image/png;base64," in md
    assert mat.metadata["heatmap_cells_filled"].value > 0
    assert (home / "reports" / "agreement" / "heatmap_deg_spearman_p05.png").stat().st_size > 1000
    tables = (home / "reports" / "agreement" / "tables.md").read_text()
    assert "L1000 Phase I–sci-Plex" in tables and "**Table 5.**" in tables


def test_checks_catch_broken_outputs(agreement_home):
    from cpb_assets.agreement.assets import check_matched, check_scores

    home, _ = agreement_home
    matched = pd.read_parquet(home / "tables" / "matched_conditions" / f"pair={PAIRS[1]}" / "part.parquet")
    assert check_matched(matched) == []
    bad = matched.copy()
    bad.loc[bad.index[-1], ["dose_b", "fold"]] = [bad["dose_a"].iloc[-1] * 11, 11.0]
    assert "fold above 10" in check_matched(bad)
    scores = pd.read_parquet(home / "tables" / "agreement_pairs" / f"pair={PAIRS[1]}" / "part.parquet")
    assert check_scores(scores) == []
    bad = scores.copy()
    bad.loc[bad["metric"] == "direction", "observed"] = 1.5
    assert check_scores(bad)


def test_pair_partitions_map_to_the_two_group_de_partitions():
    import dagster as dg

    from cpb_assets.agreement.assets import PAIR_DE_MAPPING, PAIRS, pair_partitions
    from cpb_assets.agreement.matching import split_pair
    from cpb_assets.datasets import DATASETS
    from cpb_assets.effects.assets import de_table

    assert len(PAIRS) == 78 and all(a < b for a, b in map(split_pair, PAIRS))
    assert {d for p in PAIRS for d in split_pair(p)} == set(DATASETS)
    de_parts = de_table.partitions_def
    up = PAIR_DE_MAPPING.get_upstream_mapped_partitions_result_for_partitions(
        pair_partitions.empty_subset().with_partition_keys(["l1000_phase1__sciplex"]), pair_partitions, de_parts)
    assert set(map(str, up.partitions_subset.get_partition_keys())) == {"l1000_phase1|group", "sciplex|group"}

    def down(mode):
        key = dg.MultiPartitionKey({"dataset": "sciplex", "mode": mode})
        return set(PAIR_DE_MAPPING.get_downstream_partitions_for_partitions(
            de_parts.empty_subset().with_partition_keys([key]), de_parts, pair_partitions).get_partition_keys())

    assert down("sep") == set()
    assert down("group") == {p for p in PAIRS if "sciplex" in split_pair(p)} and len(down("group")) == 12
