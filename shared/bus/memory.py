"""An in-memory bus with the same interface as `MqttBus`, for unit tests of service logic.

Payloads still go through the msgpack codec, so tests exercise the real contract.
"""

from __future__ import annotations

import threading
from typing import Any

from paho.mqtt.client import topic_matches_sub

from shared.bus.core import BusCore
from shared.bus.matching import SubscriptionIndex
from shared.topics import TopicSpec


class InMemoryBroker:
    """Routes messages between the in-memory buses attached to it, with retained messages."""

    def __init__(self) -> None:
        self._buses: list[InMemoryBus] = []
        self.retained: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def attach(self, bus: InMemoryBus) -> None:
        with self._lock:
            self._buses.append(bus)

    def detach(self, bus: InMemoryBus) -> None:
        with self._lock:
            if bus in self._buses:
                self._buses.remove(bus)

    def route(self, topic: str, payload: bytes, retain: bool) -> None:
        with self._lock:
            if retain:
                if payload:
                    self.retained[topic] = payload
                else:
                    self.retained.pop(topic, None)
            buses = list(self._buses)
        for bus in buses:
            if bus.wants(topic):
                bus._enqueue(topic, payload, False)

    def retained_for(self, topic_filter: str) -> list[tuple[str, bytes]]:
        with self._lock:
            return [(t, p) for t, p in self.retained.items() if topic_matches_sub(topic_filter, t)]


class InMemoryBus(BusCore):
    def __init__(
        self, broker: InMemoryBroker, *, system: str, service: str, kind: str, **kwargs: Any
    ) -> None:
        super().__init__(system=system, service=service, kind=kind, **kwargs)
        self.broker = broker
        self._filters: set[str] = set()
        self._wanted: SubscriptionIndex[str] = SubscriptionIndex()
        self._wanted_lock = threading.Lock()
        """The filters, indexed: a matcher built per filter per message was most of a
        publish's cost in tests and benchmarks."""
        self.sent: list[tuple[str, bytes, int, bool]] = []
        self._started = False

    def start(self, wait_s: float | None = None) -> bool:
        if not self._started:
            self._started = True
            self.broker.attach(self)
            topic, payload = self.status_payload("online")
            self.broker.route(topic, payload, True)
        return True

    @property
    def connected(self) -> bool:
        return self._started

    def stop(self, timeout_s: float = 0.0) -> None:
        if self._started:
            topic, payload = self.status_payload("offline")
            self.broker.route(topic, payload, True)
            self.broker.detach(self)
            self._started = False

    def abort(self) -> None:
        """Vanish without a goodbye: the broker publishes the last will."""
        if self._started:
            self.broker.detach(self)
            self._started = False
            topic, payload = self.status_payload("offline")
            self.broker.route(topic, payload, True)

    def wants(self, topic: str) -> bool:
        with self._wanted_lock:
            return bool(self._wanted.match(topic))

    def _send(
        self, topic: str, payload: bytes, qos: int, retain: bool, spec: TopicSpec[Any] | None
    ) -> None:
        self.sent.append((topic, payload, qos, retain))
        if self._started:
            self.broker.route(topic, payload, retain)

    def _subscribe_filter(self, topic_filter: str, qos: int) -> None:
        with self._wanted_lock:
            if topic_filter not in self._filters:
                self._filters.add(topic_filter)
                self._wanted.add(topic_filter, topic_filter)
        for topic, payload in self.broker.retained_for(topic_filter):
            self._enqueue(topic, payload, True)
