"""DILImap: bulk RNA-seq of primary human hepatocytes (CL_0000182).

Native form (Cellarity DILImap, ``dilimap.datasets``; counts AnnData on the
public S3 registry ``s3://dilimap/public/data/``): an h5ad of raw counts with
``var`` indexed by gene symbol and ``var['gene_id']`` the Ensembl ID, and
``obs`` columns ``COMPOUND, CONCENTRATION_UM, TIMEPOINT_HOURS, DOSE_LEVEL
('Control' for DMSO), CMPD_DOSE, PLATE_NAME, WELL_ID, LIBRARY_ID, BATCH_ID,
SPECIES, LDH_QC`` ('' when the LDH viability check passed), ``SPLIT``
(words such as ``Training``, ``Validation``, ``Test``; compared
case-insensitively, ``train``/``val`` accepted too). Wells whose compound was replaced by vehicle after the
viability screen are written ``COMPOUND == 'DMSO_replaced'``. The synthetic
stand-in adds ``DONOR`` and ``REPLICATE``.

The release ships two counts files: the training counts (proprietary, on
request) and the public validation counts (``validation_data_counts.h5ad``).
The reader takes every ``*_counts.h5ad`` of the folder (one or both), reads
them one after another and joins them on their shared genes. Two partitions
read the same folder and never mix: ``dilimap_train`` keeps the training split,
``dilimap_train_val`` training + validation. Test-split
samples are removed *first*, before any QC statistic or dose cluster is
computed, so nothing from the test split influences either output.

QC (METHODS §1; thresholds as in the DILImap tutorial's quality-control step),
applied in order; every statistic is computed over the samples that passed the
earlier steps, so wells already failed (e.g. cytotoxic LDH wells, which carry
little RNA) neither widen the RNA threshold nor serve as replicates:

1. LDH: ``LDH_QC`` empty and ``COMPOUND != 'DMSO_replaced'``;
2. RNA: ``log10(total counts) > median − K_SD·sd`` over the samples passing 1
   (``K_SD = 2.5``), then mitochondrial fraction (``MT-`` genes / total)
   ``< MITO_MAX = 0.09``;
3. cross-replicate correlation over the samples passing 1–2: per plate, each
   sample's score is its highest Pearson correlation of log2(CPM + 1) with
   another such sample of the same ``CMPD_DOSE`` on the plate; it passes when
   the score exceeds ``max(MIN_CORR, plate median − 3·plate sd)`` of those
   scores (``MIN_CORR = 0.9``). A sample without a replicate on its plate
   cannot be checked and fails, as in DILImap's own rule.

Near-identical doses (e.g. 10 and 10.0004 µM written by different plates or
splits) are clustered on log10 dose by single linkage with gap
``DOSE_LOG10_TOL = 0.005`` (≈1.2%); each cluster takes the dose most
frequent among its *training* samples (ties: the smaller), else the most
frequent overall.
"""
from __future__ import annotations

import re
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cpb_assets.errors import SourceFormatError
from cpb_assets.harmonize import genes as gmap
from cpb_assets.harmonize.assemble import assemble_harmonized, is_synthetic
from cpb_assets.harmonize.quarantine import Quarantine
from cpb_assets.sources.base import COMPOUND_RECORD_COLUMNS, Harmonized, RemoteFile, find_source_file

DATASETS = ("dilimap_train", "dilimap_train_val")
SPLITS = {"dilimap_train": ("train",), "dilimap_train_val": ("train", "val")}
# the SPLIT words of the release (lower-cased) -> split key
SPLIT_WORDS = {"training": "train", "train": "train", "validation": "val", "val": "val", "test": "test",
               "testing": "test"}
CELL_TYPE = "CL_0000182"  # hepatocyte
# Files are found by pattern: the real downloads (validation_data_counts.h5ad,
# compound_DILI_labels.csv) and the SYNTHETIC stand-ins both match.
COUNTS_GLOB = "*_counts.h5ad"
COMPOUND_GLOB = "*compound_DILI_labels*.csv"
REQUIRED_OBS = ["COMPOUND", "CONCENTRATION_UM", "TIMEPOINT_HOURS", "DOSE_LEVEL", "CMPD_DOSE", "PLATE_NAME",
                "WELL_ID", "LDH_QC", "SPLIT"]
