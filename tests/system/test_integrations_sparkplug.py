"""Sparkplug B from the bridge as its own process on mosquitto, read by a host of its own: a
plain paho 2 client decoding every message with the protobuf classes of the official
sparkplug_b.proto (NBIRTH, DBIRTH and NDEATH also with protoc's own decoder) and checking the
spec's rules itself (topics, seq over the node and all its devices, bdSeq, DBIRTH before any
DDATA of a device, aliases, nulls). One bridge, one edge node, two systems as its devices:
births, data by exception, a silent master's DDEATH and its device's new DBIRTH, the
rebirth request, a new birth after a broker restart and the NDEATH will when the bridge is
killed."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from services.integrations.sparkplug_b_pb2 import DataType, Payload
from shared.broker import MosquittoBroker
from shared.bus import MqttBus
from shared.messages import CellSnapshot, ModuleCells
from shared.settings import parse_mqtt_url
from shared.topics import PACK_CELLS, PACK_STATE, SITE_STATE
from tests.factories import pack_state, site_state

from .agents import ServiceProcess, wait_until

GROUP = "scada"
EDGE = "site-a"
PROTO = Path(__file__).resolve().parents[2] / "services/integrations/sparkplug_b.proto"
WAIT_S = 30.0


@dataclass
class Got:
    at: float
    kind: str
    device: str | None
    payload: Payload
    qos: int
    retain: bool
    raw: bytes


class Host:
    """A Sparkplug host application in the small: records and decodes, nothing of the stack.
    `login`: its broker user and password, on a broker with access control."""

    def __init__(
        self,
        host: str,
        port: int,
        edge: str,
        group: str = GROUP,
        login: tuple[str, str] | None = None,
    ) -> None:
        self.edge, self.group = edge, group
        self.got: list[Got] = []
        self.lock = threading.Lock()
        # a persistent session on a broker that keeps it and queues QoS 0 for it: after a
        # broker restart the host misses nothing, whoever of it and the bridge is back first
        self.c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"host-{edge}", protocol=mqtt.MQTTv5
        )
        if login is not None:
            self.c.username_pw_set(*login)
        self.c.on_connect = lambda c, *_a: c.subscribe(f"spBv1.0/{group}/#", qos=1)
        self.c.on_message = self._on
        self.c.reconnect_delay_set(1, 2)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 600
        self.c.connect(host, port, clean_start=False, properties=props)
        self.c.loop_start()

    def _on(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        assert parts[0] == "spBv1.0" and parts[1] == self.group, msg.topic
        if parts[3] != self.edge:
            return
        got = Got(time.monotonic(), parts[2], parts[4] if len(parts) > 4 else None,
                  Payload.FromString(msg.payload), msg.qos, bool(msg.retain),
                  bytes(msg.payload))  # fmt: skip
        with self.lock:
            self.got.append(got)

    def all(self, kind: str | None = None, device: str | None = None) -> list[Got]:
        with self.lock:
            return [g for g in self.got if kind in (None, g.kind) and device in (None, g.device)]

    def rebirth(self) -> None:
        p = Payload(timestamp=int(time.time() * 1000))
        p.metrics.add(name="Node Control/Rebirth", datatype=DataType.Boolean, boolean_value=True)
        self.c.publish(f"spBv1.0/{self.group}/NCMD/{self.edge}", p.SerializeToString(), qos=0)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


Declared = dict[int, tuple[str | None, str, int]]


def check_session(messages: list[Got]) -> Declared:
    """The spec's rules over one edge node's messages from an NBIRTH on: seq 0 in NBIRTH and
    one more (mod 256) in every later message of the node or any of its devices but NDEATH;
    a device's DDATA and DDEATH only while it is born (after its DBIRTH of this birth cycle,
    before its DDEATH); data only by aliases the births declared, each for its own device,
    aliases unique over the node; null metrics carry no value. Returns alias -> (device,
    name, datatype)."""
    assert messages and messages[0].kind == "NBIRTH", [m.kind for m in messages[:3]]
    declared: Declared = {}
    alive: set[str | None] = set()
    seq = -1
    for g in messages:
        p = g.payload
        assert not g.retain and p.timestamp > 0
        if g.kind == "NDEATH":
            assert not p.HasField("seq")
            continue
        assert g.qos == 0
        if g.kind == "NBIRTH":
            assert p.seq == 0
            alive = set()
        else:
            assert p.seq == (seq + 1) % 256, (g.kind, g.device, p.seq, seq)
        seq = p.seq
        if g.kind == "DBIRTH":
            assert g.device not in alive, g.device
            alive.add(g.device)
        elif g.kind in ("DDATA", "DDEATH"):
            assert g.device in alive, (g.kind, g.device, alive)
            if g.kind == "DDEATH":
                alive.discard(g.device)
                assert not p.metrics
        for m in p.metrics:
            if m.is_null:
                assert m.WhichOneof("value") is None, m
            if g.kind.endswith("BIRTH"):
                assert m.name and m.datatype, m
                if m.name != "bdSeq":
                    known = declared.get(m.alias)
                    assert known in (None, (g.device, m.name, m.datatype)), (m, known)
                    declared[m.alias] = (g.device, m.name, m.datatype)
            elif g.kind.endswith("DATA"):
                assert not m.name and m.alias in declared, m
                assert declared[m.alias][0] == g.device, (g.device, declared[m.alias])
                assert declared[m.alias][2] == m.datatype, (m, declared[m.alias])
    return declared


def protoc_decode(raw: bytes) -> str:
    """protoc's own decoder (C++, from the .proto text): neither the Python runtime nor the
    generated module."""
    return subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", str(PROTO.parent),
         "--decode=org.eclipse.tahu.protobuf.Payload", str(PROTO)],
        input=raw, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip


def value(m: Payload.Metric) -> Any:
    field = m.WhichOneof("value")
    return None if field is None else getattr(m, field)


def bd_seq(g: Got) -> int:
    (m,) = [m for m in g.payload.metrics if m.name == "bdSeq"]
    assert m.datatype == DataType.Int64
    return int(m.long_value)


class Master:
    """A stand-in master: pack state at 10 Hz with a moving SOC and current, cells at 2 Hz with
    one moving cell, the SOH unknown. `paused`: it stays connected and says nothing (silent)."""

    def __init__(self, url: str, system: str) -> None:
        self.bus = MqttBus(parse_mqtt_url(url), system=system, service="master_core",
                           kind="master_core")  # fmt: skip
        assert self.bus.start(wait_s=10)
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        i = 0
        while not self.stop.wait(0.1):
            if self.paused.is_set():
                continue
            state = pack_state(soc=50.0 + (i % 20), soh=None, voltage=52.0,
                               current=float(i % 7), alarms=["cell_ov"])  # fmt: skip
            self.bus.publish(PACK_STATE, state)
            if i % 5 == 0:
                v = 3.30 + 0.01 * (i // 5 % 3)
                self.bus.publish(PACK_CELLS, CellSnapshot(modules=[
                    ModuleCells(module=m, fresh=True, cell_v=[v, 3.31, None],
                                cell_flags=[0, 0, 1], balancing=[False] * 3, temp_c=[24.5],
                                temp_flags=[0])
                    for m in range(2)
                ]))  # fmt: skip
            i += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.bus.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A private mosquitto that keeps sessions across its restart (the host's)."""
    with MosquittoBroker(persistence_dir=tmp_path / "store",
                         extra_config="queue_qos0_messages true") as b:  # fmt: skip
        yield b


