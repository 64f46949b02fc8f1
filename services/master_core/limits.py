"""Charge and discharge limits for the inverter (CVL, DVL, CCL, DCL), with the limiting reason.

Pure: no I/O, time is passed in as monotonic seconds.

* CVL = cells x charge_v, lowered by the imbalance to sum + cells x (charge_v - max cell), so
  that charging ends when the *highest* cell reaches charge_v rather than the average one (the
  idea of dbus-serialbattery's CVL controller). Balanced cells give the full value; a cell above
  charge_v pulls the CVL below the pack voltage, which stops charging. Far from full the pack is
  well below either value, so the reduction only matters near the top. The CVL follows the same
  hold-and-ramp rule as the currents. DVL = cells x discharge_cutoff_v.
* CCL / DCL = maximum current x the minimum of the fractions of the derating tables
  (derating_tables.py: cell voltage, lowest and highest temperature, SOC) and of the derate
  factor from protection warnings. An alarm (stop flag) gives 0, stale or missing data gives 0
  on both sides.
* The maximum current is the over-current *warning* threshold of the protection config (0.8 x
  the fault level, 1C by default), so that running at the limit never raises a warning; it is
  capped at the current-sensor range and the 200 A hardware range.
* No flapping: a drop is passed on at once (safety first); a rise waits until the computed
  value has stayed above the present one by a recovery margin (1.5 % of the maximum current,
  dbus-serialbattery) for a hold time, then ramps at a bounded rate. The first update publishes
  the computed values directly; after a stop the limit ramps up from 0.

The reason reported with a limit is the one that set its present value: the binding table when
the limit follows the computed value, "ramp" while rising, and the last binding reason while a
rise is held back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol

from services.master_core.derating_tables import DeratingTable, DeratingTables, derating_tables
from shared import limit_reasons as reasons
from shared.config import SystemConfig
from shared.config.limits import CURRENT_MAX_A
from shared.messages import Limits

REASON_MAX_CURRENT: Final = reasons.MAX_CURRENT
"""Nothing derates: the configured maximum current limits."""
REASON_STALE: Final = reasons.STALE
REASON_ALARM: Final = reasons.ALARM
REASON_WARNING: Final = reasons.WARNING
REASON_INPUT_UNKNOWN: Final = reasons.INPUT_UNKNOWN
"""Stopped because a value protection needs is unknown (e.g. the current before the sensor
reports): nothing is judged safe that was not measured."""
REASON_CELL_VOLTAGE: Final = reasons.CELL_VOLTAGE
REASON_TEMPERATURE_LOW: Final = reasons.TEMPERATURE_LOW
REASON_TEMPERATURE_HIGH: Final = reasons.TEMPERATURE_HIGH
REASON_SOC: Final = reasons.SOC
REASON_RAMP: Final = reasons.RAMP
"""The limit is rising towards the computed value at the ramp rate."""
REASON_CONTACTORS_FAULT: Final = reasons.CONTACTORS_FAULT
"""The contactors are in fault (opened by their own supervision: a feedback mismatch, a failed
precharge): no current until a reset, whatever protection says."""
REASON_FULL_CHARGE_VOLTAGE: Final = reasons.FULL_CHARGE_VOLTAGE
"""CVL: the full value (cells x charge_v)."""
REASON_CELL_HEADROOM: Final = reasons.CELL_HEADROOM
"""CVL: lowered by the imbalance (the highest cell near or above charge_v)."""

WARNING_DERATE_FRACTION: Final = 0.5
"""Derate factor while a protection warning concerns a direction (`LimitInputs.from_pack`)."""

REASONS: Final = (
    REASON_MAX_CURRENT,
    REASON_STALE,
    REASON_ALARM,
    REASON_INPUT_UNKNOWN,
    REASON_WARNING,
    REASON_CELL_VOLTAGE,
    REASON_TEMPERATURE_LOW,
    REASON_TEMPERATURE_HIGH,
    REASON_SOC,
    REASON_RAMP,
    REASON_CONTACTORS_FAULT,
)


class PackExtremes(Protocol):
    """What the limits need from the pack snapshot (None while unknown)."""

    @property
    def cell_v_max(self) -> float | None: ...
    @property
    def cell_v_min(self) -> float | None: ...
    @property
    def temp_min_c(self) -> float | None: ...
    @property
    def temp_max_c(self) -> float | None: ...
    @property
    def sum_of_cells_v(self) -> float | None: ...


class ProtectionDirections(Protocol):
    """Protection actions: the codes (empty = none) acting on each direction."""

    @property
    def derate_charge(self) -> tuple[str, ...]: ...
    @property
    def derate_discharge(self) -> tuple[str, ...]: ...
    @property
    def stop_charge(self) -> tuple[str, ...]: ...
    @property
    def stop_discharge(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class LimitInputs:
    """One evaluation's inputs. None or NaN for a cell quantity means unknown (-> stale)."""

    cell_v_max: float | None
    cell_v_min: float | None
    temp_min_c: float | None
    temp_max_c: float | None
    soc_pct: float | None = None
    """None: the SOC tables are skipped (the voltage tables still protect both ends)."""
    sum_of_cells_v: float | None = None
    """For the CVL headroom; None gives the full CVL."""
    stop_charge: bool = False
    """A protection alarm forbids charging: CCL = 0."""
    stop_discharge: bool = False
    stop_unknown_only: frozenset[str] = frozenset()
    """The directions ("charge", "discharge") stopped only because a value protection needs
    is unknown (no alarm active): reported as such, not as an alarm."""
    charge_derate: float = 1.0
    """Fraction (0..1) asked for by protection warnings on the charge side."""
    discharge_derate: float = 1.0
    stale: bool = False
    """Telemetry is stale or incomplete: both currents 0."""
    contactors_fault: bool = False
    """The contactors are in fault: both currents 0."""

    @classmethod
    def from_pack(
        cls,
        snapshot: PackExtremes,
        *,
        soc_pct: float | None,
        actions: ProtectionDirections,
        stale: bool,
        contactors_fault: bool = False,
        warning_derate: float = WARNING_DERATE_FRACTION,
        unknown: Iterable[str] = (),
    ) -> LimitInputs:
        """From the pack snapshot and the protection actions (codes per direction);
        `unknown`: the codes not evaluated because their value is unknown."""
        missing = set(unknown)
        only_unknown = frozenset(
            flow
            for flow, codes in (
                ("charge", actions.stop_charge),
                ("discharge", actions.stop_discharge),
            )
            if codes and set(codes) <= missing
        )
        return cls(
            cell_v_max=snapshot.cell_v_max,
            cell_v_min=snapshot.cell_v_min,
            temp_min_c=snapshot.temp_min_c,
            temp_max_c=snapshot.temp_max_c,
            soc_pct=soc_pct,
            sum_of_cells_v=snapshot.sum_of_cells_v,
            stop_charge=bool(actions.stop_charge),
            stop_discharge=bool(actions.stop_discharge),
            charge_derate=warning_derate if actions.derate_charge else 1.0,
            discharge_derate=warning_derate if actions.derate_discharge else 1.0,
            stale=stale,
            contactors_fault=contactors_fault,
            stop_unknown_only=only_unknown,
        )


