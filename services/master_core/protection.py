"""Protection: three-level supervision of every quantity, latched faults and their reset.

Pure: the caller builds `ProtectionInputs` from the pack state at each fresh sample and at
each periodic cycle, and passes the monotonic time; nothing here reads a clock, logs or does
I/O. One evaluation costs a few dozen scalar comparisons (the caller supplies max/min over the
cells).

- Time: the telemetry codes (`protection_inputs.SAMPLED`) count their delays in sample time,
  `ProtectionInputs.sample_time_s`: a level trips at exactly the first sample whose time stamp
  is at least its delay after the first sample beyond the threshold (every sample since beyond
  too), whenever that sample is judged. Judging the same sample again (a periodic cycle)
  changes nothing. The other codes count in `now_s`.

- Three-level quantities (`ProtectionConfig.quantities()`): warning and alarm clear by
  themselves once past their release; faults latch until `reset()`.
- Fault-only quantities: deep_discharge and the plausibility/communication checks below.
- insulation_low (when an insulation monitor exists): low-side warning and latched fault
  against `insulation_warning_ohm` / `insulation_fault_ohm`.
- Level semantics, resets and directions per code come from `shared.protection_codes`.
- What a reset of each code needs is data (`CODE_TABLE`): deep_discharge needs
  `service_override=True` (the cell may be damaged). Every latched fault survives restarts
  through `latched_state()` / `restore()`.
- Plausibility codes (`protection_inputs.PLAUSIBILITY`, values from `plausibility.py`): a
  None value there is "not evaluated": it holds the levels like an unknown value but is neither
  listed in `unknown` nor stops a direction. insulation_monitor_failure is supervised only
  with an insulation monitor, as insulation_low.
- A reset clears a latched fault only while its last sample is known and past its release.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from services.master_core.level_monitor import LEVEL_ORDER, Change, Level, LevelMonitor
from services.master_core.protection_actions import Actions, derive_actions
from services.master_core.protection_inputs import (
    CHARGE_WINDOW,
    PLAUSIBILITY,
    SAMPLED,
    VALUE_OF,
    ProtectionInputs,
    Reader,
)
from shared.config.limits import CELL_VOLTAGE_ACCURACY_V
from shared.config.protection import (
    CURRENT_OFFSET_DELAY_S,
    CURRENT_OFFSET_RELEASE_FRACTION,
    INSULATION_DELAYS_S,
    INSULATION_RELEASE_FACTOR,
    TEMPERATURE_DELAYS_S,
    TEMPERATURE_SPREAD_HYSTERESIS_C,
    ProtectionConfig,
)
from shared.config.system import SystemConfig
from shared.protection_codes import ProtectionCode, reset_need

FLAG_THRESHOLD = 0.5
"""Flags (1.0/0.0) and the stale-module count trip above this and clear below it."""
PLAUSIBILITY_RELEASE_FRACTION = 0.8
CONTACTOR_MISMATCH_DELAY_S = 0.2
"""The caller already waits the contactor feedback timeout; this rides over a bouncing
auxiliary contact (two samples)."""

HIDES: dict[str, tuple[str, ...]] = {
    "open_wire": ("cell_overvoltage", "cell_undervoltage"),
    "measurement_out_of_range": (
        "cell_overvoltage",
        "cell_undervoltage",
        "cell_overtemp_discharge",
        "cell_undertemp_discharge",
    ),
    "sensor_fault": (
        "cell_overvoltage",
        "cell_undervoltage",
        "cell_overtemp_discharge",
        "cell_undertemp_discharge",
    ),
    "current_sensor_failure": ("charge_overcurrent", "discharge_overcurrent"),
}
"""A failure that hides quantities trips within the shortest fault delay of those quantities.

