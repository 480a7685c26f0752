"""SYNTHETIC CIGS workbooks in the layout of the CIGS website (see :mod:`cpb_assets.sources.cigs`).

Counts and metadata workbooks per (library, cell line, dose), each with the
licence-style note row, data on the first sheet (named arbitrarily), MCE
metadata keyed by ``unique_ID`` with ``cell_<line>`` labels, TCM metadata
with bare line names; the supplement's compound tables, the TCM one with two
columns headed ``Catalog Number`` (one holding CAS numbers).
"""
from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
from openpyxl.cell import WriteOnlyCell

from cpb_assets.demo.world import DESIGNS, EXCEL_PRONE_SYMBOLS
from cpb_assets.harmonize.contexts import CONTEXTS
from cpb_assets.sources.cigs import (COMPOUND_SHEET, COMPOUND_WORKBOOK, DATASETS, ID_COLUMN, LIBRARY, NA_SENTINEL,
                                     SYNTHETIC_NOTE)
from cpb_resources.storage import atomic_path

CONTROL_WELLS_PER_PLATE = 4  # clean DMSO wells on every plate
PANEL_LANDMARK = 260
PANEL_EXTRA = 110
UNMAPPABLE_PROBE = "SYNTHETIC-PROBE-1"  # a panel probe with no gene behind it
# per cell line: panel genes each workbook lacks (index into the panel's non-prone genes)
_DROPOUTS = {0: (5, 77, 140), 1: (9, 201, 300)}
# how each workbook writes the Excel-prone genes: 'date' = a real date cell, else a string
_MANGLE = {
    ("cigs_mce", 0): {"MARCHF1": "date", "SEPTIN7": "SEPT7", "SEPTIN2": "2-Sep", "MARCHF2": "date",
                      "MARCHF5": "MARCH5", "SEPTIN9": "9-Sep", "MARCHF6": "Mar-06"},
    ("cigs_mce", 1): {"MARCHF1": "1-Mar", "SEPTIN7": "date", "SEPTIN2": "SEPT2", "MARCHF2": "2-Mar",
                      "MARCHF5": "date", "SEPTIN9": "SEPT9"},
    ("cigs_tcm", 0): {"SEPTIN7": "SEPT7", "MARCHF1": "date"},
    ("cigs_tcm", 1): {"SEPTIN9": "date", "MARCHF6": "MARCH6"},
}
_MONTH = {"MARCHF": 3, "SEPTIN": 9}
JQ1_SMILES = "CC1=C(SC2=C1C(=NC(C3=NN=C(N32)C)CC(=O)OC(C)(C)C)C4=CC=C(C=C4)Cl)C"


def panel_genes(world) -> list[str]:
    """Ensembl IDs of the synthetic CIGS panel (landmark-rich, incl. Excel-prone genes)."""
    rng = world.rng("cigs", "panel")
    g = world.genes
    lm = g.index[g["kind"] == "landmark"]
    prone = g.index[g["symbol"].isin(EXCEL_PRONE_SYMBOLS)]
    extra = g.index[(g["kind"] == "extra") & ~g.index.isin(prone)]
    pick = list(rng.choice(lm, PANEL_LANDMARK, replace=False)) + list(rng.choice(extra, PANEL_EXTRA, replace=False))
    return sorted(pick) + list(prone)


def _excel_cell(ws, symbol: str, how: str | None):
    if how is None:
        return symbol
    if how == "date":
        fam = re.match(r"^(MARCHF|SEPTIN)(\d+)$", symbol)
        c = WriteOnlyCell(ws, value=_dt.datetime(2023, _MONTH[fam.group(1)], int(fam.group(2))))
        c.number_format = "d-mmm"  # shown as 1-Mar, as Excel does
        return c
    return how


