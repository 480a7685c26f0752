"""Build the real-layout fixtures of Tahoe-100M, sci-Plex 3, OP3, CIGS and DILImap (tests/data/<dataset>/).

Every file is BUILT (small, deterministic, seed 7): the layouts — file names,
sheet and column names, dtypes, encodings and quirks — follow the real
releases (see each folder's README.md and docs/sources.md); the genes and
compounds are real identifiers (Ensembl/HGNC of the demo world's real gene
table, PubChem CIDs and structures of data/real/pubchem_sample), the counts
are invented. Run from the repository root:

    .venv/bin/python tests/data/build_sc_fixtures.py
"""
from __future__ import annotations

import datetime as dt
import gzip
import io
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import anndata as ad  # noqa: E402
import openpyxl  # noqa: E402

from cpb_assets.demo.world import build_world  # noqa: E402

OUT = REPO / "tests" / "data"
RNG = np.random.default_rng(7)
PUBCHEM = pd.read_csv(REPO / "data" / "real" / "pubchem_sample" / "compounds.tsv", sep="\t", dtype=str)
N_GENES = 300  # ordinary genes of every fixture (plus MT- genes and MALAT1 where cells are QC'd)


def _genes() -> pd.DataFrame:
    """Real genes (Ensembl index, column symbol): 300 landmarks, MT-CO1, MT-ND1, MALAT1."""
    g = build_world().genes
    lm = g[g["kind"] == "landmark"].iloc[:N_GENES]
    mt = g[g["symbol"].isin(["MT-CO1", "MT-ND1"])]
    mal = g[g["kind"] == "malat1"]
    return pd.concat([lm, mt, mal])[["symbol"]]


GENES = _genes()


def _cell_counts(n: int, scale: float = 1.0) -> np.ndarray:
    """n cells that pass single-cell QC: every ordinary gene 1-4 UMIs, 20 on each MT- gene, 100 on MALAT1."""
    X = np.zeros((n, len(GENES)), dtype=np.int64)
    X[:, :N_GENES] = RNG.integers(1, 5, (n, N_GENES)) * scale
    X[:, N_GENES:N_GENES + 2] = 20
    X[:, N_GENES + 2] = 100
    return X


def _fresh(name: str) -> Path:
    d = OUT / name
    if d.exists():
        for p in d.iterdir():
            if p.name != "README.md":
                p.unlink()
    d.mkdir(parents=True, exist_ok=True)
    return d


# --------------------------------------------------------------------------- Tahoe-100M
TAHOE_WELLS = [("smp_1001", "DMSO_TF", 0.0), ("smp_1002", "fixture-drug-1", 0.05),
               ("smp_1003", "fixture-drug-1", 0.5), ("smp_1004", "fixture-drug-2 ", 5.0)]  # stray space: real quirk
TAHOE_LINES = {"CVCL_0023": "A549", "CVCL_0320": "HT-29"}
TAHOE_CELLS = 5  # per (well, line)
TAHOE_DUP = 0  # GENES row whose symbol var lists twice
TAHOE_UNMAPPED = ["AL627309.1", "AC114498.1"]


