"""The topic tree: every topic declared once, with its payload, QoS, retain flag and rate.

All topics live under `bms/v1/{system}/`, one system being one string of series cells. A
site (up to 16 strings in parallel on one DC bus, `shared/config/site.py`) has its topics under
`bms/v1/{site}/site/...`: the site id stands in the system position (the same rule, never one
of its strings' ids), and its events are `bms/v1/{site}/events/site_controller`.
Each topic has a byte limit derived from its bounded payload model (`shared/bounds.py`): the
bus refuses a larger payload before decoding it, and the broker's `message_size_limit` is the
largest of them (`BROKER_MESSAGE_SIZE_LIMIT`).
Docs (`docs/asyncapi.yaml`, `docs/topics.md`) are generated from this registry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from shared.bounds import max_encoded_bytes, topic_limit_bytes
from shared.codec import CONTENT_TYPE, JSON_CONTENT_TYPE
from shared.config import SYSTEM_ID_RE
from shared.messages import (
    BalanceCommand,
    CellSnapshot,
    CellTelemetry,
    CommandReply,
    CommandRequest,
    ConfigAck,
    ConfigMessage,
    Event,
    GroundTruth,
    HaCommand,
    Message,
    PackState,
    PlantControl,
    RackTelemetry,
    ServiceStatus,
    SimControl,
    SiteConfigMessage,
    SiteState,
    SiteSummary,
    SlaveModeCommand,
    SlaveStatus,
)

ROOT = "bms/v1"
LEVEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")

M = TypeVar("M", bound=Message, covariant=True)

# Roles named in `publishers` / `subscribers`.
SLAVE = "slave_agent"
MASTER = "master_core"
MODBUS = "modbus_gateway"
CAN = "can_gateway"
UI = "config_ui"
THIRD_PARTY = "third_party"
ANY = "any_service"
SIM = "simulation"
PLANT = "plant"
INTEGRATIONS = "integrations"
EVENTS_READER = "events_reader"
"""A third party that reads what `third_party` reads and may also fetch the events it missed
with `events_query` (its own broker user, so the master's rate limit and the reply topic are
its own)."""
SITE = "site_controller"
"""The site controller (services/site_controller): publishes under its site's id, reads the
pack state, configuration and events of its site's strings and sends their masters `set_mode`
and `contactors` close (working and close to join the DC bus, standby to leave it), each under
that string's system id."""
INTEGRATIONS_COMMANDS = "integrations_commands"
"""The integrations bridge's second broker user, only with BMS_HA_COMMANDS: it may send exactly
the commands Home Assistant may ask for (`HA_COMMANDS`), and read those requests."""


class TopicError(ValueError):
    """A topic parameter that cannot be used as a topic level."""


@dataclass(frozen=True)
class TopicSpec(Generic[M]):
    name: str
    template: str
    """Path below `bms/v1/{system}/`, with `{param}` placeholders."""
    payload: type[M]
    qos: Literal[0, 1, 2]
    retain: bool
    publishers: tuple[str, ...]
    subscribers: tuple[str, ...]
    rate: str
    description: str
    last_will: bool = False
    expiry_s: int | None = None
    """Message expiry set on MQTT 5 brokers; never relied upon (payloads carry their own)."""
    payload_bytes: int | None = None
    """The largest valid payload; None derives it from the model's bounds."""
    content_type: str = CONTENT_TYPE
    """msgpack on every bus topic; JSON on the integrations bridge's mirror."""
    params: tuple[str, ...] = field(init=False)
    byte_limit: int = field(init=False)
    """Payloads above this are refused before decoding (the largest valid one plus room for
    fields of a newer publisher)."""
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        params = tuple(re.findall(r"{(\w+)}", self.template))
        pattern = re.escape(f"{ROOT}/") + r"(?P<_system>[^/]+)/"
        pattern += re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(self.template))
        object.__setattr__(self, "params", params)
        largest = self.payload_bytes or max_encoded_bytes(self.payload)
        object.__setattr__(self, "byte_limit", topic_limit_bytes(largest))
        object.__setattr__(self, "_regex", re.compile(f"^{pattern}$"))

    def topic(self, system: str, **params: str | int) -> str:
        """The concrete topic for one system and parameter set."""
        _check_system(system)
        missing = set(self.params) - params.keys()
        if missing or params.keys() - set(self.params):
            raise TopicError(f"{self.name} needs parameters {self.params}, got {sorted(params)}")
        values = {k: _level(k, v) for k, v in params.items()}
        return f"{ROOT}/{system}/" + self.template.format(**values)

    def filter(self, system: str = "+", **params: str | int) -> str:
        """A subscription filter; parameters left out match any value."""
        if system != "+":
            _check_system(system)
        values = {p: _level(p, params[p]) if p in params else "+" for p in self.params}
        return f"{ROOT}/{system}/" + self.template.format(**values)

    def parse(self, topic: str) -> tuple[str, dict[str, str]] | None:
        """(system, parameters) when `topic` belongs to this spec, else None."""
        m = self._regex.match(topic)
        if m is None:
            return None
        values = m.groupdict()
        return values.pop("_system"), values


