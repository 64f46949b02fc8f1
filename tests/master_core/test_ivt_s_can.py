"""The IVT-S driver on real python-can buses: the `virtual` interface and slcan over a socat pty
pair (a USB-CAN adapter on a serial link). The simulated sensor sits on the other end."""

from __future__ import annotations

import logging
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import can
import pytest
from can.interfaces.virtual import VirtualBus

from services.master_core.drivers.ivt_s import Quantity, TriggerMode
from services.master_core.drivers.ivt_s_can import IvtSCanDriver
from services.plant.devices.ivt_s import SimulatedIvtS, send, serve_commands


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def _sim() -> SimulatedIvtS:
    sim = SimulatedIvtS()
    sim.values.update(
        {
            Quantity.CURRENT_A: -12.345,
            Quantity.U1_V: 402.5,
            Quantity.U2_V: 401.9,
            Quantity.U3_V: 0.0,
            Quantity.TEMPERATURE_C: 23.4,
        }
    )
    return sim


@pytest.fixture
def virtual_pair() -> Iterator[tuple[can.BusABC, can.BusABC]]:
    channel = f"ivt-{uuid.uuid4().hex}"
    driver_bus = can.Bus(interface="virtual", channel=channel)
    sensor_bus = can.Bus(interface="virtual", channel=channel)
    yield driver_bus, sensor_bus
    driver_bus.shutdown()
    sensor_bus.shutdown()


def test_readings_flow_over_the_virtual_bus(virtual_pair: tuple[can.BusABC, can.BusABC]) -> None:
    driver_bus, sensor_bus = virtual_pair
    driver, sim = IvtSCanDriver(driver_bus, stale_after_s=0.5), _sim()
    try:
        send(sensor_bus, sim.round())
        assert wait_until(lambda: not driver.reading(time.monotonic()).stale)
        reading = driver.reading(time.monotonic())
        assert reading.current_a == pytest.approx(-12.345)
        assert reading.u1_v == pytest.approx(402.5)
        assert reading.u2_v == pytest.approx(401.9)
        assert reading.u3_v == pytest.approx(0.0)
        assert reading.temperature_c == pytest.approx(23.4)
        assert reading.errors == ()
        # the sensor goes silent: after the timeout every value is unknown, never the last one
        assert wait_until(lambda: driver.reading(time.monotonic()).stale, 2.0)
        reading = driver.reading(time.monotonic())
        assert reading.current_a is None and reading.u1_v is None
        assert "current_a:stale" in reading.errors
    finally:
        driver.close()


def test_bad_frames_are_counted_logged_once_and_reception_goes_on(
    virtual_pair: tuple[can.BusABC, can.BusABC], caplog: pytest.LogCaptureFixture
) -> None:
    driver_bus, sensor_bus = virtual_pair
    driver, sim = IvtSCanDriver(driver_bus, stale_after_s=1.0), _sim()
    caplog.set_level(logging.WARNING, logger="services.master_core.drivers.ivt_s_can")
    try:
        for _ in range(3):
            send(sensor_bus, [(0x530, bytes(6)), (0x521, bytes(3))])
            sensor_bus.send(can.Message(arbitration_id=0x521, is_remote_frame=True, dlc=6))
            sensor_bus.send(can.Message(arbitration_id=0x521, data=bytes(6), is_extended_id=True))
        sim.counters[Quantity.CURRENT_A] = 7  # a lost frame before this one
        send(sensor_bus, sim.round())
        assert wait_until(lambda: driver.reading(time.monotonic()).current_a is not None)
        assert driver.rejected() == {"unknown_id": 6, "wrong_length": 3, "not_a_data_frame": 3}
        assert len(caplog.records) == 3
        sim.values[Quantity.CURRENT_A] = 5.0
        send(sensor_bus, sim.round())
        assert wait_until(lambda: driver.reading(time.monotonic()).current_a == 5.0)
        assert driver.counter_gaps() == {}
        sim.counters[Quantity.CURRENT_A] = 3
        send(sensor_bus, sim.round())
        assert wait_until(lambda: driver.counter_gaps() == {"current_a": 1})
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
    channel = f"ivt-{uuid.uuid4().hex}"
    driver_bus, sensor_bus = (
        _FlakyBus(channel=channel),
        can.Bus(interface="virtual", channel=channel),
    )
    driver, sim = IvtSCanDriver(driver_bus, stale_after_s=1.0), _sim()
    try:
        assert wait_until(lambda: driver.bus_errors == 2)
        send(sensor_bus, sim.round())
        assert wait_until(lambda: driver.reading(time.monotonic()).current_a is not None)
    finally:
        driver.close()
        driver_bus.shutdown()
        sensor_bus.shutdown()


