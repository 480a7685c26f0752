"""SYNTHETIC Tahoe-100M stand-in in the release's layout (see :mod:`cpb_assets.sources.tahoe`).

Per plate ``plate{N}_SYNTHETIC_filt_Vevo_Tahoe100M_WServicesFrom_ParseGigalab.h5ad``
(X float32 CSR, var with no columns and gene SYMBOLS as index, obs with the
release's columns), plus ``gene_metadata_SYNTHETIC.parquet`` (``gene_symbol,
ensembl_id, token_id``, in token order, not var order) and
``drug_metadata_SYNTHETIC.parquet``. Quirks planted as in the release: a
symbol that occurs twice in var (the world gene's counts split binomially
between the two columns, so summing them restores it exactly), symbols the
gene table does not know, stray spaces in drug names, cells with missing
grouping fields and damaged cells for every QC rule.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cpb_assets.demo.world import DESIGNS, SYNTHETIC_NOTE
from cpb_assets.sources.tahoe import DATASET, TIME_H
from cpb_resources.storage import atomic_path

CONTROL_WELLS_PER_PLATE = 3  # DMSO_TF wells per plate
# Tahoe-style cell names of the demo contexts (the real obs `cell_name` column)
TAHOE_CELL_NAMES = {"CVCL_0023": "A549", "CVCL_0031": "MCF7", "CVCL_0320": "HT-29"}
N_DUPLICATED = 3  # world genes whose symbol appears twice in var
UNMAPPED_SYMBOLS = ("SYNTHETIC-LINC01", "SYNTHETIC-LINC02")


def _duplicated_genes(world) -> np.ndarray:
    """Positions (world gene order) of the genes whose symbol var lists twice."""
    extra = np.flatnonzero((world.genes["kind"] == "extra").to_numpy())
    return extra[:N_DUPLICATED]


def release_symbols(world) -> list[str]:
    """The var index of every synthetic plate: world symbols, then the duplicates, then unmapped symbols."""
    sym = world.genes["symbol"].astype(str).tolist()
    return sym + [sym[j] for j in _duplicated_genes(world)] + list(UNMAPPED_SYMBOLS)


def release_columns(world, X: sp.csc_matrix, rng: np.random.Generator) -> sp.csr_matrix:
    """World-gene counts → the release's columns: duplicated symbols split, unmapped symbols added."""
    dup = _duplicated_genes(world)
    X = sp.csc_matrix(X, dtype=np.float64)
    part = X[:, dup].copy()
    part.data = rng.binomial(part.data.astype(np.int64), 0.4).astype(np.float64)
    moved = sp.csr_matrix((np.ones(len(dup)), (np.arange(len(dup)), dup)), shape=(len(dup), X.shape[1]))
    X = X - part @ moved  # what the duplicate column holds leaves the first one
    junk = sp.csr_matrix(rng.poisson(0.5, (X.shape[0], len(UNMAPPED_SYMBOLS))).astype(np.float64))
    out = sp.hstack([X, part, junk], format="csr").astype(np.float32)
    out.eliminate_zeros()
    return out


def write_gene_metadata(world, folder: str | Path) -> Path:
    """SYNTHETIC ``gene_metadata.parquet``: one row per world gene, in token order (not var order)."""
    g = world.genes
    order = np.argsort(g["symbol"].astype(str).to_numpy(), kind="stable")
    table = pd.DataFrame({"gene_symbol": g["symbol"].astype(str).to_numpy()[order],
                          "ensembl_id": g.index.to_numpy()[order],
                          "token_id": np.arange(3, 3 + len(g), dtype=np.int64)})
    path = Path(folder) / "gene_metadata_SYNTHETIC.parquet"
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)
    return path


def plate_layout(world, dataset: str = DATASET) -> list[dict]:
    """The synthetic plates: which compounds each holds (DESIGNS: compounds_per_plate × replicates).

    Returns one dict per plate: ``plate`` (``plate1`` …), ``replicate``, ``compounds``.
    """
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
                plate_shift: np.ndarray, rng: np.random.Generator, *, dataset: str, library_size: float = 2200.0,
                libsize_cv: float = 0.3, dispersion: float = 0.0) -> np.ndarray:
    """SYNTHETIC single-cell UMI counts of `n` cells of one condition (all world genes).

    The expected profile is the world's baseline + true log2FC as `dataset`
    measures it (dose in µM, time in h) + the plate's shift; each cell draws a log-normal library size
    (median `library_size` UMIs) and Poisson counts, or gamma–Poisson counts
    (variance mu + `dispersion` · mu²) when `dispersion` > 0, all cells at
    once. Poisson is the default: UMI counts of one cell state are close to
    Poisson, and the gamma draw would double the writer's time.
    """
    log2_mu = (world.baseline[world.context_index(cell_type)].astype(np.float64)
               + world.true_logfc(compound, cell_type, float(dose_uM), float(time_h), dataset=dataset)
               + plate_shift)
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
                counts = cell_counts(world, n, ct, comp, dose, TIME_H, plate_shift, rng, dataset=dataset,
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
        X = release_columns(world, sp.vstack(blocks, format="csr").tocsc(), rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # duplicate symbols in var, as in the release
            adata = ad.AnnData(X=X.tocsr(), obs=obs, var=pd.DataFrame(index=pd.Index(release_symbols(world))))
        adata.uns["synthetic"] = SYNTHETIC_NOTE
        path = folder / f"{plate['plate']}_SYNTHETIC_filt_Vevo_Tahoe100M_WServicesFrom_ParseGigalab.h5ad"
        with atomic_path(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # duplicate symbols in var, as in the release
            adata.write_h5ad(tmp)
        written.append(path)
        del adata, blocks, obs_parts
    return written


def write_drug_metadata(world, folder: str | Path, compounds) -> Path:
    """SYNTHETIC ``drug_metadata.parquet`` (the release's compound table) for `compounds`."""
    comps = world.compounds.iloc[list(compounds)]
    dm = pd.DataFrame({"drug": comps["name"].to_numpy(), "targets": None,
                       "moa-broad": "SYNTHETIC", "moa-fine": "SYNTHETIC", "human-approved": "no",
                       "clinical-trials": "no", "gpt-notes-approval": "SYNTHETIC",
                       "canonical_smiles": comps["smiles"].to_numpy(),
                       "pubchem_cid": comps["pubchem_cid"].astype(np.int64).to_numpy()})
    # the release lists DMSO_TF too (no structure, no CID), and one drug twice, identically
    dm = pd.concat([dm, pd.DataFrame({"drug": ["DMSO_TF"], "canonical_smiles": [None], "pubchem_cid": [None]}),
                    dm.iloc[:1]], ignore_index=True)
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
    design = DESIGNS[dataset]
    folder = Path(folder)
    plates = plate_layout(world, dataset)
    written = write_plates(world, folder, plates, dataset=dataset,
                           cells_per_well_line=tuple(design.extra.get("cells_per_well_line", (35, 90))))
    written.append(write_drug_metadata(world, folder, design.compounds))
    written.append(write_gene_metadata(world, folder))
    return written
