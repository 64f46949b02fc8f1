"""Native BMS CAN profile: round trips through its DBC, multiplexed cells, commands, fail-safe."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.can_gateway.native import (
    ACK_ID,
    CELL_GROUPS,
    CELL_TEMPERATURES_ID,
    CELL_VOLTAGE_EXTREMES_ID,
    CELL_VOLTAGES_ID,
    COMMAND_ID,
    FAULTS_ALARMS_ID,
    LIMITS_ID,
    SOC_QUALITY_ID,
    STATUS_ID,
    TEMP_GROUPS,
    TEMPERATURE_EXTREMES_ID,
    WARNINGS_ID,
    AckReason,
    NativeCommand,
    NativeCommandError,
    ack_frame,
    cell_batch,
    cell_frames,
    decode_command,
    load_native_dbc,
    pack_frames,
)
from shared.messages.commands import COMMAND_ARGS
from shared.messages.pack import CellLocation, CellSnapshot, Limits, ModuleCells, PackState
from shared.messages.slave import ChannelFlag
from shared.protection_codes import CODE_TABLE, OTHER_CODE_BIT, ProtectionCode
from shared.protection_codes import bits_codes as decode_bits

ALL_CODES = [c.value for c in ProtectionCode]


def bits_codes(bits: int) -> list[str]:
    """A decoded bit field's code names, "other" last (the reader's view)."""
    return decode_bits(bits).names()


def make_pack(**overrides: Any) -> PackState:
    values: dict[str, Any] = {
        "soc": 55.5,
        "soh": 98.0,
        "voltage": 652.3,
        "current": -27.4,
        "contactors": "closed",
        "mode": "working",
        "cell_v_min": 3.265,
        "cell_v_max": 3.306,
        "cell_v_avg": 3.28,
        "cell_v_min_at": CellLocation(module=0, index=3),
        "cell_v_max_at": CellLocation(module=11, index=15),
        "temp_min_c": 14.2,
        "temp_max_c": 21.7,
        "temp_max_at": CellLocation(module=2, index=1),
        "limits": Limits(
            charge_voltage_v=700.0,
            discharge_voltage_v=560.0,
            charge_current_a=50.5,
            discharge_current_a=80.0,
        ),
    }
    values.update(overrides)
    return PackState(**values)


def decoded(frames: list[tuple[int, bytes]]) -> dict[int, dict[str, Any]]:
    db = load_native_dbc()
    out: dict[int, dict[str, Any]] = {}
    for frame_id, data in frames:
        message = db.get_message_by_frame_id(frame_id)
        assert len(data) == message.length
        out[frame_id] = dict(message.decode(data, decode_choices=False))  # type: ignore[arg-type]
    return out


def test_ids_are_standard_and_in_the_native_range() -> None:
    for message in load_native_dbc().messages:
        assert not message.is_extended_frame
        assert 0x600 <= message.frame_id <= 0x6FF
        assert message.length <= 8


def test_the_dbc_comment_lists_every_code_at_its_table_bit() -> None:
    comment = load_native_dbc().get_message_by_frame_id(FAULTS_ALARMS_ID).comment
    assert comment is not None
    listed = re.findall(r"bit (\d+) ([a-z_]+)", comment)
    table = [(str(s.bit), s.code.value) for s in sorted(CODE_TABLE, key=lambda s: s.bit)]
    assert listed == [*table, (str(OTHER_CODE_BIT), "any")]


@pytest.mark.parametrize("level", ["faults", "alarms", "warnings"])
def test_insulation_low_has_its_own_bit_19(level: str) -> None:
    # Before the gateway read the shared table, insulation_low went out as "other" (bit 31).
    field = {"faults": "FaultBits", "alarms": "AlarmBits", "warnings": "WarningBits"}[level]
    frame_id = WARNINGS_ID if level == "warnings" else FAULTS_ALARMS_ID
    frames = decoded(pack_frames(make_pack(**{level: ["insulation_low", "x"]}), stale=False))
    assert frames[frame_id][field] == 1 << 19 | 1 << OTHER_CODE_BIT
    assert bits_codes(frames[frame_id][field]) == ["insulation_low", "other"]


def test_pack_frames_sample() -> None:
    frames = decoded(pack_frames(make_pack(), stale=False))
    assert sorted(frames) == list(range(0x600, 0x607))
    status = frames[STATUS_ID]
    assert status["PackVoltage"] == pytest.approx(652.3)
    assert status["PackCurrent"] == pytest.approx(-27.4)
    assert (status["ContactorState"], status["Mode"], status["DataStale"]) == (2, 1, 0)
    assert frames[LIMITS_ID]["ChargeCurrentLimit"] == pytest.approx(50.5)
    extremes = frames[0x602]
    assert (extremes["CellVoltageMin"], extremes["CellVoltageMax"]) == (3265, 3306)
    assert (extremes["CellVoltageMaxModule"], extremes["CellVoltageMaxIndex"]) == (11, 15)
    temps = frames[0x603]
    assert temps["TemperatureMin"] == pytest.approx(14.2)
    assert (temps["TemperatureMinModule"], temps["TemperatureMinIndex"]) == (255, 255)
    assert (temps["TemperatureMaxModule"], temps["TemperatureMaxIndex"]) == (2, 1)


def test_unknown_temperatures_and_current_gating() -> None:
    pack = make_pack(temp_min_c=None, temp_max_c=None, faults=["cell_overvoltage"])
    frames = decoded(pack_frames(pack, stale=False))
    assert TEMPERATURE_EXTREMES_ID not in frames  # no temperature known: nothing to say
    one = decoded(pack_frames(make_pack(temp_min_c=None, temp_max_c=30.0), stale=False))
    raw = raw_values(pack_frames(make_pack(temp_min_c=None, temp_max_c=30.0), stale=False))
    assert raw[TEMPERATURE_EXTREMES_ID]["TemperatureMin"] == -32768  # the DBC's not available
    assert one[TEMPERATURE_EXTREMES_ID]["TemperatureMax"] == pytest.approx(30.0)
    assert frames[LIMITS_ID]["ChargeCurrentLimit"] == 0
    assert frames[LIMITS_ID]["DischargeCurrentLimit"] == 0
    assert frames[LIMITS_ID]["ChargeVoltageLimit"] == pytest.approx(700.0)
    assert bits_codes(frames[FAULTS_ALARMS_ID]["FaultBits"]) == ["cell_overvoltage"]
    standby = decoded(pack_frames(make_pack(contactors="standby"), stale=False))
    assert standby[LIMITS_ID]["DischargeCurrentLimit"] == 0


def raw_values(frames: list[tuple[int, bytes]]) -> dict[int, dict[str, Any]]:
    db = load_native_dbc()
    out: dict[int, dict[str, Any]] = {}
    for frame_id, data in frames:
        values = db.decode_message(frame_id, data, decode_choices=False, scaling=False)
        assert isinstance(values, dict)
        out[frame_id] = values
    return out


def test_unknown_pack_values_are_not_available_and_limits_fail_safe() -> None:
    """Start-up: SOC, SOH, voltage and cell extremes unknown: never sent as 0."""
    pack = make_pack(soc=None, soh=None, voltage=None, cell_v_min=None, cell_v_max=None,
                     cell_v_avg=None)  # fmt: skip
    sent = pack_frames(pack, stale=False, voltage_limits_v=(410.0, 300.0))
    raw = raw_values(sent)
    assert raw[STATUS_ID]["PackVoltage"] == 0xFFFF
    assert raw[STATUS_ID]["StateOfCharge"] == raw[STATUS_ID]["StateOfHealth"] == 1023
    assert raw[STATUS_ID]["DataStale"] == 0
    assert CELL_VOLTAGE_EXTREMES_ID not in raw
    limits = decoded(sent)[LIMITS_ID]
    assert limits["ChargeCurrentLimit"] == limits["DischargeCurrentLimit"] == 0
    assert (limits["ChargeVoltageLimit"], limits["DischargeVoltageLimit"]) == (410.0, 300.0)


codes = st.lists(st.sampled_from(ALL_CODES), unique=True, max_size=len(ALL_CODES))


@settings(max_examples=150, deadline=None)
@given(
    voltage=st.floats(0.0, 1200.0),
    current=st.floats(-1000.0, 1000.0),
    soc=st.floats(0.0, 100.0),
    soh=st.floats(0.0, 100.0),
    contactors=st.sampled_from(["standby", "precharge", "closed", "opening", "fault"]),
    mode=st.sampled_from(["standby", "working"]),
    cell_v=st.tuples(st.floats(0.0, 6.0), st.floats(0.0, 6.0)),
    temps=st.tuples(st.floats(-60.0, 200.0), st.floats(-60.0, 200.0)),
    limits=st.tuples(*[st.floats(0.0, 1000.0)] * 4),
    faults=codes,
    alarms=codes,
    warnings=codes,
)
def test_pack_frames_round_trip(
    voltage: float,
    current: float,
    soc: float,
    soh: float,
    contactors: str,
    mode: str,
    cell_v: tuple[float, float],
    temps: tuple[float, float],
    limits: tuple[float, float, float, float],
    faults: list[str],
    alarms: list[str],
    warnings: list[str],
) -> None:
    pack = make_pack(
        voltage=voltage, current=current, soc=soc, soh=soh, contactors=contactors, mode=mode,
        cell_v_min=min(cell_v), cell_v_max=max(cell_v), temp_min_c=min(temps),
        temp_max_c=max(temps), faults=faults, alarms=alarms, warnings=warnings,
        limits=Limits(
            charge_voltage_v=limits[0], discharge_voltage_v=limits[1],
            charge_current_a=limits[2], discharge_current_a=limits[3],
        ),
    )  # fmt: skip
    frames = decoded(pack_frames(pack, stale=False))
    status = frames[STATUS_ID]
    assert status["PackVoltage"] == pytest.approx(voltage, abs=0.05 + 1e-9)
    assert status["PackCurrent"] == pytest.approx(current, abs=0.05 + 1e-9)
    assert status["StateOfCharge"] == pytest.approx(soc, abs=0.05 + 1e-9)
    assert status["StateOfHealth"] == pytest.approx(soh, abs=0.05 + 1e-9)
    db = load_native_dbc()
    choices = db.get_message_by_frame_id(STATUS_ID).get_signal_by_name("ContactorState").choices
    assert choices is not None
    assert str(choices[status["ContactorState"]]).lower() == contactors
    assert status["Mode"] == (1 if mode == "working" else 0)
    allowed = contactors == "closed" and not faults
    lim = frames[LIMITS_ID]
    assert lim["ChargeVoltageLimit"] == pytest.approx(limits[0], abs=0.05 + 1e-9)
    assert lim["DischargeVoltageLimit"] == pytest.approx(limits[1], abs=0.05 + 1e-9)
    assert lim["ChargeCurrentLimit"] == pytest.approx(limits[2] if allowed else 0, abs=0.05 + 1e-9)
    assert lim["DischargeCurrentLimit"] == pytest.approx(
        limits[3] if allowed else 0, abs=0.05 + 1e-9
    )
    assert abs(frames[0x602]["CellVoltageMin"] - min(cell_v) * 1000) <= 0.5 + 1e-9
    assert abs(frames[0x602]["CellVoltageMax"] - max(cell_v) * 1000) <= 0.5 + 1e-9
    assert frames[0x603]["TemperatureMax"] == pytest.approx(max(temps), abs=0.05 + 1e-9)
    assert set(bits_codes(frames[FAULTS_ALARMS_ID]["FaultBits"])) == set(faults)
    assert set(bits_codes(frames[FAULTS_ALARMS_ID]["AlarmBits"])) == set(alarms)
    assert set(bits_codes(frames[0x605]["WarningBits"])) == set(warnings)


@pytest.mark.parametrize(("requested", "raw"), [(True, 1), (False, 0), (None, 3)])
def test_full_charge_request_in_pack_status(requested: bool | None, raw: int) -> None:
    """0x600 bits 58-59, decoded through the DBC: the master's request; 3 = not available."""
    sent = pack_frames(make_pack(full_charge_requested=requested), stale=False)
    assert raw_values(sent)[STATUS_ID]["FullChargeRequest"] == raw
    assert (dict(sent)[STATUS_ID][7] >> 2) & 0b11 == raw
    stale = pack_frames(make_pack(full_charge_requested=requested), stale=True)
    assert raw_values(stale)[STATUS_ID]["FullChargeRequest"] == 3


