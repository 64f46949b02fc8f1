"""The site controller's decisions (pure: no I/O, the clock passed in).

Per step, each string of the site gets a membership (`shared.messages.site.Membership`) with
its reason in words, and the mode its master should be in:

| string                                                 | membership | mode    |
|--------------------------------------------------------|------------|---------|
| no pack state within `stale_after_s`                   | stale      | standby |
| a fault, or contactors in fault                        | fault      | standby |
| voltage unknown                                        | out        | standby |
| taken out of service in the site configuration         | out        | standby |
| put in standby by an operator (held out)               | out        | standby |
| the site disconnected (SCADA's SetOp, an operator)     | out        | standby |
| contactors closed, mode working                        | joined     | working |
| contactors closed or opening, mode standby             | leaving    | standby |
| bus empty, the string chosen to define it              | waiting    | working |
| bus empty, another string                              | waiting    | standby |
| |V - V_bus| <= join_window_v                           | waiting    | working |
| |V - V_bus| > join_window_v                            | waiting    | standby |

A string that may join is set to working and, once working with its contactors open, sent
`contactors close` (its master precharges and closes; its own precharge checks |pack - DC link|
again). The masters of a site run with BMS_AUTO_CLOSE=false, so that none closes by itself at
start or after a reset: the controller alone decides when a string meets the bus (a master
that auto-closes still works, the close command is then not needed). Standby opens the
contactors and keeps them open. A string counts in the site's sums and limits only while
joined, so one that faults or goes stale leaves them at once, and the limits are recomputed
from the strings that remain (`limits.site_limits`). The bus voltage is the mean of the joined
strings'. With the bus empty, the string with the most others within the join window of its
voltage closes first (ties: configuration order) and defines the bus, once every string is
ready or `BUS_GATHER_S` has passed since the configuration (so that the first string to be
ready does not choose the bus alone); the others join as they come within the window. A
string asked to join (or precharging) keeps going until it is `ABORT_WINDOW_FACTOR` windows
away, so noise at the window's edge does not toggle its mode.
The operator's standby is respected: a string whose master goes from working to standby while
the controller last asked it to work (or never asked), and had not asked standby within
`MODE_ECHO_S` without seeing it, was put in standby by someone else, an operator; it is
held out ("out", the reason in words) and kept in standby, whatever its master reports later
(a master restarts in working mode), until the operator asks it to join again (`join`, the
site command `site_string` join). `hold` holds a string out on request
(the site command's out). A string with `in_service` false in the site configuration is out
the same way, until a configuration puts it in service again.
The whole site is disconnected and connected on request (the site command `site_operation`,
from SCADA's 802 `SetOp` or an operator): `disconnect` holds every string out the same way
(standby, the reason in words: "disconnected by SCADA"), strings added by a configuration
meanwhile too, and no string is let join, whoever asks, until `connect`; `connect` releases the
holds the disconnect made, and only those: a string an operator held out before (or while) the
site was disconnected, or one out of service in the configuration, stays out. The disconnect
and the holds survive a restart of the site controller: `holds` gives them for the service to
keep, `restore_holds` takes them back before the first step.
A command is sent when the master's reported state differs from the wanted one, again every
`RETRY_S` while it still differs. Join decisions use each string's voltage averaged over
`VOLTAGE_FILTER_S` (the pack voltage is measured to ±1 V, `PACK_VOLTAGE_ACCURACY_V`): one
noisy sample neither opens nor closes a string.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from services.site_controller.limits import (
    StringLimits,
    StringValues,
    bus_voltage,
    largest,
    requested,
    site_limits,
    summed,
    weighted_soc,
    weighted_soh,
)
from shared.config import SiteConfig
from shared.messages import PackState, SiteState, StringState
from shared.messages.events import EventKind, EventLevel
from shared.messages.site import Membership
from shared.messages.slave import SlaveMode

RETRY_S = 2.0
"""Send a command again while the master's state still differs this long after the last."""
BUS_GATHER_S = 10.0
"""With the bus empty after a (new) configuration, wait this long for every string to be ready
(reporting, healthy, its voltage known) before one is chosen to define it: a master starting
slower than the others must not leave them below a bus that only rises."""
MODE_ECHO_S = 10.0
"""A master's standby this soon after the controller asked it (and not yet seen since) answers
the controller, even when a later command asked working: its states come late."""
VOLTAGE_FILTER_S = 1.0
"""Time constant of the voltage average the join decisions use (10 pack states)."""
ABORT_WINDOW_FACTOR = 2.0
CODES_MAX = 64
LEVELS: tuple[tuple[str, EventLevel], ...] = (
    ("faults", "fault"),
    ("alarms", "alarm"),
    ("warnings", "warning"),
)
LEVEL_RANK: dict[EventLevel | None, int] = {
    None: 0,
    "info": 1,
    "warning": 2,
    "alarm": 3,
    "fault": 4,
}


