"""Pylontech HV frames: round trip through the DBC, dispatch, options, fail-safe, samples."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.can_gateway.codec import FrameRangeError
from services.can_gateway.pylon_hv import (
    ENSEMBLE_IDS,
    FORBIDDEN,
    HV_ERRORS,
    HV_FLAGS,
    SYSTEM_IDS,
    InverterCommand,
    current_value,
    decode_command,
    load_pylon_hv_dbc,
    responses_for,
    swap_words,
)
from shared.config.system import SystemConfig
from shared.messages.pack import CellLocation, CellSnapshot, Limits, ModuleCells, PackState
from shared.protection_codes import PYLON_HV_ERRORS, PYLON_HV_FLAGS, ProtectionCode

CONFIG = SystemConfig.from_preset(
    "LFP", system_id="hv1", name="High voltage bank", modules=12, cells_per_module=16,
    cell_capacity_ah=100.0,
)  # fmt: skip
ENSEMBLE = b"\x00" + bytes(7)
SYSTEM = b"\x02" + bytes(7)


def make_pack(**overrides: Any) -> PackState:
    values: dict[str, Any] = {
        "soc": 61.4,
        "soh": 97.0,
        "voltage": 633.7,
        "current": -42.3,
        "contactors": "closed",
        "mode": "working",
        "cell_v_min": 3.281,
        "cell_v_max": 3.312,
        "cell_v_avg": 3.3,
        "cell_v_min_at": CellLocation(module=2, index=5),
        "cell_v_max_at": CellLocation(module=0, index=0),
        "temp_min_c": 12.5,
        "temp_max_c": 27.1,
        "temp_avg_c": 19.0,
        "temp_min_at": CellLocation(module=3, index=1),
        "temp_max_at": CellLocation(module=11, index=0),
        "limits": Limits(
            charge_voltage_v=681.6,
            discharge_voltage_v=576.0,
            charge_current_a=50.0,
            discharge_current_a=80.0,
        ),
        "equivalent_cycles": 12.6,
    }
    values.update(overrides)
    return PackState(**values)


def decoded(frames: list[tuple[int, bytes]]) -> dict[int, dict[str, Any]]:
    db = load_pylon_hv_dbc()
    out: dict[int, dict[str, Any]] = {}
    for frame_id, data in frames:
        message = db.get_message_by_frame_id(frame_id)
        assert message.is_extended_frame
        assert len(data) == message.length == 8
        values = message.decode(data, decode_choices=False)
        assert isinstance(values, dict)
        out[frame_id] = values
    return out


def close(actual: Any, expected: float, scale: float) -> bool:
    return math.isclose(float(actual), expected, abs_tol=scale / 2 + 1e-6)


def ensemble(pack: PackState | None, *, stale: bool = False, **kw: Any) -> dict[int, Any]:
    return decoded(responses_for(ENSEMBLE, pack, stale=stale, config=CONFIG, **kw))


# --- round trip -----------------------------------------------------------------------------

temps = st.floats(-40.0, 80.0)


@settings(max_examples=150, deadline=None)
@given(
    voltage=st.floats(300.0, 980.0),
    current=st.floats(-1000.0, 1000.0),
    soc=st.floats(0.0, 100.0),
    cell_lo=st.floats(2.5, 3.3),
    cell_span=st.floats(0.0, 0.3),
    t_lo=temps,
    t_span=st.floats(0.0, 40.0),
    ccl=st.floats(0.0, 500.0),
    dcl=st.floats(0.0, 500.0),
)
def test_ensemble_round_trip(
    voltage: float,
    current: float,
    soc: float,
    cell_lo: float,
    cell_span: float,
    t_lo: float,
    t_span: float,
    ccl: float,
    dcl: float,
) -> None:
    pack = make_pack(
        voltage=voltage,
        current=current,
        soc=soc,
        cell_v_min=cell_lo,
        cell_v_max=cell_lo + cell_span,
        temp_min_c=t_lo,
        temp_max_c=t_lo + t_span,
        temp_avg_c=t_lo + t_span / 2,
        limits=Limits(
            charge_voltage_v=min(voltage + 40, 1000.0),
            discharge_voltage_v=voltage - 50,
            charge_current_a=ccl,
            discharge_current_a=dcl,
        ),
    )
    d = ensemble(pack)
    assert list(d) == [i for i in ENSEMBLE_IDS if i != 0x4260]  # module voltages need cells
    assert close(d[0x4210]["PileVoltage"], voltage, 0.1)
    assert close(d[0x4210]["PileCurrent"], current, 0.1)
    assert close(d[0x4210]["BmsTemperature"], t_lo + t_span / 2, 0.1)
    assert d[0x4210]["StateOfCharge"] == round(soc)
    assert d[0x4210]["StateOfHealth"] == 97
    assert close(d[0x4220]["ChargeCutoffVoltage"], min(voltage + 40, 1000.0), 0.1)
    assert close(d[0x4220]["DischargeCutoffVoltage"], voltage - 50, 0.1)
    assert close(d[0x4220]["MaxChargeCurrent"], ccl, 0.1)
    assert close(d[0x4220]["MaxDischargeCurrent"], -dcl, 0.1)
    assert close(d[0x4230]["MaxCellVoltage"], cell_lo + cell_span, 0.001)
    assert close(d[0x4230]["MinCellVoltage"], cell_lo, 0.001)
    assert close(d[0x4240]["MaxCellTemperature"], t_lo + t_span, 0.1)
    assert close(d[0x4240]["MinCellTemperature"], t_lo, 0.1)
    assert d[0x4280]["ChargeForbidden"] == (0 if round(ccl * 10) > 0 else FORBIDDEN)
    assert d[0x4280]["DischargeForbidden"] == (0 if round(dcl * 10) > 0 else FORBIDDEN)


def test_positions_status_and_flags() -> None:
    d = ensemble(make_pack(warnings=["cell_overtemp_charge"], equivalent_cycles=12.6))
    assert d[0x4230]["MaxCellVoltageNumber"] == 1
    assert d[0x4230]["MinCellVoltageNumber"] == 2 * 16 + 5 + 1
    assert d[0x4240]["MinCellTemperatureNumber"] == 3 * 2 + 1 + 1
    assert d[0x4240]["MaxCellTemperatureNumber"] == 11 * 2 + 1
    assert d[0x4270]["MaxModuleTemperatureNumber"] == 12
    assert d[0x4270]["MinModuleTemperatureNumber"] == 4
    assert close(d[0x4270]["MaxModuleTemperature"], 27.1, 0.1)
    status = d[0x4250]
    assert status["BasicStatus"] == 2  # discharging
    assert status["CyclePeriod"] == 13
    assert status["AlarmChargeHighTemp"] == 1
    assert status["ProtectChargeHighTemp"] == 0
    others = {k: v for k, v in status.items() if k.startswith(("Alarm", "Protect"))}
    assert sum(others.values()) == 1
    assert ensemble(make_pack(current=10.0))[0x4250]["BasicStatus"] == 1
    assert ensemble(make_pack(current=0.1))[0x4250]["BasicStatus"] == 3
    opened = ensemble(make_pack(contactors="standby"))
    assert opened[0x4250]["BasicStatus"] == 0
    assert opened[0x4220]["MaxChargeCurrent"] == 0
    assert opened[0x4280] == {"ChargeForbidden": FORBIDDEN, "DischargeForbidden": FORBIDDEN}


def test_unknown_temperature_reads_as_minus_100() -> None:
    pack = make_pack(temp_min_c=None, temp_max_c=None, temp_avg_c=None)
    d = ensemble(pack)
    assert d[0x4210]["BmsTemperature"] == -100  # the DBC's not-available raw 0
    assert 0x4240 not in d and 0x4270 not in d  # no temperature known: nothing to say
    one = dict(responses_for(ENSEMBLE, make_pack(temp_min_c=None), stale=False, config=CONFIG))
    assert one[0x4240][2:4] == bytes(2)


def test_unknown_measurements_are_withheld_and_limits_fail_safe() -> None:
    """Start-up: SOC, voltage and cell extremes unknown; nothing invented, never SOC 0 %."""
    pack = make_pack(soc=None, soh=None, voltage=None, cell_v_min=None, cell_v_max=None,
                     cell_v_avg=None, equivalent_cycles=None)  # fmt: skip
    d = ensemble(pack)
    assert 0x4210 not in d and 0x4230 not in d
    assert d[0x4220]["MaxChargeCurrent"] == d[0x4220]["MaxDischargeCurrent"] == 0
    assert d[0x4280] == {"ChargeForbidden": FORBIDDEN, "DischargeForbidden": FORBIDDEN}
    raw = dict(responses_for(ENSEMBLE, pack, stale=False, config=CONFIG))[0x4250]
    assert raw[1:3] == b"\xff\xff"  # cycles not available


def test_module_voltages_from_the_cell_snapshot() -> None:
    cells = CellSnapshot(modules=[
        ModuleCells(module=m, fresh=True, cell_v=[3.2 + 0.01 * m] * 16, cell_flags=[0] * 16,
                    balancing=[False] * 16, temp_c=[20.0], temp_flags=[0])
        for m in range(12)
    ])  # fmt: skip
    d = decoded(responses_for(ENSEMBLE, make_pack(), stale=False, config=CONFIG, cells=cells))
    assert close(d[0x4260]["MaxModuleVoltage"], 16 * 3.31, 0.001)
    assert close(d[0x4260]["MinModuleVoltage"], 16 * 3.2, 0.001)
    assert (d[0x4260]["MaxModuleVoltageNumber"], d[0x4260]["MinModuleVoltageNumber"]) == (12, 1)
    # module 1 (the lowest) has an unknown cell: never summed short, and the extremes of the
    # other modules would be a false minimum, so the frame is withheld
    first = cells.modules[0].model_copy(update={"cell_v": [None] + [3.2] * 15})
    partial = cells.model_copy(update={"modules": [first, *cells.modules[1:]]})
    d = decoded(responses_for(ENSEMBLE, make_pack(), stale=False, config=CONFIG, cells=partial))
    assert 0x4260 not in d


@pytest.mark.parametrize("code", [*ProtectionCode, "something_new"])
def test_every_fault_stops_the_inverter(code: str) -> None:
    d = ensemble(make_pack(faults=[code]))
    status = d[0x4250]
    assert any(v for k, v in status.items() if k.startswith("Protect") or k in HV_ERRORS)
    assert d[0x4220]["MaxChargeCurrent"] == 0 and d[0x4220]["MaxDischargeCurrent"] == 0
    assert d[0x4280] == {"ChargeForbidden": FORBIDDEN, "DischargeForbidden": FORBIDDEN}


def test_layout_is_the_dbc_signals_and_holds_the_table_signals() -> None:
    signals = {s.name for s in load_pylon_hv_dbc().get_message_by_frame_id(0x4250).signals}
    status = {"BasicStatus", "ForceChargeRequest", "BalanceChargeRequest", "CyclePeriod"}
    assert {p + f for f in HV_FLAGS for p in ("Alarm", "Protect")} | set(HV_ERRORS) | status == (
        signals
    )
    assert set(PYLON_HV_FLAGS) <= set(HV_FLAGS)
    assert set(PYLON_HV_ERRORS) <= set(HV_ERRORS)


def test_balance_charge_request_carries_the_masters_full_charge_request() -> None:
    """0x4250 byte 0 bit 4, decoded through the DBC: the master's request while charging is
    allowed; the force-charge request never."""
    d = ensemble(make_pack(full_charge_requested=True))
    assert d[0x4250]["BalanceChargeRequest"] == 1 and d[0x4250]["ForceChargeRequest"] == 0
    raw = dict(responses_for(ENSEMBLE, make_pack(full_charge_requested=True), stale=False,
                             config=CONFIG))  # fmt: skip
    assert raw[0x4250][0] & 0x18 == 0x10
    for value in (False, None):
        assert ensemble(make_pack(full_charge_requested=value))[0x4250]["BalanceChargeRequest"] == 0
    held = [
        ensemble(make_pack(full_charge_requested=True, contactors="standby")),
        ensemble(make_pack(full_charge_requested=True, faults=["cell_overvoltage"])),
        ensemble(make_pack(full_charge_requested=True), stale=True),
    ]
    for frames in held:
        assert frames[0x4280]["ChargeForbidden"] == FORBIDDEN
        assert frames[0x4250]["BalanceChargeRequest"] == 0


# --- dispatch -------------------------------------------------------------------------------


def test_request_dispatch() -> None:
    pack = make_pack()
    assert [i for i, _ in responses_for(ENSEMBLE, pack, stale=False, config=CONFIG)] == [
        i for i in ENSEMBLE_IDS if i != 0x4260
    ]
    assert [i for i, _ in responses_for(SYSTEM, pack, stale=False, config=CONFIG)] == list(
        SYSTEM_IDS
    )
    assert responses_for(b"\x01", pack, stale=False, config=CONFIG) == []
    assert responses_for(b"", pack, stale=False, config=CONFIG) == []
    with pytest.raises(ValueError, match="byte_order"):
        responses_for(ENSEMBLE, pack, stale=False, config=CONFIG, byte_order="middle")  # type: ignore[arg-type]


def test_system_info() -> None:
    d = decoded(responses_for(SYSTEM, None, stale=True, config=CONFIG))
    assert d[0x7320] == {
        "TotalCells": 192,
        "ModulesInSeries": 12,
        "CellsPerModule": 16,
        "VoltageLevel": round(CONFIG.nominal_pack_voltage_v),
        "CapacityAh": 100,
    }
    name = bytes(int(v) for v in (*d[0x7330].values(), *d[0x7340].values()))
    assert name == b"High voltage ban"
    assert d[0x7310]["SoftwareVersionMinor"] == 1


def test_commands() -> None:
    assert decode_command(0x8200, b"\x55" + bytes(7)) == InverterCommand(sleep=True)
    assert decode_command(0x8200, b"\xaa" + bytes(7)) == InverterCommand(sleep=False)
    assert decode_command(0x8200, b"\x12") is None
    assert decode_command(0x8210, b"\xaa\x00") == InverterCommand(close_charge_relay=True)
    assert decode_command(0x8210, b"\x00\xaa" + bytes(6)) == InverterCommand(
        close_discharge_relay=True
    )
    # only 0xAA is a command: anything else asks for nothing (item 8: it opened the contactors)
    for data in (bytes(8), b"\x55\x55", b"\x01\xff"):
        assert decode_command(0x8210, data) is None
    assert decode_command(0x4200, ENSEMBLE) is None
    db = load_pylon_hv_dbc()
    assert db.get_message_by_frame_id(0x8200).decode(b"\x55" + bytes(7)) == {"SleepWake": "Sleep"}


# --- options --------------------------------------------------------------------------------


def test_big_endian_swaps_every_word() -> None:
    pack = make_pack(warnings=["cell_undervoltage"], faults=["charge_overcurrent"])
    for request in (ENSEMBLE, SYSTEM):
        le = responses_for(request, pack, stale=False, config=CONFIG)
        be = responses_for(request, pack, stale=False, config=CONFIG, byte_order="big")
        assert [i for i, _ in be] == [i for i, _ in le]
        assert [swap_words(i, d) for i, d in be] == [d for _, d in le]
    be_map = dict(responses_for(ENSEMBLE, pack, stale=False, config=CONFIG, byte_order="big"))
    assert int.from_bytes(be_map[0x4210][0:2], "big") == 6337
    assert int.from_bytes(be_map[0x4210][2:4], "big") == round((-42.3 + 3000) * 10)
    assert int.from_bytes(be_map[0x4250][1:3], "big") == 13
    assert int.from_bytes(be_map[0x4250][4:6], "big") == 1  # AlarmCellLowVoltage, bit 0
    assert int.from_bytes(be_map[0x4250][6:8], "big") == 1 << 8  # ProtectChargeOverCurrent
    assert be_map[0x4210][6:] == bytes([61, 97])  # 8-bit fields unchanged


@pytest.mark.parametrize(
    ("offset", "current", "raw"),
    [
        (3000.0, 0.0, 30000),
        (3000.0, -42.3, 29577),
        (0.0, 0.0, 0),
        (0.0, 12.5, 125),
        (0.0, -42.3, 0x10000 - 423),
        (1000.0, -1000.0, 0),
    ],
)
def test_current_offset(offset: float, current: float, raw: int) -> None:
    pack = make_pack(current=current)
    data = dict(responses_for(ENSEMBLE, pack, stale=False, config=CONFIG, current_offset_a=offset))
    assert int.from_bytes(data[0x4210][2:4], "little") == raw
    limits = data[0x4220]
    assert int.from_bytes(limits[4:6], "little") == round((50.0 + offset) * 10)
    assert int.from_bytes(limits[6:8], "little") == round((offset - 80.0) * 10) & 0xFFFF


def test_a_current_beyond_the_raw_range_is_refused_never_clamped() -> None:
    assert current_value(-3276.8, 0.0) == pytest.approx(0x8000 * 0.1 - 3000)
    for current, offset in ((-5000.0, 0.0), (5000.0, 0.0), (9000.0, 3000.0), (-1000.0, 100.0)):
        with pytest.raises(FrameRangeError):
            current_value(current, offset)
    pack = make_pack(current=-1000.0)
    d = dict(responses_for(ENSEMBLE, pack, stale=False, config=CONFIG, current_offset_a=100.0))
    assert 0x4210 not in d  # withheld: -1000 A does not fit (I + 100) x 10 >= 0
    assert 0x4220 in d  # the limits still go out


@pytest.mark.parametrize(("sign", "raw"), [("negative", 30000 - 800), ("positive", 30000 + 800)])
def test_discharge_limit_sign(sign: str, raw: int) -> None:
    """Item 8: diyBMS sends 30000 - DCL x 10, Battery-Emulator a positive DCL."""
    data = dict(responses_for(ENSEMBLE, make_pack(), stale=False, config=CONFIG,
                              discharge_limit_sign=sign))  # type: ignore[arg-type]  # fmt: skip
    assert int.from_bytes(data[0x4220][6:8], "little") == raw


# --- fail-safe ------------------------------------------------------------------------------


@pytest.mark.parametrize("stale", [True, False])
def test_fail_safe(stale: bool) -> None:
    last = make_pack(warnings=["cell_overvoltage"]) if stale else None
    d = ensemble(last, stale=stale)
    # no measurement frames at all: an inverter must never read SOC 0 % from a stale BMS
    assert list(d) == [i for i in ENSEMBLE_IDS if i not in {0x4210, 0x4230, 0x4240, 0x4260, 0x4270}]
    assert close(d[0x4220]["MaxChargeCurrent"], 0.0, 0.1)
    assert close(d[0x4220]["MaxDischargeCurrent"], 0.0, 0.1)
    assert close(d[0x4220]["ChargeCutoffVoltage"], CONFIG.charge_pack_voltage_v, 0.1)
    assert close(d[0x4220]["DischargeCutoffVoltage"], CONFIG.discharge_pack_voltage_v, 0.1)
    assert d[0x4280] == {"ChargeForbidden": FORBIDDEN, "DischargeForbidden": FORBIDDEN}
    status = d[0x4250]
    assert status["BasicStatus"] == 0
    for name in ("InternalCommError", "OtherError"):
        assert status[name] == 1
    for name in ("SystemLowVoltage", "SystemHighVoltage"):
        assert status["Alarm" + name] == 1 and status["Protect" + name] == 1
    assert status["AlarmCellHighVoltage"] == (1 if stale else 0)


# --- documented samples ---------------------------------------------------------------------


def test_battery_emulator_sample_prefix() -> None:
    """Battery-Emulator's LE sample `A5 09 30 75 ...` = 246.9 V, 0 A (offset 3000 A)."""
    data = dict(responses_for(ENSEMBLE, make_pack(voltage=246.9, current=0.0), stale=False,
                              config=CONFIG))  # fmt: skip
    assert data[0x4210][:4] == bytes.fromhex("A5093075")
    values = (
        load_pylon_hv_dbc()
        .get_message_by_frame_id(0x4210)
        .decode(bytes.fromhex("A5093075") + bytes(4), decode_choices=False)
    )
    assert isinstance(values, dict)
    assert close(values["PileVoltage"], 246.9, 0.1) and close(values["PileCurrent"], 0, 0.1)
