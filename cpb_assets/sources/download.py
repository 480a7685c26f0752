"""Downloader for the real source files: streaming, checksummed, atomic."""
from __future__ import annotations

import gzip
import json
import shutil
import time
from pathlib import Path

import requests

from cpb_assets.sources.base import RemoteFile
from cpb_resources.storage import atomic_path

CHECKSUMS = "checksums.json"  # per landing folder: trust-on-first-use record of sha256


class ChecksumError(RuntimeError):
    pass


def download(remote: RemoteFile, folder: Path, *, retries: int = 3, timeout: float = 60.0,
             progress=None) -> Path:
    """Download one file into `folder` unless a verified copy is there.

    The file is streamed to a temporary name and renamed only after its
    sha256 matches ``remote.sha256`` (or, when that is None, the checksum
    recorded in ``checksums.json`` on first download). ``.gz`` files are kept
    as downloaded; readers decompress what they need.
    """
    from cpb_resources.sources import sha256_file

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / remote.filename
    record_path = folder / CHECKSUMS
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    expected = remote.sha256 or record.get(remote.filename)
    if target.exists() and (expected is None or sha256_file(target) == expected):
        return target
    last: Exception | None = None
    for attempt in range(retries):
        try:
            with atomic_path(target) as tmp, requests.get(remote.url, stream=True, timeout=timeout) as r:
                r.raise_for_status()
                total = int(r.headers.get("content-length", 0))
                done = 0
                with open(tmp, "wb") as fh:
                    for block in r.iter_content(1 << 20):
                        fh.write(block)
                        done += len(block)
                        if progress:
                            progress(remote.filename, done, total)
                got = sha256_file(tmp)
                if expected is not None and got != expected:
                    raise ChecksumError(f"{remote.url}: sha256 {got} != expected {expected}")
            break
        except (requests.RequestException, ChecksumError) as exc:
            last = exc
            time.sleep(2 ** attempt)
    else:
        raise RuntimeError(f"download failed after {retries} tries: {remote.url}: {last}") from last
    record[remote.filename] = sha256_file(target)
    with atomic_path(record_path) as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    return target


def download_all(files: list[RemoteFile], folder: Path, progress=None) -> list[Path]:
    return [download(f, folder, progress=progress) for f in files]


def gunzip_to(src: Path, dest: Path) -> Path:
    """Decompress `src` into `dest` atomically (GCTX files must be random-access)."""
    with atomic_path(dest) as tmp, gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    return dest
