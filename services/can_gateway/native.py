"""Native BMS CAN profile for supervisory controllers (pure, no bus I/O or clocks).

The profile is defined by `dbc/native.dbc`: standard 11-bit ids in 0x600-0x6FF, little-endian.

Sent by the BMS, every 100 ms (`pack_frames`):
- 0x600 PackStatus: pack voltage (0.1 V), current (0.1 A, positive while charging), SOC and
  SOH (0.1 %), contactor state, mode, DataStale bit.
- 0x601 Limits: CVL, DVL (0.1 V), CCL, DCL (0.1 A). CCL and DCL are 0 unless the contactors
  are closed and there is no fault.
- 0x602 CellVoltageExtremes: min/max cell voltage (mV) with module and index (255 = unknown).
- 0x603 TemperatureExtremes: min/max temperature (0.1 degC, raw 0x8000 = unknown) with
  module and index (255 = unknown).
- 0x604 FaultsAlarms (FaultBits, AlarmBits) and 0x605 Warnings (WarningBits): bit i is
  `PROTECTION_CODES[i]`, bit 31 (`OTHER_CODE_BIT`) any code outside that table.

Sent by the BMS, one frame per multiplexer group (`cell_frames`):
- 0x610 CellVoltages: group g (byte 0, 0-65) carries cells 3g+1..3g+3 in series order as
  16-bit mV; 65535 = no such cell. 66 groups cover 196 cells.
- 0x611 CellTemperatures: group g (byte 0, 0-111) carries sensors 7g+1..7g+7 as one byte each
  (1 degC, offset -60; readings are clamped to -60..194); raw 255 = no reading. 112 groups
  cover 784 sensors.

From the controller (`decode_command`): 0x620 Command (2 bytes: command id, counter).
Acknowledged by the BMS (`ack_frame`): 0x621 CommandAck (3 bytes: echoed counter,
1 accepted / 0 refused, `AckReason`).

Fail-safe (`stale` is true or `pack` is None): no measurement is sent as if it were current.
0x600 carries DataStale = 1, contactor state and mode Unknown and 0 for every measurement; it
is not sent at all before the first pack state (never a SOC of 0 % at start-up). 0x601
carries CCL = DCL = 0 (no charge, no discharge) and the configured pack charge and discharge
voltages as CVL/DVL (never 0 V). 0x604/0x605 carry the last pack's codes (if any) with the
`communication_loss` fault bit set. 0x602 and 0x603 are not sent. Cell frames are only built
from a snapshot the caller holds as current.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cache
from importlib import resources

import cantools
from cantools.database.can import Database, Message

from services.can_gateway.codec import FrameEncodeError, encode, signal_range
from shared.config.protection import PROTECTION_CODES
from shared.messages.pack import CellLocation, CellSnapshot, PackState

Frame = tuple[int, bytes]

STATUS_ID = 0x600
LIMITS_ID = 0x601
CELL_VOLTAGE_EXTREMES_ID = 0x602
TEMPERATURE_EXTREMES_ID = 0x603
FAULTS_ALARMS_ID = 0x604
WARNINGS_ID = 0x605
CELL_VOLTAGES_ID = 0x610
CELL_TEMPERATURES_ID = 0x611
COMMAND_ID = 0x620
ACK_ID = 0x621

CELLS_PER_GROUP = 3
CELL_GROUPS = 66
TEMPS_PER_GROUP = 7
TEMP_GROUPS = 112
MAX_CELLS = CELLS_PER_GROUP * CELL_GROUPS  # 198 slots, 196 cells at most in a CellSnapshot
MAX_TEMPS = TEMPS_PER_GROUP * TEMP_GROUPS  # 784 = 4 x 196
CELL_MV_UNKNOWN = 65535
CELL_TEMP_UNKNOWN_C = 195.0  # raw 255
CELL_TEMP_RANGE_C = (-60.0, 194.0)
TEMP_UNKNOWN_C = -3276.8  # raw 0x8000 in 0x603
LOCATION_UNKNOWN = 255
OTHER_CODE_BIT = 31
STALE_FAULT = "communication_loss"

CONTACTOR_STATES = {"standby": 0, "precharge": 1, "closed": 2, "opening": 3, "fault": 4}
CONTACTOR_UNKNOWN = 7
MODES = {"standby": 0, "working": 1}
MODE_UNKNOWN = 3

if len(PROTECTION_CODES) > OTHER_CODE_BIT:
    raise RuntimeError(f"{len(PROTECTION_CODES)} protection codes do not fit the 32-bit fields")


class AckReason(IntEnum):
    """Reason code of 0x621 CommandAck."""

    NONE = 0
    UNKNOWN_COMMAND = 1
    MALFORMED = 2
    REFUSED_BY_MASTER = 3
    TIMEOUT = 4
    STALE = 5


@dataclass(frozen=True)
class NativeCommand:
    """A decoded 0x620 command: a `COMMAND_ARGS` name, its arguments and the counter to echo."""

    command: str
    args: dict[str, str] = field(default_factory=dict)
    counter: int = 0


class NativeCommandError(ValueError):
    """A 0x620 frame that is not a valid command.

    `counter` is the frame's counter when it could be read (to acknowledge with a refusal),
    `reason` the code to send back.
    """

    def __init__(self, message: str, *, counter: int | None, reason: AckReason) -> None:
        super().__init__(message)
        self.counter = counter
        self.reason = reason


# Command id -> (command name, arguments), see VAL_ 1568 CommandId in the DBC.
COMMANDS: dict[int, tuple[str, dict[str, str]]] = {
    1: ("contactors", {"action": "close"}),
    2: ("contactors", {"action": "open"}),
    3: ("reset_faults", {}),
    4: ("set_mode", {"mode": "standby"}),
    5: ("set_mode", {"mode": "working"}),
}


@cache
def load_native_dbc() -> Database:
    """`dbc/native.dbc`, parsed once."""
    text = resources.files("services.can_gateway").joinpath("dbc", "native.dbc").read_text("utf-8")
    db = cantools.database.load_string(text, database_format="dbc", strict=True)
    if not isinstance(db, Database):
        raise FrameEncodeError("native.dbc is not a CAN database")
    return db


def code_bits(codes: Iterable[str]) -> int:
    """The 32-bit field of `codes`: bit i for `PROTECTION_CODES[i]`, bit 31 for any other."""
    bits = 0
    for code in codes:
        try:
            bits |= 1 << PROTECTION_CODES.index(code)
        except ValueError:
            bits |= 1 << OTHER_CODE_BIT
    return bits


def bits_codes(bits: int) -> list[str]:
    """The protection codes set in a 32-bit field (bit 31 reported as "other")."""
    codes = [code for i, code in enumerate(PROTECTION_CODES) if bits >> i & 1]
    return [*codes, "other"] if bits >> OTHER_CODE_BIT & 1 else codes


def pack_frames(
    pack: PackState | None,
    *,
    stale: bool,
    voltage_limits_v: tuple[float, float] | None = None,
) -> list[Frame]:
    """Frames 0x600-0x605 of one 100 ms cycle (fail-safe when stale or None, see above).

    `voltage_limits_v` (charge, discharge pack voltage from the configuration) replaces the
    zero CVL/DVL of the fail-safe frame: a controller must never read a 0 V charge limit.
    Before the first pack state, 0x600 is not sent at all, so no SOC 0 % ever goes out.
    """
    db = load_native_dbc()
    fresh = None if stale else pack
    faults = list(pack.faults) if pack is not None else []
    alarms = list(pack.alarms) if pack is not None else []
    warnings = list(pack.warnings) if pack is not None else []
    if fresh is None:
        faults.append(STALE_FAULT)
        frames = [
            encode(
                db,
                STATUS_ID,
                {
                    "PackVoltage": 0.0,
                    "PackCurrent": 0.0,
                    "StateOfCharge": 0.0,
                    "StateOfHealth": 0.0,
                    "ContactorState": CONTACTOR_UNKNOWN,
                    "Mode": MODE_UNKNOWN,
                    "DataStale": 1,
                },
            ),
            encode(
                db,
                LIMITS_ID,
                {
                    "ChargeVoltageLimit": voltage_limits_v[0] if voltage_limits_v else 0.0,
                    "DischargeVoltageLimit": voltage_limits_v[1] if voltage_limits_v else 0.0,
                    "ChargeCurrentLimit": 0.0,
                    "DischargeCurrentLimit": 0.0,
                },
            ),
        ]
        if pack is None:
            frames = frames[1:]
    else:
        frames = _fresh_frames(db, fresh)
    frames += [
        encode(
            db, FAULTS_ALARMS_ID, {"FaultBits": code_bits(faults), "AlarmBits": code_bits(alarms)}
        ),
        encode(db, WARNINGS_ID, {"WarningBits": code_bits(warnings)}),
    ]
    return frames


def _location(at: CellLocation | None) -> tuple[int, int]:
    if at is None:
        return LOCATION_UNKNOWN, LOCATION_UNKNOWN
    return min(at.module, LOCATION_UNKNOWN), min(at.index, LOCATION_UNKNOWN)


def _fresh_frames(db: Database, pack: PackState) -> list[Frame]:
    allowed = pack.contactors == "closed" and not pack.faults
    lim = pack.limits
    v_min_mod, v_min_idx = _location(pack.cell_v_min_at)
    v_max_mod, v_max_idx = _location(pack.cell_v_max_at)
    t_min_mod, t_min_idx = _location(pack.temp_min_at)
    t_max_mod, t_max_idx = _location(pack.temp_max_at)
    return [
        encode(
            db,
            STATUS_ID,
            {
                "PackVoltage": pack.voltage,
                "PackCurrent": pack.current,
                "StateOfCharge": pack.soc,
                "StateOfHealth": pack.soh,
                "ContactorState": CONTACTOR_STATES[pack.contactors],
                "Mode": MODES[pack.mode],
                "DataStale": 0,
            },
        ),
        encode(
            db,
            LIMITS_ID,
            {
                "ChargeVoltageLimit": lim.charge_voltage_v,
                "DischargeVoltageLimit": lim.discharge_voltage_v,
                "ChargeCurrentLimit": lim.charge_current_a if allowed else 0.0,
                "DischargeCurrentLimit": lim.discharge_current_a if allowed else 0.0,
            },
        ),
        encode(
            db,
            CELL_VOLTAGE_EXTREMES_ID,
            {
                "CellVoltageMin": round(pack.cell_v_min * 1000),
                "CellVoltageMax": round(pack.cell_v_max * 1000),
                "CellVoltageMinModule": v_min_mod,
                "CellVoltageMinIndex": v_min_idx,
                "CellVoltageMaxModule": v_max_mod,
                "CellVoltageMaxIndex": v_max_idx,
            },
        ),
        encode(
            db,
            TEMPERATURE_EXTREMES_ID,
            {
                "TemperatureMin": TEMP_UNKNOWN_C if pack.temp_min_c is None else pack.temp_min_c,
                "TemperatureMax": TEMP_UNKNOWN_C if pack.temp_max_c is None else pack.temp_max_c,
                "TemperatureMinModule": t_min_mod,
                "TemperatureMinIndex": t_min_idx,
                "TemperatureMaxModule": t_max_mod,
                "TemperatureMaxIndex": t_max_idx,
            },
        ),
    ]


def _encode_group(message: Message, group: int, values: Mapping[str, float]) -> Frame:
    """One multiplexed frame: the multiplexer and the signals of `group`, clamped."""
    out: dict[str, float] = {}
    for name, value in values.items():
        lo, hi = signal_range(message.get_signal_by_name(name))
        out[name] = min(max(value, lo), hi)
    mux = next(s.name for s in message.signals if s.is_multiplexer)
    data = message.encode({mux: group, **out}, scaling=True, strict=True)
    return message.frame_id, bytes(data)


def _cell_values(cell_v: Sequence[float], group: int) -> dict[str, float]:
    values: dict[str, float] = {}
    for n in range(group * CELLS_PER_GROUP, (group + 1) * CELLS_PER_GROUP):
        mv = min(round(cell_v[n] * 1000), CELL_MV_UNKNOWN - 1) if n < len(cell_v) else None
        values[f"CellVoltage{n + 1:03d}"] = CELL_MV_UNKNOWN if mv is None else mv
    return values


def _temp_values(temp_c: Sequence[float | None], group: int) -> dict[str, float]:
    lo, hi = CELL_TEMP_RANGE_C
    values: dict[str, float] = {}
    for n in range(group * TEMPS_PER_GROUP, (group + 1) * TEMPS_PER_GROUP):
        reading = temp_c[n] if n < len(temp_c) else None
        name = f"CellTemperature{n + 1:03d}"
        values[name] = CELL_TEMP_UNKNOWN_C if reading is None else min(max(reading, lo), hi)
    return values


def cell_frames(cells: CellSnapshot) -> list[Frame]:
    """Every 0x610 and 0x611 group frame of a snapshot (all groups, unused slots "unknown")."""
    if len(cells.cell_v) > MAX_CELLS or len(cells.temp_c) > MAX_TEMPS:
        raise FrameEncodeError(
            f"{len(cells.cell_v)} cells / {len(cells.temp_c)} temperatures exceed "
            f"{MAX_CELLS} / {MAX_TEMPS}"
        )
    db = load_native_dbc()
    volts = db.get_message_by_frame_id(CELL_VOLTAGES_ID)
    temps = db.get_message_by_frame_id(CELL_TEMPERATURES_ID)
    frames = [_encode_group(volts, g, _cell_values(cells.cell_v, g)) for g in range(CELL_GROUPS)]
    frames += [_encode_group(temps, g, _temp_values(cells.temp_c, g)) for g in range(TEMP_GROUPS)]
    return frames


def decode_command(arbitration_id: int, data: bytes) -> NativeCommand | None:
    """The command of a 0x620 frame; None for any other id.

    Raises `NativeCommandError` for a 0x620 frame of the wrong length or with an unknown
    command id (with the counter, when readable, and the reason to acknowledge with).
    """
    if arbitration_id != COMMAND_ID:
        return None
    if len(data) != 2:
        raise NativeCommandError(
            f"command frame 0x{COMMAND_ID:03X} must carry 2 bytes, got {len(data)}",
            counter=data[1] if len(data) > 1 else None,
            reason=AckReason.MALFORMED,
        )
    command_id, counter = data[0], data[1]
    known = COMMANDS.get(command_id)
    if known is None:
        raise NativeCommandError(
            f"unknown command id {command_id} in frame 0x{COMMAND_ID:03X}; "
            f"known ids: {sorted(COMMANDS)}",
            counter=counter,
            reason=AckReason.UNKNOWN_COMMAND,
        )
    name, args = known
    return NativeCommand(command=name, args=dict(args), counter=counter)


def ack_frame(counter: int, accepted: bool, reason_code: int) -> Frame:
    """0x621 CommandAck: the echoed counter, accepted (1) or refused (0), the reason code."""
    if not 0 <= counter <= 255 or not 0 <= reason_code <= 255:
        raise FrameEncodeError(f"counter {counter} and reason {reason_code} must be 0-255")
    db = load_native_dbc()
    return encode(
        db,
        ACK_ID,
        {"AckCounter": counter, "AckStatus": int(accepted), "AckReason": reason_code},
    )
