"""The configuration wizard: fields by introspection, form round trips, re-derivation, errors."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from services.config_ui import wizard
from services.config_ui.wizard import (
    STEPS,
    FieldSpec,
    apply_form,
    errors_for_step,
    fields_for_step,
    first_step_with_errors,
    level_charts,
    new_draft,
    validate,
)
from services.config_ui.wizard.fields import LEVEL_OVERRIDES
from shared.config import (
    CHEMISTRY_NAMES,
    CanProfile,
    SystemConfig,
    get_preset,
)
from shared.config.interfaces import CAN_BITRATES, MODBUS_BAUDRATES
from shared.config.limits import CELLS_IN_SERIES_MAX

STEP_KEYS = [s.key for s in STEPS]
FORM_STEPS = [k for k in STEP_KEYS if k != "review"]


def _leaves(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix


def _get(draft: Mapping[str, Any], path: str) -> Any:
    node: Any = draft
    for part in path.split("."):
        node = node[part]
    return node


def _form(fields: list[FieldSpec]) -> dict[str, str]:
    """What a browser posts for the rendered fields: unticked checkboxes are left out."""
    return {f.path: f.value for f in fields if not (f.kind == "checkbox" and f.value == "")}


def _post(key: str, draft: Mapping[str, Any], **changes: str) -> wizard.FormResult:
    form = _form(fields_for_step(key, draft))
    form.update({path.replace("__", "."): value for path, value in changes.items()})
    return apply_form(key, draft, form)


def _field(key: str, draft: Mapping[str, Any], path: str) -> FieldSpec:
    return next(f for f in fields_for_step(key, draft) if f.path == path)


# ---------------------------------------------------------------------------------------------
# Steps


def test_steps_in_order_with_navigation() -> None:
    assert STEP_KEYS == [
        "chemistry",
        "cells",
        "topology",
        "protection",
        "balancing",
        "contactors",
        "current_sensor",
        "interfaces",
        "review",
    ]
    assert wizard.step("protection").sections == ("protection",)
    assert wizard.next_step("chemistry") == "cells"
    assert wizard.next_step("review") is None
    assert wizard.prev_step("cells") == "chemistry"
    assert wizard.prev_step("chemistry") is None
    assert all(s.title and s.help for s in STEPS)
    with pytest.raises(KeyError):
        wizard.step("nope")
    with pytest.raises(KeyError):
        fields_for_step("nope", new_draft("demo"))


def test_every_top_level_setting_belongs_to_exactly_one_step() -> None:
    for name in SystemConfig.model_fields:
        owners = [s.key for s in STEPS if name in s.sections]
        expected = 0 if name in ("system_id", "config_version") else 1
        assert len(owners) == expected, (name, owners)


# ---------------------------------------------------------------------------------------------
# Introspection


def test_every_config_leaf_appears_in_exactly_one_step() -> None:
    draft = SystemConfig.from_preset("NMC", modules=7, cells_per_module=14).model_dump(mode="json")
    expected = {
        p
        for p in _leaves(draft)
        if p not in ("system_id", "config_version")
        and p not in LEVEL_OVERRIDES  # their levels live on the Protection step only
        and not (p.startswith("protection.") and p.rsplit(".", 1)[1] in ("direction", "unit"))
    }
    seen: dict[str, list[str]] = {}
    for key in STEP_KEYS:
        for f in fields_for_step(key, draft):
            seen.setdefault(f.path, []).append(key)
    assert set(seen) == expected
    assert {p: keys for p, keys in seen.items() if len(keys) != 1} == {}
    assert fields_for_step("review", draft) == []


def test_fields_carry_kind_unit_choices_bounds_and_description() -> None:
    draft = new_draft("demo", "LFP")
    ov = _field("protection", draft, "protection.cell_overvoltage.fault.threshold")
    assert (ov.kind, ov.unit, ov.group, ov.label) == (
        "number",
        "V",
        "Cell over-voltage",
        "Fault threshold",
    )
    assert ov.group_path == "protection.cell_overvoltage"
    assert ov.value == "3.8"
    hot = _field("protection", draft, "protection.cell_overtemp_charge.alarm.release")
    assert hot.unit == "°C"
    delay = _field("protection", draft, "protection.charge_overcurrent.fault.delay_s")
    assert (delay.unit, delay.minimum, delay.maximum) == ("s", 0.0, 3600.0)
    assert _field("protection", draft, "protection.charge_overcurrent.fault.threshold").unit == "A"

    units = {
        "cells": {"cell_capacity_ah": "Ah", "cell_resistance_mohm": "mΩ"},
        "balancing": {"balancing.bleed_resistor_ohm": "Ω", "balancing.current_ma": "mA"},
        "contactors": {"contactors.dc_link_capacitance_f": "mF", "comm_loss.ride_through_s": "s"},
        "current_sensor": {"current_sensor.gain": ""},
    }
    for key, by_path in units.items():
        for path, unit in by_path.items():
            assert _field(key, draft, path).unit == unit, path

    resistance = _field("cells", draft, "cell_resistance_mohm")
    assert resistance.optional and resistance.value == ""
    assert "internal resistance" in resistance.description
    sensors = _field("topology", draft, "topology.temp_sensors_per_module")
    assert (sensors.kind, sensors.minimum, sensors.maximum) == ("integer", 1.0, 64.0)

    assert [f.path for f in fields_for_step("chemistry", draft)] == ["chemistry", "name"]
    chem = _field("chemistry", draft, "chemistry")
    assert chem.kind == "select" and chem.choices == CHEMISTRY_NAMES and chem.value == "LFP"
    baud = _field("interfaces", draft, "interfaces.modbus.rtu_baudrate")
    assert baud.kind == "select" and baud.choices == tuple(str(b) for b in MODBUS_BAUDRATES)
    bitrate = _field("interfaces", draft, "interfaces.can.bitrate")
    assert bitrate.choices == tuple(str(b) for b in CAN_BITRATES)
    profiles = _field("interfaces", draft, "interfaces.can.profiles")
    assert profiles.kind == "multiselect" and profiles.choices == get_args(CanProfile)
    assert _field("interfaces", draft, "interfaces.modbus.tcp_enabled").kind == "checkbox"
    assert _field("interfaces", draft, "interfaces.modbus.rtu_stop_bits").choices == ("1", "2")


def test_chemistry_overrides_are_optional_and_name_the_preset_value() -> None:
    draft = new_draft("demo", "LFP")
    overrides = [
        f for f in fields_for_step("cells", draft) if f.path.startswith("chemistry_overrides.")
    ]
    assert overrides and all(f.optional and f.value == "" for f in overrides)
    charge = next(f for f in overrides if f.path == "chemistry_overrides.charge_v")
    assert charge.unit == "V"
    assert f"{get_preset('LFP').charge_v:g} V" in charge.description
    ocv = next(f for f in overrides if f.path == "chemistry_overrides.ocv_table_v")
    assert ocv.kind == "text"
    # the value an empty override falls back to is the preset's, whatever else is overridden
    draft["chemistry_overrides"]["charge_v"] = 3.45
    charge = _field("cells", draft, "chemistry_overrides.charge_v")
    assert charge.value == "3.45"
    assert f"{get_preset('LFP').charge_v:g} V" in charge.description


def test_fields_render_from_an_invalid_draft() -> None:
    draft: dict[str, Any] = {"protection": {"cell_overvoltage": "x"}, "topology": [1, 2]}
    for key in STEP_KEYS:
        fields = fields_for_step(key, draft)
        assert all(isinstance(f.value, str) for f in fields)
    assert _field("protection", draft, "protection.cell_overvoltage.fault.threshold").value == ""


# ---------------------------------------------------------------------------------------------
# Form round trip


@pytest.mark.parametrize("chemistry", CHEMISTRY_NAMES)
@pytest.mark.parametrize("key", FORM_STEPS)
def test_posting_the_rendered_fields_back_changes_nothing(chemistry: str, key: str) -> None:
    draft = new_draft("demo", chemistry, modules=7, cells_per_module=14)
    result = apply_form(key, draft, _form(fields_for_step(key, draft)))
    assert result.errors == {}
    assert not result.rederived
    assert result.draft == draft


@st.composite
def drafts(draw: st.DrawFn) -> dict[str, Any]:
    chemistry = draw(st.sampled_from(CHEMISTRY_NAMES))
    modules = draw(st.integers(1, 16))
    cells_per_module = draw(st.integers(1, CELLS_IN_SERIES_MAX // modules))
    capacity = draw(st.floats(1.0, 2000.0).map(lambda c: round(c, 2)))
    try:
        return new_draft(
            "demo",
            chemistry,
            modules=modules,
            cells_per_module=cells_per_module,
            cell_capacity_ah=capacity,
        )
    except ValueError:
        assume(False)
        raise


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(draft=drafts(), key=st.sampled_from(FORM_STEPS))
def test_round_trip_for_any_preset_and_topology(draft: dict[str, Any], key: str) -> None:
    result = apply_form(key, draft, _form(fields_for_step(key, draft)))
    assert (result.draft, result.errors, result.rederived) == (draft, {}, False)
    assert validate(result.draft)[1] == {}


def test_apply_form_does_not_mutate_its_input() -> None:
    draft = new_draft("demo", "LFP")
    before = new_draft("demo", "LFP")
    _post("protection", draft, protection__cell_overvoltage__fault__threshold="3.7")
    _post("chemistry", draft, chemistry="NMC")
    assert draft == before


def test_missing_text_fields_keep_their_value() -> None:
    draft = new_draft("demo", "LFP")
    result = apply_form("topology", draft, {"topology.modules": "3"})
    assert result.draft["topology"]["cells_per_module"] == 8
    assert result.draft["topology"]["modules"] == 3


# ---------------------------------------------------------------------------------------------
# Re-derivation from the preset


def test_the_full_charge_interval_follows_the_chemistry_unless_the_user_set_it() -> None:
    draft = new_draft("demo", "LFP")
    assert draft["full_charge"]["interval_days"] == 5.0
    field = _field("cells", draft, "full_charge.interval_days")
    assert (field.label, field.unit, field.optional) == ("Interval", "days", True)
    nmc = _post("chemistry", draft, chemistry="NMC").draft
    assert nmc["full_charge"]["interval_days"] is None  # never, for NMC
    back = _post("chemistry", nmc, chemistry="LFP").draft
    assert back["full_charge"]["interval_days"] == 5.0
    # the user's interval stays through a resize (a chemistry change derives everything again)
    mine = _post("cells", back, full_charge__interval_days="14").draft
    assert mine["full_charge"]["interval_days"] == 14.0
    resized = _post("topology", mine, topology__modules="3").draft
    assert resized["full_charge"]["interval_days"] == 14.0
    off = _post("cells", mine, full_charge__interval_days="").draft
    assert off["full_charge"]["interval_days"] is None
    config, errors = validate(off)
    assert errors == {} and config is not None and config.full_charge.interval_days is None


def test_chemistry_change_rederives_protection_and_clears_overrides() -> None:
    draft = new_draft("demo", "LFP")
    draft["chemistry_overrides"]["charge_v"] = 3.5
    draft["name"] = "Garage battery"
    # settings the user made that a new chemistry must not undo
    draft["current_sensor"]["range_a"] = 150.0
    draft["comm_loss"] = {"action": "ride_through", "ride_through_s": 2.0}
    draft["timing"]["sample_period_standby_s"] = 3.0
    draft["interfaces"]["modbus"]["tcp_port"] = 1502
    draft["contactors"]["precharge_resistor_ohm"] = 47.0
    draft["topology"]["temp_sensors_per_module"] = 4
    draft["cell_resistance_mohm"] = 0.3

    result = _post("chemistry", draft, chemistry="NMC")
    new = result.draft
    assert result.rederived and result.errors == {}
    nmc = SystemConfig.from_preset("NMC", modules=2, cells_per_module=8)
    assert new["chemistry"] == "NMC"
    assert (
        new["protection"]["cell_overvoltage"]["fault"]["threshold"] == get_preset("NMC").ov_limit_v
    )
    assert new["protection"] == nmc.model_dump(mode="json")["protection"]
    assert new["balancing"] == nmc.model_dump(mode="json")["balancing"]
    assert new["contactors"]["precharge_voltage_diff_v"] == nmc.contactors.precharge_voltage_diff_v
    assert all(v is None for v in new["chemistry_overrides"].values())
    assert new["name"] == "Garage battery"
    assert new["current_sensor"]["range_a"] == 150.0
    assert new["comm_loss"] == {"action": "ride_through", "ride_through_s": 2.0}
    assert new["timing"]["sample_period_standby_s"] == 3.0
    assert new["interfaces"]["modbus"]["tcp_port"] == 1502
    assert new["contactors"]["precharge_resistor_ohm"] == 47.0
    assert new["topology"]["temp_sensors_per_module"] == 4
    assert new["cell_resistance_mohm"] == 0.3
    assert validate(new)[1] == {}


def test_topology_change_rederives_pack_thresholds_and_keeps_overrides() -> None:
    draft = new_draft("demo", "LFP", modules=2, cells_per_module=8)
    draft["chemistry_overrides"]["charge_v"] = 3.45
    result = _post("topology", draft, topology__modules="4", topology__temp_sensors_per_module="3")
    new = result.draft
    assert result.rederived
    cell_fault = new["protection"]["cell_overvoltage"]["fault"]["threshold"]
    assert new["protection"]["pack_overvoltage"]["fault"]["threshold"] == pytest.approx(
        32 * cell_fault
    )
    assert new["topology"] == {
        "modules": 4,
        "cells_per_module": 8,
        "temp_sensors_per_module": 3,
        "module_cell_counts": None,
    }
    assert new["chemistry_overrides"]["charge_v"] == 3.45
    config, errors = validate(new)
    assert errors == {} and config is not None and config.total_cells == 32


def test_module_cell_counts_set_the_cell_count_for_the_thresholds() -> None:
    draft = new_draft("demo", "NMC", modules=3, cells_per_module=14)
    result = _post("topology", draft, topology__module_cell_counts="14, 14, 12")
    assert result.rederived
    assert result.draft["topology"]["module_cell_counts"] == [14, 14, 12]
    expected = SystemConfig.from_preset("NMC", modules=1, cells_per_module=40)
    assert result.draft["protection"] == expected.model_dump(mode="json")["protection"]
    assert validate(result.draft)[1] == {}


def test_capacity_change_rederives_current_thresholds() -> None:
    draft = new_draft("demo", "LFP", cell_capacity_ah=100.0)
    result = _post("cells", draft, cell_capacity_ah="50")
    assert result.rederived
    assert result.draft["protection"]["charge_overcurrent"]["fault"]["threshold"] == 50.0
    # the resistance is not a sizing value
    result = _post("cells", draft, cell_resistance_mohm="0.25")
    assert not result.rederived and result.draft["cell_resistance_mohm"] == 0.25


# override -> (value, protection level it sets) for an NMC cell (absolute maximum 4.25 V,
# absolute minimum 3.0 V, damage voltage 2.5 V)
OVERRIDE_LEVELS = {
    "ov_limit_v": (4.22, {"cell_overvoltage.fault.threshold": 4.22}),
    "uv_limit_v": (3.05, {"cell_undervoltage.fault.threshold": 3.05}),
    "deep_discharge_v": (2.6, {"deep_discharge_v": 2.6}),
}


@pytest.mark.parametrize("override", sorted(OVERRIDE_LEVELS))
def test_a_cell_limit_override_becomes_its_protection_level(override: str) -> None:
    draft = new_draft("demo", "NMC", modules=2, cells_per_module=8)
    # a hand-tuned value the override does not move
    draft["protection"]["cell_imbalance"]["warning"]["threshold"] = 0.09
    value, levels = OVERRIDE_LEVELS[override]
    result = _post("cells", draft, **{f"chemistry_overrides__{override}": str(value)})
    new = result.draft
    assert result.rederived and result.errors == {}
    assert new["chemistry_overrides"][override] == value
    expected_moved = set()
    for path, expected in levels.items():
        assert _get(new["protection"], path) == expected, path
        expected_moved.add(path)
        if path.startswith("cell_"):
            assert _get(new["protection"], _pack_of(path)) == pytest.approx(16 * expected)
            expected_moved.add(_pack_of(path))
    # only what the override moves: every other protection value stays as it was
    before, after = dict(_protection_leaves(draft)), dict(_protection_leaves(new))
    moved = {p for p in before if before[p] != after[p]}
    assert moved == expected_moved
    assert {c.path.removeprefix("protection.") for c in result.changes} == expected_moved
    assert new["protection"]["cell_imbalance"]["warning"]["threshold"] == 0.09
    config, errors = validate(new)
    assert errors == {} and config is not None
    assert config.cell_chemistry.model_dump()[override] == value


def _pack_of(cell_path: str) -> str:
    quantity, rest = cell_path.split(".", 1)
    return f"pack_{quantity.removeprefix('cell_')}.{rest}"


def _protection_leaves(draft: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    for path in _leaves(draft["protection"]):
        yield path, _get(draft["protection"], path)


def test_clearing_an_override_returns_its_level_to_the_preset() -> None:
    draft = new_draft("demo", "NMC")
    draft = _post("cells", draft, chemistry_overrides__ov_limit_v="4.22").draft
    result = _post("cells", draft, chemistry_overrides__ov_limit_v="")
    assert result.rederived
    assert result.draft["protection"] == new_draft("demo", "NMC")["protection"]


def test_an_inconsistent_override_moves_no_level_and_is_reported() -> None:
    draft = new_draft("demo", "NMC")
    result = _post("cells", draft, chemistry_overrides__ov_limit_v="4.18")  # below the alarm
    assert not result.rederived
    assert result.draft["protection"] == draft["protection"]
    _, errors = validate(result.draft)
    assert first_step_with_errors(errors) == "cells"


def test_a_new_size_keeps_the_overridden_levels() -> None:
    draft = new_draft("demo", "NMC", modules=2, cells_per_module=8)
    draft = _post("cells", draft, chemistry_overrides__uv_limit_v="3.05").draft
    result = _post("topology", draft, topology__modules="3")
    assert result.rederived
    assert result.draft["protection"]["cell_undervoltage"]["fault"]["threshold"] == 3.05
    assert result.draft["protection"]["pack_undervoltage"]["fault"]["threshold"] == pytest.approx(
        24 * 3.05
    )


def test_the_ocv_source_is_the_override_or_the_preset_table_s() -> None:
    draft = new_draft("demo", "NMC")
    assert wizard.ocv_source(draft) == get_preset("NMC").ocv_source != ""
    draft["chemistry_overrides"]["ocv_source"] = "Cell maker X datasheet rev 3, table 4"
    assert wizard.ocv_source(draft) == "Cell maker X datasheet rev 3, table 4"
    draft["chemistry_overrides"]["ocv_source"] = None
    draft["chemistry_overrides"]["ocv_table_v"] = [3.0, 4.2]
    assert wizard.ocv_source(draft) == ""  # the preset's citation is not this table's
    assert wizard.ocv_source({"chemistry": "nonsense"}) == ""


def test_no_rederivation_outside_the_sizing_steps_or_without_a_change() -> None:
    draft = new_draft("demo", "LFP")
    assert not _post("chemistry", draft, name="Other name").rederived
    assert not _post("topology", draft, topology__temp_sensors_per_module="4").rederived
    assert not _post("topology", draft, topology__modules="abc").rederived


def test_unusable_new_size_is_not_rederived() -> None:
    draft = new_draft("demo", "LFP")
    result = _post("topology", draft, topology__modules="40")  # 320 cells: beyond the hardware
    assert not result.rederived
    assert result.draft["topology"]["modules"] == 40
    assert result.draft["protection"] == draft["protection"]
    _, errors = validate(result.draft)
    assert "topology.modules" in errors
    assert first_step_with_errors(errors) == "topology"


# ---------------------------------------------------------------------------------------------
# Validation errors at their fields


def test_alarm_above_fault_is_reported_at_the_quantity_in_the_protection_step() -> None:
    draft = new_draft("demo", "LFP")
    result = _post("protection", draft, protection__cell_overvoltage__alarm__threshold="3.9")
    assert result.errors == {}
    assert result.draft["protection"]["cell_overvoltage"]["alarm"]["threshold"] == 3.9
    # the pack alarm follows the cell's (16 x 3.9 V), and is then above the pack fault too
    assert result.draft["protection"]["pack_overvoltage"]["alarm"]["threshold"] == 62.4
    config, errors = validate(result.draft)
    assert config is None
    assert set(errors) == {"protection.cell_overvoltage", "protection.pack_overvoltage"}
    assert any(
        "alarm threshold" in m and "fault threshold" in m
        for m in errors["protection.cell_overvoltage"]
    )
    assert errors_for_step("protection", errors) == errors
    assert errors_for_step("balancing", errors) == {}
    assert first_step_with_errors(errors) == "protection"
    assert result.draft["protection"]["pack_overvoltage"]["fault"]["threshold"] == 60.8
    group_paths = {f.group_path for f in fields_for_step("protection", result.draft)}
    assert "protection.cell_overvoltage" in group_paths


def test_system_level_problems_land_on_their_field() -> None:
    draft = new_draft("demo", "LFP")
    draft["balancing"]["threshold_v"] = 0.3  # above the imbalance warning
    config, errors = validate(draft)
    assert config is None
    assert set(errors) == {"balancing.threshold_v"}
    assert "cell_imbalance warning" in errors["balancing.threshold_v"][0]
    assert first_step_with_errors(errors) == "balancing"
    # a field error: the system-level checks only run once every field is valid
    draft["cell_resistance_mohm"] = -1.0
    _, errors = validate(draft)
    assert errors == {
        "cell_resistance_mohm": ["Cell resistance must be greater than 0 mΩ (got -1 mΩ)"]
    }
    assert first_step_with_errors(errors) == "cells"
    assert errors_for_step("cells", errors) == errors


def test_errors_below_a_field_map_to_the_field_and_unknown_keys_to_the_review() -> None:
    draft = new_draft("demo", "LFP")
    draft["topology"]["module_cell_counts"] = [8, "x"]
    draft["surprise"] = 1
    draft["protection"]["cell_overvoltage"]["direction"] = "sideways"
    _, errors = validate(draft)
    assert errors["topology.module_cell_counts"][0].startswith("1: ")
    assert "protection.cell_overvoltage" in errors  # direction is not a field of the form
    assert "surprise" in errors
    assert errors_for_step("review", errors) == {"surprise": errors["surprise"]}
    assert first_step_with_errors(errors) == "topology"


def test_non_number_reports_a_parse_error_and_keeps_the_old_value() -> None:
    draft = new_draft("demo", "LFP")
    path = "protection.cell_overvoltage.fault.threshold"
    result = apply_form(
        "protection", draft, {**_form(fields_for_step("protection", draft)), path: "3,8x"}
    )
    assert result.errors == {path: ["'3,8x' is not a number"]}
    assert result.typed == {path: "3,8x"}
    assert _get(result.draft, path) == 3.8
    result = _post("topology", draft, topology__modules="2.5", topology__cells_per_module="")
    assert result.errors == {
        "topology.modules": ["'2.5' is not a whole number"],
        "topology.cells_per_module": ["a value is required"],
    }
    assert result.draft["topology"] == draft["topology"]
    result = _post("current_sensor", draft, current_sensor__gain="nan")
    assert result.errors == {"current_sensor.gain": ["'nan' is not a finite number"]}


def test_empty_optional_is_none_and_lists_parse() -> None:
    draft = new_draft("demo", "LFP")
    result = _post(
        "cells",
        draft,
        cell_resistance_mohm="0.4",
        chemistry_overrides__charge_v="3.55",
        chemistry_overrides__ocv_table_soc_pct="0, 50, 100",
        chemistry_overrides__ocv_table_v="2.8; 3.3 3.6",
    )
    assert result.errors == {}
    new = result.draft
    assert new["cell_resistance_mohm"] == 0.4
    assert new["chemistry_overrides"]["charge_v"] == 3.55
    assert new["chemistry_overrides"]["ocv_table_soc_pct"] == [0.0, 50.0, 100.0]
    assert new["chemistry_overrides"]["ocv_table_v"] == [2.8, 3.3, 3.6]
    assert validate(new)[1] == {}
    back = _post("cells", new, cell_resistance_mohm="", chemistry_overrides__ocv_table_v=" ")
    assert back.draft["cell_resistance_mohm"] is None
    assert back.draft["chemistry_overrides"]["ocv_table_v"] is None
    bad = _post("cells", new, chemistry_overrides__ocv_table_v="2.8, x")
    assert bad.errors == {"chemistry_overrides.ocv_table_v": ["'x' is not a number"]}


def test_select_accepts_only_its_choices() -> None:
    draft = new_draft("demo", "LFP")
    result = _post(
        "interfaces",
        draft,
        interfaces__modbus__rtu_baudrate="19200",
        interfaces__modbus__rtu_stop_bits="2",
    )
    assert result.draft["interfaces"]["modbus"]["rtu_baudrate"] == 19200
    assert result.draft["interfaces"]["modbus"]["rtu_stop_bits"] == 2
    result = _post("interfaces", draft, interfaces__modbus__rtu_baudrate="12345")
    assert result.errors["interfaces.modbus.rtu_baudrate"][0].startswith("choose one of 1200, 2400")
    assert result.draft["interfaces"]["modbus"]["rtu_baudrate"] == 9600
    result = _post("chemistry", draft, chemistry="Graphene")
    assert "choose one of LFP, NMC" in result.errors["chemistry"][0]
    assert result.draft["chemistry"] == "LFP" and not result.rederived


# ---------------------------------------------------------------------------------------------
# Checkbox and multiselect


def test_checkbox_semantics() -> None:
    draft = new_draft("demo", "LFP")
    assert draft["interfaces"]["modbus"]["tcp_enabled"] is True
    form = _form(fields_for_step("interfaces", draft))
    assert form["interfaces.modbus.tcp_enabled"] == "true"
    assert "interfaces.modbus.rtu_enabled" not in form  # unticked: the browser leaves it out

    del form["interfaces.modbus.tcp_enabled"]
    form["interfaces.modbus.rtu_enabled"] = "on"  # a browser's default checkbox value
    new = apply_form("interfaces", draft, form).draft
    assert new["interfaces"]["modbus"]["tcp_enabled"] is False
    assert new["interfaces"]["modbus"]["rtu_enabled"] is True
    for off in ("", "false", "0", "off"):
        form["interfaces.modbus.rtu_enabled"] = off
        assert (
            apply_form("interfaces", draft, form).draft["interfaces"]["modbus"]["rtu_enabled"]
            is False
        )
    assert _field("interfaces", new, "interfaces.modbus.tcp_enabled").value == ""
    # a hidden empty input before the checkbox, joined with it by the page: ",true"
    form["interfaces.modbus.rtu_enabled"] = ",true"
    assert apply_form("interfaces", draft, form).draft["interfaces"]["modbus"]["rtu_enabled"]
    assert _field("interfaces", new, "interfaces.modbus.rtu_enabled").value == "true"


def test_multiselect_of_can_profiles() -> None:
    draft = new_draft("demo", "NMC", modules=7, cells_per_module=14)
    assert _field("interfaces", draft, "interfaces.can.profiles").value == "pylon_hv"
    result = _post("interfaces", draft, interfaces__can__profiles="pylon_hv,native")
    assert result.draft["interfaces"]["can"]["profiles"] == ["pylon_hv", "native"]
    assert _field("interfaces", result.draft, "interfaces.can.profiles").value == "pylon_hv,native"
    assert validate(result.draft)[1] == {}

    result = _post("interfaces", draft, interfaces__can__profiles="victron_0x35x,pylon_v12")
    _, errors = validate(result.draft)
    assert "interfaces.can.profiles" in errors

    form = _form(fields_for_step("interfaces", draft))
    del form["interfaces.can.profiles"]  # nothing selected
    result = apply_form("interfaces", draft, form)
    assert result.draft["interfaces"]["can"]["profiles"] == []
    _, errors = validate(result.draft)
    assert any("no profile" in m for m in errors["interfaces.can.profiles"])
    assert first_step_with_errors(errors) == "interfaces"

    result = _post("interfaces", draft, interfaces__can__profiles=",native")  # hidden "" first
    assert result.draft["interfaces"]["can"]["profiles"] == ["native"]

    result = _post("interfaces", draft, interfaces__can__profiles="pylon_hv,bogus")
    assert "choose one of" in result.errors["interfaces.can.profiles"][0]
    assert result.draft["interfaces"]["can"]["profiles"] == ["pylon_hv"]


def test_small_lfp_pack_derives_the_victron_profile() -> None:
    draft = new_draft("demo", "NMC", modules=7, cells_per_module=14)
    result = _post("chemistry", draft, chemistry="LFP")
    result = _post("topology", result.draft, topology__modules="2", topology__cells_per_module="8")
    assert result.rederived
    assert result.draft["interfaces"]["can"]["profiles"] == ["victron_0x35x"]


# ---------------------------------------------------------------------------------------------
# Level charts


def test_level_charts_match_the_config() -> None:
    config = SystemConfig.from_preset("NMC", modules=7, cells_per_module=14)
    draft = wizard.draft_from_config(config)
    charts = {c.quantity: c for c in level_charts(draft)}
    assert set(charts) == {name for name, _ in config.protection.quantities()}
    for name, three in config.protection.quantities():
        chart = charts[name]
        assert chart.direction == three.direction
        assert chart.levels == tuple(
            (level, lv.threshold, lv.release, lv.delay_s) for level, lv in three.levels()
        )
        values = [v for _, t, r, _ in chart.levels for v in (t, r)] + list(chart.normal or ())
        assert chart.axis[0] < min(values) or chart.axis[0] == 0.0 == min(values)
        assert chart.axis[1] > max(values)
    preset = get_preset("NMC")
    assert charts["cell_overvoltage"].normal == (preset.discharge_cutoff_v, preset.charge_v)
    assert charts["cell_overvoltage"].title == "Cell over-voltage"
    assert charts["cell_overvoltage"].unit == "V"
    assert charts["cell_overtemp_charge"].unit == "°C"
    assert charts["pack_undervoltage"].normal == pytest.approx(
        (98 * preset.discharge_cutoff_v, 98 * preset.charge_v)
    )
    assert charts["cell_imbalance"].normal == (0.0, config.balancing.threshold_v)
    assert charts["charge_overcurrent"].normal is None


def test_level_charts_use_the_overrides_and_skip_what_cannot_be_read() -> None:
    draft = new_draft("demo", "LFP")
    draft["chemistry_overrides"]["charge_v"] = 3.45
    draft["protection"]["cell_undervoltage"]["alarm"]["threshold"] = "low"
    del draft["protection"]["pack_overvoltage"]
    charts = {c.quantity: c for c in level_charts(draft)}
    assert charts["cell_overvoltage"].normal == (get_preset("LFP").discharge_cutoff_v, 3.45)
    assert "cell_undervoltage" not in charts and "pack_overvoltage" not in charts
    assert len(charts) == 9
    assert level_charts({}) == []
    assert level_charts({"protection": "x", "chemistry": 5}) == []


# ---------------------------------------------------------------------------------------------
# Robustness

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def _check_errors(errors: dict[str, list[str]]) -> None:
    assert errors
    assert all(
        isinstance(p, str) and m and all(isinstance(x, str) for x in m) for p, m in errors.items()
    )
    assert first_step_with_errors(errors) is not None


@settings(max_examples=150, deadline=None)
@given(draft=json_values)
def test_validate_never_raises_on_garbage(draft: Any) -> None:
    config, errors = validate(draft)
    assert config is None
    _check_errors(errors)
    level_charts(draft if isinstance(draft, Mapping) else {})


@st.composite
def damaged_drafts(draw: st.DrawFn) -> dict[str, Any]:
    draft = new_draft("demo", draw(st.sampled_from(CHEMISTRY_NAMES)))
    paths = sorted(_leaves(draft))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(paths))
        node = draft
        *parents, last = path.split(".")
        for part in parents:
            node = node[part]
        if draw(st.booleans()):
            node[last] = draw(json_values)
        else:
            node.pop(last, None)
    return draft


@settings(max_examples=150, deadline=None)
@given(draft=damaged_drafts())
def test_validate_never_raises_on_damaged_drafts(draft: dict[str, Any]) -> None:
    config, errors = validate(draft)
    if config is None:
        _check_errors(errors)
    for key in STEP_KEYS:
        fields_for_step(key, draft)
    level_charts(draft)


@settings(max_examples=100, deadline=None)
@given(key=st.sampled_from(FORM_STEPS), data=st.data())
def test_apply_form_never_raises_on_garbage_text(key: str, data: st.DataObject) -> None:
    draft = new_draft("demo", "LFP")
    fields = fields_for_step(key, draft)
    form = {f.path: data.draw(st.text(max_size=12)) for f in fields}
    result = apply_form(key, draft, form)
    assert set(result.errors) <= {f.path for f in fields}
    config, errors = validate(result.draft)
    if config is None:
        _check_errors(errors)


def test_validate_accepts_a_valid_draft() -> None:
    draft = new_draft("site-1", "LTO", modules=4, cells_per_module=12)
    config, errors = validate(draft)
    assert errors == {} and config is not None
    assert config.system_id == "site-1" and config.total_cells == 48
    assert wizard.draft_from_config(config) == draft


# ---------------------------------------------------------------------------------------------
# Nothing changes behind the user's back (issue 14)

OV = "protection.cell_overvoltage"
CHARGE_OC = "protection.charge_overcurrent"


def test_capacity_change_keeps_hand_tuned_thresholds_and_lists_what_it_derives() -> None:
    draft = new_draft("demo", "LFP", cell_capacity_ah=100.0)
    tuned = _post(
        "protection",
        draft,
        **{
            "protection__cell_overvoltage__warning__threshold": "3.55",
            "protection__cell_overvoltage__fault__threshold": "3.75",
            "protection__pack_overvoltage__fault__threshold": "60",  # 16 x 3.75 V
            "protection__charge_overcurrent__warning__threshold": "85",
        },
    )
    assert tuned.edited == {
        f"{OV}.warning.threshold",
        f"{OV}.fault.threshold",
        "protection.pack_overvoltage.fault.threshold",
        f"{CHARGE_OC}.warning.threshold",
    }
    assert validate(tuned.draft)[1] == {}
    result = apply_form(
        "cells",
        tuned.draft,
        {**_form(fields_for_step("cells", tuned.draft)), "cell_capacity_ah": "200"},
        edited=tuned.edited,
    )
    new = result.draft
    assert result.rederived and result.errors == {}
    # the hand-tuned voltages stay (the example: 3.55 -> 3.5 and 3.75 -> 3.8)
    assert _get(new, f"{OV}.warning.threshold") == 3.55
    assert _get(new, f"{OV}.fault.threshold") == 3.75
    # the current thresholds follow the capacity, but the hand-tuned one stays and is offered
    assert _get(new, f"{CHARGE_OC}.fault.threshold") == 200.0
    assert _get(new, f"{CHARGE_OC}.warning.threshold") == 85.0
    # with its release: a level's threshold and release are one setting
    assert _get(new, f"{CHARGE_OC}.warning.release") == 72.0
    changes = {c.path: c for c in result.changes}
    fault = changes[f"{CHARGE_OC}.fault.threshold"]
    assert (fault.old, fault.new, fault.kept) == (100.0, 200.0, False)
    warning = changes[f"{CHARGE_OC}.warning.threshold"]
    assert (warning.old, warning.new, warning.kept) == (85.0, 160.0, True)
    # only what the capacity moves is listed: no voltage level
    assert not any(p.startswith(OV) for p in changes)
    assert validate(new)[1] == {}


def test_values_differing_from_the_old_derivation_count_as_hand_tuned() -> None:
    """A draft opened from an applied version has no edit record: its tuned values differ
    from what the preset derives, and that is what keeps them."""
    draft = new_draft("demo", "LFP", cell_capacity_ah=100.0)
    draft["protection"]["cell_overvoltage"]["warning"]["threshold"] = 3.55
    draft["protection"]["discharge_overcurrent"]["alarm"]["threshold"] = 95.0
    result = _post("cells", draft, cell_capacity_ah="50")
    assert _get(result.draft, f"{OV}.warning.threshold") == 3.55
    assert _get(result.draft, "protection.discharge_overcurrent.alarm.threshold") == 95.0
    assert _get(result.draft, "protection.discharge_overcurrent.fault.threshold") == 50.0
    kept = {c.path for c in result.changes if c.kept}
    assert kept == {
        "protection.discharge_overcurrent.alarm.threshold",
        "protection.discharge_overcurrent.alarm.release",
    }


def test_a_size_change_derives_from_the_chemistry_as_overridden() -> None:
    draft = new_draft("demo", "LFP", cell_capacity_ah=100.0)
    result = _post("cells", draft, chemistry_overrides__balance_start_v="3.35")
    assert result.draft["balancing"]["min_cell_voltage_v"] == 3.35
    result = _post("cells", result.draft, cell_capacity_ah="200")
    assert result.draft["balancing"]["min_cell_voltage_v"] == 3.35
    assert result.draft["chemistry_overrides"]["balance_start_v"] == 3.35


def test_each_rederived_field_can_keep_its_old_value_and_back() -> None:
    draft = new_draft("demo", "LFP", cell_capacity_ah=100.0)
    result = _post("cells", draft, cell_capacity_ah="200")
    path = f"{CHARGE_OC}.fault.threshold"
    change = next(c for c in result.changes if c.path == path)
    kept = wizard.choose(result.draft, frozenset(), result.changes, path, keep_old=True)
    assert _get(kept.draft, path) == 100.0
    assert path in kept.edited
    assert next(c for c in kept.changes if c.path == path) == replace(change, kept=True)
    # its release goes with it (a level's threshold and release are one setting)
    release = f"{CHARGE_OC}.fault.release"
    assert _get(kept.draft, release) == 90.0 and release in kept.edited
    # the other changes stay as they were
    pair = {path, release}
    assert [c for c in kept.changes if c.path not in pair] == [
        c for c in result.changes if c.path not in pair
    ]
    back = wizard.choose(kept.draft, kept.edited, kept.changes, path, keep_old=False)
    assert _get(back.draft, path) == 200.0 and path not in back.edited
    assert _get(back.draft, release) == 180.0 and release not in back.edited
    assert back.changes == result.changes
    with pytest.raises(KeyError):
        wizard.choose(result.draft, frozenset(), result.changes, "protection.nope", keep_old=True)


def test_rederived_fields_are_labelled_for_people() -> None:
    draft = new_draft("demo", "LFP", cell_capacity_ah=100.0)
    result = _post("cells", draft, cell_capacity_ah="200")
    rows = {r.path: r for r in wizard.describe_changes(result.changes, result.draft)}
    row = rows[f"{CHARGE_OC}.fault.threshold"]
    assert (row.step, row.label, row.old, row.new, row.unit) == (
        "protection", "Charge over-current fault threshold", "100", "200", "A"
    )  # fmt: skip


@pytest.mark.parametrize(
    ("path", "typed", "message"),
    [
        ("topology.modules", "12.5", "'12.5' is not a whole number"),
        ("topology.modules", "twelve", "'twelve' is not a number"),
        ("topology.cells_per_module", "", "a value is required"),
    ],
)
def test_invalid_input_is_shown_as_typed_with_its_error(
    path: str, typed: str, message: str
) -> None:
    draft = new_draft("demo", "LFP")
    result = _post("topology", draft, **{path.replace(".", "__"): typed})
    assert result.errors == {path: [message]}
    assert result.typed == {path: typed}
    assert _get(result.draft, path) == _get(draft, path)  # the draft keeps a valid value
    shown = next(
        f for f in fields_for_step("topology", result.draft, result.typed) if f.path == path
    )
    assert shown.value == typed


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("balancing.threshold_v", 20.0,
         "Balancing threshold must be at most 500 mV (got 20 V; 20 mV is 0.02 V)"),
        ("balancing.threshold_v", 0.0, "Balancing threshold must be greater than 0 V (got 0 V)"),
        ("topology.temp_sensors_per_module", 65,
         "Topology temperature sensors per module must be at most 64 (got 65)"),
        ("protection.charge_overcurrent.fault.delay_s", -1.0,
         "Charge over-current fault delay must be at least 0 s (got -1 s)"),
        ("protection.insulation_fault_ohm", -5.0,
         "Protection insulation fault must be greater than 0 Ω (got -5 Ω)"),
    ],
)  # fmt: skip
def test_range_messages_name_the_field_and_carry_units(path: str, value: Any, message: str) -> None:
    draft = new_draft("demo", "LFP")
    node = draft
    *parents, last = path.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    _, errors = validate(draft)
    assert errors[path] == [message]


def test_quantities_read_in_the_unit_people_use() -> None:
    from services.config_ui.wizard.validation import quantity

    assert quantity(0.5, "V") == "500 mV"
    assert quantity(0.02, "V") == "20 mV"
    assert quantity(3.65, "V") == "3.65 V"
    assert quantity(0.0, "V") == "0 V"
    assert quantity(50_000.0, "Ω") == "50 kΩ"
    assert quantity(2e6, "Ω") == "2 MΩ"
    assert quantity(0.2, "s") == "200 ms"
    assert quantity(12, "") == "12"
    assert quantity(45.0, "°C") == "45 °C"


def test_each_threshold_lives_in_one_place_with_the_same_words() -> None:
    draft = new_draft("demo", "LFP")
    cells = {f.path: f for f in fields_for_step("cells", draft)}
    protection = {f.path: f for f in fields_for_step("protection", draft)}
    # the warning/alarm levels and their releases: on the Protection step only
    assert not LEVEL_OVERRIDES & set(cells)
    for quantity in ("cell_overvoltage", "cell_undervoltage"):
        for level in ("warning", "alarm", "fault"):
            for attr in ("threshold", "release"):
                assert f"protection.{quantity}.{level}.{attr}" in protection
    # the cell's datasheet limits stay with the cell data, named as limits that bound a fault
    limit = cells["chemistry_overrides.ov_limit_v"]
    assert limit.label == "Absolute maximum voltage"
    assert "over-voltage fault threshold (Protection step)" in limit.description
    assert cells["chemistry_overrides.deep_discharge_v"].label == "Damage voltage"
    assert protection["protection.deep_discharge_v"].label == "Deep-discharge fault"
    # one vocabulary: warning, alarm, fault, release (no 'reset' or 'OV limit' levels)
    labels = [f.label for f in [*cells.values(), *protection.values()]]
    assert not [label for label in labels if "reset" in label.lower() or "OV " in label]
    groups = {f.group for f in protection.values()}
    assert {"Cell over-voltage", "Cell under-voltage", "Pack over-voltage"} <= groups


def test_pack_voltage_levels_follow_a_cell_level_the_user_sets() -> None:
    draft = new_draft("demo", "LFP", modules=2, cells_per_module=8)  # 16 cells
    result = _post("protection", draft, protection__cell_overvoltage__warning__threshold="3.55")
    pack = "protection.pack_overvoltage.warning.threshold"
    assert _get(result.draft, pack) == 56.8  # 16 x 3.55 V, was 16 x 3.5 V
    assert [(c.path, c.old, c.new, c.kept) for c in result.changes] == [(pack, 56.0, 56.8, False)]
    assert validate(result.draft)[1] == {}
    # a pack level the user set stays, and is offered
    result = _post(
        "protection",
        draft,
        protection__cell_undervoltage__fault__threshold="2.6",
        protection__pack_undervoltage__fault__threshold="41",
    )
    assert _get(result.draft, "protection.pack_undervoltage.fault.threshold") == 41.0
    assert result.changes == ()
    later = apply_form(
        "protection",
        result.draft,
        {**_form(fields_for_step("protection", result.draft)),
         "protection.cell_undervoltage.fault.threshold": "2.65"},
        edited=result.edited,
    )  # fmt: skip
    assert _get(later.draft, "protection.pack_undervoltage.fault.threshold") == 41.0
    assert [(c.path, c.new, c.kept) for c in later.changes] == [
        ("protection.pack_undervoltage.fault.threshold", 42.4, True)
    ]
    # a pack level set apart from the cells (not n x the cell level) is left alone
    draft["protection"]["pack_overvoltage"]["fault"]["threshold"] = 60.0
    result = _post("protection", draft, protection__cell_overvoltage__fault__threshold="3.78")
    assert _get(result.draft, "protection.pack_overvoltage.fault.threshold") == 60.0
    assert result.changes == ()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    draft=drafts(),
    capacity=st.floats(1.0, 2000.0).map(lambda c: round(c, 1)),
    modules=st.integers(1, 8),
    data=st.data(),
)
def test_a_new_size_never_changes_a_field_the_user_set(
    draft: dict[str, Any], capacity: float, modules: int, data: st.DataObject
) -> None:
    derived = sorted(
        p for p in _leaves(draft)
        if p.startswith(("protection.", "balancing.")) and p.rsplit(".", 1)[1] not in
        ("direction", "unit")
    )  # fmt: skip
    edited = frozenset(data.draw(st.lists(st.sampled_from(derived), max_size=8)))
    cells = apply_form(
        "cells",
        draft,
        {**_form(fields_for_step("cells", draft)), "cell_capacity_ah": str(capacity)},
        edited=edited,
    )
    result = apply_form(
        "topology",
        cells.draft,
        {**_form(fields_for_step("topology", cells.draft)), "topology.modules": str(modules)},
        edited=edited,
    )
    for path in edited:
        assert _get(result.draft, path) == _get(draft, path), path
    # every field that moved is listed, with where it came from
    for step_result, before in ((cells, draft), (result, cells.draft)):
        listed = {c.path: c for c in step_result.changes}
        for path in derived:
            if _get(step_result.draft, path) != _get(before, path):
                change = listed[path]
                assert (change.old, change.new, change.kept) == (
                    _get(before, path),
                    _get(step_result.draft, path),
                    False,
                )


# ---------------------------------------------------------------------------------------------
# Cross-field problems at every field they concern


BLEED = "balancing.bleed_resistor_ohm"
BALANCING_CURRENT = "balancing.current_ma"
PRECHARGE_FIELDS = (
    "contactors.precharge_timeout_s",
    "contactors.precharge_resistor_ohm",
    "contactors.dc_link_capacitance_f",
)


def test_a_bleed_current_that_cannot_flow_is_shown_at_the_current_and_the_resistor() -> None:
    draft = new_draft("demo", "LFP")
    assert _field("balancing", draft, BALANCING_CURRENT).value == "97"
    result = _post("balancing", draft, balancing__current_ma="200")
    assert result.changes == ()  # the user's current: nothing derived over it
    config, errors = validate(result.draft)
    assert config is None
    message = (
        "200 mA cannot flow through the 33 Ω bleed resistor: at the nominal 3.20 V it is 97 mA, "
        "at the charge voltage 3.45 V 105 mA; in passive mode the resistor sets the current: "
        "enter 97 mA or choose the resistor for 200 mA (16 Ω)"
    )
    assert errors == {BALANCING_CURRENT: [message], BLEED: [message]}
    assert errors_for_step("balancing", errors) == errors
    assert first_step_with_errors(errors) == "balancing"
    units = {f.path: f.unit for f in fields_for_step("balancing", result.draft)}
    assert (units[BALANCING_CURRENT], units[BLEED]) == ("mA", "Ω")


def test_a_new_bleed_resistor_sets_the_passive_current() -> None:
    draft = new_draft("demo", "LFP")
    result = _post("balancing", draft, balancing__bleed_resistor_ohm="22")
    assert result.draft["balancing"]["current_ma"] == 145.5  # 3.2 V / 22 Ω
    assert result.changes == (wizard.Rederivation(BALANCING_CURRENT, 97.0, 145.5, kept=False),)
    assert result.rederived
    assert validate(result.draft)[1] == {}
    rows = wizard.describe_changes(result.changes, result.draft)
    assert [(r.label, r.old, r.new, r.unit) for r in rows] == [
        ("Balancing current", "97", "145.5", "mA")
    ]
    # both set in one form: the user's current stays, and validation says if it cannot flow
    both = _post("balancing", draft, balancing__bleed_resistor_ohm="22", balancing__current_ma="99")
    assert both.changes == () and both.draft["balancing"]["current_ma"] == 99.0
    assert (
        "99 mA cannot flow through the 22 Ω bleed resistor: at the nominal 3.20 V it is "
        "145 mA" in validate(both.draft)[1][BLEED][0]
    )
    # a current the user set earlier is kept, and listed as kept
    kept = apply_form(
        "balancing",
        draft,
        {**_form(fields_for_step("balancing", draft)), BLEED: "22"},
        edited=frozenset({BALANCING_CURRENT}),
    )
    assert kept.changes == (wizard.Rederivation(BALANCING_CURRENT, 97.0, 145.5, kept=True),)
    assert kept.draft["balancing"]["current_ma"] == 97.0
    # active balancing: the converter sets the current, not the resistor
    active = _post("balancing", draft, balancing__mode="active")
    again = _post("balancing", active.draft, balancing__bleed_resistor_ohm="22")
    assert again.changes == () and again.draft["balancing"]["current_ma"] == 97.0
    assert validate(again.draft)[1] == {}


def test_a_precharge_too_slow_for_its_timeout_is_shown_at_its_three_fields() -> None:
    draft = new_draft("demo", "NMC", modules=7, cells_per_module=14)
    shown = {f.path: (f.value, f.unit) for f in fields_for_step("contactors", draft)}
    assert shown["contactors.precharge_resistor_ohm"] == ("100", "Ω")
    assert shown["contactors.dc_link_capacitance_f"] == ("2", "mF")
    assert shown["contactors.precharge_timeout_s"] == ("2", "s")
    result = _post("contactors", draft, contactors__dc_link_capacitance_f="5.6")
    assert result.draft["contactors"]["dc_link_capacitance_f"] == 0.0056
    _, errors = validate(result.draft)
    message = (
        "the precharge timeout 2 s is too short: through the 100 Ω precharge resistor, the "
        "5.6 mF DC link (R x C = 0.56 s) needs 2.27 s to come within 7.11 V of the full pack "
        "411.6 V; raise the timeout or lower the resistor"
    )
    assert errors == {path: [message] for path in PRECHARGE_FIELDS}
    assert first_step_with_errors(errors) == "contactors"
    fixed = _post("contactors", result.draft, contactors__precharge_timeout_s="3")
    assert validate(fixed.draft)[1] == {}


def test_the_dc_link_capacitance_reads_in_millifarads() -> None:
    draft = new_draft("demo", "LFP")
    field = _field("contactors", draft, "contactors.dc_link_capacitance_f")
    assert (field.minimum, field.maximum) == (0.0, 1000.0)  # the model's 0 to 1 F
    for typed, farads in (("4.7", 0.0047), ("0.47", 0.00047), ("2", 0.002), ("2200", 2.2)):
        result = _post("contactors", draft, contactors__dc_link_capacitance_f=typed)
        assert result.draft["contactors"]["dc_link_capacitance_f"] == farads
        assert _field("contactors", result.draft, field.path).value == typed
    _, errors = validate(_post("contactors", draft, contactors__dc_link_capacitance_f="2200").draft)
    assert errors[field.path] == ["Contactors DC link capacitance must be at most 1 F (got 2.2 F)"]


def test_the_wizard_refuses_a_48_v_can_profile_for_a_614_v_pack() -> None:
    draft = new_draft("demo", "LFP", modules=12, cells_per_module=16)
    assert draft["interfaces"]["can"]["profiles"] == ["pylon_hv"]
    for profile in ("victron_0x35x", "pylon_v12"):
        result = _post("interfaces", draft, interfaces__can__profiles=profile)
        _, errors = validate(result.draft)
        assert errors["interfaces.can.profiles"][0] == (
            f"CAN profile {profile} is for 48 V inverters, which take at most 63 V; this pack "
            f"reaches 729.6 V (192 cells x 3.80 V); choose pylon_hv or native"
        )
        assert first_step_with_errors(errors) == "interfaces"
    result = _post("interfaces", draft, interfaces__can__profiles="pylon_hv,native")
    assert validate(result.draft)[1] == {}


def test_the_review_lists_a_problem_of_several_fields_once() -> None:
    errors = {
        "a.x": ["both", "only x"],
        "a.y": ["both"],
        "": ["no field"],
    }
    assert wizard.problems_once(errors) == [
        ("a.x, a.y", "both"),
        ("a.x", "only x"),
        ("", "no field"),
    ]


@settings(max_examples=60, deadline=None)
@given(
    chemistry=st.sampled_from(CHEMISTRY_NAMES),
    resistor_ohm=st.floats(9.0, 1000.0).map(lambda r: round(r, 1)),
)
def test_any_new_bleed_resistor_leaves_a_valid_draft(chemistry: str, resistor_ohm: float) -> None:
    draft = new_draft("demo", chemistry)
    result = _post("balancing", draft, balancing__bleed_resistor_ohm=str(resistor_ohm))
    assert validate(result.draft)[1] == {}
    nominal_v = get_preset(chemistry).nominal_v
    # the current is rounded to 0.1 mA: half a step off, plus the float error of a tie
    assert result.draft["balancing"]["current_ma"] == pytest.approx(
        1000.0 * nominal_v / resistor_ohm, abs=0.05 + 1e-9
    )
