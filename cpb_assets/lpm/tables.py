"""LPM training tables: long (scalar) rows, multi-output rows, split-pure shards, streaming readers.

Pure logic (pyarrow / numpy; no Dagster). Sizes are never all in memory: DE
files are read in record batches and shards are read one at a time.

Rows (METHODS §5) come from ``group`` DE rows: value = logFC, log_dose =
log10(dose µM), time in hours; symbols: dataset key, context (cell_type),
perturbation (PubChem CID; a combination ``"A+B"`` stays one string, the model
splits it on ``"+"``), readout (Ensembl gene). A row with a missing CID or
any missing or non-finite field is dropped (dose 0 would give log_dose −inf).

Layout under ``$CPB_HOME/lpm``::

    table/dataset=<ds>/scalar.parquet      long rows + condition     (lpm_table)
    table/dataset=<ds>/multi.parquet       one row per condition     (lpm_table)
    splits/<kind>.parquet, manifest.json   split assignments + hashes (lpm_split)
    shards/<kind>/<form>/<dataset>_<context>/<split>-00000.parquet   split-pure shards (lpm_split)
    shards/<kind>/multi/readouts.json      the multi-output gene vocabulary (all rows)

API for the training loop (h8)
------------------------------
- :func:`shard_root` (home, kind, form): where the shards of a split kind
  live; ``kind`` in ``scalar`` / ``molecule`` / ``scaffold``, ``form`` in
  ``scalar`` / ``multi``.
- :func:`iter_scalar_batches` (root, split, batch_rows, datasets=None,
  seed=None): pyarrow RecordBatches with columns dataset, context,
  perturbation (str), log_dose, time, value (float32), readout (str).
- :func:`iter_multi_batches` (root, split, batch_rows, ...): RecordBatches
  with dataset, context, perturbation, log_dose, time, condition and list
  columns readout_idx (int32 into :func:`multi_readouts`) and value (float32);
  :func:`dense_targets` turns one into (values, mask) arrays [B, n_genes].
- :func:`vocabularies` (root, splits): sorted :class:`Vocabulary` per symbol
  (dataset, context, perturbation molecules with ``Control`` = 0, readout);
  scalar model: ``splits=("train",)``; multi-output: all splits.
  :meth:`Vocabulary.codes` encodes (unseen perturbation → Control, other
  unseen symbols → KeyError), :meth:`Vocabulary.bag` gives EmbeddingBag
  (indices, offsets) for ``"A+B"``.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cpb_assets.lpm.splits import CONTROL, SPLITS

SCALAR_ROWS_PER_SHARD = 200_000
MULTI_VALUES_PER_SHARD = 8_000_000
SYMBOLS = ["dataset", "context", "perturbation"]
SCALAR_SCHEMA = pa.schema([("dataset", pa.string()), ("context", pa.string()), ("perturbation", pa.string()),
                           ("log_dose", pa.float32()), ("time", pa.float32()), ("readout", pa.string()),
                           ("value", pa.float32()), ("condition", pa.string())])
MULTI_SCHEMA = pa.schema([("dataset", pa.string()), ("context", pa.string()), ("perturbation", pa.string()),
                          ("log_dose", pa.float32()), ("time", pa.float32()), ("condition", pa.string()),
                          ("readouts", pa.list_(pa.string())), ("value", pa.list_(pa.float32()))])
DE_INPUT = ["stratum", "contrast_id", "cell_type", "pubchem_cid", "dose_uM", "time_h", "gene", "logFC"]
# the training datasets of each model (METHODS §5): DILImap enters as dilimap_train only
SCALAR_EXCLUDED = {"op3", "sciplex", "dilimap_train_val"}
MULTI_EXCLUDED = {"dilimap_train_val"}


# -- per-dataset tables (lpm_table) ------------------------------------------------------------
def de_batch_to_rows(batch: pa.RecordBatch, dataset: str) -> pa.Table:
    """Long LPM rows of one batch of ``group`` DE rows (missing / non-finite rows dropped).

    Returns
    -------
    pyarrow.Table
        :data:`SCALAR_SCHEMA`; ``condition`` = ``"<stratum>|<contrast_id>"``.
    """
    t = pa.Table.from_batches([batch]).select(DE_INPUT)
    dose = pc.cast(t["dose_uM"], pa.float64())
    log_dose = pc.log10(pc.if_else(pc.greater(dose, 0), dose, None))  # dose ≤ 0 → null → dropped
    cid = t["pubchem_cid"]
    if pa.types.is_floating(cid.type):  # a CID read back as float (NaN for missing) must not print as "2244.0"
        cid = pc.cast(pc.if_else(pc.is_nan(cid), None, cid), pa.int64())
    cid = pc.utf8_trim_whitespace(pc.cast(cid, pa.string()))
    cid = pc.if_else(pc.equal(cid, ""), None, cid)
    rows = pa.table({
        "dataset": pa.array([dataset] * len(t), pa.string()),
        "context": pc.cast(t["cell_type"], pa.string()),
        "perturbation": cid,
        "log_dose": pc.cast(log_dose, pa.float32()),
        "time": pc.cast(t["time_h"], pa.float32()),
        "readout": pc.cast(t["gene"], pa.string()),
        "value": pc.cast(t["logFC"], pa.float32()),
        "condition": pc.binary_join_element_wise(pc.cast(t["stratum"], pa.string()),
                                                 pc.cast(t["contrast_id"], pa.string()), "|"),
    }, schema=SCALAR_SCHEMA)
    keep = None
    for name in rows.column_names:
        col = rows[name]
        ok = pc.is_valid(col)
        if pa.types.is_floating(col.type):
            ok = pc.and_(ok, pc.is_finite(col))
        keep = ok if keep is None else pc.and_(keep, ok)
    return rows.filter(pc.fill_null(keep, False))


def build_dataset_table(de_files: Sequence[str | Path], dataset: str, out_dir: str | Path,
                        batch_rows: int = 1_000_000) -> dict:
    """Write ``scalar.parquet`` and ``multi.parquet`` of one dataset from its ``group`` DE files.

    Files are read in sorted order in record batches; a condition's rows are
    contiguous in the DE table (sorted by stratum, contrast, gene), so a
    multi-output row is emitted when its condition ends.

    Returns
    -------
    dict
        rows_in, rows (scalar), conditions (multi rows), dropped, contexts, perturbations, readouts.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = {"rows_in": 0, "rows": 0, "conditions": 0}
    contexts, perts, readouts = set(), set(), set()
    with pq.ParquetWriter(out_dir / "scalar.parquet", SCALAR_SCHEMA) as sw, \
            pq.ParquetWriter(out_dir / "multi.parquet", MULTI_SCHEMA) as mw:
        def emit(rows: pa.Table) -> None:
            if len(rows):
                multi = multi_rows(rows)
                mw.write_table(multi)
                stats["conditions"] += len(multi)

        for path in sorted(map(str, de_files)):
            pending = None  # rows of the condition still open at the end of the last batch
            for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=DE_INPUT):
                stats["rows_in"] += batch.num_rows
                rows = de_batch_to_rows(batch, dataset)
                if not len(rows):
                    continue
                sw.write_table(rows)
                stats["rows"] += len(rows)
                contexts.update(pc.unique(rows["context"]).to_pylist())
                perts.update(pc.unique(rows["perturbation"]).to_pylist())
                readouts.update(pc.unique(rows["readout"]).to_pylist())
                if pending is not None:
                    rows = pa.concat_tables([pending, rows])
                is_open = pc.equal(rows["condition"], rows["condition"][-1])
                emit(rows.filter(pc.invert(is_open)))
                pending = rows.filter(is_open)
            if pending is not None:  # a file (stratum) ends every condition
                emit(pending)
    stats.update(dropped=stats["rows_in"] - stats["rows"], contexts=len(contexts), perturbations=len(perts),
                 readouts=len(readouts))
    return stats


