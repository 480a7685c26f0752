"""The L1000 reader writes its h5ad block by block (issue 8, point 6): the file holds exactly what the
in-memory path held (values, obs, var), whatever the window, and NaN/inf rows are still quarantined
(point 7). Real-layout fixtures of tests/data (the LJP005 plate in the GEO layout)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cpb_assets.harmonize.assemble import DenseH5adWriter, WrittenH5ad
from cpb_assets.harmonize.quarantine import Quarantine
from cpb_assets.harmonize.schema import validate_harmonized
from cpb_assets.sources import l1000
from cpb_assets.sources.gctx import read_gct, read_gctx, write_gctx
from tests.conftest import REAL_GCT

FIXTURES = Path(__file__).resolve().parents[1] / "data"
NO_REGISTRY = pd.DataFrame(columns=["source_id", "pubchem_cid", "cid_method"])
SHAPES = {"l1000_phase1": (186, 978), "l1000_phase2": (26 + 328, 978)}


def _stream(folder: Path, dataset: str, block: int):
    """The reader with a given window (``harmonize`` uses l1000.WINDOW)."""
    gctx, inst, matrix, inst_file, gene_info = l1000._read_folder(folder, dataset)
    return l1000.harmonize_gct(gctx, inst, dataset=dataset, registry=NO_REGISTRY, matrix_file=matrix,
                               inst_file=inst_file, gene_info=gene_info, block=block)


def _expected_x(folder: Path, dataset: str, obs: pd.DataFrame, var: pd.DataFrame) -> np.ndarray:
    """The harmonized matrix built the in-memory way: the whole GCTX read, then one value per
    (instance, landmark) looked up by IDs (instance from plate + well, gene from Entrez -> Ensembl)."""
    gctx, inst, matrix, _, gene_info = l1000._read_folder(folder, dataset)
    full = read_gctx(matrix)
    plate, well = l1000._plates_and_wells(inst)
    inst_of = dict(zip(zip(plate, well), inst["inst_id"]))
    genes, _ = l1000._landmark_genes(gctx.row_meta, matrix, Quarantine(dataset), gene_info)
    row_of = dict(zip(genes["ensembl_id"], genes["row"]))
    cols = full.col_meta.index.get_indexer([inst_of[(p, w)] for p, w in zip(obs["plate"], obs["well"])])
    rows = [row_of[g] for g in var.index]
    return full.data.T[np.ix_(cols, rows)].astype(np.float32)


@pytest.mark.parametrize("dataset", ["l1000_phase1", "l1000_phase2"])
@pytest.mark.parametrize("block", [l1000.WINDOW, 7])  # one window; 51 windows of 7 columns (last one short)
def test_streamed_h5ad_equals_the_in_memory_product(tmp_path, dataset, block):
    folder = FIXTURES / dataset
    h = _stream(folder, dataset, block)
    assert h.adata is None and isinstance(h.written, WrittenH5ad) and h.product is h.written
    w = h.written
    assert w.shape == SHAPES[dataset] and h.notes["instances_kept"] == SHAPES[dataset][0]
    assert validate_harmonized(w) == []
    # obs/var in memory: the schema dtypes (nullable strings, bool, float, int), as assemble_harmonized makes
    assert w.obs["plate"].dtype == "string" and w.obs["is_control"].dtype == bool
    assert w.obs["pert_dose_uM"].dtype == float and w.obs["psbulk_cells"].dtype == np.int64
    # the file: X is the matrix of the GCTX at the kept instances × landmarks, row for row
    a = ad.read_h5ad(w.path)
    assert a.X.dtype == np.float32 and a.shape == SHAPES[dataset]
    assert np.array_equal(a.X, _expected_x(folder, dataset, w.obs, w.var))
    # hand-checked value (as in test_l1000.test_real_layout_fixture): PSME1 in well A03, a DMSO control
    i = list(a.obs_names).index("LJP005_A375_24H_X1_B19_A03_DMSO_CVCL_0132")
    j = list(a.var_names).index("ENSG00000092010")
    assert a.X[i, j] == pytest.approx(read_gct(REAL_GCT).data[0, 0], rel=1e-6)
    # the same file AnnData's own writer makes of the same product in memory (obs dtypes included:
    # repeated strings as categoricals, unique ones as nullable strings)
    ref = ad.AnnData(X=a.X.copy(), obs=w.obs.copy(), var=w.var.copy(), uns=dict(w.uns))
    with ad.settings.override(allow_write_nullable_strings=True):
        ref.write_h5ad(tmp_path / "ref.h5ad")
    r = ad.read_h5ad(tmp_path / "ref.h5ad")
    pd.testing.assert_frame_equal(a.obs, r.obs)
    pd.testing.assert_frame_equal(a.var, r.var)
    assert a.uns == r.uns == {"dataset": dataset, "synthetic": False}
    # backed reading and the block iterator agree with the whole read
    b = w.open_backed()
    try:
        assert np.array_equal(b.X[:5], a.X[:5])
    finally:
        b.file.close()
    assert np.array_equal(np.vstack([x for _, x in w.x_blocks(rows=50)]), a.X)


def test_windows_do_not_change_the_product():
    one, many = (_stream(FIXTURES / "l1000_phase2", "l1000_phase2", b) for b in (l1000.WINDOW, 7))
    pd.testing.assert_frame_equal(one.written.obs, many.written.obs)
    pd.testing.assert_frame_equal(one.written.var, many.written.var)
    pd.testing.assert_frame_equal(one.quarantine.to_frame(), many.quarantine.to_frame())
    assert np.array_equal(one.to_memory().X, many.to_memory().X)


def test_nan_and_inf_in_several_windows_quarantine_their_instances(tmp_path):
    """Point 7 with the streamed write: NaN/inf in landmark values of instances read in different
    windows (first, middle, last kept instance) drop those rows, quarantined with the same reason;
    the rows after them move up and keep their values."""
    clean = _stream(FIXTURES / "l1000_phase2", "l1000_phase2", 7)
    clean_x = clean.to_memory().X
    src = tmp_path / "l1000_phase2"
    shutil.copytree(FIXTURES / "l1000_phase2", src)
    matrix = next(src.glob("*Level3*.gctx"))
    g = read_gctx(matrix)
    _, inst, *_ = l1000._read_folder(src, "l1000_phase2")
    plate, well = l1000._plates_and_wells(inst)
    inst_of = dict(zip(zip(plate, well), inst["inst_id"]))
    spoiled_rows = [0, 170, clean.n_obs - 1]
    obs = clean.written.obs
    spoiled = [inst_of[(obs["plate"].iloc[r], obs["well"].iloc[r])] for r in spoiled_rows]
    for inst_id, (gene, value) in zip(spoiled, [("5720", np.nan), ("7416", -np.inf), ("5720", np.inf)]):
        g.data[list(g.row_meta.index).index(gene), list(g.col_meta.index).index(inst_id)] = value
    matrix.unlink()
    write_gctx(g, matrix)
    h = _stream(src, "l1000_phase2", 7)
    q = h.quarantine.to_frame()
    assert sorted(q.loc[q["reason"] == l1000.NON_FINITE, "record_id"]) == sorted(spoiled)
    assert h.n_obs == clean.n_obs - 3 == h.notes["instances_kept"]
    keep = np.setdiff1d(np.arange(clean.n_obs), spoiled_rows)
    pd.testing.assert_frame_equal(h.written.obs, obs.iloc[keep])
    x = h.to_memory().X
    assert np.isfinite(x).all() and np.array_equal(x, clean_x[keep])


def test_writer_drops_rows_in_place_and_reads_back(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(23, 5)).astype(np.float32)
    x[[0, 9, 22], 2] = np.nan
    w = DenseH5adWriter(tmp_path / "x.h5ad", 23, 5)
    order = rng.permutation(23)  # rows arrive in any order, in blocks
    for part in np.array_split(order, 4):
        w.write_rows(part, x[part])
    assert w.nonfinite_rows().tolist() == [0, 9, 22]
    w.drop_rows(w.nonfinite_rows(), block=4)
    keep = np.setdiff1d(np.arange(23), [0, 9, 22])
    obs = pd.DataFrame({"k": pd.array([f"s{i}" for i in keep], dtype="string")}, index=[f"s{i}" for i in keep])
    var = pd.DataFrame({"symbol": list("abcde")}, index=[f"ENSG{i:011d}" for i in range(5)])
    out = w.finish(obs, var, {"dataset": "x"})
    a = ad.read_h5ad(out.path)
    assert np.array_equal(a.X, x[keep]) and a.obs_names.tolist() == obs.index.tolist()


def test_publish_links_the_written_file(tmp_path):
    """The asset's publishing step links the reader's file into the bundle (no second write); the
    published h5ad reads back (backed too), the tables come from the in-memory obs, the blocking
    checks pass."""
    from cpb_assets.harmonize.assets import harmonized_check_results, publish_harmonized
    from cpb_resources.storage import StorageResource

    h = _stream(FIXTURES / "l1000_phase2", "l1000_phase2", 64)
    storage = StorageResource(home=str(tmp_path / "home"))
    q = h.quarantine.to_frame()
    publish_harmonized(storage, "l1000_phase2", h.written, q, h.unmapped_genes)
    published = storage.harmonized_path("l1000_phase2").resolve()
    if os.stat(published).st_dev == os.stat(h.written.path).st_dev:
        assert os.stat(published).st_ino == os.stat(h.written.path).st_ino  # a hard link, not a copy
    b = ad.read_h5ad(storage.harmonized_path("l1000_phase2"), backed="r")
    try:
        assert b.shape == h.shape and list(b.obs_names) == list(h.written.obs_names)
    finally:
        b.file.close()
    tab = pd.read_parquet(storage.table_path("harmonized_obs", dataset="l1000_phase2"))
    assert len(tab) == h.n_obs and tab["plate"].dtype == "string" and tab["cell_type"].dtype == "string"
    results = {r.check_name: r for r in harmonized_check_results(storage, "l1000_phase2", h.written, q,
                                                                  h.unmapped_genes, h.notes)}
    assert results["harmonized_row_counts"].passed and results["harmonized_gene_axis"].passed
    assert not results["harmonized_cids_resolved"].passed  # no compound registry here: a warning