def _level(name: str, value: str | int) -> str:
    text = str(value)
    if not LEVEL_RE.match(text):
        raise TopicError(f"{name}={text!r} is not a valid topic level")
    return text


def _check_system(system: str) -> None:
    if not SYSTEM_ID_RE.match(system):
        raise TopicError(
            f"system id {system!r} must be 1-32 lower-case letters, digits, '-' or '_'"
        )


SLAVE_TELEMETRY = TopicSpec(
    "slave_telemetry",
    "slave/{module}/telemetry",
    CellTelemetry,
    0,
    False,
    (SLAVE,),
    (MASTER, THIRD_PARTY),
    "10 Hz working, 0.2-1 Hz standby",
    "Cell voltages, temperatures, balancing state and measurement flags of one module.",
    expiry_s=5,
)
RACK_TELEMETRY = TopicSpec(
    "rack_telemetry",
    "slaves/{modules}/telemetry",
    RackTelemetry,
    0,
    False,
    (SLAVE,),
    (MASTER, THIRD_PARTY),
    "10 Hz working, 0.2-1 Hz standby",
    "One sample of every module a slave agent hosts, in one message: each entry is that "
    "module's `slave_telemetry` payload. `{modules}` is the agent's module range "
    "(`first-last`, e.g. `0-13`); the master takes only the modules inside it, so a rack's "
    "broker user, allowed its own range's topic only, cannot speak for another rack's cells. "
    "What the stack's agents publish; `slave_telemetry` stays open to slaves that publish "
    "module by module.",
    expiry_s=5,
    payload_bytes=RackTelemetry.max_encoded_bytes(),
)
SLAVE_STATUS = TopicSpec(
    "slave_status",
    "slave/{module}/status",
    SlaveStatus,
    1,
    True,
    (SLAVE,),
    (MASTER, UI, THIRD_PARTY),
    "on change",
    "Presence of one module; the hosting agent's last will sets it offline.",
    last_will=True,
)
SLAVE_BALANCE = TopicSpec(
    "slave_balance",
    "slave/{module}/balance",
    BalanceCommand,
    1,
    False,
    (MASTER,),
    (SLAVE,),
    "1 Hz while balancing",
    "Balancing command to one module; refused once `expires_at` has passed.",
    expiry_s=10,
)
SLAVE_MODE = TopicSpec(
    "slave_mode",
    "slaves/mode",
    SlaveModeCommand,
    1,
    True,
    (MASTER,),
    (SLAVE,),
    "on change",
    "Working or standby mode for every slave of the system (standby samples slowly, no balancing).",
)
PACK_STATE = TopicSpec(
    "pack_state",
    "pack/state",
    PackState,
    0,
    True,
    (MASTER,),
    (MODBUS, CAN, UI, SLAVE, THIRD_PARTY, SITE),
    "10 Hz",
    "SOC, SOH, voltage, current (positive charging), contactors, mode, limits and active "
    "faults, alarms and warnings; None for every value that is unknown.",
    expiry_s=5,
)
PACK_CELLS = TopicSpec(
    "pack_cells",
    "pack/cells",
    CellSnapshot,
    0,
    True,
    (MASTER,),
    (MODBUS, CAN, UI, THIRD_PARTY),
    "1-10 Hz",
    "Every cell voltage and temperature, module by module, each channel at its own place; "
    "None where unknown (stale module, flagged channel).",
    expiry_s=5,
    payload_bytes=CellSnapshot.max_encoded_bytes(),
)
EVENTS = TopicSpec(
    "events",
    "events/{source}",
    Event,
    1,
    False,
    (MASTER, ANY, SITE),
    (MASTER, UI, MODBUS, CAN, THIRD_PARTY, SITE),
    "on event",
    "Raise and clear of every warning, alarm and fault; mode changes, commands, config changes. "
    "`{source}` is the publishing service (the bus fills it in, the broker ACL pins it to the "
    "user), so trust it over the payload's `source`. `seq` counts up within `seq_epoch` per "
    "source: the master's is its event log's row id; it also keeps the other sources' "
    "events, so fetch a gap of any source with `events_query` (`after_id`, `source`, "
    "`seq_epoch`). A site's events are on `bms/v1/{site}/events/site_controller` (joins, "
    "leaves, waits; `shared/event_codes.py`).",
)
COMMAND = TopicSpec(
    "command",
    "cmd/{command}",
    CommandRequest,
    1,
    False,
    (MODBUS, CAN, UI, INTEGRATIONS_COMMANDS, INTEGRATIONS, EVENTS_READER, SITE),
    (MASTER, SITE),
    "on demand",
    "A command to the master (under a site's id: `site_string`, `site_operation` and "
    "`events_query` to its site "
    "controller); the "
    "reply goes to `reply_to` (a `reply/{user}/{client}` topic of "
    "the requester's broker user) before `expires_at` or not at all. `events_query` is rate "
    "limited per requester (`reply_to`'s user): a refused query's reply says when to ask again.",
    expiry_s=30,
)
COMMAND_SENDERS: dict[str, tuple[str, ...]] = {
    "contactors": (MODBUS, CAN, UI, SITE),
    "reset_faults": (MODBUS, CAN, UI, INTEGRATIONS_COMMANDS),
    "set_mode": (MODBUS, CAN, UI, INTEGRATIONS_COMMANDS, SITE),
    "heartbeat": (MODBUS, CAN, UI),
    "events_query": (UI, INTEGRATIONS, EVENTS_READER),
    "service_reset": (UI,),
    "site_string": (UI,),
    "site_operation": (UI, MODBUS),
    "ocv_capture": (UI,),
}
"""Who may send each command on `cmd/{command}`. The broker ACL grants each command topic
from this, so `cmd/service_reset` (a reset with a service override) is the web application's
alone, which sends it for its admin role only. `events_query` is also open to the integrations
bridge (its backfill) and to third parties with the `events_reader` user. The site controller
sends the masters of its strings `set_mode` (standby leaves the DC bus) and `contactors` close
(joins it, in working mode). `site_string` goes to a site controller under its site's id: an
operator holds a string out of the site or asks it to join again. `site_operation` too: the
Modbus gateway of a site's stack (SCADA's 802 `SetOp`) or an operator disconnects the whole
site or connects it again. `ocv_capture` (commissioning: the OCV branches from a slow cycle)
is the web application's, for its admins (the wizard)."""
SITE_COMMANDS = ("site_string", "site_operation")
"""The operators' and SCADA's commands to a site controller under its site's id."""
SITE_SERVED_COMMANDS: tuple[str, ...] = (*SITE_COMMANDS, "events_query")
"""The commands a site controller serves under its site's id (the ACL lets it read exactly
these there): `SITE_COMMANDS`, and `events_query` on the site's event log (the web
application backfills its Site page from it)."""
COMMAND_REPLY_MAX_BYTES = 192 * 1024
"""Replies carry open results (an events query returns up to 1000 rows of the event log): the
master trims rows to fit (services/master_core/service.py), everything else is far smaller."""
COMMAND_REPLY = TopicSpec(
    "command_reply",
    "reply/{user}/{client}",
    CommandReply,
    1,
    False,
    (MASTER, SITE),
    (MODBUS, CAN, UI, INTEGRATIONS, EVENTS_READER, SITE),
    "on demand",
    "Reply to a command: accepted, or refused with the reason. `{user}` is the requester's "
    "broker user: the ACL lets each user read its own replies only; `{client}` tells its "
    "clients apart.",
    expiry_s=30,
    payload_bytes=COMMAND_REPLY_MAX_BYTES,
)
CONFIG = TopicSpec(
    "config",
    "config",
    ConfigMessage,
    1,
    True,
    (UI,),
    (ANY, THIRD_PARTY, SIM, SITE),
    "on change",
    "The active system configuration, with its version. The simulation reads it too: `inject` "
    "checks a person's module and channel numbers against the configured modules.",
)
CONFIG_ACK = TopicSpec(
    "config_ack",
    "config/ack/{service}",
    ConfigAck,
    1,
    True,
    (ANY, SITE),
    (UI,),
    "on change",
    "A service's acknowledgement of a configuration version: applied, or refused with errors.",
)
SERVICE_STATUS = TopicSpec(
    "service_status",
    "service/{service}/status",
    ServiceStatus,
    1,
    True,
    (ANY, SITE),
    (UI, THIRD_PARTY),
    "on change",
    "Presence of each service instance; its last will sets it offline.",
    last_will=True,
)
SIM_CONTROL = TopicSpec(
    "sim_control",
    "sim/control",
    SimControl,
    1,
    False,
    (SIM,),
    (SLAVE,),
    "on demand",
    "Fault injection into the simulated battery (simulation only).",
)
PLANT_CONTROL = TopicSpec(
    "plant_control",
    "sim/plant/control",
    PlantControl,
    1,
    False,
    (SIM,),
    (PLANT,),
    "on demand",
    "Fault injection into the plant service: cells, boards, sensors, contactors, insulation, "
    "inverter (simulation only).",
)
SIM_TRUTH = TopicSpec(
    "sim_truth",
    "sim/truth/{module}",
    GroundTruth,
    0,
    False,
    (SLAVE, PLANT),
    (SIM,),
    "1 Hz",
    "True SOC, cell voltage and temperature of the simulated cells (simulation only).",
)

