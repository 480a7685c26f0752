"""LPM training tables: rows from group DE rows, split-pure shards, streaming readers, leakage checks.

The DE tables here are SYNTHETIC (hand-built, a few conditions per dataset); the real path is the same
functions the `lpm_table` / `lpm_split` assets call.
"""
import math
from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cpb_assets.lpm import prepare, splits as sp, tables as tb
from cpb_assets.lpm.fingerprints import load_fingerprints

GENES = [f"ENSG{i:011d}" for i in range(1, 7)]


def _de(dataset: str, conditions: list[tuple], seed: int) -> pd.DataFrame:
    """SYNTHETIC group DE rows: one contrast per (context, cid, dose, time) × GENES."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, (ctx, cid, dose, time) in enumerate(conditions):
        for g in GENES:
            rows.append({"dataset": dataset, "mode": "group", "stratum": ctx, "contrast_id": f"k{k:03d}",
                         "treated_label": f"{cid}_{dose}uM_{time}h", "control_label": f"DMSO_{time}h",
                         "cell_type": ctx, "pubchem_cid": cid, "perturbagen": f"name{cid}", "dose_uM": dose,
                         "time_h": time, "plate": None, "well": None, "gene": g, "logFC": rng.normal(),
                         "AveExpr": 5.0, "t": 1.0, "P_Value": 0.5, "adj_P_within": 0.5})
    return pd.DataFrame(rows)


def _write_de(root, ds, de):
    folder = root / "de" / f"dataset={ds}" / "mode=group"
    folder.mkdir(parents=True, exist_ok=True)
    for i, (stratum, part) in enumerate(de.groupby("stratum", sort=True)):
        part.drop(columns=["dataset", "mode"]).to_parquet(folder / f"stratum-{i:03d}.parquet", index=False)
    return sorted(folder.glob("*.parquet"))


def _conditions(cids, contexts, doses=(0.1, 1.0), time=24.0):
    return [(c, cid, d, time) for c in contexts for cid in cids for d in doses]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Three SYNTHETIC datasets sharing molecules, built into tables and prepared with tiny shard limits."""
    root = tmp_path_factory.mktemp("lpm")
    specs = {
        "l1000_phase1": _conditions([str(i) for i in range(1, 25)], ["CVCL_0023", "CVCL_0132"]),
        "gdpx2": _conditions([str(i) for i in range(10, 40)] + ["3+4"], ["CVCL_0031"]),
        "op3": _conditions([str(i) for i in range(20, 30)], ["CL_0000624|T"], doses=(1.0,)),  # multi only
    }
    dirs = {}
    for j, (ds, conds) in enumerate(specs.items()):
        files = _write_de(root, ds, _de(ds, conds, j))
        dirs[ds] = root / "table" / f"dataset={ds}"
        tb.build_dataset_table(files, ds, dirs[ds], batch_rows=7)  # conditions straddle record batches
    scaffolds = {str(i): f"scaffold{i % 20}" for i in range(1, 40)}  # 20 scaffolds → 2 val, 2 test
    out = root / "prep"
    result = prepare.prepare_splits(dirs, scaffolds, out, rows_per_shard=50, values_per_shard=40)
    return {"root": root, "dirs": dirs, "out": out, "result": result}


