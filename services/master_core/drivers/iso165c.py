"""Bender ISOMETER iso165C insulation monitor on CAN: frame map, pure decoder/state core, Protocol.

Sources of the layout (classic 11-bit ids, Intel byte order, DataWords low byte first):
- foxBMS 2 (github.com/foxBMS/foxbms-2, v1.11.0): `src/app/driver/imd/bender/iso165c/` (start-up
  sequence and command ids, `config/bender_iso165c_cfg.h`), `src/app/driver/can/cbs/rx/
  can_cbs_rx_imd_bender-iso165c-info.c` / `-response.c` (bit positions), `src/app/driver/config/
  can_cfg_*-message-definitions.h` (ids 0x37 / 0x22 / 0x23, DLC 6 / 5 / 5) and Bender's own DBC
  `tools/dbc/third-party/bender/iso165_IMD.dbc` (signal names kept here).
- iso165C manual D00154 (01.2019) chapters 6-7: IMD_Info is sent once a second; every
  IMD_Request is answered by an IMD_Response echoing the command byte, or by an error response
  (byte 0 = 0xFF, DataWord1 the error code, byte 3 the failed command); "DLC is always 5, only
  IMD_Info has 6"; D_IMC_R_ISO is in kOhm, range 0..50,000.

IMD_Info (0x37): bytes 0-1 D_IMC_R_ISO; bytes 2-3 D_IMC_STATUS (bit 0 insulation fault = the
device's error threshold is undercut, 1 chassis (ground) fault, 2 system failure, 3 calibration
running, 4 self-test running, 5 insulation warning); bytes 4-5 D_VIFC_STATUS (bit 0 measurement
deactivated, 1 IMC connection error, 2 IMC alive error, 4 VIFC command error, 8 resistance value
outdated, 12 / 13 overall / parameter-config self-test NOT executed since power-up).

Unclear in the public documentation, decided here:
- The VIFC command-error bit: foxBMS's info callback reads bit 35, but its own
  `I165C_VIFC_COMMAND_SHIFT` (4) and Bender's DBC put it at bit 36 (word bit 4); 36 is used.
- What each flag does to the value (table `INFO_BITS`): a system failure, a chassis fault or a
  lost IMC link make the device's resistance meaningless (DEVICE_ERROR, value None); a running
  self-test or calibration, a deactivated measurement or an outdated value give no value
  (SELF_TEST / NOT_MEASURED). The insulation fault and warning bits are conditions of a valid
  value: the value is kept (hiding it at an alarm would blind the protection), the state says
  ALARM / WARNING. During a self-test the device may raise its fault bit on purpose (test
  resistor), so SELF_TEST outranks ALARM.
- A D_IMC_R_ISO above the documented 50,000 kOhm is not a measurement: None, condition
  `resistance_out_of_range`.
- The info frame has no message counter, so there is no gap count; D_IMC_R_ISO_CNT (in the
  GET_R_ISO response) counts measurements, not frames.
- Device-internal self-test results (D_IMC_STATUS_EXT, only in the GET_STATUS response) and
  error responses count while they are no older than `stale_after_s`.
Scales come from the DBC (`services/master_core/dbc/iso165c.dbc`): resistances and thresholds
are carried in Ohm there (device kOhm x 1000). Frames are decoded only with cantools.

The core is pure: `Iso165cCore.feed(frame_id, data, now_s)` updates it, `reading(now_s)` reads
it. Nothing read is older than `stale_after_s`: a silent device reads as STALE with no value,
never as its last value.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from typing import Protocol

import cantools
from cantools.database.can import Database, Message

from shared.dbc import packaged_dbc

INFO_ID = 0x37
REQUEST_ID = 0x22
RESPONSE_ID = 0x23
MAX_RESISTANCE_OHM = 50_000_000.0  # manual 7.3.7: D_IMC_R_ISO range 0..50,000 kOhm
INFO_CYCLE_S = 1.0  # manual 6.2


class Command(enum.IntEnum):
    """IMD_Request / IMD_Response command bytes used here (manual 6.3, foxBMS cfg)."""

    DUMMY = 0x00
    CTL_SELFTEST = 0x21
    SET_R_ISO_ERR_THR = 0x28
    SET_R_ISO_WRN_THR = 0x29
    SET_MEAN_FACTOR = 0x2B
    GET_R_ISO_ERR_THR = 0x32
    GET_R_ISO = 0x35
    GET_STATUS = 0x37
    GET_R_ISO_WRN_THR = 0x39
    CTL_IMC_RESET = 0xC8
    CTL_LOCK = 0xCA
    CTL_MEASUREMENT = 0xCB
    SET_HV_RELAIS = 0xD2
    GET_HV_RELAIS = 0xDD
    ERROR_FRAME = 0xFF


class SelfTestScenario(enum.IntEnum):
    """D_IMC_SELFTEST_SCR; foxBMS runs OVERALL (`I165C_SELF_TEST_LONG`)."""

    OVERALL = 1
    PARAMETER_CONFIG = 2


class HvRelay(enum.IntEnum):
    """D_VIFC_HV_RELAIS: the coupling relays of the iso165C (open after power-up)."""

    NEGATIVE = 0
    POSITIVE = 1


class InsulationState(enum.StrEnum):
    """What the monitor says about the insulation now."""

    NOT_MEASURED = "not_measured"  # never heard, deactivated, outdated or calibrating
    MEASURING = "measuring"
    SELF_TEST = "self_test"
    WARNING = "warning"  # below the device's warning threshold
    ALARM = "alarm"  # below the device's error threshold
    DEVICE_ERROR = "device_error"
    STALE = "stale"  # heard before, silent for longer than stale_after_s


class FaultSide(enum.StrEnum):
    """D_IMC_R_ISO_BIAS: where the insulation fault tends to be (manual 7.3.8)."""

    HV_MINUS = "hv_minus"
    HV_PLUS = "hv_plus"


BIAS = {1: FaultSide.HV_MINUS, 2: FaultSide.HV_PLUS}


class Effect(enum.IntEnum):
    """What a raised status bit does; a higher effect wins the state (table order = rank)."""

    WARNING = 1
    ALARM = 2
    NO_VALUE = 3
    SELF_TEST = 4
    DEVICE_ERROR = 5


EFFECT_STATE = {
    Effect.WARNING: InsulationState.WARNING,
    Effect.ALARM: InsulationState.ALARM,
    Effect.NO_VALUE: InsulationState.NOT_MEASURED,
    Effect.SELF_TEST: InsulationState.SELF_TEST,
    Effect.DEVICE_ERROR: InsulationState.DEVICE_ERROR,
}
VALUE_KEPT = {Effect.WARNING, Effect.ALARM}

# IMD_Info bit signal -> (condition name, effect)
INFO_BITS: dict[str, tuple[str, Effect]] = {
    "II_IMC_STATUS_00_IsoFailure": ("insulation_fault", Effect.ALARM),
    "II_IMC_STATUS_01_Ground": ("chassis_fault", Effect.DEVICE_ERROR),
    "II_IMC_STATUS_02_System": ("system_failure", Effect.DEVICE_ERROR),
    "II_IMC_STATUS_03_Calibration": ("calibration_running", Effect.NO_VALUE),
    "II_IMC_STATUS_04_Selftest": ("self_test_running", Effect.SELF_TEST),
    "II_IMC_STATUS_05_IsoWarning": ("insulation_warning", Effect.WARNING),
    "II_VIFC_STATUS_00_IsoMeasurement": ("measurement_deactivated", Effect.NO_VALUE),
    "II_VIFC_STATUS_01_IMC_Connection": ("imc_connection_error", Effect.DEVICE_ERROR),
    "II_VIFC_STATUS_02_IMC_Alive": ("imc_alive_error", Effect.DEVICE_ERROR),
    "II_VIFC_STATUS_08_Outdated": ("resistance_outdated", Effect.NO_VALUE),
}
# a condition without an effect on the value
INFO_NOTES = {"II_VIFC_STATUS_04_VIFC_CmdError": "vifc_command_error"}
SELF_TEST_NOT_EXECUTED = ("II_VIFC_STATUS_12_ST_Overall", "II_VIFC_STATUS_13_ST_ParamConfig")
# GET_STATUS DataWord2 (D_IMC_STATUS_EXT, device-internal self-test results) -> condition
STATUS_EXT_BITS: dict[str, str] = {
    "IG_IMC_STATUS_EXT_00_Calibration": "calibration_parameter",
    "IG_IMC_STATUS_EXT_01_Hardware": "hardware_failure",
    "IG_IMC_STATUS_EXT_02_EEPROM": "eeprom_parameter",
    "IG_IMC_STATUS_EXT_03_Flash": "flash_parameter",
    "IG_IMC_STATUS_EXT_04_RAM": "ram_parameter",
    "IG_IMC_STATUS_EXT_05_Stack": "stack_overflow",
    "IG_IMC_STATUS_EXT_07_Parameter": "parameter_value",
    "IG_IMC_STATUS_EXT_08_TestPulse": "test_pulse_voltage",
    "IG_IMC_STATUS_EXT_09_12V_POS": "supply_plus_12v",
    "IG_IMC_STATUS_EXT_10_12V_NEG": "supply_minus_12v",
    "IG_IMC_STATUS_EXT_11_FuseBits": "fuse_bits",
    "IG_IMC_STATUS_EXT_12_HV1": "hv1_voltage",
    "IG_IMC_STATUS_EXT_13_HV2": "hv2_voltage",
    "IG_IMC_STATUS_EXT_14_IDString": "manufacturer_string",
}


@cache
def iso165c_dbc() -> Database:
    """`services/master_core/dbc/iso165c.dbc`, parsed strictly once."""
    return packaged_dbc("services.master_core", "iso165c")


def message(frame_id: int) -> Message:
    return iso165c_dbc().get_message_by_frame_id(frame_id)


@cache
def known_commands(frame_id: int) -> frozenset[int]:
    """The command bytes the DBC defines for the request or response frame."""
    return frozenset(
        mux for sig in message(frame_id).signals for mux in (sig.multiplexer_ids or ())
    )


def decode_numbers(msg: Message, data: bytes) -> dict[str, float]:
    """`data` decoded by cantools to scaled numbers (no choice names)."""
    decoded = msg.decode(data, decode_choices=False, scaling=True)
    if not isinstance(decoded, dict):  # a container message; the iso165C has none
        raise ValueError(f"{msg.name} is not a plain frame")
    return {name: float(v) for name, v in decoded.items() if isinstance(v, int | float)}


def choice_name(frame_id: int, signal: str, value: int) -> str:
    """The DBC's name for `value` of `signal`, else its hex."""
    choices = message(frame_id).get_signal_by_name(signal).choices
    named = choices.get(value) if choices is not None else None
    return str(named) if named is not None else f"0x{value:X}"


