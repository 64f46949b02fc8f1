"""Home Assistant discovery documents: checked against ha-mqtt-discoverable's models (Home
Assistant itself needs Python 3.13 and cannot be installed in this 3.11 environment), against
the device classes and units Home Assistant documents, and by rendering every template with
Jinja2 over the bridge's real JSON output."""

from __future__ import annotations

import json
from typing import Any

import jinja2
import pytest
from ha_mqtt_discoverable.sensors import BinarySensorInfo, ButtonInfo, SelectInfo, SensorInfo
from pydantic import ConfigDict

from services.integrations.ha import (
    BINARY_SENSORS,
    SENSORS,
    SITE_BINARY_SENSORS,
    SITE_SENSORS,
    DiscoveryOptions,
    discovery,
    node_id,
    site_discovery,
)
from shared.codec import encode_json
from shared.messages import CellSnapshot, HaCommand, ModuleCells
from shared.topics import JSON_PACK_CELLS, JSON_PACK_STATE, JSON_SERVICE_STATUS, JSON_SITE_STATE
from tests.factories import pack_state, site_state

TRANSPORT_KEYS = {
    "state_topic", "availability_topic", "availability_template", "payload_available",
    "payload_not_available", "origin", "availability", "availability_mode",
}  # fmt: skip
"""Keys of the MQTT discovery schema the library fills in itself (its models leave them out)."""


class StrictSensor(SensorInfo):
    model_config = ConfigDict(extra="forbid")


class StrictBinarySensor(BinarySensorInfo):
    model_config = ConfigDict(extra="forbid")


class StrictButton(ButtonInfo):
    model_config = ConfigDict(extra="forbid")


class StrictSelect(SelectInfo):
    model_config = ConfigDict(extra="forbid")


MODELS = {"sensor": StrictSensor, "binary_sensor": StrictBinarySensor, "button": StrictButton,
          "select": StrictSelect}  # fmt: skip
EXTRA_KEYS = {
    "binary_sensor": {"value_template", "json_attributes_topic", "json_attributes_template"},
    "button": {"command_topic"},
    "select": {"command_topic", "command_template", "state_topic", "value_template"},
}
"""Documented for each MQTT entity (https://www.home-assistant.io/integrations/<component>.mqtt/)
but absent from the library's models, which fill in topics themselves."""


UNITS = {
    # https://developers.home-assistant.io/docs/core/entity/sensor/#available-device-classes
    "battery": {"%"},
    "voltage": {"V", "mV", "µV", "kV", "MV"},
    "current": {"A", "mA"},
    "power": {"W", "kW", "MW", "GW", "TW", "mW", "BTU/h"},
    "temperature": {"°C", "°F", "K"},
    "energy": {"Wh", "kWh", "MWh", "GWh", "TWh", "MJ", "GJ", "mWh", "cal", "kcal", "Mcal", "Gcal"},
    "enum": {None},
    "duration": {"d", "h", "min", "s", "ms"},
    None: {None, "%"},
}
STATE_CLASSES = {"measurement", "total", "total_increasing", None}
BINARY_CLASSES = {"problem", "power", "connectivity", "running", "safety", "battery"}


def validate(component: str, doc: dict[str, Any]) -> Any:
    """The document through the library's model for its component, no unknown key allowed."""
    skip = TRANSPORT_KEYS | EXTRA_KEYS.get(component, set())
    fields = {k: v for k, v in doc.items() if k not in skip}
    return MODELS[component].model_validate({"component": component, **fields})


def docs(**opts: Any) -> list[tuple[str, dict[str, Any]]]:
    return discovery("site-1", DiscoveryOptions(**opts), [3, 2])


def test_every_document_is_valid_for_the_library_with_no_unknown_key() -> None:
    for topic, doc in docs(cell_sensors=True, commands=True):
        component = topic.split("/")[1]
        entity = validate(component, doc)
        assert entity.unique_id and entity.device is not None, topic


