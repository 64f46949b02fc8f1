"""The site chain: 802 the site, one 804 per string, one 805 per module, read by pysunspec2."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.modbus_gateway.register_map import (
    Command,
    Identity,
    WriteError,
    read_raw,
    read_value,
    register_map,
)
from services.modbus_gateway.server import SiteData
from services.modbus_gateway.site_map import (
    SITE_NATIVE_FIELDS,
    StringData,
    build_site_image,
    decode_site_write,
    layout_of,
    site_map,
)
from services.modbus_gateway.sunspec import UNIMPLEMENTED
from shared.config.site import SiteConfig
from shared.config.system import SystemConfig
from shared.messages.pack import PACK_AMPS_MAX, CellLocation, CellSnapshot, ModuleCells
from shared.messages.site import SiteLimits, SiteState, StringState
from shared.protection_codes import EVT1_COMMUNICATION_ERROR, code_bits
from tests.factories import limits, pack_state
from tests.modbus_gateway.test_pysunspec2_scan import scanned

IDENTITY = Identity(manufacturer="ACME", serial="site-a")
SYSTEMS = ("s1", "s2", "s3")
MODULES = {"s1": 2, "s2": 3, "s3": 2}


def config(system: str) -> SystemConfig:
    return SystemConfig.from_preset(
        "LFP", system_id=system, modules=MODULES[system], cells_per_module=4,
        cell_capacity_ah=100.0,
    )  # fmt: skip


def cells(system: str, base_v: float) -> CellSnapshot:
    return CellSnapshot(
        modules=[
            ModuleCells(
                module=m, fresh=True, cell_v=[base_v + 0.001 * (4 * m + c) for c in range(4)],
                cell_flags=[0] * 4, balancing=[False] * 4, temp_c=[20.0 + m, 21.0 + m],
                temp_flags=[0] * 2,
            )
            for m in range(MODULES[system])
        ]
    )  # fmt: skip


def pack(k: int, **overrides: Any) -> Any:
    fields: dict[str, Any] = dict(
        soc=40.0 + k, voltage=26.0 + 0.1 * k, current=-10.0 - k, cell_v_min=3.2 + 0.01 * k,
        cell_v_max=3.3 + 0.01 * k, cell_v_avg=3.25 + 0.01 * k,
        cell_v_max_at=CellLocation(module=1, index=2),
        cell_v_min_at=CellLocation(module=0, index=3),
        limits_=limits(charge_voltage_v=29.0, discharge_voltage_v=24.0, charge_current_a=40.0 + k,
                       discharge_current_a=60.0 + k),
    )  # fmt: skip
    return pack_state(**(fields | overrides))


def strings(**change: StringData) -> list[StringData]:
    out = [
        StringData(s, config(s), pack(k), cells(s, 3.2 + 0.01 * k))
        for k, s in enumerate(SYSTEMS, start=1)
    ]
    return [change.get(s.system_id, s) for s in out]


def site_state(**overrides: Any) -> SiteState:
    memberships = {"s1": "joined", "s2": "joined", "s3": "waiting"}
    fields: dict[str, Any] = dict(
        site="site-a", soc=41.5, soh=99.0, voltage_v=26.15, current_a=-23.0, power_w=-601.45,
        limits=SiteLimits(charge_voltage_v=29.0, discharge_voltage_v=24.0, charge_current_a=75.6,
                          discharge_current_a=111.6),
        faults=[], alarms=[], warnings=["cell_imbalance"], strings_total=3, strings_joined=2,
        strings=[StringState(system=s, membership=memberships[s]) for s in SYSTEMS],
        ts=1_700_000_100.0,
    )  # fmt: skip
    return SiteState.model_validate(fields | overrides)


def test_pysunspec2_reads_the_site_as_one_bank_of_strings() -> None:
    d = scanned(build_site_image(site_state(), strings(), identity=IDENTITY))
    assert len(d.models[802]) == 1 and len(d.models[804]) == 3
    assert len(d.models[805]) == sum(MODULES.values())
    assert d.common[0].SN.cvalue == "site-a"
    bank = d.models[802][0]
    assert bank.SoC.cvalue == pytest.approx(41.5)
    assert bank.V.cvalue == pytest.approx(26.2, abs=0.05)
    assert bank.A.cvalue == pytest.approx(-23.0)
    assert bank.AChaMax.cvalue == pytest.approx(75.6)
    assert bank.ADisChaMax.cvalue == pytest.approx(111.6)
    assert bank.VMax.cvalue == pytest.approx(29.0)
    assert bank.VMin.cvalue == pytest.approx(24.0)
    assert bank.AHRtg.cvalue == pytest.approx(300.0)
    # the highest cell of the bank is string 3's, module 2
    assert bank.CellVMax.cvalue == pytest.approx(3.33)
    assert (bank.CellVMaxStr.cvalue, bank.CellVMaxMod.cvalue) == (3, 2)
    assert (bank.CellVMinStr.cvalue, bank.CellVMinMod.cvalue) == (1, 1)
    assert bank.State.cvalue == 3 and bank.ChaSt.cvalue == 3  # connected, discharging
    for k, string in enumerate(d.models[804], start=1):
        assert string.Idx.cvalue == k
        assert string.NMod.cvalue == MODULES[SYSTEMS[k - 1]]
        assert string.SoC.cvalue == pytest.approx(40.0 + k)
        assert string.A.cvalue == pytest.approx(-10.0 - k)
        assert string.St.value & 1 == (1 if k < 3 else 0)  # STRING_ENABLED: joined
        assert string.St.value & 2 == 2  # its contactors are closed
    by_place = {(m.StrIdx.cvalue, m.ModIdx.cvalue): m for m in d.models[805]}
    assert sorted(by_place) == [(1, 1), (1, 2), (2, 1), (2, 2), (2, 3), (3, 1), (3, 2)]
    cell = by_place[(2, 3)].groups["lithium-ion-module-cell"][1]
    assert cell.CellV.cvalue == pytest.approx(3.22 + 0.001 * 9)


def test_chain_order_is_each_string_then_its_modules() -> None:
    rmap = site_map(layout_of(strings()))
    ids = [p.block for p in rmap.points if p.name == "ID" and p.model is not None]
    assert ids[:4] == ["common", "battery", "string1", "string1.module1"]
    assert ids[4:6] == ["string1.module2", "string2"]


def test_unknown_reads_not_implemented_never_zero() -> None:
    """No site state yet, string 2 stale, string 3's configuration not known."""
    data = strings(s2=StringData("s2", config("s2")), s3=StringData("s3"))
    d = scanned(build_site_image(None, data, identity=IDENTITY))
    bank = d.models[802][0]
    for name in ("SoC", "SoH", "V", "A", "W", "AChaMax", "ADisChaMax", "VMax", "VMin", "AHRtg"):
        assert getattr(bank, name).cvalue is None, name
    assert bank.Evt1.value & (1 << EVT1_COMMUNICATION_ERROR)
    assert len(d.models[804]) == 3
    assert len(d.models[805]) == MODULES["s1"] + MODULES["s2"]  # none for an unknown layout
    stale, unknown = d.models[804][1], d.models[804][2]
    assert stale.SoC.cvalue is None and stale.V.cvalue is None and stale.A.cvalue is None
    assert stale.Evt1.value & (1 << EVT1_COMMUNICATION_ERROR)
    assert unknown.Idx.cvalue == 3 and unknown.NMod.cvalue == 0  # groups served: none
    assert unknown.SoC.cvalue is None
    cells_of_2 = [m for m in d.models[805] if m.StrIdx.cvalue == 2]
    assert all(
        c.CellV.cvalue is None for m in cells_of_2 for c in m.groups["lithium-ion-module-cell"]
    )


