"""Presence of a sub-entity with its own last will (e.g. each module of a rack agent).

MQTT allows one will per connection, so each entity gets a small connection of its own that
does nothing but hold the will.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from shared.endpoint import DEFAULT_MQTT_PROTOCOL
from shared.settings import MqttEndpoint


class PresenceLink:
    def __init__(
        self,
        endpoint: MqttEndpoint,
        *,
        client_id: str,
        topic: str,
        online: bytes,
        offline: bytes,
        protocol: str = DEFAULT_MQTT_PROTOCOL,
        keepalive_s: int = 10,
        tls_ca_file: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
    ) -> None:
        self.topic = topic
        self._online = online
        self._offline = offline
        v5 = protocol == "5"
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else True,
        )
        if endpoint.username:
            self._client.username_pw_set(endpoint.username, endpoint.password)
        if endpoint.tls:
            # the same client certificate as the agent's main connection (brokers may require one)
            self._client.tls_set(ca_certs=tls_ca_file, certfile=tls_cert_file, keyfile=tls_key_file)
        self._client.reconnect_delay_set(1, 10)
        self._client.will_set(topic, offline, qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._endpoint = endpoint
        self._keepalive_s = keepalive_s
        self.connected = threading.Event()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.publish(self.topic, self._online, qos=1, retain=True)
            self.connected.set()

    def start(self) -> None:
        self._client.connect_async(self._endpoint.host, self._endpoint.port, self._keepalive_s)
        self._client.loop_start()

    def stop(self, timeout_s: float = 1.0) -> None:
        if self.connected.is_set():
            info = self._client.publish(self.topic, self._offline, qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout_s)
        self._client.disconnect()
        self._client.loop_stop()
