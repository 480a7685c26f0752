"""No silent wrong data (issue 8, point 7) for Tahoe-100M and sci-Plex 3, on copies of the real-layout fixtures."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest

from cpb_assets.errors import SourceFormatError
from cpb_assets.sources import sciplex, tahoe

DATA = Path(__file__).resolve().parents[2] / "data"
REG = pd.DataFrame(columns=["source_id", "pubchem_cid", "cid_method"])
PLATE = "plate3_filt_Vevo_Tahoe100M_WServicesFrom_ParseGigalab.h5ad"
TRIPLETS = "GSM4150378_sciPlex3_A549_MCF7_K562_screen_UMI.count.matrix.gz"
PDATA = "GSM4150378_sciPlex3_pData.txt.gz"


@pytest.fixture()
def tahoe_dir(tmp_path):
    shutil.copytree(DATA / "tahoe100m", tmp_path / "t")
    return tmp_path / "t"


@pytest.fixture()
def sciplex_dir(tmp_path):
    shutil.copytree(DATA / "sciplex", tmp_path / "s")
    return tmp_path / "s"


def _rejected(fn, folder: Path, file_part: str, field: str) -> SourceFormatError:
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(SourceFormatError) as e:
        fn()
    assert file_part in e.value.file and e.value.field == field, (e.value.file, e.value.field)
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written
    return e.value


# ------------------------------------------------------------------ Tahoe-100M

def test_tahoe_fixture_gene_axis_sums_duplicate_symbols_and_lists_unmapped(tahoe_dir):
    var = tahoe.read_plate_var(tahoe_dir / PLATE)
    col_map, genes, dropped, merged = tahoe.gene_axis(var["name"], tahoe.read_gene_table(tahoe_dir), PLATE)
    assert len(var) == 306 and len(genes) == 303
    assert dropped.set_index("input")["reason"].to_dict() == {
        "AL627309.1": "symbol without an Ensembl ID in gene_metadata",
        "AC114498.1": "symbol without an Ensembl ID in gene_metadata"}
    assert col_map[0] == col_map[303] == 0 and merged["input"].tolist() == [var["name"][0]]
    h = tahoe.harmonize(tahoe_dir, "tahoe100m", REG)
    with h5py.File(tahoe_dir / PLATE) as f:
        X = ad.io.read_elem(f["X"]).toarray()
    # the first 40 cells pass QC (the 3 planted faults are the last rows): gene 0 = var columns 0 + 303
    assert h.adata.obs["psbulk_cells"].sum() == 40
    assert h.adata.X[:, 0].sum() == X[:40][:, [0, 303]].sum()
    assert h.unmapped_genes["input"].tolist() == ["AL627309.1", "AC114498.1"]


def _edit_plate(path: Path, change) -> None:
    with h5py.File(path, "r+") as f:
        change(f)


def test_tahoe_x_wider_than_var_is_rejected(tahoe_dir):
    _edit_plate(tahoe_dir / PLATE, lambda f: f["X"].attrs.__setitem__("shape", np.array([43, 307])))
    _rejected(lambda: tahoe.harmonize(tahoe_dir, "tahoe100m", REG), tahoe_dir, PLATE, "X")


def test_tahoe_obs_shorter_than_x_is_rejected(tahoe_dir):
    a = ad.read_h5ad(tahoe_dir / PLATE)
    with h5py.File(tahoe_dir / PLATE, "r+") as f:
        indptr = f["X"]["indptr"][:]
        del f["X"]["indptr"]
        f["X"].create_dataset("indptr", data=np.concatenate([indptr, indptr[-1:]]))  # one more (empty) cell
        f["X"].attrs["shape"] = np.array([a.n_obs + 1, a.n_vars])
    e = _rejected(lambda: tahoe.harmonize(tahoe_dir, "tahoe100m", REG), tahoe_dir, PLATE, "obs/plate")
    assert "43 obs rows but X has 44 cells" in e.problem


@pytest.mark.parametrize("how", ["empty", "truncated", "not_hdf5"])
def test_tahoe_empty_or_truncated_h5ad_is_a_source_format_error(tahoe_dir, how):
    path = tahoe_dir / PLATE
    raw = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": raw[: len(raw) // 2], "not_hdf5": b"plate,sample\n1,2\n"}[how])
    _rejected(lambda: tahoe.harmonize(tahoe_dir, "tahoe100m", REG), tahoe_dir, PLATE, "<h5ad>")


@pytest.mark.parametrize("text", [None, "nan", "None", ""])
def test_tahoe_missing_plate_never_becomes_a_text_plate(tmp_path, text):
    a = ad.read_h5ad(DATA / "tahoe100m" / PLATE)
    plate = a.obs["plate"].astype(object)
    plate.iloc[:10] = text  # the 10 cells of well smp_1001 (both lines)
    a.obs["plate"] = pd.Categorical(plate)
    (tmp_path / "t").mkdir()
    for f in ("gene_metadata.parquet", "drug_metadata.parquet"):
        shutil.copy(DATA / "tahoe100m" / f, tmp_path / "t" / f)
    a.write_h5ad(tmp_path / "t" / PLATE)
    h = tahoe.harmonize(tmp_path / "t", "tahoe100m", REG)
    assert set(h.adata.obs["plate"]) == {"plate3"} and h.adata.n_obs == 6  # the DMSO well is gone
    q = h.quarantine.to_frame()
    assert q.loc[q["reason"] == "missing grouping field", "n"].sum() == 10 + 2


def test_tahoe_drug_listed_twice_with_different_cids_is_rejected(tahoe_dir):
    dm = pd.read_parquet(tahoe_dir / "drug_metadata.parquet")
    clash = dm.iloc[[0]].assign(pubchem_cid=999.0)
    pd.concat([dm, dm.iloc[[0]], clash]).to_parquet(tahoe_dir / "drug_metadata.parquet")  # exact repeat is fine
    e = _rejected(lambda: tahoe.compound_records(tahoe_dir, "tahoe100m"), tahoe_dir, "drug_metadata", "drug")
    assert "fixture-drug-1" in e.problem


def test_tahoe_compound_records_carry_the_shipped_cid(tahoe_dir):
    rec = tahoe.compound_records(tahoe_dir, "tahoe100m")
    assert rec[["source_id", "pubchem_cid"]].values.tolist() == [["fixture-drug-1", "650001"],
                                                                 ["fixture-drug-2", "650002"]]


@pytest.mark.parametrize("text", ["[('Erdafitinib ', 0.05, 'uM')]", "[(\"DMSO_TF\", 0.0, \"uM\")]"])
def test_condition_text_is_parsed_not_evaluated(text):
    name, conc, unit = tahoe.parse_drugname_drugconc(text)
    assert name in {"Erdafitinib", "DMSO_TF"} and unit == "uM" and conc in {0.05, 0.0}


@pytest.mark.parametrize("text", ["__import__('os').getcwd()", "[('a', 1, 'uM'), ('b', 2, 'uM')]",
                                  "[('a', 'x', 'uM')]"])
def test_condition_text_that_is_not_one_tuple_is_refused(text):
    with pytest.raises(ValueError):
        tahoe.parse_drugname_drugconc(text)


# ------------------------------------------------------------------ sci-Plex 3

def _triplets(folder: Path) -> list[str]:
    return gzip.decompress((folder / TRIPLETS).read_bytes()).decode().splitlines(keepends=True)


def _put(folder: Path, name: str, lines: list[str]) -> None:
    (folder / name).write_bytes(gzip.compress("".join(lines).encode()))


def test_sciplex_streamed_blocks_give_the_whole_file_result(sciplex_dir):
    whole = sciplex.harmonize(sciplex_dir, "sciplex", REG)
    tiny = sciplex.harmonize(sciplex_dir, "sciplex", REG, block_bytes=4096)  # ~400 lines per block
    assert (whole.adata.X != tiny.adata.X).nnz == 0
    pd.testing.assert_frame_equal(whole.adata.obs, tiny.adata.obs)
    X = sciplex.read_umi_triplets(sciplex_dir / TRIPLETS, 306, 50)
    assert X.dtype == np.int32 and X.format == "csr" and X.sum() == sum(int(r.split()[2]) for r in
                                                                        _triplets(sciplex_dir))


def test_sciplex_duplicate_triplet_names_file_and_pair(sciplex_dir):
    lines = _triplets(sciplex_dir)
    _put(sciplex_dir, TRIPLETS, lines[:10] + [lines[5]] + lines[10:])
    e = _rejected(lambda: sciplex.harmonize(sciplex_dir, "sciplex", REG), sciplex_dir, TRIPLETS,
                  "gene_index/cell_index")
    g, c, _ = lines[5].split()
    assert f"(gene {g}, cell {c}) listed twice" in e.problem


def test_sciplex_triplets_out_of_cell_order_are_rejected_with_the_fix(sciplex_dir):
    lines = _triplets(sciplex_dir)
    _put(sciplex_dir, TRIPLETS, lines[400:] + lines[:400])
    e = _rejected(lambda: sciplex.harmonize(sciplex_dir, "sciplex", REG), sciplex_dir, TRIPLETS, "cell_index")
    assert "sort -k2,2n" in e.problem


@pytest.mark.parametrize("how", ["empty", "truncated"])
def test_sciplex_empty_or_truncated_gz_is_a_source_format_error(sciplex_dir, how):
    raw = (sciplex_dir / TRIPLETS).read_bytes()
    (sciplex_dir / TRIPLETS).write_bytes(b"" if how == "empty" else raw[: len(raw) // 2])
    _rejected(lambda: sciplex.harmonize(sciplex_dir, "sciplex", REG), sciplex_dir, TRIPLETS,
              "<file>" if how == "empty" else "count")


def test_sciplex_truncated_annotation_gz_is_a_source_format_error(sciplex_dir):
    raw = (sciplex_dir / PDATA).read_bytes()
    (sciplex_dir / PDATA).write_bytes(raw[: len(raw) - 12])
    _rejected(lambda: sciplex.harmonize(sciplex_dir, "sciplex", REG), sciplex_dir, PDATA, "<gzip>")


def test_sciplex_bad_times_are_quarantined_with_their_reason(sciplex_dir):
    text = gzip.decompress((sciplex_dir / PDATA).read_bytes()).decode().splitlines(keepends=True)
    header = text[0].split(" ")
    k = header.index('"time_point"')
    rows = [r.split(" ") for r in text[1:]]
    # A549 24 h plate: nuclei 1-3 (vehicle well) get NaN, -24 and Inf
    for r, value in zip(rows[:3], ["NA", "-24", "Inf"]):
        r[k] = value
    _put(sciplex_dir, PDATA, [text[0]] + [" ".join(r) for r in rows])
    h = sciplex.harmonize(sciplex_dir, "sciplex", REG)
    q = h.quarantine.to_frame()
    bad = q[q["reason"] == "time point negative or infinite"].set_index("record_id")["n"].to_dict()
    assert bad == {"time_point=-24": 1, "time_point=inf": 1}
    assert q.loc[q["reason"] == "missing grouping field", "n"].sum() == 2 + 1  # 2 hash failures + the NaN time
    assert h.adata.obs["pert_time_h"].map(np.isfinite).all() and (h.adata.obs["pert_time_h"] > 0).all()
    assert h.adata.n_obs == 15  # the A549 24 h vehicle well lost all 3 nuclei
