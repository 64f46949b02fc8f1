"""Home Assistant MQTT discovery documents for one system (pure).

Schema: https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery (topic
`<prefix>/<component>/<node_id>/<object_id>/config`, retained JSON), the MQTT sensor and binary
sensor pages (`state_topic`, `value_template`, `availability`, `expire_after`), and the sensor
device classes with their units (https://developers.home-assistant.io/docs/core/entity/sensor/
#available-device-classes). One device per system; every entity reads the bridge's JSON mirror,
so Home Assistant needs no msgpack. A template yielding `None` is shown as unknown (Home
Assistant's MQTT sensor treats the payload "None" so): an unknown value never becomes 0.

Availability is the mirrored presence of the master (`json/service/master_core/status`); if the
bridge itself stops, `expire_after` turns the entities unavailable. An entity with `known` is
also unavailable while that field of the pack state is None (or missing, from a master before
it): its `availability` lists the master's presence and the field's presence in the pack
state, both required (`availability_mode: all`, the MQTT integration's availability list).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

from shared.messages.site import SiteOperation
from shared.topics import (
    HA_COMMAND,
    JSON_PACK_CELLS,
    JSON_PACK_STATE,
    JSON_SERVICE_STATUS,
    JSON_SITE_STATE,
    SITE,
)

ORIGIN = {"name": "bms-stack"}


@dataclass(frozen=True)
class Entity:
    """One entity of the table: which field of the pack state it shows, and how."""

    object_id: str
    name: str
    template: str
    device_class: str | None = None
    unit: str | None = None
    state_class: str | None = "measurement"
    component: str = "sensor"
    precision: int | None = None
    icon: str | None = None
    options: tuple[str, ...] = ()
    category: str | None = None
    known: str | None = None
    """The pack state's field whose None makes the entity unavailable (not merely unknown)."""
    attributes: str | None = None
    """A template of the entity's attributes (JSON), read from its state topic."""


def _v(name: str) -> str:
    return "{{ value_json." + name + " }}"


def _limit(name: str) -> str:
    return "{{ value_json.limits." + name + " }}"


CONTACTOR_STATES = ("standby", "precharge", "closed", "opening", "fault")
MODES = ("working", "standby")

