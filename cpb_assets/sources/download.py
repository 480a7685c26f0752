"""Downloader for the real source files: streaming, checksummed, atomic."""
from __future__ import annotations

import gzip
import json
import shutil
import time
from pathlib import Path

import requests

from cpb_assets.sources.base import RemoteFile
from cpb_resources.sources import CHECKSUMS, sha256_file
from cpb_resources.storage import atomic_path


class ChecksumError(RuntimeError):
    pass


def download(remote: RemoteFile, folder: Path, *, retries: int = 3, timeout: float = 60.0,
             progress=None, require_pin: bool = False) -> Path:
    """Download one file into `folder` unless a verified copy is there.

    The file is streamed to a temporary name and renamed only after its
    sha256 matches ``remote.sha256`` (pinned). Where the source publishes no
    sha256 (``remote.sha256`` None) the policy is explicit trust on first
    use: the checksum of the first copy (downloaded, or already in the
    folder) is recorded in ``checksums.json`` and every later copy is
    verified against it; ``require_pin=True`` refuses unpinned files instead.
    ``.gz`` files are kept as downloaded; readers decompress what they need.

    Raises
    ------
    ChecksumError
        ``require_pin`` and the file has no pinned sha256, or a present copy
        contradicts the recorded checksum.
    """
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / remote.filename
    record_path = folder / CHECKSUMS
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    if remote.sha256 is None and require_pin:
        raise ChecksumError(f"{remote.url}: no sha256 is pinned for {remote.filename} and require_pin is set; "
                            "refusing to trust it on first use")
    expected = remote.sha256 or record.get(remote.filename)
    if target.exists():
        got = sha256_file(target)
        if expected is None:  # trust on first use: a copy the user put here becomes the reference
            _record(record_path, record, remote.filename, got)
            return target
        if got == expected:
            return target
        if remote.sha256 is None:  # a recorded (TOFU) checksum is contradicted: never overwrite silently
            raise ChecksumError(f"{target}: sha256 {got} differs from the one recorded on first use "
                                f"({expected}) in {record_path}; remove one of them to accept the new copy")
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
    _record(record_path, record, remote.filename, sha256_file(target))
    return target


def _record(record_path: Path, record: dict, filename: str, digest: str) -> None:
    if record.get(filename) == digest:
        return
    record[filename] = digest
    with atomic_path(record_path) as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True))


def download_all(files: list[RemoteFile], folder: Path, progress=None) -> list[Path]:
    return [download(f, folder, progress=progress) for f in files]


def gunzip_to(src: Path, dest: Path) -> Path:
    """Decompress `src` into `dest` atomically (GCTX files must be random-access)."""
    with atomic_path(dest) as tmp, gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    return dest
