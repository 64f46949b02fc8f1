"""System configuration: derived defaults, consistency checks, messages and round trips."""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.config import (
    CHEMISTRY_NAMES,
    CHEMISTRY_PRESETS,
    DEMO_SYSTEM,
    CanConfig,
    CommLossPolicy,
    Direction,
    LevelThreshold,
    ModbusConfig,
    ProtectionConfig,
    SystemConfig,
    ThreeLevel,
    Topology,
    demo_config,
    explain_errors,
)
from shared.config.limits import (
    BALANCING_CURRENT_MAX_MA,
    CELLS_IN_SERIES_MAX,
    CURRENT_MAX_A,
    PACK_VOLTAGE_MAX_V,
)

TOPOLOGIES = [(1, 1), (1, 4), (1, 16), (2, 8), (7, 14), (12, 16), (14, 14), (28, 7), (196, 1)]

Mutation = Callable[[dict[str, Any]], None]


def demo_dict() -> dict[str, Any]:
    return copy.deepcopy(DEMO_SYSTEM.model_dump(mode="json"))


def rejected(mutate: Mutation, base: dict[str, Any] | None = None) -> list[str]:
    """explain_errors() lines for the demo config changed by `mutate`; fails if accepted."""
    data = demo_dict() if base is None else base
    mutate(data)
    with pytest.raises(ValidationError) as info:
        SystemConfig.model_validate(data)
    return explain_errors(info.value)


def one_line_with(lines: list[str], *parts: str) -> None:
    assert any(all(p in line for p in parts) for line in lines), "\n".join(lines)


# --- valid configurations -------------------------------------------------------------------


@pytest.mark.parametrize("chemistry", CHEMISTRY_NAMES)
@pytest.mark.parametrize(("modules", "cells"), TOPOLOGIES)
def test_from_preset_is_valid(chemistry: str, modules: int, cells: int) -> None:
    for capacity in (0.5, 2.3, 100.0, 280.0, 1000.0):
        config = SystemConfig.from_preset(
            chemistry, modules=modules, cells_per_module=cells, cell_capacity_ah=capacity
        )
        assert config.total_cells == modules * cells
        assert config.chemistry == chemistry
        assert config.protection.pack_overvoltage.fault.threshold <= PACK_VOLTAGE_MAX_V
        assert config.balancing.current_ma < BALANCING_CURRENT_MAX_MA


@pytest.mark.parametrize("chemistry", CHEMISTRY_NAMES)
def test_thresholds_are_derived_from_the_preset(chemistry: str) -> None:
    preset = CHEMISTRY_PRESETS[chemistry]
    config = SystemConfig.from_preset(chemistry, modules=4, cells_per_module=12)
    p = config.protection
    assert p.cell_overvoltage.fault.threshold == preset.ov_limit_v
    assert p.cell_overvoltage.fault.release == preset.ov_reset_v
    assert p.cell_overvoltage.alarm.threshold == preset.ov_alarm_v
    assert p.cell_undervoltage.fault.threshold == preset.uv_limit_v
    assert p.cell_undervoltage.fault.release == preset.uv_reset_v
    assert p.pack_overvoltage.fault.threshold == pytest.approx(48 * preset.ov_limit_v)
    assert p.pack_undervoltage.warning.threshold == pytest.approx(48 * preset.uv_warning_v)
    assert p.cell_overtemp_charge.fault.threshold == preset.charge_temp_max_c
    assert p.cell_undertemp_charge.fault.threshold == preset.charge_temp_min_c
    assert p.cell_overtemp_discharge.fault.threshold == preset.discharge_temp_max_c
    assert p.cell_undertemp_discharge.fault.threshold == preset.discharge_temp_min_c
    assert p.deep_discharge_v == preset.deep_discharge_v
    assert config.balancing.min_cell_voltage_v == preset.balance_start_v
    # Response times (bms-practice §4.2): OV/UV fault ≤ 0.5 s, over-current 0.2 s, temp 1-5 s.
    assert p.cell_overvoltage.fault.delay_s <= 0.5
    assert p.charge_overcurrent.fault.delay_s == pytest.approx(0.2)
    assert 1.0 <= p.cell_overtemp_charge.fault.delay_s <= 5.0