While such a flag is present, the quantities it hides are not known for every channel (the
extreme over the channels still measured may look released while the flagged channel is
past its threshold: a drifting cell read out of range): their latched faults refuse a reset
until the flag has gone, even before the flag's own fault has tripped."""
HIDDEN_BY: dict[str, tuple[str, ...]] = {
    hidden: tuple(flag for flag, codes in HIDES.items() if hidden in codes)
    for hidden in sorted({code for codes in HIDES.values() for code in codes})
}
"""Quantity -> the flags that hide it (`HIDES` inverted)."""
AGE_RELEASE_FRACTION = 0.5
"""A driver-age fault releases once a good reading is this fraction of its timeout old."""

LATCHED_STATE_VERSION = 1


@dataclass(frozen=True)
class Transition:
    """A level raised or cleared: one event for the log."""

    kind: Change
    level: Level
    code: str
    value: float | None
    threshold: float
    release: float
    unit: str
    at_s: float
    """The sample time for a `SAMPLED` code's raise or clear, else the caller's time."""


@dataclass(frozen=True)
class ProtectionResult:
    warnings: tuple[str, ...]
    alarms: tuple[str, ...]
    faults: tuple[str, ...]
    """Active faults, latched ones included."""
    unknown: tuple[str, ...]
    """Codes not evaluated this cycle because their input is unknown."""
    transitions: tuple[Transition, ...]
    actions: Actions


@dataclass(frozen=True)
class ResetResult:
    cleared: tuple[Transition, ...]
    still_latched: dict[str, str]
    """Code -> why it stayed latched."""

    @property
    def ok(self) -> bool:
        return not self.still_latched


@dataclass
class _Quantity:
    code: str
    unit: str
    read: Reader
    charge_window: bool
    sampled: bool
    """Judged in sample time (`SAMPLED`)."""
    levels: dict[Level, LevelMonitor]
    """In LEVEL_ORDER, so the last active one is the highest."""


def _flag_fault(delay_s: float) -> dict[Level, LevelMonitor]:
    return {"fault": LevelMonitor("high", FLAG_THRESHOLD, FLAG_THRESHOLD, delay_s, latching=True)}


def _build(
    config: ProtectionConfig, ride_through_s: float, insulation_monitor: bool
) -> list[_Quantity]:
    out: list[_Quantity] = []

    def add(code: str, unit: str, levels: dict[Level, LevelMonitor]) -> None:
        out.append(
            _Quantity(code, unit, VALUE_OF[code], code in CHARGE_WINDOW, code in SAMPLED, levels)
        )

    for code, item in config.quantities():
        levels = {
            level: LevelMonitor(
                item.direction, lv.threshold, lv.release, lv.delay_s, latching=level == "fault"
            )
            for level, lv in zip(LEVEL_ORDER, (item.warning, item.alarm, item.fault), strict=True)
        }
        add(code, item.unit, levels)

    # Release one measurement accuracy above the limit: an edge reading is not a recovery.
    deep = LevelMonitor(
        "low",
        config.deep_discharge_v,
        config.deep_discharge_v + CELL_VOLTAGE_ACCURACY_V,
        config.cell_undervoltage.fault.delay_s,
        latching=True,
    )
    add("deep_discharge", "V", {"fault": deep})
    masked = {code: min(_fault_delay(config, q) for q in hidden) for code, hidden in HIDES.items()}
    for code in ("open_wire", "measurement_out_of_range", "sensor_fault"):
        add(code, "", _flag_fault(masked[code]))
    tolerance = config.pack_plausibility_tolerance_v
    plausibility = LevelMonitor(
        "high",
        tolerance,
        tolerance * PLAUSIBILITY_RELEASE_FRACTION,
        config.pack_plausibility_delay_s,
        latching=True,
    )
    add("pack_voltage_plausibility", "V", {"fault": plausibility})
    # Staleness is already debounced by the caller (module_timeout_periods), so the fault
    # waits only the configured ride-through (0 for open_immediately).
    add("communication_loss", "", _flag_fault(ride_through_s))
    add("current_sensor_failure", "", _flag_fault(masked["current_sensor_failure"]))
    add("contactor_feedback_mismatch", "", _flag_fault(CONTACTOR_MISMATCH_DELAY_S))
    if insulation_monitor:
        add(ProtectionCode.INSULATION_LOW.value, "ohm", _insulation_levels(config))
    _add_plausibility(config, insulation_monitor, add)
    return out


