"""Build the L1000 real-layout fixtures (tests/data/l1000_phase1, tests/data/l1000_phase2).

Input: the real LJP005 plate (data/real/l1000_ljp005/test_l1000.gct, cmapPy test
data, BSD-3-Clause; measurements by the LINCS program). Output: the plate
re-cut into the GEO layout of GSE92742 (Phase I) and GSE70138 (Phase II): a
Level 3 GCTX with only row IDs (Entrez, as text) and column IDs (inst_id),
plus the tab-separated info tables. What is real and what is built is listed
in each folder's README.md. Run from the repository root:

    .venv/bin/python tests/data/build_l1000_fixtures.py
"""
from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from cpb_assets.sources.gctx import GCT, read_gct, write_gctx  # noqa: E402

PLATE = REPO / "data" / "real" / "l1000_ljp005" / "test_l1000.gct"
# PubChem CIDs of some of the plate's compounds, entered by hand for the fixture (BUILT: the real
# pert_info ships CIDs for most compounds; this plate's column metadata carries none)
CIDS = {"neratinib": "9915743", "crizotinib": "11626560", "vemurafenib": "42611257", "dasatinib": "3062316",
        "erlotinib": "176870", "nilotinib": "644241", "ruxolitinib": "25126798", "trametinib": "11707110",
        "buparlisib": "16654980", "tozasertib": "5494449", "PD-0325901": "9826528", "linsitinib": "11640390"}
# non-landmark genes (real Entrez IDs) written as BUILT inferred rows (pr_is_lm = 0)
INFERRED = [("675", "BRCA2"), ("3845", "KRAS"), ("7124", "TNF"), ("3569", "IL6"), ("4790", "NFKB1"),
            ("2099", "ESR1"), ("367", "AR"), ("7422", "VEGFA"), ("2475", "MTOR"), ("4193", "MDM2"),
            ("2932", "GSK3B"), ("5594", "MAPK1"), ("5595", "MAPK3"), ("1869", "E2F1"), ("7040", "TGFB1")]
PHASE1_COLUMNS = 200  # Phase I fixture: the plate's first 200 instances


def _num(v) -> str:
    return "-666" if v == -666 else f"{float(v):g}"


