"""Dose and time units: everything to µM and hours (METHODS §2)."""
from __future__ import annotations

import math
import re

# Factor that turns one unit into µM. Micro is written three ways in the wild:
# U+00B5 MICRO SIGN, U+03BC GREEK MU and ASCII "u".
DOSE_TO_UM: dict[str, float] = {
    "pm": 1e-6,
    "nm": 1e-3,
    "um": 1.0,
    "µm": 1.0,
    "μm": 1.0,
    "mm": 1e3,
    "m": 1e6,
}
TIME_TO_H: dict[str, float] = {
    "s": 1 / 3600, "sec": 1 / 3600,
    "m": 1 / 60, "min": 1 / 60, "mins": 1 / 60, "minute": 1 / 60, "minutes": 1 / 60,
    "h": 1.0, "hr": 1.0, "hrs": 1.0, "hour": 1.0, "hours": 1.0,
    "d": 24.0, "day": 24.0, "days": 24.0,
}
_QUANTITY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([^\d\s].*?)?\s*$")


class UnitError(ValueError):
    """An unknown or malformed dose/time unit."""


def dose_to_uM(value: float, unit: str) -> float:
    """Convert a dose to micromolar.

    Parameters
    ----------
    value
        The dose in `unit`.
    unit
        One of pM, nM, µM (µ, μ or u), mM, M; case-insensitive.

    Returns
    -------
    The dose in µM.
    """
    key = unit.strip().lower()
    if key not in DOSE_TO_UM:
        raise UnitError(f"unknown dose unit {unit!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise UnitError(f"dose must be a finite number >= 0, got {value!r}")
    return value * DOSE_TO_UM[key]


def time_to_h(value: float, unit: str) -> float:
    """Convert a time to hours (days × 24, minutes ÷ 60)."""
    key = unit.strip().lower()
    if key not in TIME_TO_H:
        raise UnitError(f"unknown time unit {unit!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise UnitError(f"time must be a finite number >= 0, got {value!r}")
    return value * TIME_TO_H[key]


def _split(text: str, what: str) -> tuple[float, str]:
    m = _QUANTITY.match(str(text))
    if not m or not m.group(2):
        raise UnitError(f"cannot read a {what} with unit from {text!r}")
    return float(m.group(1)), m.group(2)


def parse_dose(text: str) -> float:
    """Parse a dose string such as ``"10 µM"`` or ``"500nM"``; returns µM."""
    return dose_to_uM(*_split(text, "dose"))


def parse_time(text: str) -> float:
    """Parse a time string such as ``"24 h"`` or ``"2 d"``; returns hours."""
    return time_to_h(*_split(text, "time"))
