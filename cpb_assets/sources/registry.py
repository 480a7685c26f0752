"""One typed contract per dataset partition: :class:`SourceSpec`, and the registry :data:`SOURCES`.

Every place that needs to know something about a source — which module reads
it, which module writes its SYNTHETIC demo stand-in, which files a user must
download, whether its plates are units of work, which times its DE layer
keeps — looks it up here; nothing probes modules with ``getattr`` or
dispatches on ``if dataset == …``.

Pure module (no Dagster); source modules are imported only when used.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pandas as pd

from cpb_assets.sources.base import Harmonized, RemoteFile


@dataclass(frozen=True)
class SourceSpec:
    """What the platform knows about one dataset partition.

    Attributes
    ----------
    dataset
        Partition key (``cpb_assets.datasets.DATASETS``).
    reader
        Module with ``compound_records(folder, dataset)``,
        ``harmonize(folder, dataset, registry[, plate_runner])`` and
        ``REMOTE_FILES[dataset]``.
    demo_writer
        Module with ``write_synthetic(world, dataset, folder)``, writing the
        demo world's SYNTHETIC stand-in in the source's real layout.
    files
        Glob patterns of the files the reader needs in a landing folder
        (``cpb ingest`` checks them before it starts).
    plate_units
        The reader accepts a ``plate_runner``: each plate is one unit of work
        on the compute resource (single-cell sources).
    de_times_h
        Times (hours) the DE layer keeps for this dataset; None keeps every
        time (METHODS §3: 24 h for Tahoe, sci-Plex, OP3 and L1000; the
        harmonized data keep every time).
    access
        How a user obtains the real files (shown by ``cpb ingest`` when files
        are missing); empty for public files that the downloader fetches.
    """

    dataset: str
    reader: str
    demo_writer: str
    files: tuple[str, ...] = ()
    plate_units: bool = False
    de_times_h: tuple[float, ...] | None = None
    access: str = ""

    def module(self) -> ModuleType:
        """The reader module (imported on first use)."""
        return importlib.import_module(self.reader)

    @property
    def remote_files(self) -> list[RemoteFile]:
        """The real files of this dataset for the downloader (empty for gated sources)."""
        return list(getattr(self.module(), "REMOTE_FILES", {}).get(self.dataset, []))

    def compound_records(self, folder: str | Path) -> pd.DataFrame:
        return self.module().compound_records(Path(folder), self.dataset)

    def harmonize(self, folder: str | Path, registry: pd.DataFrame, plate_runner=None) -> Harmonized:
        if self.plate_units:
            return self.module().harmonize(Path(folder), self.dataset, registry, plate_runner=plate_runner)
        return self.module().harmonize(Path(folder), self.dataset, registry)

    def write_synthetic(self, world, folder: str | Path) -> list[Path]:
        return importlib.import_module(self.demo_writer).write_synthetic(world, self.dataset, Path(folder))

    def missing_files(self, folder: str | Path) -> list[str]:
        """The patterns of :attr:`files` that no visible file of `folder` matches."""
        folder = Path(folder)
        return [p for p in self.files if not any(not f.name.startswith(".") for f in folder.glob(p))]


_L1000_FILES = ("*Level3*.gctx*", "*inst_info*.txt*", "*gene_info*.txt*", "*pert_info*.txt*")
# the gated Ginkgo sources: what a user downloads and how it must be saved (see sources/vcpi.py, gdpx2.py)
_VCPI_ACCESS = ("VCPI-%(n)s is gated: request access at https://datapoints.ginkgo.bio (Virtual Cell Pharmacology "
                "Initiative), install the official client `vcpi`, set TVC_TOKEN, then save the payload one Parquet "
                "file per key: exp = vcpi.load_experiment('vcpi-%(n)s'); "
                "[f.write_parquet(f'vcpi-%(n)s_{k}.parquet') for k, f in exp.items()] — that is "
                "vcpi-%(n)s_metadata.parquet, vcpi-%(n)s_data.parquet and vcpi-%(n)s_chemistry.parquet")
_GDPX2_ACCESS = ("GDPx2 is gated: request access at https://datapoints.ginkgo.bio, then with lamindb: "
                 "ln.connect('laminlabs/pertdata') and, for each key ginkgo-datapoints/vcpi/X.h5ad, "
                 "ginkgo-datapoints/vcpi/obs.parquet, ginkgo-datapoints/vcpi/var.parquet, "
                 "ginkgo-datapoints/vcpi/compounds-GDPx2-2026-02-09.csv, ln.Artifact.get(key=key).cache(); "
                 "copy the four cached files")


SOURCES: dict[str, SourceSpec] = {s.dataset: s for s in [
    SourceSpec("l1000_phase1", "cpb_assets.sources.l1000", "cpb_assets.demo.l1000", _L1000_FILES,
               de_times_h=(24.0,)),
    SourceSpec("l1000_phase2", "cpb_assets.sources.l1000", "cpb_assets.demo.l1000", _L1000_FILES,
               de_times_h=(24.0,)),
    SourceSpec("tahoe100m", "cpb_assets.sources.tahoe", "cpb_assets.demo.tahoe",
               ("plate*.h5ad", "*gene_metadata*.parquet", "*drug_metadata*.parquet"), plate_units=True,
               de_times_h=(24.0,)),
    SourceSpec("sciplex", "cpb_assets.sources.sciplex", "cpb_assets.demo.sciplex",
               ("*UMI.count.matrix*", "*cell.annotations*", "*gene.annotations*", "*pData*"),
               de_times_h=(24.0,)),
    SourceSpec("op3", "cpb_assets.sources.op3", "cpb_assets.demo.op3", ("*.h5ad",), de_times_h=(24.0,)),
    SourceSpec("novartis_drugseq", "cpb_assets.sources.novartis", "cpb_assets.demo.novartis",
               ("Exp*.RData", "drugseq_ensembl_v98_annotation_and_entrez_mapping*.RData",
                "robust_RC_ReferenceControl_DMSO_wells*.txt", "MoABox_compounds_metadata*.txt")),
    SourceSpec("vcpi_0001", "cpb_assets.sources.vcpi", "cpb_assets.demo.vcpi",
               ("*metadata*.parquet", "*_data*.parquet", "*chemistry*.parquet"), access=_VCPI_ACCESS % {"n": "0001"}),
    SourceSpec("vcpi_0002", "cpb_assets.sources.vcpi", "cpb_assets.demo.vcpi",
               ("*metadata*.parquet", "*_data*.parquet", "*chemistry*.parquet"), access=_VCPI_ACCESS % {"n": "0002"}),
    SourceSpec("gdpx2", "cpb_assets.sources.gdpx2", "cpb_assets.demo.gdpx2",
               ("*.h5ad", "*obs*.parquet", "*var*.parquet", "*compounds*.csv"), access=_GDPX2_ACCESS),
    SourceSpec("cigs_mce", "cpb_assets.sources.cigs", "cpb_assets.demo.cigs",
               ("*41592_2025_2781_MOESM3_ESM*.xlsx", "*MCE_*_Counts.xlsx")),
    SourceSpec("cigs_tcm", "cpb_assets.sources.cigs", "cpb_assets.demo.cigs",
               ("*41592_2025_2781_MOESM3_ESM*.xlsx", "*TCM_*_Counts.xlsx")),
    SourceSpec("dilimap_train", "cpb_assets.sources.dilimap", "cpb_assets.demo.dilimap",
               ("*_counts.h5ad", "*compound_DILI_labels*.csv")),
    SourceSpec("dilimap_train_val", "cpb_assets.sources.dilimap", "cpb_assets.demo.dilimap",
               ("*_counts.h5ad", "*compound_DILI_labels*.csv")),
]}


def source_spec(dataset: str) -> SourceSpec:
    """The spec of `dataset` (KeyError naming the known partitions otherwise)."""
    try:
        return SOURCES[dataset]
    except KeyError:
        raise KeyError(f"unknown dataset partition {dataset!r}; known: {', '.join(SOURCES)}") from None


# what the readers share (a change to one of these changes what every reader may produce)
SHARED_READER_MODULES = ("cpb_assets.sources.base", "cpb_assets.sources.readers", "cpb_assets.sources.gctx",
                         "cpb_assets.sources.rdata", "cpb_assets.sources.drugseq_rules")


def reader_modules() -> list[str]:
    """Every reader module and the helpers they share, once each (for code versions)."""
    return sorted({s.reader for s in SOURCES.values()} | set(SHARED_READER_MODULES))


def writer_modules() -> list[str]:
    """Every demo writer module, once each."""
    return sorted({s.demo_writer for s in SOURCES.values()})
