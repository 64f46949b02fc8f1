"""The simulated inverter on a python-can bus (virtual, udp_multicast, slcan...): a Listener
feeds received frames to the pure `SimulatedInverter`, a thread sends what it says is due.

The inverter is shared between the bus threads and the plant: use it through this adapter
(`current_a`, `reading`, `allowed_a`), which holds the lock. Times are on `clock`, which the
plant may replace with its own (the frames' arrival is stamped with it too).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from types import TracebackType

import can

from services.can_gateway.profile import is_extended
from services.plant.inverter import BmsReading, SimulatedInverter

log = logging.getLogger("plant.inverter")

TICK_S = 0.05
"""How often the sender asks the inverter what is due (its periods are 1 s and more)."""
LOG_INTERVAL_S = 60.0


def open_bus(interface: str, channel: str, bitrate: int = 500_000) -> can.BusABC:
    """A python-can bus; `virtual` and `udp_multicast` take no bit rate."""
    if interface in ("virtual", "udp_multicast"):
        return can.Bus(interface=interface, channel=channel)
    return can.Bus(interface=interface, channel=channel, bitrate=bitrate)


class _Receiver(can.Listener):
    """The python-can Listener of an `InverterCan` (its own object: `Listener.stop` is called
    by the Notifier and must not stop the adapter)."""

    def __init__(self, adapter: InverterCan) -> None:
        self.adapter = adapter

    def on_message_received(self, msg: can.Message) -> None:
        self.adapter.on_message_received(msg)

    def on_error(self, exc: Exception) -> None:
        self.adapter.on_error(exc)


class InverterCan:
    """`inverter` on `bus` (the caller owns the bus and shuts it down); `start` / `stop`."""

    def __init__(
        self,
        inverter: SimulatedInverter,
        bus: can.BusABC,
        *,
        clock: Callable[[], float] = time.monotonic,
        tick_s: float = TICK_S,
    ) -> None:
        self.inverter = inverter
        self.bus = bus
        self.clock = clock
        self.tick_s = tick_s
        self.counters: Counter[str] = Counter()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._notifier: can.Notifier | None = None
        self._sender: threading.Thread | None = None
        self._logged_s: dict[str, float] = {}

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> InverterCan:
        self._stop.clear()
        self._notifier = can.Notifier(self.bus, [_Receiver(self)])
        self._sender = threading.Thread(target=self._send_loop, name="inverter-can", daemon=True)
        self._sender.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._sender is not None:
            self._sender.join(timeout=5.0)
            self._sender = None
        if self._notifier is not None:
            self._notifier.stop()
            self._notifier = None

    def __enter__(self) -> InverterCan:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- what the plant asks -----------------------------------------------------------------
    def current_a(
        self,
        t_s: float,
        *,
        soc_pct: float | None,
        cell_v_min: float,
        cell_v_max: float,
        pack_voltage_v: float | None = None,
    ) -> float:
        """`SimulatedInverter.current_a`, `t_s` on `clock`."""
        with self.lock:
            return self.inverter.current_a(
                t_s,
                soc_pct=soc_pct,
                cell_v_min=cell_v_min,
                cell_v_max=cell_v_max,
                pack_voltage_v=pack_voltage_v,
            )

    def reading(self) -> BmsReading:
        """What the inverter knows of the BMS now."""
        with self.lock:
            return self.inverter.reading(self.clock())

    def allowed_a(self, *, pack_voltage_v: float | None = None) -> tuple[float, float]:
        with self.lock:
            return self.inverter.allowed_a(self.clock(), pack_voltage_v=pack_voltage_v)

    # --- from the Listener ------------------------------------------------------------------------
    def on_message_received(self, msg: can.Message) -> None:
        if msg.is_error_frame or msg.is_remote_frame or len(msg.data) > 8:
            self.counters["frames_refused"] += 1  # CAN FD, error or remote: no inverter reads it
            return
        with self.lock:
            self.inverter.receive(
                msg.arbitration_id, bytes(msg.data), self.clock(), is_extended_id=msg.is_extended_id
            )

    def on_error(self, exc: Exception) -> None:
        self.counters["receive_errors"] += 1
        self._log_limited("receive", "inverter: CAN receive failed: %s", exc)

    # --- sending -----------------------------------------------------------------------------
    def _send_loop(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                frames = self.inverter.due(self.clock())
            for frame_id, data in frames:
                msg = can.Message(
                    arbitration_id=frame_id, data=data, is_extended_id=is_extended(frame_id)
                )
                try:
                    self.bus.send(msg, timeout=self.tick_s)
                except (can.CanError, OSError) as exc:
                    self.counters["send_errors"] += 1
                    self._log_limited("send", "inverter: CAN send failed: %s", exc)
                else:
                    self.counters["frames_sent"] += 1
            self._stop.wait(self.tick_s)

    def _log_limited(self, key: str, text: str, *args: object) -> None:
        now = time.monotonic()
        last = self._logged_s.get(key)
        if last is None or now - last >= LOG_INTERVAL_S:
            self._logged_s[key] = now
            log.warning(text, *args)
