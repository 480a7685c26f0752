"""The streaming reader of R's serialization format (``cpb_assets.sources.rdata``), with R as the oracle.

R writes small objects with ``save()``/``saveRDS()`` (every compression,
format versions 2 and 3) and, next to them, their values as text; the parser
must return the same values. Damaged files and code inside a file are
refused with the file and the object path named; the Novartis reader built
on the parser returns what the former ``load()``-through-R reader returned
(R's own ``load()`` is the oracle on the fixture).
"""
from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cpb_assets.errors import SourceFormatError
from cpb_assets.sources import novartis, rdata
from cpb_assets.sources.rdata import NA_INTEGER, RDataReader, SparseVector

FIXTURE = Path(__file__).resolve().parents[2] / "data" / "novartis_drugseq"
pytestmark = pytest.mark.skipif(shutil.which("Rscript") is None, reason="R (the oracle) is not installed")

_OBJECTS = r"""
set.seed(7)
m <- matrix(rpois(40 * 9, 0.4), 40, 9, dimnames = list(paste0("G", 1:40, ",grch38_1"), paste0("W", 1:9)))
m[3, 2] <- NA
storage.mode(m) <- "double"
mi <- matrix(c(0L, 3L, NA, 0L, 5L, 0L), 2, 3, dimnames = list(c("a", "b"), NULL))
df <- data.frame(i = c(1L, NA, 3L), s = c("x", NA, "\u00e9t\u00e9"), f = factor(c("lo", "hi", NA), levels = c("lo", "hi")),
                 l = c(TRUE, NA, FALSE), d = c(0.1, NA, -2.5e-7), stringsAsFactors = FALSE)
rownames(df) <- c("r1", "r2", "r3")
compact <- data.frame(n = 1:4, q = seq(0.5, 2, by = 0.5))
lat <- c(iconv("caf\u00e9", "UTF-8", "latin1"), "plain", NA)
nums <- as.character(c(1.5, 2, 1e5, 1e-20, 123456789012, 100, 0.1 + 0.2, -3))
ints <- as.character(1:6)
nested <- list(a = list(b = list(c = 1:3, d = "deep")), e = NULL, f = c(x = 1, y = 2))
Exp <- list(`1` = list(PL1 = list(UMI.counts = m, Annotation = df)))
wrapped <- .Internal(wrap_meta(c(1.5, 2), 0L, 0L))
objs <- c("m", "mi", "df", "compact", "lat", "nums", "ints", "nested", "Exp", "wrapped")
"""