SENSORS: tuple[Entity, ...] = (
    Entity("soc", "State of charge", _v("soc"), "battery", "%", precision=1),
    Entity("soh", "State of health", _v("soh"), None, "%", precision=1, icon="mdi:battery-heart"),
    Entity("voltage", "Voltage", _v("voltage"), "voltage", "V", precision=1),
    Entity("current", "Current", _v("current"), "current", "A", precision=1),
    Entity(
        "power",
        "Power",
        "{{ (value_json.voltage * value_json.current) | round(0) "
        "if value_json.voltage is not none and value_json.current is not none else None }}",
        "power",
        "W",
        precision=0,
    ),
    Entity("temp_min", "Temperature min", _v("temp_min_c"), "temperature", "°C", precision=1),
    Entity("temp_max", "Temperature max", _v("temp_max_c"), "temperature", "°C", precision=1),
    Entity("temp_avg", "Temperature avg", _v("temp_avg_c"), "temperature", "°C", precision=1),
    Entity("cell_v_min", "Cell voltage min", _v("cell_v_min"), "voltage", "V", precision=3),
    Entity("cell_v_max", "Cell voltage max", _v("cell_v_max"), "voltage", "V", precision=3),
    Entity("cell_v_avg", "Cell voltage avg", _v("cell_v_avg"), "voltage", "V", precision=3),
    Entity(
        "cell_v_spread",
        "Cell voltage spread",
        "{{ ((value_json.cell_v_max - value_json.cell_v_min) * 1000) | round(0) "
        "if value_json.cell_v_max is not none and value_json.cell_v_min is not none else None }}",
        "voltage",
        "mV",
        precision=0,
    ),
    Entity("charge_voltage_limit", "Charge voltage limit", _limit("charge_voltage_v"),
           "voltage", "V", precision=1, category="diagnostic"),
    Entity("discharge_voltage_limit", "Discharge voltage limit", _limit("discharge_voltage_v"),
           "voltage", "V", precision=1, category="diagnostic"),
    Entity("charge_current_limit", "Charge current limit", _limit("charge_current_a"),
           "current", "A", precision=1, category="diagnostic"),
    Entity("discharge_current_limit", "Discharge current limit", _limit("discharge_current_a"),
           "current", "A", precision=1, category="diagnostic"),
    Entity("energy_in", "Energy charged", _v("energy_in_wh"), "energy", "Wh",
           "total_increasing", precision=0),
    Entity("energy_out", "Energy discharged", _v("energy_out_wh"), "energy", "Wh",
           "total_increasing", precision=0),
    Entity("equivalent_cycles", "Equivalent cycles", _v("equivalent_cycles"), None, None,
           "total_increasing", precision=2, icon="mdi:battery-sync"),
    Entity("contactors", "Contactors", _v("contactors"), "enum", None, None,
           options=CONTACTOR_STATES),
    Entity("mode", "Mode", _v("mode"), "enum", None, None, options=MODES),
    Entity("soc_std", "State of charge uncertainty", _v("soc_std"), None, "%", precision=1,
           icon="mdi:plus-minus-variant", category="diagnostic", known="soc_std"),
    Entity("since_anchor", "Time since SOC anchor", _v("since_anchor_s"), "duration", "s",
           precision=0, category="diagnostic", known="since_anchor_s"),
    Entity("current_zero_offset", "Current sensor zero offset", _v("current_zero_offset_a"),
           "current", "A", precision=3, category="diagnostic", known="current_zero_offset_a"),
)  # fmt: skip
BINARY_SENSORS: tuple[Entity, ...] = (
    *(
        Entity(
            f"{level}_active",
            f"{level.capitalize()} active",
            "{{ 'ON' if value_json." + f"{level}s" + " else 'OFF' }}",
            "problem",
            None,
            None,
            component="binary_sensor",
        )
        for level in ("warning", "alarm", "fault")
    ),
    Entity(
        "contactors_closed",
        "Contactors closed",
        "{{ 'ON' if value_json.contactors == 'closed' else 'OFF' }}",
        "power",
        None,
        None,
        component="binary_sensor",
    ),
    Entity(
        "full_charge_requested",
        "Full charge requested",
        "{{ 'None' if value_json.full_charge_requested is none else "
        "('ON' if value_json.full_charge_requested else 'OFF') }}",
        None,
        None,
        None,
        component="binary_sensor",
        icon="mdi:battery-sync",
        known="full_charge_requested",
    ),
)
"""One binary sensor per alarm level (on while any code of that level is active), one for
the contactors and one for the master's full-charge request (an LFP anchor every N days)."""


SITE_OPERATIONS: tuple[str, ...] = get_args(SiteOperation)
SITE_SENSORS: tuple[Entity, ...] = (
    Entity("soc", "State of charge", _v("soc"), "battery", "%", precision=1),
    Entity("soh", "State of health", _v("soh"), None, "%", precision=1, icon="mdi:battery-heart"),
    Entity("voltage", "Bus voltage", _v("voltage_v"), "voltage", "V", precision=1),
    Entity("current", "Current", _v("current_a"), "current", "A", precision=1),
    Entity("power", "Power", _v("power_w"), "power", "W", precision=0),
    Entity("charge_voltage_limit", "Charge voltage limit", _limit("charge_voltage_v"),
           "voltage", "V", precision=1, category="diagnostic"),
    Entity("discharge_voltage_limit", "Discharge voltage limit", _limit("discharge_voltage_v"),
           "voltage", "V", precision=1, category="diagnostic"),
    Entity("charge_current_limit", "Charge current limit", _limit("charge_current_a"),
           "current", "A", precision=1, category="diagnostic"),
    Entity("discharge_current_limit", "Discharge current limit", _limit("discharge_current_a"),
           "current", "A", precision=1, category="diagnostic"),
    Entity("energy_in", "Energy charged", _v("energy_in_wh"), "energy", "Wh",
           "total_increasing", precision=0),
    Entity("energy_out", "Energy discharged", _v("energy_out_wh"), "energy", "Wh",
           "total_increasing", precision=0),
    Entity("strings_joined", "Strings joined", _v("strings_joined"), None, None,
           precision=0, icon="mdi:battery-plus-variant"),
    Entity("strings_total", "Strings total", _v("strings_total"), None, None,
           precision=0, icon="mdi:battery-multiple", category="diagnostic"),
    Entity("soc_std", "State of charge uncertainty", _v("soc_std"), None, "%", precision=1,
           icon="mdi:plus-minus-variant", category="diagnostic"),
    Entity("since_anchor", "Time since SOC anchor", _v("since_anchor_s"), "duration", "s",
           precision=0, category="diagnostic"),
    Entity("operation", "Operation", _v("operation"), "enum", None, None,
           options=SITE_OPERATIONS),
)  # fmt: skip
SITE_BINARY_SENSORS: tuple[Entity, ...] = (
    *(
        Entity(
            f"{level}_active",
            f"{level.capitalize()} active",
            "{{ 'ON' if value_json." + f"{level}s" + " else 'OFF' }}",
            "problem",
            None,
            None,
            component="binary_sensor",
            attributes="{{ {'codes': value_json." + f"{level}s" + "} | tojson }}",
        )
        for level in ("warning", "alarm", "fault")
    ),
    Entity(
        "full_charge_requested",
        "Full charge requested",
        "{{ 'None' if value_json.full_charge_requested is none else "
        "('ON' if value_json.full_charge_requested else 'OFF') }}",
        None,
        None,
        None,
        component="binary_sensor",
        icon="mdi:battery-sync",
    ),
)
"""The site as one battery (`SiteState`, mirrored on `json/site/state`); a value the site does
not know (no string joined, or a joined string's unknown) renders None, Home Assistant's
unknown. A level's binary sensor lists the active codes in its `codes` attribute."""


