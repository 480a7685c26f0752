"""Condition labels (METHODS §3): %.15g formatting, 4-decimal half-up rounding, CIDs for L1000."""
from __future__ import annotations

import pandas as pd
import pytest

from cpb_assets.effects.labels import condition_labels, fmt, label_doses, needs_dose_rounding, round_half_up


@pytest.mark.parametrize("x, text", [
    (0.1, "0.1"), (10.0, "10"), (1e-05, "1e-05"), (24.0, "24"), (0.04, "0.04"), (3.33, "3.33"),
    (1 / 3, "0.333333333333333"), (1234567.0, "1234567"), (1e15, "1e+15"), (2.5e-7, "2.5e-07"), (0.0, "0"),
])
def test_fmt_is_c_percent_15g(x, text):
    assert fmt(x) == text


@pytest.mark.parametrize("doses, expect", [
    ([0.04, 0.12, 10.0], False),          # 2 decimals at most
    ([0.1234, 1.0], False),               # exactly 4 decimals: untouched
    ([0.12345, 1.0], True),               # one dose with 5 decimals rounds all
    ([1e-05], True),                       # 0.00001 has 5 decimals
    ([3.333333333, 10.0], True),
])
def test_needs_rounding(doses, expect):
    assert needs_dose_rounding(doses) is expect


@pytest.mark.parametrize("x, expect", [
    (0.00005, 0.0001),      # half-up; banker's would give 0.0
    (0.00015, 0.0002),
    (0.00025, 0.0003),      # banker's would give 0.0002
    (2.67485, 2.6749),
    (0.33333333, 0.3333),
    (0.12344999, 0.1234),
    (1e-05, 0.0),
    (10.0, 10.0),
])
def test_round_half_up_4_decimals(x, expect):
    assert round_half_up(x) == expect


def test_rounding_applies_to_all_doses_of_the_dataset():
    # one dose with >4 decimals triggers rounding of all; with none, values are kept as they are
    assert list(label_doses([0.123456, 0.00025, 3.0])) == [0.1235, 0.0003, 3.0]
    assert list(label_doses([0.1234, 0.0025])) == [0.1234, 0.0025]
    # the dataset-wide decision is passed down when labelling a subset
    assert list(label_doses([0.00025], round_doses=True)) == [0.0003]


def _obs(obs_frame, dataset, cid="2244", name="aspirin"):
    return obs_frame([
        {"plate": "P1", "well": "A01", "cell_type": "CVCL_0132", "perturbagen": name, "is_control": False,
         "pert_dose_uM": 0.1, "pert_time_h": 24.0, "pubchem_cid": cid},
        {"plate": "P1", "well": "B07", "cell_type": "CVCL_0132", "perturbagen": name, "is_control": False,
         "pert_dose_uM": 10.0, "pert_time_h": 6.0, "pubchem_cid": cid},
        {"plate": "P2", "well": "A02", "cell_type": "CVCL_0132", "perturbagen": "DMSO", "is_control": True,
         "pert_dose_uM": 0.0, "pert_time_h": 24.0, "pubchem_cid": None},
    ], dataset)


@pytest.mark.parametrize("dataset, mode, expect", [
    ("sciplex", "group", ["aspirin_0.1uM_24h", "aspirin_10uM_6h", "DMSO_24h"]),
    ("sciplex", "sep", ["aspirin_0.1uM_24h_A01_P1", "aspirin_10uM_6h_B07_P1", "DMSO_24h"]),
    ("l1000_phase1", "group", ["2244_0.1uM_24h", "2244_10uM_6h", "DMSO_24h"]),
    ("l1000_phase2", "sep", ["2244_0.1uM_24h_A01_P1", "2244_10uM_6h_B07_P1", "DMSO_24h"]),
])
def test_labels_both_modes(make_obs, dataset, mode, expect):
    assert condition_labels(_obs(make_obs, dataset), dataset, mode)["label"].tolist() == expect


def test_l1000_without_cid_keeps_the_name(make_obs):
    lab = condition_labels(_obs(make_obs, "l1000_phase1", cid=None, name="BRD-K00000001"), "l1000_phase1", "group")
    assert lab["label"].tolist()[0] == "BRD-K00000001_0.1uM_24h"


def test_group_label_column_drops_replicate_keys(make_obs):
    lab = condition_labels(_obs(make_obs, "op3"), "op3", "sep")
    assert lab["group_label"].tolist() == ["aspirin_0.1uM_24h", "aspirin_10uM_6h", "DMSO_24h"]


def test_labels_with_rounded_doses(make_obs):
    obs = _obs(make_obs, "op3")
    obs["pert_dose_uM"] = [0.123456, 0.00005, 0.0]
    assert condition_labels(obs, "op3", "group")["label"].tolist()[:2] == ["aspirin_0.1235uM_24h",
                                                                           "aspirin_0.0001uM_6h"]


def test_bad_mode(make_obs):
    with pytest.raises(ValueError, match="mode"):
        condition_labels(_obs(make_obs, "op3"), "op3", "both")
