"""The catalog is swapped, not rewritten: readers never block runs and never see an error."""
import threading

import duckdb
import pandas as pd

from cpb_resources.catalog import query_catalog, refresh_views


def _table(home, name, rows):
    path = home / "tables" / name / "part.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"x": list(range(rows))}).to_parquet(path)


VIEWS = {"a": ("tables/a/part.parquet", False), "b": ("tables/b/part.parquet", False)}


def test_reader_holding_the_catalog_open_never_blocks_a_refresh(tmp_path):
    db = tmp_path / "catalog.duckdb"
    _table(tmp_path, "a", 3)
    assert refresh_views(tmp_path, db, VIEWS) == ["a"]
    reader = duckdb.connect(str(db), read_only=True)  # a user's session, held across the run
    try:
        _table(tmp_path, "b", 5)
        assert refresh_views(tmp_path, db, VIEWS, retries=5) == ["a", "b"]  # no lock wait on the reader
        # the open session still answers, from the catalog it opened
        assert reader.execute("select count(*) from a").fetchone() == (3,)
        views = {r[0] for r in reader.execute("select view_name from duckdb_views() where not internal").fetchall()}
        assert views == {"a"}
    finally:
        reader.close()
    assert query_catalog(db, "select count(*) n from b")["n"].tolist() == [5]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_concurrent_refreshes_take_turns_and_end_complete(tmp_path):
    db = tmp_path / "catalog.duckdb"
    _table(tmp_path, "a", 2)
    _table(tmp_path, "b", 4)
    refresh_views(tmp_path, db, VIEWS)
    errors = []

    def refresh():
        try:
            for _ in range(3):
                refresh_views(tmp_path, db, VIEWS)
        except Exception as exc:  # noqa: BLE001 - the test reports any failure
            errors.append(exc)

    threads = [threading.Thread(target=refresh) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in range(10):  # a reader during the swaps always gets an answer, never an error
        assert query_catalog(db, "select count(*) n from a")["n"].tolist() == [2]
    for t in threads:
        t.join()
    assert not errors
    assert query_catalog(db, "select (select count(*) from a) + (select count(*) from b) n")["n"].tolist() == [6]