def test_topics_follow_the_discovery_scheme_and_ids_are_unique() -> None:
    found = docs(cell_sensors=True)
    topics = [t for t, _d in found]
    assert len(set(topics)) == len(topics)
    assert len({d["unique_id"] for _t, d in found}) == len(found)
    for topic, doc in found:
        prefix, component, node, obj, last = topic.split("/")
        assert (prefix, node, last) == ("homeassistant", "bms_site_1", "config")
        assert component in ("sensor", "binary_sensor") and doc["unique_id"] == f"{node}_{obj}"
        assert doc["device"]["identifiers"] == ["bms_site_1"]  # one device per system
        presence = JSON_SERVICE_STATUS.topic("site-1", instance="master_core")
        if "availability" in doc:  # the master's presence and the field's, both required
            assert doc["availability_mode"] == "all" and "availability_topic" not in doc
            assert [a["topic"] for a in doc["availability"]] == [presence, doc["state_topic"]]
        else:
            assert doc["availability_topic"] == presence


def test_device_class_unit_and_state_class_are_the_documented_ones() -> None:
    for _topic, doc in docs(cell_sensors=True):
        if "payload_on" in doc:
            assert doc.get("device_class") in BINARY_CLASSES | {None}
            continue
        cls = doc.get("device_class")
        assert doc.get("unit_of_measurement") in UNITS[cls], doc["name"]
        assert doc.get("state_class") in STATE_CLASSES
        if cls == "energy":
            assert doc["state_class"] == "total_increasing"
        if cls == "enum":
            assert "state_class" not in doc and doc["options"]


def test_the_entities_the_issue_asks_for_are_there() -> None:
    ids = {e.object_id for e in (*SENSORS, *BINARY_SENSORS)}
    wanted = {"soc", "soh", "voltage", "current", "power", "temp_min", "temp_max", "cell_v_min",
              "cell_v_max", "cell_v_spread", "charge_current_limit", "discharge_current_limit",
              "warning_active", "alarm_active", "fault_active", "contactors_closed"}  # fmt: skip
    assert wanted <= ids
    assert not any("cell_00" in t for t, _d in docs())  # per-cell sensors are opt-in
    assert sum("cell_0" in t for t, _d in docs(cell_sensors=True)) == 5
    assert not any("/button/" in t or "/select/" in t for t, _d in docs())  # commands: opt-in
    found = by_id(docs(commands=True))
    assert found["reset_faults"]["command_topic"] == "bms/v1/site-1/ha/cmd/reset_faults"
    assert found["mode_select"]["options"] == ["working", "standby"]
    command = ENV.from_string(found["mode_select"]["command_template"]).render(value="standby")
    assert HaCommand.model_validate_json(command).mode == "standby"
    assert HaCommand.model_validate_json(found["reset_faults"]["payload_press"]).mode is None


ENV = jinja2.Environment(undefined=jinja2.StrictUndefined)


def render(doc: dict[str, Any], payload: bytes) -> str:
    return ENV.from_string(doc["value_template"]).render(value_json=json.loads(payload))


def state_json(**overrides: Any) -> bytes:
    return encode_json(pack_state(**overrides), source="m", seq=1, ts=1.0)


