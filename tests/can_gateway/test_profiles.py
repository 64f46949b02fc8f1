"""Frames of the inverter CAN profiles: round trip through the DBC, samples, fail-safe, alarms."""

from __future__ import annotations

import math
from typing import Any

import pytest
from cantools.database.can import Database
from hypothesis import given, settings
from hypothesis import strategies as st

from services.can_gateway.alarms import (
    PYLON_PAIRS,
    UNSUPPORTED_CONDITIONS,
    VICTRON_CONDITIONS,
    pylon_flags,
)
from services.can_gateway.codec import FrameEncodeError, encode, load_dbc
from services.can_gateway.profiles import PROFILES, frames_for, is_keepalive
from shared.config.system import SystemConfig
from shared.messages.pack import CellLocation, Limits, PackState
from shared.protection_codes import PYLON_0X359, VICTRON_0X35A

CONFIG = SystemConfig.from_preset(
    "LFP", system_id="bank1", name="Garage bank one", modules=2, cells_per_module=8,
    cell_capacity_ah=280.0,
)  # fmt: skip


def make_pack(**overrides: Any) -> PackState:
    values: dict[str, Any] = {
        "soc": 55.5,
        "soh": 98.0,
        "voltage": 52.34,
        "current": -27.0,
        "contactors": "closed",
        "mode": "working",
        "cell_v_min": 3.265,
        "cell_v_max": 3.306,
        "cell_v_avg": 3.28,
        "cell_v_min_at": CellLocation(module=0, index=3),
        "temp_min_c": 14.0,
        "temp_max_c": 21.0,
        "temp_avg_c": 17.5,
        "limits": Limits(
            charge_voltage_v=55.2,
            discharge_voltage_v=48.0,
            charge_current_a=50.0,
            discharge_current_a=80.0,
        ),
        "energy_in_wh": 211_200.0,
        "energy_out_wh": 190_000.0,
    }
    values.update(overrides)
    return PackState(**values)


def dec(db: Database, frame_id: int, data: bytes, *, choices: bool = True) -> dict[str, Any]:
    """One frame decoded as a plain dict (a single frame, never a container)."""
    message = db.get_message_by_frame_id(frame_id)
    assert len(data) == message.length
    values = message.decode(data, decode_choices=choices)
    assert isinstance(values, dict)
    return values


def decoded(profile: str, frames: list[tuple[int, bytes]]) -> dict[int, dict[str, Any]]:
    db = load_dbc(profile)
    out: dict[int, dict[str, Any]] = {}
    for frame_id, data in frames:
        out[frame_id] = dec(db, frame_id, data, choices=False)
    return out


def close(actual: Any, expected: float, scale: float) -> bool:
    return math.isclose(float(actual), expected, abs_tol=scale / 2 + 1e-9)


# --- documented sample frames -------------------------------------------------------------


def test_sample_0x351_encodes_and_decodes() -> None:
    db = load_dbc("victron_0x35x")
    values = {
        "ChargeVoltageLimit": 55.2,
        "ChargeCurrentLimit": 50.0,
        "DischargeCurrentLimit": 80.0,
        "DischargeVoltageLimit": 48.0,
    }
    sample = bytes.fromhex("2802F4012003E001")
    assert encode(db, 0x351, values) == (0x351, sample)
    assert dec(db, 0x351, sample) == values


@pytest.mark.parametrize("profile", PROFILES)
def test_sample_pylontech_trace_0x351_and_0x356(profile: str) -> None:
    db = load_dbc(profile)
    assert dec(db, 0x351, bytes.fromhex("1402C012C012C201")) == {
        "ChargeVoltageLimit": 53.2,
        "ChargeCurrentLimit": 480.0,
        "DischargeCurrentLimit": 480.0,
        "DischargeVoltageLimit": 45.0,
    }
    assert dec(db, 0x356, bytes.fromhex("7A13F2FE6B01")) == pytest.approx(
        {"BatteryVoltage": 49.86, "BatteryCurrent": -27.0, "BatteryTemperature": 36.3}
    )


