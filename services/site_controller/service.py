"""The site controller's adapter: the bus in, `SiteCore` in the middle, the bus out.

Reads the retained `site/config` under the site id (BMS_SYSTEM); for each string it names,
subscribes to its `pack/state` (live ones only: a retained state says nothing of now) and its
`config` (the capacity), and commands its master (`set_mode`, `contactors` close) under that
string's id.
Serves the operators' `site_string` command under the site id (hold a string out, or ask a
held one to join again), and `site_operation` (SCADA through the Modbus gateway, or an
operator: disconnect the whole site, or connect it again). Publishes `site/state` every
`state_period_s`, `site/summary` every `summary_period_s` and at once on a change, and the
site's events on `events/site_controller`.
The events are kept in SQLite first (`shared.event_log`, as the master's: `seq` is the row id,
`seq_epoch` the log's creation) and served with `events_query` under the site id; the log is
pruned to `events_retention_days` and `events_max_rows` at start and hourly.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from services.site_controller.core import SiteCore, Step, StringCommand, worst_of
from services.site_controller.settings import SiteControllerSettings
from shared.bus import BusCore, Delivery
from shared.codec import PayloadError
from shared.commands import CommandClient, CommandOutcome, CommandServer
from shared.event_log import EventLog, EventQueries
from shared.event_store import Store
from shared.log_limit import LimitedLog
from shared.messages import (
    CommandArgs,
    CommandReply,
    ConfigAck,
    ConfigMessage,
    ContactorsArgs,
    Event,
    PackState,
    SetModeArgs,
    SiteConfigMessage,
    SiteOperationArgs,
    SiteState,
    SiteStringArgs,
    SiteSummary,
)
from shared.topics import (
    CONFIG,
    CONFIG_ACK,
    EVENTS,
    PACK_STATE,
    SITE_CONFIG,
    SITE_STATE,
    SITE_SUMMARY,
)

log = logging.getLogger("site_controller")
limited = LimitedLog(log, every_s=10.0)
PRUNE_PERIOD_S = 3600.0
HOLDS_KEY = "site_holds"
"""Where the store keeps the disconnect and the holds (`SiteCore.holds`)."""


class SiteService:
    def __init__(
        self,
        bus: BusCore,
        settings: SiteControllerSettings,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        store: Store | None = None,
    ) -> None:
        """`store`: the event log's SQLite file (None: one in memory, kept for this run)."""
        self.bus = bus
        self.settings = settings
        self.monotonic = monotonic
        self.core: SiteCore | None = None
        self.clients: dict[str, CommandClient] = {}
        self.last: SiteState | None = None
        self._summary_key: tuple[object, ...] | None = None
        self._summary_s: float | None = None
        self.wall = wall
        self.store = store if store is not None else Store(":memory:")
        self.events = EventLog(self.store, bus, wall)
        self.queries = EventQueries(self.events, bus, monotonic)
        self._prune_s: float | None = None
        self._kept_holds: dict[str, Any] | None = None
        self.prune_events()
        bus.subscribe(SITE_CONFIG, self._on_config, on_invalid=self._config_invalid)
        self.server = CommandServer(
            bus,
            {
                "site_string": self._keeping(self._site_string),
                "site_operation": self._keeping(self._site_operation),
                "events_query": self.queries.answer,
            },
            admit={"events_query": self.queries.admit},
        )

    # --- inputs ---------------------------------------------------------------------------
    def _on_config(self, d: Delivery[SiteConfigMessage]) -> None:
        config = d.message.config
        if config.site != self.bus.system:
            self._refuse(config.config_version, f"site {config.site!r} is not this site's id "
                         f"{self.bus.system!r} (BMS_SYSTEM)")  # fmt: skip
            return
        if self.core is None:
            self.core = SiteCore(config)
            self._restore_holds()
            new = list(config.system_ids)
            self.core.apply_config(config)  # its event
        else:
            new = self.core.apply_config(config)
        for system in new:
            self.bus.subscribe(PACK_STATE, self._on_pack, system=system)
            self.bus.subscribe(CONFIG, self._on_string_config, system=system)
            self.clients[system] = CommandClient(self.bus, system=system)
        self.bus.publish(
            CONFIG_ACK,
            ConfigAck(service=self.bus.service, config_version=config.config_version,
                      accepted=True),
            service=self.bus.service,
        )  # fmt: skip
        log.info("site %s: strings %s", config.site, ", ".join(config.system_ids))

    def _config_invalid(self, topic: str, _raw: bytes, err: PayloadError) -> None:
        self.bus.counters["site_config_refused"] += 1
        self._refuse(0, str(err))

    def _refuse(self, version: int, why: str) -> None:
        limited.warning("site configuration refused: %s", why)
        self.bus.publish(
            CONFIG_ACK,
            ConfigAck(service=self.bus.service, config_version=version, accepted=False,
                      errors=[why[:500]]),
            service=self.bus.service,
        )  # fmt: skip
        self._event("warning", "config", "site_config_refused",
                    f"site configuration refused: {why}"[:500], {})  # fmt: skip

    def _keeping(
        self, handler: Callable[[CommandArgs], CommandOutcome]
    ) -> Callable[[CommandArgs], CommandOutcome]:
        """The handler, then its holds kept (before the reply goes out)."""

        def run(args: CommandArgs) -> CommandOutcome:
            outcome = handler(args)
            self._keep_holds()
            return outcome

        return run

    def _keep_holds(self) -> None:
        """Store the disconnect and the holds when they changed: a restart must not let a
        disconnected site or a held string join again."""
        if self.core is None:
            return
        holds = self.core.holds()
        if holds == self._kept_holds:
            return
        try:
            self.store.put(HOLDS_KEY, holds, ts=self.wall())
        except sqlite3.Error as exc:
            self.bus.counters["holds_store_errors"] += 1
            limited.log(logging.ERROR, "holds", "cannot keep the site's holds: %s", exc)
            return
        self._kept_holds = holds

    def _restore_holds(self) -> None:
        """The holds kept before a restart, into the new core (before its first step)."""
        assert self.core is not None
        try:
            kept = self.store.get(HOLDS_KEY)
        except sqlite3.Error as exc:
            self.bus.counters["holds_store_errors"] += 1
            log.error("cannot read the site's kept holds: %s", exc)
            return
        if kept is None:
            return
        try:
            restored = self.core.restore_holds(kept)
        except ValueError as exc:
            self.bus.counters["holds_restore_refused"] += 1
            log.error("kept holds not restored: %s", exc)
            return
        self._kept_holds = self.core.holds()
        if restored:
            log.info("kept from before the restart: %s held out (%s)", ", ".join(restored),
                     self.core.disconnected or "the site is connected")  # fmt: skip

    def _site_string(self, args: CommandArgs) -> CommandOutcome:
        """An operator's `site_string`: out holds the string out (standby) until join."""
        assert isinstance(args, SiteStringArgs)
        if self.core is None:
            return CommandOutcome(False, "no site configuration yet")
        if args.system not in self.core.config.system_ids:
            return CommandOutcome(False, f"{args.system!r} is not a string of site "
                                  f"{self.core.config.site!r}")  # fmt: skip
        if args.action == "out":
            self.core.hold(args.system, "held out by an operator")
            return CommandOutcome(True, result={"held": True})
        if self.core.disconnected is not None:
            return CommandOutcome(False, f"the site is {self.core.disconnected}: connect it "
                                  "first (site_operation connect)")  # fmt: skip
        self.core.join(args.system)
        if not self.core.config.in_service(args.system):
            return CommandOutcome(
                True, "taken out of service in the site configuration: it stays out until a "
                "configuration puts it in service", {"held": False},
            )  # fmt: skip
        return CommandOutcome(True, result={"held": False})

    def _site_operation(self, args: CommandArgs) -> CommandOutcome:
        """SCADA's or an operator's `site_operation`: disconnect holds every string out
        (standby) until connect; connect releases what the disconnect held."""
        assert isinstance(args, SiteOperationArgs)
        if self.core is None:
            return CommandOutcome(False, "no site configuration yet")
        by = "SCADA" if args.by == "scada" else "an operator"
        if args.action == "disconnect":
            held = self.core.disconnect(f"disconnected by {by}")
            return CommandOutcome(True, result={"operation": "disconnect", "held": len(held)})
        released = self.core.connect(f"connected by {by}")
        return CommandOutcome(True, result={"operation": "connect", "released": len(released)})

    def _on_pack(self, d: Delivery[PackState]) -> None:
        if d.retained or self.core is None:
            return
        self.core.pack_state(d.system, d.message, self.monotonic())

    def _on_string_config(self, d: Delivery[ConfigMessage]) -> None:
        if self.core is not None:
            self.core.capacity(d.system, d.message.config.cell_capacity_ah)

    # --- the step -------------------------------------------------------------------------
    def tick(self) -> Step | None:
        """One step: commands, events, the state, and the summary when due."""
        if self.core is None:
            return None
        now = self.monotonic()
        if self._prune_s is not None and now - self._prune_s >= PRUNE_PERIOD_S:
            self.prune_events()
        for client in self.clients.values():
            client.expire()
        step = self.core.step(now)
        self._keep_holds()  # an operator's standby seen in a pack state: kept before commands
        for c in step.commands:
            self._send(c)
        for e in step.events:
            self._event(e.level, e.kind, e.code, e.text, e.values)
        self.bus.publish(SITE_STATE, step.state)
        self.last = step.state
        self._maybe_summary(step.state, now, online=True)
        return step

    def _send(self, command: StringCommand) -> None:
        client = self.clients.get(command.system)
        if client is None:
            return

        def replied(reply: CommandReply | None) -> None:
            if self.core is None:
                return
            if reply is None:
                self.core.command_result(command.system, command, False, "no reply in time")
            else:
                ok = reply.status == "accepted"
                self.core.command_result(command.system, command, ok, reply.reason)

        args: CommandArgs = (
            SetModeArgs(mode=command.arg)  # type: ignore[arg-type]  # a SlaveMode by the core
            if command.command == "set_mode"
            else ContactorsArgs(action="close")
        )
        client.send(command.command, args, ttl_s=self.settings.command_ttl_s, on_reply=replied)

    def _event(
        self, level: str, kind: str, code: str, text: str, values: dict[str, object]
    ) -> None:
        """Stored, then published with its row id as `seq` (`EventLog.emit`); a log that
        cannot be written still publishes (unsequenced: the bus counts it), counted."""
        try:
            self.events.emit(level, kind, code, text, **values)  # type: ignore[arg-type]
        except sqlite3.Error as exc:
            self.bus.counters["event_log_errors"] += 1
            limited.log(logging.ERROR, "event_log", "cannot store the event %s: %s", code, exc)
            event = Event.model_validate(
                {"level": level, "kind": kind, "code": code, "text": text[:500], "values": values}
            )
            self.bus.publish(EVENTS, event)

    def prune_events(self) -> None:
        """Forget events beyond the retention (age and rows); a failure is counted, logged."""
        self._prune_s = self.monotonic()
        days, rows = self.settings.events_retention_days, self.settings.events_max_rows
        try:
            gone = self.store.prune_events(before_ts=self.wall() - days * 86400.0, keep_rows=rows)
        except sqlite3.Error as exc:
            self.bus.counters["event_log_errors"] += 1
            limited.log(logging.ERROR, "event_log_prune", "cannot prune the event log: %s", exc)
            return
        if gone:
            self.bus.counters["events_pruned"] += gone
            log.info("forgot %d events beyond %g days or %d rows", gone, days, rows)

    def _maybe_summary(self, state: SiteState, now: float, *, online: bool) -> None:
        level, code = worst_of(state)
        key = (online, state.strings_total, state.strings_joined, level, code)
        due = self._summary_s is None or now - self._summary_s >= self.settings.summary_period_s
        if not due and key == self._summary_key:
            return
        self._summary_key, self._summary_s = key, now
        self.bus.publish(
            SITE_SUMMARY,
            SiteSummary(
                seq_epoch=self.bus.started_ts, site=state.site, online=online,
                strings_total=state.strings_total, strings_joined=state.strings_joined,
                soc=state.soc, power_w=state.power_w, worst_level=level, worst_code=code,
            ),
        )  # fmt: skip

    # --- the loop -------------------------------------------------------------------------
    def run(self, should_stop: Callable[[], bool]) -> None:
        period = self.settings.state_period_s
        next_s = self.monotonic()
        while not should_stop():
            self.bus.process(max(0.0, next_s - self.monotonic()), budget_s=0.05)
            if self.monotonic() >= next_s:
                self.tick()
                next_s += period
                if next_s < self.monotonic():  # fell behind (a slow machine): no burst
                    next_s = self.monotonic() + period

    def stop(self) -> None:
        """A clean stop says offline in one last summary."""
        if self.last is not None:
            self._summary_key = None
            self._maybe_summary(self.last, self.monotonic(), online=False)
