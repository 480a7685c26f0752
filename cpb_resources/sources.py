"""Where source files come from: the demo world (default) or the real downloads."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import dagster as dg

from cpb_assets.sources.base import source_module
from cpb_assets.sources.demo_world import WORLD_SEED


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
        world. ``real``: files are taken from ``landing/<dataset>/`` under
        ``landing`` (default ``$CPB_HOME/landing``), downloading the source's
        REMOTE_FILES there first when absent.
    """

    profile: str = "demo"
    seed: int = WORLD_SEED
    landing: str = ""

    def landing_dir(self, home: Path, dataset: str) -> Path:
        return (Path(self.landing) if self.landing else home / "landing") / dataset

    def origin_version(self, home: Path, dataset: str) -> str:
        """Version of the origin: generator code + seed (demo) or landing checksums (real)."""
        if self.profile == "demo":
            from cpb_assets.versioning import code_version
            mod = source_module(dataset).__name__
            return f"demo-{self.seed}-" + code_version(mod, "cpb_assets.sources.demo_world")
        return combined_version(folder_fingerprint(self.landing_dir(home, dataset)))

    def materialize_into(self, home: Path, dataset: str, dest: Path) -> list[Path]:
        """Put the native files of `dataset` into `dest` (a fresh temporary folder)."""
        if self.profile == "demo":
            from cpb_assets.sources.demo_world import build_world
            source_module(dataset).write_synthetic(build_world(self.seed), dataset, dest)
        elif self.profile == "real":
            from cpb_assets.sources.download import download_all
            landing = self.landing_dir(home, dataset)
            download_all(source_module(dataset).REMOTE_FILES[dataset], landing)
            from cpb_assets.sources.download import gunzip_to
            for p in sorted(landing.iterdir()):
                if not p.is_file() or p.name.startswith(".") or p.name == "checksums.json":
                    continue
                if p.name.endswith(".gctx.gz"):  # HDF5 needs random access: store it decompressed
                    gunzip_to(p, dest / p.name[:-3])
                else:
                    shutil.copy2(p, dest / p.name)
        else:
            raise ValueError(f"unknown source profile {self.profile!r} (demo | real)")
        return sorted(p for p in dest.rglob("*") if p.is_file())