@pytest.mark.parametrize(
    ("std", "since_s", "offset_a"), [(2.4, 93_600.4, -0.037), (None, None, None), (0.0, 0.0, 0.0)]
)
def test_soc_quality_frame(
    std: float | None, since_s: float | None, offset_a: float | None
) -> None:
    """0x606 through the DBC: the SOC's sigma, the time since its anchor and the learned zero
    offset; unknown is each signal's not-available raw value, never 0."""
    pack = make_pack(soc_std=std, since_anchor_s=since_s, current_zero_offset_a=offset_a)
    sent = pack_frames(pack, stale=False)
    raw = raw_values(sent)[SOC_QUALITY_ID]
    got = decoded(sent)[SOC_QUALITY_ID]
    if std is None:
        assert raw == {"SocStd": 0xFFFF, "SinceAnchor": 0xFFFFFFFF, "CurrentZeroOffset": -32768}
        return
    assert got["SocStd"] == pytest.approx(std)
    assert got["SinceAnchor"] == round(since_s or 0.0)
    assert got["CurrentZeroOffset"] == pytest.approx(offset_a)


@pytest.mark.parametrize("last", [None, "pack"])
def test_fail_safe(last: str | None) -> None:
    pack = make_pack(faults=["cell_imbalance"], warnings=["charge_overcurrent"])
    sent = pack_frames(pack if last else None, stale=True, voltage_limits_v=(410.0, 300.0))
    frames = decoded(sent)
    assert sorted(frames) == [STATUS_ID, LIMITS_ID, FAULTS_ALARMS_ID, 0x605, SOC_QUALITY_ID]
    assert raw_values(sent)[SOC_QUALITY_ID] == {
        "SocStd": 0xFFFF,
        "SinceAnchor": 0xFFFFFFFF,
        "CurrentZeroOffset": -32768,
    }
    status = raw_values(sent)[STATUS_ID]
    assert status["DataStale"] == 1
    assert (status["ContactorState"], status["Mode"]) == (7, 3)
    # not available, never 0 (and never a SOC of 0 % before the first pack state)
    assert (status["PackVoltage"], status["PackCurrent"]) == (0xFFFF, -32768)
    assert status["StateOfCharge"] == 1023
    limits = frames[LIMITS_ID]
    assert limits["ChargeCurrentLimit"] == limits["DischargeCurrentLimit"] == 0
    assert (limits["ChargeVoltageLimit"], limits["DischargeVoltageLimit"]) == (410.0, 300.0)
    faults = bits_codes(frames[FAULTS_ALARMS_ID]["FaultBits"])
    assert "communication_loss" in faults
    if last:
        assert "cell_imbalance" in faults
        assert bits_codes(frames[0x605]["WarningBits"]) == ["charge_overcurrent"]
    else:
        assert pack_frames(None, stale=False, voltage_limits_v=(410.0, 300.0)) == sent


