"""Insulation monitors as the master reads them (`InsulationSource`), one adapter per driver.

The Bender iso165C needs a start-up sequence of acknowledged requests, its self-test included
(up to tens of seconds, drivers/iso165c_can.py). It runs on a thread of its own so the control
cycle never waits; meanwhile the resistance is unknown (None), which is the truth, and not a
device failure. A failed start-up, a silent monitor and a device error are failures
(`errors`), which protection turns into insulation_monitor_failure. An insulation fault or
warning is a measurement, not a device failure: the resistance stays, and the master judges
it against its own thresholds.
"""

from __future__ import annotations

import logging
import threading

from services.master_core.devices import CanBuses, Clock, InsulationSample
from services.master_core.drivers.iso165c import InsulationState
from services.master_core.drivers.iso165c_can import Iso165cCanDriver
from shared.config import SystemConfig

log = logging.getLogger(__name__)

REOPEN_S = 5.0
START_UP_RETRY_S = 10.0
POLL_PERIOD_S = 1.0
DEVICE_FAILED = frozenset({InsulationState.DEVICE_ERROR, InsulationState.STALE})


class Iso165cInsulation:
    """`InsulationSource` over an iso165C on the configured CAN bus."""

    def __init__(self, config: SystemConfig, buses: CanBuses, clock: Clock) -> None:
        self.can = config.insulation_monitor.can
        self.fault_ohm = config.protection.insulation_fault_ohm
        self.warning_ohm = config.protection.insulation_warning_ohm
        self._buses = buses
        self._clock = clock
        self.driver: Iso165cCanDriver | None = None
        self._opened_at_s: float | None = None
        self._open_error = ""
        self._lock = threading.Lock()
        self._ready = False
        self._start_up_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._open(clock())

    def _open(self, now_s: float) -> None:
        self._opened_at_s = now_s
        try:
            bus = self._buses.bus(self.can)
        except Exception as exc:  # python-can raises many kinds (CanError, OSError, ImportError)
            self._open_error = f"cannot open CAN {self.can.interface}:{self.can.channel}: {exc}"
            log.warning("insulation monitor: %s; retrying every %g s", exc, REOPEN_S)
            return
        self._open_error = ""
        self.driver = Iso165cCanDriver(bus, self.can.stale_after_s, self._clock, own_notifier=False)
        self._buses.listen(self.can, self.driver)
        self._thread = threading.Thread(target=self._start_up, name="iso165c-start", daemon=True)
        self._thread.start()

    def _start_up(self) -> None:
        driver = self.driver
        assert driver is not None
        while not self._stop.is_set():
            result = driver.initialize(self.fault_ohm, self.warning_ohm)
            if result.ok:
                driver.start_polling(POLL_PERIOD_S)
                with self._lock:
                    self._ready, self._start_up_error = True, ""
                log.info("insulation monitor: iso165C started (%s)", ", ".join(result.done))
                return
            with self._lock:
                self._start_up_error = f"start-up failed at {result.failed_step}: {result.reason}"
            self._stop.wait(START_UP_RETRY_S)

    def sample(self, now_s: float) -> InsulationSample:
        if self.driver is None:
            if self._opened_at_s is None or now_s - self._opened_at_s >= REOPEN_S:
                self._open(now_s)
            if self.driver is None:
                return InsulationSample(None, (self._open_error,))
        with self._lock:
            ready, start_up_error = self._ready, self._start_up_error
        if not ready:
            return InsulationSample(None, (start_up_error,) if start_up_error else ())
        reading = self.driver.reading(now_s)
        failed = reading.state in DEVICE_FAILED
        return InsulationSample(reading.resistance_ohm, reading.errors if failed else ())

    def close(self) -> None:
        self._stop.set()
        if self.driver is not None:
            self.driver.close()
            self._buses.release(self.can, self.driver)
