"""The DuckDB catalog: every table product of the platform as a SQL view."""
from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import duckdb

from cpb_resources.storage import default_home

# view name -> (parquet glob relative to $CPB_HOME, hive partitioned?)
VIEWS: dict[str, tuple[str, bool]] = {
    "harmonized_obs": ("tables/harmonized_obs/dataset=*/part.parquet", True),
    "harmonized_var": ("tables/harmonized_var/dataset=*/part.parquet", True),
    "quarantine": ("tables/quarantine/dataset=*/part.parquet", True),
    "compounds": ("tables/compounds/part.parquet", False),
    "gene_map_unmapped": ("tables/gene_map_unmapped/dataset=*/part.parquet", True),
    "de": ("tables/de/dataset=*/mode=*/*.parquet", True),
    "de_strata": ("tables/de_strata/dataset=*/mode=*/part.parquet", True),
}


def refresh_views(home: Path, db_path: Path, views: dict[str, tuple[str, bool]] = VIEWS,
                  retries: int = 600) -> list[str]:
    """(Re)create a view for every table product that has files on disk.

    Views hold absolute globs, so the catalog opens from any working
    directory. DuckDB allows one writer at a time: concurrent runs retry
    (every 0.2 s, up to `retries` times).

    Returns
    -------
    The names of the views that exist after the call.
    """
    made = []
    for attempt in range(retries):
        try:
            con = duckdb.connect(str(db_path))
            break
        except duckdb.IOException:
            if attempt == retries - 1:
                raise
            time.sleep(0.2)
    try:
        for name, (glob, hive) in views.items():
            pattern = str(home / glob)
            if not list(home.glob(glob)):
                continue
            hive_arg = ", hive_partitioning = true, union_by_name = true" if hive else ""
            con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet('{pattern}'{hive_arg})")
            made.append(name)
    finally:
        con.close()
    return made


class CatalogResource(dg.ConfigurableResource):
    """``$CPB_HOME/catalog.duckdb``: query the whole compendium with SQL."""

    home: str = ""

    @property
    def root(self) -> Path:
        return Path(self.home).resolve() if self.home else default_home()

    @property
    def db_path(self) -> Path:
        return self.root / "catalog.duckdb"

    def refresh(self) -> list[str]:
        self.root.mkdir(parents=True, exist_ok=True)
        return refresh_views(self.root, self.db_path)

    def query(self, sql: str):
        con = duckdb.connect(str(self.db_path), read_only=True)
        try:
            return con.execute(sql).df()
        finally:
            con.close()
