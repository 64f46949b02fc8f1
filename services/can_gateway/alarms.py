"""Protection codes mapped to the inverter alarm bits of 0x35A and Pylontech 0x359 (data only).

Levels: pack `faults` go to the alarm half of 0x35A and to the protection bytes of 0x359;
`alarms` and `warnings` go to the warning half of 0x35A and to the alarm bytes of 0x359.
An alarm on 0x35A puts an SMA inverter into standby, which is what a BMS fault means; a BMS alarm
or warning only derates the limits, which the BMS already does through 0x351.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

_INTERNAL = (
    "open_wire",
    "measurement_out_of_range",
    "sensor_fault",
    "pack_voltage_plausibility",
    "communication_loss",
    "current_sensor_failure",
)

# 0x35A condition (signal name without the Alarm/Warn prefix) -> protection codes.
# "General" is active for any code of the level, mapped or not. "ShortCircuit" has no code of
# its own (a short trips discharge_overcurrent), so its pair stays 0 = not supported.
VICTRON_CONDITIONS: Mapping[str, tuple[str, ...]] = {
    "General": (),
    "HighVoltage": ("cell_overvoltage", "pack_overvoltage"),
    "LowVoltage": ("cell_undervoltage", "pack_undervoltage", "deep_discharge"),
    "HighTemp": ("cell_overtemp_discharge",),
    "LowTemp": ("cell_undertemp_discharge",),
    "HighTempCharge": ("cell_overtemp_charge",),
    "LowTempCharge": ("cell_undertemp_charge",),
    "HighDischargeCurrent": ("discharge_overcurrent",),
    "HighChargeCurrent": ("charge_overcurrent",),
    "Contactor": ("contactor_feedback_mismatch",),
    "BmsInternal": _INTERNAL,
    "CellImbalance": ("cell_imbalance",),
}
UNSUPPORTED_CONDITIONS = ("ShortCircuit",)

PAIR_NOT_SUPPORTED = 0
PAIR_ACTIVE = 1
PAIR_OK = 2

# Pylontech 0x359: (protection signal, alarm signal) -> protection codes.
PYLON_FLAGS: Mapping[tuple[str, str], tuple[str, ...]] = {
    ("ProtectOverVoltage", "AlarmHighVoltage"): ("cell_overvoltage", "pack_overvoltage"),
    ("ProtectUnderVoltage", "AlarmLowVoltage"): (
        "cell_undervoltage",
        "pack_undervoltage",
        "deep_discharge",
    ),
    ("ProtectOverTemp", "AlarmHighTemp"): ("cell_overtemp_charge", "cell_overtemp_discharge"),
    ("ProtectUnderTemp", "AlarmLowTemp"): ("cell_undertemp_charge", "cell_undertemp_discharge"),
    ("ProtectDischargeOverCurrent", "AlarmDischargeHighCurrent"): ("discharge_overcurrent",),
    ("ProtectChargeOverCurrent", "AlarmChargeHighCurrent"): ("charge_overcurrent",),
    ("ProtectSystemError", "AlarmInternalComm"): _INTERNAL,
}
# A fault without a bit of its own (e.g. contactor, imbalance) still has to stop the inverter.
PYLON_UNMAPPED_FAULT = "ProtectSystemError"


def victron_pairs(
    faults: Iterable[str], warnings: Iterable[str], *, force_alarms: Iterable[str] = ()
) -> dict[str, float]:
    """0x35A signal values: Alarm<cond> from `faults`, Warn<cond> from `warnings`.

    `force_alarms` lists conditions whose alarm pair is set active regardless of the codes.
    """
    forced = set(force_alarms)
    out: dict[str, float] = {}
    for prefix, codes in (("Alarm", set(faults)), ("Warn", set(warnings))):
        for condition, mapped in VICTRON_CONDITIONS.items():
            hit = bool(codes) if condition == "General" else bool(codes.intersection(mapped))
            hit = hit or (prefix == "Alarm" and condition in forced)
            out[prefix + condition] = PAIR_ACTIVE if hit else PAIR_OK
        for condition in UNSUPPORTED_CONDITIONS:
            out[prefix + condition] = PAIR_NOT_SUPPORTED
    return out


def pylon_flags(
    faults: Iterable[str], warnings: Iterable[str], *, force: Iterable[str] = ()
) -> dict[str, float]:
    """0x359 flag signals: protection bits from `faults`, alarm bits from `warnings`.

    `force` lists flag signals set regardless of the codes.
    """
    fault_set, warn_set, forced = set(faults), set(warnings), set(force)
    out: dict[str, float] = {}
    mapped_all: set[str] = set()
    for (protect, alarm), mapped in PYLON_FLAGS.items():
        mapped_all.update(mapped)
        out[protect] = float(bool(fault_set.intersection(mapped)) or protect in forced)
        out[alarm] = float(bool(warn_set.intersection(mapped)) or alarm in forced)
    if fault_set - mapped_all:
        out[PYLON_UNMAPPED_FAULT] = 1.0
    return out