def test_sample_pylon_v12_frames() -> None:
    db = load_dbc("pylon_v12")
    flags = dec(db, 0x359, bytes.fromhex("0000000006504E"))
    assert flags["ModuleCount"] == 6
    assert (flags["MarkerP"], flags["MarkerN"]) == (ord("P"), ord("N"))
    assert all(v == 0 for k, v in flags.items() if k.startswith(("Protect", "Alarm")))
    request = dec(db, 0x35C, bytes.fromhex("C000"))
    assert request["ChargeEnable"] == 1 and request["DischargeEnable"] == 1
    assert request["ForceChargeRequest1"] == 0
    name = dec(db, 0x35E, b"PYLON   ")
    assert bytes(int(name[f"Char{i}"]) for i in range(8)) == b"PYLON   "
    soc = dec(db, 0x355, bytes.fromhex("50006300"))
    assert soc == {"StateOfCharge": 80, "StateOfHealth": 99}


def test_sample_victron_frames() -> None:
    db = load_dbc("victron_0x35x")
    all_ok = dec(db, 0x35A, bytes.fromhex("AA" * 8))
    assert {str(v) for v in all_ok.values()} == {"OK"}
    low_v = dec(db, 0x35A, bytes.fromhex("9A" + "AA" * 7))
    assert [k for k, v in low_v.items() if v == "Active"] == ["AlarmLowVoltage"]
    extremes = dec(db, 0x373, bytes.fromhex("EA0CEA0C1F011F01"))
    assert extremes["MinCellVoltage"] == pytest.approx(3.306)
    assert extremes["MinCellTemperature"] == 287
    assert dec(db, 0x378, bytes.fromhex("4008000000000000"))["ChargedEnergy"] == pytest.approx(
        211.2
    )
    assert dec(db, 0x379, bytes.fromhex("9C00")) == {"InstalledCapacity": 156}
    info = dec(db, 0x35F, bytes.fromhex("4C69011769000000"))
    assert info["BatteryType"].to_bytes(2, "little") == b"Li"
    assert info["CapacityAh"] == 105


# --- round trip -----------------------------------------------------------------------------


@st.composite
def lv_pack(draw: st.DrawFn) -> PackState:
    v_min = draw(st.floats(2.0, 3.6))
    v_max = draw(st.floats(v_min, 3.65))
    t_min = draw(st.floats(-20, 60))
    t_max = draw(st.floats(t_min, 60))
    return make_pack(
        soc=draw(st.floats(0, 100)),
        soh=draw(st.floats(0, 100)),
        voltage=draw(st.floats(0, 327.6)),
        current=draw(st.floats(-1000, 1000)),
        cell_v_min=v_min,
        cell_v_max=v_max,
        cell_v_avg=v_min,
        temp_min_c=t_min,
        temp_max_c=t_max,
        temp_avg_c=draw(st.floats(t_min, t_max)),
        limits=Limits(
            charge_voltage_v=draw(st.floats(40, 600)),
            discharge_voltage_v=draw(st.floats(0, 600)),
            charge_current_a=draw(st.floats(0, 1000)),
            discharge_current_a=draw(st.floats(0, 1000)),
        ),
        energy_in_wh=draw(st.floats(0, 1e9)),
        energy_out_wh=draw(st.floats(0, 1e9)),
    )


