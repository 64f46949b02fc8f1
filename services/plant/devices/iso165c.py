"""A simulated Bender ISOMETER iso165C: its frames from a settable insulation resistance, and a
python-can runner that sends IMD_Info once a period and answers IMD_Request frames.

The frames follow the BMS driver's DBC (`services/master_core/dbc/iso165c.dbc`, after foxBMS 2
and the iso165C manual D00154; see `services/master_core/drivers/iso165c.py`) and are encoded
only with cantools. What the device does is the manual's: every request gets a response that
echoes the command, or an error response (0xFF, error code, failed command); set and control
commands are refused with VIFC_CommandLocked while the device is locked; a value out of its range
is refused with VIFC_InvalidErrorParameter. Decided here where the manual is silent: the simulated
device powers up locked, with its measurement deactivated and its coupling relays open (the
iso165C, not the -1, per foxBMS `bender_iso165c.c`), and without a self-test run, so the master
must do foxBMS's start-up sequence to see a value. While not measuring, or during a self-test,
it reports 0 kOhm (with the flags saying why the value is void). Its thresholds default to the
manual's 300 kOhm warning and Bender's DBC start value of 100 kOhm for the error threshold.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import can
import cantools
from cantools.database.can import Message

from services.master_core.drivers.iso165c import (
    INFO_CYCLE_S,
    INFO_ID,
    MAX_RESISTANCE_OHM,
    REQUEST_ID,
    RESPONSE_ID,
    STATUS_EXT_BITS,
    Command,
    FaultSide,
    HvRelay,
    SelfTestScenario,
    decode_numbers,
    known_commands,
    message,
)

COMMAND_LOCKED = 1000
INVALID_PARAMETER = 1034
UNKNOWN_COMMAND = 1035
LOCK_PASSWORD = {0: 0x0000, 1: 0xFFFF}  # lock mode -> the password it needs (manual 7.3.20)
# commands a locked device still answers (the GETs and the lock itself)
ALLOWED_WHEN_LOCKED = {
    Command.DUMMY,
    Command.CTL_LOCK,
    Command.GET_R_ISO,
    Command.GET_STATUS,
    Command.GET_R_ISO_ERR_THR,
    Command.GET_R_ISO_WRN_THR,
    Command.GET_HV_RELAIS,
}
BIAS_CODE = {None: 0, FaultSide.HV_MINUS: 1, FaultSide.HV_PLUS: 2}


class _InvalidError(Exception):
    """A request parameter out of its range."""


def _check_ranges(request: Message, signals: dict[str, float]) -> None:
    """The device refuses a value outside the range its manual gives (kept in the DBC)."""
    for name, value in signals.items():
        sig = request.get_signal_by_name(name)
        low = sig.minimum if sig.minimum is not None else value
        high = sig.maximum if sig.maximum is not None else value
        if not low <= value <= high:
            raise _InvalidError(name)


@dataclass
class SimulatedIso165c:
    """The device's state; time is passed in, nothing here reads a clock."""

    resistance_ohm: float = 10_000_000.0
    error_threshold_ohm: float = 100_000.0
    warning_threshold_ohm: float = 300_000.0
    mean_factor: int = 3
    measuring: bool = False
    locked: bool = True
    relays_closed: dict[HvRelay, bool] = field(
        default_factory=lambda: {HvRelay.NEGATIVE: False, HvRelay.POSITIVE: False}
    )
    self_test_duration_s: float = 2.0
    self_test_until_s: float | None = None
    self_tests_executed: set[SelfTestScenario] = field(default_factory=set)
    system_failure: bool = False
    chassis_fault: bool = False
    imc_connection_lost: bool = False
    outdated: bool = False
    command_error: bool = False
    status_ext_faults: set[str] = field(default_factory=set)  # STATUS_EXT_BITS signal names
    fault_side: FaultSide | None = None
    measurement_count: int = 0
    requests_seen: list[int] = field(default_factory=list)

    def _advance(self, now_s: float) -> None:
        if self.self_test_until_s is not None and now_s >= self.self_test_until_s:
            self.self_test_until_s = None

    def self_test_running(self, now_s: float) -> bool:
        self._advance(now_s)
        return self.self_test_until_s is not None

    def _measured(self, now_s: float) -> bool:
        return self.measuring and not self.self_test_running(now_s)

    def _r_iso_ohm(self, now_s: float) -> float:
        """What the device reports: whole kOhm within its range, 0 without a measurement."""
        if not self._measured(now_s):
            return 0.0
        return min(round(self.resistance_ohm / 1000.0), MAX_RESISTANCE_OHM / 1000.0) * 1000.0

    def _imc_status(self, now_s: float, prefix: str) -> dict[str, int]:
        measured = self._measured(now_s)
        return {
            f"{prefix}_00_IsoFailure": int(
                measured and self.resistance_ohm < self.error_threshold_ohm
            ),
            f"{prefix}_01_Ground": int(self.chassis_fault),
            f"{prefix}_02_System": int(self.system_failure or bool(self.status_ext_faults)),
            f"{prefix}_03_Calibration": 0,
            f"{prefix}_04_Selftest": int(self.self_test_running(now_s)),
            f"{prefix}_05_IsoWarning": int(
                measured and self.resistance_ohm < self.warning_threshold_ohm
            ),
        }

    def info_frame(self, now_s: float) -> tuple[int, bytes]:
        """The cyclic IMD_Info as of `now_s`."""
        signals: dict[str, float] = {"II_IMC_R_ISO": self._r_iso_ohm(now_s)}
        signals.update(self._imc_status(now_s, "II_IMC_STATUS"))
        signals.update(
            {
                "II_VIFC_STATUS_00_IsoMeasurement": int(not self.measuring),
                "II_VIFC_STATUS_01_IMC_Connection": int(self.imc_connection_lost),
                "II_VIFC_STATUS_02_IMC_Alive": int(self.imc_connection_lost),
                "II_VIFC_STATUS_04_VIFC_CmdError": int(self.command_error),
                "II_VIFC_STATUS_08_Outdated": int(self.outdated),
                "II_VIFC_STATUS_12_ST_Overall": int(
                    SelfTestScenario.OVERALL not in self.self_tests_executed
                ),
                "II_VIFC_STATUS_13_ST_ParamConfig": int(
                    SelfTestScenario.PARAMETER_CONFIG not in self.self_tests_executed
                ),
            }
        )
        return INFO_ID, bytes(message(INFO_ID).encode(signals, strict=True))

    def command(self, data: bytes, now_s: float) -> tuple[int, bytes]:
        """Apply one IMD_Request; its IMD_Response (every request gets one)."""
        if len(data) < 1 or data[0] not in known_commands(REQUEST_ID):
            return self._error(UNKNOWN_COMMAND, data[0] if data else 0)
        self.requests_seen.append(data[0])
        request = message(REQUEST_ID)
        try:
            if len(data) != request.length:
                raise _InvalidError(len(data))
            signals = decode_numbers(request, data)
            _check_ranges(request, signals)
        except (cantools.database.DecodeError, ValueError, _InvalidError):
            return self._error(INVALID_PARAMETER, data[0])
        command = Command(int(signals.pop("IMD_Request_Command")))
        if self.locked and command not in ALLOWED_WHEN_LOCKED:
            return self._error(COMMAND_LOCKED, command)
        try:
            payload = self._apply(command, signals, now_s)
        except (_InvalidError, ValueError):
            return self._error(INVALID_PARAMETER, command)
        payload["IMD_Response_Command"] = int(command)
        return RESPONSE_ID, bytes(message(RESPONSE_ID).encode(payload, strict=True))

    def _apply(self, command: Command, req: dict[str, float], now_s: float) -> dict[str, float]:
        handler = _HANDLERS.get(command)
        if handler is None:  # a command in the DBC the simulation does not model
            raise _InvalidError(command)
        return handler(self, req, now_s)

    def _error(self, code: int, failed: int) -> tuple[int, bytes]:
        payload = {
            "IMD_Response_Command": int(Command.ERROR_FRAME),
            "IG_IMD_ERROR_CODE": code,
            "IG_IMD_FAILED_CMD": int(failed),
        }
        return RESPONSE_ID, bytes(message(RESPONSE_ID).encode(payload, strict=True))

    # --- one handler per command: request signals -> response signals -------------------------

    def _lock(self, req: dict[str, float], now_s: float) -> dict[str, float]:
        mode, password = int(req["MC_VIFC_LOCK_MODE"]), int(req["MC_VIFC_LOCK_PWD"])
        if LOCK_PASSWORD.get(mode) != password:
            raise _InvalidError(mode)
        self.locked = bool(mode)
        return {"IC_VIFC_LOCK_MODE": mode}

    def _measurement(self, req: dict[str, float], now_s: float) -> dict[str, float]:
        self.measuring = bool(req["MC_VIFC_MEASURE_MODE"])
        return {"IC_VIFC_MEASURE_MODE": int(self.measuring)}

    def _self_test(self, req: dict[str, float], now_s: float) -> dict[str, float]:
        scenario = int(req["MC_IMC_SELFTEST_SCR"])
        if scenario not in tuple(SelfTestScenario):
            raise _InvalidError(scenario)
        self.self_test_until_s = now_s + self.self_test_duration_s
        self.self_tests_executed.add(SelfTestScenario(scenario))
        return {"IC_IMC_SELFTEST_SCR": scenario}

    def _set_error_threshold(self, req: dict[str, float], now_s: float) -> dict[str, float]:
        self.error_threshold_ohm = req["MS_IMC_R_ISO_ERR_THR"]
        return {"IS_IMC_R_ISO_ERR_THR": self.error_threshold_ohm}

    def _set_warning_threshold(self, req: dict[str, float], now_s: float) -> dict[str, float]:
        self.warning_threshold_ohm = req["MS_IMC_R_ISO_WRN_THR"]
        return {"IS_IMC_R_ISO_WRN_THR": self.warning_threshold_ohm}

    def _set_mean_factor(self, req: dict[str, float], now_s: float) -> dict[str, float]:
        self.mean_factor = int(req["MS_IMC_MEAN_FACTOR"])
        return {"IS_IMC_MEAN_FACTOR": self.mean_factor}

    def _set_relay(self, req: dict[str, float], now_s: float) -> dict[str, float]:
        relay, closed = HvRelay(int(req["MS_VIFC_HV_RELAIS"])), bool(req["MS_VIFC_HV_RELAIS_STATE"])
        self.relays_closed[relay] = closed
        return {"IS_VIFC_HV_RELAIS": int(relay), "IS_VIFC_HV_RELAIS_STATE": int(closed)}

    def _get_relay(self, req: dict[str, float], now_s: float) -> dict[str, float]:
        relay = HvRelay(int(req["MG_VIFC_HV_RELAIS"]))
        return {
            "IG_VIFC_HV_RELAIS": int(relay),
            "IG_VIFC_HV_RELAIS_STATE": int(self.relays_closed[relay]),
        }

    def _get_r_iso(self, req: dict[str, float], now_s: float) -> dict[str, float]:
        if self._measured(now_s):
            self.measurement_count = (self.measurement_count + 1) % 256
        return {
            "IG_IMC_R_ISO": self._r_iso_ohm(now_s),
            "IG_IMC_R_ISO_BIAS": BIAS_CODE[self.fault_side],
            "IG_IMC_R_ISO_CNT": self.measurement_count,
        }

    def _get_status(self, req: dict[str, float], now_s: float) -> dict[str, float]:
        payload: dict[str, float] = dict(self._imc_status(now_s, "IG_IMC_STATUS"))
        payload.update({sig: int(sig in self.status_ext_faults) for sig in STATUS_EXT_BITS})
        return payload

    def _get_error_threshold(self, req: dict[str, float], now_s: float) -> dict[str, float]:
        return {"IG_IMC_R_ISO_ERR_THR": self.error_threshold_ohm}

    def _get_warning_threshold(self, req: dict[str, float], now_s: float) -> dict[str, float]:
        return {"IG_IMC_R_ISO_WRN_THR": self.warning_threshold_ohm}

    def _dummy(self, req: dict[str, float], now_s: float) -> dict[str, float]:
        return {"IG_VIFC_DUMMY_Reserved": 0}


