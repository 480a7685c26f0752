"""The demo world's planted design: the cross-dataset overlaps issue 3 asks for, and its truth."""
import itertools

import numpy as np
import pytest

from cpb_assets.datasets import DATASETS
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
    hit_share = (eff[:, 0, :] != 0).mean(axis=1)
    active = world.compounds["potency"].to_numpy() > 0
    assert np.allclose(hit_share[active], int(0.08 * measured.sum()) / eff.shape[2], atol=1e-9)
    assert not eff[~active].any()  # every 5th compound is inert
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