@dataclass(frozen=True)
class DiscoveryOptions:
    prefix: str = "homeassistant"
    availability_service: str = "master_core"
    expire_after_s: int = 30
    cell_sensors: bool = False
    commands: bool = False
    version: str = ""


def node_id(system: str) -> str:
    return f"bms_{system.replace('-', '_')}"


def device(system: str, version: str) -> dict[str, Any]:
    return {
        "identifiers": [node_id(system)],
        "name": f"BMS {system}",
        "manufacturer": "bms-stack",
        "model": "Battery management system",
        **({"sw_version": version} if version else {}),
    }


@dataclass(frozen=True)
class Owner:
    """The device an entity belongs to: its node id, its device block and the presence that
    makes it available."""

    node: str
    device: dict[str, Any]
    presence_topic: str


def system_owner(system: str, opts: DiscoveryOptions) -> Owner:
    return Owner(
        node_id(system),
        device(system, opts.version),
        JSON_SERVICE_STATUS.topic(system, instance=opts.availability_service),
    )


def _document(
    owner: Owner, entity: Entity, state_topic: str, opts: DiscoveryOptions
) -> dict[str, Any]:
    node = owner.node
    doc: dict[str, Any] = {
        "name": entity.name,
        "unique_id": f"{node}_{entity.object_id}",
        "object_id": f"{node}_{entity.object_id}",
        "state_topic": state_topic,
        "value_template": entity.template,
        **_availability(owner, entity, state_topic),
        "device": owner.device,
        "origin": ORIGIN,
        "qos": 0,
    }
    if opts.expire_after_s:
        doc["expire_after"] = opts.expire_after_s
    optional = {
        "device_class": entity.device_class,
        "unit_of_measurement": entity.unit,
        "icon": entity.icon,
        "entity_category": entity.category,
    }
    doc.update({k: v for k, v in optional.items() if v is not None})
    if entity.attributes is not None:
        doc["json_attributes_topic"] = state_topic
        doc["json_attributes_template"] = entity.attributes
    if entity.component == "sensor":
        if entity.state_class is not None:
            doc["state_class"] = entity.state_class
        if entity.precision is not None:
            doc["suggested_display_precision"] = entity.precision
        if entity.options:
            doc["options"] = list(entity.options)
    else:
        doc["payload_on"] = "ON"
        doc["payload_off"] = "OFF"
    return doc


def _availability(owner: Owner, entity: Entity, state_topic: str) -> dict[str, Any]:
    """The owner's presence; with `entity.known`, also that field's presence in the state."""
    presence = {
        "topic": owner.presence_topic,
        "value_template": "{{ value_json.state }}",
        "payload_available": "online",
        "payload_not_available": "offline",
    }
    if entity.known is None:
        return {
            "availability_topic": presence["topic"],
            "availability_template": presence["value_template"],
            "payload_available": "online",
            "payload_not_available": "offline",
        }
    field = {
        **presence,
        "topic": state_topic,
        "value_template": "{{ 'online' if value_json.get('" + entity.known + "') is not none "
        "else 'offline' }}",
    }
    return {"availability": [presence, field], "availability_mode": "all"}