def test_overcurrent_defaults_to_1c_capped_at_hardware_range() -> None:
    small = SystemConfig.from_preset("LFP", modules=1, cells_per_module=16, cell_capacity_ah=100)
    assert small.protection.discharge_overcurrent.fault.threshold == 100.0
    big = SystemConfig.from_preset("LFP", modules=1, cells_per_module=16, cell_capacity_ah=280)
    assert big.protection.charge_overcurrent.fault.threshold == CURRENT_MAX_A
    chosen = SystemConfig.from_preset(
        "LFP", modules=1, cells_per_module=16, cell_capacity_ah=280, max_current_a=150
    )
    assert chosen.protection.charge_overcurrent.fault.threshold == 150.0


def test_can_profile_follows_pack_voltage() -> None:
    low = SystemConfig.from_preset("LFP", modules=1, cells_per_module=16)
    assert low.interfaces.can.profiles == ("victron_0x35x",)
    high = SystemConfig.from_preset("LFP", modules=10, cells_per_module=16)
    assert high.interfaces.can.profiles == ("pylon_hv",)


def with_profiles(config: SystemConfig, *profiles: str) -> dict[str, Any]:
    data = config.model_dump(mode="json")
    data["interfaces"]["can"]["profiles"] = list(profiles)
    return data


@pytest.mark.parametrize("profile", ["victron_0x35x", "pylon_v12"])
def test_a_48_v_can_profile_is_refused_for_a_high_voltage_pack(profile: str) -> None:
    hv = SystemConfig.from_preset("LFP", modules=12, cells_per_module=16)
    assert hv.nominal_pack_voltage_v == pytest.approx(614.4)
    assert hv.charge_pack_voltage_v == pytest.approx(662.4)
    with pytest.raises(ValidationError) as info:
        SystemConfig.model_validate(with_profiles(hv, profile))
    lines = explain_errors(info.value)
    assert lines[0] == (
        f"interfaces.can.profiles: CAN profile {profile} is for 48 V inverters, which take at "
        f"most 63 V; this pack reaches 729.6 V (192 cells x 3.80 V); choose pylon_hv or native"
    )
    assert "frames end at 327.67 V" in lines[1]
    for high_voltage in (("pylon_hv",), ("native",), ("pylon_hv", "native")):
        SystemConfig.model_validate(with_profiles(hv, *high_voltage))
    # a 304 V pack fits the frames (327.67 V) but still no 48 V inverter
    mid = SystemConfig.from_preset("LFP", modules=5, cells_per_module=16)
    with pytest.raises(ValidationError, match="48 V inverters") as info:
        SystemConfig.model_validate(with_profiles(mid, profile))
    assert len(explain_errors(info.value)) == 1
    # 16 LFP cells reach 60.8 V: a 48 V pack; 17 reach 64.6 V
    SystemConfig.model_validate(with_profiles(LFP_16S, profile))
    lfp_17s = SystemConfig.from_preset("LFP", modules=1, cells_per_module=17)
    with pytest.raises(ValidationError, match=r"this pack reaches 64\.60 V"):
        SystemConfig.model_validate(with_profiles(lfp_17s, profile))
    disabled = with_profiles(hv, profile)
    disabled["interfaces"]["can"]["enabled"] = False  # a disabled bus carries nothing
    SystemConfig.model_validate(disabled)


def test_demo_system() -> None:
    demo = demo_config()
    assert demo == DEMO_SYSTEM
    assert demo.system_id == "demo"
    assert demo.chemistry == "NMC"
    assert (demo.topology.modules, demo.topology.cells_per_module) == (7, 14)
    assert demo.total_cells == 98 <= CELLS_IN_SERIES_MAX
    assert demo.charge_pack_voltage_v == pytest.approx(411.6)
    assert demo.protection.pack_overvoltage.fault.threshold <= PACK_VOLTAGE_MAX_V
    assert demo_config("rack-2").system_id == "rack-2"


