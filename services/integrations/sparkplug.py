"""Sparkplug B 3.0 edge node of one site (pure: no I/O, times passed in).

Spec: Eclipse Sparkplug 3.0.0 (https://sparkplug.eclipse.org/specification/version/3.0/),
chapters 4 (topics), 5 (operational behaviour) and 6 (payloads); the tck-ids below name its
rules. The payload is the official `sparkplug_b.proto` (Eclipse Tahu, EPL-2.0, commit
5736e40), compiled to `sparkplug_b_pb2.py`/`.pyi` by `PROTOC` below and checked in; a test
regenerates it and fails on any difference.

Why generated code and not a Sparkplug library: the maintained Python ones (Eclipse Tahu's
client, mqtt-spb-wrapper, pysparkplug) pin paho-mqtt below 2, and the stack runs paho-mqtt 2;
pysparkplug's payload model would need a dependency override and still imports its paho 1
client with the package. The spec's own .proto and Google's `protobuf` runtime encode exactly
what every Sparkplug host decodes, with no hand-written wire format and no second MQTT
library; what the libraries add (session and sequence rules) is this module, tested rule by
rule, and the MQTT session is a plain paho 2 client (`sparkplug_link.py`).

Layout (issue 16: "an edge node per site and a device per system"): the bridge process is one
edge node, `spBv1.0/{group}/N*/{edge_node}` (group BMS_SPARKPLUG_GROUP, edge node id
BMS_SPARKPLUG_EDGE_NODE), with one MQTT session, so one will (NDEATH) and one bdSeq. Its own
metrics: bdSeq, 'Node Control/Rebirth' and the count of systems (`NODE_METRICS`), and, when
the bridge follows a site (BMS_SITE), the site's own values as one battery (`SITE_METRICS`,
'Site/SOC', ...: the edge node is the site), in its NBIRTH from the start (null until the first
site state) and in NDATA as they change, null again while the site controller is offline or
silent. Each system
is a device, `D*/{edge_node}/{system}`, carrying the pack (`PACK_METRICS`) and, with
BMS_SPARKPLUG_MODULES, every module's cells and temperatures in folders
('Module 01/Cell 03/Voltage', numbered from 1 for people as in Home Assistant;
`module_metrics`). A system's device is born with its master's first pack state and dies
(DDEATH) when the master goes offline or silent; it is born again with the next pack state.

Rules kept here:
- bdSeq (Int64) is 0 for the first CONNECT and one more (mod 256) for each further one; the
  will (NDEATH, only bdSeq) of a CONNECT and the NBIRTHs of that session carry the same value
  (message-flow-edge-node-birth-publish-will-message-payload-bdSeq, payloads-nbirth-bdseq-repeat).
- seq: NBIRTH starts at 0, every later NDATA/DBIRTH/DDATA/DDEATH of the node, whichever device
  it is about, is one more, 255 wraps to 0 (payloads-sequence-num-incrementing); NDEATH has none.
- Births name every metric with its alias and datatype and the current value; data messages
  carry only the aliases of metrics that changed (report by exception), a number only once it
  moved by more than its deadband from the value last sent. Aliases are unique over the node
  and its devices and kept for the node's life (payloads-alias-uniqueness).
- A device's metric set changes only with a new DBIRTH, after a DDEATH: a changed module
  layout kills and rebirths the device.
- Unknown (None) values go out as `is_null` with no value (payloads-metric-is-null), never 0.
- 'Node Control/Rebirth' (Boolean, false in NBIRTH); an NCMD setting it true makes a complete
  new birth (NBIRTH, then the DBIRTH of every system that is online) with the session's bdSeq
  (data-commands-rebirth-action-*).
- Timestamps are ms since the epoch (UTC): metric timestamps the sample's own `ts`, payload
  timestamps the time of publishing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.integrations.sparkplug_b_pb2 import DataType, Payload
from shared.alarm_words import place_of
from shared.messages import CellLocation, CellSnapshot, PackState
from shared.messages.site import SiteState
from shared.topics import SPARKPLUG_ID_FORBIDDEN, sparkplug_id

PROTOC = (
    "python -m grpc_tools.protoc -I services/integrations --python_out=services/integrations "
    "--pyi_out=services/integrations services/integrations/sparkplug_b.proto"
)
"""Regenerates `sparkplug_b_pb2.py` and `.pyi` (grpcio-tools, a dev dependency)."""
NAMESPACE = "spBv1.0"
REBIRTH = "Node Control/Rebirth"
BD_SEQ = "bdSeq"
SEQ_MODULO = 256

Value = float | int | bool | str | None

VALUE_FIELD: dict[int, str] = {
    DataType.Int32: "int_value",
    DataType.Int64: "long_value",
    DataType.Double: "double_value",
    DataType.Boolean: "boolean_value",
    DataType.String: "string_value",
}
"""Which oneof field of `Payload.Metric` carries each datatype used here (spec 6.4.16)."""


@dataclass(frozen=True)
class MetricDef:
    """One metric: its Sparkplug name, datatype, unit and report-by-exception deadband."""

    name: str
    datatype: int
    read: Callable[[Any], Value]
    unit: str | None = None
    deadband: float = 0.0
    """A number is sent again once it differs from the last sent by more than this."""


def _codes(codes: list[str]) -> str:
    return ",".join(codes)


def _spread_mv(s: PackState) -> float | None:
    if s.cell_v_max is None or s.cell_v_min is None:
        return None
    return round((s.cell_v_max - s.cell_v_min) * 1000.0, 1)


def _at(loc: CellLocation | None, sensor: bool = False) -> str | None:
    """ "M2 · C4" ("M1 · T2" for a sensor): numbered from 1, as the folders are."""
    return None if loc is None else place_of(loc, sensor=sensor)[0]


# plain ints: reading DataType.X goes through protobuf's enum wrapper, ~1 us each, per metric
D, B, S, I32 = (int(DataType.Value(n)) for n in ("Double", "Boolean", "String", "Int32"))
PACK_METRICS: tuple[MetricDef, ...] = (
    MetricDef("Pack/SOC", D, lambda s: s.soc, "%", 0.05),
    MetricDef("Pack/SOH", D, lambda s: s.soh, "%", 0.05),
    MetricDef("Pack/Voltage", D, lambda s: s.voltage, "V", 0.05),
    MetricDef("Pack/Current", D, lambda s: s.current, "A", 0.05),
    MetricDef("Pack/Power", D, lambda s: s.power_w, "W", 5.0),
    MetricDef("Pack/DC link voltage", D, lambda s: s.dc_link_voltage, "V", 0.05),
    MetricDef("Pack/Contactors", S, lambda s: s.contactors),
    MetricDef("Pack/Contactors closed", B, lambda s: s.contactors == "closed"),
    MetricDef("Pack/Mode", S, lambda s: s.mode),
    MetricDef("Limits/Charge voltage (CVL)", D, lambda s: s.limits.charge_voltage_v, "V", 0.05),
    MetricDef("Limits/Discharge voltage", D, lambda s: s.limits.discharge_voltage_v, "V", 0.05),
    MetricDef("Limits/Charge current (CCL)", D, lambda s: s.limits.charge_current_a, "A", 0.05),
    MetricDef("Limits/Discharge current (DCL)", D, lambda s: s.limits.discharge_current_a, "A",
              0.05),
    MetricDef("Limits/Charge reason", S, lambda s: s.limits.charge_reason),
    MetricDef("Limits/Discharge reason", S, lambda s: s.limits.discharge_reason),
    MetricDef("Cells/Voltage min", D, lambda s: s.cell_v_min, "V", 0.0005),
    MetricDef("Cells/Voltage max", D, lambda s: s.cell_v_max, "V", 0.0005),
    MetricDef("Cells/Voltage avg", D, lambda s: s.cell_v_avg, "V", 0.0005),
    MetricDef("Cells/Voltage spread", D, _spread_mv, "mV", 0.5),
    MetricDef("Cells/Voltage min at", S, lambda s: _at(s.cell_v_min_at)),
    MetricDef("Cells/Voltage max at", S, lambda s: _at(s.cell_v_max_at)),
    MetricDef("Temperatures/Min", D, lambda s: s.temp_min_c, "°C", 0.05),
    MetricDef("Temperatures/Max", D, lambda s: s.temp_max_c, "°C", 0.05),
    MetricDef("Temperatures/Avg", D, lambda s: s.temp_avg_c, "°C", 0.05),
    MetricDef("Temperatures/Min at", S, lambda s: _at(s.temp_min_at, sensor=True)),
    MetricDef("Temperatures/Max at", S, lambda s: _at(s.temp_max_at, sensor=True)),
    MetricDef("Codes/Faults", S, lambda s: _codes(s.faults)),
    MetricDef("Codes/Alarms", S, lambda s: _codes(s.alarms)),
    MetricDef("Codes/Warnings", S, lambda s: _codes(s.warnings)),
    MetricDef("Codes/Fault active", B, lambda s: bool(s.faults)),
    MetricDef("Codes/Alarm active", B, lambda s: bool(s.alarms)),
    MetricDef("Codes/Warning active", B, lambda s: bool(s.warnings)),
    MetricDef("Modules/Stale", I32, lambda s: len(s.stale_modules)),
    MetricDef("Energy/Charged", D, lambda s: s.energy_in_wh, "Wh", 0.5),
    MetricDef("Energy/Discharged", D, lambda s: s.energy_out_wh, "Wh", 0.5),
    MetricDef("Energy/Equivalent cycles", D, lambda s: s.equivalent_cycles, None, 0.005),
    MetricDef("Pack/SOC uncertainty", D, lambda s: s.soc_std, "%", 0.05),
    # grows 1 s per second: sent again each minute, not with every pack state
    MetricDef("Pack/Since SOC anchor", D, lambda s: s.since_anchor_s, "s", 60.0),
    MetricDef("Pack/Full charge requested", B, lambda s: s.full_charge_requested),
    MetricDef("Pack/Current zero offset", D, lambda s: s.current_zero_offset_a, "A", 0.0005),
)  # fmt: skip
"""A system's pack, on its device, read from `PackState`. Codes are the active codes of each
level, comma-separated ("" when none)."""
SYSTEMS = MetricDef("Systems/Known", I32, lambda n: n)
SYSTEMS_ONLINE = MetricDef("Systems/Online", I32, lambda n: n)
NODE_METRICS: tuple[MetricDef, ...] = (SYSTEMS, SYSTEMS_ONLINE)
"""The edge node's own metrics besides bdSeq and the rebirth control: how many systems it
has seen, and how many of them have a device alive (their master present)."""
SITE_METRICS: tuple[MetricDef, ...] = (
    MetricDef("Site/SOC", D, lambda s: s.soc, "%", 0.05),
    MetricDef("Site/SOH", D, lambda s: s.soh, "%", 0.05),
    MetricDef("Site/Bus voltage", D, lambda s: s.voltage_v, "V", 0.05),
    MetricDef("Site/Current", D, lambda s: s.current_a, "A", 0.05),
    MetricDef("Site/Power", D, lambda s: s.power_w, "W", 5.0),
    MetricDef("Site/SOC uncertainty", D, lambda s: s.soc_std, "%", 0.05),
    # grows 1 s per second: sent again each minute, as a pack's
    MetricDef("Site/Since SOC anchor", D, lambda s: s.since_anchor_s, "s", 60.0),
    MetricDef("Site/Full charge requested", B, lambda s: s.full_charge_requested),
    MetricDef("Site/Operation", S, lambda s: s.operation),
    MetricDef("Site/Strings joined", I32, lambda s: s.strings_joined),
    MetricDef("Site/Strings total", I32, lambda s: s.strings_total),
    MetricDef("Site/Energy charged", D, lambda s: s.energy_in_wh, "Wh", 0.5),
    MetricDef("Site/Energy discharged", D, lambda s: s.energy_out_wh, "Wh", 0.5),
    MetricDef("Site/Limits/Charge voltage (CVL)", D, lambda s: s.limits.charge_voltage_v, "V",
              0.05),
    MetricDef("Site/Limits/Discharge voltage", D, lambda s: s.limits.discharge_voltage_v, "V",
              0.05),
    MetricDef("Site/Limits/Charge current (CCL)", D, lambda s: s.limits.charge_current_a, "A",
              0.05),
    MetricDef("Site/Limits/Discharge current (DCL)", D, lambda s: s.limits.discharge_current_a,
              "A", 0.05),
    MetricDef("Site/Codes/Faults", S, lambda s: _codes(s.faults)),
    MetricDef("Site/Codes/Alarms", S, lambda s: _codes(s.alarms)),
    MetricDef("Site/Codes/Warnings", S, lambda s: _codes(s.warnings)),
    MetricDef("Site/Codes/Fault active", B, lambda s: bool(s.faults)),
    MetricDef("Site/Codes/Alarm active", B, lambda s: bool(s.alarms)),
)  # fmt: skip
"""The site as one battery, on the edge node itself, read from `SiteState`."""
CELLS_WAIT_S = 3.0
"""How long a system's DBIRTH waits for its first cells (the master sends them at 1-10 Hz)."""
ID_FORBIDDEN = SPARKPLUG_ID_FORBIDDEN
check_id = sparkplug_id
"""The id rule lives with the topics (shared/topics.py): the broker ACL checks the edge node
id it pins the bridge to by the same rule."""


