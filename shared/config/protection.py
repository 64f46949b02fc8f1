"""Protection thresholds: three levels (warning, alarm, fault) per supervised quantity.

warning = flag and derate, alarm = stop charge or discharge (CCL/DCL = 0), fault = open the
contactors. Defaults follow bms-practice §4.2/§4.3 (foxBMS 2, LibreSolar, dbus-serialbattery).
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from shared.config._base import ConfigModel, fmt, raise_problems
from shared.config.chemistry import ChemistryPreset
from shared.config.limits import (
    CELL_TEMPERATURE_MAX_C,
    CELL_TEMPERATURE_MIN_C,
    CELL_VOLTAGE_ACCURACY_V,
    CELL_VOLTAGE_MAX_V,
    CELL_VOLTAGE_MIN_V,
    CURRENT_ACCURACY_A,
    CURRENT_MAX_A,
    CURRENT_MIN_A,
    PACK_VOLTAGE_ACCURACY_V,
    PACK_VOLTAGE_MAX_V,
)

Direction = Literal["high", "low"]
"""high: trips when the value rises above the threshold (warning < alarm < fault);
low: trips when it falls below (warning > alarm > fault)."""

Unit = Literal["V", "A", "degC"]

LEVELS = ("warning", "alarm", "fault")

# Debounce delays (s) per level: warning, alarm, fault. With 0.1 s sampling: OV/UV fault after
# 5 samples (foxBMS 2 ≈ 0.7 s), over-current 0.2 s (foxBMS 2, JBD), temperature 1-5 s.
VOLTAGE_DELAYS_S = (2.0, 1.0, 0.5)
CURRENT_DELAYS_S = (5.0, 2.0, 0.2)
TEMPERATURE_DELAYS_S = (5.0, 3.0, 1.0)
IMBALANCE_DELAYS_S = (30.0, 10.0, 5.0)  # slow quantity; spikes under load are not imbalance

# Insulation monitors measure slowly (a Bender iso165C cycle takes seconds): warning, fault.
INSULATION_DELAYS_S = (10.0, 5.0)
INSULATION_RELEASE_FACTOR = 1.2
"""An insulation level clears once the resistance is 20 % above its threshold."""

VOLTAGE_WARNING_HYSTERESIS_V = 0.05
TEMPERATURE_HYSTERESIS_C = 5.0  # LibreSolar
CURRENT_RELEASE_FRACTION = 0.9
IMBALANCE_RELEASE_FRACTION = 0.8
# --- plausibility checks (services/master_core/plausibility.py) ---
# foxBMS 2 diag_cfg.c: "current on open string" after 10 x 10 ms + 100 ms (bms-practice §4.2).
OPEN_STRING_DELAY_S = 0.2
OPEN_STRING_CURRENT_A = 10 * CURRENT_ACCURACY_A
"""Ten times the sensor's zero accuracy: a leak path or a welded contact draws far more; a
smaller standing reading is an offset (current_offset_high)."""
CURRENT_OFFSET_WARNING_A = 5 * CURRENT_ACCURACY_A
"""bms-practice §2.2 (Movassagh 2021): 0.5 A offset on 100 Ah drifts the SOC by 0.5 %/h."""
CURRENT_OFFSET_RELEASE_FRACTION = 0.8
CURRENT_OFFSET_DELAY_S = 0.0
"""The estimate already averages a window."""
# Pesaran (NREL, "Battery thermal management in EVs and HEVs", 2001): a pack's cell-to-cell
# temperature variation should stay below 5 °C. Twice and three times that within one module
# point to a hot spot, a cooling failure or a sensor off its cell.
TEMPERATURE_SPREAD_WARNING_C = 10.0
TEMPERATURE_SPREAD_ALARM_C = 15.0
TEMPERATURE_SPREAD_HYSTERESIS_C = 2.0
# A stuck channel needs this much current: at rest a healthy cell may read the same for long.
STUCK_CHANNEL_CURRENT_A = 5.0
STUCK_CELL_VOLTAGE_SAMPLES = 50  # 5 s at 0.1 s sampling; cell readings move every sample
STUCK_TEMPERATURE_SAMPLES = 600  # temperatures move slowly: minutes of samples
CONTACTOR_WELD_VOLTAGE_V = 5.0
"""The DC link within this of the pack, long after an open, means it is still connected.
At least both measurements' error (2 x PACK_VOLTAGE_ACCURACY_V)."""
PRECHARGE_TAU_TOLERANCE = 3.0
"""The DC link may charge up to this factor faster or slower than R x C predicts."""
INSULATION_MONITOR_TIMEOUT_S = 10.0  # a few of its measuring cycles (Bender iso165C: seconds)
CONTACTOR_IO_TIMEOUT_S = 1.0  # ten control cycles without a good read of the relay module

