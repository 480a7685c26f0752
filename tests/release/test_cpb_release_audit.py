"""`cpb release`, `cpb audit`, `cpb status` and `cpb sql` on a home built through Dagster."""
import io
import shutil

import pandas as pd
import pytest

from cpb_jobs import commands
from cpb_jobs.cli import main
from tests.conftest import saved_home_variables


def _run(fn, *args, **kw):
    out = io.StringIO()
    rc = fn(*args, out=out, **kw)
    return rc, out.getvalue()


@pytest.fixture(scope="module")
def released(count_home):
    with saved_home_variables():
        rc, text = _run(commands.release, "t1", home=str(count_home))
    assert rc == 0, text
    return count_home


def test_release_audits_clean_and_names_a_changed_byte(released):
    home = released
    rc, text = _run(commands.audit, "t1", home=str(home))
    assert rc == 0 and "OK: every file matches the manifest" in text, text
    # a copy of the release with one changed byte fails, naming the file
    copy = home / "releases" / "t1-copy"
    shutil.copytree(home / "releases" / "t1", copy)  # a real copy, not links
    target = sorted((copy / "tables" / "de").rglob("*.parquet"))[0]
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    rc, text = _run(commands.audit, "t1-copy", home=str(home))
    assert rc == 1
    assert f"MODIFIED {target.relative_to(copy).as_posix()}" in text
    assert main(["audit", "t1-copy", "--home", str(home)]) == 1


def test_release_is_never_overwritten_and_lineage_reaches_the_source_files(released):
    home = released
    rc, text = _run(commands.release, "t1", home=str(home))
    assert rc == 1 and "never overwritten" in text
    rc, text = _run(commands.audit, "t1", home=str(home), lineage_key="de_table/vcpi_0001|group")
    assert rc == 0, text
    lines = text.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("de_table/vcpi_0001|group"))
    tree = "\n".join(lines[start:])
    assert "  harmonized_adata/vcpi_0001" in tree and "raw_source/vcpi_0001" in tree
    assert "file " in tree and "sha256 " in tree  # the source files with their checksums
    manifest = pd.read_json(home / "releases" / "t1" / "manifest.json", typ="series")
    assert manifest["synthetic"] is True or manifest["synthetic"] == True  # noqa: E712 - JSON bool
    assert (home / "releases" / "t1" / "croissant.json").exists()


def test_status_and_sql(released, tmp_path):
    home = released
    rc, text = _run(commands.status, home=str(home), asset="de_table")
    assert rc == 0
    row = next(l for l in text.splitlines() if l.startswith("de_table"))
    assert row.split()[1:] == ["2", "0", "24"]  # vcpi_0001's two modes built; 24 other partitions missing
    rc, text = _run(commands.sql, "select mode, count(distinct contrast_id) n from de group by 1 order by 1",
                    home=str(home))
    assert rc == 0 and "group" in text and "sep" in text
    out = tmp_path / "de.csv"
    rc, _ = _run(commands.sql, "select * from de limit 7", home=str(home), csv=str(out))
    assert rc == 0 and len(pd.read_csv(out)) == 7
    rc, text = _run(commands.sql, "select * from no_such_view", home=str(home))
    assert rc == 1 and "no_such_view" in text