def build_tahoe() -> None:
    d = _fresh("tahoe100m")
    blocks, obs = [], []
    for well, drug, conc in TAHOE_WELLS:
        for line, name in TAHOE_LINES.items():
            blocks.append(_cell_counts(TAHOE_CELLS))
            obs += [dict(sample=well, drugname_drugconc=f"[('{drug}', {conc}, 'uM')]", drug=drug.strip(),
                         cell_line=line, cell_name=name, plate="plate3", pass_filter="full")] * TAHOE_CELLS
    # planted: a cell without a cell line, a cell without a plate, one with too few counts
    for fault in ("cell_line", "plate", "low"):
        x = _cell_counts(1)
        row = dict(obs[0])
        if fault == "low":
            x[:, :N_GENES] = 0
            x[:, :100] = 1
            row["pass_filter"] = "minimal"
        else:
            row[fault] = None
            if fault == "cell_line":
                row["cell_name"] = None
        blocks.append(x)
        obs.append(row)
    X = np.vstack(blocks)
    # var: symbols, no columns; GENES[TAHOE_DUP] appears twice (its UMIs split between the two), 2 unmapped symbols
    second = RNG.binomial(X[:, TAHOE_DUP], 0.4)
    X[:, TAHOE_DUP] -= second
    junk = RNG.integers(0, 3, (len(X), len(TAHOE_UNMAPPED)))
    Xr = np.hstack([X, second[:, None], junk]).astype(np.float32)
    symbols = GENES["symbol"].tolist() + [GENES["symbol"].iloc[TAHOE_DUP]] + TAHOE_UNMAPPED
    o = pd.DataFrame(obs)
    n = len(o)
    o.insert(1, "gene_count", (Xr > 0).sum(1))
    o.insert(2, "tscp_count", Xr.sum(1).astype(np.int64))
    o.insert(3, "mread_count", (Xr.sum(1) * 1.2).astype(np.int64))
    o["sublibrary"] = "smp_13"
    o["BARCODE"] = [f"{i % 96 + 1:02d}_{i % 7 + 1:03d}_{i % 11 + 1:03d}" for i in range(n)]
    o["pcnt_mito"] = Xr[:, N_GENES:N_GENES + 2].sum(1) / Xr.sum(1)
    o["S_score"], o["G2M_score"], o["phase"] = 0.0, 0.0, "G1"
    o = o[["sample", "gene_count", "tscp_count", "mread_count", "drugname_drugconc", "drug", "cell_line",
           "sublibrary", "BARCODE", "pcnt_mito", "S_score", "G2M_score", "phase", "pass_filter", "cell_name",
           "plate"]]
    o.index = pd.Index([f"{b}-{s}" for b, s in zip(o["BARCODE"], o["sublibrary"])], name="BARCODE_SUB_LIB_ID")
    for c in ["sample", "drugname_drugconc", "drug", "cell_line", "sublibrary", "phase", "pass_filter",
              "cell_name", "plate"]:
        o[c] = o[c].astype("category")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # duplicate symbols in var, as in the release
        a = ad.AnnData(X=sp.csr_matrix(Xr), obs=o, var=pd.DataFrame(index=pd.Index(symbols)))
        a.write_h5ad(d / "plate3_filt_Vevo_Tahoe100M_WServicesFrom_ParseGigalab.h5ad")
    # gene table: alphabetical (token order), not var order; no row for the unmapped symbols
    gt = pd.DataFrame({"gene_symbol": GENES["symbol"].to_numpy(), "ensembl_id": GENES.index.to_numpy()})
    gt = gt.sort_values("gene_symbol", ignore_index=True)
    gt["token_id"] = np.arange(3, 3 + len(gt), dtype=np.int64)
    gt.to_parquet(d / "gene_metadata.parquet", index=False)
    cmp = PUBCHEM.iloc[:2]
    pd.DataFrame({
        "drug": ["fixture-drug-1", "fixture-drug-2", "DMSO_TF"], "targets": [None, None, None],
        "moa-broad": "unclear", "moa-fine": "unclear", "human-approved": "no", "clinical-trials": "no",
        "gpt-notes-approval": None, "canonical_smiles": cmp["canonical_smiles"].tolist() + [None],
        "pubchem_cid": [float(c) for c in cmp["pubchem_cid"]] + [np.nan],  # the release stores CIDs as floats
    }).to_parquet(d / "drug_metadata.parquet", index=False)


# --------------------------------------------------------------------------- sci-Plex 3
SCIPLEX_PREFIX = "GSM4150378_sciPlex3"
SCIPLEX_LINES = ["A549", "K562", "MCF7"]
SCIPLEX_CELLS = 3  # per hash well