# request signal names per command; commands without parameters carry a zero reserved field
_REQUEST_SIGNALS: dict[Command, tuple[str, ...]] = {
    Command.DUMMY: ("MG_VIFC_DUMMY_Reserved",),
    Command.CTL_SELFTEST: ("MC_IMC_SELFTEST_SCR",),
    Command.SET_R_ISO_ERR_THR: ("MS_IMC_R_ISO_ERR_THR",),
    Command.SET_R_ISO_WRN_THR: ("MS_IMC_R_ISO_WRN_THR",),
    Command.SET_MEAN_FACTOR: ("MS_IMC_MEAN_FACTOR",),
    Command.GET_R_ISO_ERR_THR: ("MG_IMC_R_ISO_ERR_THR_Reserved",),
    Command.GET_R_ISO: ("MG_IMC_R_ISO_Reserved",),
    Command.GET_STATUS: ("MG_IMC_STATUS_Reserved",),
    Command.GET_R_ISO_WRN_THR: ("MG_IMC_R_ISO_WRN_THR_Reserved",),
    Command.CTL_IMC_RESET: ("MC_VIFC_IMC_RESET_Reserved",),
    Command.CTL_LOCK: ("MC_VIFC_LOCK_MODE", "MC_VIFC_LOCK_PWD"),
    Command.CTL_MEASUREMENT: ("MC_VIFC_MEASURE_MODE",),
    Command.SET_HV_RELAIS: ("MS_VIFC_HV_RELAIS", "MS_VIFC_HV_RELAIS_STATE"),
    Command.GET_HV_RELAIS: ("MG_VIFC_HV_RELAIS",),
}


