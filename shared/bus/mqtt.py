"""The bus on a real MQTT broker, with paho-mqtt 2.x."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from shared.bus.core import BusCore
from shared.codec import CONTENT_TYPE
from shared.endpoint import DEFAULT_MQTT_PROTOCOL
from shared.log_limit import LimitedLog
from shared.settings import MqttEndpoint, ServiceSettings
from shared.topics import TopicSpec

log = logging.getLogger("shared.bus.mqtt")

IN_FLIGHT_MAX = 4096
"""QoS 1 publishes awaiting their PUBACK, by message id, for the topic of a refusal; an entry
left behind (an acknowledgement that beat its own bookkeeping) is dropped with the rest past
this many, and message ids wrap at 65535 anyway."""
REFUSAL_LOG_EVERY_S = 60.0

PAHO_LOOP_PERIOD_S = 1.0
"""How often paho's network loop (`loop_forever(timeout=1.0)`, run by `loop_start`) checks the
keepalive when no traffic wakes it."""


def set_credentials(
    client: mqtt.Client,
    endpoint: MqttEndpoint,
    tls_ca_file: str | None = None,
    tls_cert_file: str | None = None,
    tls_key_file: str | None = None,
) -> None:
    """The endpoint's login and, for mqtts, TLS with the server's certificate verified: one
    place for every paho client the stack opens (the bus, a Sparkplug edge node's session)."""
    if endpoint.username:
        client.username_pw_set(endpoint.username, endpoint.password)
    if endpoint.tls:
        client.tls_set(
            ca_certs=tls_ca_file,
            certfile=tls_cert_file,
            keyfile=tls_key_file,
            cert_reqs=ssl.CERT_REQUIRED,
        )


def ping_interval_s(keepalive_s: int) -> int:
    """The keepalive interval given to paho, hence to the broker in CONNECT, for a bus that
    must notice a dead connection within 1.5 x `keepalive_s` (0: keepalive off).

    paho 2.2 (`Client._check_keepalive`) pings one interval after the connection or its last
    ping (outgoing publishes do not move that clock: `_packet_write` returns before updating
    it once its queue is empty), and closes the connection when nothing has come back one
    interval after a ping: a dead link is noticed one to two intervals (plus a loop period)
    after the cut, two for a cut just after a ping. With the configured keepalive as the
    interval that took up to 2 x keepalive (12-19 s seen for 10 s); with half of it, at most
    keepalive + 1 s. The broker drops a client silent for 1.5 intervals (MQTT 5 section
    3.1.2.10; mosquitto 2.0 checks only every few seconds), so the will is not later than it
    was. A ping is 2 bytes each way per interval.
    """
    return keepalive_s if keepalive_s <= 0 else max(1, keepalive_s // 2)


def unique_client_id(kind: str, system: str, service: str) -> str:
    """Unique per process, so racks started from one image never take over each other."""
    host = socket.gethostname().split(".")[0][:20]
    return f"{kind}.{system}.{service}.{host}.{os.getpid()}.{uuid.uuid4().hex[:6]}"


class MqttBus(BusCore):
    """Connects with retry and backoff, re-subscribes after reconnects, sets a last will and a
    retained online status, and republishes its retained topics after every reconnect (a
    broker without persistence forgets them)."""

    def __init__(
        self,
        endpoint: MqttEndpoint,
        *,
        system: str,
        service: str,
        kind: str,
        version: str = "",
        protocol: str = DEFAULT_MQTT_PROTOCOL,
        client_id: str | None = None,
        keepalive_s: int = 10,
        max_queued_out: int = 10_000,
        max_inbox: int = 10_000,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 10.0,
        tls_ca_file: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        presence: bool = True,
        session_expiry_s: int | None = None,
    ) -> None:
        """`presence=False` for tools (tap, fault injection): no last will and no status, so
        a user that may publish no presence (third party, simulation) can connect at all;
        newer mosquitto releases refuse a connection whose will it may not publish.

        `session_expiry_s`: a persistent session (MQTT 5 session expiry, or MQTT 3.1.1
        clean_session false) under a fixed `client_id`: the broker keeps the subscriptions and
        queues QoS 1 messages while this client is away, and delivers them when it returns
        (a broker with persistence keeps them across its own restart). None: a clean session."""
        if session_expiry_s is not None and client_id is None:
            raise ValueError("a persistent session needs a fixed client_id")
        super().__init__(
            system=system, service=service, kind=kind, version=version, max_inbox=max_inbox
        )
        self.endpoint = endpoint
        self.keepalive_s = keepalive_s
        self.client_id = client_id or unique_client_id(kind, system, service)
        self._v5 = protocol == "5"
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5 if self._v5 else mqtt.MQTTv311,
            clean_session=None if self._v5 else session_expiry_s is None,
        )
        self._session_expiry_s = session_expiry_s
        set_credentials(self._client, endpoint, tls_ca_file, tls_cert_file, tls_key_file)
        self._client.reconnect_delay_set(
            min_delay=max(1, int(reconnect_min_s)), max_delay=int(reconnect_max_s)
        )
        self._client.max_queued_messages_set(max_queued_out)
        self._client.max_inflight_messages_set(100)
        self._presence = presence
        if presence:
            will_topic, will_payload = self.status_payload("offline")
            self._client.will_set(will_topic, will_payload, qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        self._in_flight: dict[int, str] = {}
        """Message id -> topic of a QoS 1 publish not yet acknowledged (dict operations are
        atomic: no lock against paho's, which it holds while calling back)."""
        self._refusals = LimitedLog(log, every_s=REFUSAL_LOG_EVERY_S)
        self._connected = threading.Event()
        self._filters: dict[str, int] = {}
        self._retained: dict[str, tuple[bytes, int]] = {}
        self._props: dict[str, Properties] = {}
        self._started = False

    @classmethod
    def from_settings(cls, settings: ServiceSettings, *, kind: str, version: str = "") -> MqttBus:
        return cls(
            settings.endpoint,
            system=settings.system,
            service=settings.instance or kind,
            kind=kind,
            version=version,
            protocol=settings.mqtt_protocol,
            client_id=settings.mqtt_client_id,
            keepalive_s=settings.mqtt_keepalive_s,
            tls_ca_file=settings.mqtt_ca_file,
            tls_cert_file=settings.mqtt_cert_file,
            tls_key_file=settings.mqtt_key_file,
        )

    # --- lifecycle --------------------------------------------------------------------------
    def start(self, wait_s: float | None = None) -> bool:
        """Connect in the background (retrying until the broker is up); optionally wait."""
        if not self._started:
            self._started = True
            interval_s = ping_interval_s(self.keepalive_s)
            if self._v5 and self._session_expiry_s is not None:
                props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = self._session_expiry_s
                self._client.connect_async(
                    self.endpoint.host,
                    self.endpoint.port,
                    interval_s,
                    clean_start=False,
                    properties=props,
                )
            else:
                self._client.connect_async(self.endpoint.host, self.endpoint.port, interval_s)
            self._client.loop_start()
        return self.wait_connected(wait_s) if wait_s else self.connected

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def broker_user(self) -> str | None:
        return self.endpoint.username or None

    def stop(self, timeout_s: float = 2.0) -> None:
        """Say offline (retained), then disconnect; the last will is not sent."""
        if not self._started:
            return
        if self.connected and self._presence:
            topic, payload = self.status_payload("offline")
            info = self._client.publish(topic, payload, qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout_s)
        self._connected.clear()  # an intended disconnect is not worth a warning
        self._client.disconnect()
        self._client.loop_stop()
        self._started = False

    def abort(self) -> None:
        """Drop the connection without DISCONNECT so the broker sends the last will (tests)."""
        sock = self._client.socket()
        self._client.loop_stop()
        if sock is not None:
            sock.close()
        self._started = False
        self._connected.clear()

    # --- paho callbacks (network thread: never block here) ----------------------------------
    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.counters["connect_refused"] += 1
            log.error(
                "broker %s:%s refused the connection: %s",
                self.endpoint.host,
                self.endpoint.port,
                reason,
            )
            return
        self.counters["connects"] += 1
        _no_delay(client.socket())
        with self._lock:
            # set under the lock: a concurrent subscribe() is either in this snapshot or sees
            # the connection up and subscribes itself
            self._connected.set()
            filters = list(self._filters.items())
            retained = list(self._retained.items())
        if filters:
            client.subscribe([(f, q) for f, q in filters])
        if self._presence:
            topic, payload = self.status_payload("online")
            client.publish(topic, payload, qos=1, retain=True)
        for t, (p, q) in retained:
            client.publish(t, p, qos=q, retain=True)
        log.info("connected to %s:%s as %s", self.endpoint.host, self.endpoint.port, self.client_id)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if self._connected.is_set():
            self.counters["disconnects"] += 1
            log.warning("disconnected from broker: %s", reason)
        self._connected.clear()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._enqueue(msg.topic, bytes(msg.payload), bool(msg.retain))

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        """A QoS 1 publish the broker refused (MQTT 5 PUBACK, e.g. 0x87 not authorized: the
        ACL does not grant this user the topic) is counted and logged with its topic: else it
        is lost without a trace, as a slave agent whose rack range is not its broker user's."""
        topic = self._in_flight.pop(mid, None)
        if not reason.is_failure:
            return
        self.counters["publish_refused_by_broker"] += 1
        where = topic or "a topic"
        self._refusals.log(
            logging.ERROR, where,
            "the broker refused a publish on %s: %s (reason code 0x%02x). This service's "
            "broker user (%s) may not write there: check its credentials against its "
            "settings (a slave agent's rack and BMS_MODULES_PER_RACK decide its topics)",
            where, reason, int(getattr(reason, "value", 0)), self.endpoint.username or "anonymous",
        )  # fmt: skip

    # --- adapter hooks ----------------------------------------------------------------------
    def _send(
        self, topic: str, payload: bytes, qos: int, retain: bool, spec: TopicSpec[Any] | None
    ) -> None:
        if retain:
            with self._lock:
                self._retained[topic] = (payload, qos)
        props = self._properties(spec) if self._v5 else None
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if qos and self._v5 and info.rc in _QUEUED:
            if len(self._in_flight) >= IN_FLIGHT_MAX:
                self._in_flight.clear()
            self._in_flight[info.mid] = topic
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            self.counters["publish_dropped_queue_full"] += 1
        elif info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos == 0:
            self.counters["publish_dropped_offline"] += 1

    def _properties(self, spec: TopicSpec[Any] | None) -> Properties | None:
        key = spec.name if spec is not None else ""
        props = self._props.get(key)
        if props is None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ContentType = spec.content_type if spec is not None else CONTENT_TYPE
            if spec is not None and spec.expiry_s:
                props.MessageExpiryInterval = spec.expiry_s
            self._props[key] = props
        return props

    def _subscribe_filter(self, topic_filter: str, qos: int) -> None:
        with self._lock:
            self._filters[topic_filter] = max(qos, self._filters.get(topic_filter, 0))
            up = self.connected
        if up:
            self._client.subscribe(topic_filter, qos)


_QUEUED = (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN)
"""paho sends a QoS 1 message now, or keeps it for the connection to come."""


def _no_delay(sock: object) -> None:
    """TCP_NODELAY: a telemetry or trip message goes out at once, not held by Nagle's
    algorithm for the previous one's acknowledgement (tens of ms of added latency)."""
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
