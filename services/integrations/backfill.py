"""The bridge's place in each event stream, kept in a file so that a restart loses no event.

The bridge reads its own system's events through `shared.event_feed.EventFeed`: each event
once, gaps fetched from the master's log with `events_query`. Its place (per source: epoch,
highest seq handed on, ranges still missing) is written after every event, so that at start
and after each reconnect `EventFeed.catch_up` fetches exactly what was logged meanwhile: an
alert or a JSON mirror entry is neither lost nor sent twice. Without a file the bridge still
fills the gaps it sees while running, but what happened while it was down stays unknown.

The file is written through a temporary file and renamed (a kill leaves the old place or the
new one, never half of one); a place that cannot be read or written is logged, counted
(`events_state_errors`) and the bridge runs on.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from shared.log_limit import LimitedLog

log = logging.getLogger("integrations.backfill")
MAX_STATE_BYTES = 1_000_000
"""Far above any real place (a few hundred bytes per source); a larger file is not read."""


class PlaceFile:
    def __init__(self, path: Path | str, counters: Any) -> None:
        self.path = Path(path)
        self.counters = counters
        self._log = LimitedLog(log, every_s=60.0)
        self._last: str | None = None

    def load(self) -> dict[str, Any]:
        """The kept place; empty when there is none or it cannot be read (counted)."""
        try:
            if self.path.stat().st_size > MAX_STATE_BYTES:
                raise ValueError(f"{self.path.stat().st_size} bytes")
            data = json.loads(self.path.read_text())
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            self.counters["events_state_errors"] += 1
            self._log.warning(
                "load", "event place %s not read (%s): starting afresh", self.path, exc
            )
            return {}
        return data

    def save(self, place: dict[str, Any]) -> None:
        text = json.dumps(place, separators=(",", ":"), sort_keys=True)
        if text == self._last:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text)
            os.replace(tmp, self.path)
        except OSError as exc:
            self.counters["events_state_errors"] += 1
            self._log.warning("save", "event place %s not written: %s", self.path, exc)
            return
        self._last = text