@dataclass(frozen=True)
class LimitSettings:
    """Tuning of the limit calculator; the defaults suit a 1 s inverter frame rate."""

    max_charge_current_a: float | None = None
    """None: the charge over-current warning threshold of the protection config."""
    max_discharge_current_a: float | None = None
    recovery_margin_fraction: float = 0.015
    """A current rises only when the computed value exceeds it by this share of the maximum."""
    hold_s: float = 10.0
    """... continuously for this long."""
    ramp_fraction_per_s: float = 0.05
    """Largest rise per second as a share of the maximum current (0 to full in 20 s)."""
    use_soc_tables: bool = True
    cvl_headroom: bool = True
    """Lower the CVL by the imbalance (see the module docstring)."""
    cvl_recovery_margin_v_per_cell: float = 0.005
    cvl_ramp_v_per_cell_s: float = 0.002

    def __post_init__(self) -> None:
        for name in ("max_charge_current_a", "max_discharge_current_a"):
            value = getattr(self, name)
            if value is not None and not value > 0.0:
                raise ValueError(f"{name} must be positive, got {value}")
        for name in (
            "recovery_margin_fraction",
            "hold_s",
            "cvl_recovery_margin_v_per_cell",
        ):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"{name} must not be negative")
        for name in ("ramp_fraction_per_s", "cvl_ramp_v_per_cell_s"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"{name} must be positive")


