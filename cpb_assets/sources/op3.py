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
from cpb_assets.sources.drugseq_rules import integer_counts, require_columns

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
    bad_time = ~np.isfinite(samples["pert_time_h"].to_numpy()) | (samples["pert_time_h"].to_numpy() < 0)
    if (bad_dose | bad_time).any():
        raise SourceFormatError(file, "dose_uM" if bad_dose.any() else "timepoint_hr",
                                "non-numeric, infinite or negative values")
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
    try:
        backed = ad.read_h5ad(file, backed="r")
    except Exception as exc:  # h5py raises OSError on empty or truncated files
        raise SourceFormatError(file, "<h5ad>", f"not a readable AnnData: {exc}") from None
    obs = backed.obs
    backed.file.close()
    require_columns(obs, ["sm_name", "control"], file, what="obs column")
    is_ctrl = obs["control"].astype(str).str.lower().isin(["true", "1", "yes"])
    obs = obs[~is_ctrl]
    get = lambda c: obs[c].astype(object) if c in obs.columns else pd.Series([None] * len(obs), index=obs.index)  # noqa: E731
    df = pd.DataFrame({"source_id": obs["sm_name"].astype(str), "name": obs["sm_name"].astype(str),
                       "smiles": get("SMILES"), "inchikey": None, "catalog_id": get("sm_lincs_id")})
    df = df[COMPOUND_RECORD_COLUMNS].astype(object)
    df = df.where(df.notna(), None).drop_duplicates().reset_index(drop=True)
    clash = df["source_id"].duplicated(keep=False)
    if clash.any():
        bad = sorted(df.loc[clash, "source_id"].unique())[:5]
        raise SourceFormatError(file, "obs/sm_name", f"compounds with conflicting SMILES or LINCS IDs: {bad}")
    return df if len(df) else empty_compound_records()
