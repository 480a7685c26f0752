"""OP3 (Open Problems NeurIPS 2023 single-cell perturbations): pre-aggregated pseudobulk h5ad.

The source is one AnnData (``pseudobulk_filtered_with_uns.h5ad`` of the
Open Problems perturbation-prediction task): one row per (plate, well, cell
type) of PBMCs from three donors treated 24 h at 1 µM, X = summed UMI counts,
var index = gene SYMBOLS. obs carries ``plate_name, well, cell_type`` (NK
cells, T cells, Myeloid cells, B cells), ``donor_id``, ``sm_name``,
``sm_lincs_id``, ``SMILES``, ``dose_uM``, ``timepoint_hr``, ``control``,
``library_id``, ``cell_count_by_well_celltype``, ``cell_count_by_plate_well``
and ``split``.

Clean-up (METHODS §1, paper Appendix B): keep treated rows and the DMSO
("Dimethyl Sulfoxide") controls, drop the positive controls (Belinostat,
Dabrafenib: ``control`` True but not DMSO); map the four immune cell types to
Cell Ontology; merge donor metadata; gene symbols → Ensembl with
:func:`cpb_assets.harmonize.genes.symbols_to_ensembl` and a recorded fallback
table (:data:`SYMBOL_FALLBACK` plus an optional ``symbol_fallback*.tsv`` in the
source folder); unmapped genes are dropped, listed in
``Harmonized.unmapped_genes`` and quarantined. ``psbulk_cells`` =
``cell_count_by_well_celltype``; ``psbulk_counts`` = row sums of the
harmonized X. Duplicate gene symbols in var are a format error.
"""
from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cpb_assets.errors import SourceFormatError
from cpb_assets.harmonize import genes as gmap
from cpb_assets.harmonize.assemble import assemble_harmonized, is_synthetic
from cpb_assets.harmonize.contexts import OP3_CELL_TYPES, donor_fields
from cpb_assets.harmonize.quarantine import Quarantine
from cpb_assets.sources.base import (COMPOUND_RECORD_COLUMNS, Harmonized, RemoteFile, empty_compound_records,
                                     find_source_file)
from cpb_assets.sources.drugseq import integer_counts, require_columns
from cpb_resources.storage import atomic_path

DATASET = "op3"
DMSO_NAME = "Dimethyl Sulfoxide"
POSITIVE_CONTROLS = ("Belinostat", "Dabrafenib")
OBS_REQUIRED = ["plate_name", "well", "cell_type", "donor_id", "sm_name", "dose_uM", "timepoint_hr", "control",
                "cell_count_by_well_celltype"]
# Donor metadata of the three PBMC donors (age in years), as the harmonization
# pipeline of the paper records it.
DONORS = pd.DataFrame({"donor_id": ["Donor 1", "Donor 2", "Donor 3"], "age": [45, 52, 45],
                       "sex": ["female", "male", "male"], "self_reported_ethnicity": ["White", "White", "White"]})
#: Recorded fallback: OP3 symbols (GENCODE/Cell Ranger names) that org.Hs.eg.db
#: does not resolve, with the Ensembl gene the pipeline assigns them. Extended per
#: source snapshot by ``symbol_fallback*.tsv`` (columns symbol, ensembl_id, note).
SYMBOL_FALLBACK: dict[str, str] = {
    "LINC-PINT-1": "ENSG00000231721",
    "TTTY15": "ENSG00000114374",
}

REMOTE_FILES: dict[str, list[RemoteFile]] = {
    DATASET: [RemoteFile(
        "https://openproblems-data.s3.amazonaws.com/resources/task_perturbation_prediction/datasets/"
        "neurips-2023-data/pseudobulk_filtered_with_uns.h5ad",
        "pseudobulk_filtered_with_uns.h5ad", None, "CC-BY-4.0")],
}
SYNTHETIC_TAG = "SYNTHETIC"



def development_stage(age) -> str:
    """``'45-year-old stage'`` from an age in years; ``'unknown'`` otherwise."""
    try:
        a = float(age)
    except (TypeError, ValueError):
        return "unknown"
    return f"{int(a)}-year-old stage" if np.isfinite(a) and a > 0 else "unknown"