def test_per_module_cell_counts() -> None:
    data = demo_dict()
    data["topology"]["module_cell_counts"] = [14, 14, 14, 14, 14, 14, 12]
    data["protection"] = ProtectionConfig.from_chemistry(
        CHEMISTRY_PRESETS["NMC"], cells_in_series=96, cell_capacity_ah=100
    ).model_dump()
    config = SystemConfig.model_validate(data)
    assert config.total_cells == 96
    assert config.topology.cells_in_module(6) == 12
    assert config.topology.cells_in_module(0) == 14
    with pytest.raises(IndexError):
        config.topology.cells_in_module(7)


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("chemistry", CHEMISTRY_NAMES)
def test_json_round_trip(chemistry: str) -> None:
    config = SystemConfig.from_preset(chemistry, system_id="site_1", modules=6, cells_per_module=16)
    as_json = json.dumps(config.model_dump(mode="json"))
    assert SystemConfig.model_validate(json.loads(as_json)) == config
    assert SystemConfig.model_validate_json(config.model_dump_json()) == config


def test_msgpack_round_trip() -> None:
    packed = msgpack.packb(DEMO_SYSTEM.model_dump(mode="python"), use_bin_type=True)
    assert SystemConfig.model_validate(msgpack.unpackb(packed, raw=False)) == DEMO_SYSTEM


def test_round_trip_with_overrides_and_module_counts() -> None:
    data = demo_dict()
    data["chemistry_overrides"] = {"charge_v": 4.15, "balance_start_v": 3.9}
    data["balancing"]["min_cell_voltage_v"] = 3.9
    config = SystemConfig.model_validate(data)
    assert config.cell_chemistry.charge_v == 4.15
    assert SystemConfig.model_validate(config.model_dump(mode="json")) == config


def test_models_are_frozen() -> None:
    with pytest.raises(ValidationError):
        DEMO_SYSTEM.system_id = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        DEMO_SYSTEM.protection.cell_overvoltage.fault.threshold = 5.0  # type: ignore[misc]


# --- rejected configurations ----------------------------------------------------------------


def test_warning_above_alarm() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["protection"]["cell_overvoltage"]["warning"].update(threshold=4.30, release=4.25)

    lines = rejected(mutate)
    assert lines == [
        "protection.cell_overvoltage: the warning threshold 4.30 V must be below the alarm "
        "threshold 4.20 V"
    ]


def test_low_side_ordering() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["protection"]["cell_undervoltage"]["fault"].update(threshold=3.25, release=3.5)

    one_line_with(
        rejected(mutate),
        "protection.cell_undervoltage:",
        "the alarm threshold 3.20 V must be above the fault threshold 3.25 V",
    )


def test_release_on_the_wrong_side() -> None:
    def high(d: dict[str, Any]) -> None:
        d["protection"]["cell_overvoltage"]["fault"]["release"] = 4.30

    one_line_with(
        rejected(high),
        "protection.cell_overvoltage:",
        "the fault release 4.30 V must be below its threshold 4.25 V",
    )

    def low(d: dict[str, Any]) -> None:
        d["protection"]["cell_undertemp_charge"]["alarm"]["release"] = 0.0

    one_line_with(
        rejected(low),
        "protection.cell_undertemp_charge:",
        "the alarm release 0.0 °C must be above its threshold 2.0 °C",
    )


def test_wrong_direction() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["protection"]["cell_overtemp_charge"]["direction"] = "low"

    assert rejected(mutate) == [
        "protection.cell_overtemp_charge: direction is 'low' but the levels are ordered as for "
        "a high-side limit; check direction"
    ]

    def consistent_but_wrong(d: dict[str, Any]) -> None:
        d["protection"]["charge_overcurrent"] = d["protection"]["cell_undertemp_charge"]

    one_line_with(rejected(consistent_but_wrong), "charge_overcurrent: must be a high-side limit")


def test_too_many_cells() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["topology"]["modules"] = 15

    one_line_with(
        rejected(mutate),
        "topology.modules: 15 modules x 14 cells make 210 cells in series",
        "at most 196",
    )
    with pytest.raises(ValidationError, match="197 cells in series"):
        SystemConfig.from_preset("LFP", modules=197, cells_per_module=1)
    with pytest.raises(ValidationError, match="200 cells in series"):
        Topology(modules=2, cells_per_module=100, module_cell_counts=(100, 100))


