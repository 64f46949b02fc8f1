"""Derating tables for the charge and discharge current limits, derived per chemistry.

Every table maps one quantity to a fraction of the maximum current: linear interpolation between
the points, held constant beyond the end points. The shapes are the dbus-serialbattery defaults
(bms-practice §1.2, §4.5; chemistry/derating_curves.json):

* cell voltage: the LFP curve, rescaled to each chemistry. The charge side is scaled by the span
  charge_v - nominal_v and anchored at charge_v; the discharge side by nominal_v -
  discharge_cutoff_v and anchored at discharge_cutoff_v. For the LFP preset (3.45 / 3.2 / 2.8 V)
  this gives the source curve unchanged; for the others the derating stays in the top and
  bottom part of the window, where the reference curve puts it.
* temperature: the dbus-serialbattery ramps, placed at the edges of the chemistry's charge and
  discharge temperature windows (zero current at the window limits).
* SOC: CCL 1.0/0.5/0.2/0.1 at 85/90/95/98 %, DCL mirrored at 20/15/10/5 %.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from itertools import pairwise

from shared.config.chemistry import ChemistryPreset

# dbus-serialbattery config.default.ini, LFP: CCL over the highest cell, DCL over the lowest.
LFP_CHARGE_V = (3.375, 3.400, 3.425, 3.450, 3.500)
LFP_CHARGE_FRACTION = (1.0, 0.25, 0.05, 0.005, 0.0)
LFP_DISCHARGE_V = (2.80, 2.90, 3.00, 3.10, 3.19)
LFP_DISCHARGE_FRACTION = (0.0, 0.005, 0.05, 0.25, 1.0)
# The cell that curve was written for (dbus-serialbattery MAX / nominal / MIN).
LFP_REFERENCE_CHARGE_V = 3.45
LFP_REFERENCE_NOMINAL_V = 3.20
LFP_REFERENCE_CUTOFF_V = 2.80

# Temperature ramps as offsets (°C) from the window edges. dbus-serialbattery charge: 0/2/5/10 °C
# -> 0/0.25/0.5/1.0; discharge: -10/0/5/10 °C -> 0/0.25/0.5/1.0; both: 40/45/50/55 °C ->
# 1.0/0.5/0.25/0 with 55 °C the upper edge.
CHARGE_COLD_OFFSETS_C = (0.0, 2.0, 5.0, 10.0)
DISCHARGE_COLD_OFFSETS_C = (0.0, 10.0, 15.0, 20.0)
COLD_FRACTION = (0.0, 0.25, 0.5, 1.0)
HOT_OFFSETS_C = (-15.0, -10.0, -5.0, 0.0)
HOT_FRACTION = (1.0, 0.5, 0.25, 0.0)

CHARGE_SOC_PCT = (85.0, 90.0, 95.0, 98.0)
CHARGE_SOC_FRACTION = (1.0, 0.5, 0.2, 0.1)
DISCHARGE_SOC_PCT = (5.0, 10.0, 15.0, 20.0)
DISCHARGE_SOC_FRACTION = (0.1, 0.2, 0.5, 1.0)


@dataclass(frozen=True)
class DeratingTable:
    """Fraction of the maximum current over one quantity (volts, °C or % SOC)."""

    x: tuple[float, ...]
    fraction: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.x) != len(self.fraction) or len(self.x) < 2:
            raise ValueError("a derating table needs at least two points, as many x as fractions")
        if any(b <= a for a, b in pairwise(self.x)):
            raise ValueError(f"derating table x must strictly increase: {self.x}")
        if any(not 0.0 <= f <= 1.0 for f in self.fraction):
            raise ValueError(f"derating fractions must lie in 0..1: {self.fraction}")

    def __call__(self, value: float) -> float:
        x, f = self.x, self.fraction
        if value <= x[0]:
            return f[0]
        if value >= x[-1]:
            return f[-1]
        i = bisect_right(x, value)
        x0, x1, f0, f1 = x[i - 1], x[i], f[i - 1], f[i]
        return f0 + (f1 - f0) * (value - x0) / (x1 - x0)


@dataclass(frozen=True)
class DeratingTables:
    charge_voltage: DeratingTable
    """CCL over the highest cell voltage."""
    discharge_voltage: DeratingTable
    """DCL over the lowest cell voltage."""
    charge_temperature: DeratingTable
    """CCL over cell temperature (applied to the lowest and the highest)."""
    discharge_temperature: DeratingTable
    charge_soc: DeratingTable
    discharge_soc: DeratingTable


def derating_tables(chem: ChemistryPreset) -> DeratingTables:
    """The tables for one chemistry preset (with its overrides applied)."""
    return DeratingTables(
        charge_voltage=charge_voltage_table(chem),
        discharge_voltage=discharge_voltage_table(chem),
        charge_temperature=temperature_table(
            chem.charge_temp_min_c, chem.charge_temp_max_c, CHARGE_COLD_OFFSETS_C
        ),
        discharge_temperature=temperature_table(
            chem.discharge_temp_min_c, chem.discharge_temp_max_c, DISCHARGE_COLD_OFFSETS_C
        ),
        charge_soc=DeratingTable(CHARGE_SOC_PCT, CHARGE_SOC_FRACTION),
        discharge_soc=DeratingTable(DISCHARGE_SOC_PCT, DISCHARGE_SOC_FRACTION),
    )


def charge_voltage_table(chem: ChemistryPreset) -> DeratingTable:
    scale = (chem.charge_v - chem.nominal_v) / (LFP_REFERENCE_CHARGE_V - LFP_REFERENCE_NOMINAL_V)
    volts = [chem.charge_v + scale * (v - LFP_REFERENCE_CHARGE_V) for v in LFP_CHARGE_V]
    # Zero current at the latest at the absolute limit (always above charge_v).
    volts[-1] = min(volts[-1], chem.ov_limit_v)
    return DeratingTable(tuple(volts), LFP_CHARGE_FRACTION)


def discharge_voltage_table(chem: ChemistryPreset) -> DeratingTable:
    scale = (chem.nominal_v - chem.discharge_cutoff_v) / (
        LFP_REFERENCE_NOMINAL_V - LFP_REFERENCE_CUTOFF_V
    )
    volts = (
        chem.discharge_cutoff_v + scale * (v - LFP_REFERENCE_CUTOFF_V) for v in LFP_DISCHARGE_V
    )
    return DeratingTable(tuple(volts), LFP_DISCHARGE_FRACTION)


def temperature_table(
    t_min_c: float, t_max_c: float, cold_offsets_c: tuple[float, ...]
) -> DeratingTable:
    """A trapezoid: zero at both window edges, full current in the middle."""
    width = t_max_c - t_min_c
    needed = cold_offsets_c[-1] - HOT_OFFSETS_C[0]
    # A narrow window (chemistry override) squeezes both ramps so they still fit.
    squeeze = min(1.0, width / needed) if needed > 0 else 1.0
    cold = [(t_min_c + squeeze * o, f) for o, f in zip(cold_offsets_c, COLD_FRACTION, strict=True)]
    hot = [(t_max_c + squeeze * o, f) for o, f in zip(HOT_OFFSETS_C, HOT_FRACTION, strict=True)]
    if hot[0][0] <= cold[-1][0]:
        hot = hot[1:]  # both ramps meet at the full-current point
    points = cold + hot
    return DeratingTable(tuple(t for t, _ in points), tuple(f for _, f in points))
