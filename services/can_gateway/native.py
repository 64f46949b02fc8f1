"""Native BMS CAN profile for supervisory controllers (pure, no bus I/O or clocks).

The profile is defined by `dbc/native.dbc`: standard 11-bit ids in 0x600-0x6FF, little-endian.

Sent by the BMS, every 100 ms (`pack_frames`):
- 0x600 PackStatus: pack voltage (0.1 V), current (0.1 A, positive while charging), SOC and
  SOH (0.1 %), contactor state, mode, DataStale bit, FullChargeRequest (bits 58-59: 1 the
  master asks for a full charge, `PackState.full_charge_requested`; 0 not; 3 not available).
  An unknown value is the DBC's not-available raw value (`NotAvailableRaw`: 0xFFFF V,
  0x8000 A, 1023 for SOC/SOH, 3 for FullChargeRequest).
- 0x601 Limits: CVL, DVL (0.1 V), CCL, DCL (0.1 A). CCL and DCL are 0 unless the contactors
  are closed and there is no fault.
- 0x602 CellVoltageExtremes: min/max cell voltage (mV) with module and index (255 = unknown);
  only while both extremes are known. Module and index count from 0, as the message contract
  does (0, 0 is the cell the web application shows as M1 · C1).
- 0x603 TemperatureExtremes: min/max temperature (0.1 degC, raw 0x8000 = unknown) with
  module and index (from 0; 255 = unknown); only while a temperature is known.
- 0x604 FaultsAlarms (FaultBits, AlarmBits) and 0x605 Warnings (WarningBits): each code's
  native bit (`shared.protection_codes.code_bits`, the same fields as the Modbus native
  block), bit 31 (`OTHER_CODE_BIT`) any code outside that table.
- 0x606 SocQuality: how sure the SOC is: its 1-sigma (0.1 %), the seconds since its last full
  or empty anchor, and the current sensor's learned zero offset (1 mA); each not available
  (0xFFFF, 0xFFFFFFFF, 0x8000) while unknown, and all of them while the data is stale.

Sent by the BMS, one frame per multiplexer group (`cell_frames`):
- 0x610 CellVoltages: group g (byte 0, 0-65) carries cells 3g+1..3g+3 in series order as
  16-bit mV; 65535 = not available (no such cell, or unknown). 66 groups cover 196 cells.
- 0x611 CellTemperatures: group g (byte 0, 0-111) carries sensors 7g+1..7g+7 as one byte each
  (1 degC, offset -60, -60..194); raw 255 = not available. 112 groups cover 784 sensors.
  Each cell and sensor sits at its own place (`CellSnapshot.cells()` / `.temperatures()`): an
  unknown channel is not available at its slot and never shifts the later ones. A reading
  beyond the range withholds its group frame (never clamped).

From the controller (`decode_command`): 0x620 Command (2 bytes: command id, counter).
Acknowledged by the BMS (`ack_frame`): 0x621 CommandAck (3 bytes: echoed counter,
1 accepted / 0 refused, `AckReason`).

Fail-safe (the pack state is stale or missing): no measurement is sent as if it were current.
0x600 carries DataStale = 1, contactor state and mode Unknown and every measurement not
available (never a SOC of 0 % at start-up). 0x601 carries CCL = DCL = 0 (no charge, no
discharge) and the configured pack charge and discharge voltages as CVL/DVL (never 0 V); so
it does while the pack's voltage, current or cell extremes are unknown. 0x604/0x605 carry
the last pack's codes (if any) with the `communication_loss` fault bit set. 0x602 and 0x603
are not sent. Cell frames are only sent while the pack state is current.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from cantools.database.can import Database

from services.can_gateway.codec import Frame, FrameBatch, FrameEncodeError, encode, load_dbc
from services.can_gateway.profile import Handling, MasterRequest, PackView
from shared.messages import COMMAND_ARGS, CommandReply
from shared.messages.pack import CellLocation, CellSnapshot, PackState
from shared.protection_codes import ProtectionCode, code_bits

STATUS_ID = 0x600
LIMITS_ID = 0x601
CELL_VOLTAGE_EXTREMES_ID = 0x602
TEMPERATURE_EXTREMES_ID = 0x603
FAULTS_ALARMS_ID = 0x604
WARNINGS_ID = 0x605
SOC_QUALITY_ID = 0x606
CELL_VOLTAGES_ID = 0x610
CELL_TEMPERATURES_ID = 0x611
COMMAND_ID = 0x620
ACK_ID = 0x621

PACK_PERIOD_S = 0.1
"""The native profile is for supervisory controllers: pack values every 100 ms."""
CELL_FRAMES_PER_CYCLE = 18
"""Cell and temperature group frames sent per gateway cycle: every cell about once a second."""
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
STALE_FAULT = ProtectionCode.COMMUNICATION_LOSS.value

CONTACTOR_STATES = {"standby": 0, "precharge": 1, "closed": 2, "opening": 3, "fault": 4}
CONTACTOR_UNKNOWN = 7
MODES = {"standby": 0, "working": 1}
MODE_UNKNOWN = 3


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


def load_native_dbc() -> Database:
    """`dbc/native.dbc`, parsed once."""
    return load_dbc("native")


def pack_frames(
    pack: PackState | None,
    *,
    stale: bool,
    voltage_limits_v: tuple[float, float] | None = None,
) -> list[Frame]:
    """Frames 0x600-0x606 of one 100 ms cycle (see the module docstring).

    `voltage_limits_v` (charge, discharge pack voltage from the configuration) is the CVL/DVL
    of the fail-safe frame: a controller must never read a 0 V charge limit.
    """
    return _pack_batch(pack, stale=stale or pack is None, voltage_limits_v=voltage_limits_v).frames


def _pack_batch(
    pack: PackState | None, *, stale: bool, voltage_limits_v: tuple[float, float] | None
) -> FrameBatch:
    batch = FrameBatch(load_native_dbc())
    fresh = None if stale else pack
    known = None if fresh is None or None in (
        fresh.voltage, fresh.current, fresh.cell_v_min, fresh.cell_v_max
    ) else fresh  # fmt: skip
    faults = list(pack.faults) if pack is not None else []
    alarms = list(pack.alarms) if pack is not None else []
    warnings = list(pack.warnings) if pack is not None else []
    if fresh is None:
        faults.append(STALE_FAULT)
    batch.add(
        STATUS_ID,
        {
            "PackVoltage": None if fresh is None else fresh.voltage,
            "PackCurrent": None if fresh is None else fresh.current,
            "StateOfCharge": None if fresh is None else fresh.soc,
            "StateOfHealth": None if fresh is None else fresh.soh,
            "ContactorState": CONTACTOR_UNKNOWN if fresh is None else CONTACTOR_STATES[
                fresh.contactors],
            "Mode": MODE_UNKNOWN if fresh is None else MODES[fresh.mode],
            "DataStale": int(fresh is None),
            "FullChargeRequest": None if fresh is None or fresh.full_charge_requested is None
            else int(fresh.full_charge_requested),
        },
    )  # fmt: skip
    if known is None:
        cvl, dvl = voltage_limits_v if voltage_limits_v is not None else (None, None)
        limits: dict[str, float | None] = {
            "ChargeVoltageLimit": cvl,
            "DischargeVoltageLimit": dvl,
            "ChargeCurrentLimit": 0.0,
            "DischargeCurrentLimit": 0.0,
        }
    else:
        allowed = known.contactors == "closed" and not known.faults
        lim = known.limits
        limits = {
            "ChargeVoltageLimit": lim.charge_voltage_v,
            "DischargeVoltageLimit": lim.discharge_voltage_v,
            "ChargeCurrentLimit": lim.charge_current_a if allowed else 0.0,
            "DischargeCurrentLimit": lim.discharge_current_a if allowed else 0.0,
        }
    batch.add(LIMITS_ID, limits)
    if fresh is not None:
        _add_extremes(batch, fresh)
    batch.add(FAULTS_ALARMS_ID, {"FaultBits": code_bits(faults), "AlarmBits": code_bits(alarms)})
    batch.add(WARNINGS_ID, {"WarningBits": code_bits(warnings)})
    since = None if fresh is None or fresh.since_anchor_s is None else fresh.since_anchor_s
    batch.add(
        SOC_QUALITY_ID,
        {
            "SocStd": None if fresh is None else fresh.soc_std,
            "SinceAnchor": None if since is None else round(since),
            "CurrentZeroOffset": None if fresh is None else fresh.current_zero_offset_a,
        },
    )
    return batch


def _location(at: CellLocation | None) -> tuple[int, int]:
    if at is None:
        return LOCATION_UNKNOWN, LOCATION_UNKNOWN
    return min(at.module, LOCATION_UNKNOWN), min(at.index, LOCATION_UNKNOWN)


def _millivolts(volts: float | None) -> float | None:
    return None if volts is None else round(volts * 1000)


def _add_extremes(batch: FrameBatch, pack: PackState) -> None:
    """0x602 while the cell extremes are known, 0x603 while a temperature is."""
    if pack.cell_v_min is not None and pack.cell_v_max is not None:
        v_min_mod, v_min_idx = _location(pack.cell_v_min_at)
        v_max_mod, v_max_idx = _location(pack.cell_v_max_at)
        batch.add(
            CELL_VOLTAGE_EXTREMES_ID,
            {
                "CellVoltageMin": _millivolts(pack.cell_v_min),
                "CellVoltageMax": _millivolts(pack.cell_v_max),
                "CellVoltageMinModule": v_min_mod,
                "CellVoltageMinIndex": v_min_idx,
                "CellVoltageMaxModule": v_max_mod,
                "CellVoltageMaxIndex": v_max_idx,
            },
        )
    if pack.temp_min_c is not None or pack.temp_max_c is not None:
        t_min_mod, t_min_idx = _location(pack.temp_min_at)
        t_max_mod, t_max_idx = _location(pack.temp_max_at)
        batch.add(
            TEMPERATURE_EXTREMES_ID,
            {
                "TemperatureMin": pack.temp_min_c,
                "TemperatureMax": pack.temp_max_c,
                "TemperatureMinModule": t_min_mod,
                "TemperatureMinIndex": t_min_idx,
                "TemperatureMaxModule": t_max_mod,
                "TemperatureMaxIndex": t_max_idx,
            },
        )


def cell_frames(cells: CellSnapshot) -> list[Frame]:
    """Every 0x610 and 0x611 group frame of a snapshot (see `cell_batch`)."""
    return cell_batch(cells).frames


def cell_batch(cells: CellSnapshot) -> FrameBatch:
    """Every 0x610 and 0x611 group frame: each cell and sensor at its own slot (its place in
    the string, module by module), unknown and unused slots not available. A reading beyond
    the signal's range withholds its group frame (never clamped)."""
    if cells.cell_count > MAX_CELLS or cells.temp_count > MAX_TEMPS:
        raise FrameEncodeError(
            f"{cells.cell_count} cells / {cells.temp_count} temperatures exceed "
            f"{MAX_CELLS} / {MAX_TEMPS}"
        )
    volts: list[float | None] = [None] * MAX_CELLS
    for cell in cells.cells():
        volts[cell.series_index] = _millivolts(cell.voltage_v)
    temps: list[float | None] = [None] * MAX_TEMPS
    for sensor in cells.temperatures():
        temps[sensor.sensor_index] = sensor.temp_c
    batch = FrameBatch(load_native_dbc())
    for g in range(CELL_GROUPS):
        slots = range(g * CELLS_PER_GROUP, (g + 1) * CELLS_PER_GROUP)
        batch.add_group(CELL_VOLTAGES_ID, g, {f"CellVoltage{n + 1:03d}": volts[n] for n in slots})
    for g in range(TEMP_GROUPS):
        slots = range(g * TEMPS_PER_GROUP, (g + 1) * TEMPS_PER_GROUP)
        batch.add_group(
            CELL_TEMPERATURES_ID, g, {f"CellTemperature{n + 1:03d}": temps[n] for n in slots}
        )
    return batch


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


