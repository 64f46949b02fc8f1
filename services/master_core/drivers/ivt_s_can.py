"""The IVT-S on a python-can bus: a Notifier feeds `IvtSCore`; configuration commands go out.

The receive path never dies on bad input: a rejected frame (unknown id, wrong length, wrong mux)
is counted by the core and logged once per reason; an exception from the bus itself is counted
(`bus_errors`), logged once, and handled so the Notifier keeps receiving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

import can

from services.master_core.drivers.ivt_s import (
    DEFAULT_EXPECTED,
    CurrentSensor,
    CurrentSensorReading,
    IvtSCore,
    Quantity,
    RejectReason,
    TriggerMode,
    set_mode_frame,
    set_result_config_frame,
)
from shared.can_bus import ClearLineAfterError

log = logging.getLogger(__name__)


class IvtSCanDriver(can.Listener):
    """A `CurrentSensor` reading an IVT-S through `bus`; `close()` stops the receive thread."""

    def __init__(
        self,
        bus: can.BusABC,
        stale_after_s: float,
        clock: Callable[[], float] = time.monotonic,
        expected: tuple[Quantity, ...] = DEFAULT_EXPECTED,
        *,
        own_notifier: bool = True,
    ) -> None:
        """`own_notifier=False`: the caller feeds this listener from a Notifier it shares
        with other devices on the same bus (one reader per bus), and stops it itself."""
        self.bus = bus
        self.core = IvtSCore(stale_after_s=stale_after_s, expected=expected)
        self.bus_errors = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._logged: set[str] = set()
        self._notifier = (
            can.Notifier(bus, [self, ClearLineAfterError(bus)], timeout=0.1)
            if own_notifier
            else None
        )

    def on_message_received(self, msg: can.Message) -> None:
        reason: RejectReason | None
        with self._lock:
            if msg.is_error_frame or msg.is_remote_frame:
                reason = RejectReason.NOT_A_DATA_FRAME
                self.core.rejected[reason] += 1
            elif msg.is_extended_id:  # the IVT-S speaks 11-bit ids only
                reason = RejectReason.UNKNOWN_ID
                self.core.rejected[reason] += 1
            else:
                reason = self.core.feed(msg.arbitration_id, bytes(msg.data), self._clock())
        if reason is not None:
            self._log_once(
                reason.value,
                "IVT-S: frame 0x%X (%d bytes) rejected: %s; counted, further ones not logged",
                msg.arbitration_id,
                len(msg.data),
                reason.value,
            )

    def on_error(self, exc: Exception) -> None:
        self.bus_errors += 1
        self._log_once(f"bus:{type(exc).__name__}", "IVT-S: CAN receive error: %r", exc)

    def _log_once(self, key: str, fmt: str, *args: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning(fmt, *args)

    def reading(self, now_s: float) -> CurrentSensorReading:
        with self._lock:
            return self.core.reading(now_s)

    def rejected(self) -> dict[str, int]:
        with self._lock:
            return {reason.value: n for reason, n in self.core.rejected.items()}

    def counter_gaps(self) -> dict[str, int]:
        with self._lock:
            return {q.name.lower(): n for q, n in self.core.counter_gaps.items()}

    def acknowledged(self, command_id: int) -> int:
        with self._lock:
            return self.core.acknowledged(command_id)

    def _send(self, frame: tuple[int, bytes]) -> None:
        frame_id, data = frame
        self.bus.send(can.Message(arbitration_id=frame_id, data=data, is_extended_id=False))

    def set_running(self, run: bool) -> None:
        """SET_MODE: run (results flow) or stop (configuration accepted)."""
        self._send(set_mode_frame(run))

    def configure(
        self, cycles: Iterable[tuple[Quantity, TriggerMode, int]], restart: bool = True
    ) -> None:
        """Stop, set each result's trigger mode and cycle time (ms), then run again."""
        self.set_running(False)
        for quantity, mode, cycle_time_ms in cycles:
            self._send(set_result_config_frame(quantity, mode, cycle_time_ms))
        if restart:
            self.set_running(True)

    def close(self) -> None:
        if self._notifier is not None:
            self._notifier.stop()


def as_current_sensor(driver: IvtSCanDriver) -> CurrentSensor:
    """The driver as the master holds it; mypy checks here that it meets the Protocol."""
    return driver