def main() -> None:
    gct = read_gct(PLATE)
    rm, cm = gct.row_meta, gct.col_meta
    entrez = [str(int(v)) for v in rm["pr_gene_id"]]
    assert not set(entrez) & {e for e, _ in INFERRED}
    rng = np.random.default_rng(5)
    # BUILT inferred rows: values drawn around the plate's median, never read by the reader
    inferred = np.median(gct.data) + rng.normal(0.0, 1.0, (len(INFERRED), gct.data.shape[1]))
    data = np.vstack([gct.data, inferred]).astype(np.float32)
    ids = np.array(entrez + [e for e, _ in INFERRED], dtype=object)
    order = rng.permutation(len(ids))  # GEO rows are not landmark-first
    gene_info = pd.DataFrame({
        "pr_gene_id": entrez + [e for e, _ in INFERRED],
        "pr_gene_symbol": list(rm["pr_gene_symbol"]) + [s for _, s in INFERRED],
        "pr_gene_title": list(rm["pr_gene_title"]) + ["-666"] * len(INFERRED),
        "pr_is_lm": ["1"] * len(rm) + ["0"] * len(INFERRED),
        "pr_is_bing": ["1"] * len(rm) + ["1"] * len(INFERRED)})
    pert = cm.drop_duplicates("pert_id")
    pert_info = pd.DataFrame({
        "pert_id": pert["pert_id"].to_numpy(), "pert_iname": pert["pert_iname"].to_numpy(),
        "pert_type": pert["pert_type"].to_numpy(), "is_touchstone": "-666", "inchi_key_prefix": "-666",
        "inchi_key": "-666", "canonical_smiles": "-666",
        "pubchem_cid": [CIDS.get(n, "-666") for n in pert["pert_iname"]]})
    cell_info = pd.DataFrame([{
        "cell_id": "A375", "cell_type": "cell line", "base_cell_id": "A375", "precursor_cell_id": "-666",
        "modification": "-666", "sample_type": "tumor", "primary_site": "skin", "subtype": "malignant melanoma",
        "original_growth_pattern": "adherent", "provider_catalog_id": "CRL-1619", "original_source_vendor": "ATCC",
        "donor_age": "54", "donor_sex": "F", "donor_ethnicity": "-666"}])

    # ---- Phase I (GSE92742 layout): no det_plate; µM doses (some rewritten to nM, BUILT)
    p1 = cm.iloc[:PHASE1_COLUMNS]
    dose1 = [(_num(d), "µM") if u != "-666" else ("-666", "-666")
             for d, u in zip(p1["pert_dose"], p1["pert_dose_unit"])]
    for k in range(0, len(dose1), 9):  # every 9th treated dose as nM (Phase I mixes units)
        if dose1[k][1] == "µM":
            dose1[k] = (f"{float(dose1[k][0]) * 1000:g}", "nM")
    inst1 = pd.DataFrame({
        "inst_id": p1.index, "rna_plate": p1["rna_plate"].to_numpy(), "rna_well": p1["rna_well"].to_numpy(),
        "pert_id": p1["pert_id"].to_numpy(), "pert_iname": p1["pert_iname"].to_numpy(),
        "pert_type": p1["pert_type"].to_numpy(),
        "pert_dose": [d for d, _ in dose1], "pert_dose_unit": [u for _, u in dose1],
        "pert_time": [_num(t) for t in p1["pert_time"]], "pert_time_unit": p1["pert_time_unit"].to_numpy(),
        "cell_id": p1["cell_id"].to_numpy()})
    treated = inst1.index[inst1["pert_type"] == "trt_cp"]
    inst1.loc[treated[4], "pert_dose_unit"] = "µL"  # BUILT: a unit the reader cannot convert
    orphan = inst1.loc[treated[5], "inst_id"]
    inst1 = inst1.drop(index=treated[5])  # BUILT: a matrix column without an inst_info row
    _write("l1000_phase1", "GSE92742", f"n{len(p1)}x{len(ids)}", data[order][:, :PHASE1_COLUMNS], ids[order],
           p1.index, {"inst_info": inst1, "pert_info": pert_info, "cell_info": cell_info, "gene_info": gene_info},
           gz=False)
    print("phase1 orphan column", orphan, "unknown unit", inst1.loc[treated[4], "inst_id"])

    # ---- Phase II (GSE70138 layout): det_plate/det_well, 'um' doses; info tables gzipped as downloaded
    inst2 = pd.DataFrame({
        "inst_id": cm.index, "cell_id": cm["cell_id"].to_numpy(), "det_plate": cm["det_plate"].to_numpy(),
        "det_well": cm["det_well"].to_numpy(), "pert_dose": [_num(d) for d in cm["pert_dose"]],
        "pert_dose_unit": cm["pert_dose_unit"].to_numpy(), "pert_id": cm["pert_id"].to_numpy(),
        "pert_iname": cm["pert_iname"].to_numpy(), "pert_mfc_id": cm["pert_mfc_id"].to_numpy(),
        "pert_time": [_num(t) for t in cm["pert_time"]], "pert_time_unit": cm["pert_time_unit"].to_numpy(),
        "pert_type": cm["pert_type"].to_numpy()})
    ghost = inst2[inst2["pert_type"] == "trt_cp"].iloc[[0]].copy()
    ghost["inst_id"] = "LJP005_A375_24H_X2_B19:A07"  # BUILT: an inst_info row without a matrix column
    ghost["det_plate"] = "LJP005_A375_24H_X2_B19"
    inst2 = pd.concat([inst2, ghost], ignore_index=True)
    _write("l1000_phase2", "GSE70138", f"n{len(cm)}x{len(ids)}", data[order], ids[order], cm.index,
           {"inst_info": inst2, "pert_info": pert_info, "cell_info": cell_info, "gene_info": gene_info}, gz=True)


def _write(folder: str, gse: str, dims: str, data, row_ids, col_ids, tables: dict, gz: bool) -> None:
    out = REPO / "tests" / "data" / folder
    out.mkdir(parents=True, exist_ok=True)
    for p in out.glob(f"{gse}_*"):
        p.unlink()
    g = GCT(data, pd.DataFrame(index=pd.Index(row_ids, name="id")), pd.DataFrame(index=pd.Index(col_ids, name="id")))
    write_gctx(g, out / f"{gse}_Broad_LINCS_Level3_INF_mlr12k_{dims}_LJP005-excerpt.gctx")
    suffix = "_2017-03-06" if gse == "GSE70138" else ""
    for name, table in tables.items():
        text = table.to_csv(sep="\t", index=False).encode("utf-8")
        path = out / f"{gse}_Broad_LINCS_{name}{suffix}.txt"
        if gz:
            path.with_name(path.name + ".gz").write_bytes(gzip.compress(text, mtime=0))
        else:
            path.write_bytes(text)


if __name__ == "__main__":
    main()
