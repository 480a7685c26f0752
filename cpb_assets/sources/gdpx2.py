"""Ginkgo GDPx2 (``gdpx2``): the Lamin artifacts of the GDPx2 release, read a block of samples at a time.

GDPx2 (Ginkgo Datapoints, Virtual Cell Pharmacology Initiative; four primary
cell types) is gated. Its files are the artifacts of the Lamin instance
``laminlabs/pertdata`` under ``ginkgo-datapoints/vcpi/``:

``X.h5ad``
    The counts (samples × genes).
``obs.parquet``
    One row per sample (index = the X row names): ``container_id, row_id,
    column_id, sample_type, pert_name, compound, pert_dose`` (``'1000.0nM'``;
    vehicle rows ``'0.5%'``), ``pert_time`` (``'24.0h'``),
    ``percent_volume_dmso, cell_type`` (``'fibroblast of dermis'`` …).
``var.parquet``
    One row per gene (index = the X column names): ``ensembl_gene_id``
    (versioned, NA for some genes, some IDs twice) and ``symbol``.
``compounds-GDPx2-2026-02-09.csv``
    The compound table (``compound`` + structure columns).

Any file names that keep these words are accepted (``X.h5ad`` or the
``gdpx2_raw.h5ad`` the authors' pipeline saves; ``*obs*.parquet``,
``*var*.parquet``, ``*compounds*.csv``): the counts are the folder's one
``.h5ad``.

Gene rule (METHODS §1): ERCC spike-ins go; an NA ``ensembl_gene_id`` is filled
from the gene's symbol through the gene map (symbol → Ensembl), and
quarantined if the symbol does not map; rows that end with the same Ensembl
ID are one gene measured twice and are **summed**. Sample rules, in order:
X rows without an obs row and obs rows without counts, samples without a
plate (``container_id``) or well, zero-count libraries, ``sample_type``
starting with ``Ginkgo Pos Control``. ``percent_volume_dmso`` is kept (the DE
strata are cell_type × percent_volume_dmso).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cpb_assets.errors import SourceFormatError
from cpb_assets.harmonize import genes as gmap
from cpb_assets.harmonize.contexts import resolve_cell_types
from cpb_assets.harmonize.quarantine import Quarantine
from cpb_assets.harmonize.units import UnitError, parse_dose
from cpb_assets.sources.base import Harmonized, RemoteFile
from cpb_assets.sources.drugseq_rules import (apply_sample_filters, clean_records, drop_ercc, finish,
                                              integer_counts, present, require_columns, strip_version, time_hours)
from cpb_assets.sources.readers import check_not_empty, find_source_file
from cpb_assets.sources.vcpi import vcpi_well

DATASET = "gdpx2"
DATASETS = (DATASET,)
OBS_REQUIRED = ["container_id", "row_id", "column_id", "sample_type", "pert_name", "compound", "pert_dose",
                "pert_time", "percent_volume_dmso", "cell_type"]
DMSO_SAMPLE_TYPE = "Ginkgo Neg Control - DMSO"
POS_CONTROL_PREFIX = "Ginkgo Pos Control"
# GDPx2's primary cell types (Cell Ontology, underscore form)
CELL_TYPES = {"aortic smooth muscle cell": "CL_0002539", "epithelial melanocyte": "CL_0002484",
              "fibroblast of dermis": "CL_0002551", "skeletal muscle myoblast": "CL_0000515"}
SAMPLE_BLOCK = 512  # X rows read at a time

X_PATTERN, OBS_PATTERN, VAR_PATTERN, COMPOUNDS_PATTERN = "*.h5ad", "*obs*.parquet", "*var*.parquet", "*compounds*.csv"
LAMIN_INSTANCE = "laminlabs/pertdata"
LAMIN_KEYS = ("ginkgo-datapoints/vcpi/X.h5ad", "ginkgo-datapoints/vcpi/obs.parquet",
              "ginkgo-datapoints/vcpi/var.parquet", "ginkgo-datapoints/vcpi/compounds-GDPx2-2026-02-09.csv")
# Gated: no public URL, so no checksum can be pinned; the files are what lamindb caches (the access
# step that `cpb ingest` prints is the SourceSpec.access text in registry.py).
REMOTE_FILES: dict[str, list[RemoteFile]] = {DATASET: []}


def _parquet_frame(path: Path) -> pd.DataFrame:
    check_not_empty(path)
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError on truncated files
        raise SourceFormatError(path, "<parquet>", f"unreadable or truncated Parquet file: {exc}") from None


def _open_counts(path: Path):
    import anndata as ad

    check_not_empty(path)
    try:
        return ad.read_h5ad(path, backed="r")
    except Exception as exc:  # h5py raises OSError/KeyError on truncated or foreign files
        raise SourceFormatError(path, "<h5ad>", f"unreadable or truncated h5ad file: {exc}") from None


def gene_axis(var: pd.DataFrame, var_file, q: Quarantine) -> tuple[sp.csc_matrix, pd.DataFrame, np.ndarray]:
    """The GDPx2 gene rule: (summing matrix over the kept var rows, genes table, keep-mask over var rows).

    ERCC rows are dropped; NA ``ensembl_gene_id`` is filled from ``symbol`` via
    the gene map (unmappable ones quarantined); rows that share an Ensembl ID
    are summed into one gene.
    """
    require_columns(var, ["ensembl_gene_id", "symbol"], var_file)
    ens = pd.Series([e if present(e) else None for e in strip_version(var["ensembl_gene_id"].astype(object)
                                                                      .where(var["ensembl_gene_id"].notna(), ""))],
                    index=var.index, dtype=object)
    sym = var["symbol"].astype(object).where(var["symbol"].notna(), None)
    keep = drop_ercc(pd.Index(ens.fillna("")), sym.astype(str), var_file, q)
    na = ens.isna() & keep
    if na.any():
        mapped = gmap.symbols_to_ensembl([str(s) if present(s) else "" for s in sym[na]])
        filled = pd.Series(mapped["ensembl_id"].to_numpy(), index=ens.index[na], dtype=object)
        ens.loc[na] = filled
        lost = ens.isna() & keep
        q.add(var_file, var.index[lost], "NA ensembl_gene_id and a symbol the gene map does not know", level="gene")
        keep &= ~lost.to_numpy()
    kept = ens[keep]
    uniq = pd.Index(sorted(set(kept)))
    S = sp.csc_matrix((np.ones(len(kept), dtype=np.int64), (np.arange(len(kept)), uniq.get_indexer(kept))),
                      shape=(len(kept), len(uniq)))
    first_sym = {}
    for e, s in zip(kept, sym[keep]):
        first_sym.setdefault(e, s if present(s) else e)
    genes = pd.DataFrame({"symbol": [str(first_sym[e]) for e in uniq]}, index=pd.Index(uniq, name="gene"))
    return S, genes, np.asarray(keep, dtype=bool)


def harmonize(folder: str | Path, dataset: str, registry: pd.DataFrame) -> Harmonized:
    """Read the GDPx2 artifacts of `folder` and return the harmonized AnnData (keeps ``percent_volume_dmso``)."""
    if dataset != DATASET:
        raise KeyError(f"gdpx2 does not serve {dataset!r}")
    folder = Path(folder)
    x_file = find_source_file(folder, X_PATTERN)
    obs_file, var_file = find_source_file(folder, OBS_PATTERN), find_source_file(folder, VAR_PATTERN)
    q = Quarantine(dataset)
    obs, var = _parquet_frame(obs_file), _parquet_frame(var_file)
    require_columns(obs, OBS_REQUIRED, obs_file)
    obs.index, var.index = obs.index.astype(str), var.index.astype(str)
    if obs.index.has_duplicates:
        dup = obs.index[obs.index.duplicated()][:3].tolist()
        raise SourceFormatError(obs_file, "index", f"duplicate sample IDs {dup}")
    raw = _open_counts(x_file)
    try:
        x_obs, x_var = raw.obs_names.astype(str), raw.var_names.astype(str)
        note = str(raw.uns.get("note", "")) if hasattr(raw, "uns") else ""
        if x_var.has_duplicates:
            raise SourceFormatError(x_file, "var_names", "duplicate gene columns")
        missing = x_var.difference(var.index)
        if len(missing):
            raise SourceFormatError(var_file, "index",
                                    f"{len(missing)} genes of X have no var row, e.g. {missing[0]!r}")
        S, genes, gkeep = gene_axis(var.loc[x_var], var_file, q)
        known = x_obs.isin(obs.index)
        q.add(x_file, x_obs[~known], "count row without an obs row")
        q.add(obs_file, obs.index[~obs.index.isin(x_obs)], "obs row without counts")
        blocks = []
        for k in range(0, raw.n_obs, SAMPLE_BLOCK):
            rows = np.arange(k, min(k + SAMPLE_BLOCK, raw.n_obs))
            rows = rows[known[rows]]
            if not len(rows):
                continue
            try:
                block = raw.X[int(rows[0]):int(rows[-1]) + 1]
            except Exception as exc:  # truncated datasets fail on read, not on open
                raise SourceFormatError(x_file, "X", f"unreadable counts (truncated file?): {exc}") from None
            block = integer_counts(block, x_file, "X", sparse_out=True)
            block = sp.csr_matrix(block)[rows - rows[0]]
            blocks.append((block[:, np.flatnonzero(gkeep)] @ S).tocsr())
    finally:
        if getattr(raw, "file", None) is not None:
            raw.file.close()
    X = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, len(genes)), dtype=np.int64)
    obs = obs.loc[x_obs[known]]

    st = obs["sample_type"].astype(str).str.strip()
    wells = [vcpi_well(r, c) for r, c in zip(obs["row_id"], obs["column_id"])]
    keep = apply_sample_filters(obs.index, [
        ("missing plate ID (container_id)", ~obs["container_id"].map(present).to_numpy(dtype=bool)),
        ("unreadable well position (row_id, column_id)", np.array([w is None for w in wells], dtype=bool)),
        ("zero-count library", np.asarray(X.sum(axis=1)).ravel() == 0),
        ("positive control (sample_type 'Ginkgo Pos Control …')", st.str.startswith(POS_CONTROL_PREFIX).to_numpy()),
    ], obs_file, q)
    sel = np.flatnonzero(keep)  # X is indexed once, at the end (it is the large part)
    obs, st = obs[keep], st[keep]
    wells = [w for w, k in zip(wells, keep) if k]
    cell = resolve_cell_types(obs["cell_type"], q, obs_file, extra=CELL_TYPES)
    rows_out, ok = [], np.zeros(len(obs), dtype=bool)
    for i, (rid, r, s, ct, well) in enumerate(zip(obs.index, obs.itertuples(index=False), st, cell, wells)):
        if ct is None:  # quarantined as unknown cell line
            continue
        ctrl = s == DMSO_SAMPLE_TYPE
        try:
            # controls carry their vehicle volume ('0.5%') in pert_dose, not a molar dose
            dose = 0.0 if ctrl else parse_dose(str(r.pert_dose))
            time_h = time_hours(r.pert_time)
            pvd = float(str(r.percent_volume_dmso).rstrip("%"))
            if not np.isfinite(pvd) or pvd < 0:
                raise ValueError(f"percent_volume_dmso {r.percent_volume_dmso!r}")
        except (UnitError, ValueError) as exc:
            q.add(obs_file, [rid], f"unparseable dose, time or percent_volume_dmso: {exc}")
            continue
        rows_out.append({"plate": str(r.container_id).strip().replace(" ", "").replace("-", "_"), "well": well,
                         "cell_type": ct, "perturbagen": str(r.pert_name), "perturbagen_name": str(r.pert_name),
                         "is_control": ctrl, "pert_dose_uM": dose, "pert_time_h": time_h, "percent_volume_dmso": pvd,
                         "source_id": None if ctrl else str(r.compound), "pert_id": str(r.compound)})
        ok[i] = True
    files = [x_file, obs_file, var_file]
    return finish(pd.DataFrame(rows_out), X[sel[ok]], genes, dataset=dataset, registry=registry, file=obs_file, q=q,
                  notes={"files": [p.name for p in files], "strata": "cell_type x percent_volume_dmso"},
                  files=files + ([note] if note else []))


def compound_records(folder: str | Path, dataset: str = DATASET) -> pd.DataFrame:
    """The compounds of the GDPx2 compound table (DMSO left out); names from obs ``pert_name``; see ``base``."""
    folder = Path(folder)
    f = find_source_file(folder, COMPOUNDS_PATTERN)
    check_not_empty(f)
    try:
        df = pd.read_csv(f, dtype=str)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise SourceFormatError(f, "<table>", f"unreadable CSV: {exc}") from None
    require_columns(df, ["compound"], f)
    pick = lambda *cs: next((df[c] for c in cs if c in df.columns),  # noqa: E731
                            pd.Series([None] * len(df), index=df.index, dtype=object))
    name = pick("pert_name")
    if "pert_name" not in df.columns:  # the table has no names: take them from obs, as the release does
        obs_file = find_source_file(folder, OBS_PATTERN, required=False)
        if obs_file is not None:
            o = _parquet_frame(obs_file)
            if {"compound", "pert_name"} <= set(o.columns):
                names = o.drop_duplicates("compound").set_index("compound")["pert_name"]
                name = df["compound"].map(names)
    out = pd.DataFrame({"source_id": df["compound"], "name": name,
                        "smiles": pick("smiles", "canonical_smiles", "SMILES"),
                        "inchikey": pick("inchikey", "inchi_key", "InChIKey"), "catalog_id": pick("catalog_id")})
    out = out[~out["name"].astype(str).str.strip().str.upper().eq("DMSO")
              & ~out["source_id"].astype(str).str.strip().str.upper().eq("DMSO")]
    return clean_records(out, f)
