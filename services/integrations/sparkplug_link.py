"""The MQTT session of the bridge's Sparkplug edge node: its own paho 2 client, whose will is the
NDEATH.

The bridge's bus connection already has a will (its presence), and MQTT allows one per
connection, so the edge node (one per bridge, every system a device of it) connects on its
own, as Sparkplug edge nodes do: clean start
and no session expiry (spec 5.1.1: every Sparkplug client MUST use a clean session), the
NDEATH as will (QoS 1, not retained), the NCMD and DCMD subscriptions (QoS 1) made before
the NBIRTH.

Threads: paho's callbacks run on its network thread and only touch what they own (the will,
set in `on_pre_connect` before every CONNECT, with the bdSeq of that CONNECT) or hand events
to the bridge's loop through a queue; the edge node's state is only touched in the bridge's
thread (`pump`, `send`). A lock across both would deadlock: paho's `publish` can wait for the
mutex its network thread holds while it runs a callback. The cost: data offered in the short
time between a reconnect and the loop taking the "up" event is not sent (it goes out in the
birth that follows).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from services.integrations.sparkplug import CommandError, EdgeNode, death_payload, next_bd_seq
from shared.bus.mqtt import ping_interval_s, set_credentials, unique_client_id
from shared.endpoint import DEFAULT_MQTT_PROTOCOL
from shared.log_limit import LimitedLog
from shared.settings import MqttEndpoint

log = logging.getLogger("integrations.sparkplug")

Event = tuple[str, int, str, bytes]
"""(kind "up" / "down" / "cmd", bdSeq of the session, topic, payload)."""


class SparkplugLink:
    def __init__(
        self,
        node: EdgeNode,
        endpoint: MqttEndpoint,
        counters: Any,
        clock: Callable[[], float],
        *,
        protocol: str = DEFAULT_MQTT_PROTOCOL,
        keepalive_s: int = 10,
        tls_ca_file: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
    ) -> None:
        self.node = node
        self.endpoint = endpoint
        self.counters = counters
        self.clock = clock
        self.keepalive_s = keepalive_s
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._connect_bd_seq = -1
        self._log = LimitedLog(log, every_s=60.0)
        v5 = self._v5 = protocol == "5"
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=unique_client_id("sparkplug", node.edge, node.group),
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else True,
        )
        set_credentials(self._client, endpoint, tls_ca_file, tls_cert_file, tls_key_file)
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)
        self._client.max_queued_messages_set(1000)
        self._client.on_pre_connect = self._on_pre_connect
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self.up = threading.Event()
        self._started = False

    # --- lifecycle (bridge thread) ----------------------------------------------------------
    def start(self) -> None:
        if not self._started:
            self._started = True
            self._client.connect_async(
                self.endpoint.host,
                self.endpoint.port,
                ping_interval_s(self.keepalive_s),
                # every CONNECT, reconnects too (paho's default cleans only the first)
                clean_start=True if self._v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            )
            self._client.loop_start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """An intended end: publish the NDEATH ourselves (a clean DISCONNECT sends no will)."""
        if not self._started:
            return
        if self.up.is_set() and self.node.bd_seq >= 0:
            info = self._client.publish(
                self.node.topic("NDEATH"), self.node.death_payload(self.clock()), qos=1
            )
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout_s)
        self.up.clear()
        self._client.disconnect()
        self._client.loop_stop()
        self._started = False

    # --- bridge thread ----------------------------------------------------------------------
    def pump(self) -> None:
        """Take the network thread's events: births after a CONNECT, rebirth requests."""
        while True:
            try:
                kind, bd_seq, topic, payload = self._events.get_nowait()
            except queue.Empty:
                return
            now = self.clock()
            if kind == "down":
                self.node.lost()
            elif kind == "up":
                self.node.session(bd_seq)  # the will of this very CONNECT carries it
                self.send(self.node.birth(now))
                self.counters["sparkplug_births"] += 1
                log.info("Sparkplug edge node %s/%s born, bdSeq %d",
                         self.node.group, self.node.edge, bd_seq)  # fmt: skip
            elif kind == "cmd" and self.node.born:
                try:
                    out = self.node.command(topic, payload, now)
                except CommandError as exc:
                    self.counters["sparkplug_commands_invalid"] += 1
                    self._log.warning("cmd", "%s", exc)
                    continue
                if out:
                    self.counters["sparkplug_rebirths"] += 1
                    log.info("Sparkplug rebirth requested on %s", topic)
                self.send(out)

    def send(self, messages: list[tuple[str, bytes]]) -> None:
        for topic, payload in messages:
            info = self._client.publish(topic, payload, qos=0, retain=False)
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self.counters["sparkplug_published"] += 1
            else:
                self.counters["sparkplug_dropped"] += 1

    # --- paho callbacks (network thread: never block, never touch the edge node) ------------
    def _on_pre_connect(self, client: mqtt.Client, _u: Any) -> None:
        self._connect_bd_seq = next_bd_seq(self._connect_bd_seq)
        payload = death_payload(self._connect_bd_seq, self.clock())
        client.will_set(self.node.topic("NDEATH"), payload, qos=1, retain=False)

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.counters["sparkplug_connect_refused"] += 1
            log.error("broker refused the Sparkplug connection of %s: %s", self.node.edge, reason)
            return
        client.subscribe([(f, 1) for f in self.node.command_filters])
        self.up.set()
        self._events.put(("up", self._connect_bd_seq, "", b""))

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if self.up.is_set():
            self.counters["sparkplug_disconnects"] += 1
            log.warning("Sparkplug connection of %s dropped: %s", self.node.edge, reason)
        self.up.clear()
        self._events.put(("down", -1, "", b""))

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._events.put(("cmd", -1, msg.topic, bytes(msg.payload)))
