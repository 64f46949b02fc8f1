"""The fleet view's state: one row per site, from what the sites' bridges forward.

Pure (no I/O, the clock passed in). It reads the central broker's `fleet/{site}/...` topics
(shared/deploy/fleet.py says what crosses and how topics are remapped):

- `fleet/{site}/{site}/site/summary`: `SiteSummary` (strings, SOC, power, worst level);
- `fleet/{site}/{system}/events/{source}`: `Event`s, counted;
- `fleet/{site}/bridge/state`: mosquitto's bridge notification, "1" when the site's bridge
  connected, "0" (its last will at the centre) when the link dropped.

Sequence gaps are counted per site and stream with `shared.event_sequence.EventSequencer`
(a summary's stream is `{site}:summary`, an event's `{site}:{system}/{source}`): `missing` is
what is still missing now (lost, or not arrived yet), `gaps` how many jumps were seen, `late`
how many messages arrived after a later one of their stream and closed a gap. After a
reconnect a bridge resends what was in flight, so a few messages may arrive late: their gap
opens and closes, and only `missing` says something was lost. QoS 1 may deliver a message
twice: `duplicates` counts those, and they change nothing else.

A site is online when its last summary is younger than `stale_after_s`, says so, and its
bridge was not seen going down; unknown (None) before either was seen. The bridge's state stays
unknown until its notification is seen: it is not retained at the centre
(`bridge_outgoing_retain false`, RabbitMQ's retained store being node-local), so a view that
subscribed after a bridge connected learns of it at the link's next change.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.codec import PayloadError, decode
from shared.deploy.fleet import FLEET_ROOT
from shared.event_sequence import EventSequencer
from shared.log_limit import LimitedLog
from shared.messages import Event
from shared.messages.site import SiteSummary

log = logging.getLogger("fleet_view")
STALE_AFTER_S = 35.0
"""Three summary periods (10 s) and some: one lost summary does not mark a site offline."""
_LEVEL_RANK = {None: 0, "info": 1, "warning": 2, "alarm": 3, "fault": 4}
MAX_SITES = 10_000
"""Rows kept; a topic naming more sites than this is refused (counted), not stored."""


@dataclass
class SiteRow:
    site: str
    web_url: str | None = None
    bridge_up: bool | None = None
    summary: SiteSummary | None = None
    last_seen_s: float | None = None
    """Wall-clock time (the caller's clock) of the last message from this site."""
    summaries: int = 0
    events: int = 0
    duplicates: int = 0
    gaps: int = 0
    late: int = 0
    worst_event_level: str | None = None
    """The highest level of the events seen (the summary's `worst_level` is what is active)."""


@dataclass(frozen=True)
class SiteView:
    """One line of the fleet list, as the API and the page show it."""

    site: str
    online: bool | None
    bridge_up: bool | None
    strings_total: int | None
    strings_joined: int | None
    soc: float | None
    power_w: float | None
    worst_level: str | None
    worst_code: str | None
    last_seen_s: float | None
    age_s: float | None
    web_url: str | None
    summaries: int
    events: int
    duplicates: int
    gaps: int
    late: int
    missing: int


@dataclass
class FleetView:
    web_urls: Mapping[str, str] = field(default_factory=dict)
    """Each site's own web application (configuration; a summary carries no URL)."""
    stale_after_s: float = STALE_AFTER_S
    _rows: dict[str, SiteRow] = field(default_factory=dict)
    _seq: EventSequencer = field(default_factory=EventSequencer)
    counters: Counter[str] = field(default_factory=Counter)
    _bad_log: LimitedLog = field(default_factory=lambda: LimitedLog(log))

    def on_message(self, topic: str, payload: bytes, now_s: float) -> None:
        """One message from the central broker (any `fleet/...` topic)."""
        self.counters["received"] += 1
        levels = topic.split("/")
        if len(levels) < 3 or levels[0] != FLEET_ROOT:
            self.counters["ignored"] += 1
            return
        site, rest = levels[1], levels[2:]
        row = self._row(site)
        if row is None:
            return
        try:
            if rest == ["bridge", "state"]:
                self._on_bridge(row, payload)
            elif len(rest) == 3 and rest[1:] == ["site", "summary"]:
                self._on_summary(row, topic, payload)
            elif len(rest) == 3 and rest[1] == "events":
                self._on_event(row, f"{rest[0]}/{rest[2]}", topic, payload)
            else:
                self.counters["ignored"] += 1
                return
        except PayloadError as exc:
            self.counters["refused"] += 1
            self._bad_log.warning(exc.field, "fleet view refused %s", exc)
            return
        row.last_seen_s = now_s

    def _row(self, site: str) -> SiteRow | None:
        row = self._rows.get(site)
        if row is None:
            if len(self._rows) >= MAX_SITES:
                self.counters["too_many_sites"] += 1
                return None
            row = self._rows[site] = SiteRow(site, web_url=self.web_urls.get(site))
        return row

    def _on_bridge(self, row: SiteRow, payload: bytes) -> None:
        # mosquitto's notification payload is the text "1" or "0"
        state = {b"1": True, b"0": False}.get(payload.strip())
        if state is None:
            raise PayloadError(f"{FLEET_ROOT}/{row.site}/bridge/state", "payload", "not 0 or 1")
        row.bridge_up = state

    def _observe(self, row: SiteRow, stream: str, epoch_s: float | None, seq: int | None) -> bool:
        key = f"{row.site}:{stream}"
        before = self._seq.position(key)
        seen = self._seq.observe(key, epoch_s, seq)
        if not seen.new:
            row.duplicates += 1
            self.counters["duplicates"] += 1
            return False
        if before is not None and before[0] == epoch_s and seq is not None and seq <= before[1]:
            row.late += 1
            self.counters["late"] += 1
        if seen.gap is not None:
            row.gaps += 1
            self.counters["gaps"] += 1
        return True

    def _on_summary(self, row: SiteRow, topic: str, payload: bytes) -> None:
        summary = decode(SiteSummary, topic, payload)
        if not self._observe(row, "summary", summary.seq_epoch, summary.seq):
            return
        row.summaries += 1
        # a redelivered older summary must not replace a newer one
        if row.summary is None or (summary.ts or 0.0) >= (row.summary.ts or 0.0):
            row.summary = summary

    def _on_event(self, row: SiteRow, stream: str, topic: str, payload: bytes) -> None:
        event = decode(Event, topic, payload)
        if not self._observe(row, stream, event.seq_epoch, event.seq):
            return
        row.events += 1
        if _LEVEL_RANK[event.level] > _LEVEL_RANK[row.worst_event_level]:
            row.worst_event_level = event.level

    def missing(self, site: str) -> int:
        prefix = f"{site}:"
        streams = [s for s in self._seq.sources() if s.startswith(prefix)]
        return sum(g.size for s in streams for g in self._seq.missing(s))

    def sites(self, now_s: float) -> list[SiteView]:
        return [self._view(row, now_s) for _, row in sorted(self._rows.items())]

    def _view(self, row: SiteRow, now_s: float) -> SiteView:
        s = row.summary
        age_s = None if s is None or s.ts is None else max(0.0, now_s - s.ts)
        online: bool | None
        if s is None and row.bridge_up is None:
            online = None
        else:
            fresh = age_s is not None and age_s <= self.stale_after_s
            online = row.bridge_up is not False and fresh and (s is not None and s.online)
        return SiteView(
            site=row.site,
            online=online,
            bridge_up=row.bridge_up,
            strings_total=None if s is None else s.strings_total,
            strings_joined=None if s is None else s.strings_joined,
            soc=None if s is None else s.soc,
            power_w=None if s is None else s.power_w,
            worst_level=None if s is None else s.worst_level,
            worst_code=None if s is None else s.worst_code,
            last_seen_s=row.last_seen_s,
            age_s=age_s,
            web_url=row.web_url,
            summaries=row.summaries,
            events=row.events,
            duplicates=row.duplicates,
            gaps=row.gaps,
            late=row.late,
            missing=self.missing(row.site),
        )