def test_module_cell_counts_must_match() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["topology"]["module_cell_counts"] = [14, 14, 15]

    lines = rejected(mutate)
    one_line_with(lines, "topology.module_cell_counts: lists 3 modules but modules is 7")
    one_line_with(lines, "topology.module_cell_counts:", "1 to 14 cells", "[15]")


def test_pack_above_hardware_limit() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["protection"]["pack_overvoltage"]["fault"]["threshold"] = 990.0

    one_line_with(
        rejected(mutate),
        "protection.pack_overvoltage: the fault threshold 990.0 V is outside the measurement range",
        "980.0 V",
    )


def test_pack_limits_consistent_with_cells() -> None:
    def above_cells(d: dict[str, Any]) -> None:
        d["protection"]["pack_overvoltage"]["fault"]["threshold"] = 420.0

    one_line_with(
        rejected(above_cells),
        "protection.pack_overvoltage: the fault threshold 420.0 V is above 98 cells x the cell "
        "fault threshold 4.25 V = 416.5 V",
    )

    def below_full_charge(d: dict[str, Any]) -> None:
        pack = d["protection"]["pack_overvoltage"]
        pack["warning"].update(threshold=400.0, release=395.0)
        pack["alarm"].update(threshold=405.0, release=395.0)
        pack["fault"].update(threshold=410.0, release=395.0)

    one_line_with(
        rejected(below_full_charge),
        "protection.pack_overvoltage: the fault threshold 410.0 V must be above the full-charge "
        "voltage 98 cells x 4.20 V = 411.6 V",
    )

    def uv_below_cells(d: dict[str, Any]) -> None:
        d["protection"]["pack_undervoltage"]["fault"]["threshold"] = 250.0

    one_line_with(rejected(uv_below_cells), "protection.pack_undervoltage:", "294.0 V")


def test_balancing_current_limit() -> None:
    for current in (500, 750.0):

        def mutate(d: dict[str, Any], current: float = current) -> None:
            d["balancing"]["current_ma"] = current

        one_line_with(
            rejected(mutate),
            "balancing.current_ma: balancing current",
            "below the hardware limit of 500 mA",
        )

    def small_resistor(d: dict[str, Any]) -> None:
        d["balancing"]["bleed_resistor_ohm"] = 8.0

    one_line_with(
        rejected(small_resistor), "balancing.bleed_resistor_ohm: 8 Ω draws 531 mA at 4.25 V"
    )

    def active(d: dict[str, Any]) -> None:
        d["balancing"].update(mode="active", bleed_resistor_ohm=8.0, current_ma=499.0)

    data = demo_dict()
    active(data)
    assert SystemConfig.model_validate(data).balancing.current_ma == 499.0


LFP_16S = SystemConfig.from_preset("LFP", modules=1, cells_per_module=16)


def balancing(config: SystemConfig, **changes: Any) -> dict[str, Any]:
    data = config.model_dump(mode="json")
    data["balancing"].update(changes)
    return data


def test_passive_balancing_current_is_what_flows_through_the_bleed_resistor() -> None:
    assert LFP_16S.balancing.current_ma == 97.0  # 3.2 V / 33 Ω
    with pytest.raises(ValidationError) as info:
        SystemConfig.model_validate(balancing(LFP_16S, current_ma=200.0))
    assert explain_errors(info.value) == [
        "balancing.current_ma, balancing.bleed_resistor_ohm: 200 mA cannot flow through the "
        "33 Ω bleed resistor: at the nominal 3.20 V it is 97 mA, at the charge voltage 3.45 V "
        "105 mA; in passive mode the resistor sets the current: enter 97 mA or choose the "
        "resistor for 200 mA (16 Ω)"
    ]
    # between the nominal and the charge voltage, 10 % either way: 87.3 to 115.0 mA
    for current, fits in ((87.0, False), (87.5, True), (100.0, True), (115.0, True),
                          (115.2, False), (50.0, False)):  # fmt: skip
        data = balancing(LFP_16S, current_ma=current)
        if fits:
            assert SystemConfig.model_validate(data).balancing.current_ma == current
        else:
            with pytest.raises(ValidationError, match="cannot flow through the 33 Ω"):
                SystemConfig.model_validate(data)
    # a new resistor needs its own current
    with pytest.raises(ValidationError, match=r"at the nominal 3\.20 V it is 145 mA"):
        SystemConfig.model_validate(balancing(LFP_16S, bleed_resistor_ohm=22.0))
    assert SystemConfig.model_validate(balancing(LFP_16S, bleed_resistor_ohm=22.0,
                                                 current_ma=145.5))  # fmt: skip
    # active: the converter sets the current; off: nothing flows
    for mode in ("active", "off"):
        assert SystemConfig.model_validate(balancing(LFP_16S, mode=mode, current_ma=200.0))


