"""DILImap on copies of its real-layout fixture (two counts files, SPLIT words): reading rules and bad input."""
from __future__ import annotations

import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cpb_assets.errors import SourceFormatError
from cpb_assets.sources import dilimap

DATA = Path(__file__).resolve().parents[2] / "data"
REG = pd.DataFrame(columns=["source_id", "pubchem_cid", "cid_method"])
TRAIN, VAL = "training_data_counts.h5ad", "validation_data_counts.h5ad"


@pytest.fixture()
def folder(tmp_path):
    shutil.copytree(DATA / "dilimap_train_val", tmp_path / "d")
    return tmp_path / "d"


def test_both_files_are_read_and_splits_compared_case_insensitively(folder):
    a = ad.read_h5ad(folder / TRAIN)
    a.obs["SPLIT"] = a.obs["SPLIT"].astype(str).str.upper()  # TRAINING / TEST
    a.write_h5ad(folder / TRAIN)
    train = dilimap.harmonize(folder, "dilimap_train", REG)
    both = dilimap.harmonize(folder, "dilimap_train_val", REG)
    assert set(train.adata.obs["split"]) == {"train"} and set(both.adata.obs["split"]) == {"train", "val"}
    assert (train.adata.n_obs, both.adata.n_obs) == (11, 19)
    assert set(both.adata.obs["plate"]) == {"PL_TR_01", "PL_VA_01"}  # the test plate never enters
    # only the training file: dilimap_train is unchanged, train_val has no validation samples
    (folder / VAL).unlink()
    assert dilimap.harmonize(folder, "dilimap_train_val", REG).adata.n_obs == 11


def test_unknown_split_word_is_a_format_error(folder):
    a = ad.read_h5ad(folder / VAL)
    a.obs["SPLIT"] = "Holdout"
    a.write_h5ad(folder / VAL)
    with pytest.raises(SourceFormatError) as e:
        dilimap.harmonize(folder, "dilimap_train", REG)
    assert e.value.file == str(folder / VAL) and e.value.field == "obs/SPLIT" and "holdout" in e.value.problem


@pytest.mark.parametrize("how", ["empty", "truncated"])
def test_empty_or_truncated_counts_file_is_a_source_format_error(folder, how):
    raw = (folder / VAL).read_bytes()
    (folder / VAL).write_bytes(b"" if how == "empty" else raw[: len(raw) // 2])
    with pytest.raises(SourceFormatError) as e:
        dilimap.harmonize(folder, "dilimap_train", REG)
    assert e.value.file == str(folder / VAL) and e.value.field == "<file>"


def test_compound_records_of_the_fixture_leave_the_test_compound_out(folder):
    assert dilimap.compound_records(folder, "dilimap_train")["source_id"].tolist() == ["fixture-drug-11",
                                                                                     "fixture-drug-12"]


@pytest.mark.parametrize("value", [np.nan, -24.0, np.inf])
def test_nan_negative_or_infinite_time_is_a_format_error(folder, value):
    a = ad.read_h5ad(folder / TRAIN)
    a.obs["TIMEPOINT_HOURS"] = a.obs["TIMEPOINT_HOURS"].astype(float)
    a.obs.iloc[0, a.obs.columns.get_loc("TIMEPOINT_HOURS")] = value
    a.write_h5ad(folder / TRAIN)
    with pytest.raises(SourceFormatError) as e:
        dilimap.harmonize(folder, "dilimap_train", REG)
    assert e.value.field == "obs/TIMEPOINT_HOURS"