# Fault current as a C-rate of the cell capacity (LibreSolar: over-current at 1C).
OVERCURRENT_FAULT_C_RATE = 1.0
# Imbalance levels as a fraction of the nominal cell voltage (dbus-serialbattery: 5 % = imbalanced).
IMBALANCE_FRACTIONS = (0.03, 0.05, 0.10)


class LevelThreshold(ConfigModel):
    """One level: trips when the value is beyond `threshold` for `delay_s`, clears at `release`."""

    threshold: float
    delay_s: float = Field(ge=0.0, le=3600.0)
    release: float


class ThreeLevel(ConfigModel):
    """Warning, alarm and fault levels of one quantity, with its direction and unit."""

    direction: Direction
    unit: Unit
    warning: LevelThreshold
    alarm: LevelThreshold
    fault: LevelThreshold

    @classmethod
    def of(
        cls,
        direction: Direction,
        unit: Unit,
        *,
        thresholds: tuple[float, float, float],
        releases: tuple[float, float, float],
        delays_s: tuple[float, float, float],
    ) -> ThreeLevel:
        """Build from (warning, alarm, fault) tuples."""
        levels = {
            name: LevelThreshold(threshold=t, delay_s=d, release=r)
            for name, t, r, d in zip(LEVELS, thresholds, releases, delays_s, strict=True)
        }
        return cls(direction=direction, unit=unit, **levels)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        raise_problems(self.problems())
        return self

    def levels(self) -> tuple[tuple[str, LevelThreshold], ...]:
        return (("warning", self.warning), ("alarm", self.alarm), ("fault", self.fault))

    def problems(self) -> list[str]:
        """Ordering and release-side errors, in words."""
        out = self._problems(self.direction)
        other: Direction = "low" if self.direction == "high" else "high"
        if out and not self._problems(other):
            return [
                f"direction is '{self.direction}' but the levels are ordered as for a "
                f"{other}-side limit; check direction"
            ]
        return out

    def _problems(self, direction: Direction) -> list[str]:
        out: list[str] = []
        high = direction == "high"
        word = "below" if high else "above"
        pairs = (
            ("warning", self.warning, "alarm", self.alarm),
            ("alarm", self.alarm, "fault", self.fault),
        )
        for name_a, a, name_b, b in pairs:
            ok = a.threshold < b.threshold if high else a.threshold > b.threshold
            if not ok:
                out.append(
                    f"the {name_a} threshold {fmt(a.threshold, self.unit)} must be {word} the "
                    f"{name_b} threshold {fmt(b.threshold, self.unit)}"
                )
        for name, level in self.levels():
            ok = level.release < level.threshold if high else level.release > level.threshold
            if not ok:
                out.append(
                    f"the {name} release {fmt(level.release, self.unit)} must be {word} its "
                    f"threshold {fmt(level.threshold, self.unit)} (a {direction}-side level "
                    f"clears once the value has {'fallen' if high else 'risen'} {word} its release)"
                )
        return out


# Expected direction, unit and measurable range of each ProtectionConfig quantity.
_SPECS: dict[str, tuple[Direction, Unit, float, float]] = {
    "cell_overvoltage": ("high", "V", CELL_VOLTAGE_MIN_V, CELL_VOLTAGE_MAX_V),
    "cell_undervoltage": ("low", "V", CELL_VOLTAGE_MIN_V, CELL_VOLTAGE_MAX_V),
    "pack_overvoltage": ("high", "V", 0.0, PACK_VOLTAGE_MAX_V),
    "pack_undervoltage": ("low", "V", 0.0, PACK_VOLTAGE_MAX_V),
    "cell_overtemp_charge": ("high", "degC", CELL_TEMPERATURE_MIN_C, CELL_TEMPERATURE_MAX_C),
    "cell_overtemp_discharge": ("high", "degC", CELL_TEMPERATURE_MIN_C, CELL_TEMPERATURE_MAX_C),
    "cell_undertemp_charge": ("low", "degC", CELL_TEMPERATURE_MIN_C, CELL_TEMPERATURE_MAX_C),
    "cell_undertemp_discharge": ("low", "degC", CELL_TEMPERATURE_MIN_C, CELL_TEMPERATURE_MAX_C),
    "charge_overcurrent": ("high", "A", 0.0, CURRENT_MAX_A),
    "discharge_overcurrent": ("high", "A", 0.0, -CURRENT_MIN_A),
    "cell_imbalance": ("high", "V", 0.0, CELL_VOLTAGE_MAX_V - CELL_VOLTAGE_MIN_V),
}
_MAGNITUDES = ("charge_overcurrent", "discharge_overcurrent", "cell_imbalance")
# (low-side, high-side) pairs whose warning levels must not overlap.
_WINDOWS = (
    ("cell_undervoltage", "cell_overvoltage"),
    ("pack_undervoltage", "pack_overvoltage"),
    ("cell_undertemp_charge", "cell_overtemp_charge"),
    ("cell_undertemp_discharge", "cell_overtemp_discharge"),
)