@given(
    chemistry=st.sampled_from(CHEMISTRY_NAMES),
    resistor_ohm=st.floats(9.0, 1000.0),
    factor=st.floats(0.0, 3.0),
)
def test_passive_bleed_current_accepted_exactly_within_v_over_r(
    chemistry: str, resistor_ohm: float, factor: float
) -> None:
    from shared.config.system import BLEED_CURRENT_TOLERANCE, bleed_current_ma

    base = SystemConfig.from_preset(chemistry, modules=1, cells_per_module=4)
    chem = base.cell_chemistry
    stated = bleed_current_ma(chem.nominal_v, resistor_ohm)
    assert SystemConfig.model_validate(
        balancing(base, bleed_resistor_ohm=resistor_ohm, current_ma=stated)
    )
    current = round(stated * factor, 3)
    assume(0.0 < current < BALANCING_CURRENT_MAX_MA)
    low = (1 - BLEED_CURRENT_TOLERANCE) * 1000.0 * chem.nominal_v / resistor_ohm
    high = (1 + BLEED_CURRENT_TOLERANCE) * 1000.0 * chem.charge_v / resistor_ohm
    data = balancing(base, bleed_resistor_ohm=resistor_ohm, current_ma=current)
    if low <= current <= high:
        SystemConfig.model_validate(data)
    else:
        with pytest.raises(ValidationError, match="cannot flow through"):
            SystemConfig.model_validate(data)


def test_balancing_consistency() -> None:
    def threshold(d: dict[str, Any]) -> None:
        d["balancing"]["threshold_v"] = 0.2

    one_line_with(
        rejected(threshold),
        "balancing.threshold_v: 0.20 V must be below the cell_imbalance warning threshold",
    )

    def min_voltage(d: dict[str, Any]) -> None:
        d["balancing"]["min_cell_voltage_v"] = 3.0

    one_line_with(rejected(min_voltage), "balancing.min_cell_voltage_v: 3.00 V must lie between")


def test_cell_limits_outside_hardware_range() -> None:
    def high(d: dict[str, Any]) -> None:
        d["chemistry_overrides"] = {"ov_limit_v": 5.0}

    one_line_with(
        rejected(high),
        "chemistry_overrides.ov_limit_v: 5.00 V is outside the cell-voltage measurement range "
        "1.00 V to 4.95 V",
    )

    def low(d: dict[str, Any]) -> None:
        d["chemistry_overrides"] = {"deep_discharge_v": 0.9}

    one_line_with(rejected(low), "chemistry_overrides.deep_discharge_v: 0.90 V is outside")

    def protection(d: dict[str, Any]) -> None:
        d["protection"]["cell_overvoltage"]["fault"]["threshold"] = 5.0

    one_line_with(
        rejected(protection),
        "protection.cell_overvoltage: the fault threshold 5.00 V is outside the measurement range "
        "1.00 V to 4.95 V",
    )


