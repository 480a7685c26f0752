"""LPM splits (METHODS §5) on hand-built tables with known answers."""
import hashlib
import random

import numpy as np
import pandas as pd
import pytest

from cpb_assets.lpm import splits as sp


def _units(rows):
    return pd.DataFrame(rows, columns=sp.UNIT_COLUMNS)


def _samples(rows):
    """rows of (dataset, perturbation[, context, log_dose, time]) → sample table."""
    out = []
    for r in rows:
        ds, pert, ctx, dose, t = (*r, "c", 0.0, 24.0)[:5] if len(r) == 2 else r
        out.append((ds, ctx, pert, dose, t))
    return pd.DataFrame(out, columns=sp.SAMPLE_COLUMNS)


# -- scalar split ------------------------------------------------------------------------------
def test_scalar_split_swap_rule_known_answer():
    """Hand derivation with the generators of METHODS §5 (values printed by numpy 1.x/2.x alike):
    RandomState(13).permutation(4) twice → [1 3 0 2], [1 3 2 0]; floor(4 · 30 %) = 1 held out per dataset:
    (a, c, p2) and (b, c, p5), both perturbations trained nowhere → both must be swapped.
    RandomState(2013) shuffles the training pools a: [0, 2, 3] → [2, 0, 3], b: [4, 6, 7] → [7, 6, 4];
    candidates are popped from the end.
    - (a, c, p2): pop (a, c, p4): p4 trained only in a → rejected; pop (a, c, p1): p1 also trained in b →
      swapped: (a, c, p1) held out, (a, c, p2) to train.
    - (b, c, p5): pop (b, c, p1): p1 is now trained only in b (its a unit left training) → rejected; (b, c, p6)
      and (b, c, p7) trained only in b → rejected; no candidate → (b, c, p5) moves to train.
    Held-out perturbations [p1]: round(1 · 50 %) = round(0.5) = 0 → val is empty, p1 → test.
    """
    units = _units([("a", "c", f"p{i}") for i in (1, 2, 3, 4)] + [("b", "c", f"p{i}") for i in (1, 5, 6, 7)])
    out = sp.scalar_split(units)
    got = {(r.dataset, r.perturbation): r.split for r in out.itertuples()}
    assert got == {("a", "p1"): "test", ("a", "p2"): "train", ("a", "p3"): "train", ("a", "p4"): "train",
                   ("b", "p1"): "train", ("b", "p5"): "train", ("b", "p6"): "train", ("b", "p7"): "train"}
    assert out.attrs["swaps"] == {"swapped": 1, "moved_to_train": 1}


def test_scalar_split_sizes_and_val_test_disjoint():
    rng = np.random.default_rng(0)
    rows = [(ds, f"c{rng.integers(0, 5)}", f"p{rng.integers(0, 60)}") for ds in ("d1", "d2", "d3")
            for _ in range(120)]
    units = _units(rows).drop_duplicates()
    out = sp.scalar_split(units)
    assert len(out) == len(units)
    n = units.groupby("dataset").size()
    held = out[out["split"] != "train"].groupby("dataset").size()
    moved = out.attrs["swaps"]["moved_to_train"]
    # a swap keeps the per-dataset number held out; a move-to-train lowers it by one
    assert (held.reindex(n.index, fill_value=0) <= (n * 0.3).astype(int)).all()
    assert int((n * 0.3).astype(int).sum() - held.sum()) == moved
    val = set(out.loc[out["split"] == "val", "perturbation"])
    test = set(out.loc[out["split"] == "test", "perturbation"])
    assert val and test and not val & test
    # val = the first round(n · 0.15 / 0.3) of the n held-out perturbations (the authors' expression)
    assert len(val) == int(round(len(val | test) * 0.15 / 0.3))
    # deterministic
    assert out.equals(sp.scalar_split(units.sample(frac=1, random_state=3)))


