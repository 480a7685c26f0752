"""Training, evaluation and model selection of the LPM (METHODS §5). Pure logic, no Dagster.

One call of :func:`train` is one training run (one variant × seed, or one
fine-tune / scratch run on a target dataset). It

* builds the vocabularies (:class:`Vocabulary`): for the scalar model from
  training rows only, sorted, "Control" = code 0, a perturbation never seen in
  training encoded as Control and an unseen dataset, context or readout an
  error; for the multi-output model from all rows;
* trains with AdamW (lr 2e-3, weight decay 0.01), ExponentialLR γ 0.97 per
  epoch, an effective batch of ``batch_size`` rows split into micro-batches
  (gradient accumulation; 262,144 scalar / 8,192 multi-output in the paper);
* writes, after every epoch, the epoch's weights (``epoch-NNN.pt``) and the
  full training state (``last.pt``: optimizer, scheduler, RNG, history), both
  atomically, and resumes from ``last.pt`` when a killed job is run again;
* evaluates the train (running, in train mode), validation and test RMSE
  after every epoch, overall, per dataset, and (multi-output) per dataset ×
  context; RMSE = sqrt(mean squared error over all observed values).

Selection rules (:func:`best_epoch`, :func:`select_source`): "All" keeps per
dataset and seed the epoch with the best validation RMSE on that dataset;
fine-tuning starts from the single checkpoint (over all seeds and epochs)
with the best validation RMSE on the target and keeps its own best-validation
epoch; Scratch keeps its per-seed best-validation epoch.

Data reach the loop through a :class:`TableSource`: a list of chunk loaders
per split (one loader per Parquet shard for the real tables, so that an epoch
never holds more than one shard plus a batch in memory). Row schema:

scalar
    ``dataset, context, perturbation, log_dose, time, readout, value``
multi-output
    ``dataset, context, perturbation, log_dose, time``, ``value (list<float>)``
    and either ``readouts`` (list<str> of Ensembl IDs) or ``readout_idx``
    (list<int> into the source's ``readouts``, as in the shards)

``perturbation`` is a PubChem CID or a combination "A+B" of CIDs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time as _time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Protocol, Sequence

import numpy as np
import pandas as pd
import torch

from cpb_assets.lpm.config import PAPER_BATCH, PAPER_EPOCHS, Form, TrainConfig, _finite, best_epoch, paper_config
from cpb_assets.lpm.config import select_per_dataset, select_source
from cpb_assets.lpm.model import PAD, MultiOutputLPM, ScalarLPM, masked_sse, seed_everything
from cpb_resources.storage import atomic_path

log = logging.getLogger(__name__)

CONTROL = "Control"
SPLITS = ("train", "val", "test")


class UnknownSymbolError(KeyError):
    """A dataset, context or readout symbol the vocabulary does not hold."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


# --------------------------------------------------------------------------- data sources
class TableSource(Protocol):
    """Where training rows come from: per split, a list of chunk loaders (one per shard)."""

    def chunks(self, split: str) -> list[Callable[[], pd.DataFrame]]: ...


class FrameSource:
    """A :class:`TableSource` over in-memory frames (tests, small tables).

    Parameters
    ----------
    frames
        Either ``{split: DataFrame}`` or one DataFrame with a ``split`` column.
    chunk_rows
        Rows per chunk (stands in for the shard size).
    """

    def __init__(self, frames: dict[str, pd.DataFrame] | pd.DataFrame, chunk_rows: int = 200_000) -> None:
        if isinstance(frames, pd.DataFrame):
            frames = {s: g.drop(columns="split").reset_index(drop=True) for s, g in frames.groupby("split")}
        self.frames = {s: frames.get(s, pd.DataFrame()) for s in SPLITS}
        self.chunk_rows = chunk_rows

    def chunks(self, split: str) -> list[Callable[[], pd.DataFrame]]:
        df = self.frames[split]
        return [(lambda a=a: df.iloc[a:a + self.chunk_rows]) for a in range(0, len(df), self.chunk_rows)]


