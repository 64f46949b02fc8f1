"""Tests of the broker/fault-injection harness itself, with raw paho clients."""

from __future__ import annotations

import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from shared.broker import EmbeddedBroker, MosquittoBroker
from shared.netfault import ProxyMode, TcpFaultProxy

pytestmark = pytest.mark.timeout(60)

WAIT_S = 5.0


class Probe:
    """A paho client on its own network thread that records what happens to it."""

    def __init__(
        self,
        *,
        subscribe: str | None = None,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
    ) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"probe-{uuid.uuid4().hex[:8]}",
            protocol=protocol,
        )
        # Fast retries keep the reconnect tests short.
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.subscribe_filter = subscribe
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.disconnected = threading.Event()
        self.connect_count = 0
        self.connect_reason: ReasonCode | None = None
        self.disconnect_reason: ReasonCode | None = None
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object
    ) -> None:
        self.connect_reason = reason
        if reason.is_failure:
            return
        self.connect_count += 1
        self.disconnected.clear()
        # Subscriptions do not survive a clean-session reconnect: renew them on every connect.
        if self.subscribe_filter is not None:
            client.subscribe(self.subscribe_filter, qos=1)
        else:
            self.subscribed.set()
        self.connected.set()

    def _on_subscribe(
        self, _c: mqtt.Client, _u: object, _mid: int, _rc: list[ReasonCode], _p: object
    ) -> None:
        self.subscribed.set()

    def _on_disconnect(
        self, _c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object
    ) -> None:
        self.disconnect_reason = reason
        self.connected.clear()
        self.subscribed.clear()
        self.disconnected.set()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        self.messages.put(msg)

    def start(self, host: str, port: int, keepalive: int = 60) -> Probe:
        self.client.connect_async(host, port, keepalive=keepalive)
        self.client.loop_start()
        return self

    def wait_ready(self, timeout_s: float = WAIT_S) -> None:
        assert self.connected.wait(timeout_s), f"not connected: {self.connect_reason}"
        assert self.subscribed.wait(timeout_s), "subscription not acknowledged"

    def next_message(self, timeout_s: float = WAIT_S) -> mqtt.MQTTMessage:
        try:
            return self.messages.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout_s} s") from None

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def probes() -> Iterator[Callable[..., Probe]]:
    made: list[Probe] = []

    def make(**kwargs: object) -> Probe:
        probe = Probe(**kwargs)  # type: ignore[arg-type]
        made.append(probe)
        return probe

    yield make
    for probe in made:
        probe.stop()


