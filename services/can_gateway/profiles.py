"""Inverter CAN profiles: the master's pack state as CAN frames (pure, no bus I/O or clocks).

`Victron0x35x` and `PylonV12` implement `profile.Profile`: 11-bit IDs, little-endian fields,
every frame once a second; `frames_for(profile, pack, stale=..., config=...)` is the same
as a plain list. Both read the inverter's keep-alive (0x305/0x307).

Profile "victron_0x35x" (Victron GX / SMA Sunny Island / generic "CAN-BMS"):
0x351 limits, 0x355 SOC/SOH/HiRes SOC (6 bytes), 0x356 voltage/current/temperature,
0x35A alarms/warnings, 0x35E manufacturer, 0x35F "Li"/firmware/capacity, 0x370/0x371 BMS name,
0x372 module counts, 0x373 cell extremes, 0x378 energy, 0x379 installed capacity.

Profile "pylon_v12" (Pylontech US protocol v1.2, read by Deye, Growatt, Sofar, Victron ...):
0x351 limits, 0x355 SOC/SOH (4 bytes), 0x356, 0x359 protection/alarm flags,
0x35C charge/discharge enable, 0x35E "PYLON   " (inverters recognise the battery by this name).

A site (BMS_SITE): both profiles send the site's values and limits, read from the site as one
pack (`services.can_gateway.site`); 0x372 counts its strings as modules, 0x35F/0x379 its summed
capacity.

Normal operation:
Unknown values (None in the pack state) are never sent as numbers: a measurement frame goes
out only while its values are known (0x355 needs SOC and SOH, 0x356 voltage and current, 0x373
the cell extremes, 0x378 the energy counters), so an inverter never sees SOC 0 % at start-up.
An unknown temperature is the DBC's not-available value (0x356 raw 0x8000, 0x373 raw 0xFFFF).
A value beyond its frame's range withholds that frame (see `codec`), never clamped.

Normal operation (the pack state is fresh and its voltage, current and cell extremes known):
- 0x351: CVL/DVL from `pack.limits` (CVL 0 is replaced by the configured pack charge voltage,
  since Victron reads CVL 0 as over-voltage). CCL/DCL from `pack.limits`, but 0 unless the
  contactors are closed and there is no fault.
- 0x356 temperature: the average cell temperature (else the mean of min and max).
- 0x35A / 0x359: see `services.can_gateway.alarms` (faults -> alarm/protection,
  alarms and warnings -> warning/alarm bits).
- 0x35C: charge enable = CCL as sent > 0, discharge enable = DCL as sent > 0. Full charge
  request (byte 0 bit 3: "Pylon requests a full charge periodically to re-calibrate SOC",
  can-inverter-protocol.md 1.3.7) = the master's `full_charge_requested` while charging is
  enabled; the force charge requests I and II (waking or charging an emptied battery) stay 0.
  The victron_0x35x profile has no request bit: the request reaches Victron and SMA only
  through Modbus and the web application.

Fail-safe (the pack state is stale, missing, or its voltage, current or cell extremes are
unknown): no measurement is sent as if it were current.
- 0x351: CVL = configured pack charge voltage, CCL = 0 A, DCL = 0 A,
  DVL = configured pack discharge voltage.
- victron_0x35x: 0x35A with AlarmGeneral and AlarmBmsInternal active (plus the last pack's codes,
  if any), every other supported pair from the last pack's codes or OK; 0x372 with 0 modules
  online and every module offline and blocking charge and discharge; 0x35E, 0x35F, 0x370,
  0x371, 0x379 (configuration only). 0x355, 0x356, 0x373, 0x378 only from a fresh pack state
  whose values they carry are known.
- pylon_v12: 0x359 with ProtectSystemError and AlarmInternalComm set (plus the last pack's codes),
  0x35C = 0x00 (charge and discharge disabled), 0x35E. 0x355 and 0x356 as above.
"""

from __future__ import annotations

from collections.abc import Callable

from services.can_gateway.alarms import pylon_flags, victron_pairs
from services.can_gateway.codec import Frame, FrameBatch, ascii_values, load_dbc
from services.can_gateway.profile import Handling, PackView
from shared.config.system import SystemConfig
from shared.messages.pack import PackState

