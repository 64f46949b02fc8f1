"""What every bus adapter shares: subscriptions, the inbox, decoding, stamping and counters.

Messages arrive on the adapter's network thread and only go into a bounded inbox there;
decoding and handlers run in the service's own loop (`process`), so a slow handler never
stalls the connection. A payload over its topic's byte limit (`TopicSpec.byte_limit`) is refused
before it is decoded, so the costliest message a loop can meet is the largest valid one;
`process(budget_s=...)` hands control back to the loop once its time is spent.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from shared.bus.matching import SubscriptionIndex
from shared.codec import (
    CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    EncodeError,
    PayloadError,
    decode,
    encode,
    encode_json,
)
from shared.log_limit import LimitedLog
from shared.messages import Message, ServiceStatus
from shared.messages.service import COUNTER_NAME_MAX, COUNTERS_MAX
from shared.topics import SERVICE_STATUS, TopicSpec

M = TypeVar("M", bound=Message)
log = logging.getLogger("shared.bus")
REFUSAL_LOG_EVERY_S = 60.0
"""One line per topic and kind of refusal a minute; the counters carry the exact figures."""
PUBLISHER_LEVEL = "source"
"""The topic level that names the publisher (`events/{source}`)."""


@dataclass(frozen=True)
class Delivery(Generic[M]):
    """A decoded message as handed to a handler."""

    topic: str
    system: str
    params: dict[str, str]
    message: M
    retained: bool
    received_ts: float


Handler = Callable[[Delivery[M]], None]
RawHandler = Callable[[str, bytes, bool], None]
ErrorHandler = Callable[[PayloadError], None]
InvalidHandler = Callable[[str, bytes, PayloadError], None]
"""Called with the topic, the raw payload and the error of a refused message on a
subscription's own topic (already counted and logged): e.g. to reply to a bad request."""


@dataclass
class _Subscription:
    filter: str
    spec: TopicSpec[Any] | None
    handler: Callable[..., None]
    qos: int
    on_invalid: InvalidHandler | None = None


@dataclass
class _Inbound:
    topic: str
    payload: bytes
    retained: bool
    received_ts: float = field(default_factory=time.time)


