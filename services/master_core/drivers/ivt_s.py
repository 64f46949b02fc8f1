"""Isabellenhütte IVT-S current sensor on CAN: frame map, pure decoder/state core, Protocol.

Source of the frame layout (all default CAN ids, classic 11-bit, big endian):
- foxBMS 2, `src/app/driver/can/cbs/rx/can_cbs_rx_cs_isabellenhuette-ivt-s.c` (github.com/foxBMS/
  foxbms-2): result frames 0x521..0x528, 6 bytes; byte 0 the mux id (0x00 current .. 0x07
  energy); byte 1 bit 7 system error, bit 6 measurement error, bit 5 channel error, bit 4 OCS
  (over-current detection), bits 3..0 the message counter; bytes 2..5 a signed 32-bit value.
  Note: the counter is the LOW nibble and the state bits the HIGH nibble of byte 1 (foxBMS's
  start bits 15..12 for the flags, 11 length 4 for the counter), not the other way round.
- IVT-S datasheet "messages overview" as quoted in public driver sources: command frame 0x411
  (DLC 8, byte 0 the command id), response 0x511 (byte 0 = command id | 0x80). SET_CONFIG_RESULT
  is 0x20 + mux id with byte 1 the trigger mode (0 disabled, 1 triggered, 2 cyclic) and bytes
  2..3 the cycle time in ms; SET_MODE is 0x34 with byte 1 = 0 stop / 1 run and byte 2 the
  start-up mode. Configuration commands are accepted only in stop mode.
Unclear in the public documentation, decided here: whether the message counter runs per
result frame (assumed: per frame id, which is what a gap check needs); the exact meaning of
SET_MODE byte 2 (sent as 1, "run after power-up", as public drivers do). The OCS bit is an
over-current *detection*, not a measurement fault: it is reported as a condition, and the value
stays valid (hiding the current at an over-current would blind the protection). The other three
bits make the frame's value invalid (None). Scales come from the DBC: current and U1..U3 in mA/mV,
temperature 0.1 degC, power W, charge As, energy Wh.

The core is pure: `IvtSCore.feed(frame_id, data, now_s)` updates it, `reading(now_s)` reads
it. A value older than `stale_after_s` reads as None, never as its last value. Frames are decoded
only with cantools from `services/master_core/dbc/ivt_s.dbc`.
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

COMMAND_ID = 0x411
RESPONSE_ID = 0x511
SET_MODE = 0x34
SET_CONFIG_RESULT = 0x20
RESPONSE_FLAG = 0x80
STARTUP_RUN = 1


class Quantity(enum.Enum):
    """One IVT-S result: its value is its mux id; frame id 0x521 + mux id."""

    CURRENT_A = 0
    U1_V = 1
    U2_V = 2
    U3_V = 3
    TEMPERATURE_C = 4
    POWER_W = 5
    CHARGE_AS = 6
    ENERGY_WH = 7

    @property
    def frame_id(self) -> int:
        return 0x521 + self.value

    @property
    def dbc_name(self) -> str:
        return f"IVT_Msg_Result_{('I', 'U1', 'U2', 'U3', 'T', 'W', 'As', 'Wh')[self.value]}"


class TriggerMode(enum.IntEnum):
    """How the sensor emits one result (SET_CONFIG_RESULT byte 1)."""

    DISABLED = 0
    TRIGGERED = 1
    CYCLIC = 2


# state bit signal -> (condition name, whether the value is invalid)
STATE_BITS: dict[str, tuple[str, bool]] = {
    "SystemError": ("system_error", True),
    "MeasurementError": ("measurement_error", True),
    "ChannelError": ("channel_error", True),
    "OverCurrentDetected": ("over_current_detected", False),
}
BY_FRAME_ID = {q.frame_id: q for q in Quantity}
DEFAULT_EXPECTED = (
    Quantity.CURRENT_A,
    Quantity.U1_V,
    Quantity.U2_V,
    Quantity.U3_V,
    Quantity.TEMPERATURE_C,
)


@cache
def ivt_s_dbc() -> Database:
    """`services/master_core/dbc/ivt_s.dbc`, parsed strictly once."""
    return packaged_dbc("services.master_core", "ivt_s")


def result_message(quantity: Quantity) -> Message:
    return ivt_s_dbc().get_message_by_name(quantity.dbc_name)


def decode_numbers(message: Message, data: bytes) -> dict[str, float]:
    """`data` decoded by cantools to raw-scaled numbers (no choice names)."""
    decoded = message.decode(data, decode_choices=False, scaling=True)
    if not isinstance(decoded, dict):  # a container message; the IVT-S has none
        raise ValueError(f"{message.name} is not a plain frame")
    return {name: float(v) for name, v in decoded.items() if isinstance(v, int | float)}


def set_mode_frame(run: bool) -> tuple[int, bytes]:
    """The SET_MODE command: run (cyclic results flow) or stop (configuration accepted)."""
    msg = ivt_s_dbc().get_message_by_frame_id(COMMAND_ID)
    data = msg.encode({"CommandID": SET_MODE, "RunMode": int(run), "StartupMode": STARTUP_RUN})
    return COMMAND_ID, bytes(data)


def set_result_config_frame(
    quantity: Quantity, mode: TriggerMode, cycle_time_ms: int
) -> tuple[int, bytes]:
    """SET_CONFIG_RESULT for one quantity; send only while the sensor is stopped."""
    name = quantity.dbc_name.removeprefix("IVT_Msg_Result_")
    msg = ivt_s_dbc().get_message_by_frame_id(COMMAND_ID)
    data = msg.encode(
        {
            "CommandID": SET_CONFIG_RESULT + quantity.value,
            f"TriggerMode_{name}": int(mode),
            f"CycleTime_{name}": cycle_time_ms,
        },
        strict=True,
    )
    return COMMAND_ID, bytes(data)


class RejectReason(enum.StrEnum):
    """Why a frame was not taken; each is counted."""

    UNKNOWN_ID = "unknown_id"
    WRONG_LENGTH = "wrong_length"
    UNDECODABLE = "undecodable"
    MUX_MISMATCH = "mux_mismatch"
    NOT_A_DATA_FRAME = "not_a_data_frame"  # an error or remote frame


@dataclass(frozen=True)
class CurrentSensorReading:
    """What a current sensor says at one instant; None = unknown (stale, never seen, invalid)."""

    current_a: float | None
    u1_v: float | None
    u2_v: float | None
    u3_v: float | None
    temperature_c: float | None
    power_w: float | None
    charge_as: float | None
    energy_wh: float | None
    errors: tuple[str, ...]
    stale: bool


class CurrentSensor(Protocol):
    """A pack current sensor with up to three voltage inputs (U1 before the contactors,
    U2/U3 on the DC link)."""

    def reading(self, now_s: float) -> CurrentSensorReading: ...


@dataclass(frozen=True)
class _Sample:
    value: float
    received_s: float
    conditions: tuple[str, ...]
    invalid: bool


@dataclass
class IvtSCore:
    """Latest sample per quantity with counter-gap, error and freshness bookkeeping (pure)."""

    stale_after_s: float
    expected: tuple[Quantity, ...] = DEFAULT_EXPECTED
    counter_gaps: Counter[Quantity] = field(default_factory=Counter)
    rejected: Counter[RejectReason] = field(default_factory=Counter)
    responses: Counter[int] = field(default_factory=Counter)
    _samples: dict[Quantity, _Sample] = field(default_factory=dict)
    _last_count: dict[Quantity, int] = field(default_factory=dict)

    def feed(self, frame_id: int, data: bytes, now_s: float) -> RejectReason | None:
        """Take one received frame; returns why it was rejected (and counts it), else None."""
        reason = self._take(frame_id, data, now_s)
        if reason is not None:
            self.rejected[reason] += 1
        return reason

    def _take(self, frame_id: int, data: bytes, now_s: float) -> RejectReason | None:
        if frame_id == RESPONSE_ID:
            return self._take_response(data)
        quantity = BY_FRAME_ID.get(frame_id)
        if quantity is None:
            return RejectReason.UNKNOWN_ID
        message = result_message(quantity)
        if len(data) != message.length:
            return RejectReason.WRONG_LENGTH
        try:
            signals = decode_numbers(message, data)
        except (cantools.database.DecodeError, ValueError):
            return RejectReason.UNDECODABLE
        if int(signals["MuxID"]) != quantity.value:
            return RejectReason.MUX_MISMATCH
        count = int(signals["MsgCount"])
        last = self._last_count.get(quantity)
        if last is not None and count != (last + 1) % 16:
            self.counter_gaps[quantity] += 1
        self._last_count[quantity] = count
        raised = [(name, invalid) for sig, (name, invalid) in STATE_BITS.items() if signals[sig]]
        self._samples[quantity] = _Sample(
            value=float(signals["Value"]),
            received_s=now_s,
            conditions=tuple(name for name, _ in raised),
            invalid=any(invalid for _, invalid in raised),
        )
        return None

    def _take_response(self, data: bytes) -> RejectReason | None:
        message = ivt_s_dbc().get_message_by_frame_id(RESPONSE_ID)
        if len(data) != message.length:
            return RejectReason.WRONG_LENGTH
        self.responses[int(decode_numbers(message, data)["ResponseID"])] += 1
        return None

    def acknowledged(self, command_id: int) -> int:
        """How many responses to `command_id` arrived."""
        return self.responses[command_id | RESPONSE_FLAG]

    def value(self, quantity: Quantity, now_s: float) -> float | None:
        """The valid, fresh value of `quantity`, else None."""
        sample = self._samples.get(quantity)
        if sample is None or sample.invalid or now_s - sample.received_s > self.stale_after_s:
            return None
        return sample.value

    def errors(self, now_s: float) -> tuple[str, ...]:
        """Named conditions, `<quantity>:<condition>`; `stale` or `missing` for expected ones."""
        out: list[str] = []
        for quantity in Quantity:
            sample = self._samples.get(quantity)
            name = quantity.name.lower()
            if sample is None:
                if quantity in self.expected:
                    out.append(f"{name}:missing")
                continue
            if now_s - sample.received_s > self.stale_after_s:
                if quantity in self.expected:
                    out.append(f"{name}:stale")
                continue
            out.extend(f"{name}:{condition}" for condition in sample.conditions)
        return tuple(out)

    def reading(self, now_s: float) -> CurrentSensorReading:
        stale = any(
            (s := self._samples.get(q)) is None or now_s - s.received_s > self.stale_after_s
            for q in self.expected
        )
        return CurrentSensorReading(
            current_a=self.value(Quantity.CURRENT_A, now_s),
            u1_v=self.value(Quantity.U1_V, now_s),
            u2_v=self.value(Quantity.U2_V, now_s),
            u3_v=self.value(Quantity.U3_V, now_s),
            temperature_c=self.value(Quantity.TEMPERATURE_C, now_s),
            power_w=self.value(Quantity.POWER_W, now_s),
            charge_as=self.value(Quantity.CHARGE_AS, now_s),
            energy_wh=self.value(Quantity.ENERGY_WH, now_s),
            errors=self.errors(now_s),
            stale=stale,
        )