CONTROL_NAMES = {"DMSO"}
REPLACED = "DMSO_replaced"
K_SD = 2.5
MITO_MAX = 0.09
MIN_CORR = 0.9
CORR_SD = 3.0
DOSE_LOG10_TOL = 0.005

_S3 = "https://dilimap.s3.amazonaws.com/public/data/"
REMOTE_FILES: dict[str, list[RemoteFile]] = {
    # The training counts are proprietary (s3://compbio-analysis-prod, on request);
    # the validation counts and compound tables are public.
    ds: [RemoteFile(_S3 + "validation_data_counts.h5ad", "validation_data_counts.h5ad", None, "CC-BY-4.0"),
         RemoteFile(_S3 + "compound_DILI_labels.csv", "compound_DILI_labels.csv", None, "CC-BY-4.0")]
    for ds in DATASETS
}


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------


def read_counts(path: str | Path) -> ad.AnnData:
    """Read and check a DILImap counts h5ad.

    Raises
    ------
    SourceFormatError
        Missing obs column, duplicate genes in var, or counts that are
        negative, fractional or non-finite (field ``X``).
    """
    import warnings

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # anndata warns on duplicate var names; we raise below
            adata = ad.read_h5ad(path)
    except Exception as exc:
        raise SourceFormatError(path, "<file>", f"cannot read as h5ad: {exc}") from None
    for col in REQUIRED_OBS:
        if col not in adata.obs.columns:
            raise SourceFormatError(path, f"obs/{col}", "required obs column missing")
    if adata.var_names.has_duplicates:
        dup = adata.var_names[adata.var_names.duplicated()].unique()[:5].tolist()
        raise SourceFormatError(path, "var/_index", f"duplicate genes {dup}")
    if "gene_id" in adata.var.columns:
        gid = adata.var["gene_id"].astype(str).str.replace(r"\.\d+$", "", regex=True)
        gid = gid[gid.str.match(r"^ENSG\d{11}$")]
        if gid.duplicated().any():
            raise SourceFormatError(path, "var/gene_id", f"duplicate genes {gid[gid.duplicated()].unique()[:5].tolist()}")
    data = adata.X.data if sp.issparse(adata.X) else np.asarray(adata.X)
    data = np.asarray(data, dtype=float)
    if (~np.isfinite(data)).any() or (data < 0).any() or (data != np.round(data)).any():
        raise SourceFormatError(path, "X", "counts must be finite non-negative integers")
    return adata


def split_keys(values: pd.Series, path: Path) -> np.ndarray:
    """``SPLIT`` words → ``train``/``val``/``test`` (case-insensitive); an unknown word is a format error."""
    low = values.astype(str).str.strip().str.lower()
    bad = sorted(set(low[~low.isin(SPLIT_WORDS)]))
    if bad:
        raise SourceFormatError(path, "obs/SPLIT", f"unknown split values {bad[:5]} (expected Training, Validation, "
                                                   "Test)")
    return low.map(SPLIT_WORDS).to_numpy(dtype=object)


def counts_files(folder: Path) -> list[Path]:
    """Every counts h5ad of the folder (training and/or validation), in name order."""
    files = sorted(p for p in folder.glob(COUNTS_GLOB) if not p.name.startswith("."))
    if not files:
        raise SourceFormatError(folder / COUNTS_GLOB, "<file>", "no file matches this pattern")
    return files


def read_all_counts(folder: Path) -> tuple[ad.AnnData, list[Path]]:
    """Read the folder's counts files and join them on their shared genes (obs key ``source_file``)."""
    files = counts_files(folder)
    parts = []
    for f in files:
        a = read_counts(f)
        a.obs["SPLIT"] = split_keys(a.obs["SPLIT"], f)
        a.obs["source_file"] = f.name
        parts.append(a)
    if len(parts) == 1:
        return parts[0], files
    obs_ids = pd.Index(np.concatenate([p.obs_names.astype(str) for p in parts]))
    if obs_ids.has_duplicates:
        raise SourceFormatError(files[-1], "obs/_index", f"sample IDs in more than one counts file: "
                                                          f"{obs_ids[obs_ids.duplicated()].unique()[:3].tolist()}")
    joined = ad.concat(parts, join="inner", merge="first")
    if joined.n_vars == 0:
        raise SourceFormatError(files[-1], "var/_index", "the counts files share no gene")
    for k in ("synthetic", "note"):
        if any(k in p.uns for p in parts):
            joined.uns[k] = next(p.uns[k] for p in parts if k in p.uns)
    return joined, files


