"""The OP3 downstream predictor: a two-stage ensemble of small MLPs over (cell type, compound).

Built from the paper's description (Appendix D.3); the original code is not public, so every
choice below is ours and listed in docs/methods.md ("OP3 downstream"):

- each network embeds the cell type (its own table) and the compound, concatenates them and
  passes them through ``n_blocks`` × [Linear, GELU, Dropout] to a linear head that regresses
  the TruncatedSVD coefficients of the targets; the SVD (no centring, like scikit-learn's
  TruncatedSVD) is fit on the training targets of that stage only, and predictions are mapped
  back to gene space through its components;
- the ensemble's members differ in seed and SVD rank (:data:`RANKS`); their gene-space
  predictions are averaged;
- stage 1 trains on the training conditions and predicts the held-out ones (pseudolabels);
  stage 2 trains a fresh ensemble on training + pseudolabelled conditions and gives the
  final predictions;
- a compound with a descriptor is embedded as ``projection(descriptor_row)``, the row being a
  parameter initialised from the descriptor (frozen for "fixed" descriptors) and the
  projection a learned Linear; a compound without one, and every compound of the
  descriptor-free variant, has a freely learned embedding.

Pure torch; CPU by default, CUDA when present.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

RANKS = (8, 16, 32)


@dataclass(frozen=True)
class PredictorConfig:
    embed_dim: int = 32
    hidden: int = 256
    n_blocks: int = 2
    dropout: float = 0.1
    epochs: int = 300
    lr: float = 3e-3
    weight_decay: float = 1e-4
    ranks: tuple[int, ...] = RANKS
    freeze_descriptors: bool = False


@dataclass
class Descriptors:
    """Per-compound vectors (rows of `matrix` for the compounds in `index`); may be empty."""

    index: dict[str, int] = field(default_factory=dict)
    matrix: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))

    @classmethod
    def none(cls) -> "Descriptors":
        return cls()


def seed_everything(seed: int) -> None:
    # these networks are tiny: one thread is faster than two fighting over a busy machine
    torch.set_num_threads(1)
    random.seed(seed)
    np.random.seed(seed % (2**32 - 1))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def truncated_svd(y: np.ndarray, rank: int) -> np.ndarray:
    """The first `rank` right singular vectors of `y` (rank × genes), signs fixed (largest entry > 0)."""
    _, _, vt = np.linalg.svd(np.asarray(y, np.float64), full_matrices=False)
    comp = vt[: max(1, min(rank, vt.shape[0]))]
    signs = np.sign(comp[np.arange(len(comp)), np.abs(comp).argmax(axis=1)])
    return (comp * signs[:, None]).astype(np.float32)


class CompoundEmbedding(nn.Module):
    """Learned embeddings, replaced by a projected, trainable (or frozen) descriptor where one exists."""

    def __init__(self, n_compounds: int, dim: int, descriptor_rows: dict[int, np.ndarray], freeze: bool):
        super().__init__()
        self.learned = nn.Embedding(n_compounds, dim)
        has = np.zeros(n_compounds, dtype=bool)
        slot = np.zeros(n_compounds, dtype=np.int64)
        if descriptor_rows:
            ids = sorted(descriptor_rows)
            has[ids] = True
            slot[ids] = np.arange(len(ids))
            init = torch.tensor(np.stack([descriptor_rows[i] for i in ids]), dtype=torch.float32)
            self.descriptor = nn.Parameter(init, requires_grad=not freeze)
            self.projection = nn.Linear(init.shape[1], dim)
        else:
            self.descriptor = None
            self.projection = None
        self.register_buffer("has_descriptor", torch.tensor(has))
        self.register_buffer("slot", torch.tensor(slot))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        out = self.learned(idx)
        if self.descriptor is None:
            return out
        projected = self.projection(self.descriptor[self.slot[idx]])
        return torch.where(self.has_descriptor[idx][:, None], projected, out)


class PairMLP(nn.Module):
    def __init__(self, n_cells: int, n_compounds: int, n_out: int, cfg: PredictorConfig,
                 descriptor_rows: dict[int, np.ndarray]):
        super().__init__()
        self.cell = nn.Embedding(n_cells, cfg.embed_dim)
        self.compound = CompoundEmbedding(n_compounds, cfg.embed_dim, descriptor_rows, cfg.freeze_descriptors)
        layers, width = [], 2 * cfg.embed_dim
        for _ in range(cfg.n_blocks):
            layers += [nn.Linear(width, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout)]
            width = cfg.hidden
        layers.append(nn.Linear(width, n_out))
        self.mlp = nn.Sequential(*layers)

    def forward(self, cell: torch.Tensor, compound: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([self.cell(cell), self.compound(compound)], dim=1))


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def fit_predict_member(cells: np.ndarray, compounds: np.ndarray, y: np.ndarray, query_cells: np.ndarray,
                       query_compounds: np.ndarray, n_cells: int, n_compounds: int,
                       descriptor_rows: dict[int, np.ndarray], rank: int, seed: int, cfg: PredictorConfig
                       ) -> np.ndarray:
    """Train one network on (cells, compounds) → y and predict the query pairs (gene space)."""
    seed_everything(seed)
    comp = truncated_svd(y, rank)
    coef = y @ comp.T
    dev = _device()
    model = PairMLP(n_cells, n_compounds, comp.shape[0], cfg, descriptor_rows).to(dev)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    c = torch.as_tensor(cells, device=dev)
    m = torch.as_tensor(compounds, device=dev)
    target = torch.as_tensor(coef, dtype=torch.float32, device=dev)
    model.train()
    for _ in range(cfg.epochs):  # full batch: OP3 has hundreds of conditions
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(c, m), target)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model(torch.as_tensor(query_cells, device=dev), torch.as_tensor(query_compounds, device=dev))
    return out.cpu().numpy() @ comp


def ensemble(cells, compounds, y, query_cells, query_compounds, n_cells, n_compounds, descriptor_rows, seed,
             cfg: PredictorConfig) -> np.ndarray:
    preds = [fit_predict_member(cells, compounds, y, query_cells, query_compounds, n_cells, n_compounds,
                                descriptor_rows, rank, seed * 1000 + k, cfg)
             for k, rank in enumerate(cfg.ranks)]
    return np.mean(preds, axis=0)


def two_stage_predict(cell_types: list[str], compound_ids: list[str], y: np.ndarray, is_test: np.ndarray,
                      descriptors: Descriptors, seed: int, cfg: PredictorConfig = PredictorConfig()) -> np.ndarray:
    """Predictions (n_test × genes) for the test conditions.

    Parameters
    ----------
    cell_types, compound_ids
        One entry per condition (row of `y`).
    y
        Targets (conditions × genes); the test rows are never read.
    is_test
        Boolean mask of the held-out conditions.
    descriptors
        Vectors for some compounds (the descriptor-free variant passes :meth:`Descriptors.none`).
    """
    is_test = np.asarray(is_test, dtype=bool)
    cell_vocab = {c: i for i, c in enumerate(sorted(set(cell_types)))}
    comp_vocab = {c: i for i, c in enumerate(sorted(set(compound_ids)))}
    cells = np.array([cell_vocab[c] for c in cell_types], dtype=np.int64)
    comps = np.array([comp_vocab[c] for c in compound_ids], dtype=np.int64)
    rows = {comp_vocab[c]: descriptors.matrix[i].astype(np.float32)
            for c, i in descriptors.index.items() if c in comp_vocab}
    train, test = ~is_test, is_test
    y_train = np.asarray(y, np.float32)[train]
    stage1 = ensemble(cells[train], comps[train], y_train, cells[test], comps[test], len(cell_vocab),
                      len(comp_vocab), rows, seed, cfg)
    # stage 2: train + stage-1 pseudolabels of the test pairs
    cells2 = np.concatenate([cells[train], cells[test]])
    comps2 = np.concatenate([comps[train], comps[test]])
    y2 = np.concatenate([y_train, stage1.astype(np.float32)])
    return ensemble(cells2, comps2, y2, cells[test], comps[test], len(cell_vocab), len(comp_vocab), rows,
                    seed + 7919, cfg)
