"""The 13 dataset partitions of the compendium (METHODS §1) and their routes."""
from __future__ import annotations

from dataclasses import dataclass

import dagster as dg


@dataclass(frozen=True)
class DatasetInfo:
    key: str
    label: str
    source: str
    route: str  # "normalized" | "single_cell" | "pre_aggregated" | "count"
    assay: str
    licence: str


DATASET_INFO: dict[str, DatasetInfo] = {
    d.key: d
    for d in [
        DatasetInfo("l1000_phase1", "L1000 Phase I", "LINCS L1000 Phase I (GSE92742)", "normalized",
                    "L1000", "LINCS data release policy (public, cite LINCS)"),
        DatasetInfo("l1000_phase2", "L1000 Phase II", "LINCS L1000 Phase II (GSE70138)", "normalized",
                    "L1000", "LINCS data release policy (public, cite LINCS)"),
        DatasetInfo("tahoe100m", "Tahoe-100M", "Tahoe-100M (Vevo Therapeutics)", "single_cell",
                    "Mosaic scRNA-seq", "CC0-1.0"),
        DatasetInfo("sciplex", "sci-Plex", "sci-Plex 3 (Srivatsan et al. 2020, GSE139944)", "single_cell",
                    "sci-RNA-seq3", "GEO public"),
        DatasetInfo("op3", "OP3", "Open Problems NeurIPS 2023 single-cell perturbations", "pre_aggregated",
                    "10x scRNA-seq pseudobulk", "CC-BY-4.0"),
        DatasetInfo("novartis_drugseq", "Novartis", "Novartis DRUG-seq U2OS (Hadjikyriacou et al.)", "count",
                    "DRUG-seq", "CC-BY-4.0"),
        DatasetInfo("vcpi_0001", "VCPI-0001", "Ginkgo VCPI DRUG-seq payload 0001", "count",
                    "DRUG-seq", "Ginkgo Datapoints terms"),
        DatasetInfo("vcpi_0002", "VCPI-0002", "Ginkgo VCPI DRUG-seq payload 0002", "count",
                    "DRUG-seq", "Ginkgo Datapoints terms"),
        DatasetInfo("gdpx2", "GDPx2", "Ginkgo GDPx2 DRUG-seq", "count",
                    "DRUG-seq", "Ginkgo Datapoints terms"),
        DatasetInfo("cigs_mce", "CIGS-MCE", "CIGS HTS2 / HiMAP-seq, MCE library", "count",
                    "HTS2 targeted panel", "CC-BY-4.0"),
        DatasetInfo("cigs_tcm", "CIGS-TCM", "CIGS HTS2 / HiMAP-seq, TCM library", "count",
                    "HiMAP-seq targeted panel", "CC-BY-4.0"),
        DatasetInfo("dilimap_train", "DILImap train", "DILImap (primary hepatocytes), train split", "count",
                    "bulk RNA-seq", "CC-BY-4.0"),
        DatasetInfo("dilimap_train_val", "DILImap train+val", "DILImap, train + validation splits", "count",
                    "bulk RNA-seq", "CC-BY-4.0"),
    ]
}

DATASETS: list[str] = list(DATASET_INFO)
L1000_DATASETS = ["l1000_phase1", "l1000_phase2"]

dataset_partitions = dg.StaticPartitionsDefinition(DATASETS)
