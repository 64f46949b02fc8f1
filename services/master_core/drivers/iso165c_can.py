"""The iso165C on a python-can bus: a Notifier feeds `Iso165cCore`; requests go out.

`initialize()` is foxBMS 2's start-up (`bender_iso165c.c`: `I165C_Initialize` then
`I165C_Enable`), collapsed into one blocking sequence of acknowledged requests: unlock, switch the
measurement on, open both coupling relays and read them back, run the overall self-test unless
one ran since power-up and wait for its end, set the averaging factor (10, foxBMS's EV value) and
the error / warning thresholds, close both relays and read them back, switch the measurement on.
(foxBMS switches the measurement off at the end of its initialization and on again in its
enable step; with nothing in between here, that pair is left out.) Each request is sent up to
three times when no response comes (`I165C_TRANSMISSION_ATTEMPTS`); an error response, or a
response that does not echo what was asked, ends the sequence with the step named.
`start_polling()` asks for the resistance (GET_R_ISO, which carries the fault side) and the
device status (GET_STATUS, with the internal self-test results) once per interval, as foxBMS's
running state does.

The receive path never dies on bad input: a rejected frame is counted by the core and logged at
most once per `log_interval_s` per reason (with how many were not logged); an exception from the
bus itself is counted (`bus_errors`) and logged the same way, and the Notifier keeps receiving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import can

from services.master_core.drivers.iso165c import (
    INFO_ID,
    RESPONSE_ID,
    Command,
    HvRelay,
    InsulationMonitor,
    InsulationReading,
    InsulationState,
    Iso165cCore,
    RejectReason,
    SelfTestScenario,
    choice_name,
    error_threshold_frame,
    hv_relay_frame,
    iso165c_dbc,
    mean_factor_frame,
    measurement_frame,
    request_frame,
    self_test_frame,
    unlock_frame,
    warning_threshold_frame,
)
from shared.can_bus import ClearLineAfterError

log = logging.getLogger(__name__)

TRANSMISSION_ATTEMPTS = 3  # foxBMS I165C_TRANSMISSION_ATTEMPTS
AVERAGING_FACTOR = 10  # foxBMS I165C_MEASUREMENT_AVERAGING_FACTOR, "recommended for EVs"

Frame = tuple[int, bytes]


@dataclass(frozen=True)
class InitResult:
    """How `initialize()` went: the steps done in order, and the one that failed (if any)."""

    ok: bool
    done: tuple[str, ...]
    failed_step: str | None = None
    reason: str | None = None


def _scaled(signal: str, value: float) -> float:
    """`value` as the device will echo it: on the signal's raster (whole kOhm)."""
    sig = iso165c_dbc().get_message_by_frame_id(RESPONSE_ID).get_signal_by_name(signal)
    return round(value / float(sig.scale)) * float(sig.scale)


