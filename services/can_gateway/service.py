"""The CAN gateway edge: periodic inverter frames from the pack state, keep-alive supervision.

Frames come from the pure profile code (`profiles.py`); this module only owns the CAN bus,
the timing and the events. Each frame id is sent once per period by python-can's cyclic
tasks, and a new pack state replaces the data of every task in one pass (`modify_data`), so
an inverter never sees a frame whose fields come from two different states.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import can

from services.can_gateway.profiles import frames_for, is_keepalive
from shared.bus import BusCore, Delivery
from shared.config import SystemConfig
from shared.messages import ConfigMessage, Event, PackState
from shared.topics import CONFIG, EVENTS, PACK_STATE

log = logging.getLogger("can_gateway")

CYCLIC_PERIOD_S = {"victron_0x35x": 1.0, "pylon_v12": 1.0}
"""Inverter profiles send each frame once a second (never faster than 200 ms per id)."""
MIN_PERIOD_S = 0.2


class CanGateway:
    def __init__(
        self,
        bus: BusCore,
        can_bus: can.BusABC,
        *,
        stale_after_s: float = 3.0,
        keepalive_timeout_s: float = 600.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.can = can_bus
        self.stale_after_s = stale_after_s
        self.keepalive_timeout_s = keepalive_timeout_s
        self.monotonic = monotonic
        self.config: SystemConfig | None = None
        self.pack: PackState | None = None
        self.pack_s: float | None = None
        self.tasks: dict[int, can.broadcastmanager.CyclicSendTaskABC] = {}
        self.started_s = monotonic()
        self.keepalive_s: float | None = None
        self.keepalive_lost = False
        self._lock = threading.Lock()
        bus.subscribe(CONFIG, self._on_config)
        bus.subscribe(PACK_STATE, self._on_pack)
        self.notifier = can.Notifier(can_bus, [self._on_frame])

    def _on_config(self, d: Delivery[ConfigMessage]) -> None:
        self.apply_config(d.message.config)

    def apply_config(self, config: SystemConfig) -> None:
        self.config = config
        unknown = [p for p in self.config.interfaces.can.profiles if p not in CYCLIC_PERIOD_S]
        if unknown:
            log.warning("profiles %s are not served by this gateway", unknown)

    def _on_pack(self, d: Delivery[PackState]) -> None:
        self.pack, self.pack_s = d.message, self.monotonic()

    def _on_frame(self, msg: can.Message) -> None:
        """CAN receive thread: only note the keep-alive, never block."""
        if is_keepalive(msg.arbitration_id, bytes(msg.data)):
            self.keepalive_s = self.monotonic()

    @property
    def stale(self) -> bool:
        return self.pack_s is None or self.monotonic() - self.pack_s > self.stale_after_s

    def profiles(self) -> list[str]:
        if self.config is None or not self.config.interfaces.can.enabled:
            return []
        return [p for p in self.config.interfaces.can.profiles if p in CYCLIC_PERIOD_S]

    def refresh(self) -> None:
        """Rebuild every frame from the latest state and hand it to the cyclic tasks."""
        if self.config is None:
            return
        stale = self.stale
        wanted: dict[int, tuple[bytes, float]] = {}
        for profile in self.profiles():
            period = max(MIN_PERIOD_S, CYCLIC_PERIOD_S[profile])
            for frame_id, data in frames_for(profile, self.pack, stale=stale, config=self.config):
                wanted[frame_id] = (data, period)
        with self._lock:
            for frame_id in list(self.tasks):
                if frame_id not in wanted:  # e.g. measurements are withheld while stale
                    self.tasks.pop(frame_id).stop()
            for frame_id, (data, period) in wanted.items():
                msg = can.Message(
                    arbitration_id=frame_id, data=data, is_extended_id=frame_id > 0x7FF
                )
                task = self.tasks.get(frame_id)
                if task is None:
                    self.tasks[frame_id] = self.can.send_periodic(msg, period)
                else:
                    task.modify_data(msg)  # type: ignore[attr-defined]

    def supervise(self) -> None:
        now = self.monotonic()
        last = self.keepalive_s if self.keepalive_s is not None else self.started_s
        lost = bool(self.profiles()) and now - last > self.keepalive_timeout_s
        if lost != self.keepalive_lost:
            self.keepalive_lost = lost
            code = "inverter_keepalive_lost"
            if lost:
                log.warning("no inverter keep-alive (0x305/0x307) for %.0f s", now - last)
                self.bus.publish(
                    EVENTS,
                    Event(
                        level="warning",
                        kind="raise",
                        code=code,
                        text="no inverter keep-alive (0x305/0x307)",
                    ),
                )
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
                self.refresh()
                self.supervise()
            except Exception:  # a bad state must not stop the fail-safe frames
                self.bus.counters["cycle_errors"] += 1
                log.exception("CAN cycle failed")

    def close(self) -> None:
        self.notifier.stop()
        with self._lock:
            for task in self.tasks.values():
                task.stop()
            self.tasks.clear()
