"""What the UI knows of its site (BMS_SITE): the site configuration, the latest site state and
the site's recent events (joins, leaves, waits). Fed by bus handlers (any thread), read by web
requests; no I/O here.

The site state (`shared.messages.site.SiteState`) comes from the site controller under the
site id (`bms/v1/{site}/site/state`), its events on `bms/v1/{site}/events/site_controller`.
Every unknown value stays null, as the controller publishes it; a state older than
`STALE_AFTER_S` is served with `stale` true (the page greys it out), as the pack is.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from shared.config.site import SiteConfig
from shared.limit_reasons import words as limit_words
from shared.messages import Event
from shared.messages.site import SiteState

STALE_AFTER_S = 2.0
"""The site controller publishes at 10 Hz: two seconds of silence means not live."""
RECENT_SITE_EVENTS = 200


class SiteLive:
    def __init__(self, site: str, *, clock: Callable[[], float] = time.time) -> None:
        self.site = site
        self.clock = clock
        self.config: SiteConfig | None = None
        self.state: SiteState | None = None
        self.state_ts: float | None = None
        self._events: deque[Event] = deque(maxlen=RECENT_SITE_EVENTS)
        self._lock = threading.Lock()

    # --- updates (bus thread) ---------------------------------------------------------------
    def on_config(self, config: SiteConfig) -> None:
        with self._lock:
            self.config = config

    def on_state(self, state: SiteState) -> None:
        with self._lock:
            self.state, self.state_ts = state, self.clock()

    def on_event(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)

    # --- reads ------------------------------------------------------------------------------
    def stale(self) -> bool:
        return self.state_ts is None or self.clock() - self.state_ts > STALE_AFTER_S

    def events(self, limit: int = 50) -> list[dict[str, Any]]:
        """The site's events, newest first; `system` is the string an event is about."""
        with self._lock:
            ordered = sorted(self._events, key=lambda e: e.ts or 0.0)
        return [
            {
                "ts": e.ts,
                "level": e.level,
                "kind": e.kind,
                "code": e.code,
                "text": e.text,
                "system": e.values.get("system"),
                "source": e.source,
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
