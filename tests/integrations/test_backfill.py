"""The bridge fetches the events it missed while it was down, and mirrors each once (in-memory
bus; the master's real event log and command server answer `events_query`)."""

from __future__ import annotations

import json
from pathlib import Path

from services.integrations.backfill import PlaceFile
from services.integrations.service import IntegrationsBridge
from services.integrations.settings import IntegrationsSettings
from shared.bus import InMemoryBroker, InMemoryBus
from shared.messages import Event
from shared.topics import EVENTS, JSON_EVENTS
from tests.shared.test_event_feed import Master, settle


class Bridge:
    def __init__(self, broker: InMemoryBroker, state: Path | None, **settings: str) -> None:
        self.bus = InMemoryBus(broker, system="demo", service="integrations", kind="integrations")
        self.bridge = IntegrationsBridge(
            self.bus,
            IntegrationsSettings(
                system="demo",
                events_state_file=str(state) if state else None,
                **settings,  # type: ignore[arg-type]
            ),
        )
        self.bridge.attach()
        self.bus.start()

    def mirrored(self) -> list[str]:
        topic = JSON_EVENTS.topic("demo")
        return [json.loads(p)["code"] for t, p, _q, _r in self.bus.sent if t == topic]

    def pump(self, master: Master) -> None:
        self.bridge.poll_feed()
        settle(master.bus, self.bus)


def test_events_logged_while_the_bridge_was_down_are_mirrored_once_after_its_restart(
    tmp_path: Path,
) -> None:
    broker = InMemoryBroker()
    master = Master(broker, tmp_path / "master.db")
    gateway = InMemoryBus(broker, system="demo", service="can_gateway", kind="can_gateway")
    gateway.start()
    state = tmp_path / "bridge" / "events.json"
    first = Bridge(broker, state)
    first.pump(master)
    master.log.emit("alarm", "raise", "before")
    gateway.publish(EVENTS, Event(level="alarm", kind="raise", code="g_before"))
    first.pump(master)
    assert sorted(first.mirrored()) == ["before", "g_before"]
    first.bus.stop()
    broker.detach(first.bus)  # down: what follows never reaches it
    for i in range(3):
        master.log.emit("alarm", "raise", f"down{i}")
    gateway.publish(EVENTS, Event(level="alarm", kind="clear", code="g_down"))
    settle(master.bus, gateway)

    again = Bridge(broker, state)
    again.pump(master)
    master.log.emit("alarm", "clear", "after")
    again.pump(master)
    assert sorted(again.mirrored()) == sorted(["down0", "down1", "down2", "g_down", "after"])
    assert again.bus.counters["events_lost"] == 0
    assert master.bus.counters["commands_accepted"] >= 2  # asked per source


def test_without_a_place_file_the_bridge_mirrors_only_what_it_sees(tmp_path: Path) -> None:
    broker = InMemoryBroker()
    master = Master(broker, tmp_path / "master.db")
    first = Bridge(broker, None)
    master.log.emit("alarm", "raise", "before")
    first.pump(master)
    first.bus.stop()
    broker.detach(first.bus)
    master.log.emit("alarm", "raise", "down")
    again = Bridge(broker, None)
    again.pump(master)
    master.log.emit("alarm", "clear", "after")
    again.pump(master)
    assert again.mirrored() == ["after"]


def test_a_place_file_that_cannot_be_read_is_counted_and_the_bridge_runs_on(
    tmp_path: Path,
) -> None:
    counters: dict[str, int] = {"events_state_errors": 0}
    bad = tmp_path / "events.json"
    bad.write_text("{not json")
    assert PlaceFile(bad, counters).load() == {}
    bad.write_text("[1, 2]")
    assert PlaceFile(bad, counters).load() == {}
    assert counters["events_state_errors"] == 2
    unwritable = PlaceFile(tmp_path / "events.json" / "x", counters)  # a file as its directory
    unwritable.save({"a": 1})
    assert counters["events_state_errors"] == 3
    good = PlaceFile(tmp_path / "ok" / "events.json", counters)
    good.save({"master_core": {"epoch_s": 1.0, "seq": 3, "missing": []}})
    assert good.load() == {"master_core": {"epoch_s": 1.0, "seq": 3, "missing": []}}