def snapshot(
    cells_per_module: list[int],
    temps_per_module: int,
    *,
    cell_v: Any = None,
    temp_c: Any = None,
    temp_flags: dict[int, int] | None = None,
) -> CellSnapshot:
    """A positional snapshot; `cell_v(k)` / `temp_c(k)` give the k-th reading of the string."""
    cell_v = cell_v or (lambda k: round(2.5 + k * 0.005, 3))
    temp_c = temp_c or (lambda k: None if k % 11 == 5 else round(-60.0 + (k * 0.33) % 254, 2))
    flags = temp_flags or {}
    modules, k, t = [], 0, 0
    for m, n in enumerate(cells_per_module):
        volts = [cell_v(k + i) for i in range(n)]
        temps = [None if t + i in flags else temp_c(t + i) for i in range(temps_per_module)]
        modules.append(
            ModuleCells(
                module=m, fresh=True, cell_v=volts, cell_flags=[0] * n, balancing=[False] * n,
                temp_c=temps, temp_flags=[flags.get(t + i, 0) for i in range(temps_per_module)],
            )
        )  # fmt: skip
        k, t = k + n, t + temps_per_module
    return CellSnapshot(modules=modules)


def cells_back(frames: list[tuple[int, bytes]]) -> tuple[dict[int, int], dict[int, float]]:
    db = load_native_dbc()
    volts: dict[int, int] = {}
    temps: dict[int, float] = {}
    groups: dict[int, list[int]] = {CELL_VOLTAGES_ID: [], CELL_TEMPERATURES_ID: []}
    for frame_id, data in frames:
        assert len(data) == 8
        values = db.decode_message(frame_id, data, decode_choices=False)
        assert isinstance(values, dict)
        for name, value in values.items():
            if match := re.fullmatch(r"CellVoltage(\d{3})", name):
                volts[int(match[1])] = int(value)  # type: ignore[arg-type]
            elif match := re.fullmatch(r"CellTemperature(\d{3})", name):
                temps[int(match[1])] = float(value)  # type: ignore[arg-type]
            else:
                groups[frame_id].append(int(value))  # type: ignore[arg-type]
    assert groups[CELL_VOLTAGES_ID] == list(range(CELL_GROUPS))
    assert groups[CELL_TEMPERATURES_ID] == list(range(TEMP_GROUPS))
    return volts, temps


