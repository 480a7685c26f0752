"""Condition labels of the DE layer (METHODS §3).

Two labelings per dataset:

- ``group`` (group_all_replicates): treated ``{pert}_{dose}uM_{time}h``;
- ``sep`` (separate_replicates): treated ``{pert}_{dose}uM_{time}h_{well}_{plate}``;
- controls, in both: ``{pert}_{time}h``.

Dose (µM) and time (h) are printed with ``%.15g``. If any dose of the dataset
has more than 4 decimals, every dose is rounded half-up to 4 decimals first.
For L1000 datasets the PubChem CID replaces the perturbagen name when present
(controls included: the rule is stated for the label, not for treated samples
only).
"""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pandas as pd

from cpb_assets.datasets import L1000_DATASETS

MODES = ("group", "sep")
DOSE_DECIMALS = 4
_QUANTUM = Decimal(1).scaleb(-DOSE_DECIMALS)  # 0.0001


def fmt(x: float) -> str:
    """A number as C's ``%.15g`` prints it (``10.0`` → ``'10'``, ``1e-05`` → ``'1e-05'``)."""
    return "%.15g" % float(x)


def _decimal(x: float) -> Decimal:
    # The %.15g text is the number the labels show; reading it (not the binary
    # float) makes 2.675 round half-up to 2.675 rather than 2.67499999...
    return Decimal(fmt(x))


def n_decimals(x: float) -> int:
    """Decimals of a dose as ``%.15g`` writes it (``0.12345`` → 5, ``1e-05`` → 5, ``10`` → 0)."""
    if not np.isfinite(x):
        return 0
    exp = _decimal(x).normalize().as_tuple().exponent
    return max(0, -int(exp))


def needs_dose_rounding(doses) -> bool:
    """True when any dose has more than 4 decimals (then all doses are rounded)."""
    return any(n_decimals(d) > DOSE_DECIMALS for d in np.asarray(doses, dtype=float))


def round_half_up(x: float, decimals: int = DOSE_DECIMALS) -> float:
    """Round half-up (not banker's) to `decimals` places; NaN stays NaN."""
    if not np.isfinite(x):
        return float(x)
    return float(_decimal(x).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP))


def label_doses(doses, round_doses: bool | None = None) -> np.ndarray:
    """Doses (µM) as they enter the labels.

    Parameters
    ----------
    doses
        Doses in µM.
    round_doses
        Apply the 4-decimal half-up rounding; None decides from `doses`
        themselves (pass the dataset-wide decision when labelling a subset).
    """
    doses = np.asarray(doses, dtype=float)
    if round_doses is None:
        round_doses = needs_dose_rounding(doses)
    if not round_doses:
        return doses.copy()
    return np.array([round_half_up(d) for d in doses], dtype=float)


def pert_names(obs: pd.DataFrame, dataset: str) -> pd.Series:
    """The perturbagen token of each label: the CID for L1000 when present, else the name."""
    name = obs["perturbagen"].astype(object).astype(str)
    if dataset not in L1000_DATASETS:
        return name
    cid = obs["pubchem_cid"].astype(object)
    has = cid.map(lambda c: isinstance(c, str) and c.strip() != "" and c.lower() not in ("nan", "none"))
    return name.where(~has, cid.astype(str).str.strip())


def condition_labels(obs: pd.DataFrame, dataset: str, mode: str,
                     round_doses: bool | None = None) -> pd.DataFrame:
    """Label every sample for one labeling mode.

    Parameters
    ----------
    obs
        Harmonized obs (METHODS §2): perturbagen, pubchem_cid, is_control,
        pert_dose_uM (µM), pert_time_h (h), plate, well.
    dataset
        Dataset key (L1000 datasets use CIDs in labels).
    mode
        ``group`` or ``sep``.
    round_doses
        Dataset-wide decision for the 4-decimal rule; None: decide from `obs`.

    Returns
    -------
    DataFrame indexed like `obs` with ``label`` (the condition), ``group_label``
    (the treated condition without replicate keys; equals ``label`` for
    controls), ``pert`` (name token) and ``dose_uM`` (the dose as labelled).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    pert = pert_names(obs, dataset)
    dose = label_doses(obs["pert_dose_uM"].to_numpy(dtype=float), round_doses)
    time = obs["pert_time_h"].to_numpy(dtype=float)
    ctrl = obs["is_control"].to_numpy(dtype=bool)
    group, label = [], []
    for p, d, t, c, w, pl in zip(pert, dose, time, ctrl, obs["well"].astype(str), obs["plate"].astype(str)):
        if c:
            g = f"{p}_{fmt(t)}h"
            group.append(g)
            label.append(g)
        else:
            g = f"{p}_{fmt(d)}uM_{fmt(t)}h"
            group.append(g)
            label.append(g if mode == "group" else f"{g}_{w}_{pl}")
    return pd.DataFrame({"label": label, "group_label": group, "pert": pert.to_numpy(), "dose_uM": dose},
                        index=obs.index)