def cell_entities(cells_per_module: list[int]) -> list[tuple[Entity, int, int]]:
    """One voltage sensor per cell, named by module and index (1-based for people)."""
    out = []
    for module, count in enumerate(cells_per_module):
        for index in range(count):
            entity = Entity(
                f"cell_{module:02d}_{index:02d}",
                f"Cell {module + 1}.{index + 1} voltage",
                "{{ value_json.modules[" + str(module) + "].cell_v[" + str(index) + "] }}",
                "voltage",
                "V",
                precision=3,
                category="diagnostic",
            )
            out.append((entity, module, index))
    return out


def discovery(
    system: str, opts: DiscoveryOptions, cells_per_module: list[int] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """(topic, document) of every entity of one system; per-cell sensors only when asked for
    and the cell layout is known."""
    node = node_id(system)
    owner = system_owner(system, opts)
    state = JSON_PACK_STATE.topic(system)
    out = [
        (
            f"{opts.prefix}/{e.component}/{node}/{e.object_id}/config",
            _document(owner, e, state, opts),
        )
        for e in (*SENSORS, *BINARY_SENSORS)
    ]
    if opts.commands:
        out += command_documents(system, opts)
    if opts.cell_sensors and cells_per_module:
        cells = JSON_PACK_CELLS.topic(system)
        out += [
            (f"{opts.prefix}/sensor/{node}/{e.object_id}/config", _document(owner, e, cells, opts))
            for e, _m, _i in cell_entities(cells_per_module)
        ]
    return out


def command_documents(system: str, opts: DiscoveryOptions) -> list[tuple[str, dict[str, Any]]]:
    """Opt-in (BMS_HA_COMMANDS): a "Reset faults" button and a "Mode" select. They publish on
    `ha/cmd/{command}`, which the bridge's command user turns into the master's command; the
    master decides as for any other sender (a reset never clears a latch needing service)."""
    node = node_id(system)
    common = {
        "availability_topic": JSON_SERVICE_STATUS.topic(system, instance=opts.availability_service),
        "availability_template": "{{ value_json.state }}",
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device(system, opts.version),
        "origin": ORIGIN,
        "qos": 1,
        "retain": False,
    }
    button = {
        "name": "Reset faults",
        "unique_id": f"{node}_reset_faults",
        "object_id": f"{node}_reset_faults",
        "command_topic": HA_COMMAND.topic(system, command="reset_faults"),
        "payload_press": "{}",
        "icon": "mdi:restore-alert",
        "entity_category": "config",
        **common,
    }
    select = {
        "name": "Mode",
        "unique_id": f"{node}_mode_select",
        "object_id": f"{node}_mode_select",
        "command_topic": HA_COMMAND.topic(system, command="set_mode"),
        "command_template": '{"mode": "{{ value }}"}',
        "state_topic": JSON_PACK_STATE.topic(system),
        "value_template": "{{ value_json.mode }}",
        "options": list(MODES),
        "entity_category": "config",
        **common,
    }
    return [
        (f"{opts.prefix}/button/{node}/reset_faults/config", button),
        (f"{opts.prefix}/select/{node}/mode_select/config", select),
    ]


def site_node_id(site: str) -> str:
    """`bms_site-<site>`: a system's node id (`node_id`) never holds a '-', so no system's
    device can take the site's (`bms_site_a` is the node of a system `site_a`)."""
    return f"bms_site-{site.replace('-', '_')}"


def site_discovery(site: str, opts: DiscoveryOptions) -> list[tuple[str, dict[str, Any]]]:
    """(topic, document) of every entity of the site's device: available while the site
    controller is present (its mirrored presence), unavailable after `expire_after` without a
    site state (the bridge or the site controller gone silent)."""
    node = site_node_id(site)
    owner = Owner(
        node,
        {
            "identifiers": [node],
            "name": f"BMS site {site}",
            "manufacturer": "bms-stack",
            "model": "Site of parallel strings",
            **({"sw_version": opts.version} if opts.version else {}),
        },
        JSON_SERVICE_STATUS.topic(site, instance=SITE),
    )
    state = JSON_SITE_STATE.topic(site)
    return [
        (
            f"{opts.prefix}/{e.component}/{node}/{e.object_id}/config",
            _document(owner, e, state, opts),
        )
        for e in (*SITE_SENSORS, *SITE_BINARY_SENSORS)
    ]