def test_all_196_cells_and_784_temperatures_round_trip() -> None:
    cells = snapshot([14] * 14, 56)
    volts, temps = cells_back(cell_frames(cells))
    assert [volts[p.series_index + 1] for p in cells.cells()] == [
        round(p.voltage_v * 1000) for p in cells.cells() if p.voltage_v is not None
    ]
    assert volts[197] == volts[198] == 65535
    for point in cells.temperatures():
        n = point.sensor_index + 1
        if point.temp_c is None:
            assert temps[n] == 195  # raw 255: not available
        else:
            assert abs(temps[n] - point.temp_c) <= 0.5 + 1e-9


def test_short_snapshot_marks_missing_slots_unknown() -> None:
    volts, temps = cells_back(cell_frames(snapshot([16], 4)))
    assert volts[16] == round((2.5 + 15 * 0.005) * 1000)
    assert all(volts[n] == 65535 for n in range(17, 199))
    assert all(temps[n] == 195 for n in range(5, 785))


def test_a_reading_beyond_the_range_withholds_its_group_never_clamps() -> None:
    hot = snapshot([1], 8, temp_c=lambda k: 199.0 if k == 1 else 25.0)
    batch = cell_batch(hot)
    assert len(batch.refused) == 1 and "CellTemperature002" in str(batch.refused[0])
    temps = [d for f, d in batch.frames if f == CELL_TEMPERATURES_ID]
    assert len(temps) == TEMP_GROUPS - 1  # group 0 withheld, the others still go out


