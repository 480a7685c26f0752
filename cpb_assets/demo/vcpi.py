"""VCPI-0001/0002 files in the layout a user gets by saving the VCPI client payload: the demo stand-in and fixtures.

:func:`write_native` writes the client's three tables (``metadata``,
``data``, ``chemistry``) one Parquet file per key, as
``frame.write_parquet(f"{experiment}_{key}.parquet")`` does (see
:mod:`cpb_assets.sources.vcpi`); a ``note`` goes into the Parquet schema
metadata. :func:`write_synthetic` fills them from the SYNTHETIC demo world.
The plate layout helpers here are shared with :mod:`cpb_assets.demo.gdpx2`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cpb_resources.storage import atomic_path

SYNTHETIC_TAG = "SYNTHETIC"
DMSO_PER_PLATE = 6  # VCPI DMSO wells per plate
NON_DMSO_CONTROLS = ("Staurosporine", "Bortezomib")
LIBRARY_SIZE = 40_000.0
N_ERCC = 6


def write_parquet(path: Path, df: pd.DataFrame, note: str = "") -> Path:
    """One table as Parquet (no pandas index), `note` in the schema metadata; atomic."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        df = df.copy()
        df.attrs = {}
        table = pa.Table.from_pandas(df, preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"note": note.encode()})
        pq.write_table(table, tmp)
    return path


