"""Assembling a DE partition out of core: staged unit files → the partition's Parquet folder.

Each fitted unit (stratum or batch) left one staged Parquet file.
:func:`assemble_de` writes one final file per stratum/batch into the
partition folder (the caller's temporary folder, swapped in atomically),
with ``adj_P_across`` = BH over every contrast × gene of the whole stratum,
without ever holding more than one unit's rows plus a bounded slice of one
stratum's P values.

BH over files (:func:`bh_across_files`), exact, in bounded memory: R's
``p.adjust(p, "BH")`` is ``q = pmin(1, cummin((n / i) * p[o]))`` along the
P values in decreasing order ``o`` with ``i = n … 1``. The P values are
split into groups of contiguous value ranges (a 20-bit radix of the float's
bit pattern, which orders non-negative doubles) of at most ``chunk`` values;
groups are processed from the largest values down, carrying the running
minimum, and each group's results are written to small per-file patch files.
Ties share one value in R and here (the cumulative minimum reaches them
through the largest rank of the tie).

Checks and partition metadata are DuckDB queries over the files
(:func:`de_value_problems`, :func:`partition_summary`).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cpb_assets.effects.de import DE_COLUMNS, FILE_SCHEMA, STRATA_COLUMNS, staged_paths
from cpb_assets.effects.strata import DEUnit

RADIX_SHIFT = 44  # 64 - 44 = 20 bits: sign, 11 exponent bits, 8 mantissa bits
BH_CHUNK = 2_000_000  # P values held at once while adjusting across a stratum
ROW_GROUP_ROWS = 1 << 17  # ~131k rows: a few MB per column chunk, fine for DuckDB/polars scans
DUCKDB_MEMORY = "1GB"


def _radix(p: np.ndarray) -> np.ndarray:
    # +0.0 folds -0.0 into 0.0; for non-negative doubles the bit pattern is monotone in the value
    return ((p + 0.0).view(np.uint64) >> np.uint64(RADIX_SHIFT)).astype(np.int64)


def _read_p(path: Path) -> np.ndarray:
    return pq.read_table(path, columns=["P_Value"]).column(0).to_numpy(zero_copy_only=False).astype(float)


def bh_across_files(paths: list[Path], work: Path, chunk: int = BH_CHUNK) -> list[Path | None]:
    """BH-adjust the ``P_Value`` column of several Parquet files as one family, out of core.

    Parameters
    ----------
    paths
        Files holding ``P_Value`` (the units of one stratum).
    work
        Scratch folder for the patch files.
    chunk
        Most P values held in memory at once (plus the largest run of values
        sharing one radix bin).

    Returns
    -------
    Per input file, a ``.npy`` file with its adjusted P values in row order
    (NaN where ``P_Value`` is NaN), or None for a file without rows.
    """
    work.mkdir(parents=True, exist_ok=True)
    n_bins = 1 << (64 - RADIX_SHIFT)
    counts = np.zeros(n_bins, dtype=np.int64)
    n_rows = []
    for path in paths:  # pass 1: how many P values fall in each radix bin
        p = _read_p(path)
        n_rows.append(len(p))
        p = p[~np.isnan(p)]
        if np.any(p < 0) or np.any(p > 1):
            raise ValueError(f"{path}: P values outside [0, 1]")
        counts += np.bincount(_radix(p), minlength=n_bins)
    n = int(counts.sum())
    # groups of contiguous bins holding about `chunk` values each (a bin is never split)
    filled = np.flatnonzero(counts)
    group_of_bin = (np.cumsum(counts[filled]) - 1) // max(chunk, 1)
    starts = filled[np.r_[0, np.flatnonzero(np.diff(group_of_bin)) + 1]] if filled.size else np.array([], int)
    ends = np.r_[starts[1:] - 1, n_bins - 1] if starts.size else np.array([], int)
    above, carry = 0, np.inf
    for g in range(len(starts) - 1, -1, -1):  # largest P values first
        lo, hi = starts[g], ends[g]
        vals, fids, rids = [], [], []
        for i, path in enumerate(paths):
            p = _read_p(path)
            ok = ~np.isnan(p)
            k = np.full(len(p), -1, dtype=np.int64)
            k[ok] = _radix(p[ok])
            r = np.flatnonzero((k >= lo) & (k <= hi))
            vals.append(p[r])
            rids.append(r)
            fids.append(np.full(len(r), i, dtype=np.int32))
        v, f, r = np.concatenate(vals), np.concatenate(fids), np.concatenate(rids)
        o = np.argsort(-v, kind="stable")
        m = len(v)
        rank = n - above - np.arange(m)  # R's i = n … 1 along decreasing P
        q = np.minimum.accumulate(np.concatenate([[carry], (n / rank) * v[o]]))[1:]
        carry = q[-1] if m else carry
        q = np.minimum(q, 1.0)
        f, r = f[o], r[o]
        for i in np.unique(f):
            sel = f == i
            np.save(work / f"g{g:05d}.f{i:05d}.npy", np.rec.fromarrays([r[sel], q[sel]], names="row,q"))
        above += m
    out: list[Path | None] = []
    for i, rows in enumerate(n_rows):
        if rows == 0:
            out.append(None)
            continue
        q = np.full(rows, np.nan)
        for patch in sorted(work.glob(f"g*.f{i:05d}.npy")):
            rec = np.load(patch)
            q[rec["row"]] = rec["q"]
            patch.unlink()
        target = work / f"q{i:05d}.npy"
        np.save(target, q)
        out.append(target)
    return out


def assemble_de(staging: str | Path, units: list[DEUnit], skipped: list[dict], out_dir: str | Path, dataset: str,
                mode: str, *, chunk: int = BH_CHUNK, row_group_rows: int = ROW_GROUP_ROWS) -> pd.DataFrame:
    """Write the partition's files from the staged units; return the strata table.

    Parameters
    ----------
    staging
        Folder of :func:`~cpb_assets.effects.de.fit_units` outputs.
    units, skipped
        The plan (:func:`~cpb_assets.effects.strata.plan_units`).
    out_dir
        The partition folder to fill (normally the temporary folder of
        :func:`~cpb_resources.storage.atomic_bundle`); one file per
        stratum/batch, ``s<stratum no.>-b<batch>.parquet``, rows sorted by
        contrast_id then gene, row groups of `row_group_rows`; an empty
        file with the schema when nothing was fitted.
    dataset, mode
        Partition keys (checked against the staged strata rows).
    chunk
        See :func:`bh_across_files`.

    Returns
    -------
    strata
        :data:`STRATA_COLUMNS`, one row per unit and per stratum skipped while
        planning, sorted by stratum and batch.
    """
    staging, out_dir = Path(staging), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = list(skipped)
    by_stratum: dict[str, list[tuple[DEUnit, Path]]] = {}
    for unit in units:
        de_path, row_path = staged_paths(staging, unit)
        if not de_path.exists() or not row_path.exists():
            raise FileNotFoundError(f"DE unit {dataset}/{mode} stratum '{unit.stratum}' batch {unit.batch}: "
                                    f"no staged output in {staging}")
        row = pd.read_parquet(row_path).iloc[0].to_dict()
        if (row["dataset"], row["mode"]) != (dataset, mode):
            raise ValueError(f"staged unit {de_path.name} belongs to {row['dataset']}/{row['mode']}, "
                             f"not {dataset}/{mode}")
        rows.append(row)
        by_stratum.setdefault(unit.stratum, []).append((unit, de_path))
    written = 0
    with tempfile.TemporaryDirectory(prefix="bh-", dir=staging) as scratch:
        for s_no, stratum in enumerate(sorted(by_stratum)):
            parts = sorted(by_stratum[stratum], key=lambda t: t[0].batch)
            qs = bh_across_files([p for _, p in parts], Path(scratch) / f"s{s_no:04d}", chunk=chunk)
            for (unit, path), qfile in zip(parts, qs):
                if qfile is None:
                    continue
                table = pq.read_table(path, schema=FILE_SCHEMA)
                q = np.load(qfile)
                table = table.set_column(FILE_SCHEMA.get_field_index("adj_P_across"), "adj_P_across", pa.array(q))
                pq.write_table(table, out_dir / f"s{s_no:04d}-b{unit.batch:03d}.parquet",
                               row_group_size=row_group_rows, compression="zstd")
                written += 1
                del table, q
            shutil.rmtree(Path(scratch) / f"s{s_no:04d}", ignore_errors=True)
    if not written:  # keep the schema visible to the view
        pq.write_table(FILE_SCHEMA.empty_table(), out_dir / "empty.parquet")
    strata = pd.DataFrame(rows, columns=STRATA_COLUMNS)
    return strata.sort_values(["stratum", "batch"], kind="stable", ignore_index=True)


def read_de_folder(folder: str | Path, dataset: str, mode: str) -> pd.DataFrame:
    """A partition folder as one pandas table (:data:`DE_COLUMNS`); for small partitions (tests)."""
    files = sorted(Path(folder).glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(f, schema=FILE_SCHEMA) for f in files]) if files else \
        FILE_SCHEMA.empty_table()
    df = table.to_pandas()
    df.insert(0, "mode", mode)
    df.insert(0, "dataset", dataset)
    return df[DE_COLUMNS]


def _connect(threads: int = 1) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")
    con.execute(f"SET threads = {int(threads)}")
    con.execute(f"SET temp_directory = '{tempfile.gettempdir()}'")
    return con


def _glob(folder: Path) -> str:
    return str(Path(folder) / "*.parquet").replace("'", "''")


def de_value_problems(folder: str | Path) -> tuple[int, list[str]]:
    """Value checks of a partition folder as one DuckDB scan: (rows, problems found).

    P values in [0, 1]; adj_P_within ≥ P_Value and adj_P_across ≥ P_Value
    (BH never lowers a P value), both ≤ 1; CI_L ≤ logFC ≤ CI_R; finite
    logFC / t / AveExpr / adj_P_across; no duplicate contrast × gene rows.
    """
    con = _connect()
    src = f"read_parquet('{_glob(folder)}')"
    r = con.execute(f"""
        select count(*),
               count(*) filter (where not (P_Value between 0 and 1)),
               count(*) filter (where adj_P_within < P_Value - 1e-12 or adj_P_within > 1),
               count(*) filter (where adj_P_across is null or isnan(adj_P_across)
                                or adj_P_across < P_Value - 1e-12 or adj_P_across > 1),
               count(*) filter (where CI_L > logFC + 1e-9 or CI_R < logFC - 1e-9),
               count(*) filter (where not (isfinite(logFC) and isfinite(t) and isfinite(AveExpr)))
        from {src}""").fetchone()
    dup = con.execute(f"""select count(*) from (select contrast_id, gene from {src}
                          group by all having count(*) > 1)""").fetchone()[0]
    con.close()
    names = ["P_Value outside [0, 1]", "adj_P_within below P_Value or above 1",
             "adj_P_across missing, below P_Value or above 1", "logFC outside its confidence interval",
             "non-finite logFC / t / AveExpr"]
    problems = [f"{name}: {k} rows" for name, k in zip(names, r[1:]) if k]
    if dup:
        problems.append(f"duplicate contrast × gene rows: {dup}")
    return int(r[0]), problems


def partition_summary(folder: str | Path) -> dict:
    """Rows, contrasts, plate-confounded contrasts, genes and the DEG share (adj_P_within < 0.05), by DuckDB."""
    con = _connect()
    src = f"read_parquet('{_glob(folder)}')"
    rows, contrasts, confounded, genes, degs = con.execute(f"""
        select count(*), count(distinct contrast_id), count(distinct contrast_id) filter (where plate_confounded),
               count(distinct gene), count(*) filter (where adj_P_within < 0.05) from {src}""").fetchone()
    con.close()
    return {"rows": int(rows), "contrasts": int(contrasts), "plate_confounded_contrasts": int(confounded),
            "genes": int(genes), "deg_share_adjp_0_05": float(degs / rows) if rows else 0.0}