Stack = tuple[MosquittoBroker, Host, dict[str, Master], ServiceProcess]


@pytest.fixture
def stack(broker: MosquittoBroker, system_id: str, tmp_path: Path) -> Iterator[Stack]:
    """Two systems, each with its master, on one bridge: one edge node, a device each."""
    host = Host(broker.host, broker.port, EDGE)
    assert wait_until(lambda: host.c.is_connected(), 10)
    systems = (f"{system_id}-a", f"{system_id}-b")
    masters = {s: Master(broker.url, s) for s in systems}
    proc = ServiceProcess(
        "integrations", broker.url, systems[0], tmp_path, all_systems="true",
        json_mirror="false", sparkplug="true", sparkplug_group=GROUP,
        sparkplug_edge_node=EDGE, metrics_port="0", mqtt_keepalive_s="4",
    )  # fmt: skip
    try:
        yield broker, host, masters, proc
    finally:
        proc.stop()
        assert "Traceback" not in proc.log(), proc.log()
        for master in masters.values():
            master.close()
        host.close()


def test_births_data_silence_rebirth_reconnect_and_death_as_a_host_sees_them(
    stack: Stack,
) -> None:
    broker, host, masters, proc = stack
    a, b = masters
    # birth: NBIRTH with bdSeq 0, a DBIRTH per system, then data by exception from both
    assert wait_until(lambda: all(len(host.all("DDATA", s)) >= 3 for s in masters), WAIT_S), (
        proc.log(), [(g.kind, g.device) for g in host.all()],
    )  # fmt: skip
    first = host.all()
    (nbirth,) = [g for g in first if g.kind == "NBIRTH"]
    assert bd_seq(nbirth) == 0
    assert {g.device for g in first if g.kind == "DBIRTH"} == {a, b}
    declared = check_session(first)
    text = protoc_decode(nbirth.raw)
    assert 'name: "bdSeq"' in text and "long_value: 0" in text and "seq: 0" in text
    assert 'name: "Node Control/Rebirth"' in text
    node = {m.name: m for m in nbirth.payload.metrics}
    assert value(node["Node Control/Rebirth"]) is False
    dbirth_a = next(g for g in first if g.kind == "DBIRTH" and g.device == a)
    text = protoc_decode(dbirth_a.raw)
    assert 'name: "Pack/SOH"' in text and "is_null: true" in text and "seq: " in text
    metrics = {m.name: m for m in dbirth_a.payload.metrics}
    assert metrics["Pack/SOH"].is_null and metrics["Pack/Voltage"].double_value == 52.0
    assert metrics["Codes/Alarms"].string_value == "cell_ov"
    assert metrics["Pack/SOC"].datatype == DataType.Double
    assert metrics["Module 02/Cell 03/Voltage"].is_null  # a flagged channel: unknown, not 0
    assert metrics["Module 01/Cell 02/Voltage"].double_value == pytest.approx(3.31)
    # the node counts its systems (in NBIRTH or the NDATA after it)
    node_names = {al: n for al, (dev, n, _t) in declared.items() if dev is None}
    online = [
        value(m)
        for g in first
        if g.kind in ("NBIRTH", "NDATA")
        for m in g.payload.metrics
        if node_names.get(m.alias) == "Systems/Online"
    ]
    assert online[-1] == 2, online
    # report by exception: the constant voltage is never in DDATA, SOC and current are
    ddata = {declared[m.alias][1] for g in host.all("DDATA") for m in g.payload.metrics}
    assert {"Pack/SOC", "Pack/Current"} <= ddata and "Pack/Voltage" not in ddata
    now_ms = time.time() * 1000
    for g in host.all("DDATA"):
        for m in g.payload.metrics:  # the sample's time (ms), close to now, not after sending
            assert now_ms - 60_000 < m.timestamp <= g.payload.timestamp + 1

    # system b's master goes silent (connected, no word): its device dies, a's goes on;
    # it speaks again: its device is born again
    masters[b].paused.set()
    assert wait_until(lambda: len(host.all("DDEATH", b)) == 1, WAIT_S), proc.log()
    death_at = host.all("DDEATH", b)[0].at
    assert wait_until(lambda: any(g.at > death_at for g in host.all("DDATA", a)), WAIT_S)
    masters[b].paused.clear()
    assert wait_until(lambda: len(host.all("DBIRTH", b)) == 2, WAIT_S), proc.log()
    assert not [g for g in host.all("DDATA", b) if g.at > death_at and
                g.at < host.all("DBIRTH", b)[1].at]  # fmt: skip
    check_session(host.all())

    # a rebirth request: NBIRTH again, same bdSeq, seq from 0, every system's device reborn
    before = len(host.all())
    host.rebirth()
    assert wait_until(lambda: len(host.all("NBIRTH")) == 2, WAIT_S), proc.log()
    reborn = host.all()[before:]
    start = next(i for i, g in enumerate(reborn) if g.kind == "NBIRTH")
    assert bd_seq(reborn[start]) == 0
    assert wait_until(lambda: len(host.all("DBIRTH", a)) == 2 and len(host.all("DBIRTH", b)) == 3,
                      WAIT_S)  # fmt: skip
    check_session(host.all()[before + start :])

    # the broker restarts: a new session, bdSeq 1, a new birth
    broker.restart()
    assert wait_until(lambda: len(host.all("NBIRTH")) == 3 and host.c.is_connected(), WAIT_S), (
        proc.log()
    )
    third = host.all("NBIRTH")[-1]
    assert bd_seq(third) == 1
    assert wait_until(lambda: all(
        len([g for g in host.all("DDATA", s) if g.at > third.at]) >= 3 for s in masters),
        WAIT_S), proc.log()  # fmt: skip
    check_session([g for g in host.all() if g.at >= third.at])

    # (mosquitto sends the wills of its clients as it stops: the host may have seen the NDEATH
    # of the first session, bdSeq 0)
    assert all(bd_seq(g) == 0 for g in host.all("NDEATH"))
    deaths = len(host.all("NDEATH"))

    # the bridge dies without a word: the broker sends its will, the NDEATH of bdSeq 1
    proc.proc.send_signal(signal.SIGKILL)
    proc.proc.wait(10)
    assert wait_until(lambda: len(host.all("NDEATH")) == deaths + 1, WAIT_S), proc.log()
    death = host.all("NDEATH")[-1]
    assert bd_seq(death) == 1 and death.qos == 1 and not death.payload.HasField("seq")
    assert [m.name for m in death.payload.metrics] == ["bdSeq"]
    text = protoc_decode(death.raw)
    assert 'name: "bdSeq"' in text and "long_value: 1" in text and "seq:" not in text


