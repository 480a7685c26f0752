"""DILImap: QC on a hand-countable h5ad, dose clustering, leakage guard, round trip, bad input."""
from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cpb_assets.errors import SourceFormatError
from cpb_assets.harmonize.schema import validate_harmonized
from cpb_assets.demo import dilimap as demo_dilimap
from cpb_assets.sources import dilimap
from cpb_assets.demo.world import DESIGNS

HAND_FILE = "SYNTHETIC_training_data_counts.h5ad"  # a hand-built training counts file


def _registry(folder, dataset):
    recs = dilimap.compound_records(folder, dataset)
    return pd.DataFrame({"source_id": recs["source_id"], "pubchem_cid": [str(2000 + i) for i in range(len(recs))],
                         "cid_method": "test"})


# ---------------------------------------------------------------- dose clustering

def test_cluster_doses_prefers_training_dose():
    doses = np.array([10.0, 10.0004, 10.0004, 10.0004, 9.9996, 1.0, 1.00004, 1.00004, 50.0, 0.0, 10.5])
    split = np.array(["train", "val", "val", "val", "val", "val", "val", "val", "train", "train", "train"])
    out = dilimap.cluster_doses(doses, split)
    # 10-cluster: val is the majority, the training value wins; 1-cluster has no
    # training dose: the most frequent value; 10.5 (2% away) stays its own cluster
    assert out.tolist() == [10.0, 10.0, 10.0, 10.0, 10.0, 1.00004, 1.00004, 1.00004, 50.0, 0.0, 10.5]


# ---------------------------------------------------------------- hand-countable QC fixture

def _hand_h5ad(path: Path) -> None:
    """14 samples on one plate: 2 test-split, and of the 12 others exactly 5 fail QC."""
    rng = np.random.default_rng(7)
    n_genes = 200
    symbols = ["MT-CO1", "MT-ND1"] + [f"GENE{j}" for j in range(n_genes - 2)]
    gene_id = ["ENSG00000198804", "ENSG00000198888"] + [f"ENSG{90000000000 + j:011d}" for j in range(n_genes - 2)]
    base = rng.gamma(0.8, 1.0, n_genes)
    base[:2] = 0.015 * base[2:].sum()  # ~3% mitochondrial reads
    p = base / base.sum()
    spec = [  # (compound, dose µM, LDH_QC, split, planted)
        *[("DMSO", 0.0, "", "train", None)] * 3, ("DMSO", 0.0, "", "train", "scrambled"),
        ("DMSO", 0.0, "", "train", "mito"),
        ("cpdA", 10.0, "", "train", None), ("cpdA", 10.0, "", "train", None), ("cpdA", 10.0, "LDH high", "train", None),
        ("cpdB", 10.0, "", "train", None), ("cpdB", 10.0, "", "train", None), ("cpdB", 10.0, "", "train", "low"),
        ("DMSO_replaced", 0.0, "", "train", None),
        ("cpdT", 10.0, "", "test", None), ("cpdT", 10.0, "", "test", None),
    ]
    X = np.vstack([rng.poisson(p * 2e6) for _ in spec]).astype(float)
    for i, (_, _, _, _, planted) in enumerate(spec):
        if planted == "scrambled":
            X[i] = X[i, rng.permutation(n_genes)]
        elif planted == "mito":
            X[i, :2] *= 8
        elif planted == "low":
            X[i] = rng.binomial(X[i].astype(int), 0.01)
    obs = pd.DataFrame({
        "COMPOUND": [s[0] for s in spec], "CONCENTRATION_UM": [s[1] for s in spec], "TIMEPOINT_HOURS": 24.0,
        "DOSE_LEVEL": ["Control" if s[1] == 0 else "High" for s in spec], "PLATE_NAME": "PL1",
        "WELL_ID": [f"A{i + 1:02d}" for i in range(len(spec))], "LDH_QC": [s[2] for s in spec],
        "SPLIT": [{"train": "Training", "test": "Test"}[s[3]] for s in spec],  # words, as the release writes
    }, index=[f"S{i:02d}" for i in range(len(spec))])
    obs["CMPD_DOSE"] = obs["COMPOUND"] + "_" + obs["DOSE_LEVEL"]
    a = ad.AnnData(X=sp.csr_matrix(X.astype(np.float32)), obs=obs,
                   var=pd.DataFrame({"gene_id": gene_id}, index=symbols))
    a.write_h5ad(path)
    pd.DataFrame({"compound_name": ["cpdA", "cpdB", "cpdT"], "smiles": ["CCO", "CCN", "CCC"]}).to_csv(
        path.parent / demo_dilimap.COMPOUND_FILE, index=False)