def module_metrics(layout: tuple[tuple[int, int, int], ...]) -> tuple[MetricDef, ...]:
    """The module folders of a system's device for its layout, (module, cells, temperature
    sensors) per module in snapshot order; each reads the snapshot's module at that place."""

    def cell(k: int, i: int) -> Callable[[Any], Value]:
        return lambda s: s.modules[k].cell_v[i]

    def balancing(k: int, i: int) -> Callable[[Any], Value]:
        return lambda s: s.modules[k].balancing[i]

    def temp(k: int, i: int) -> Callable[[Any], Value]:
        return lambda s: s.modules[k].temp_c[i]

    def fresh(k: int) -> Callable[[Any], Value]:
        return lambda s: s.modules[k].fresh

    out: list[MetricDef] = []
    for k, (module, cells, temps) in enumerate(layout):
        m = f"Module {module + 1:02d}"
        out.append(MetricDef(f"{m}/Fresh", B, fresh(k)))
        out += [MetricDef(f"{m}/Cell {i + 1:02d}/Voltage", D, cell(k, i), "V", 0.0005)
                for i in range(cells)]  # fmt: skip
        out += [MetricDef(f"{m}/Cell {i + 1:02d}/Balancing", B, balancing(k, i))
                for i in range(cells)]  # fmt: skip
        out += [MetricDef(f"{m}/Temperature {i + 1:02d}", D, temp(k, i), "°C", 0.05)
                for i in range(temps)]  # fmt: skip
    return tuple(out)


