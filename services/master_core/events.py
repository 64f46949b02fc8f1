"""The event log: every event is stored in SQLite and published with QoS 1.

Codes come from the catalogue `shared/event_codes.py`; an uncatalogued code is still logged
and published, and counted as `uncatalogued_event_codes`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from services.master_core.stores import Store
from shared.bus import BusCore
from shared.event_codes import known_event_code
from shared.messages import Event
from shared.messages.events import EVENT_TEXT_MAX, EventKind, EventLevel, EventValue
from shared.topics import EVENTS

log = logging.getLogger("master_core.events")
_LOG_LEVEL = {
    "info": logging.INFO,
    "warning": logging.WARNING,
    "alarm": logging.ERROR,
    "fault": logging.CRITICAL,
}


class EventLog:
    def __init__(self, store: Store, bus: BusCore, wall: Callable[[], float]) -> None:
        self.store = store
        self.bus = bus
        self.wall = wall

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
        self.store.add_event(event, ts=ts, source=self.bus.service)
        self.bus.publish(EVENTS, event.model_copy(update={"ts": ts}))
        log.log(_LOG_LEVEL[level], "%s %s %s %s", kind, code, text, values or "")
