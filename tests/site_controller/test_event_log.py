"""The site controller's event log: kept in SQLite (`shared.event_log`, as the master's),
published with its row id as `seq`, and answered with `events_query` under the site id; on an
in-memory broker, with a real SQLite file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.site_controller.service import PRUNE_PERIOD_S, SiteService
from services.site_controller.settings import SiteControllerSettings
from shared.bus.memory import InMemoryBroker, InMemoryBus
from shared.commands import CommandClient
from shared.config import SiteConfig
from shared.event_store import Store
from shared.messages import (
    CommandReply,
    Event,
    EventsQueryArgs,
    SiteConfigMessage,
    SiteStringArgs,
)
from shared.query_limit import THIRD_PARTY_BUDGET
from shared.topics import EVENTS, SITE_CONFIG


class Site:
    """A site controller on `broker` with its log in `db`, and a web application asking it."""

    def __init__(self, broker: InMemoryBroker, db: Path, *, wall_s: float = 1000.0, **kw: Any):
        self.clock = [0.0]
        self.wall = [wall_s]
        self.bus = InMemoryBus(broker, system="site1", service="site_controller",
                               kind="site_controller")  # fmt: skip
        self.bus.start()
        self.store = Store(db)
        self.service = SiteService(
            self.bus, SiteControllerSettings(system="site1", **kw), store=self.store,
            monotonic=lambda: self.clock[0], wall=lambda: self.wall[0],
        )  # fmt: skip
        self.ui = InMemoryBus(broker, system="site1", service="config_ui", kind="config_ui")
        self.ui.start()
        self.live: list[Event] = []
        self.ui.subscribe(EVENTS, lambda d: self.live.append(d.message))
        self.client = CommandClient(self.ui, system="site1")

    def cycle(self, n: int = 1) -> None:
        for _ in range(n):
            self.bus.process()
            self.service.tick()
            self.clock[0] += 0.1
            self.wall[0] += 0.1
            self.ui.process()

    def ask(self, command: str, args: Any) -> CommandReply | None:
        replies: list[CommandReply | None] = []
        self.client.send(command, args, on_reply=replies.append)
        self.cycle(2)
        return replies[-1] if replies else None

    def query(self, **kw: Any) -> CommandReply:
        reply = self.ask("events_query", EventsQueryArgs(**kw))
        assert reply is not None
        return reply

    def close(self) -> None:
        self.service.stop()
        self.bus.stop()
        self.ui.stop()
        self.store.close()


def configure(site: Site) -> None:
    config = SiteConfig(site="site1", strings=({"system": "s1"}, {"system": "s2"}))
    site.ui.publish(SITE_CONFIG, SiteConfigMessage(config=config))
    site.cycle(2)


def hold_and_join(site: Site, system: str) -> None:
    for action in ("out", "join"):
        reply = site.ask("site_string", SiteStringArgs(system=system, action=action))
        assert reply is not None and reply.status == "accepted", reply
    site.cycle(2)


def test_events_are_published_with_their_row_ids_and_answered_after_a_restart(
    tmp_path: Path,
) -> None:
    broker = InMemoryBroker()
    db = tmp_path / "site_controller-site1.sqlite"
    first = Site(broker, db)
    configure(first)
    hold_and_join(first, "s1")
    published = [(e.code, e.seq, e.seq_epoch) for e in first.live]
    assert len(published) >= 3, published
    assert [seq for _, seq, _ in published] == list(range(1, len(published) + 1))
    epoch = first.service.events.epoch_s
    assert {ep for *_, ep in published} == {epoch}
    first.close()

    # a restart on the same file (a fresh broker: no retained configuration to apply yet)
    again = Site(InMemoryBroker(), db, wall_s=5000.0)
    assert again.service.events.epoch_s == epoch  # one log: the ids go on
    reply = again.query(limit=100)
    assert reply.status == "accepted"
    assert reply.result["seq_epoch"] == epoch
    rows = reply.result["events"]
    assert [(r["code"], r["id"]) for r in rows] == [(c, s) for c, s, _ in reversed(published)]
    assert all(r["source"] == "site_controller" for r in rows)
    assert rows[0]["values"].get("system") == "s1"  # a join names its string
    configure(again)
    assert again.live[-1].seq == len(published) + 1
    # a consumer that saw up to seq 2 pages on from there, oldest first
    after = again.query(after_id=2, limit=2).result["events"]
    assert [r["id"] for r in after] == [3, 4]
    again.close()


def test_a_bad_or_excessive_query_is_refused_with_a_reason_and_counted(tmp_path: Path) -> None:
    site = Site(InMemoryBroker(), tmp_path / "log.sqlite")
    configure(site)
    bad_args = EventsQueryArgs.model_construct(limit=0, min_level="loud")  # type: ignore[arg-type]
    bad = site.ask("events_query", bad_args)
    assert bad is not None and bad.status == "refused" and "limit" in bad.reason
    assert site.bus.counters["commands_refused"] == 1
    # a third party's budget (the config_ui user has a larger one): a burst, then a wait
    other = InMemoryBus(site.bus.broker, system="site1", service="someone", kind="third_party")
    other.start()
    client = CommandClient(other, system="site1")
    replies: list[CommandReply | None] = []
    for _ in range(THIRD_PARTY_BUDGET.burst + 1):
        client.send("events_query", EventsQueryArgs(), on_reply=replies.append)
    site.cycle(2)
    other.process()
    assert [r.status for r in replies if r is not None].count("accepted") == (
        THIRD_PARTY_BUDGET.burst
    )
    refused = [r for r in replies if r is not None and r.status == "refused"]
    assert len(refused) == 1 and refused[0].result["retry_after_s"] > 0
    assert site.bus.counters["events_query_rate_limited"] == 1
    site.close()


def test_a_log_that_cannot_be_read_or_written_is_reported_never_fatal(tmp_path: Path) -> None:
    site = Site(InMemoryBroker(), tmp_path / "log.sqlite")
    configure(site)
    site.store.close()  # as a file gone bad: every statement raises sqlite3.Error
    reply = site.query()
    assert reply.status == "refused" and "event log cannot be read" in reply.reason
    assert site.bus.counters["events_query_errors"] == 1
    hold_and_join(site, "s2")  # its events still go out, unsequenced by the log
    assert site.bus.counters["event_log_errors"] >= 2
    assert [e.code for e in site.live][-2:] == ["site_string_held", "site_string_released"]
    site.service.prune_events()
    assert site.bus.counters["event_log_errors"] >= 3


def test_the_log_is_pruned_by_rows_and_age_at_start_and_hourly(tmp_path: Path) -> None:
    db = tmp_path / "log.sqlite"
    store = Store(db)
    for i in range(150):  # 150 events, one a minute, the newest at 1e6
        store.add_event(
            Event(level="info", kind="info", code="x"), ts=1e6 - 60.0 * (149 - i), source="s"
        )
    store.close()
    site = Site(InMemoryBroker(), db, wall_s=1e6, events_max_rows=100)
    assert site.bus.counters["events_pruned"] == 50  # at start: the newest 100 stay
    rows = site.query(limit=1000).result["events"]
    assert len(rows) == 100 and rows[0]["id"] == 150
    # a day later, the 30 oldest of those kept are more than a day old (one a minute)
    site.wall[0] = 1e6 + 86400.0 - 69.5 * 60.0
    site.service.settings = site.service.settings.model_copy(update={"events_retention_days": 1.0})
    configure(site)  # the controller ticks; no prune before an hour has passed
    assert site.bus.counters["events_pruned"] == 50
    site.clock[0] += PRUNE_PERIOD_S
    site.cycle()
    rows = site.query(limit=1000).result["events"]
    assert site.bus.counters["events_pruned"] == 50 + 30
    assert [r["ts"] >= site.wall[0] - 86400.0 - 1 for r in rows].count(False) == 0
    site.close()
