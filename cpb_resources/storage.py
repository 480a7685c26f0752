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


@contextlib.contextmanager
def atomic_path(final: str | Path, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it onto `final` on success.

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
            if final.exists():
                old = final.with_name(f".{final.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                final.rename(old)
                tmp.rename(final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(final)
        else:
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; products are shared (e.g. SLURM jobs, other users)
            os.replace(tmp, final)
    except BaseException:
        if is_dir:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


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

    def table_path(self, table: str, **partition: str) -> Path:
        """Hive-partitioned Parquet path: ``tables/<table>/k=v/…/part.parquet``."""
        parts = [f"{k}={v}" for k, v in partition.items()]
        return self.path("tables", table, *parts, "part.parquet")
