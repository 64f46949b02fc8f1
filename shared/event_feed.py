"""The event stream as a consumer should read it: source from the topic, gaps filled.

Subscribes to `events/+`, hands each event on once with `source` set from the topic level
(the broker ACL pins that level to the publishing user; the payload's own `source` is only a
claim, counted and logged when it differs), and when a source's `seq` jumps, fetches the
missing ones with `events_query` (`after_id`; for a source other than the master also
`source` and `seq_epoch`: the master keeps the events it received from the others) and hands
them on as they come. What the master's log lacks is counted as lost.

A consumer that keeps its place across restarts (`positions()` after each event, `resume()`
at start) calls `catch_up()` once connected: it pages through what each source logged after
that place (and fetches the gaps it had left open), so what happened while it was down is
handed on once, in order, before or among the live events (a live event already fetched is a
duplicate and dropped).

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
from shared.topics import EVENTS, LEVEL_RE, MASTER

log = logging.getLogger("shared.event_feed")

FETCH_ROWS = 500
"""Rows per `events_query` page (the command allows up to 1000)."""
FETCH_TTL_S = 5.0
RETRY_S = 5.0
MAX_RETRY_S = 60.0
"""The longest a rate limit's `retry_after_s` is waited for."""
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
        self._probes: dict[str, tuple[float | None, int]] = {}
        """Source -> (epoch, seq) to page on after (`catch_up`), until a page comes back short."""
        self._probing: set[str] = set()
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

    # --- a place kept across restarts ------------------------------------------------------
    def positions(self) -> dict[str, dict[str, Any]]:
        """Each source's place (JSON): its epoch, the highest seq handed on and the ranges
        below it still missing; `resume` takes it back."""
        out: dict[str, dict[str, Any]] = {}
        for source in self.sequencer.sources():
            pos = self.sequencer.position(source)
            assert pos is not None
            missing = [[g.first, g.last] for g in self.sequencer.missing(source)]
            out[source] = {"epoch_s": pos[0], "seq": pos[1], "missing": missing}
        return out

    def resume(self, positions: Mapping[str, Any]) -> int:
        """Continue from `positions()` of an earlier run; an entry that cannot be read is
        skipped, counted (`events_positions_bad`) and logged. Returns how many were taken."""
        taken = 0
        for source, pos in positions.items():
            try:
                epoch = pos["epoch_s"]
                seq = pos["seq"]
                missing = [(int(a), int(b)) for a, b in pos.get("missing", [])]
                if not isinstance(seq, int) or not isinstance(epoch, float | int | None):
                    raise TypeError(f"seq {seq!r}, epoch {epoch!r}")
                if not LEVEL_RE.match(source):
                    raise ValueError(f"source {source!r}")
            except (KeyError, TypeError, ValueError) as exc:
                self.bus.counters["events_positions_bad"] += 1
                self._log.warning("positions", "kept place of %r not used: %s", source, exc)
                continue
            self.sequencer.resume(source, None if epoch is None else float(epoch), seq, missing)
            taken += 1
        return taken

    def catch_up(self) -> None:
        """Fetch what every known source logged after its place, and its open gaps (call once
        connected, after `resume`)."""
        for source in self.sequencer.sources():
            pos = self.sequencer.position(source)
            assert pos is not None
            self._probes[source] = pos
            if self.sequencer.missing(source):
                self._sources_with_gaps.add(source)
        self._probe()
        self._fetch()

    def _probe(self) -> None:
        if self.commands is None or self._retry_at is not None:
            return
        for source, (epoch, after) in sorted(self._probes.items()):
            if source in self._probing:
                continue
            if source != self.master and epoch is None:
                del self._probes[source]  # an unsequenced stream cannot be asked for
                continue
            self._probing.add(source)
            args = EventsQueryArgs(
                after_id=after,
                source=source,
                seq_epoch=None if source == self.master else epoch,
                limit=FETCH_ROWS,
            )
            self.commands.send(
                "events_query",
                args,
                ttl_s=FETCH_TTL_S,
                on_reply=functools.partial(self._probed, source, epoch, after),
            )

    def _probed(
        self, source: str, epoch: float | None, after: int, reply: CommandReply | None
    ) -> None:
        self._probing.discard(source)
        if reply is None or reply.status != "accepted":
            self._failed(f"{source} after seq {after}", reply)
            return
        rows = reply.result.get("events")
        answered = reply.result.get("seq_epoch")
        if not isinstance(rows, list):
            self.bus.counters["events_fetch_bad_rows"] += 1
            self._probes.pop(source, None)
            return
        if answered != epoch:
            # the master's log was replaced while we were away: its new count, from the start
            self.bus.counters["events_fetch_other_epoch"] += 1
            if source == self.master and isinstance(answered, float | int):
                self._probes[source] = (float(answered), FIRST_SEQ[MASTER] - 1)
            else:
                self._probes.pop(source, None)
            self._probe()
            return
        last = after
        for row in rows:
            event = event_from_row(row, epoch)
            if event is None or event.seq is None or event.seq <= after:
                self.bus.counters["events_fetch_bad_rows"] += 1
                continue
            last = max(last, event.seq)
            self.bus.counters["events_fetched"] += 1
            self._accept(source, event.model_copy(update={"source": source}))
        if rows and (reply.result.get("truncated") or len(rows) >= FETCH_ROWS):
            self._probes[source] = (epoch, last)  # a full page: there may be more
        else:
            self._probes.pop(source, None)
        self._probe()
        self._fetch()

    def _failed(self, what: str, reply: CommandReply | None) -> None:
        """No answer, or refused (a rate limit says how long to wait): try again later."""
        self.bus.counters["events_fetch_failed"] += 1
        self._log.warning(
            "fetch_failed",
            "events_query for %s: %s",
            what,
            "no reply" if reply is None else reply.reason,
        )
        wait_s = RETRY_S
        if reply is not None:
            retry_after = reply.result.get("retry_after_s")
            if isinstance(retry_after, float | int) and retry_after > wait_s:
                wait_s = min(float(retry_after), MAX_RETRY_S)
        self._retry_at = self.clock() + wait_s

    # --- fetching the master's gaps ---------------------------------------------------------
    def poll(self) -> None:
        """Retry a failed fetch once its wait is over (call from the bus loop)."""
        if self._retry_at is not None and self.clock() >= self._retry_at:
            self._retry_at = None
            self._probe()
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
            self.sequencer.fetch_failed(gap)
            self._failed(f"{gap.source} seq {gap.first}-{gap.last}", reply)
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
            event = event_from_row(row, epoch)
            if event is None or event.seq is None:
                self.bus.counters["events_fetch_bad_rows"] += 1
                continue
            last = max(last, event.seq)
            if gap.first <= event.seq <= gap.last:
                self.bus.counters["events_fetched"] += 1
                self._accept(gap.source, event.model_copy(update={"source": gap.source}))
        # a page cut by the master (its page size or the reply's byte limit) covers only what
        # it returned: the rest is asked for next, not given up
        cut = bool(reply.result.get("truncated")) or len(rows) >= gap.size
        covered = last if cut else gap.last
        self.bus.counters["events_lost"] += self.sequencer.fetch_done(gap, covered_to=covered)
        self._fetch()  # the next page or the next gap


def event_from_row(row: Any, epoch_s: float | None) -> Event | None:
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
