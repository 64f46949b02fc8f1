"""The iso165C driver on real python-can buses, against the simulated device's own runner: the
`virtual` interface, and slcan over a socat pty pair (a USB-CAN adapter on a serial link)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import can
import pytest
from can.interfaces.virtual import VirtualBus

from services.master_core.drivers import iso165c_can
from services.master_core.drivers.iso165c import (
    Command,
    FaultSide,
    HvRelay,
    InsulationState,
    SelfTestScenario,
)
from services.master_core.drivers.iso165c_can import Iso165cCanDriver, as_insulation_monitor
from services.plant.devices import iso165c as device_module
from services.plant.devices.iso165c import Iso165cRunner, SimulatedIso165c

LOGGER = "services.master_core.drivers.iso165c_can"
STARTUP = (
    "unlock",
    "enable_measurement",
    "open_negative_relay",
    "open_negative_relay:read_back",
    "open_positive_relay",
    "open_positive_relay:read_back",
    "self_test",
    "averaging_factor",
    "error_threshold",
    "warning_threshold",
    "close_negative_relay",
    "close_negative_relay:read_back",
    "close_positive_relay",
    "close_positive_relay:read_back",
    "start_measurement",
)


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def _device() -> SimulatedIso165c:
    return SimulatedIso165c(resistance_ohm=2_000_000.0, self_test_duration_s=0.3)


class _Clock:
    """A settable clock shared by the driver's threads and the test."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def virtual_pair() -> Iterator[tuple[can.BusABC, can.BusABC]]:
    channel = f"iso-{uuid.uuid4().hex}"
    driver_bus = can.Bus(interface="virtual", channel=channel)
    device_bus = can.Bus(interface="virtual", channel=channel)
    yield driver_bus, device_bus
    driver_bus.shutdown()
    device_bus.shutdown()


@pytest.fixture
def running(
    virtual_pair: tuple[can.BusABC, can.BusABC],
) -> Iterator[tuple[Iso165cCanDriver, Iso165cRunner]]:
    driver_bus, device_bus = virtual_pair
    runner = Iso165cRunner(device_bus, _device(), info_period_s=0.05)
    driver = Iso165cCanDriver(driver_bus, stale_after_s=1.5)
    runner.start()
    yield driver, runner
    driver.close()
    runner.close()


def _state(driver: Iso165cCanDriver) -> InsulationState:
    return driver.reading(time.monotonic()).state


def test_startup_follows_foxbms_then_every_state_reads_through(
    running: tuple[Iso165cCanDriver, Iso165cRunner],
) -> None:
    driver, runner = running
    device = runner.device
    result = driver.initialize(error_threshold_ohm=500_000.0, warning_threshold_ohm=750_000.0)
    assert result.ok, result
    assert result.done == STARTUP
    assert not device.self_test_running(time.monotonic()), "waited for the self-test's end"
    assert not device.locked and device.measuring and device.mean_factor == 10
    assert (device.error_threshold_ohm, device.warning_threshold_ohm) == (500_000.0, 750_000.0)
    assert device.relays_closed == {HvRelay.NEGATIVE: True, HvRelay.POSITIVE: True}
    assert device.self_tests_executed == {SelfTestScenario.OVERALL}
    assert device.requests_seen == [
        0xCA, 0xCB, 0xD2, 0xDD, 0xD2, 0xDD, 0x21, 0x2B, 0x28, 0x29, 0xD2, 0xDD, 0xD2, 0xDD, 0xCB,
    ]  # fmt: skip
    assert driver.command_errors() == {}
    assert wait_until(lambda: _state(driver) is InsulationState.MEASURING)
    reading = driver.reading(time.monotonic())
    assert reading.resistance_ohm == 2_000_000.0 and reading.errors == ()
    assert reading.self_test_executed

    device.resistance_ohm = 600_000.0  # below the 750 kOhm warning threshold just set
    assert wait_until(lambda: _state(driver) is InsulationState.WARNING)
    assert driver.reading(time.monotonic()).resistance_ohm == 600_000.0
    device.resistance_ohm = 420_000.0  # below the 500 kOhm error threshold: kept, and an alarm
    assert wait_until(lambda: _state(driver) is InsulationState.ALARM)
    reading = driver.reading(time.monotonic())
    assert reading.resistance_ohm == 420_000.0
    assert reading.errors == ("insulation_fault", "insulation_warning")

    device.system_failure = True
    assert wait_until(lambda: _state(driver) is InsulationState.DEVICE_ERROR)
    assert driver.reading(time.monotonic()).resistance_ohm is None
    device.system_failure = False
    assert wait_until(lambda: _state(driver) is InsulationState.ALARM)

    # the device goes silent: after the timeout the value is unknown, never the last one
    runner.sending_info = False
    assert wait_until(lambda: _state(driver) is InsulationState.STALE)
    reading = driver.reading(time.monotonic())
    assert reading.resistance_ohm is None and reading.stale
    assert reading.errors == ("info:stale",)
    assert as_insulation_monitor(driver) is driver