# --------------------------------------------------------------------------------------
# QC and dose clustering (pure functions)
# --------------------------------------------------------------------------------------

def ldh_pass(obs: pd.DataFrame) -> np.ndarray:
    """LDH viability QC: ``LDH_QC`` empty and the well not ``DMSO_replaced``."""
    flag = obs["LDH_QC"].astype(object)
    empty = np.array([v is None or (isinstance(v, float) and np.isnan(v)) or str(v).strip() == "" for v in flag])
    return empty & (obs["COMPOUND"].astype(str).to_numpy() != REPLACED)


def rna_pass(total: np.ndarray, mito: np.ndarray, k: float = K_SD, mito_max: float = MITO_MAX
             ) -> tuple[np.ndarray, np.ndarray, float]:
    """RNA QC.

    Parameters
    ----------
    total
        Total counts per sample.
    mito
        Mitochondrial counts per sample.

    Returns
    -------
    (low-RNA fail mask, high-mito fail mask, log10 total threshold)
    """
    logt = np.log10(np.maximum(np.asarray(total, dtype=float), 1.0))
    thr = float(np.median(logt) - k * np.std(logt, ddof=1)) if logt.size > 1 else -np.inf
    frac = np.asarray(mito, dtype=float) / np.maximum(np.asarray(total, dtype=float), 1.0)
    return ~(logt > thr), ~(frac < mito_max), thr


def replicate_scores(X, groups: np.ndarray, plates: np.ndarray) -> np.ndarray:
    """Each sample's best Pearson correlation (log2 CPM + 1) with a replicate.

    Replicates: same ``groups`` value on the same plate. NaN where a sample
    has no replicate.
    """
    X = X.toarray() if sp.issparse(X) else np.asarray(X, dtype=float)
    lib = np.maximum(X.sum(axis=1, keepdims=True), 1.0)
    L = np.log2(X / lib * 1e6 + 1.0)
    score = np.full(len(X), np.nan)
    key = pd.Series(list(zip(plates, groups)))
    for _, idx in key.groupby(key).groups.items():
        idx = np.asarray(idx)
        if len(idx) < 2:
            continue
        C = np.corrcoef(L[idx])
        np.fill_diagonal(C, -np.inf)
        score[idx] = C.max(axis=1)
    return score


def replicate_pass(score: np.ndarray, plates: np.ndarray, min_corr: float = MIN_CORR,
                   n_sd: float = CORR_SD) -> np.ndarray:
    """Pass when score > max(min_corr, plate median − n_sd·plate sd); NaN fails."""
    ok = np.zeros(len(score), dtype=bool)
    for p in pd.unique(plates):
        m = plates == p
        s = score[m]
        finite = s[np.isfinite(s)]
        if finite.size == 0:
            continue
        sd = float(np.std(finite, ddof=1)) if finite.size > 1 else 0.0
        thr = max(min_corr, float(np.median(finite)) - n_sd * sd)
        ok[m] = np.isfinite(s) & (s > thr)
    return ok


def cluster_doses(doses: np.ndarray, splits: np.ndarray, tol: float = DOSE_LOG10_TOL) -> np.ndarray:
    """Replace near-identical doses by one representative per log10 cluster.

    Parameters
    ----------
    doses
        Doses in µM (> 0; zeros are returned unchanged).
    splits
        Split label per dose; ``'train'`` doses are preferred as representative.
    tol
        Largest gap (log10 units) between neighbouring distinct doses of one cluster.

    Returns
    -------
    The representative dose (µM) of each entry's cluster.
    """
    doses = np.asarray(doses, dtype=float)
    out = doses.copy()
    pos = doses > 0
    if not pos.any():
        return out
    uniq = np.unique(doses[pos])
    lg = np.log10(uniq)
    cluster = np.concatenate([[0], np.cumsum(np.diff(lg) > tol)])
    cid = dict(zip(uniq, cluster))
    df = pd.DataFrame({"dose": doses[pos], "split": np.asarray(splits, dtype=object)[pos]})
    df["cluster"] = df["dose"].map(cid)
    rep = {}
    for c, g in df.groupby("cluster"):
        pool = g[g["split"] == "train"] if (g["split"] == "train").any() else g
        counts = pool["dose"].value_counts()
        best = counts[counts == counts.max()].index.min()  # ties: the smaller dose
        rep[c] = float(best)
    out[pos] = df["cluster"].map(rep).to_numpy()
    return out