# -- rows --------------------------------------------------------------------------------------
def test_rows_from_group_de_rows(tmp_path):
    de = _de("vcpi_0001", [("c1", "5", 10.0, 24.0), ("c1", "6", 0.5, 6.0), ("c1", None, 1.0, 24.0),
                           ("c1", "7", 0.0, 24.0), ("c2", "8+9", 100.0, 24.0)], 1)
    de.loc[(de["contrast_id"] == "k000") & (de["gene"] == GENES[0]), "logFC"] = np.nan
    files = _write_de(tmp_path, "vcpi_0001", de)
    stats = tb.build_dataset_table(files, "vcpi_0001", tmp_path / "t", batch_rows=4)
    rows = pq.read_table(tmp_path / "t" / "scalar.parquet").to_pandas()
    # dropped: 1 NaN logFC, 6 rows without a CID, 6 rows with dose 0 (log10 → −inf)
    assert stats["rows_in"] == 30 and stats["rows"] == 17 and stats["dropped"] == 13
    assert stats["conditions"] == 3
    assert set(rows["perturbation"]) == {"5", "6", "8+9"}  # "A+B" kept as one string
    r = rows[rows["perturbation"] == "6"].iloc[0]
    assert r["log_dose"] == pytest.approx(math.log10(0.5)) and r["time"] == 6.0 and r["dataset"] == "vcpi_0001"
    assert rows.loc[rows["perturbation"] == "8+9", "log_dose"].iloc[0] == pytest.approx(2.0)
    assert rows["value"].dtype == np.float32 and set(rows["readout"]) == set(GENES)
    # the multi-output rows hold exactly the long rows: one per condition, observed genes only
    multi = pq.read_table(tmp_path / "t" / "multi.parquet").to_pandas()
    assert len(multi) == 3
    k0 = multi[multi["perturbation"] == "5"].iloc[0]
    assert list(k0["readouts"]) == GENES[1:]  # the NaN gene is unobserved
    expect = rows[rows["perturbation"] == "5"]["value"].to_numpy()
    np.testing.assert_array_equal(np.asarray(k0["value"]), expect)
    assert sum(len(v) for v in multi["value"]) == len(rows)


def test_float_cids_are_printed_as_integers():
    b = pa.RecordBatch.from_pydict({"stratum": ["s", "s"], "contrast_id": ["k", "k"], "cell_type": ["c", "c"],
                                    "pubchem_cid": [2244.0, float("nan")], "dose_uM": [1.0, 1.0],
                                    "time_h": [24.0, 24.0], "gene": ["g", "h"], "logFC": [0.5, 0.1]})
    rows = tb.de_batch_to_rows(b, "d").to_pylist()
    assert [r["perturbation"] for r in rows] == ["2244"] and rows[0]["log_dose"] == 0.0


# -- shards ------------------------------------------------------------------------------------
def _all_shards(root):
    return sorted(root.glob("*/*.parquet"))


def test_scalar_shards_are_split_pure_and_limited(prepared):
    out = prepared["out"]
    a = pd.read_parquet(out / "splits" / "scalar.parquet")
    split_of = {(r.dataset, r.context, r.perturbation): r.split for r in a.itertuples()}
    root = out / "shards" / "scalar" / "scalar"
    files = _all_shards(root)
    assert files
    datasets = set()
    for f in files:
        t = pq.read_table(f).to_pandas()
        assert 0 < len(t) <= 50  # the configured limit
        split = f.name.split("-")[0]
        assert {split_of[k] for k in zip(t["dataset"], t["context"], t["perturbation"])} == {split}
        # one folder per dataset_context
        assert t[["dataset", "context"]].drop_duplicates().shape[0] == 1
        assert f.parent.name == tb.folder_name(t["dataset"][0], t["context"][0])
        datasets.add(t["dataset"][0])
    assert datasets == {"l1000_phase1", "gdpx2"}  # OP3 is not in the scalar model's data
    # full shards are exactly the limit; the remainder is in the last shard of each folder × split
    sizes = Counter()
    for f in files:
        sizes[(f.parent.name, f.name.split("-")[0])] += pq.ParquetFile(f).metadata.num_rows
    for f in files:
        n = pq.ParquetFile(f).metadata.num_rows
        key = (f.parent.name, f.name.split("-")[0])
        last = max(int(g.name.split("-")[1][:5]) for g in f.parent.glob(f"{key[1]}-*.parquet"))
        assert n == 50 or int(f.name.split("-")[1][:5]) == last


def test_streaming_read_returns_the_same_rows(prepared):
    out, dirs = prepared["out"], prepared["dirs"]
    a = pd.read_parquet(out / "splits" / "scalar.parquet")
    rows = pd.concat([pq.read_table(dirs[d] / "scalar.parquet").to_pandas() for d in ("l1000_phase1", "gdpx2")])
    rows = rows.merge(a, on=sp.UNIT_COLUMNS)
    root = out / "shards" / "scalar" / "scalar"
    cols = ["dataset", "context", "perturbation", "log_dose", "time", "readout", "value"]
    for split in sp.SPLITS:
        expect = rows[rows["split"] == split][cols].sort_values(cols, ignore_index=True)
        for seed, mix in ((None, 1), (7, 1), (7, 3)):
            batches = list(tb.iter_scalar_batches(root, split, 64, seed=seed, mix=mix))
            assert all(b.num_rows == 64 for b in batches[:-1]) and 0 < batches[-1].num_rows <= 64
            got = pa.Table.from_batches(batches).to_pandas()[cols].sort_values(cols, ignore_index=True)
            pd.testing.assert_frame_equal(got, expect, check_dtype=False)
    # a seed changes the order, not the rows
    first = next(tb.iter_scalar_batches(root, "train", 64, seed=1)).to_pandas()
    plain = next(tb.iter_scalar_batches(root, "train", 64)).to_pandas()
    assert not first.equals(plain)