def test_a_faulted_sensor_keeps_every_later_sensor_at_its_place() -> None:
    """Issue 12 item 5: one faulted sensor shifted every later sensor in the native frames."""
    readings = lambda k: 20.0 + k  # noqa: E731 - sensor k reads 20 + k degC
    faulted = snapshot([4, 4, 4], 3, cell_v=lambda k: 3.3, temp_c=readings,
                       temp_flags={4: int(ChannelFlag.SENSOR_FAULT)})  # fmt: skip
    # an independent reader: every 0x611 frame decoded with cantools from the DBC
    _, temps = cells_back(cell_frames(faulted))
    assert temps[5] == 195  # module 1, sensor 1: not available at its own slot
    assert [temps[n] for n in (1, 2, 3, 4, 6, 7, 8, 9)] == [20, 21, 22, 23, 25, 26, 27, 28]
    assert all(temps[n] == 195 for n in range(10, 785))
    stale = snapshot([4, 4], 2, cell_v=lambda k: 3.3 + k / 1000, temp_c=readings)
    gone = stale.model_copy(update={"modules": [
        stale.modules[0].model_copy(update={"fresh": False, "cell_v": [None] * 4}),
        stale.modules[1],
    ]})  # fmt: skip
    volts, _ = cells_back(cell_frames(gone))
    assert [volts[n] for n in range(1, 9)] == [65535] * 4 + [3304, 3305, 3306, 3307]