@pytest.mark.parametrize("profile", PROFILES)
@settings(max_examples=60, deadline=None)
@given(pack=lv_pack())
def test_frames_decode_back_to_pack_values(profile: str, pack: PackState) -> None:
    d = decoded(profile, frames_for(profile, pack, stale=False, config=CONFIG))
    lim = pack.limits
    assert close(d[0x351]["ChargeVoltageLimit"], lim.charge_voltage_v, 0.1)
    assert close(d[0x351]["ChargeCurrentLimit"], lim.charge_current_a, 0.1)
    assert close(d[0x351]["DischargeCurrentLimit"], lim.discharge_current_a, 0.1)
    assert close(d[0x351]["DischargeVoltageLimit"], lim.discharge_voltage_v, 0.1)
    assert close(d[0x355]["StateOfCharge"], pack.soc, 1.0)
    assert close(d[0x355]["StateOfHealth"], pack.soh, 1.0)
    assert close(d[0x356]["BatteryVoltage"], pack.voltage, 0.01)
    assert close(d[0x356]["BatteryCurrent"], pack.current, 0.1)
    assert pack.temp_avg_c is not None
    assert close(d[0x356]["BatteryTemperature"], pack.temp_avg_c, 0.1)
    if profile == "victron_0x35x":
        assert close(d[0x355]["StateOfChargeHiRes"], pack.soc, 0.01)
        assert set(d[0x35A].values()) <= {1, 2, 0}
        assert close(d[0x373]["MinCellVoltage"], pack.cell_v_min, 0.001)
        assert close(d[0x373]["MaxCellVoltage"], pack.cell_v_max, 0.001)
        assert pack.temp_min_c is not None and pack.temp_max_c is not None
        assert close(d[0x373]["MinCellTemperature"], pack.temp_min_c + 273.15, 1.0)
        assert close(d[0x373]["MaxCellTemperature"], pack.temp_max_c + 273.15, 1.0)
        assert close(d[0x378]["ChargedEnergy"], pack.energy_in_wh / 1000, 0.1)
        assert close(d[0x378]["DischargedEnergy"], pack.energy_out_wh / 1000, 0.1)
    else:
        assert d[0x35C]["ChargeEnable"] == int(d[0x351]["ChargeCurrentLimit"] > 0)
        assert d[0x35C]["DischargeEnable"] == int(d[0x351]["DischargeCurrentLimit"] > 0)


def test_victron_frame_set_and_static_frames() -> None:
    frames = frames_for("victron_0x35x", make_pack(), stale=False, config=CONFIG)
    assert [f for f, _ in frames] == [
        0x351, 0x355, 0x356, 0x35A, 0x35E, 0x35F, 0x370, 0x371, 0x372, 0x373, 0x378, 0x379,
    ]  # fmt: skip
    data = dict(frames)
    assert data[0x370] + data[0x371] == b"Garage bank one\0"
    assert data[0x35F][:2] == b"Li"
    assert data[0x379] == (280).to_bytes(2, "little")
    # byte 2 bits 4-5 (short circuit) = 0: not supported; byte 3 bits 0-1 = imbalance OK
    assert data[0x35A] == bytes.fromhex("AAAA8A02AAAA8A02")
    assert data[0x372] == bytes.fromhex("0200000000000000")


def test_pylon_frame_set() -> None:
    frames = frames_for("pylon_v12", make_pack(), stale=False, config=CONFIG)
    assert [f for f, _ in frames] == [0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E]
    data = dict(frames)
    assert len(data[0x355]) == 4
    assert data[0x359] == bytes.fromhex("0000000004504E")
    assert data[0x35C] == bytes.fromhex("C000")
    assert data[0x35E] == b"PYLON   "


def test_a_value_beyond_its_frame_is_withheld_never_clamped() -> None:
    """Item 9: 600 V was sent to the inverter as 327.67 V."""
    pack = make_pack(voltage=600.0, current=-1000.0)
    sent = frames_for("victron_0x35x", pack, stale=False, config=CONFIG)
    d = decoded("victron_0x35x", sent)
    assert 0x356 not in d  # withheld: the inverter sees no voltage rather than a false one
    assert d[0x351]["ChargeCurrentLimit"] == pytest.approx(50.0)  # the other frames go out


