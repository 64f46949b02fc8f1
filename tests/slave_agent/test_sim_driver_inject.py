"""Fault injection through the simulated driver reaches the channel kind it names."""

from __future__ import annotations

from services.slave_agent.sim_driver import SimulatedDriver
from shared.config import SystemConfig
from shared.messages import ChannelFlag, SimControl


def test_an_open_wire_aimed_at_a_temperature_sensor_hits_that_sensor_not_a_cell() -> None:
    config = SystemConfig.from_preset("LFP", system_id="t", modules=1, cells_per_module=4)
    driver = SimulatedDriver(config, [0])
    driver.inject(SimControl(fault="open_wire", module=0, channel=0, target="temp"))
    reading = driver.read(0)
    assert reading.temp_flags[0] & ChannelFlag.OPEN_WIRE
    assert reading.temp_flags[1:] == [0] * (len(reading.temp_flags) - 1)
    assert reading.cell_flags == [0, 0, 0, 0]
