"""Pylontech high-voltage CAN protocol (pure, no bus I/O or clocks).

Above 327 V the 0x35x frames cannot carry the pack voltage; Pylontech HV uses 29-bit extended
IDs at 500 kbit/s and is request-driven: the inverter sends 0x4200 and the battery answers.
`responses_for(request, pack, stale=..., config=...)` maps the 0x4200 payload to the answer
`[(arbitration_id, payload), ...]` (extended IDs, battery address 0); `decode_command` decodes
the inverter's sleep/wake (0x8200) and relay (0x8210) commands.

Requests (byte 0 of 0x4200):
- 0x00 ensemble information -> 0x4210, 0x4220, 0x4230, 0x4240, 0x4250, 0x4260, 0x4270, 0x4280,
  0x4290.
- 0x02 system equipment information -> 0x7310, 0x7320, 0x7330, 0x7340.
- anything else, or an empty payload -> no answer.

Encoding options (the reference leaves both open between implementations):
- `byte_order`: "little" (default: diyBMS, ai-republic and Battery-Emulator's sample payloads)
  or "big": every 16-bit field, including the 0x4250 cycle/alarm/protection words, has its two
  bytes swapped; 8-bit fields and the ASCII name are unchanged.
- `current_offset_a`: raw current = (I + offset) * 10 (default 3000 A: raw 30000 = 0 A) for the
  0x4210 current and the 0x4220 current limits. With offset 0 the raw value is a signed 16-bit
  two's-complement number. Out-of-range values are clamped to the raw range.
  The discharge limit is sent as a negative current (raw = (offset - DCL) * 10).

Normal operation:
- 0x4210: pack voltage, current (+ charge), BMS temperature = average cell temperature (else the
  mean of min and max), SOC, SOH.
- 0x4220: CVL/DVL from `pack.limits` (CVL 0 is replaced by the configured pack charge voltage);
  CCL/DCL from `pack.limits`, but 0 unless the contactors are closed and there is no fault.
- 0x4230/0x4240: cell extremes with 1-based cell / sensor numbers (0 = location unknown).
- 0x4250: status sleep/charge/discharge/idle from contactors and current; cycle count; error byte
  from the pack faults; alarm word from alarms and warnings, protection word from faults (see
  `HV_FLAGS`, `HV_ERRORS`; a fault with no bit of its own sets OtherError).
- 0x4260: the pack state has no module voltages: both extremes are the mean module voltage
  (pack voltage / modules, clamped to the 65.535 V that 1 mV steps in 16 bits hold), module
  numbers 0. 0x4270: the cell temperature extremes with the
  1-based module that holds them.
- 0x4280: 0xAA (forbidden) when the limit as sent is 0, else 0x00. 0x4290: 0 (the reference
  names no bits).
- An unknown temperature is sent as -100 degC (raw 0), which inverters read as too cold to charge.

Fail-safe (`stale` is true or `pack` is None): the ensemble answer is still sent, so that the
inverter sees the battery and its stop request, but no measurement is passed off as current
(and never SOC 0 %, which some inverters answer with a forced charge):
- 0x4210, 0x4230, 0x4240, 0x4260, 0x4270 (measurements) are not sent.
- 0x4220: CVL/DVL = configured pack charge/discharge voltages, CCL = 0 A, DCL = 0 A.
- 0x4250: status sleep (0); InternalCommError and OtherError set; AlarmSystemLowVoltage,
  AlarmSystemHighVoltage, ProtectSystemLowVoltage and ProtectSystemHighVoltage set; plus the
  bits of the last pack's codes, if any.
- 0x4280: charge and discharge forbidden (0xAA, 0xAA).
- The system information answer (0x7310-0x7340) is configuration only and unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

import cantools
from cantools.database.can import Database

from services.can_gateway.codec import FrameEncodeError, ascii_values, encode
from shared.config.system import SystemConfig, Topology
from shared.messages.pack import CellLocation, PackState

Frame = tuple[int, bytes]
ByteOrder = Literal["little", "big"]

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

# 0x4250 alarm word (bytes 4-5) and protection word (bytes 6-7), same bit layout:
# flag (signal name without the Alarm/Protect prefix) -> protection codes. Module low/high
# voltage have no code of their own (no module voltages in the pack state) and stay 0.
HV_FLAGS: Mapping[str, tuple[str, ...]] = {
    "CellLowVoltage": ("cell_undervoltage", "deep_discharge"),
    "CellHighVoltage": ("cell_overvoltage",),
    "SystemLowVoltage": ("pack_undervoltage",),
    "SystemHighVoltage": ("pack_overvoltage",),
    "ChargeLowTemp": ("cell_undertemp_charge",),
    "ChargeHighTemp": ("cell_overtemp_charge",),
    "DischargeLowTemp": ("cell_undertemp_discharge",),
    "DischargeHighTemp": ("cell_overtemp_discharge",),
    "ChargeOverCurrent": ("charge_overcurrent",),
    "DischargeOverCurrent": ("discharge_overcurrent",),
    "ModuleLowVoltage": (),
    "ModuleHighVoltage": (),
}
# 0x4250 error byte (byte 3): error signal -> fault codes.
HV_ERRORS: Mapping[str, tuple[str, ...]] = {
    "VoltageSensorError": ("open_wire", "pack_voltage_plausibility"),
    "TemperatureSensorError": ("sensor_fault",),
    "InternalCommError": ("communication_loss",),
    "InputOverVoltageError": (),
    "InputReversalError": (),
    "RelayCheckError": ("contactor_feedback_mismatch",),
    "BatteryDamageError": (),
    "OtherError": ("measurement_out_of_range", "current_sensor_failure"),
}
# A fault with no bit of its own (e.g. cell imbalance) still has to stop the inverter.
HV_UNMAPPED_FAULT = "OtherError"
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
    close_charge_relay: bool | None = None  # 0x8210 byte 0 == 0xAA
    close_discharge_relay: bool | None = None  # 0x8210 byte 1 == 0xAA


@cache
def load_pylon_hv_dbc() -> Database:
    """`services/can_gateway/dbc/pylon_hv.dbc`, parsed once (same rules as `codec.load_dbc`)."""
    text = resources.files("services.can_gateway").joinpath("dbc", "pylon_hv.dbc")
    db = cantools.database.load_string(text.read_text("utf-8"), database_format="dbc", strict=True)
    if not isinstance(db, Database):
        raise FrameEncodeError("pylon_hv.dbc is not a CAN database")
    return db


def responses_for(
    request: bytes,
    pack: PackState | None,
    *,
    stale: bool,
    config: SystemConfig,
    byte_order: ByteOrder = DEFAULT_BYTE_ORDER,
    current_offset_a: float = DEFAULT_CURRENT_OFFSET_A,
) -> list[Frame]:
    """The frames answering a 0x4200 request payload (see the module docstring)."""
    if byte_order not in ("little", "big"):
        raise ValueError(f"byte_order must be 'little' or 'big', not {byte_order!r}")
    if not request:
        return []
    if request[0] == REQUEST_ENSEMBLE:
        frames = _ensemble(None if stale else pack, pack, config, current_offset_a)
        if stale or pack is None:
            # no invented measurements (never SOC 0 %): limits, alarms and the forbid flags only
            frames = [(fid, data) for fid, data in frames if fid not in MEASUREMENT_IDS]
    elif request[0] == REQUEST_SYSTEM:
        frames = _system(config)
    else:
        return []
    return [(fid, swap_words(fid, data)) for fid, data in frames] if byte_order == "big" else frames


def decode_command(arbitration_id: int, data: bytes) -> InverterCommand | None:
    """The sleep/wake (0x8200) or relay (0x8210) command, else None."""
    if arbitration_id == SLEEP_WAKE_ID and data:
        sleep = {SLEEP: True, WAKE: False}.get(data[0])
        return InverterCommand(sleep=sleep) if sleep is not None else None
    if arbitration_id == RELAY_ID and data:
        second = data[1] if len(data) > 1 else 0
        return InverterCommand(
            close_charge_relay=data[0] == CLOSE, close_discharge_relay=second == CLOSE
        )
    return None


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


def current_value(current_a: float, offset_a: float) -> float:
    """The physical value that the DBC (offset -3000 A) encodes to raw (I + offset_a) * 10."""
    lo, hi = (-32768, 32767) if offset_a == 0 else (0, 65535)
    raw = min(max(round((current_a + offset_a) * 10), lo), hi) & 0xFFFF
    return raw * 0.1 - DEFAULT_CURRENT_OFFSET_A


def hv_status(
    faults: Iterable[str],
    warnings: Iterable[str],
    *,
    force_errors: Iterable[str] = (),
    force_flags: Iterable[str] = (),
) -> dict[str, float]:
    """0x4250 error, alarm and protection bits from the codes (see `HV_FLAGS`, `HV_ERRORS`)."""
    fault_set, warn_set = set(faults), set(warnings)
    errors, flags = set(force_errors), set(force_flags)
    out: dict[str, float] = {}
    mapped: set[str] = set()
    for name, codes in HV_ERRORS.items():
        mapped.update(codes)
        out[name] = float(bool(fault_set.intersection(codes)) or name in errors)
    for name, codes in HV_FLAGS.items():
        mapped.update(codes)
        out["Alarm" + name] = float(bool(warn_set.intersection(codes)) or name in flags)
        out["Protect" + name] = float(bool(fault_set.intersection(codes)) or name in flags)
    if fault_set - mapped:
        out[HV_UNMAPPED_FAULT] = 1.0
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


def _temp(value: float | None) -> float:
    return TEMP_UNKNOWN_C if value is None else value


def _pack_temperature(pack: PackState) -> float | None:
    if pack.temp_avg_c is not None:
        return pack.temp_avg_c
    if pack.temp_min_c is not None and pack.temp_max_c is not None:
        return (pack.temp_min_c + pack.temp_max_c) / 2
    return None


def _status(pack: PackState) -> int:
    if pack.contactors != "closed":
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


def _ensemble(
    fresh: PackState | None, last: PackState | None, config: SystemConfig, offset_a: float
) -> list[Frame]:
    db = load_pylon_hv_dbc()
    topo = config.topology
    faults = list(last.faults) if last is not None else []
    warnings = [*last.alarms, *last.warnings] if last is not None else []
    cvl, dvl, ccl, dcl = _limits(fresh, config)
    if fresh is None:
        main = {"PileVoltage": 0.0, "current": 0.0, "BmsTemperature": TEMP_UNKNOWN_C}
        main |= {"StateOfCharge": 0.0, "StateOfHealth": 0.0}
        cells = {"MaxCellVoltage": 0.0, "MinCellVoltage": 0.0}
        cells |= {"MaxCellVoltageNumber": 0, "MinCellVoltageNumber": 0}
        temps = {"MaxCellTemperature": TEMP_UNKNOWN_C, "MinCellTemperature": TEMP_UNKNOWN_C}
        temps |= {"MaxCellTemperatureNumber": 0, "MinCellTemperatureNumber": 0}
        module_v = 0.0
        module_t = {"MaxModuleTemperature": TEMP_UNKNOWN_C, "MinModuleTemperature": TEMP_UNKNOWN_C}
        module_t |= {"MaxModuleTemperatureNumber": 0, "MinModuleTemperatureNumber": 0}
        status = {"BasicStatus": STATUS_SLEEP, "CyclePeriod": 0}
        bits = hv_status(faults, warnings, force_errors=FAILSAFE_ERRORS, force_flags=FAILSAFE_FLAGS)
    else:
        main = {
            "PileVoltage": fresh.voltage,
            "current": fresh.current,
            "BmsTemperature": _temp(_pack_temperature(fresh)),
            "StateOfCharge": round(fresh.soc),
            "StateOfHealth": round(fresh.soh),
        }
        cells = {
            "MaxCellVoltage": fresh.cell_v_max,
            "MinCellVoltage": fresh.cell_v_min,
            "MaxCellVoltageNumber": cell_number(topo, fresh.cell_v_max_at),
            "MinCellVoltageNumber": cell_number(topo, fresh.cell_v_min_at),
        }
        temps = {
            "MaxCellTemperature": _temp(fresh.temp_max_c),
            "MinCellTemperature": _temp(fresh.temp_min_c),
            "MaxCellTemperatureNumber": sensor_number(topo, fresh.temp_max_at),
            "MinCellTemperatureNumber": sensor_number(topo, fresh.temp_min_at),
        }
        module_v = fresh.voltage / topo.modules
        module_t = {
            "MaxModuleTemperature": _temp(fresh.temp_max_c),
            "MinModuleTemperature": _temp(fresh.temp_min_c),
            "MaxModuleTemperatureNumber": _module_number(topo, fresh.temp_max_at),
            "MinModuleTemperatureNumber": _module_number(topo, fresh.temp_min_at),
        }
        status = {"BasicStatus": _status(fresh), "CyclePeriod": round(fresh.equivalent_cycles)}
        bits = hv_status(faults, warnings)
    pile_current = current_value(main.pop("current"), offset_a)
    return [
        encode(db, 0x4210, {**main, "PileCurrent": pile_current}),
        encode(
            db,
            0x4220,
            {
                "ChargeCutoffVoltage": cvl,
                "DischargeCutoffVoltage": dvl,
                "MaxChargeCurrent": current_value(ccl, offset_a),
                "MaxDischargeCurrent": current_value(-dcl, offset_a),
            },
        ),
        encode(db, 0x4230, cells),
        encode(db, 0x4240, temps),
        encode(
            db,
            0x4250,
            {**status, "ForceChargeRequest": 0, "BalanceChargeRequest": 0, **bits},
        ),
        encode(
            db,
            0x4260,
            {
                "MaxModuleVoltage": module_v,
                "MinModuleVoltage": module_v,
                "MaxModuleVoltageNumber": 0,
                "MinModuleVoltageNumber": 0,
            },
        ),
        encode(db, 0x4270, module_t),
        encode(
            db,
            0x4280,
            {
                "ChargeForbidden": 0 if _sent_positive(ccl) else FORBIDDEN,
                "DischargeForbidden": 0 if _sent_positive(dcl) else FORBIDDEN,
            },
        ),
        encode(db, 0x4290, {"FaultExtension": 0}),
    ]


def _system(config: SystemConfig) -> list[Frame]:
    db = load_pylon_hv_dbc()
    topo = config.topology
    name = (config.name or config.system_id)[:16]
    return [
        encode(
            db,
            0x7310,
            {
                "HardwareVersionMajor": HARDWARE_VERSION[0],
                "HardwareVersionMinor": HARDWARE_VERSION[1],
                "SoftwareVersionMajor": FIRMWARE_VERSION[0],
                "SoftwareVersionMinor": FIRMWARE_VERSION[1],
            },
        ),
        encode(
            db,
            0x7320,
            {
                "TotalCells": config.total_cells,
                "ModulesInSeries": topo.modules,
                "CellsPerModule": topo.cells_per_module,
                "VoltageLevel": round(config.nominal_pack_voltage_v),
                "CapacityAh": round(config.cell_capacity_ah),
            },
        ),
        encode(db, 0x7330, ascii_values(name[:8], pad="\0")),
        encode(db, 0x7340, ascii_values(name[8:], pad="\0")),
    ]