# --- A site of parallel strings (services/site_controller) ----------------------------------
# Under `bms/v1/{site}/`: the site id in the system position. The site controller also uses,
# under each of its strings' system ids, `SITE_STRING_TOPICS`.

SITE_CONFIG = TopicSpec(
    "site_config",
    "site/config",
    SiteConfigMessage,
    1,
    True,
    (UI,),
    (SITE, UI, MODBUS, CAN, THIRD_PARTY),
    "on change",
    "The site configuration (shared/config/site.py): its strings (1-16 system ids, each with "
    "an optional resistance for current sharing), the join window, the current-sharing "
    "factor and the staleness timeout, with its version. The site controller acknowledges it "
    "on `config/ack/site_controller` under the site id.",
)
SITE_STATE = TopicSpec(
    "site_state",
    "site/state",
    SiteState,
    0,
    True,
    (SITE,),
    (MODBUS, CAN, UI, THIRD_PARTY),
    "10 Hz, and on a change of membership",
    "The site as one battery: SOC (weighted by usable capacity), SOH (by capacity), bus "
    "voltage, summed current, power and energy, the site's limits (CVL the lowest of the "
    "joined strings; CCL and DCL summed, derated by the current-sharing factor and capped so "
    "that no string exceeds its own limit as current divides by resistance), active codes, "
    "and every string's membership (joined, waiting, leaving, out, fault, stale) with its "
    "reason in words and its own values. None for every value that is unknown.",
    expiry_s=5,
)
SITE_SUMMARY = TopicSpec(
    "site_summary",
    "site/summary",
    SiteSummary,
    1,
    False,
    (SITE,),
    (UI, THIRD_PARTY),
    "every 10 s, and on a change of membership, worst level or online",
    "The small record of a site for a fleet view: online, strings total and joined, SOC, "
    "power, the worst active level and its code. The envelope `seq` counts up by one per "
    "summary within `seq_epoch`: a receiver counts the ones it missed.",
    # No message expiry: a site's bridge to the fleet centre keeps its summaries through an
    # outage (store and forward) and the fleet view counts every one; with 60 s, a 60 s cut
    # lost the oldest 5 of 30 queued (tests/system/test_fleet.py). The view keeps the newest.
)
SITE_TOPICS: tuple[TopicSpec[Message], ...] = (SITE_CONFIG, SITE_STATE, SITE_SUMMARY)