def test_a_self_test_already_run_is_not_repeated(
    running: tuple[Iso165cCanDriver, Iso165cRunner],
) -> None:
    driver, runner = running
    runner.device.self_tests_executed = {SelfTestScenario.PARAMETER_CONFIG}
    result = driver.initialize(500_000.0, 750_000.0)
    assert result.ok and "self_test" not in result.done
    assert Command.CTL_SELFTEST not in runner.device.requests_seen


def test_a_refused_step_ends_the_startup_named_counted_and_logged(
    running: tuple[Iso165cCanDriver, Iso165cRunner],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver, runner = running

    def refuse(*_: object) -> dict[str, float]:
        raise device_module._InvalidError("mean factor")

    monkeypatch.setitem(device_module._HANDLERS, Command.SET_MEAN_FACTOR, refuse)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    result = driver.initialize(500_000.0, 750_000.0)
    assert not result.ok
    assert result.failed_step == "averaging_factor"
    assert result.reason is not None and "refused" in result.reason
    assert result.done[-1] == "self_test"
    assert driver.command_errors() == {"S_IMC_SET_MEAN_FACTOR": 1}
    assert Command.SET_R_ISO_ERR_THR not in runner.device.requests_seen
    assert [r.getMessage() for r in caplog.records] == [
        "iso165C: start-up step averaging_factor failed: refused by the device (error response)"
    ]
    condition = "command_rejected:S_IMC_SET_MEAN_FACTOR:VIFC_InvalidParameter"
    assert wait_until(lambda: condition in driver.reading(time.monotonic()).errors)


def test_a_setting_the_device_does_not_echo_ends_the_startup(
    running: tuple[Iso165cCanDriver, Iso165cRunner], monkeypatch: pytest.MonkeyPatch
) -> None:
    driver, runner = running

    def keep_old(*_: object) -> dict[str, float]:
        return {"IS_IMC_R_ISO_ERR_THR": runner.device.error_threshold_ohm}

    monkeypatch.setitem(device_module._HANDLERS, Command.SET_R_ISO_ERR_THR, keep_old)
    result = driver.initialize(500_000.0, 750_000.0)
    assert not result.ok and result.failed_step == "error_threshold"
    assert result.reason == "response does not echo the request: {'IS_IMC_R_ISO_ERR_THR': 100000.0}"
    assert driver.command_errors() == {}


def test_a_silent_device_fails_the_startup_after_three_attempts(
    virtual_pair: tuple[can.BusABC, can.BusABC],
) -> None:
    driver_bus, device_bus = virtual_pair
    driver = Iso165cCanDriver(driver_bus, stale_after_s=0.5)
    try:
        result = driver.initialize(500_000.0, 750_000.0, response_timeout_s=0.1)
        assert result == iso165c_can.InitResult(
            ok=False, done=(), failed_step="unlock", reason="no response after 3 attempts"
        )
        sent = []
        while (msg := device_bus.recv(timeout=0.2)) is not None:
            sent.append(bytes(msg.data))
        assert sent == [bytes.fromhex("ca00000000")] * 3
    finally:
        driver.close()


def test_polling_brings_the_fault_side_and_the_internal_self_test_results(
    running: tuple[Iso165cCanDriver, Iso165cRunner],
) -> None:
    driver, runner = running
    assert driver.initialize(500_000.0, 750_000.0).ok
    runner.device.resistance_ohm = 100_000.0
    runner.device.fault_side = FaultSide.HV_PLUS
    driver.start_polling(interval_s=0.05)
    assert wait_until(lambda: driver.reading(time.monotonic()).fault_side is FaultSide.HV_PLUS)
    assert driver.acknowledged(Command.GET_STATUS) > 0
    runner.device.status_ext_faults = {"IG_IMC_STATUS_EXT_02_EEPROM"}
    assert wait_until(lambda: "imc:eeprom_parameter" in driver.reading(time.monotonic()).errors)
    assert _state(driver) is InsulationState.DEVICE_ERROR
    assert driver.reading(time.monotonic()).resistance_ohm is None


def test_bad_frames_are_counted_logged_at_a_limited_rate_and_reception_goes_on(
    virtual_pair: tuple[can.BusABC, can.BusABC], caplog: pytest.LogCaptureFixture
) -> None:
    driver_bus, device_bus = virtual_pair
    clock = _Clock()
    driver = Iso165cCanDriver(driver_bus, stale_after_s=1.0, clock=clock, log_interval_s=60.0)
    device = SimulatedIso165c(resistance_ohm=800_000.0, measuring=True)
    caplog.set_level(logging.WARNING, logger=LOGGER)

    def send(frame_id: int, data: bytes, **kwargs: bool) -> None:
        device_bus.send(can.Message(arbitration_id=frame_id, data=data, **kwargs))

    try:
        for _ in range(3):
            send(0x38, bytes(6), is_extended_id=False)
            send(0x37, bytes(4), is_extended_id=False)
            send(0x23, bytes.fromhex("9900000000"), is_extended_id=False)
            send(0x37, bytes(6), is_extended_id=True)
            device_bus.send(can.Message(arbitration_id=0x37, is_remote_frame=True, dlc=6))
        send(*device.info_frame(clock.now_s), is_extended_id=False)
        assert wait_until(lambda: driver.reading(clock.now_s).resistance_ohm == 800_000.0)
        assert driver.rejected() == {
            "unknown_id": 6,
            "wrong_length": 3,
            "unknown_command": 3,
            "not_a_data_frame": 3,
        }
        assert len(caplog.records) == 4  # one line per reason within the interval
        clock.now_s += 61.0
        send(0x38, bytes(6), is_extended_id=False)
        assert wait_until(lambda: len(caplog.records) == 5)
        assert caplog.records[-1].getMessage().endswith("(5 more not logged)")
    finally:
        driver.close()


class _FlakyBus(VirtualBus):
    """A virtual bus whose receive fails twice, like a USB adapter hiccup."""

    failures = 2

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        if self.failures:
            self.failures -= 1
            raise can.CanOperationError("adapter hiccup")
        return super()._recv_internal(timeout)


def test_a_failing_receive_is_counted_and_does_not_stop_reception() -> None:
    channel = f"iso-{uuid.uuid4().hex}"
    driver_bus = _FlakyBus(channel=channel)
    device_bus = can.Bus(interface="virtual", channel=channel)
    driver = Iso165cCanDriver(driver_bus, stale_after_s=1.0)
    runner = Iso165cRunner(device_bus, _device(), info_period_s=0.05)
    try:
        assert wait_until(lambda: driver.bus_errors == 2)
        runner.start()
        assert wait_until(lambda: not driver.reading(time.monotonic()).stale)
    finally:
        driver.close()
        runner.close()
        driver_bus.shutdown()
        device_bus.shutdown()


@pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed")
def test_the_driver_over_slcan_on_a_serial_link(tmp_path: Path) -> None:
    driver_end, device_end = tmp_path / "bms", tmp_path / "imd"
    socat = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={driver_end}", f"pty,raw,echo=0,link={device_end}"],
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(lambda: driver_end.exists() and device_end.exists())
        driver_bus = can.Bus(interface="slcan", channel=str(driver_end), sleep_after_open=0)
        device_bus = can.Bus(interface="slcan", channel=str(device_end), sleep_after_open=0)
        runner = Iso165cRunner(device_bus, _device(), info_period_s=0.1)
        driver = Iso165cCanDriver(driver_bus, stale_after_s=1.0)
        runner.start()
        try:
            result = driver.initialize(500_000.0, 750_000.0, response_timeout_s=1.0)
            assert result.ok and result.done == STARTUP, result
            assert wait_until(lambda: _state(driver) is InsulationState.MEASURING)
            assert driver.reading(time.monotonic()).resistance_ohm == 2_000_000.0
            # bad input over the link: a short info frame, an unknown id, a garbled slcan line
            with runner.lock:
                for frame_id, data in ((0x37, bytes(3)), (0x40, bytes(6))):
                    device_bus.send(
                        can.Message(arbitration_id=frame_id, data=data, is_extended_id=False)
                    )
                line = os.open(device_end, os.O_WRONLY | os.O_NOCTTY)
                try:
                    os.write(line, b"tZZZ6\r")
                finally:
                    os.close(line)
            assert wait_until(lambda: driver.rejected() == {"wrong_length": 1, "unknown_id": 1})
            assert wait_until(lambda: driver.bus_errors == 1)
            runner.device.resistance_ohm = 450_000.0
            assert wait_until(lambda: _state(driver) is InsulationState.ALARM)
            runner.device.chassis_fault = True
            assert wait_until(lambda: _state(driver) is InsulationState.DEVICE_ERROR)
            runner.sending_info = False
            assert wait_until(lambda: _state(driver) is InsulationState.STALE, 3.0)
        finally:
            driver.close()
            runner.close()
            driver_bus.shutdown()
            device_bus.shutdown()
    finally:
        socat.kill()
        socat.wait()