def _r(script: str, cwd: Path) -> None:
    subprocess.run(["Rscript", "--vanilla", "-e", script], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("rdata")
    _r(_OBJECTS + r"""
save(list = objs, file = "gzip.RData")
save(list = objs, file = "none.RData", compress = FALSE)
save(list = objs, file = "bzip2.RData", compress = "bzip2")
save(list = objs, file = "xz.RData", compress = "xz")
save(list = objs, file = "v2.RData", version = 2)
saveRDS(df, "df.rds")
write.csv(m, "m.csv", na = "NA")
writeLines(nums, "nums.txt")
""", d)
    return d


@pytest.mark.parametrize("name", ["gzip", "none", "bzip2", "xz", "v2"])
def test_values_equal_what_r_wrote(saved, name):
    objs = rdata.read_rdata(saved / f"{name}.RData")
    assert list(objs) == ["m", "mi", "df", "compact", "lat", "nums", "ints", "nested", "Exp", "wrapped"]
    # a double matrix with dimnames, against R's own text dump
    m = objs["m"]
    expected = pd.read_csv(saved / "m.csv", index_col=0)
    assert m.type == "double" and list(m.attr("dim").value) == [40, 9]
    rows, cols = (v.value for v in m.attr("dimnames").value)
    assert rows == list(expected.index) and cols == list(expected.columns)
    np.testing.assert_array_equal(m.value.reshape(9, 40).T, expected.to_numpy(dtype=float))
    assert rdata.is_na_real(m.value[1 * 40 + 2])
    # an integer matrix with NA and NULL column names
    mi = objs["mi"]
    assert mi.type == "integer" and list(mi.value) == [0, 3, NA_INTEGER, 0, 5, 0]
    assert mi.attr("dimnames").value[1].type == "NULL" and rdata.r_class(mi)[0] == "matrix"
    # a data.frame: integer, UTF-8 string, factor, logical, double columns with NA; character row names
    df = objs["df"]
    assert rdata.is_data_frame(df) and rdata.r_names(df) == ["i", "s", "f", "l", "d"]
    assert rdata.row_names(df) == ["r1", "r2", "r3"]
    i, s, f, lg, dbl = df.value
    assert list(i.value) == [1, NA_INTEGER, 3] and s.value == ["x", None, "été"]
    assert rdata.as_character(f) == ["lo", "hi", None] and rdata.inherits(f, "factor")
    assert rdata.as_character(lg) == ["TRUE", None, "FALSE"]
    np.testing.assert_array_equal(rdata.as_double(dbl), [0.1, np.nan, -2.5e-7])
    # compact row names c(NA, -n) and an ALTREP 1:n column
    c = objs["compact"]
    assert rdata.row_names(c) == ["1", "2", "3", "4"] and list(c.value[0].value) == [1, 2, 3, 4]
    np.testing.assert_array_equal(c.value[1].value, [0.5, 1, 1.5, 2])
    # latin1-marked strings, deferred (ALTREP) as.character of doubles and integers
    assert objs["lat"].value == ["café", "plain", None]
    assert objs["nums"].value == (saved / "nums.txt").read_text().splitlines()
    assert objs["ints"].value == ["1", "2", "3", "4", "5", "6"]
    # nested lists with names, NULL elements and a named double vector
    nested = objs["nested"]
    assert rdata.r_names(nested) == ["a", "e", "f"]
    (b,) = nested.value[0].value
    assert list(b.value[0].value) == [1, 2, 3] and b.value[1].value == ["deep"]
    assert nested.value[1].type == "NULL" and rdata.r_names(nested.value[2]) == ["x", "y"]
    # an ALTREP wrapper (R 4.x writes one for some results, e.g. of sort())
    assert objs["wrapped"].type == "double" and list(objs["wrapped"].value) == [1.5, 2.0]


def test_rds_and_sparse_read(saved):
    df = rdata.read_rds(saved / "df.rds")
    assert rdata.row_names(df) == ["r1", "r2", "r3"]
    with RDataReader(saved / "gzip.RData") as r:
        for name, node in r.objects():
            if name == "m":
                m = node.read(sparse=True)
    dense = rdata.read_rdata(saved / "gzip.RData", ["m"])["m"].value
    assert isinstance(m.value, SparseVector) and m.value.length == dense.size
    keep = (dense != 0) | np.isnan(dense)
    np.testing.assert_array_equal(m.value.index, np.flatnonzero(keep))
    np.testing.assert_array_equal(m.value.values, dense[keep])


def test_walking_a_list_reads_one_element_at_a_time(saved):
    with RDataReader(saved / "gzip.RData") as r:
        for name, node in r.objects():
            if name != "Exp":
                continue  # skipped, not kept
            for batch in node.elements():
                for plate in batch.elements():
                    parts = [e.read() if k == 1 else None for k, e in enumerate(plate.elements())]
                    assert rdata.r_names(parts[1]) == ["i", "s", "f", "l", "d"]
                    assert plate.attributes()["names"].value == ["UMI.counts", "Annotation"]
                assert batch.attributes()["names"].value == ["PL1"]
            assert node.attributes()["names"].value == ["1"]


def test_truncated_or_foreign_files_name_the_file(saved, tmp_path):
    data = (saved / "gzip.RData").read_bytes()
    cut = tmp_path / "cut.RData"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceFormatError) as err:
        rdata.read_rdata(cut)
    assert err.value.file == str(cut) and "truncated" in err.value.problem
    raw = tmp_path / "raw.RData"
    raw.write_bytes(gzip.decompress(data)[:-300])  # uncompressed and cut inside an object
    with pytest.raises(SourceFormatError) as err:
        rdata.read_rdata(raw)
    assert err.value.file == str(raw) and "truncated" in err.value.problem
    for content in (b"", b"not an R file at all\n"):
        bad = tmp_path / "bad.RData"
        bad.write_bytes(content)
        with pytest.raises(SourceFormatError) as err:
            rdata.read_rdata(bad)
        assert err.value.file == str(bad) and err.value.field == "<RData>"