class ShardSource:
    """A :class:`TableSource` over the split-pure Parquet shards of :mod:`cpb_assets.lpm.tables`.

    One loader per shard file (one shard in memory at a time), returning a
    pyarrow Table. For the multi-output form, ``readouts`` is the shard root's
    gene list (``readouts.json``), which the shards' ``readout_idx`` index.

    Parameters
    ----------
    root
        ``tables.shard_root(home, kind, form)``.
    form
        "scalar" or "multi".
    datasets
        Only the shards of these datasets (None: all).
    """

    def __init__(self, root: str | Path, form: Form, datasets: Optional[Sequence[str]] = None) -> None:
        from cpb_assets.lpm import tables

        self.root, self.form = Path(root), form
        self.datasets = sorted(datasets) if datasets is not None else None
        self.readouts = tables.multi_readouts(self.root) if form == "multi" else None
        self.files = {s: tables.shard_files(self.root, s, self.datasets) for s in SPLITS}
        if not any(self.files.values()):
            raise FileNotFoundError(f"no LPM shards under {self.root}"
                                    f"{' for ' + ', '.join(self.datasets) if self.datasets else ''}")

    def chunks(self, split: str, columns: Optional[Sequence[str]] = None) -> list[Callable[[], "pa.Table"]]:
        import pyarrow.parquet as pq

        return [(lambda f=f: pq.read_table(f, columns=list(columns) if columns else None)) for f in self.files[split]]

    def restrict(self, datasets: Sequence[str]) -> "ShardSource":
        return ShardSource(self.root, self.form, datasets)


class FilteredSource:
    """Rows of `source` restricted to some datasets (fine-tune and scratch runs on one target)."""

    def __init__(self, source: TableSource, datasets: Sequence[str]) -> None:
        self.source, self.datasets = source, set(datasets)

    def chunks(self, split: str) -> list[Callable[[], pd.DataFrame]]:
        def load(f):
            df = f()
            if isinstance(df, pd.DataFrame):
                return df[df["dataset"].isin(self.datasets)].reset_index(drop=True)
            import pyarrow.compute as pc
            return df.filter(pc.is_in(df["dataset"], value_set=pa_array(sorted(self.datasets))))
        return [(lambda f=f: load(f)) for f in self.source.chunks(split)]


def pa_array(values):
    import pyarrow as pa
    return pa.array(values, pa.string())


def _col(df, name: str) -> np.ndarray:
    """A column of a pandas DataFrame or pyarrow Table as a numpy array."""
    if isinstance(df, pd.DataFrame):
        return df[name].to_numpy()
    return df[name].to_numpy()


