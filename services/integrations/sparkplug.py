"""Sparkplug B 3.0 edge node of one system (pure: no I/O, times passed in).

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

Layout: one edge node per system, `spBv1.0/{group}/N*/{system}` (group BMS_SPARKPLUG_GROUP,
edge node id the system id), carrying the pack (state of charge, voltages, currents, limits,
extremes, active codes: `NODE_METRICS`); one device per module, `D*/{system}/module_NN`,
carrying its cells and temperatures (`module_metrics`). Each edge node has its own MQTT
session (`sparkplug_link.py`), because its NDEATH must be that session's will.

Rules kept here:
- bdSeq (Int64) is 0 for the first CONNECT and one more (mod 256) for each further one; the
  will (NDEATH, only bdSeq) of a CONNECT and the NBIRTHs of that session carry the same value
  (message-flow-edge-node-birth-publish-will-message-payload-bdSeq, payloads-nbirth-bdseq-repeat).
- seq: NBIRTH starts at 0, every later NDATA/DBIRTH/DDATA/DDEATH of the node is one more, 255
  wraps to 0 (payloads-sequence-num-incrementing); NDEATH has none.
- Births name every metric with its alias and datatype and the current value; data messages
  carry only the aliases of metrics that changed (report by exception), a number only once it
  moved by more than its deadband from the value last sent.
- Unknown (None) values go out as `is_null` with no value (payloads-metric-is-null), never 0.
- 'Node Control/Rebirth' (Boolean, false in NBIRTH); an NCMD setting it true makes a complete
  new birth (NBIRTH, then every DBIRTH) with the session's bdSeq (data-commands-rebirth-action-*).
- Timestamps are ms since the epoch (UTC): metric timestamps the sample's own `ts`, payload
  timestamps the time of publishing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.integrations.sparkplug_b_pb2 import DataType, Payload
from shared.messages import CellSnapshot, ModuleCells, PackState

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


def _at(loc: Any) -> str | None:
    return None if loc is None else f"{loc.module}.{loc.index}"


# plain ints: reading DataType.X goes through protobuf's enum wrapper, ~1 us each, per metric
D, B, S, I32 = (int(DataType.Value(n)) for n in ("Double", "Boolean", "String", "Int32"))
NODE_METRICS: tuple[MetricDef, ...] = (
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
    MetricDef("Temperatures/Min at", S, lambda s: _at(s.temp_min_at)),
    MetricDef("Temperatures/Max at", S, lambda s: _at(s.temp_max_at)),
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
)  # fmt: skip
"""The pack, on the edge node (NBIRTH/NDATA), read from `PackState`. Codes are the active
codes of each level, comma-separated ("" when none)."""
ONLINE = MetricDef("BMS/Online", B, lambda online: online)
"""The master's presence: false (and every pack metric null) while it is offline or silent."""


def device_id(module: int) -> str:
    return f"module_{module:02d}"


def module_metrics(cells: int, temps: int) -> tuple[MetricDef, ...]:
    """A module's device metrics for its channel counts (read from its `ModuleCells`)."""

    def cell(i: int) -> Callable[[Any], Value]:
        return lambda m: m.cell_v[i]

    def balancing(i: int) -> Callable[[Any], Value]:
        return lambda m: m.balancing[i]

    def temp(i: int) -> Callable[[Any], Value]:
        return lambda m: m.temp_c[i]

    return (
        MetricDef("Fresh", B, lambda m: m.fresh),
        *(MetricDef(f"Cells/{i:02d}/Voltage", D, cell(i), "V", 0.0005) for i in range(cells)),
        *(MetricDef(f"Cells/{i:02d}/Balancing", B, balancing(i)) for i in range(cells)),
        *(MetricDef(f"Temperatures/{i:02d}", D, temp(i), "°C", 0.05) for i in range(temps)),
    )


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
    shape: tuple[int, int]
    """(cells, temperature sensors) its metrics were made for."""
    defs: tuple[MetricDef, ...]
    values: dict[str, Value]
    ts_ms: int
    sent: dict[str, Value] = field(default_factory=dict)
    alive: bool = False
    """A DBIRTH went out in this birth cycle and no DDEATH since."""