def build_sciplex() -> None:
    d = _fresh("sciplex")
    cmp = PUBCHEM.iloc[2:4]
    drugs = [("Vehicle", "S0000", 0.0, True), ("fixture-drug-3", "S1001", 100.0, False),
             ("fixture-drug-3", "S1001", 1000.0, False), ("fixture-drug-4", "S1002", 1000.0, False)]
    rows, blocks = [], []
    for li, line in enumerate(SCIPLEX_LINES):
        plates = [(f"plate{41 + li}", 24)] + ([("plate44", 72)] if line == "A549" else [])
        for plate, t in plates:
            for w, (name, cat, dose_nM, veh) in enumerate(drugs):
                for _ in range(SCIPLEX_CELLS):
                    rows.append(dict(plate_oligo=plate, well_oligo=f"plate2_{'ABCD'[w]}{li + 1}", culture_plate=plate,
                                     cell_type=line, replicate="rep1", time_point=t, dose=dose_nM,
                                     drug_dose=f"{cat}_{dose_nM:g}", catalog_number=cat,
                                     vehicle="TRUE" if veh else "FALSE", treatment=cat,
                                     product_name=name, target="fixture", pathway="fixture"))
                    blocks.append(_cell_counts(1))
    # two nuclei whose hash failed: every assignment NA
    for _ in range(2):
        rows.append({k: None for k in rows[0]} | {"vehicle": "FALSE"})
        blocks.append(_cell_counts(1))
    X = np.vstack(blocks)
    n = len(X)
    # gene axis: versioned human IDs, one _PAR_Y copy, two mouse genes (barnyard)
    ids = [f"{g}.{k % 9 + 1}" for k, g in enumerate(GENES.index)] + [f"{GENES.index[5]}.3_PAR_Y",
                                                                       "ENSMUSG00000064370.1", "ENSMUSG00000051951.5"]
    syms = GENES["symbol"].tolist() + [GENES["symbol"].iloc[5], "mt-Cytb", "Xkr4"]
    X = np.hstack([X, np.zeros((n, 1), np.int64), RNG.integers(0, 2, (n, 2))])
    cells = [f"{'ABCDEFGH'[i % 8]}{i % 12 + 1:02d}_E09_RT_BC_{i // 96 + 1}_Lig_BC_{i}" for i in range(n)]
    coo = sp.coo_matrix(X)
    order = np.lexsort((coo.col, coo.row))  # cell-major, genes ascending within a cell: as deposited
    trip = "".join(f"{g + 1}\t{c + 1}\t{v}\n" for g, c, v in zip(coo.col[order], coo.row[order], coo.data[order]))

    def put(name: str, text: str) -> None:
        (d / name).write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))

    put(f"{SCIPLEX_PREFIX}_A549_MCF7_K562_screen_UMI.count.matrix.gz", trip)
    put(f"{SCIPLEX_PREFIX}_A549_MCF7_K562_screen_cell.annotations.txt.gz",
        "".join(f"{c}\tsciPlex3_fixture\n" for c in cells))
    put(f"{SCIPLEX_PREFIX}_A549_MCF7_K562_screen_gene.annotations.txt.gz",
        "".join(f"{i}\t{s}\n" for i, s in zip(ids, syms)))
    meta = pd.DataFrame(rows)
    total = X.sum(1)
    pdata = pd.concat([pd.DataFrame({"cell": cells, "sample": "sciPlex3_fixture",
                                     "Size_Factor": total / np.median(total), "n.umi": total}), meta], axis=1)
    buf = io.StringIO()
    pdata.to_csv(buf, sep=" ", index=False, na_rep="NA", quoting=2)  # csv.QUOTE_NONNUMERIC: R's write.table
    put(f"{SCIPLEX_PREFIX}_pData.txt.gz", buf.getvalue().replace('"TRUE"', "TRUE").replace('"FALSE"', "FALSE"))
    ht = pd.DataFrame({"catalog_number": ["S0000", "S1001", "S1002"], "vehicle": ["TRUE", "FALSE", "FALSE"],
                       "name": ["NA", "fixture-drug-3", "fixture-drug-4"],
                       "SMILES": ["NA"] + cmp["canonical_smiles"].tolist(), "CAS.Number": "NA"})
    put(f"{SCIPLEX_PREFIX}_A549_MCF7_K562_hashTable_metadata.txt.gz", ht.to_csv(sep="\t", index=False))