def by_id(found: list[tuple[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {t.split("/")[3]: d for t, d in found}


def test_templates_render_numbers_from_the_mirror_and_unknown_as_none() -> None:
    found = by_id(docs())
    known = state_json(voltage=50.0, current=-10.0, cell_v_min=3.301, cell_v_max=3.312,
                       temp_max_c=31.5, alarms=["cell_ov"])  # fmt: skip
    assert render(found["voltage"], known) == "50.0"
    assert render(found["power"], known) == "-500.0"
    assert render(found["cell_v_spread"], known) == "11.0"
    assert render(found["temp_max"], known) == "31.5"
    assert render(found["alarm_active"], known) == "ON"
    assert render(found["fault_active"], known) == "OFF"
    assert render(found["contactors_closed"], known) == "ON"
    assert render(found["charge_current_limit"], known) == "50.0"
    unknown = state_json(voltage=None, current=None, soc=None, cell_v_min=None)
    # Home Assistant's MQTT sensor reads the payload "None" as unknown, never as 0
    for name in ("soc", "voltage", "current", "power", "cell_v_spread", "temp_min"):
        assert render(found[name], unknown) == "None", name
    for topic, doc in docs():
        assert doc["state_topic"] == JSON_PACK_STATE.topic("site-1"), topic
        render(doc, known)  # every template renders over a real state


@pytest.mark.parametrize("cell", [(0, 0), (0, 2), (1, 1)])
def test_cell_templates_pick_their_own_cell(cell: tuple[int, int]) -> None:
    module, index = cell
    snap = CellSnapshot(
        modules=[
            ModuleCells(module=m, fresh=True, cell_v=[3.0 + m + 0.1 * i for i in range(n)],
                        cell_flags=[0] * n, balancing=[False] * n, temp_c=[], temp_flags=[])
            for m, n in enumerate((3, 2))
        ]
    )  # fmt: skip
    payload = encode_json(snap, source="m", seq=1, ts=1.0)
    doc = by_id(docs(cell_sensors=True))[f"cell_{module:02d}_{index:02d}"]
    assert doc["state_topic"] == JSON_PACK_CELLS.topic("site-1")
    assert float(render(doc, payload)) == pytest.approx(3.0 + module + 0.1 * index)


def available(doc: dict[str, Any], payload: bytes) -> bool:
    """Home Assistant's verdict from the availability list: every topic's template must
    render its payload_available (`availability_mode: all`); the master is online here."""
    assert doc["availability_mode"] == "all"
    online = encode_json_status()
    verdicts = []
    for a in doc["availability"]:
        body = payload if a["topic"] == doc["state_topic"] else online
        rendered = ENV.from_string(a["value_template"]).render(value_json=json.loads(body))
        assert rendered in (a["payload_available"], a["payload_not_available"])
        verdicts.append(rendered == a["payload_available"])
    return all(verdicts)


def encode_json_status() -> bytes:
    return json.dumps({"state": "online"}).encode()


NEW_FIELDS = {
    "soc_std": ("soc_std", 2.5, "2.5"),
    "since_anchor": ("since_anchor_s", 86_400.0, "86400.0"),
    "current_zero_offset": ("current_zero_offset_a", -0.125, "-0.125"),
    "full_charge_requested": ("full_charge_requested", True, "ON"),
}
"""Entity: (pack state field, a known value, what the template renders of it)."""


@pytest.mark.parametrize("entity", sorted(NEW_FIELDS))
def test_the_anchor_entities_show_the_value_and_are_unavailable_while_unknown(entity: str) -> None:
    field, known, shown = NEW_FIELDS[entity]
    doc = by_id(docs())[entity]
    assert render(doc, state_json(**{field: known})) == shown
    assert available(doc, state_json(**{field: known}))
    # unknown: unavailable in Home Assistant, never 0 (and the template itself says None)
    assert not available(doc, state_json(**{field: None}))
    assert render(doc, state_json(**{field: None})) == "None"
    # a master from before the field: the mirror lacks it, still unavailable
    old = json.loads(state_json(**{field: None}))
    del old[field]
    assert not available(doc, json.dumps(old).encode())


def test_the_anchor_entities_are_declared_as_their_kind() -> None:
    found = by_id(docs())
    assert found["full_charge_requested"]["payload_on"] == "ON"
    assert render(found["full_charge_requested"], state_json(full_charge_requested=False)) == "OFF"
    offset = found["current_zero_offset"]
    assert (offset["device_class"], offset["unit_of_measurement"]) == ("current", "A")
    anchor = found["since_anchor"]
    assert (anchor["device_class"], anchor["unit_of_measurement"]) == ("duration", "s")
    assert found["soc_std"]["unit_of_measurement"] == "%"
    # the entities that are always known keep the master's presence alone
    assert "availability" not in found["soc"] and found["soc"]["availability_topic"]


# --- the site (BMS_SITE) ---------------------------------------------------------------------


def site_docs(**opts: Any) -> list[tuple[str, dict[str, Any]]]:
    return site_discovery("site-1", DiscoveryOptions(**opts))


def site_json(**overrides: Any) -> bytes:
    return encode_json(site_state(**overrides), source="site_controller", seq=1, ts=1.0)


def test_the_site_is_one_device_of_its_own_available_with_its_site_controller() -> None:
    found = site_docs(version="1.2")
    topics = [t for t, _d in found]
    assert len(set(topics)) == len(topics) == len(SITE_SENSORS) + len(SITE_BINARY_SENSORS)
    assert len({d["unique_id"] for _t, d in found}) == len(found)
    system_ids = {d["unique_id"] for _t, d in docs(cell_sensors=True, commands=True)}
    presence = JSON_SERVICE_STATUS.topic("site-1", instance="site_controller")
    for topic, doc in found:
        component = topic.split("/")[1]
        validate(component, doc)
        prefix, _c, node, obj, last = topic.split("/")
        assert (prefix, node, last) == ("homeassistant", "bms_site-site_1", "config")
        assert doc["unique_id"] == f"{node}_{obj}" and doc["unique_id"] not in system_ids
        assert node != node_id("site_site-1")  # a system whose id reads like the site's
        assert doc["device"]["identifiers"] == ["bms_site-site_1"]
        assert doc["device"]["name"] == "BMS site site-1" and doc["device"]["sw_version"] == "1.2"
        assert doc["state_topic"] == JSON_SITE_STATE.topic("site-1")
        # present while the site controller is, unavailable without a state for 30 s
        assert doc["availability_topic"] == presence and doc["expire_after"] == 30


def test_the_site_entities_are_declared_as_the_systems_are() -> None:
    for _topic, doc in site_docs():
        if "payload_on" in doc:
            assert doc.get("device_class") in BINARY_CLASSES | {None}
            continue
        cls = doc.get("device_class")
        assert doc.get("unit_of_measurement") in UNITS[cls], doc["name"]
        assert doc.get("state_class") in STATE_CLASSES
        if cls == "energy":
            assert doc["state_class"] == "total_increasing"
        if cls == "enum":
            assert "state_class" not in doc and doc["options"]
    site, system = by_id(site_docs()), by_id(docs())
    for same in (
        "soc",
        "soh",
        "voltage",
        "current",
        "power",
        "charge_current_limit",
        "discharge_current_limit",
        "charge_voltage_limit",
        "soc_std",
        "since_anchor",
    ):
        for key in ("device_class", "unit_of_measurement", "state_class", "entity_category"):
            assert site[same].get(key) == system[same].get(key), (same, key)
    assert site["operation"]["options"] == ["connect", "disconnect"]


def test_the_site_entities_the_integrator_asks_for_are_there() -> None:
    ids = {e.object_id for e in (*SITE_SENSORS, *SITE_BINARY_SENSORS)}
    assert {"soc", "soh", "power", "current", "voltage", "charge_current_limit",
            "discharge_current_limit", "charge_voltage_limit", "strings_joined",
            "strings_total", "soc_std", "since_anchor", "full_charge_requested", "operation",
            "fault_active", "alarm_active"} <= ids  # fmt: skip


def test_site_templates_render_the_mirror_and_unknown_as_none_never_zero() -> None:
    found = by_id(site_docs())
    known = site_json(alarms=["cell_ov", "temp_high"], full_charge_requested=True)
    shown = {name: render(doc, known) for name, doc in found.items()}
    assert shown["soc"] == "41.5" and shown["voltage"] == "26.2" and shown["power"] == "-602.6"
    assert shown["current"] == "-23.0" and shown["charge_current_limit"] == "75.5"
    assert shown["charge_voltage_limit"] == "29.0" and shown["strings_joined"] == "2"
    assert shown["strings_total"] == "3" and shown["soc_std"] == "2.5"
    assert shown["since_anchor"] == "3600.0" and shown["operation"] == "connect"
    assert shown["alarm_active"] == "ON" and shown["fault_active"] == "OFF"
    assert shown["full_charge_requested"] == "ON"
    attributes = ENV.from_string(found["alarm_active"]["json_attributes_template"])
    assert json.loads(attributes.render(value_json=json.loads(known))) == {
        "codes": ["cell_ov", "temp_high"]
    }
    # no string joined: the site knows no SOC, voltage, CVL...; Home Assistant's unknown
    unknown = site_json(soc=None, soh=None, voltage_v=None, current_a=None, power_w=None,
                        soc_std=None, since_anchor_s=None, full_charge_requested=None,
                        energy_in_wh=None, limits={"charge_voltage_v": None,
                        "discharge_voltage_v": None}, strings_joined=0)  # fmt: skip
    for name in ("soc", "soh", "voltage", "current", "power", "soc_std", "since_anchor",
                 "full_charge_requested", "energy_in", "charge_voltage_limit",
                 "discharge_voltage_limit"):  # fmt: skip
        assert render(found[name], unknown) == "None", name
    # a real 0 stays 0: no string joined, and no current may flow
    assert render(found["strings_joined"], unknown) == "0"
    assert (
        render(found["charge_current_limit"], site_json(limits={"charge_current_a": 0.0})) == "0.0"
    )