class Iso165cCanDriver(can.Listener):
    """An `InsulationMonitor` reading an iso165C through `bus`; `close()` stops its threads."""

    def __init__(
        self,
        bus: can.BusABC,
        stale_after_s: float,
        clock: Callable[[], float] = time.monotonic,
        log_interval_s: float = 60.0,
        *,
        own_notifier: bool = True,
    ) -> None:
        """`own_notifier=False`: the caller feeds this listener from a Notifier it shares
        with other devices on the same bus (one reader per bus), and stops it itself."""
        self.bus = bus
        self.core = Iso165cCore(stale_after_s=stale_after_s)
        self.bus_errors = 0
        self.send_errors = 0
        self.log_interval_s = log_interval_s
        self._clock = clock
        self._changed = threading.Condition()
        self._send_lock = threading.Lock()
        self._log_lock = threading.Lock()
        self._logged_s: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._info_seen_s: float | None = None
        self._notifier = (
            can.Notifier(bus, [self, ClearLineAfterError(bus)], timeout=0.1)
            if own_notifier
            else None
        )

    # --- receiving ----------------------------------------------------------------------------

    def on_message_received(self, msg: can.Message) -> None:
        reason: RejectReason | None
        now_s = self._clock()
        with self._changed:
            if msg.is_error_frame or msg.is_remote_frame:
                reason = RejectReason.NOT_A_DATA_FRAME
                self.core.rejected[reason] += 1
            elif msg.is_extended_id:  # the iso165C speaks 11-bit ids only
                reason = RejectReason.UNKNOWN_ID
                self.core.rejected[reason] += 1
            else:
                reason = self.core.feed(msg.arbitration_id, bytes(msg.data), now_s)
                if reason is None and msg.arbitration_id == INFO_ID:
                    self._info_seen_s = now_s
            self._changed.notify_all()
        if reason is not None:
            self._log_limited(
                reason.value,
                "iso165C: frame 0x%X (%d bytes) rejected: %s",
                msg.arbitration_id,
                len(msg.data),
                reason.value,
            )

    def on_error(self, exc: Exception) -> None:
        self.bus_errors += 1
        self._log_limited(f"bus:{type(exc).__name__}", "iso165C: CAN receive error: %r", exc)

    def _log_limited(self, key: str, fmt: str, *args: object) -> None:
        """At most one line per key per log_interval_s; the next one says how many were not."""
        now_s = self._clock()
        with self._log_lock:  # called from the Notifier's thread and the caller's
            last_s = self._logged_s.get(key)
            if last_s is not None and now_s - last_s < self.log_interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._logged_s[key] = now_s
            skipped = self._suppressed.pop(key, 0)
        if skipped:
            log.warning(fmt + " (%d more not logged)", *args, skipped)
        else:
            log.warning(fmt, *args)

    # --- reading ------------------------------------------------------------------------------

    def reading(self, now_s: float) -> InsulationReading:
        with self._changed:
            return self.core.reading(now_s)

    def rejected(self) -> dict[str, int]:
        with self._changed:
            return {reason.value: n for reason, n in self.core.rejected.items()}

    def command_errors(self) -> dict[str, int]:
        """Error responses so far, by the name of the command the device refused."""
        with self._changed:
            return {
                choice_name(RESPONSE_ID, "IMD_Response_Command", cmd): n
                for cmd, n in self.core.command_errors.items()
            }

    def acknowledged(self, command: int) -> int:
        with self._changed:
            return self.core.acknowledged(command)

    # --- sending ------------------------------------------------------------------------------

    def send(self, frame: Frame) -> bool:
        """Send one request; a failing send is counted and logged, not raised."""
        frame_id, data = frame
        try:
            with self._send_lock:
                self.bus.send(can.Message(arbitration_id=frame_id, data=data, is_extended_id=False))
        except can.CanError as exc:
            self.send_errors += 1
            self._log_limited(f"send:{type(exc).__name__}", "iso165C: CAN send failed: %r", exc)
            return False
        return True

    def request(
        self,
        frame: Frame,
        expect: dict[str, float] | None = None,
        timeout_s: float = 1.0,
        attempts: int = TRANSMISSION_ATTEMPTS,
    ) -> str | None:
        """Send `frame` until its response arrives (up to `attempts` times, `timeout_s` each).
        None when acknowledged (and echoing `expect`), else why not."""
        command = frame[1][0]
        for _ in range(attempts):
            with self._changed:
                acks, errors = self.core.responses[command], self.core.command_errors[command]
            if not self.send(frame):
                continue
            with self._changed:
                self._changed.wait_for(
                    partial(self._answered, command, acks, errors), timeout=timeout_s
                )
                if self.core.command_errors[command] > errors:
                    return "refused by the device (error response)"
                if self.core.responses[command] > acks:
                    echoed = self.core.echoed[command]
                    wrong = {
                        k: echoed.get(k) for k, v in (expect or {}).items() if echoed.get(k) != v
                    }
                    return f"response does not echo the request: {wrong}" if wrong else None
        return f"no response after {attempts} attempts"

    def _answered(self, command: int, acks: int, errors: int) -> bool:
        """A response or an error response to `command` came since the counts were taken."""
        return self.core.responses[command] > acks or self.core.command_errors[command] > errors

    def _wait_info(self, until: Callable[[InsulationReading], bool], timeout_s: float) -> bool:
        """Wait for an info frame received from now on whose reading satisfies `until`."""
        with self._changed:
            since_s = self._clock()

            def seen() -> bool:
                return (
                    self._info_seen_s is not None
                    and self._info_seen_s >= since_s
                    and until(self.core.reading(self._clock()))
                )

            return self._changed.wait_for(seen, timeout=timeout_s)

    def initialize(
        self,
        error_threshold_ohm: float,
        warning_threshold_ohm: float,
        averaging_factor: int = AVERAGING_FACTOR,
        response_timeout_s: float = 1.0,
        info_timeout_s: float = 3.0,
        self_test_timeout_s: float = 30.0,
    ) -> InitResult:
        """foxBMS's start-up sequence (see the module docstring); blocking, never raising on
        what the device does. Thresholds out of the device's range raise (cantools EncodeError)
        before anything is sent."""
        err_thr, wrn_thr = (
            error_threshold_frame(error_threshold_ohm),
            warning_threshold_frame(warning_threshold_ohm),
        )
        done: list[str] = []

        def relay(
            name: str, which: HvRelay, closed: bool
        ) -> list[tuple[str, Frame, dict[str, float]]]:
            state: dict[str, float] = {
                "IS_VIFC_HV_RELAIS": int(which),
                "IS_VIFC_HV_RELAIS_STATE": int(closed),
            }
            check: dict[str, float] = {
                "IG_VIFC_HV_RELAIS": int(which),
                "IG_VIFC_HV_RELAIS_STATE": int(closed),
            }
            return [
                (name, hv_relay_frame(which, closed), state),
                (f"{name}:read_back", request_frame(Command.GET_HV_RELAIS, int(which)), check),
            ]

        before_self_test: list[tuple[str, Frame, dict[str, float]]] = [
            ("unlock", unlock_frame(), {"IC_VIFC_LOCK_MODE": 0}),
            ("enable_measurement", measurement_frame(True), {"IC_VIFC_MEASURE_MODE": 1}),
            *relay("open_negative_relay", HvRelay.NEGATIVE, False),
            *relay("open_positive_relay", HvRelay.POSITIVE, False),
        ]
        after_self_test: list[tuple[str, Frame, dict[str, float]]] = [
            (
                "averaging_factor",
                mean_factor_frame(averaging_factor),
                {"IS_IMC_MEAN_FACTOR": averaging_factor},
            ),
            (
                "error_threshold",
                err_thr,
                {"IS_IMC_R_ISO_ERR_THR": _scaled("IS_IMC_R_ISO_ERR_THR", error_threshold_ohm)},
            ),
            (
                "warning_threshold",
                wrn_thr,
                {"IS_IMC_R_ISO_WRN_THR": _scaled("IS_IMC_R_ISO_WRN_THR", warning_threshold_ohm)},
            ),
            *relay("close_negative_relay", HvRelay.NEGATIVE, True),
            *relay("close_positive_relay", HvRelay.POSITIVE, True),
            ("start_measurement", measurement_frame(True), {"IC_VIFC_MEASURE_MODE": 1}),
        ]

        def run(steps: list[tuple[str, Frame, dict[str, float]]]) -> InitResult | None:
            for name, frame, expect in steps:
                why = self.request(frame, expect, response_timeout_s)
                if why is not None:
                    return self._init_failed(done, name, why)
                done.append(name)
            return None

        failed = run(before_self_test)
        if failed is not None:
            return failed
        if not self._wait_info(lambda r: r.self_test_executed is not None, info_timeout_s):
            return self._init_failed(done, "self_test", "no IMD_Info frame")
        if self.reading(self._clock()).self_test_executed is not True:
            why = self.request(
                self_test_frame(SelfTestScenario.OVERALL),
                {"IC_IMC_SELFTEST_SCR": int(SelfTestScenario.OVERALL)},
                response_timeout_s,
            )
            if why is not None:
                return self._init_failed(done, "self_test", why)
            finished = self._wait_info(
                lambda r: r.state is not InsulationState.SELF_TEST and bool(r.self_test_executed),
                self_test_timeout_s,
            )
            if not finished:
                return self._init_failed(done, "self_test", "did not finish in time")
            done.append("self_test")
        failed = run(after_self_test)
        if failed is not None:
            return failed
        return InitResult(ok=True, done=tuple(done))

    def _init_failed(self, done: list[str], step: str, why: str) -> InitResult:
        self._log_limited(f"init:{step}", "iso165C: start-up step %s failed: %s", step, why)
        return InitResult(ok=False, done=tuple(done), failed_step=step, reason=why)

    def start_polling(self, interval_s: float = 1.0) -> None:
        """Ask for GET_R_ISO and GET_STATUS every `interval_s` until `close()`."""
        if self._poller is not None:
            return

        def poll() -> None:
            while not self._stop.is_set():
                self.send(request_frame(Command.GET_R_ISO))
                self.send(request_frame(Command.GET_STATUS))
                self._stop.wait(interval_s)

        self._poller = threading.Thread(target=poll, name="iso165c-poll", daemon=True)
        self._poller.start()

    def close(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5.0)
        if self._notifier is not None:
            self._notifier.stop()


def as_insulation_monitor(driver: Iso165cCanDriver) -> InsulationMonitor:
    """The driver as the master holds it; mypy checks here that it meets the Protocol."""
    return driver