CommandName = Literal["set_mode", "contactors"]


@dataclass(frozen=True)
class StringCommand:
    """A command to a string's master: `set_mode` with the mode, or `contactors` "close"."""

    system: str
    command: CommandName
    arg: str


@dataclass(frozen=True)
class SiteEvent:
    level: EventLevel
    kind: EventKind
    code: str
    text: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    state: SiteState
    commands: list[StringCommand]
    events: list[SiteEvent]
    changed: bool
    """A membership changed in this step (publish a summary at once)."""


@dataclass
class _String:
    system: str
    pack: PackState | None = None
    received_s: float | None = None
    capacity_ah: float | None = None
    membership: Membership = "stale"
    reason: str = "no pack state yet"
    topic: str = "none"
    """What kind of reason it is (a change of kind is an event, a new number is not)."""
    filtered_v: float | None = None
    """The pack voltage averaged over `VOLTAGE_FILTER_S`."""
    sent: tuple[CommandName, str] | None = None
    sent_s: float | None = None
    asked_mode: SlaveMode | None = None
    """The last mode the controller asked of the master (None: never asked)."""
    held: str | None = None
    """Why an operator holds the string out (None: not held): kept until `join`."""
    standby_asked_s: float | None = None
    """When the controller last asked standby and has not seen it since (None: nothing
    pending)."""
    by_disconnect: bool = False
    """`held` was set by the site's disconnect (`connect` releases it), not by an operator."""


@dataclass(frozen=True)
class _Decision:
    membership: Membership
    reason: str
    topic: str
    mode: SlaveMode | None
    """None: leave the master's mode alone (nothing known of it)."""


def _until(s: _String) -> str:
    """What releases a held string."""
    return "the site is connected again" if s.by_disconnect else "an operator asks it to join again"


def _volts(value: float) -> str:
    return f"{value:.1f} V"