def test_protection_looser_than_the_cell() -> None:
    def ov(d: dict[str, Any]) -> None:
        d["protection"]["cell_overvoltage"]["fault"]["threshold"] = 4.30

    one_line_with(
        rejected(ov),
        "protection.cell_overvoltage: the fault threshold 4.30 V is above the absolute limit "
        "4.25 V of the NMC cell",
    )

    def temp(d: dict[str, Any]) -> None:
        d["protection"]["cell_overtemp_charge"]["fault"].update(threshold=50.0, release=45.0)

    one_line_with(
        rejected(temp),
        "protection.cell_overtemp_charge: the fault threshold 50.0 °C is above the maximum charge "
        "temperature 45.0 °C",
    )

    def alarm_below_charge(d: dict[str, Any]) -> None:
        d["chemistry_overrides"] = {"charge_v": 4.2}
        d["protection"]["cell_overvoltage"]["alarm"]["threshold"] = 4.18

    one_line_with(
        rejected(alarm_below_charge),
        "the alarm threshold 4.18 V is below the charge voltage 4.20 V",
    )


def test_ocv_table_not_spanning_the_window() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["chemistry_overrides"] = {"charge_v": 4.35, "ov_alarm_v": 4.35, "ov_limit_v": 4.40}

    one_line_with(
        rejected(mutate),
        "chemistry_overrides.ocv_table_v: the OCV table ends at 4.212 V (100 % SOC), below "
        "charge_v 4.35 V",
        "does not span the operating window 3.20 V to 4.35 V",
    )


@pytest.mark.parametrize(
    "system_id", ["", "Demo", "demo 1", "-demo", "_x", "a/b", "a+b", "sys#", "x" * 33, "dÃ©mo"]
)
def test_bad_system_id(system_id: str) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["system_id"] = system_id

    one_line_with(
        rejected(mutate), f"system_id: system id {system_id!r} is not valid", "MQTT topic level"
    )


@pytest.mark.parametrize("system_id", ["a", "demo", "site-1_rack-2", "0", "x" * 32])
def test_good_system_id(system_id: str) -> None:
    assert SystemConfig.model_validate(demo_dict() | {"system_id": system_id})


def test_unknown_field() -> None:
    def top(d: dict[str, Any]) -> None:
        d["chemestry"] = "NMC"

    assert rejected(top) == ["chemestry: unknown setting (check the spelling)"]

    def nested(d: dict[str, Any]) -> None:
        d["protection"]["cell_overvoltage"]["fault"]["delay"] = 1.0

    assert rejected(nested) == [
        "protection.cell_overvoltage.fault.delay: unknown setting (check the spelling)"
    ]


@pytest.mark.parametrize("unit_id", [0, 248, 255, -1])
def test_modbus_unit_id_out_of_range(unit_id: int) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["interfaces"]["modbus"]["unit_id"] = unit_id

    one_line_with(
        rejected(mutate), f"interfaces.modbus.unit_id: Modbus unit id {unit_id} is not allowed"
    )


def test_modbus_unit_id_bounds_accepted() -> None:
    assert ModbusConfig(unit_id=1).unit_id == 1
    assert ModbusConfig(unit_id=247).unit_id == 247


def test_interface_settings() -> None:
    with pytest.raises(ValidationError, match="baud rate 12345 is not supported"):
        ModbusConfig(rtu_baudrate=12345)
    with pytest.raises(ValidationError, match="cannot run on the same CAN channel"):
        CanConfig(profiles=("victron_0x35x", "pylon_v12"))
    with pytest.raises(ValidationError, match="more than once"):
        CanConfig(profiles=("native", "native"))
    with pytest.raises(ValidationError, match="no profile is selected"):
        CanConfig(profiles=())
    with pytest.raises(ValidationError, match="bit rate 333 is not supported"):
        CanConfig(bitrate=333)
    assert CanConfig(enabled=False, profiles=()).profiles == ()
    assert CanConfig(profiles=("pylon_hv", "native")).profiles == ("pylon_hv", "native")


def test_comm_loss_policy() -> None:
    assert CommLossPolicy().action == "open_immediately"
    assert CommLossPolicy(action="ride_through", ride_through_s=2.0).ride_through_s == 2.0
    with pytest.raises(ValidationError, match="must be above 0 and at most 5 s"):
        CommLossPolicy(action="ride_through", ride_through_s=30.0)
    with pytest.raises(ValidationError, match="has no effect"):
        CommLossPolicy(action="open_immediately", ride_through_s=3.0)