def test_multi_shards_values_limit_purity_and_dense_targets(prepared):
    out, dirs = prepared["out"], prepared["dirs"]
    root = out / "shards" / "molecule" / "multi"
    genes = tb.multi_readouts(root)
    assert genes == sorted(GENES)
    a = pd.read_parquet(out / "splits" / "molecule.parquet")
    split_of = dict(zip(zip(a["dataset"], a["perturbation"]), a["split"]))
    n_rows = 0
    for f in _all_shards(root):
        t = pq.read_table(f)
        n_values = sum(len(v) for v in t["value"].to_pylist())
        assert n_values <= 40  # the configured value limit (6 genes per condition)
        split = f.name.split("-")[0]
        assert {split_of[k] for k in zip(t["dataset"].to_pylist(), t["perturbation"].to_pylist())} == {split}
        n_rows += len(t)
    assert n_rows == sum(pq.ParquetFile(d / "multi.parquet").metadata.num_rows for d in dirs.values())
    batch = next(tb.iter_multi_batches(root, "train", 5))
    values, mask = tb.dense_targets(batch, len(genes))
    assert values.shape == mask.shape == (5, len(genes)) and mask.all()
    first = batch.to_pylist()[0]
    assert values[0, first["readout_idx"]].tolist() == pytest.approx(first["value"])


def test_vocabularies_and_encoding(prepared):
    out = prepared["out"]
    voc = tb.vocabularies(out / "shards" / "scalar" / "scalar", ("train",))
    pert = voc["perturbation"]
    assert pert.symbols[0] == "Control" and list(pert.symbols[1:]) == sorted(pert.symbols[1:])
    assert "3+4" not in pert.symbols  # combinations are split into molecules
    assert voc["dataset"].symbols == ("gdpx2", "l1000_phase1")
    assert pert.codes(["never-seen"]).tolist() == [0]  # unseen perturbation → Control
    with pytest.raises(KeyError, match="context"):
        voc["context"].codes(["CL_unknown"])
    idx, offsets = pert.bag(["3+4", "10"])
    assert offsets.tolist() == [0, 2] and idx.tolist() == [pert.index["3"], pert.index["4"], pert.index["10"]]
    multi = tb.vocabularies(out / "shards" / "molecule" / "multi", sp.SPLITS, form="multi")
    assert "op3" in multi["dataset"].symbols and multi["readout"].symbols == tuple(sorted(GENES))


# -- leakage -----------------------------------------------------------------------------------
def test_no_held_out_unit_reaches_training(prepared):
    out = prepared["out"]
    res = prepare.check_all(out)
    assert res == {k: {"units": [], "val_test_overlap": []} for k in ("scalar", "molecule", "scaffold")}
    a = pd.read_parquet(out / "splits" / "molecule.parquet")
    h = pd.read_parquet(out / "splits" / "molecule_molecules.parquet")
    assert len(h) and not prepare.molecule_training_copies(a, h)
    # every split kind holds something out in this table
    counts = prepared["result"]["counts"]
    assert set(counts.loc[counts["split"] != "train", "split_kind"]) == {"scalar", "molecule", "scaffold"}