class SiteCore:
    """The site's state machine; feed it pack states and capacities, call `step` at 10 Hz."""

    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        self._strings: dict[str, _String] = {s: _String(s) for s in config.system_ids}
        self._pending_events: list[SiteEvent] = []
        self._since_s: float | None = None
        """The first step with this configuration: the bus waits `BUS_GATHER_S` from it for
        every string to be ready."""
        self.disconnected: str | None = None
        """Why the site is disconnected (`disconnect`), or None while connected."""

    # --- inputs ---------------------------------------------------------------------------
    def apply_config(self, config: SiteConfig) -> list[str]:
        """A new site configuration: strings kept where they stay; returns the strings that
        are new (to subscribe to)."""
        new = [s for s in config.system_ids if s not in self._strings]
        self._strings = {s: self._strings.get(s) or _String(s) for s in config.system_ids}
        if self.disconnected is not None:  # a string added meanwhile stays out too
            for system in new:
                self._hold(self._strings[system], self.disconnected, by_disconnect=True)
        self.config = config
        self._since_s = None
        self._pending_events.append(
            SiteEvent(
                "info", "config", "site_config_applied",
                f"site configuration {config.config_version} applied: "
                f"strings {', '.join(config.system_ids)}",
                {"version": config.config_version, "strings": ",".join(config.system_ids)},
            )
        )  # fmt: skip
        return new

    def pack_state(self, system: str, state: PackState, now_s: float) -> bool:
        """A string's pack state; False when the string is not one of the site's."""
        s = self._strings.get(system)
        if s is None:
            return False
        before = s.pack.mode if s.pack is not None else None
        if state.mode == "standby" and before == "working" and not self._asked_standby(s, now_s):
            self._hold(s, "put in standby by an operator (not by the site controller)")
        if state.mode == "standby":
            s.standby_asked_s = None  # answered
        if state.voltage is None or s.filtered_v is None or s.received_s is None:
            s.filtered_v = state.voltage
        else:
            alpha = 1.0 - math.exp(-max(0.0, now_s - s.received_s) / VOLTAGE_FILTER_S)
            s.filtered_v += alpha * (state.voltage - s.filtered_v)
        s.pack, s.received_s = state, now_s
        return True

    @staticmethod
    def _asked_standby(s: _String, now_s: float) -> bool:
        """Whether a standby is the controller's own: asked last, or asked recently and not
        yet seen (a late state answering it after a newer working command)."""
        if s.asked_mode == "standby":
            return True
        return s.standby_asked_s is not None and now_s - s.standby_asked_s <= MODE_ECHO_S

    def hold(self, system: str, why: str = "held out by an operator") -> bool:
        """Hold a string out of the bus until `join` (an operator's request); False when it is
        not a string of the site."""
        s = self._strings.get(system)
        if s is None:
            return False
        if s.by_disconnect:  # now the operator's: `connect` no longer releases it
            s.held, s.by_disconnect = why, False
        self._hold(s, why)
        return True

    def join(self, system: str) -> bool:
        """An operator asks a held string to join again: it goes back to the controller's
        rules (it joins when healthy and within the window). False when not a string of the
        site; a string taken out in the configuration stays out, and every string while the
        site is disconnected (`connect` first)."""
        s = self._strings.get(system)
        if s is None:
            return False
        if s.held is not None and self.disconnected is None:
            s.held = None
            self._pending_events.append(SiteEvent(
                "info", "command", "site_string_released",
                f"{s.system}: an operator asks it to join again", {"system": s.system},
            ))  # fmt: skip
        return True

    def disconnect(self, why: str) -> list[str]:
        """Disconnect the site: every string not yet held is held out (standby) by the
        disconnect, `why` its reason, until `connect`. Returns the strings it holds (those an
        operator already holds keep the operator's reason and stay held after `connect`)."""
        if self.disconnected is None:
            self.disconnected = why
            self._pending_events.append(SiteEvent(
                "info", "command", "site_disconnected",
                f"site {self.config.site} {why}: every string goes to standby and stays out "
                "until the site is connected again", {"site": self.config.site},
            ))  # fmt: skip
        for s in self._strings.values():
            self._hold(s, self.disconnected, by_disconnect=True)
        return [s.system for s in self._strings.values() if s.by_disconnect]

    def connect(self, why: str) -> list[str]:
        """Connect the site again: the holds the disconnect made are released (those strings
        join by the controller's rules); returns them. An operator's holds and the
        configuration's out of service stay."""
        released = [s for s in self._strings.values() if s.by_disconnect]
        for s in released:
            s.held, s.by_disconnect = None, False
        if self.disconnected is not None:
            self.disconnected = None
            self._pending_events.append(SiteEvent(
                "info", "command", "site_connected",
                f"site {self.config.site} {why}: its strings join by the controller's rules "
                f"({len(released)} released)", {"site": self.config.site},
            ))  # fmt: skip
        return [s.system for s in released]

    def holds(self) -> dict[str, Any]:
        """What people decided (the disconnect, each hold and whose it is), for a restart not
        to forget: `restore_holds` takes it back."""
        return {
            "disconnected": self.disconnected,
            "held": {
                s.system: {"why": s.held, "by_disconnect": s.by_disconnect}
                for s in self._strings.values()
                if s.held is not None
            },
        }

    def restore_holds(self, data: Mapping[str, Any]) -> list[str]:
        """The holds kept before a restart (`holds`), before the first step: a site that was
        disconnected stays disconnected, a held string stays out, whatever its master reports
        (no event: nothing changed). Holds of strings no longer in the site are dropped.
        ValueError on data of another shape (nothing restored)."""
        if not isinstance(data, Mapping):
            raise ValueError("kept holds: not a map")
        disconnected = data.get("disconnected")
        held = data.get("held")
        if not (disconnected is None or isinstance(disconnected, str)) or not isinstance(
            held, dict
        ):
            raise ValueError("kept holds: 'disconnected' must be text or null, 'held' a map")
        parsed: dict[str, tuple[str, bool]] = {}
        for system, entry in held.items():
            why = entry.get("why") if isinstance(entry, dict) else None
            if not isinstance(why, str):
                raise ValueError(f"kept hold of {system!r}: 'why' must be text")
            parsed[system] = (why, bool(entry.get("by_disconnect")))
        self.disconnected = disconnected
        restored = []
        for system, (why, by_disconnect) in parsed.items():
            s = self._strings.get(system)
            if s is not None:
                s.held, s.by_disconnect = why, by_disconnect
                restored.append(system)
        if disconnected is not None:  # a string added while the controller was down
            for s in self._strings.values():
                if s.held is None:
                    s.held, s.by_disconnect = disconnected, True
                    restored.append(s.system)
        return restored

    def _hold(self, s: _String, why: str, *, by_disconnect: bool = False) -> None:
        if s.held is not None:
            return
        s.held, s.by_disconnect = why, by_disconnect
        self._pending_events.append(SiteEvent(
            "info", "command", "site_string_held", f"{s.system}: {why}; stays out until "
            f"{_until(s)}", {"system": s.system},
        ))  # fmt: skip

    def held(self) -> dict[str, str]:
        """The strings an operator holds out, with the reason."""
        return {s.system: s.held for s in self._strings.values() if s.held is not None}

    def capacity(self, system: str, capacity_ah: float) -> None:
        s = self._strings.get(system)
        if s is not None:
            s.capacity_ah = capacity_ah

    def command_result(
        self, system: str, command: StringCommand, accepted: bool, reason: str
    ) -> None:
        """The master's reply to a command (no reply: `accepted` False, "no reply")."""
        s = self._strings.get(system)
        if s is None or accepted:
            return
        s.sent_s = None  # ask again at the next step that still wants it
        self._pending_events.append(
            SiteEvent("warning", "command", "site_command_failed",
                      f"{system}: {command.command} {command.arg} failed: {reason}",
                      {"system": system, "command": command.command, "arg": command.arg})
        )  # fmt: skip

    # --- the step -------------------------------------------------------------------------
    def step(self, now_s: float) -> Step:
        cfg = self.config
        strings = list(self._strings.values())
        # why each string cannot be on the bus: its health first, then a person's decision
        health = {s.system: self._health(s, now_s) or self._out(s) for s in strings}
        joined = [
            s for s in strings
            if health[s.system] is None and s.pack is not None
            and s.pack.contactors == "closed" and s.pack.mode == "working"
        ]  # fmt: skip
        joined_values = [self._values(s) for s in joined]
        bus_v = bus_voltage([self._values(s, filtered=True) for s in joined])
        if self._since_s is None:
            self._since_s = now_s
        gathering = any(health[s.system] is not None for s in strings if self._out(s) is None) and (
            now_s - self._since_s < BUS_GATHER_S
        )
        definer = self._definer(strings, health) if bus_v is None and not gathering else None
        events = self._pending_events
        self._pending_events = []
        commands: list[StringCommand] = []
        changed = False
        was_joined = {s.system for s in strings if s.membership == "joined"}
        decisions = {
            s.system: health[s.system] or self._placement(s, bus_v, definer, joined)
            for s in strings
        }
        # the strings on the bus first: their events (the bus defined) come before the
        # events of the strings measured against it
        for s in sorted(strings, key=lambda s: decisions[s.system].membership != "joined"):
            changed |= self._transition(s, decisions[s.system], bus_v, was_joined, events)
        for s in strings:
            command = self._command(s, decisions[s.system], now_s)
            if command is not None:
                commands.append(command)
        limits = site_limits(
            [StringLimits(s.system, s.pack.limits, cfg.resistance_ohm(s.system), s.pack.current)
             for s in joined if s.pack is not None],
            cfg.current_sharing_factor,
        )  # fmt: skip
        codes = {name: self._codes(strings, name) for name, _ in LEVELS}
        state = SiteState(
            site=cfg.site,
            soc=weighted_soc(joined_values),
            soh=weighted_soh(joined_values),
            voltage_v=bus_voltage(joined_values),
            current_a=summed([v.current_a for v in joined_values]),
            power_w=summed([s.pack.power_w if s.pack else None for s in joined]),
            energy_in_wh=summed([s.pack.energy_in_wh if s.pack else None for s in strings]),
            energy_out_wh=summed([s.pack.energy_out_wh if s.pack else None for s in strings]),
            soc_std=largest([s.pack.soc_std if s.pack else None for s in joined]),
            since_anchor_s=largest([s.pack.since_anchor_s if s.pack else None for s in joined]),
            full_charge_requested=requested(
                [s.pack.full_charge_requested if s.pack else None for s in joined]
            ),
            limits=limits,
            faults=codes["faults"],
            alarms=codes["alarms"],
            warnings=codes["warnings"],
            strings_total=len(strings),
            strings_joined=len(joined),
            operation="connect" if self.disconnected is None else "disconnect",
            config_version=cfg.config_version,
            strings=[self._string_state(s, now_s) for s in strings],
        )
        return Step(state, commands, events, changed)

    # --- decisions ------------------------------------------------------------------------
    def _health(self, s: _String, now_s: float) -> _Decision | None:
        """Why the string cannot be on the bus, or None when it may."""
        p = s.pack
        if p is None or s.received_s is None:
            return _Decision("stale", "no pack state yet", "stale", None)
        age_s = now_s - s.received_s
        if age_s > self.config.stale_after_s:
            return _Decision(
                "stale", f"no pack state for {age_s:.1f} s (limit "
                f"{self.config.stale_after_s:g} s)", "stale", "standby",
            )  # fmt: skip
        if p.faults or p.contactors == "fault":
            what = ", ".join(p.faults[:4]) if p.faults else "contactors in fault"
            return _Decision("fault", f"fault: {what}", "fault", "standby")
        if p.voltage is None:
            return _Decision("out", "its voltage is unknown", "out", "standby")
        return None

    def _out(self, s: _String) -> _Decision | None:
        """Out by a person's decision: taken out in the configuration, or held by an operator
        (standby: its contactors open and stay open)."""
        if not self.config.in_service(s.system):
            return _Decision(
                "out", "taken out of service in the site configuration", "out_of_service",
                "standby",
            )  # fmt: skip
        if s.held is not None:
            return _Decision("out", f"{s.held}: stays out until {_until(s)}", "held", "standby")
        return None

    def _definer(self, strings: list[_String], health: dict[str, _Decision | None]) -> str | None:
        """With the bus empty: the string that closes first (one already precharging, else the
        one with the most others within the window of its voltage, then configuration
        order)."""
        ready = [s for s in strings if health[s.system] is None and s.pack is not None]
        for s in ready:
            if s.pack is not None and s.pack.contactors == "precharge":
                return s.system
        window = self.config.join_window_v

        def near(s: _String) -> int:
            v = s.filtered_v
            return sum(
                1 for o in ready
                if o.filtered_v is not None and v is not None and abs(o.filtered_v - v) <= window
            )  # fmt: skip

        best = max(ready, key=near, default=None)  # max keeps the first of equals
        return best.system if best else None

    def _placement(
        self, s: _String, bus_v: float | None, definer: str | None, joined: list[_String]
    ) -> _Decision:
        p, v = s.pack, s.filtered_v
        assert p is not None and v is not None  # healthy: a voltage is known
        if s in joined:
            return _Decision("joined", "on the bus", "joined", "working")
        if p.contactors in ("closed", "opening"):
            return _Decision("leaving", "standing by: contactors opening", "leaving", "standby")
        # once asked to join, it keeps going until ABORT_WINDOW_FACTOR windows away
        closing = p.contactors == "precharge" or s.topic in ("closing", "defines")
        if bus_v is None:
            if s.system == definer:
                why = "precharging: defines the bus" if closing else "closes first, defines the bus"
                return _Decision("waiting", why, "defines", "working")
            why = (
                "waits for the first string to define the bus"
                if definer is not None
                else "waits for every string to be ready before one defines the bus"
            )
            return _Decision("waiting", why, "first", "standby")
        diff_v = v - bus_v
        window = self.config.join_window_v * (ABORT_WINDOW_FACTOR if closing else 1.0)
        if abs(diff_v) <= window:
            why = "precharging onto the bus" if closing else "closing"
            return _Decision(
                "waiting", f"{why}: within {_volts(abs(diff_v))} of the bus", "closing", "working"
            )
        side, goal = ("above", "rise") if diff_v > 0 else ("below", "fall")
        return _Decision(
            "waiting",
            f"{_volts(abs(diff_v))} {side} the bus, waits for the bus to {goal}",
            "window",
            "standby",
        )

    def _transition(
        self,
        s: _String,
        d: _Decision,
        bus_v: float | None,
        was_joined: set[str],
        events: list[SiteEvent],
    ) -> bool:
        """Record the decision; events for a change of membership or of reason kind."""
        before, before_topic = s.membership, s.topic
        s.membership, s.reason, s.topic = d.membership, d.reason, d.topic
        if (before, before_topic) == (d.membership, d.topic):
            return False
        v = s.filtered_v
        values = {"system": s.system, "voltage_v": v, "bus_v": bus_v}
        if d.membership == "joined":
            if not (was_joined - {s.system}):  # nothing on the bus before it (this step too)
                events.append(SiteEvent(
                    "info", "info", "site_bus_defined",
                    f"{s.system} defines the bus at {_volts(v or 0.0)}",
                    {"system": s.system, "voltage_v": v},
                ))  # fmt: skip
            was_joined.add(s.system)
            events.append(
                SiteEvent(
                    "info", "info", "site_string_joined", f"{s.system} joined the bus", values
                )
            )
        elif before == "joined":
            bad = d.membership in ("fault", "stale")
            events.append(SiteEvent(
                "warning" if bad else "info", "info", "site_string_left",
                f"{s.system} left the bus: {d.reason}", {"system": s.system},
            ))  # fmt: skip
        if d.topic in ("window", "first"):
            events.append(
                SiteEvent("info", "info", "site_string_waiting", f"{s.system}: {d.reason}", values)
            )
        elif d.topic in ("closing", "defines") and before_topic not in ("closing", "defines"):
            events.append(SiteEvent(
                "info", "command", "site_string_joining", f"{s.system}: {d.reason}", values
            ))  # fmt: skip
        return before != d.membership

    def _command(self, s: _String, d: _Decision, now_s: float) -> StringCommand | None:
        """What the master still needs to be told: its mode first, then (to join) close."""
        p = s.pack
        want: tuple[CommandName, str] | None = None
        recent = s.sent_s is not None and now_s - s.sent_s < RETRY_S
        other_mode_sent = recent and s.sent is not None and s.sent[0] == "set_mode"
        if d.mode is not None and p is not None:
            if p.mode != d.mode or (other_mode_sent and s.sent != ("set_mode", d.mode)):
                # (a pack state older than the other mode just sent says nothing of now)
                want = ("set_mode", d.mode)
            elif d.mode == "working" and d.membership != "joined" and p.contactors == "standby":
                want = ("contactors", "close")
        if want is None:
            s.sent = None  # done: a later difference is new
            return None
        if s.sent == want and s.sent_s is not None and now_s - s.sent_s < RETRY_S:
            return None
        s.sent, s.sent_s = want, now_s
        if want[0] == "set_mode":
            s.asked_mode = d.mode
            if d.mode == "standby":
                s.standby_asked_s = now_s
        return StringCommand(s.system, *want)

    # --- output ---------------------------------------------------------------------------
    def _values(self, s: _String, *, filtered: bool = False) -> StringValues:
        p = s.pack
        if p is None:
            return StringValues(None, None, None, None, s.capacity_ah)
        v = s.filtered_v if filtered else p.voltage
        return StringValues(p.soc, p.soh, v, p.current, s.capacity_ah)

    @staticmethod
    def _codes(strings: list[_String], name: str) -> list[str]:
        seen: dict[str, None] = {}
        for s in strings:
            if s.pack is not None and s.membership != "stale":  # a silent string's are unknown
                seen.update(dict.fromkeys(getattr(s.pack, name)))
        return list(seen)[:CODES_MAX]

    def _string_state(self, s: _String, now_s: float) -> StringState:
        p = s.pack
        level, code = worst(p)
        return StringState(
            system=s.system,
            membership=s.membership,
            reason=s.reason[:200],
            soc=p.soc if p else None,
            soh=p.soh if p else None,
            voltage_v=p.voltage if p else None,
            current_a=p.current if p else None,
            capacity_ah=s.capacity_ah,
            resistance_ohm=self.config.resistance_ohm(s.system),
            limits=p.limits if p else None,
            contactors=p.contactors if p else None,
            mode=p.mode if p else None,
            age_s=None if s.received_s is None else max(0.0, now_s - s.received_s),
            worst_level=level,
            worst_code=code,
        )


def worst(p: PackState | None) -> tuple[EventLevel | None, str | None]:
    """The highest active level of a pack state and its first code."""
    if p is None:
        return None, None
    for name, level in LEVELS:
        codes: list[str] = getattr(p, name)
        if codes:
            return level, codes[0]
    return None, None


def worst_of(state: SiteState) -> tuple[EventLevel | None, str | None]:
    """The highest level active anywhere in the site, and its code."""
    best: tuple[EventLevel | None, str | None] = (None, None)
    for s in state.strings:
        if LEVEL_RANK[s.worst_level] > LEVEL_RANK[best[0]]:
            best = (s.worst_level, s.worst_code)
    return best
