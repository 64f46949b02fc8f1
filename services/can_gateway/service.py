"""The CAN gateway edge: the profiles' frames on the bus, received frames to the profiles,
keep-alive supervision, the channel reopened when the configuration moves it.

Profiles are found through the registry (`registry.py`) and used only through the `Profile`
protocol (`profile.py`), so adding one never touches this loop. Each cyclic frame id is sent
once per period by python-can's cyclic tasks, and a new pack state replaces the data of every
task in one pass (`modify_data`), so an inverter never sees a frame whose fields come from two
different states. A frame that cannot carry its values is withheld, counted and logged (at most
once a minute per frame and signal), never clamped.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

import can

from services.can_gateway.channel import BusParams, ChannelOpener
from services.can_gateway.codec import Frame, FrameEncodeError, FrameRangeError
from services.can_gateway.profile import (
    Handling,
    MasterRequest,
    PackView,
    Profile,
    ProtocolOptions,
    is_extended,
)
from services.can_gateway.registry import SITE_PROFILES, UnknownProfileError, load_profile
from services.can_gateway.site import site_facts, site_pack
from shared.bus import BusCore, Delivery
from shared.can_link import LinkEvent, LinkHealth
from shared.commands import CommandClient
from shared.config import CanConfig, SystemConfig
from shared.config.site import SiteConfig
from shared.config_ack import acknowledge_config
from shared.messages import (
    CellSnapshot,
    CommandReply,
    ConfigMessage,
    Event,
    FieldInUse,
    PackState,
)
from shared.messages.site import SiteConfigMessage, SiteState
from shared.topics import CONFIG, EVENTS, PACK_CELLS, PACK_STATE, SITE_CONFIG, SITE_STATE

log = logging.getLogger("can_gateway")

MIN_PERIOD_S = 0.2
"""Inverters: never the same id faster than every 200 ms (SMA inhibit time)."""
COMMAND_TTL_S = 2.0
LOG_INTERVAL_S = 60.0
STATUS_PERIOD_S = 10.0
"""The retained status (with the counters) is republished this often, not only on connect."""
"""The same withheld frame or refused command is logged at most once a minute (and counted)."""


def protocol_options(cfg: CanConfig, overrides: Mapping[str, object]) -> ProtocolOptions:
    """The profiles' protocol options from the configuration, with the BMS_* overrides."""
    options = ProtocolOptions(
        pylon_hv_byte_order=cfg.pylon_hv_byte_order,
        pylon_hv_current_offset_a=cfg.pylon_hv_current_offset_a,
        pylon_hv_discharge_limit_sign=cfg.pylon_hv_discharge_limit_sign,
    )
    for name, value in overrides.items():
        if value != getattr(options, name):
            log.info(
                "BMS_%s=%s overrides interfaces.can.%s=%s",
                name.upper(),
                value,
                name,
                getattr(options, name),
            )
    return replace(options, **overrides)  # type: ignore[arg-type]


class _Receiver(can.Listener):
    """python-can's receive thread stops on an exception no listener handles: this one handles
    them all (counted, judged by `LinkHealth`)."""

    def __init__(self, gateway: CanGateway) -> None:
        self.gateway = gateway

    def on_message_received(self, msg: can.Message) -> None:
        self.gateway._on_frame(msg)

    def on_error(self, exc: Exception) -> None:
        self.gateway._on_receive_error(exc)


