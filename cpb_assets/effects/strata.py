"""Strata, batches and the design of one DE unit (METHODS §3).

A unit of work is one stratum (cell_type; GDPx2: cell_type × percent_volume_dmso)
or one batch of a large stratum. :class:`DEUnit` is a small, JSON-serialisable
spec (dataset, mode, stratum, batch, sample IDs, the dataset-wide dose-rounding
decision) so a unit can run on its own, e.g. as a SLURM job.
"""
from __future__ import annotations

import heapq
import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from cpb_assets.effects.labels import condition_labels, fmt, needs_dose_rounding
from cpb_assets.harmonize.schema import UNKNOWN
from cpb_assets.sources.registry import SOURCES

MAX_BATCH = 2500  # non-control samples per limma fit
MIN_CELLS: dict[str, int] = {"sciplex": 10, "op3": 10, "tahoe100m": 50}  # pseudobulk cells, else 0
STRATUM_EXTRA: dict[str, str] = {"gdpx2": "percent_volume_dmso"}


@dataclass(frozen=True)
class DEUnit:
    """One independent limma fit.

    Attributes
    ----------
    dataset, mode
        Dataset key and labeling mode (``group`` / ``sep``).
    stratum
        Stratum ID (``CVCL_0132``; GDPx2 ``CVCL_0132|dmso0.1``).
    batch, n_batches
        Batch number (1-based) of the stratum and how many batches it has.
    sample_ids
        obs names of the samples in this fit (controls included).
    round_doses
        The dataset-wide 4-decimal dose-rounding decision for labels.
    notes
        Human-readable notes on samples dropped while planning.
    rows
        Positions (0-based, increasing) of ``sample_ids`` in the harmonized
        AnnData the unit was planned from, so a worker reads only these rows.
    """

    dataset: str
    mode: str
    stratum: str
    batch: int
    n_batches: int
    sample_ids: tuple[str, ...]
    round_doses: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)
    rows: tuple[int, ...] = field(default_factory=tuple)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "DEUnit":
        d = json.loads(text)
        d["sample_ids"] = tuple(d["sample_ids"])
        d["notes"] = tuple(d.get("notes", ()))
        d["rows"] = tuple(int(r) for r in d.get("rows", ()))
        return cls(**d)


def de_times_h(dataset: str) -> tuple[float, ...] | None:
    """Times (h) the DE layer keeps for `dataset` (None: every time), from the source registry.

    METHODS §3: Tahoe-100M, sci-Plex, OP3 and L1000 at 24 h only; the
    harmonized AnnData keeps every time.
    """
    spec = SOURCES.get(dataset)
    return None if spec is None else spec.de_times_h


def time_mask(obs: pd.DataFrame, dataset: str) -> np.ndarray:
    """Samples inside the DE time restriction of `dataset` (controls included)."""
    keep_times = de_times_h(dataset)
    if keep_times is None:
        return np.ones(len(obs), dtype=bool)
    return obs["pert_time_h"].astype(float).isin(list(keep_times)).to_numpy()


def stratum_ids(obs: pd.DataFrame, dataset: str) -> pd.Series:
    """Stratum of each sample: cell_type, for GDPx2 × percent_volume_dmso."""
    ct = obs["cell_type"].astype(str)
    extra = STRATUM_EXTRA.get(dataset)
    if extra is None:
        return ct.rename("stratum")
    if extra not in obs.columns:
        raise KeyError(f"dataset '{dataset}' is stratified by obs['{extra}'], which is missing")
    pct = obs[extra].map(lambda v: fmt(v) if pd.notna(v) else "NA")
    return (ct + "|dmso" + pct.astype(str)).rename("stratum")


def min_cells_mask(obs: pd.DataFrame, dataset: str) -> np.ndarray:
    """Samples kept by the pseudobulk minimum-cell filter (−666 'unknown' always kept)."""
    need = MIN_CELLS.get(dataset, 0)
    cells = obs["psbulk_cells"].to_numpy()
    return (cells == UNKNOWN) | (cells >= need)