# --- The integrations bridge (services/integrations) ---------------------------------------
# It reads what a third party may read and publishes only under its own prefixes: `json/` below
# each system, and Home Assistant's discovery prefix. It is never on the protection path.


def _json_limit(spec: TopicSpec[Message]) -> int:
    """The mirrored topic's own bound: the broker's `message_size_limit` stays as it is, and the
    bridge counts and drops a JSON text above it (far above any real pack: the bounds assume
    every string and list at its longest)."""
    return spec.payload_bytes or max_encoded_bytes(spec.payload)


JSON_PACK_STATE = TopicSpec(
    "json_pack_state",
    "json/pack/state",
    PackState,
    0,
    True,
    (INTEGRATIONS,),
    (THIRD_PARTY,),
    "1 Hz (BMS_JSON_STATE_PERIOD_S)",
    "JSON mirror of `pack/state` (the original envelope), at a configurable rate, for tools "
    "that cannot read msgpack.",
    content_type=JSON_CONTENT_TYPE,
    payload_bytes=_json_limit(PACK_STATE),
)
JSON_PACK_CELLS = TopicSpec(
    "json_pack_cells",
    "json/pack/cells",
    CellSnapshot,
    0,
    True,
    (INTEGRATIONS,),
    (THIRD_PARTY,),
    "1 Hz (BMS_JSON_CELLS_PERIOD_S)",
    "JSON mirror of `pack/cells` (the original envelope), at a configurable rate.",
    content_type=JSON_CONTENT_TYPE,
    payload_bytes=_json_limit(PACK_CELLS),
)
JSON_EVENTS = TopicSpec(
    "json_events",
    "json/events",
    Event,
    1,
    False,
    (INTEGRATIONS,),
    (THIRD_PARTY,),
    "on event",
    "JSON mirror of every event (the original envelope).",
    content_type=JSON_CONTENT_TYPE,
    payload_bytes=_json_limit(EVENTS),
)
JSON_SERVICE_STATUS = TopicSpec(
    "json_service_status",
    "json/service/{instance}/status",
    ServiceStatus,
    1,
    True,
    (INTEGRATIONS,),
    (THIRD_PARTY,),
    "on change",
    "JSON mirror of each service's presence; Home Assistant's availability reads it.",
    content_type=JSON_CONTENT_TYPE,
    payload_bytes=_json_limit(SERVICE_STATUS),
)
JSON_SITE_STATE = TopicSpec(
    "json_site_state",
    "json/site/state",
    SiteState,
    0,
    True,
    (INTEGRATIONS,),
    (THIRD_PARTY,),
    "1 Hz (BMS_JSON_STATE_PERIOD_S)",
    "JSON mirror of a site's `site/state` (the original envelope), under the site id, with "
    "BMS_SITE; Home Assistant's site device reads it.",
    content_type=JSON_CONTENT_TYPE,
    payload_bytes=_json_limit(SITE_STATE),
)
HOME_ASSISTANT = "home_assistant"
"""Home Assistant's broker user: reads what a third party reads and the discovery documents,
asks for `HA_COMMANDS` on `ha/cmd/{command}`."""
HA_COMMANDS = ("reset_faults", "set_mode")
"""Commands Home Assistant may ask for (opt-in); never contactors, never a service reset."""
HA_COMMAND = TopicSpec(
    "ha_command",
    "ha/cmd/{command}",
    HaCommand,
    1,
    False,
    (HOME_ASSISTANT,),
    (INTEGRATIONS_COMMANDS,),
    "on demand",
    "A button press or a choice in Home Assistant (BMS_HA_COMMANDS): the bridge sends the "
    "master's command of the same name (reset_faults, set_mode).",
    content_type=JSON_CONTENT_TYPE,
)
INTEGRATION_TOPICS: tuple[TopicSpec[Message], ...] = (
    JSON_PACK_STATE, JSON_PACK_CELLS, JSON_EVENTS, JSON_SERVICE_STATUS, JSON_SITE_STATE,
    HA_COMMAND,
)  # fmt: skip

