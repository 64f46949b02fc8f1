"""The site's event log on a real mosquitto: the site controller (`python -m
services.site_controller`) keeps its events in SQLite under its data directory, so after a
restart of the process `events_query` under the site id still answers the events from before
it (same ids, same epoch, the count going on); a web application started afterwards shows
them on `/api/site` (backfilled from the controller's log), each once, newest first.

No strings run: the controller's own events (the configuration applied, an operator holding a
string out and letting it join) are enough, and need no masters.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.broker import MosquittoBroker, find_mosquitto
from shared.bus import Delivery, MqttBus
from shared.commands import CommandClient
from shared.config import SiteConfig
from shared.messages import Event, EventsQueryArgs, SiteConfigMessage, SiteStringArgs
from shared.settings import parse_mqtt_url
from shared.topics import EVENTS, SITE_CONFIG
from tests.system.agents import ServiceProcess, wait_until
from tests.system.test_config_ui import Ui

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]

WAIT_S = 60.0
"""Generous: two shared cores, other tests running."""


class Operator:
    """A SCADA-like client under the site id: sees the site's events, sends site commands."""

    def __init__(self, url: str, site: str) -> None:
        self.bus = MqttBus(parse_mqtt_url(url), system=site, service="operator", kind="test")
        self.events: list[Event] = []
        self.lock = threading.Lock()
        self.bus.subscribe(EVENTS, self._on_event)
        self.client = CommandClient(self.bus)
        self._stop = threading.Event()
        assert self.bus.start(wait_s=10)
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _on_event(self, d: Delivery[Event]) -> None:
        with self.lock:
            self.events.append(d.message)

    def _pump(self) -> None:
        while not self._stop.is_set():
            self.bus.process(timeout_s=0.05)
            self.client.expire()

    def codes(self) -> list[str]:
        with self.lock:
            return [e.code for e in self.events]

    def ask(self, command: str, args: Any) -> Any:
        reply = self.client.request_pumped(command, args, wait_s=15.0)
        assert reply is not None, f"no reply to {command}"
        return reply

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.bus.stop(timeout_s=1.0)


@pytest.fixture
def operator(mosquitto: MosquittoBroker) -> Iterator[Operator]:
    site = f"t{uuid.uuid4().hex[:6]}site"
    op = Operator(mosquitto.url, site)
    yield op
    op.close()


def test_the_sites_events_outlive_a_controller_restart_and_reach_a_later_web_application(
    mosquitto: MosquittoBroker, operator: Operator, tmp_path: Path
) -> None:
    site = operator.bus.system
    string = f"{site[:-4]}s1"
    config = SiteConfig.model_validate({"site": site, "strings": [{"system": string}]})
    operator.bus.publish(SITE_CONFIG, SiteConfigMessage(config=config))  # retained
    data_dir = str(tmp_path / "site-data")

    def controller() -> ServiceProcess:
        return ServiceProcess("site_controller", mosquitto.url, site, tmp_path, data_dir=data_dir)

    first = controller()
    procs = [first]
    ui: Ui | None = None
    try:
        assert wait_until(lambda: "site_config_applied" in operator.codes(), WAIT_S), first.log()
        for action in ("out", "join"):
            reply = operator.ask("site_string", SiteStringArgs(system=string, action=action))
            assert reply.status == "accepted", reply
        before = ["site_config_applied", "site_string_held", "site_string_released"]
        assert wait_until(lambda: operator.codes() == before, WAIT_S), operator.codes()
        with operator.lock:
            live = list(operator.events)
        epoch = live[0].seq_epoch
        assert [e.seq for e in live] == [1, 2, 3] and {e.seq_epoch for e in live} == {epoch}
        assert first.stop() == 0
        assert (tmp_path / "site-data" / f"site_controller-{site}.sqlite").exists()

        second = controller()  # the same data directory: the same log
        procs.append(second)
        # it applies the retained configuration again: the fourth event of the same log
        assert wait_until(lambda: len(operator.codes()) == 4, WAIT_S), second.log()
        with operator.lock:
            again = operator.events[-1]
        assert (again.code, again.seq, again.seq_epoch) == ("site_config_applied", 4, epoch)
        reply = operator.ask("events_query", EventsQueryArgs(limit=100))
        assert reply.status == "accepted", reply
        assert reply.result["seq_epoch"] == epoch
        rows = reply.result["events"]
        assert [(r["id"], r["code"]) for r in rows] == [
            (4, "site_config_applied"),
            *reversed(list(enumerate(before, start=1))),
        ]
        assert [r["ts"] for r in rows[1:]] == [e.ts for e in reversed(live)]
        # a bad query: refused with the reason, the controller runs on
        bad = operator.ask("events_query", EventsQueryArgs.model_construct(limit=5000))
        assert bad.status == "refused" and "limit" in bad.reason
        assert second.proc.poll() is None

        # a web application of one of the site's strings, started after all of that
        ui = Ui(mosquitto.url, string, tmp_path, site=site)
        ui.start()

        def shown() -> list[tuple[int, str]]:
            r = ui.http.get("/api/site")
            assert r.status_code == 200, r.text
            return [(e["seq"], e["code"]) for e in r.json()["events"]]

        expected = [(4, "site_config_applied"), *reversed(list(enumerate(before, start=1)))]
        assert wait_until(lambda: shown() == expected, WAIT_S), shown()
        # a live event after the backfill joins them, nothing twice
        reply = operator.ask("site_string", SiteStringArgs(system=string, action="out"))
        assert reply.status == "accepted"
        assert wait_until(lambda: shown() == [(5, "site_string_held"), *expected], WAIT_S), shown()
    finally:
        if ui is not None:
            ui.stop()
        for p in procs:
            p.stop()
