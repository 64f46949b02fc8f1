"""The event log: every event is stored in SQLite and published with QoS 1.

Codes come from the catalogue `shared/event_codes.py`; an uncatalogued code is still logged
and published, and counted as `uncatalogued_event_codes`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from services.master_core.stores import Store
from shared.bus import BusCore, Delivery
from shared.event_codes import known_event_code
from shared.messages import Event, EventsQueryArgs
from shared.messages.events import EVENT_TEXT_MAX, EventKind, EventLevel, EventValue
from shared.topics import EVENTS

log = logging.getLogger("master_core.events")
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
            log.error("event code %r is not in shared/event_codes.py", code)
        # the payload's bounds: an event is truncated, never lost to a validation error
        fitted = {
            k[:64]: v[:EVENT_TEXT_MAX] if isinstance(v, str) else v for k, v in values.items()
        }
        event = Event(level=level, kind=kind, code=code, text=text[:EVENT_TEXT_MAX], values=fitted)
        ts = self.wall()
        row_id = self.store.add_event(event, ts=ts, source=self.bus.service)
        stamp = {"ts": ts, "seq": row_id, "seq_epoch": self.epoch_s}
        self.bus.publish(EVENTS, event.model_copy(update=stamp))
        log.log(_LOG_LEVEL[level], "%s %s %s %s", kind, code, text, values or "")

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