EXPECTED = {
    1: ("contactors", {"action": "close"}),
    2: ("contactors", {"action": "open"}),
    3: ("reset_faults", {}),
    4: ("set_mode", {"mode": "standby"}),
    5: ("set_mode", {"mode": "working"}),
}


@pytest.mark.parametrize("command_id", sorted(EXPECTED))
def test_decode_each_command(command_id: int) -> None:
    db = load_native_dbc()
    data = db.encode_message(COMMAND_ID, {"CommandId": command_id, "CommandCounter": 201})
    command = decode_command(COMMAND_ID, bytes(data))
    name, args = EXPECTED[command_id]
    assert command == NativeCommand(command=name, args=args, counter=201)
    COMMAND_ARGS[name].model_validate(command.args)
    choices = db.get_message_by_frame_id(COMMAND_ID).get_signal_by_name("CommandId").choices
    assert choices is not None and command_id in choices


def test_other_frames_are_not_commands() -> None:
    assert decode_command(0x621, b"\x01\x02") is None
    assert decode_command(0x305, b"") is None


@pytest.mark.parametrize(
    ("data", "counter", "reason"),
    [
        (b"", None, AckReason.MALFORMED),
        (b"\x01", None, AckReason.MALFORMED),
        (b"\x01\x07\x00", 7, AckReason.MALFORMED),
        (b"\x01\x07" + bytes(6), 7, AckReason.MALFORMED),
        (b"\x00\x09", 9, AckReason.UNKNOWN_COMMAND),
        (b"\x06\x0a", 10, AckReason.UNKNOWN_COMMAND),
        (b"\xff\x0b", 11, AckReason.UNKNOWN_COMMAND),
    ],
)
def test_malformed_commands(data: bytes, counter: int | None, reason: AckReason) -> None:
    with pytest.raises(NativeCommandError) as caught:
        decode_command(COMMAND_ID, data)
    assert (caught.value.counter, caught.value.reason) == (counter, reason)


@given(st.binary(max_size=16))
def test_decode_command_never_raises_anything_else(data: bytes) -> None:
    try:
        command = decode_command(COMMAND_ID, data)
    except NativeCommandError:
        return
    assert command is not None and command.command in COMMAND_ARGS


@pytest.mark.parametrize(
    ("counter", "accepted", "reason"),
    [(0, True, AckReason.NONE), (255, False, AckReason.REFUSED_BY_MASTER), (17, False, 200)],
)
def test_ack_frame(counter: int, accepted: bool, reason: int) -> None:
    frame_id, data = ack_frame(counter, accepted, reason)
    assert frame_id == ACK_ID
    assert data == bytes([counter, int(accepted), int(reason)])
    values = load_native_dbc().decode_message(ACK_ID, data, decode_choices=False)
    assert values == {"AckCounter": counter, "AckStatus": int(accepted), "AckReason": int(reason)}


@pytest.mark.parametrize(("counter", "reason"), [(-1, 0), (256, 0), (0, 256)])
def test_ack_frame_rejects_out_of_range(counter: int, reason: int) -> None:
    with pytest.raises(ValueError):
        ack_frame(counter, True, reason)