def _lists(df, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(lengths, flattened values) of a list column of a DataFrame or pyarrow Table."""
    if isinstance(df, pd.DataFrame):
        parts = [np.asarray(x) for x in df[name]]
        lengths = np.fromiter((len(x) for x in parts), dtype=np.int64, count=len(parts))
        flat = np.concatenate(parts) if parts else np.array([])
        return lengths, flat
    import pyarrow.compute as pc
    col = df[name]
    return (pc.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int64),
            pc.list_flatten(col).to_numpy(zero_copy_only=False))


def iter_frames(source: TableSource, splits: Iterable[str]) -> Iterator[pd.DataFrame]:
    for split in splits:
        for load in source.chunks(split):
            df = load()
            if len(df):
                yield df


# --------------------------------------------------------------------------- vocabularies
def split_perturbation(p: str) -> list[str]:
    """"A+B" → ["A", "B"] (a single compound → [it])."""
    return [x.strip() for x in str(p).split("+") if x.strip()]


@dataclass
class Vocabulary:
    """Sorted symbol lists; ``perturbations[0]`` is "Control".

    ``readouts`` are the readout genes of the scalar model, or the output
    genes (columns of the head) of the multi-output model.
    """

    form: str
    datasets: list[str]
    contexts: list[str]
    perturbations: list[str]
    readouts: list[str]

    def __post_init__(self) -> None:
        self._index = {k: pd.Index(getattr(self, k)) for k in ("datasets", "contexts", "perturbations", "readouts")}

    @classmethod
    def build(cls, form: Form, source: "TableSource", splits: Sequence[str]) -> "Vocabulary":
        """From the rows of `splits` of `source` (METHODS §5: the scalar model's training rows only; all rows
        for the multi-output model, whose gene list is the shard root's when the source has one)."""
        ds, ctx, pert, ro = set(), set(), set(), set()
        fixed_genes = getattr(source, "readouts", None) if form == "multi" else None
        for df in iter_frames(source, splits):
            ds.update(np.unique(_col(df, "dataset").astype(str)))
            ctx.update(np.unique(_col(df, "context").astype(str)))
            for p in np.unique(_col(df, "perturbation").astype(str)):
                pert.update(split_perturbation(p))
            if form == "scalar":
                ro.update(np.unique(_col(df, "readout").astype(str)))
            elif fixed_genes is None:
                ro.update(np.unique(_lists(df, "readouts")[1].astype(str)))
        if fixed_genes is not None:
            ro = set(fixed_genes)
        pert.discard(CONTROL)
        return cls(form, sorted(map(str, ds)), sorted(map(str, ctx)), [CONTROL, *sorted(map(str, pert))],
                   sorted(map(str, ro)))

    def to_dict(self) -> dict:
        return {"form": self.form, "datasets": self.datasets, "contexts": self.contexts,
                "perturbations": self.perturbations, "readouts": self.readouts}

    @classmethod
    def from_dict(cls, d: dict) -> "Vocabulary":
        return cls(d["form"], list(d["datasets"]), list(d["contexts"]), list(d["perturbations"]), list(d["readouts"]))

    def sizes(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in ("datasets", "contexts", "perturbations", "readouts")}

    def encode(self, kind: str, values) -> np.ndarray:
        """Codes of dataset / context / readout symbols; an unseen symbol is an error."""
        values = np.asarray(values, dtype=object)
        codes = self._index[kind].get_indexer(values)
        if (codes < 0).any():
            bad = sorted(set(values[codes < 0].tolist()))
            raise UnknownSymbolError(f"{kind[:-1]} not in the training vocabulary: {bad[:5]}"
                                     f"{' …' if len(bad) > 5 else ''} ({len(bad)} unseen)")
        return codes.astype(np.int64)

    def encode_perturbations(self, values) -> np.ndarray:
        """(n, k) codes padded with PAD; a compound never seen in training → Control (0)."""
        uniq, inv = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
        parts = [split_perturbation(u) or [CONTROL] for u in uniq]
        k = max((len(p) for p in parts), default=1)
        table = np.full((len(uniq), k), PAD, dtype=np.int64)
        idx = self._index["perturbations"]
        for i, p in enumerate(parts):
            codes = idx.get_indexer(p)
            table[i, :len(p)] = np.where(codes < 0, 0, codes)
        return table[inv.reshape(-1)]


# --------------------------------------------------------------------------- encoded chunks
@dataclass
class Encoded:
    """A chunk of encoded rows.

    Scalar rows carry ``readout`` codes and ``value``; multi-output rows carry
    their observed genes in CSR form (``indptr``, ``cols`` into the gene
    vocabulary, ``vals``) and are made dense only per batch (:meth:`dense`),
    so a shard never becomes an (n_rows × n_genes) matrix.
    """

    dataset: np.ndarray
    context: np.ndarray
    perturbation: np.ndarray     # (n, k) codes padded with PAD
    log_dose: np.ndarray
    time: np.ndarray
    value: Optional[np.ndarray] = None     # scalar
    readout: Optional[np.ndarray] = None   # scalar
    indptr: Optional[np.ndarray] = None    # multi: (n + 1,)
    cols: Optional[np.ndarray] = None      # multi
    vals: Optional[np.ndarray] = None      # multi

    ROW_FIELDS = ("dataset", "context", "perturbation", "log_dose", "time", "value", "readout")

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def multi(self) -> bool:
        return self.indptr is not None

    @property
    def n_values(self) -> int:
        return int(self.indptr[-1]) if self.multi else len(self)

    def take(self, idx) -> "Encoded":
        rows = np.arange(len(self))[idx]
        out = {k: (getattr(self, k)[rows] if getattr(self, k) is not None else None) for k in self.ROW_FIELDS}
        if self.multi:
            starts = self.indptr[rows]
            lens = self.indptr[rows + 1] - starts
            indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
            pos = np.repeat(starts - indptr[:-1], lens) + np.arange(indptr[-1])
            out.update(indptr=indptr, cols=self.cols[pos], vals=self.vals[pos])
        return Encoded(**out)

    @staticmethod
    def concat(parts: list["Encoded"]) -> "Encoded":
        if len(parts) == 1:
            return parts[0]
        out = {}
        for k in Encoded.ROW_FIELDS:
            vals = [getattr(p, k) for p in parts]
            if vals[0] is None:
                out[k] = None
            elif k == "perturbation":  # pad to the widest combination
                w = max(v.shape[1] for v in vals)
                out[k] = np.vstack([np.pad(v, ((0, 0), (0, w - v.shape[1])), constant_values=PAD) for v in vals])
            else:
                out[k] = np.concatenate(vals)
        if parts[0].multi:
            offs = np.cumsum([0] + [p.n_values for p in parts[:-1]])
            out["indptr"] = np.concatenate([[0]] + [p.indptr[1:] + o for p, o in zip(parts, offs)]).astype(np.int64)
            out["cols"] = np.concatenate([p.cols for p in parts])
            out["vals"] = np.concatenate([p.vals for p in parts])
        return Encoded(**out)

    def dense(self, n_genes: int) -> tuple[np.ndarray, np.ndarray]:
        """(target float32 [n, n_genes] with 0 where unobserved, observed mask bool [n, n_genes])."""
        rows = np.repeat(np.arange(len(self)), np.diff(self.indptr))
        target = np.zeros((len(self), n_genes), dtype=np.float32)
        mask = np.zeros((len(self), n_genes), dtype=bool)
        target[rows, self.cols] = self.vals
        mask[rows, self.cols] = True
        return target, mask


def encode_frame(df, vocab: Vocabulary, readouts: Optional[Sequence[str]] = None) -> Encoded:
    """Encode one chunk of rows (pandas DataFrame or pyarrow Table; columns in the module docstring).

    `readouts` is the gene list that a multi-output chunk's ``readout_idx`` indexes (a shard root's
    ``readouts.json``); chunks with a ``readouts`` list column of gene IDs need none.
    """
    ds = vocab.encode("datasets", _col(df, "dataset"))
    ctx = vocab.encode("contexts", _col(df, "context"))
    pert = vocab.encode_perturbations(_col(df, "perturbation"))
    dose = _col(df, "log_dose").astype(np.float32)
    tm = _col(df, "time").astype(np.float32)
    if vocab.form == "scalar":
        return Encoded(ds, ctx, pert, dose, tm, value=_col(df, "value").astype(np.float32),
                       readout=vocab.encode("readouts", _col(df, "readout")))
    names = df.columns if isinstance(df, pd.DataFrame) else df.column_names
    if "readout_idx" in names:
        if readouts is None:
            raise ValueError("a chunk with readout_idx needs the gene list it indexes (readouts)")
        lengths, idx = _lists(df, "readout_idx")
        if list(readouts) == vocab.readouts:
            cols = idx.astype(np.int64)
        else:  # another gene list (a vocabulary from a different shard root): map by gene ID
            cols = vocab.encode("readouts", np.asarray(readouts, dtype=object)[idx.astype(np.int64)])
    else:
        lengths, genes = _lists(df, "readouts")
        cols = vocab.encode("readouts", genes.astype(object))
    _, vals = _lists(df, "value")
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return Encoded(ds, ctx, pert, dose, tm, indptr=indptr, cols=cols, vals=vals.astype(np.float32))


def batches(source: TableSource, split: str, vocab: Vocabulary, batch_rows: int,
            rng: Optional[np.random.Generator] = None, mix: int = 1) -> Iterator[Encoded]:
    """Batches of `batch_rows` rows (the last one shorter), streaming chunk by chunk.

    With `rng`: chunk order is shuffled and the rows of `mix` chunks read
    together are shuffled (shards are one dataset_context each, so ``mix > 1``
    gives batches that span contexts; at most `mix` shards are in memory); the
    leftover is carried into the next batch. Without `rng`: file order.
    """
    loaders = source.chunks(split)
    readouts = getattr(source, "readouts", None)
    order = list(rng.permutation(len(loaders))) if rng is not None else list(range(len(loaders)))
    groups = [order[a:a + max(1, mix)] for a in range(0, len(order), max(1, mix))] if rng is not None \
        else [[i] for i in order]
    carry: list[Encoded] = []
    n_carry = 0
    for group in groups:
        parts = [encode_frame(df, vocab, readouts) for df in (loaders[i]() for i in group) if len(df)]
        if not parts:
            continue
        enc = Encoded.concat(parts)
        if rng is not None:
            enc = enc.take(rng.permutation(len(enc)))
        carry.append(enc)
        n_carry += len(enc)
        if n_carry < batch_rows:
            continue
        buf = Encoded.concat(carry)
        cut = (len(buf) // batch_rows) * batch_rows
        for a in range(0, cut, batch_rows):
            yield buf.take(slice(a, a + batch_rows))
        carry = [buf.take(slice(cut, None))] if cut < len(buf) else []
        n_carry = len(buf) - cut
    if n_carry:
        yield Encoded.concat(carry)


# --------------------------------------------------------------------------- checkpoints
def save_atomic(obj: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """Load an epoch or state file (``weights_only=True``: tensors and plain containers only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def build_model(vocab: Vocabulary, cfg: TrainConfig, fingerprints: Optional[np.ndarray] = None):
    common = dict(dim=cfg.dim, hidden=cfg.hidden, dropout=cfg.dropout, morgan=cfg.morgan,
                  fingerprints=fingerprints if cfg.morgan else None)
    if vocab.form == "scalar":
        return ScalarLPM(len(vocab.datasets), len(vocab.contexts), len(vocab.perturbations), len(vocab.readouts),
                         **common)
    return MultiOutputLPM(len(vocab.datasets), len(vocab.contexts), len(vocab.perturbations), len(vocab.readouts),
                          **common)


def model_from_checkpoint(path: str | Path):
    """(model in eval mode, vocabulary, checkpoint dict) from an epoch file."""
    ck = load_checkpoint(path)
    vocab = Vocabulary.from_dict(ck["vocab"])
    cfg = TrainConfig(**{k: v for k, v in ck["config"].items() if k in TrainConfig.__dataclass_fields__})
    cfg.morgan = None  # the weights carry the (possibly Morgan) table; no fingerprints needed to rebuild
    model = build_model(vocab, cfg)
    model.load_state_dict(ck["model"])
    model.eval()
    return model, vocab, ck


def fingerprint_matrix(vocab: Vocabulary, fingerprints: dict[str, Sequence[float]] | pd.DataFrame,
                       dim: int = 128) -> np.ndarray:
    """(|perturbations|, dim) float32 rows in vocabulary order; zeros for Control and compounds without one.

    `fingerprints`: {CID: bits} or a frame indexed by CID with `dim` bit columns.
    """
    if isinstance(fingerprints, pd.DataFrame):
        fingerprints = {str(k): v for k, v in zip(fingerprints.index, fingerprints.to_numpy())}
    out = np.zeros((len(vocab.perturbations), dim), dtype=np.float32)
    for i, p in enumerate(vocab.perturbations):
        v = fingerprints.get(p)
        if v is not None and i > 0:
            arr = np.asarray(v, dtype=np.float32)
            if arr.shape != (dim,):
                raise ValueError(f"fingerprint of {p} has shape {arr.shape}, expected ({dim},)")
            out[i] = arr
    return out


# --------------------------------------------------------------------------- evaluation
def _to_device(enc: Encoded, device: torch.device, n_genes: int = 0) -> dict[str, torch.Tensor]:
    """Tensors of a batch; a multi-output batch gets its dense ``target`` and ``mask`` here."""
    arrays = {k: getattr(enc, k) for k in ("dataset", "context", "perturbation", "log_dose", "time", "readout")
              if getattr(enc, k) is not None}
    if enc.multi:
        arrays["target"], arrays["mask"] = enc.dense(n_genes)
    else:
        arrays["target"] = enc.value
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device, non_blocking=True) for k, v in arrays.items()}


def _forward(model, t: dict[str, torch.Tensor]) -> torch.Tensor:
    if "readout" in t:
        return model(t["dataset"], t["context"], t["perturbation"], t["readout"], t["log_dose"], t["time"])
    return model(t["dataset"], t["context"], t["perturbation"], t["log_dose"], t["time"])


def _row_sse(pred: torch.Tensor, t: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row squared error and observed-value count."""
    if "mask" in t:
        m = t["mask"]
        diff = torch.where(m, pred.float() - t["target"], 0.0)
        return (diff * diff).sum(1), m.sum(1)
    diff = pred.float() - t["target"]
    return diff * diff, torch.ones_like(diff, dtype=torch.int64)


class _Acc:
    """Sums of squared errors and counts per dataset (and per dataset × context)."""

    def __init__(self, vocab: Vocabulary, by_context: bool) -> None:
        self.vocab, self.by_context = vocab, by_context
        nd, nc = len(vocab.datasets), len(vocab.contexts)
        self.sse = np.zeros(nd * nc if by_context else nd)
        self.n = np.zeros_like(self.sse)

    def add(self, enc_ds: np.ndarray, enc_ctx: np.ndarray, sse: np.ndarray, n: np.ndarray) -> None:
        key = enc_ds * len(self.vocab.contexts) + enc_ctx if self.by_context else enc_ds
        self.sse += np.bincount(key, weights=sse, minlength=len(self.sse))
        self.n += np.bincount(key, weights=n, minlength=len(self.n))

    def metrics(self, prefix: str) -> dict[str, float]:
        out = {f"{prefix}_rmse": math.sqrt(self.sse.sum() / self.n.sum()) if self.n.sum() else float("nan"),
               f"{prefix}_values": float(self.n.sum())}
        nc = len(self.vocab.contexts)
        ds_sse = self.sse.reshape(-1, nc).sum(1) if self.by_context else self.sse
        ds_n = self.n.reshape(-1, nc).sum(1) if self.by_context else self.n
        for i, d in enumerate(self.vocab.datasets):
            if ds_n[i]:
                out[f"{prefix}_rmse/{d}"] = math.sqrt(ds_sse[i] / ds_n[i])
        if self.by_context:
            for k in np.flatnonzero(self.n):
                d, c = self.vocab.datasets[k // nc], self.vocab.contexts[k % nc]
                out[f"{prefix}_rmse/{d}/{c}"] = math.sqrt(self.sse[k] / self.n[k])
        return out


@torch.no_grad()
def evaluate(model, source: TableSource, split: str, vocab: Vocabulary, device: torch.device,
             batch_rows: int = 4096, amp: bool = False) -> dict[str, float]:
    """RMSE of `split`: overall (``<split>_rmse``), per dataset (``<split>_rmse/<dataset>``) and, for the
    multi-output model, per dataset × context (``<split>_rmse/<dataset>/<context>``)."""
    was_training = model.training
    model.eval()
    acc = _Acc(vocab, by_context=vocab.form == "multi")
    for enc in batches(source, split, vocab, batch_rows):
        t = _to_device(enc, device, len(vocab.readouts))
        with _autocast(device, amp):
            pred = _forward(model, t)
        sse, n = _row_sse(pred, t)
        acc.add(enc.dataset, enc.context, sse.double().cpu().numpy(), n.double().cpu().numpy())
    model.train(was_training)
    return acc.metrics(split)


def _autocast(device: torch.device, amp: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


def predict(model, enc: Encoded, vocab: Vocabulary, device: Optional[torch.device] = None) -> np.ndarray:
    """Predictions for encoded rows ((n,) scalar, (n, n_genes) multi-output), in eval mode."""
    device = device or next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        return _forward(model, _to_device(enc, device, len(vocab.readouts))).float().cpu().numpy()


# --------------------------------------------------------------------------- training
@dataclass
class RunResult:
    """What one training run leaves: its folder, history, vocabulary and per-dataset selection."""

    out_dir: str
    epochs_done: int
    history: list[dict]
    vocab: Vocabulary
    resumed_from: int = 0
    seconds: float = 0.0
    samples_per_s: float = 0.0
    values_per_s: float = 0.0
    extra: dict = field(default_factory=dict)

    def epoch_path(self, epoch: int) -> Path:
        return Path(self.out_dir) / f"epoch-{epoch:03d}.pt"


class Tracker(Protocol):
    """What the loop reports to (MLflow in production; see cpb_resources.mlflow)."""

    def log_params(self, params: dict) -> None: ...
    def log_metrics(self, metrics: dict, step: int) -> None: ...


def split_digest(source: TableSource) -> str:
    """Stand-in split hash when none is given: sha256 of the chunk counts per split."""
    return hashlib.sha256(json.dumps({s: len(source.chunks(s)) for s in SPLITS}).encode()).hexdigest()[:16]


def train(cfg: TrainConfig, source: TableSource, out_dir: str | Path, *,
          fingerprints: Optional[dict | pd.DataFrame] = None, split_hash: str = "",
          tracker: Optional[Tracker] = None, vocab: Optional[Vocabulary] = None,
          stop_after: Optional[int] = None) -> RunResult:
    """Train one LPM run into `out_dir`, resuming from ``out_dir/last.pt`` when it exists.

    Parameters
    ----------
    cfg
        Hyperparameters (:class:`TrainConfig`).
    source
        Rows per split (:class:`TableSource`); train / val / test.
    out_dir
        Folder of this run's epoch files, ``last.pt`` and ``history.json``.
    fingerprints
        {CID: 128 Morgan bits} for ``cfg.morgan``.
    split_hash
        Identity of the split the rows come from (stored with every checkpoint).
    tracker
        Receives params once and metrics after every epoch (step = epoch).
    vocab
        Vocabulary to use (fine-tuning passes the source model's); else built
        from training rows (scalar) or all rows (multi-output), or taken from
        `cfg.init_checkpoint`.
    stop_after
        Stop after this epoch as a killed job would (tests of resume).
    """
    t_start = _time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if (cfg.device == "auto" and torch.cuda.is_available()) else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    seed_everything(cfg.seed, cfg.deterministic)

    init = load_checkpoint(cfg.init_checkpoint) if cfg.init_checkpoint else None
    if vocab is None:
        if init is not None:
            vocab = Vocabulary.from_dict(init["vocab"])
        else:
            vocab = Vocabulary.build(cfg.form, source, ("train",) if cfg.form == "scalar" else SPLITS)
    if vocab.form != cfg.form:
        raise ValueError(f"vocabulary form {vocab.form!r} does not match config form {cfg.form!r}")
    fp = fingerprint_matrix(vocab, fingerprints, cfg.dim) if cfg.morgan else None
    if cfg.morgan and fingerprints is None:
        raise ValueError(f"morgan={cfg.morgan!r} needs fingerprints")
    model = build_model(vocab, cfg, fp)
    if init is not None:
        model.load_state_dict(init["model"])
    if cfg.freeze_perturbations:
        model.freeze_perturbations()
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.gamma)

    history: list[dict] = []
    start_epoch = 1
    state_path = out / "last.pt"
    resumed_from = 0
    if state_path.exists():
        st = load_checkpoint(state_path)
        same = {k: v for k, v in st["config"].items() if k != "epochs"} == {
            k: v for k, v in cfg.hyperparameters().items() if k != "epochs"}
        if st["vocab"] != vocab.to_dict() or not same:
            raise ValueError(f"{state_path} belongs to another run (config or vocabulary differ); remove it")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        torch.set_rng_state(st["torch_rng"])
        history = json.loads(st["history"])
        start_epoch = int(st["epoch"]) + 1
        resumed_from = int(st["epoch"])
        log.info("resuming %s from epoch %d", out, resumed_from)
    step_model = torch.compile(model) if (cfg.compile and device.type == "cuda") else model
    if tracker is not None and not resumed_from:
        tracker.log_params({**cfg.hyperparameters(), "split_hash": split_hash,
                            **{f"n_{k}": v for k, v in vocab.sizes().items()},
                            "n_parameters": sum(p.numel() for p in model.parameters()),
                            "n_trainable": sum(p.numel() for p in params), "device": device.type})
    micro = cfg.micro_batch or cfg.batch_size
    n_samples_total = n_values_total = 0
    t_train = 0.0
    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = _time.perf_counter()
        model.train()
        acc = _Acc(vocab, by_context=False)
        rng = np.random.default_rng([cfg.seed, epoch])  # shuffling depends on (seed, epoch) only: resumable
        for batch in batches(source, "train", vocab, cfg.batch_size, rng, cfg.mix_shards):
            opt.zero_grad(set_to_none=True)
            n_values = batch.n_values
            for a in range(0, len(batch), micro):
                t = _to_device(batch.take(slice(a, a + micro)), device, len(vocab.readouts))
                with _autocast(device, cfg.amp):
                    pred = _forward(step_model, t)
                if "mask" in t:
                    sse, _ = masked_sse(pred, t["target"], t["mask"])
                else:
                    d = pred.float() - t["target"]
                    sse = (d * d).sum()
                # value-weighted over the effective batch: every observed value counts once
                (sse / max(n_values, 1)).backward()
                with torch.no_grad():
                    rs, rn = _row_sse(pred.detach(), t)
                acc.add(t["dataset"].cpu().numpy(), t["context"].cpu().numpy(), rs.double().cpu().numpy(),
                        rn.double().cpu().numpy())
            opt.step()
            n_samples_total += len(batch)
            n_values_total += n_values
        sched.step()
        t_train += _time.perf_counter() - t0
        metrics = {"epoch": epoch, "lr": opt.param_groups[0]["lr"], **acc.metrics("train")}
        for split in ("val", "test"):
            metrics.update(evaluate(model, source, split, vocab, device, cfg.eval_batch, cfg.amp))
        metrics["epoch_seconds"] = round(_time.perf_counter() - t0, 3)
        history.append(metrics)
        ck = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "vocab": vocab.to_dict(),
              "config": cfg.hyperparameters(), "epoch": epoch, "split_hash": split_hash}
        save_atomic(ck, out / f"epoch-{epoch:03d}.pt")
        save_atomic({**ck, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "torch_rng": torch.get_rng_state(), "history": json.dumps(history)}, state_path)
        with atomic_path(out / "history.json") as tmp:
            tmp.write_text(json.dumps(history, indent=1))
        if tracker is not None:
            tracker.log_metrics({k: v for k, v in metrics.items() if k != "epoch" and _finite(v)}, step=epoch)
        log.info("epoch %d/%d: train %.4f val %.4f test %.4f (%.1f s)", epoch, cfg.epochs, metrics["train_rmse"],
                 metrics.get("val_rmse", float("nan")), metrics.get("test_rmse", float("nan")),
                 metrics["epoch_seconds"])
        if stop_after is not None and epoch >= stop_after:
            break
    return RunResult(str(out), len(history), history, vocab, resumed_from, round(_time.perf_counter() - t_start, 3),
                     n_samples_total / t_train if t_train else 0.0, n_values_total / t_train if t_train else 0.0)


def per_gene_mean_rmse(source: TableSource, vocab: Vocabulary, dataset: Optional[str] = None) -> float:
    """Test RMSE of the per-gene-mean predictor (mean training value of each gene; 0 for genes never trained).

    The baseline the LPM must beat (issue 11 fidelity test)."""
    s = np.zeros(len(vocab.readouts))
    n = np.zeros(len(vocab.readouts))

    def rows(split):
        for enc in batches(source, split, vocab, 65_536):
            yield enc.take(enc.dataset == vocab.datasets.index(dataset)) if dataset is not None else enc

    def genes_values(enc):
        if enc.multi:
            return enc.cols, enc.vals.astype(np.float64)
        return enc.readout, enc.value.astype(np.float64)

    for enc in rows("train"):
        g, v = genes_values(enc)
        s += np.bincount(g, weights=v, minlength=len(s))
        n += np.bincount(g, minlength=len(n))
    mean = np.divide(s, n, out=np.zeros_like(s), where=n > 0)
    sse = cnt = 0.0
    for enc in rows("test"):
        g, v = genes_values(enc)
        sse += float(((v - mean[g]) ** 2).sum())
        cnt += len(v)
    return math.sqrt(sse / cnt) if cnt else float("nan")


__all__ = ["CONTROL", "SPLITS", "PAPER_BATCH", "PAPER_EPOCHS", "TableSource", "FrameSource", "ShardSource",
           "FilteredSource", "Vocabulary", "UnknownSymbolError", "Encoded", "encode_frame", "batches", "TrainConfig",
           "paper_config", "train", "evaluate", "predict", "RunResult", "best_epoch", "select_per_dataset",
           "select_source", "load_checkpoint", "model_from_checkpoint", "fingerprint_matrix", "per_gene_mean_rmse",
           "split_digest", "build_model"]