def request_frame(command: Command, *values: float) -> tuple[int, bytes]:
    """An IMD_Request; `values` fill the command's DataWords in order (missing ones are 0).
    A value out of its documented range is refused (cantools EncodeError), never clamped."""
    names = _REQUEST_SIGNALS[command]
    if len(values) > len(names):
        raise ValueError(f"{command.name} takes at most {len(names)} values")
    signals: dict[str, float] = {"IMD_Request_Command": int(command)}
    signals.update({name: 0 for name in names})
    signals.update(zip(names, values, strict=False))
    data = message(REQUEST_ID).encode(signals, strict=True)
    return REQUEST_ID, bytes(data)


def unlock_frame() -> tuple[int, bytes]:
    """CTL_LOCK unlocked with the unlock password 0x0000 (foxBMS `CANTX_RequestUnlock`)."""
    return request_frame(Command.CTL_LOCK, 0, 0)


def measurement_frame(enable: bool) -> tuple[int, bytes]:
    return request_frame(Command.CTL_MEASUREMENT, int(enable))


def self_test_frame(scenario: SelfTestScenario = SelfTestScenario.OVERALL) -> tuple[int, bytes]:
    return request_frame(Command.CTL_SELFTEST, int(scenario))


def error_threshold_frame(threshold_ohm: float) -> tuple[int, bytes]:
    """SET_R_ISO_ERR_THR; the device takes whole kOhm, 30..1000 kOhm (foxBMS cfg check)."""
    return request_frame(Command.SET_R_ISO_ERR_THR, threshold_ohm)