HA_DISCOVERY_PREFIX = "homeassistant"
"""Home Assistant's default discovery prefix (https://www.home-assistant.io/integrations/mqtt/
#mqtt-discovery); another one needs BMS_HA_PREFIX and a matching broker ACL."""
SPARKPLUG_NAMESPACE = "spBv1.0"
SPARKPLUG_GROUP = "bms"
"""The bridge's default Sparkplug group id (BMS_SPARKPLUG_GROUP); another one needs a matching
broker ACL."""
SPARKPLUG_HOST = "sparkplug_host"
"""A Sparkplug host application (SCADA), a broker user of its own: it reads the Sparkplug
topics, asks the bridge's edge node for a rebirth (NCMD) and publishes its own STATE; nothing
under `bms/v1/`."""
SPARKPLUG_ID_FORBIDDEN = frozenset("/+#")
"""Characters a Sparkplug group, edge node or device id must not hold (Sparkplug B 3.0,
4.1.1: MQTT's level separator and wildcards)."""


def sparkplug_id(kind: str, value: str) -> str:
    """`value` when it is a usable Sparkplug id, else a ValueError naming it."""
    if not value or SPARKPLUG_ID_FORBIDDEN & set(value) or not value.isprintable():
        raise ValueError(f"Sparkplug {kind} {value!r} must be printable, without '/', '+', '#'")
    return value


PROTOBUF_CONTENT_TYPE = "application/protobuf"
"""Sparkplug B payloads: protobuf (the `application/protobuf` of draft-ietf-dispatch-mime-
protobuf); the Sparkplug spec names no media type, and the bridge sets no MQTT 5 content type
(Sparkplug 3.0 clients need not send properties)."""
PROTOBUF_SCHEMA_FORMAT = "application/vnd.google.protobuf;version=2"
"""AsyncAPI 3 `schemaFormat` of a proto2 schema (the form AsyncAPI's protobuf schema parser
reads); `sparkplug_b.proto` is proto2."""
SPARKPLUG_PROTO = "services/integrations/sparkplug_b.proto"
"""The official Sparkplug B payload schema (Eclipse Tahu), relative to the repository."""