@pytest.mark.parametrize("code,what", [("function(x) file.create('EVALUATED')", "closure"),
                                       ("new.env()", "environment"),
                                       ("quote(file.create('EVALUATED'))", "language"),
                                       ("compiler::cmpfun(function() file.create('EVALUATED'))", "closure")])
def test_code_inside_is_refused_not_evaluated(tmp_path, code, what):
    _r(f'Exp <- list(`3` = list(VH1 = list(UMI.counts = matrix(1, 1, 1), Annotation = {code}))); '
       f'attr(Exp, "note") <- "x"; save(Exp, file = "code.RData")', tmp_path)
    with pytest.raises(SourceFormatError) as err:
        rdata.read_rdata(tmp_path / "code.RData")
    assert err.value.file == str(tmp_path / "code.RData") and what in err.value.problem
    assert err.value.field == "Exp[[1]][[1]][[2]]"
    with pytest.raises(SourceFormatError) as err:
        list(novartis.iter_plates(tmp_path / "code.RData"))
    assert what in err.value.problem and err.value.field.startswith("Exp[[1]]")
    assert not (tmp_path / "EVALUATED").exists()


def test_code_deep_inside_a_plate_names_its_position(tmp_path):
    """R writes a list's names after its elements: a refusal met on the way names positions (R's [[k]])."""
    _r('Exp <- list(`3` = list(VH1 = list(UMI.counts = matrix(1, 1, 1, dimnames = list("g", "w")), '
       'Annotation = data.frame(x = 1, e = I(list(quote(f()))))))); save(Exp, file = "code.RData")', tmp_path)
    with pytest.raises(SourceFormatError) as err:
        list(novartis.iter_plates(tmp_path / "code.RData"))
    assert "language" in err.value.problem and err.value.field == "Exp[[1]][[1]][[2]][[2]][[1]]"


def test_plate_errors_are_named_by_batch_and_plate(tmp_path):
    """Checks made once the names are known (second pass) name the batch and plate as before."""
    _r('Exp <- list(`3` = list(VH1 = list(UMI.counts = matrix("a", 1, 1), Annotation = data.frame(x = 1)), '
       'VH2 = list(Annotation = data.frame(x = 1)), VH3 = 5, VH4 = list(UMI.counts = matrix(1, 1, 1), '
       'Annotation = list(x = 1)))); save(Exp, file = "e.RData")', tmp_path)
    errors = []
    for plate in ("VH1", "VH2", "VH3", "VH4"):
        _r(f'load("e.RData"); Exp[["3"]] <- Exp[["3"]]["{plate}"]; save(Exp, file = "{plate}.RData")', tmp_path)
        with pytest.raises(SourceFormatError) as err:
            list(novartis.iter_plates(tmp_path / f"{plate}.RData"))
        errors.append((err.value.field, err.value.problem))
    assert errors == [("3/VH1", "plate UMI.counts is not a numeric matrix but matrix"),
                      ("3/VH2", "plate has no UMI.counts"), ("3/VH3", "plate is not a list"),
                      ("3/VH4", "plate Annotation is not a data.frame but list")]
    _r('Exp <- list(1, 2); save(Exp, file = "unnamed.RData"); x <- 1; save(x, file = "noexp.RData")', tmp_path)
    with pytest.raises(SourceFormatError) as err:
        list(novartis.iter_plates(tmp_path / "unnamed.RData"))
    assert err.value.field == "Exp" and "named list" in err.value.problem
    with pytest.raises(SourceFormatError) as err:
        list(novartis.iter_plates(tmp_path / "noexp.RData"))
    assert err.value.field == "Exp" and "found ['x']" in err.value.problem