def multi_rows(rows: pa.Table) -> pa.Table:
    """One multi-output row per condition of long rows (order of first appearance; genes in row order)."""
    cond = rows["condition"].to_numpy(zero_copy_only=False)
    uniq, first, inverse = np.unique(cond, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # conditions in order of appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    row_order = np.argsort(rank[inverse], kind="stable")
    sorted_rows = rows.take(pa.array(row_order))
    counts = np.bincount(rank[inverse], minlength=len(uniq))
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    heads = rows.take(pa.array(first[order]))
    return pa.table({
        "dataset": heads["dataset"], "context": heads["context"], "perturbation": heads["perturbation"],
        "log_dose": heads["log_dose"], "time": heads["time"], "condition": heads["condition"],
        "readouts": pa.ListArray.from_arrays(offsets, sorted_rows["readout"].combine_chunks()),
        "value": pa.ListArray.from_arrays(offsets, sorted_rows["value"].combine_chunks()),
    }, schema=MULTI_SCHEMA)


# -- split-pure shards -------------------------------------------------------------------------
def shard_root(home: str | Path, kind: str, form: str) -> Path:
    """``$CPB_HOME/lpm/shards/<kind>/<form>``."""
    return Path(home) / "lpm" / "shards" / kind / form


def folder_name(dataset: str, context: str) -> str:
    """``<dataset>_<context>`` with characters outside ``[A-Za-z0-9._-]`` as ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", f"{dataset}_{context}")


class ShardWriter:
    """Buffers rows per (dataset_context folder, split) and writes a shard each time a buffer is full.

    Parameters
    ----------
    root
        Shard root (a fresh folder).
    limit
        Rows per shard (scalar) or values per shard (multi, ``count="values"``).
    count
        ``"rows"`` or ``"values"`` (total length of the ``value`` lists).
    """

    def __init__(self, root: str | Path, limit: int, count: str = "rows"):
        self.root, self.limit, self.count = Path(root), int(limit), count
        self.buffers: dict[tuple[str, str], list[pa.Table]] = {}
        self.sizes: dict[tuple[str, str], int] = {}
        self.next_index: dict[tuple[str, str], int] = {}
        self.written: list[dict] = []

    def _size(self, t: pa.Table) -> np.ndarray:
        if self.count == "rows":
            return np.ones(len(t), dtype=np.int64)
        return pc.list_value_length(t["value"]).to_numpy(zero_copy_only=False).astype(np.int64)

    def add(self, folder: str, split: str, table: pa.Table) -> None:
        """Append rows of one split to the folder's buffer, writing full shards."""
        key = (folder, split)
        sizes = self._size(table)
        start = 0
        while start < len(table):
            room = self.limit - self.sizes.get(key, 0)
            cum = np.cumsum(sizes[start:])
            # rows that fit; a single row larger than the limit gets its own shard
            take = int(np.searchsorted(cum, room, side="right")) or (0 if self.sizes.get(key) else 1)
            if take:
                self.buffers.setdefault(key, []).append(table.slice(start, take))
                self.sizes[key] = self.sizes.get(key, 0) + int(cum[take - 1])
                start += take
            if start < len(table) or self.sizes.get(key, 0) >= self.limit:
                self._flush(key)

    def _flush(self, key: tuple[str, str]) -> None:
        parts = self.buffers.pop(key, [])
        size = self.sizes.pop(key, 0)
        if not parts:
            return
        folder, split = key
        i = self.next_index.get(key, 0)
        self.next_index[key] = i + 1
        path = self.root / folder / f"{split}-{i:05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.concat_tables(parts)
        pq.write_table(table, path)
        self.written.append({"folder": folder, "split": split, "file": path.name, "rows": len(table), "size": size})

    def flush_except(self, folders: set[str]) -> None:
        """Write what is buffered for every folder not in `folders`.

        Called after each batch with the batch's folders: contexts are
        contiguous in a dataset's table (one DE file per stratum), so at most
        the current contexts' buffers stay in memory. A context that comes
        back later only starts a new (smaller) shard.
        """
        for key in [k for k in self.buffers if k[0] not in folders]:
            self._flush(key)

    def close(self) -> list[dict]:
        for key in list(self.buffers):
            self._flush(key)
        return self.written


def write_scalar_shards(table_dirs: dict[str, Path], split_of_unit: dict[tuple[str, str, str], str],
                        root: str | Path, rows_per_shard: int = SCALAR_ROWS_PER_SHARD,
                        batch_rows: int = 1_000_000) -> list[dict]:
    """Split-pure scalar shards: every row of each dataset's ``scalar.parquet``, labelled by its
    (dataset, context, perturbation) unit, in shards of at most `rows_per_shard` rows.

    Rows of units absent from `split_of_unit` are skipped. Returns one dict per shard written.
    """
    w = ShardWriter(root, rows_per_shard, "rows")
    for ds in sorted(table_dirs):
        for batch in pq.ParquetFile(Path(table_dirs[ds]) / "scalar.parquet").iter_batches(batch_size=batch_rows):
            t = pa.Table.from_batches([batch]).drop_columns(["condition"])
            labels = _labels(t, split_of_unit, SYMBOLS)
            w.flush_except(_route(w, t, labels))
        w.flush_except(set())
    return w.close()


def write_multi_shards(table_dirs: dict[str, Path], split_of_sample: dict[tuple[str, str], str], root: str | Path,
                       values_per_shard: int = MULTI_VALUES_PER_SHARD, batch_rows: int = 20_000) -> list[dict]:
    """Split-pure multi-output shards of about `values_per_shard` float32 values each.

    Parameters
    ----------
    split_of_sample
        (dataset, perturbation) → split; rows of other keys are skipped (the molecule-based split
        kinds label a sample by its dataset and perturbation only).
    Writes ``readouts.json`` (sorted genes of every row written) at `root`; the
    shards hold ``readout_idx`` into it.
    """
    root = Path(root)
    genes: set[str] = set()
    for ds in sorted(table_dirs):
        for batch in pq.ParquetFile(Path(table_dirs[ds]) / "multi.parquet").iter_batches(
                batch_size=batch_rows, columns=["dataset", "context", "perturbation", "readouts"]):
            t = pa.Table.from_batches([batch])
            kept = t.filter(pc.is_valid(_labels(t, split_of_sample, ["dataset", "perturbation"])))
            genes.update(pc.unique(pc.list_flatten(kept["readouts"])).to_pylist())
    vocab = sorted(genes)
    root.mkdir(parents=True, exist_ok=True)
    (root / "readouts.json").write_text(json.dumps(vocab))
    gene_array = pa.array(vocab, pa.string())
    w = ShardWriter(root, values_per_shard, "values")
    for ds in sorted(table_dirs):
        for batch in pq.ParquetFile(Path(table_dirs[ds]) / "multi.parquet").iter_batches(batch_size=batch_rows):
            t = pa.Table.from_batches([batch])
            labels = _labels(t, split_of_sample, ["dataset", "perturbation"])
            lists = t["readouts"].combine_chunks()
            flat = pc.cast(pc.index_in(lists.flatten(), value_set=gene_array), pa.int32())
            lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
            offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
            idx = pa.ListArray.from_arrays(offsets, flat)
            t = t.drop_columns(["readouts"]).append_column("readout_idx", idx)
            w.flush_except(_route(w, t.select(["dataset", "context", "perturbation", "log_dose", "time",
                                               "condition", "readout_idx", "value"]), labels))
        w.flush_except(set())
    return w.close()


def _labels(t: pa.Table, lookup: dict[tuple[str, ...], str], key_columns: Sequence[str]) -> pa.Array:
    """Split label of each row (null = not in this split kind) from a (key columns) → split mapping."""
    keys = pc.binary_join_element_wise(*[pc.cast(t[c], pa.string()) for c in key_columns], "\x1f")
    value_set = pa.array(["\x1f".join(k) for k in lookup], pa.string())
    idx = pc.index_in(keys, value_set=value_set)
    return pc.take(pa.array(list(lookup.values()), pa.string()), idx)


def _route(w: ShardWriter, t: pa.Table, labels: pa.Array) -> set[str]:
    """Add each (dataset_context folder, split) slice of a batch to the writer; return the batch's folders."""
    folders = pc.replace_substring_regex(pc.binary_join_element_wise(t["dataset"], t["context"], "_"),
                                         r"[^A-Za-z0-9._-]", "-")
    names = pc.unique(folders).to_pylist()
    for folder in names:  # order of appearance
        in_folder = pc.equal(folders, folder)
        for split in SPLITS:
            m = pc.fill_null(pc.and_(in_folder, pc.equal(labels, split)), False)
            if pc.any(m).as_py():
                w.add(folder, split, t.filter(m))
    return set(names)


# -- readers -----------------------------------------------------------------------------------
def shard_files(root: str | Path, split: str, datasets: Iterable[str] | None = None) -> list[Path]:
    """Sorted shard files of one split (optionally only some datasets)."""
    files = sorted(Path(root).glob(f"*/{split}-*.parquet"))
    if datasets is not None:
        prefixes = tuple(f"{d}_" for d in datasets)
        files = [f for f in files if f.parent.name.startswith(prefixes)]
    return files


def _iter_batches(files: list[Path], batch_rows: int, seed: int | None, columns=None, mix: int = 1
                  ) -> Iterator[pa.RecordBatch]:
    """Batches of exactly `batch_rows` rows (the last may be shorter) across shard files.

    With a seed, shard order is permuted and the rows of every `mix`
    consecutive shards are read together and permuted
    (``numpy.random.default_rng(seed)``); at most `mix` shards are in memory.
    """
    rng = np.random.default_rng(seed) if seed is not None else None
    if rng is not None:
        files = [files[i] for i in rng.permutation(len(files))]
        groups = [files[i:i + max(1, mix)] for i in range(0, len(files), max(1, mix))]
    else:
        groups = [[f] for f in files]
    carry: list[pa.Table] = []
    n_carry = 0
    for group in groups:
        f = group[0]
        if rng is not None:
            t = pa.concat_tables([pq.read_table(g, columns=columns) for g in group])
            t = t.take(pa.array(rng.permutation(len(t))))
            parts = [t]
        else:
            parts = (pa.Table.from_batches([b]) for b in pq.ParquetFile(f).iter_batches(
                batch_size=batch_rows, columns=columns))
        for t in parts:
            carry.append(t)
            n_carry += len(t)
            while n_carry >= batch_rows:
                whole = pa.concat_tables(carry)
                yield whole.slice(0, batch_rows).combine_chunks().to_batches()[0]
                rest = whole.slice(batch_rows)
                carry, n_carry = ([rest] if len(rest) else []), len(rest)
    if n_carry:
        yield pa.concat_tables(carry).combine_chunks().to_batches()[0]


def iter_scalar_batches(root: str | Path, split: str, batch_rows: int, *, datasets: Iterable[str] | None = None,
                        seed: int | None = None, columns: Sequence[str] | None = None, mix: int = 1
                        ) -> Iterator[pa.RecordBatch]:
    """Stream the scalar rows of one split as RecordBatches of `batch_rows` rows (see module docstring).

    `seed` shuffles (shard order, rows within `mix` shards read together); None keeps file order.
    """
    return _iter_batches(shard_files(root, split, datasets), batch_rows, seed, columns, mix)


def iter_multi_batches(root: str | Path, split: str, batch_rows: int, *, datasets: Iterable[str] | None = None,
                       seed: int | None = None, columns: Sequence[str] | None = None, mix: int = 1
                       ) -> Iterator[pa.RecordBatch]:
    """Stream the multi-output rows (one per condition) of one split as RecordBatches of `batch_rows` rows."""
    return _iter_batches(shard_files(root, split, datasets), batch_rows, seed, columns, mix)


def multi_readouts(root: str | Path) -> list[str]:
    """The multi-output gene vocabulary of a shard root (sorted; column j of the head = gene j)."""
    return json.loads((Path(root) / "readouts.json").read_text())


def dense_targets(batch: pa.RecordBatch, n_readouts: int) -> tuple[np.ndarray, np.ndarray]:
    """(values float32 [B, n_readouts], observed mask bool [B, n_readouts]) of a multi-output batch."""
    idx = batch.column("readout_idx")
    val = batch.column("value")
    lengths = pc.list_value_length(idx).to_numpy(zero_copy_only=False)
    rows = np.repeat(np.arange(len(batch)), lengths)
    cols = pc.list_flatten(idx).to_numpy(zero_copy_only=False)
    values = np.zeros((len(batch), n_readouts), dtype=np.float32)
    mask = np.zeros((len(batch), n_readouts), dtype=bool)
    values[rows, cols] = pc.list_flatten(val).to_numpy(zero_copy_only=False)
    mask[rows, cols] = True
    return values, mask


# -- vocabularies ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Vocabulary:
    """Sorted symbols → codes. For perturbations, ``Control`` is code 0 and symbols are molecules."""

    kind: str
    symbols: tuple[str, ...]

    @property
    def index(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.symbols)}

    def __len__(self) -> int:
        return len(self.symbols)

    def codes(self, values) -> np.ndarray:
        """int64 codes of a string array. Unseen perturbation molecules → Control (0); any other
        unseen symbol raises KeyError naming it (an unseen dataset, context or readout is an error)."""
        arr = pa.array(values) if not isinstance(values, (pa.Array, pa.ChunkedArray)) else values
        codes = pc.index_in(arr, value_set=pa.array(self.symbols, pa.string()))
        if codes.null_count:
            if self.kind == "perturbation":
                codes = pc.fill_null(codes, 0)
            else:
                missing = pc.unique(pc.filter(arr, pc.is_null(codes))).to_pylist()
                raise KeyError(f"{self.kind} not in the training vocabulary: {missing[:5]}")
        return codes.to_numpy(zero_copy_only=False).astype(np.int64)

    def bag(self, perturbations) -> tuple[np.ndarray, np.ndarray]:
        """EmbeddingBag(mean) inputs of perturbation symbols: (indices, offsets), ``"A+B"`` → two indices."""
        arr = pa.array(perturbations) if not isinstance(perturbations, (pa.Array, pa.ChunkedArray)) else perturbations
        parts = pc.split_pattern(arr, "+")
        lengths = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        return self.codes(pc.list_flatten(parts)), offsets


