"""Build the real-layout fixtures of the four DRUG-seq partitions (run once; the outputs are committed).

    .venv/bin/python tests/data/build_drugseq_fixtures.py

Every file written here is BUILT (SYNTHETIC values) in the exact layout the
sources ship — file names, R object structure, column names and types —
except ``novartis_drugseq/MoABox_compounds_metadata.txt``, the real table
copied from the release (CC-BY-4.0). Each folder's README.md says which is
which. The values carry a SYNTHETIC note inside the files (RData attribute,
Parquet schema metadata, h5ad ``uns``), so harmonized outputs are labelled
synthetic.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cpb_assets.demo import gdpx2 as demo_gdpx2
from cpb_assets.demo import novartis as demo_novartis
from cpb_assets.demo import vcpi as demo_vcpi

HERE = Path(__file__).resolve().parent
NOTE = "SYNTHETIC fixture built by tests/data/build_drugseq_fixtures.py in the real file layout; not measurements"
TP53, BRCA1, MARCHF1, GAPDH, ACTB = ("ENSG00000141510", "ENSG00000012048", "ENSG00000145416", "ENSG00000111640",
                                     "ENSG00000075624")
# more real genes (symbol, Ensembl ID, chromosome), so that the planted losses stay under the gene-axis check's 20 %
MORE_GENES = [("MYC", "ENSG00000136997", "8"), ("EGFR", "ENSG00000146648", "7"), ("KRAS", "ENSG00000133703", "12"),
              ("PTEN", "ENSG00000171862", "10"), ("CDKN1A", "ENSG00000124762", "6"), ("MDM2", "ENSG00000135679", "12"),
              ("HMOX1", "ENSG00000100292", "22"), ("TXNRD1", "ENSG00000198431", "12"), ("NQO1", "ENSG00000181019", "16"),
              ("HSPA1A", "ENSG00000204389", "6"), ("ATF3", "ENSG00000162772", "1"), ("DDIT3", "ENSG00000175197", "12")]


def build_novartis(folder: Path, rng: np.random.Generator) -> None:
    """2 batches × 3 plates × 384 wells, 20 geneIDs; compounds from the real MoA Box table."""
    real = pd.read_csv(folder / "MoABox_compounds_metadata.txt", sep="\t", dtype=str)
    with_structure = real.dropna(subset=["smiles"])
    doubled = with_structure[with_structure["smiles"].str.contains("\\\\", regex=False)]["cmpd_sample_id"].tolist()
    plain = with_structure[~with_structure["cmpd_sample_id"].isin(
        doubled + list(demo_novartis.POSITIVE_CONTROLS) + [demo_novartis.DMSO_ID, demo_novartis.WATER_ID])]
    no_structure = real[real["smiles"].isna()]["cmpd_sample_id"].tolist()
    gene_ids = ["TP53,grch38_17", "TP53,grch38_HSCHR17_1_CTG1", "BRCA1,grch38_17", "GAPDH,grch38_12",
                "ACTB,grch38_7", "MARCHF1,grch38_4", "LOC105369,grch38_2", "SPLIT1,grch38_1"]
    gene_ids += [f"{sym},grch38_{chrom}" for sym, _, chrom in MORE_GENES]
    gene_table = pd.DataFrame({"geneID": gene_ids + ["SPLIT1,grch38_1"],
                               "ensembl_gene_id": [TP53, TP53, BRCA1, GAPDH, ACTB, MARCHF1, None, ACTB]
                               + [e for _, e, _ in MORE_GENES] + ["ENSG00000000003"]})
    base = np.array([40, 6, 12, 300, 500, 9, 3, 4] + [20] * len(MORE_GENES), dtype=float)
    plates, robust = {}, []
    bio = 2_000_000
    for b in (1, 2):
        comps = [doubled[b - 1], no_structure[b - 1]] + plain["cmpd_sample_id"].iloc[4 * (b - 1):4 * b].tolist()
        for rep in (1, 2, 3):
            plate = f"VH0200{b}{rep:03d}"
            lay = {}
            k = 0
            for c in comps:
                for dose in (0.01, 0.1, 1.0, 10.0):
                    r, col = divmod(k, 22)
                    lay[(r, col + 1)] = ("SA", c, dose)
                    k += 1
            for r in range(16):
                lay[(r, 23)] = ("RC", demo_novartis.DMSO_ID, 0.0)
            for r, pc in enumerate(np.repeat(demo_novartis.POSITIVE_CONTROLS, 3)):
                lay[(r, 24)] = ("SA", str(pc), 10.0)
            wells = [(r, c) for r in range(16) for c in range(1, 25)]
            rows = [lay.get(w, ("EMPTY", demo_novartis.WATER_ID, 0.0)) for w in wells]
            live = np.array([t != "EMPTY" for t, _, _ in rows])
            counts = np.where(live[None, :], rng.poisson(base[:, None] * rng.uniform(0.5, 1.5, len(wells))), 0.0)
            counts[:, ~live] = rng.poisson(0.01, (len(base), int((~live).sum())))
            if rep == 1:
                counts[:, 5] = 0  # one failed library per batch
            barcodes = [demo_novartis._barcode(int(v)) for v in rng.choice(4 ** 10, len(wells), replace=False)]
            colnames = [f"{plate}_{bc}" for bc in barcodes]
            names = [f"{chr(ord('A') + r)}{c:02d}" for r, c in wells]
            anno = pd.DataFrame({
                "batch_id": b, "plate_barcode": plate, "plate_index": "GCGCTCTA", "well_id": names,
                "plate_replicate": rep, "well_index": barcodes, "col": [c for _, c in wells],
                "row": [r + 1 for r, _ in wells], "biosample_id": np.arange(len(wells)) + bio,
                "external_biosample_id": [f"FX-{bio + k:07d}" for k in range(len(wells))],
                "cmpd_sample_id": [c for _, c, _ in rows], "well_type": [t for t, _, _ in rows],
                "cell_line_name": "U-2 OS", "cell_line_ncn": "FH55-48QE",
                "concentration": [d for _, _, d in rows], "unit": "uM", "hours_post_treatment": "24.0",
                "Sample": [f"{c}_{d:g}uM_24.0hr_{b}" for _, c, d in rows],
            }, index=colnames)
            bio += len(wells)
            robust.append(anno[anno["well_type"] == "RC"].iloc[[3, 11]][
                ["batch_id", "plate_barcode", "well_id", "external_biosample_id", "cmpd_sample_id"]])
            plates[(str(b), plate)] = (counts, colnames, anno.iloc[rng.permutation(len(anno))])
    demo_novartis.write_native(folder, plates, gene_ids, gene_table, pd.concat(robust), None, tag="", note=NOTE)


def build_vcpi(folder: Path, experiment: str, rng: np.random.Generator) -> None:
    """One THP-1 plate, 24 samples; letter row IDs, ERCC, versioned IDs, repeated rows, controls to drop."""
    genes = [f"{TP53}.17", BRCA1, MARCHF1, GAPDH, ACTB] + [e for _, e, _ in MORE_GENES[:8]] + ["ERCC-00002",
                                                                                            "ERCC-00130"]
    compounds = [(f"VCPI-FX-{k}", name, smi) for k, (name, smi) in enumerate(
        [("aspirin", "CC(=O)Oc1ccccc1C(=O)O"), ("caffeine", "Cn1cnc2c1c(=O)n(C)c(=O)n2C"),
         ("ibuprofen", "CC(C)Cc1ccc(cc1)C(C)C(=O)O")])]
    rows = []
    for k in range(24):
        r, c = divmod(k, 12)
        if k < 18:
            cid, name, _ = compounds[k % 3]
            rows.append((cid, name, [0.1, 1.0, 10.0][(k // 3) % 3], "uM" if k % 2 else "nM", False))
        elif k < 22:
            rows.append(("DMSO", "DMSO", 0.0, "uM", True))
        else:
            rows.append(("VCPI-FX-POS", "Staurosporine", 1.0, "uM", True))
    meta = pd.DataFrame({
        "sequenced_id": [f"{experiment.upper()}-S{k:03d}" for k in range(24)],
        "container_id": f"{experiment.upper()} P1", "row_id": [chr(ord("A") + k // 12) for k in range(24)],
        "column_id": [k % 12 + 1 for k in range(24)], "compound": [r[0] for r in rows],
        "user_compound_id": [r[1] for r in rows],
        "compound_concentration": [r[2] * (1000 if r[3] == "nM" else 1) for r in rows],
        "compound_concentration_unit": [r[3] for r in rows], "timepoint": "24h", "cell_line": "THP-1",
        "is_control": [r[4] for r in rows],
    })
    counts = rng.poisson([50, 10, 5, 400, 600] + [15] * 8 + [30, 20], (24, len(genes)))
    counts[17] = 0  # a failed library
    chem = pd.DataFrame({"compound": [c for c, _, _ in compounds] + ["DMSO"],
                         "user_compound_id": [n for _, n, _ in compounds] + ["DMSO"],
                         "canonical_smiles": [s for _, _, s in compounds] + ["CS(C)=O"],
                         "inchi_key": [None] * 3 + ["IAZDPXIOMUYVGZ-UHFFFAOYSA-N"]})
    paths = demo_vcpi.write_native(folder, meta, counts, genes, chem, experiment=experiment, tag="", note=NOTE)
    demo_vcpi.write_parquet(paths[0], pd.concat([meta, meta.iloc[:2]], ignore_index=True), NOTE)  # exact repeats


def build_gdpx2(folder: Path, rng: np.random.Generator) -> None:
    """2 plates × 4 primary cell types; NA and duplicate ensembl_gene_id, ERCC, positive controls, two DMSO levels."""
    cells = list(demo_gdpx2_cells())
    obs_rows = []
    for p, plate in enumerate(("GDPX2 FX-1", "GDPX2 FX-2")):
        for k in range(16):
            cell = cells[k % 4]
            if k < 8:
                row = ("Ginkgo Sample", "aspirin" if k % 2 else "caffeine", "GDPX2-K1" if k % 2 else "GDPX2-K2",
                       "1000.0nM" if k < 4 else "10.0uM", 0.1 if k % 4 < 2 else 0.5)
            elif k < 14:
                pvd = 0.1 if k % 4 < 2 else 0.5  # every (cell type, DMSO level) stratum of the treated has DMSO
                row = (demo_gdpx2.DMSO_SAMPLE_TYPE, "DMSO", "DMSO", f"{pvd}%", pvd)
            else:
                row = ("Ginkgo Pos Control - Dexamethasone", "Dexamethasone", "GDPX2-POS", "1000.0nM", 0.1)
            obs_rows.append((plate, "AB"[k // 8], k % 8 + 1, *row, cell))
    obs = pd.DataFrame(obs_rows, columns=["container_id", "row_id", "column_id", "sample_type", "pert_name",
                                          "compound", "pert_dose", "percent_volume_dmso", "cell_type"])
    obs = obs[["container_id", "row_id", "column_id", "sample_type", "pert_name", "compound", "pert_dose",
               "percent_volume_dmso", "cell_type"]].assign(pert_time="24.0h")
    obs.index = pd.Index([f"GDPX2-FX-{k:03d}" for k in range(len(obs))], name="sample_id")
    var = pd.DataFrame({"ensembl_gene_id": [f"{TP53}.19", None, f"{GAPDH}.15", ACTB, f"{ACTB}.13", "ERCC-00002"]
                        + [e for _, e, _ in MORE_GENES[:6]],
                        "symbol": ["TP53", "BRCA1", "GAPDH", "ACTB", "ACTB", "ERCC-00002"]
                        + [g for g, _, _ in MORE_GENES[:6]]},
                       index=pd.Index([f"gene{k}" for k in range(12)], name="gene_id"))
    counts = rng.poisson([50, 10, 400, 300, 200, 25] + [15] * 6, (len(obs), len(var)))
    counts[5, :5] = 0  # a failed library (spike-in reads only)
    counts[5, 6:] = 0
    compounds = pd.DataFrame({"compound": ["GDPX2-K1", "GDPX2-K2", "DMSO"],
                              "smiles": ["CC(=O)Oc1ccccc1C(=O)O", "Cn1cnc2c1c(=O)n(C)c(=O)n2C", "CS(C)=O"]})
    demo_gdpx2.write_native(folder, obs, counts, var, compounds, tag="", note=NOTE)


def demo_gdpx2_cells():
    from cpb_assets.sources.gdpx2 import CELL_TYPES

    return CELL_TYPES


def main() -> None:
    rng = np.random.default_rng(20261201)
    build_novartis(HERE / "novartis_drugseq", rng)
    for exp in ("vcpi-0001", "vcpi-0002"):
        build_vcpi(HERE / exp.replace("-", "_"), exp, rng)
    build_gdpx2(HERE / "gdpx2", rng)


if __name__ == "__main__":
    main()