def warning_threshold_frame(threshold_ohm: float) -> tuple[int, bytes]:
    """SET_R_ISO_WRN_THR; whole kOhm, 40..2000 kOhm (manual 7.3.3)."""
    return request_frame(Command.SET_R_ISO_WRN_THR, threshold_ohm)


def mean_factor_frame(factor: int) -> tuple[int, bytes]:
    """SET_MEAN_FACTOR, 1..20 measurements (manual 7.3.4; foxBMS sends 10)."""
    return request_frame(Command.SET_MEAN_FACTOR, factor)


def hv_relay_frame(relay: HvRelay, closed: bool) -> tuple[int, bytes]:
    return request_frame(Command.SET_HV_RELAIS, int(relay), int(closed))


class RejectReason(enum.StrEnum):
    """Why a frame was not taken; each is counted."""

    UNKNOWN_ID = "unknown_id"
    WRONG_LENGTH = "wrong_length"
    UNDECODABLE = "undecodable"
    UNKNOWN_COMMAND = "unknown_command"  # a response whose command byte the DBC lacks
    NOT_A_DATA_FRAME = "not_a_data_frame"  # an error or remote frame


@dataclass(frozen=True)
class InsulationReading:
    """What an insulation monitor says at one instant; None = unknown (stale, never seen,
    no valid measurement)."""

    resistance_ohm: float | None
    state: InsulationState
    errors: tuple[str, ...]
    stale: bool
    fault_side: FaultSide | None  # from the last fresh GET_R_ISO response, if any
    self_test_executed: bool | None  # any self-test since the device's power-up


class InsulationMonitor(Protocol):
    """An insulation monitor between the HV system and chassis."""

    def reading(self, now_s: float) -> InsulationReading: ...


@dataclass(frozen=True)
class _Info:
    resistance_ohm: float
    received_s: float
    effects: tuple[tuple[str, Effect], ...]
    notes: tuple[str, ...]
    self_test_executed: bool


@dataclass(frozen=True)
class _Timed:
    """A fact from a response, valid for stale_after_s after `received_s`."""

    received_s: float
    conditions: tuple[str, ...]
    fault_side: FaultSide | None = None


