"""The event feed on the in-memory bus: the master's real event log answers `events_query`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from services.master_core.events import EventLog
from services.master_core.stores import Store
from shared.bus import InMemoryBroker, InMemoryBus
from shared.commands import CommandClient, CommandOutcome, CommandServer
from shared.event_feed import RETRY_S, EventFeed
from shared.messages import CommandArgs, Event, EventsQueryArgs
from shared.topics import EVENTS


class Master:
    def __init__(self, broker: InMemoryBroker, path: Path) -> None:
        self.bus = InMemoryBus(broker, system="demo", service="master_core", kind="master_core")
        self.bus.start()
        self.store = Store(path)
        self.log = EventLog(self.store, self.bus, lambda: 1000.0 + self.bus.counters["published"])
        self.answer: Callable[[CommandArgs], CommandOutcome] = self._query
        """What `events_query` runs (a test swaps in a refusing one)."""
        CommandServer(self.bus, {"events_query": lambda args: self.answer(args)})
        self.bus.subscribe(EVENTS, self.log.on_event)  # as master_core does

    def _query(self, args: CommandArgs) -> CommandOutcome:
        assert isinstance(args, EventsQueryArgs)
        return CommandOutcome(True, result=self.log.query(args))


class Ui:
    def __init__(self, broker: InMemoryBroker) -> None:
        self.bus = InMemoryBus(broker, system="demo", service="config_ui", kind="config_ui")
        self.bus.start()
        self.got: list[Event] = []
        self.feed = EventFeed(self.bus, self.got.append, commands=CommandClient(self.bus))


def settle(*buses: InMemoryBus) -> None:
    while sum(b.process() for b in buses):
        pass


@pytest.fixture
def pair(tmp_path: Path) -> tuple[InMemoryBroker, Master, Ui]:
    broker = InMemoryBroker()
    return broker, Master(broker, tmp_path / "master.db"), Ui(broker)


def test_the_master_publishes_its_log_row_id_as_seq(
    pair: tuple[InMemoryBroker, Master, Ui],
) -> None:
    _, master, ui = pair
    for code in ("a", "b", "c"):
        master.log.emit("info", "info", code)
    settle(master.bus, ui.bus)
    assert [(e.code, e.seq) for e in ui.got] == [("a", 1), ("b", 2), ("c", 3)]
    assert {e.seq_epoch for e in ui.got} == {master.log.epoch_s}
    assert {t.rsplit("/", 1)[1] for t, *_ in master.bus.sent if "/events/" in t} == {"master_core"}


def test_the_epoch_survives_a_restart_of_the_master(tmp_path: Path) -> None:
    broker = InMemoryBroker()
    first = Master(broker, tmp_path / "m.db")
    first.log.emit("info", "info", "a")
    first.store.close()
    again = Master(broker, tmp_path / "m.db")
    assert again.log.epoch_s == first.log.epoch_s


def test_a_missed_stretch_is_fetched_and_handed_on_once(
    pair: tuple[InMemoryBroker, Master, Ui],
) -> None:
    broker, master, ui = pair
    master.log.emit("info", "info", "e1")
    settle(master.bus, ui.bus)
    broker.detach(ui.bus)  # offline: these never reach it
    for i in range(2, 7):
        master.log.emit("info", "info", f"e{i}")
    broker.attach(ui.bus)
    master.log.emit("info", "info", "e7")
    settle(master.bus, ui.bus)
    assert sorted(e.seq for e in ui.got if e.seq is not None) == list(range(1, 8))
    assert sorted(e.code for e in ui.got) == [f"e{i}" for i in range(1, 8)]
    assert ui.bus.counters["events_gaps"] == 1
    assert ui.bus.counters["events_missed"] == 5
    assert ui.bus.counters["events_fetched"] == 5
    assert ui.bus.counters["events_lost"] == 0
    assert ui.feed.sequencer.missing("master_core") == []


def test_a_gap_longer_than_a_page_is_fetched_page_by_page(
    pair: tuple[InMemoryBroker, Master, Ui], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shared.event_feed.FETCH_ROWS", 3)
    broker, master, ui = pair
    master.log.emit("info", "info", "first")
    settle(master.bus, ui.bus)
    broker.detach(ui.bus)
    for i in range(10):
        master.log.emit("info", "info", f"m{i}")
    broker.attach(ui.bus)
    master.log.emit("info", "info", "last")
    settle(master.bus, ui.bus)
    assert sorted(e.seq or 0 for e in ui.got) == list(range(1, 13))
    assert ui.bus.counters["events_fetched"] == 10


def test_a_gap_of_another_source_is_fetched_from_what_the_master_kept(
    pair: tuple[InMemoryBroker, Master, Ui],
) -> None:
    broker, master, ui = pair
    gateway = InMemoryBus(broker, system="demo", service="can_gateway", kind="can_gateway")
    gateway.start()

    def send(code: str) -> None:
        gateway.publish(EVENTS, Event(level="warning", kind="raise", code=code))
        settle(master.bus, ui.bus)

    send("g0")
    broker.detach(ui.bus)
    for code in ("g1", "g2", "g3"):
        send(code)
    broker.attach(ui.bus)
    send("g4")
    settle(master.bus, ui.bus)
    assert [(e.code, e.seq) for e in ui.got] == [
        ("g0", 0),
        ("g4", 4),
        ("g1", 1),
        ("g2", 2),
        ("g3", 3),
    ]
    assert {e.source for e in ui.got} == {"can_gateway"}
    assert {e.seq_epoch for e in ui.got} == {gateway.started_ts}
    assert ui.bus.counters["events_fetched"] == 3 and ui.bus.counters["events_lost"] == 0
    assert master.bus.counters["source_events_kept"] == 5


def test_a_restarted_source_starts_a_new_count_and_its_head_is_fetched(
    pair: tuple[InMemoryBroker, Master, Ui],
) -> None:
    broker, master, ui = pair
    first = InMemoryBus(broker, system="demo", service="can_gateway", kind="can_gateway")
    first.start()
    first.publish(EVENTS, Event(level="info", kind="info", code="before"))
    settle(master.bus, ui.bus)
    first.stop()
    again = InMemoryBus(broker, system="demo", service="can_gateway", kind="can_gateway")
    again.clock = lambda: first.started_ts + 1.0
    again.started_ts = first.started_ts + 1.0  # a later process
    again.start()
    broker.detach(ui.bus)
    again.publish(EVENTS, Event(level="info", kind="info", code="head"))
    settle(master.bus)
    broker.attach(ui.bus)
    again.publish(EVENTS, Event(level="info", kind="info", code="after"))
    settle(master.bus, ui.bus)
    assert [e.code for e in ui.got] == ["before", "after", "head"]
    assert ui.bus.counters["events_lost"] == 0


def test_without_an_answer_the_fetch_is_retried(pair: tuple[InMemoryBroker, Master, Ui]) -> None:
    broker, master, ui = pair
    start = time.time()  # the master checks expiry on its real clock
    now = [start]
    assert ui.feed.commands is not None
    ui.feed.clock = ui.feed.commands.clock = lambda: now[0]
    master.log.emit("info", "info", "a")
    settle(master.bus, ui.bus)
    broker.detach(ui.bus)
    master.log.emit("info", "info", "b")
    broker.attach(ui.bus)
    broker.detach(master.bus)  # the master does not hear the query
    master.log.emit("info", "info", "c")
    settle(ui.bus)
    now[0] = start + 10.0
    ui.feed.commands.expire()
    assert ui.bus.counters["events_fetch_failed"] == 1
    broker.attach(master.bus)
    ui.feed.poll()  # too early: waits RETRY_S
    queries = [t for t, *_ in ui.bus.sent if t.endswith("/cmd/events_query")]
    assert ui.bus.counters["events_fetch_failed"] == 1 and len(queries) == 1
    now[0] = start + 10.0 + RETRY_S
    ui.feed.poll()
    settle(master.bus, ui.bus)
    assert sorted(e.code for e in ui.got) == ["a", "b", "c"]
    assert ui.bus.counters["events_fetched"] == 1


def test_an_event_claiming_the_master_is_shown_as_its_real_source(
    pair: tuple[InMemoryBroker, Master, Ui],
) -> None:
    """The issue: a user published a `fault` event claiming `source: master_core`, and the
    UI showed it as the master's. The topic level (pinned by the ACL) decides."""
    broker, master, ui = pair
    evil = InMemoryBus(broker, system="demo", service="config_ui", kind="x")
    evil.start()
    master.log.emit("info", "info", "real")
    evil.publish(
        EVENTS,
        Event(level="fault", kind="raise", code="fake", source="master_core", seq=10**6),
    )
    master.log.emit("info", "info", "real2")
    settle(master.bus, ui.bus, evil)
    fake = next(e for e in ui.got if e.code == "fake")
    assert fake.source == "config_ui"
    assert {e.source for e in ui.got if e.code.startswith("real")} == {"master_core"}
    assert ui.bus.counters["events_source_mismatch"] == 1
    # nor does its made-up seq open a gap in the master's stream
    assert ui.bus.counters["events_gaps"] == 0