# -- molecule-holdout split --------------------------------------------------------------------
def test_low_shared_rules_and_not_held_out_everywhere():
    """d3 (1 shared: m4) first: m4 → val. d1 (3 shared; samples m1: 3, m2: 2, m3: 1): sorted by
    (−samples, name) m1 → val (0 ≤ 0), m2 → test (3 > 0), m3 → test (3 > 2). d2 (4 shared) last: m1–m3 are
    held out in d1 and m4 in d3, the only other datasets that have them → nothing eligible in d2."""
    rows = ([("d1", "m1", f"c{i}", 0.0, 24.0) for i in range(3)] + [("d1", "m2", f"c{i}", 0.0, 24.0) for i in range(2)]
            + [("d1", "m3", "c0", 0.0, 24.0), ("d1", "private1", "c0", 0.0, 24.0)]
            + [("d2", m, "c0", 0.0, 24.0) for m in ("m1", "m2", "m3", "m4", "private2")]
            + [("d3", "m4", "c0", 0.0, 24.0), ("d3", "private3", "c0", 0.0, 24.0)])
    held = sp.molecule_holdout_split(_samples(rows))
    got = {(r.dataset, r.molecule): r.split for r in held.itertuples()}
    assert got == {("d3", "m4"): "val", ("d1", "m1"): "val", ("d1", "m2"): "test", ("d1", "m3"): "test"}
    assert set(held["strategy"]) == {"low_shared_sample_balanced"}
    info = held.attrs["datasets"]
    assert info["d2"]["shared_molecules"] == 4 and info["d2"]["val_molecules"] == 0
    assert info["d1"]["total_molecules"] == 4


def test_ten_percent_rule_known_answer():
    """Two datasets share the same 25 molecules: (25, "big") < (25, "other"), so big goes first and holds out
    floor(2.5) = 2 val then 2 test from its shuffled list; in "other" those four are no longer eligible (big is
    the only other dataset), so other takes the first eligible ones of its own shuffle."""
    mols = [f"m{i:02d}" for i in range(25)]
    rows = [(ds, m) for ds in ("big", "other") for m in mols]
    held = sp.molecule_holdout_split(_samples(rows), seed=13)

    def shuffled(ds):  # the generator of METHODS §5, written out
        r = random.Random(int(hashlib.sha256(f"13:{ds}".encode()).hexdigest()[:16], 16))
        out = sorted(mols)
        r.shuffle(out)
        return out

    big = shuffled("big")
    other = [m for m in shuffled("other") if m not in big[:4]]
    pick = lambda ds, s: set(held.loc[(held["dataset"] == ds) & (held["split"] == s), "molecule"])  # noqa: E731
    assert pick("big", "val") == set(big[:2]) and pick("big", "test") == set(big[2:4])
    assert pick("other", "val") == set(other[:2]) and pick("other", "test") == set(other[2:4])
    assert set(held["strategy"]) == {"ten_percent_shared_molecules"}


def test_known_counts_of_the_paper():
    """Shared-molecule counts of the real data give the paper's numbers: CIGS-MCE 3,402 → 340/340, GDPx2 72 →
    7/7, VCPI-0001 5 → 3/2 (one sample each: val, test, val, test, val), VCPI-0002 1 → 1/0. A reservoir
    dataset holds every molecule, so each stays trainable there."""
    sizes = {"cigs_mce": 3402, "gdpx2": 72, "vcpi_0001": 5, "vcpi_0002": 1}
    rows, k = [], 0
    for ds, n in sizes.items():
        for _ in range(n):
            rows += [(ds, f"x{k}"), ("zz_reservoir", f"x{k}")]
            k += 1
    held = sp.molecule_holdout_split(_samples(rows))
    info = held.attrs["datasets"]
    assert {ds: (info[ds]["val_molecules"], info[ds]["test_molecules"]) for ds in sizes} == {
        "cigs_mce": (340, 340), "gdpx2": (7, 7), "vcpi_0001": (3, 2), "vcpi_0002": (1, 0)}
    # the reservoir (3,480 shared, last) holds out floor(348) each, none of those held out elsewhere
    assert (info["zz_reservoir"]["val_molecules"], info["zz_reservoir"]["test_molecules"]) == (348, 348)
    res = held[held["dataset"] == "zz_reservoir"]
    assert not set(res["molecule"]) & set(held.loc[held["dataset"] != "zz_reservoir", "molecule"])