def test_a_stopped_master_kills_its_device_and_a_stopped_bridge_says_ndeath_itself(
    stack: Stack,
) -> None:
    _broker, host, masters, proc = stack
    a, b = masters
    assert wait_until(lambda: all(len(host.all("DDATA", s)) >= 2 for s in masters), WAIT_S), (
        proc.log()
    )
    masters[a].close()  # its status goes offline: its device dies at once, b's goes on
    assert wait_until(lambda: len(host.all("DDEATH", a)) == 1, WAIT_S), proc.log()
    assert host.all("DDEATH", b) == []
    death_at = host.all("DDEATH", a)[0].at
    assert wait_until(lambda: any(g.at > death_at for g in host.all("DDATA", b)), WAIT_S)
    check_session(host.all())
    assert proc.stop() == 0
    assert wait_until(lambda: len(host.all("NDEATH")) == 1, WAIT_S), proc.log()
    assert bd_seq(host.all("NDEATH")[0]) == 0


class SiteController:
    """A stand-in site controller: the site state at 10 Hz, the SOC moving."""

    def __init__(self, url: str, site: str) -> None:
        self.bus = MqttBus(parse_mqtt_url(url), system=site, service="site_controller",
                           kind="site_controller")  # fmt: skip
        assert self.bus.start(wait_s=10)
        self.site = site
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        i = 0
        while not self.stop.wait(0.1):
            self.bus.publish(SITE_STATE, site_state(site=self.site, soc=40.0 + i % 10, soh=None))
            i += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.bus.stop()