def test_current_sensor_and_overcurrent() -> None:
    def small_sensor(d: dict[str, Any]) -> None:
        d["current_sensor"]["range_a"] = 50.0

    one_line_with(
        rejected(small_sensor),
        "protection.charge_overcurrent: the fault threshold 100.0 A is beyond the current sensor "
        "range 50.0 A",
    )

    def too_big(d: dict[str, Any]) -> None:
        d["current_sensor"]["range_a"] = 300.0

    one_line_with(rejected(too_big), "current_sensor.range_a: 300.0 A", "200.0 A")


def test_precharge_checks() -> None:
    def timeout(d: dict[str, Any]) -> None:
        d["contactors"]["precharge_timeout_s"] = 0.3

    # one problem of three settings: the line names each (the wizard shows it at each)
    one_line_with(
        rejected(timeout),
        "contactors.precharge_timeout_s, contactors.precharge_resistor_ohm, "
        "contactors.dc_link_capacitance_f: the precharge timeout 0.3 s is too short: through "
        "the 100 Ω precharge resistor, the 2 mF DC link (R x C = 0.2 s) needs 0.81 s",
        "411.6 V",
    )

    def big_capacitor(d: dict[str, Any]) -> None:
        d["contactors"]["dc_link_capacitance_f"] = 0.0056

    one_line_with(rejected(big_capacitor), "the 5.6 mF DC link (R x C = 0.56 s) needs 2.27 s")

    def small_capacitor(d: dict[str, Any]) -> None:
        d["contactors"].update(dc_link_capacitance_f=470e-6, precharge_timeout_s=0.1)

    one_line_with(rejected(small_capacitor), "the 470 µF DC link")

    def diff(d: dict[str, Any]) -> None:
        d["contactors"]["precharge_voltage_diff_v"] = 50.0

    one_line_with(rejected(diff), "contactors.precharge_voltage_diff_v: 50.00 V", "inrush")


def test_timing_limits() -> None:
    def standby(d: dict[str, Any]) -> None:
        d["timing"]["sample_period_standby_s"] = 7.0

    assert rejected(standby) == ["timing.sample_period_standby_s: must be at most 5.0 (got 7.0)"]


def test_unknown_chemistry_and_missing_section() -> None:
    assert rejected(lambda d: d.update(chemistry="LiPo")) == [
        "chemistry: unknown chemistry 'LiPo'; choose one of LFP, NMC, NCA, LCO, LTO, NA_ION"
    ]
    assert rejected(lambda d: d.pop("protection")) == ["protection: required setting is missing"]
    data = demo_dict() | {"chemistry": "nmc"}
    assert SystemConfig.model_validate(data).chemistry == "NMC"


def test_explain_errors_lists_every_problem() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["system_id"] = "Bad Id"
        d["interfaces"]["modbus"]["unit_id"] = 0
        d["balancing"]["current_ma"] = 900

    lines = rejected(mutate)
    assert len(lines) == 3
    assert [line.split(":")[0] for line in lines] == [
        "system_id",
        "balancing.current_ma",
        "interfaces.modbus.unit_id",
    ]


# --- property-based -------------------------------------------------------------------------

distinct_values = st.lists(
    st.floats(-1000.0, 1000.0, allow_nan=False).map(lambda v: round(v, 3)),
    min_size=3,
    max_size=3,
    unique=True,
)
margins = st.tuples(*(st.floats(0.001, 50.0) for _ in range(3)))
delays = st.tuples(*(st.floats(0.0, 60.0) for _ in range(3)))


def _levels(
    direction: Direction, thresholds: tuple[float, ...], margin: tuple[float, ...]
) -> dict[str, Any]:
    sign = -1.0 if direction == "high" else 1.0
    return {
        name: {"threshold": t, "delay_s": 1.0, "release": t + sign * m}
        for name, t, m in zip(("warning", "alarm", "fault"), thresholds, margin, strict=True)
    }


