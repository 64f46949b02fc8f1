"""Protection codes as data: one enum and one metadata table (like foxBMS 2 `diag_cfg.c`).

Every code that can appear in `faults`, `alarms` and `warnings` of the pack state is a
`ProtectionCode`. `CODE_TABLE` says, per code:

- `levels`: which of warning / alarm / fault it has. Three-level quantities clear their warning
  and alarm by themselves; every fault latches until a reset.
- `reset`: what clears its latched fault: an operator reset (`reset_faults`), or a service
  reset (`service_override`: the cell may be damaged).
- `concerns`: the current directions its warning and alarm act on (a fault stops both).
- `bit`: its bit in the native 32-bit fields (Modbus native block, SunSpec vendor events, CAN
  0x604/0x605). Bits are stable: clients decode them. A new code takes the next free bit;
  `OTHER_CODE_BIT` stands for any code the reader does not know (a newer master).
- `evt1`: its (alarm-or-fault bit, warning bit) in SunSpec 802/804 `Evt1`, or None for the
  "other alarm" / "other warning" bits.
- Per CAN profile: its Victron 0x35A condition, its Pylontech 0x359 (protection, alarm) flag
  pair, its Pylontech HV 0x4250 flag (alarm and protection words) or error bit (faults only).
  None means the profile has no bit of its own for it: the profile's general or "other" bit
  carries it (`VICTRON_0X35A_GENERAL`, `PYLON_0X359_OTHER_FAULT`, `PYLON_HV_OTHER_FAULT`).

`code_bits` / `bits_codes` are the one bit packing of code sets; the per-profile mappings are
read through `signals_by_code`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, TypeVar

K = TypeVar("K")

Flow = Literal["charge", "discharge"]
Level = Literal["warning", "alarm", "fault"]
Located = Literal["cell_v_max_at", "cell_v_min_at", "temp_max_at", "temp_min_at"]
Reset = Literal["operator", "service"]
"""operator: `reset_faults` clears the latch once the value is past its release;
service: only a reset with `service_override` does."""

CHARGE: frozenset[Flow] = frozenset({"charge"})
DISCHARGE: frozenset[Flow] = frozenset({"discharge"})
BOTH: frozenset[Flow] = frozenset({"charge", "discharge"})

THREE_LEVELS: tuple[Level, ...] = ("warning", "alarm", "fault")
FAULT_ONLY: tuple[Level, ...] = ("fault",)
WARNING_AND_FAULT: tuple[Level, ...] = ("warning", "fault")
WARNING_ONLY: tuple[Level, ...] = ("warning",)
WARNING_AND_ALARM: tuple[Level, ...] = ("warning", "alarm")
NEITHER: frozenset[Flow] = frozenset()
"""For codes that act on no direction below fault: a warning only flags, and an unknown value
stops nothing."""

WORD_BITS = 32
OTHER_CODE_BIT = 31
"""Set for a code the table does not know; read back as `other`."""

EVT1_COMMUNICATION_ERROR = 0
EVT1_OTHER_ALARM = 25
EVT1_OTHER_WARNING = 26

# The bit each CAN profile sets for a code without a signal of its own (None in its column).
VICTRON_0X35A_GENERAL = "General"
"""0x35A AlarmGeneral / WarnGeneral: set for any fault / any alarm or warning."""
PYLON_0X359_OTHER_FAULT = "ProtectSystemError"
"""0x359: a fault without a flag pair of its own; its warning and alarm set nothing."""
PYLON_HV_OTHER_FAULT = "OtherError"
"""0x4250 error bit of a fault without a flag or error bit of its own; its warning and alarm
set nothing."""


class ProtectionCode(StrEnum):
    CELL_OVERVOLTAGE = "cell_overvoltage"
    CELL_UNDERVOLTAGE = "cell_undervoltage"
    PACK_OVERVOLTAGE = "pack_overvoltage"
    PACK_UNDERVOLTAGE = "pack_undervoltage"
    CELL_OVERTEMP_CHARGE = "cell_overtemp_charge"
    CELL_OVERTEMP_DISCHARGE = "cell_overtemp_discharge"
    CELL_UNDERTEMP_CHARGE = "cell_undertemp_charge"
    CELL_UNDERTEMP_DISCHARGE = "cell_undertemp_discharge"
    CHARGE_OVERCURRENT = "charge_overcurrent"
    DISCHARGE_OVERCURRENT = "discharge_overcurrent"
    CELL_IMBALANCE = "cell_imbalance"
    DEEP_DISCHARGE = "deep_discharge"
    OPEN_WIRE = "open_wire"
    MEASUREMENT_OUT_OF_RANGE = "measurement_out_of_range"
    SENSOR_FAULT = "sensor_fault"
    PACK_VOLTAGE_PLAUSIBILITY = "pack_voltage_plausibility"
    COMMUNICATION_LOSS = "communication_loss"
    CURRENT_SENSOR_FAILURE = "current_sensor_failure"
    CONTACTOR_FEEDBACK_MISMATCH = "contactor_feedback_mismatch"
    INSULATION_LOW = "insulation_low"
    CURRENT_ON_OPEN_STRING = "current_on_open_string"
    CURRENT_OFFSET_HIGH = "current_offset_high"
    CONTACTOR_WELDED = "contactor_welded"
    PRECHARGE_FAILURE = "precharge_failure"
    INSULATION_MONITOR_FAILURE = "insulation_monitor_failure"
    CONTACTOR_IO_FAILURE = "contactor_io_failure"
    TEMPERATURE_SPREAD = "temperature_spread"
    STUCK_CELL_VOLTAGE_CHANNEL = "stuck_cell_voltage_channel"
    STUCK_TEMPERATURE_CHANNEL = "stuck_temperature_channel"


@dataclass(frozen=True)
class CodeSpec:
    code: ProtectionCode
    bit: int
    levels: tuple[Level, ...]
    reset: Reset
    concerns: frozenset[Flow]
    description: str
    evt1: tuple[int, int] | None = None
    victron_0x35a: str | None = None
    pylon_0x359: tuple[str, str] | None = None
    """(protection flag, alarm flag)."""
    pylon_hv_flag: str | None = None
    """0x4250 flag without its Alarm/Protect prefix: warnings and alarms set Alarm<flag>,
    faults set Protect<flag>."""
    pylon_hv_error: str | None = None
    """0x4250 error bit: set by faults only."""
    title: str = ""
    """A few words for people (the web application, alerts): "Cell over-voltage"."""
    located_at: Located | None = None
    """The pack state's location of the extreme value this code judges, when it is one cell
    or sensor (the highest cell for over-voltage); None when the code has no single place."""

    @property
    def three_level(self) -> bool:
        return self.levels == THREE_LEVELS


C = ProtectionCode
_OV = ("ProtectOverVoltage", "AlarmHighVoltage")
_UV = ("ProtectUnderVoltage", "AlarmLowVoltage")
_OT = ("ProtectOverTemp", "AlarmHighTemp")
_UT = ("ProtectUnderTemp", "AlarmLowTemp")
_INTERNAL = ("ProtectSystemError", "AlarmInternalComm")


def _spec(
    code: ProtectionCode,
    bit: int,
    levels: tuple[Level, ...],
    concerns: frozenset[Flow],
    description: str,
    *,
    reset: Reset = "operator",
    evt1: tuple[int, int] | None = None,
    victron: str | None = None,
    pylon: tuple[str, str] | None = None,
    hv_flag: str | None = None,
    hv_error: str | None = None,
    title: str,
    located_at: Located | None = None,
) -> CodeSpec:
    return CodeSpec(
        code, bit, levels, reset, concerns, description, evt1, victron, pylon, hv_flag, hv_error,
        title, located_at,
    )  # fmt: skip


CODE_TABLE: tuple[CodeSpec, ...] = (
    _spec(C.CELL_OVERVOLTAGE, 0, THREE_LEVELS, CHARGE, "Highest cell voltage too high.",
          evt1=(9, 10), victron="HighVoltage", pylon=_OV, hv_flag="CellHighVoltage",
          title="Cell over-voltage", located_at="cell_v_max_at"),
    _spec(C.CELL_UNDERVOLTAGE, 1, THREE_LEVELS, DISCHARGE, "Lowest cell voltage too low.",
          evt1=(11, 12), victron="LowVoltage", pylon=_UV, hv_flag="CellLowVoltage",
          title="Cell under-voltage", located_at="cell_v_min_at"),
    _spec(C.PACK_OVERVOLTAGE, 2, THREE_LEVELS, CHARGE, "Pack voltage too high.",
          evt1=(9, 10), victron="HighVoltage", pylon=_OV, hv_flag="SystemHighVoltage",
          title="Pack over-voltage"),
    _spec(C.PACK_UNDERVOLTAGE, 3, THREE_LEVELS, DISCHARGE, "Pack voltage too low.",
          evt1=(11, 12), victron="LowVoltage", pylon=_UV, hv_flag="SystemLowVoltage",
          title="Pack under-voltage"),
    # The charge window only restricts charging; the discharge window bounds any current.
    _spec(C.CELL_OVERTEMP_CHARGE, 4, THREE_LEVELS, CHARGE,
          "Hottest cell above the charge temperature window (checked while charging).",
          evt1=(1, 2), victron="HighTempCharge", pylon=_OT, hv_flag="ChargeHighTemp",
          title="Cell over-temperature while charging", located_at="temp_max_at"),
    _spec(C.CELL_OVERTEMP_DISCHARGE, 5, THREE_LEVELS, BOTH,
          "Hottest cell above the discharge temperature window.",
          evt1=(1, 2), victron="HighTemp", pylon=_OT, hv_flag="DischargeHighTemp",
          title="Cell over-temperature", located_at="temp_max_at"),
    _spec(C.CELL_UNDERTEMP_CHARGE, 6, THREE_LEVELS, CHARGE,
          "Coldest cell below the charge temperature window (checked while charging).",
          evt1=(3, 4), victron="LowTempCharge", pylon=_UT, hv_flag="ChargeLowTemp",
          title="Cell under-temperature while charging", located_at="temp_min_at"),
    _spec(C.CELL_UNDERTEMP_DISCHARGE, 7, THREE_LEVELS, BOTH,
          "Coldest cell below the discharge temperature window.",
          evt1=(3, 4), victron="LowTemp", pylon=_UT, hv_flag="DischargeLowTemp",
          title="Cell under-temperature", located_at="temp_min_at"),
    _spec(C.CHARGE_OVERCURRENT, 8, THREE_LEVELS, CHARGE, "Charge current too high.",
          evt1=(5, 6), victron="HighChargeCurrent",
          pylon=("ProtectChargeOverCurrent", "AlarmChargeHighCurrent"),
          hv_flag="ChargeOverCurrent",
          title="Charge over-current"),
    _spec(C.DISCHARGE_OVERCURRENT, 9, THREE_LEVELS, DISCHARGE, "Discharge current too high.",
          evt1=(7, 8), victron="HighDischargeCurrent",
          pylon=("ProtectDischargeOverCurrent", "AlarmDischargeHighCurrent"),
          hv_flag="DischargeOverCurrent",
          title="Discharge over-current"),
    # Charging an imbalanced string drives its highest cell into over-voltage.
    _spec(C.CELL_IMBALANCE, 10, THREE_LEVELS, CHARGE,
          "Spread between the highest and lowest cell voltage too wide.",
          evt1=(17, 17), victron="CellImbalance",
          title="Cell voltage imbalance"),  # SunSpec has only a voltage-imbalance warning
    _spec(C.DEEP_DISCHARGE, 11, FAULT_ONLY, BOTH,
          "A cell fell below the deep-discharge voltage and may be damaged.",
          reset="service", evt1=(11, 12), victron="LowVoltage", pylon=_UV,
          hv_flag="CellLowVoltage",
          title="Deep discharge", located_at="cell_v_min_at"),
    _spec(C.OPEN_WIRE, 12, FAULT_ONLY, BOTH, "A cell sense wire is open.",
          victron="BmsInternal", pylon=_INTERNAL, hv_error="VoltageSensorError",
          title="Open sense wire"),
    _spec(C.MEASUREMENT_OUT_OF_RANGE, 13, FAULT_ONLY, BOTH,
          "A channel reads outside its measurement range.",
          victron="BmsInternal", pylon=_INTERNAL, hv_error="OtherError",
          title="Measurement out of range"),
    _spec(C.SENSOR_FAULT, 14, FAULT_ONLY, BOTH, "A cell or temperature sensor reports a fault.",
          victron="BmsInternal", pylon=_INTERNAL, hv_error="TemperatureSensorError",
          title="Sensor fault"),
    _spec(C.PACK_VOLTAGE_PLAUSIBILITY, 15, FAULT_ONLY, BOTH,
          "Measured pack voltage and the sum of the cells disagree.",
          victron="BmsInternal", pylon=_INTERNAL, hv_error="VoltageSensorError",
          title="Pack voltage implausible"),
    _spec(C.COMMUNICATION_LOSS, 16, FAULT_ONLY, BOTH, "Module telemetry stopped.",
          evt1=(0, 0), victron="BmsInternal", pylon=_INTERNAL, hv_error="InternalCommError",
          title="Module communication lost"),
    _spec(C.CURRENT_SENSOR_FAILURE, 17, FAULT_ONLY, BOTH, "The pack current sensor failed.",
          victron="BmsInternal", pylon=_INTERNAL, hv_error="OtherError",
          title="Current sensor failure"),
    _spec(C.CONTACTOR_FEEDBACK_MISMATCH, 18, FAULT_ONLY, BOTH,
          "Contactor feedback disagrees with its command.",
          evt1=(20, 20), victron="Contactor", hv_error="RelayCheckError",
          title="Contactor feedback mismatch"),
    # Below the warning level the pack still runs but must be inspected; at the fault level a
    # touchable part may be live: both directions stop at once.
    _spec(C.INSULATION_LOW, 19, WARNING_AND_FAULT, BOTH,
          "Insulation resistance between the pack and earth too low.",
          evt1=(22, EVT1_OTHER_WARNING),
          title="Insulation resistance low"),  # GROUND_FAULT; SunSpec has no insulation warning
    # Plausibility checks (services/master_core/plausibility.py). They cross-check quantities
    # that have codes of their own, so they concern no direction below fault.
    _spec(C.CURRENT_ON_OPEN_STRING, 20, FAULT_ONLY, NEITHER,
          "Current measured while every contactor reads open: a path bypasses the contactors "
          "or the current sensor is wrong.",
          title="Current on an open string"),
    # Coulomb counting drifts by the offset; nothing else is at risk, so it only flags.
    _spec(C.CURRENT_OFFSET_HIGH, 21, WARNING_ONLY, NEITHER,
          "The current sensor's zero offset, measured while the string is open, is too large.",
          title="Current sensor offset high"),
    # The string has lost one of its isolating breaks: inspect before it may close again.
    _spec(C.CONTACTOR_WELDED, 22, FAULT_ONLY, NEITHER,
          "After an open command the string still conducts (current, or the DC link follows "
          "the pack): a contactor is welded.",
          reset="service", evt1=(20, 20), victron="Contactor", hv_error="RelayCheckError",
          title="Contactor welded"),
    _spec(C.PRECHARGE_FAILURE, 23, FAULT_ONLY, NEITHER,
          "Precharge failed: the DC link did not rise as the precharge circuit predicts (short, "
          "open resistor, bypassed resistor or no capacitor), or every try timed out.",
          title="Precharge failure"),
    _spec(C.INSULATION_MONITOR_FAILURE, 24, FAULT_ONLY, NEITHER,
          "The insulation monitor stopped reporting or reports an error.",
          title="Insulation monitor failure"),
    # The contactors can no longer be commanded or verified.
    _spec(C.CONTACTOR_IO_FAILURE, 25, FAULT_ONLY, NEITHER,
          "The contactor relay module stopped answering or reports errors.",
          evt1=(20, 20), victron="Contactor", hv_error="RelayCheckError",
          title="Contactor I/O failure"),
    # A hot spot, a cooling failure or a sensor off its cell: derate, then stop both ways.
    _spec(C.TEMPERATURE_SPREAD, 26, WARNING_AND_ALARM, BOTH,
          "Spread between the warmest and coldest sensor of one module too wide.",
          evt1=(18, 19),
          title="Temperature spread in a module"),  # TEMPERATURE_IMBALANCE_ALARM / _WARNING
    # A frozen channel leaves its cell unsupervised, as a sensor fault does.
    _spec(C.STUCK_CELL_VOLTAGE_CHANNEL, 27, FAULT_ONLY, NEITHER,
          "A cell-voltage channel repeats the same reading while current flows and the other "
          "channels of its module move.",
          victron="BmsInternal", pylon=_INTERNAL, hv_error="VoltageSensorError",
          title="Stuck cell-voltage channel"),
    _spec(C.STUCK_TEMPERATURE_CHANNEL, 28, FAULT_ONLY, NEITHER,
          "A temperature channel repeats the same reading while current flows and the other "
          "channels of its module move.",
          victron="BmsInternal", pylon=_INTERNAL, hv_error="TemperatureSensorError",
          title="Stuck temperature channel"),
)  # fmt: skip

SPECS: Mapping[ProtectionCode, CodeSpec] = {s.code: s for s in CODE_TABLE}
BY_BIT: Mapping[int, ProtectionCode] = {s.bit: s.code for s in CODE_TABLE}


def spec_of(code: str) -> CodeSpec | None:
    """The metadata of `code`, or None for a code this version does not know."""
    try:
        return SPECS[ProtectionCode(code)]
    except ValueError:
        return None


def reset_need(code: str) -> Reset:
    """What clearing a latch of `code` needs; a code this table does not know needs an
    operator reset once released (the safe default is never *less* than that)."""
    spec = spec_of(code)
    return "operator" if spec is None else spec.reset


def codes_where(predicate: Callable[[CodeSpec], bool]) -> tuple[ProtectionCode, ...]:
    """The codes whose spec satisfies `predicate`, in bit order."""
    return tuple(s.code for s in CODE_TABLE if predicate(s))


# --- bit packing ------------------------------------------------------------------------------


def code_bits(codes: Iterable[str]) -> int:
    """The 32-bit field of `codes`: each known code's `bit`, `OTHER_CODE_BIT` for any other."""
    bits = 0
    for code in codes:
        spec = spec_of(code)
        bits |= 1 << (spec.bit if spec is not None else OTHER_CODE_BIT)
    return bits


