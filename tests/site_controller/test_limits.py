"""Site limits: no string beyond its share, recomputed from the strings that remain."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.site_controller.limits import (
    StringLimits,
    StringValues,
    effective_shares,
    largest,
    requested,
    shares,
    site_limits,
    summed,
    weighted_soc,
    weighted_soh,
)
from tests.factories import limits

REL = 1e-9


def _string(
    i: int,
    charge_a: float,
    discharge_a: float,
    r: float | None,
    cvl: float = 34.0,
    current_a: float | None = None,
) -> StringLimits:
    return StringLimits(
        f"s{i}",
        limits(charge_current_a=charge_a, discharge_current_a=discharge_a, charge_voltage_v=cvl),
        r,
        current_a,
    )  # fmt: skip


amps = st.floats(0.0, 1000.0, allow_nan=False)
ohms = st.one_of(st.none(), st.floats(0.001, 10.0, allow_nan=False))
currents = st.one_of(st.none(), st.floats(-1000.0, 1000.0, allow_nan=False))
strings_st = st.lists(st.tuples(amps, amps, ohms, currents), min_size=1, max_size=16).map(
    lambda rows: [_string(i, c, d, r, current_a=a) for i, (c, d, r, a) in enumerate(rows)]
)
factors = st.floats(0.01, 1.0, allow_nan=False)


def _within_every_share(strings: list[StringLimits], charge_a: float, discharge_a: float) -> bool:
    """Within its resistance share and, while current flows, its measured share."""
    charge_w, discharge_w = effective_shares(strings, +1), effective_shares(strings, -1)
    return all(
        charge_a * max(w, cw) <= s.limits.charge_current_a * (1 + REL) + 1e-9
        and discharge_a * max(w, dw) <= s.limits.discharge_current_a * (1 + REL) + 1e-9
        for s, w, cw, dw in zip(strings, shares(strings), charge_w, discharge_w, strict=True)
    )


@given(strings_st, factors)
@settings(max_examples=300, deadline=None)
def test_no_string_carries_more_than_its_own_limit(strings: list[StringLimits], f: float) -> None:
    lim = site_limits(strings, f)
    assert _within_every_share(strings, lim.charge_current_a, lim.discharge_current_a)
    assert lim.charge_current_a <= f * sum(s.limits.charge_current_a for s in strings) * (1 + REL)


@given(strings_st)
@settings(max_examples=300, deadline=None)
def test_without_derating_the_limit_is_tight(strings: list[StringLimits]) -> None:
    """Factor 1: some string is exactly at its limit, so the site never asks less than the
    strings can take."""
    lim = site_limits(strings, 1.0)
    at = [lim.charge_current_a * w for w in effective_shares(strings, +1)]
    assert any(
        math.isclose(a, s.limits.charge_current_a, rel_tol=1e-9, abs_tol=1e-9)
        for a, s in zip(at, strings, strict=True)
    )


@given(strings_st, factors, st.data())
@settings(max_examples=300, deadline=None)
def test_a_string_that_leaves_leaves_limits_the_remaining_strings_allow(
    strings: list[StringLimits], f: float, data: st.DataObject
) -> None:
    gone = data.draw(st.integers(0, len(strings) - 1))
    remaining = strings[:gone] + strings[gone + 1 :]
    after = site_limits(remaining, f)
    # never beyond any remaining string's share under the new division...
    assert _within_every_share(remaining, after.charge_current_a, after.discharge_current_a)
    # ...and exactly what they allow (derated), not less
    tight = site_limits(remaining, 1.0)
    assert math.isclose(after.charge_current_a, f * tight.charge_current_a, rel_tol=1e-9)
    if remaining:
        assert after.charge_voltage_v == min(s.limits.charge_voltage_v for s in remaining)
    else:
        assert after.charge_current_a == 0.0 and after.charge_voltage_v is None


def test_current_divides_by_resistance() -> None:
    # 50 mΩ carries twice what 100 mΩ does: 2/3 and 1/3 of the total
    strings = [_string(0, 100.0, 100.0, 0.05), _string(1, 100.0, 100.0, 0.1)]
    assert shares(strings) == pytest.approx([2 / 3, 1 / 3])
    lim = site_limits(strings, 1.0)
    assert lim.charge_current_a == pytest.approx(150.0)  # s0 at 100 A, s1 at 50 A
    assert lim.charge_reason.startswith("s0: 100.0 A at a 67 % share")
    assert site_limits(strings, 0.9).charge_current_a == pytest.approx(135.0)


def test_an_unknown_resistance_means_equal_sharing() -> None:
    strings = [_string(0, 100.0, 80.0, 0.05), _string(1, 40.0, 80.0, None)]
    lim = site_limits(strings, 1.0)
    assert lim.charge_current_a == pytest.approx(80.0)  # 2 x the weaker 40 A
    assert lim.discharge_current_a == pytest.approx(160.0)


def test_the_lowest_cvl_and_no_string_means_zero_amps_and_unknown_volts() -> None:
    strings = [_string(0, 10.0, 10.0, None, cvl=34.0), _string(1, 10.0, 10.0, None, cvl=33.2)]
    lim = site_limits(strings, 1.0)
    assert lim.charge_voltage_v == 33.2 and lim.charge_voltage_reason.startswith("s1")
    empty = site_limits([], 0.9)
    assert empty.charge_current_a == 0.0 and empty.charge_voltage_v is None


def test_soc_weighs_usable_capacity_and_soh_nominal_capacity() -> None:
    a = StringValues(soc=80.0, soh=100.0, voltage_v=30.0, current_a=1.0, capacity_ah=100.0)
    b = StringValues(soc=20.0, soh=50.0, voltage_v=30.0, current_a=2.0, capacity_ah=100.0)
    # usable: 100 Ah and 50 Ah -> (80 x 100 + 20 x 50) / 150 = 60 %
    assert weighted_soc([a, b]) == pytest.approx(60.0)
    assert weighted_soh([a, b]) == pytest.approx(75.0)
    unknown = StringValues(None, 100.0, 30.0, 0.0, 100.0)
    assert weighted_soc([a, unknown]) is None
    no_cap = StringValues(50.0, 100.0, 30.0, 0.0, None)
    assert weighted_soc([a, no_cap]) is None  # one capacity unknown: no honest weighting
    assert weighted_soc([no_cap, no_cap]) == pytest.approx(50.0)  # none known: equal weights
    assert weighted_soc([]) is None
    assert summed([1.0, None]) is None and summed([1.0, 2.5]) == 3.5 and summed([]) is None


@given(
    st.lists(
        st.tuples(st.floats(0, 100), st.floats(0.1, 100), st.floats(1, 1000)),
        min_size=1,
        max_size=16,
    )
)
def test_weighted_soc_lies_between_the_strings(rows: list[tuple[float, float, float]]) -> None:
    values = [StringValues(soc, soh, 30.0, 0.0, cap) for soc, soh, cap in rows]
    soc = weighted_soc(values)
    assert soc is not None
    assert min(r[0] for r in rows) - 1e-9 <= soc <= max(r[0] for r in rows) + 1e-9


def test_a_string_below_the_others_ocv_limits_by_what_it_carries() -> None:
    """Equal resistances, but s0 (lower SOC) carries 101.5 A of 100 A: the measured share
    (101.5 %) caps the site so that s0 stays within its 100 A."""
    strings = [
        _string(0, 100.0, 100.0, 0.1, current_a=101.5),
        _string(1, 100.0, 100.0, 0.1, current_a=-1.5),
    ]
    lim = site_limits(strings, 1.0)
    assert lim.charge_current_a == pytest.approx(100.0 / 1.015)
    assert "measured share" in lim.charge_reason
    # too little current to measure a share: the resistance share alone
    idle = [_string(0, 100.0, 100.0, 0.1, current_a=3.0), _string(1, 100.0, 100.0, 0.1, 0.0)]
    assert site_limits(idle, 1.0).charge_current_a == pytest.approx(200.0)


@given(st.lists(st.floats(0.0, 100.0, allow_nan=False), min_size=1, max_size=16))
def test_the_worst_sigma_bounds_the_weighted_soc_sigma_from_above(sigmas: list[float]) -> None:
    """Whatever the strings' errors share, the sigma of a weighted mean (weights summing to
    1) is at most sum(w_i sigma_i): the largest sigma never understates it."""
    worst = largest(sigmas)
    assert worst is not None and all(s <= worst for s in sigmas)
    weights = [1.0 / len(sigmas)] * len(sigmas)
    assert sum(w * s for w, s in zip(weights, sigmas, strict=True)) <= worst + 1e-9


@given(st.lists(st.one_of(st.none(), st.floats(0.0, 1e9, allow_nan=False)), max_size=16))
def test_the_worst_of_the_strings_is_unknown_while_one_is(values: list[float | None]) -> None:
    worst = largest(values)
    if not values or None in values:
        assert worst is None
    else:
        assert worst == max(v for v in values if v is not None)


@given(st.lists(st.one_of(st.none(), st.booleans()), max_size=16))
def test_a_full_charge_is_asked_when_any_string_asks(values: list[bool | None]) -> None:
    asked = requested(values)
    if True in values:
        assert asked is True
    elif values and None not in values:
        assert asked is False
    else:
        assert asked is None


def test_a_full_charge_request_over_no_string_is_unknown_never_false() -> None:
    assert requested([]) is None
    assert requested([False, None]) is None
    assert requested([None, True]) is True
    assert requested([False, False]) is False
