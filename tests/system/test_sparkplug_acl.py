"""Sparkplug B through the generated broker ACL, on a real mosquitto: the credentials step's
password file and ACL for system `plant1` and edge node `site-a` (BMS_SPARKPLUG_EDGE_NODE).

The bridge runs as its own process and broker user `integrations`, a host application as
`sparkplug_host`. What the ACL refuses is judged by delivery, not only by the MQTT 5 PUBACK
(0x87): a test-only `observer` reads `spBv1.0/#` and `bms/#`, and each check ends with a message
the observer must receive after the refused ones (the broker handles a connection's messages in
order and queues them for a subscriber in that order), so "not delivered" is decided without
sleeping."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from services.integrations.sparkplug_b_pb2 import DataType, Payload
from shared.broker import MosquittoBroker, find_mosquitto, free_port, wait_for_port
from shared.deploy import credentials

from .agents import ServiceProcess, wait_until
from .test_integrations_sparkplug import Host, Master, bd_seq, check_session

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")

SYSTEM = "plant1"
EDGE, OTHER = "site-a", "site-b"
GROUP = "bms"  # the group the ACL grants
NOT_AUTHORIZED = 0x87
ACCEPTED_BELOW = 0x80  # MQTT 5 reason codes below 0x80 are successes (0x10: no subscribers)
WAIT_S = 30.0
OBSERVER = """
# test only: reads everything
user observer
topic read spBv1.0/#
topic read bms/#
"""


class Probe:
    """A plain paho MQTT 5 client: its PUBACK reason codes, and what it received in order."""

    def __init__(self, port: int, user: str, password: str) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.pubacks: dict[int, int] = {}
        self.subscribed = threading.Event()
        self.lock = threading.Lock()
        connected = threading.Event()
        client_id = f"{user}-{uuid.uuid4().hex[:6]}"
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.c.username_pw_set(user, password)
        self.c.on_connect = lambda *a: None if a[3].is_failure else connected.set()
        self.c.on_message = self._on_message
        self.c.on_publish = self._on_publish
        self.c.on_subscribe = lambda *_a: self.subscribed.set()
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert connected.wait(WAIT_S), f"{user} could not log in"

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.received.append((msg.topic, bytes(msg.payload)))

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self.lock:
            self.pubacks[mid] = int(reason.value)

    def subscribe(self, *filters: str) -> None:
        self.c.subscribe([(f, 1) for f in filters])
        assert self.subscribed.wait(WAIT_S)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> int:
        """QoS 1; the PUBACK's reason code."""
        info = self.c.publish(topic, payload, qos=1, retain=retain)
        assert wait_until(lambda: info.mid in self.pubacks, WAIT_S), topic
        return self.pubacks[info.mid]

    def got(self) -> list[tuple[str, bytes]]:
        with self.lock:
            return list(self.received)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@dataclass
class Broker:
    port: int
    store: Path

    def password(self, user: str) -> str:
        return credentials.show(self.store, user)

    def login(self, user: str) -> Probe:
        return Probe(self.port, user, self.password(user))

    def url(self, user: str | None = None) -> str:
        login = f"{user}:{self.password(user)}@" if user else ""
        return f"mqtt://{login}127.0.0.1:{self.port}"

    def bridge(self, edge: str, log_dir: Path) -> ServiceProcess:
        """The integrations bridge as its own process and broker user, Sparkplug only."""
        return ServiceProcess(
            "integrations", self.url(), SYSTEM, log_dir, label=f"-{edge}",
            mqtt_username="integrations",
            mqtt_password_file=str(self.store / "integrations" / "password"),
            json_mirror="false", sparkplug="true", sparkplug_edge_node=edge,
            metrics_port="0", all_systems="false",
        )  # fmt: skip


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    store = tmp_path / "credentials"
    credentials.init(store, uid=None, system=SYSTEM, edge_node=EDGE)
    acl_text = (store / "broker" / "acl").read_text()
    assert f"topic readwrite spBv1.0/bms/+/{EDGE}\n" in acl_text  # pinned, not `+`
    observer = credentials.new_secret()
    (store / "observer").mkdir()
    (store / "observer" / "password").write_text(observer)
    passwd, acl_file = tmp_path / "passwd", tmp_path / "acl"
    passwd.write_text(
        (store / "broker" / "passwd").read_text()
        + credentials.password_file({"observer": observer})
    )
    acl_file.write_text(acl_text + OBSERVER)
    port = free_port()
    extra = (
        f"listener {port} 127.0.0.1\nallow_anonymous false\n"
        f"password_file {passwd}\nacl_file {acl_file}\n"
    )
    with MosquittoBroker(extra_config=extra):
        wait_for_port("127.0.0.1", port, 5)
        yield Broker(port, store)


