"""Peak memory of the source readers on real-layout inputs scaled ×1, ×10 and ×100.

Input: the real-layout fixtures of ``tests/data/`` (BUILT, see their
README.md), scaled up by repeating their records under new IDs (SYNTHETIC
copies, labelled so in the result rows):

* Tahoe-100M — ×k = k plate files, each the fixture plate with its cells
  repeated :data:`TAHOE_CELLS_X` times (one plate is one unit of work);
* sci-Plex 3 — ×k = the fixture's nuclei repeated ``k ×`` :data:`SCIPLEX_CELLS_X`
  times in one triplet file (cell-major, gzip);
* OP3 — ×k = the pseudobulk rows repeated k times (new wells);
* CIGS (TCM) — ×k = the wells of every workbook repeated k times;
* DILImap (train_val) — ×k = the plates repeated k times (new plate names);
* L1000 Phase II — ×k = the instances repeated k times (new ``det_plate`` and
  ``inst_id``) in one Level 3 GCTX, inst_info rewritten, the other info tables copied;
* Novartis DRUG-seq — ×k = the batches repeated k times (new batch, plate,
  biosample IDs and count column names), ``Exp`` written by R's ``save()``
  (through rpy2, ``cpb_assets.demo.novartis.write_native``), robust RC table to match;
* GDPx2 — ×k = the samples repeated k times (new sample IDs and plates);
* VCPI-0001 — ×k = the samples repeated k times (new ``sequenced_id`` and plate),
  the metadata's exact repeats included.

Each input is harmonized in a fresh process (``scripts/measure_peak_rss.py``,
its own ``VmHWM``; its ``ru_maxrss`` would include this process's peak from
building the inputs), so peaks do not mix, and must keep k × the ×1 samples
(sci-Plex: the ×1 pseudobulk samples, its copies add nuclei to the same
wells; ``ok`` False otherwise). The streaming readers (Tahoe: plate by
plate in 50,000-cell chunks; sci-Plex: triplets in 16 MiB blocks into int32
CSR chunks of whole cells; L1000: the GCTX in 1,024-column windows, each
window's landmark values written to the harmonized h5ad before the next is
read) must stay flat: the ×100 peak at most 1.3 × the ×10 peak (×1 is
smaller than one streamed block or chunk, so it shows the process's base,
not the reader's plateau). The others are reported, not held to flatness:
OP3, CIGS and DILImap read one small file whole (OP3 ~50 MB, CIGS
workbooks, DILImap bulk counts); Novartis streams ``Exp`` plate by plate
(``cpb_assets.sources.rdata``, no R) but its ``harmonize`` peak includes the
quarantine records of the dropped wells (93 % of the scaled wells);
GDPx2 (512 X rows) and VCPI (256 count columns) read blocks of samples and
keep the kept samples' counts sparse. ``CPB_BENCH_READERS=gdpx2,vcpi_0001``
runs only those.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import row

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
SCALES = (1, 10, 100)
QUICK_SCALES = (1, 10)
TAHOE_CELLS_X = 20  # fixture cells per plate × 20 = 860 cells per plate
SCIPLEX_CELLS_X = 20  # ×1 = 1,000 nuclei (~300 k triplets)
FLAT = 1.3  # streaming readers: peak(×100) <= FLAT × peak(×10)
STREAMING = {"tahoe100m", "sciplex", "l1000_phase2"}
SAME_SAMPLES = {"sciplex"}  # ×k adds nuclei to the same wells: the pseudobulk samples stay the ×1 ones
SOURCES = {"tahoe100m": "tahoe", "sciplex": "sciplex", "op3": "op3", "cigs_tcm": "cigs",
           "dilimap_train_val": "dilimap", "l1000_phase2": "l1000", "novartis_drugseq": "novartis",
           "gdpx2": "gdpx2", "vcpi_0001": "vcpi"}
ONLY_ENV = "CPB_BENCH_READERS"  # comma-separated datasets of SOURCES to run (default: all)


def _tahoe(folder: Path, k: int) -> str:
    import anndata as ad
    import scipy.sparse as sp

    src = DATA / "tahoe100m"
    for f in ("gene_metadata.parquet", "drug_metadata.parquet"):
        shutil.copy(src / f, folder / f)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = ad.read_h5ad(src / "plate3_filt_Vevo_Tahoe100M_WServicesFrom_ParseGigalab.h5ad")
        X = sp.vstack([a.X] * TAHOE_CELLS_X, format="csr")
        obs = pd.concat([a.obs] * TAHOE_CELLS_X)
        obs.index = [f"{i}-{n}" for n, i in enumerate(obs.index)]
        for p in range(1, k + 1):
            o = obs.copy()
            o["plate"] = pd.Categorical(np.where(o["plate"].isna(), None, f"plate{p}"))
            ad.AnnData(X=X, obs=o, var=a.var).write_h5ad(
                folder / f"plate{p}_SYNTHETIC_filt_Vevo_Tahoe100M_WServicesFrom_ParseGigalab.h5ad")
    return f"{k} plates × {X.shape[0]:,} cells"


def _sciplex(folder: Path, k: int) -> str:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    src = DATA / "sciplex"
    name = {p.name.split("_", 2)[-1]: p for p in src.iterdir() if p.suffix == ".gz"}
    rep = k * SCIPLEX_CELLS_X
    t = pd.read_csv(src / "GSM4150378_sciPlex3_A549_MCF7_K562_screen_UMI.count.matrix.gz", sep="\t",
                    header=None, names=["g", "c", "v"])
    n_cells = int(pd.read_csv(src / "GSM4150378_sciPlex3_A549_MCF7_K562_screen_cell.annotations.txt.gz",
                              sep="\t", header=None).shape[0])
    prefix = "GSM4150378_SYNTHETIC_sciPlex3"
    with gzip.open(folder / f"{prefix}_A549_MCF7_K562_screen_UMI.count.matrix.gz", "wb", compresslevel=1) as fh:
        for r in range(rep):  # cell-major: copy r holds cells r*n+1 .. (r+1)*n
            part = pa.table({"g": t["g"].to_numpy(), "c": t["c"].to_numpy() + r * n_cells, "v": t["v"].to_numpy()})
            buf = io.BytesIO()
            pacsv.write_csv(part, buf, pacsv.WriteOptions(include_header=False, delimiter="\t"))
            fh.write(buf.getvalue())
    cells = pd.read_csv(src / "GSM4150378_sciPlex3_A549_MCF7_K562_screen_cell.annotations.txt.gz", sep="\t",
                        header=None, names=["cell", "sample"])
    pdata = pd.read_csv(src / "GSM4150378_sciPlex3_pData.txt.gz", sep=" ", na_values=["NA"],
                        keep_default_na=False)
    cells = pd.concat([cells.assign(cell=cells["cell"] + f"_r{r}") for r in range(rep)])
    pdata = pd.concat([pdata.assign(cell=pdata["cell"] + f"_r{r}") for r in range(rep)])
    with gzip.open(folder / f"{prefix}_A549_MCF7_K562_screen_cell.annotations.txt.gz", "wt") as fh:
        cells.to_csv(fh, sep="\t", header=False, index=False)
    with gzip.open(folder / f"{prefix}_pData.txt.gz", "wt") as fh:
        pdata.to_csv(fh, sep=" ", index=False, na_rep="NA", quoting=2)
    for key in ("A549_MCF7_K562_screen_gene.annotations.txt.gz", "A549_MCF7_K562_hashTable_metadata.txt.gz"):
        shutil.copy(name[key], folder / f"{prefix}_{key}")
    return f"{len(cells):,} nuclei, {len(t) * rep:,} triplets"


def _op3(folder: Path, k: int) -> str:
    import anndata as ad

    a = ad.read_h5ad(DATA / "op3" / "pseudobulk_filtered_with_uns.h5ad")
    parts = []
    for r in range(k):
        b = a.copy()
        b.obs["well"] = (b.obs["well"].astype(str) + f"_{r}").astype("category")
        b.obs_names = [f"{n}_{r}" for n in b.obs_names]
        parts.append(b)
    big = ad.concat(parts, merge="first")
    big.write_h5ad(folder / "pseudobulk_SYNTHETIC_filtered_with_uns.h5ad")
    return f"{big.n_obs:,} pseudobulk rows"


def _cigs(folder: Path, k: int) -> str:
    import openpyxl

    src = DATA / "cigs_tcm"
    shutil.copy(src / "41592_2025_2781_MOESM3_ESM.xlsx", folder / "SYNTHETIC_41592_2025_2781_MOESM3_ESM.xlsx")
    n = 0
    offset = 0
    for path in sorted(src.glob("TCM_*_Counts.xlsx")):
        meta = path.with_name(path.name.replace("Counts", "MetaData"))
        ids_map = {}
        for p, kind in ((path, "counts"), (meta, "meta")):
            wb = openpyxl.load_workbook(p, read_only=True)
            rows = list(wb.worksheets[0].iter_rows(values_only=True))
            wb.close()
            out = openpyxl.Workbook(write_only=True)
            ws = out.create_sheet("Sheet1")
            ws.append(list(rows[0]))
            ws.append(list(rows[1]))
            for r in range(k):
                for row_ in rows[2:]:
                    key = (row_[0], r)
                    ids_map.setdefault(key, offset + len(ids_map) + 1)
                    ws.append([ids_map[key]] + list(row_[1:]))
            out.save(folder / f"SYNTHETIC_{p.name}")
            if kind == "counts":
                n += (len(rows) - 2) * k
        offset += len(ids_map)
    return f"{n:,} wells"


def _dilimap(folder: Path, k: int) -> str:
    import anndata as ad

    src = DATA / "dilimap_train_val"
    shutil.copy(src / "compound_DILI_labels.csv", folder / "SYNTHETIC_compound_DILI_labels.csv")
    n = 0
    for f in ("training_data_counts.h5ad", "validation_data_counts.h5ad"):
        a = ad.read_h5ad(src / f)
        parts = []
        for r in range(k):
            b = a.copy()
            b.obs["PLATE_NAME"] = b.obs["PLATE_NAME"].astype(str) + f"_{r}"
            b.obs_names = [f"{x}_{r}" for x in b.obs_names]
            parts.append(b)
        big = ad.concat(parts, merge="first")
        big.write_h5ad(folder / f"SYNTHETIC_{f}")
        n += big.n_obs
    return f"{n:,} samples"


def _l1000(folder: Path, k: int) -> str:
    from cpb_assets.sources.gctx import GCT, read_gctx, write_gctx

    src = DATA / "l1000_phase2"
    for f in src.glob("*_info_*.txt.gz"):  # gene, pert and cell info unchanged
        if "inst_info" not in f.name:
            shutil.copy(f, folder / f.name.replace("GSE70138_", "GSE70138_SYNTHETIC_"))
    g = read_gctx(next(src.glob("*Level3*.gctx")))
    inst_file = next(src.glob("*inst_info*"))
    inst = pd.read_csv(inst_file, sep="\t", dtype=str, keep_default_na=False)
    new = lambda ids, r: [i.replace(":", f"_R{r}:", 1) for i in ids]  # noqa: E731  plate<_Rr>:well
    inst = pd.concat([inst.assign(inst_id=new(inst["inst_id"], r), det_plate=inst["det_plate"] + f"_R{r}")
                      for r in range(k)])
    (folder / inst_file.name.replace("GSE70138_", "GSE70138_SYNTHETIC_")).write_bytes(
        gzip.compress(inst.to_csv(sep="\t", index=False).encode("utf-8"), mtime=0))
    cols = pd.Index([c for r in range(k) for c in new(g.col_meta.index, r)], name="id")
    write_gctx(GCT(np.tile(g.data, (1, k)), g.row_meta, pd.DataFrame(index=cols)),
               folder / f"GSE70138_SYNTHETIC_Broad_LINCS_Level3_INF_mlr12k_n{len(cols)}x{len(g.row_meta)}.gctx")
    return f"{len(cols):,} instances × {len(g.row_meta)} genes"


def _novartis(folder: Path, k: int) -> str:
    from cpb_assets.demo.novartis import write_native
    from cpb_assets.sources.novartis import iter_plates, read_gene_map

    src = DATA / "novartis_drugseq"
    shutil.copy(src / "MoABox_compounds_metadata.txt", folder / "MoABox_compounds_metadata_SYNTHETIC.txt")
    robust = pd.read_csv(src / "robust_RC_ReferenceControl_DMSO_wells.txt", sep="\t", dtype=str)
    fixture = list(iter_plates(src / "Exp_gzip.RData"))  # (batch, plate, counts wells × genes, rows, cols, anno)
    nb = len({b for b, *_ in fixture})
    plates, robusts = {}, []
    for r in range(k):  # batch b -> b + r·nb; plate, biosample IDs and count column names get "R<r>"
        for batch, plate, counts, genes, cols, anno in fixture:
            b, p = int(batch) + r * nb, f"{plate}R{r}"
            a = anno.assign(batch_id=b, plate_barcode=p, biosample_id=anno["biosample_id"] + r * 10**6,
                            external_biosample_id=anno["external_biosample_id"] + f"R{r}")
            a.index = [c.replace(plate, p, 1) for c in a.index]
            plates[(str(b), p)] = (counts.T.toarray(), [c.replace(plate, p, 1) for c in cols], a)
        robusts.append(robust.assign(batch_id=(robust["batch_id"].astype(int) + r * nb).astype(str),
                                     plate_barcode=robust["plate_barcode"] + f"R{r}",
                                     external_biosample_id=robust["external_biosample_id"] + f"R{r}"))
    write_native(folder, plates, genes, read_gene_map(src / "drugseq_ensembl_v98_annotation_and_entrez_mapping.RData"),
                 pd.concat(robusts), None, tag="SYNTHETIC", note="SYNTHETIC scaled copy of the real-layout fixture")
    return f"{len(plates)} plates × {fixture[0][2].shape[0]} wells"


def _gdpx2(folder: Path, k: int) -> str:
    import anndata as ad

    from cpb_assets.demo.gdpx2 import write_native

    src = DATA / "gdpx2"
    x = ad.read_h5ad(src / "X.h5ad")
    obs = pd.read_parquet(src / "obs.parquet").loc[x.obs_names]
    obs = pd.concat([obs.assign(container_id=obs["container_id"] + f" R{r}").set_axis(
        (obs.index + f"-R{r}").rename(obs.index.name)) for r in range(k)])
    write_native(folder, obs, np.vstack([x.X] * k), pd.read_parquet(src / "var.parquet"),
                 pd.read_csv(src / "compounds-GDPx2-2026-02-09.csv"), tag="SYNTHETIC", note=x.uns["note"])
    return f"{len(obs):,} samples"


def _vcpi(folder: Path, k: int) -> str:
    import pyarrow.parquet as pq

    from cpb_assets.demo.vcpi import write_parquet

    src = DATA / "vcpi_0001"
    meta, data, chem = (pd.read_parquet(src / f"vcpi-0001_{key}.parquet") for key in ("metadata", "data", "chemistry"))
    note = pq.read_schema(src / "vcpi-0001_metadata.parquet").metadata[b"note"].decode()
    meta = pd.concat([meta.assign(sequenced_id=meta["sequenced_id"] + f"-R{r}",
                                  container_id=meta["container_id"] + f" R{r}") for r in range(k)], ignore_index=True)
    samples = data.drop(columns="gene_id")
    data = pd.concat([data[["gene_id"]]] + [samples.add_suffix(f"-R{r}") for r in range(k)], axis=1)
    for key, df in (("metadata", meta), ("data", data), ("chemistry", chem)):
        write_parquet(folder / f"vcpi-0001_{key}_SYNTHETIC.parquet", df, note)
    return f"{data.shape[1] - 1:,} samples"


BUILD = {"tahoe100m": _tahoe, "sciplex": _sciplex, "op3": _op3, "cigs_tcm": _cigs, "dilimap_train_val": _dilimap,
         "l1000_phase2": _l1000, "novartis_drugseq": _novartis, "gdpx2": _gdpx2, "vcpi_0001": _vcpi}


def peak_rss(source: str, folder: Path, dataset: str) -> tuple[float, int, float]:
    """(peak RSS in MiB, harmonized samples, seconds) of harmonizing `folder` in a fresh process."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "measure_peak_rss.py"), source, str(folder),
                          dataset], capture_output=True, text=True, env=env, timeout=3600, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return res["peak_kib"] / 1024, int(res["n_obs"]), time.perf_counter() - t0