def pack_batches(condition_sizes: dict[str, int], max_size: int = MAX_BATCH) -> list[list[str]]:
    """Pack whole conditions into batches of about `max_size` samples.

    The number of batches starts at ceil(total / max_size); conditions go,
    largest first, to the lightest batch (ties: lowest batch number). If a
    batch holding more than one condition then exceeds `max_size`, one more
    batch is tried. A single condition larger than `max_size` gets a batch
    of its own.

    Parameters
    ----------
    condition_sizes
        Non-control samples per treated condition.
    max_size
        Target batch size (samples).

    Returns
    -------
    Batches as lists of condition names, each in the input order; the
    batches ordered by their first condition's input position.
    """
    if max_size < 1:
        raise ValueError("max_size must be positive")
    names = list(condition_sizes)
    total = sum(condition_sizes.values())
    if total <= max_size:
        return [names] if names else []
    pos = {n: i for i, n in enumerate(names)}
    order = sorted(names, key=lambda n: (-condition_sizes[n], pos[n]))
    n_bins = math.ceil(total / max_size)
    while True:
        heap = [(0, b) for b in range(n_bins)]
        bins: list[list[str]] = [[] for _ in range(n_bins)]
        loads = [0] * n_bins
        for n in order:
            load, b = heapq.heappop(heap)
            bins[b].append(n)
            loads[b] = load + condition_sizes[n]
            heapq.heappush(heap, (loads[b], b))
        if all(loads[b] <= max_size or len(bins[b]) == 1 for b in range(n_bins)) or n_bins >= len(names):
            break
        n_bins += 1
    bins = [sorted(b, key=pos.__getitem__) for b in bins if b]
    return sorted(bins, key=lambda b: pos[b[0]])


def plan_units(obs: pd.DataFrame, dataset: str, mode: str, max_batch: int = MAX_BATCH) -> tuple[list[DEUnit], list[dict]]:
    """Split a harmonized dataset into independent DE units.

    Steps: the DE time restriction (:func:`de_times_h`); minimum-cell
    filter; strata; batches of about `max_batch`
    non-control samples (whole treated conditions, grouped by their group
    label in both modes so group and sep fit the same samples), controls
    copied into every batch; controls at times without treated samples in
    the batch dropped.

    Returns
    -------
    units
        Units to fit, in stratum order (Python sort, locale-independent).
    skipped
        Strata-table rows (dicts) for strata with nothing to fit.
    """
    pos = pd.Series(np.arange(len(obs)), index=obs.index)
    in_time = time_mask(obs, dataset)
    n_time = int((~in_time).sum())
    keep = min_cells_mask(obs, dataset) & in_time
    n_low = int((~keep & in_time).sum())
    obs = obs.loc[keep]
    rounding = needs_dose_rounding(obs.loc[~obs["is_control"].to_numpy(dtype=bool), "pert_dose_uM"])
    labels = condition_labels(obs, dataset, mode, round_doses=rounding)
    strata = stratum_ids(obs, dataset)
    units: list[DEUnit] = []
    skipped: list[dict] = []
    for stratum in sorted(strata.unique()):
        sub = obs.loc[(strata == stratum).to_numpy()]
        lab = labels.loc[sub.index]
        ctrl = sub["is_control"].to_numpy(dtype=bool)
        notes = []
        if n_time:
            notes.append(f"{n_time} samples of the dataset outside the DE times "
                         f"{[fmt(t) for t in de_times_h(dataset)]} h left out")
        if n_low:
            notes.append(f"{n_low} samples of the dataset below {MIN_CELLS.get(dataset, 0)} cells dropped")
        if not (~ctrl).any():
            skipped.append(skip_row(dataset, mode, stratum, 1, n_samples=len(sub), n_controls=int(ctrl.sum()),
                                    reason="no treated samples"))
            continue
        sizes = lab.loc[~ctrl, "group_label"].value_counts(sort=False)
        sizes = sizes.loc[pd.unique(lab.loc[~ctrl, "group_label"])]
        batches = pack_batches({k: int(v) for k, v in sizes.items()}, max_batch)
        times = sub["pert_time_h"].to_numpy(dtype=float)
        for b, conds in enumerate(batches, start=1):
            treated = (~ctrl) & lab["group_label"].isin(conds).to_numpy()
            t_times = set(times[treated].tolist())
            controls = ctrl & pd.Series(times).isin(list(t_times)).to_numpy()  # isin matches NaN to NaN
            n_orphan = int((ctrl & ~controls).sum())
            unit_notes = list(notes)
            if n_orphan:
                unit_notes.append(f"{n_orphan} controls at times without treated samples dropped")
            ids = tuple(sub.index[treated | controls].astype(str))
            rows = tuple(int(r) for r in pos.loc[list(ids)].to_numpy()) if ids else ()
            units.append(DEUnit(dataset, mode, str(stratum), b, len(batches), ids, rounding, tuple(unit_notes),
                                rows))
    return units, skipped