def test_the_site_is_the_edge_node_its_metrics_in_nbirth_and_ndata(
    broker: MosquittoBroker, system_id: str, tmp_path: Path
) -> None:
    host = Host(broker.host, broker.port, EDGE)
    assert wait_until(lambda: host.c.is_connected(), 10)
    site = f"{system_id}-site"
    controller = SiteController(broker.url, site)
    proc = ServiceProcess(
        "integrations", broker.url, site, tmp_path, all_systems="true", json_mirror="false",
        sparkplug="true", sparkplug_group=GROUP, sparkplug_edge_node=EDGE, metrics_port="0",
        site=site,
    )  # fmt: skip
    try:

        def node_values() -> dict[str, Any]:
            if not host.all():
                return {}
            declared = check_session(host.all())
            shown: dict[str, Any] = {}
            for g in host.all():
                if g.kind in ("NBIRTH", "NDATA"):
                    for m in g.payload.metrics:
                        shown[m.name or declared[m.alias][1]] = value(m)
            return shown

        assert wait_until(lambda: node_values().get("Site/SOC") is not None, WAIT_S), proc.log()
        (nbirth,) = host.all("NBIRTH")
        births = {m.name: m for m in nbirth.payload.metrics}
        assert births["Site/SOC"].datatype == DataType.Double
        assert births["Site/Strings joined"].datatype == DataType.Int32
        text = protoc_decode(nbirth.raw)
        assert 'name: "Site/Bus voltage"' in text and 'string_value: "V"' in text
        shown = node_values()
        assert shown["Site/SOH"] is None  # unknown: null, never 0
        assert shown["Site/Strings joined"] == 2 and shown["Site/Bus voltage"] == 26.2
        assert shown["Site/Codes/Alarms"] == "cell_ov"
        assert host.all("DBIRTH") == []  # the site is the node, no device of it
        assert wait_until(lambda: len(host.all("NDATA")) >= 3, WAIT_S)  # the SOC moves
        controller.close()  # its status goes offline: the site's metrics null at once
        assert wait_until(lambda: node_values()["Site/SOC"] is None, WAIT_S), proc.log()
        assert node_values()["Site/Strings joined"] is None
    finally:
        controller.stop.set()
        assert proc.stop() == 0
        assert "Traceback" not in proc.log(), proc.log()
        host.close()