def _design_rows(world, dataset: str, cell_index: int, cell_type: str) -> pd.DataFrame:
    """One row per well of one subset (two replicate plates), in plate order."""
    d = DESIGNS[dataset]
    lib = LIBRARY[dataset]
    cname = CONTEXTS.at[cell_type, "name"]
    rows = []
    for rep in range(d.replicates):
        plate = (f"SYN-{lib}{cell_index + 1}_{cname}_24H_X{rep + 1}" if dataset == "cigs_mce"
                 else f"P{rep + 1}")
        wells = []
        for c in d.compounds:
            for dose in d.doses_uM:
                for t in d.times_h:
                    wells.append(dict(kind="treated", compound=c, dose_uM=dose, time_h=t))
        wells += [dict(kind="dmso", compound=None, dose_uM=0.0, time_h=d.times_h[0])
                  for _ in range(CONTROL_WELLS_PER_PLATE)]
        wells += [dict(kind="blank", compound=None, dose_uM=0.0, time_h=d.times_h[0]),
                  dict(kind="rna", compound=None, dose_uM=0.0, time_h=d.times_h[0]),
                  dict(kind="jq1", compound=None, dose_uM=d.doses_uM[0], time_h=d.times_h[0])]
        # planted quirks, extra to the design: a zero-count DMSO well (plate 1), a
        # low-read DMSO well (plate 2) and a low-read extra replicate of a compound (plate 1)
        if rep == 0:
            wells += [dict(kind="zero", compound=None, dose_uM=0.0, time_h=d.times_h[0]),
                      dict(kind="lowread", compound=d.compounds[0], dose_uM=d.doses_uM[0], time_h=d.times_h[0])]
        else:
            wells += [dict(kind="lowread_dmso", compound=None, dose_uM=0.0, time_h=d.times_h[0])]
        order = world.rng(dataset, "layout", cell_type, rep).permutation(len(wells))
        for pos, w in enumerate(order):
            rows.append({**wells[w], "plate": plate, "cell_type": cell_type, "pos": pos, "rep": rep})
    return pd.DataFrame(rows)


def write_synthetic(world, dataset: str, folder: str | Path) -> list[Path]:
    """Write the SYNTHETIC CIGS workbooks of `dataset` into `folder`.

    One counts + metadata workbook pair per cell line of ``DESIGNS[dataset]``
    (two replicate plates each), plus the compound table workbook. Planted:
    Excel-mangled symbols, workbook-specific gene dropouts, one unmappable
    probe, Blank/RNA/JQ1 wells, a zero-count and two low-read wells per subset,
    TCM's ``Compd``/``Cpd`` catalog spelling.
    """
    import openpyxl

    from cpb_resources.storage import atomic_path

    if dataset not in DATASETS:
        raise KeyError(dataset)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    d = DESIGNS[dataset]
    lib = LIBRARY[dataset]
    panel = panel_genes(world)
    gidx = world.gene_index(panel)
    sym = world.genes["symbol"].reindex(panel).tolist()
    prone_free = [i for i, s in enumerate(sym) if s not in _month_symbols(sym)]
    written = []
    sample_counter = 1
    for ci, ct in enumerate(d.cell_types):
        rows = _design_rows(world, dataset, ci, ct)
        rng = world.rng(dataset, "counts", ct)
        rows_cm = rows.assign(compound=rows["compound"].where(rows["kind"].isin(["treated", "lowread"]), None))
        X = world.count_matrix(rows_cm, gidx, dataset=dataset, library_size=1.5e5, libsize_cv=0.2,
                               plate_sd=0.1, rng=rng)
        kind = rows["kind"].to_numpy()
        X[kind == "zero"] = 0
        for k in ("lowread", "lowread_dmso"):
            X[kind == k] = rng.binomial(X[kind == k], 0.01)
        X[kind == "blank"] = rng.poisson(0.3, X[kind == "blank"].shape)
        jq = kind == "jq1"
        X[jq] = rng.poisson(X[jq] * np.where(np.arange(len(gidx)) % 7 == 0, 4.0, 1.0))  # BET-like burst
        probe = rng.poisson(40, (len(rows), 1))  # the unmappable probe's counts
        probe[kind == "zero"] = 0

        drop = {prone_free[j] for j in _DROPOUTS[ci]}
        keep_cols = [j for j in range(len(panel)) if j not in drop]
        mangle = _MANGLE.get((dataset, ci), {})
        cname = CONTEXTS.at[ct, "name"]
        stem = (f"SYNTHETIC_{lib}_Bioactive_Compounds_{cname}_10μM" if dataset == "cigs_mce"
                else f"SYNTHETIC_{lib}_Compounds_{cname}_10")
        if dataset == "cigs_mce":
            ids = [f"{p}_R{(pos // 24) + 1:02d}C{(pos % 24) + 1:02d}" for p, pos in zip(rows["plate"], rows["pos"])]
        else:
            ids = [str(sample_counter + i) for i in range(len(rows))]
            sample_counter += len(rows)

        # counts workbook
        cpath = folder / f"{stem}_Counts.xlsx"
        with atomic_path(cpath) as tmp:
            wb = openpyxl.Workbook(write_only=True)
            ws = wb.create_sheet("Sheet1")  # the reader takes the first sheet, whatever its name
            ws.append([SYNTHETIC_NOTE])
            ws.append([ID_COLUMN[dataset]] + [_excel_cell(ws, sym[j], mangle.get(sym[j])) for j in keep_cols]
                      + [UNMAPPABLE_PROBE])
            for i, sid in enumerate(ids):
                ws.append([sid] + X[i, keep_cols].tolist() + [int(probe[i, 0])])
            wb.properties.title = "SYNTHETIC CIGS counts"
            wb.save(tmp)
        # metadata workbook
        mpath = folder / f"{stem}_MetaData.xlsx"
        with atomic_path(mpath) as tmp:
            wb = openpyxl.Workbook(write_only=True)
            ws = wb.create_sheet(f"{lib}_{cname}")
            ws.append([SYNTHETIC_NOTE])
            if dataset == "cigs_mce":
                ws.append(["unique_ID", "experiment_no", "sample_plate", "sample_row", "sample_column", "cell_id",
                           "pert_itime", "pert_idose", "sample", "treatment"])
            else:
                ws.append(["Sample_unique_id", "Treat", "Plate", "Library", "Cell", "Dose", "Time"])
            for sid, r in zip(ids, rows.itertuples(index=False)):
                treat = _treatment_literal(world, dataset, r)
                ctrl_like = r.kind in ("dmso", "blank", "rna", "zero", "lowread_dmso")
                dose = NA_SENTINEL if ctrl_like else (f"{r.dose_uM:g} µM" if dataset == "cigs_mce"
                                                      else f"{r.dose_uM:g}uM")
                time = NA_SENTINEL if ctrl_like else (f"{r.time_h:g} h" if dataset == "cigs_mce" else f"{r.time_h:g}h")
                if dataset == "cigs_mce":
                    ws.append([sid, 1, r.plate, r.pos // 24 + 1, r.pos % 24 + 1, f"cell_{cname}", time, dose,
                               sid.rsplit("_", 1)[-1], treat])
                else:  # TCM writes the bare line name
                    ws.append([int(sid), treat, r.plate, f"lib{r.rep + 1}", cname, dose, time])
            wb.save(tmp)
        written += [cpath, mpath]
    written.append(_write_compound_table(world, folder))
    return written


