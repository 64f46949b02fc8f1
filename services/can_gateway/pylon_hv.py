"""Pylontech high-voltage CAN protocol (pure, no bus I/O or clocks).

Above 327 V the 0x35x frames cannot carry the pack voltage; Pylontech HV uses 29-bit extended
IDs at 500 kbit/s and is request-driven: the inverter sends 0x4200 and the battery answers.
`PylonHv` implements `profile.Profile`; `answer(request, view)` (or `responses_for`, the same as
a plain list) maps the 0x4200 payload to the answer (extended IDs, battery address 0);
`decode_command` decodes the inverter's sleep/wake (0x8200) and relay (0x8210) commands: only
0x55/0xAA and 0xAA are commands, anything else asks for nothing.

Requests (byte 0 of 0x4200):
- 0x00 ensemble information -> 0x4210, 0x4220, 0x4230, 0x4240, 0x4250, 0x4260, 0x4270, 0x4280,
  0x4290.
- 0x02 system equipment information -> 0x7310, 0x7320, 0x7330, 0x7340.
- anything else, or an empty payload -> no answer.

Encoding options (`interfaces.can.pylon_hv_*`; the reference leaves them open between
implementations):
- `byte_order`: "little" (default: diyBMS, ai-republic and Battery-Emulator's sample payloads)
  or "big": every 16-bit field, including the 0x4250 cycle/alarm/protection words, has its two
  bytes swapped; 8-bit fields and the ASCII name are unchanged.
- `current_offset_a`: raw current = (I + offset) * 10 (default 3000 A: raw 30000 = 0 A) for the
  0x4210 current and the 0x4220 current limits. With offset 0 the raw value is a signed 16-bit
  two's-complement number. A current the raw range cannot hold withholds its frame (never
  clamped).
- `discharge_limit_sign`: "negative" (default, diyBMS: raw = (offset - DCL) * 10, 30000 -
  DCL x 10) or "positive" (Battery-Emulator, ai-republic: raw = (offset + DCL) * 10).

Unknown values are never sent as numbers: each measurement frame goes out only from a fresh
pack state whose values it carries are known (0x4210 voltage, current, SOC and SOH; 0x4230
the cell extremes; 0x4240/0x4270 a temperature; 0x4260 a module whose cells are all known).
An unknown temperature is the DBC's not-available raw 0 (-100 degC, which inverters read as too
cold to charge); unknown cycles raw 0xFFFF.

Normal operation:
- 0x4210: pack voltage, current (+ charge), BMS temperature = average cell temperature (else the
  mean of min and max), SOC, SOH.
- 0x4220: CVL/DVL from `pack.limits` (CVL 0 is replaced by the configured pack charge voltage);
  CCL/DCL from `pack.limits`, but 0 unless the contactors are closed and there is no fault.
- 0x4230/0x4240: cell extremes with 1-based cell / sensor numbers (0 = location unknown).
- 0x4250: status sleep/charge/discharge/idle from contactors and current; cycle count; error byte
  from the pack faults; alarm word from alarms and warnings, protection word from faults (the
  bits of `shared.protection_codes`; a fault with no bit of its own sets OtherError). Byte 0
  bit 4, balance-charge request (can-inverter-protocol.md 1.8): the master's
  `full_charge_requested` while charging is allowed (a charge to full, where the cells are
  balanced and the SOC anchored; `profiles.full_charge_bit`); bit 3, force-charge request (an
  emptied battery), stays 0.
- 0x4260: the highest and lowest module voltage (sum of the module's cells, from the cell
  snapshot) with 1-based module numbers, only while every cell is known; a module above
  65.535 V withholds the frame.
  0x4270: the cell temperature extremes with the 1-based module that holds them.
- 0x4280: 0xAA (forbidden) when the limit as sent is 0, else 0x00. 0x4290: 0 (the reference
  names no bits).

Fail-safe (the pack state is stale or missing, or its voltage, current or cell extremes are
unknown): the ensemble answer is still sent, so that the inverter sees the battery and its stop
request, but no measurement is passed off as current (and never SOC 0 %, which some inverters
answer with a forced charge):
- 0x4210, 0x4230, 0x4240, 0x4260, 0x4270 (measurements) only as above.
- 0x4220: CVL/DVL = configured pack charge/discharge voltages, CCL = 0 A, DCL = 0 A.
- 0x4250: status sleep (0), cycles not available; InternalCommError and OtherError set;
  AlarmSystemLowVoltage, AlarmSystemHighVoltage, ProtectSystemLowVoltage and
  ProtectSystemHighVoltage set; plus the bits of the last pack's codes, if any.
- 0x4280: charge and discharge forbidden (0xAA, 0xAA).
- The system information answer (0x7310-0x7340) is configuration only and unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from cantools.database.can import Database

from services.can_gateway.codec import (
    Frame,
    FrameBatch,
    FrameEncodeError,
    FrameRangeError,
    ascii_values,
    load_dbc,
)
from services.can_gateway.profile import Handling, MasterRequest, PackView, ProtocolOptions
from services.can_gateway.profiles import full_charge_bit
from shared.config.system import SystemConfig, Topology
from shared.messages import ContactorsArgs, SetModeArgs
from shared.messages.pack import CellLocation, CellSnapshot, PackState
from shared.protection_codes import PYLON_HV_OTHER_FAULT, spec_of

ByteOrder = Literal["little", "big"]
DischargeLimitSign = Literal["negative", "positive"]

REQUEST_ID = 0x4200
MEASUREMENT_IDS = frozenset({0x4210, 0x4230, 0x4240, 0x4260, 0x4270})
"""Frames carrying measured values; withheld while the pack state is stale."""
SLEEP_WAKE_ID = 0x8200
RELAY_ID = 0x8210
REQUEST_ENSEMBLE = 0x00
REQUEST_SYSTEM = 0x02
ENSEMBLE_IDS = (0x4210, 0x4220, 0x4230, 0x4240, 0x4250, 0x4260, 0x4270, 0x4280, 0x4290)
SYSTEM_IDS = (0x7310, 0x7320, 0x7330, 0x7340)
DEFAULT_BYTE_ORDER: ByteOrder = "little"
DEFAULT_CURRENT_OFFSET_A = 3000.0
FORBIDDEN = 0xAA
SLEEP = 0x55
WAKE = 0xAA
CLOSE = 0xAA
TEMP_UNKNOWN_C = -100.0  # raw 0
HARDWARE_VERSION = (1, 0)
FIRMWARE_VERSION = (0, 1)

STATUS_SLEEP, STATUS_CHARGE, STATUS_DISCHARGE, STATUS_IDLE = 0, 1, 2, 3
IDLE_CURRENT_A = 0.5  # |I| below this counts as idle

# 0x4250 layout; which code sets which bit is `shared.protection_codes` (`pylon_hv_flag`,
# `pylon_hv_error`). Alarm word (bytes 4-5) and protection word (bytes 6-7), same bit layout:
# flags without the Alarm/Protect prefix. Module low/high voltage have no code (no module
# voltages in the pack state) and stay 0.
HV_FLAGS: tuple[str, ...] = (
    "CellLowVoltage",
    "CellHighVoltage",
    "SystemLowVoltage",
    "SystemHighVoltage",
    "ChargeLowTemp",
    "ChargeHighTemp",
    "DischargeLowTemp",
    "DischargeHighTemp",
    "ChargeOverCurrent",
    "DischargeOverCurrent",
    "ModuleLowVoltage",
    "ModuleHighVoltage",
)
# Error byte (byte 3), set by faults only. Input over-voltage, input reversal and battery
# damage have no code and stay 0; a fault with no bit of its own (e.g. cell imbalance) sets
# `PYLON_HV_OTHER_FAULT`, so that it still stops the inverter.
HV_ERRORS: tuple[str, ...] = (
    "VoltageSensorError",
    "TemperatureSensorError",
    "InternalCommError",
    "InputOverVoltageError",
    "InputReversalError",
    "RelayCheckError",
    "BatteryDamageError",
    PYLON_HV_OTHER_FAULT,
)
# Set, beyond the last pack's codes, when the pack state is stale or missing.
FAILSAFE_ERRORS = ("InternalCommError", "OtherError")
FAILSAFE_FLAGS = ("SystemLowVoltage", "SystemHighVoltage")

_CURRENT_SIGNALS = {0x4210: ("PileCurrent",), 0x4220: ("MaxChargeCurrent", "MaxDischargeCurrent")}
# 16-bit words that are not a single 16-bit signal: (byte offsets), swapped in big-endian mode.
_FLAG_WORDS: Mapping[int, tuple[int, ...]] = {0x4250: (4, 6)}


@dataclass(frozen=True)
class InverterCommand:
    """A decoded 0x8200 / 0x8210 command. None = the frame does not carry that request."""

    sleep: bool | None = None  # 0x8200: True = sleep (0x55), False = wake (0xAA)
    close_charge_relay: bool | None = None  # True: 0x8210 byte 0 == 0xAA
    close_discharge_relay: bool | None = None  # True: 0x8210 byte 1 == 0xAA


def load_pylon_hv_dbc() -> Database:
    """`services/can_gateway/dbc/pylon_hv.dbc`, parsed once."""
    return load_dbc("pylon_hv")


def responses_for(
    request: bytes,
    pack: PackState | None,
    *,
    stale: bool,
    config: SystemConfig,
    byte_order: ByteOrder = DEFAULT_BYTE_ORDER,
    current_offset_a: float = DEFAULT_CURRENT_OFFSET_A,
    discharge_limit_sign: DischargeLimitSign = "negative",
    cells: CellSnapshot | None = None,
) -> list[Frame]:
    """The frames answering a 0x4200 request payload (see the module docstring)."""
    options = ProtocolOptions(
        pylon_hv_byte_order=byte_order,
        pylon_hv_current_offset_a=current_offset_a,
        pylon_hv_discharge_limit_sign=discharge_limit_sign,
    )
    view = PackView(config, pack, stale or pack is None, cells, options)
    return answer(request, view).frames


def answer(request: bytes, view: PackView) -> FrameBatch:
    """The answer to a 0x4200 request payload, in the configured byte order."""
    byte_order = view.options.pylon_hv_byte_order
    if byte_order not in ("little", "big"):
        raise ValueError(f"byte_order must be 'little' or 'big', not {byte_order!r}")
    if not request:
        return FrameBatch(load_pylon_hv_dbc())
    if request[0] == REQUEST_ENSEMBLE:
        batch = _ensemble(view)
    elif request[0] == REQUEST_SYSTEM:
        batch = _system(view)
    else:
        return FrameBatch(load_pylon_hv_dbc())
    if byte_order == "big":
        batch.frames = [(fid, swap_words(fid, data)) for fid, data in batch.frames]
    return batch


def decode_command(arbitration_id: int, data: bytes) -> InverterCommand | None:
    """The sleep/wake (0x8200) or relay (0x8210) command, else None.

    Only 0x55/0xAA are commands in 0x8200 and only 0xAA ("close") in 0x8210; any other byte
    asks for nothing (it never opens the contactors).
    """
    if arbitration_id == SLEEP_WAKE_ID and data:
        sleep = {SLEEP: True, WAKE: False}.get(data[0])
        return InverterCommand(sleep=sleep) if sleep is not None else None
    if arbitration_id == RELAY_ID and data:
        charge = data[0] == CLOSE
        discharge = len(data) > 1 and data[1] == CLOSE
        if not (charge or discharge):
            return None
        return InverterCommand(
            close_charge_relay=True if charge else None,
            close_discharge_relay=True if discharge else None,
        )
    return None


class PylonHv:
    """Pylontech HV as a `Profile`: nothing unasked; 0x4200 answered, 0x8200/0x8210 forwarded
    to the master as wishes (the master decides)."""

    name = "pylon_hv"
    period_s: float | None = None
    supervises_keepalive = True

    def cyclic(self, view: PackView) -> FrameBatch:
        return FrameBatch(load_pylon_hv_dbc())

    def burst(self, view: PackView) -> FrameBatch:
        return FrameBatch(load_pylon_hv_dbc())

    def accepts(self, arbitration_id: int, is_extended_id: bool) -> bool:
        return is_extended_id and arbitration_id in (REQUEST_ID, SLEEP_WAKE_ID, RELAY_ID)

    def handle(self, arbitration_id: int, data: bytes, view: PackView) -> Handling:
        if arbitration_id == REQUEST_ID:
            batch = answer(data, view)
            return Handling(
                frames=batch.frames, keepalive=True, refused=[str(e) for e in batch.refused]
            )
        command = decode_command(arbitration_id, data)
        if command is None and arbitration_id == RELAY_ID:
            return Handling()  # no 0xAA: the inverter asks for nothing
        if command is None:
            first = f"0x{data[0]:02X}" if data else "missing"
            return Handling(refused=[f"0x{arbitration_id:X} byte 0 {first}: not 0x55 or 0xAA"])
        if view.site is not None:
            return Handling(
                refused=[
                    f"0x{arbitration_id:X}: a site takes no sleep, wake or relay command from the "
                    f"inverter (the site controller joins its strings)"
                ]
            )
        requests: list[MasterRequest] = []
        if command.sleep is not None:
            mode = SetModeArgs(mode="standby" if command.sleep else "working")
            requests.append(MasterRequest("set_mode", mode))
        if command.close_charge_relay or command.close_discharge_relay:
            requests.append(MasterRequest("contactors", ContactorsArgs(action="close")))
        return Handling(requests=requests)


def swap_words(frame_id: int, data: bytes) -> bytes:
    """`data` with the two bytes of every 16-bit field of `frame_id` swapped (LE <-> BE)."""
    out = bytearray(data)
    for start in word_offsets(frame_id):
        out[start], out[start + 1] = out[start + 1], out[start]
    return bytes(out)


def word_offsets(frame_id: int) -> tuple[int, ...]:
    """Byte offsets of the 16-bit fields of `frame_id`."""
    message = load_pylon_hv_dbc().get_message_by_frame_id(frame_id)
    starts = {s.start // 8 for s in message.signals if s.length == 16 and s.start % 8 == 0}
    return tuple(sorted(starts.union(_FLAG_WORDS.get(frame_id, ()))))


def current_value(current_a: float, offset_a: float, signal: str = "current") -> float:
    """The physical value that the DBC (offset -3000 A) encodes to raw (I + offset_a) * 10.

    Raises `FrameRangeError` when raw does not fit 16 bits (signed with offset 0): the
    frame is withheld, the current never clamped.
    """
    lo, hi = (-32768, 32767) if offset_a == 0 else (0, 65535)
    raw = round((current_a + offset_a) * 10)
    if not lo <= raw <= hi:
        frame_id = 0x4210 if signal == "PileCurrent" else 0x4220
        raise FrameRangeError(frame_id, signal, current_a, (lo / 10 - offset_a, hi / 10 - offset_a))
    return (raw & 0xFFFF) * 0.1 - DEFAULT_CURRENT_OFFSET_A


def hv_status(
    faults: Iterable[str],
    warnings: Iterable[str],
    *,
    force_errors: Iterable[str] = (),
    force_flags: Iterable[str] = (),
) -> dict[str, float]:
    """0x4250 error, alarm and protection bits: each fault's flag (protection word) or error
    bit, else `PYLON_HV_OTHER_FAULT`; each warning's or alarm's flag (alarm word).
    `force_errors` / `force_flags` are set regardless of the codes (a flag in both words)."""
    errors, protect, alarm = set(force_errors), set(force_flags), set(force_flags)
    for code in faults:
        spec = spec_of(code)
        if spec is not None and spec.pylon_hv_flag is not None:
            protect.add(spec.pylon_hv_flag)
        elif spec is not None and spec.pylon_hv_error is not None:
            errors.add(spec.pylon_hv_error)
        else:
            errors.add(PYLON_HV_OTHER_FAULT)
    for code in warnings:
        spec = spec_of(code)
        if spec is not None and spec.pylon_hv_flag is not None:
            alarm.add(spec.pylon_hv_flag)
    out = {name: float(name in errors) for name in HV_ERRORS}
    for name in HV_FLAGS:
        out["Alarm" + name] = float(name in alarm)
        out["Protect" + name] = float(name in protect)
    return out


def cell_number(topology: Topology, at: CellLocation | None) -> int:
    """1-based cell number in the series string (0 = unknown)."""
    if at is None or at.module >= topology.modules:
        return 0
    before = sum(topology.cells_in_module(m) for m in range(at.module))
    return before + at.index + 1


def sensor_number(topology: Topology, at: CellLocation | None) -> int:
    """1-based temperature sensor number (0 = unknown)."""
    if at is None or at.module >= topology.modules:
        return 0
    return at.module * topology.temp_sensors_per_module + at.index + 1


def _module_number(topology: Topology, at: CellLocation | None) -> int:
    return 0 if at is None or at.module >= topology.modules else at.module + 1


def _pack_temperature(pack: PackState) -> float | None:
    if pack.temp_avg_c is not None:
        return pack.temp_avg_c
    if pack.temp_min_c is not None and pack.temp_max_c is not None:
        return (pack.temp_min_c + pack.temp_max_c) / 2
    return None


def _status(pack: PackState) -> int:
    if pack.contactors != "closed" or pack.current is None:
        return STATUS_SLEEP
    if pack.current > IDLE_CURRENT_A:
        return STATUS_CHARGE
    if pack.current < -IDLE_CURRENT_A:
        return STATUS_DISCHARGE
    return STATUS_IDLE


def _limits(pack: PackState | None, config: SystemConfig) -> tuple[float, float, float, float]:
    """(CVL, DVL, CCL, DCL) as positive magnitudes."""
    if pack is None:
        return config.charge_pack_voltage_v, config.discharge_pack_voltage_v, 0.0, 0.0
    lim = pack.limits
    allowed = pack.contactors == "closed" and not pack.faults
    return (
        lim.charge_voltage_v or config.charge_pack_voltage_v,
        lim.discharge_voltage_v,
        lim.charge_current_a if allowed else 0.0,
        lim.discharge_current_a if allowed else 0.0,
    )


def _sent_positive(current_limit_a: float) -> bool:
    return round(current_limit_a * 10) > 0


def _module_voltages(view: PackView) -> list[tuple[int, float]]:
    """(1-based module number, sum of its cells) for every module; empty unless every cell is
    known (the extremes over some modules would claim a minimum that may be false)."""
    if view.cells is None or view.stale:
        return []
    sums: dict[int, float] = {}
    unknown: set[int] = set()
    for cell in view.cells.cells():
        if cell.voltage_v is None:
            unknown.add(cell.module)
        else:
            sums[cell.module] = sums.get(cell.module, 0.0) + cell.voltage_v
    if unknown:
        return []
    return [(m + 1, v) for m, v in sorted(sums.items())]


def _current_limits(ccl: float, dcl: float, options: ProtocolOptions) -> dict[str, float | None]:
    sign = -1.0 if options.pylon_hv_discharge_limit_sign == "negative" else 1.0
    offset = options.pylon_hv_current_offset_a
    return {
        "MaxChargeCurrent": current_value(ccl, offset, "MaxChargeCurrent"),
        "MaxDischargeCurrent": current_value(sign * dcl, offset, "MaxDischargeCurrent"),
    }


def _ensemble(view: PackView) -> FrameBatch:
    config, fresh, known, options = view.config, view.fresh, view.known, view.options
    batch = FrameBatch(load_pylon_hv_dbc())
    topo = config.topology
    last = view.pack
    faults = list(last.faults) if last is not None else []
    warnings = [*last.alarms, *last.warnings] if last is not None else []
    cvl, dvl, ccl, dcl = _limits(known, config)
    offset = options.pylon_hv_current_offset_a
    if fresh is not None and None not in (fresh.voltage, fresh.current, fresh.soc, fresh.soh):
        assert fresh.current is not None and fresh.soc is not None and fresh.soh is not None
        try:
            batch.add(
                0x4210,
                {
                    "PileVoltage": fresh.voltage,
                    "PileCurrent": current_value(fresh.current, offset, "PileCurrent"),
                    "BmsTemperature": _pack_temperature(fresh),
                    "StateOfCharge": round(fresh.soc),
                    "StateOfHealth": round(fresh.soh),
                },
            )
        except FrameEncodeError as err:
            batch.refused.append(err)
    try:
        batch.add(
            0x4220,
            {"ChargeCutoffVoltage": cvl, "DischargeCutoffVoltage": dvl}
            | _current_limits(ccl, dcl, options),
        )
    except FrameEncodeError as err:
        batch.refused.append(err)
    if fresh is not None and fresh.cell_v_min is not None and fresh.cell_v_max is not None:
        batch.add(
            0x4230,
            {
                "MaxCellVoltage": fresh.cell_v_max,
                "MinCellVoltage": fresh.cell_v_min,
                "MaxCellVoltageNumber": cell_number(topo, fresh.cell_v_max_at),
                "MinCellVoltageNumber": cell_number(topo, fresh.cell_v_min_at),
            },
        )
    if fresh is not None and (fresh.temp_min_c is not None or fresh.temp_max_c is not None):
        batch.add(
            0x4240,
            {
                "MaxCellTemperature": fresh.temp_max_c,
                "MinCellTemperature": fresh.temp_min_c,
                "MaxCellTemperatureNumber": sensor_number(topo, fresh.temp_max_at),
                "MinCellTemperatureNumber": sensor_number(topo, fresh.temp_min_at),
            },
        )
    if known is None:
        status: dict[str, float | None] = {"BasicStatus": STATUS_SLEEP, "CyclePeriod": None}
        bits = hv_status(faults, warnings, force_errors=FAILSAFE_ERRORS, force_flags=FAILSAFE_FLAGS)
    else:
        cycles = known.equivalent_cycles
        status = {
            "BasicStatus": _status(known),
            "CyclePeriod": None if cycles is None else round(cycles),
        }
        bits = hv_status(faults, warnings)
    full = full_charge_bit(known, _sent_positive(ccl))
    batch.add(0x4250, {**status, "ForceChargeRequest": 0, "BalanceChargeRequest": full, **bits})
    modules = _module_voltages(view)
    if modules:
        high = max(modules, key=lambda mv: mv[1])
        low = min(modules, key=lambda mv: mv[1])
        batch.add(
            0x4260,
            {
                "MaxModuleVoltage": high[1],
                "MinModuleVoltage": low[1],
                "MaxModuleVoltageNumber": high[0],
                "MinModuleVoltageNumber": low[0],
            },
        )
    if fresh is not None and (fresh.temp_min_c is not None or fresh.temp_max_c is not None):
        batch.add(
            0x4270,
            {
                "MaxModuleTemperature": fresh.temp_max_c,
                "MinModuleTemperature": fresh.temp_min_c,
                "MaxModuleTemperatureNumber": _module_number(topo, fresh.temp_max_at),
                "MinModuleTemperatureNumber": _module_number(topo, fresh.temp_min_at),
            },
        )
    batch.add(
        0x4280,
        {
            "ChargeForbidden": 0 if _sent_positive(ccl) else FORBIDDEN,
            "DischargeForbidden": 0 if _sent_positive(dcl) else FORBIDDEN,
        },
    )
    batch.add(0x4290, {"FaultExtension": 0})
    return batch


def _system(view: PackView) -> FrameBatch:
    """A site's strings are in parallel: cells, modules and voltage level are one string's (its
    configuration's), the capacity is the site's (None: unknown, the frame is withheld)."""
    batch = FrameBatch(load_pylon_hv_dbc())
    config = view.config
    topo = config.topology
    name = view.battery_name[:16]
    capacity = view.capacity_ah
    for frame_id, values in (
        (
            0x7310,
            {
                "HardwareVersionMajor": HARDWARE_VERSION[0],
                "HardwareVersionMinor": HARDWARE_VERSION[1],
                "SoftwareVersionMajor": FIRMWARE_VERSION[0],
                "SoftwareVersionMinor": FIRMWARE_VERSION[1],
            },
        ),
        (
            0x7320,
            {
                "TotalCells": config.total_cells,
                "ModulesInSeries": topo.modules,
                "CellsPerModule": topo.cells_per_module,
                "VoltageLevel": round(config.nominal_pack_voltage_v),
                "CapacityAh": None if capacity is None else round(capacity),
            },
        ),
        (0x7330, ascii_values(name[:8], pad="\0")),
        (0x7340, ascii_values(name[8:], pad="\0")),
    ):
        batch.add(frame_id, values)
    return batch