@pytest.fixture()
def hand_folder(tmp_path):
    _hand_h5ad(tmp_path / HAND_FILE)
    return tmp_path


def test_qc_on_hand_countable_file(hand_folder):
    h = dilimap.harmonize(hand_folder, "dilimap_train", _registry(hand_folder, "dilimap_train"))
    q = h.quarantine.to_frame()
    reasons = q[q["record_id"].str.fullmatch(r"S\d\d")].set_index("record_id")["reason"]
    assert reasons.to_dict().keys() == {"S03", "S04", "S07", "S10", "S11"}
    assert reasons["S03"].startswith("cross-replicate correlation")
    assert reasons["S04"].startswith("mitochondrial fraction")
    assert reasons["S07"].startswith("LDH_QC")
    assert reasons["S10"].startswith("low total RNA")
    assert reasons["S11"].startswith("DMSO_replaced")
    test_row = q[q["record_id"] == "SPLIT=test"]
    assert test_row["n"].tolist() == [2]
    assert h.adata.n_obs == 7
    assert sorted(h.adata.obs["perturbagen"].value_counts().to_dict().items()) == [("DMSO", 3), ("cpdA", 2), ("cpdB", 2)]
    assert validate_harmonized(h.adata) == []
    assert (h.adata.obs["split"] == "train").all()


def test_replicate_rule_without_replicate_fails():
    score = np.array([0.99, 0.98, np.nan, 0.5])
    assert dilimap.replicate_pass(score, np.array(["p"] * 4)).tolist() == [True, True, False, False]


# ---------------------------------------------------------------- bad input

def _snapshot(folder):
    return {p.name: p.stat().st_mtime_ns for p in Path(folder).iterdir()}


def _rewrite(folder, change):
    path = Path(folder) / HAND_FILE
    a = ad.read_h5ad(path)
    a = change(a)
    a.write_h5ad(path)
    return path


@pytest.mark.parametrize("case,field", [
    ("duplicate_var", "var/_index"), ("fractional", "X"), ("negative", "X"), ("no_ldh", "obs/LDH_QC"),
])
def test_bad_h5ad_rejected(hand_folder, case, field):
    def change(a):
        if case == "duplicate_var":
            names = a.var_names.tolist()
            names[5] = names[6]
            a.var_names = names
        elif case in ("fractional", "negative"):
            X = a.X.toarray()
            X[1, 7] = 2.5 if case == "fractional" else -4
            a.X = sp.csr_matrix(X)
        else:
            a.obs = a.obs.drop(columns=["LDH_QC"])
        return a

    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = _rewrite(hand_folder, change)
    before = _snapshot(hand_folder)
    reg = pd.DataFrame({"source_id": ["cpdA"], "pubchem_cid": ["1"], "cid_method": ["test"]})
    with pytest.raises(SourceFormatError) as e:
        dilimap.harmonize(hand_folder, "dilimap_train", reg)
    assert e.value.file == str(path) and e.value.field == field
    assert _snapshot(hand_folder) == before


# ---------------------------------------------------------------- native round trip

@pytest.fixture(scope="module")
def demo(world, tmp_path_factory):
    out = {}
    for ds in dilimap.DATASETS:
        folder = tmp_path_factory.mktemp(ds)
        files = demo_dilimap.write_synthetic(world, ds, folder)
        recs = dilimap.compound_records(folder, ds)
        cid = dict(zip(world.compounds["name"], world.compounds["pubchem_cid"]))
        reg = pd.DataFrame({"source_id": recs["source_id"], "pubchem_cid": recs["source_id"].map(cid),
                            "cid_method": "world"})
        out[ds] = (folder, files, dilimap.harmonize(folder, ds, reg))
    return out