def layout_of(snapshot: CellSnapshot) -> tuple[tuple[int, int, int], ...]:
    return tuple((m.module, len(m.cell_v), len(m.temp_c)) for m in snapshot.modules)


def _changed(d: MetricDef, old: Value, new: Value) -> bool:
    if old is None or new is None or d.datatype != D:
        return old != new
    assert isinstance(old, float | int) and isinstance(new, float | int)
    return abs(new - old) > d.deadband


def _put(metric: Payload.Metric, d: MetricDef, value: Value) -> None:
    if value is None:
        metric.is_null = True
    else:
        setattr(metric, VALUE_FIELD[d.datatype], value)


def ms(ts_s: float) -> int:
    return round(ts_s * 1000.0)


def next_bd_seq(previous: int) -> int:
    """The bdSeq of the next CONNECT: 0 for the first (`previous` -1), then one more, 255
    wrapping to 0 (message-flow-edge-node-birth-publish-will-message-payload-bdSeq)."""
    return (previous + 1) % SEQ_MODULO


def death_payload(bd_seq: int, now_s: float) -> bytes:
    """The NDEATH payload: only the bdSeq metric (Int64; payloads-ndeath-bdseq), no seq."""
    p = Payload(timestamp=ms(now_s))
    p.metrics.add(name=BD_SEQ, datatype=DataType.Int64, long_value=bd_seq)
    return bytes(p.SerializeToString())