@pytest.mark.parametrize("profile", PROFILES)
def test_start_up_sends_no_invented_measurement(profile: str) -> None:
    """Item 5: before the estimator and every module have reported, nothing is sent as 0."""
    unknown = make_pack(soc=None, soh=None, voltage=None, current=None, cell_v_min=None,
                        cell_v_max=None, cell_v_avg=None, temp_min_c=None, temp_max_c=None,
                        temp_avg_c=None, energy_in_wh=None, energy_out_wh=None)  # fmt: skip
    d = decoded(profile, frames_for(profile, unknown, stale=False, config=CONFIG))
    assert not {0x355, 0x356, 0x373, 0x378} & set(d)  # no SOC 0 %, no 0 V
    assert d[0x351]["ChargeCurrentLimit"] == d[0x351]["DischargeCurrentLimit"] == 0
    soc_only = make_pack(voltage=None)
    d = decoded(profile, frames_for(profile, soc_only, stale=False, config=CONFIG))
    assert 0x355 in d and 0x356 not in d  # each frame as soon as its own values are known
    assert d[0x351]["ChargeCurrentLimit"] == 0  # the pack itself is still unknown


def test_unknown_temperature_is_sent_as_invalid() -> None:
    pack = make_pack(temp_min_c=None, temp_max_c=None, temp_avg_c=None)
    data = dict(frames_for("victron_0x35x", pack, stale=False, config=CONFIG))
    assert data[0x356][4:6] == b"\x00\x80"
    assert data[0x373][4:8] == b"\xff\xff\xff\xff"


@pytest.mark.parametrize("contactors", ["standby", "precharge", "opening", "fault"])
def test_current_limits_zero_unless_contactors_closed(contactors: str) -> None:
    pack = make_pack(contactors=contactors)
    d = decoded("pylon_v12", frames_for("pylon_v12", pack, stale=False, config=CONFIG))
    assert d[0x351]["ChargeCurrentLimit"] == d[0x351]["DischargeCurrentLimit"] == 0
    assert d[0x35C]["ChargeEnable"] == d[0x35C]["DischargeEnable"] == 0


def test_cvl_zero_is_never_sent() -> None:
    pack = make_pack(limits=Limits(
        charge_voltage_v=0.0, discharge_voltage_v=0.0, charge_current_a=0.0,
        discharge_current_a=0.0,
    ))  # fmt: skip
    d = decoded("victron_0x35x", frames_for("victron_0x35x", pack, stale=False, config=CONFIG))
    assert d[0x351]["ChargeVoltageLimit"] == pytest.approx(CONFIG.charge_pack_voltage_v, abs=0.05)


def test_pylon_full_charge_request_bit_carries_the_masters_request() -> None:
    """0x35C byte 0 bit 3, decoded through the DBC: set while the master asks and charging is
    enabled; the force charge requests never."""
    asked = dict(frames_for("pylon_v12", make_pack(full_charge_requested=True), stale=False,
                            config=CONFIG))  # fmt: skip
    assert asked[0x35C] == bytes.fromhex("C800")  # charge + discharge enable + full charge
    d = decoded("pylon_v12", list(asked.items()))[0x35C]
    assert d["FullChargeRequest"] == 1 and d["ChargeEnable"] == 1
    assert d["ForceChargeRequest1"] == d["ForceChargeRequest2"] == 0
    for value in (False, None):
        pack = make_pack(full_charge_requested=value)
        d = decoded("pylon_v12", frames_for("pylon_v12", pack, stale=False, config=CONFIG))[0x35C]
        assert d["FullChargeRequest"] == 0


@pytest.mark.parametrize(
    "overrides",
    [
        {"contactors": "standby"},
        {"faults": ["cell_overvoltage"]},
        {"limits": Limits(charge_voltage_v=55.2, discharge_voltage_v=48.0,
                          charge_current_a=0.0, discharge_current_a=80.0)},
        {"cell_v_min": None},  # not known: fail-safe
    ],
    ids=["open", "fault", "no_charge", "unknown"],
)  # fmt: skip
def test_pylon_full_charge_request_only_while_charging_is_enabled(
    overrides: dict[str, Any],
) -> None:
    pack = make_pack(full_charge_requested=True, **overrides)
    d = decoded("pylon_v12", frames_for("pylon_v12", pack, stale=False, config=CONFIG))[0x35C]
    assert d["ChargeEnable"] == 0 and d["FullChargeRequest"] == 0