def skip_row(dataset: str, mode: str, stratum: str, batch: int, *, n_samples: int = 0, n_controls: int = 0,
             n_contrasts: int = 0, reason: str, seconds: float = 0.0) -> dict:
    """A strata-table row for a unit that was not fitted."""
    return {"dataset": dataset, "mode": mode, "stratum": stratum, "batch": batch, "n_samples": n_samples,
            "n_controls": n_controls, "n_contrasts": n_contrasts, "n_plate_confounded": 0, "genes_kept": 0, "df_prior": np.nan,
            "s2_prior": np.nan, "status": "skipped", "reason": reason, "seconds": seconds}


@dataclass
class Design:
    """Design and contrasts of one unit, with safe names mapped to real labels.

    Attributes
    ----------
    design
        (samples × coefficients): ``c0001…`` condition indicators (``~0 + cond``)
        then ``plate02…`` treatment-coded plate effects when there is more than one plate.
    contrasts
        (coefficients × contrasts): ``k0001…`` = treated − control at the same time.
    coef_labels
        Safe coefficient name → condition label or plate.
    contrast_table
        One row per contrast: contrast (safe name), treated_label, control_label,
        plate_confounded (set by :func:`lmfit_design`).
    """

    design: pd.DataFrame
    contrasts: pd.DataFrame
    coef_labels: dict[str, str]
    contrast_table: pd.DataFrame


def build_design(obs: pd.DataFrame, labels: pd.Series) -> Design:
    """``~0 + cond (+ plate)`` and every treated-minus-control contrast at the same time.

    Level order is fixed in Python (sorted labels; plates sorted, the first
    one the reference), never left to R's locale-dependent ``sort``.

    Parameters
    ----------
    obs
        obs of the unit's samples (is_control, pert_time_h, plate).
    labels
        Condition label of each sample (index = obs.index).
    """
    labels = labels.loc[obs.index].astype(str)
    conds = sorted(labels.unique())
    coef_of = {c: f"c{i:04d}" for i, c in enumerate(conds, start=1)}
    lab = labels.to_numpy()
    cols = {coef_of[c]: (lab == c).astype(float) for c in conds}
    coef_labels = {v: k for k, v in coef_of.items()}
    plates = sorted(obs["plate"].astype(str).unique())
    if len(plates) > 1:
        pl = obs["plate"].astype(str).to_numpy()
        for i, p in enumerate(plates[1:], start=2):
            name = f"plate{i:02d}" if len(plates) < 100 else f"plate{i:05d}"
            cols[name] = (pl == p).astype(float)
            coef_labels[name] = p
    design = pd.DataFrame(cols, index=obs.index)

    ctrl = obs["is_control"].to_numpy(dtype=bool)
    time_of = {}
    is_ctrl_cond = {}
    for c, t, k in zip(lab, obs["pert_time_h"].to_numpy(dtype=float), ctrl):
        time_of.setdefault(c, t)
        is_ctrl_cond[c] = k
    treated = [c for c in conds if not is_ctrl_cond[c]]
    controls = [c for c in conds if is_ctrl_cond[c]]
    rows, vecs = [], []
    for tr in treated:
        for co in controls:
            if _same_time(time_of[tr], time_of[co]):
                v = np.zeros(len(design.columns))
                v[design.columns.get_loc(coef_of[tr])] = 1.0
                v[design.columns.get_loc(coef_of[co])] = -1.0
                name = f"k{len(rows) + 1:04d}" if len(treated) * len(controls) < 10000 else f"k{len(rows) + 1:07d}"
                rows.append((name, tr, co))
                vecs.append(v)
    table = pd.DataFrame(rows, columns=["contrast", "treated_label", "control_label"]).assign(plate_confounded=False)
    contrasts = pd.DataFrame(np.array(vecs).T if vecs else np.zeros((len(design.columns), 0)),
                             index=design.columns, columns=table["contrast"].tolist())
    return Design(design, contrasts, coef_labels, table)


