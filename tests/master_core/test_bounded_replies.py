"""The master's replies stay within the reply topic's byte limit (shared/topics.py)."""

from __future__ import annotations

from pathlib import Path

from services.master_core.service import fit_rows
from shared.codec import decode, encode
from shared.messages import CommandReply, Event, EventsQueryArgs
from shared.topics import COMMAND_REPLY
from tests.master_core.test_service_reset import Stack


def test_fit_rows_keeps_the_leading_rows_within_the_budget() -> None:
    rows = [{"id": i, "text": "x" * 100} for i in range(10)]
    assert fit_rows(rows, 10_000) == rows
    kept = fit_rows(rows, 350)
    assert kept == rows[:3]
    assert fit_rows(rows, 10) == []


def test_a_long_event_log_comes_back_truncated_but_decodable(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    for i in range(1000):
        event = Event(level="info", kind="info", code="config_applied", text="t" * 500)
        stack.core.store.add_event(event, ts=2000.0 + i, source="master_core")
    outcome = stack.core._cmd_events(EventsQueryArgs(limit=1000))
    assert outcome.accepted and outcome.result["truncated"] is True
    rows = outcome.result["events"]
    assert 100 < len(rows) < 1000
    assert rows[0]["ts"] == 2999.0  # newest first: the newest are kept
    reply = CommandReply(
        command="events_query", correlation_id="c" * 64, status="accepted", result=outcome.result
    )
    raw = encode(reply, source="master_core", seq=0, ts=1.0)
    assert len(raw) <= COMMAND_REPLY.byte_limit
    assert decode(CommandReply, "t", raw).result["events"][0]["ts"] == 2999.0
