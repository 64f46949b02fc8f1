"""The event stream as a consumer should read it: source from the topic, gaps filled.

Subscribes to `events/+`, hands each event on once with `source` set from the topic level
(the broker ACL pins that level to the publishing user; the payload's own `source` is only a
claim, counted and logged when it differs), and when a source's `seq` jumps, fetches the
missing ones with `events_query` (`after_id`; for a source other than the master also
`source` and `seq_epoch`: the master keeps the events it received from the others) and hands
them on as they come. What the master's log lacks is counted as lost.

The logic is `shared.event_sequence.EventSequencer`; this adapter only wires it. It runs in
the thread that drives the bus (`process`); call `poll()` from that loop to retry fetches.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from shared.bus import BusCore, Delivery
from shared.commands import CommandClient
from shared.event_sequence import EventSequencer, Gap
from shared.log_limit import LimitedLog
from shared.messages import CommandReply, Event, EventsQueryArgs
from shared.topics import EVENTS, MASTER

log = logging.getLogger("shared.event_feed")

FETCH_ROWS = 500
"""Rows per `events_query` page (the command allows up to 1000)."""
FETCH_TTL_S = 5.0
RETRY_S = 5.0
FIRST_SEQ: Mapping[str, int] = {MASTER: 1}
"""SQLite row ids start at 1; the bus's per-process counters at 0."""


class EventFeed:
    def __init__(
        self,
        bus: BusCore,
        on_event: Callable[[Event], None],
        *,
        commands: CommandClient | None = None,
        master: str = MASTER,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """`commands`: the client to send `events_query` with (None: detect gaps, fetch
        nothing). `master`: the source whose `seq` is its log's row id."""
        self.bus = bus
        self.on_event = on_event
        self.commands = commands
        self.master = master
        self.clock = clock or bus.clock
        self.sequencer = EventSequencer(first_seq={master: FIRST_SEQ[MASTER]})
        self._retry_at: float | None = None
        self._sources_with_gaps: set[str] = set()
        self._log = LimitedLog(log)
        bus.subscribe(EVENTS, self._on_delivery)

    def _on_delivery(self, d: Delivery[Event]) -> None:
        source = d.params["source"]
        event = d.message
        if event.source != source:
            # a payload claiming another source: shown as the topic says, never as the claim
            self.bus.counters["events_source_mismatch"] += 1
            self._log.warning(
                "source_mismatch",
                "event %s on events/%s claims source %r; shown as %s",
                event.code,
                source,
                event.source,
                source,
            )
            event = event.model_copy(update={"source": source})
        self._accept(source, event)
        self._fetch()

    def _accept(self, source: str, event: Event) -> None:
        seen = self.sequencer.observe(source, event.seq_epoch, event.seq)
        if seen.gap is not None:
            self.bus.counters["events_gaps"] += 1
            self.bus.counters["events_missed"] += seen.gap.size
            self._sources_with_gaps.add(source)
            self._log.warning(
                f"gap.{source}",
                "missed %d event(s) of %s (seq %d-%d)%s",
                seen.gap.size,
                source,
                seen.gap.first,
                seen.gap.last,
                ", fetching them" if self.commands is not None else "",
            )
        if seen.lost:
            self.bus.counters["events_lost"] += seen.lost
        if not seen.new:
            self.bus.counters["events_duplicates"] += 1
            return
        self.on_event(event)

    # --- fetching the master's gaps ---------------------------------------------------------
    def poll(self) -> None:
        """Retry a failed fetch once its wait is over (call from the bus loop)."""
        if self._retry_at is not None and self.clock() >= self._retry_at:
            self._retry_at = None
            self._fetch()

    def _fetch(self) -> None:
        if self.commands is None or self._retry_at is not None:
            return
        for source in sorted(self._sources_with_gaps):
            if not self.sequencer.missing(source):
                self._sources_with_gaps.discard(source)
                continue
            gap = self.sequencer.next_fetch(source, FETCH_ROWS)
            if gap is None:
                continue  # one under way
            epoch = None if source == self.master else gap.epoch_s
            if source != self.master and epoch is None:
                # an unsequenced stream cannot be asked for: give the gap up
                self.bus.counters["events_lost"] += self.sequencer.fetch_done(
                    gap, covered_to=gap.last
                )
                continue
            args = EventsQueryArgs(
                after_id=gap.first - 1, source=source, seq_epoch=epoch, limit=gap.size
            )
            self.commands.send(
                "events_query",
                args,
                ttl_s=FETCH_TTL_S,
                on_reply=functools.partial(self._fetched, gap),
            )

    def _fetched(self, gap: Gap, reply: CommandReply | None) -> None:
        if reply is None or reply.status != "accepted":
            self.bus.counters["events_fetch_failed"] += 1
            self._log.warning(
                "fetch_failed",
                "events_query for %s seq %d-%d: %s",
                gap.source,
                gap.first,
                gap.last,
                "no reply" if reply is None else reply.reason,
            )
            self.sequencer.fetch_failed(gap)
            self._retry_at = self.clock() + RETRY_S
            return
        rows = reply.result.get("events")
        epoch = reply.result.get("seq_epoch")
        if not isinstance(rows, list) or epoch != gap.epoch_s:
            # another log answered (the master's was replaced): nothing of this gap is there
            self.bus.counters["events_fetch_other_epoch"] += 1
            self.bus.counters["events_lost"] += self.sequencer.fetch_done(gap, covered_to=gap.last)
            return
        last = gap.first - 1
        for row in rows:
            event = _event_of(row, epoch)
            if event is None or event.seq is None:
                self.bus.counters["events_fetch_bad_rows"] += 1
                continue
            last = max(last, event.seq)
            if gap.first <= event.seq <= gap.last:
                self.bus.counters["events_fetched"] += 1
                self._accept(gap.source, event.model_copy(update={"source": gap.source}))
        covered = gap.last if len(rows) < gap.size else last
        self.bus.counters["events_lost"] += self.sequencer.fetch_done(gap, covered_to=covered)
        self._fetch()  # the next page or the next gap


def _event_of(row: Any, epoch_s: float | None) -> Event | None:
    """An `events_query` row as the event it was published as (`seq` = the row id)."""
    if not isinstance(row, dict):
        return None
    try:
        return Event.model_validate(
            {
                "level": row.get("level"),
                "kind": row.get("kind"),
                "code": row.get("code"),
                "text": row.get("text", ""),
                "values": row.get("values", {}),
                "source": row.get("source", ""),
                "seq": row.get("id"),
                "seq_epoch": epoch_s,
                "ts": row.get("ts"),
            }
        )
    except ValidationError:
        return None
