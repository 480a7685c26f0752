"""A release: a frozen folder of the compendium's tables and the manifest that audits it.

Layout of ``$CPB_HOME/releases/<tag>/``::

    manifest.json       every file (path, sha256, bytes, rows) and every asset partition
                        (code version, data version, run id, upstream partitions and their
                        data versions, source files with their checksums)
    croissant.json      Croissant JSON-LD of the released record sets
    licences.json       per source: licence, redistributable or reproduce-only (+ the command)
    tables/…            the released Parquet tables (Hive layout as under $CPB_HOME/tables)
    harmonized/…        the harmonized AnnData files

Pure functions: no Dagster here (the asset gathers lineage from the instance).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import pyarrow.parquet as pq

from cpb_resources.sources import sha256_file as sha256_of  # one sha256 of a file for the platform

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
# what a release holds: (folder under $CPB_HOME, file suffixes)
RELEASED_TREES = (("tables", (".parquet",)), ("harmonized", (".h5ad",)), ("lpm/splits", (".parquet", ".json")))


class ReleaseError(RuntimeError):
    """A release cannot be written (e.g. its tag exists) or read (no manifest)."""


def row_count(path: Path) -> int | None:
    """Rows of a Parquet table (from its footer) or observations of an h5ad; None otherwise."""
    if path.suffix == ".parquet":
        return pq.ParquetFile(path).metadata.num_rows
    if path.suffix == ".h5ad":
        import h5py

        with h5py.File(path, "r") as f:
            obs = f["obs"]
            index = obs.attrs.get("_index", "_index")
            return int(obs[index].shape[0])
    return None


def released_files(home: Path) -> list[Path]:
    """The product files under `home` that a release copies, as paths relative to `home`.

    Published folders are symlinks to their current version (storage.atomic_path): they are
    followed; the hidden ``.NAME.versions`` folders and temporary files are not released.
    """
    out = []
    for tree, suffixes in RELEASED_TREES:
        root = home / tree
        if not root.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith(".") or not name.endswith(suffixes):
                    continue
                out.append((Path(dirpath) / name).relative_to(home))
    return out


def file_entry(root: Path, rel: Path) -> dict:
    path = root / rel
    return {"path": rel.as_posix(), "sha256": sha256_of(path), "bytes": path.stat().st_size, "rows": row_count(path)}


def copy_products(home: Path, dest: Path, files: Iterable[Path], progress: Callable[[int, int], None] | None = None
                  ) -> list[dict]:
    """Copy `files` (relative to `home`) into `dest`; return their manifest entries.

    A hard link where the filesystem allows it: products are replaced by rename, never
    rewritten in place, so a linked file keeps the released bytes.
    """
    files = list(files)
    entries = []
    for i, rel in enumerate(files):
        src, dst = (home / rel).resolve(), dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
        entries.append(file_entry(dest, rel))
        if progress:
            progress(i + 1, len(files))
    return entries


@dataclass
class PartitionRecord:
    """One materialized asset partition as the release saw it."""

    asset: str
    partition: str | None
    code_version: str | None
    data_version: str | None
    run_id: str | None
    upstream: list[dict] = field(default_factory=list)  # {asset, partition, data_version}
    source_files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256 (raw sources only)

    @property
    def key(self) -> str:
        return f"{self.asset}/{self.partition}" if self.partition else self.asset


def build_manifest(tag: str, files: list[dict], partitions: list[PartitionRecord], *, created: str,
                   code: dict | None = None, synthetic: bool = False) -> dict:
    return {
        "manifest_version": MANIFEST_VERSION,
        "tag": tag,
        "created": created,
        "synthetic": synthetic,
        "code": code or {},
        "files": sorted(files, key=lambda e: e["path"]),
        "partitions": {p.key: {"asset": p.asset, "partition": p.partition, "code_version": p.code_version,
                               "data_version": p.data_version, "run_id": p.run_id, "upstream": p.upstream,
                               "source_files": p.source_files}
                       for p in sorted(partitions, key=lambda p: p.key)},
    }


def write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.exists():
        raise ReleaseError(f"{folder}: no {MANIFEST} (not a release folder)")
    return json.loads(path.read_text())