def delivered_until(observer: Probe, last: tuple[str, bytes]) -> list[tuple[str, bytes]]:
    """What the observer got up to and including `last` (published after the refused ones)."""
    assert wait_until(lambda: last in observer.got(), WAIT_S), observer.got()[-5:]
    got = observer.got()
    return got[: got.index(last) + 1]


def rebirth_request() -> bytes:
    p = Payload(timestamp=int(time.time() * 1000))
    p.metrics.add(name="Node Control/Rebirth", datatype=DataType.Boolean, boolean_value=True)
    return bytes(p.SerializeToString())


def test_the_bridge_user_publishes_under_its_own_edge_node_only(broker: Broker) -> None:
    observer, bridge = broker.login("observer"), broker.login("integrations")
    try:
        observer.subscribe("spBv1.0/#", "bms/#")
        refused = [
            f"spBv1.0/{GROUP}/NBIRTH/{OTHER}",
            f"spBv1.0/{GROUP}/NDATA/{OTHER}",
            f"spBv1.0/{GROUP}/DBIRTH/{OTHER}/{SYSTEM}",
            f"spBv1.0/{GROUP}/DBIRTH/{EDGE}/plant2",  # another system's device
            f"spBv1.0/other/NBIRTH/{EDGE}",  # another group
        ]
        for topic in refused:
            assert bridge.publish(topic, b"forged") == NOT_AUTHORIZED, topic
        own = (f"spBv1.0/{GROUP}/NBIRTH/{EDGE}", b"own")
        assert bridge.publish(*own) < ACCEPTED_BELOW
        device = (f"spBv1.0/{GROUP}/DBIRTH/{EDGE}/{SYSTEM}", b"own")
        assert bridge.publish(*device) < ACCEPTED_BELOW
        assert delivered_until(observer, device) == [own, device]
    finally:
        observer.close()
        bridge.close()


def test_the_sparkplug_host_commands_the_edge_node_and_writes_nothing_of_the_bms(
    broker: Broker,
) -> None:
    observer, host = broker.login("observer"), broker.login("sparkplug_host")
    try:
        observer.subscribe("spBv1.0/#", "bms/#")
        refused = [
            f"bms/v1/{SYSTEM}/cmd/reset_faults",
            f"bms/v1/{SYSTEM}/cmd/contactors",
            f"bms/v1/{SYSTEM}/pack/state",
            f"bms/v1/{SYSTEM}/events/sparkplug_host",
            f"bms/v1/{SYSTEM}/service/sparkplug_host/status",
            f"spBv1.0/{GROUP}/NCMD/{OTHER}",  # another site's edge node
            f"spBv1.0/{GROUP}/NBIRTH/{EDGE}",  # it is no edge node
            f"spBv1.0/{GROUP}/DDATA/{EDGE}/{SYSTEM}",
        ]
        for topic in refused:
            assert host.publish(topic, b"forged") == NOT_AUTHORIZED, topic
        ncmd = (f"spBv1.0/{GROUP}/NCMD/{EDGE}", rebirth_request())
        assert host.publish(*ncmd) < ACCEPTED_BELOW
        state = ("spBv1.0/STATE/scada-1", b'{"online": true, "timestamp": 1}')
        assert host.publish(*state) < ACCEPTED_BELOW
        assert delivered_until(observer, state) == [ncmd, state]
        host.publish(state[0], b"", retain=True)  # no retained STATE left behind
    finally:
        observer.close()
        host.close()