@dataclass
class EdgeNode:
    """The Sparkplug state of one edge node: what it sent, what it must send next.

    Every method returns the (topic, payload) pairs to publish, in order, at QoS 0 without
    retain (the will is QoS 1, not retained). The adapter registers `death_payload(bdSeq)`
    as the will of every CONNECT (bdSeq from `next_bd_seq`), calls `session(bdSeq)` and
    `birth()` once that session is up, `lost()` when it drops; data offered while not born
    is kept for the next birth and not sent.
    """

    group: str
    edge: str
    bd_seq: int = -1
    """The current session's bdSeq (-1 before the first CONNECT)."""
    seq: int = 0
    born: bool = False
    node_values: dict[str, Value] = field(default_factory=dict)
    node_ts_ms: int = 0
    node_sent: dict[str, Value] = field(default_factory=dict)
    devices: dict[str, _Device] = field(default_factory=dict)
    aliases: dict[tuple[str, str], int] = field(default_factory=dict)
    """(device or "", metric name) -> alias, unique over the node and kept for its life."""

    def __post_init__(self) -> None:
        self.node_values = {d.name: None for d in (ONLINE, *NODE_METRICS)}

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
        """NBIRTH (seq 0, bdSeq of this session) and a DBIRTH per known device."""
        if self.bd_seq < 0:
            raise RuntimeError("birth before the first CONNECT's will")
        self.seq = 0
        p = Payload(timestamp=ms(now_s), seq=self.seq)
        m = p.metrics.add(name=BD_SEQ, datatype=DataType.Int64, long_value=self.bd_seq)
        m.timestamp = ms(now_s)
        m = p.metrics.add(name=REBIRTH, datatype=DataType.Boolean, boolean_value=False)
        m.alias = self._alias("", REBIRTH)
        m.timestamp = ms(now_s)
        for d in (ONLINE, *NODE_METRICS):
            self._define(p, "", d, self.node_values[d.name], self.node_ts_ms or ms(now_s))
        self.node_sent = dict(self.node_values)
        self.born = True
        out = [(self.topic("NBIRTH"), p.SerializeToString())]
        for name, dev in self.devices.items():
            dev.alive = False
            out.append(self._device_birth(name, dev, now_s))
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
    def pack(self, state: PackState | None, online: bool, now_s: float) -> list[tuple[str, bytes]]:
        """New pack values (None: the master is gone: every pack metric becomes null): an
        NDATA with the metrics that changed, if any and if born."""
        values: dict[str, Value] = {ONLINE.name: online}
        for d in NODE_METRICS:
            values[d.name] = d.read(state) if state is not None else None
        self.node_values = values
        ts = ms(state.ts) if state is not None and state.ts is not None else ms(now_s)
        self.node_ts_ms = ts
        if not self.born:
            return []
        changed = [
            d
            for d in (ONLINE, *NODE_METRICS)
            if _changed(d, self.node_sent.get(d.name), values[d.name])
        ]
        if not changed:
            return []
        p = Payload(timestamp=ms(now_s), seq=self._next_seq())
        for d in changed:
            self._data(p, "", d, values[d.name], ts)
            self.node_sent[d.name] = values[d.name]
        return [(self.topic("NDATA"), p.SerializeToString())]

    def cells(self, snapshot: CellSnapshot, now_s: float) -> list[tuple[str, bytes]]:
        """A device per module: DBIRTH for a new one or one whose channel count changed,
        DDATA with what changed otherwise."""
        ts = ms(snapshot.ts) if snapshot.ts is not None else ms(now_s)
        out: list[tuple[str, bytes]] = []
        seen = set()
        for module in snapshot.modules:
            name = device_id(module.module)
            seen.add(name)
            out += self._module(name, module, ts, now_s)
        for name in [n for n in self.devices if n not in seen]:  # a module left the layout
            out += self.device_death(name, now_s)
            del self.devices[name]
        return out

    def _module(
        self, name: str, module: ModuleCells, ts: int, now_s: float
    ) -> list[tuple[str, bytes]]:
        dev = self.devices.get(name)
        shape = (len(module.cell_v), len(module.temp_c))
        if dev is None or dev.shape != shape:
            out = self.device_death(name, now_s) if dev is not None else []
            defs = module_metrics(*shape)
            dev = _Device(shape, defs, {d.name: d.read(module) for d in defs}, ts)
            self.devices[name] = dev
            if self.born:
                out.append(self._device_birth(name, dev, now_s))
            return out
        dev.values = {d.name: d.read(module) for d in dev.defs}
        dev.ts_ms = ts
        if not self.born:
            return []
        if not dev.alive:  # back after a DDEATH
            return [self._device_birth(name, dev, now_s)]
        changed = [d for d in dev.defs if _changed(d, dev.sent.get(d.name), dev.values[d.name])]
        if not changed:
            return []
        p = Payload(timestamp=ms(now_s), seq=self._next_seq())
        for d in changed:
            self._data(p, name, d, dev.values[d.name], ts)
            dev.sent[d.name] = dev.values[d.name]
        return [(self.topic("DDATA", name), p.SerializeToString())]

    def device_death(self, name: str, now_s: float) -> list[tuple[str, bytes]]:
        """DDEATH (with seq: payloads-ddeath-seq) of a device that was born; it is born again
        with its next data."""
        dev = self.devices.get(name)
        if dev is None or not dev.alive or not self.born:
            return []
        dev.alive = False
        p = Payload(timestamp=ms(now_s), seq=self._next_seq())
        return [(self.topic("DDEATH", name), p.SerializeToString())]

    def all_devices_dead(self, now_s: float) -> list[tuple[str, bytes]]:
        return [msg for name in list(self.devices) for msg in self.device_death(name, now_s)]

    # --- helpers ----------------------------------------------------------------------------
    def _device_birth(self, name: str, dev: _Device, now_s: float) -> tuple[str, bytes]:
        p = Payload(timestamp=ms(now_s), seq=self._next_seq())
        for d in dev.defs:
            self._define(p, name, d, dev.values[d.name], dev.ts_ms)
        dev.sent = dict(dev.values)
        dev.alive = True
        return self.topic("DBIRTH", name), p.SerializeToString()

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