def test_no_string_joined_zero_amps_is_a_limit_and_voltages_are_unknown() -> None:
    site = site_state(
        limits=SiteLimits(charge_voltage_v=None, discharge_voltage_v=None, charge_current_a=0.0,
                          discharge_current_a=0.0),
        strings=[StringState(system=s, membership="waiting") for s in SYSTEMS], strings_joined=0,
        soc=None, voltage_v=None, current_a=None, power_w=None,
    )  # fmt: skip
    bank = scanned(build_site_image(site, strings(), identity=IDENTITY)).models[802][0]
    assert bank.AChaMax.cvalue == 0 and bank.ADisChaMax.cvalue == 0
    assert bank.VMax.cvalue is None and bank.VMin.cvalue is None
    assert bank.ChaSt.cvalue == 1 and bank.State.cvalue == 1  # OFF, disconnected


def test_site_codes_are_the_bank_events() -> None:
    site = site_state(faults=["cell_overvoltage"], alarms=["cell_overtemp_charge"])
    image = build_site_image(site, strings(), identity=IDENTITY)
    rmap = site_map(layout_of(strings()))
    assert read_raw(image, rmap.by_key["battery.EvtVnd1"]) == code_bits(["cell_overvoltage"])
    assert read_raw(image, rmap.by_key["battery.EvtVnd2"]) == code_bits(["cell_overtemp_charge"])
    assert read_raw(image, rmap.by_key["battery.State"]) == 99