@pytest.mark.parametrize("dataset", dilimap.DATASETS)
def test_round_trip_schema_and_counts(demo, world, dataset):
    folder, files, h = demo[dataset]
    assert all("SYNTHETIC" in f.name for f in files)
    assert validate_harmonized(h.adata) == []
    d = DESIGNS[dataset]
    splits = dilimap.SPLITS[dataset]
    n_comp = sum(world.compounds["dilimap_split"].iloc[c] in splits for c in d.compounds)
    obs = h.adata.obs
    # a strong compound moves enough genes to low counts that a replicate pair can fall below its plate's
    # median - 3 sd (here one pair: synthocin-54 at 10 µM); no other rule may drop a treated sample
    native = pd.concat([ad.read_h5ad(folder / f, backed="r").obs for f in (demo_dilimap.TRAIN_FILE,
                                                                          demo_dilimap.VALIDATION_FILE)])
    q = h.quarantine.to_frame()
    low_corr = set(q.loc[q["reason"].str.startswith("cross-replicate correlation"), "record_id"])
    lost = int((native.index.isin(low_corr) & (native["COMPOUND"] != "DMSO").to_numpy()).sum())
    assert lost <= 2
    assert int((~obs["is_control"]).sum()) == n_comp * len(d.doses_uM) * d.replicates - lost
    n_plates = -(-sum(world.compounds["dilimap_split"].iloc[c] == "train" for c in d.compounds)
                 // demo_dilimap.COMPOUNDS_PER_PLATE) + (1 if "val" in splits else 0)
    assert int(obs["is_control"].sum()) == demo_dilimap.CONTROLS_PER_PLATE * n_plates
    # near-identical doses collapse onto the design grid (training values)
    assert set(obs.loc[~obs["is_control"], "pert_dose_uM"]) == set(d.doses_uM)
    assert obs["cell_type"].eq("CL_0000182").all() and np.issubdtype(h.adata.X.dtype, np.integer)
    assert h.adata.var.index.str.fullmatch(r"ENSG\d{11}").all()  # versioned gene_ids stripped


def test_no_test_split_sample_or_test_only_compound_reaches_either_variant(demo, world):
    folder = demo["dilimap_train"][0]
    native = pd.concat([ad.read_h5ad(folder / f).obs for f in (demo_dilimap.TRAIN_FILE,
                                                                   demo_dilimap.VALIDATION_FILE)])
    native["SPLIT"] = native["SPLIT"].map({"Training": "train", "Validation": "val", "Test": "test"})
    test_samples = set(native.index[native["SPLIT"] == "test"])
    test_only = set(native.loc[native["SPLIT"] == "test", "COMPOUND"]) - set(
        native.loc[native["SPLIT"] != "test", "COMPOUND"])
    assert len(test_samples) > 0 and len(test_only) == 10
    test_cids = set(world.compounds.loc[world.compounds["name"].isin(test_only), "pubchem_cid"])
    for ds, allowed in dilimap.SPLITS.items():
        _, _, h = demo[ds]
        obs = h.adata.obs
        assert set(obs["split"]) == set(allowed)
        native_ids = {f"{p}_{w}" for p, w in zip(obs["plate"], obs["well"])}
        assert not native_ids & test_samples
        assert not set(obs["perturbagen"]) & test_only
        assert not set(dilimap.compound_records(demo[ds][0], ds)["name"]) & test_only
        assert obs.loc[~obs["is_control"], "pubchem_cid"].notna().all()
        assert not set(obs["pubchem_cid"].dropna()) & {str(c) for c in test_cids}
    # the train variant also never sees validation compounds
    val_only = set(native.loc[native["SPLIT"] == "val", "COMPOUND"]) - {"DMSO", "DMSO_replaced"}
    assert not set(demo["dilimap_train"][2].adata.obs["perturbagen"]) & val_only
    assert set(demo["dilimap_train_val"][2].adata.obs["perturbagen"]) >= val_only


def test_planted_truth_visible(demo, world):
    _, _, h = demo["dilimap_train"]
    a, obs = h.adata, h.adata.obs
    strong = [c for c in DESIGNS["dilimap_train"].compounds
              if world.compounds["potency"].iloc[c] == 2.0 and world.compounds["dilimap_split"].iloc[c] == "train"][0]
    name = world.compounds["name"].iloc[strong]
    X = np.asarray(a.X.toarray() if sp.issparse(a.X) else a.X, dtype=float)
    cpm = X / X.sum(1, keepdims=True) * 1e6
    trt = cpm[((obs["perturbagen"] == name) & (obs["pert_dose_uM"] == 50.0)).to_numpy()].mean(0)
    ctl = cpm[obs["is_control"].to_numpy()].mean(0)
    lfc = np.log2(trt + 1) - np.log2(ctl + 1)
    truth = world.true_logfc(strong, "CL_0000182", 50.0, 24.0, genes=world.gene_index(a.var_names),
                           dataset="dilimap")  # both DILImap partitions come from one study
    moved = np.abs(truth) > 0.5
    assert moved.sum() >= 20
    assert np.corrcoef(lfc[moved], truth[moved])[0, 1] > 0.8


# ---------------------------------------------------------------- real file names, QC statistics

def test_remote_file_names_match_the_reader_patterns():
    import fnmatch

    for ds in dilimap.DATASETS:
        names = [f.filename for f in dilimap.REMOTE_FILES[ds]]
        assert [n for n in names if fnmatch.fnmatch(n, dilimap.COUNTS_GLOB)] == ["validation_data_counts.h5ad"]
        assert [n for n in names if fnmatch.fnmatch(n, dilimap.COMPOUND_GLOB)] == ["compound_DILI_labels.csv"]
    for name in (demo_dilimap.TRAIN_FILE, demo_dilimap.VALIDATION_FILE, "training_data_counts.h5ad"):
        assert fnmatch.fnmatch(name, dilimap.COUNTS_GLOB)
    assert fnmatch.fnmatch(demo_dilimap.COMPOUND_FILE, dilimap.COMPOUND_GLOB)


@pytest.mark.parametrize("dataset", dilimap.DATASETS)
def test_files_under_their_real_names_give_the_same_anndata(demo, dataset, tmp_path):
    import shutil

    folder, _, h = demo[dataset]
    for f in (demo_dilimap.TRAIN_FILE, demo_dilimap.VALIDATION_FILE):
        shutil.copy(folder / f, tmp_path / f.removeprefix("SYNTHETIC_"))
    shutil.copy(folder / demo_dilimap.COMPOUND_FILE, tmp_path / "compound_DILI_labels.csv")
    recs = dilimap.compound_records(tmp_path, dataset)
    pd.testing.assert_frame_equal(recs, dilimap.compound_records(folder, dataset))
    reg = pd.DataFrame({"source_id": recs["source_id"], "pubchem_cid": None, "cid_method": "world"})
    reg["pubchem_cid"] = h.adata.obs.drop_duplicates("perturbagen").set_index("perturbagen")["pubchem_cid"] \
        .reindex(recs["source_id"]).astype(object).to_numpy()
    h2 = dilimap.harmonize(tmp_path, dataset, reg)
    pd.testing.assert_frame_equal(h.adata.obs, h2.adata.obs)
    pd.testing.assert_frame_equal(h.adata.var, h2.adata.var)
    assert (h.adata.X != h2.adata.X).nnz == 0 if sp.issparse(h.adata.X) else np.array_equal(h.adata.X, h2.adata.X)
    # the file's own uns says synthetic: the renamed copy stays labelled
    assert h2.adata.uns["synthetic"] is True and dict(h.adata.uns) == dict(h2.adata.uns)


def test_a_sample_in_two_counts_files_or_no_counts_file_is_rejected(hand_folder):
    import shutil

    shutil.copy(hand_folder / HAND_FILE, hand_folder / "validation_data_counts.h5ad")
    with pytest.raises(SourceFormatError) as e:
        dilimap.harmonize(hand_folder, "dilimap_train", pd.DataFrame(columns=["source_id", "pubchem_cid",
                                                                              "cid_method"]))
    assert e.value.field == "obs/_index" and "more than one counts file" in e.value.problem
    for p in hand_folder.glob("*.h5ad"):
        p.unlink()
    with pytest.raises(SourceFormatError) as e:
        dilimap.compound_records(hand_folder, "dilimap_train")
    assert e.value.field == "<file>" and "no file" in e.value.problem


def test_rna_threshold_is_computed_over_samples_that_passed_ldh(tmp_path):
    """Cytotoxic (LDH-flagged) wells carry little RNA; they must not widen the RNA threshold.

    10 DMSO wells at ~2e6 reads, one DMSO well at 1 % of that, and 3 LDH-flagged wells of a
    cytotoxic compound at 0.05 %. Over the 11 wells that passed LDH, the threshold
    (median − 2.5 sd of log10 totals) is ~4.8, so the 1 % well (log10 ≈ 4.3) fails; over all 14 it
    would be ~2.7 and the well would pass.
    """
    rng = np.random.default_rng(11)
    n_genes = 300
    p = rng.gamma(0.8, 1.0, n_genes)
    p /= p.sum()
    scale = [1.0] * 10 + [0.01] + [0.0005] * 3
    X = np.vstack([rng.poisson(p * 2e6 * s) for s in scale]).astype(float)
    compound = ["DMSO"] * 11 + ["toxin"] * 3
    obs = pd.DataFrame({
        "COMPOUND": compound, "CONCENTRATION_UM": [0.0] * 11 + [50.0] * 3, "TIMEPOINT_HOURS": 24.0,
        "DOSE_LEVEL": ["Control"] * 11 + ["High"] * 3, "PLATE_NAME": "PL1",
        "WELL_ID": [f"A{i + 1:02d}" for i in range(14)], "LDH_QC": [""] * 11 + ["LDH high"] * 3,
        "SPLIT": "train"}, index=[f"S{i:02d}" for i in range(14)])
    obs["CMPD_DOSE"] = obs["COMPOUND"] + "_" + obs["DOSE_LEVEL"]
    gene_id = [f"ENSG{90000000000 + j:011d}" for j in range(n_genes)]
    ad.AnnData(X=sp.csr_matrix(X.astype(np.float32)), obs=obs,
               var=pd.DataFrame({"gene_id": gene_id}, index=[f"GENE{j}" for j in range(n_genes)])
               ).write_h5ad(tmp_path / HAND_FILE)
    pd.DataFrame({"compound_name": ["toxin"], "smiles": ["CCO"]}).to_csv(tmp_path / demo_dilimap.COMPOUND_FILE,
                                                                          index=False)
    h = dilimap.harmonize(tmp_path, "dilimap_train", pd.DataFrame(columns=["source_id", "pubchem_cid",
                                                                          "cid_method"]))
    logt = np.log10(X.sum(axis=1))
    expected = np.median(logt[:11]) - 2.5 * np.std(logt[:11], ddof=1)
    assert h.notes["log10_total_threshold"] == pytest.approx(expected)
    assert 4.6 < expected < 5.0
    assert np.median(logt) - 2.5 * np.std(logt, ddof=1) < logt[10]  # the old rule would have kept S10
    reasons = h.quarantine.to_frame().set_index("record_id")["reason"]
    assert reasons["S10"].startswith("low total RNA")
    assert {reasons[f"S{i}"] for i in (11, 12, 13)} == {"LDH_QC flagged (cytotoxic)"}
    assert len(reasons) == 4 and h.adata.n_obs == 10


def test_round_trip_is_labelled_synthetic_and_uses_dataset_assay(demo):
    from cpb_assets.datasets import DATASET_INFO
    from cpb_assets.harmonize.schema import OBS_COLUMNS, OPTIONAL_OBS

    for ds in dilimap.DATASETS:
        a = demo[ds][2].adata
        assert a.uns["synthetic"] is True
        assert set(a.obs["assay"]) == {DATASET_INFO[ds].assay}
        assert set(a.obs.columns) - set(OBS_COLUMNS) <= set(OPTIONAL_OBS)
