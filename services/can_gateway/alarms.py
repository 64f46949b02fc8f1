"""Protection codes as the inverter alarm bits of 0x35A and Pylontech 0x359.

Which code sets which bit is `shared.protection_codes` (`victron_0x35a`, `pylon_0x359`); this
module holds only each frame's layout (its signals, from the DBC) and sets the bits.

Levels: pack `faults` go to the alarm half of 0x35A and to the protection bytes of 0x359;
`alarms` and `warnings` go to the warning half of 0x35A and to the alarm bytes of 0x359.
An alarm on 0x35A puts an SMA inverter into standby, which is what a BMS fault means; a BMS alarm
or warning only derates the limits, which the BMS already does through 0x351.
A code without a bit of its own in a frame (see the table) still shows: 0x35A General is set for
any code of its level, and a fault without a 0x359 flag sets `PYLON_0X359_OTHER_FAULT`, so that
every fault stops the inverter.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.protection_codes import PYLON_0X359_OTHER_FAULT, VICTRON_0X35A_GENERAL, spec_of

# 0x35A conditions (signal names without the Alarm/Warn prefix) that the BMS reports.
# "ShortCircuit" has no code (a short trips discharge_overcurrent), so its pair stays 0 =
# not supported.
VICTRON_CONDITIONS: tuple[str, ...] = (
    VICTRON_0X35A_GENERAL,
    "HighVoltage",
    "LowVoltage",
    "HighTemp",
    "LowTemp",
    "HighTempCharge",
    "LowTempCharge",
    "HighDischargeCurrent",
    "HighChargeCurrent",
    "Contactor",
    "BmsInternal",
    "CellImbalance",
)
UNSUPPORTED_CONDITIONS = ("ShortCircuit",)

PAIR_NOT_SUPPORTED = 0
PAIR_ACTIVE = 1
PAIR_OK = 2

# Pylontech 0x359 flag pairs: (protection signal, alarm signal).
PYLON_PAIRS: tuple[tuple[str, str], ...] = (
    ("ProtectOverVoltage", "AlarmHighVoltage"),
    ("ProtectUnderVoltage", "AlarmLowVoltage"),
    ("ProtectOverTemp", "AlarmHighTemp"),
    ("ProtectUnderTemp", "AlarmLowTemp"),
    ("ProtectDischargeOverCurrent", "AlarmDischargeHighCurrent"),
    ("ProtectChargeOverCurrent", "AlarmChargeHighCurrent"),
    ("ProtectSystemError", "AlarmInternalComm"),
)


def victron_conditions(codes: Iterable[str]) -> set[str]:
    """The 0x35A conditions `codes` set: General for any code, plus each code's own."""
    listed = list(codes)
    own = {spec.victron_0x35a for spec in map(spec_of, listed) if spec is not None}
    return {c for c in own if c is not None} | ({VICTRON_0X35A_GENERAL} if listed else set())


def victron_pairs(
    faults: Iterable[str], warnings: Iterable[str], *, force_alarms: Iterable[str] = ()
) -> dict[str, float]:
    """0x35A signal values: Alarm<cond> from `faults`, Warn<cond> from `warnings`.

    `force_alarms` lists conditions whose alarm pair is set active regardless of the codes.
    """
    out: dict[str, float] = {}
    for prefix, active in (
        ("Alarm", victron_conditions(faults) | set(force_alarms)),
        ("Warn", victron_conditions(warnings)),
    ):
        for condition in VICTRON_CONDITIONS:
            out[prefix + condition] = PAIR_ACTIVE if condition in active else PAIR_OK
        for condition in UNSUPPORTED_CONDITIONS:
            out[prefix + condition] = PAIR_NOT_SUPPORTED
    return out


def pylon_flags(
    faults: Iterable[str], warnings: Iterable[str], *, force: Iterable[str] = ()
) -> dict[str, float]:
    """0x359 flag signals: protection bits from `faults`, alarm bits from `warnings`.

    `force` lists flag signals set regardless of the codes.
    """
    active = set(force)
    for code in faults:
        spec = spec_of(code)
        pair = spec.pylon_0x359 if spec is not None else None
        active.add(pair[0] if pair is not None else PYLON_0X359_OTHER_FAULT)
    for code in warnings:
        spec = spec_of(code)
        if spec is not None and spec.pylon_0x359 is not None:
            active.add(spec.pylon_0x359[1])
    return {signal: float(signal in active) for pair in PYLON_PAIRS for signal in pair}
