"""The running plant read by the production drivers over real transports: the master's IVT-S
driver on CAN (udp_multicast across sockets, virtual in process), its Modbus relay driver and
the slave agent's board driver over Modbus TCP.

Run in a private network namespace (see helper rules); udp_multicast there needs
`ip link set lo multicast on; ip route add 224.0.0.0/4 dev lo`.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import can
import numpy as np
import pytest

from services.master_core.contactors import ContactorFeedback
from services.master_core.drivers.contactor_io import ModbusContactorIo
from services.master_core.drivers.ivt_s import (
    SET_CONFIG_RESULT,
    SET_MODE,
    CurrentSensorReading,
    Quantity,
    TriggerMode,
)
from services.master_core.drivers.ivt_s_can import IvtSCanDriver
from services.plant.core import CoilState
from services.plant.service import PlantService
from services.plant.settings import DEFAULT_BOARD_MAP, PlantSettings
from services.slave_agent.driver import DriverError
from services.slave_agent.modbus_boot import load_board_map
from services.slave_agent.modbus_driver import ModbusBoardDriver
from services.slave_agent.modbus_map import SerialSettings
from services.slave_agent.sim import MeasurementParams
from shared.broker import free_port
from shared.bus.memory import InMemoryBroker, InMemoryBus
from shared.config import DeviceCanConfig, SystemConfig, demo_config
from shared.messages import ChannelFlag, PlantControl
from shared.topics import PLANT_CONTROL
from tests.plant.conftest import require_multicast

PROFILE_A = 20.0
WAIT_S = 10.0


def wait_for(what: str, check: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@dataclass
class RunningPlant:
    service: PlantService
    config: SystemConfig
    settings: PlantSettings
    can_args: dict[str, str]

    def inject(self, **fields: object) -> None:
        control = PlantControl(**fields)  # type: ignore[arg-type]
        self.service.bus.publish(PLANT_CONTROL, control)


def close_coils(**on: bool) -> CoilState:
    return CoilState(**on)


@pytest.fixture(params=["udp_multicast", "virtual"])
def plant(request: pytest.FixtureRequest) -> Iterator[RunningPlant]:
    if request.param == "udp_multicast":
        require_multicast()
        can_args = {"interface": "udp_multicast", "channel": "239.74.163.9"}
    else:
        can_args = {"interface": "virtual", "channel": f"plant-{uuid.uuid4().hex}"}
    relay_port = free_port()
    base = demo_config()
    io = base.contactors.io.model_copy(update={"tcp_port": relay_port})
    ivt = base.current_sensor.model_copy(update={"can": DeviceCanConfig(**can_args)})
    config = base.model_copy(
        update={"contactors": base.contactors.model_copy(update={"io": io}), "current_sensor": ivt}
    )
    settings = PlantSettings(
        boards_port=free_port(),
        devices="boards,relay,ivt_s",
        load_profile=f"constant:{PROFILE_A}",
        current_noise_a=0.0,
    )
    bus = InMemoryBus(InMemoryBroker(), system="demo", service="plant", kind="plant")
    bus.start()
    service = PlantService(settings, bus)
    service.apply_config(config)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop.is_set,), name="plant")
    thread.start()
    try:
        yield RunningPlant(service, config, settings, can_args)
    finally:
        stop.set()
        thread.join(timeout=10.0)
        service.stop()


@pytest.fixture
def ivt(plant: RunningPlant) -> Iterator[IvtSCanDriver]:
    bus = can.Bus(**plant.can_args)
    driver = IvtSCanDriver(bus, stale_after_s=0.5)
    yield driver
    driver.close()
    bus.shutdown()


@pytest.fixture
def relay(plant: RunningPlant) -> Iterator[ModbusContactorIo]:
    io = ModbusContactorIo(plant.config.contactors.io)
    yield io
    io.close()


@pytest.fixture
def boards(plant: RunningPlant) -> Iterator[ModbusBoardDriver]:
    board_map = load_board_map(DEFAULT_BOARD_MAP, plant.config)
    link = SerialSettings(port=f"tcp://127.0.0.1:{plant.settings.boards_port}", timeout_s=1.0)
    driver = ModbusBoardDriver(link, board_map, range(plant.config.topology.modules))
    yield driver
    driver.close()


def fresh(ivt: IvtSCanDriver) -> CurrentSensorReading:
    return ivt.reading(time.monotonic())


def test_ivt_s_driver_reads_string_voltage_and_no_current_with_contacts_open(
    plant: RunningPlant, ivt: IvtSCanDriver
) -> None:
    wait_for("IVT-S results", lambda: not fresh(ivt).stale)
    r = fresh(ivt)
    assert r.errors == ()
    assert r.current_a == 0.0
    assert r.u1_v == pytest.approx(plant.service.core.state().string_voltage_v, abs=0.5)  # type: ignore[union-attr]
    assert r.u2_v == 0.0
    assert r.temperature_c == pytest.approx(25.0)


def test_coils_through_the_relay_driver_precharge_the_link_then_current_flows(
    plant: RunningPlant, ivt: IvtSCanDriver, relay: ModbusContactorIo
) -> None:
    wait_for("IVT-S results", lambda: not fresh(ivt).stale)
    u1 = fresh(ivt).u1_v
    assert u1 is not None and u1 > 300.0

    relay.write(close_coils(main_negative=True, precharge=True))
    assert relay.read(time.monotonic()).errors == ()

    def feedback_is(**want: bool) -> Callable[[], bool]:
        def check() -> bool:
            fb = relay.read(time.monotonic())
            return not fb.stale and all(fb.contact(n) is v for n, v in want.items())  # type: ignore[arg-type]

        return check

    wait_for("precharge contacts", feedback_is(main_negative=True, precharge=True))
    diff_v = plant.config.contactors.precharge_voltage_diff_v
    wait_for("U2 within the precharge band", lambda: (fresh(ivt).u2_v or 0.0) > u1 - diff_v)
    # No load current through precharge once the link is charged; none with main positive open.
    assert abs(fresh(ivt).current_a or 0.0) < 1.0

    relay.write(close_coils(main_negative=True, main_positive=True))
    wait_for("main contacts", feedback_is(main_positive=True, main_negative=True, precharge=False))
    wait_for("the load current", lambda: fresh(ivt).current_a == pytest.approx(PROFILE_A, abs=0.01))
    assert fresh(ivt).u2_v == pytest.approx(fresh(ivt).u1_v, abs=0.5)

    relay.write(close_coils())
    wait_for("contacts open", feedback_is(main_positive=False, main_negative=False))
    wait_for("no current", lambda: fresh(ivt).current_a == 0.0)


def test_sensor_and_contactor_faults_show_on_the_wire(
    plant: RunningPlant, ivt: IvtSCanDriver, relay: ModbusContactorIo
) -> None:
    wait_for("IVT-S results", lambda: not fresh(ivt).stale)
    plant.inject(fault="current_offset", value=2.5)
    wait_for("the offset", lambda: fresh(ivt).current_a == pytest.approx(2.5, abs=0.01))
    plant.inject(fault="feedback_stuck", contactor="precharge", value=1)
    wait_for("stuck precharge feedback", lambda: relay.read(time.monotonic()).precharge is True)
    plant.inject(fault="contactor_weld", contactor="main_negative")
    wait_for("welded main negative", lambda: relay.read(time.monotonic()).main_negative is True)
    plant.inject(fault="current_dropout")
    wait_for("a silent sensor", lambda: fresh(ivt).stale and fresh(ivt).current_a is None)
    plant.inject(fault="clear")
    wait_for("the sensor back", lambda: not fresh(ivt).stale)
    wait_for(
        "feedback follows the (open) coils again",
        lambda: relay.read(time.monotonic()).to_feedback() == ContactorFeedback(),
    )


def test_slave_agent_driver_reads_the_simulated_boards_and_balances_over_tcp(
    plant: RunningPlant, boards: ModbusBoardDriver
) -> None:
    core = plant.service.core
    assert core is not None
    n = plant.config.topology.cells_per_module
    bound = MeasurementParams()
    for m in range(plant.config.topology.modules):
        reading = boards.read(m)
        true_mv = core.truth(m).cell_v * 1000.0
        # within the measurement chain's worst case (offset + noise + quantisation), and
        # different per module (each board serves its own cells)
        assert (
            np.abs(np.array(reading.cell_mv) - true_mv).max() <= bound.voltage_error_bound_v * 1000
        )
        assert reading.cell_flags == [0] * n
        assert reading.temp_c == pytest.approx(
            core.truth(m).sensor_temp_c.tolist(), abs=bound.temp_error_bound_c + 0.05
        )
    assert boards.read(0).cell_mv != boards.read(1).cell_mv

    switches = [i % 3 == 0 for i in range(n)]
    boards.set_balancing(2, switches, [False] * n)
    wait_for(
        "bleed resistors on",
        lambda: core.cells.modules[2].balancing.tolist() == switches,
    )
    plant.inject(fault="open_wire", module=3, channel=4)
    wait_for(
        "an open-wire flag",
        lambda: bool(boards.read(3).cell_flags[4] & ChannelFlag.OPEN_WIRE),
    )
    plant.inject(fault="board_dropout", module=1)
    time.sleep(0.3)
    with pytest.raises(DriverError, match=r"module 1 \(unit id 2\)"):
        boards.read(1)
    boards.read(0)  # the others still answer


def test_ivt_s_takes_its_configuration_commands_like_the_real_one(
    plant: RunningPlant, ivt: IvtSCanDriver
) -> None:
    wait_for("IVT-S results", lambda: not fresh(ivt).stale)
    ivt.configure([(Quantity.CURRENT_A, TriggerMode.CYCLIC, 200)])
    wait_for("stop, configure and run acknowledged", lambda: ivt.acknowledged(SET_MODE) >= 2)
    assert ivt.acknowledged(SET_CONFIG_RESULT + Quantity.CURRENT_A.value) == 1
    # The current now comes every 200 ms: about 5 frames a second instead of 50.
    gaps = dict(ivt.counter_gaps())
    before = ivt.core._last_count[Quantity.CURRENT_A]
    time.sleep(1.0)
    after = ivt.core._last_count[Quantity.CURRENT_A]
    assert (after - before) % 16 in range(3, 8)
    assert ivt.counter_gaps() == gaps