class BusCore:
    """Adapter-independent half of a bus. Subclasses implement `_send` and `_subscribe_filter`."""

    def __init__(
        self,
        *,
        system: str,
        service: str,
        kind: str,
        version: str = "",
        max_inbox: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.system = system
        self.service = service
        self.kind = kind
        self.version = version
        self.clock = clock
        self.started_ts = clock()
        self.counters: Counter[str] = Counter()
        self._subs: SubscriptionIndex[_Subscription] = SubscriptionIndex()
        self._inbox: queue.Queue[_Inbound] = queue.Queue(maxsize=max_inbox)
        self._seq: dict[str, int] = {}
        self._lock = threading.Lock()
        self._wakeup: Callable[[], None] | None = None
        self._error_handlers: list[ErrorHandler] = []
        self._refusals = LimitedLog(log, every_s=REFUSAL_LOG_EVERY_S)
        self._own_observers: dict[str, list[Callable[[Any], None]]] = {}

    # --- publishing -------------------------------------------------------------------------
    def publish(
        self, spec: TopicSpec[M], message: M, *, system: str | None = None, **params: str | int
    ) -> None:
        """Publish on the topic of `spec`, with QoS and retain flag from the spec.

        A `{source}` level is this bus's own service name (the broker ACL lets each user
        publish only under its own name), so callers leave it out."""
        if PUBLISHER_LEVEL in spec.params:
            params[PUBLISHER_LEVEL] = self.service
            if getattr(message, "seq_epoch", 0) is None and message.seq is None:
                # the bus counts `seq` per topic from 0 in this process: that is the epoch
                message = message.model_copy(update={"seq_epoch": self.started_ts})
        topic = spec.topic(system or self.system, **params)
        try:
            payload = self.encode_for(topic, message, spec.content_type)
        except EncodeError:
            self.counters["publish_errors"] += 1
            log.exception("not published on %s", topic)
            return
        self.counters["published"] += 1
        self._send(topic, payload, spec.qos, spec.retain, spec)
        observers = self._own_observers.get(spec.name)
        if observers and system in (None, self.system) and self.connected:
            for observer in observers:
                try:
                    observer(message)
                except Exception:
                    self.counters["handler_errors"] += 1
                    log.exception("observer of %s failed", topic)

    def observe_own(self, spec: TopicSpec[M], observer: Callable[[M], None]) -> None:
        """Call `observer` with each message this bus publishes on `spec` for its own system,
        in process, while connected (when the broker would deliver it): for a peer hosted in
        the publisher's process (the in-process plant's inverter reads the master's pack
        state), which would otherwise receive it back from the broker and decode what its own
        process has just encoded."""
        self._own_observers.setdefault(spec.name, []).append(observer)

    def encode_for(self, topic: str, message: Message, content_type: str = CONTENT_TYPE) -> bytes:
        with self._lock:
            seq = self._seq.get(topic, -1) + 1
            self._seq[topic] = seq
        encoder = encode_json if content_type == JSON_CONTENT_TYPE else encode
        return encoder(message, source=self.service, seq=seq, ts=self.clock())

    def publish_raw(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int,
        retain: bool,
        spec: TopicSpec[Any] | None = None,
    ) -> None:
        """Bytes encoded by the caller (the integrations bridge checks its JSON against the
        topic's byte limit first), or on a topic outside the registry (Home Assistant's
        discovery documents); counted as published."""
        self.counters["published"] += 1
        self._send(topic, payload, qos, retain, spec)

    def status_message(self, state: str) -> ServiceStatus:
        return ServiceStatus(
            service=self.service,
            kind=self.kind,
            state="online" if state == "online" else "offline",
            version=self.version,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_ts=self.started_ts,
            counters=self._status_counters() if state == "online" else {},
        )

    def _status_counters(self) -> dict[str, int]:
        named = sorted((k, v) for k, v in self.counters.items() if len(k) <= COUNTER_NAME_MAX)
        return dict(named[:COUNTERS_MAX])

    @property
    def connected(self) -> bool:
        """Connected to the broker now (adapters override)."""
        return True

    @property
    def broker_user(self) -> str | None:
        """The user this bus logs in to the broker as (None: none, or no broker)."""
        return None

    def publish_status(self) -> None:
        """Re-publish the retained online status with the current counters (health)."""
        topic, payload = self.status_payload("online")
        self._send(topic, payload, SERVICE_STATUS.qos, True, SERVICE_STATUS)

    def status_payload(self, state: str) -> tuple[str, bytes]:
        topic = SERVICE_STATUS.topic(self.system, service=self.service)
        return topic, self.encode_for(topic, self.status_message(state))

    # --- subscribing ------------------------------------------------------------------------
    def subscribe(
        self,
        spec: TopicSpec[M],
        handler: Handler[M],
        *,
        system: str | None = None,
        on_invalid: InvalidHandler | None = None,
        **params: str | int,
    ) -> str:
        """Call `handler` with each valid message on `spec`; params left out match any value.

        `system="+"` subscribes across every system on the broker. `on_invalid`: called with
        each refused message on `spec` (counted and logged as every refusal).
        """
        flt = spec.filter(system or self.system, **params)
        self._add(_Subscription(flt, spec, handler, spec.qos, on_invalid))
        return flt

    def subscribe_raw(self, topic_filter: str, handler: RawHandler, qos: int = 0) -> None:
        """Undecoded bytes for any filter (tools and bridges)."""
        self._add(_Subscription(topic_filter, None, handler, qos))

    def on_payload_error(self, handler: ErrorHandler) -> None:
        self._error_handlers.append(handler)

    def _add(self, sub: _Subscription) -> None:
        with self._lock:
            self._subs.add(sub.filter, sub)
        self._subscribe_filter(sub.filter, sub.qos)

    # --- receiving --------------------------------------------------------------------------
    def set_wakeup(self, wakeup: Callable[[], None] | None) -> None:
        """Called (from the network thread) whenever a message lands in the inbox."""
        self._wakeup = wakeup

    def _enqueue(self, topic: str, payload: bytes, retained: bool) -> None:
        try:
            self._inbox.put_nowait(_Inbound(topic, payload, retained))
        except queue.Full:
            self.counters["inbox_dropped"] += 1
            if (
                self.counters["inbox_dropped"] in (1, 10, 100)
                or self.counters["inbox_dropped"] % 1000 == 0
            ):
                log.error("inbox full (%d), dropped a message on %s", self._inbox.maxsize, topic)
            return
        if self._wakeup is not None:
            self._wakeup()

    def pending(self) -> int:
        return self._inbox.qsize()

    def process(
        self, timeout_s: float = 0.0, max_messages: int = 10_000, budget_s: float | None = None
    ) -> int:
        """Run handlers for waiting messages in the caller's thread; returns how many.

        With `budget_s`, stop taking messages once that much time has passed since the first
        (the rest wait for the next call): a burst never holds up the caller's cycle for long.
        """
        done = 0
        try:
            item = self._inbox.get(timeout=timeout_s) if timeout_s > 0 else self._inbox.get_nowait()
        except queue.Empty:
            return 0
        until = None if budget_s is None else time.monotonic() + budget_s
        while True:
            self._dispatch(item)
            done += 1
            if done >= max_messages:
                return done
            if until is not None and time.monotonic() >= until:
                self.counters["process_budget_spent"] += 1
                return done
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return done

    def _dispatch(self, item: _Inbound) -> None:
        self.counters["received"] += 1
        with self._lock:
            subs = self._subs.match(item.topic)
        decoded: dict[int, Delivery[Any] | PayloadError | None] = {}
        for sub in subs:
            try:
                if sub.spec is None:
                    sub.handler(item.topic, item.payload, item.retained)
                    continue
                key = id(sub.spec)
                if key not in decoded:
                    decoded[key] = self._decode(sub.spec, item)
                delivery = decoded[key]
                if isinstance(delivery, PayloadError):
                    if sub.on_invalid is not None:
                        sub.on_invalid(item.topic, item.payload, delivery)
                elif delivery is not None:
                    sub.handler(delivery)
            except Exception:
                self.counters["handler_errors"] += 1
                log.exception("handler for %s failed", item.topic)

    def _decode(self, spec: TopicSpec[M], item: _Inbound) -> Delivery[M] | PayloadError | None:
        """The delivery; the error when refused (counted, logged); None: not this topic."""
        parsed = spec.parse(item.topic)
        if parsed is None:
            return None
        size = len(item.payload)
        try:
            if size > spec.byte_limit:
                # refused unread: decoding cost grows with the size, the limit bounds it
                raise PayloadError(
                    item.topic,
                    "<payload>",
                    f"{size} bytes exceeds the {spec.byte_limit}-byte limit of {spec.name}",
                )
            message = decode(spec.payload, item.topic, item.payload)
        except PayloadError as err:
            self._refused(spec, err, "payload_oversize" if size > spec.byte_limit else "")
            return err
        system, params = parsed
        return Delivery(item.topic, system, params, message, item.retained, item.received_ts)

    def _refused(self, spec: TopicSpec[Any], err: PayloadError, kind: str) -> None:
        """Count, log (once a minute per topic and kind) and report a refused payload."""
        self.counters["payload_errors"] += 1
        self.counters[f"payload_errors.{spec.name}"] += 1
        if kind:
            self.counters[kind] += 1
            self.counters[f"{kind}.{spec.name}"] += 1
        n = self.counters[f"payload_errors.{spec.name}"]
        self._refusals.warning(
            f"{spec.name}:{kind}", "refused payload (%d on %s so far): %s", n, spec.name, err
        )
        for handler in self._error_handlers:
            handler(err)

    # --- adapter hooks ----------------------------------------------------------------------
    def _send(
        self, topic: str, payload: bytes, qos: int, retain: bool, spec: TopicSpec[Any] | None
    ) -> None:
        raise NotImplementedError

    def _subscribe_filter(self, topic_filter: str, qos: int) -> None:
        raise NotImplementedError