def test_a_host_asks_for_a_rebirth_through_the_acl_and_another_site_is_refused(
    broker: Broker, tmp_path: Path
) -> None:
    """The bridge births as `site-a`; the host (`sparkplug_host`) asks for a rebirth and gets
    it, a third party's request is refused; a second bridge set to `site-b` with the same
    broker user publishes nothing anyone receives."""
    observer = broker.login("observer")
    observer.subscribe("spBv1.0/#")
    host = Host("127.0.0.1", broker.port, EDGE, GROUP,
                login=("sparkplug_host", broker.password("sparkplug_host")))  # fmt: skip
    assert wait_until(lambda: host.c.is_connected(), WAIT_S)
    master = Master(broker.url("master_core"), SYSTEM)
    bridge = broker.bridge(EDGE, tmp_path)
    other: ServiceProcess | None = None
    try:
        assert wait_until(lambda: len(host.all("DDATA", SYSTEM)) >= 3, WAIT_S), bridge.log()
        first = host.all()
        (nbirth,) = [g for g in first if g.kind == "NBIRTH"]
        check_session(first)

        # a third party may not ask: refused, and no birth follows it (the host's comes next)
        third_party = broker.login("third_party")
        try:
            ncmd = f"spBv1.0/{GROUP}/NCMD/{EDGE}"
            assert third_party.publish(ncmd, rebirth_request()) == NOT_AUTHORIZED
        finally:
            third_party.close()
        before = len(host.all())
        host.rebirth()
        assert wait_until(lambda: len(host.all("NBIRTH")) == 2, WAIT_S), bridge.log()
        assert wait_until(lambda: len(host.all("DBIRTH", SYSTEM)) == 2, WAIT_S), bridge.log()
        reborn = host.all()[before:]
        start = next(i for i, g in enumerate(reborn) if g.kind == "NBIRTH")
        assert bd_seq(reborn[start]) == bd_seq(nbirth) == 0  # the same session
        seen = len(host.all("DDATA", SYSTEM))
        assert wait_until(lambda: len(host.all("DDATA", SYSTEM)) >= seen + 3, WAIT_S)
        assert len(host.all("NBIRTH")) == 2  # the third party's request did nothing
        check_session(host.all()[before + start :])
        assert "Sparkplug rebirth requested" in bridge.log()

        # the same broker user set to another site's edge node: it births (as far as it
        # knows) and sends data, and nobody receives any of it
        other = broker.bridge(OTHER, tmp_path)
        assert wait_until(lambda: "edge node bms/site-b born" in other.log(), WAIT_S), other.log()
        seen = len(host.all("DDATA", SYSTEM))
        assert wait_until(lambda: len(host.all("DDATA", SYSTEM)) >= seen + 5, WAIT_S)
        # its NDEATH is QoS 1, acknowledged (refused) before it exits: the broker has then
        # handled all it sent, and queued for the observer whatever it let through, ahead of
        # a marker published after that
        assert other.stop() == 0
        marker = ("spBv1.0/STATE/marker", b"marker")
        sender = broker.login("sparkplug_host")
        try:
            assert sender.publish(*marker) < ACCEPTED_BELOW
        finally:
            sender.close()
        got = delivered_until(observer, marker)
        assert not [t for t, _p in got if t.split("/")[3:4] == [OTHER]], got
        assert any(t == f"spBv1.0/{GROUP}/NBIRTH/{EDGE}" for t, _p in got)
    finally:
        if other is not None:
            other.stop()
        bridge.stop()
        master.close()
        host.close()
        observer.close()
    assert "Traceback" not in bridge.log(), bridge.log()
