"""What the UI knows of the running system: the latest pack state and cells, a SOC and voltage
history, recent events, and each service's presence and configuration acknowledgement.

Fed by bus handlers (any thread), read by web requests; no I/O here.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from itertools import groupby
from typing import Any

from shared.alarm_words import active_words
from shared.config import SystemConfig
from shared.limit_reasons import words as limit_words
from shared.messages import (
    CellSnapshot,
    ChannelFlag,
    ConfigAck,
    Event,
    FieldInUse,
    PackState,
    ServiceStatus,
)
from shared.protection_codes import spec_of

STALE_AFTER_S = 2.0
"""The master publishes at 10 Hz; two seconds of silence means the values are not live."""
HISTORY_PERIOD_S = 1.0
RECENT_EVENTS = 200


@dataclass
class ServiceView:
    service: str
    kind: str = ""
    state: str = "unknown"
    host: str = ""
    version: str = ""
    counters: dict[str, int] = field(default_factory=dict)
    ack_version: int | None = None
    ack_accepted: bool | None = None
    ack_errors: list[str] = field(default_factory=list)
    restart_required: list[str] = field(default_factory=list)
    """Accepted fields this service applies only after a restart (from its last ack)."""
    in_use: dict[str, FieldInUse] = field(default_factory=dict)
    """Fields it runs with a value set on its host, not the configured one (its last ack)."""
    started_ts: float | None = None
    restarts: int = 0
    """New start times seen since the web application started (not the service's lifetime)."""

    def started(self, started_ts: float) -> None:
        if started_ts <= 0.0:
            return  # a service that does not say when it started
        if self.started_ts is not None and started_ts > self.started_ts:
            self.restarts += 1
        if self.started_ts is None or started_ts > self.started_ts:
            self.started_ts = started_ts

    def as_dict(self, now: float) -> dict[str, Any]:
        started = self.started_ts
        uptime_s = round(max(now - started, 0.0)) if self.state == "online" and started else None
        return {
            "service": self.service,
            "kind": self.kind,
            "state": self.state,
            "host": self.host,
            "version": self.version,
            "uptime_s": uptime_s,
            "restarts": self.restarts,
            "config_version": self.ack_version,
            "config_accepted": self.ack_accepted,
            "config_errors": self.ack_errors,
            "restart_required": self.restart_required,
            "in_use": self.uses(),
            "counters": self.counters,
        }

    def uses(self) -> list[dict[str, Any]]:
        """Each field in use with another value, with the sentence the UI shows at it."""
        out = []
        for path, used in sorted(self.in_use.items()):
            host = used.host or self.host
            out.append(
                {
                    "path": path,
                    "service": self.service,
                    "state": self.state,
                    "config_version": self.ack_version,
                    **used.model_dump(),
                    "host": host,
                    "note": in_use_note(self.service, host, used, self.state),
                }
            )
        return out


def in_use_note(service: str, host: str, used: FieldInUse, state: str = "online") -> str:
    """ "modbus_gateway@ipc-2 uses 1502 (BMS_TCP_PORT)": who runs which value, set where."""
    who = f"{service}@{host}" if host else service
    why = f"device named by {used.source}" if used.device else used.source
    gone = " (offline)" if state == "offline" else ""
    return f"{who} uses {used.value} ({why}){gone}"


@dataclass(frozen=True)
class HistoryPoint:
    """One point of the SOC and voltage plot; None where the value was unknown (a gap)."""

    ts: float
    soc_pct: float | None
    voltage_v: float | None
    current_a: float | None

    @property
    def unknown(self) -> bool:
        return self.soc_pct is None and self.voltage_v is None and self.current_a is None


def with_gaps(points: Iterable[HistoryPoint], max_step_s: float) -> list[HistoryPoint]:
    """The points with an unknown point wherever two lie more than `max_step_s` apart, so a
    plot breaks its line where nothing was recorded instead of bridging the silence."""
    out: list[HistoryPoint] = []
    for p in points:
        if out and not out[-1].unknown and p.ts - out[-1].ts > max_step_s:
            out.append(HistoryPoint(out[-1].ts + max_step_s / 2, None, None, None))
        out.append(p)
    return out


class LiveView:
    def __init__(
        self,
        *,
        history_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.pack: PackState | None = None
        self.pack_ts: float | None = None
        self.cells: CellSnapshot | None = None
        self.broker_config: SystemConfig | None = None
        self._services: dict[str, ServiceView] = {}
        self._history: deque[HistoryPoint] = deque(maxlen=int(history_s / HISTORY_PERIOD_S) + 1)
        self._events: deque[Event] = deque(maxlen=RECENT_EVENTS)
        self._raised: dict[tuple[str, str], Event] = {}
        """The newest raise event of each (code, level) of the master: what its alarm words
        read (value, threshold, since when)."""
        self._lock = threading.Lock()

    # --- updates (bus thread) ---------------------------------------------------------------
    def on_pack(self, pack: PackState) -> None:
        now = self.clock()
        with self._lock:
            self.pack, self.pack_ts = pack, now
            last = self._history[-1].ts if self._history else None
            if last is None or now - last >= HISTORY_PERIOD_S:
                self._history.append(HistoryPoint(now, pack.soc, pack.voltage, pack.current))

    def on_cells(self, cells: CellSnapshot) -> None:
        with self._lock:
            self.cells = cells

    def on_config(self, config: SystemConfig) -> None:
        with self._lock:
            self.broker_config = config

    def on_status(self, status: ServiceStatus) -> None:
        with self._lock:
            view = self._services.setdefault(status.service, ServiceView(status.service))
            view.kind, view.state, view.host = status.kind, status.state, status.host
            view.version, view.counters = status.version, dict(status.counters)
            view.started(status.started_ts)

    def on_ack(self, ack: ConfigAck) -> None:
        with self._lock:
            view = self._services.setdefault(ack.service, ServiceView(ack.service))
            view.ack_version, view.ack_accepted = ack.config_version, ack.accepted
            view.ack_errors = list(ack.errors)
            view.restart_required = list(ack.restart_required)
            view.in_use = dict(ack.in_use)

    def on_event(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)
            if event.kind in ("raise", "clear") and spec_of(event.code) is not None:
                self._track_raise(event)  # bounded: codes of the table only

    def _track_raise(self, event: Event) -> None:
        key = (event.code, event.level)
        known = self._raised.get(key)
        if known is not None and (known.ts or 0.0) > (event.ts or 0.0):
            return  # a gap's older event arriving late
        if event.kind == "clear":
            self._raised.pop(key, None)
        else:
            self._raised[key] = event

    # --- reads ------------------------------------------------------------------------------
    def stale(self) -> bool:
        return self.pack_ts is None or self.clock() - self.pack_ts > STALE_AFTER_S

    def services(self) -> list[dict[str, Any]]:
        with self._lock:
            now = self.clock()
            return [v.as_dict(now) for _, v in sorted(self._services.items())]

    def in_use(self) -> dict[str, list[dict[str, Any]]]:
        """By field (dotted path): each service instance that runs it with another value than
        the configuration, as its last acknowledgement says."""
        with self._lock:
            rows = [u for _, v in sorted(self._services.items()) for u in v.uses()]
        out: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            out.setdefault(row["path"], []).append(row)
        return dict(sorted(out.items()))

    def history(self, seconds: float) -> list[HistoryPoint]:
        since = self.clock() - seconds
        with self._lock:
            points = [p for p in self._history if p.ts >= since]
        return with_gaps(points, STALE_AFTER_S + HISTORY_PERIOD_S)

    def history_span_s(self) -> float:
        """How far back the in-memory history reaches at most."""
        return (self._history.maxlen or 1) * HISTORY_PERIOD_S

    def latest_point(self) -> HistoryPoint | None:
        with self._lock:
            return self._history[-1] if self._history else None

    def recent_events(self, limit: int = 50) -> list[Event]:
        with self._lock:
            # by time: events fetched to fill a gap arrive after newer ones
            ordered = sorted(self._events, key=lambda e: e.ts or 0.0)
        return ordered[-limit:][::-1]

    def snapshot(self) -> dict[str, Any]:
        """Everything the dashboard shows, as JSON-ready data."""
        with self._lock:
            pack, cells, pack_ts = self.pack, self.cells, self.pack_ts
            raised, config = dict(self._raised), self.broker_config
        counts = (
            [config.topology.cells_in_module(m) for m in range(config.topology.modules)]
            if config is not None
            else []
        )
        words = [] if pack is None else active_words(pack, raised, counts)
        out: dict[str, Any] = {
            "ts": self.clock(),
            "stale": self.stale(),
            "pack_age_s": None if pack_ts is None else round(self.clock() - pack_ts, 2),
            "pack": None if pack is None else pack_view(pack),
            "cells": None if cells is None else cells_view(cells),
            "alarm_words": [asdict(w) for w in words],
        }
        return out


def pack_view(pack: PackState) -> dict[str, Any]:
    """The pack state as JSON: every unknown is null, and so is the power when voltage or
    current is unknown."""
    data = pack.model_dump(mode="json", exclude={"schema_version", "source", "seq"})
    lim = pack.limits
    data["limit_words"] = {
        "charge": limit_words(lim.charge_reason),
        "discharge": limit_words(lim.discharge_reason),
        "charge_voltage": limit_words(lim.charge_voltage_reason),
    }
    power_w = pack.power_w
    data["power_w"] = None if power_w is None else round(power_w, 1)
    data["anchor_words"] = anchor_words(pack.since_anchor_s)
    data["full_charge_words"] = FULL_CHARGE_WORDS[pack.full_charge_requested]
    data["last_anchor_ts"] = (
        None if pack.since_anchor_s is None or pack.ts is None else pack.ts - pack.since_anchor_s
    )
    return data


FULL_CHARGE_WORDS: dict[bool | None, str] = {
    True: "requested: the SOC needs an anchor (full_charge.interval_days since the last)",
    False: "not requested",
    None: "unknown (no anchor known yet, or the SOC is not estimated)",
}
"""`PackState.full_charge_requested` in words, as the dashboard shows it."""


def anchor_words(since_anchor_s: float | None) -> str:
    """When the SOC was last set at a full charge or at empty, as people say it: "3 d 4 h ago",
    "12 min ago"; the unknown age is said as such, never as 0."""
    if since_anchor_s is None:
        return "unknown: none since commissioning, or a restart could not tell"
    minutes = int(since_anchor_s // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h ago"
    if hours:
        return f"{hours} h {mins} min ago"
    return f"{mins} min ago" if mins else "just now"


def flag_names(flags: int) -> list[str]:
    """The channel flags by name (`open_wire`, `out_of_range`, `sensor_fault`)."""
    return [str(f.name).lower() for f in ChannelFlag if f and flags & f]


def cells_view(cells: CellSnapshot) -> dict[str, Any]:
    """Every cell and temperature sensor at its own place, null where unknown, with its flags.
    The extremes and the spread are over the known cells (null when none is known)."""
    points = list(cells.cells())
    known = [(p.voltage_v, p.series_index) for p in points if p.voltage_v is not None]
    lo, hi = min(known, default=None), max(known, default=None)
    fresh = {m.module: m.fresh for m in cells.modules}
    sensors = {m: list(ts) for m, ts in groupby(cells.temperatures(), key=lambda t: t.module)}
    return {
        "cell_v": [p.voltage_v for p in points],
        "cell_flags": [flag_names(p.flags) for p in points],
        "balancing": [p.balancing for p in points],
        "module_of_cell": [p.module for p in points],
        "index_in_module": [p.index for p in points],
        "min_index": None if lo is None else lo[1],
        "max_index": None if hi is None else hi[1],
        "spread_mv": None if lo is None or hi is None else round(1000.0 * (hi[0] - lo[0]), 1),
        "modules": [
            {
                "module": m,
                "fresh": fresh[m],
                "temperatures": [
                    {
                        "sensor_index": t.sensor_index,
                        "index": t.index,
                        "temp_c": t.temp_c,
                        "flags": flag_names(t.flags),
                    }
                    for t in sensors.get(m, [])
                ],
            }
            for m in sorted(fresh)
        ],
    }
