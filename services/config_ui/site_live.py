"""What the UI knows of its site (BMS_SITE): the site configuration, the latest site state and
the site's recent events (joins, leaves, waits). Fed by bus handlers (any thread), read by web
requests; no I/O here.

The site state (`shared.messages.site.SiteState`) comes from the site controller under the
site id (`bms/v1/{site}/site/state`), its events on `bms/v1/{site}/events/site_controller`.
Every unknown value stays null, as the controller publishes it; a state older than
`STALE_AFTER_S` is served with `stale` true (the page greys it out), as the pack is.

The events are the live ones merged with what the controller's own log answers to
`events_query` (`merge_logged`, asked at start and after each reconnection: `SiteBackfill`),
each once: an event is known by its `seq` within its `seq_epoch` (the controller's log row id
within the log's epoch), so a logged event that also came live is not shown twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from shared.config.site import SiteConfig
from shared.event_feed import event_from_row
from shared.limit_reasons import words as limit_words
from shared.messages import Event
from shared.messages.site import SiteState

STALE_AFTER_S = 2.0
"""The site controller publishes at 10 Hz: two seconds of silence means not live."""
RECENT_SITE_EVENTS = 200
"""Events kept (and asked of the controller's log): the newest, by time."""
EventKey = tuple[float | None, int | None, float | None, str, str]


def event_key(event: Event) -> EventKey:
    """One event's identity: its `seq` within its `seq_epoch`; an unsequenced one (an older
    publisher) by its time, code and text as well."""
    if event.seq is not None and event.seq_epoch is not None:
        return (event.seq_epoch, event.seq, None, "", "")
    return (event.seq_epoch, event.seq, event.ts, event.code, event.text)


def _newest_last(event: Event) -> tuple[float, float, int]:
    return (event.ts or 0.0, event.seq_epoch or 0.0, event.seq or 0)


class SiteLive:
    def __init__(self, site: str, *, clock: Callable[[], float] = time.time) -> None:
        self.site = site
        self.clock = clock
        self.config: SiteConfig | None = None
        self.state: SiteState | None = None
        self.state_ts: float | None = None
        self._events: dict[EventKey, Event] = {}
        self._high: dict[float, int] = {}
        """The highest `seq` seen per epoch of the controller's log (a jump is a gap)."""
        self._lock = threading.Lock()

    # --- updates (bus thread) ---------------------------------------------------------------
    def on_config(self, config: SiteConfig) -> None:
        with self._lock:
            self.config = config

    def on_state(self, state: SiteState) -> None:
        with self._lock:
            self.state, self.state_ts = state, self.clock()

    def on_event(self, event: Event) -> bool:
        """A live event; True when it shows a gap (its `seq` jumps past the next one of its
        epoch): the log has what was missed."""
        with self._lock:
            gap = self._add([event])
        return gap

    def merge_logged(self, rows: Iterable[Any], epoch_s: float | None) -> tuple[int, int]:
        """Rows of the controller's `events_query` answer (`epoch_s`: the answer's
        `seq_epoch`), merged with what is known; returns (new events kept, rows not readable)."""
        events = [event_from_row(row, epoch_s) for row in rows]
        good = [e.model_copy(update={"source": "site_controller"}) for e in events if e]
        with self._lock:
            before = set(self._events)
            self._add(good)
            new = len(set(self._events) - before)
        return new, len(events) - len(good)

    def _add(self, events: list[Event]) -> bool:
        gap = False
        for event in events:
            self._events.setdefault(event_key(event), event)
            if event.seq is not None and event.seq_epoch is not None:
                high = self._high.get(event.seq_epoch)
                gap |= high is not None and event.seq > high + 1
                self._high[event.seq_epoch] = max(event.seq, high if high is not None else -1)
        if len(self._events) > RECENT_SITE_EVENTS:
            kept = sorted(self._events.items(), key=lambda kv: _newest_last(kv[1]))
            self._events = dict(kept[-RECENT_SITE_EVENTS:])
        return gap

    # --- reads ------------------------------------------------------------------------------
    def stale(self) -> bool:
        return self.state_ts is None or self.clock() - self.state_ts > STALE_AFTER_S

    def events(self, limit: int = 50) -> list[dict[str, Any]]:
        """The site's events, newest first; `system` is the string an event is about."""
        with self._lock:
            ordered = sorted(self._events.values(), key=_newest_last)
        return [
            {
                "ts": e.ts,
                "level": e.level,
                "kind": e.kind,
                "code": e.code,
                "text": e.text,
                "system": e.values.get("system"),
                "source": e.source,
                "seq": e.seq,
            }
            for e in ordered[-limit:][::-1]
        ]

    def snapshot(self) -> dict[str, Any]:
        """Everything the site page shows, as JSON-ready data."""
        with self._lock:
            config, state, state_ts = self.config, self.state, self.state_ts
        now = self.clock()
        return {
            "ts": now,
            "site": self.site,
            "name": None if config is None else config.name,
            "configured": config is not None,
            "config_strings": [] if config is None else list(config.system_ids),
            "stale": self.stale(),
            "state_age_s": None if state_ts is None else round(now - state_ts, 2),
            "state": None if state is None else state_view(state),
            "events": self.events(),
        }


def state_view(state: SiteState) -> dict[str, Any]:
    """The site state as JSON (every unknown null), with the limits' reasons in words."""
    data = state.model_dump(mode="json", exclude={"schema_version", "source", "seq"})
    lim = state.limits
    data["limit_words"] = {
        "charge": limit_words(lim.charge_reason),
        "discharge": limit_words(lim.discharge_reason),
        "charge_voltage": limit_words(lim.charge_voltage_reason),
    }
    return data


RETRY_S = 5.0
"""After a query without a reply (the controller down) or refused, ask again this much later."""
MAX_RETRY_S = 60.0
"""The longest a rate limit's `retry_after_s` is waited for."""


@dataclass
class SiteBackfill:
    """When to ask the site controller's log (pure: the caller passes the connection state and
    the monotonic clock): once connected, after every reconnection and after a gap in the live
    events; one query at a time; again `RETRY_S` (or the refusal's `retry_after_s`) after one
    that failed, until one is answered."""

    wanted: bool = True
    in_flight: bool = False
    again: bool = False
    """Wanted again while a query was in flight (its answer may predate the reason)."""
    retry_at_s: float | None = None
    was_connected: bool = False

    def due(self, connected: bool, now_s: float) -> bool:
        """Whether to send the query now (then it is in flight until `answered`)."""
        if connected and not self.was_connected:
            self.want()  # missed whatever came meanwhile
            self.retry_at_s = None
        self.was_connected = connected
        if not connected or self.in_flight or not self.wanted:
            return False
        if self.retry_at_s is not None and now_s < self.retry_at_s:
            return False
        self.in_flight = True
        return True

    def want(self) -> None:
        """Ask (again): a gap in the live events, or a reconnection."""
        self.wanted = True
        self.again = self.in_flight

    def answered(self, ok: bool, now_s: float, retry_after_s: float | None = None) -> None:
        self.in_flight = False
        if ok:
            self.wanted, self.retry_at_s, self.again = self.again, None, False
            return
        self.again = False  # asked again anyway
        wait_s = RETRY_S if retry_after_s is None else min(max(retry_after_s, RETRY_S), MAX_RETRY_S)
        self.retry_at_s = now_s + wait_s