def vocabularies(root: str | Path, splits: Sequence[str] = ("train",), *, datasets: Iterable[str] | None = None,
                 form: str = "scalar") -> dict[str, Vocabulary]:
    """Sorted vocabularies of the rows of `splits` under a shard root, read column-wise shard by shard.

    Returns
    -------
    dict
        ``dataset``, ``context``, ``perturbation`` (molecules of ``"A+B"``
        split on ``"+"``, ``Control`` first) and ``readout`` (scalar: genes of
        those rows; multi: :func:`multi_readouts`).
    """
    seen: dict[str, set[str]] = {k: set() for k in ("dataset", "context", "perturbation", "readout")}
    cols = SYMBOLS + (["readout"] if form == "scalar" else [])
    for split in splits:
        for f in shard_files(root, split, datasets):
            t = pq.read_table(f, columns=cols)
            for c in cols:
                vals = pc.unique(t[c]).to_pylist()
                if c == "perturbation":
                    vals = [m for v in vals for m in v.split("+") if m]
                seen[c].update(vals)
    if form == "multi":
        seen["readout"] = set(multi_readouts(root))
    seen["perturbation"].discard(CONTROL)
    out = {k: Vocabulary(k, tuple(sorted(v))) for k, v in seen.items()}
    out["perturbation"] = Vocabulary("perturbation", (CONTROL, *sorted(seen["perturbation"])))
    return out