PROFILES = ("victron_0x35x", "pylon_v12")

PERIOD_S = 1.0
"""Inverter profiles send each frame once a second (never faster than 200 ms per id)."""
KEEPALIVE_IDS = frozenset({0x305, 0x307})
VICTRON_MANUFACTURER = "BMSSTACK"
PYLON_MANUFACTURER = "PYLON"
FIRMWARE_VERSION = (0, 1)
BATTERY_TYPE_LI = int.from_bytes(b"Li", "little")
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
    return builder(PackView(config=config, pack=pack, stale=stale or pack is None)).frames


def is_keepalive(arbitration_id: int, data: bytes) -> bool:
    """True for an inverter keep-alive: 0x305 (Pylon/Victron zeros, SMA process values) or 0x307.

    Victron's 0x307 carries "VIC" in bytes 4-6 and SMA's carries relay states; both only prove
    the inverter is alive, so the payload is not checked beyond the classic-CAN length.
    """
    return arbitration_id in KEEPALIVE_IDS and len(data) <= 8


def _limits(pack: PackState | None, config: SystemConfig) -> dict[str, float | None]:
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


def _sent_positive(current_limit_a: float | None) -> bool:
    # Compare what 0x351 carries (0.1 A steps): 0.03 A goes out as 0 and must not enable.
    return current_limit_a is not None and round(current_limit_a * 10) > 0


def full_charge_bit(pack: PackState | None, charge_enabled: bool) -> float:
    """A protocol's full-charge request bit: the master's request, from a known pack state,
    while the charge limit as sent lets the inverter follow it (never a request to charge a
    pack the frames forbid to charge)."""
    requested = pack is not None and pack.full_charge_requested is True
    return float(requested and charge_enabled)


def _pack_temperature(pack: PackState) -> float | None:
    if pack.temp_avg_c is not None:
        return pack.temp_avg_c
    if pack.temp_min_c is not None and pack.temp_max_c is not None:
        return (pack.temp_min_c + pack.temp_max_c) / 2
    return None


def _add_measurements(batch: FrameBatch, fresh: PackState | None, *, hires: bool) -> None:
    """0x355 and 0x356, each only while the values it carries are known."""
    if fresh is None:
        return
    if fresh.soc is not None and fresh.soh is not None:
        soc: dict[str, float | None] = {
            "StateOfCharge": round(fresh.soc),
            "StateOfHealth": round(fresh.soh),
        }
        if hires:
            soc["StateOfChargeHiRes"] = fresh.soc
        batch.add(0x355, soc)
    if fresh.voltage is not None and fresh.current is not None:
        batch.add(
            0x356,
            {
                "BatteryVoltage": fresh.voltage,
                "BatteryCurrent": fresh.current,
                "BatteryTemperature": _pack_temperature(fresh),
            },
        )


def _kelvin(celsius: float | None) -> float | None:
    return None if celsius is None else round(celsius + 273.15)


def _codes(pack: PackState | None) -> tuple[list[str], list[str]]:
    if pack is None:
        return [], []
    return list(pack.faults), [*pack.alarms, *pack.warnings]


