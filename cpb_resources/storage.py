"""Storage under one root, ``$CPB_HOME``; every file is written atomically.

A product is written to a temporary name beside its final path and renamed
into place only once complete, so a crash never leaves a half file under the
real name.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator, Mapping

import anndata as ad
import dagster as dg
import pandas as pd

from cpb_resources.sources import sha256_file

# obs string columns are nullable (a missing CID is NULL, not the text "None");
# anndata >= 0.11 reads these, and the project pins anndata 0.12.
ad.settings.allow_write_nullable_strings = True


def default_home() -> Path:
    return Path(os.environ.get("CPB_HOME", Path.cwd() / ".cpb")).resolve()


VERSIONS_SUFFIX = ".versions"  # hidden sibling folder holding the published versions of a folder product


@contextlib.contextmanager
def atomic_path(final: str | Path, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `final`; publish it as `final` on success.

    A file is renamed onto `final` (one ``rename``). A folder is published as
    a version: the complete temporary folder moves to
    ``.<name>.versions/<version>/`` and `final` becomes a symlink to it,
    switched with one ``rename`` of a new link over the old one, so a reader
    sees the whole old folder or the whole new one, never none and never a
    mix. The previous version is kept (a reader that listed its files a moment
    ago can still open them); older ones are removed once retired for longer
    than :func:`retired_grace_s`. Products get normal
    permissions (files 0644, folders 0755).

    On any exception the temporary file (or folder) is removed and `final` is
    left as it was.
    """
    final = Path(final)
    grace = retired_grace_s() if is_dir else 0.0  # a bad setting fails before any work
    final.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp" + final.suffix, dir=final.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if is_dir:
            _publish_folder(tmp, final, grace)
        else:
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; products are shared (e.g. SLURM jobs, other users)
            os.replace(tmp, final)
    except BaseException:
        if is_dir:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def _publish_folder(tmp: Path, final: Path, grace: float) -> None:
    versions = final.with_name(f".{final.name}{VERSIONS_SUFFIX}")
    versions.mkdir(exist_ok=True)
    os.chmod(tmp, 0o755)  # mkdtemp makes 0700
    version = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    os.rename(tmp, versions / version)
    link = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.link")
    os.symlink(f"{versions.name}/{version}", link)
    previous = os.readlink(final).rsplit("/", 1)[-1] if final.is_symlink() else None
    if final.is_dir() and not final.is_symlink():
        # a folder from before versioned publishing: it becomes the previous version (one-time migration)
        previous = f"legacy-{uuid.uuid4().hex[:8]}"
        os.rename(final, versions / previous)
    os.replace(link, final)  # the one step readers can observe
    _retire_versions(versions, version, previous, grace)


def retired_grace_s() -> float:
    """Seconds a superseded version stays after it stopped being the previous one (``CPB_RETIRED_GRACE_S``,
    default 300): a reader that resolved it just before two quick publications can still finish reading."""
    raw = os.environ.get("CPB_RETIRED_GRACE_S", "300")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"CPB_RETIRED_GRACE_S must be a number of seconds, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"CPB_RETIRED_GRACE_S must be >= 0, got {raw!r}")
    return value


def _retire_versions(versions: Path, current: str, previous: str | None, grace: float) -> None:
    """Remove superseded versions once no reader can still be inside them.

    The current and the previous version always stay. The previous one is stamped (mtime) with the moment
    it was retired; an older version goes only when it was retired more than `grace` seconds ago,
    so a slow reader between two quick publications is covered too. Staging folders are left alone.
    """
    if previous is not None and (versions / previous).is_dir():
        os.utime(versions / previous)
    cutoff = time.time() - grace
    for old in versions.iterdir():
        if old.name in (current, previous) or old.name.startswith(".staging."):
            continue
        try:
            retired_long_ago = old.stat().st_mtime < cutoff
        except FileNotFoundError:  # another writer's cleanup got there first
            continue
        if retired_long_ago:
            shutil.rmtree(old, ignore_errors=True)


BUNDLES = ".bundles"  # under $CPB_HOME: the versions of multi-file products (atomic_bundle)
MANIFEST = "MANIFEST.json"  # in each published version: sha256 and size of its files


class CorruptProduct(RuntimeError):
    """A published file no longer matches the checksum recorded when it was published."""


def _write_manifest(version: Path, about: dict) -> None:
    files = {p.relative_to(version).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
             for p in sorted(version.rglob("*")) if p.is_file() and p.name != MANIFEST}
    (version / MANIFEST).write_text(json.dumps({**about, "files": files}, indent=1, sort_keys=True) + "\n")


