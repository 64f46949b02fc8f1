"""Inverter CAN profiles: the master's pack state as CAN frames (pure, no bus I/O or clocks).

`frames_for(profile, pack, stale=..., config=...)` returns `[(arbitration_id, payload), ...]`
(11-bit IDs, little-endian fields) for one transmit cycle; the caller sends them periodically.

Profile "victron_0x35x" (Victron GX / SMA Sunny Island / generic "CAN-BMS"):
0x351 limits, 0x355 SOC/SOH/HiRes SOC (6 bytes), 0x356 voltage/current/temperature,
0x35A alarms/warnings, 0x35E manufacturer, 0x35F "Li"/firmware/capacity, 0x370/0x371 BMS name,
0x372 module counts, 0x373 cell extremes, 0x378 energy, 0x379 installed capacity.

Profile "pylon_v12" (Pylontech US protocol v1.2, read by Deye, Growatt, Sofar, Victron ...):
0x351 limits, 0x355 SOC/SOH (4 bytes), 0x356, 0x359 protection/alarm flags,
0x35C charge/discharge enable, 0x35E "PYLON   " (inverters recognise the battery by this name).

Normal operation:
- 0x351: CVL/DVL from `pack.limits` (CVL 0 is replaced by the configured pack charge voltage,
  since Victron reads CVL 0 as over-voltage). CCL/DCL from `pack.limits`, but 0 unless the
  contactors are closed and there is no fault.
- 0x356 temperature: the average cell temperature (else the mean of min and max); raw 0x8000
  ("invalid" for SMA) when unknown. 0x373 temperatures: 65535 K when unknown.
- 0x35A / 0x359: see `services.can_gateway.alarms` (faults -> alarm/protection,
  alarms and warnings -> warning/alarm bits).
- 0x35C: charge enable = CCL as sent > 0, discharge enable = DCL as sent > 0.

Fail-safe (`stale` is true or `pack` is None): no measurement is sent as if it were current.
- 0x351: CVL = configured pack charge voltage, CCL = 0 A, DCL = 0 A,
  DVL = configured pack discharge voltage.
- victron_0x35x: 0x35A with AlarmGeneral and AlarmBmsInternal active (plus the last pack's codes,
  if any), every other supported pair from the last pack's codes or OK; 0x372 with 0 modules
  online and every module offline and blocking charge and discharge; 0x35E, 0x35F, 0x370,
  0x371, 0x379 (configuration only). 0x355, 0x356, 0x373, 0x378 are not sent.
- pylon_v12: 0x359 with ProtectSystemError and AlarmInternalComm set (plus the last pack's codes),
  0x35C = 0x00 (charge and discharge disabled), 0x35E. 0x355 and 0x356 are not sent.
"""

from __future__ import annotations

from collections.abc import Callable

from services.can_gateway.alarms import pylon_flags, victron_pairs
from services.can_gateway.codec import ascii_values, encode, load_dbc
from shared.config.system import SystemConfig
from shared.messages.pack import PackState

Frame = tuple[int, bytes]

PROFILES = ("victron_0x35x", "pylon_v12")

KEEPALIVE_IDS = frozenset({0x305, 0x307})
VICTRON_MANUFACTURER = "BMSSTACK"
PYLON_MANUFACTURER = "PYLON"
FIRMWARE_VERSION = (0, 1)
BATTERY_TYPE_LI = int.from_bytes(b"Li", "little")
TEMP_UNKNOWN_C = -3276.8  # raw 0x8000 in 0x356, "invalid" per SMA
TEMP_UNKNOWN_K = 65535.0  # raw 0xFFFF in 0x373
# Pylontech US3000 module capacity: inverters derive limits from the 0x359 module count.
PYLON_MODULE_AH = 74.0


def frames_for(
    profile: str, pack: PackState | None, *, stale: bool, config: SystemConfig
) -> list[Frame]:
    """All frames of one transmit cycle of `profile` (see the module docstring)."""
    builder = _BUILDERS.get(profile)
    if builder is None:
        raise ValueError(
            f"CAN profile {profile!r} has no frame builder here; "
            f"choose one of {', '.join(PROFILES)}"
        )
    return builder(None if stale else pack, pack, config)


def is_keepalive(arbitration_id: int, data: bytes) -> bool:
    """True for an inverter keep-alive: 0x305 (Pylon/Victron zeros, SMA process values) or 0x307.

    Victron's 0x307 carries "VIC" in bytes 4-6 and SMA's carries relay states; both only prove
    the inverter is alive, so the payload is not checked beyond the classic-CAN length.
    """
    return arbitration_id in KEEPALIVE_IDS and len(data) <= 8


def _limits(pack: PackState | None, config: SystemConfig) -> dict[str, float]:
    if pack is None:
        return {
            "ChargeVoltageLimit": config.charge_pack_voltage_v,
            "ChargeCurrentLimit": 0.0,
            "DischargeCurrentLimit": 0.0,
            "DischargeVoltageLimit": config.discharge_pack_voltage_v,
        }
    lim = pack.limits
    allowed = pack.contactors == "closed" and not pack.faults
    return {
        "ChargeVoltageLimit": lim.charge_voltage_v or config.charge_pack_voltage_v,
        "ChargeCurrentLimit": lim.charge_current_a if allowed else 0.0,
        "DischargeCurrentLimit": lim.discharge_current_a if allowed else 0.0,
        "DischargeVoltageLimit": lim.discharge_voltage_v,
    }


