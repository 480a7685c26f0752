"""Strata, batches, filters and designs (no R needed)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cpb_assets.effects.labels import condition_labels
from cpb_assets.effects.strata import (DEUnit, build_design, non_estimable, pack_batches, plan_units,
                                       stratum_ids)


def _big_stratum(obs_frame, n_conditions=2000, reps=3, n_ctrl=40, cell="CVCL_0023"):
    """Synthetic obs: n_conditions × reps treated samples plus DMSO controls, one cell type, 24 h."""
    rows = []
    for i in range(n_conditions):
        for r in range(reps):
            rows.append({"plate": f"P{r}", "well": f"W{i:05d}", "cell_type": cell, "perturbagen": f"cmp{i:05d}",
                         "is_control": False, "pert_dose_uM": 1.0, "pert_time_h": 24.0, "pubchem_cid": None})
    for j in range(n_ctrl):
        rows.append({"plate": f"P{j % reps}", "well": f"C{j:03d}", "cell_type": cell, "perturbagen": "DMSO",
                     "is_control": True, "pert_dose_uM": 0.0, "pert_time_h": 24.0, "pubchem_cid": None})
    return obs_frame(rows, "novartis_drugseq")


def test_pack_batches_6000_samples_into_3():
    sizes = {f"c{i}": 3 for i in range(2000)}  # 6,000 non-control samples
    batches = pack_batches(sizes, 2500)
    assert len(batches) == 3
    loads = [sum(sizes[c] for c in b) for b in batches]
    assert sum(loads) == 6000 and max(loads) - min(loads) <= 3  # balanced to within one condition
    assert max(loads) <= 2500
    assert sorted(c for b in batches for c in b) == sorted(sizes)  # every condition exactly once


def test_pack_batches_small_stratum_is_one_batch():
    assert pack_batches({"a": 3, "b": 4}, 2500) == [["a", "b"]]
    assert pack_batches({}, 2500) == []


def test_pack_batches_keeps_conditions_whole_and_under_the_cap():
    sizes = {"a": 1300, "b": 1300, "c": 1300, "d": 1300, "e": 1300}  # 6,500: 3 bins would need 2,600
    batches = pack_batches(sizes, 2500)
    assert all(sum(sizes[c] for c in b) <= 2500 for b in batches)
    assert len(batches) == 5
    assert pack_batches({"huge": 4000, "x": 10}, 2500) == [["huge"], ["x"]]  # oversized condition alone


def test_plan_units_batches_with_controls_in_every_batch(make_obs):
    obs = _big_stratum(make_obs)
    units, skipped = plan_units(obs, "novartis_drugseq", "group")
    assert not skipped
    assert [u.batch for u in units] == [1, 2, 3] and {u.n_batches for u in units} == {3}
    ctrl = set(obs.index[obs["is_control"]])
    treated_seen = []
    for u in units:
        ids = set(u.sample_ids)
        assert ctrl <= ids  # all 40 controls copied into each batch
        treated = ids - ctrl
        assert 1995 <= len(treated) <= 2005
        # whole conditions: all 3 replicates of a compound in the same batch
        per_cmp = obs.loc[sorted(treated)].groupby("perturbagen").size()
        assert (per_cmp == 3).all()
        treated_seen += sorted(treated)
    assert len(treated_seen) == len(set(treated_seen)) == 6000


def test_unit_is_serialisable(make_obs):
    units, _ = plan_units(_big_stratum(make_obs, 10, 2, 4), "vcpi_0001", "sep")
    u = units[0]
    assert DEUnit.from_json(u.to_json()) == u


def _mixed_obs(obs_frame, dataset="sciplex"):
    rows = []
    for ct in ["CVCL_0023", "CVCL_0004"]:
        for t in [24.0, 72.0]:
            for d in [0.1, 1.0]:
                for r in range(2):
                    rows.append({"plate": "P1", "well": f"{ct[-2:]}{t:g}{d:g}{r}", "cell_type": ct,
                                 "perturbagen": "drugA", "is_control": False, "pert_dose_uM": d, "pert_time_h": t,
                                 "pubchem_cid": "1", "psbulk_cells": [5, 12][r]})
        for t in [24.0, 72.0, 96.0]:  # no treated sample at 96 h
            for r in range(3):
                rows.append({"plate": "P1", "well": f"{ct[-2:]}D{t:g}{r}", "cell_type": ct, "perturbagen": "DMSO",
                             "is_control": True, "pert_dose_uM": 0.0, "pert_time_h": t, "pubchem_cid": None,
                             "psbulk_cells": [-666, 30, 9][r]})
    return obs_frame(rows, dataset)


def test_min_cells_filter_time_restriction_and_orphan_controls(make_obs):
    obs = _mixed_obs(make_obs, "sciplex")
    units, _ = plan_units(obs, "sciplex", "group")
    assert [u.stratum for u in units] == ["CVCL_0004", "CVCL_0023"]
    for u in units:
        sub = obs.loc[list(u.sample_ids)]
        # sci-Plex: DE at 24 h only (the 72 h samples stay in the harmonized data, not in the fit)
        assert set(sub["pert_time_h"]) == {24.0}
        assert any("outside the DE times ['24'] h" in n and n.startswith("20 samples") for n in u.notes)  # 72 and 96 h, both lines
        # sci-Plex: ≥ 10 cells, −666 kept: at 24 h 1 treated (5 cells) and 1 DMSO (9 cells) out per dose/line
        assert ((sub["psbulk_cells"] >= 10) | (sub["psbulk_cells"] == -666)).all()
        assert sorted(sub["psbulk_cells"]) == [-666, 12, 12, 30]
        assert 96.0 not in set(sub["pert_time_h"])  # controls at 96 h have no treated partner
        # unit rows point at the unit's samples in the planned obs
        assert list(obs.index[list(u.rows)]) == list(u.sample_ids)
    # every time for a dataset outside Tahoe/sci-Plex/OP3/L1000, and no cell minimum
    units, _ = plan_units(_mixed_obs(make_obs, "vcpi_0001"), "vcpi_0001", "group")
    assert sum(len(u.sample_ids) for u in units) == 2 * (8 + 6)
    assert {t for u in units for t in obs.loc[list(u.sample_ids), "pert_time_h"]} == {24.0, 72.0}


def test_gdpx2_strata_are_cell_type_by_dmso_volume(make_obs):
    obs = _mixed_obs(make_obs, "gdpx2")
    obs["percent_volume_dmso"] = np.where(np.arange(len(obs)) % 2 == 0, 0.1, 0.5)
    assert sorted(stratum_ids(obs, "gdpx2").unique()) == ["CVCL_0004|dmso0.1", "CVCL_0004|dmso0.5",
                                                          "CVCL_0023|dmso0.1", "CVCL_0023|dmso0.5"]
    with pytest.raises(KeyError, match="percent_volume_dmso"):
        stratum_ids(obs.drop(columns="percent_volume_dmso"), "gdpx2")


def test_design_contrasts_same_time_only_and_explicit_level_order(make_obs):
    obs = _mixed_obs(make_obs, "vcpi_0001")
    obs = obs[obs["cell_type"] == "CVCL_0023"]
    obs = obs.assign(perturbagen=np.where(obs["is_control"], "DMSO", np.where(obs.index.str.len() % 2 == 0,
                                                                               "b-drug", "Adrug")))
    lab = condition_labels(obs, "vcpi_0001", "group")["label"]
    des = build_design(obs, lab)
    # levels in Python's sort (uppercase first), not a locale's
    assert [des.coef_labels[c] for c in des.design.columns] == sorted(lab.unique())
    for _, row in des.contrast_table.iterrows():
        assert row["treated_label"].split("_")[-1] == row["control_label"].split("_")[-1]  # same time
        v = des.contrasts[row["contrast"]]
        assert v.sum() == 0 and (v == 1).sum() == 1 and (v == -1).sum() == 1
        assert des.coef_labels[v.idxmax()] == row["treated_label"]
        assert des.coef_labels[v.idxmin()] == row["control_label"]
    # each design column indicates exactly the samples of its label
    for c in des.design.columns:
        assert (des.design[c].to_numpy() == (lab == des.coef_labels[c]).to_numpy()).all()


def test_plate_terms_and_rank_check(make_obs):
    obs = _mixed_obs(make_obs, "vcpi_0001")
    obs = obs[(obs["cell_type"] == "CVCL_0023") & (obs["pert_time_h"] == 24.0)].copy()
    obs["plate"] = np.where(np.arange(len(obs)) % 2 == 0, "PA", "PB")
    lab = condition_labels(obs, "vcpi_0001", "group")["label"]
    des = build_design(obs, lab)
    assert list(des.design.columns[-1:]) == ["plate02"] and des.coef_labels["plate02"] == "PB"
    assert non_estimable(des.design, des.coef_labels) == []
    # confound: plate PC holds exactly one condition and nothing else
    obs.loc[lab == "drugA_1uM_24h", "plate"] = "PC"
    des = build_design(obs, lab)
    bad = non_estimable(des.design, des.coef_labels)
    assert len(bad) == 1 and bad[0] in {"PC", "drugA_1uM_24h"}