class CanGateway:
    def __init__(
        self,
        bus: BusCore,
        can_bus: can.BusABC,
        *,
        opener: ChannelOpener | None = None,
        stale_after_s: float = 3.0,
        keepalive_timeout_s: float = 600.0,
        protocol_overrides: Mapping[str, object] | None = None,
        in_use: Callable[[SystemConfig], dict[str, FieldInUse]] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        site: str | None = None,
    ) -> None:
        self.bus = bus
        self.can = can_bus
        self.opener = opener
        self.bus_params: BusParams | None = None
        """What `can` was opened with (None: handed over, never reopened)."""
        self.stale_after_s = stale_after_s
        self.keepalive_timeout_s = keepalive_timeout_s
        self.overrides = dict(protocol_overrides or {})
        self.in_use = in_use
        """The fields a configuration runs with another value here (`CanGatewaySettings.in_use`
        with this host), for the acknowledgement."""
        self.monotonic = monotonic
        self.config: SystemConfig | None = None
        self.options = ProtocolOptions()
        self.profiles: list[Profile] = []
        self.pack: PackState | None = None
        self.pack_s: float | None = None
        self.cells: CellSnapshot | None = None
        self.tasks: dict[int, can.broadcastmanager.CyclicSendTaskABC] = {}
        self.started_s = monotonic()
        self.keepalive_s: float | None = None
        self.keepalive_lost = False
        self._logged_s: dict[str, float] = {}
        self._lock = threading.Lock()
        self._received: queue.SimpleQueue[can.Message] = queue.SimpleQueue()
        self.client = CommandClient(bus)
        self.link = LinkHealth()
        self._link_lock = threading.Lock()
        self._link_events: queue.SimpleQueue[tuple[LinkEvent, str]] = queue.SimpleQueue()
        self.status_due_s = monotonic() + STATUS_PERIOD_S
        self.site = site
        """BMS_SITE: the profiles send the site's values and limits (`site.site_pack`)."""
        self.site_config: SiteConfig | None = None
        self.site_state: SiteState | None = None
        self.site_s: float | None = None
        self.string_packs: dict[str, tuple[PackState, float]] = {}
        self.configs: dict[str, SystemConfig] = {}
        """In a site's own stack: every system's configuration (the first string's gives the
        CAN interface, and it may come before the site configuration names it)."""
        if site is not None and bus.system == site:
            bus.subscribe(CONFIG, self._on_any_config, system="+")
        else:
            bus.subscribe(CONFIG, self._on_config)
        if site is None:
            bus.subscribe(PACK_STATE, self._on_pack)
            bus.subscribe(PACK_CELLS, self._on_cells)
        else:
            bus.subscribe(SITE_CONFIG, self._on_site_config, system=site)
            bus.subscribe(SITE_STATE, self._on_site_state, system=site)
            bus.subscribe(PACK_STATE, self._on_string_pack, system="+")
            log.info("serving site %s (its strings as one battery)", site)
        self.notifier = self._listen(can_bus)

    def _listen(self, can_bus: can.BusABC) -> can.Notifier:
        return can.Notifier(can_bus, [_Receiver(self)], timeout=0.1)

    # --- configuration ----------------------------------------------------------------------
    def interface_system(self) -> str | None:
        """The system whose configuration gives the CAN interface and the profiles: this
        host's (BMS_SYSTEM); in a site's own stack (BMS_SYSTEM is the site id, which has no
        system configuration) the site's first string's, once the site configuration names it.
        """
        if self.site is None or self.bus.system != self.site:
            return self.bus.system
        return None if self.site_config is None else self.site_config.system_ids[0]

    def _on_any_config(self, d: Delivery[ConfigMessage]) -> None:
        self.configs[d.system] = d.message.config
        if d.system == self.interface_system():
            self._on_config(d)

    def _on_config(self, d: Delivery[ConfigMessage]) -> None:
        self.acknowledge(d.message.config)

    def acknowledge(self, config: SystemConfig) -> None:
        """Apply `config` and acknowledge it (refused when it is not the interface system's)."""
        source = self.interface_system()
        if config.system_id != source:
            errors = [f"configuration is for system {config.system_id!r}, not {source!r}"]
            acknowledge_config(self.bus, config.config_version, errors)
            return
        in_use = {} if self.in_use is None else self.in_use(config)
        acknowledge_config(
            self.bus, config.config_version, self.apply_config(config), in_use=in_use
        )

    def apply_config(self, config: SystemConfig) -> list[str]:
        """Apply `config` live (channel, profiles, options); the problems, if any.

        A channel that cannot be opened refuses the whole configuration: the gateway goes on
        with the previous one (and its channel), as the refusal says.
        """
        if config == self.config:
            return []  # the same configuration again (a publisher's reconnect): nothing to do
        cfg = config.interfaces.can
        problems = self._apply_channel(cfg)
        if problems:
            return problems
        self.config = config
        self.options = protocol_options(cfg, self.overrides)
        names = list(cfg.profiles) if cfg.enabled else []
        if names != [p.name for p in self.profiles]:
            profiles: list[Profile] = []
            for name in names:
                if self.site is not None and name not in SITE_PROFILES:
                    problem = (
                        f"CAN profile {name!r} does not serve a site (BMS_SITE={self.site}); "
                        f"choose one of {', '.join(sorted(SITE_PROFILES))}"
                    )
                    log.warning("%s", problem)
                    problems.append(f"interfaces.can.profiles: {problem}")
                    continue
                try:
                    profiles.append(load_profile(name))
                except UnknownProfileError as err:
                    log.warning("%s", err)
                    problems.append(f"interfaces.can.profiles: {err}")
            self.profiles = profiles
            self._stop_tasks()  # a removed profile's frames stop; the next refresh sends the rest
            log.info("CAN profiles %s", [p.name for p in profiles])
        return problems

    def _apply_channel(self, cfg: CanConfig) -> list[str]:
        """Reopen the channel when interface, channel or bit rate moved (no restart)."""
        if self.opener is None:
            return []
        params = self.opener.params(cfg)
        if params == self.bus_params:
            return []
        try:
            new_bus = self.opener.open(params)
        except (can.CanError, OSError, ValueError) as exc:
            log.error("cannot open the CAN channel %s: %s", params, exc)
            still = f"; still on {self.bus_params}" if self.bus_params else ""
            return [f"interfaces.can: cannot open {params}: {exc}{still}"]
        if self.bus_params is not None:
            log.info("CAN channel moved from %s to %s: reopened", self.bus_params, params)
        self.notifier.stop()
        self._stop_tasks()
        self.can.shutdown()
        self.can, self.bus_params = new_bus, params
        self.notifier = self._listen(new_bus)
        return []

    # --- the link ---------------------------------------------------------------------------
    def _on_receive_error(self, exc: Exception) -> None:
        """CAN receive thread: count, log (limited), and let `LinkHealth` judge the link."""
        with self._link_lock:
            was_up = self.link.up
            event = self.link.error(self.monotonic())
        if not was_up:
            time.sleep(0.05)  # the channel is about to be replaced: do not spin on its errors
            return
        self.bus.counters["can_receive_errors"] += 1
        cause = exc.__cause__ or exc
        self._log_limited(
            f"rx:{type(cause).__name__}", logging.WARNING, "CAN receive error: %s (%r)", exc, cause
        )
        if event is not None:
            self._link_events.put(
                (
                    event,
                    f"CAN receive failed {self.link.errors_in_a_row} "
                    f"times in a row ({cause!r}): reopening the channel",
                )
            )

    def supervise_link(self) -> None:
        """Reopen a channel that went down (back-off in `LinkHealth`); report transitions."""
        now = self.monotonic()
        with self._link_lock:
            due = self.link.reopen_due(now)
        if due and self.opener is not None and self.bus_params is not None:
            self.notifier.stop()
            with contextlib.suppress(can.CanError, OSError):
                self.can.shutdown()
            try:
                new_bus = self.opener.open(self.bus_params)
            except (can.CanError, OSError, ValueError) as exc:
                with self._link_lock:
                    self.link.reopened(now, ok=False)
                self.bus.counters["can_reopen_failures"] += 1
                self._log_limited("reopen", logging.ERROR, "cannot reopen %s: %s",
                                  self.bus_params, exc)  # fmt: skip
            else:
                self.can = new_bus
                with self._link_lock:
                    event = self.link.reopened(now, ok=True)
                self.notifier = self._listen(new_bus)
                self.bus.counters["can_reopens"] += 1
                self._stop_tasks()  # cyclic tasks were on the old bus; the next refresh restarts
                if event is not None:
                    self._link_events.put((event, f"CAN channel {self.bus_params} reopened"))
        while not self._link_events.empty():
            event, text = self._link_events.get()
            up = event == "up"
            (log.info if up else log.warning)("%s", text)
            self.bus.publish(EVENTS, Event(level="warning", kind="clear" if up else "raise",
                                           code="can_link_down", text=text))  # fmt: skip

    # --- inputs -----------------------------------------------------------------------------
    def _on_pack(self, d: Delivery[PackState]) -> None:
        self.pack, self.pack_s = d.message, self.monotonic()

    def _on_cells(self, d: Delivery[CellSnapshot]) -> None:
        self.cells = d.message

    def _on_site_config(self, d: Delivery[SiteConfigMessage]) -> None:
        self.site_config = d.message.config
        keep = set(self.site_config.system_ids)
        for system in set(self.string_packs) - keep:
            del self.string_packs[system]
        source = self.interface_system()
        config = None if source is None else self.configs.get(source)
        if config is not None and config != self.config:
            self.acknowledge(config)  # it came before the site configuration named it

    def _on_site_state(self, d: Delivery[SiteState]) -> None:
        self.site_state, self.site_s = d.message, self.monotonic()

    def _on_string_pack(self, d: Delivery[PackState]) -> None:
        if self.site_config is not None and d.system in self.site_config.system_ids:
            self.string_packs[d.system] = (d.message, self.monotonic())

    def _on_frame(self, msg: can.Message) -> None:
        """CAN receive thread: refuse what is not classic CAN data, queue the rest."""
        with self._link_lock:
            self.link.frame()
        if len(msg.data) > 8 or msg.is_error_frame or msg.is_remote_frame:
            self.bus.counters["can_frames_refused"] += 1  # CAN FD, error or remote: not ours
            return
        self._received.put(msg)

    @property
    def stale(self) -> bool:
        return self.pack_s is None or self.monotonic() - self.pack_s > self.stale_after_s

    def view(self) -> PackView | None:
        if self.config is None:
            return None
        if self.site is not None:
            return self.site_view(self.config)
        return PackView(self.config, self.pack, self.stale, self.cells, self.options)

    def site_view(self, config: SystemConfig) -> PackView:
        """The site as one battery: the last site state (stale after `stale_after_s`) with the
        fresh pack states of its strings."""
        now = self.monotonic()
        fresh = {
            system: pack
            for system, (pack, at_s) in self.string_packs.items()
            if now - at_s <= self.stale_after_s
        }
        state = self.site_state
        stale = self.site_s is None or now - self.site_s > self.stale_after_s
        assert self.site is not None
        sc = self.site_config
        name = (sc.name or sc.site) if sc is not None else self.site
        strings = len(sc.strings) if sc is not None else 0
        return PackView(
            config,
            None if state is None else site_pack(state, fresh),
            stale,
            None,
            self.options,
            site=site_facts(state, name, strings),
        )

    # --- one cycle --------------------------------------------------------------------------
    def step(self) -> None:
        view = self.view()
        if view is None:
            return
        self.refresh(view)
        self.send_bursts(view)
        self.dispatch(view)
        self.client.expire()
        self.supervise()

    def refresh(self, view: PackView | None = None) -> None:
        """Rebuild every cyclic frame from the latest state and hand it to the cyclic tasks."""
        view = view or self.view()
        if view is None:
            return
        wanted: dict[int, tuple[bytes, float]] = {}
        for profile in self.profiles:
            if profile.period_s is None:
                continue
            batch = profile.cyclic(view)
            self._withheld(batch.refused)
            period = profile.period_s
            if profile.supervises_keepalive:
                period = max(MIN_PERIOD_S, period)
            for frame_id, data in batch.frames:
                wanted[frame_id] = (data, period)
        with self._lock:
            for frame_id in list(self.tasks):
                if frame_id not in wanted:  # e.g. a measurement that became unknown
                    self.tasks.pop(frame_id).stop()
            for frame_id, (data, period) in wanted.items():
                msg = can.Message(
                    arbitration_id=frame_id, data=data, is_extended_id=is_extended(frame_id)
                )
                task = self.tasks.get(frame_id)
                if task is None:
                    self.tasks[frame_id] = self.can.send_periodic(msg, period)
                else:
                    task.modify_data(msg)  # type: ignore[attr-defined]

    def send_bursts(self, view: PackView) -> None:
        for profile in self.profiles:
            batch = profile.burst(view)
            self._withheld(batch.refused)
            self._send(batch.frames)

    def dispatch(self, view: PackView) -> None:
        """Hand each received frame to the profiles that read it."""
        while True:
            try:
                msg = self._received.get_nowait()
            except queue.Empty:
                return
            readers = [
                p for p in self.profiles if p.accepts(msg.arbitration_id, msg.is_extended_id)
            ]
            if not readers:
                self.bus.counters["can_frames_ignored"] += 1
            for profile in readers:
                self._act(profile.handle(msg.arbitration_id, bytes(msg.data), view))

    def _act(self, handling: Handling) -> None:
        if handling.keepalive:
            self.keepalive_s = self.monotonic()
        for reason in handling.refused:
            self.bus.counters["can_commands_refused"] += 1
            self._log_limited(reason, logging.WARNING, "CAN frame refused: %s", reason)
        self._send(handling.frames)
        for request in handling.requests:
            self._forward(request)

    def _forward(self, request: MasterRequest) -> None:
        on_reply = request.on_reply

        def replied(reply: CommandReply | None) -> None:
            if on_reply is not None:
                self._send(on_reply(reply))

        self.client.send(request.command, request.args, ttl_s=COMMAND_TTL_S, on_reply=replied)

    def _send(self, frames: Iterable[Frame]) -> None:
        for frame_id, data in frames:
            msg = can.Message(
                arbitration_id=frame_id, data=data, is_extended_id=is_extended(frame_id)
            )
            self.can.send(msg)

    def _withheld(self, errors: list[FrameEncodeError]) -> None:
        """Count each withheld frame; log each reason once a minute at most."""
        for err in errors:
            self.bus.counters["can_frames_withheld"] += 1
            key = f"{err.frame_id}:{err.signal}" if isinstance(err, FrameRangeError) else str(err)
            self._log_limited(key, logging.ERROR, "CAN frame withheld: %s", err)

    def _log_limited(self, key: str, level: int, text: str, *args: object) -> None:
        """Log once per `key` and minute: a misbehaving peer must not flood the log."""
        now = self.monotonic()
        last = self._logged_s.get(key)
        if last is None or now - last >= LOG_INTERVAL_S:
            self._logged_s[key] = now
            log.log(level, text, *args)

    def supervise(self) -> None:
        now = self.monotonic()
        last = self.keepalive_s if self.keepalive_s is not None else self.started_s
        inverters = any(p.supervises_keepalive for p in self.profiles)
        lost = inverters and now - last > self.keepalive_timeout_s
        if lost != self.keepalive_lost:
            self.keepalive_lost = lost
            code = "inverter_keepalive_lost"
            if lost:
                log.warning("no inverter keep-alive for %.0f s", now - last)
                self.bus.publish(
                    EVENTS,
                    Event(level="warning", kind="raise", code=code,
                          text="no inverter keep-alive (0x305/0x307 or 0x4200)"),
                )  # fmt: skip
            else:
                log.info("inverter keep-alive back")
                self.bus.publish(
                    EVENTS,
                    Event(
                        level="warning", kind="clear", code=code, text="inverter keep-alive back"
                    ),
                )

    def run(self, should_stop: Callable[[], bool], period_s: float = 0.1) -> None:
        while not should_stop():
            self.bus.process(timeout_s=period_s)
            try:
                self.supervise_link()
                self.step()
            except Exception:  # a bad state must not stop the fail-safe frames
                self.bus.counters["cycle_errors"] += 1
                log.exception("CAN cycle failed")
            if self.monotonic() >= self.status_due_s:
                self.status_due_s = self.monotonic() + STATUS_PERIOD_S
                self.bus.publish_status()  # the counters (and the link's) without a reconnect

    def _stop_tasks(self) -> None:
        with self._lock:
            for task in self.tasks.values():
                task.stop()
            self.tasks.clear()

    def close(self) -> None:
        self.notifier.stop()
        self._stop_tasks()
