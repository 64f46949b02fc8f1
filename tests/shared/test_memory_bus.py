"""Bus semantics on the in-memory adapter (the same core as the MQTT adapter)."""

from __future__ import annotations

from shared.bus import Delivery, InMemoryBroker, InMemoryBus
from shared.codec import PayloadError
from shared.messages import Event, ServiceStatus
from shared.topics import EVENTS, SERVICE_STATUS


def make(broker: InMemoryBroker, service: str) -> InMemoryBus:
    bus = InMemoryBus(broker, system="demo", service=service, kind="test")
    bus.start()
    return bus


def test_messages_reach_subscribers_with_a_sequence_per_topic() -> None:
    broker = InMemoryBroker()
    pub, sub = make(broker, "pub"), make(broker, "sub")
    got: list[Delivery[Event]] = []
    sub.subscribe(EVENTS, got.append)
    for i in range(3):
        pub.publish(EVENTS, Event(level="info", kind="info", code=f"e{i}"))
    assert sub.process() == 3
    assert [d.message.seq for d in got] == [0, 1, 2]
    assert {d.message.source for d in got} == {"pub"}
    assert got[0].system == "demo"
    # events: the publisher's name is a topic level, and its count's epoch the bus's start
    assert {d.topic for d in got} == {"bms/v1/demo/events/pub"}
    assert {d.params["source"] for d in got} == {"pub"}
    assert {d.message.seq_epoch for d in got} == {pub.started_ts}


def test_retained_status_and_last_will() -> None:
    broker = InMemoryBroker()
    svc = make(broker, "svc")
    watcher = make(broker, "watcher")
    seen: list[ServiceStatus] = []
    watcher.subscribe(SERVICE_STATUS, lambda d: seen.append(d.message), service="svc")
    watcher.process()
    assert [s.state for s in seen] == ["online"]
    svc.abort()
    watcher.process()
    assert [s.state for s in seen] == ["online", "offline"]


def test_bad_payload_is_counted_and_other_handlers_keep_running() -> None:
    broker = InMemoryBroker()
    bus = make(broker, "a")
    errors: list[PayloadError] = []
    good: list[str] = []
    bus.on_payload_error(errors.append)

    def explode(_d: Delivery[Event]) -> None:
        raise RuntimeError("handler bug")

    bus.subscribe(EVENTS, explode)
    bus.subscribe(EVENTS, lambda d: good.append(d.message.code))
    broker.route(EVENTS.topic("demo", source="x"), b"\xc1garbage", False)
    bus.publish(EVENTS, Event(level="info", kind="info", code="ok"))
    bus.process()
    assert len(errors) == 1 and errors[0].field == "<payload>"
    assert good == ["ok"]
    assert bus.counters["payload_errors"] == 1
    assert bus.counters["payload_errors.events"] == 1
    assert bus.counters["handler_errors"] == 1


def test_a_full_inbox_drops_and_counts_without_blocking() -> None:
    broker = InMemoryBroker()
    bus = InMemoryBus(broker, system="demo", service="a", kind="test", max_inbox=5)
    bus.start()
    bus.subscribe(EVENTS, lambda _d: None)
    for _ in range(8):
        bus.publish(EVENTS, Event(level="info", kind="info", code="x"))
    assert bus.counters["inbox_dropped"] == 3
    assert bus.process() == 5


def test_own_messages_are_observed_in_process_for_the_own_system_while_connected() -> None:
    """`observe_own`: what the bus publishes on the topic for its own system, handed over as
    the message (no encoding round trip), only while connected; a failing observer is counted
    and the others still run."""
    broker = InMemoryBroker()
    bus = make(broker, "a")
    seen: list[str] = []

    def explode(_e: Event) -> None:
        raise RuntimeError("observer bug")

    bus.observe_own(EVENTS, explode)
    bus.observe_own(EVENTS, lambda e: seen.append(e.code))
    bus.publish(EVENTS, Event(level="info", kind="info", code="own"))
    bus.publish(EVENTS, Event(level="info", kind="info", code="other"), system="elsewhere")
    bus.publish(SERVICE_STATUS, bus.status_message("online"), service="a")
    assert seen == ["own"]
    assert bus.counters["handler_errors"] == 1
    bus.stop()
    bus.publish(EVENTS, Event(level="info", kind="info", code="offline"))
    assert seen == ["own"]