_Handler = Callable[[SimulatedIso165c, dict[str, float], float], dict[str, float]]
_HANDLERS: dict[Command, _Handler] = {
    Command.DUMMY: SimulatedIso165c._dummy,
    Command.CTL_LOCK: SimulatedIso165c._lock,
    Command.CTL_MEASUREMENT: SimulatedIso165c._measurement,
    Command.CTL_SELFTEST: SimulatedIso165c._self_test,
    Command.SET_R_ISO_ERR_THR: SimulatedIso165c._set_error_threshold,
    Command.SET_R_ISO_WRN_THR: SimulatedIso165c._set_warning_threshold,
    Command.SET_MEAN_FACTOR: SimulatedIso165c._set_mean_factor,
    Command.SET_HV_RELAIS: SimulatedIso165c._set_relay,
    Command.GET_HV_RELAIS: SimulatedIso165c._get_relay,
    Command.GET_R_ISO: SimulatedIso165c._get_r_iso,
    Command.GET_STATUS: SimulatedIso165c._get_status,
    Command.GET_R_ISO_ERR_THR: SimulatedIso165c._get_error_threshold,
    Command.GET_R_ISO_WRN_THR: SimulatedIso165c._get_warning_threshold,
}


class Iso165cRunner(can.Listener):
    """Runs `device` on `bus`: IMD_Info every `info_period_s`, a response to each request.

    `start()` begins, `close()` ends (the bus stays open; its owner shuts it down). Set
    `sending_info = False` to silence the cyclic frame (a device gone quiet). `lock` guards the
    device: hold it to change several fields at once.
    """

    def __init__(
        self,
        bus: can.BusABC,
        device: SimulatedIso165c,
        info_period_s: float = INFO_CYCLE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.device = device
        self.info_period_s = info_period_s
        self.sending_info = True
        self.lock = threading.Lock()
        self.send_errors = 0
        self.bus_errors = 0
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._cycle, name="iso165c-sim", daemon=True)
        self._notifier: can.Notifier | None = None

    def start(self) -> None:
        self._notifier = can.Notifier(self.bus, [self], timeout=0.1)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        if self._notifier is not None:
            self._notifier.stop()

    def _send(self, frame: tuple[int, bytes]) -> None:
        frame_id, data = frame
        try:
            self.bus.send(can.Message(arbitration_id=frame_id, data=data, is_extended_id=False))
        except can.CanError:
            self.send_errors += 1

    def _cycle(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                if self.sending_info:
                    self._send(self.device.info_frame(self._clock()))
            self._stop.wait(self.info_period_s)

    def on_message_received(self, msg: can.Message) -> None:
        if msg.arbitration_id != REQUEST_ID or msg.is_extended_id or msg.is_remote_frame:
            return
        with self.lock:
            self._send(self.device.command(bytes(msg.data), self._clock()))

    def on_error(self, exc: Exception) -> None:
        self.bus_errors += 1
