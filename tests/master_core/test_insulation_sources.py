"""The iso165C as the master reads it: `DevicePackIo` with `insulation_monitor.driver=iso165c`
against the simulated device on python-can `virtual` (the current sensor and the monitor on one
channel, as a real installation often wires them)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import can
import pytest

from services.master_core.devices import DevicePackIo
from services.master_core.hardware import INSULATION_MONITOR, HardwareReading
from services.plant.devices.iso165c import Iso165cRunner, SimulatedIso165c
from services.plant.devices.relay import RelayModule
from shared.config import SystemConfig
from tests.master_core.test_devices import IvtSRunner, free_port, system_config

_channels = itertools.count()


@dataclass
class Rig:
    io: DevicePackIo
    device: SimulatedIso165c
    runner: Iso165cRunner


def iso_config(channel: str, port: int, **protection: float) -> SystemConfig:
    base = system_config("virtual", channel, {"transport": "tcp", "tcp_port": port})
    data = base.model_dump(mode="json")
    data["insulation_monitor"] = {
        "driver": "iso165c", "can": {"interface": "virtual", "channel": channel,
                                     "stale_after_s": 1.0},
    }  # fmt: skip
    data["protection"] |= protection
    return SystemConfig.model_validate(data)


@pytest.fixture
def rig() -> Iterator[Rig]:
    channel = f"iso-{next(_channels)}"
    relay = RelayModule(follow_delay_s=0.01)
    port = free_port()
    relay.start_tcp(port)
    ivt = IvtSRunner(can.Bus(interface="virtual", channel=channel))
    device = SimulatedIso165c(self_test_duration_s=0.3)
    runner = Iso165cRunner(can.Bus(interface="virtual", channel=channel), device, 0.1)
    runner.start()
    io = DevicePackIo(iso_config(channel, port))
    try:
        yield Rig(io, device, runner)
    finally:
        io.close()
        runner.close()
        runner.bus.shutdown()
        ivt.stop()
        relay.stop()


def read_until(
    io: DevicePackIo, ok: Callable[[HardwareReading], bool], timeout_s: float = 15.0
) -> HardwareReading:
    deadline = time.monotonic() + timeout_s
    reading = io.read(time.monotonic())
    while not ok(reading) and time.monotonic() < deadline:
        time.sleep(0.05)
        reading = io.read(time.monotonic())
    return reading


def test_the_start_up_sets_the_protection_thresholds_and_the_resistance_arrives(rig: Rig) -> None:
    first = rig.io.read(time.monotonic())
    assert first.insulation_monitor and rig.io.has_insulation_monitor
    # while the start-up runs the value is unknown, and that is not a device failure
    assert first.insulation_ohm is None and INSULATION_MONITOR not in first.device_errors
    reading = read_until(rig.io, lambda r: r.insulation_ohm is not None)
    assert reading.insulation_ohm == pytest.approx(10e6, rel=0.01)
    assert INSULATION_MONITOR not in reading.device_errors
    protection = rig.io.config.protection
    with rig.runner.lock:
        assert rig.device.error_threshold_ohm == protection.insulation_fault_ohm
        assert rig.device.warning_threshold_ohm == protection.insulation_warning_ohm
        assert rig.device.measuring and not rig.device.locked


def test_an_insulation_fault_is_a_measurement_a_device_error_is_a_failure(rig: Rig) -> None:
    read_until(rig.io, lambda r: r.insulation_ohm is not None)
    with rig.runner.lock:
        rig.device.resistance_ohm = 200_000.0
    low = read_until(rig.io, lambda r: (r.insulation_ohm or 1e9) < 300_000.0)
    assert low.insulation_ohm == pytest.approx(200_000.0, rel=0.01)
    assert INSULATION_MONITOR not in low.device_errors
    with rig.runner.lock:
        rig.device.system_failure = True
    failed = read_until(rig.io, lambda r: INSULATION_MONITOR in r.device_errors)
    assert failed.insulation_ohm is None
    assert "system_failure" in failed.device_errors[INSULATION_MONITOR]


def test_a_silent_monitor_reads_none_with_an_error(rig: Rig) -> None:
    read_until(rig.io, lambda r: r.insulation_ohm is not None)
    with rig.runner.lock:
        rig.runner.sending_info = False
    silent = read_until(rig.io, lambda r: INSULATION_MONITOR in r.device_errors)
    assert silent.insulation_ohm is None
    assert silent.device_errors[INSULATION_MONITOR] == ("info:stale",)


def test_a_monitor_that_never_answers_fails_its_start_up_with_the_step_named() -> None:
    channel = f"iso-{next(_channels)}"
    relay = RelayModule(follow_delay_s=0.01)
    port = free_port()
    relay.start_tcp(port)
    ivt = IvtSRunner(can.Bus(interface="virtual", channel=channel))
    io = DevicePackIo(iso_config(channel, port))
    try:
        reading = read_until(io, lambda r: INSULATION_MONITOR in r.device_errors, 20.0)
        assert reading.insulation_ohm is None
        (error,) = reading.device_errors[INSULATION_MONITOR]
        assert error.startswith("start-up failed at unlock"), error
    finally:
        io.close()
        ivt.stop()
        relay.stop()


def test_thresholds_outside_the_device_range_are_refused_by_the_configuration() -> None:
    with pytest.raises(ValueError, match="outside the iso165C's range"):
        iso_config("x", 1502, insulation_warning_ohm=5e6)