def test_sixteen_strings_of_196_cells_fit_the_address_space() -> None:
    big = {f"x{k}": (49,) * 4 for k in range(16)}
    rmap = site_map(tuple(big.values()))
    assert max(rmap.by_address) < 0x10000


@settings(max_examples=60, deadline=None)
@given(
    soc=st.none() | st.floats(0, 100),
    voltage=st.none() | st.floats(0, 1200),
    current=st.none() | st.floats(-3 * PACK_AMPS_MAX, 3 * PACK_AMPS_MAX),
    ccl=st.floats(0, 3 * PACK_AMPS_MAX),
)
def test_each_site_value_reads_back_or_reads_not_implemented(
    soc: float | None, voltage: float | None, current: float | None, ccl: float
) -> None:
    site = site_state(
        soc=soc, voltage_v=voltage, current_a=current, power_w=None,
        limits=SiteLimits(charge_voltage_v=29.0, discharge_voltage_v=24.0, charge_current_a=ccl,
                          discharge_current_a=0.0),
    )  # fmt: skip
    image = build_site_image(site, strings(), identity=IDENTITY)
    rmap = site_map(layout_of(strings()))
    for name, value, step in (("SoC", soc, 0.1), ("V", voltage, 0.1), ("A", current, 0.1),
                              ("AChaMax", ccl, 0.1)):  # fmt: skip
        point = rmap.by_key[f"battery.{name}"]
        got = read_value(rmap, image, point)
        if value is None:
            assert image[point.address] == UNIMPLEMENTED[point.type]
            assert got is None
        else:
            assert got == pytest.approx(value, abs=step)


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def test_site_data_keeps_configurations_that_come_before_the_site_configuration() -> None:
    clock = Clock()
    data = SiteData("site-a", IDENTITY, stale_after_s=2.0, monotonic=clock)
    for s in SYSTEMS:
        data.update_config(s, config(s))  # retained: may come first
        data.update_pack(s, pack(1))  # not yet a string of the site: dropped
    assert data.strings() == []
    data.update_site_config(
        SiteConfig.model_validate({"site": "site-a", "strings": [{"system": s} for s in SYSTEMS]})
    )
    data.update_site(site_state())
    for k, s in enumerate(SYSTEMS, start=1):
        data.update_pack(s, pack(k))
        data.update_cells(s, cells(s, 3.2))
    d = scanned(data.image())
    assert len(d.models[805]) == sum(MODULES.values())
    assert d.models[804][1].SoC.cvalue == pytest.approx(42.0)
    clock.now_s += 2.5  # every input goes stale
    d = scanned(data.image())
    assert d.models[802][0].SoC.cvalue is None and d.models[804][1].SoC.cvalue is None
    assert d.models[805][0].groups["lithium-ion-module-cell"][0].CellV.cvalue is None


def test_a_current_beyond_what_the_strings_carry_is_refused_never_clamped() -> None:
    refused: list[str] = []
    site = site_state(current_a=-3500.0, power_w=None)  # three strings carry at most 3000 A
    image = build_site_image(site, strings(), identity=IDENTITY, refused=refused)
    rmap = site_map(layout_of(strings()))
    assert refused == ["battery.A"]
    assert read_raw(image, rmap.by_key["battery.A"]) is None


# --- SCADA's SetOp: the one writable point of a site ------------------------------------------


def test_setop_is_the_only_writable_point_of_the_site_chain() -> None:
    rmap = site_map(layout_of(strings()))
    assert [p.key for p in rmap.points if p.access == "RW"] == ["battery.SetOp"]
    set_op = rmap.by_key["battery.SetOp"]
    assert set_op.address == site_map(()).by_key["battery.SetOp"].address  # layout-free
    assert decode_site_write(set_op.address, [2]) == [
        Command("site_operation", {"action": "disconnect", "by": "scada"})
    ]
    assert decode_site_write(set_op.address, [1]) == [
        Command("site_operation", {"action": "connect", "by": "scada"})
    ]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 0xFFFF), st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=4))
def test_every_other_site_write_is_refused_with_an_exception(
    address: int, values: list[int]
) -> None:
    set_op = site_map(()).by_key["battery.SetOp"].address
    decoded = decode_site_write(address, values)
    if address == set_op and len(values) == 1 and values[0] in (1, 2):
        assert isinstance(decoded, list) and len(decoded) == 1
    else:
        assert isinstance(decoded, WriteError)
        assert decoded.code == (3 if address == set_op and len(values) == 1 else 2)


