"""The per-requester limit on `events_query` (pure), and the master answering through it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.master_core.query_limit import (
    BUDGETS,
    THIRD_PARTY_BUDGET,
    QueryLimiter,
    budget_of,
)
from shared.bus import InMemoryBus
from shared.commands import CommandClient
from shared.messages import CommandReply, Event, EventsQueryArgs
from shared.topics import EVENTS_READER, INTEGRATIONS, UI
from tests.master_core.test_service_reset import Stack


def test_a_burst_then_one_per_period_and_the_wait_is_said() -> None:
    limiter = QueryLimiter()
    b = THIRD_PARTY_BUDGET
    assert all(limiter.admit(EVENTS_READER, 0.0) is None for _ in range(b.burst))
    wait_s = limiter.admit(EVENTS_READER, 0.0)
    assert wait_s is not None and abs(wait_s - 1.0 / b.rate_per_s) < 1e-9
    assert limiter.admit(EVENTS_READER, wait_s - 0.01) is not None  # not yet
    assert limiter.admit(EVENTS_READER, wait_s + 0.01) is None
    assert limiter.refused == 2


def test_requesters_are_limited_apart() -> None:
    limiter = QueryLimiter()
    while limiter.admit(EVENTS_READER, 0.0) is None:
        pass
    assert limiter.admit(INTEGRATIONS, 0.0) is None
    assert limiter.admit(UI, 0.0) is None
    assert limiter.admit("someone_else", 0.0) is None


def test_budgets_are_a_table_and_anyone_else_gets_the_third_partys() -> None:
    assert budget_of(UI) is BUDGETS[UI]
    assert budget_of(EVENTS_READER) is THIRD_PARTY_BUDGET
    assert budget_of("unknown") is THIRD_PARTY_BUDGET
    assert all(b.page_rows <= 1000 for b in (*BUDGETS.values(), THIRD_PARTY_BUDGET))


def test_a_clock_stepping_back_refills_nothing() -> None:
    limiter = QueryLimiter()
    while limiter.admit(EVENTS_READER, 100.0) is None:
        pass
    assert limiter.admit(EVENTS_READER, 50.0) is not None
    assert limiter.admit(EVENTS_READER, 100.0) is not None


def test_forgetting_the_longest_idle_bounds_the_table() -> None:
    limiter = QueryLimiter(max_requesters=3)
    for name in ("a", "b", "c", "d"):
        limiter.admit(name, 0.0)
    assert len(limiter._buckets) == 3 and "a" not in limiter._buckets


@settings(max_examples=200, deadline=None)
@given(
    gaps_s=st.lists(st.floats(0.0, 5.0, allow_nan=False), min_size=1, max_size=200),
    who=st.sampled_from([UI, INTEGRATIONS, EVENTS_READER]),
)
def test_never_more_than_the_burst_plus_the_rate_over_any_run(
    gaps_s: list[float], who: str
) -> None:
    """However a requester asks, what it is admitted over [0, T] is at most burst + rate * T."""
    limiter = QueryLimiter()
    b = budget_of(who)
    now_s, admitted = 0.0, 0
    for gap in gaps_s:
        now_s += gap
        admitted += limiter.admit(who, now_s) is None
        assert admitted <= b.burst + b.rate_per_s * now_s + 1e-9


def ask(
    stack: Stack, client: CommandClient, bus: InMemoryBus, args: EventsQueryArgs
) -> CommandReply:
    replies: list[CommandReply | None] = []
    client.send("events_query", args, on_reply=replies.append)
    stack.bus.process()
    bus.process()
    [reply] = replies
    assert reply is not None
    return reply


def test_the_master_refuses_a_third_party_past_its_budget_and_says_when_to_ask_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stack = Stack(tmp_path)
    reader = InMemoryBus(stack.ui.broker, system="demo", service=EVENTS_READER, kind="test")
    reader.start()
    client = CommandClient(reader, clock=stack.clock)
    assert client.reply_topic.startswith("bms/v1/demo/reply/events_reader/")
    replies = [ask(stack, client, reader, EventsQueryArgs(after_id=0)) for _ in range(12)]
    statuses = [r.status for r in replies]
    assert statuses == ["accepted"] * THIRD_PARTY_BUDGET.burst + ["refused"] * 2
    refused = replies[-1]
    assert refused.reason.startswith("rate limited: events_reader may ask")
    assert refused.result["retry_after_s"] == pytest.approx(2.0)
    assert stack.bus.counters["events_query_rate_limited"] == 2
    assert stack.bus.counters["commands_rate_limited"] == 2
    assert "rate limited" in caplog.text
    # the web application is not held back by the third party
    assert stack.command("events_query", EventsQueryArgs(after_id=0)).status == "accepted"
    stack.clock.now += 2.01
    assert ask(stack, client, reader, EventsQueryArgs(after_id=0)).status == "accepted"


def test_a_third_partys_page_is_cut_to_its_size_and_says_so(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    for i in range(700):
        event = Event(level="info", kind="info", code="config_applied", text="t")
        stack.core.store.add_event(event, ts=2000.0 + i, source="master_core")
    reader = InMemoryBus(stack.ui.broker, system="demo", service=EVENTS_READER, kind="test")
    reader.start()
    client = CommandClient(reader, clock=stack.clock)
    reply = ask(stack, client, reader, EventsQueryArgs(after_id=0, limit=1000))
    assert len(reply.result["events"]) == THIRD_PARTY_BUDGET.page_rows
    assert reply.result["truncated"] is True
    whole = stack.command("events_query", EventsQueryArgs(after_id=0, limit=1000))
    assert len(whole.result["events"]) > THIRD_PARTY_BUDGET.page_rows  # the UI's page: 1000