@dataclass(frozen=True)
class OutsideTopic:
    """A topic outside `bms/v1/`, for a consumer with its own conventions (Home Assistant,
    Sparkplug B). The bus never subscribes to these (`spec_for` finds no spec for them, so
    nothing tries to decode them as msgpack); they are declared here for the docs and the
    broker ACL only.
    """

    name: str
    address: str
    """The topic with `{param}` placeholders, e.g. `spBv1.0/{group}/{node_message}/{edge_node}`."""
    params: dict[str, str]
    """Parameter -> its description (the docs' parameter table)."""
    acl_values: dict[str, str]
    """Parameter -> what the broker ACL puts in its place: a fixed value, `+`, `{system}` (the
    deployed system) or `{edge_node}` (the bridge's Sparkplug edge node id when the ACL is
    generated with one, else `+`)."""
    content_type: str
    qos: Literal[0, 1, 2]
    retain: bool
    publishers: tuple[str, ...]
    subscribers: tuple[str, ...]
    rate: str
    description: str
    payload: str
    """What the payload is (and its schema, for the docs)."""
    schema_format: str | None = None
    """AsyncAPI `schemaFormat` when the schema is not JSON Schema (protobuf)."""
    last_will: bool = False

    @property
    def acl_filter(self) -> str:
        """The topic filter the broker ACL grants, `{system}` and `{edge_node}` still to be
        filled in (`acl_filter_in`)."""
        return self.address.format(**self.acl_values)

    def example(self, system: str, **params: str) -> str:
        """A concrete topic (tests): each parameter given, else its ACL value with `+` and
        `{edge_node}` as `x` and `{system}` as `system`."""
        values = {
            k: params.get(k, acl_filter_in(v, system, None).replace("+", "x"))
            for k, v in self.acl_values.items()
        }
        return self.address.format(**values)


def acl_filter_in(acl_filter: str, system: str, edge_node: str | None) -> str:
    """An outside topic's ACL filter for one deployment: `{system}` the deployed system,
    `{edge_node}` the bridge's edge node id, or `+` (any edge node of the group) when the
    deployment does not say it. Plain replacement: a topic filter holds no other braces."""
    return acl_filter.replace("{system}", system).replace("{edge_node}", edge_node or "+")