def test_the_bank_state_says_what_the_strings_do_and_setop_reads_the_operation() -> None:
    rmap = site_map(layout_of(strings()))

    def bank(**kw: Any) -> tuple[Any, Any]:
        image = build_site_image(site_state(**kw), strings(), identity=IDENTITY)
        raw = read_raw(image, rmap.by_key["battery.State"])
        return raw, read_raw(image, rmap.by_key["battery.SetOp"])

    out = [StringState(system=s, membership="out") for s in SYSTEMS]
    assert bank() == (3, 1)  # CONNECTED, connect
    assert bank(operation="disconnect") == (6, 2)  # SUSPENDING: strings still on the bus
    assert bank(operation="disconnect", strings=out, strings_joined=0) == (1, 2)  # DISCONNECTED
    assert bank(strings=out, strings_joined=0) == (1, 2)  # connected, none joined yet


# --- the site's native block: what 802 has no point for ----------------------------------------


def test_the_site_native_fields_sit_where_a_system_serves_them_with_its_type_and_scale() -> None:
    rmap = site_map(layout_of(strings()))
    system = register_map(config("s1"))
    native = [p for p in rmap.points if p.block == "native"]
    assert [p.name for p in native] == [f.name for f in SITE_NATIVE_FIELDS]
    for p in native:
        mine = system.by_key[p.key]
        assert (p.address, p.size, p.type, p.units, p.sf) == (
            mine.address, mine.size, mine.type, mine.units, mine.sf,
        ), p.name  # fmt: skip
        assert p.access == "R"
    assert rmap.by_key["native.FullChargeReq"].address == 1029
    assert rmap.by_key["native.SoCStd"].address == 1026
    assert rmap.by_key["native.SinceAnchor"].address == 1027
    # the header's other addresses are not a site's: a read there answers exception 02
    assert 1004 not in rmap.by_address  # a system's native SoC
    assert site_map(()).by_key["native.FullChargeReq"].address == 1029  # layout-free


@pytest.mark.parametrize(
    ("requested", "raw"), [(True, 1), (False, 0), (None, None)]
)  # fmt: skip
def test_the_site_full_charge_request_reads_1_0_or_not_available_never_0(
    requested: bool | None, raw: int | None
) -> None:
    rmap = site_map(layout_of(strings()))
    site = site_state(full_charge_requested=requested, soc_std=3.25, since_anchor_s=86_400.0)
    image = build_site_image(site, strings(), identity=IDENTITY)
    point = rmap.by_key["native.FullChargeReq"]
    assert read_raw(image, point) == raw
    if raw is None:
        assert image[point.address] == 0xFFFF  # the native "not available"
    assert read_value(rmap, image, rmap.by_key["native.SoCStd"]) == pytest.approx(3.2, abs=0.051)
    assert read_raw(image, rmap.by_key["native.SinceAnchor"]) == 86_400
    assert read_raw(image, rmap.by_key["native.Stale"]) == 0


def test_the_site_native_values_read_not_available_while_unknown_or_stale() -> None:
    rmap = site_map(layout_of(strings()))
    unknown = build_site_image(site_state(), strings(), identity=IDENTITY)
    stale = build_site_image(None, strings(), identity=IDENTITY)
    for image, flag in ((unknown, 0), (stale, 1)):
        assert read_raw(image, rmap.by_key["native.Stale"]) == flag
        assert read_raw(image, rmap.by_key["native.LayoutVersion"]) == 1
        for name, raw in (("SoCStd", 0xFFFF), ("SinceAnchor", 0xFFFF), ("FullChargeReq", 0xFFFF)):
            point = rmap.by_key[f"native.{name}"]
            assert image[point.address] == raw, name
            assert read_raw(image, point) is None, name
    known = site_state(full_charge_requested=True, soc_std=1.0, since_anchor_s=5.0)
    assert (
        read_raw(build_site_image(None, strings(), identity=IDENTITY), rmap.by_key["native.SoCStd"])
        is None
    )  # no site state: nothing of it is served, whatever was known before
    assert (
        read_raw(
            build_site_image(known, strings(), identity=IDENTITY), rmap.by_key["native.SoCStd"]
        )
        == 10
    )


def test_a_site_state_before_the_site_configuration_is_served_without_strings() -> None:
    """The site state may arrive before the site configuration (no string known yet): the
    bank is served, with no cell mean over no string (this once divided by zero, and every
    read answered exception 04)."""
    rmap = site_map(())
    image = build_site_image(site_state(), [], identity=IDENTITY)
    assert read_value(rmap, image, rmap.by_key["battery.SoC"]) == pytest.approx(41.5)
    assert read_raw(image, rmap.by_key["battery.CellVAvg"]) is None