# --------------------------------------------------------------------------- OP3
OP3_TYPES = ["T cells", "NK cells", "B cells", "Myeloid cells"]


def build_op3() -> None:
    d = _fresh("op3")
    cmp = PUBCHEM.iloc[4:6]
    wells = [("A1", "Dimethyl Sulfoxide", True, "LSM-36361", "CS(C)=O"),
             ("A2", "Dimethyl Sulfoxide", True, "LSM-36361", "CS(C)=O"),
             ("A3", "fixture-drug-5", False, "LSM-90001", cmp["canonical_smiles"].iloc[0]),
             ("A4", "fixture-drug-6", False, "LSM-90002", cmp["canonical_smiles"].iloc[1]),
             ("A5", "Belinostat", True, "LSM-43181", None)]
    rows = []
    for donor, plate in (("Donor 1", "plate_0"), ("Donor 2", "plate_1")):
        for well, name, ctrl, lincs, smi in wells:
            for ct in OP3_TYPES:
                rows.append(dict(plate_name=plate, well=well, cell_type=ct, donor_id=donor, sm_name=name,
                                 sm_lincs_id=lincs, SMILES=smi, dose_uM=1.0, timepoint_hr=24.0, control=ctrl,
                                 library_id=f"library_{plate}", cell_count_by_well_celltype=int(RNG.integers(20, 90)),
                                 split="control" if ctrl else "train"))
    obs = pd.DataFrame(rows)
    obs["cell_count_by_plate_well"] = obs.groupby(["plate_name", "well"])["cell_count_by_well_celltype"] \
        .transform("sum")
    for c in ["plate_name", "well", "cell_type", "donor_id", "sm_name", "sm_lincs_id", "SMILES", "library_id",
              "split"]:
        obs[c] = obs[c].astype("category")
    obs.index = [f"{r.plate_name}_{r.well}_{r.cell_type}" for r in obs.itertuples()]
    # var: 60 symbols, one a previous symbol (SEPT7 for SEPTIN7), one nothing resolves
    sym = GENES["symbol"].iloc[:58].tolist() + ["SEPT7", "AC000061.1"]
    X = RNG.poisson(40, (len(obs), len(sym))).astype(np.float32)
    a = ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=pd.Index(sym)))
    a.uns["dataset_id"] = "neurips-2023-data (BUILT fixture)"
    a.write_h5ad(d / "pseudobulk_filtered_with_uns.h5ad")


# --------------------------------------------------------------------------- CIGS
CIGS_NOTE = "Note: All these datasets are for non-commercial research use only (BUILT fixture, not CIGS data)"
CIGS_GENES = [dt.datetime(2023, 3, 1), "SEPT7"] + GENES["symbol"].iloc[:38].tolist()  # 1-Mar (MARCHF1), SEPTIN7


def _workbook(path: Path, sheet: str, rows: list[list]) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = sheet
    for r in rows:
        ws.append(r)
    wb.save(path)


def _cigs_counts(wells: list[str]) -> list[list[int]]:
    out = []
    for w in wells:
        scale = {"Blank": 0.002, "RNA": 1.0, "zero": 0.0}.get(w, 1.0)
        out.append([int(v) for v in RNG.poisson(300 * scale, len(CIGS_GENES))])
    return out


