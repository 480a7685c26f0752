"""The ``lpm_split`` product: split assignments, split-pure shards, counts and leakage checks.

Pure logic (no Dagster): :func:`prepare_splits` is what the asset runs and
what the tests run. Inputs are the per-dataset LPM tables written by
:func:`cpb_assets.lpm.tables.build_dataset_table`; outputs go to
``<lpm>/splits`` and ``<lpm>/shards`` (see :mod:`cpb_assets.lpm.tables`).
"""
from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cpb_assets.lpm import splits as sp
from cpb_assets.lpm import tables as tb

COUNT_COLUMNS = ["dataset", "split_kind", "split", "units", "samples", "rows", "values"]
# which shard forms each split kind gets: (form, datasets excluded)
SHARD_PLAN = {"scalar": ("scalar", tb.SCALAR_EXCLUDED), "molecule": ("multi", tb.MULTI_EXCLUDED),
              "scaffold": ("multi", tb.MULTI_EXCLUDED)}


def samples_of(table_dirs: Mapping[str, Path]) -> pd.DataFrame:
    """Distinct samples (dataset, context, perturbation, log_dose, time) of the tables, with the number
    of conditions (multi-output rows) and values (scalar rows) of each."""
    frames = []
    for ds in sorted(table_dirs):
        pf = pq.ParquetFile(Path(table_dirs[ds]) / "multi.parquet")
        for b in pf.iter_batches(columns=sp.SAMPLE_COLUMNS + ["value"]):
            t = pa.Table.from_batches([b])
            t = t.append_column("n_values", pc.list_value_length(t["value"])).drop_columns(["value"])
            frames.append(t.to_pandas())
    if not frames:
        return pd.DataFrame(columns=sp.SAMPLE_COLUMNS + ["conditions", "values"])
    df = pd.concat(frames, ignore_index=True)
    return (df.groupby(sp.SAMPLE_COLUMNS, sort=True, dropna=False)
            .agg(conditions=("n_values", "size"), values=("n_values", "sum")).reset_index())


