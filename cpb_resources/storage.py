"""Storage under one root, ``$CPB_HOME``; every file is written atomically.

A product is written to a temporary name beside its final path and renamed
into place only once complete, so a crash never leaves a half file under the
real name.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator

import anndata as ad
import dagster as dg
import pandas as pd

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
    ago can still open them); older ones are removed. Products get normal
    permissions (files 0644, folders 0755).

    On any exception the temporary file (or folder) is removed and `final` is
    left as it was.
    """
    final = Path(final)
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
            _publish_folder(tmp, final)
        else:
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; products are shared (e.g. SLURM jobs, other users)
            os.replace(tmp, final)
    except BaseException:
        if is_dir:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def _publish_folder(tmp: Path, final: Path) -> None:
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
    for old in versions.iterdir():
        if old.name not in (version, previous):
            shutil.rmtree(old, ignore_errors=True)


def write_h5ad(adata: ad.AnnData, path: str | Path) -> Path:
    """Write an AnnData atomically (gzip-free: h5ad stays fast to read)."""
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
    return Path(path)


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

    def table_path(self, table: str, **partition: str) -> Path:
        """Hive-partitioned Parquet path: ``tables/<table>/k=v/…/part.parquet``."""
        parts = [f"{k}={v}" for k, v in partition.items()]
        return self.path("tables", table, *parts, "part.parquet")
