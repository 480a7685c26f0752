"""The demo world's SYNTHETIC L1000 Phase I / II, written in the GEO layout the real files have.

Layout (as GSE92742 / GSE70138 ship it, see docs/sources.md): a Level 3 GCTX
holding only the matrix, row IDs (Entrez IDs as text) and column IDs
(``inst_id``) — no other metadata inside — and tab-separated
``gene_info`` / ``inst_info`` / ``pert_info`` / ``cell_info`` tables beside
it. Phase I tables follow GSE92742 (no ``det_plate``: the plate is the
``inst_id`` part before ``:``; doses in ``µM`` or ``nM``), Phase II tables
follow GSE70138 (``det_plate``/``det_well``; doses as ``10.0`` ``um``). The
matrix carries the landmark genes plus some non-landmark rows (``pr_is_lm =
0``) that the reader must leave out. ``pert_info`` ships PubChem CIDs for most
compounds (the registry's ``source_cid`` method); one planted CID contradicts
its structure (the cross-check must flag it, the structure wins).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cpb_assets.harmonize.contexts import cell_line_to_cellosaurus
from cpb_assets.sources.gctx import GCT, write_gctx

GSE = {"l1000_phase1": "GSE92742", "l1000_phase2": "GSE70138"}
N_INFERRED = 40  # non-landmark rows written into the matrix (pr_is_lm = 0)
# GEO column sets of the info tables (Phase I / Phase II)
INST_COLUMNS = {
    "l1000_phase1": ["inst_id", "rna_plate", "rna_well", "pert_id", "pert_iname", "pert_type", "pert_dose",
                     "pert_dose_unit", "pert_time", "pert_time_unit", "cell_id"],
    "l1000_phase2": ["inst_id", "cell_id", "det_plate", "det_well", "pert_dose", "pert_dose_unit", "pert_id",
                     "pert_iname", "pert_mfc_id", "pert_time", "pert_time_unit", "pert_type"],
}
PERT_COLUMNS = ["pert_id", "pert_iname", "pert_type", "is_touchstone", "inchi_key_prefix", "inchi_key",
                "canonical_smiles", "pubchem_cid"]
CELL_COLUMNS = ["cell_id", "cell_type", "base_cell_id", "precursor_cell_id", "modification", "sample_type",
                "primary_site", "subtype", "original_growth_pattern", "provider_catalog_id",
                "original_source_vendor", "donor_age", "donor_sex", "donor_ethnicity"]
GENE_COLUMNS = ["pr_gene_id", "pr_gene_symbol", "pr_gene_title", "pr_is_lm", "pr_is_bing"]


def _dose(dataset: str, dose_uM: float, rng: np.random.Generator) -> tuple[str, str]:
    """(pert_dose, pert_dose_unit) as the phase writes them: Phase I µM or nM, Phase II ``um``."""
    if dataset == "l1000_phase2":
        return f"{dose_uM:.1f}" if round(dose_uM, 1) == dose_uM else f"{dose_uM:g}", "um"
    if dose_uM < 1 or rng.random() < 0.25:
        return f"{dose_uM * 1000:.6g}", "nM"
    return f"{dose_uM:.6g}", "µM"


def mismatch_compound(dataset: str, used: list[int]) -> int:
    """The compound whose shipped CID is planted wrong (the CID of another compound)."""
    return next(c for c in used if c % 7 == 1)


def write_synthetic(world, dataset: str, folder: str | Path) -> list[Path]:
    """Write a SYNTHETIC L1000 phase in the GEO layout (file names say SYNTHETIC; the GCTX has a
    ``synthetic`` root attribute). A positive control and a non-DMSO vehicle per plate are planted for
    the filters; compounds ``c % 7 == 3`` ship no structure (half of them with a CID)."""
    from cpb_assets.demo.world import DESIGNS, SYNTHETIC_NOTE
    from cpb_resources.storage import atomic_path

    folder = Path(folder)
    design = DESIGNS[dataset]
    rng = world.rng(dataset, "l1000")
    gse = GSE[dataset]
    lm = world.genes[world.genes["is_landmark"]]
    extra = world.genes[world.genes["kind"].eq("extra") & world.genes["entrez_id"].astype(str).str.isdigit()]
    inferred = extra.iloc[:N_INFERRED]
    comps = world.compounds
    rows: list[dict] = []
    phase_tag = "P1" if dataset == "l1000_phase1" else "P2"
    for ct in design.cell_types:
        cell_name = world_cell_name(ct)
        for t in design.times_h:
            cset = design.compounds if t == 24.0 else design.extra.get("time_6h_compounds", ())
            if not cset:
                continue
            for rep in range(1, design.replicates + 1):
                plate = f"SYN{phase_tag}_{cell_name}_{int(t)}H_X{rep}_B{10 + rep}"
                wells = iter(f"{r}{c:02d}" for r in "ABCDEFGHIJKLMNOP" for c in range(1, 25))
                for _ in range(8):
                    rows.append(dict(det_plate=plate, det_well=next(wells), pert_id="DMSO", pert_iname="DMSO",
                                     pert_type="ctl_vehicle", dose=0.0, time=t, cell_id=cell_name, compound=None))
                for c in cset:
                    doses = design.doses_uM if t == 24.0 else (max(design.doses_uM),)
                    for d in doses:
                        rows.append(dict(det_plate=plate, det_well=next(wells), pert_id=comps["brd_id"].iloc[c],
                                         pert_iname=comps["name"].iloc[c], pert_type="trt_cp", dose=d, time=t,
                                         cell_id=cell_name, compound=c))
                # filters' fodder: a positive control and a non-DMSO vehicle per plate
                rows.append(dict(det_plate=plate, det_well=next(wells), pert_id="BRD-SPOSCTRL", pert_iname="poscon",
                                 pert_type="trt_poscon", dose=10.0, time=t, cell_id=cell_name, compound=None))
                rows.append(dict(det_plate=plate, det_well=next(wells), pert_id="PBS", pert_iname="PBS",
                                 pert_type="ctl_vehicle", dose=0.0, time=t, cell_id=cell_name, compound=None))
    inst = pd.DataFrame(rows)
    inst["inst_id"] = inst["det_plate"] + ":" + inst["det_well"]
    # expression: baseline + truth + plate effect + noise, on L1000's log2 scale
    gidx = world.gene_index(lm.index)
    iidx = world.gene_index(inferred.index)
    X = np.empty((len(inst), len(gidx)), dtype=np.float32)
    base = world.baseline[:, gidx].astype(float) + 3.0
    for plate, grp in inst.groupby("det_plate", sort=False):
        shift = world.plate_effect(dataset, plate, len(gidx), 0.15)
        for i in grp.index:
            r = inst.loc[i]
            comp = None if r["compound"] is None or pd.isna(r["compound"]) else int(r["compound"])
            ct = cell_line_to_cellosaurus(r["cell_id"])
            mu = base[world.context_index(ct)] + world.true_logfc(comp, ct, r["dose"], r["time"], gidx, dataset) + shift
            X[i] = mu + rng.normal(0.0, 0.3, len(gidx))
    # inferred genes: values the reader must never read (pr_is_lm = 0)
    Xi = (world.baseline[0, iidx] + 3.0 + rng.normal(0.0, 0.3, (len(inst), len(iidx)))).astype(np.float32)
    # GEO row order is not landmark-first: interleave the inferred rows
    ids = np.array(list(lm["entrez_id"].astype(str)) + list(inferred["entrez_id"].astype(str)), dtype=object)
    order = rng.permutation(len(ids))
    matrix = np.hstack([X, Xi])[:, order]
    gct = GCT(matrix.T, pd.DataFrame(index=pd.Index(ids[order], name="id")),
              pd.DataFrame(index=pd.Index(inst["inst_id"], name="id")))
    doses = [_dose(dataset, d, rng) if pt == "trt_cp" else ("-666", "-666")
             for d, pt in zip(inst["dose"], inst["pert_type"])]
    inst_info = pd.DataFrame({
        "inst_id": inst["inst_id"], "cell_id": inst["cell_id"], "det_plate": inst["det_plate"],
        "det_well": inst["det_well"], "rna_plate": inst["det_plate"].str.rsplit("_", n=1).str[0],
        "rna_well": inst["det_well"], "pert_id": inst["pert_id"], "pert_iname": inst["pert_iname"],
        "pert_type": inst["pert_type"], "pert_mfc_id": inst["pert_id"],
        "pert_dose": [d[0] for d in doses], "pert_dose_unit": [d[1] for d in doses],
        "pert_time": inst["time"].map(lambda v: f"{v:g}"), "pert_time_unit": "h",
    })[INST_COLUMNS[dataset]]
    used = sorted({int(c) for c in inst["compound"].dropna()})
    bad_cid = mismatch_compound(dataset, used)
    other = next(c for c in used if c != bad_cid)

    def cid_of(c: int) -> str:
        if c == bad_cid:
            return str(comps["pubchem_cid"].iloc[other])  # planted: the CID of another compound
        if c % 7 == 3 and c % 2 == 0:
            return "-666"  # no structure and no CID: the registry falls back to the BRD ID
        if c % 11 == 5:
            return "-666"
        return str(comps["pubchem_cid"].iloc[c])

    no_structure = [c % 7 == 3 for c in used]
    pert_info = pd.DataFrame({
        "pert_id": comps["brd_id"].iloc[used].to_numpy(), "pert_iname": comps["name"].iloc[used].to_numpy(),
        "pert_type": "trt_cp", "is_touchstone": "0",
        "inchi_key_prefix": [("-666" if ns else comps["inchikey"].iloc[c].split("-")[0])
                             for c, ns in zip(used, no_structure)],
        "inchi_key": [("-666" if ns else comps["inchikey"].iloc[c]) for c, ns in zip(used, no_structure)],
        "canonical_smiles": [("-666" if ns else comps["smiles"].iloc[c]) for c, ns in zip(used, no_structure)],
        "pubchem_cid": [cid_of(c) for c in used],
    })
    controls = pd.DataFrame([{"pert_id": "DMSO", "pert_iname": "DMSO", "pert_type": "ctl_vehicle"},
                             {"pert_id": "PBS", "pert_iname": "PBS", "pert_type": "ctl_vehicle"},
                             {"pert_id": "BRD-SPOSCTRL", "pert_iname": "poscon", "pert_type": "trt_poscon"}])
    pert_info = pd.concat([pert_info, controls], ignore_index=True).fillna("-666")[PERT_COLUMNS]
    cells = sorted(inst["cell_id"].unique())
    cell_info = pd.DataFrame({c: "-666" for c in CELL_COLUMNS}, index=range(len(cells)))
    cell_info["cell_id"] = cells
    cell_info["cell_type"] = "cell line"
    cell_info["base_cell_id"] = cells
    gene_info = pd.DataFrame({
        "pr_gene_id": list(lm["entrez_id"].astype(str)) + list(inferred["entrez_id"].astype(str)),
        "pr_gene_symbol": list(lm["symbol"]) + list(inferred["symbol"]),
        "pr_gene_title": "-666",
        "pr_is_lm": ["1"] * len(lm) + ["0"] * len(inferred), "pr_is_bing": "1"})
    folder.mkdir(parents=True, exist_ok=True)
    prefix = f"{gse}_SYNTHETIC_Broad_LINCS"
    matrix_name = f"{prefix}_Level3_INF_mlr12k_n{len(inst)}x{len(ids)}.gctx"
    written = []
    with atomic_path(folder / matrix_name) as tmp:
        write_gctx(gct, tmp, attrs={"synthetic": np.bytes_(SYNTHETIC_NOTE.encode())})
    written.append(folder / matrix_name)
    for name, table in [("inst_info", inst_info), ("pert_info", pert_info), ("cell_info", cell_info),
                        ("gene_info", gene_info)]:
        path = folder / f"{prefix}_{name}.txt"
        with atomic_path(path) as tmp:
            table.to_csv(tmp, sep="\t", index=False, encoding="utf-8")
        written.append(path)
    return written


def world_cell_name(cell_type: str) -> str:
    """The LINCS-style cell_id of a Cellosaurus context (e.g. CVCL_0023 → A549)."""
    from cpb_assets.harmonize.contexts import CONTEXTS
    return str(CONTEXTS.loc[cell_type, "name"])