@pytest.mark.parametrize("kind,form", [("scalar", "scalar"), ("molecule", "multi"), ("scaffold", "multi")])
def test_leakage_check_fails_on_a_leak(prepared, tmp_path, kind, form):
    """Copy a held-out shard in as a training shard: the check must name the leaked units."""
    import shutil

    src = prepared["out"] / "shards" / kind / form
    dst = tmp_path / kind / form
    shutil.copytree(src, dst)
    victim = sorted(dst.glob("*/test-*.parquet"))[0]
    shutil.copy(victim, victim.with_name("train-99999.parquet"))
    a = pd.read_parquet(prepared["out"] / "splits" / f"{kind}.parquet")
    held = None if kind == "scalar" else pd.read_parquet(prepared["out"] / "splits" / f"{kind}_molecules.parquet")
    assert prepare.leaks(dst, kind, a, held)["units"]


def test_split_counts_and_hashes(prepared):
    res = prepared["result"]
    counts = res["counts"]
    assert list(counts.columns) == prepare.COUNT_COLUMNS
    # rows of the scalar kind add up to the scalar rows of its datasets; multi kinds to the conditions
    dirs = prepared["dirs"]
    scalar_rows = sum(pq.ParquetFile(dirs[d] / "scalar.parquet").metadata.num_rows for d in ("l1000_phase1", "gdpx2"))
    assert counts.loc[counts["split_kind"] == "scalar", "rows"].sum() == scalar_rows
    conditions = sum(pq.ParquetFile(d / "multi.parquet").metadata.num_rows for d in dirs.values())
    assert counts.loc[counts["split_kind"] == "molecule", "rows"].sum() == conditions
    manifest = sp.read_manifest(prepared["out"] / "splits")
    assert {k: v["hash"] for k, v in manifest.items()} == res["hashes"]
    assert len(set(res["hashes"].values())) == 3


def test_shard_writer_counts_values():
    t = pa.table({"value": pa.array([[1.0] * 3, [1.0] * 5, [1.0] * 2, [1.0] * 9], pa.list_(pa.float32()))})
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        w = tb.ShardWriter(Path(d), 8, "values")
        w.add("f", "train", t)
        written = w.close()
    # 3+5 = 8 fills a shard; 2 then 9 (> limit) → 2 alone, 9 alone
    assert [x["size"] for x in written] == [8, 2, 9]


# -- the assets, through Dagster (the demo's L1000 home) ---------------------------------------
def test_lpm_assets_in_the_demo_home(l1000_home):
    """`make demo`'s LPM steps on the two L1000 partitions: every group DE row with a CID becomes a scalar row,
    the counts answer SQL, the split hashes in the metadata are the manifest's, the leakage check passed."""
    import os

    import dagster as dg
    import duckdb

    con = duckdb.connect(str(l1000_home / "catalog.duckdb"), read_only=True)
    try:
        n_de, n_ds = con.execute("select count(*), count(distinct dataset) from de where mode = 'group' and "
                                 "pubchem_cid is not null and dose_uM > 0 and logFC is not null").fetchone()
        counts = con.execute("select split_kind, sum(rows) n, count(distinct dataset) d from lpm_split_counts "
                         "group by 1 order by 1").fetchall()
    finally:
        con.close()
    assert n_de > 0
    by_kind = {k: (int(n), d) for k, n, d in counts}
    assert by_kind["scalar"] == (n_de, n_ds)
    n_conditions = sum(pq.ParquetFile(p).metadata.num_rows
                       for p in (l1000_home / "lpm" / "table").glob("*/multi.parquet"))
    assert by_kind["molecule"][0] == by_kind["scaffold"][0] == n_conditions
    manifest = sp.read_manifest(l1000_home / "lpm" / "splits")
    old = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(l1000_home / "dagster")
    try:
        with dg.DagsterInstance.get() as instance:
            ev = instance.get_latest_materialization_event(dg.AssetKey("lpm_split"))
            meta = ev.asset_materialization.metadata
            assert {k: meta[f"split_hash_{k}"].value for k in manifest} == {k: v["hash"] for k, v in manifest.items()}
            check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
                [dg.AssetCheckKey(dg.AssetKey("lpm_split"), "lpm_split_leakage")])
            rec = check[dg.AssetCheckKey(dg.AssetKey("lpm_split"), "lpm_split_leakage")]
            assert rec.event.dagster_event.event_specific_data.passed
    finally:
        if old is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = old
    fp, mat = load_fingerprints(l1000_home / "lpm" / "fingerprints" / "morgan_r2_128.parquet")
    assert fp[0] == "Control" and not mat[0].any() and mat[1:].any(axis=1).mean() > 0.5