def read_fallback(folder: Path) -> dict[str, str]:
    """The fallback table: :data:`SYMBOL_FALLBACK` updated by the folder's ``symbol_fallback*.tsv``."""
    table = dict(SYMBOL_FALLBACK)
    f = find_source_file(folder, "symbol_fallback*.tsv", required=False)
    if f is not None:
        df = pd.read_csv(f, sep="\t", dtype=str)
        require_columns(df, ["symbol", "ensembl_id"], f)
        table.update(dict(zip(df["symbol"].str.strip(), df["ensembl_id"].str.strip())))
    return table


def map_symbols(symbols: pd.Index, fallback: dict[str, str], file, q: Quarantine
                ) -> tuple[sp.csr_matrix, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Symbols → Ensembl.

    Returns
    -------
    S
        (n_symbols × n_genes) 0/1 matrix; ``X @ S`` sums symbols of one gene.
    genes
        Index Ensembl ID, column ``symbol`` (the source symbol of the first
        feature of the gene).
    mapping
        One row per input symbol: the :func:`symbols_to_ensembl` answer.
    unmapped
        ``input, reason`` for the symbols dropped.
    """
    m = gmap.symbols_to_ensembl(list(symbols), manual=fallback)
    ok = m["ensembl_id"].notna().to_numpy()
    unmapped = pd.DataFrame({"input": m.loc[~ok, "input"].astype(str).to_numpy(),
                             "reason": ["symbol not in org.Hs.eg.db nor in the fallback table"] * int((~ok).sum())})
    q.add(file, unmapped["input"], "gene symbol without an Ensembl ID", level="gene")
    ens = pd.Index(pd.unique(m.loc[ok, "ensembl_id"].astype(str)))
    rows = np.flatnonzero(ok)
    cols = ens.get_indexer(m.loc[ok, "ensembl_id"].astype(str))
    S = sp.csr_matrix((np.ones(len(rows), dtype=np.int64), (rows, cols)), shape=(len(symbols), len(ens)))
    first = m[ok].drop_duplicates("ensembl_id").set_index("ensembl_id")["input"]
    genes = pd.DataFrame({"symbol": first.reindex(ens).astype(str).to_numpy()}, index=pd.Index(ens, name="gene"))
    merged = m[ok & m["ensembl_id"].duplicated(keep="first").to_numpy()]
    if len(merged):
        q.add(file, merged["input"], "symbol merged into another feature of the same Ensembl gene (counts summed)",
              level="gene")
    return S, genes, m, unmapped


def harmonize_anndata(raw: ad.AnnData, *, dataset: str, registry: pd.DataFrame, file, fallback: dict[str, str]
                      ) -> Harmonized:
    """Clean one OP3 pseudobulk AnnData (see the module docstring)."""
    q = Quarantine(dataset)
    if raw.var_names.has_duplicates:
        dup = raw.var_names[raw.var_names.duplicated()].unique()[:5].tolist()
        raise SourceFormatError(file, "var_names", f"duplicate genes {dup}")
    obs = raw.obs.copy()
    require_columns(obs, OBS_REQUIRED, file, what="obs column")
    counts = integer_counts(raw.layers["counts"] if "counts" in raw.layers else raw.X, file,
                            "layers/counts" if "counts" in raw.layers else "X")
    obs.index = obs.index.astype(str)
    is_ctrl = obs["control"].astype(str).str.strip().str.lower().isin(["true", "1", "yes"]).to_numpy()
    name = obs["sm_name"].astype(str).str.strip()
    ct = obs["cell_type"].astype(str).str.strip().map(OP3_CELL_TYPES)
    donors = DONORS.set_index("donor_id")
    drop_rules = [
        ("positive control (control, not Dimethyl Sulfoxide)", is_ctrl & (name != DMSO_NAME).to_numpy()),
        ("unknown cell type", ct.isna().to_numpy()),
        ("unknown donor", ~obs["donor_id"].astype(str).isin(donors.index).to_numpy()),
    ]
    dropped = np.zeros(len(obs), dtype=bool)
    for reason, mask in drop_rules:
        new = mask & ~dropped
        q.add(file, obs.index[new], reason)
        dropped |= new
    keep = ~dropped
    obs, counts, is_ctrl, ct, name = obs[keep], counts[keep], is_ctrl[keep], ct[keep], name[keep]

    S, genes, _, unmapped = map_symbols(raw.var_names, fallback, file, q)
    X = sp.csr_matrix(counts) @ S
    X = sp.csr_matrix(X, dtype=np.int64)

    donor = donors.loc[obs["donor_id"].astype(str)]
    samples = pd.DataFrame({
        "plate": obs["plate_name"].astype(str).str.replace(" ", "", regex=False).str.replace("-", "_").to_numpy(),
        "well": obs["well"].astype(str).to_numpy(),
        "cell_type": ct.to_numpy(),
        "perturbagen": np.where(is_ctrl, "DMSO", name.to_numpy()),
        "perturbagen_name": name.to_numpy(),
        "is_control": is_ctrl,
        "pert_dose_uM": pd.to_numeric(obs["dose_uM"], errors="coerce").to_numpy(dtype=float),
        "pert_time_h": pd.to_numeric(obs["timepoint_hr"], errors="coerce").to_numpy(dtype=float),
        "source_id": np.where(is_ctrl, None, name.to_numpy()),
        "psbulk_cells": pd.to_numeric(obs["cell_count_by_well_celltype"], errors="coerce").fillna(-666)
        .astype(np.int64).to_numpy(),
        "psbulk_counts": np.asarray(X.sum(axis=1)).ravel().astype(np.int64),
    })
    if "sm_lincs_id" in obs.columns:
        samples["pert_id"] = obs["sm_lincs_id"].astype(str).to_numpy()
    if "split" in obs.columns:
        samples["split"] = obs["split"].astype(str).to_numpy()
    bad_dose = ~is_ctrl & ~np.isfinite(samples["pert_dose_uM"].to_numpy())
    bad_time = ~np.isfinite(samples["pert_time_h"].to_numpy())
    if (bad_dose | bad_time).any():
        raise SourceFormatError(file, "dose_uM" if bad_dose.any() else "timepoint_hr", "non-numeric values")
    # donor block: the cell type's defaults, the donor's sex, age and ethnicity
    blocks = []
    for c, (_, d) in zip(samples["cell_type"], donor.iterrows()):
        block = donor_fields(c, suspension_type="cell", sex=d["sex"], development_stage=development_stage(d["age"]))
        block["self_reported_ethnicity"] = d["self_reported_ethnicity"]
        blocks.append(block)
    samples = pd.concat([samples, pd.DataFrame(blocks, index=samples.index)], axis=1)
    synthetic = is_synthetic(Path(file), raw.uns.get("note"), raw.uns.get("synthetic"))
    adata = assemble_harmonized(samples, X, genes, dataset=dataset, synthetic=synthetic, registry=registry,
                                file=str(file), suspension_type="cell")
    notes = {"n_samples": int(adata.n_obs), "n_genes": int(adata.n_vars), "n_unmapped_genes": int(len(unmapped)),
             "n_controls": int(adata.obs["is_control"].sum()), "quarantine": q.summary(),
             "fallback_table_size": len(fallback)}
    return Harmonized(adata=adata, quarantine=q, unmapped_genes=unmapped, notes=notes)


def harmonize(folder: str | Path, dataset: str, registry: pd.DataFrame) -> Harmonized:
    """Read the OP3 pseudobulk h5ad in `folder` and return the harmonized AnnData.

    Parameters
    ----------
    folder
        Holds one ``*.h5ad`` (the source) and optionally ``symbol_fallback*.tsv``.
    dataset
        ``'op3'``.
    registry
        ``source_id`` (= ``sm_name``), ``pubchem_cid``, ``cid_method``.
    """
    if dataset != DATASET:
        raise KeyError(f"op3 does not serve {dataset!r}")
    folder = Path(folder)
    file = find_source_file(folder, "*.h5ad")
    try:
        raw = ad.read_h5ad(file)
    except Exception as exc:  # h5py/anndata errors on duplicate or malformed groups
        raise SourceFormatError(file, "<h5ad>", f"not a readable AnnData: {exc}") from exc
    return harmonize_anndata(raw, dataset=dataset, registry=registry, file=file, fallback=read_fallback(folder))


def compound_records(folder: str | Path, dataset: str) -> pd.DataFrame:
    """One row per OP3 compound name (``sm_name``), DMSO and positive controls included only if treated."""
    folder = Path(folder)
    file = find_source_file(folder, "*.h5ad")
    obs = ad.read_h5ad(file, backed="r").obs
    require_columns(obs, ["sm_name", "control"], file, what="obs column")
    is_ctrl = obs["control"].astype(str).str.lower().isin(["true", "1", "yes"])
    obs = obs[~is_ctrl]
    get = lambda c: obs[c].astype(object) if c in obs.columns else pd.Series([None] * len(obs), index=obs.index)  # noqa: E731
    df = pd.DataFrame({"source_id": obs["sm_name"].astype(str), "name": obs["sm_name"].astype(str),
                       "smiles": get("SMILES"), "inchikey": None, "catalog_id": get("sm_lincs_id")})
    df = df[COMPOUND_RECORD_COLUMNS].astype(object)
    df = df.where(df.notna(), None).drop_duplicates("source_id").reset_index(drop=True)
    return df if len(df) else empty_compound_records()


# =========================================================================== writers
def write_native(path: str | Path, obs: pd.DataFrame, counts: np.ndarray, symbols, *, note: str = "") -> Path:
    """Write an OP3-style pseudobulk h5ad (X = counts, var index = symbols) atomically."""
    adata = ad.AnnData(X=sp.csr_matrix(np.asarray(counts, dtype=np.float32)), obs=obs,
                       var=pd.DataFrame(index=pd.Index([str(s) for s in symbols])))
    adata.uns["note"] = note
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
    return Path(path)


WELLS_DMSO = 4
MIN_CELLS, MAX_CELLS = 5, 150
CELLS_PER_TYPE = {"CL_0000084": (60, 150), "CL_0000623": (15, 50), "CL_0000763": (8, 40), "CL_0000236": (5, 30)}
READS_PER_CELL = 800.0
# source symbols planted for the gene-mapping quirks of the demo
PREVIOUS_SYMBOLS = {"MARCHF1": "MARCH1", "SEPTIN7": "SEPT7", "SEPTIN2": "SEPT2"}
N_FALLBACK, N_UNMAPPED = 2, 2


def write_synthetic(world, dataset: str, folder: str | Path) -> list[Path]:
    """Write the SYNTHETIC OP3 stand-in: one pseudobulk h5ad and its symbol fallback table.

    One plate per donor (the design's replicates); each well holds the four
    immune cell types. Quirks: positive-control wells (Belinostat, Dabrafenib),
    a few previous gene symbols (MARCH1, SEPT7 …), two clone-style symbols that
    only the fallback table resolves, two symbols nothing resolves, low-cell
    pseudobulks, and a ``split`` column.
    """
    from cpb_assets.sources.demo_world import DESIGNS, SYNTHETIC_NOTE

    if dataset != DATASET:
        raise KeyError(f"op3 does not serve {dataset!r}")
    folder = Path(folder)
    d = DESIGNS[DATASET]
    rng = world.rng("op3", DATASET)
    inv_ct = {v: k for k, v in OP3_CELL_TYPES.items() if k.endswith("cells")}
    rows = []
    for rep in range(d.replicates):
        donor = DONORS["donor_id"].iloc[rep % len(DONORS)]
        plate = f"plate_SYN{rep + 1}"
        wells = ([("trt", c) for c in d.compounds] + [("dmso", None)] * WELLS_DMSO
                 + [("pos", n) for n in POSITIVE_CONTROLS])
        wells = [wells[i] for i in rng.permutation(len(wells))]
        for k, (kind, c) in enumerate(wells):
            well = f"{chr(ord('A') + k // 12)}{k % 12 + 1}"
            for ct in d.cell_types:
                lo, hi = CELLS_PER_TYPE[ct]
                rows.append({"kind": kind, "compound": c, "plate": plate, "well": well, "cell_type": ct,
                             "donor": donor, "cells": int(rng.integers(lo, hi + 1)), "rep": rep})
    lay = pd.DataFrame(rows)
    gidx = np.arange(len(world.genes))
    counts = np.zeros((len(lay), len(gidx)), dtype=np.int64)
    for cells, grp in lay.groupby("cells"):
        sim = pd.DataFrame({"cell_type": grp["cell_type"], "plate": grp["plate"], "time_h": d.times_h[0],
                            "dose_uM": np.where(grp["kind"] == "dmso", 0.0, d.doses_uM[0]),
                            "compound": [c if k == "trt" else (POSITIVE_CONTROLS.index(c) if k == "pos" else None)
                                         for k, c in zip(grp["kind"], grp["compound"])]})
        counts[grp.index.to_numpy()] = world.count_matrix(sim, gidx, dataset=DATASET,
                                                          library_size=cells * READS_PER_CELL, rng=rng)
    symbols = world.genes["symbol"].astype(str).tolist()
    for new, old in PREVIOUS_SYMBOLS.items():
        if new in symbols:
            symbols[symbols.index(new)] = old
    extra = np.flatnonzero((world.genes["kind"] == "extra").to_numpy())
    picks = rng.choice(extra, N_FALLBACK, replace=False)
    fallback = []
    for k, j in enumerate(picks, start=1):
        symbols[j] = f"SYNTHETIC-AC{900000 + k}.1"
        fallback.append({"symbol": symbols[j], "ensembl_id": world.genes.index[j],
                         "note": "SYNTHETIC clone-style symbol of the demo world"})
    junk = [f"SYNTHETIC-LINC{k:03d}" for k in range(1, N_UNMAPPED + 1)]
    counts = np.hstack([counts, rng.poisson(2.0, (len(lay), N_UNMAPPED))])
    symbols += junk
    comp = world.compounds
    is_t, is_d = (lay["kind"] == "trt").to_numpy(), (lay["kind"] == "dmso").to_numpy()
    name = [comp["name"].iloc[int(c)] if k == "trt" else (DMSO_NAME if k == "dmso" else c)
            for k, c in zip(lay["kind"], lay["compound"])]
    split = np.array(["control" if k != "trt" else ("public_test" if int(c) % 4 == 0 else "train")
                      for k, c in zip(lay["kind"], lay["compound"])], dtype=object)
    obs = pd.DataFrame({
        "plate_name": lay["plate"].to_numpy(), "well": lay["well"].to_numpy(),
        "cell_type": [inv_ct[c] for c in lay["cell_type"]], "donor_id": lay["donor"].to_numpy(),
        "sm_name": name,
        "sm_lincs_id": [comp["brd_id"].iloc[int(c)] if k == "trt" else ("LSM-36361" if k == "dmso" else f"SYN-POS-{c}")
                        for k, c in zip(lay["kind"], lay["compound"])],
        "SMILES": [comp["smiles"].iloc[int(c)] if k == "trt" else ("CS(C)=O" if k == "dmso" else None)
                   for k, c in zip(lay["kind"], lay["compound"])],
        "dose_uM": d.doses_uM[0], "timepoint_hr": d.times_h[0], "control": ~is_t,
        "library_id": [f"library_SYN{r}" for r in lay["rep"]],
        "cell_count_by_well_celltype": lay["cells"].to_numpy(),
        "cell_count_by_plate_well": lay.groupby(["plate", "well"])["cells"].transform("sum").to_numpy(),
        "split": split,
    })
    obs.index = [f"{p}_{w}_{c}" for p, w, c in zip(obs["plate_name"], obs["well"], obs["cell_type"])]
    out = [write_native(folder / f"op3_pseudobulk_{SYNTHETIC_TAG}.h5ad", obs, counts, symbols, note=SYNTHETIC_NOTE)]
    fb = folder / f"symbol_fallback_{SYNTHETIC_TAG}.tsv"
    with atomic_path(fb) as tmp:
        pd.DataFrame(fallback).to_csv(tmp, sep="\t", index=False)
    out.append(fb)
    assert is_d.sum() == WELLS_DMSO * len(d.cell_types) * d.replicates
    return out
