"""Register map: layout, encoding round trips, stale data, write decoding and docs drift."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.modbus_gateway import docgen
from services.modbus_gateway.register_map import (
    BATTERY_SOURCES,
    ILLEGAL_DATA_ADDRESS,
    ILLEGAL_DATA_VALUE,
    NOT_SERVED,
    STRING_SOURCES,
    Command,
    Identity,
    WriteError,
    build_image,
    decode_write,
    read_raw,
    read_value,
    register_map,
    writable_points,
)
from services.modbus_gateway.sunspec import load_model
from shared.config import demo_config
from shared.config.system import SystemConfig
from shared.messages.commands import COMMAND_ARGS
from shared.messages.pack import CellLocation, CellSnapshot, Limits, ModuleCells, PackState
from shared.messages.slave import ChannelFlag
from shared.protection_codes import (
    CODE_TABLE,
    ProtectionCode,
    bits_codes,
    code_bits,
    evt1_bits,
)

CONFIG = demo_config()
IDENTITY = Identity(manufacturer="ACME", model="BMS-1", version="1.2.3", serial="SN42")
TOPO = CONFIG.topology
ODD_CONFIG = SystemConfig.from_preset(
    "LFP", system_id="odd", modules=3, cells_per_module=16, temp_sensors_per_module=3,
    cell_capacity_ah=280.0,
)  # fmt: skip


def make_pack(**overrides: Any) -> PackState:
    fields: dict[str, Any] = {
        "soc": 55.5,
        "soh": 98.7,
        "soc_std": 2.4,
        "since_anchor_s": 93_600.0,
        "full_charge_requested": False,
        "voltage": 356.2,
        "current": -12.3,
        "contactors": "closed",
        "mode": "working",
        "cell_v_min": 3.601,
        "cell_v_max": 3.655,
        "cell_v_avg": 3.630,
        "cell_v_min_at": CellLocation(module=2, index=5),
        "cell_v_max_at": CellLocation(module=6, index=0),
        "temp_min_c": 21.5,
        "temp_max_c": 30.2,
        "temp_avg_c": 25.0,
        "temp_min_at": CellLocation(module=0, index=1),
        "temp_max_at": CellLocation(module=3, index=0),
        "limits": Limits(
            charge_voltage_v=411.6,
            discharge_voltage_v=313.6,
            charge_current_a=50.0,
            discharge_current_a=80.0,
        ),
        "faults": [],
        "alarms": ["cell_overtemp_charge"],
        "warnings": ["cell_imbalance", "sensor_fault"],
        "equivalent_cycles": 12.7,
        "ts": 1_700_000_123.4,
    }
    fields.update(overrides)
    return PackState(**fields)


def make_cells(
    config: SystemConfig = CONFIG,
    *,
    stale: frozenset[int] = frozenset(),
    faulted_temps: frozenset[int] = frozenset(),
    open_cells: frozenset[int] = frozenset(),
) -> CellSnapshot:
    """Cell i reads 3.6 + 0.001·i V, sensor k reads 20 + 0.5·k °C (series and sensor order);
    `stale` modules, `faulted_temps` sensors and `open_cells` cells are None at their place."""
    topo = config.topology
    modules, k, t = [], 0, 0
    for m in range(topo.modules):
        n, per = topo.cells_in_module(m), topo.temp_sensors_per_module
        volts: list[float | None] = []
        flags: list[int] = []
        for i in range(k, k + n):
            bad = m in stale or i in open_cells
            volts.append(None if bad else 3.6 + 0.001 * i)
            flags.append(int(ChannelFlag.OPEN_WIRE) if i in open_cells else 0)
        temps: list[float | None] = []
        tflags: list[int] = []
        for j in range(t, t + per):
            bad = m in stale or j in faulted_temps
            temps.append(None if bad else 20.0 + 0.5 * j)
            tflags.append(int(ChannelFlag.SENSOR_FAULT) if j in faulted_temps else 0)
        modules.append(
            ModuleCells(
                module=m,
                fresh=m not in stale,
                cell_v=volts,
                cell_flags=flags,
                balancing=[i % 5 == 0 for i in range(k, k + n)],
                temp_c=temps,
                temp_flags=tflags,
            )
        )
        k, t = k + n, t + per
    return CellSnapshot(modules=modules)


def image(
    pack: PackState | None = None,
    cells: CellSnapshot | None = None,
    *,
    stale: bool = False,
    config: SystemConfig = CONFIG,
) -> dict[int, int]:
    return build_image(config, pack, cells, stale=stale, identity=IDENTITY)


def value(img: dict[int, int], key: str, config: SystemConfig = CONFIG) -> Any:
    rmap = register_map(config)
    return read_value(rmap, img, rmap.by_key[key])


# --- layout -----------------------------------------------------------------------------------


def walk_chain(img: dict[int, int]) -> list[tuple[int, int, int]]:
    """(address, ID, L) from 40002 to the end model, as a SunSpec client scans."""
    assert img[40000] == 0x5375 and img[40001] == 0x6E53  # "SunS"
    out, addr = [], 40002
    while True:
        model_id, length = img[addr], img[addr + 1]
        out.append((addr, model_id, length))
        if model_id == 0xFFFF:
            return out
        addr += 2 + length


@pytest.mark.parametrize(
    "config",
    [
        CONFIG,
        ODD_CONFIG,
    ],
    ids=["demo", "lfp-3x16"],
)
def test_chain_walk(config: SystemConfig) -> None:
    topo = config.topology
    chain = walk_chain(image(config=config))
    ids = [model_id for _, model_id, _ in chain]
    assert ids == [1, 802, 804] + [805] * topo.modules + [0xFFFF]
    lengths = [length for _, _, length in chain]
    assert lengths[:2] == [66, 62]
    assert lengths[2] == 46 + 16 * topo.modules
    assert lengths[3:-1] == [42 + 4 * topo.cells_in_module(m) for m in range(topo.modules)]
    assert lengths[-1] == 0
    # Every register of the chain is defined, nothing beyond the end model.
    rmap = register_map(config)
    end = chain[-1][0] + 1
    assert all(a in rmap.by_address for a in range(40000, end + 1))
    assert end + 1 not in rmap.by_address


def test_lengths_follow_the_model_json() -> None:
    assert load_model(1).length() == 66
    assert load_model(802).length() == 62
    assert load_model(804).group_length == 16
    assert load_model(805).group_length == 4
    assert load_model(805).length(14) == 42 + 4 * 14


def test_point_records_are_consistent() -> None:
    rmap = register_map(CONFIG)
    assert len(rmap.by_key) == len(rmap.points)
    for point in rmap.points:
        assert point.register == point.address + 1
        assert point.access in ("R", "RW")
        if isinstance(point.sf, str):
            assert f"{point.block}.{point.sf}" in rmap.by_key
    addrs = sorted(rmap.by_address)
    native = [a for a in addrs if a < 40000]
    assert native[0] == 1000
    assert rmap.by_key["native.CellV1"].address == 1100
    assert rmap.by_key[f"native.CellV{TOPO.total_cells}"].address == 1100 + TOPO.total_cells - 1
    assert rmap.by_key["native.Tmp1"].address == 1300


def test_writable_addresses() -> None:
    keys = {p.key: a for a, p in writable_points().items()}
    assert keys == {
        "battery.CtrlHb": 40070 + 19,
        "battery.AlmRst": 40070 + 20,
        "battery.SetOp": 40070 + 50,
        "native.Mode": 1003,
    }


# --- encoding ---------------------------------------------------------------------------------


def test_identity_and_static_points() -> None:
    img = image(make_pack(), make_cells())
    assert value(img, "common.Mn") == "ACME"
    assert value(img, "common.Md") == "BMS-1"
    assert value(img, "common.Vr") == "1.2.3"
    assert value(img, "common.SN") == "SN42"
    assert value(img, "common.DA") == 1
    assert value(img, "battery.AHRtg") == pytest.approx(100.0)
    assert value(img, "battery.Typ") == 4
    assert value(img, "string.NMod") == TOPO.modules
    assert value(img, "module3.ModIdx") == 3
    assert value(img, "module3.NCell") == TOPO.cells_per_module


def test_events_and_bits() -> None:
    pack = make_pack(
        faults=["contactor_feedback_mismatch"],
        alarms=["cell_overtemp_charge"],
        warnings=["cell_imbalance", "brand_new_code"],
    )
    img = image(pack, make_cells())
    evt1 = value(img, "battery.Evt1")
    assert evt1 == (1 << 20) | (1 << 1) | (1 << 17) | (1 << 26)
    assert value(img, "native.Faults") == 1 << 18  # contactor_feedback_mismatch
    assert value(img, "native.Alarms") == 1 << 4  # cell_overtemp_charge
    assert value(img, "native.Warnings") == (1 << 10) | (1 << 31)  # cell_imbalance, other
    assert value(img, "battery.EvtVnd1") == 1 << 18
    assert value(img, "battery.EvtVnd2") == 1 << 4
    assert value(img, "battery.State") == 99


def test_insulation_low_has_its_own_native_bit_and_the_ground_fault_bit() -> None:
    faulted = image(make_pack(faults=["insulation_low"], alarms=[], warnings=[]), make_cells())
    for key in ("native.Faults", "battery.EvtVnd1", "string.EvtVnd1"):
        assert value(faulted, key) == 1 << 19, key
    assert value(faulted, "battery.Evt1") == 1 << 22  # GROUND_FAULT
    warned = image(make_pack(faults=[], alarms=[], warnings=["insulation_low"]), make_cells())
    assert value(warned, "native.Warnings") == 1 << 19
    assert value(warned, "battery.Evt1") == 1 << 26  # SunSpec has no insulation warning


code_names = st.sampled_from([*(c.value for c in ProtectionCode), "brand_new_code"])


@settings(max_examples=60, deadline=None)
@given(
    st.sets(code_names, max_size=6),
    st.sets(code_names, max_size=6),
    st.sets(code_names, max_size=6),
    st.booleans(),
)
def test_bit_fields_are_the_shared_code_table(
    faults: set[str], alarms: set[str], warnings: set[str], soc_known: bool
) -> None:
    pack = make_pack(
        faults=sorted(faults),
        alarms=sorted(alarms),
        warnings=sorted(warnings),
        soc=55.5 if soc_known else None,
    )
    img = image(pack, make_cells())
    for codes, keys in (
        (faults, ("native.Faults", "battery.EvtVnd1", "string.EvtVnd1")),
        (alarms, ("native.Alarms", "battery.EvtVnd2", "string.EvtVnd2")),
        (warnings, ("native.Warnings",)),
    ):
        for key in keys:
            assert value(img, key) == code_bits(codes), key
            decoded = bits_codes(value(img, key))
            assert {c.value for c in decoded.codes} == codes - {"brand_new_code"}
            assert decoded.other == ("brand_new_code" in codes)
    # the gateway's own COMMUNICATION_ERROR bit while part of the pack is unknown
    expected_evt1 = evt1_bits([*faults, *alarms], warnings) | (0 if soc_known else 1)
    assert value(img, "battery.Evt1") == value(img, "string.Evt1") == expected_evt1


def test_cells_and_modules() -> None:
    cells = make_cells()
    img = image(make_pack(), cells)
    n = TOPO.cells_per_module
    for c in cells.cells():
        i = c.series_index
        assert value(img, f"native.CellV{i + 1}") == pytest.approx(c.voltage_v, abs=5e-4)
        m, k = divmod(i, n)
        assert value(img, f"module{m + 1}.Cell{k + 1}.CellV") == pytest.approx(
            c.voltage_v, abs=5e-4
        )
        assert value(img, f"module{m + 1}.Cell{k + 1}.CellSt") == int(c.balancing)
    for t in cells.temperatures():
        assert value(img, f"native.Tmp{t.sensor_index + 1}") == pytest.approx(t.temp_c, abs=0.05)
    module = [3.6 + 0.001 * i for i in range(n, 2 * n)]
    assert value(img, "module2.V") == pytest.approx(sum(module), abs=0.05)
    assert value(img, "module2.CellVMax") == pytest.approx(max(module), abs=5e-4)
    assert value(img, "module2.CellVMaxCell") == n
    assert value(img, "string.Mod2.ModCellVMin") == pytest.approx(min(module), abs=5e-4)
    assert value(img, "module1.CellTmpMax") == pytest.approx(20.5, abs=0.05)
    assert value(img, "module1.NCellBal") == sum(i % 5 == 0 for i in range(n))
    # A stale module reads "not implemented", the others stay valid.
    img = image(make_pack(stale_modules=[1]), cells)
    assert value(img, "module2.Cell1.CellV") is None
    assert value(img, "module1.Cell1.CellV") is not None


amps = st.floats(-1000.0, 1000.0, allow_nan=False)
pct = st.floats(0.0, 100.0, allow_nan=False)
volts = st.floats(0.0, 1200.0, allow_nan=False)
cell = st.floats(0.0, 6.0, allow_nan=False)
temp = st.floats(-60.0, 200.0, allow_nan=False)
limit_a = st.floats(0.0, 1000.0, allow_nan=False)
EPS = 1e-9
"""Rounding to a register step errs by up to half a step, plus the float error of the scaling."""


@settings(max_examples=60, deadline=None)
@given(
    soc=pct,
    soh=pct,
    voltage=volts,
    current=amps,
    vmin=cell,
    vmax=cell,
    vavg=cell,
    tmin=temp,
    tmax=temp,
    cvl=volts,
    dvl=volts,
    ccl=limit_a,
    dcl=limit_a,
    contactors=st.sampled_from(["standby", "precharge", "closed", "opening", "fault"]),
    mode=st.sampled_from(["standby", "working"]),
)
def test_round_trip(
    soc: float,
    soh: float,
    voltage: float,
    current: float,
    vmin: float,
    vmax: float,
    vavg: float,
    tmin: float,
    tmax: float,
    cvl: float,
    dvl: float,
    ccl: float,
    dcl: float,
    contactors: str,
    mode: str,
) -> None:
    pack = make_pack(
        soc=soc,
        soh=soh,
        voltage=voltage,
        current=current,
        cell_v_min=vmin,
        cell_v_max=vmax,
        cell_v_avg=vavg,
        temp_min_c=tmin,
        temp_max_c=tmax,
        contactors=contactors,
        mode=mode,
        limits=Limits(
            charge_voltage_v=cvl,
            discharge_voltage_v=dvl,
            charge_current_a=ccl,
            discharge_current_a=dcl,
        ),
    )
    img = image(pack, make_cells())
    expected = {
        ("SoC", 0.05): soc,
        ("SoH", 0.05): soh,
        ("V", 0.05): voltage,
        ("A", 0.05): current,
        ("CellVMin", 5e-4): vmin,
        ("CellVMax", 5e-4): vmax,
        ("CellVAvg", 5e-4): vavg,
    }
    for (name, tol), want in expected.items():
        assert value(img, f"battery.{name}") == pytest.approx(want, abs=tol + EPS)
        assert value(img, f"string.{name}") == pytest.approx(want, abs=tol + EPS)
        assert value(img, f"native.{name}") == pytest.approx(want, abs=tol + EPS)
    assert value(img, "battery.VMax") == pytest.approx(cvl, abs=0.05 + EPS)
    assert value(img, "battery.VMin") == pytest.approx(dvl, abs=0.05 + EPS)
    assert value(img, "battery.AChaMax") == pytest.approx(ccl, abs=0.05 + EPS)
    assert value(img, "battery.ADisChaMax") == pytest.approx(dcl, abs=0.05 + EPS)
    for name, want in (("CVL", cvl), ("DVL", dvl), ("CCL", ccl), ("DCL", dcl)):
        assert value(img, f"native.{name}") == pytest.approx(want, abs=0.05 + EPS)
    assert value(img, "native.TmpMin") == pytest.approx(tmin, abs=0.05 + EPS)
    assert value(img, "string.ModTmpMax") == pytest.approx(tmax, abs=0.05 + EPS)
    sf = value(img, "battery.W_SF")
    # Beyond the configured sensor range the power does not fit: refused, never clamped.
    watts = voltage * current
    if abs(round(watts / 10**sf)) <= 32767:
        assert value(img, "battery.W") == pytest.approx(watts, abs=0.5 * 10**sf)
    else:
        assert value(img, "battery.W") is None
    assert value(img, "battery.DoD") == pytest.approx(100.0 - soc, abs=0.05 + EPS)
    assert value(img, "native.Contactors") == [
        "standby",
        "precharge",
        "closed",
        "opening",
        "fault",
    ].index(contactors)
    assert value(img, "native.Mode") == ["standby", "working"].index(mode)
    assert value(img, "battery.SetOp") == (1 if contactors == "closed" else 2)
    assert value(img, "native.Stale") == 0
    assert value(img, "battery.Evt1") & 1 == 0


# --- stale ------------------------------------------------------------------------------------

UNIMPL = {
    "int16": 0x8000,
    "uint16": 0xFFFF,
    "enum16": 0xFFFF,
    "uint32": 0xFFFFFFFF,
    "bitfield32": 0xFFFFFFFF,
}


@pytest.mark.parametrize("case", ["stale", "no-pack"])
def test_stale_reads_not_implemented(case: str) -> None:
    img = image(make_pack(), make_cells(), stale=True) if case == "stale" else image(None, None)
    rmap = register_map(CONFIG)
    for key in (
        "battery.SoC",
        "battery.V",
        "battery.A",
        "battery.W",
        "string.SoC",
        "module1.Cell1.CellV",
        "module1.Cell1.CellTmp",
        "native.SoC",
        "native.A",
        "native.CellV1",
        "native.Tmp1",
        "battery.NCyc",
        "battery.State",
    ):
        point = rmap.by_key[key]
        regs = [img[point.address + i] for i in range(point.size)]
        raw = regs[0] if point.size == 1 else (regs[0] << 16) | regs[1]
        assert raw == UNIMPL[point.type], key
        assert read_raw(img, point) is None
    assert value(img, "battery.Evt1") == 1  # COMMUNICATION_ERROR
    assert value(img, "string.Evt1") == 1
    assert value(img, "native.Stale") == 1
    # Scan metadata stays valid.
    assert value(img, "battery.V_SF") == -1
    assert value(img, "common.Mn") == "ACME"
    assert value(img, "module2.NCell") == TOPO.cells_per_module
    walk_chain(img)
    # No measured point keeps a real value.
    for point in rmap.points:
        if (
            point.measured
            and point.type in UNIMPL
            and point.key not in ("battery.Evt1", "string.Evt1")
        ):
            assert read_raw(img, point) is None, point.key


def test_a_snapshot_of_another_layout_reads_not_implemented() -> None:
    """During a topology change the old snapshot never fills the new layout."""
    other = SystemConfig.from_preset(
        "NMC", system_id="demo", modules=TOPO.modules + 1, cells_per_module=TOPO.cells_per_module
    )
    img = image(make_pack(), make_cells(other))
    assert value(img, "module1.Cell1.CellV") is None
    assert value(img, "native.CellV1") is None
    assert value(img, "native.Tmp1") is None
    assert value(img, "battery.SoC") is not None


# --- unknown values and positions -------------------------------------------------------------


def test_unknown_pack_values_read_not_implemented_with_the_communication_bit() -> None:
    """Start-up: the estimator has not started and a module has not reported yet."""
    pack = make_pack(
        soc=None,
        soh=None,
        voltage=None,
        cell_v_min=None,
        cell_v_max=None,
        cell_v_avg=None,
        cell_v_min_at=None,
        cell_v_max_at=None,
        equivalent_cycles=None,
        stale_modules=[2],
    )
    img = image(pack, make_cells(stale=frozenset({2})))
    for key in (
        "battery.SoC",
        "battery.DoD",
        "battery.SoH",
        "battery.V",
        "battery.W",
        "battery.NCyc",
        "battery.CellVMin",
        "battery.CellVMinMod",
        "string.SoC",
        "string.V",
        "native.SoC",
        "native.V",
        "native.CellVMin",
        "module3.Cell1.CellV",
        "module3.V",
        "native.CellV" + str(2 * TOPO.cells_per_module + 1),
        "native.Tmp" + str(2 * TOPO.temp_sensors_per_module + 1),
        "string.NCellBal",
    ):
        assert value(img, key) is None, key
    assert value(img, "battery.Evt1") & 1 == 1  # COMMUNICATION_ERROR
    assert value(img, "string.Evt1") & 1 == 1
    assert value(img, "native.Stale") == 0
    assert value(img, "native.NStaleMod") == 1
    # What is known stays known.
    assert value(img, "battery.A") == pytest.approx(-12.3, abs=0.05)
    assert value(img, "module1.Cell1.CellV") == pytest.approx(3.6, abs=5e-4)
    # And once every module has reported, the bit clears.
    assert value(image(make_pack(), make_cells()), "battery.Evt1") & 1 == 0


def test_a_faulted_sensor_does_not_shift_later_sensors() -> None:
    per = TOPO.temp_sensors_per_module
    faulted = per + 0  # module 2, first sensor
    img = image(make_pack(), make_cells(faulted_temps=frozenset({faulted})))
    assert value(img, f"native.Tmp{faulted + 1}") is None
    for k in range(TOPO.total_temp_sensors):
        if k != faulted:
            assert value(img, f"native.Tmp{k + 1}") == pytest.approx(20.0 + 0.5 * k, abs=0.05), k
    # Model 805: module 2's cells nearest to the faulted sensor read unknown, the others the
    # sensor nearest to them, unshifted.
    n = TOPO.cells_per_module
    assert value(img, "module2.Cell1.CellTmp") is None
    assert value(img, f"module2.Cell{n}.CellTmp") == pytest.approx(20.0 + 0.5 * (2 * per - 1))
    assert value(img, "module3.Cell1.CellTmp") == pytest.approx(20.0 + 0.5 * 2 * per)


def test_an_open_wire_cell_is_unknown_at_its_own_place() -> None:
    img = image(make_pack(), make_cells(open_cells=frozenset({3})))
    assert value(img, "native.CellV4") is None
    assert value(img, "module1.Cell4.CellV") is None
    assert value(img, "native.CellV5") == pytest.approx(3.604, abs=5e-4)
    assert value(img, "module1.Cell5.CellV") == pytest.approx(3.604, abs=5e-4)
    assert value(img, "module1.V") is None  # a partial sum is not a module voltage
    assert value(img, "module1.CellVMin") == pytest.approx(3.6, abs=5e-4)


def test_a_value_that_does_not_fit_is_refused_not_clamped() -> None:
    refused: list[str] = []
    pack = make_pack(voltage=1200.0, current=1000.0)  # beyond the W scale of this pack
    img = build_image(CONFIG, pack, make_cells(), stale=False, identity=IDENTITY, refused=refused)
    assert value(img, "battery.W") is None
    assert refused == ["battery.W"]


# --- value sources ----------------------------------------------------------------------------


def test_soc_uncertainty_and_time_since_anchor_are_served_and_unknown_when_none() -> None:
    img = image(make_pack(), make_cells())
    assert value(img, "native.SoCStd") == pytest.approx(2.4)
    assert value(img, "native.SinceAnchor") == 93_600
    unknown = image(make_pack(soc_std=None, since_anchor_s=None), make_cells())
    assert value(unknown, "native.SoCStd") is None
    assert value(unknown, "native.SinceAnchor") is None


@pytest.mark.parametrize(("requested", "raw"), [(True, 1), (False, 0), (None, 0xFFFF)])
def test_full_charge_request_is_served_and_unknown_when_none(
    requested: bool | None, raw: int
) -> None:
    img = image(make_pack(full_charge_requested=requested), make_cells())
    point = register_map(CONFIG).by_key["native.FullChargeReq"]
    assert point.address == 1029  # appended: the earlier addresses stay
    assert img[point.address] == raw
    assert read_raw(img, point) == (None if requested is None else raw)


def test_every_value_source_names_a_point_of_its_model() -> None:
    names = {m: {p.name for p in load_model(m).points + load_model(m).group_points} for m in
             (802, 804, 805)}  # fmt: skip
    assert set(BATTERY_SOURCES) <= names[802], set(BATTERY_SOURCES) - names[802]
    assert set(STRING_SOURCES) <= names[804], set(STRING_SOURCES) - names[804]
    for model_id, unserved in NOT_SERVED.items():
        assert unserved <= names[model_id], unserved - names[model_id]


@pytest.mark.parametrize("config", [CONFIG, ODD_CONFIG], ids=["demo", "lfp-3x16"])
def test_every_measured_point_has_a_source(config: SystemConfig) -> None:
    """With complete data every point reads a value, except those declared not served."""
    img = image(make_pack(), make_cells(config), config=config)
    rmap = register_map(config)
    missing = [
        p.key
        for p in rmap.points
        if p.type not in ("pad", "string")
        and p.block != "end"
        and read_raw(img, p) is None
        and p.name.rsplit(".", 1)[-1] not in NOT_SERVED.get(p.model or 0, frozenset())
    ]
    assert missing == []


# --- writes -----------------------------------------------------------------------------------

SETOP, ALMRST, CTRLHB, MODE = 40120, 40090, 40089, 1003


def validated(result: list[Command] | WriteError) -> list[Command]:
    assert isinstance(result, list), result
    for cmd in result:
        COMMAND_ARGS[cmd.name].model_validate(cmd.args)
    return result


def test_write_commands() -> None:
    assert validated(decode_write(SETOP, [1])) == [Command("contactors", {"action": "close"})]
    assert validated(decode_write(SETOP, [2])) == [Command("contactors", {"action": "open"})]
    assert validated(decode_write(ALMRST, [1])) == [Command("reset_faults", {})]
    assert validated(decode_write(ALMRST, [0])) == []
    assert validated(decode_write(CTRLHB, [65535])) == [Command("heartbeat", {"counter": 65535})]
    assert validated(decode_write(MODE, [0])) == [Command("set_mode", {"mode": "standby"})]
    assert validated(decode_write(MODE, [1])) == [Command("set_mode", {"mode": "working"})]
    # FC16 over CtrlHb and AlmRst together.
    assert validated(decode_write(CTRLHB, [7, 1])) == [
        Command("heartbeat", {"counter": 7}),
        Command("reset_faults", {}),
    ]


@pytest.mark.parametrize(
    ("address", "values"),
    [
        (40000, [1]),  # SunS marker
        (40002 + 66, [1]),  # model 1 DA: RW in SunSpec, read-only here
        (40070 + 11, [500]),  # 802 SoC
        (40070 + 51, [1]),  # 802 SetInvState
        (SETOP, [1, 1]),  # runs past SetOp
        (CTRLHB, [1, 0, 0]),  # runs into Typ
        (1000, [1]),  # native LayoutVersion
        (1100, [3600]),  # cell voltage
        (5000, [1]),  # unmapped
    ],
)
def test_write_read_only_is_illegal_address(address: int, values: list[int]) -> None:
    result = decode_write(address, values)
    assert isinstance(result, WriteError) and result.code == ILLEGAL_DATA_ADDRESS


@pytest.mark.parametrize(
    ("address", "values"),
    [
        (SETOP, [0]),
        (SETOP, [3]),
        (ALMRST, [2]),
        (MODE, [2]),
        (MODE, [-1]),
        (CTRLHB, [70000]),
        (CTRLHB, []),
        (CTRLHB, [0] * 124),
    ],
)
def test_write_bad_value_is_illegal_value(address: int, values: list[int]) -> None:
    result = decode_write(address, values)
    assert isinstance(result, WriteError) and result.code == ILLEGAL_DATA_VALUE


# --- docs -------------------------------------------------------------------------------------


def test_docs_are_up_to_date() -> None:
    md, table = docgen.render()
    assert docgen.MD_PATH.read_text("utf-8") == md, "run python -m services.modbus_gateway.docgen"
    assert docgen.CSV_PATH.read_text("utf-8") == table
    assert docgen.main(["--check"]) == 0


def test_docs_list_every_code_at_its_bit() -> None:
    md, _ = docgen.render()
    listed = " ".join(md.split())  # the header wraps lines
    for spec in CODE_TABLE:
        assert f" {spec.bit} = {spec.code.value}," in listed or (
            f" {spec.bit} = {spec.code.value};" in listed
        )
    assert "bit 31 = any other code" in listed


def test_docs_list_every_point() -> None:
    _, table = docgen.render()
    assert len(table.strip().splitlines()) == 1 + len(register_map(CONFIG).points)
    assert math.isfinite(len(table))


# --- properties: unknown is never a number, every channel at its own place ---------------------

OPTIONAL_PACK_FIELDS = ("soc", "soh", "voltage", "current", "cell_v_min", "cell_v_max",
                        "cell_v_avg", "equivalent_cycles")  # fmt: skip
SOURCES = {"soc": "SoC", "soh": "SoH", "voltage": "V", "current": "A", "cell_v_min": "CellVMin",
           "cell_v_max": "CellVMax", "cell_v_avg": "CellVAvg"}  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(
    unknown=st.sets(st.sampled_from(OPTIONAL_PACK_FIELDS)),
    stale=st.frozensets(st.integers(0, TOPO.modules - 1)),
    open_cells=st.frozensets(st.integers(0, TOPO.total_cells - 1), max_size=5),
    faulted=st.frozensets(st.integers(0, TOPO.total_temp_sensors - 1), max_size=4),
)
def test_unknown_is_never_a_number_and_channels_keep_their_place(
    unknown: set[str], stale: frozenset[int], open_cells: frozenset[int], faulted: frozenset[int]
) -> None:
    pack = make_pack(stale_modules=sorted(stale), **dict.fromkeys(unknown))
    cells = make_cells(stale=stale, open_cells=open_cells, faulted_temps=faulted)
    img = image(pack, cells)
    for field_name, name in SOURCES.items():
        for block in ("battery", "string", "native"):
            got = value(img, f"{block}.{name}")
            assert (got is None) == (field_name in unknown), (block, name)
    assert (value(img, "battery.Evt1") & 1 == 1) == bool(unknown - {"soh", "equivalent_cycles"}
                                                          or stale)  # fmt: skip
    for c in cells.cells():
        got = value(img, f"native.CellV{c.series_index + 1}")
        want = c.voltage_v
        assert (got is None) == (want is None) and (want is None or got == pytest.approx(want))
    for t in cells.temperatures():
        got = value(img, f"native.Tmp{t.sensor_index + 1}")
        want = t.temp_c
        assert (got is None) == (want is None) and (want is None or got == pytest.approx(want))
