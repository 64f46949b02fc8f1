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


def test_the_driver_reads_a_rack_at_once_as_module_by_module() -> None:
    """The agent's reads (every module once a step, the first sampling the rack) give what the
    rack gives module by module; a second read in a step is a fresh sample."""
    config = SystemConfig.from_preset("NMC", system_id="t", modules=4, cells_per_module=6)
    driver = SimulatedDriver(config, [0, 1, 2, 3], seed=3)
    reference = SimulatedDriver(config, [0, 1, 2, 3], seed=3)
    for _ in range(3):
        driver.advance(0.1, 10.0)
        reference.advance(0.1, 10.0)
        got = [driver.read(m) for m in (2, 0, 3, 1)]
        want = []
        for m in (2, 0, 3, 1):
            r = reference.modules[m].read()
            temp = [round(t, 1) for t in r.temp_c.tolist()]
            want.append((r.cell_mv.tolist(), r.cell_flags.tolist(), temp, r.temp_flags.tolist()))
        assert [(r.cell_mv, r.cell_flags, r.temp_c, r.temp_flags) for r in got] == want
        again, fresh = driver.read(1), reference.modules[1].read()
        assert again.cell_mv == fresh.cell_mv.tolist()
