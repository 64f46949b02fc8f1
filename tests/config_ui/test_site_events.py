"""The Site page's events: the live ones merged with the site controller's log
(`events_query`, asked at start, after a reconnection or a gap), each once, newest first."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.config_ui.site_live import (
    MAX_RETRY_S,
    RECENT_SITE_EVENTS,
    RETRY_S,
    SiteBackfill,
    SiteLive,
)
from services.site_controller.service import SiteService
from services.site_controller.settings import SiteControllerSettings
from shared.bus import InMemoryBus
from shared.bus.memory import InMemoryBroker
from shared.commands import CommandClient
from shared.config.site import SiteConfig
from shared.event_store import Store
from shared.messages import Event, SiteConfigMessage, SiteStringArgs
from shared.topics import SITE_CONFIG
from tests.config_ui.conftest import make_harness
from tests.config_ui.test_api import wait_for

SITE = "site-a"
EPOCH = 1000.0


def logged(seq: int) -> Event:
    """The controller's event `seq` as it goes out live (row id, log epoch)."""
    return Event(level="info", kind="info", code="site_string_joined", text=f"e{seq}",
                 values={"system": "s2"}, seq=seq, seq_epoch=EPOCH, ts=EPOCH + seq,
                 source="site_controller")  # fmt: skip


def row(seq: int) -> dict[str, Any]:
    """The same event as an `events_query` row."""
    e = logged(seq)
    return {"id": seq, "ts": e.ts, "level": e.level, "kind": e.kind, "code": e.code,
            "text": e.text, "source": "site_controller", "values": e.values}  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    live=st.sets(st.integers(1, 60)),
    pages=st.lists(st.sets(st.integers(1, 60)), max_size=4),
    order=st.randoms(use_true_random=False),
)
def test_every_event_is_shown_once_newest_first_however_live_and_logged_interleave(
    live: set[int], pages: list[set[int]], order: Any
) -> None:
    site = SiteLive(SITE)
    steps: list[tuple[str, Any]] = [("live", s) for s in live] + [("page", p) for p in pages]
    order.shuffle(steps)
    for kind, what in steps:
        if kind == "live":
            site.on_event(logged(what))
        else:
            site.merge_logged([row(s) for s in sorted(what, reverse=True)], EPOCH)
    seen = live.union(*pages)
    shown = site.events(limit=RECENT_SITE_EVENTS)
    assert [e["seq"] for e in shown] == sorted(seen, reverse=True)
    assert [e["text"] for e in shown] == [f"e{s}" for s in sorted(seen, reverse=True)]
    assert all(e["source"] == "site_controller" and e["system"] == "s2" for e in shown)


def test_only_the_newest_are_kept_and_a_jump_in_seq_is_a_gap() -> None:
    site = SiteLive(SITE)
    new, bad = site.merge_logged([row(s) for s in range(1, RECENT_SITE_EVENTS + 51)], EPOCH)
    assert (new, bad) == (RECENT_SITE_EVENTS, 0)  # the 50 oldest did not stay
    shown = site.events(limit=1000)
    assert len(shown) == RECENT_SITE_EVENTS and shown[0]["seq"] == RECENT_SITE_EVENTS + 50
    assert site.on_event(logged(RECENT_SITE_EVENTS + 51)) is False
    assert site.on_event(logged(RECENT_SITE_EVENTS + 53)) is True  # 52 missed
    assert site.merge_logged([{"id": "x"}, "junk", row(7)], EPOCH)[1] == 2