def test_a_consumer_that_kept_its_place_gets_what_was_logged_while_it_was_down_once(
    pair: tuple[InMemoryBroker, Master, Ui], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restart of the consumer: it resumes from `positions()` and `catch_up()` pages through
    what the master and another source logged meanwhile; the broker's redelivery of some of
    them (a persistent session) and the live events are not handed on twice."""
    monkeypatch.setattr("shared.event_feed.FETCH_ROWS", 3)
    broker, master, ui = pair
    gateway = InMemoryBus(broker, system="demo", service="can_gateway", kind="can_gateway")
    gateway.start()
    master.log.emit("info", "info", "m1")
    gateway.publish(EVENTS, Event(level="warning", kind="raise", code="g0"))
    settle(master.bus, ui.bus, gateway)
    kept = json.loads(json.dumps(ui.feed.positions()))  # as a file would hold it
    broker.detach(ui.bus)  # the consumer is down
    for i in range(2, 9):
        master.log.emit("info", "info", f"m{i}")
    gateway.publish(EVENTS, Event(level="warning", kind="raise", code="g1"))
    settle(master.bus, gateway)

    again = Ui(broker)
    assert again.feed.resume(kept) == 2
    again.feed.catch_up()
    master.log.emit("info", "info", "m9")  # live, while catching up
    settle(master.bus, again.bus)
    codes = [e.code for e in again.got]
    assert sorted(codes) == sorted([f"m{i}" for i in range(2, 10)] + ["g1"])
    assert again.bus.counters["events_lost"] == 0
    assert again.feed.positions()["master_core"]["seq"] == 9


def test_a_kept_place_of_a_replaced_master_log_starts_from_the_new_logs_start(
    tmp_path: Path,
) -> None:
    broker = InMemoryBroker()
    master = Master(broker, tmp_path / "new.db")
    for code in ("n1", "n2"):
        master.log.emit("info", "info", code)
    ui = Ui(broker)
    ui.feed.resume({"master_core": {"epoch_s": 1.0, "seq": 40, "missing": []}})
    ui.feed.catch_up()
    settle(master.bus, ui.bus)
    assert [e.code for e in ui.got] == ["n1", "n2"]
    assert ui.bus.counters["events_fetch_other_epoch"] == 1


def test_an_unreadable_kept_place_is_skipped_and_counted(
    pair: tuple[InMemoryBroker, Master, Ui],
) -> None:
    _, _, ui = pair
    taken = ui.feed.resume(
        {
            "master_core": {"seq": "x"},
            "a/b": {"epoch_s": 1.0, "seq": 1},
            "ok": {"epoch_s": 1.0, "seq": 3},
        }
    )
    assert taken == 1 and ui.bus.counters["events_positions_bad"] == 2


def test_a_page_cut_by_the_master_is_asked_on_not_given_up(
    pair: tuple[InMemoryBroker, Master, Ui], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The master cuts a page to its size or the reply's byte limit (`truncated`): the rows
    after it exist and are fetched next, never counted lost."""
    broker, master, ui = pair
    real = master.log.query

    def cut(args: EventsQueryArgs) -> dict[str, object]:
        result = real(args.model_copy(update={"limit": min(args.limit, 2)}))
        return {**result, "truncated": True} if len(result["events"]) == 2 else result

    monkeypatch.setattr(master.log, "query", cut)
    master.log.emit("info", "info", "first")
    settle(master.bus, ui.bus)
    broker.detach(ui.bus)
    for i in range(7):
        master.log.emit("info", "info", f"m{i}")
    broker.attach(ui.bus)
    master.log.emit("info", "info", "last")
    settle(master.bus, ui.bus)
    assert sorted(e.seq or 0 for e in ui.got) == list(range(1, 10))
    assert ui.bus.counters["events_lost"] == 0


def test_a_rate_limited_fetch_waits_as_long_as_it_is_told(
    pair: tuple[InMemoryBroker, Master, Ui],
) -> None:
    broker, master, ui = pair
    now = [time.time()]
    assert ui.feed.commands is not None
    ui.feed.clock = lambda: now[0]
    refusals = [True]

    def query(args: CommandArgs) -> CommandOutcome:
        if refusals.pop() if refusals else False:
            return CommandOutcome(False, "rate limited: ...", result={"retry_after_s": 12.0})
        assert isinstance(args, EventsQueryArgs)
        return CommandOutcome(True, result=master.log.query(args))

    master.answer = query
    master.log.emit("info", "info", "a")
    settle(master.bus, ui.bus)
    broker.detach(ui.bus)
    master.log.emit("info", "info", "b")
    broker.attach(ui.bus)
    master.log.emit("info", "info", "c")
    settle(master.bus, ui.bus)
    assert ui.bus.counters["events_fetch_failed"] == 1
    now[0] += RETRY_S
    ui.feed.poll()
    settle(master.bus, ui.bus)
    assert sorted(e.code for e in ui.got) == ["a", "c"]  # told to wait 12 s, not 5
    now[0] += 12.0 - RETRY_S
    ui.feed.poll()
    settle(master.bus, ui.bus)
    assert sorted(e.code for e in ui.got) == ["a", "b", "c"]