@dataclass
class Iso165cCore:
    """Latest info frame and responses with error and freshness bookkeeping (pure)."""

    stale_after_s: float
    rejected: Counter[RejectReason] = field(default_factory=Counter)
    responses: Counter[int] = field(default_factory=Counter)
    command_errors: Counter[int] = field(default_factory=Counter)  # by failed command
    echoed: dict[int, dict[str, float]] = field(default_factory=dict)  # last response per cmd
    _info: _Info | None = None
    _status_ext: _Timed | None = None
    _r_iso: _Timed | None = None
    _error_response: _Timed | None = None

    def feed(self, frame_id: int, data: bytes, now_s: float) -> RejectReason | None:
        """Take one received frame; returns why it was rejected (and counts it), else None."""
        reason = self._take(frame_id, data, now_s)
        if reason is not None:
            self.rejected[reason] += 1
        return reason

    def _take(self, frame_id: int, data: bytes, now_s: float) -> RejectReason | None:
        if frame_id not in (INFO_ID, RESPONSE_ID):
            return RejectReason.UNKNOWN_ID
        msg = message(frame_id)
        if len(data) != msg.length:
            return RejectReason.WRONG_LENGTH
        if frame_id == RESPONSE_ID and data[0] not in known_commands(RESPONSE_ID):
            return RejectReason.UNKNOWN_COMMAND
        try:
            signals = decode_numbers(msg, data)
        except (cantools.database.DecodeError, ValueError):
            return RejectReason.UNDECODABLE
        if frame_id == INFO_ID:
            self._take_info(signals, now_s)
        else:
            self._take_response(signals, now_s)
        return None

    def _take_info(self, signals: dict[str, float], now_s: float) -> None:
        effects = [(name, effect) for sig, (name, effect) in INFO_BITS.items() if signals[sig]]
        resistance_ohm = signals["II_IMC_R_ISO"]
        if resistance_ohm > MAX_RESISTANCE_OHM:
            effects.append(("resistance_out_of_range", Effect.NO_VALUE))
        self._info = _Info(
            resistance_ohm=resistance_ohm,
            received_s=now_s,
            effects=tuple(effects),
            notes=tuple(name for sig, name in INFO_NOTES.items() if signals[sig]),
            # manual: the bits say "not executed"; either scenario counts (foxBMS
            # CANRX_ImdBenderIso165cInfoHasSelfTestBeenExecuted)
            self_test_executed=not all(signals[sig] for sig in SELF_TEST_NOT_EXECUTED),
        )

    def _take_response(self, signals: dict[str, float], now_s: float) -> None:
        command = int(signals.pop("IMD_Response_Command"))
        self.responses[command] += 1
        self.echoed[command] = signals
        if command == Command.ERROR_FRAME:
            failed = int(signals["IG_IMD_ERROR_CODE"]), int(signals["IG_IMD_FAILED_CMD"])
            self.command_errors[failed[1]] += 1
            code = choice_name(RESPONSE_ID, "IG_IMD_ERROR_CODE", failed[0])
            cmd = choice_name(RESPONSE_ID, "IMD_Response_Command", failed[1])
            self._error_response = _Timed(now_s, (f"command_rejected:{cmd}:{code}",))
        elif command == Command.GET_STATUS:
            raised = tuple(f"imc:{name}" for sig, name in STATUS_EXT_BITS.items() if signals[sig])
            self._status_ext = _Timed(now_s, raised)
        elif command == Command.GET_R_ISO:
            side = BIAS.get(int(signals["IG_IMC_R_ISO_BIAS"]))
            self._r_iso = _Timed(now_s, (), fault_side=side)

    def acknowledged(self, command: int) -> int:
        """How many (non-error) responses to `command` arrived."""
        return self.responses[command]

    def _fresh(self, received_s: float, now_s: float) -> bool:
        return now_s - received_s <= self.stale_after_s

    def _fresh_timed(self, timed: _Timed | None, now_s: float) -> _Timed | None:
        return timed if timed is not None and self._fresh(timed.received_s, now_s) else None

    def reading(self, now_s: float) -> InsulationReading:
        info = self._info
        if info is None:
            return InsulationReading(
                None, InsulationState.NOT_MEASURED, ("info:missing",), True, None, None
            )
        if not self._fresh(info.received_s, now_s):
            return InsulationReading(None, InsulationState.STALE, ("info:stale",), True, None, None)
        effects = list(info.effects)
        errors = [name for name, _ in info.effects] + list(info.notes)
        # internal self-test results void the value; a refused command is only reported
        for timed, effect in (
            (self._status_ext, Effect.DEVICE_ERROR),
            (self._error_response, None),
        ):
            fresh = self._fresh_timed(timed, now_s)
            if fresh is not None:
                errors.extend(fresh.conditions)
                if effect is not None:
                    effects.extend((c, effect) for c in fresh.conditions)
        worst = max((effect for _, effect in effects), default=None)
        state = InsulationState.MEASURING if worst is None else EFFECT_STATE[worst]
        value_ok = all(effect in VALUE_KEPT for _, effect in effects)
        r_iso = self._fresh_timed(self._r_iso, now_s)
        return InsulationReading(
            resistance_ohm=info.resistance_ohm if value_ok else None,
            state=state,
            errors=tuple(errors),
            stale=False,
            fault_side=r_iso.fault_side if r_iso is not None else None,
            self_test_executed=info.self_test_executed,
        )
