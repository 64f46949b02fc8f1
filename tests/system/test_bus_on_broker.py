"""The bus adapter against real brokers: mosquitto, and the embedded amqtt broker for the
MQTT 3.1.1 subset that `make run` relies on without mosquitto."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.broker import LATENCY_SETTINGS, EmbeddedBroker, MosquittoBroker
from shared.bus import Delivery, MqttBus
from shared.commands import CommandClient, CommandOutcome, CommandServer
from shared.messages import ContactorsArgs, Event, ServiceStatus
from shared.netfault import TcpFaultProxy
from shared.settings import ServiceSettings, parse_mqtt_url
from shared.topics import EVENTS, SERVICE_STATUS

from .agents import ROOT, wait_until


class Pump:
    """Runs a bus's handlers in a thread of its own, as a service loop would."""

    def __init__(self, bus: MqttBus) -> None:
        self.bus = bus
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.bus.process(timeout_s=0.05)


@pytest.fixture
def buses() -> Iterator[Callable[..., MqttBus]]:
    made: list[tuple[MqttBus, list[Pump]]] = []

    def make(
        url: str,
        system: str,
        service: str,
        *,
        protocol: str = "5",
        keepalive_s: int = 5,
        start: bool = True,
        pump: bool = True,
    ) -> MqttBus:
        bus = MqttBus(
            parse_mqtt_url(url),
            system=system,
            service=service,
            kind="test",
            protocol=protocol,
            keepalive_s=keepalive_s,
            reconnect_min_s=0.2,
            reconnect_max_s=1.0,
        )
        pumps = [Pump(bus)] if pump else []
        made.append((bus, pumps))
        if start:
            assert bus.start(wait_s=10), f"{service} could not connect to {url}"
        return bus

    yield make
    for bus, pumps in made:
        for p in pumps:
            p.stop.set()
        bus.stop(timeout_s=0.5)


BROKERS = ["mosquitto", "embedded"]