@dataclass(frozen=True)
class DecodedBits:
    codes: tuple[ProtectionCode, ...]
    """The known codes, in bit order."""
    other: bool
    """`OTHER_CODE_BIT`, or a bit this version has no code for (a newer master), is set."""

    def names(self, other_name: str = "other") -> list[str]:
        """The code names, with `other_name` last when `other` is set."""
        return [*(c.value for c in self.codes), *([other_name] if self.other else [])]


def bits_codes(bits: int) -> DecodedBits:
    """The codes of a 32-bit field (the inverse of `code_bits` up to unknown codes)."""
    if not 0 <= bits < 1 << WORD_BITS:
        raise ValueError(f"code bits {bits!r} do not fit {WORD_BITS} unsigned bits")
    codes = tuple(BY_BIT[i] for i in sorted(BY_BIT) if bits >> i & 1)
    known = sum(1 << i for i in BY_BIT)
    return DecodedBits(codes, other=bool(bits & ~known))


def evt1_bits(faults_and_alarms: Iterable[str], warnings: Iterable[str]) -> int:
    """SunSpec 802/804 `Evt1`: each code's pair bit, or the other-alarm / other-warning bit."""
    out = 0
    for codes, warning in ((faults_and_alarms, False), (warnings, True)):
        for code in codes:
            spec = spec_of(code)
            if spec is None or spec.evt1 is None:
                out |= 1 << (EVT1_OTHER_WARNING if warning else EVT1_OTHER_ALARM)
            else:
                out |= 1 << spec.evt1[1 if warning else 0]
    return out


