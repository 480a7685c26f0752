"""Release folder, manifest, audit, lineage, Croissant and licences on a small hand-built home."""
import json
from pathlib import Path

import pandas as pd
import pytest

from cpb_assets.release.audit import audit_release, lineage
from cpb_assets.release.croissant import croissant_metadata
from cpb_assets.release.licences import licence_manifest
from cpb_assets.release.manifest import (PartitionRecord, build_manifest, copy_products, released_files, sha256_of,
                                         write_json)
from cpb_resources.storage import atomic_path


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    for ds, n in (("a", 3), ("b", 5)):
        with atomic_path(home / "tables" / "de" / f"dataset={ds}" / "mode=group", is_dir=True) as tmp:
            pd.DataFrame({"gene": [f"G{i}" for i in range(n)], "logFC": [0.5 * i for i in range(n)]}).to_parquet(
                tmp / "stratum-000.parquet")
    (home / "tables" / "compounds").mkdir(parents=True)
    pd.DataFrame({"pubchem_cid": ["2244"], "n": [1]}).to_parquet(home / "tables" / "compounds" / "part.parquet")
    return home


def _release(tmp_path: Path) -> tuple[Path, dict]:
    home = _home(tmp_path)
    rel = tmp_path / "rel"
    rel.mkdir()
    files = released_files(home)
    entries = copy_products(home, rel, files)
    parts = [PartitionRecord("raw_source", "a", "c1", "d-raw", "run1", [], {"x.gctx": "ab" * 32}),
             PartitionRecord("harmonized_adata", "a", "c2", "d-h", "run2",
                             [{"asset": "raw_source", "partition": "a", "data_version": "d-raw"}]),
             PartitionRecord("de_table", "a|group", "c3", "d-de", "run3",
                             [{"asset": "harmonized_adata", "partition": "a", "data_version": "d-h"}])]
    manifest = build_manifest("t1", entries, parts, created="2026-12-01T00:00:00+00:00", synthetic=True)
    write_json(rel / "manifest.json", manifest)
    return rel, manifest


def test_manifest_lists_every_file_with_hash_size_and_rows(tmp_path):
    rel, manifest = _release(tmp_path)
    by_path = {e["path"]: e for e in manifest["files"]}
    # the published folders are links to hidden versions: the release holds the files under their public names
    assert sorted(by_path) == ["tables/compounds/part.parquet", "tables/de/dataset=a/mode=group/stratum-000.parquet",
                               "tables/de/dataset=b/mode=group/stratum-000.parquet"]
    assert [by_path[p]["rows"] for p in sorted(by_path)] == [1, 3, 5]
    for p, e in by_path.items():
        assert e["sha256"] == sha256_of(rel / p) and e["bytes"] == (rel / p).stat().st_size
    assert audit_release(rel).ok


def test_audit_names_a_modified_a_missing_and_an_unlisted_file(tmp_path):
    rel, _ = _release(tmp_path)
    target = rel / "tables/de/dataset=b/mode=group/stratum-000.parquet"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    target.unlink()  # the file may be a hard link to the live table: never write through it
    target.write_bytes(bytes(data))
    (rel / "tables/compounds/part.parquet").unlink()
    (rel / "tables/extra.parquet").write_bytes(b"x")
    report = audit_release(rel)
    assert not report.ok
    assert report.modified == ["tables/de/dataset=b/mode=group/stratum-000.parquet"]
    assert report.missing == ["tables/compounds/part.parquet"]
    assert report.unlisted == ["tables/extra.parquet"]
    assert any(line.startswith("MODIFIED tables/de/dataset=b") for line in report.lines())


def test_lineage_walks_back_to_the_source_files(tmp_path):
    _, manifest = _release(tmp_path)
    lines = lineage(manifest, "de_table/a|group")
    assert lines[0].startswith("de_table/a|group  code c3")
    assert lines[1].startswith("  harmonized_adata/a  code c2")
    assert lines[2].startswith("    raw_source/a  code c1")
    assert lines[3].strip() == "file x.gctx  sha256 " + "ab" * 32
    with pytest.raises(KeyError, match="de_table/a\\|group"):
        lineage(manifest, "de_table/zz|group")


def test_croissant_is_valid_and_reads_the_released_table(tmp_path):
    import mlcroissant as mlc

    rel, manifest = _release(tmp_path)
    meta = croissant_metadata("t1", manifest["files"], rel, description="test release", licence_summary="CC0-1.0",
                              synthetic=True, date_published="2026-12-01")
    (rel / "croissant.json").write_text(json.dumps(meta))
    ds = mlc.Dataset(jsonld=rel / "croissant.json")  # raises on any validation error
    assert sorted(r.name for r in ds.metadata.record_sets) == ["compounds", "de"]
    rows = list(ds.records("de"))
    assert sorted(r["de/logFC"] for r in rows) == sorted([0.0, 0.5, 1.0] + [0.0, 0.5, 1.0, 1.5, 2.0])
    assert "SYNTHETIC" in meta["description"]


def test_licences_separate_redistributable_from_reproduce_only():
    real = licence_manifest(["tahoe100m", "vcpi_0001"], synthetic=False)
    assert real["tahoe100m"]["status"] == "redistributable"  # CC0-1.0
    assert real["vcpi_0001"]["status"] == "reproduce-only"
    assert real["vcpi_0001"]["rebuild"].startswith("cpb ingest vcpi_0001 ")
    demo = licence_manifest(["vcpi_0001"], synthetic=True)
    assert demo["vcpi_0001"]["status"] == "redistributable" and demo["vcpi_0001"]["synthetic"]
