"""The demo world's planted design: the cross-dataset overlaps issue 3 asks for, and its truth."""
import itertools

import numpy as np
import pytest

from cpb_assets.datasets import DATASETS
from cpb_assets.demo import world as world_module
from cpb_assets.demo.world import DESIGNS, WORLD_CONTEXTS, time_factor

# pairs that must share a 24 h context with >= 10 compounds at doses within 10-fold
REQUIRED_PAIRS = [("l1000_phase1", "l1000_phase2"), ("l1000_phase1", "tahoe100m"), ("l1000_phase2", "sciplex"),
                  ("cigs_mce", "cigs_tcm"), ("l1000_phase1", "cigs_mce")]


def matched_compounds(a: str, b: str) -> dict[str, int]:
    """Per shared cell type: compounds in both designs with a dose pair within 10-fold, at 24 h."""
    da, db = DESIGNS[a], DESIGNS[b]
    if 24.0 not in da.times_h or 24.0 not in db.times_h:
        return {}
    dose_ok = any(max(x, y) / min(x, y) <= 10 for x, y in itertools.product(da.doses_uM, db.doses_uM))
    shared = set(da.compounds) & set(db.compounds)
    return {ct: len(shared) if dose_ok else 0 for ct in set(da.cell_types) & set(db.cell_types)}


@pytest.mark.parametrize("a, b", REQUIRED_PAIRS)
def test_required_pairs_have_a_context_with_10_matched_compounds(a, b):
    assert max(matched_compounds(a, b).values(), default=0) >= 10


def test_every_dataset_has_a_design_with_replicates_and_known_contexts():
    assert set(DESIGNS) == set(DATASETS)
    for d in DESIGNS.values():
        assert d.replicates >= 2 and set(d.cell_types) <= set(WORLD_CONTEXTS)


def test_truth_is_sparse_dose_responsive_and_structure_linked(world):
    eff = world.effect
    measured = world.genes["kind"].isin(["landmark", "extra"]).to_numpy()
    assert not eff[:, :, ~measured].any()  # mito / MALAT1 carry no planted effect
    hit_share = (eff[:, 0, :] != 0).sum(axis=1) / measured.sum()
    active = world.compounds["potency"].to_numpy() > 0
    assert (hit_share[active] >= 0.02).all() and (hit_share[active] <= 0.3).all()  # sparse
    assert not eff[~active].any()  # every 5th compound is inert
    # each program bit switches on the same genes in every compound that carries it
    on = world.fingerprints[:, world.program_bits].astype(bool) & active[:, None]
    for b in range(on.shape[1]):
        carriers = np.flatnonzero(on[:, b])
        assert len(carriers) >= 0.1 * len(active)
        shared = (eff[carriers, 0, :] != 0).all(axis=0).sum()
        assert shared >= 0.9 * int(world_module.PROGRAM_DENSITY * measured.sum())
    c = int(np.flatnonzero(active)[0])
    lo = world.true_logfc(c, "CVCL_0023", 0.01, 24.0)
    hi = world.true_logfc(c, "CVCL_0023", 100.0, 24.0)
    assert np.abs(hi).sum() > np.abs(lo).sum() > 0 and time_factor(24.0) == pytest.approx(1.0)
    # structure: compounds with similar fingerprints have more similar effects than dissimilar ones
    fp = world.fingerprints.astype(float)
    sim = (fp @ fp.T) / np.sqrt(np.outer(fp.sum(1), fp.sum(1)))
    flat = eff[:, 0, :]
    cor = np.corrcoef(flat[active])
    s = sim[np.ix_(active, active)]
    iu = np.triu_indices(active.sum(), 1)
    assert np.corrcoef(s[iu], cor[iu])[0, 1] > 0.2


def test_dataset_response_is_reproducible_and_only_on_responsive_genes(world):
    c, ct = 0, "CVCL_0023"
    eff = world.effect[c, world.context_index(ct)]
    a = world.dataset_response("l1000_phase1", c, ct)
    assert np.array_equal(a, world.dataset_response("l1000_phase1", c, ct))
    assert not a[eff == 0].any() and (a[eff != 0] != 0).all()
    b = world.dataset_response("l1000_phase2", c, ct)
    assert np.corrcoef(a[eff != 0], b[eff != 0])[0, 1] < 0.3  # independent per dataset
    # its SD is DATASET_RESPONSE_SD x the mean |effect| (the sample SD of ~200 normal draws)
    assert a[eff != 0].std() == pytest.approx(world_module.DATASET_RESPONSE_SD * np.abs(eff[eff != 0]).mean(), rel=0.15)
    truth = world.true_logfc(c, ct, 1e6, 24.0)
    np.testing.assert_allclose(world.true_logfc(c, ct, 1e6, 24.0, dataset="l1000_phase1"), truth + a * truth.max() / eff.max())
    inert = int(np.flatnonzero(world.compounds["potency"].to_numpy() == 0)[0])
    assert not world.true_logfc(inert, ct, 10.0, 24.0, dataset="l1000_phase1").any()