def _switch_link(link_path: Path, target: str) -> None:
    """Make `link_path` a symlink to `target` with one rename (a real folder there moves aside first)."""
    if link_path.is_symlink() and os.readlink(link_path) == target:
        return
    tmp = link_path.with_name(f".{link_path.name}.{uuid.uuid4().hex[:8]}.link")
    os.symlink(target, tmp)
    if link_path.is_dir() and not link_path.is_symlink():  # an unversioned folder from an older layout
        aside = link_path.with_name(f".{link_path.name}.{uuid.uuid4().hex[:8]}.replaced")
        os.rename(link_path, aside)
        os.replace(tmp, link_path)
        shutil.rmtree(aside, ignore_errors=True)
        return
    os.replace(tmp, link_path)


@contextlib.contextmanager
def atomic_bundle(bundle: str | Path, entries: Mapping[str, str | Path], about: Mapping | None = None
                  ) -> Iterator[Path]:
    """Publish several files and folders as one unit: readers see all old or all new.

    Yields an empty staging folder; write member ``m`` of `entries` as
    ``staging/m`` (a file or a folder). On success the staging folder gets a
    ``MANIFEST.json`` (sha256 and bytes of every file, plus `about`), moves to
    ``bundle/versions/<version>/`` and the one link ``bundle/current`` is
    switched to it by a single ``rename``. Each entry path (e.g.
    ``harmonized/<ds>.h5ad``, ``tables/harmonized_obs/dataset=<ds>``) is a
    stable relative symlink to ``bundle/current/<member>``, so that one rename
    moves every entry at once. The previous version stays (a reader may still
    have its files open); older ones are removed once retired for longer than
    :func:`retired_grace_s`. On an exception nothing is
    published and the staging folder is removed.
    """
    bundle = Path(bundle)
    grace = retired_grace_s()  # a bad setting fails before any work
    versions = bundle / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging.", suffix=".tmp", dir=versions))
    try:
        yield staging
        missing = [m for m in entries if not (staging / m).exists()]
        if missing:
            raise FileNotFoundError(f"{bundle}: members {missing} were not written to {staging}")
        _write_manifest(staging, {**(about or {}), "entries": {m: os.path.relpath(final, bundle)
                                                               for m, final in entries.items()}})
        for p in [staging, *staging.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        version = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        os.rename(staging, versions / version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    current = bundle / "current"
    previous = os.readlink(current).rsplit("/", 1)[-1] if current.is_symlink() else None
    _switch_link(current, f"versions/{version}")  # the one step readers can observe
    for member, final in entries.items():
        final = Path(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        _switch_link(final, os.path.relpath(current / member, final.parent))
        legacy = final.with_name(f".{final.name}{VERSIONS_SUFFIX}")  # atomic_path's versions before bundles
        if legacy.is_dir():
            shutil.rmtree(legacy, ignore_errors=True)
    _retire_versions(versions, version, previous, grace)


def staging_left(bundle: str | Path) -> list[Path]:
    """The staging folders a killed writer left in `bundle` (remove them only under the partition lock)."""
    return sorted(Path(bundle, "versions").glob(".staging.*.tmp"))


def published_version(path: str | Path) -> Path | None:
    """The version folder (holding ``MANIFEST.json``) that the published `path` resolves into, or None."""
    real = Path(path).resolve()
    for folder in [real, *real.parents]:
        if folder.name == BUNDLES:  # never above the bundles' root: a stray MANIFEST.json there is no manifest
            return None
        # a version is ``<bundle>/versions/<v>/`` with its manifest, inside ``.bundles``
        if folder.parent.name == "versions" and (folder / MANIFEST).is_file() and BUNDLES in folder.parts:
            return folder
    return None


def verify_published(path: str | Path) -> list[str]:
    """Problems of the published files under `path` against their version's manifest; [] when intact.

    `path` is an entry (``harmonized/<ds>.h5ad``, a table folder) or a whole
    version folder. A file missing, of another size (truncated) or with
    another sha256 (modified in place) is a problem, named by its path.
    """
    real = Path(path).resolve()
    version = published_version(real)
    if version is None:
        return []  # not a bundle product: nothing recorded to check against
    manifest = json.loads((version / MANIFEST).read_text())
    recorded, entries = manifest["files"], manifest.get("entries", {})
    prefix = real.relative_to(version).as_posix()
    problems = []
    for rel, want in recorded.items():
        if prefix not in (".", "") and rel != prefix and not rel.startswith(prefix + "/"):
            continue
        f = version / rel
        if prefix in (".", ""):  # a whole version: name files by the paths users know (the entries)
            member, _, rest = rel.partition("/")
            entry = os.path.normpath(version.parent.parent / entries[member]) if member in entries else None
            shown = Path(entry, rest) if entry else version / rel
        else:
            shown = Path(path) if rel == prefix else Path(path) / rel[len(prefix) + 1:]
        if not f.is_file():
            problems.append(f"{shown}: missing (recorded in {version / MANIFEST})")
        elif f.stat().st_size != want["bytes"]:
            problems.append(f"{shown}: {f.stat().st_size} bytes, {want['bytes']} when published (truncated?)")
        elif sha256_file(f) != want["sha256"]:
            problems.append(f"{shown}: sha256 differs from the one recorded when it was published")
    return problems


def published_bundles(home: str | Path) -> list[tuple[Path, dict]]:
    """Every multi-file product published under `home`: (its current version folder, its manifest)."""
    out = []
    # a bundle's link is ``<bundle>/current`` into ``<bundle>/versions``; a member that happens to
    # be named "current" lies inside a version and is not one
    for current in sorted(Path(home, BUNDLES).rglob("current")):
        version = current.resolve()
        if (current.is_symlink() and version.parent == (current.parent / "versions").resolve()
                and (version / MANIFEST).is_file()):
            out.append((version, json.loads((version / MANIFEST).read_text())))
    return out


def unpublish(version: Path, attic: Path, label: str) -> Path:
    """Withdraw a damaged version: move it to ``attic/<label>-<version>`` and drop its bundle's
    ``current`` link, so every entry path of the product is missing (never served) until it is
    rebuilt. Returns where it went."""
    current = version.parent.parent / "current"
    attic.mkdir(parents=True, exist_ok=True)
    dest = attic / f"{''.join(c if c.isalnum() or c in '-_.=' else '_' for c in label)}-{version.name}"
    if current.is_symlink() and current.resolve() == version.resolve():
        current.unlink()
    os.rename(version, dest)
    return dest


def require_intact(path: str | Path, rebuild_hint: str) -> None:
    """Raise :class:`CorruptProduct` naming the damaged files of `path` (never serve them)."""
    problems = verify_published(path)
    if problems:
        raise CorruptProduct("corrupted published product, not used:\n  " + "\n  ".join(problems)
                             + f"\nRebuild it: {rebuild_hint}")


def write_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a DataFrame as Parquet atomically."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)


class StorageResource(dg.ConfigurableResource):
    """Where every product of the platform lives.

    Layout under ``home``: ``sources/<dataset>/`` raw native files,
    ``harmonized/<dataset>.h5ad``, ``tables/<table>/dataset=<key>/…parquet``,
    ``catalog.duckdb``, ``dagster/`` (instance), ``mlflow/``.
    """

    home: str = ""

    @property
    def root(self) -> Path:
        return Path(self.home).resolve() if self.home else default_home()

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def source_dir(self, dataset: str) -> Path:
        return self.path("sources", dataset)

    def harmonized_path(self, dataset: str) -> Path:
        return self.path("harmonized", f"{dataset}.h5ad")

    @contextlib.contextmanager
    def partition_lock(self, asset: str, partition: str | None = None, log=None,
                       timeout_s: float = 24 * 3600) -> Iterator[None]:
        """Hold the one lock of ``asset[partition]`` while materializing it.

        Two runs materializing the same partition (two UI launches, a run and
        `cpb ingest`, a retry racing its original) take turns: the second waits
        here, logging every minute, then materializes in turn, so both end green
        with one consistent result. An ``fcntl`` lock on
        ``$CPB_HOME/locks/<asset>/<partition>.lock``: released by the kernel when
        the holder dies, even by SIGKILL.

        Raises
        ------
        TimeoutError
            The partition stayed locked for `timeout_s` seconds.
        """
        import fcntl

        safe = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in (partition or "_"))
        path = self.path("locks", asset, f"{safe}.lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+") as fh:
            t0, next_log = time.monotonic(), 0.0
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    waited = time.monotonic() - t0
                    if waited > timeout_s:
                        raise TimeoutError(f"{asset}[{partition}] stayed locked by another run for {timeout_s:.0f} s "
                                           f"({path})") from None
                    if log is not None and waited >= next_log:
                        log.warning(f"{asset}[{partition}]: another run is materializing it; waiting ({path})")
                        next_log += 60
                    time.sleep(0.2)
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()}\n")
            fh.flush()
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def bundle_dir(self, asset: str, *keys: str) -> Path:
        """Where the versions of one partition of a multi-file product live (:func:`atomic_bundle`)."""
        return self.path(BUNDLES, asset, *keys)

    def de_dir(self, dataset: str, mode: str, *, verify: bool = True) -> Path:
        """The published DE partition folder ``tables/de/dataset=<d>/mode=<m>``.

        With `verify` (readers), its files are first checked against the
        manifest they were published with: a damaged file raises
        :class:`CorruptProduct` instead of being read.
        """
        path = self.table_dir("de", dataset=dataset, mode=mode)
        if verify and path.exists():
            require_intact(path, f"cpb verify --rebuild (re-materializes de_table[{dataset}|{mode}])")
        return path

    def table_dir(self, table: str, **partition: str) -> Path:
        """Hive partition folder ``tables/<table>/k=v/…`` (the folder of :meth:`table_path`)."""
        return self.path("tables", table, *[f"{k}={v}" for k, v in partition.items()])

    def table_path(self, table: str, **partition: str) -> Path:
        """Hive-partitioned Parquet path: ``tables/<table>/k=v/…/part.parquet``."""
        parts = [f"{k}={v}" for k, v in partition.items()]
        return self.path("tables", table, *parts, "part.parquet")