def _add_plausibility(
    config: ProtectionConfig,
    insulation_monitor: bool,
    add: Callable[[str, str, dict[Level, LevelMonitor]], None],
) -> None:
    c = config
    open_a = c.open_string_current_a
    add(
        "current_on_open_string",
        "A",
        {
            "fault": LevelMonitor(
                "high",
                open_a,
                open_a * PLAUSIBILITY_RELEASE_FRACTION,
                c.open_string_delay_s,
                latching=True,
            )
        },
    )
    offset_a = c.current_offset_warning_a
    add(
        "current_offset_high",
        "A",
        {
            "warning": LevelMonitor(
                "high",
                offset_a,
                offset_a * CURRENT_OFFSET_RELEASE_FRACTION,
                CURRENT_OFFSET_DELAY_S,
            )
        },
    )
    # The checks wait their own timeouts (open completed, RC curve): a single sample trips.
    add("contactor_welded", "", _flag_fault(0.0))
    add("precharge_failure", "", _flag_fault(0.0))
    if insulation_monitor:
        add("insulation_monitor_failure", "s", _age_fault(c.insulation_monitor_timeout_s))
    add("contactor_io_failure", "s", _age_fault(c.contactor_io_timeout_s))
    h = TEMPERATURE_SPREAD_HYSTERESIS_C
    warning_delay_s, alarm_delay_s, _ = TEMPERATURE_DELAYS_S
    add(
        "temperature_spread",
        "degC",
        {
            "warning": LevelMonitor(
                "high", c.temperature_spread_warning_c, c.temperature_spread_warning_c - h,
                warning_delay_s,
            ),
            "alarm": LevelMonitor(
                "high", c.temperature_spread_alarm_c, c.temperature_spread_alarm_c - h,
                alarm_delay_s,
            ),
        },
    )  # fmt: skip
    # The tracker counts the samples itself (stuck_*_samples).
    add("stuck_cell_voltage_channel", "", _flag_fault(0.0))
    add("stuck_temperature_channel", "", _flag_fault(0.0))


def _age_fault(timeout_s: float) -> dict[Level, LevelMonitor]:
    # The age is its own debounce: it trips once no good reading came for `timeout_s`.
    release_s = timeout_s * AGE_RELEASE_FRACTION
    return {"fault": LevelMonitor("high", timeout_s, release_s, 0.0, latching=True)}


def _insulation_levels(config: ProtectionConfig) -> dict[Level, LevelMonitor]:
    # Low-side, warning and fault only; each releases INSULATION_RELEASE_FACTOR above its limit.
    warning_delay_s, fault_delay_s = INSULATION_DELAYS_S
    return {
        "warning": LevelMonitor(
            "low",
            config.insulation_warning_ohm,
            config.insulation_warning_ohm * INSULATION_RELEASE_FACTOR,
            warning_delay_s,
            latching=False,
        ),
        "fault": LevelMonitor(
            "low",
            config.insulation_fault_ohm,
            config.insulation_fault_ohm * INSULATION_RELEASE_FACTOR,
            fault_delay_s,
            latching=True,
        ),
    }


def _fault_delay(config: ProtectionConfig, code: str) -> float:
    delay: float = getattr(config, code).fault.delay_s
    return delay


