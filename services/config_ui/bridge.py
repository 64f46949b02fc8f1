"""The UI's edge to the bus: feeds the live view, publishes configurations, sends commands."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from services.config_ui.cell_history import CellHistoryStore, MinuteAccumulator, ModuleMinute
from services.config_ui.history_store import PERSIST_PERIOD_S, HistoryStore
from services.config_ui.live import LiveView
from services.config_ui.site_config import SiteAcks
from services.config_ui.site_live import RECENT_SITE_EVENTS, SiteBackfill, SiteLive
from shared.bus import BusCore, Delivery
from shared.commands import CommandClient
from shared.config import SiteConfig, SystemConfig
from shared.event_feed import EventFeed
from shared.log_limit import LimitedLog
from shared.messages import (
    CellSnapshot,
    CommandArgs,
    CommandReply,
    ConfigMessage,
    Event,
    EventsQueryArgs,
    SiteConfigMessage,
    SiteOperationArgs,
    SiteStringArgs,
)
from shared.topics import (
    CONFIG,
    CONFIG_ACK,
    EVENTS,
    PACK_CELLS,
    PACK_STATE,
    SERVICE_STATUS,
    SITE_CONFIG,
    SITE_STATE,
)

log = logging.getLogger("config_ui.bridge")
limited = LimitedLog(log)
STATUS_PERIOD_S = 10.0
PRUNE_PERIOD_S = 3600.0


class BusBridge:
    def __init__(
        self,
        bus: BusCore,
        live: LiveView,
        *,
        command_timeout_s: float = 5.0,
        history: HistoryStore | None = None,
        cell_history: CellHistoryStore | None = None,
        wall: Callable[[], float] = time.time,
        site: SiteLive | None = None,
    ) -> None:
        self.bus = bus
        self.live = live
        self.site = site
        self.history = history
        self.cell_history = cell_history
        self.minutes = MinuteAccumulator()
        self.wall = wall
        self.command_timeout_s = command_timeout_s
        self.commands = CommandClient(bus)
        self.site_commands = None if site is None else CommandClient(bus, system=site.site)
        """`site_string`, `site_operation` and `events_query` to the site controller, under the
        site id."""
        self.site_backfill = SiteBackfill()
        """When to ask the site controller's log for the site's events."""
        self.config_seen = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        bus.subscribe(PACK_STATE, lambda d: live.on_pack(d.message))
        bus.subscribe(PACK_CELLS, self._on_cells)
        bus.subscribe(SERVICE_STATUS, lambda d: live.on_status(d.message))
        bus.subscribe(CONFIG_ACK, lambda d: live.on_ack(d.message))
        # events once each, source as the topic says, the master's gaps fetched from its log
        self.events_feed = EventFeed(bus, live.on_event, commands=self.commands)
        bus.subscribe(CONFIG, self._on_config)
        if site is not None:  # the site's own topics, under the site id
            bus.subscribe(SITE_CONFIG, lambda d: site.on_config(d.message.config), system=site.site)
            bus.subscribe(SITE_STATE, lambda d: site.on_state(d.message), system=site.site)
            bus.subscribe(EVENTS, self._on_site_event, system=site.site)

    def _on_site_event(self, d: Delivery[Event]) -> None:
        assert self.site is not None
        if self.site.on_event(d.message):  # a gap: the controller's log has what was missed
            self.bus.counters["site_events_gaps"] += 1
            self.site_backfill.want()

    def backfill_site(self) -> None:
        """Ask the site controller's log for the site's newest events when `SiteBackfill`
        says so (at start, after a reconnection or a gap, again after a failure)."""
        if self.site_commands is None:
            return
        if self.site_backfill.due(self.bus.connected, time.monotonic()):
            self.site_commands.send(
                "events_query",
                EventsQueryArgs(limit=RECENT_SITE_EVENTS),
                ttl_s=self.command_timeout_s,
                on_reply=self._site_backfilled,
            )

    def _site_backfilled(self, reply: CommandReply | None) -> None:
        assert self.site is not None
        now = time.monotonic()
        rows = None if reply is None else reply.result.get("events")
        if reply is None or reply.status != "accepted" or not isinstance(rows, list):
            self.bus.counters["site_events_backfill_failed"] += 1
            why = "no reply" if reply is None else reply.reason or "no rows"
            limited.warning("site_backfill", "the site controller's event log: %s", why)
            retry = None if reply is None else reply.result.get("retry_after_s")
            self.site_backfill.answered(
                False, now, float(retry) if isinstance(retry, int | float) else None
            )
            return
        epoch = reply.result.get("seq_epoch")
        new, bad = self.site.merge_logged(
            rows, float(epoch) if isinstance(epoch, int | float) else None
        )
        self.bus.counters["site_events_backfilled"] += new
        self.bus.counters["site_events_backfill_bad_rows"] += bad
        self.site_backfill.answered(True, now)

    def _on_cells(self, d: Delivery[CellSnapshot]) -> None:
        self.live.on_cells(d.message)
        if self.cell_history is not None:
            # the snapshot's own time (the master's), so a backlog lands in its minutes
            at_s = d.message.ts if d.message.ts is not None else self.wall()
            self.store_minutes(self.minutes.add(d.message, at_s))

    def store_minutes(self, minutes: list[ModuleMinute]) -> None:
        """Completed minutes to SQLite; a failure is logged and counted, never fatal."""
        if not minutes or self.cell_history is None:
            return
        try:
            self.cell_history.add(minutes)
        except sqlite3.Error as exc:
            self.bus.counters["cell_history_errors"] += 1
            log.error("cannot store the cell history: %s", exc)

    def _on_config(self, d: Any) -> None:
        self.live.on_config(d.message.config)
        self.config_seen.set()

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Run the bus handlers in a thread of their own (the web server owns the main one)."""
        self._thread = threading.Thread(target=self._loop, name="bus", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        last_status_s = last_persist_s = time.monotonic()
        last_prune_s = 0.0
        while not self._stop.is_set():
            self.bus.process(timeout_s=0.1)
            self.commands.expire()
            if self.site_commands is not None:
                self.site_commands.expire()
                self.backfill_site()
            self.events_feed.poll()
            now = time.monotonic()
            if now - last_status_s >= STATUS_PERIOD_S:
                last_status_s = now
                self.bus.publish_status()  # with the counters: refused requests, logins, ...
            if self.history is not None and now - last_persist_s >= PERSIST_PERIOD_S:
                last_persist_s = now
                prune = now - last_prune_s >= PRUNE_PERIOD_S
                if prune:
                    last_prune_s = now
                self.persist_history(prune=prune)

    def persist_history(self, *, prune: bool = False) -> None:
        """Store the newest history point, once (its time is the key); a SQLite failure is
        logged and counted, never fatal."""
        assert self.history is not None
        point = self.live.latest_point()
        try:
            if point is not None:
                self.history.add(point)
            if prune:
                self.history.prune(time.time())
                if self.cell_history is not None:
                    self.cell_history.prune(time.time())
        except sqlite3.Error as exc:
            self.bus.counters["history_errors"] += 1
            log.error("cannot store the SOC and voltage history: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self.store_minutes(self.minutes.flush())  # the minute in progress, not lost

    # --- actions ----------------------------------------------------------------------------
    def watch_site_config(self, site: str, acks: SiteAcks) -> None:
        """The site controller's acknowledgements of the site configuration (under the site id)."""
        self.bus.subscribe(CONFIG_ACK, lambda d: acks.on_ack(d.message), system=site)

    def publish_site_config(self, config: SiteConfig) -> None:
        """Retained under the site id, where the site controller reads it."""
        self.bus.publish(SITE_CONFIG, SiteConfigMessage(config=config), system=config.site)
        log.info("published site configuration %d of %s", config.config_version, config.site)

    def publish_config(self, config: SystemConfig) -> None:
        self.bus.publish(CONFIG, ConfigMessage(config=config))
        log.info("published configuration %d", config.config_version)

    async def command(self, name: str, args: CommandArgs | None = None) -> CommandReply | None:
        """The master's reply, or None when none came in time."""
        return await self.commands.request_async(name, args, ttl_s=self.command_timeout_s)

    async def site_command(
        self, name: str, args: SiteStringArgs | SiteOperationArgs
    ) -> CommandReply | None:
        """An operator's site command (`site_string`, `site_operation`) to the site
        controller; None without a reply in time."""
        assert self.site_commands is not None
        return await self.site_commands.request_async(name, args, ttl_s=self.command_timeout_s)

    async def events(self, query: EventsQueryArgs) -> list[dict[str, Any]] | CommandReply | None:
        """The events; the master's reply when it refused the query; None without a reply."""
        reply = await self.command("events_query", query)
        if reply is None or reply.status != "accepted":
            return reply
        events = reply.result.get("events", [])
        return [e for e in events if isinstance(e, dict)]