def test_pylon_full_charge_request_not_sent_from_a_stale_pack() -> None:
    pack = make_pack(full_charge_requested=True)
    data = dict(frames_for("pylon_v12", pack, stale=True, config=CONFIG))
    assert data[0x35C] == bytes(2)


def test_victron_has_no_request_bit_and_its_frames_do_not_change() -> None:
    asked = frames_for("victron_0x35x", make_pack(full_charge_requested=True), stale=False,
                       config=CONFIG)  # fmt: skip
    plain = frames_for("victron_0x35x", make_pack(), stale=False, config=CONFIG)
    assert asked == plain


# --- fail-safe ------------------------------------------------------------------------------


@pytest.mark.parametrize("pack", [None, make_pack()], ids=["no_pack", "stale_pack"])
def test_victron_fail_safe(pack: PackState | None) -> None:
    frames = frames_for("victron_0x35x", pack, stale=True, config=CONFIG)
    ids = [f for f, _ in frames]
    assert ids == [0x351, 0x35A, 0x35E, 0x35F, 0x370, 0x371, 0x372, 0x379]
    d = decoded("victron_0x35x", frames)
    assert d[0x351]["ChargeCurrentLimit"] == 0 and d[0x351]["DischargeCurrentLimit"] == 0
    assert d[0x351]["ChargeVoltageLimit"] == pytest.approx(CONFIG.charge_pack_voltage_v, abs=0.05)
    assert d[0x351]["DischargeVoltageLimit"] == pytest.approx(
        CONFIG.discharge_pack_voltage_v, abs=0.05
    )
    active = {k for k, v in d[0x35A].items() if v == 1}
    assert active == {"AlarmGeneral", "AlarmBmsInternal"}
    assert d[0x372] == {
        "ModulesOnline": 0,
        "ModulesBlockingCharge": 2,
        "ModulesBlockingDischarge": 2,
        "ModulesOffline": 2,
    }


@pytest.mark.parametrize("pack", [None, make_pack()], ids=["no_pack", "stale_pack"])
def test_pylon_fail_safe(pack: PackState | None) -> None:
    frames = frames_for("pylon_v12", pack, stale=True, config=CONFIG)
    assert [f for f, _ in frames] == [0x351, 0x359, 0x35C, 0x35E]
    data = dict(frames)
    assert data[0x351][2:6] == bytes(4)
    assert data[0x359][:4] == bytes.fromhex("00080008")
    assert data[0x35C] == bytes(2)


def test_stale_pack_codes_are_kept_in_fail_safe() -> None:
    pack = make_pack(faults=["cell_overvoltage"], warnings=["cell_imbalance"])
    d = decoded("victron_0x35x", frames_for("victron_0x35x", pack, stale=True, config=CONFIG))
    active = {k for k, v in d[0x35A].items() if v == 1}
    assert active == {
        "AlarmGeneral",
        "AlarmBmsInternal",
        "AlarmHighVoltage",
        "WarnGeneral",
        "WarnCellImbalance",
    }


# --- alarm mapping --------------------------------------------------------------------------


def test_layouts_are_the_dbc_signals_and_hold_the_table_signals() -> None:
    conditions = {*VICTRON_CONDITIONS, *UNSUPPORTED_CONDITIONS}
    signals = {s.name for s in load_dbc("victron_0x35x").get_message_by_frame_id(0x35A).signals}
    assert {p + c for p in ("Alarm", "Warn") for c in conditions} == signals
    assert set(VICTRON_0X35A) <= set(VICTRON_CONDITIONS)
    flags = {s.name for s in load_dbc("pylon_v12").get_message_by_frame_id(0x359).signals}
    layout = {f for pair in PYLON_PAIRS for f in pair}
    assert layout == flags - {"ModuleCount", "MarkerP", "MarkerN"}
    assert set(PYLON_0X359) <= set(PYLON_PAIRS)


