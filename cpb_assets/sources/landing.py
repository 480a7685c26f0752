"""Where a partition's native files come from: the demo world's writer, a landing folder, or the downloader.

Pure logic (no Dagster); the raw_source asset calls it with the settings of
:class:`cpb_resources.sources.SourceCatalogResource`.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from cpb_assets.sources.registry import SourceSpec
from cpb_assets.versioning import code_version
from cpb_resources.sources import CHECKSUMS, combined_version, folder_fingerprint


class MissingSourceFiles(FileNotFoundError):
    """A landing folder lacks files the reader needs; the message says what to download and where."""


def demo_seed(seed: int | None) -> int:
    from cpb_assets.demo.world import WORLD_SEED
    return WORLD_SEED if seed is None else int(seed)


def origin_version(spec: SourceSpec, profile: str, seed: int | None, landing: Path) -> str:
    """Version of a partition's origin: writer code + seed (demo) or the landing folder's checksums."""
    if profile == "demo":
        return f"demo-{demo_seed(seed)}-" + code_version(spec.demo_writer, "cpb_assets.demo.world")
    return combined_version(folder_fingerprint(landing))


def missing_files_message(spec: SourceSpec, folder: Path, missing: list[str]) -> str:
    lines = [f"{spec.dataset}: {folder} lacks files the reader needs: {', '.join(missing)}."]
    remote = spec.remote_files
    if remote:
        lines.append("Download these files into that folder (the 'real' profile fetches them into the landing folder):")
        lines += [f"  {r.filename}  <- {r.url}" for r in remote]
    if spec.access:
        lines.append(spec.access + f" (into {folder}).")
    return "\n".join(lines)


def materialize_source(spec: SourceSpec, dest: Path, *, profile: str, seed: int | None, landing: Path,
                       download: bool = True) -> list[Path]:
    """Put the native files of `spec`'s dataset into `dest` (a fresh temporary folder).

    profile ``demo``: the demo writer generates them from the seeded SYNTHETIC
    world. ``real``: they are copied from `landing` (downloaded there first
    when `download` and the source has remote files); ``.gctx.gz`` is stored
    decompressed because HDF5 needs random access.

    Raises
    ------
    MissingSourceFiles
        (real profile) a needed file is absent, with what to download and where.
    """
    if profile == "demo":
        from cpb_assets.demo.world import build_world
        spec.write_synthetic(build_world(demo_seed(seed)), dest)
    elif profile == "real":
        if download and spec.remote_files:
            from cpb_assets.sources.download import download_all
            download_all(spec.remote_files, landing)
        missing = spec.missing_files(landing) if landing.is_dir() else list(spec.files) or ["<folder>"]
        if missing:
            raise MissingSourceFiles(missing_files_message(spec, landing, missing))
        from cpb_assets.sources.download import gunzip_to
        for p in sorted(landing.iterdir()):
            if not p.is_file() or p.name.startswith(".") or p.name == CHECKSUMS:
                continue
            if p.name.endswith(".gctx.gz"):
                gunzip_to(p, dest / p.name[:-3])
            else:
                shutil.copy2(p, dest / p.name)
    else:
        raise ValueError(f"unknown source profile {profile!r} (demo | real)")
    return sorted(p for p in dest.rglob("*") if p.is_file())