def write_native(folder: str | Path, metadata: pd.DataFrame, counts: np.ndarray, gene_ids,
                 chemistry: pd.DataFrame, *, experiment: str, tag: str = SYNTHETIC_TAG, note: str = "") -> list[Path]:
    """Write a VCPI payload as ``<experiment>_<key>[_<tag>].parquet`` (``counts``: n_samples × n_genes).

    ``data`` holds ``gene_id`` and one count column per ``sequenced_id``
    (int64, as the client's frames). ``tag=''`` gives the plain names.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = pd.DataFrame(np.asarray(counts).T, columns=metadata["sequenced_id"].astype(str).tolist())
    data.insert(0, "gene_id", [str(g) for g in gene_ids])
    suffix = f"_{tag}" if tag else ""
    return [write_parquet(folder / f"{experiment}_{key}{suffix}.parquet", df, note)
            for key, df in (("metadata", metadata), ("data", data), ("chemistry", chemistry))]


def world_cell_name(cell_type: str) -> str:
    from cpb_assets.harmonize.contexts import CONTEXTS

    return str(CONTEXTS.loc[cell_type, "name"])


def ginkgo_counts(world, ds: str, lay: pd.DataFrame, rng, with_ercc: bool) -> tuple[np.ndarray, list[str]]:
    """Counts from the planted truth for a Ginkgo layout (+ ERCC spike-ins); zero libraries where planted."""
    gidx = np.arange(len(world.genes))
    sim = lay.rename(columns={"time": "time_h"})[["cell_type", "compound", "dose_uM", "time_h", "plate"]]
    counts = world.count_matrix(sim, gidx, dataset=ds, library_size=LIBRARY_SIZE, rng=rng)
    counts[lay["zero"].to_numpy()] = 0
    ids = list(world.genes.index)
    if with_ercc:
        ercc = rng.poisson(30.0, (len(lay), N_ERCC))
        ercc[lay["zero"].to_numpy()] = 0
        counts = np.hstack([counts, ercc])
        ids += [f"ERCC-{k:05d}" for k in (2, 3, 4, 9, 12, 13)[:N_ERCC]]
    return counts, ids


def ginkgo_layout(world, ds: str, rng, *, pos_controls, dmso_per_level: int) -> pd.DataFrame:
    """One plate per (cell type, replicate): treated wells, DMSO, controls to drop, one empty library."""
    from cpb_assets.demo.world import DESIGNS

    d = DESIGNS[ds]
    pvds = d.extra.get("percent_volume_dmso", (None,))
    rows = []
    for ci, cell in enumerate(d.cell_types):
        for rep in range(1, d.replicates + 1):
            plate = f"SYN-{ds.upper().replace('_', '')}-P{ci + 1}{rep}"
            wells = [dict(kind="treated", compound=c, dose_uM=dose, pvd=pvds[k % len(pvds)])
                     for k, c in enumerate(d.compounds) for dose in d.doses_uM]
            wells = [wells[i] for i in rng.permutation(len(wells))]
            wells += [dict(kind="dmso", compound=None, dose_uM=0.0, pvd=p) for p in pvds for _ in range(dmso_per_level)]
            wells += [dict(kind="pos", compound=k, dose_uM=1.0, pvd=pvds[0], pos_name=n)
                      for k, n in enumerate(pos_controls)]
            wells.append(dict(kind="treated", compound=d.compounds[rep], dose_uM=d.doses_uM[0],
                              pvd=pvds[rep % len(pvds)], zero=True))
            for k, w in enumerate(wells):
                r, c = divmod(k, 24)
                rows.append({**w, "cell_type": cell, "plate": plate, "row_id": r + 1, "column_id": c + 1,
                             "time_h": d.times_h[0], "rep": rep})
    lay = pd.DataFrame(rows)
    lay["zero"] = lay["zero"].eq(True) if "zero" in lay else False
    return lay


def write_synthetic(world, dataset: str, folder: str | Path) -> list[Path]:
    """Write the demo world's SYNTHETIC VCPI payload of `dataset` into `folder`.

    Quirks planted: ERCC spike-ins, Ensembl version suffixes, a zero-count
    library per plate, non-DMSO controls, nM/µM units, ``'24h'``/``'24.0 H'``,
    plate names with spaces, row IDs as letters on the replicate-2 plates and
    as numbers elsewhere, and every metadata row of one plate given twice.
    """
    from cpb_assets.demo.world import SYNTHETIC_NOTE

    if dataset not in ("vcpi_0001", "vcpi_0002"):
        raise KeyError(f"the VCPI writer does not serve {dataset!r}")
    ds = dataset
    rng = world.rng("drugseq", ds)
    lay = ginkgo_layout(world, ds, rng, pos_controls=NON_DMSO_CONTROLS, dmso_per_level=DMSO_PER_PLATE)
    sim = lay.assign(compound=[c if k != "dmso" else None for c, k in zip(lay["compound"], lay["kind"])])
    counts, ids = ginkgo_counts(world, ds, sim, rng, with_ercc=True)
    for j in rng.choice(len(world.genes), 3, replace=False):  # a few IDs with an Ensembl version suffix
        ids[j] = f"{ids[j]}.{int(rng.integers(1, 20))}"
    exp = ds.replace("_", "-")
    comp = world.compounds
    cid = lambda c: f"SYNTH-{exp.upper()}-{int(c):03d}"  # noqa: E731
    is_t = lay["kind"] == "treated"
    nm_unit = rng.random(len(lay)) < 0.3  # some concentrations arrive in nM
    conc = np.where(is_t, lay["dose_uM"] * np.where(nm_unit, 1000.0, 1.0), np.where(lay["kind"] == "pos", 1.0, 0.0))
    letters = lay["rep"].to_numpy() == 2
    meta = pd.DataFrame({
        "sequenced_id": [f"SYNSEQ{ds[-4:]}{k:05d}" for k in range(len(lay))],
        "container_id": lay["plate"].str.replace("-", " ", n=1),  # 'SYN VCPI0001-P11': spaces/dashes get cleaned
        "row_id": [chr(ord("A") + int(r) - 1) if let else str(int(r)) for r, let in zip(lay["row_id"], letters)],
        "column_id": lay["column_id"].astype(np.int64),
        "compound": [cid(c) if k == "treated" else ("DMSO" if k == "dmso" else f"SYNTH-POS-{int(c)}")
                     for c, k in zip(lay["compound"], lay["kind"])],
        "user_compound_id": [comp["name"].iloc[int(c)] if k == "treated" else
                             ("DMSO" if k == "dmso" else NON_DMSO_CONTROLS[int(c)])
                             for c, k in zip(lay["compound"], lay["kind"])],
        "compound_concentration": conc,
        "compound_concentration_unit": np.where(is_t & nm_unit, "nM", "uM"),
        "timepoint": np.where(rng.random(len(lay)) < 0.5, "24h", "24.0 H"),
        "cell_line": [world_cell_name(c) for c in lay["cell_type"]],
        "is_control": lay["kind"] != "treated",
    })
    first_plate = lay["plate"] == lay["plate"].iloc[0]
    meta_out = pd.concat([meta, meta[first_plate.to_numpy()]], ignore_index=True)  # exact repeats occur
    used = sorted({int(c) for c, k in zip(lay["compound"], lay["kind"]) if k == "treated"})
    chem = pd.DataFrame({"compound": [cid(c) for c in used], "user_compound_id": comp["name"].iloc[used].to_numpy(),
                         "canonical_smiles": comp["smiles"].iloc[used].to_numpy(),
                         "inchi_key": comp["inchikey"].iloc[used].to_numpy(),
                         "catalog_id": comp["catalog_id"].iloc[used].to_numpy()})
    chem = pd.concat([chem, pd.DataFrame({"compound": ["DMSO"], "user_compound_id": ["DMSO"],
                                          "canonical_smiles": ["CS(C)=O"],
                                          "inchi_key": ["IAZDPXIOMUYVGZ-UHFFFAOYSA-N"], "catalog_id": [None]})],
                     ignore_index=True)
    paths = write_native(folder, meta, counts, ids, chem, experiment=exp, note=SYNTHETIC_NOTE)
    write_parquet(paths[0], meta_out, SYNTHETIC_NOTE)
    return paths