def run(quick: bool = False, reps: int = 3) -> list[dict]:
    """One row per (reader, scale); `reps` is not used (one fresh process per measurement)."""
    rows = []
    scales = QUICK_SCALES if quick else SCALES
    with tempfile.TemporaryDirectory(prefix="cpb-bench-mem-") as tmp:
        only = [d for d in os.environ.get(ONLY_ENV, "").split(",") if d]
        if set(only) - set(SOURCES):
            raise ValueError(f"{ONLY_ENV}: unknown {sorted(set(only) - set(SOURCES))}; known: {', '.join(SOURCES)}")
        for ds, source in SOURCES.items():
            if only and ds not in only:
                continue
            peaks, n1 = {}, None
            for k in scales:
                folder = Path(tmp) / f"{ds}-x{k}"
                folder.mkdir()
                size = BUILD[ds](folder, k)
                mib, n_obs, secs = peak_rss(source, folder, ds)
                peaks[k] = mib
                shutil.rmtree(folder)
                n1 = n_obs if k == 1 else n1
                want = None if n1 is None else n1 if ds in SAME_SAMPLES else k * n1
                ok = None if want is None else n_obs == want  # every copy harmonized, none dropped as a duplicate
                check = f"peak RSS {mib:,.0f} MiB; {n_obs:,} samples" + ("" if ok is None else
                                                                      f" ({'=' if ok else '≠'} {want:,} expected)")
                if ds in STREAMING and k == 100 and 10 in peaks:
                    flat = mib <= FLAT * peaks[10]
                    ok = ok is not False and flat
                    check += f"; ×100/×10 = {mib / peaks[10]:.2f} ({'flat' if flat else 'GROWS'}, limit {FLAT})"
                rows.append(row("reader_memory", f"{ds} ×{k}", size,
                                project=f"cpb_assets.sources.{source}.harmonize", project_s=secs,
                                check=check, data="synthetic copies of a real-layout fixture", reps=1,
                                peak_rss_mib=round(mib, 1), scale=k, ok=ok))
    return rows


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(r["case"], r["size"], r["check"], f"{r['project_s']:.1f} s")
