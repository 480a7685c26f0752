"""LPM training configuration and model selection (METHODS §5): plain Python, no torch.

Kept apart from :mod:`cpb_assets.lpm.train` so that the Dagster definitions
(which build run configs and pick fine-tuning sources) load without importing
torch; :mod:`cpb_assets.lpm.train` uses and re-exports these names.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Literal, Optional

Form = Literal["scalar", "multi"]
# the paper's effective batches (METHODS §5)
PAPER_BATCH = {"scalar": 262_144, "multi": 8_192}
PAPER_EPOCHS = {"scalar": 25, "multi": 200}


# --------------------------------------------------------------------------- configuration
@dataclass
class TrainConfig:
    """Hyperparameters of one training run. Defaults are the paper's, except epochs and batch (demo-sized).

    Attributes
    ----------
    form
        "scalar" or "multi".
    epochs
        Epochs (paper: 25 scalar, up to 200 multi-output).
    batch_size
        Effective batch in rows (paper: 262,144 scalar, 8,192 multi-output).
    micro_batch
        Rows per forward pass; gradients are accumulated up to `batch_size`
        (0: one pass per batch).
    morgan
        None, "fixed" or "learned" (perturbation embedding from Morgan bits).
    freeze_perturbations
        Freeze the perturbation table (fine-tuning "frozen mol" / "fixmol").
    init_checkpoint
        Fine-tuning: load all weights (and the vocabularies) of this epoch file.
    mix_shards
        Training shards read together and shuffled as one (batches spanning
        dataset_contexts; memory: that many shards).
    device
        "auto" (CUDA when present), "cpu" or "cuda".
    amp, compile
        bfloat16 autocast / ``torch.compile`` (honoured on CUDA only).
    """

    form: Form = "multi"
    seed: int = 13
    epochs: int = 4
    batch_size: int = 256
    micro_batch: int = 0
    lr: float = 2e-3
    weight_decay: float = 0.01
    gamma: float = 0.97
    dim: int = 128
    hidden: int = 256
    dropout: float = 0.1
    morgan: Optional[str] = None
    freeze_perturbations: bool = False
    init_checkpoint: Optional[str] = None
    eval_batch: int = 4096
    mix_shards: int = 4
    device: str = "auto"
    amp: bool = False
    compile: bool = False
    deterministic: bool = True

    def hyperparameters(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("init_checkpoint", "device")}


def paper_config(form: Form, **overrides) -> TrainConfig:
    """The paper's settings (METHODS §5): effective batch 262,144 / 8,192, 25 / 200 epochs."""
    micro = {"scalar": 16_384, "multi": 4_096}[form]
    base = dict(form=form, epochs=PAPER_EPOCHS[form], batch_size=PAPER_BATCH[form], micro_batch=micro)
    return TrainConfig(**{**base, **overrides})


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


# --------------------------------------------------------------------------- selection (METHODS §5)
def best_epoch(history: list[dict], dataset: Optional[str] = None) -> Optional[dict]:
    """The epoch row with the lowest validation RMSE on `dataset` (overall when None); ties → earliest.

    Returns None when no epoch has a validation RMSE for it.
    """
    key = f"val_rmse/{dataset}" if dataset else "val_rmse"
    rows = [h for h in history if _finite(h.get(key))]
    return min(rows, key=lambda h: (h[key], h["epoch"])) if rows else None


def select_per_dataset(history: list[dict], datasets: Iterable[str]) -> dict[str, dict]:
    """"All" / Scratch rule: per dataset, the best-validation epoch and its test RMSE."""
    out = {}
    for d in datasets:
        row = best_epoch(history, d)
        if row is not None:
            out[d] = {"epoch": row["epoch"], "val_rmse": row[f"val_rmse/{d}"],
                      "test_rmse": row.get(f"test_rmse/{d}", float("nan"))}
    return out


def select_source(histories: dict[int, list[dict]], target: str) -> Optional[tuple[int, int, float]]:
    """Fine-tuning source: (seed, epoch, val RMSE) with the best validation RMSE on `target` over all seeds
    and epochs; ties → smaller seed, then earlier epoch."""
    best = None
    for seed, hist in sorted(histories.items()):
        for h in hist:
            v = h.get(f"val_rmse/{target}")
            if _finite(v) and (best is None or v < best[2]):
                best = (seed, h["epoch"], v)
    return best


__all__ = ["Form", "PAPER_BATCH", "PAPER_EPOCHS", "TrainConfig", "paper_config", "best_epoch", "select_per_dataset",
           "select_source"]