def build_cigs() -> None:
    cmp = PUBCHEM.iloc[6:10]
    sup = [("Supplementary Table 3", ["Compound Name", "Catalog Number", "CAS Number", "Smiles"],
            [["fixture-drug-7", "HY-F0001", "58-08-2", cmp["canonical_smiles"].iloc[0]],
             ["fixture-drug-8", "HY-F0002", "50-78-2", cmp["canonical_smiles"].iloc[1]]]),
           # the real TCM sheet heads the CAS column "Catalog Number" too
           ("Supplementary Table 4", ["Compound Name", "Catalog Number", "Catalog Number", "Smiles"],
            [["  fixture-drug-9\n", "69-72-7", "Cpd0001", cmp["canonical_smiles"].iloc[2]],
             ["fixture-drug-10", "7440-44-0", "Cpd0002", cmp["canonical_smiles"].iloc[3]]])]
    for ds, lib in (("cigs_mce", "MCE"), ("cigs_tcm", "TCM")):
        d = _fresh(ds)
        wb = openpyxl.Workbook()
        wb.remove(wb.active)
        for title, header, body in sup:
            ws = wb.create_sheet(title)
            ws.append([f"{title}. Compound list (BUILT fixture)"])
            ws.append(header)
            for r in body:
                ws.append(r)
        wb.save(d / "41592_2025_2781_MOESM3_ESM.xlsx")
        treat = (["DMSO"] * 3 + ["HY-F0001", "HY-F0001", "HY-F0002", "HY-F0002", "Blank", "RNA", "JQ1"]
                 if lib == "MCE" else
                 ["DMSO"] * 3 + ["Compd0001", "Compd0001", "Compd0002", "Compd0002", "Blank", "RNA", "JQ1"])
        lines = ([("HEK293T", "cell_293T"), ("MDA_MB_231", "cell_MDA_MB_231")] if lib == "MCE"
                 else [("HEK293T", "293T"), ("MDA_MB_231", 231)])  # TCM: bare labels, 231 stored as a number
        sid = 1
        for line, label in lines:
            stem = (f"MCE_Bioactive_Compounds_{line}_10μM" if lib == "MCE" else f"TCM_Compounds_{line}_10")
            counts = _cigs_counts(treat)
            if lib == "MCE":
                ids = [f"MCE_{line}_P1_R01C{k + 1:02d}" for k in range(len(treat))]
                id_col, meta_header = "Sample_id", ["unique_ID", "experiment_no", "sample_plate", "sample_row",
                                                     "sample_column", "cell_id", "pert_itime", "pert_idose",
                                                     "sample", "treatment"]
                meta = [[i, 1, f"MCE_{line}_P1", 1, k + 1, label,
                         "-666" if t in ("DMSO", "Blank", "RNA") else "24 h",
                         "-666" if t in ("DMSO", "Blank", "RNA") else "10 µM", f"S{k + 1}", t]
                        for k, (i, t) in enumerate(zip(ids, treat))]
            else:
                ids = list(range(sid, sid + len(treat)))
                sid += len(treat)
                id_col, meta_header = "Sample_unique_id", ["Sample_unique_id", "Treat", "Plate", "Library", "Cell",
                                                            "Dose", "Time"]
                meta = [[i, t, "P1", "lib1", label, "-666" if t in ("DMSO", "Blank", "RNA") else "10uM",
                         "-666" if t in ("DMSO", "Blank", "RNA") else "24h"] for i, t in zip(ids, treat)]
            _workbook(d / f"{stem}_Counts.xlsx", f"{lib}_{line}",
                      [[CIGS_NOTE], [id_col] + CIGS_GENES] + [[i] + c for i, c in zip(ids, counts)])
            _workbook(d / f"{stem}_MetaData.xlsx", "Sheet1", [[CIGS_NOTE], meta_header] + meta)