@dataclass(frozen=True)
class SideBreakdown:
    """How one current limit came about."""

    fractions: dict[str, float]
    """Fraction of every table (and of the warning derate) that was evaluated, by reason."""
    target_a: float
    """Computed limit before the recovery hold and ramp."""
    target_reason: str
    limit_a: float
    reason: str


@dataclass(frozen=True)
class LimitBreakdown:
    charge: SideBreakdown
    discharge: SideBreakdown
    charge_voltage_target_v: float
    """CVL before the recovery hold and ramp."""


@dataclass
class _RiseLimiter:
    """Passes drops at once; lets a rise through only after margin + hold, then ramps."""

    margin: float
    hold_s: float
    ramp_per_s: float
    value: float | None = None
    reason: str = ""
    _above_since_s: float | None = field(default=None, repr=False)
    _rising: bool = field(default=False, repr=False)
    _last_s: float | None = field(default=None, repr=False)

    def step(self, target: float, reason: str, now_s: float) -> tuple[float, str]:
        dt = 0.0 if self._last_s is None else max(0.0, now_s - self._last_s)
        self._last_s = now_s
        if self.value is None or target <= self.value:
            return self._follow(target, reason)
        if not self._rising:
            if target < self.value + self.margin:
                self._above_since_s = None
                return self.value, self.reason
            if self._above_since_s is None:
                self._above_since_s = now_s
            if now_s - self._above_since_s < self.hold_s:
                return self.value, self.reason
            self._rising = True
        raised = self.value + self.ramp_per_s * dt
        if raised >= target:
            return self._follow(target, reason)
        self.value, self.reason = raised, REASON_RAMP
        return self.value, self.reason

    def _follow(self, target: float, reason: str) -> tuple[float, str]:
        self.value, self.reason = target, reason
        self._above_since_s = None
        self._rising = False
        return target, reason


def _value(value: float | None) -> float | None:
    """None for an unknown (missing or NaN) reading."""
    return value if value is not None and math.isfinite(value) else None


def _floor_tenth(value: float) -> float:
    # Inverter protocols carry 0.1 A / 0.1 V; rounding down keeps every limit on the safe side.
    return max(0.0, math.floor(value * 10.0) / 10.0)


def _ceil_tenth(value: float) -> float:
    return math.ceil(value * 10.0) / 10.0


def _clamp01(value: float) -> float:
    return 0.0 if not math.isfinite(value) else min(1.0, max(0.0, value))


def _temperature(table: DeratingTable, t_min: float, t_max: float) -> tuple[str, float]:
    """The binding side of a trapezoid table for the coldest and hottest cell."""
    cold, hot = table(t_min), table(t_max)
    if cold < hot:
        return REASON_TEMPERATURE_LOW, cold
    if hot < cold:
        return REASON_TEMPERATURE_HIGH, hot
    middle = 0.5 * (table.x[0] + table.x[-1])
    return (REASON_TEMPERATURE_HIGH if t_max >= middle else REASON_TEMPERATURE_LOW), hot


