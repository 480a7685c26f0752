"""The DuckDB catalog: every table product of the platform as a SQL view."""
from __future__ import annotations

import fcntl
import os
import time
import uuid
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
    "compound_coverage": ("tables/compound_coverage/part.parquet", False),
    "cellosaurus": ("tables/cellosaurus/part.parquet", False),
    "gene_map_unmapped": ("tables/gene_map_unmapped/dataset=*/part.parquet", True),
    "de": ("tables/de/dataset=*/mode=*/*.parquet", True),
    "de_strata": ("tables/de_strata/dataset=*/mode=*/part.parquet", True),
    "op3_split": ("tables/op3_split/part.parquet", False),
    "op3_predictions": ("tables/op3_predictions/descriptor=*/seed=*/part.parquet", True),
    "op3_results": ("tables/op3_results/part.parquet", False),
    "lpm_split_counts": ("tables/lpm_split_counts/part.parquet", False),
    "lpm_results": ("tables/lpm_results/part.parquet", False),
    "lpm_results_seeds": ("tables/lpm_results_seeds/part.parquet", False),
    "compound_embeddings": ("tables/compound_embeddings/variant=*/part.parquet", True),
    "match_rows": ("tables/match_rows/part.parquet", False),
    "match_candidates": ("tables/match_candidates/part.parquet", False),
    "matched_conditions": ("tables/matched_conditions/pair=*/part.parquet", True),
    "agreement_pairs": ("tables/agreement_pairs/pair=*/part.parquet", True),
    "agreement_strength": ("tables/agreement_strength/pair=*/part.parquet", True),
    "agreement_report_tables": ("tables/agreement_report/part.parquet", False),
    "retrieval": ("tables/retrieval/pair=*/part.parquet", True),
    "replicate_agreement": ("tables/replicate_agreement/dataset=*/part.parquet", True),
    "replicate_retrieval": ("tables/replicate_retrieval/dataset=*/part.parquet", True),
    "bootstrap_summary": ("tables/bootstrap_summary/scope=*/key=*/part.parquet", True),
}


def refresh_views(home: Path, db_path: Path, views: dict[str, tuple[str, bool]] = VIEWS,
                  retries: int = 600) -> list[str]:
    """(Re)create a view for every table product that has files on disk.

    The new catalog is built in a file beside the old one and renamed onto it
    in one step, so a user holding the catalog open (read-only, even for
    hours) never blocks a run, and sees the old views or the new ones, never
    an error. Writers take turns through a lock file (waiting up to
    ``retries`` × 0.2 s). Views hold absolute globs, so the catalog opens from
    any working directory.

    Returns
    -------
    The names of the views that exist after the call.
    """
    db_path.parent.mkdir(parents=True, exist_ok=True)
    made = []
    with open(db_path.with_name(db_path.name + ".lock"), "a+") as lock:
        for attempt in range(retries):
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == retries - 1:
                    raise TimeoutError(f"catalog {db_path}: another run held the write lock for "
                                       f"{retries * 0.2:.0f} s") from None
                time.sleep(0.2)
        tmp = db_path.with_name(f".{db_path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            con = duckdb.connect(str(tmp))
            try:
                for name, (glob, hive) in views.items():
                    pattern = str(home / glob)
                    if not list(home.glob(glob)):
                        continue
                    hive_arg = ", hive_partitioning = true, union_by_name = true" if hive else ""
                    con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet('{pattern}'{hive_arg})")
                    made.append(name)
                con.execute("CHECKPOINT")
            finally:
                con.close()
            os.chmod(tmp, 0o644)
            os.replace(tmp, db_path)
        finally:
            tmp.unlink(missing_ok=True)
            Path(str(tmp) + ".wal").unlink(missing_ok=True)
    return made


def query_catalog(db_path: Path, sql: str, retries: int = 50):
    """Run `sql` on a read-only connection; retry while the file is being swapped (every 0.2 s)."""
    for attempt in range(retries):
        try:
            con = duckdb.connect(str(db_path), read_only=True)
        except duckdb.IOException:
            if attempt == retries - 1:
                raise
            time.sleep(0.2)
            continue
        try:
            return con.execute(sql).df()
        finally:
            con.close()


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
        return query_catalog(self.db_path, sql)