def _refuses(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return False
    except OSError:
        return True


def test_pubsub_through_mosquitto(
    mosquitto: MosquittoBroker, system_id: str, probes: Callable[..., Probe]
) -> None:
    sub = probes(subscribe=f"{system_id}/#").start(mosquitto.host, mosquitto.port)
    pub = probes().start(mosquitto.host, mosquitto.port)
    sub.wait_ready()
    pub.wait_ready()

    pub.client.publish(f"{system_id}/hello", b"\x81\xa1v\x01", qos=1)

    msg = sub.next_message()
    assert msg.topic == f"{system_id}/hello"
    assert msg.payload == b"\x81\xa1v\x01"
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"


def test_embedded_broker_delivers_retained(
    embedded_broker: EmbeddedBroker, system_id: str, probes: Callable[..., Probe]
) -> None:
    v311 = MQTTProtocolVersion.MQTTv311
    pub = probes(protocol=v311).start(embedded_broker.host, embedded_broker.port)
    pub.wait_ready()
    pub.client.publish(f"{system_id}/state", b"online", qos=1, retain=True).wait_for_publish(WAIT_S)
    # A client without subscriptions must get nothing (stock amqtt 0.12.1 leaks retained here).
    bystander = probes(protocol=v311).start(embedded_broker.host, embedded_broker.port)
    bystander.wait_ready()

    sub = probes(subscribe=f"{system_id}/#", protocol=v311)
    sub.start(embedded_broker.host, embedded_broker.port).wait_ready()

    msg = sub.next_message()
    assert (msg.topic, msg.payload, msg.retain) == (f"{system_id}/state", b"online", True)
    assert bystander.messages.empty()


def test_embedded_broker_sends_will_on_abrupt_close(
    embedded_broker: EmbeddedBroker,
    system_id: str,
    probes: Callable[..., Probe],
    fault_proxy: Callable[..., TcpFaultProxy],
) -> None:
    v311 = MQTTProtocolVersion.MQTTv311
    watcher = probes(subscribe=f"{system_id}/status", protocol=v311)
    watcher.start(embedded_broker.host, embedded_broker.port).wait_ready()
    proxy = fault_proxy(embedded_broker)
    dying = probes(protocol=v311)
    dying.client.will_set(f"{system_id}/status", b"offline", qos=1, retain=True)
    dying.start(proxy.host, proxy.port).wait_ready()

    proxy.reset()

    msg = watcher.next_message()
    assert (msg.topic, msg.payload) == (f"{system_id}/status", b"offline")


def test_embedded_broker_refuses_mqtt5(
    embedded_broker: EmbeddedBroker, probes: Callable[..., Probe]
) -> None:
    v5 = probes(protocol=MQTTProtocolVersion.MQTTv5)
    v5.start(embedded_broker.host, embedded_broker.port)
    assert v5.disconnected.wait(WAIT_S)
    assert v5.connect_reason is not None
    assert str(v5.connect_reason) == "Unsupported protocol version"
    assert not v5.connected.is_set()


def test_restartable_broker_kill_and_restart_on_same_port(
    restartable_mosquitto: MosquittoBroker, system_id: str, probes: Callable[..., Probe]
) -> None:
    broker = restartable_mosquitto
    port = broker.port
    sub = probes(subscribe=f"{system_id}/#").start(broker.host, port)
    sub.wait_ready()

    broker.kill()
    assert sub.disconnected.wait(WAIT_S)
    assert _refuses(broker.host, port)

    broker.start()
    assert broker.port == port
    sub.wait_ready(timeout_s=10.0)
    assert sub.connect_count == 2
    pub = probes().start(broker.host, port)
    pub.wait_ready()
    pub.client.publish(f"{system_id}/after", b"x", qos=1)
    assert sub.next_message().topic == f"{system_id}/after"


def test_blackhole_is_detected_by_keepalive_only(
    mosquitto: MosquittoBroker,
    probes: Callable[..., Probe],
    fault_proxy: Callable[..., TcpFaultProxy],
) -> None:
    proxy = fault_proxy(mosquitto)
    client = probes().start(proxy.host, proxy.port, keepalive=1)
    client.wait_ready()

    started = time.monotonic()
    proxy.blackhole()
    assert proxy.mode is ProxyMode.BLACKHOLE

    assert client.disconnected.wait(8.0), "dead link not noticed"
    # No RST reached the client: paho gave up on the missing PINGRESP, not on a socket error.
    assert str(client.disconnect_reason) == "Keep alive timeout"
    assert time.monotonic() - started >= 0.5

    proxy.restore()
    client.wait_ready(timeout_s=15.0)
    assert client.connect_count >= 2


def test_reset_is_noticed_at_once_and_restore_reconnects(
    mosquitto: MosquittoBroker,
    system_id: str,
    probes: Callable[..., Probe],
    fault_proxy: Callable[..., TcpFaultProxy],
) -> None:
    proxy = fault_proxy(mosquitto)
    client = probes(subscribe=f"{system_id}/#").start(proxy.host, proxy.port, keepalive=60)
    client.wait_ready()

    proxy.reset()

    # keepalive is 60 s, so only the RST can explain a prompt disconnect.
    assert client.disconnected.wait(3.0), "reset not noticed"
    assert str(client.disconnect_reason) != "Keep alive timeout"
    assert proxy.active_connections == 0

    proxy.restore()
    client.wait_ready(timeout_s=10.0)
    pub = probes().start(mosquitto.host, mosquitto.port)
    pub.wait_ready()
    pub.client.publish(f"{system_id}/back", b"1", qos=1)
    assert client.next_message().topic == f"{system_id}/back"