class ProtectionConfig(ConfigModel):
    """All protection thresholds of one system. Currents are positive magnitudes."""

    cell_overvoltage: ThreeLevel
    cell_undervoltage: ThreeLevel
    pack_overvoltage: ThreeLevel
    pack_undervoltage: ThreeLevel
    cell_overtemp_charge: ThreeLevel
    cell_overtemp_discharge: ThreeLevel
    cell_undertemp_charge: ThreeLevel
    cell_undertemp_discharge: ThreeLevel
    charge_overcurrent: ThreeLevel
    discharge_overcurrent: ThreeLevel
    cell_imbalance: ThreeLevel
    """Spread max - min cell voltage."""
    deep_discharge_v: float
    """A cell below this is damaged: latched fault, cleared only by service."""
    pack_plausibility_tolerance_v: float = Field(gt=0.0, le=PACK_VOLTAGE_MAX_V)
    """Largest accepted |pack voltage - sum of cell voltages|."""
    pack_plausibility_delay_s: float = Field(1.0, ge=0.0, le=3600.0)
    module_timeout_periods: int = Field(5, ge=1, le=100)
    """A module is lost after this many sample periods without telemetry."""
    insulation_warning_ohm: float = Field(750_000.0, gt=0.0)  # foxBMS 2 imd.h
    insulation_fault_ohm: float = Field(500_000.0, gt=0.0)
    open_string_current_a: float = Field(OPEN_STRING_CURRENT_A, gt=0.0, le=CURRENT_MAX_A)
    """|current| above this while every contactor reads open: current_on_open_string."""
    open_string_delay_s: float = Field(OPEN_STRING_DELAY_S, ge=0.0, le=3600.0)
    current_offset_warning_a: float = Field(CURRENT_OFFSET_WARNING_A, gt=0.0, le=CURRENT_MAX_A)
    """|zero offset| (mean current with the string open) above this: current_offset_high."""
    current_offset_window_s: float = Field(10.0, gt=0.0, le=3600.0)
    """The zero offset is the mean current over this long with the string open."""
    contactor_weld_voltage_v: float = Field(
        CONTACTOR_WELD_VOLTAGE_V, ge=2 * PACK_VOLTAGE_ACCURACY_V, le=PACK_VOLTAGE_MAX_V
    )
    contactor_weld_discharge_s: float | None = Field(None, gt=0.0, le=3600.0)
    """Time the DC link needs to fall below the pack by `contactor_weld_voltage_v` after an
    open (inverter bleed resistor or active discharge). None: the link has no known discharge
    path and may hold its voltage, so only current after the open detects a weld."""
    precharge_tau_tolerance: float = Field(PRECHARGE_TAU_TOLERANCE, gt=1.0, le=100.0)
    insulation_monitor_timeout_s: float = Field(INSULATION_MONITOR_TIMEOUT_S, gt=0.0, le=3600.0)
    """No good insulation reading for this long: insulation_monitor_failure."""
    contactor_io_timeout_s: float = Field(CONTACTOR_IO_TIMEOUT_S, gt=0.0, le=60.0)
    """No good read of the contactor relay module for this long: contactor_io_failure."""
    temperature_spread_warning_c: float = Field(TEMPERATURE_SPREAD_WARNING_C, gt=0.0, le=165.0)
    temperature_spread_alarm_c: float = Field(TEMPERATURE_SPREAD_ALARM_C, gt=0.0, le=165.0)
    """Warmest minus coldest sensor within one module."""
    stuck_channel_current_a: float = Field(STUCK_CHANNEL_CURRENT_A, gt=0.0, le=CURRENT_MAX_A)
    """Stuck channels are only counted while |current| is above this."""
    stuck_cell_voltage_samples: int = Field(STUCK_CELL_VOLTAGE_SAMPLES, ge=2, le=1_000_000)
    stuck_temperature_samples: int = Field(STUCK_TEMPERATURE_SAMPLES, ge=2, le=1_000_000)
    """A channel is stuck after this many samples equal to the one before (see
    plausibility.StuckChannels)."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        raise_problems(self.problems())
        return self

    def quantities(self) -> tuple[tuple[str, ThreeLevel], ...]:
        return tuple((name, getattr(self, name)) for name in _SPECS)

    def problems(self) -> list[str]:
        out: list[str] = []
        for name, (direction, unit, lo, hi) in _SPECS.items():
            item: ThreeLevel = getattr(self, name)
            if item.direction != direction:
                out.append(
                    f"{name}: must be a {direction}-side limit (direction '{direction}'), "
                    f"not '{item.direction}'"
                )
            if item.unit != unit:
                out.append(f"{name}: is measured in '{unit}', not '{item.unit}'")
            for level, lv in item.levels():
                for what, value in (("threshold", lv.threshold), ("release", lv.release)):
                    if not lo <= value <= hi:
                        out.append(
                            f"{name}: the {level} {what} {fmt(value, unit)} is outside the "
                            f"measurement range {fmt(lo, unit)} to {fmt(hi, unit)}"
                        )
                if name in _MAGNITUDES and lv.threshold <= 0.0:
                    out.append(
                        f"{name}: the {level} threshold {fmt(lv.threshold, unit)} must be positive"
                    )
        for low_name, high_name in _WINDOWS:
            low: ThreeLevel = getattr(self, low_name)
            high: ThreeLevel = getattr(self, high_name)
            if low.warning.threshold >= high.warning.threshold:
                out.append(
                    f"{low_name}: the warning threshold {fmt(low.warning.threshold, low.unit)} "
                    f"must be below the {high_name} warning threshold "
                    f"{fmt(high.warning.threshold, high.unit)}"
                )
        out.extend(self._temperature_window_problems())
        uv_fault = self.cell_undervoltage.fault.threshold
        if not CELL_VOLTAGE_MIN_V <= self.deep_discharge_v <= uv_fault:
            out.append(
                f"deep_discharge_v: {fmt(self.deep_discharge_v, 'V')} must lie between the "
                f"measurement minimum {fmt(CELL_VOLTAGE_MIN_V, 'V')} and the cell_undervoltage "
                f"fault threshold {fmt(uv_fault, 'V')}"
            )
        if self.temperature_spread_warning_c >= self.temperature_spread_alarm_c:
            out.append(
                f"temperature_spread_warning_c: {fmt(self.temperature_spread_warning_c, 'degC')} "
                f"must be below temperature_spread_alarm_c "
                f"{fmt(self.temperature_spread_alarm_c, 'degC')}"
            )
        if self.insulation_fault_ohm >= self.insulation_warning_ohm:
            out.append(
                f"insulation_fault_ohm: {fmt(self.insulation_fault_ohm, 'ohm')} must be below "
                f"insulation_warning_ohm {fmt(self.insulation_warning_ohm, 'ohm')}"
            )
        return out

    def _temperature_window_problems(self) -> list[str]:
        # Charging is allowed in a narrower window than discharging.
        out: list[str] = []
        oc, od = self.cell_overtemp_charge.fault, self.cell_overtemp_discharge.fault
        if oc.threshold > od.threshold:
            out.append(
                f"cell_overtemp_charge: the fault threshold {fmt(oc.threshold, 'degC')} is above "
                f"the cell_overtemp_discharge fault threshold {fmt(od.threshold, 'degC')}; the "
                f"charge temperature window must lie inside the discharge window"
            )
        uc, ud = self.cell_undertemp_charge.fault, self.cell_undertemp_discharge.fault
        if uc.threshold < ud.threshold:
            out.append(
                f"cell_undertemp_charge: the fault threshold {fmt(uc.threshold, 'degC')} is below "
                f"the cell_undertemp_discharge fault threshold {fmt(ud.threshold, 'degC')}; the "
                f"charge temperature window must lie inside the discharge window"
            )
        return out

    @classmethod
    def from_chemistry(
        cls,
        preset: ChemistryPreset,
        *,
        cells_in_series: int,
        cell_capacity_ah: float,
        max_current_a: float | None = None,
    ) -> ProtectionConfig:
        """Defaults derived from a chemistry preset (bms-practice §4.3).

        `max_current_a` is the over-current fault level; by default 1C, capped at the
        current-measurement range.
        """
        p = preset
        n = cells_in_series
        hyst = VOLTAGE_WARNING_HYSTERESIS_V
        cell_ov = ThreeLevel.of(
            "high",
            "V",
            thresholds=(p.ov_warning_v, p.ov_alarm_v, p.ov_limit_v),
            # Alarm and fault clear at the reset voltage so that charging does not chatter.
            releases=(round(p.ov_warning_v - hyst, 3), p.ov_reset_v, p.ov_reset_v),
            delays_s=VOLTAGE_DELAYS_S,
        )
        cell_uv = ThreeLevel.of(
            "low",
            "V",
            thresholds=(p.uv_warning_v, p.uv_alarm_v, p.uv_limit_v),
            releases=(round(p.uv_warning_v + hyst, 3), p.uv_reset_v, p.uv_reset_v),
            delays_s=VOLTAGE_DELAYS_S,
        )
        if max_current_a is None:
            max_current_a = OVERCURRENT_FAULT_C_RATE * cell_capacity_ah
        fault_a = min(max_current_a, CURRENT_MAX_A)
        current = _current_levels(fault_a)
        imbalance = tuple(round(f * p.nominal_v, 3) for f in IMBALANCE_FRACTIONS)
        return cls(
            cell_overvoltage=cell_ov,
            cell_undervoltage=cell_uv,
            pack_overvoltage=_scaled(cell_ov, n),
            pack_undervoltage=_scaled(cell_uv, n),
            cell_overtemp_charge=_overtemp(p.charge_temp_max_c),
            cell_overtemp_discharge=_overtemp(p.discharge_temp_max_c),
            cell_undertemp_charge=_undertemp(p.charge_temp_min_c),
            cell_undertemp_discharge=_undertemp(p.discharge_temp_min_c),
            charge_overcurrent=current,
            discharge_overcurrent=current,
            cell_imbalance=ThreeLevel.of(
                "high",
                "V",
                thresholds=(imbalance[0], imbalance[1], imbalance[2]),
                releases=(
                    round(imbalance[0] * IMBALANCE_RELEASE_FRACTION, 3),
                    round(imbalance[1] * IMBALANCE_RELEASE_FRACTION, 3),
                    round(imbalance[2] * IMBALANCE_RELEASE_FRACTION, 3),
                ),
                delays_s=IMBALANCE_DELAYS_S,
            ),
            deep_discharge_v=p.deep_discharge_v,
            pack_plausibility_tolerance_v=pack_plausibility_floor_v(n),
        )


def pack_plausibility_floor_v(cells_in_series: int) -> float:
    """The worst-case |pack voltage - sum of cells| of healthy sensors: the pack sensor off by
    its accuracy (±1 V) and every cell channel off by its own (±50 mV) the other way."""
    return round(PACK_VOLTAGE_ACCURACY_V + cells_in_series * CELL_VOLTAGE_ACCURACY_V, 2)


def _scaled(cell: ThreeLevel, n: int) -> ThreeLevel:
    def tri(attr: str, factor: float) -> tuple[float, float, float]:
        a, b, c = (round(getattr(lv, attr) * factor, 3) for _, lv in cell.levels())
        return a, b, c

    return ThreeLevel.of(
        cell.direction,
        "V",
        thresholds=tri("threshold", n),
        releases=tri("release", n),
        delays_s=tri("delay_s", 1.0),
    )


def _overtemp(max_c: float) -> ThreeLevel:
    # foxBMS 2 MOL/RSL/MSL pattern: 10 / 5 / 0 °C below the cell's maximum.
    thresholds = (max_c - 10.0, max_c - 5.0, max_c)
    h = TEMPERATURE_HYSTERESIS_C
    return ThreeLevel.of(
        "high",
        "degC",
        thresholds=thresholds,
        releases=(thresholds[0] - h, thresholds[1] - h, thresholds[2] - h),
        delays_s=TEMPERATURE_DELAYS_S,
    )


def _undertemp(min_c: float) -> ThreeLevel:
    # dbus-serialbattery charge derating: 5 °C warning, 2 °C alarm, 0 °C fault for graphite.
    thresholds = (min_c + 5.0, min_c + 2.0, min_c)
    h = TEMPERATURE_HYSTERESIS_C
    return ThreeLevel.of(
        "low",
        "degC",
        thresholds=thresholds,
        releases=(thresholds[0] + h, thresholds[1] + h, thresholds[2] + h),
        delays_s=TEMPERATURE_DELAYS_S,
    )


def _current_levels(fault_a: float) -> ThreeLevel:
    thresholds = (round(0.8 * fault_a, 2), round(0.9 * fault_a, 2), round(fault_a, 2))
    f = CURRENT_RELEASE_FRACTION
    return ThreeLevel.of(
        "high",
        "A",
        thresholds=thresholds,
        releases=(
            round(thresholds[0] * f, 2),
            round(thresholds[1] * f, 2),
            round(thresholds[2] * f, 2),
        ),
        delays_s=CURRENT_DELAYS_S,
    )