@pytest.fixture(params=BROKERS)
def any_broker(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(url, protocol) of each broker `make run` may use."""
    if request.param == "mosquitto":
        broker: MosquittoBroker | EmbeddedBroker = request.getfixturevalue("mosquitto")
        return broker.url, "5"
    broker = request.getfixturevalue("embedded_broker")
    return broker.url, "3.1.1"


def test_retained_status_reaches_late_subscribers(
    any_broker: tuple[str, str], system_id: str, buses: Any
) -> None:
    url, protocol = any_broker
    buses(url, system_id, "master_core", protocol=protocol)
    seen: list[ServiceStatus] = []
    late = buses(url, system_id, "late", protocol=protocol)
    late.subscribe(SERVICE_STATUS, lambda d: seen.append(d.message), service="master_core")
    assert wait_until(lambda: bool(seen), 5)
    assert seen[0].state == "online" and seen[0].service == "master_core"
    assert seen[0].pid == os.getpid()


def test_last_will_after_kill_9(any_broker: tuple[str, str], system_id: str, buses: Any) -> None:
    url, protocol = any_broker
    child = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("bus_child.py")),
            url,
            system_id,
            "victim",
            protocol,
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        states: list[str] = []
        watcher = buses(url, system_id, "watcher", protocol=protocol)
        watcher.subscribe(
            SERVICE_STATUS, lambda d: states.append(d.message.state), service="victim"
        )
        assert wait_until(lambda: states[-1:] == ["online"], 5)
        os.kill(child.pid, signal.SIGKILL)
        assert wait_until(lambda: states[-1:] == ["offline"], 10), states
    finally:
        child.kill()
        child.wait()


def test_graceful_stop_says_offline(mosquitto: MosquittoBroker, system_id: str, buses: Any) -> None:
    svc = buses(mosquitto.url, system_id, "svc")
    states: list[str] = []
    watcher = buses(mosquitto.url, system_id, "watcher")
    watcher.subscribe(SERVICE_STATUS, lambda d: states.append(d.message.state), service="svc")
    assert wait_until(lambda: states == ["online"], 5)
    svc.stop()
    assert wait_until(lambda: states == ["online", "offline"], 5)


def test_reconnect_resubscribes_and_republishes_retained(
    restartable_mosquitto: MosquittoBroker, system_id: str, buses: Any
) -> None:
    url = restartable_mosquitto.url
    sub = buses(url, system_id, "sub")
    pub = buses(url, system_id, "pub")
    got: list[str] = []
    sub.subscribe(EVENTS, lambda d: got.append(d.message.code))
    time.sleep(0.2)
    pub.publish(EVENTS, Event(level="info", kind="info", code="before"))
    assert wait_until(lambda: got == ["before"], 5)

    restartable_mosquitto.kill()
    assert wait_until(lambda: not sub.connected and not pub.connected, 10)
    restartable_mosquitto.start()
    assert sub.wait_connected(15) and pub.wait_connected(15)
    assert sub.counters["connects"] == 2

    # a non-persistent broker forgot every retained message; the bus published its own again
    states: list[ServiceStatus] = []
    fresh = buses(url, system_id, "fresh")
    fresh.subscribe(SERVICE_STATUS, lambda d: states.append(d.message), service="pub")
    assert wait_until(lambda: [s.state for s in states] == ["online"], 5)

    assert wait_until(lambda: _publish_until_seen(pub, got, "after"), 10)


def _publish_until_seen(pub: MqttBus, got: list[str], code: str) -> bool:
    pub.publish(EVENTS, Event(level="info", kind="info", code=code))
    time.sleep(0.2)
    return code in got


def test_expired_command_is_refused_not_executed(
    mosquitto: MosquittoBroker, system_id: str, buses: Any
) -> None:
    master = buses(mosquitto.url, system_id, "master_core", pump=False)
    executed: list[object] = []
    CommandServer(master, {"contactors": lambda a: executed.append(a) or CommandOutcome(True)})
    ui = buses(mosquitto.url, system_id, "ui", pump=False)
    client = CommandClient(ui)
    time.sleep(0.3)

    replies: list[Any] = []
    client.send("contactors", ContactorsArgs(action="open"), ttl_s=0.3, on_reply=replies.append)
    time.sleep(0.6)  # the master is busy elsewhere; the request waits in its inbox
    assert wait_until(lambda: master.process() > 0, 5)
    assert executed == [] and master.counters["commands_expired"] == 1

    fresh = threading.Thread(target=lambda: [master.process(0.05) for _ in range(60)], daemon=True)
    fresh.start()
    reply = client.request("contactors", ContactorsArgs(action="open"), ttl_s=3.0)
    assert reply is not None and reply.status == "accepted"
    assert len(executed) == 1


def test_command_round_trip_on_embedded_broker(
    embedded_broker: EmbeddedBroker, system_id: str, buses: Any
) -> None:
    master = buses(embedded_broker.url, system_id, "master_core", protocol="3.1.1")
    CommandServer(master, {"contactors": lambda a: CommandOutcome(False, "fault latched")})
    ui = buses(embedded_broker.url, system_id, "ui", protocol="3.1.1", pump=False)
    client = CommandClient(ui)
    time.sleep(0.3)
    reply = client.request("contactors", ContactorsArgs(action="close"), ttl_s=3.0)
    assert reply is not None and (reply.status, reply.reason) == ("refused", "fault latched")


def test_blocked_handler_does_not_stall_the_connection(
    mosquitto: MosquittoBroker, system_id: str, buses: Any
) -> None:
    slow = buses(mosquitto.url, system_id, "slow", keepalive_s=2)
    release = threading.Event()
    got: list[str] = []

    def blocking(d: Delivery[Event]) -> None:
        if d.message.code == "block":
            release.wait(8)
        got.append(d.message.code)

    slow.subscribe(EVENTS, blocking)
    states: list[str] = []
    watcher = buses(mosquitto.url, system_id, "watcher")
    watcher.subscribe(SERVICE_STATUS, lambda d: states.append(d.message.state), service="slow")
    pub = buses(mosquitto.url, system_id, "pub")
    time.sleep(0.3)
    pub.publish(EVENTS, Event(level="info", kind="info", code="block"))
    for i in range(50):
        pub.publish(EVENTS, Event(level="info", kind="info", code=f"n{i}"))
    time.sleep(5)  # 2.5 x keepalive: a stalled network thread would have been dropped
    assert slow.connected and states == ["online"]
    assert slow.counters["disconnects"] == 0
    release.set()
    assert wait_until(lambda: len(got) == 51, 5)
    assert got[1:] == [f"n{i}" for i in range(50)]


def test_network_blackhole_is_detected_and_recovered(
    mosquitto: MosquittoBroker,
    system_id: str,
    buses: Any,
    fault_proxy: Callable[[Any], TcpFaultProxy],
) -> None:
    proxy = fault_proxy(mosquitto)
    cut = buses(proxy.url, system_id, "cut", keepalive_s=2)
    got: list[str] = []
    cut.subscribe(EVENTS, lambda d: got.append(d.message.code))
    states: list[str] = []
    watcher = buses(mosquitto.url, system_id, "watcher")
    watcher.subscribe(SERVICE_STATUS, lambda d: states.append(d.message.state), service="cut")
    assert wait_until(lambda: states == ["online"], 5)

    proxy.blackhole()
    assert wait_until(lambda: not cut.connected, 10)  # found by keepalive, not by a reset
    assert wait_until(lambda: "offline" in states, 10)  # the broker sent the will
    proxy.restore()
    assert cut.wait_connected(15)
    pub = buses(mosquitto.url, system_id, "pub")
    assert wait_until(lambda: _publish_until_seen(pub, got, "back"), 10)
    assert states[-1] == "online"


def test_connection_reset_is_detected_at_once(
    mosquitto: MosquittoBroker,
    system_id: str,
    buses: Any,
    fault_proxy: Callable[[Any], TcpFaultProxy],
) -> None:
    proxy = fault_proxy(mosquitto)
    bus = buses(proxy.url, system_id, "reset", keepalive_s=30)
    proxy.reset()
    assert wait_until(lambda: not bus.connected, 3)
    proxy.restore()
    assert bus.wait_connected(15)


def test_resent_command_bytes_run_once_and_get_the_first_reply(
    mosquitto: MosquittoBroker, system_id: str, buses: Any
) -> None:
    """Issue: resent bytes of a `contactors close` closed the contactors again. A third party
    captures the request on the wire and publishes the same bytes twice more, then a new request
    under the same correlation id: the handler runs once, both duplicates get the first reply
    again, the reused id is refused."""
    import paho.mqtt.client as paho

    master = buses(mosquitto.url, system_id, "master_core")
    executed: list[object] = []
    CommandServer(master, {"contactors": lambda a: executed.append(a) or CommandOutcome(True)})
    ui = buses(mosquitto.url, system_id, "ui")
    client = CommandClient(ui)
    address = parse_mqtt_url(mosquitto.url)
    captured: list[tuple[str, bytes]] = []
    replies: list[tuple[str, bytes]] = []
    spy = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"spy-{system_id}")

    def on_message(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
        (replies if "/reply/" in msg.topic else captured).append((msg.topic, msg.payload))

    spy.on_message = on_message
    spy.connect(address.host, address.port)
    spy.subscribe(f"bms/v1/{system_id}/cmd/#", qos=1)
    spy.subscribe(f"bms/v1/{system_id}/reply/#", qos=1)
    spy.loop_start()
    try:
        time.sleep(0.3)
        first = client.request("contactors", ContactorsArgs(action="close"), ttl_s=30.0)
        assert first is not None and first.status == "accepted"
        assert wait_until(lambda: len(captured) == 1 and len(replies) == 1, 5)
        topic, payload = captured[0]
        for _ in range(2):
            spy.publish(topic, payload, qos=1).wait_for_publish(5)
        assert wait_until(lambda: len(replies) == 3, 5), replies
        assert len(executed) == 1
        assert master.counters["commands_duplicate"] == 2
        from shared.codec import decode, encode
        from shared.messages import CommandReply, CommandRequest

        again = [decode(CommandReply, t, p) for t, p in replies]
        assert {(r.status, r.correlation_id, str(r.result)) for r in again} == {
            ("accepted", first.correlation_id, str(first.result))
        }

        original = decode(CommandRequest, topic, payload)
        reused = original.model_copy(update={"args": {"action": "open"}})
        spy.publish(topic, encode(reused, source="spy", seq=1, ts=time.time()), qos=1)
        assert wait_until(lambda: len(replies) == 4, 5)
        refusal = decode(CommandReply, replies[3][0], replies[3][1])
        assert refusal.status == "refused" and "already used" in refusal.reason
        assert len(executed) == 1 and master.counters["commands_id_reused"] == 1
    finally:
        spy.loop_stop()
        spy.disconnect()


def test_the_bus_socket_sends_without_nagle_delay(
    mosquitto: MosquittoBroker, system_id: str, buses: Any
) -> None:
    import socket

    bus = buses(mosquitto.url, system_id, "nodelay")
    sock = bus._client.socket()
    assert isinstance(sock, socket.socket)
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    # the broker's side of the connection too (the setting is global in mosquitto 2)
    assert all(line in mosquitto.config_path.read_text().splitlines() for line in LATENCY_SETTINGS)


@pytest.mark.parametrize(("pub_protocol", "sub_protocol"), [("3.1.1", "5"), ("5", "3.1.1")])
def test_mqtt_3_1_1_and_5_services_share_one_broker(
    mosquitto: MosquittoBroker, system_id: str, buses: Any, pub_protocol: str, sub_protocol: str
) -> None:
    """The default (3.1.1) and MQTT 5 interwork: nothing on the bus depends on properties."""
    got: list[str] = []
    sub = buses(mosquitto.url, system_id, "sub", protocol=sub_protocol)
    sub.subscribe(EVENTS, lambda d: got.append(d.message.code))
    pub = buses(mosquitto.url, system_id, "pub", protocol=pub_protocol)
    assert wait_until(lambda: sub.connected and pub.connected, 5)
    time.sleep(0.3)  # the subscription reaches the broker
    pub.publish(EVENTS, Event(level="info", kind="info", code="across"))
    assert wait_until(lambda: got == ["across"], 5)


def test_the_default_protocol_is_3_1_1_and_sends_no_properties(
    mosquitto: MosquittoBroker, system_id: str
) -> None:
    bus = MqttBus(parse_mqtt_url(mosquitto.url), system=system_id, service="s", kind="test")
    assert not bus._v5
    assert ServiceSettings().mqtt_protocol == "3.1.1"
