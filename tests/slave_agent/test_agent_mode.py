"""The agent loop on a mode switch: standby clears balancing on every hosted module, with one
switch per cell, for every driver (the simulated one refused an empty list with a ValueError)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from services.slave_agent.driver import DriverError, ModuleReading
from services.slave_agent.service import SlaveAgent
from services.slave_agent.settings import SlaveAgentSettings
from services.slave_agent.sim_driver import SimulatedDriver
from shared.bus import InMemoryBroker, InMemoryBus
from shared.config import SystemConfig
from shared.messages import ConfigMessage, SlaveModeCommand
from shared.topics import CONFIG, SLAVE_MODE

CONFIG_2X4 = SystemConfig.from_preset("NMC", system_id="demo", modules=2, cells_per_module=4)


class RecordingDriver(SimulatedDriver):
    """The simulated driver, recording every balancing call it accepted."""

    def __init__(self, config: SystemConfig, modules: list[int]) -> None:
        super().__init__(config, modules)
        self.calls: list[tuple[int, list[bool], list[bool]]] = []

    def set_balancing(self, module: int, discharge: Sequence[bool], charge: Sequence[bool]) -> None:
        super().set_balancing(module, discharge, charge)
        self.calls.append((module, list(discharge), list(charge)))


def agent() -> tuple[SlaveAgent, InMemoryBus, list[RecordingDriver]]:
    broker = InMemoryBroker()
    bus = InMemoryBus(broker, system="demo", service="slave_agent", kind="slave_agent")
    drivers: list[RecordingDriver] = []

    def factory(config: SystemConfig, modules: list[int]) -> RecordingDriver:
        drivers.append(RecordingDriver(config, modules))
        return drivers[-1]

    a = SlaveAgent(SlaveAgentSettings(), bus, factory)
    bus.start()
    master = InMemoryBus(broker, system="demo", service="master_core", kind="master_core")
    master.start()
    master.publish(CONFIG, ConfigMessage(config=CONFIG_2X4))
    bus.process()
    assert a.driver is not None
    return a, master, drivers


def test_standby_clears_balancing_on_every_module_without_an_error() -> None:
    a, master, drivers = agent()
    master.publish(SLAVE_MODE, SlaveModeCommand(mode="standby"))
    a.bus.process()
    assert a.bus.counters["handler_errors"] == 0
    assert a.bus.counters["balance_errors"] == 0
    off = [(m, args) for m, *args in drivers[-1].calls]
    assert off == [(0, [[False] * 4, [False] * 4]), (1, [[False] * 4, [False] * 4])]
    assert a.core is not None and a.core.mode == "standby"


def test_the_simulated_driver_refuses_a_wrong_size_with_a_driver_error() -> None:
    driver = SimulatedDriver(CONFIG_2X4, [0, 1])
    with pytest.raises(DriverError, match="4 cells"):
        driver.set_balancing(0, [], [])
    with pytest.raises(DriverError, match="4 cells"):
        driver.set_balancing(1, [True] * 3, [False] * 3)
    driver.set_balancing(1, [True, False, True, False], [False] * 4)
    reading: ModuleReading = driver.read(1)
    assert len(reading.cell_mv) == 4


class BoardDriver:
    """Stands for real boards: not a `SimulatedDriver`, reading through one."""

    def __init__(self, config: SystemConfig, modules: list[int]) -> None:
        self._inner = SimulatedDriver(config, modules)

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


def test_a_cell_fault_for_an_agent_on_boards_is_refused_with_a_log_line_and_a_counter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found in review: in the loop the agent reads the plant's boards, and a cell fault sent
    to it vanished without a word (the README still told users to send it there)."""
    import time

    from shared.messages import SimControl
    from shared.topics import SIM_CONTROL

    broker = InMemoryBroker()
    bus = InMemoryBus(broker, system="demo", service="slave_agent", kind="slave_agent")
    a = SlaveAgent(SlaveAgentSettings(driver="modbus"), bus, BoardDriver)  # type: ignore[arg-type]
    bus.start()
    tool = InMemoryBus(broker, system="demo", service="inject", kind="inject")
    tool.start()
    tool.publish(CONFIG, ConfigMessage(config=CONFIG_2X4))
    bus.process()
    tool.publish(SIM_CONTROL, SimControl(fault="cell_drift", module=0, channel=1, value=1.0,
                                         expires_at=time.time() + 10))  # fmt: skip
    bus.process()
    assert a.bus.counters["sim_control_ignored"] == 1
    assert "services.plant inject cell_drift" in caplog.text
    assert a.bus.counters["sim_control_refused"] == 0
