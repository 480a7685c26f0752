"""The Large Perturbation Model (LPM) in torch: scalar and multi-output forms (METHODS §5).

Pure torch, no Dagster. Both models embed the symbolic inputs of one
perturbation experiment and regress the log2 fold change:

* :class:`ScalarLPM` — one row per (sample, readout gene): embeddings (128-d)
  of dataset, context, perturbation and readout, and ``Linear(1→128)`` of
  log10 dose (µM) and of time (h), concatenated in that order (768-d) →
  ``[Linear 256, ReLU, Dropout 0.1] × 2`` → ``Linear(256 → 1)``; MSE.
* :class:`MultiOutputLPM` — one row per sample: the same inputs without the
  readout (640-d) → the same MLP body → ``Linear(256 → |gene vocabulary|)``;
  loss and RMSE only over each sample's observed genes
  (:func:`masked_mse`), value-weighted over the batch.

Perturbations are integer codes into a vocabulary whose code 0 is "Control".
A combination "A+B" is a row of several codes averaged by
``EmbeddingBag(mode="mean")``; rows are padded with :data:`PAD` (-1).

Initialisation: Xavier-uniform with gain √2 on the MLP Linear layers (the
two hidden layers and the output head) only; embeddings N(0, 1); the dose and
time projections and every bias keep torch's defaults.

Morgan fingerprints (RDKit radius 2, 128 bits) can stand in for the
perturbation embedding: ``morgan="fixed"`` loads them and freezes the table,
``morgan="learned"`` loads them as the initial value (``embedding_dim`` must
then be 128).
"""
from __future__ import annotations

import os
import random
from typing import Literal, Optional

import numpy as np
import torch
from torch import nn

PAD = -1  # padding code in a perturbation row ("A+B" has 2 codes, a single compound 1)
EMBED_DIM = 128
HIDDEN = 256
DROPOUT = 0.1
MorganMode = Optional[Literal["fixed", "learned"]]


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed random, numpy and torch (CPU and CUDA) and ask torch for deterministic kernels.

    ``CUBLAS_WORKSPACE_CONFIG`` is set because cuBLAS needs it for
    deterministic matrix products on CUDA ≥ 10.2.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)
        if torch.backends.cudnn.is_available():
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class PerturbationBag(nn.Module):
    """Mean of the embeddings of a row of perturbation codes (``EmbeddingBag(mode="mean")``).

    Parameters
    ----------
    n_perturbations
        Vocabulary size (code 0 = "Control").
    dim
        Embedding width.
    morgan
        None (N(0, 1) initialisation), "fixed" (``fingerprints`` loaded and
        frozen) or "learned" (``fingerprints`` as the initial value).
    fingerprints
        (n_perturbations, dim) float array of Morgan bits; zero rows for Control
        and compounds without a valid structure.
    """

    def __init__(self, n_perturbations: int, dim: int = EMBED_DIM, morgan: MorganMode = None,
                 fingerprints: Optional[np.ndarray | torch.Tensor] = None) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(n_perturbations, dim, mode="mean")
        self.morgan = morgan
        if morgan is not None:
            if fingerprints is None:
                raise ValueError(f"morgan={morgan!r} needs a fingerprint matrix")
            fp = torch.as_tensor(np.asarray(fingerprints), dtype=torch.float32)
            if fp.shape != (n_perturbations, dim):
                raise ValueError(f"fingerprints must be ({n_perturbations}, {dim}) (embedding_dim = fpSize), "
                                 f"got {tuple(fp.shape)}")
            with torch.no_grad():
                self.bag.weight.copy_(fp)
            if morgan == "fixed":
                self.bag.weight.requires_grad_(False)
        elif fingerprints is not None:
            raise ValueError("fingerprints given without morgan='fixed' or 'learned'")

    @property
    def weight(self) -> torch.Tensor:
        return self.bag.weight

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """codes: (batch, k) int64, padded with :data:`PAD`; at least one code per row."""
        if codes.dim() == 1:
            codes = codes[:, None]
        if codes.shape[1] == 1 or bool((codes != PAD).all()):
            return self.bag(codes)  # equal-length bags: 2-D input, no offsets needed
        mask = codes != PAD
        counts = mask.sum(1)
        offsets = torch.cumsum(counts, 0) - counts
        return self.bag(codes[mask], offsets)


