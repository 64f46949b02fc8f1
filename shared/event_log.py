"""A service's event log: every event is stored in SQLite and published with QoS 1, and the
log answers `events_query` (the master's, and the site controller's under its site id).

Codes come from the catalogue `shared/event_codes.py`; an uncatalogued code is still logged
and published, and counted as `uncatalogued_event_codes`. `EventQueries` serves the query:
each requester's budget (`shared.query_limit`), its page size, and the reply's byte limit.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any

import msgpack

from shared.bus import BusCore, Delivery
from shared.commands import CommandOutcome, requester
from shared.event_codes import known_event_code
from shared.event_store import Store
from shared.log_limit import LimitedLog
from shared.messages import CommandArgs, CommandRequest, Event, EventsQueryArgs
from shared.messages.events import EVENT_TEXT_MAX, EventKind, EventLevel, EventValue
from shared.query_limit import THIRD_PARTY_BUDGET, QueryLimiter, budget_of
from shared.topics import COMMAND_REPLY_MAX_BYTES, EVENTS

_LOG_LEVEL = {
    "info": logging.INFO,
    "warning": logging.WARNING,
    "alarm": logging.ERROR,
    "fault": logging.CRITICAL,
}


EPOCH_KEY = "event_log_epoch"


class EventLog:
    """Each event is stored first, then published with `seq` = its row id and `seq_epoch` =
    when this log was created, so `seq` never repeats within an epoch and a consumer that
    sees a jump fetches the rows it missed with `events_query` (`after_id`)."""

    def __init__(self, store: Store, bus: BusCore, wall: Callable[[], float]) -> None:
        self.store = store
        self.bus = bus
        self.wall = wall
        epoch = store.get(EPOCH_KEY)
        if not isinstance(epoch, float):
            # a new log (or one from before sequencing): its ids start a new epoch
            epoch = float(wall())
            store.put(EPOCH_KEY, epoch, ts=epoch)
        self.epoch_s: float = epoch
        self._log = logging.getLogger(f"{bus.service}.events")
        self._limited = LimitedLog(self._log)

    def emit(
        self,
        level: EventLevel,
        kind: EventKind,
        code: str,
        text: str = "",
        **values: EventValue,
    ) -> None:
        if not known_event_code(code):
            # still sent: an event is never dropped, but the catalogue (and docs) lack it
            self.bus.counters["uncatalogued_event_codes"] += 1
            self._log.error("event code %r is not in shared/event_codes.py", code)
        # the payload's bounds: an event is truncated, never lost to a validation error
        fitted = {
            k[:64]: v[:EVENT_TEXT_MAX] if isinstance(v, str) else v for k, v in values.items()
        }
        event = Event(level=level, kind=kind, code=code, text=text[:EVENT_TEXT_MAX], values=fitted)
        ts = self.wall()
        row_id = self.store.add_event(event, ts=ts, source=self.bus.service)
        stamp = {"ts": ts, "seq": row_id, "seq_epoch": self.epoch_s}
        self.bus.publish(EVENTS, event.model_copy(update=stamp))
        self._log.log(_LOG_LEVEL[level], "%s %s %s %s", kind, code, text, values or "")

    def warn_limited(self, key: str, msg: str, *args: object) -> None:
        """A warning about the log itself, at most once a minute per `key`."""
        self._limited.warning(key, msg, *args)

    def on_event(self, d: Delivery[Event]) -> None:
        """Keep the events of the other services too (under the topic's source, which the
        broker ACL pins to the publisher), so a consumer that missed one fetches it here."""
        source = d.params["source"]
        if source == self.bus.service:
            return  # stored before it was published
        event = d.message
        if self.store.add_source_event(event, source=source, ts=event.ts or self.wall()):
            self.bus.counters["source_events_kept"] += 1

    def query(self, args: EventsQueryArgs) -> dict[str, Any]:
        """The `events_query` answer: the rows, each with the id it was published as `seq`
        with, and the epoch those ids belong to."""
        if args.source not in (None, self.bus.service) and args.seq_epoch is not None:
            rows = self.store.source_events(
                source=args.source,
                seq_epoch=args.seq_epoch,
                after_seq=-1 if args.after_id is None else args.after_id,
                limit=args.limit,
            )
            return {"events": rows, "seq_epoch": args.seq_epoch}
        query = args.model_dump(exclude={"seq_epoch"})
        return {"events": self.store.events(**query), "seq_epoch": self.epoch_s}


EVENTS_REPLY_BUDGET_BYTES = COMMAND_REPLY_MAX_BYTES - 16 * 1024
"""Rows of an events query that fit the reply topic's byte limit, with room for the rest."""


def fit_rows(rows: list[dict[str, Any]], budget_bytes: int) -> list[dict[str, Any]]:
    """The leading rows whose msgpack encodings add up to at most `budget_bytes`."""
    used = 0
    for i, row in enumerate(rows):
        used += len(msgpack.packb(row, use_bin_type=True))
        if used > budget_bytes:
            return rows[:i]
    return rows


class EventQueries:
    """`events_query` on a `CommandServer`: `admit` as the command's gate (the requester's
    budget, or a refusal saying when to ask again, counted `events_query_rate_limited`),
    `answer` as its handler (cut to the admitted requester's page and the reply's bytes;
    `truncated` when there is more to ask for)."""

    def __init__(self, log: EventLog, bus: BusCore, monotonic: Callable[[], float]) -> None:
        self.log = log
        self.bus = bus
        self.monotonic = monotonic
        self.limiter = QueryLimiter()
        self._page_rows = THIRD_PARTY_BUDGET.page_rows
        """The admitted requester's page size, for the query that runs right after."""

    def admit(self, req: CommandRequest, _wall_s: float) -> CommandOutcome | None:
        user = requester(req)
        if user is None:
            return None  # refused before this for its reply topic
        budget = budget_of(user)
        self._page_rows = budget.page_rows
        wait_s = self.limiter.admit(user, self.monotonic())
        if wait_s is None:
            return None
        self.bus.counters["events_query_rate_limited"] += 1
        return CommandOutcome(
            False,
            f"rate limited: {user} may ask the event log {budget.burst} times at once, then "
            f"once every {1.0 / budget.rate_per_s:g} s; ask again in {wait_s:.1f} s",
            result={"retry_after_s": round(wait_s, 3)},
        )

    def answer(self, args: CommandArgs) -> CommandOutcome:
        assert isinstance(args, EventsQueryArgs)
        page_rows, self._page_rows = self._page_rows, THIRD_PARTY_BUDGET.page_rows
        asked = args.limit
        args = args.model_copy(update={"limit": min(asked, page_rows)})
        try:
            result: dict[str, Any] = dict(self.log.query(args))
        except sqlite3.Error as exc:
            # a damaged or locked file: the requester hears why; the service runs on
            self.bus.counters["events_query_errors"] += 1
            self.log.warn_limited("query", "the event log cannot be read: %s", exc)
            return CommandOutcome(False, f"the event log cannot be read: {exc}")
        rows = result["events"]
        kept = fit_rows(rows, EVENTS_REPLY_BUDGET_BYTES)
        result["events"] = kept
        if len(kept) < len(rows) or (asked > page_rows and len(rows) == page_rows):
            # the leading rows (newest, or oldest after an after_id): ask again from the last
            result["truncated"] = True
        return CommandOutcome(True, result=result)