class CommandError(ValueError):
    """An NCMD/DCMD that cannot be decoded."""


@dataclass
class _Device:
    """One system: its metric values (with the sample's time), what its device last sent."""

    layout: tuple[tuple[int, int, int], ...] = ()
    """The module layout its module metrics were made for (() without module metrics)."""
    module_defs: tuple[MetricDef, ...] = ()
    values: dict[str, tuple[Value, int]] = field(default_factory=dict)
    sent: dict[str, Value] = field(default_factory=dict)
    online: bool = False
    """Its master is present: a pack state since the last time it went offline or silent."""
    alive: bool = False
    """A DBIRTH went out in this birth cycle and no DDEATH since."""
    online_since_s: float = 0.0

    @property
    def defs(self) -> tuple[MetricDef, ...]:
        return PACK_METRICS + self.module_defs

    def value(self, name: str) -> Value:
        return self.values.get(name, (None, 0))[0]


@dataclass
class EdgeNode:
    """The Sparkplug state of the bridge's edge node: what it sent, what it must send next.

    Every method returns the (topic, payload) pairs to publish, in order, at QoS 0 without
    retain (the will is QoS 1, not retained). The adapter registers `death_payload(bdSeq)`
    as the will of every CONNECT (bdSeq from `next_bd_seq`), calls `session(bdSeq)` and
    `birth()` once that session is up, `lost()` when it drops; data offered while not born
    is kept for the next birth and not sent.
    """

    group: str
    edge: str
    modules: bool = True
    """Module folders (cells, temperatures) on each system's device."""
    bd_seq: int = -1
    """The current session's bdSeq (-1 before the first CONNECT)."""
    seq: int = 0
    born: bool = False
    node_sent: dict[str, Value] = field(default_factory=dict)
    devices: dict[str, _Device] = field(default_factory=dict)
    """System id -> its device."""
    aliases: dict[tuple[str, str], int] = field(default_factory=dict)
    """(device or "", metric name) -> alias, unique over the node and kept for its life."""
    site: bool = False
    """The node carries its site's metrics (`SITE_METRICS`), fixed for the node's life."""
    site_values: dict[str, tuple[Value, int]] = field(default_factory=dict)
    """Site metric -> (value, the site state's time in ms); empty before the first."""
    site_online: bool = False

    def __post_init__(self) -> None:
        check_id("group id", self.group)
        check_id("edge node id", self.edge)

    # --- topics -----------------------------------------------------------------------------
    def topic(self, kind: str, device: str | None = None) -> str:
        base = f"{NAMESPACE}/{self.group}/{kind}/{self.edge}"
        return base if device is None else f"{base}/{device}"

    @property
    def command_filters(self) -> tuple[str, str]:
        """NCMD (QoS 1, subscribed before NBIRTH: message-flow-edge-node-ncmd-subscribe) and
        DCMD of every device."""
        return self.topic("NCMD"), self.topic("DCMD", "+")

    # --- session ----------------------------------------------------------------------------
    def session(self, bd_seq: int) -> None:
        """A new MQTT session is up whose will carried `bd_seq`: the births to come use it."""
        self.bd_seq = bd_seq
        self.born = False

    def death_payload(self, now_s: float) -> bytes:
        return death_payload(self.bd_seq, now_s)

    def lost(self) -> None:
        """The session dropped: nothing more is sent until the next birth."""
        self.born = False

    def birth(self, now_s: float) -> list[tuple[str, bytes]]:
        """NBIRTH (seq 0, bdSeq of this session) and a DBIRTH per system that is online (but
        one still waiting for its first cells)."""
        if self.bd_seq < 0:
            raise RuntimeError("birth before the first CONNECT's will")
        now_ms = ms(now_s)
        self.seq = 0
        p = Payload(timestamp=now_ms, seq=self.seq)
        m = p.metrics.add(name=BD_SEQ, datatype=DataType.Int64, long_value=self.bd_seq)
        m.timestamp = now_ms
        m = p.metrics.add(name=REBIRTH, datatype=DataType.Boolean, boolean_value=False)
        m.alias = self._alias("", REBIRTH)
        m.timestamp = now_ms
        values = self._node_values()
        for d in self.node_defs:
            self._define(p, "", d, values[d.name], self._node_ts(d, now_ms))
        self.node_sent = values
        self.born = True
        out = [(self.topic("NBIRTH"), p.SerializeToString())]
        for system, dev in self.devices.items():
            dev.alive = False
            if dev.online and not self._cells_due(dev, now_s):
                out.append(self._device_birth(system, dev, now_s))
        return out

    def command(self, topic: str, payload: bytes, now_s: float) -> list[tuple[str, bytes]]:
        """An NCMD: a rebirth request answers with a complete birth; anything else is ignored
        (this edge node has no writable metric). DCMD: nothing is writable either."""
        try:
            p = Payload.FromString(payload)
        except Exception as exc:  # protobuf's DecodeError, or a message too deep
            raise CommandError(f"{topic}: not a Sparkplug B payload ({exc})") from exc
        if topic != self.topic("NCMD"):
            return []
        rebirth_alias = self.aliases.get(("", REBIRTH))
        for m in p.metrics:
            named = m.name == REBIRTH or (not m.name and m.alias == rebirth_alias)
            if named and m.HasField("boolean_value") and m.boolean_value:
                return self.birth(now_s) if self.bd_seq >= 0 else []
        return []

    # --- data -------------------------------------------------------------------------------
    def pack(self, system: str, state: PackState, now_s: float) -> list[tuple[str, bytes]]:
        """A system's new pack state: its DBIRTH when its device is not alive (new, or back
        after its master was gone), else a DDATA with the metrics that changed, if any."""
        check_id("device id", system)
        dev = self.devices.setdefault(system, _Device())
        ts = ms(state.ts) if state.ts is not None else ms(now_s)
        for d in PACK_METRICS:
            dev.values[d.name] = (d.read(state), ts)
        was_online, dev.online = dev.online, True
        if not was_online:
            dev.online_since_s = now_s
        if not self.born:
            return []
        if not dev.alive and self._cells_due(dev, now_s):
            return self._node_data(now_s) if not was_online else []
        if not dev.alive:
            return [self._device_birth(system, dev, now_s), *self._node_data(now_s)]
        out = self._device_data(system, dev, PACK_METRICS, now_s)
        return out if was_online else [*out, *self._node_data(now_s)]

    def cells(self, system: str, snapshot: CellSnapshot, now_s: float) -> list[tuple[str, bytes]]:
        """A system's cells into its module folders (with `modules` only): a DDATA with what
        changed, or, when the layout changed, DDEATH and a DBIRTH with the new metric set.
        Cells of a system without a pack state are kept for its birth, not sent."""
        if not self.modules:
            return []
        check_id("device id", system)
        dev = self.devices.setdefault(system, _Device())
        ts = ms(snapshot.ts) if snapshot.ts is not None else ms(now_s)
        layout = layout_of(snapshot)
        relayout = layout != dev.layout
        if relayout:
            for d in dev.module_defs:
                dev.values.pop(d.name, None)
            dev.layout, dev.module_defs = layout, module_metrics(layout)
        for d in dev.module_defs:
            dev.values[d.name] = (d.read(snapshot), ts)
        if self.born and dev.online and not dev.alive:  # its birth waited for these cells
            return [self._device_birth(system, dev, now_s), *self._node_data(now_s)]
        if not (self.born and dev.alive):
            return []
        if relayout:
            out = self._device_death(system, dev, now_s)
            return [*out, self._device_birth(system, dev, now_s)]
        return self._device_data(system, dev, dev.module_defs, now_s)

    def gone(self, system: str, now_s: float) -> list[tuple[str, bytes]]:
        """The system's master is offline or silent: its device dies (DDEATH; a host shows
        its metrics stale), its values become unknown, until its next pack state."""
        dev = self.devices.get(system)
        if dev is None or not dev.online:
            return []
        dev.online = False
        dev.values = {name: (None, ts) for name, (_v, ts) in dev.values.items()}
        if not self.born:
            return []
        return [*self._device_death(system, dev, now_s), *self._node_data(now_s)]

    def site_state(self, state: SiteState, now_s: float) -> list[tuple[str, bytes]]:
        """The site's new state: an NDATA with the site metrics that changed (after the
        birth; before it, kept for the birth)."""
        if not self.site:
            return []
        ts = ms(state.ts) if state.ts is not None else ms(now_s)
        self.site_values = {d.name: (d.read(state), ts) for d in SITE_METRICS}
        self.site_online = True
        return self._node_data(now_s) if self.born else []

    def site_gone(self, now_s: float) -> list[tuple[str, bytes]]:
        """The site controller is offline or silent: every site metric null (an NDATA), until
        its next site state."""
        if not self.site_online:
            return []
        self.site_online = False
        now_ms = ms(now_s)
        self.site_values = {d.name: (None, now_ms) for d in SITE_METRICS}
        return self._node_data(now_s) if self.born else []

    def online(self, system: str) -> bool:
        dev = self.devices.get(system)
        return dev is not None and dev.online

    # --- helpers ----------------------------------------------------------------------------
    def _cells_due(self, dev: _Device, now_s: float) -> bool:
        """A device with module folders waits up to `CELLS_WAIT_S` for its first cells, so
        its DBIRTH has them and it is not reborn at once with a new metric set."""
        return self.modules and not dev.layout and now_s - dev.online_since_s < CELLS_WAIT_S

    @property
    def node_defs(self) -> tuple[MetricDef, ...]:
        return NODE_METRICS + SITE_METRICS if self.site else NODE_METRICS

    def _node_values(self) -> dict[str, Value]:
        online = sum(1 for d in self.devices.values() if d.online)
        values: dict[str, Value] = {SYSTEMS.name: len(self.devices), SYSTEMS_ONLINE.name: online}
        if self.site:
            values.update(
                {d.name: self.site_values.get(d.name, (None, 0))[0] for d in SITE_METRICS}
            )
        return values

    def _node_ts(self, d: MetricDef, now_ms: int) -> int:
        """A site metric's time is its site state's; the others' the time of sending."""
        return self.site_values.get(d.name, (None, now_ms))[1] or now_ms

    def _node_data(self, now_s: float) -> list[tuple[str, bytes]]:
        """NDATA with the node metrics that changed, if any."""
        values = self._node_values()
        changed = [
            d for d in self.node_defs if _changed(d, self.node_sent.get(d.name), values[d.name])
        ]
        if not changed:
            return []
        p = Payload(timestamp=ms(now_s), seq=self._next_seq())
        for d in changed:
            self._data(p, "", d, values[d.name], self._node_ts(d, ms(now_s)))
            self.node_sent[d.name] = values[d.name]
        return [(self.topic("NDATA"), p.SerializeToString())]

    def _device_data(
        self, system: str, dev: _Device, defs: tuple[MetricDef, ...], now_s: float
    ) -> list[tuple[str, bytes]]:
        changed = [d for d in defs if _changed(d, dev.sent.get(d.name), dev.value(d.name))]
        if not changed:
            return []
        p = Payload(timestamp=ms(now_s), seq=self._next_seq())
        for d in changed:
            value, ts = dev.values[d.name]
            self._data(p, system, d, value, ts)
            dev.sent[d.name] = value
        return [(self.topic("DDATA", system), p.SerializeToString())]

    def _device_death(self, system: str, dev: _Device, now_s: float) -> list[tuple[str, bytes]]:
        """DDEATH (with seq: payloads-ddeath-seq) of a device that is alive."""
        if not dev.alive:
            return []
        dev.alive = False
        p = Payload(timestamp=ms(now_s), seq=self._next_seq())
        return [(self.topic("DDEATH", system), p.SerializeToString())]

    def _device_birth(self, system: str, dev: _Device, now_s: float) -> tuple[str, bytes]:
        p = Payload(timestamp=ms(now_s), seq=self._next_seq())
        for d in dev.defs:
            value, ts = dev.values.get(d.name, (None, ms(now_s)))
            self._define(p, system, d, value, ts or ms(now_s))
        dev.sent = {d.name: dev.value(d.name) for d in dev.defs}
        dev.alive = True
        return self.topic("DBIRTH", system), p.SerializeToString()

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) % SEQ_MODULO
        return self.seq

    def _alias(self, device: str, name: str) -> int:
        key = (device, name)
        alias = self.aliases.get(key)
        if alias is None:
            alias = self.aliases[key] = len(self.aliases) + 1
        return alias

    def _define(self, p: Payload, device: str, d: MetricDef, value: Value, ts: int) -> None:
        m = p.metrics.add(name=d.name, alias=self._alias(device, d.name), datatype=d.datatype)
        m.timestamp = ts
        if d.unit is not None:
            m.properties.keys.append("engUnit")
            m.properties.values.add(type=DataType.String, string_value=d.unit)
        _put(m, d, value)

    def _data(self, p: Payload, device: str, d: MetricDef, value: Value, ts: int) -> None:
        m = p.metrics.add(alias=self.aliases[(device, d.name)], datatype=d.datatype)
        m.timestamp = ts
        _put(m, d, value)