class _LPMBase(nn.Module):
    def __init__(self, n_datasets: int, n_contexts: int, n_perturbations: int, n_out: int, n_readouts: int = 0,
                 dim: int = EMBED_DIM, hidden: int = HIDDEN, dropout: float = DROPOUT, morgan: MorganMode = None,
                 fingerprints=None) -> None:
        super().__init__()
        self.dataset_emb = nn.Embedding(n_datasets, dim)
        self.context_emb = nn.Embedding(n_contexts, dim)
        self.perturbation_emb = PerturbationBag(n_perturbations, dim, morgan, fingerprints)
        self.readout_emb = nn.Embedding(n_readouts, dim) if n_readouts else None
        self.dose_proj = nn.Linear(1, dim)
        self.time_proj = nn.Linear(1, dim)
        n_in = dim * (6 if n_readouts else 5)
        self.mlp = nn.Sequential(
            nn.Linear(n_in, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, n_out),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        gain = 2 ** 0.5
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight, gain=gain)  # biases keep torch defaults
        for emb in (self.dataset_emb, self.context_emb, self.readout_emb):
            if emb is not None:
                nn.init.normal_(emb.weight, 0.0, 1.0)
        if self.perturbation_emb.morgan is None:
            nn.init.normal_(self.perturbation_emb.weight, 0.0, 1.0)

    def _features(self, dataset, context, perturbation, log_dose, time, readout=None) -> torch.Tensor:
        parts = [self.dataset_emb(dataset), self.context_emb(context), self.perturbation_emb(perturbation)]
        if self.readout_emb is not None:
            parts.append(self.readout_emb(readout))
        dtype = self.dose_proj.weight.dtype
        parts += [self.dose_proj(log_dose.reshape(-1, 1).to(dtype)), self.time_proj(time.reshape(-1, 1).to(dtype))]
        return torch.cat(parts, dim=1)

    def freeze_perturbations(self) -> None:
        """Freeze the perturbation embedding table (the "frozen mol" fine-tuning variants)."""
        self.perturbation_emb.weight.requires_grad_(False)

    def perturbation_embeddings(self) -> np.ndarray:
        """(n_perturbations, dim) float32 copy of the perturbation table."""
        return self.perturbation_emb.weight.detach().float().cpu().numpy().copy()


class ScalarLPM(_LPMBase):
    """Scalar LPM: one prediction per (sample, readout gene). See the module docstring."""

    def __init__(self, n_datasets: int, n_contexts: int, n_perturbations: int, n_readouts: int, *,
                 dim: int = EMBED_DIM, hidden: int = HIDDEN, dropout: float = DROPOUT, morgan: MorganMode = None,
                 fingerprints=None) -> None:
        if n_readouts < 1:
            raise ValueError("the scalar LPM needs a readout vocabulary")
        super().__init__(n_datasets, n_contexts, n_perturbations, 1, n_readouts, dim, hidden, dropout, morgan,
                         fingerprints)

    def forward(self, dataset: torch.Tensor, context: torch.Tensor, perturbation: torch.Tensor,
                readout: torch.Tensor, log_dose: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """(batch,) predicted log2 fold changes."""
        return self.mlp(self._features(dataset, context, perturbation, log_dose, time, readout)).squeeze(1)


class MultiOutputLPM(_LPMBase):
    """Multi-output LPM: one vector over the gene vocabulary per sample. See the module docstring."""

    def __init__(self, n_datasets: int, n_contexts: int, n_perturbations: int, n_genes: int, *,
                 dim: int = EMBED_DIM, hidden: int = HIDDEN, dropout: float = DROPOUT, morgan: MorganMode = None,
                 fingerprints=None) -> None:
        super().__init__(n_datasets, n_contexts, n_perturbations, n_genes, 0, dim, hidden, dropout, morgan,
                         fingerprints)

    def forward(self, dataset: torch.Tensor, context: torch.Tensor, perturbation: torch.Tensor,
                log_dose: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """(batch, n_genes) predicted log2 fold changes."""
        return self.mlp(self._features(dataset, context, perturbation, log_dose, time))


def masked_sse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of squared errors over observed entries and their count.

    ``torch.where`` rather than multiplying by the mask, so that whatever
    sits in unobserved target entries (NaN included) reaches neither the loss
    nor the gradient.
    """
    diff = torch.where(mask, pred.float() - torch.where(mask, target, 0.0).float(), 0.0)
    return (diff * diff).sum(), mask.sum()


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all observed (sample, gene) entries of the batch (value-weighted)."""
    sse, n = masked_sse(pred, target, mask)
    return sse / n.clamp(min=1)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = ["PAD", "EMBED_DIM", "ScalarLPM", "MultiOutputLPM", "PerturbationBag", "masked_mse", "masked_sse",
           "seed_everything", "default_device", "count_parameters"]
