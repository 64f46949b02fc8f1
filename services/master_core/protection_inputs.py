"""What protection sees each cycle, and which value each supervised quantity reads from it.

Every field may be None while unknown (no telemetry yet, module lost, sensor missing). An
unknown value never counts as safe: its quantities are not evaluated (levels neither trip nor
clear, faults cannot be reset), they are listed in `ProtectionResult.unknown`, and they stop
the directions they concern. Opening the contactors for missing data is the job of
communication_loss (stale modules) and current_sensor_failure, with their own delays.

The plausibility fields (`PLAUSIBILITY`, computed by `services.master_core.plausibility`)
differ: None there means "not evaluated" (the check does not apply now, e.g. the open-string
check while the contactors are closed, or the caller has no such check). Their levels hold as
for an unknown value (nothing trips or clears, a latch cannot be reset), but they are not
listed as unknown and stop nothing: the quantities they cross-check are supervised, and
stopped when unknown, by their own codes.

Time: the codes in `SAMPLED` read slave telemetry alone; their delays count in the slaves'
sample time (`sample_time_s`), so a trip follows the sample that completes its delay, however
late the caller judges it. Every other code counts in the caller's time (`now_s`): its value
is the master's own reading (current, pack voltage, insulation) or a timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

ChannelPosition = tuple[int, int]
"""(module index, channel index within the module), both from 0."""

CHARGING_THRESHOLD_A = 0.5
"""Above this (positive = charge) the pack counts as charging: the narrower charge-window
temperature quantities apply. Below it sensor offset and balancing currents dominate."""


@dataclass(frozen=True, kw_only=True)
class ProtectionInputs:
    max_cell_v: float | None = None
    min_cell_v: float | None = None
    cell_v_above_range: float | None = None
    """The highest reading above the cell measurement range (a channel flagged out of range,
    no open wire), None when none: such a cell is above every over-voltage threshold, so
    over-voltage judges it; without it the other cells' maximum would restart a pending delay
    and a cell running away through the range's top would trip later, and only as
    measurement_out_of_range."""
    cell_v_below_range: float | None = None
    """As `cell_v_above_range`, the lowest reading below the range, for under-voltage. Deep
    discharge (latched until a service reset) reads measured cells only."""
    pack_v: float | None = None
    """Measured pack voltage."""
    sum_of_cells_v: float | None = None
    max_temp_c: float | None = None
    min_temp_c: float | None = None
    current_a: float | None = None
    """Pack current, positive while charging."""
    cell_spread_v: float | None = None
    """max - min cell voltage; derived from max/min when None."""
    open_wire: bool | None = None
    """Any cell channel reports an open sense wire."""
    out_of_range: bool | None = None
    """Any channel reads outside its measurement range."""
    sensor_fault: bool | None = None
    stale_modules: frozenset[int] = frozenset()
    """Modules stale or missing, as decided by the caller after module_timeout_periods."""
    current_sensor_ok: bool | None = None
    contactor_mismatch: bool | None = None
    """Contactor feedback disagrees with the command (after the caller's feedback timeout)."""
    insulation_ohm: float | None = None
    """Insulation resistance between the pack and earth (None: no reading)."""
    # --- plausibility (None: not evaluated) ---
    open_string_current_a: float | None = None
    """|current| while every contactor reads open; None while any reads closed."""
    current_offset_a: float | None = None
    """Zero offset of the current sensor (mean current with the string open); None before the
    first full window."""
    contactor_welded: bool | None = None
    """The string still conducts after a completed open command; None while closed."""
    precharge_failed: bool | None = None
    """The running precharge departs from its RC curve, or a close sequence ran out of tries."""
    insulation_monitor_age_s: float | None = None
    """Seconds since the insulation monitor's last good reading."""
    contactor_io_age_s: float | None = None
    """Seconds since the contactor relay module's last good read."""
    module_temp_spread_c: float | None = None
    """Largest warmest-minus-coldest sensor spread within one module."""
    stuck_cell_voltage_channels: frozenset[ChannelPosition] | None = None
    stuck_temperature_channels: frozenset[ChannelPosition] | None = None
    # --- time ---
    sample_time_s: float | None = None
    """When the newest slave sample behind the cell and temperature values was taken, on the
    caller's clock (the `SAMPLED` codes are judged at this time); None: at `now_s`. It must
    never go back (the caller keeps the newest)."""

    @property
    def charging(self) -> bool:
        """True while charging, and while the current is unknown (so no window is skipped)."""
        # Written as `not <=` so that NaN counts as unknown, hence charging.
        return self.current_a is None or not self.current_a <= CHARGING_THRESHOLD_A


def _flag(value: bool | None) -> float | None:
    # Flags become 1.0/0.0 and are supervised as high-side values against 0.5.
    return None if value is None else float(value)


def _first_known(value: float | None, otherwise: float | None) -> float | None:
    return otherwise if value is None else value


def _pack_v(i: ProtectionInputs) -> float | None:
    # The sum of cells is an equally valid pack voltage; plausibility compares the two.
    return i.pack_v if i.pack_v is not None else i.sum_of_cells_v


def _spread(i: ProtectionInputs) -> float | None:
    if i.cell_spread_v is not None:
        return i.cell_spread_v
    if i.max_cell_v is None or i.min_cell_v is None:
        return None
    return i.max_cell_v - i.min_cell_v


def _charge_a(i: ProtectionInputs) -> float | None:
    return None if i.current_a is None else max(i.current_a, 0.0)


def _discharge_a(i: ProtectionInputs) -> float | None:
    return None if i.current_a is None else max(-i.current_a, 0.0)


def _plausibility(i: ProtectionInputs) -> float | None:
    if i.pack_v is None or i.sum_of_cells_v is None:
        return None
    return abs(i.pack_v - i.sum_of_cells_v)


def _count(channels: frozenset[ChannelPosition] | None) -> float | None:
    return None if channels is None else float(len(channels))


def _abs(value: float | None) -> float | None:
    return None if value is None else abs(value)


def _current_sensor_failed(i: ProtectionInputs) -> float | None:
    return None if i.current_sensor_ok is None else float(not i.current_sensor_ok)


Reader = Callable[[ProtectionInputs], float | None]

VALUE_OF: dict[str, Reader] = {
    "cell_overvoltage": lambda i: _first_known(i.cell_v_above_range, i.max_cell_v),
    "cell_undervoltage": lambda i: _first_known(i.cell_v_below_range, i.min_cell_v),
    "pack_overvoltage": _pack_v,
    "pack_undervoltage": _pack_v,
    "cell_overtemp_charge": lambda i: i.max_temp_c,
    "cell_overtemp_discharge": lambda i: i.max_temp_c,
    "cell_undertemp_charge": lambda i: i.min_temp_c,
    "cell_undertemp_discharge": lambda i: i.min_temp_c,
    "charge_overcurrent": _charge_a,
    "discharge_overcurrent": _discharge_a,
    "cell_imbalance": _spread,
    "deep_discharge": lambda i: i.min_cell_v,
    "open_wire": lambda i: _flag(i.open_wire),
    "measurement_out_of_range": lambda i: _flag(i.out_of_range),
    "sensor_fault": lambda i: _flag(i.sensor_fault),
    "pack_voltage_plausibility": _plausibility,
    "communication_loss": lambda i: float(len(i.stale_modules)),
    "current_sensor_failure": _current_sensor_failed,
    "contactor_feedback_mismatch": lambda i: _flag(i.contactor_mismatch),
    "insulation_low": lambda i: i.insulation_ohm,
    "current_on_open_string": lambda i: _abs(i.open_string_current_a),
    "current_offset_high": lambda i: _abs(i.current_offset_a),
    "contactor_welded": lambda i: _flag(i.contactor_welded),
    "precharge_failure": lambda i: _flag(i.precharge_failed),
    "insulation_monitor_failure": lambda i: i.insulation_monitor_age_s,
    "contactor_io_failure": lambda i: i.contactor_io_age_s,
    "temperature_spread": lambda i: i.module_temp_spread_c,
    "stuck_cell_voltage_channel": lambda i: _count(i.stuck_cell_voltage_channels),
    "stuck_temperature_channel": lambda i: _count(i.stuck_temperature_channels),
}
"""Code -> the value its levels supervise."""

CHARGE_WINDOW = frozenset({"cell_overtemp_charge", "cell_undertemp_charge"})
"""Trip only while charging. Their discharge-window twins are supervised always, and the
charge window lies inside the discharge window, so the stricter bound is never skipped."""

SAMPLED = frozenset(
    {
        "cell_overvoltage",
        "cell_undervoltage",
        "cell_overtemp_charge",
        "cell_overtemp_discharge",
        "cell_undertemp_charge",
        "cell_undertemp_discharge",
        "cell_imbalance",
        "deep_discharge",
        "open_wire",
        "measurement_out_of_range",
        "sensor_fault",
    }
)
"""Codes whose value comes from slave telemetry alone: judged in sample time (`sample_time_s`).
The charge window's arming reads the current, but only decides whether a level may trip."""

PLAUSIBILITY = frozenset(
    {
        "current_on_open_string",
        "current_offset_high",
        "contactor_welded",
        "precharge_failure",
        "insulation_monitor_failure",
        "contactor_io_failure",
        "temperature_spread",
        "stuck_cell_voltage_channel",
        "stuck_temperature_channel",
    }
)
"""Codes whose None value means "not evaluated": not unknown, stops nothing (see above)."""