def _oracle_plates(path: Path):
    """What the former reader returned, taken from R's own load() (through rpy2)."""
    from cpb_resources.limma import r_objects

    ro = r_objects()
    get = ro.r("""function(path) {
      e <- new.env(parent = emptyenv()); load(path, envir = e); x <- e$Exp; out <- list()
      for (b in names(x)) for (p in names(x[[b]])) {
        m <- x[[b]][[p]][["UMI.counts"]]; a <- x[[b]][[p]][["Annotation"]]; nz <- which(m != 0 | is.na(m))
        out[[length(out) + 1]] <- list(b = b, p = p, dim = dim(m), rn = rownames(m), cn = colnames(m), nz = nz,
          x = as.double(m[nz]), an = names(a), arn = rownames(a),
          cols = lapply(a, function(v) if (is.numeric(v)) as.double(v) else as.character(v)))
      }
      out
    }""")
    strs = lambda v: [None if s is ro.NA_Character else str(s) for s in v]  # noqa: E731
    for pl in get(str(path)):
        d = {k: pl.rx2(k) for k in pl.names}
        cols = {n: (np.asarray(c, dtype=float) if type(c).__name__ == "FloatVector" else strs(c))
                for n, c in zip(strs(d["an"]), d["cols"])}
        yield (str(d["b"][0]), str(d["p"][0]), [int(v) for v in d["dim"]], strs(d["rn"]), strs(d["cn"]),
               np.asarray(d["nz"], dtype=np.int64) - 1, np.asarray(d["x"], dtype=float), strs(d["arn"]), cols)


def test_novartis_plates_equal_rs_load_on_the_fixture():
    exp = FIXTURE / "Exp_gzip.RData"
    got = list(novartis.iter_plates(exp))
    want = list(_oracle_plates(exp))
    assert len(got) == len(want) == 6
    for (batch, plate, counts, rows, cols, anno), (b, p, dim, rn, cn, nz, x, arn, acols) in zip(got, want):
        assert (batch, plate) == (b, p) and counts.shape == (dim[1], dim[0])
        assert list(rows) == rn and list(cols) == cn and list(anno.index) == arn
        coo = counts.tocoo()
        flat = coo.col.astype(np.int64) + coo.row.astype(np.int64) * dim[0]
        order = np.argsort(flat)
        np.testing.assert_array_equal(flat[order], nz)
        np.testing.assert_array_equal(coo.data[order], x)
        assert list(anno.columns) == list(acols)
        for name, values in acols.items():
            if isinstance(values, np.ndarray):
                np.testing.assert_array_equal(anno[name].to_numpy(dtype=float), values)
            else:
                assert list(anno[name]) == values


def test_novartis_gene_map_equals_rs_load():
    from cpb_resources.limma import r_objects

    ro = r_objects()
    path = FIXTURE / "drugseq_ensembl_v98_annotation_and_entrez_mapping.RData"
    cols = ro.r("function(p) { e <- new.env(); load(p, envir = e); a <- e$drugseq_ensg_v98; "
                "lapply(a, function(v) if (is.numeric(v)) as.double(v) else as.character(v)) }")(str(path))
    got = novartis.read_gene_map(path)
    assert list(got.columns) == list(cols.names)
    for name, v in zip(cols.names, cols):
        want = [None if s is ro.NA_Character else str(s) for s in v]
        assert [None if s is None else str(s) for s in got[name]] == want


def test_tiny_buffers_and_blocks_read_the_same(saved, monkeypatch):
    """Values that straddle the input buffer and the sparse blocks are read the same."""
    whole = rdata.read_rdata(saved / "gzip.RData")
    monkeypatch.setattr(rdata, "_BLOCK", 5)
    monkeypatch.setattr(rdata, "_SPARSE_BLOCK", 7)
    small = rdata.read_rdata(saved / "gzip.RData")
    assert repr(small) == repr(whole)
    with RDataReader(saved / "none.RData") as r:
        m = next(node for name, node in r.objects() if name == "m").read(sparse=True)
    dense = whole["m"].value
    keep = (dense != 0) | np.isnan(dense)
    np.testing.assert_array_equal(m.value.index, np.flatnonzero(keep))
    np.testing.assert_array_equal(m.value.values, dense[keep])