def signals_by_code(
    field: Callable[[CodeSpec], K | None],
) -> dict[K, tuple[ProtectionCode, ...]]:
    """One profile's mapping, signal -> its codes (bit order), e.g.
    `signals_by_code(lambda s: s.victron_0x35a)`. Signals without a code are the profile's own
    business (general bits, unsupported conditions)."""
    out: dict[K, list[ProtectionCode]] = {}
    for spec in CODE_TABLE:
        signal = field(spec)
        if signal is not None:
            out.setdefault(signal, []).append(spec.code)
    return {signal: tuple(codes) for signal, codes in out.items()}


def _check_table() -> None:
    bits = [s.bit for s in CODE_TABLE]
    if sorted(bits) != list(range(len(bits))) or len(bits) > OTHER_CODE_BIT:
        raise RuntimeError(f"protection code bits must be 0..n-1 below {OTHER_CODE_BIT}: {bits}")
    if [s.code for s in CODE_TABLE] != list(ProtectionCode):
        raise RuntimeError("CODE_TABLE must list every ProtectionCode once, in enum order")
    for s in CODE_TABLE:
        if s.pylon_hv_flag is not None and s.pylon_hv_error is not None:
            raise RuntimeError(f"{s.code}: a Pylontech HV flag or an error bit, not both")
        if not s.title:
            raise RuntimeError(f"{s.code}: every code has a title for people")


_check_table()

VICTRON_0X35A = signals_by_code(lambda s: s.victron_0x35a)
"""0x35A condition (without the Alarm/Warn prefix) -> its codes."""
PYLON_0X359 = signals_by_code(lambda s: s.pylon_0x359)
"""0x359 (protection flag, alarm flag) -> its codes."""
PYLON_HV_FLAGS = signals_by_code(lambda s: s.pylon_hv_flag)
"""0x4250 flag (without the Alarm/Protect prefix) -> its codes."""
PYLON_HV_ERRORS = signals_by_code(lambda s: s.pylon_hv_error)
"""0x4250 error bit -> its fault codes."""
