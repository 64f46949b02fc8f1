"""The site's limits and values from its joined strings (pure).

Parallel strings share one DC bus: one voltage, currents that add. Current divides between
them in inverse proportion to their resistance (a current divider, Kirchhoff's current law
with one common voltage drop: I_k = I_total x G_k / sum_j G_j, G = 1/R), so the site may
carry only as much as keeps every string within its own limit:

    I_total <= min_k I_lim,k x sum_j G_j / G_k

and, where a resistance is unknown, equal sharing (G_k all alike: I_total <= n x min_k I_lim,k).
The sum of the strings' limits is never exceeded (the bound above is at most that sum, a
weighted mean of I_lim,k / share_k), and the result is derated by the current-sharing factor
(resistances drift with temperature, age and contact wear).

The resistance share assumes the strings' open-circuit voltages alike. They are not while
strings differ in SOC: the one at the lower OCV takes more (I_k = G_k (V_bus - OCV_k)), so
while the site current flows in one direction (at least `MEASURED_SHARE_MIN_A`) each string's
share is the larger of its resistance share and its measured share I_k / I_total: a string
already carrying more than its resistance share limits the site by what it carries. (Measured
on parallel lithium-ion cells: the current divides by impedance and by the difference of their
OCVs, and the imbalance is largest at the ends of the SOC range; Bruen and Marco, "Modelling and
experimental evaluation of parallel connected lithium ion cells for an electric vehicle battery
system", J. Power Sources 310 (2016) 91-101.)

The charge voltage limit is the lowest of the joined strings' (each string's CVL protects its
own highest cell, and the bus holds them all at one voltage), the discharge voltage limit the
highest of theirs.

Capacity weighting: a site's SOC is the charge it holds over the charge it can hold, so each
string counts by its usable capacity (nominal capacity x SOH); its SOH by nominal capacity.
Energy counters add. Unknown stays None: one joined string with an unknown value makes the
site's value unknown.

The SOC's uncertainty and the age of its anchor are the worst of the joined strings' (the
largest sigma bounds the sigma of the weighted SOC from above; the oldest anchor is how stale
the site's SOC may be), `largest`; the full-charge request is any joined string's, `requested`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shared.messages import Limits, SiteLimits

MEASURED_SHARE_MIN_A = 5.0
"""Below this site current the measured shares are noise (±0.1 A per sensor, offsets)."""

ZERO_LIMITS = SiteLimits(
    charge_voltage_v=None,
    discharge_voltage_v=None,
    charge_current_a=0.0,
    discharge_current_a=0.0,
    charge_reason="no string on the bus",
    discharge_reason="no string on the bus",
    charge_voltage_reason="no string on the bus",
)


@dataclass(frozen=True)
class StringLimits:
    """What the limits need of one joined string."""

    system: str
    limits: Limits
    resistance_ohm: float | None
    current_a: float | None = None
    """Measured, positive charging; None: unknown."""


def shares(strings: Sequence[StringLimits]) -> list[float]:
    """Each string's share of the site current: G_k / sum G (all resistances known), else
    1/n (equal sharing). Sums to 1."""
    n = len(strings)
    resistances = [s.resistance_ohm for s in strings]
    if n == 0:
        return []
    known = [r for r in resistances if r is not None]
    if len(known) != n:
        return [1.0 / n] * n
    conductances = [1.0 / r for r in known]
    total = sum(conductances)
    return [g / total for g in conductances]


def measured_shares(strings: Sequence[StringLimits], direction: int) -> list[float] | None:
    """Each string's part of the site current flowing in `direction` (+1 charge, -1
    discharge), or None while that current is unknown or below `MEASURED_SHARE_MIN_A`."""
    currents = [s.current_a for s in strings]
    if not currents or any(i is None for i in currents):
        return None
    flows = [max(0.0, direction * i) for i in currents if i is not None]
    total = sum(direction * i for i in currents if i is not None)
    if total < MEASURED_SHARE_MIN_A:
        return None
    return [f / total for f in flows]


def effective_shares(strings: Sequence[StringLimits], direction: int) -> list[float]:
    """The share the limit assumes: the larger of the resistance share and the measured one."""
    share = shares(strings)
    measured = measured_shares(strings, direction)
    if measured is None:
        return share
    return [max(w, m) for w, m in zip(share, measured, strict=True)]


def _current_limit(
    strings: Sequence[StringLimits], limits_a: Sequence[float], factor: float, direction: int
) -> tuple[float, str]:
    """The largest site current that keeps every string within its own limit, derated."""
    plain = shares(strings)
    share = effective_shares(strings, direction)
    best_a = sum(limits_a)
    reason = "sum of the strings"
    for s, lim_a, w, w0 in zip(strings, limits_a, share, plain, strict=True):
        at_a = lim_a / w
        if at_a < best_a:
            best_a = at_a
            how = " measured" if w > w0 else ""
            reason = f"{s.system}: {lim_a:.1f} A at a {100.0 * w:.0f} %{how} share"
    return factor * best_a, reason


def site_limits(strings: Sequence[StringLimits], factor: float) -> SiteLimits:
    """The site's limits from its joined strings (see the module docstring); 0 A and unknown
    voltages when none is joined."""
    if not strings:
        return ZERO_LIMITS
    if not 0.0 < factor <= 1.0:
        raise ValueError(f"current-sharing factor {factor} must be above 0 and at most 1")
    charge_a, charge_why = _current_limit(
        strings, [s.limits.charge_current_a for s in strings], factor, +1
    )
    discharge_a, discharge_why = _current_limit(
        strings, [s.limits.discharge_current_a for s in strings], factor, -1
    )
    cvl = min(strings, key=lambda s: s.limits.charge_voltage_v)
    dvl = max(strings, key=lambda s: s.limits.discharge_voltage_v)
    return SiteLimits(
        charge_voltage_v=cvl.limits.charge_voltage_v,
        discharge_voltage_v=dvl.limits.discharge_voltage_v,
        charge_current_a=charge_a,
        discharge_current_a=discharge_a,
        charge_reason=_with(charge_why, strings, "charge_reason"),
        discharge_reason=_with(discharge_why, strings, "discharge_reason"),
        charge_voltage_reason=f"{cvl.system}: {cvl.limits.charge_voltage_reason or 'its CVL'}",
    )


def _with(why: str, strings: Sequence[StringLimits], field: str) -> str:
    """The reason, with the limiting string's own reason when it gives one."""
    system = why.split(":", 1)[0]
    own = next((getattr(s.limits, field) for s in strings if s.system == system), "")
    return f"{why} ({own})"[:200] if own else why