# --------------------------------------------------------------------------- DILImap
def build_dilimap() -> None:
    cmp = PUBCHEM.iloc[10:13]
    names = ["fixture-drug-11", "fixture-drug-12", "fixture-drug-13"]
    sym = GENES["symbol"].tolist()
    base = RNG.gamma(0.8, 1.0, len(sym))
    base[N_GENES:N_GENES + 2] = 0.01 * base[:N_GENES].sum()  # ~2% mitochondrial reads
    p = base / base.sum()

    def plate(name: str, split: str, comps: list[str]) -> pd.DataFrame:
        rows = [dict(COMPOUND="DMSO", CONCENTRATION_UM=0.0, DOSE_LEVEL="Control") for _ in range(4)]
        for c in comps:
            for lvl, dose in (("Low", 1.0), ("High", 10.0)):
                rows += [dict(COMPOUND=c, CONCENTRATION_UM=dose, DOSE_LEVEL=lvl) for _ in range(2)]
        df = pd.DataFrame(rows)
        df["TIMEPOINT_HOURS"] = 24.0
        df["PLATE_NAME"] = name
        df["WELL_ID"] = [f"{'ABCDEFGH'[k // 12]}{k % 12 + 1:02d}" for k in range(len(df))]
        df["LIBRARY_ID"] = [f"{name}_L{k:03d}" for k in range(len(df))]
        df["BATCH_ID"] = f"batch_{name}"
        df["SPECIES"] = "Human"
        df["LDH_QC"] = ""
        df["SPLIT"] = split
        return df

    train = pd.concat([plate("PL_TR_01", "Training", names[:2]), plate("PL_TE_01", "Test", names[2:])],
                      ignore_index=True)
    train.loc[3, "LDH_QC"] = "LDH > threshold"  # a cytotoxic DMSO well of the training plate
    val = plate("PL_VA_01", "Validation", names[:1])
    for df, fname in ((train, "training_data_counts.h5ad"), (val, "validation_data_counts.h5ad")):
        df["CMPD_DOSE"] = df["COMPOUND"] + "_" + df["DOSE_LEVEL"]
        df.index = [f"{p}_{w}" for p, w in zip(df["PLATE_NAME"], df["WELL_ID"])]
        X = np.vstack([RNG.poisson(p * 2e6) for _ in range(len(df))]).astype(np.float32)
        a = ad.AnnData(X=sp.csr_matrix(X), obs=df[["COMPOUND", "CONCENTRATION_UM", "TIMEPOINT_HOURS", "DOSE_LEVEL",
                                                   "CMPD_DOSE", "PLATE_NAME", "WELL_ID", "LIBRARY_ID", "BATCH_ID",
                                                   "SPECIES", "LDH_QC", "SPLIT"]],
                       var=pd.DataFrame({"gene_id": GENES.index.to_numpy()}, index=pd.Index(sym)))
        for ds in ("dilimap_train", "dilimap_train_val"):
            (OUT / ds).mkdir(parents=True, exist_ok=True)
            a.write_h5ad(OUT / ds / fname)
    labels = pd.DataFrame({"compound_name": names, "smiles": cmp["canonical_smiles"].tolist(),
                           "DILI_label": ["no DILI", "DILI (few cases)", "DILI (known)"],
                           "split": ["train", "train", "test"]})
    for ds in ("dilimap_train", "dilimap_train_val"):
        labels.to_csv(OUT / ds / "compound_DILI_labels.csv", index=False)


if __name__ == "__main__":
    build_tahoe()
    build_sciplex()
    build_op3()
    build_cigs()
    for ds in ("dilimap_train", "dilimap_train_val"):
        _fresh(ds)
    build_dilimap()
    for p in sorted(OUT.glob("*/*")):
        if p.parent.name in {"tahoe100m", "sciplex", "op3", "cigs_mce", "cigs_tcm", "dilimap_train",
                             "dilimap_train_val"}:
            print(f"{p.relative_to(OUT)}  {p.stat().st_size:,} B")
    shutil.rmtree(OUT / "__pycache__", ignore_errors=True)