class Native:
    """The native profile as a `Profile`: pack frames every 100 ms, a slice of the cell frames
    each gateway cycle (every cell about once a second), commands acknowledged on 0x621."""

    name = "native"
    period_s: float | None = PACK_PERIOD_S
    supervises_keepalive = False

    def __init__(self) -> None:
        self._cursor = 0
        self._encoded: tuple[CellSnapshot, FrameBatch] | None = None

    def cyclic(self, view: PackView) -> FrameBatch:
        limits_v = (view.config.charge_pack_voltage_v, view.config.discharge_pack_voltage_v)
        return _pack_batch(view.pack, stale=view.stale, voltage_limits_v=limits_v)

    def burst(self, view: PackView) -> FrameBatch:
        if view.cells is None or view.stale:
            return FrameBatch(load_native_dbc())
        new = self._encoded is None or self._encoded[0] is not view.cells
        if new:
            self._encoded = (view.cells, cell_batch(view.cells))  # encoded once per snapshot
        assert self._encoded is not None
        batch = self._encoded[1]
        frames = batch.frames
        sent = FrameBatch(batch.db)
        if new:  # a withheld group is reported once per snapshot
            sent.refused = batch.refused
        for _ in range(min(CELL_FRAMES_PER_CYCLE, len(frames))):
            sent.frames.append(frames[self._cursor % len(frames)])
            self._cursor += 1
        return sent

    def accepts(self, arbitration_id: int, is_extended_id: bool) -> bool:
        return not is_extended_id and arbitration_id == COMMAND_ID

    def handle(self, arbitration_id: int, data: bytes, view: PackView) -> Handling:
        try:
            command = decode_command(arbitration_id, data)
        except NativeCommandError as err:
            frames = [] if err.counter is None else [ack_frame(err.counter, False, err.reason)]
            return Handling(frames=frames, refused=[str(err)])
        if command is None:
            return Handling()
        counter = command.counter
        if view.stale:
            return Handling(frames=[ack_frame(counter, False, AckReason.STALE)])

        def replied(reply: CommandReply | None) -> list[Frame]:
            if reply is None:
                return [ack_frame(counter, False, AckReason.TIMEOUT)]
            ok = reply.status == "accepted"
            return [ack_frame(counter, ok, AckReason.NONE if ok else AckReason.REFUSED_BY_MASTER)]

        args = COMMAND_ARGS[command.command].model_validate(command.args)
        return Handling(requests=[MasterRequest(command.command, args, replied)])