@pytest.mark.parametrize(
    ("level", "code", "expected"),
    [
        ("faults", "cell_overvoltage", "AlarmHighVoltage"),
        ("faults", "deep_discharge", "AlarmLowVoltage"),
        ("faults", "contactor_feedback_mismatch", "AlarmContactor"),
        ("faults", "communication_loss", "AlarmBmsInternal"),
        ("alarms", "cell_overtemp_charge", "WarnHighTempCharge"),
        ("alarms", "discharge_overcurrent", "WarnHighDischargeCurrent"),
        ("warnings", "cell_undertemp_discharge", "WarnLowTemp"),
        ("warnings", "cell_imbalance", "WarnCellImbalance"),
    ],
)
def test_0x35a_pairs(level: str, code: str, expected: str) -> None:
    pack = make_pack(**{level: [code]})
    d = decoded("victron_0x35x", frames_for("victron_0x35x", pack, stale=False, config=CONFIG))
    general = "AlarmGeneral" if level == "faults" else "WarnGeneral"
    assert {k for k, v in d[0x35A].items() if v == 1} == {general, expected}
    unsupported = {p + c for p in ("Alarm", "Warn") for c in UNSUPPORTED_CONDITIONS}
    assert all(v == 2 for k, v in d[0x35A].items() if k not in unsupported | {general, expected})
    assert all(d[0x35A][k] == 0 for k in unsupported)


def test_unknown_fault_code_sets_general_alarm_only() -> None:
    pack = make_pack(faults=["something_new"])
    d = decoded("victron_0x35x", frames_for("victron_0x35x", pack, stale=False, config=CONFIG))
    assert {k for k, v in d[0x35A].items() if v == 1} == {"AlarmGeneral"}
    assert d[0x351]["ChargeCurrentLimit"] == 0 and d[0x351]["DischargeCurrentLimit"] == 0


def test_pylon_flags() -> None:
    flags = pylon_flags(["charge_overcurrent"], ["cell_undervoltage"])
    assert {k for k, v in flags.items() if v} == {"ProtectChargeOverCurrent", "AlarmLowVoltage"}
    flags = pylon_flags(["contactor_feedback_mismatch"], ["cell_imbalance"])
    assert {k for k, v in flags.items() if v} == {"ProtectSystemError"}
    pack = make_pack(faults=["cell_overtemp_discharge"], alarms=["discharge_overcurrent"])
    data = dict(frames_for("pylon_v12", pack, stale=False, config=CONFIG))
    assert data[0x359][:4] == bytes.fromhex("08008000")


# --- keep-alive, errors ---------------------------------------------------------------------


def test_keepalive_frames() -> None:
    assert is_keepalive(0x305, bytes(8))
    assert is_keepalive(0x305, bytes.fromhex("1402F2FE6B013700"))
    assert is_keepalive(0x307, bytes.fromhex("1234567856494300"))
    assert not is_keepalive(0x306, bytes(8))
    assert not is_keepalive(0x351, bytes(8))
    assert not is_keepalive(0x305, bytes(12))


def test_unknown_profile_and_bad_values_raise() -> None:
    with pytest.raises(ValueError, match="pylon_hv"):
        frames_for("pylon_hv", make_pack(), stale=False, config=CONFIG)
    db = load_dbc("victron_0x35x")
    with pytest.raises(FrameEncodeError, match=r"0x355.*missing signals \['StateOfHealth'"):
        encode(db, 0x355, {"StateOfCharge": 50, "StateOfChargeHiRes": 50})
    with pytest.raises(FrameEncodeError, match="NaN"):
        encode(db, 0x379, {"InstalledCapacity": math.nan})
    with pytest.raises(FrameEncodeError, match="unknown signals"):
        encode(db, 0x379, {"InstalledCapacity": 1, "Bogus": 2})