def test_the_backfill_asks_once_connected_again_after_a_failure_and_after_a_reconnection() -> None:
    b = SiteBackfill()
    assert not b.due(False, 0.0)  # not connected: nothing to ask with
    assert b.due(True, 1.0) and not b.due(True, 1.1)  # one at a time
    b.answered(False, 2.0)  # no reply: the controller is down
    assert not b.due(True, 2.0 + RETRY_S - 0.1) and b.due(True, 2.0 + RETRY_S)
    b.answered(False, 10.0, retry_after_s=1e6)  # refused: a rate limit's wait, bounded
    assert not b.due(True, 10.0 + MAX_RETRY_S - 0.1) and b.due(True, 10.0 + MAX_RETRY_S)
    b.answered(True, 80.0)
    assert not b.due(True, 1e5)  # answered: nothing more until a reason
    assert not b.due(False, 1e5 + 1)
    assert b.due(True, 1e5 + 2)  # reconnected: whatever came meanwhile
    b.want()  # a gap while that query is in flight: its answer may predate it
    b.answered(True, 1e5 + 3)
    assert b.due(True, 1e5 + 3)
    b.answered(True, 1e5 + 4)
    assert not b.due(True, 1e5 + 5)


# --- the web application and a real site controller on one in-memory broker ----------------
class Controller:
    """A real site controller (its log in SQLite) served in a thread of its own."""

    def __init__(self, broker: InMemoryBroker, db: Path) -> None:
        self.bus = InMemoryBus(broker, system=SITE, service="site_controller", kind="site")
        self.bus.start()
        self.store = Store(db)
        self.service = SiteService(self.bus, SiteControllerSettings(system=SITE), store=self.store)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self.bus.process(timeout_s=0.02)
            self.service.tick()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.store.close()


def test_the_site_endpoint_shows_what_the_controller_logged_before_the_ui_started(
    tmp_path: Path,
) -> None:
    broker = InMemoryBroker()
    controller = Controller(broker, tmp_path / "site.sqlite")
    operator = InMemoryBus(broker, system=SITE, service="operator", kind="test")
    operator.start()
    config = SiteConfig.model_validate({"site": SITE, "strings": [{"system": "s1"}]})
    operator.publish(SITE_CONFIG, SiteConfigMessage(config=config))
    client = CommandClient(operator, system=SITE)
    for action in ("out", "join"):
        client.send("site_string", SiteStringArgs(system="s1", action=action))
    expected = ["site_string_released", "site_string_held", "site_config_applied"]
    wait_for(lambda: [r["code"] for r in controller.store.events(limit=10)] == expected, 10)
    harness = make_harness(tmp_path, site=SITE, broker=broker)  # starts after those events
    ui = next(harness)
    try:
        ui.login()

        def codes() -> list[str]:
            r = ui.client.get("/api/site")
            assert r.status_code == 200, r.text
            return [e["code"] for e in r.json()["events"]]

        wait_for(lambda: codes() == expected, 10)
        bridge = ui.ctx.bridge
        assert bridge.bus.counters["site_events_backfilled"] == 3
        # a live event after the backfill: merged, nothing twice
        client.send("site_string", SiteStringArgs(system="s1", action="out"))
        wait_for(lambda: codes() == ["site_string_held", *expected], 10)
        events = ui.client.get("/api/site").json()["events"]
        assert [e["seq"] for e in events] == [4, 3, 2, 1]
        assert events[0]["system"] == "s1" and events[0]["source"] == "site_controller"

        # the web application loses the broker; what the controller logs meanwhile is asked
        # for once it is back (no live event shows the gap: the reconnection alone)
        bridge.bus.abort()  # type: ignore[attr-defined]
        wait_for(lambda: not bridge.site_backfill.was_connected, 10)
        client.send("site_string", SiteStringArgs(system="s1", action="join"))
        wait_for(lambda: controller.store.events(limit=1)[0]["id"] == 5, 10)
        bridge.bus.start()  # type: ignore[attr-defined]
        wait_for(lambda: codes()[0] == "site_string_released", 10)
        assert [e["seq"] for e in ui.client.get("/api/site").json()["events"]] == [5, 4, 3, 2, 1]
        assert bridge.bus.counters["site_events_backfilled"] == 4
    finally:
        next(harness, None)
        controller.close()
        operator.stop()