def prepare_splits(table_dirs: Mapping[str, Path], scaffolds: Mapping[str, str | None], out: str | Path, *,
                   rows_per_shard: int = tb.SCALAR_ROWS_PER_SHARD,
                   values_per_shard: int = tb.MULTI_VALUES_PER_SHARD) -> dict:
    """Compute the three split kinds and write their assignments, shards and counts under `out`.

    Parameters
    ----------
    table_dirs
        dataset → folder with ``scalar.parquet`` and ``multi.parquet``.
    scaffolds
        molecule (CID) → Bemis–Murcko scaffold SMILES (None: no structure).
    out
        A fresh folder; gets ``splits/`` and ``shards/``.

    Returns
    -------
    dict
        ``hashes`` (kind → split hash), ``counts`` (DataFrame of :data:`COUNT_COLUMNS`),
        ``molecule_datasets`` (per-dataset strategy and molecule counts), ``swaps``, ``scaffolds``.
    """
    out = Path(out)
    split_dir = out / "splits"
    split_dir.mkdir(parents=True, exist_ok=True)
    samples = samples_of(table_dirs)
    manifest: dict = {}

    # scalar split: units of the scalar model's datasets
    scalar_ds = samples[~samples["dataset"].isin(tb.SCALAR_EXCLUDED)]
    scalar = sp.scalar_split(scalar_ds[sp.UNIT_COLUMNS])
    scalar.to_parquet(split_dir / "scalar.parquet", index=False)
    # molecule-holdout and scaffold splits: held-out molecules, then each sample
    multi_ds = samples[~samples["dataset"].isin(tb.MULTI_EXCLUDED)].reset_index(drop=True)
    held = {"molecule": sp.molecule_holdout_split(multi_ds), "scaffold": sp.scaffold_split(multi_ds, scaffolds)}
    assignments = {"scalar": scalar}
    for kind, h in held.items():
        h.to_parquet(split_dir / f"{kind}_molecules.parquet", index=False)
        a = multi_ds[sp.SAMPLE_COLUMNS].assign(split=sp.assign_molecule_splits(multi_ds, h))
        a.to_parquet(split_dir / f"{kind}.parquet", index=False)
        assignments[kind] = a

    # shards
    for kind, (form, excluded) in SHARD_PLAN.items():
        dirs = {d: p for d, p in table_dirs.items() if d not in excluded}
        root = out / "shards" / kind / form
        a = assignments[kind]
        lookup = {k: s for k, s in zip(zip(*(a[c].astype(str) for c in sp.UNIT_COLUMNS)), a["split"])} \
            if kind == "scalar" else None
        if form == "scalar":
            written = tb.write_scalar_shards(dirs, lookup, root, rows_per_shard)
        else:
            # molecule-based kinds label a sample by (dataset, perturbation) only
            by_pert = dict(zip(zip(a["dataset"].astype(str), a["perturbation"].astype(str)), a["split"]))
            written = tb.write_multi_shards(dirs, by_pert, root, values_per_shard)
        manifest[kind] = {"hash": sp.split_hash(a[sp.UNIT_COLUMNS + ["split"]] if kind == "scalar" else a),
                          "form": form, "shard_root": str(root.relative_to(out)), "shards": len(written),
                          "datasets": sorted(dirs)}

    counts = split_counts(samples, assignments, held)
    (split_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return {"hashes": {k: v["hash"] for k, v in manifest.items()}, "counts": counts, "manifest": manifest,
            "molecule_datasets": held["molecule"].attrs.get("datasets", {}), "swaps": scalar.attrs.get("swaps", {}),
            "scaffolds": held["scaffold"].attrs.get("scaffolds", {})}


def split_counts(samples: pd.DataFrame, assignments: Mapping[str, pd.DataFrame],
                 held: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per dataset × split kind × split: units, samples, rows and values.

    units: scalar (dataset, context, perturbation) units; molecule: molecules
    of the split's samples (held-out molecules for val / test); scaffold: the
    distinct scaffolds of the held-out molecules (val / test) or of the
    training molecules. samples: distinct samples; rows: scalar long rows
    (scalar kind) or multi-output rows (conditions); values: logFC values.
    """
    rows = []
    scaffold_of = dict(zip(held["scaffold"]["molecule"], held["scaffold"]["scaffold"])) if len(held["scaffold"]) \
        else {}
    for kind, a in assignments.items():
        m = samples.merge(a, on=sp.UNIT_COLUMNS if kind == "scalar" else sp.SAMPLE_COLUMNS, how="inner")
        for (ds, split), g in m.groupby(["dataset", "split"], sort=True):
            if kind == "scalar":
                units = len(g[sp.UNIT_COLUMNS].drop_duplicates())
                n_rows = int(g["values"].sum())
            else:
                mols = {t for p in g["perturbation"].unique() for t in sp.molecule_tokens(p)}
                if kind == "molecule" and split != "train":
                    h = held["molecule"]
                    mols = set(h.loc[(h["dataset"] == ds) & (h["split"] == split), "molecule"]) & mols
                if kind == "scaffold":
                    if split == "train":
                        mols = {scaffold_of.get(x, x) for x in mols}
                    else:
                        h = held["scaffold"]
                        mols = {scaffold_of[x] for x in mols if x in scaffold_of
                                and h.loc[h["molecule"] == x, "split"].iloc[0] == split}
                units = len(mols)
                n_rows = int(g["conditions"].sum())
            rows.append((ds, kind, split, units, len(g), n_rows, int(g["values"].sum())))
    return pd.DataFrame(rows, columns=COUNT_COLUMNS)


def leaks(shard_root: str | Path, kind: str, assignment: pd.DataFrame, held: pd.DataFrame | None = None) -> dict:
    """Held-out units that reach the training shards of a split kind (empty lists = no leakage).

    Reads only the symbol columns of the training shards, one shard at a time.

    Returns
    -------
    dict
        ``units``: held-out units seen in training (scalar: (dataset, context,
        perturbation); molecule: (dataset, molecule); scaffold: molecules of a
        held-out scaffold, any dataset); ``val_test_overlap`` (scalar: a
        perturbation both in val and test).
    """
    seen: set = set()
    for f in tb.shard_files(shard_root, "train"):
        t = pq.read_table(f, columns=sp.UNIT_COLUMNS).group_by(sp.UNIT_COLUMNS).aggregate([])
        for d, c, p in zip(*(t[x].to_pylist() for x in sp.UNIT_COLUMNS)):
            if kind == "scalar":
                seen.add((d, c, p))
            else:
                seen.update((d, m) for m in sp.molecule_tokens(p))
    out: dict = {"units": [], "val_test_overlap": []}
    if kind == "scalar":
        hold = assignment[assignment["split"] != "train"]
        out["units"] = sorted({u for u in zip(*(hold[c] for c in sp.UNIT_COLUMNS)) if u in seen})
        v = set(assignment.loc[assignment["split"] == "val", "perturbation"])
        out["val_test_overlap"] = sorted(v & set(assignment.loc[assignment["split"] == "test", "perturbation"]))
    elif kind == "molecule":
        out["units"] = sorted({(d, m) for d, m in zip(held["dataset"], held["molecule"]) if (d, m) in seen})
    else:
        trained = defaultdict(set)
        for d, m in seen:
            trained[m].add(d)
        out["units"] = sorted({m for m in held["molecule"] if trained.get(m)})
    return out


def check_all(out: str | Path) -> dict:
    """:func:`leaks` of every split kind of a prepared folder (the ``lpm_split_leakage`` check)."""
    out = Path(out)
    res = {}
    for kind, (form, _) in SHARD_PLAN.items():
        a = pd.read_parquet(out / "splits" / f"{kind}.parquet")
        held = pd.read_parquet(out / "splits" / f"{kind}_molecules.parquet") if kind != "scalar" else None
        res[kind] = leaks(out / "shards" / kind / form, kind, a, held)
    return res


def molecule_training_copies(assignment: pd.DataFrame, held: pd.DataFrame) -> list[tuple[str, str]]:
    """Held-out (dataset, molecule) pairs with no training sample in any other dataset (should be none)."""
    train = assignment[assignment["split"] == "train"]
    trained = defaultdict(set)
    for d, p in zip(train["dataset"], train["perturbation"]):
        for m in sp.molecule_tokens(p):
            trained[m].add(d)
    return sorted((d, m) for d, m in zip(held["dataset"], held["molecule"]) if not trained.get(m, set()) - {d})
