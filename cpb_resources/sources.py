"""Where source files come from: settings of the demo world (default) or of the real downloads.

The resource holds settings and paths only; what to write or download per
dataset is the sources stage's business (``cpb_assets.sources.landing``).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import dagster as dg

CHECKSUMS = "checksums.json"  # per landing folder: trust-on-first-use record of sha256


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def folder_fingerprint(folder: Path) -> dict[str, str]:
    """``{relative file name: sha256}`` of every visible file in `folder`."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def combined_version(fingerprint: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name, digest in sorted(fingerprint.items()):
        h.update(f"{name}\0{digest}\n".encode())
    return h.hexdigest()[:16]


class SourceCatalogResource(dg.ConfigurableResource):
    """The origin of every dataset's native files.

    profile
        ``demo`` (default): files are generated from the seeded SYNTHETIC demo
        world. ``real``: files are taken from the dataset's landing folder,
        downloading the source's remote files there first when absent.
    seed
        Seed of the demo world (None: the world's default seed).
    landing
        Root of the landing folders, ``<landing>/<dataset>/`` (default
        ``$CPB_HOME/landing``).
    folder
        One folder holding exactly the files of the dataset being
        materialized (``cpb ingest DATASET FOLDER``); set, it replaces the
        landing folder and nothing is downloaded.
    """

    profile: str = "demo"
    seed: int | None = None
    landing: str = ""
    folder: str = ""

    def landing_dir(self, home: Path, dataset: str) -> Path:
        if self.folder:
            return Path(self.folder).resolve()
        return (Path(self.landing) if self.landing else Path(home) / "landing") / dataset

    @property
    def download(self) -> bool:
        return not self.folder
