"""Tahoe-100M: one cell-level h5ad per plate → QC → pseudobulk → harmonized AnnData.

Native form (Arc Institute's release, ``gs://arc-ctc-tahoe100/2025-02-25/h5ad/``):
``plate{N}_filt_Vevo_Tahoe100M_WServicesFrom_ParseGigalab.h5ad``, 14 plates,
X = raw UMI counts (CSR, stored as floats), obs indexed by
``BARCODE_SUB_LIB_ID`` with columns ``sample`` (one treatment well, e.g.
``smp_1495``), ``gene_count``, ``tscp_count``, ``mread_count``,
``drugname_drugconc`` (a Python literal such as ``[('Infigratinib', 0.05,
'uM')]``; the vehicle is ``[('DMSO_TF', 0.0, 'uM')]``), ``drug``,
``cell_line`` (Cellosaurus ID), ``sublibrary``, ``BARCODE``, ``pcnt_mito``
(a fraction despite the name), ``S_score``, ``G2M_score``, ``phase``,
``pass_filter`` (``full`` / ``minimal``), ``cell_name``, ``plate``. Compound
structures come from the companion ``drug_metadata.parquet`` (``drug``,
``canonical_smiles``, ``pubchem_cid``, MoA columns). Every sample is 24 h.

Processing (METHODS §1–2): plates are processed one at a time and, within a
plate, in row chunks of :data:`CHUNK_CELLS` cells, so peak memory does not grow
with the number of plates; single-cell QC (:mod:`cpb_assets.harmonize.pseudobulk`)
is applied before summing counts per (plate, well = ``sample``, perturbagen,
cell_type). The source's own ``pass_filter`` flag is not used: our QC rules
replace it. The minimum-cell filter (50 cells) belongs to the DE layer, so
``psbulk_cells`` is kept exact and no group is dropped here.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import h5py
from typing import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cpb_assets.errors import SourceFormatError
from cpb_assets.harmonize import pseudobulk as pb
from cpb_assets.harmonize.assemble import assemble_harmonized, is_synthetic
from cpb_assets.harmonize.contexts import resolve_cell_types
from cpb_assets.harmonize.quarantine import Quarantine
from cpb_assets.harmonize.units import UnitError, dose_to_uM
from cpb_assets.sources.base import Harmonized, RemoteFile, empty_compound_records

DATASET = "tahoe100m"
TIME_H = 24.0  # Tahoe-100M treats every well for 24 h (paper Table 1)
CONTROL_DRUGS = {"DMSO_TF", "DMSO"}
# obs columns that form the pseudobulk group key: plate, well, perturbagen(+dose), cell line
GROUP_OBS = ["plate", "sample", "drugname_drugconc", "cell_line"]
KEY_COLUMNS = ["plate", "well", "condition", "cell_line"]
CHUNK_CELLS = 50_000
PLATE_GLOB = "plate*.h5ad"
CONTROL_WELLS_PER_PLATE = 3  # synthetic plates: DMSO_TF wells per plate
# Tahoe-style cell names of the demo contexts (the real obs `cell_name` column)
TAHOE_CELL_NAMES = {"CVCL_0023": "A549", "CVCL_0031": "MCF7", "CVCL_0320": "HT-29"}

_BUCKET = "https://storage.googleapis.com/arc-ctc-tahoe100/2025-02-25"
REMOTE_FILES: dict[str, list[RemoteFile]] = {
    DATASET: [
        RemoteFile(f"{_BUCKET}/h5ad/plate{n}_filt_Vevo_Tahoe100M_WServicesFrom_ParseGigalab.h5ad",
                   f"plate{n}_filt_Vevo_Tahoe100M_WServicesFrom_ParseGigalab.h5ad", None, "CC0-1.0")
        for n in range(1, 15)
    ] + [
        RemoteFile("https://huggingface.co/datasets/tahoebio/Tahoe-100M/resolve/main/metadata/drug_metadata.parquet",
                   "drug_metadata.parquet", None, "CC0-1.0"),
    ],
}


# --------------------------------------------------------------------------- reading
def parse_drugname_drugconc(text: str) -> tuple[str, float, str]:
    """Split Tahoe's ``drugname_drugconc`` literal into (drug, concentration, unit).

    ``"[('Erdafitinib ', 0.05, 'uM')]"`` → ``('Erdafitinib', 0.05, 'uM')``: the
    real files carry stray whitespace inside names, which is stripped.

    Raises
    ------
    ValueError
        Not a one-element list of (name, number, unit) tuples.
    """
    try:
        val = ast.literal_eval(str(text))
    except (ValueError, SyntaxError) as exc:
        raise ValueError(f"not a Python literal: {text!r}") from exc
    if not (isinstance(val, list) and len(val) == 1 and isinstance(val[0], tuple) and len(val[0]) == 3):
        raise ValueError(f"expected [('drug', conc, 'unit')], got {text!r}")
    name, conc, unit = val[0]
    if not isinstance(conc, (int, float)):
        raise ValueError(f"concentration is not a number in {text!r}")
    return re.sub(r"\s+", " ", str(name)).strip(), float(conc), str(unit)


def _read_obs_column(f: h5py.File, col: str, path: Path) -> pd.Series:
    import anndata.io as adio

    if "obs" not in f:
        raise SourceFormatError(path, "obs", "no obs group")
    if col not in f["obs"]:
        raise SourceFormatError(path, f"obs/{col}", "grouping column missing from the cell table")
    vals = adio.read_elem(f["obs"][col])
    if isinstance(vals, pd.Categorical):
        return pd.Series(vals)
    return pd.Series(np.asarray(vals, dtype=object)).astype("category")


def read_plate_var(path: str | Path) -> pd.DataFrame:
    """The gene table of one plate file: columns ``gene_id`` and ``gene_name``.

    ``gene_id`` is the var column of that name when present, else the var
    index; ``gene_name`` likewise falls back to the index.
    """
    import anndata.io as adio

    path = Path(path)
    with h5py.File(path, "r") as f:
        if "var" not in f:
            raise SourceFormatError(path, "var", "no var group")
        var = adio.read_elem(f["var"])
    ids = var["gene_id"] if "gene_id" in var.columns else pd.Series(var.index, index=var.index)
    names = var["gene_name"] if "gene_name" in var.columns else pd.Series(var.index, index=var.index)
    out = pd.DataFrame({"gene_id": np.asarray(ids, dtype=object).astype(str),
                        "gene_name": np.asarray(names, dtype=object).astype(str)})
    if out["gene_id"].duplicated().any():
        dup = out["gene_id"][out["gene_id"].duplicated()].unique()[:5].tolist()
        raise SourceFormatError(path, "var", f"duplicate genes {dup}")
    return out


def _iter_x_chunks(f: h5py.File, path: Path, n_genes: int, chunk: int):
    """Yield (start, stop, CSR block) over row chunks of X without loading X whole."""
    if "X" not in f:
        raise SourceFormatError(path, "X", "no count matrix")
    X = f["X"]
    if isinstance(X, h5py.Dataset):  # dense X
        n = X.shape[0]
        for s in range(0, n, chunk):
            block = np.asarray(X[s:s + chunk])
            problem = pb.check_counts(block)
            if problem:
                raise SourceFormatError(path, "X", problem)
            yield s, min(s + chunk, n), sp.csr_matrix(block)
        return
    enc = X.attrs.get("encoding-type", "")
    enc = enc.decode() if isinstance(enc, bytes) else str(enc)
    if enc != "csr_matrix":
        raise SourceFormatError(path, "X", f"encoding {enc!r}: cells must be rows of a CSR matrix")
    shape = tuple(int(v) for v in X.attrs["shape"])
    if shape[1] != n_genes:
        raise SourceFormatError(path, "X", f"{shape[1]} columns but var has {n_genes} genes")
    indptr = X["indptr"][:]
    for s in range(0, shape[0], chunk):
        e = min(s + chunk, shape[0])
        lo, hi = int(indptr[s]), int(indptr[e])
        data = X["data"][lo:hi]
        problem = pb.check_counts(data)
        if problem:
            raise SourceFormatError(path, "X", problem)
        block = sp.csr_matrix((data.astype(np.int64), X["indices"][lo:hi], indptr[s:e + 1] - lo),
                              shape=(e - s, shape[1]))
        yield s, e, block


def pseudobulk_plate(path: str | Path, *, keep: np.ndarray, mito: np.ndarray, malat1_col: int | None,
                     n_genes: int, q: Quarantine, chunk: int = CHUNK_CELLS,
                     thresholds: pb.QCThresholds = pb.QCThresholds()) -> tuple[pd.DataFrame, sp.csr_matrix]:
    """QC and pseudobulk one plate file, streaming its rows in chunks.

    Parameters
    ----------
    path
        The plate h5ad.
    keep
        Columns (genes) kept on the harmonized axis.
    mito, malat1_col
        The ``MT-`` mask and MALAT1 column, both on the kept axis.
    n_genes
        Number of var rows in the file (checked against X).
    q
        Quarantine receiving per-plate, per-rule cell counts.

    Returns
    -------
    The plate's pseudobulk groups (key columns ``plate, well, condition,
    cell_line`` + ``psbulk_cells``, ``psbulk_counts``) and their summed
    counts on the kept genes.
    """
    path = Path(path)
    parts = []
    qc_totals = dict.fromkeys(pb.QC_RULES, 0)
    with h5py.File(path, "r") as f:
        cols = {c: _read_obs_column(f, c, path) for c in GROUP_OBS}
        keys = pd.DataFrame({"plate": cols["plate"], "well": cols["sample"],
                             "condition": cols["drugname_drugconc"], "cell_line": cols["cell_line"]})
        missing = keys.isna().any(axis=1).to_numpy()
        for s, e, block in _iter_x_chunks(f, path, n_genes, chunk):
            block = block[:, keep]
            res = pb.cell_qc(block, mito=mito, malat1_col=malat1_col, group_missing=missing[s:e],
                             thresholds=thresholds)
            for rule, n in res.counts.items():
                qc_totals[rule] += n
            if res.passed.any():
                k = keys.iloc[s:e][res.passed].astype(str)
                parts.append(pb.pseudobulk(block[res.passed], k))
            del block, res
    plate_label = ",".join(sorted(keys["plate"].dropna().astype(str).unique())) or path.stem
    for rule in pb.QC_RULES:
        q.add_count(path.name, plate_label, pb.QC_REASONS[rule], qc_totals[rule], level="cell")
    if not parts:
        return pd.DataFrame(columns=KEY_COLUMNS + ["psbulk_cells", "psbulk_counts"]), sp.csr_matrix((0, len(keep)))
    return pb.combine_pseudobulk(parts, KEY_COLUMNS)


def _plate_files(folder: Path) -> list[Path]:
    files = sorted((p for p in folder.glob(PLATE_GLOB) if not p.name.startswith(".")),
                   key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)])
    if not files:
        raise SourceFormatError(folder / PLATE_GLOB, "<file>", "no Tahoe plate h5ad found")
    return files


# A plate runner pseudobulks one plate file and returns (groups, counts, quarantine rows);
# the default runs in this process, the harmonized asset passes one that runs each
# plate as a unit of work on the compute resource (local subprocess or SLURM job).
PlateRunner = Callable[[Path, dict], tuple[pd.DataFrame, sp.csr_matrix, list[dict]]]
PLATE_UNITS = True  # harmonize() accepts a plate_runner


def harmonize(folder: str | Path, dataset: str, registry: pd.DataFrame, *,
              chunk: int = CHUNK_CELLS, plate_runner: PlateRunner | None = None) -> Harmonized:
    """Harmonize Tahoe-100M from its per-plate h5ad files in `folder`.

    Plates are read one after another (and each in chunks of `chunk` cells);
    only the small per-plate pseudobulks are kept between plates. Each plate
    is one unit of work: `plate_runner` (default: in this process) receives
    the plate file and the gene axis ``{"keep", "mito", "malat1_col",
    "n_genes", "chunk"}``.
    """
    from cpb_assets.harmonize.pseudobulk import MALAT1_ENSEMBL

    folder = Path(folder)
    files = _plate_files(folder)
    q = Quarantine(dataset)
    var0 = read_plate_var(files[0])
    try:
        keep, genes, dropped = pb.ensembl_gene_axis(var0["gene_id"], var0["gene_name"])
    except ValueError as exc:
        raise SourceFormatError(files[0], "var", str(exc)) from None
    q.add(files[0].name, dropped["input"], "gene not on the human Ensembl axis", level="gene")
    mito = pb.mito_mask(genes["symbol"])
    malat1_col = int(genes.index.get_loc(MALAT1_ENSEMBL)) if MALAT1_ENSEMBL in genes.index else None
    plates = []
    for path in files:
        var = read_plate_var(path)
        if not var["gene_id"].equals(var0["gene_id"]):
            raise SourceFormatError(path, "var", f"gene axis differs from {files[0].name}")
        axis = {"keep": keep, "mito": mito, "malat1_col": malat1_col, "n_genes": len(var), "chunk": chunk}
        if plate_runner is None:
            plates.append(pseudobulk_plate(path, keep=keep, mito=mito, malat1_col=malat1_col, n_genes=len(var),
                                           q=q, chunk=chunk))
        else:
            groups, counts, qrows = plate_runner(path, axis)
            q.rows.extend(qrows)
            plates.append((groups, counts))
    groups = pd.concat([g for g, _ in plates], ignore_index=True)
    X = sp.vstack([s for _, s in plates], format="csr")
    del plates
    samples, X = _samples(groups, X, q, folder)
    adata = assemble_harmonized(samples, X, genes, dataset=dataset, synthetic=is_synthetic(*files),
                                registry=registry, file=str(folder), suspension_type="cell")
    notes = {"plates": len(files), "cells_kept": int(samples["psbulk_cells"].sum()),
             "samples": int(adata.n_obs), "qc": q.summary(),
             "groups_below_50_cells": int((samples["psbulk_cells"] < 50).sum())}
    return Harmonized(adata=adata, quarantine=q, unmapped_genes=dropped, notes=notes)


def _samples(groups: pd.DataFrame, X: sp.csr_matrix, q: Quarantine, folder: Path
             ) -> tuple[pd.DataFrame, sp.csr_matrix]:
    """Per-sample table from pseudobulk groups: parse conditions, map cell lines."""
    parsed = {}
    for cond in groups["condition"].unique():
        try:
            parsed[cond] = parse_drugname_drugconc(cond)
        except ValueError as exc:
            raise SourceFormatError(folder / PLATE_GLOB, "obs/drugname_drugconc", str(exc)) from None
    name = groups["condition"].map(lambda c: parsed[c][0])
    try:
        dose = np.array([dose_to_uM(parsed[c][1], parsed[c][2]) for c in groups["condition"]], dtype=float)
    except UnitError as exc:
        raise SourceFormatError(folder / PLATE_GLOB, "obs/drugname_drugconc", str(exc)) from None
    # cell lines outside the context table are quarantined, counted in cells
    cell_type = resolve_cell_types(groups["cell_line"], q, str(folder), n=groups["psbulk_cells"])
    bad = cell_type.isna().to_numpy()
    ctrl = name.isin(CONTROL_DRUGS).to_numpy()
    samples = pd.DataFrame({
        "plate": groups["plate"].astype(str), "well": groups["well"].astype(str),
        "cell_type": cell_type, "perturbagen": name, "perturbagen_name": name,
        "is_control": ctrl, "pert_dose_uM": np.where(ctrl, 0.0, dose), "pert_time_h": TIME_H,
        "source_id": np.where(ctrl, None, name).astype(object),
        "psbulk_cells": groups["psbulk_cells"].astype(np.int64),
        "psbulk_counts": groups["psbulk_counts"].astype(np.int64),
    })
    keep_rows = np.flatnonzero(~bad)
    return samples.iloc[keep_rows].reset_index(drop=True), X[keep_rows]


def compound_records(folder: str | Path, dataset: str) -> pd.DataFrame:
    """Compounds from ``drug_metadata.parquet`` (else the plates' drug names), controls left out."""
    folder = Path(folder)
    meta = sorted(p for p in folder.glob("*drug_metadata*.parquet") if not p.name.startswith("."))
    if meta:
        dm = pd.read_parquet(meta[0])
        if "drug" not in dm.columns:
            raise SourceFormatError(meta[0], "drug", "column missing")
        names = dm["drug"].astype(str).str.replace(r"\s+", " ", regex=True).str.strip()
        smiles = dm["canonical_smiles"] if "canonical_smiles" in dm.columns else pd.Series([None] * len(dm))
        out = pd.DataFrame({"source_id": names.to_numpy(), "name": names.to_numpy(),
                            "smiles": [None if pd.isna(s) or not str(s) else str(s) for s in smiles],
                            "inchikey": None, "catalog_id": None})
    else:
        names = set()
        for path in _plate_files(folder):
            with h5py.File(path, "r") as f:
                cats = _read_obs_column(f, "drugname_drugconc", path).cat.categories
            names |= {parse_drugname_drugconc(c)[0] for c in cats}
        out = pd.DataFrame({"source_id": sorted(names), "name": sorted(names), "smiles": None,
                            "inchikey": None, "catalog_id": None})
    out = out[~out["source_id"].isin(CONTROL_DRUGS)].drop_duplicates("source_id").reset_index(drop=True)
    return out if len(out) else empty_compound_records()


# --------------------------------------------------------------------------- synthetic writer
def plate_layout(world, dataset: str = DATASET) -> list[dict]:
    """The synthetic plates: which compounds each holds (DESIGNS: compounds_per_plate × replicates).

    Returns one dict per plate: ``plate`` (``plate1`` …), ``replicate``, ``compounds``.
    """
    from cpb_assets.sources.demo_world import DESIGNS

    design = DESIGNS[dataset]
    per = int(design.extra.get("compounds_per_plate", len(design.compounds)))
    blocks = [design.compounds[i:i + per] for i in range(0, len(design.compounds), per)]
    out, k = [], 1
    for rep in range(1, design.replicates + 1):
        for block in blocks:
            out.append({"plate": f"plate{k}", "replicate": rep, "compounds": tuple(block)})
            k += 1
    return out


def cell_counts(world, n: int, cell_type: str, compound: int | None, dose_uM: float, time_h: float,
                plate_shift: np.ndarray, rng: np.random.Generator, *, library_size: float = 2200.0,
                libsize_cv: float = 0.3, dispersion: float = 0.0) -> np.ndarray:
    """SYNTHETIC single-cell UMI counts of `n` cells of one condition (all world genes).

    The expected profile is the world's baseline + true log2FC (dose in µM,
    time in h) + the plate's shift; each cell draws a log-normal library size
    (median `library_size` UMIs) and Poisson counts, or gamma–Poisson counts
    (variance mu + `dispersion` · mu²) when `dispersion` > 0, all cells at
    once. Poisson is the default: UMI counts of one cell state are close to
    Poisson, and the gamma draw would double the writer's time.
    """
    log2_mu = (world.baseline[world.context_index(cell_type)].astype(np.float64)
               + world.true_logfc(compound, cell_type, float(dose_uM), float(time_h)) + plate_shift)
    p = np.exp2(log2_mu)
    p /= p.sum()
    lib = library_size * rng.lognormal(0.0, libsize_cv, n)
    mu = lib[:, None] * p[None, :]
    lam = rng.gamma(1.0 / dispersion, mu * dispersion) if dispersion > 0 else mu
    return rng.poisson(lam).astype(np.int64)


def plant_defects(counts: np.ndarray, mito: np.ndarray, malat1_col: int, rng: np.random.Generator,
                   share: float) -> np.ndarray:
    """Damage a share of cells in place so every QC rule has work; returns per-cell defect codes.

    Codes: 0 none, 1 very low library (fails genes detected), 2 low library
    (fails total counts), 3 mitochondrial burst, 4 MALAT1 lost, 5 grouping
    field missing (the caller blanks the cell line).
    """
    n = counts.shape[0]
    code = np.where(rng.random(n) < share, rng.integers(1, 6, n), 0)
    for i in np.flatnonzero(code == 1):
        counts[i] = rng.binomial(counts[i], 0.08)
    for i in np.flatnonzero(code == 2):
        counts[i] = rng.binomial(counts[i], 0.26)
    for i in np.flatnonzero(code == 3):
        counts[i, mito] *= 25
    counts[code == 4, malat1_col] = 0
    return code


def write_plates(world, folder: str | Path, plates: list[dict], *, dataset: str = DATASET,
                 cells_per_well_line: tuple[int, int] = (35, 90), library_size: float = 2200.0,
                 defect_share: float = 0.06) -> list[Path]:
    """Write SYNTHETIC Tahoe plate h5ad files for the given plate layout.

    Parameters
    ----------
    plates
        Output of :func:`plate_layout` (or a custom list of the same shape).
    cells_per_well_line
        Inclusive range of cells drawn per (well, cell line).
    library_size
        Mean UMIs per cell.
    defect_share
        Share of cells damaged for the QC rules (see :func:`plant_defects`).
    """
    import anndata as ad

    from cpb_assets.sources.demo_world import DESIGNS, SYNTHETIC_NOTE
    from cpb_resources.storage import atomic_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    design = DESIGNS[dataset]
    genes = world.genes
    gidx = np.arange(len(genes))
    mito = (genes["kind"] == "mito").to_numpy()
    malat1_col = int(np.flatnonzero((genes["kind"] == "malat1").to_numpy())[0])
    comps = world.compounds
    written = []
    sample_no = 1400
    for plate in plates:
        rng = world.rng(dataset, "plate", plate["plate"])
        plate_shift = world.plate_effect(dataset, plate["plate"], len(gidx), 0.1)
        wells = [(None, 0.0)] * CONTROL_WELLS_PER_PLATE + [(c, d) for c in plate["compounds"]
                                                           for d in design.doses_uM]
        blocks, obs_parts = [], []
        for w, (comp, dose) in enumerate(wells):
            sample_no += 1
            sample = f"smp_{sample_no}"
            if comp is None:
                drug, cond = "DMSO_TF", "[('DMSO_TF', 0.0, 'uM')]"
            else:
                drug = str(comps["name"].iloc[comp])
                # the real files carry stray spaces inside some names: plant a few
                shown = drug + " " if comp % 4 == 1 else drug
                cond = f"[('{shown}', {float(dose)!r}, 'uM')]"
            for ct in design.cell_types:
                n = int(rng.integers(cells_per_well_line[0], cells_per_well_line[1] + 1))
                counts = cell_counts(world, n, ct, comp, dose, TIME_H, plate_shift, rng,
                                     library_size=library_size)
                code = plant_defects(counts, mito, malat1_col, rng, defect_share)
                blocks.append(sp.csr_matrix(counts.astype(np.float32)))
                total = counts.sum(1)
                barcodes = (pd.Series(rng.integers(1, 97, n)).map("{:03d}".format).radd(f"{w + 1:02d}_") + "_"
                            + pd.Series(rng.integers(1, 193, n)).map("{:03d}".format)).to_numpy()
                obs_parts.append(pd.DataFrame({
                    "sample": sample, "gene_count": (counts > 0).sum(1), "tscp_count": total,
                    "mread_count": (total * rng.uniform(1.1, 1.3, n)).astype(int),
                    "drugname_drugconc": cond, "drug": drug,
                    "cell_line": np.where(code == 5, None, ct).astype(object),
                    "sublibrary": f"lib_{9000 + int(plate['plate'][5:])}", "BARCODE": barcodes,
                    "pcnt_mito": counts[:, mito].sum(1) / np.maximum(total, 1),
                    "S_score": rng.normal(0, 0.1, n), "G2M_score": rng.normal(0, 0.1, n),
                    "phase": rng.choice(["G1", "S", "G2M"], n),
                    "pass_filter": np.where(total > 1000, "full", "minimal"),
                    "cell_name": np.where(code == 5, None, TAHOE_CELL_NAMES.get(ct, ct)).astype(object),
                    "plate": plate["plate"],
                }))
        obs = pd.concat(obs_parts, ignore_index=True)
        obs.index = pd.Index(obs["BARCODE"] + "-" + obs["sublibrary"], name="BARCODE_SUB_LIB_ID")
        obs.index = obs.index + "-" + pd.Index(np.arange(len(obs)).astype(str))  # unique per plate
        for c in ["sample", "drugname_drugconc", "drug", "cell_line", "sublibrary", "phase", "pass_filter",
                  "cell_name", "plate"]:
            obs[c] = obs[c].astype("category")
        var = pd.DataFrame({"gene_id": genes.index.to_numpy(), "gene_name": genes["symbol"].to_numpy()},
                           index=pd.Index(genes.index.to_numpy(), name="gene_id"))
        adata = ad.AnnData(X=sp.vstack(blocks, format="csr"), obs=obs, var=var)
        adata.uns["synthetic"] = SYNTHETIC_NOTE
        path = folder / f"{plate['plate']}_SYNTHETIC_filt_Vevo_Tahoe100M_WServicesFrom_ParseGigalab.h5ad"
        with atomic_path(path) as tmp:
            adata.write_h5ad(tmp)
        written.append(path)
        del adata, blocks, obs_parts
    return written


def write_drug_metadata(world, folder: str | Path, compounds) -> Path:
    """SYNTHETIC ``drug_metadata.parquet`` (the release's compound table) for `compounds`."""
    from cpb_resources.storage import atomic_path

    comps = world.compounds.iloc[list(compounds)]
    dm = pd.DataFrame({"drug": comps["name"].to_numpy(), "targets": None,
                       "moa-broad": "SYNTHETIC", "moa-fine": "SYNTHETIC",
                       "canonical_smiles": comps["smiles"].to_numpy(),
                       "pubchem_cid": comps["pubchem_cid"].astype(str).to_numpy()})
    path = Path(folder) / "drug_metadata_SYNTHETIC.parquet"
    with atomic_path(path) as tmp:
        dm.to_parquet(tmp, index=False)
    return path


def write_synthetic(world, dataset: str, folder: str | Path) -> list[Path]:
    """Write the SYNTHETIC Tahoe-100M stand-in: one cell-level h5ad per plate + drug metadata.

    Layout from ``DESIGNS['tahoe100m']``: compounds split into plates of
    ``compounds_per_plate``, each block once per replicate; every plate has
    :data:`CONTROL_WELLS_PER_PLATE` DMSO_TF wells and one well per
    (compound, dose); every well pools all cell lines with
    ``cells_per_well_line`` cells each (so some (well, line) groups fall
    below the 50-cell DE filter). About 6% of cells are damaged so each QC
    rule removes some; some drug names carry stray spaces.
    """
    from cpb_assets.sources.demo_world import DESIGNS

    design = DESIGNS[dataset]
    folder = Path(folder)
    plates = plate_layout(world, dataset)
    written = write_plates(world, folder, plates, dataset=dataset,
                           cells_per_well_line=tuple(design.extra.get("cells_per_well_line", (35, 90))))
    written.append(write_drug_metadata(world, folder, design.compounds))
    return written