_SP_GROUP = "Sparkplug group id (BMS_SPARKPLUG_GROUP; the broker ACL grants `bms`)."
_SP_EDGE = (
    "Sparkplug edge node id: the site, one per bridge (BMS_SPARKPLUG_EDGE_NODE, default the "
    "host name). The ACL grants the bridge's own (the credentials step's "
    "BMS_SPARKPLUG_EDGE_NODE), or any edge node of the group when it is not given."
)
_SP_SYSTEM = "Sparkplug device id: the system id; the ACL grants the deployed system only."
_SP_PARAMS = {"group": SPARKPLUG_GROUP, "edge_node": "{edge_node}"}
_SP_PROTO_TEXT = "Sparkplug B 3.0 protobuf `Payload` (sparkplug_b.proto, Eclipse Tahu)"
SPARKPLUG_NODE = OutsideTopic(
    "sparkplug_node",
    f"{SPARKPLUG_NAMESPACE}/{{group}}/{{node_message}}/{{edge_node}}",
    {"group": _SP_GROUP, "node_message": "NBIRTH, NDATA or NDEATH.", "edge_node": _SP_EDGE},
    {**_SP_PARAMS, "node_message": "+"},
    PROTOBUF_CONTENT_TYPE,
    0,
    False,
    (INTEGRATIONS,),
    (THIRD_PARTY, SPARKPLUG_HOST),
    "on change (BMS_SPARKPLUG)",
    "The integrations bridge's Sparkplug B edge node (the site). NBIRTH (seq 0) carries "
    "bdSeq, `Node Control/Rebirth` and `Systems/Known`, `Systems/Online`, each metric named "
    "with its alias; NDATA the node metrics that changed, by alias; NDEATH (QoS 1, the "
    "session's will, or sent on a clean stop) only bdSeq, the same as the session's NBIRTH. "
    "Metrics: services/integrations/sparkplug.py.",
    _SP_PROTO_TEXT,
    PROTOBUF_SCHEMA_FORMAT,
    last_will=True,
)
SPARKPLUG_NODE_COMMAND = OutsideTopic(
    "sparkplug_node_command",
    f"{SPARKPLUG_NAMESPACE}/{{group}}/NCMD/{{edge_node}}",
    {"group": _SP_GROUP, "edge_node": _SP_EDGE},
    _SP_PARAMS,
    PROTOBUF_CONTENT_TYPE,
    1,
    False,
    (SPARKPLUG_HOST,),
    (INTEGRATIONS,),
    "on demand",
    "A host's node command: `Node Control/Rebirth` true makes the edge node send NBIRTH and "
    "every online system's DBIRTH again (same bdSeq, seq from 0); nothing else is writable.",
    _SP_PROTO_TEXT,
    PROTOBUF_SCHEMA_FORMAT,
)
SPARKPLUG_DEVICE = OutsideTopic(
    "sparkplug_device",
    f"{SPARKPLUG_NAMESPACE}/{{group}}/{{device_message}}/{{edge_node}}/{{system}}",
    {
        "group": _SP_GROUP,
        "device_message": "DBIRTH, DDATA or DDEATH.",
        "edge_node": _SP_EDGE,
        "system": _SP_SYSTEM,
    },
    {**_SP_PARAMS, "device_message": "+", "system": "{system}"},
    PROTOBUF_CONTENT_TYPE,
    0,
    False,
    (INTEGRATIONS,),
    (THIRD_PARTY, SPARKPLUG_HOST),
    "pack at up to 10 Hz, cells 1-10 Hz, by exception with deadbands",
    "A system as a device of the edge node: DBIRTH with every pack metric (and, with "
    "BMS_SPARKPLUG_MODULES, `Module NN/Cell NN/Voltage`, `.../Balancing`, `Module NN/"
    "Temperature NN`, `Module NN/Fresh`) named, aliased and typed; DDATA the metrics that "
    "moved past their deadband, by alias; DDEATH when the system's master goes offline or "
    "silent (a new DBIRTH follows its next pack state). Unknown values are `is_null`. seq "
    "counts over the edge node and all its devices.",
    _SP_PROTO_TEXT,
    PROTOBUF_SCHEMA_FORMAT,
)
SPARKPLUG_DEVICE_COMMAND = OutsideTopic(
    "sparkplug_device_command",
    f"{SPARKPLUG_NAMESPACE}/{{group}}/DCMD/{{edge_node}}/{{system}}",
    {"group": _SP_GROUP, "edge_node": _SP_EDGE, "system": _SP_SYSTEM},
    {**_SP_PARAMS, "system": "{system}"},
    PROTOBUF_CONTENT_TYPE,
    1,
    False,
    (SPARKPLUG_HOST,),
    (INTEGRATIONS,),
    "on demand",
    "A host's device command: subscribed as the spec asks, but no device metric is writable, "
    "so it changes nothing.",
    _SP_PROTO_TEXT,
    PROTOBUF_SCHEMA_FORMAT,
)
SPARKPLUG_STATE = OutsideTopic(
    "sparkplug_state",
    f"{SPARKPLUG_NAMESPACE}/STATE/{{host_id}}",
    {"host_id": "Sparkplug host application id (the host's own setting)."},
    {"host_id": "+"},
    JSON_CONTENT_TYPE,
    1,
    True,
    (SPARKPLUG_HOST,),
    (SPARKPLUG_HOST,),
    "on change",
    "A Sparkplug 3.0 host application's birth and last will (retained); granted so that a "
    "host can log in with its will. The bridge does not read it.",
    'JSON `{"online": <bool>, "timestamp": <ms>}` (Sparkplug B 3.0, 7.5)',
    last_will=True,
)
HA_DISCOVERY = OutsideTopic(
    "ha_discovery",
    "{ha_prefix}/{component}/{node_id}/{object_id}/config",
    {
        "ha_prefix": "Home Assistant's discovery prefix (BMS_HA_PREFIX; the ACL grants "
        "`homeassistant`).",
        "component": "sensor, binary_sensor, button or select.",
        "node_id": "bms_<system>, or bms_site-<site> for a site (BMS_SITE).",
        "object_id": "The entity, e.g. `soc`.",
    },
    {"ha_prefix": HA_DISCOVERY_PREFIX, "component": "+", "node_id": "+", "object_id": "+"},
    JSON_CONTENT_TYPE,
    1,
    True,
    (INTEGRATIONS,),
    (HOME_ASSISTANT,),
    "at a system's first pack state and when its cell layout changes, at the site's first "
    "site state, and again after each reconnection to the broker and at Home Assistant's "
    "birth (BMS_HA_DISCOVERY)",
    "Home Assistant MQTT discovery: one retained document per entity, a device per system "
    "and one for the site with BMS_SITE (services/integrations/ha.py; see the README).",
    "JSON object, Home Assistant's MQTT discovery schema",
)
HA_STATUS_TOPIC = OutsideTopic(
    "ha_status",
    "{ha_prefix}/status",
    {"ha_prefix": "Home Assistant's discovery prefix."},
    {"ha_prefix": HA_DISCOVERY_PREFIX},
    "text/plain",
    1,
    True,
    (HOME_ASSISTANT,),
    (HOME_ASSISTANT, INTEGRATIONS),
    "on change",
    "Home Assistant's own birth and last will (`online` / `offline`); at `online` the bridge "
    "publishes its discovery documents again.",
    "`online` or `offline`",
)
OUTSIDE_TOPICS: tuple[OutsideTopic, ...] = (
    SPARKPLUG_NODE, SPARKPLUG_NODE_COMMAND, SPARKPLUG_DEVICE, SPARKPLUG_DEVICE_COMMAND,
    SPARKPLUG_STATE, HA_DISCOVERY, HA_STATUS_TOPIC,
)  # fmt: skip
HA_DISCOVERY_FILTER = HA_DISCOVERY.acl_filter
"""`<prefix>/<component>/<node_id>/<object_id>/config`, retained JSON: one entity each."""
HA_STATUS = HA_STATUS_TOPIC.acl_filter
"""Home Assistant's birth and last will ("online" / "offline")."""
SPARKPLUG_NODE_FILTER = SPARKPLUG_NODE.acl_filter
"""`spBv1.0/bms/<NBIRTH|NDATA|NDEATH|NCMD>/{edge_node}`: the bridge's edge node (or any)."""
SPARKPLUG_DEVICE_FILTER = SPARKPLUG_DEVICE.acl_filter
"""`spBv1.0/bms/<DBIRTH|DDATA|DDEATH|DCMD>/<edge node>/{system}`: the deployed system's
device."""


