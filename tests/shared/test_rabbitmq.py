"""The central tier's test harness (shared/rabbitmq.py): three clustered nodes whose MQTT
plugin routes across nodes, with per-site users that may write their own prefix only."""

from __future__ import annotations

import threading
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from shared.rabbitmq import RabbitCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def client(port: int, user: str, password: str, protocol: int = mqtt.MQTTv311) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}",
                    protocol=protocol)  # fmt: skip
    c.username_pw_set(user, password)
    return c


def connect(c: mqtt.Client, port: int) -> int:
    """The CONNACK's reason code (0: accepted), or -1 when none came."""
    done = threading.Event()
    result: list[int] = []

    def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        result.append(int(getattr(reason, "value", reason)))  # type: ignore[call-overload]
        done.set()

    def on_disconnect(*_args: object) -> None:
        done.set()

    c.on_connect = on_connect
    c.on_disconnect = on_disconnect
    c.connect("127.0.0.1", port, 30)
    c.loop_start()
    done.wait(15.0)
    return result[0] if result else -1


def test_cluster_routes_across_nodes_and_confines_each_site(rabbit_cluster: RabbitCluster) -> None:
    assert rabbit_cluster.running_nodes() == [n.name for n in rabbit_cluster.nodes]
    rabbit_cluster.add_reader("reader", "r-pw")
    rabbit_cluster.add_site_user("site-a", "a-pw")
    node1, node2, _ = rabbit_cluster.mqtt_ports

    got: list[str] = []
    arrived = threading.Event()
    reader = client(node1, "reader", "r-pw")
    reader.on_message = lambda _c, _u, m: (got.append(m.topic), arrived.set())
    subscribed = threading.Event()
    reader.on_subscribe = lambda *_a: subscribed.set()
    assert connect(reader, node1) == 0
    reader.subscribe("fleet/#", qos=1)
    assert subscribed.wait(15.0)

    site = client(node2, "site-a", "a-pw")
    assert connect(site, node2) == 0
    # another site's prefix first: refused (RabbitMQ closes the connection), never delivered
    site.publish("fleet/site-b/site-b/site/summary", b"x", qos=1)
    site.loop_stop()
    site = client(node2, "site-a", "a-pw")
    assert connect(site, node2) == 0
    site.publish("fleet/site-a/site-a/site/summary", b"x", qos=1).wait_for_publish(15.0)
    assert arrived.wait(15.0)
    assert got == ["fleet/site-a/site-a/site/summary"]

    assert connect(client(node2, "site-a", "wrong"), node2) != 0
    # RabbitMQ 3.10 speaks MQTT 3.1 and 3.1.1 only: an MQTT 5 CONNECT gets no CONNACK 0
    assert connect(client(node2, "site-a", "a-pw", mqtt.MQTTv5), node2) != 0
    for c in (reader, site):
        c.loop_stop()
        c.disconnect()