def _victron(view: PackView) -> FrameBatch:
    config, fresh, known = view.config, view.fresh, view.known
    batch = FrameBatch(load_dbc("victron_0x35x"))
    faults, warnings = _codes(view.pack)
    limits = _limits(known, config)
    modules = view.modules
    name = view.battery_name[:16]
    capacity = view.capacity_ah
    batch.add(0x351, limits)
    _add_measurements(batch, fresh, hires=True)
    force = () if known is not None else ("General", "BmsInternal")
    batch.add(0x35A, victron_pairs(faults, warnings, force_alarms=force))
    batch.add(0x35E, ascii_values(VICTRON_MANUFACTURER))
    batch.add(
        0x35F,
        {
            "BatteryType": BATTERY_TYPE_LI,
            "FirmwareMajor": FIRMWARE_VERSION[0],
            "FirmwareMinor": FIRMWARE_VERSION[1],
            "CapacityAh": None if capacity is None else round(capacity),
        },
    )
    batch.add(0x370, ascii_values(name[:8], pad="\0"))
    batch.add(0x371, ascii_values(name[8:], pad="\0"))
    if known is None:
        offline = modules if fresh is None else len(set(fresh.stale_modules))
        counts = {"online": modules - offline, "charge": modules, "discharge": modules}
    else:
        offline = len(set(known.stale_modules))
        counts = {
            "online": max(modules - offline, 0),
            "charge": 0 if _sent_positive(limits["ChargeCurrentLimit"]) else modules,
            "discharge": 0 if _sent_positive(limits["DischargeCurrentLimit"]) else modules,
        }
    batch.add(
        0x372,
        {
            "ModulesOnline": counts["online"],
            "ModulesBlockingCharge": counts["charge"],
            "ModulesBlockingDischarge": counts["discharge"],
            "ModulesOffline": offline,
        },
    )
    if fresh is not None and fresh.cell_v_min is not None and fresh.cell_v_max is not None:
        batch.add(
            0x373,
            {
                "MinCellVoltage": fresh.cell_v_min,
                "MaxCellVoltage": fresh.cell_v_max,
                "MinCellTemperature": _kelvin(fresh.temp_min_c),
                "MaxCellTemperature": _kelvin(fresh.temp_max_c),
            },
        )
    if fresh is not None and fresh.energy_in_wh is not None and fresh.energy_out_wh is not None:
        batch.add(
            0x378,
            {
                "ChargedEnergy": fresh.energy_in_wh / 1000.0,
                "DischargedEnergy": fresh.energy_out_wh / 1000.0,
            },
        )
    batch.add(0x379, {"InstalledCapacity": None if capacity is None else round(capacity)})
    return batch


def _pylon(view: PackView) -> FrameBatch:
    config, known = view.config, view.known
    batch = FrameBatch(load_dbc("pylon_v12"))
    faults, warnings = _codes(view.pack)
    limits = _limits(known, config)
    batch.add(0x351, limits)
    _add_measurements(batch, view.fresh, hires=False)
    force = () if known is not None else ("ProtectSystemError", "AlarmInternalComm")
    flags: dict[str, float | None] = dict(pylon_flags(faults, warnings, force=force))
    # A capacity not known yet counts as one module: the inverter derives the smallest limits.
    capacity = view.capacity_ah or PYLON_MODULE_AH
    module_count = min(max(round(capacity / PYLON_MODULE_AH), 1), 255)
    batch.add(0x359, {**flags, "ModuleCount": module_count, "MarkerP": ord("P"),
                      "MarkerN": ord("N")})  # fmt: skip
    charge = _sent_positive(limits["ChargeCurrentLimit"])
    batch.add(
        0x35C,
        {
            "ChargeEnable": float(charge),
            "DischargeEnable": float(_sent_positive(limits["DischargeCurrentLimit"])),
            "ForceChargeRequest1": 0,
            "ForceChargeRequest2": 0,
            "FullChargeRequest": full_charge_bit(known, charge),
        },
    )
    batch.add(0x35E, ascii_values(PYLON_MANUFACTURER))
    return batch


_BUILDERS: dict[str, Callable[[PackView], FrameBatch]] = {
    "victron_0x35x": _victron,
    "pylon_v12": _pylon,
}


class _LowVoltageInverter:
    """The 0x35x family: every frame once a second, the inverter's keep-alive read."""

    name = ""
    period_s: float | None = PERIOD_S
    supervises_keepalive = True

    def cyclic(self, view: PackView) -> FrameBatch:
        return _BUILDERS[self.name](view)

    def burst(self, view: PackView) -> FrameBatch:
        return FrameBatch(load_dbc(self.name))

    def accepts(self, arbitration_id: int, is_extended_id: bool) -> bool:
        return not is_extended_id and arbitration_id in KEEPALIVE_IDS

    def handle(self, arbitration_id: int, data: bytes, view: PackView) -> Handling:
        return Handling(keepalive=is_keepalive(arbitration_id, data))


class Victron0x35x(_LowVoltageInverter):
    name = "victron_0x35x"


class PylonV12(_LowVoltageInverter):
    name = "pylon_v12"