def _outside_root() -> dict[str, tuple[tuple[str, Literal["read", "write", "readwrite"]], ...]]:
    access: dict[str, dict[str, set[str]]] = {}
    for t in OUTSIDE_TOPICS:
        for role, kind in [(r, "write") for r in t.publishers] + [
            (r, "read") for r in t.subscribers
        ]:
            access.setdefault(role, {}).setdefault(t.acl_filter, set()).add(kind)
    word: dict[frozenset[str], Literal["read", "write", "readwrite"]] = {
        frozenset({"read"}): "read",
        frozenset({"write"}): "write",
        frozenset({"read", "write"}): "readwrite",
    }
    return {
        role: tuple((f, word[frozenset(kinds)]) for f, kinds in filters.items())
        for role, filters in access.items()
    }


OUTSIDE_ROOT = _outside_root()
"""Topics outside `bms/v1/` a role may use, from `OUTSIDE_TOPICS` (the broker ACL grants them
through `acl_filter_in`: `{system}` the deployed system, `{edge_node}` the bridge's edge node
id or `+`). The bridge writes the Sparkplug topics of its own edge node and of its own system's
device only, and reads their commands; a third party reads them; the Sparkplug host reads them,
sends the commands and publishes its STATE."""
READS_AS: dict[str, str] = {
    INTEGRATIONS: THIRD_PARTY, HOME_ASSISTANT: THIRD_PARTY, EVENTS_READER: THIRD_PARTY,
}  # fmt: skip
"""A role that reads what another reads: the bridge, Home Assistant and the events reader read
what a third party may (and, besides, what they are named a subscriber of)."""


TOPICS: tuple[TopicSpec[Message], ...] = (
    SLAVE_TELEMETRY, RACK_TELEMETRY, SLAVE_STATUS, SLAVE_BALANCE, SLAVE_MODE,
    PACK_STATE, PACK_CELLS, EVENTS, COMMAND, COMMAND_REPLY,
    CONFIG, CONFIG_ACK, SERVICE_STATUS, SIM_CONTROL, PLANT_CONTROL, SIM_TRUTH,
    *SITE_TOPICS, *INTEGRATION_TOPICS,
)  # fmt: skip

SITE_OWN_TOPICS: tuple[TopicSpec[Message], ...] = (
    *SITE_TOPICS, EVENTS, CONFIG_ACK, SERVICE_STATUS,
)  # fmt: skip
"""What the site controller uses under its site's id: the site topics, its own events,
its acknowledgement of the site configuration and its presence."""
SITE_STRING_TOPICS: tuple[TopicSpec[Message], ...] = (
    PACK_STATE, CONFIG, EVENTS, COMMAND, COMMAND_REPLY,
)  # fmt: skip
"""What the site controller uses under each of its strings' system ids: it reads the pack
state, configuration (the capacity) and events, sends `set_mode` and `contactors` and reads its
replies there,
and writes nothing else (the broker ACL, `shared.deploy.acl.site_grants`)."""


BROKER_MESSAGE_SIZE_LIMIT = -(-max(spec.byte_limit for spec in TOPICS) // 1024) * 1024
"""mosquitto's `message_size_limit` (deploy/mosquitto/mosquitto.conf, shared/broker.py): the
largest topic limit, rounded up to KiB. The broker drops a larger publish without forwarding it
(and without disconnecting the client, unlike `max_packet_size`; mosquitto.conf(5), 2.0)."""


def spec_for(topic: str) -> TopicSpec[Message] | None:
    """The spec a concrete topic belongs to."""
    for spec in TOPICS:
        if spec.parse(topic) is not None:
            return spec
    return None