def _same_time(a: float, b: float) -> bool:
    return (np.isnan(a) and np.isnan(b)) or a == b


def non_estimable(design: pd.DataFrame, coef_labels: dict[str, str]) -> list[str]:
    """Labels of design columns that are linear combinations of earlier ones (empty: full rank)."""
    from scipy.linalg import qr

    x = design.to_numpy(dtype=float)
    if x.shape[1] == 0:
        return []
    _, r, piv = qr(x, mode="economic", pivoting=True)
    d = np.abs(np.diag(r))
    tol = d.max() * max(x.shape) * np.finfo(float).eps if d.size else 0.0
    rank = int((d > tol).sum())
    return [coef_labels.get(design.columns[j], design.columns[j]) for j in sorted(piv[rank:])]


def lmfit_design(des: Design, tol: float = 1e-8) -> tuple[Design, list[str], np.ndarray]:
    """What limma's ``lmFit`` does with a rank-deficient design; every contrast kept, the affected ones flagged.

    ``lmFit`` (``lm.fit``'s pivoting QR) moves every column that is a linear
    combination of the columns before it to the end and reports its
    coefficient as NA; ``contrasts.fit`` then keeps every contrast that puts
    no weight on those columns. Condition indicators come first and are
    disjoint, so only plate columns are ever aliased (plates nested in time
    points, as L1000 plates are; a plate holding one condition only; a plate
    whose controls were filtered away). Fitting the design without those
    columns gives ``lmFit``'s numbers exactly and keeps ``contrasts.fit``'s
    fast path.

    A contrast ``c`` is *plate-confounded* when it is not estimable in the full
    model: for some dropped column ``x_j = X_kept a_j`` it has ``c · a_j ≠ 0``.
    limma still returns it; its estimate then also carries the aliased plate
    effect (e.g. a condition alone on its plate). It is kept and flagged.

    Returns
    -------
    design
        The reduced Design (full column rank), every contrast of `des`, its
        ``contrast_table`` with a boolean ``plate_confounded`` column.
    aliased
        Labels of the dropped (aliased) plate columns.
    confounded
        Boolean per contrast (order of ``des.contrast_table``).
    """
    X = des.design.to_numpy(dtype=float)
    names = list(des.design.columns)
    is_plate = np.array([n.startswith("plate") for n in names])
    cond = X[:, ~is_plate]
    if np.any(cond.sum(axis=1) != 1) or np.any(cond.sum(axis=0) == 0) or np.any(is_plate[:int((~is_plate).sum())]):
        raise ValueError("condition columns must come first and be disjoint, non-empty indicators")
    # the condition indicators are orthogonal and all kept: project them out of the plate columns at
    # once (per-condition means), then Gram-Schmidt over the plate residuals in column order, as lm.fit pivots
    P = X[:, is_plate]
    resid = P - cond @ ((cond.T @ P) / cond.sum(axis=0)[:, None])
    kept = list(np.flatnonzero(~is_plate))
    dropped = []
    basis: list[np.ndarray] = []
    for k, j in enumerate(np.flatnonzero(is_plate)):
        v = resid[:, k].copy()
        for b in basis:
            v -= (b @ v) * b
        norm = np.linalg.norm(v)
        if norm > tol * max(1.0, np.linalg.norm(X[:, j])):
            basis.append(v / norm)
            kept.append(int(j))
        else:
            dropped.append(int(j))
    C = des.contrasts.to_numpy(dtype=float)
    confounded = np.zeros(C.shape[1], dtype=bool)
    if dropped:
        Xk = X[:, kept]
        for j in dropped:
            a, *_ = np.linalg.lstsq(Xk, X[:, j], rcond=None)  # x_j = X_kept a
            confounded |= np.abs(C[kept].T @ a - C[j]) > 1e-6
    table = des.contrast_table.assign(plate_confounded=confounded)
    reduced = Design(design=des.design.iloc[:, kept], contrasts=des.contrasts.iloc[kept, :],
                     coef_labels={names[j]: des.coef_labels[names[j]] for j in kept}, contrast_table=table)
    return reduced, [des.coef_labels[names[j]] for j in dropped], confounded