def _sent_positive(current_limit_a: float) -> bool:
    # Compare what 0x351 carries (0.1 A steps): 0.03 A goes out as 0 and must not enable.
    return round(current_limit_a * 10) > 0


def _pack_temperature(pack: PackState) -> float | None:
    if pack.temp_avg_c is not None:
        return pack.temp_avg_c
    if pack.temp_min_c is not None and pack.temp_max_c is not None:
        return (pack.temp_min_c + pack.temp_max_c) / 2
    return None


def _measurements(pack: PackState) -> dict[str, float]:
    temp = _pack_temperature(pack)
    return {
        "BatteryVoltage": pack.voltage,
        "BatteryCurrent": pack.current,
        "BatteryTemperature": TEMP_UNKNOWN_C if temp is None else temp,
    }


def _kelvin(celsius: float | None) -> float:
    return TEMP_UNKNOWN_K if celsius is None else round(celsius + 273.15)


def _codes(pack: PackState | None) -> tuple[list[str], list[str]]:
    if pack is None:
        return [], []
    return list(pack.faults), [*pack.alarms, *pack.warnings]


def _victron(fresh: PackState | None, last: PackState | None, config: SystemConfig) -> list[Frame]:
    db = load_dbc("victron_0x35x")
    faults, warnings = _codes(last)
    limits = _limits(fresh, config)
    modules = config.topology.modules
    name = (config.name or config.system_id)[:16]
    frames = [encode(db, 0x351, limits)]
    if fresh is not None:
        frames += [
            encode(
                db,
                0x355,
                {
                    "StateOfCharge": round(fresh.soc),
                    "StateOfHealth": round(fresh.soh),
                    "StateOfChargeHiRes": fresh.soc,
                },
            ),
            encode(db, 0x356, _measurements(fresh)),
        ]
    force = () if fresh is not None else ("General", "BmsInternal")
    frames += [
        encode(db, 0x35A, victron_pairs(faults, warnings, force_alarms=force)),
        encode(db, 0x35E, ascii_values(VICTRON_MANUFACTURER)),
        encode(
            db,
            0x35F,
            {
                "BatteryType": BATTERY_TYPE_LI,
                "FirmwareMajor": FIRMWARE_VERSION[0],
                "FirmwareMinor": FIRMWARE_VERSION[1],
                "CapacityAh": round(config.cell_capacity_ah),
            },
        ),
        encode(db, 0x370, ascii_values(name[:8], pad="\0")),
        encode(db, 0x371, ascii_values(name[8:], pad="\0")),
    ]
    if fresh is None:
        counts = {"online": 0, "charge": modules, "discharge": modules, "offline": modules}
    else:
        offline = len(set(fresh.stale_modules))
        counts = {
            "online": max(modules - offline, 0),
            "charge": 0 if _sent_positive(limits["ChargeCurrentLimit"]) else modules,
            "discharge": 0 if _sent_positive(limits["DischargeCurrentLimit"]) else modules,
            "offline": offline,
        }
    frames.append(
        encode(
            db,
            0x372,
            {
                "ModulesOnline": counts["online"],
                "ModulesBlockingCharge": counts["charge"],
                "ModulesBlockingDischarge": counts["discharge"],
                "ModulesOffline": counts["offline"],
            },
        )
    )
    if fresh is not None:
        frames += [
            encode(
                db,
                0x373,
                {
                    "MinCellVoltage": fresh.cell_v_min,
                    "MaxCellVoltage": fresh.cell_v_max,
                    "MinCellTemperature": _kelvin(fresh.temp_min_c),
                    "MaxCellTemperature": _kelvin(fresh.temp_max_c),
                },
            ),
            encode(
                db,
                0x378,
                {
                    "ChargedEnergy": fresh.energy_in_wh / 1000.0,
                    "DischargedEnergy": fresh.energy_out_wh / 1000.0,
                },
            ),
        ]
    frames.append(encode(db, 0x379, {"InstalledCapacity": round(config.cell_capacity_ah)}))
    return frames


def _pylon(fresh: PackState | None, last: PackState | None, config: SystemConfig) -> list[Frame]:
    db = load_dbc("pylon_v12")
    faults, warnings = _codes(last)
    limits = _limits(fresh, config)
    frames = [encode(db, 0x351, limits)]
    if fresh is not None:
        frames += [
            encode(
                db, 0x355, {"StateOfCharge": round(fresh.soc), "StateOfHealth": round(fresh.soh)}
            ),
            encode(db, 0x356, _measurements(fresh)),
        ]
    force = () if fresh is not None else ("ProtectSystemError", "AlarmInternalComm")
    flags = pylon_flags(faults, warnings, force=force)
    module_count = min(max(round(config.cell_capacity_ah / PYLON_MODULE_AH), 1), 255)
    frames += [
        encode(
            db,
            0x359,
            {**flags, "ModuleCount": module_count, "MarkerP": ord("P"), "MarkerN": ord("N")},
        ),
        encode(
            db,
            0x35C,
            {
                "ChargeEnable": float(_sent_positive(limits["ChargeCurrentLimit"])),
                "DischargeEnable": float(_sent_positive(limits["DischargeCurrentLimit"])),
                "ForceChargeRequest1": 0,
                "ForceChargeRequest2": 0,
                "FullChargeRequest": 0,
            },
        ),
        encode(db, 0x35E, ascii_values(PYLON_MANUFACTURER)),
    ]
    return frames


_BUILDERS: dict[str, Callable[[PackState | None, PackState | None, SystemConfig], list[Frame]]] = {
    "victron_0x35x": _victron,
    "pylon_v12": _pylon,
}