def test_sample_assignment_rule():
    held = pd.DataFrame([("d1", "m1", "val"), ("d1", "m2", "test"), ("d2", "m3", "val")],
                        columns=["dataset", "molecule", "split"])
    samples = pd.DataFrame({"dataset": ["d1", "d1", "d1", "d1", "d2", "d2", "d1"],
                            "perturbation": ["m1", "m2", "m1+m2", "m1+p9", "m1", "m3+m2", "Control"]})
    assert list(sp.assign_molecule_splits(samples, held)) == [
        "val", "test", "test", "val", "train", "val", "train"]


# -- scaffold split ----------------------------------------------------------------------------
def test_murcko_scaffolds():
    assert sp.murcko_scaffold("CC(=O)Oc1ccccc1C(=O)O") == "c1ccccc1"  # aspirin
    assert sp.murcko_scaffold("CCO") == ""  # acyclic
    assert sp.murcko_scaffold("not a smiles") is None and sp.murcko_scaffold(None) is None


def test_scaffold_split_holds_out_whole_scaffolds_everywhere():
    scaffolds = {f"m{i}": f"s{i % 10}" for i in range(30)} | {"nostruct": None}
    rows = [(ds, m) for ds in ("d1", "d2") for m in scaffolds] + [("d1", "m1+m2")]
    samples = _samples(rows)
    held = sp.scaffold_split(samples, scaffolds)
    order = sp.stable_shuffle(sorted({f"s{i}" for i in range(10)}), 13, "scaffold")
    assert set(held.loc[held["split"] == "val", "scaffold"]) == {order[0]}
    assert set(held.loc[held["split"] == "test", "scaffold"]) == {order[1]}
    # every molecule of a held-out scaffold, in every dataset
    assert set(held["molecule"]) == {m for m, s in scaffolds.items() if s in order[:2]}
    split = sp.assign_molecule_splits(samples, held)
    train = samples[split == "train"]
    held_mols = set(held["molecule"])
    assert not {m for p in train["perturbation"] for m in sp.molecule_tokens(p)} & held_mols
    assert "nostruct" in set(train["perturbation"])


def test_split_hash_ignores_row_order_and_sees_labels():
    a = pd.DataFrame({"dataset": ["d", "d"], "perturbation": ["p", "q"], "split": ["train", "test"]})
    assert sp.split_hash(a) == sp.split_hash(a.iloc[::-1])
    b = a.assign(split=["test", "train"])
    assert sp.split_hash(a) != sp.split_hash(b)


@pytest.mark.parametrize("n,n_val", [(0, 0), (1, 0), (2, 1), (3, 2), (5, 2), (7, 4), (31, 15), (61, 31), (117, 59)])
def test_scalar_val_count_uses_the_authors_rounding(n, n_val):
    """round(n · 0.15 / 0.3), half to even: 0.5 → 0, 1.5 → 2, 2.5 → 2, 3.5000000000000004 → 4; for 31 the value
    falls just under .5 (15.499999999999998 → 15), for 61 and 117 just over (30.500000000000004 → 31,
    58.50000000000001 → 59), where round(n / 2) would give 16, 30, 58."""
    assert sp.n_val_perturbations(n) == n_val


@pytest.mark.parametrize("pert,tokens", [("123", ["123"]), ("1+2", ["1", "2"]), ("Control", []), ("1+Control", ["1"])])
def test_molecule_tokens(pert, tokens):
    assert sp.molecule_tokens(pert) == tokens