# --------------------------------------------------------------------------------------
# harmonize
# --------------------------------------------------------------------------------------

def compound_records(folder: str | Path, dataset: str) -> pd.DataFrame:
    """Compounds of the allowed splits (test-only compounds never appear)."""
    folder = Path(folder)
    adata, _ = read_all_counts(folder)
    obs = adata.obs
    allowed = obs["SPLIT"].astype(str).isin(SPLITS[dataset])
    names = pd.unique(obs.loc[allowed, "COMPOUND"].astype(str))
    names = [n for n in names if n not in CONTROL_NAMES and n != REPLACED]
    path = find_source_file(folder, COMPOUND_GLOB)
    table = pd.read_csv(path)
    for col in ("compound_name", "smiles"):
        if col not in table.columns:
            raise SourceFormatError(path, col, "required column missing")
    smiles = dict(zip(table["compound_name"].astype(str), table["smiles"]))
    out = pd.DataFrame({"source_id": names, "name": names, "smiles": [smiles.get(n) for n in names],
                        "inchikey": None, "catalog_id": None}, columns=COMPOUND_RECORD_COLUMNS)
    return out.astype(object).where(out.notna(), None)


def _gene_table(adata: ad.AnnData, q: Quarantine, file: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Ensembl index for var: ``gene_id`` (version stripped) else the symbol's lookup."""
    symbols = adata.var_names.astype(str)
    if "gene_id" in adata.var.columns:
        gid = adata.var["gene_id"].astype(str).str.replace(r"\.\d+$", "", regex=True).to_numpy()
    else:
        gid = np.array([""] * len(symbols), dtype=object)
    ok = np.array([bool(re.fullmatch(r"ENSG\d{11}", g)) for g in gid])
    if (~ok).any():
        look = gmap.symbols_to_ensembl(symbols[~ok])
        gid = gid.astype(object)
        gid[~ok] = look["ensembl_id"].to_numpy()
    ens = pd.Series(gid, dtype=object)
    mapped = ens.notna().to_numpy() & (ens.astype(str) != "").to_numpy()
    dup = mapped & ens.duplicated(keep="first").to_numpy()
    q.add(file, symbols[~mapped], "gene symbol not mapped to Ensembl", level="gene")
    q.add(file, symbols[dup], "second entry for the same Ensembl gene", level="gene")
    keep = mapped & ~dup
    genes = pd.DataFrame({"symbol": symbols[keep]}, index=pd.Index(ens[keep].to_numpy(), name="gene"))
    return genes, keep


def harmonize(folder: str | Path, dataset: str, registry: pd.DataFrame) -> Harmonized:
    """Read DILImap counts and return one split variant as harmonized AnnData.

    Parameters
    ----------
    folder
        Folder with the counts h5ad (and the compound table).
    dataset
        ``dilimap_train`` (SPLIT train) or ``dilimap_train_val`` (train + val).
    registry
        ``source_id, pubchem_cid, cid_method`` (source_id = compound name).
    """
    if dataset not in DATASETS:
        raise KeyError(f"dilimap serves {DATASETS}, not {dataset!r}")
    folder = Path(folder)
    adata, files = read_all_counts(folder)
    path = files[0] if len(files) == 1 else folder / COUNTS_GLOB
    fname = path.name
    q = Quarantine(dataset)
    obs = adata.obs.copy()
    obs.index = obs.index.astype(str)

    # the split guard comes first: nothing outside the variant's splits is even measured
    split = obs["SPLIT"].astype(str).to_numpy()
    allowed = np.isin(split, SPLITS[dataset])
    for s in sorted(set(split[~allowed])):
        q.add_count(fname, f"SPLIT={s}", f"split '{s}' excluded from {dataset}", int((split == s).sum()),
                    level="sample")
    adata = adata[allowed].copy()
    obs = obs[allowed]
    X = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    X = np.rint(X).astype(np.int64)
    ids = obs.index.to_numpy()

    total = X.sum(axis=1)
    mito_cols = adata.var_names.astype(str).str.upper().str.startswith("MT-")
    mito = X[:, mito_cols].sum(axis=1)
    plates = obs["PLATE_NAME"].astype(str).to_numpy()
    compound = obs["COMPOUND"].astype(str).to_numpy()
    keep = np.ones(len(obs), dtype=bool)

    def drop(mask, reason):
        # each failing sample is recorded once, under the first check it fails
        hit = keep & mask
        q.add(fname, ids[hit], reason)
        keep[hit] = False

    ldh = ldh_pass(obs)
    drop(~ldh & (compound == REPLACED), "DMSO_replaced (viability replacement)")
    drop(~ldh, "LDH_QC flagged (cytotoxic)")
    # the RNA threshold is a statistic of the samples still in (cytotoxic wells carry little RNA)
    low_rna, high_mito, thr = np.zeros(len(obs), dtype=bool), np.zeros(len(obs), dtype=bool), -np.inf
    if keep.any():
        low_rna[keep], high_mito[keep], thr = rna_pass(total[keep], mito[keep])
    drop(low_rna, f"low total RNA (log10 total <= median - {K_SD} sd = {thr:.3f})")
    drop(high_mito, f"mitochondrial fraction >= {MITO_MAX}")
    # replicates and the plate threshold likewise: only samples that passed everything so far
    rep_ok = np.zeros(len(obs), dtype=bool)
    if keep.any():
        score = replicate_scores(X[keep], obs["CMPD_DOSE"].astype(str).to_numpy()[keep], plates[keep])
        rep_ok[keep] = replicate_pass(score, plates[keep])
    drop(~rep_ok, f"cross-replicate correlation below max({MIN_CORR}, plate median - {CORR_SD} sd)")
    obs = obs[keep]
    X = X[keep]

    is_ctrl = obs["COMPOUND"].astype(str).isin(CONTROL_NAMES).to_numpy() | \
        (obs["DOSE_LEVEL"].astype(str).to_numpy() == "Control")
    raw_dose = pd.to_numeric(obs["CONCENTRATION_UM"], errors="coerce").to_numpy(dtype=float)
    if np.any(~np.isfinite(raw_dose[~is_ctrl]) | (raw_dose[~is_ctrl] <= 0)):
        raise SourceFormatError(path, "obs/CONCENTRATION_UM", "treated sample without a positive dose")
    dose = np.where(is_ctrl, 0.0, raw_dose)
    dose = cluster_doses(dose, obs["SPLIT"].astype(str).to_numpy())
    n_moved = int(np.sum(~np.isclose(dose, np.where(is_ctrl, 0.0, raw_dose), rtol=0, atol=0)))
    time_h = pd.to_numeric(obs["TIMEPOINT_HOURS"], errors="coerce").to_numpy(dtype=float)
    if np.any(~np.isfinite(time_h) | (time_h < 0)):
        raise SourceFormatError(path, "obs/TIMEPOINT_HOURS", "missing, non-numeric, infinite or negative time")

    genes, gkeep = _gene_table(adata, q, fname)
    X = X[:, gkeep]
    names = obs["COMPOUND"].astype(str).to_numpy()
    samples = pd.DataFrame({
        "plate": plates[keep], "well": obs["WELL_ID"].astype(str).to_numpy(), "cell_type": CELL_TYPE,
        "perturbagen": names, "perturbagen_name": names, "is_control": is_ctrl,
        "pert_dose_uM": dose, "pert_time_h": time_h,
        "source_id": np.where(is_ctrl, None, names).astype(object),
        "split": obs["SPLIT"].astype(str).to_numpy(),
        "psbulk_cells": -666, "psbulk_counts": X.sum(axis=1).astype(np.int64),
    })
    synthetic = is_synthetic(*files, find_source_file(folder, COMPOUND_GLOB), adata.uns.get("synthetic"),
                             str(adata.uns.get("note", "")))
    out = assemble_harmonized(samples, X, genes, dataset=dataset, synthetic=synthetic,
                              registry=registry, file=str(path), suspension_type="cell")
    notes = {"splits": list(SPLITS[dataset]), "log10_total_threshold": thr, "n_doses_reassigned": n_moved,
             "quarantine": q.summary(), "n_samples": int(out.n_obs)}
    return Harmonized(adata=out, quarantine=q, notes=notes)