@dataclass(frozen=True)
class StringValues:
    """What the site's values need of one joined string (None: unknown)."""

    soc: float | None
    soh: float | None
    voltage_v: float | None
    current_a: float | None
    capacity_ah: float | None


def weighted_soc(strings: Sequence[StringValues]) -> float | None:
    """SOC weighted by usable capacity (capacity x SOH; SOH unknown: nominal capacity);
    equal weights when no capacity is known; None when any SOC is unknown or a capacity is
    known for some strings only."""
    if not strings or any(s.soc is None for s in strings):
        return None
    caps = [s.capacity_ah for s in strings]
    if all(c is None for c in caps):
        weights = [1.0] * len(strings)
    elif any(c is None for c in caps):
        return None
    else:
        weights = [
            c * (s.soh / 100.0 if s.soh is not None else 1.0)
            for s, c in zip(strings, caps, strict=True)
            if c is not None
        ]
    total = sum(weights)
    if total <= 0.0:
        return None
    socs = [s.soc for s in strings if s.soc is not None]
    return _clamp_pct(sum(w * v for w, v in zip(weights, socs, strict=True)) / total)


def weighted_soh(strings: Sequence[StringValues]) -> float | None:
    """SOH weighted by nominal capacity (equal weights when none is known)."""
    if not strings or any(s.soh is None for s in strings):
        return None
    caps = [s.capacity_ah for s in strings]
    if any(c is None for c in caps) and not all(c is None for c in caps):
        return None
    weights = [c if c is not None else 1.0 for c in caps]
    sohs = [s.soh for s in strings if s.soh is not None]
    return _clamp_pct(sum(w * v for w, v in zip(weights, sohs, strict=True)) / sum(weights))


def _clamp_pct(value: float) -> float:
    # a weighted mean of values in 0..100 lies in 0..100; this only absorbs rounding
    return min(100.0, max(0.0, value))


def summed(values: Sequence[float | None]) -> float | None:
    """The sum, or None when any is unknown (or there is none)."""
    if not values or any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None)


def largest(values: Sequence[float | None]) -> float | None:
    """The largest, or None when any is unknown (or there is none): the worst string's
    uncertainty or anchor age, which an unknown one might exceed."""
    if not values or any(v is None for v in values):
        return None
    return max(v for v in values if v is not None)


def requested(values: Sequence[bool | None]) -> bool | None:
    """True when any asks; False when every one says it does not; None otherwise (none, or
    one does not say and none asks)."""
    if True in values:
        return True
    return False if values and None not in values else None


def bus_voltage(strings: Sequence[StringValues]) -> float | None:
    """The bus voltage: the mean of the joined strings' voltages (they share it; the mean
    averages out their sensors' offsets); None when none is known."""
    known = [s.voltage_v for s in strings if s.voltage_v is not None]
    return sum(known) / len(known) if known else None