class LimitCalculator:
    """CVL, DVL, CCL and DCL of one system; call `update` once per evaluation cycle."""

    def __init__(self, config: SystemConfig, settings: LimitSettings | None = None) -> None:
        self.config = config
        self.settings = settings if settings is not None else LimitSettings()
        s = self.settings
        chem = config.cell_chemistry
        self.tables: DeratingTables = derating_tables(chem)
        self.cells = config.total_cells
        self.charge_v = chem.charge_v
        hardware_a = min(CURRENT_MAX_A, config.current_sensor.range_a)
        protection = config.protection
        self.max_charge_current_a = min(
            hardware_a,
            s.max_charge_current_a
            if s.max_charge_current_a is not None
            else protection.charge_overcurrent.warning.threshold,
        )
        self.max_discharge_current_a = min(
            hardware_a,
            s.max_discharge_current_a
            if s.max_discharge_current_a is not None
            else protection.discharge_overcurrent.warning.threshold,
        )
        self.charge_voltage_full_v = _floor_tenth(config.charge_pack_voltage_v)
        self.discharge_voltage_v = _ceil_tenth(config.discharge_pack_voltage_v)
        self._ccl = self._limiter(self.max_charge_current_a)
        self._dcl = self._limiter(self.max_discharge_current_a)
        self._cvl = _RiseLimiter(
            margin=s.cvl_recovery_margin_v_per_cell * self.cells,
            hold_s=s.hold_s,
            ramp_per_s=s.cvl_ramp_v_per_cell_s * self.cells,
        )
        self._last: LimitBreakdown | None = None

    def _limiter(self, max_a: float) -> _RiseLimiter:
        s = self.settings
        return _RiseLimiter(
            margin=s.recovery_margin_fraction * max_a,
            hold_s=s.hold_s,
            ramp_per_s=s.ramp_fraction_per_s * max_a,
        )

    @property
    def last(self) -> LimitBreakdown | None:
        """The breakdown of the latest `update`."""
        return self._last

    def update(self, inputs: LimitInputs, now_s: float) -> Limits:
        stale = inputs.stale or any(
            _value(v) is None
            for v in (inputs.cell_v_max, inputs.cell_v_min, inputs.temp_min_c, inputs.temp_max_c)
        )
        charge = self._side(inputs, now_s, charge=True, stale=stale)
        discharge = self._side(inputs, now_s, charge=False, stale=stale)
        cvl_target, cvl_why = self._cvl_target(inputs)
        cvl, cvl_reason = self._cvl.step(cvl_target, cvl_why, now_s)
        self._last = LimitBreakdown(charge, discharge, cvl_target)
        return Limits(
            charge_voltage_v=max(_floor_tenth(cvl), self.discharge_voltage_v),
            discharge_voltage_v=self.discharge_voltage_v,
            charge_current_a=charge.limit_a,
            discharge_current_a=discharge.limit_a,
            charge_reason=charge.reason,
            discharge_reason=discharge.reason,
            charge_voltage_reason=cvl_reason,
        )

    def fractions(self, inputs: LimitInputs, *, charge: bool) -> dict[str, float]:
        """Fraction of the maximum current by reason, for the known inputs."""
        t = self.tables
        derate = inputs.charge_derate if charge else inputs.discharge_derate
        out = {REASON_WARNING: _clamp01(derate)}
        cell_v = _value(inputs.cell_v_max if charge else inputs.cell_v_min)
        if cell_v is not None:
            out[REASON_CELL_VOLTAGE] = (t.charge_voltage if charge else t.discharge_voltage)(cell_v)
        t_min, t_max = _value(inputs.temp_min_c), _value(inputs.temp_max_c)
        if t_min is not None and t_max is not None:
            table = t.charge_temperature if charge else t.discharge_temperature
            reason, fraction = _temperature(table, t_min, t_max)
            out[reason] = fraction
        soc = _value(inputs.soc_pct)
        if self.settings.use_soc_tables and soc is not None:
            out[REASON_SOC] = (t.charge_soc if charge else t.discharge_soc)(soc)
        return out

    def _side(
        self, inputs: LimitInputs, now_s: float, *, charge: bool, stale: bool
    ) -> SideBreakdown:
        max_a = self.max_charge_current_a if charge else self.max_discharge_current_a
        stop = inputs.stop_charge if charge else inputs.stop_discharge
        fractions = self.fractions(inputs, charge=charge)
        if stale:
            target, reason = 0.0, REASON_STALE
        elif stop:
            unknown = ("charge" if charge else "discharge") in inputs.stop_unknown_only
            target, reason = 0.0, REASON_INPUT_UNKNOWN if unknown else REASON_ALARM
        elif inputs.contactors_fault:
            target, reason = 0.0, REASON_CONTACTORS_FAULT
        else:
            # Ties go to the earlier entry, so an all-1.0 set reads "max_current".
            fraction, reason = 1.0, REASON_MAX_CURRENT
            for name, value in fractions.items():
                if value < fraction:
                    fraction, reason = value, name
            target = _floor_tenth(max_a * fraction)
        limiter = self._ccl if charge else self._dcl
        value, shown = limiter.step(target, reason, now_s)
        return SideBreakdown(fractions, target, reason, _floor_tenth(value), shown)

    def _cvl_target(self, inputs: LimitInputs) -> tuple[float, str]:
        full = self.charge_voltage_full_v
        total, v_max = _value(inputs.sum_of_cells_v), _value(inputs.cell_v_max)
        if not self.settings.cvl_headroom or total is None or v_max is None:
            return full, REASON_FULL_CHARGE_VOLTAGE
        headroom = _floor_tenth(total + self.cells * (self.charge_v - v_max))
        if headroom >= full:
            return full, REASON_FULL_CHARGE_VOLTAGE
        return max(self.discharge_voltage_v, headroom), REASON_CELL_HEADROOM