class Protection:
    """All protection quantities of one system."""

    def __init__(
        self,
        config: ProtectionConfig,
        *,
        comm_loss_ride_through_s: float = 0.0,
        insulation_monitor: bool = False,
    ) -> None:
        """`insulation_monitor`: an insulation monitor feeds `ProtectionInputs.insulation_ohm`.
        Without one, insulation_low is not supervised at all (rather than unknown, which would
        stop both directions for good)."""
        self._quantities = _build(config, comm_loss_ride_through_s, insulation_monitor)
        self._by_code = {q.code: q for q in self._quantities}
        self._sampled = tuple(q for q in self._quantities if q.sampled)
        # Nothing has been measured yet.
        self._unknown: tuple[str, ...] = tuple(sorted(set(self._by_code) - PLAUSIBILITY))
        self._quiet: ProtectionResult | None = None
        """The last result without transitions: the levels only change through a transition,
        a reset or a restore, so it is the result again while none came and the unknown codes
        are the same (`_settled`)."""

    @classmethod
    def from_system(cls, system: SystemConfig, *, insulation_monitor: bool = False) -> Protection:
        policy = system.comm_loss
        ride = policy.ride_through_s if policy.action == "ride_through" else 0.0
        return cls(
            system.protection,
            comm_loss_ride_through_s=ride,
            insulation_monitor=insulation_monitor,
        )

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(self._by_code)

    def monitors(self, code: str) -> Mapping[Level, LevelMonitor]:
        """The level monitors of one code (read-only use)."""
        return self._by_code[code].levels

    def evaluate(self, inputs: ProtectionInputs, now_s: float) -> ProtectionResult:
        """Judge every quantity: the `SAMPLED` ones at `inputs.sample_time_s` (when given), the
        others at `now_s`."""
        charging = inputs.charging
        sampled_s = now_s if inputs.sample_time_s is None else inputs.sample_time_s
        transitions: list[Transition] = []
        unknown: list[str] = []
        for q in self._quantities:
            value = q.read(inputs)
            if value is None or math.isnan(value):
                value = None
                if q.code not in PLAUSIBILITY:
                    unknown.append(q.code)
            armed = charging or not q.charge_window
            at_s = sampled_s if q.sampled else now_s
            for level, m in q.levels.items():
                change = m.update(value, at_s, armed=armed)
                if change is not None:
                    transitions.append(
                        Transition(
                            change, level, q.code, value, m.threshold, m.release, q.unit, at_s
                        )
                    )
        return self._settled(tuple(transitions), tuple(sorted(unknown)))

    def judge_sample(self, inputs: ProtectionInputs) -> ProtectionResult:
        """Judge only the `SAMPLED` codes, at `inputs.sample_time_s`: what a fresh telemetry
        sample can change, and nothing else (the per-sample path of the master, issue 19). The
        other codes keep their levels and their unknown state until the next `evaluate`.

        It reaches the same levels as `evaluate` on the same inputs: a `SAMPLED` level depends
        only on its value and the sample time, and judging the same sample again changes
        nothing, so the periodic `evaluate` that follows adds no transition of its own."""
        if inputs.sample_time_s is None:
            raise ValueError("a sample is judged at its sample time: sample_time_s is None")
        charging = inputs.charging
        at_s = inputs.sample_time_s
        transitions: list[Transition] = []
        unknown = [code for code in self._unknown if code not in SAMPLED]
        for q in self._sampled:
            value = q.read(inputs)
            if value is None or math.isnan(value):
                value = None
                unknown.append(q.code)
            armed = charging or not q.charge_window
            for level, m in q.levels.items():
                change = m.update(value, at_s, armed=armed)
                if change is not None:
                    transitions.append(
                        Transition(
                            change, level, q.code, value, m.threshold, m.release, q.unit, at_s
                        )
                    )
        return self._settled(tuple(transitions), tuple(sorted(unknown)))

    def status(self) -> ProtectionResult:
        """The current state without evaluating (e.g. after `restore` or `reset`)."""
        return self._result(())

    def reset(
        self,
        now_s: float,
        *,
        service_override: bool = False,
        codes: frozenset[str] | None = None,
    ) -> ResetResult:
        """Clear latched faults whose condition has released; report the others and why.
        `codes`: only these (an automatic recovery clears its own code, nothing else)."""
        cleared: list[Transition] = []
        still: dict[str, str] = {}
        for q in self._quantities:
            m = q.levels.get("fault")
            if m is None or not m.active or (codes is not None and q.code not in codes):
                continue
            if reset_need(q.code) == "service" and not service_override:
                still[q.code] = "needs a service reset (admin, with a reason): cells may be damaged"
                continue
            hiding = [flag for flag in HIDDEN_BY.get(q.code, ()) if self._flag_present(flag)]
            if hiding:
                still[q.code] = f"not every channel is measured ({', '.join(hiding)})"
                continue
            value = m.last_value
            if m.reset():
                cleared.append(
                    Transition(
                        "clear", "fault", q.code, value, m.threshold, m.release, q.unit, now_s
                    )
                )
            else:
                still[q.code] = _why_latched(q, m)
        self._quiet = None
        return ResetResult(tuple(cleared), dict(sorted(still.items())))

    def _flag_present(self, code: str) -> bool:
        """The flag quantity `code` read set in the last evaluation (raised or not yet)."""
        q = self._by_code.get(code)
        m = None if q is None else q.levels.get("fault")
        return m is not None and m.last_value is not None and m.last_value > FLAG_THRESHOLD

    def latched_state(self) -> dict[str, Any]:
        """The latched faults, JSON-able, for persisting across restarts."""
        faults: dict[str, dict[str, float | None]] = {}
        for q in self._quantities:
            m = q.levels.get("fault")
            if m is not None and m.active:
                v = m.trip_value
                faults[q.code] = {"value": v if v is not None and math.isfinite(v) else None}
        return {"version": LATCHED_STATE_VERSION, "faults": faults}

    def restore(self, latched: Mapping[str, Any]) -> tuple[str, ...]:
        """Latch again the faults of `latched_state()`; returns the restored codes.

        Raises ValueError on data it does not understand, rather than dropping a fault.
        """
        if latched.get("version") != LATCHED_STATE_VERSION:
            raise ValueError(f"latched state version {latched.get('version')!r} is not supported")
        faults = latched.get("faults")
        if not isinstance(faults, Mapping):
            raise ValueError("latched state has no 'faults' mapping")
        latching = {q.code for q in self._quantities if "fault" in q.levels}
        unknown = sorted(set(faults) - latching)
        if unknown:
            raise ValueError(f"latched state names unknown fault codes {unknown}")
        for code, info in faults.items():
            m = self._by_code[code].levels["fault"]
            value = info.get("value") if isinstance(info, Mapping) else None
            if not m.active:
                m.force_latched(float(value) if isinstance(value, int | float) else None)
        self._quiet = None
        return tuple(sorted(faults))

    def _settled(
        self, transitions: tuple[Transition, ...], unknown: tuple[str, ...]
    ) -> ProtectionResult:
        """The result of an evaluation: the last quiet one again when nothing changed (a
        cycle between samples, most samples), else worked out from every level."""
        quiet = self._quiet
        if not transitions and quiet is not None and unknown == self._unknown:
            return quiet
        self._unknown = unknown
        result = self._result(transitions)
        self._quiet = None if transitions else result
        return result

    def _result(self, transitions: tuple[Transition, ...]) -> ProtectionResult:
        active: dict[Level, list[str]] = {level: [] for level in LEVEL_ORDER}
        top: dict[str, Level] = {}
        for q in self._quantities:
            for level, m in q.levels.items():
                if m.active:
                    active[level].append(q.code)
                    top[q.code] = level
        return ProtectionResult(
            warnings=tuple(sorted(active["warning"])),
            alarms=tuple(sorted(active["alarm"])),
            faults=tuple(sorted(active["fault"])),
            unknown=self._unknown,
            transitions=transitions,
            actions=derive_actions(top, self._unknown),
        )


def _why_latched(q: _Quantity, m: LevelMonitor) -> str:
    if m.last_value is None:
        return "value unknown: needs a measurement past the release"
    if q.unit == "":
        return "condition still present"
    side = "below" if m.direction == "high" else "above"
    return f"{m.last_value:g} {q.unit} is not {side} the release {m.release:g} {q.unit}"
