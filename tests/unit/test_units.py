"""Dose and time units (METHODS §2): hand-computed cases and properties."""
import math

import pytest
from hypothesis import given, strategies as st

from cpb_assets.harmonize.units import UnitError, dose_to_uM, parse_dose, parse_time, time_to_h


@pytest.mark.parametrize("text, expected", [
    ("10 µM", 10.0), ("10 μM", 10.0), ("10uM", 10.0), ("10 um", 10.0), ("500 nM", 0.5), ("500nm", 0.5),
    ("2 mM", 2000.0), ("1 M", 1e6), ("0.12 uM", 0.12), ("1e-3 mM", 1.0), ("250 pM", 0.00025), (".5 µM", 0.5),
])
def test_parse_dose_known(text, expected):
    assert parse_dose(text) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("text, expected", [
    ("24 h", 24.0), ("24h", 24.0), ("6 hours", 6.0), ("2 d", 48.0), ("3 days", 72.0), ("30 min", 0.5),
    ("90 m", 1.5), ("1 day", 24.0),
])
def test_parse_time_known(text, expected):
    assert parse_time(text) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["10 furlongs", "10", "µM", "", "ten µM", "-5 µM", "10 kg"])
def test_parse_dose_rejects(bad):
    with pytest.raises(UnitError):
        parse_dose(bad)


units = st.sampled_from([("nM", 1e-3), ("µM", 1.0), ("μM", 1.0), ("uM", 1.0), ("mM", 1e3), ("M", 1e6)])
values = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)


@given(values, units)
def test_dose_string_roundtrip(v, unit):
    """Any value printed with any unit parses back to value × factor."""
    name, factor = unit
    assert parse_dose(f"{v!r} {name}") == pytest.approx(v * factor, rel=1e-12, abs=1e-300)
    assert parse_dose(f"{v!r}{name}") == parse_dose(f"{v!r} {name}")


@given(values)
def test_dose_units_are_consistent(v):
    """1000 nM is 1 µM is 0.001 mM, for every amount."""
    assert dose_to_uM(v * 1000, "nM") == pytest.approx(dose_to_uM(v, "µM"), rel=1e-12)
    assert dose_to_uM(v / 1000, "mM") == pytest.approx(dose_to_uM(v, "uM"), rel=1e-12)


@given(st.floats(min_value=0, max_value=1e4, allow_nan=False))
def test_time_units_are_consistent(v):
    assert time_to_h(v, "d") == pytest.approx(24 * v)
    assert time_to_h(v * 60, "min") == pytest.approx(v)


@given(st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not math.isfinite(x) or x < 0))
def test_non_finite_or_negative_rejected(v):
    with pytest.raises(UnitError):
        dose_to_uM(v, "µM")