def test_configuration_commands_reach_the_sensor_and_are_acknowledged(
    virtual_pair: tuple[can.BusABC, can.BusABC],
) -> None:
    driver_bus, sensor_bus = virtual_pair
    driver, sim = IvtSCanDriver(driver_bus, stale_after_s=1.0), _sim()
    try:
        driver.configure(
            [(Quantity.U3_V, TriggerMode.DISABLED, 0), (Quantity.CURRENT_A, TriggerMode.CYCLIC, 10)]
        )
        assert serve_commands(sensor_bus, sim, timeout_s=0.5) == 4
        assert sim.running
        assert sim.trigger[Quantity.U3_V] is TriggerMode.DISABLED
        assert sim.cycle_ms[Quantity.CURRENT_A] == 10
        assert wait_until(lambda: driver.acknowledged(0x34) == 2 and driver.acknowledged(0x23) == 1)
        assert driver.acknowledged(0x20) == 1
        assert Quantity.U3_V.frame_id not in {fid for fid, _ in sim.round()}
    finally:
        driver.close()


@pytest.fixture
def slcan_link(tmp_path: Path) -> Iterator[tuple[can.BusABC, can.BusABC, Path]]:
    """slcan on both ends of a socat pty pair (a USB-CAN adapter on a serial link): the
    driver's bus, the sensor's bus, and the sensor end's path for raw lines."""
    driver_end, sensor_end = tmp_path / "bms", tmp_path / "ivt"
    socat = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={driver_end}", f"pty,raw,echo=0,link={sensor_end}"],
        stderr=subprocess.DEVNULL,
    )
    assert wait_until(lambda: driver_end.exists() and sensor_end.exists())
    driver_bus = can.Bus(interface="slcan", channel=str(driver_end), sleep_after_open=0)
    sensor_bus = can.Bus(interface="slcan", channel=str(sensor_end), sleep_after_open=0)
    try:
        yield driver_bus, sensor_bus, sensor_end
    finally:
        driver_bus.shutdown()
        sensor_bus.shutdown()
        socat.kill()
        socat.wait()


def write_line(end: Path, data: bytes) -> None:
    """Raw bytes onto the serial line, as a garbled adapter would send them."""
    line = os.open(end, os.O_WRONLY | os.O_NOCTTY)
    try:
        os.write(line, data)
    finally:
        os.close(line)


def test_the_driver_over_slcan_on_a_serial_link(
    slcan_link: tuple[can.BusABC, can.BusABC, Path],
) -> None:
    driver_bus, sensor_bus, sensor_end = slcan_link
    driver, sim = IvtSCanDriver(driver_bus, stale_after_s=1.0), _sim()
    try:
        send(sensor_bus, sim.round())
        assert wait_until(lambda: not driver.reading(time.monotonic()).stale)
        assert driver.reading(time.monotonic()).current_a == pytest.approx(-12.345)
        # bad frames: an unknown id, a short result frame, and a garbled slcan line
        send(sensor_bus, [(0x530, bytes(6)), (0x522, bytes(2))])
        write_line(sensor_end, b"tZZZ6\r")
        assert wait_until(lambda: driver.rejected() == {"unknown_id": 1, "wrong_length": 1})
        assert wait_until(lambda: driver.bus_errors == 1)
        sim.values[Quantity.U1_V] = 123.456
        send(sensor_bus, sim.round())
        assert wait_until(lambda: driver.reading(time.monotonic()).u1_v == pytest.approx(123.456))
        # the sensor end answers the configuration commands over the same link
        driver.configure([(Quantity.U3_V, TriggerMode.DISABLED, 0)])
        assert serve_commands(sensor_bus, sim, timeout_s=1.0) == 3
        assert wait_until(lambda: driver.acknowledged(0x34) == 2 and driver.acknowledged(0x23) == 1)
    finally:
        driver.close()


def test_an_undecodable_serial_line_does_not_silence_the_sensor(
    slcan_link: tuple[can.BusABC, can.BusABC, Path],
) -> None:
    """Found from outside on the CAN gateway: python-can's slcan keeps an undecodable line
    (`\\xff\\r`) in its buffer and fails on every later read. The driver's Notifier clears the
    line after an error, so the sensor's next results arrive."""
    driver_bus, sensor_bus, sensor_end = slcan_link
    driver, sim = IvtSCanDriver(driver_bus, stale_after_s=1.0), _sim()
    try:
        send(sensor_bus, sim.round())
        assert wait_until(lambda: not driver.reading(time.monotonic()).stale)
        write_line(sensor_end, b"\xff\r")
        assert wait_until(lambda: driver.bus_errors == 1)
        sim.values[Quantity.U1_V] = 111.0

        def fresh() -> bool:
            send(sensor_bus, sim.round())
            return driver.reading(time.monotonic()).u1_v == pytest.approx(111.0)

        assert wait_until(fresh)
        assert driver.bus_errors == 1
    finally:
        driver.close()