def _month_symbols(symbols) -> set:
    return {s for s in symbols if re.match(r"^(MARCHF|SEPTIN|DELEC)\d+$", s)}


def _treatment_literal(world, dataset: str, r) -> str:
    if r.kind in ("dmso", "zero", "lowread_dmso"):
        return "DMSO"
    if r.kind == "blank":
        return "Blank"
    if r.kind == "rna":
        return "RNA"
    if r.kind == "jq1":
        return "JQ1"
    return _native_catalog(world, dataset, int(r.compound), metadata=True)


def _native_catalog(world, dataset: str, compound: int, metadata: bool = False) -> str:
    if dataset == "cigs_mce":
        return str(world.compounds["catalog_id"].iloc[compound])
    return f"{'Compd' if metadata else 'Cpd'}{compound:04d}"


def _write_compound_table(world, folder: Path) -> Path:
    """The paper's supplementary compound tables (3: MCE, 4: TCM), SYNTHETIC."""
    path = folder / COMPOUND_WORKBOOK
    with atomic_path(path) as tmp:
        wb = openpyxl.Workbook(write_only=True)
        for ds in DATASETS:
            ws = wb.create_sheet(COMPOUND_SHEET[ds])
            ws.append([f"{COMPOUND_SHEET[ds]}. SYNTHETIC {LIBRARY[ds]} compound list (demo world; not real)"])
            if ds == "cigs_tcm":  # the real TCM sheet heads its CAS column "Catalog Number" too
                ws.append(["Compound Name", "Catalog Number", "Catalog Number", "Smiles"])
            else:
                ws.append(["Compound Name", "Catalog Number", "CAS Number", "Smiles"])
            for c in DESIGNS[ds].compounds:
                name = world.compounds["name"].iloc[c]
                cas = f"{1000 + c}-{c % 90 + 10:02d}-{c % 10}"  # SYNTHETIC CAS-shaped number
                if ds == "cigs_tcm" and c % 7 == 0:
                    name = f"  {name}\n"  # stray whitespace/line breaks, as in the real TCM sheet
                if ds == "cigs_tcm":
                    ws.append([name, cas, _native_catalog(world, ds, c), world.compounds["smiles"].iloc[c]])
                else:
                    ws.append([name, _native_catalog(world, ds, c), cas, world.compounds["smiles"].iloc[c]])
        wb.properties.title = "SYNTHETIC compound tables"
        wb.save(tmp)
    return path
