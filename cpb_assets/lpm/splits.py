"""Train / val / test splits of the LPM training tables (METHODS §5).

Pure logic (pandas / numpy / RDKit; no Dagster). Three split kinds:

``scalar``
    units = (dataset, context, perturbation); the split of the scalar LPM
    (:func:`scalar_split`).
``molecule``
    the molecule-holdout split of the multi-output LPM (:func:`molecule_holdout_split`);
    units = molecules within a dataset, assigned to samples by
    :func:`assign_molecule_splits`.
``scaffold``
    Bemis–Murcko scaffolds (RDKit) held out across every dataset
    (:func:`scaffold_split`); no upstream has it.

API for the training loop (h8)
------------------------------
- :data:`SPLIT_KINDS`, :data:`SPLITS`: the split-kind and split names.
- :func:`split_hash`: the 16-hex-digit hash of a split's assignment (recorded
  with every checkpoint); the ``lpm_split`` asset writes it to
  ``$CPB_HOME/lpm/splits/manifest.json`` (:func:`read_manifest`).
- :func:`molecule_tokens`: the molecules of a perturbation symbol (``"A+B"``).
- Everything else is consumed through the split-pure shards of
  :mod:`cpb_assets.lpm.tables`.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

CONTROL = "Control"
SPLIT_KINDS = ["scalar", "molecule", "scaffold"]
SPLITS = ["train", "val", "test"]
UNIT_COLUMNS = ["dataset", "context", "perturbation"]
SAMPLE_COLUMNS = ["dataset", "context", "perturbation", "log_dose", "time"]

# scalar split (the authors' seeds: SPLIT_SEED, SPLIT_SEED + 2000, SPLIT_SEED + 5000)
SCALAR_SEED = 13
VAL_FRACTION = TEST_FRACTION = 0.15  # the authors' portions: held out = 0.15 + 0.15 (== 0.3 in floating point)
# molecule-holdout split
MOLECULE_SEED = 13
LOW_SHARED_BELOW = 20
MOLECULE_FRACTION = 0.10
# scaffold split
SCAFFOLD_SEED = 13
SCAFFOLD_FRACTION = 0.10


def molecule_tokens(perturbation: str) -> list[str]:
    """The molecules of a perturbation symbol: ``"A+B"`` → ``["A", "B"]``; Control and empty parts dropped."""
    return [t for t in str(perturbation).split("+") if t and t != CONTROL]


# -- scalar split ------------------------------------------------------------------------------
def scalar_split(units: pd.DataFrame, seed: int = SCALAR_SEED) -> pd.DataFrame:
    """The scalar LPM's split of (dataset, context, perturbation) units.

    1. Per dataset in sorted order, with one ``RandomState(seed)`` for all
       datasets, permute the dataset's units (sorted by context, perturbation)
       and hold out the first ``floor(30 %)``.
    2. A held-out unit whose perturbation is in no training unit of any dataset
       is swapped with a training unit of the same dataset whose perturbation
       is trained in another dataset; candidates are the dataset's training
       units shuffled once with ``RandomState(seed + 2000)`` and taken from the
       end. Without a candidate the unit moves to train.
    3. The held-out perturbations (in table order) are shuffled with
       ``RandomState(seed + 5000)``; the first ``round(n · 0.15 / 0.3)`` → val (every
       held-out unit of them, in every dataset), the rest → test.

    Parameters
    ----------
    units
        Columns dataset, context, perturbation (duplicates are dropped).
    seed
        13 for the paper.

    Returns
    -------
    pandas.DataFrame
        dataset, context, perturbation, split (train / val / test), sorted by
        dataset, context, perturbation, plus the attribute ``attrs["swaps"]``
        (swapped, moved_to_train).
    """
    t = (units[UNIT_COLUMNS].astype(str).drop_duplicates()
         .sort_values(UNIT_COLUMNS, kind="stable", ignore_index=True))
    split = np.array(["train"] * len(t), dtype=object)
    rng = np.random.RandomState(seed)
    for ds, idx in t.groupby("dataset", sort=True).indices.items():
        n_holdout = int(len(idx) * (VAL_FRACTION + TEST_FRACTION))
        perm = rng.permutation(len(idx))
        split[idx[perm[:n_holdout]]] = "holdout"
    ds_col, pert_col = t["dataset"].to_numpy(), t["perturbation"].to_numpy()

    # step 2: swaps (the training set of each perturbation updates as units move)
    train_datasets: dict[str, set[str]] = defaultdict(set)
    train_count: dict[tuple[str, str], int] = defaultdict(int)  # (perturbation, dataset) -> training units
    for i in np.flatnonzero(split == "train"):
        train_datasets[pert_col[i]].add(ds_col[i])
        train_count[(pert_col[i], ds_col[i])] += 1
    unseen = [i for i in np.flatnonzero(split == "holdout") if pert_col[i] not in train_datasets]
    rng_swap = np.random.RandomState(seed + 2000)
    pools: dict[str, list[int]] = {}
    for i in np.flatnonzero(split == "train"):
        pools.setdefault(ds_col[i], []).append(int(i))
    for pool in pools.values():
        rng_swap.shuffle(pool)
    swapped = moved = 0
    for i in unseen:
        ds, pert = ds_col[i], pert_col[i]
        pool, rejected, chosen = pools.get(ds, []), [], None
        while pool:
            cand = pool.pop()
            if split[cand] != "train":
                continue  # already swapped out
            if train_datasets.get(pert_col[cand], set()) - {ds}:
                chosen = cand
                break
            rejected.append(cand)
        pool.extend(rejected)
        split[i] = "train"
        train_datasets[pert].add(ds)
        train_count[(pert, ds)] += 1
        if chosen is None:
            moved += 1
            continue
        split[chosen] = "holdout"
        cp = pert_col[chosen]
        train_count[(cp, ds)] -= 1
        if train_count[(cp, ds)] == 0:
            train_datasets[cp].discard(ds)
            if not train_datasets[cp]:
                del train_datasets[cp]
        swapped += 1

    # step 3: held-out perturbations to val / test
    held = pd.unique(pert_col[split == "holdout"]).astype(object)
    np.random.RandomState(seed + 5000).shuffle(held)
    n_val = n_val_perturbations(len(held))
    val = set(held[:n_val])
    hold = split == "holdout"
    split[hold] = np.where(pd.Series(pert_col[hold]).isin(val).to_numpy(), "val", "test")
    out = t.assign(split=split)
    out.attrs["swaps"] = {"swapped": swapped, "moved_to_train": moved}
    return out


def n_val_perturbations(n_held_out: int) -> int:
    """How many of `n_held_out` shuffled held-out perturbations go to val: ``int(round(n · 0.15 / (0.15 + 0.15)))``
    in this order of operations (Python's round, half to even); it differs from ``round(n / 2)`` for e.g. n = 31
    (31 · 0.15 / 0.3 = 15.499999999999998 → 15, not 16)."""
    return int(round(n_held_out * VAL_FRACTION / (VAL_FRACTION + TEST_FRACTION)))


# -- molecule-holdout split --------------------------------------------------------------------
def stable_shuffle(values: Iterable[str], seed: int, salt: str) -> list[str]:
    """``random.Random(int(sha256(f"{seed}:{salt}").hexdigest()[:16], 16)).shuffle`` of a copy."""
    rng = random.Random(int(hashlib.sha256(f"{seed}:{salt}".encode()).hexdigest()[:16], 16))
    out = list(values)
    rng.shuffle(out)
    return out


def molecule_index(samples: pd.DataFrame) -> tuple[dict[str, set[str]], dict[str, set[str]],
                                                      dict[str, dict[str, int]]]:
    """Molecules per dataset, datasets per molecule, and samples per (dataset, molecule).

    A sample is a distinct (dataset, context, perturbation, log_dose, time).
    """
    s = samples[SAMPLE_COLUMNS].drop_duplicates()
    by_ds: dict[str, set[str]] = defaultdict(set)
    by_mol: dict[str, set[str]] = defaultdict(set)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for ds, pert in zip(s["dataset"].astype(str), s["perturbation"].astype(str)):
        for m in set(molecule_tokens(pert)):
            by_ds[ds].add(m)
            by_mol[m].add(ds)
            counts[ds][m] += 1
    return dict(by_ds), dict(by_mol), {k: dict(v) for k, v in counts.items()}


def _can_hold_out(ds: str, mol: str, selected: Mapping[str, set[str]], by_mol: Mapping[str, set[str]]) -> bool:
    """Holding `mol` out in `ds` leaves at least one dataset where it is trained."""
    return bool(by_mol[mol] - (selected.get(mol, set()) | {ds}))


def _balance_by_samples(molecules: list[str], counts: Mapping[str, int]) -> tuple[set[str], set[str]]:
    """Sorted by (−samples, molecule); each to val while val samples ≤ test samples, else to test."""
    val, test, nv, nt = set(), set(), 0, 0
    for m in sorted(molecules, key=lambda m: (-counts.get(m, 0), m)):
        if nv <= nt:
            val.add(m)
            nv += counts.get(m, 0)
        else:
            test.add(m)
            nt += counts.get(m, 0)
    return val, test


def molecule_holdout_split(samples: pd.DataFrame, seed: int = MOLECULE_SEED) -> pd.DataFrame:
    """Held-out molecules per dataset (the molecule-holdout split of METHODS §5).

    A molecule of a dataset is *shared* if it occurs in another dataset, and
    *eligible* if it is shared and holding it out here still leaves one
    dataset that trains on it (the selection updates as it goes). Datasets
    are visited in ascending (number of shared molecules, name).

    - ≥ 20 shared: the sorted shared molecules are shuffled with
      :func:`stable_shuffle` (seed, dataset); the first ``floor(10 %)``
      eligible ones → val, then the next ``floor(10 %)`` eligible → test.
    - < 20 shared: every eligible shared molecule is held out, sorted by
      (−sample count, molecule), each to val if val samples ≤ test samples,
      else to test.

    Parameters
    ----------
    samples
        Columns dataset, context, perturbation, log_dose, time (one row per
        sample or more; distinct samples are counted).
    seed
        13 for every model seed.

    Returns
    -------
    pandas.DataFrame
        One row per held-out (dataset, molecule): dataset, molecule, split
        (val / test), strategy (``ten_percent_shared_molecules`` /
        ``low_shared_sample_balanced``), n_samples; ``attrs["datasets"]`` holds
        per dataset: strategy, total and shared molecule counts.
    """
    by_ds, by_mol, counts = molecule_index(samples)
    all_ds = sorted(samples["dataset"].astype(str).unique())
    shared = {ds: {m for m in by_ds.get(ds, set()) if by_mol[m] - {ds}} for ds in all_ds}
    selected: dict[str, set[str]] = defaultdict(set)
    rows, info = [], {}
    for ds in sorted(all_ds, key=lambda d: (len(shared[d]), d)):
        sh, cnt = shared[ds], counts.get(ds, {})
        if len(sh) < LOW_SHARED_BELOW:
            strategy = "low_shared_sample_balanced"
            eligible = [m for m in sorted(sh) if _can_hold_out(ds, m, selected, by_mol)]
            val, test = _balance_by_samples(eligible, cnt)
            for m in val | test:
                selected[m].add(ds)
        else:
            strategy = "ten_percent_shared_molecules"
            target = math.floor(MOLECULE_FRACTION * len(sh))
            candidates = stable_shuffle(sorted(sh), seed, ds)
            val, test = set(), set()
            for m in candidates:
                if len(val) >= target:
                    break
                if _can_hold_out(ds, m, selected, by_mol):
                    val.add(m)
                    selected[m].add(ds)
            for m in candidates:
                if len(test) >= target:
                    break
                if m not in val and _can_hold_out(ds, m, selected, by_mol):
                    test.add(m)
                    selected[m].add(ds)
        info[ds] = {"strategy": strategy, "total_molecules": len(by_ds.get(ds, ())), "shared_molecules": len(sh),
                    "val_molecules": len(val), "test_molecules": len(test)}
        rows += [(ds, m, "val", strategy, cnt.get(m, 0)) for m in sorted(val)]
        rows += [(ds, m, "test", strategy, cnt.get(m, 0)) for m in sorted(test)]
    out = pd.DataFrame(rows, columns=["dataset", "molecule", "split", "strategy", "n_samples"])
    out.attrs["datasets"] = info
    return out


def assign_molecule_splits(samples: pd.DataFrame, held_out: pd.DataFrame) -> np.ndarray:
    """Split of each sample: test if any of its molecules is test in its dataset, else val if any is val,
    else train.

    Parameters
    ----------
    samples
        Columns dataset and perturbation (any number of rows).
    held_out
        Columns dataset, molecule, split (val / test), e.g. from
        :func:`molecule_holdout_split` or :func:`scaffold_split` with dataset ``"*"`` (every dataset).
    """
    keys = {(r.dataset, r.molecule): r.split for r in held_out.itertuples(index=False)}
    out = np.empty(len(samples), dtype=object)
    memo: dict[tuple[str, str], str] = {}
    for i, (ds, pert) in enumerate(zip(samples["dataset"].astype(str), samples["perturbation"].astype(str))):
        key = (ds, pert)
        if key not in memo:
            found = {keys.get((ds, m)) or keys.get(("*", m)) for m in molecule_tokens(pert)}
            memo[key] = "test" if "test" in found else "val" if "val" in found else "train"
        out[i] = memo[key]
    return out


# -- scaffold split ----------------------------------------------------------------------------
def murcko_scaffold(smiles: str | None) -> str | None:
    """Canonical Bemis–Murcko scaffold SMILES (RDKit ``MurckoScaffold``); ``""`` for an acyclic molecule,
    None for a missing or unparsable SMILES."""
    if not smiles or not isinstance(smiles, str):
        return None
    from rdkit import Chem, rdBase
    from rdkit.Chem.Scaffolds import MurckoScaffold

    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            return None
        try:
            return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)
        except Exception:  # noqa: BLE001 - a structure RDKit cannot reduce has no scaffold
            return None


def scaffold_split(samples: pd.DataFrame, scaffolds: Mapping[str, str | None], seed: int = SCAFFOLD_SEED
                   ) -> pd.DataFrame:
    """Hold out whole Bemis–Murcko scaffolds in every dataset.

    The distinct scaffolds of the molecules in `samples` (the acyclic ``""``
    scaffold counts as one) are sorted and shuffled with
    :func:`stable_shuffle` (seed, ``"scaffold"``); the first ``floor(10 %)`` →
    val, the next ``floor(10 %)`` → test. Every molecule of a held-out
    scaffold is held out in every dataset (dataset ``"*"``); molecules without
    a structure (no scaffold) stay in train. Samples are assigned by
    :func:`assign_molecule_splits`.

    Returns
    -------
    pandas.DataFrame
        One row per held-out molecule: dataset (``"*"``), molecule, split,
        scaffold, n_samples (samples of that molecule over all datasets).
    """
    _, by_mol, counts = molecule_index(samples)
    mol_scaffold = {m: scaffolds.get(m) for m in by_mol}
    distinct = sorted({s for s in mol_scaffold.values() if s is not None})
    order = stable_shuffle(distinct, seed, "scaffold")
    k = math.floor(SCAFFOLD_FRACTION * len(distinct))
    label = {s: "val" for s in order[:k]} | {s: "test" for s in order[k:2 * k]}
    n = defaultdict(int)
    for cnt in counts.values():
        for m, c in cnt.items():
            n[m] += c
    rows = [("*", m, label[s], s, n[m]) for m, s in sorted(mol_scaffold.items()) if s is not None and s in label]
    out = pd.DataFrame(rows, columns=["dataset", "molecule", "split", "scaffold", "n_samples"])
    out.attrs["scaffolds"] = {"total": len(distinct), "val": k, "test": k}
    return out


# -- hashing -----------------------------------------------------------------------------------
def split_hash(assignment: pd.DataFrame) -> str:
    """sha256 (first 16 hex digits) of a split assignment, independent of row order."""
    cols = sorted(assignment.columns)
    t = assignment[cols].astype(str).sort_values(cols, kind="stable")
    h = hashlib.sha256("\t".join(cols).encode())
    for row in t.itertuples(index=False):
        h.update(("\t".join(row) + "\n").encode())
    return h.hexdigest()[:16]


def read_manifest(root: str | Path) -> dict:
    """The ``manifest.json`` of a splits folder: {kind: {"hash", "files", "counts"...}}."""
    return json.loads((Path(root) / "manifest.json").read_text())