@given(st.sampled_from(["high", "low"]), distinct_values, margins, delays)
def test_valid_three_levels_are_accepted(
    direction: Direction,
    values: list[float],
    margin: tuple[float, float, float],
    delay: tuple[float, float, float],
) -> None:
    ordered = sorted(values, reverse=direction == "low")
    levels = _levels(direction, tuple(ordered), margin)
    item = ThreeLevel.model_validate({"direction": direction, "unit": "V", **levels})
    assert item.problems() == []
    built = ThreeLevel.of(
        direction,
        "V",
        thresholds=(ordered[0], ordered[1], ordered[2]),
        releases=(item.warning.release, item.alarm.release, item.fault.release),
        delays_s=delay,
    )
    assert built.fault.delay_s == delay[2]
    assert ThreeLevel.model_validate(built.model_dump(mode="json")) == built


@given(st.sampled_from(["high", "low"]), distinct_values, margins)
def test_any_broken_ordering_is_rejected(
    direction: Direction, values: list[float], margin: tuple[float, float, float]
) -> None:
    ordered = tuple(sorted(values, reverse=direction == "low"))
    word = "below" if direction == "high" else "above"
    for perm in itertools.permutations(ordered):
        if perm == ordered:
            continue
        with pytest.raises(ValidationError) as info:
            ThreeLevel.model_validate(
                {"direction": direction, "unit": "V", **_levels(direction, perm, margin)}
            )
        text = "\n".join(explain_errors(info.value))
        assert f"must be {word} the" in text or "check direction" in text, text


@given(
    st.sampled_from(["high", "low"]),
    distinct_values,
    margins,
    st.sampled_from(["warning", "alarm", "fault"]),
    st.floats(0.0, 50.0),
)
def test_release_on_wrong_side_is_rejected(
    direction: Direction,
    values: list[float],
    margin: tuple[float, float, float],
    level: str,
    overshoot: float,
) -> None:
    ordered = tuple(sorted(values, reverse=direction == "low"))
    levels = _levels(direction, ordered, margin)
    threshold = levels[level]["threshold"]
    levels[level]["release"] = threshold + (overshoot if direction == "high" else -overshoot)
    with pytest.raises(ValidationError, match=f"the {level} release"):
        ThreeLevel.model_validate({"direction": direction, "unit": "V", **levels})


@given(
    st.sampled_from(CHEMISTRY_NAMES),
    st.integers(1, 40),
    st.integers(1, 40),
    st.floats(0.5, 2000.0),
)
def test_any_topology_within_limits_is_valid(
    chemistry: str, modules: int, cells: int, capacity: float
) -> None:
    if modules * cells > CELLS_IN_SERIES_MAX:
        with pytest.raises(ValidationError, match="cells in series"):
            SystemConfig.from_preset(
                chemistry, modules=modules, cells_per_module=cells, cell_capacity_ah=capacity
            )
        return
    config = SystemConfig.from_preset(
        chemistry, modules=modules, cells_per_module=cells, cell_capacity_ah=capacity
    )
    assert SystemConfig.model_validate(config.model_dump(mode="json")) == config


def test_level_threshold_delay_must_not_be_negative() -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        LevelThreshold(threshold=1.0, delay_s=-1.0, release=0.5)


def test_a_module_cannot_ask_for_more_channels_than_its_telemetry_carries() -> None:
    from shared.messages.slave import MAX_CELLS_PER_MODULE, MAX_TEMPS_PER_MODULE

    most = Topology(
        modules=1,
        cells_per_module=MAX_CELLS_PER_MODULE,
        temp_sensors_per_module=MAX_TEMPS_PER_MODULE,
    )
    assert most.total_cells == MAX_CELLS_PER_MODULE
    with pytest.raises(ValidationError, match=f"less than or equal to {MAX_TEMPS_PER_MODULE}"):
        Topology(modules=1, cells_per_module=4, temp_sensors_per_module=MAX_TEMPS_PER_MODULE + 1)
    # module_cell_counts keeps the string short; cells_per_module is still one board's channels
    with pytest.raises(ValidationError, match=f"less than or equal to {MAX_CELLS_PER_MODULE}"):
        Topology(modules=1, cells_per_module=MAX_CELLS_PER_MODULE + 1, module_cell_counts=(4,))
