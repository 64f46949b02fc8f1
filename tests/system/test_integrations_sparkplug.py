"""Sparkplug B from the bridge as its own process on mosquitto, read by a host of its own: a
plain paho 2 client decoding every message with the protobuf classes of the official
sparkplug_b.proto (NBIRTH and NDEATH also with protoc's own decoder) and checking the spec's
rules itself (topics, seq, bdSeq, aliases, nulls):
births, data by exception, the rebirth request, a new birth after a broker restart and the
NDEATH will when the bridge is killed."""

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
from shared.topics import PACK_CELLS, PACK_STATE
from tests.factories import pack_state

from .agents import ServiceProcess, wait_until

GROUP = "scada"
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
    """A Sparkplug host application in the small: records and decodes, nothing of the stack."""

    def __init__(self, broker: MosquittoBroker, edge: str) -> None:
        self.edge = edge
        self.got: list[Got] = []
        self.lock = threading.Lock()
        # a persistent session on a broker that keeps it and queues QoS 0 for it: after a
        # broker restart the host misses nothing, whoever of it and the bridge is back first
        self.c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"host-{edge}", protocol=mqtt.MQTTv5
        )
        self.c.on_connect = lambda c, *_a: c.subscribe(f"spBv1.0/{GROUP}/#", qos=1)
        self.c.on_message = self._on
        self.c.reconnect_delay_set(1, 2)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 600
        self.c.connect(broker.host, broker.port, clean_start=False, properties=props)
        self.c.loop_start()

    def _on(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        assert parts[0] == "spBv1.0" and parts[1] == GROUP, msg.topic
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
        self.c.publish(f"spBv1.0/{GROUP}/NCMD/{self.edge}", p.SerializeToString(), qos=0)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def check_session(messages: list[Got]) -> dict[int, tuple[str | None, str, int]]:
    """The spec's rules over one edge node's messages from an NBIRTH on: seq 0 in NBIRTH and
    one more (mod 256) in every later message but NDEATH; data only by aliases the births
    declared, each with its declared datatype; null metrics carry no value. Returns alias ->
    (device, name, datatype)."""
    assert messages and messages[0].kind == "NBIRTH", [m.kind for m in messages[:3]]
    declared: dict[int, tuple[str | None, str, int]] = {}
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
        else:
            assert p.seq == (seq + 1) % 256, (g.kind, g.device, p.seq, seq)
        seq = p.seq
        for m in p.metrics:
            if m.is_null:
                assert m.WhichOneof("value") is None, m
            if g.kind.endswith("BIRTH"):
                assert m.name and m.datatype, m
                if m.name != "bdSeq":
                    declared[m.alias] = (g.device, m.name, m.datatype)
            elif g.kind.endswith("DATA"):
                assert not m.name and m.alias in declared, m
                assert declared[m.alias][0] == g.device, (g.device, declared[m.alias])
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
    one moving cell, the SOH unknown."""

    def __init__(self, broker: MosquittoBroker, system: str) -> None:
        self.bus = MqttBus(parse_mqtt_url(broker.url), system=system, service="master_core",
                           kind="master_core")  # fmt: skip
        assert self.bus.start(wait_s=10)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        i = 0
        while not self.stop.wait(0.1):
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
def bridge_env() -> dict[str, str]:
    return dict(all_systems="false", json_mirror="false", sparkplug="true",
                sparkplug_group=GROUP, metrics_port="0", mqtt_keepalive_s="4")  # fmt: skip


def start_bridge(broker: MosquittoBroker, system: str, tmp: Path, env: dict[str, str],
                 label: str = "") -> ServiceProcess:  # fmt: skip
    return ServiceProcess("integrations", broker.url, system, tmp, label=label, **env)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A private mosquitto that keeps sessions across its restart (the host's)."""
    with MosquittoBroker(persistence_dir=tmp_path / "store",
                         extra_config="queue_qos0_messages true") as b:  # fmt: skip
        yield b


@pytest.fixture
def stack(
    broker: MosquittoBroker, system_id: str, tmp_path: Path, bridge_env: dict[str, str],
) -> Iterator[tuple[MosquittoBroker, Host, Master, ServiceProcess]]:  # fmt: skip
    host = Host(broker, system_id)
    assert wait_until(lambda: host.c.is_connected(), 10)
    master = Master(broker, system_id)
    proc = start_bridge(broker, system_id, tmp_path, bridge_env)
    try:
        yield broker, host, master, proc
    finally:
        proc.stop()
        assert "Traceback" not in proc.log(), proc.log()
        master.close()
        host.close()


def test_births_data_rebirth_reconnect_and_death_as_a_host_sees_them(
    stack: tuple[MosquittoBroker, Host, Master, ServiceProcess],
) -> None:
    broker, host, _master, proc = stack
    # birth: NBIRTH with bdSeq 0, a DBIRTH per module, then data by exception
    assert wait_until(lambda: len(host.all("DDATA")) >= 2 and len(host.all("NDATA")) >= 5,
                      WAIT_S), (proc.log(), [g.kind for g in host.all()])  # fmt: skip
    first = host.all()
    (nbirth,) = [g for g in first if g.kind == "NBIRTH"]
    assert bd_seq(nbirth) == 0
    assert {g.device for g in first if g.kind == "DBIRTH"} == {"module_00", "module_01"}
    declared = check_session(first)
    text = protoc_decode(nbirth.raw)
    assert 'name: "bdSeq"' in text and "long_value: 0" in text and "seq: 0" in text
    assert 'name: "Pack/SOH"' in text and "is_null: true" in text
    names = {m.name: m for m in nbirth.payload.metrics}
    assert value(names["Node Control/Rebirth"]) is False
    assert names["Pack/SOH"].is_null and names["Pack/Voltage"].double_value == 52.0
    assert names["Codes/Alarms"].string_value == "cell_ov"
    assert names["Pack/SOC"].datatype == DataType.Double
    dbirth = {m.name: m for g in first if g.kind == "DBIRTH" for m in g.payload.metrics}
    assert dbirth["Cells/02/Voltage"].is_null  # a flagged channel is unknown, not 0
    # report by exception: the constant voltage is never in NDATA, SOC and current are
    ndata_names = {declared[m.alias][1] for g in host.all("NDATA") for m in g.payload.metrics}
    assert {"Pack/SOC", "Pack/Current"} <= ndata_names and "Pack/Voltage" not in ndata_names
    now_ms = time.time() * 1000
    for g in host.all("NDATA"):
        for m in g.payload.metrics:  # the sample's time (ms), close to now, not after sending
            assert now_ms - 60_000 < m.timestamp <= g.payload.timestamp + 1

    # a rebirth request: NBIRTH again, same bdSeq, seq from 0, every device reborn
    before = len(host.all())
    host.rebirth()
    assert wait_until(lambda: len(host.all("NBIRTH")) == 2, WAIT_S), proc.log()
    reborn = host.all()[before:]
    start = next(i for i, g in enumerate(reborn) if g.kind == "NBIRTH")
    assert bd_seq(reborn[start]) == 0
    assert wait_until(lambda: len(host.all("DBIRTH")) >= 4, WAIT_S)
    check_session(host.all()[before + start :])

    # the broker restarts: a new session, bdSeq 1, a new birth
    broker.restart()
    assert wait_until(lambda: len(host.all("NBIRTH")) == 3 and host.c.is_connected(), WAIT_S), (
        proc.log()
    )
    third = host.all("NBIRTH")[-1]
    assert bd_seq(third) == 1
    assert wait_until(lambda: len(host.all("NDATA")) > len(
        [g for g in host.all() if g.kind == "NDATA" and g.at < third.at]) + 3, WAIT_S)  # fmt: skip
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


def test_a_stopped_bridge_says_ndeath_itself_and_a_silent_master_turns_metrics_null(
    stack: tuple[MosquittoBroker, Host, Master, ServiceProcess],
) -> None:
    _broker, host, master, proc = stack
    assert wait_until(lambda: len(host.all("NDATA")) >= 3, WAIT_S), proc.log()
    master.close()  # its status goes offline: every pack metric null, the modules dead
    assert wait_until(lambda: len(host.all("DDEATH")) == 2, WAIT_S), proc.log()
    declared = check_session(host.all())
    last: dict[str, Payload.Metric] = {}
    for g in host.all("NDATA"):
        for m in g.payload.metrics:
            last[declared[m.alias][1]] = m
    assert value(last["BMS/Online"]) is False
    assert last["Pack/SOC"].is_null and last["Pack/Current"].is_null
    assert proc.stop() == 0
    assert wait_until(lambda: len(host.all("NDEATH")) == 1, WAIT_S), proc.log()
    assert bd_seq(host.all("NDEATH")[0]) == 0
