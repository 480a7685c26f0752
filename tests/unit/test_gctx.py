"""GCTX block-wise subset reading equals slicing the full matrix."""
import numpy as np
import pandas as pd
import pytest

from cpb_assets.sources.gctx import GCT, read_gctx, write_gctx
from tests.conftest import REAL_GCTX


@pytest.mark.parametrize("block", [1, 7, 10_000])
def test_subset_read_equals_full_slice(block):
    full = read_gctx(REAL_GCTX)
    rng = np.random.default_rng(0)
    rows = rng.choice(full.row_meta.index, 100, replace=False)
    cols = rng.choice(full.col_meta.index, 50, replace=False)
    sub = read_gctx(REAL_GCTX, row_ids=rows, col_ids=list(cols) + ["not-a-sample"], block=block)
    r = full.row_meta.index.isin(rows)
    c = full.col_meta.index.isin(cols)
    assert list(sub.row_meta.index) == list(full.row_meta.index[r])  # the file's order is kept
    assert list(sub.col_meta.index) == list(full.col_meta.index[c])
    np.testing.assert_array_equal(sub.data, full.data[np.ix_(r, c)])
    pd.testing.assert_frame_equal(sub.col_meta, full.col_meta[c])


def test_write_read_roundtrip(tmp_path):
    rng = np.random.default_rng(1)
    g = GCT(rng.normal(size=(5, 3)).astype(np.float32),
            pd.DataFrame({"pr_gene_id": [1.0, 2, 3, 4, 5]}, index=pd.Index([f"{i}_at" for i in range(5)], name="id")),
            pd.DataFrame({"pert_id": ["a", "b", "c"]}, index=pd.Index(["s1", "s2", "s3"], name="id")))
    write_gctx(g, tmp_path / "x.gctx")
    back = read_gctx(tmp_path / "x.gctx")
    np.testing.assert_array_equal(back.data, g.data)
    assert back.col_meta["pert_id"].tolist() == ["a", "b", "c"]


def test_scattered_selection_is_read_in_windows(tmp_path):
    """Columns far apart are read window by window (never one slab spanning them); same values."""
    from cpb_assets.sources.gctx import GCT, gctx_ids, read_gctx, write_gctx

    rng = np.random.default_rng(3)
    data = rng.normal(size=(6, 50)).astype(np.float32)
    g = GCT(data, pd.DataFrame(index=pd.Index([str(i) for i in range(6)], name="id")),
            pd.DataFrame(index=pd.Index([f"s{j}" for j in range(50)], name="id")))
    write_gctx(g, tmp_path / "x.gctx")
    rows, cols = gctx_ids(tmp_path / "x.gctx")
    assert list(rows) == [str(i) for i in range(6)] and len(cols) == 50
    want = ["s1", "s2", "s17", "s18", "s49", "s33"]
    got = read_gctx(tmp_path / "x.gctx", row_ids=["4", "0"], col_ids=want, block=7)
    assert list(got.col_meta.index) == ["s1", "s2", "s17", "s18", "s33", "s49"]  # file order
    assert list(got.row_meta.index) == ["0", "4"]
    np.testing.assert_array_equal(got.data, data[np.ix_([0, 4], [1, 2, 17, 18, 33, 49])])
