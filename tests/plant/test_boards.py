"""What the simulated boards put in their registers decodes, with the agent's own map, back to
the reading (pure)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from services.plant.devices.boards import FC_HOLDING, FC_INPUT, board_writes, table_sizes
from services.plant.settings import DEFAULT_BOARD_MAP
from services.slave_agent.modbus_boot import load_board_map
from services.slave_agent.modbus_map import BoardRegisterMap, decode_mask
from services.slave_agent.sim import Reading
from shared.config import SystemConfig
from shared.messages import ChannelFlag


def board_map(cells: int, temps: int) -> BoardRegisterMap:
    config = SystemConfig.from_preset(
        "NMC", modules=1, cells_per_module=cells, temp_sensors_per_module=temps
    )
    return load_board_map(DEFAULT_BOARD_MAP, config)


@st.composite
def readings(draw: st.DrawFn) -> tuple[BoardRegisterMap, Reading]:
    cells = draw(st.integers(1, 24))
    temps = draw(st.integers(1, 8))
    flags = st.sampled_from([0, int(ChannelFlag.OPEN_WIRE), int(ChannelFlag.OUT_OF_RANGE)])
    reading = Reading(
        cell_mv=np.array(draw(st.lists(st.integers(0, 5000), min_size=cells, max_size=cells))),
        cell_flags=np.array(draw(st.lists(flags, min_size=cells, max_size=cells)), np.uint8),
        temp_c=np.array(draw(st.lists(st.floats(-55.0, 150.0), min_size=temps, max_size=temps))),
        temp_flags=np.array(
            draw(
                st.lists(
                    st.sampled_from([0, int(ChannelFlag.SENSOR_FAULT)]),
                    min_size=temps,
                    max_size=temps,
                )
            ),
            np.uint8,
        ),
        balancing=np.zeros(cells, np.bool_),
    )
    return board_map(cells, temps), reading


@given(readings())
def test_registers_decode_back_to_the_reading(case: tuple[BoardRegisterMap, Reading]) -> None:
    m, reading = case
    sizes = table_sizes(m)
    tables = {FC_HOLDING: [0] * sizes["holding"], FC_INPUT: [0] * sizes["input"]}
    for fc, address, values in board_writes(m, reading):
        assert address + len(values) <= len(tables[fc])  # inside the served block
        tables[fc][address : address + len(values)] = values
    regs = tables[FC_INPUT]  # the plant's map keeps everything in input registers

    def span(address: int, count: int) -> list[int]:
        return regs[address : address + count]

    assert m.decode_cells(span(m.cell_voltage_address, m.cell_register_count)) == list(
        reading.cell_mv
    )
    temps = m.decode_temps(span(m.temperature_address, m.temperature_count))
    np.testing.assert_allclose(temps, reading.temp_c, atol=m.temperature_scale_c / 2 + 1e-9)
    assert m.open_wire_address is not None and m.sensor_fault_address is not None
    open_wire = decode_mask(span(m.open_wire_address, (m.cell_count + 15) // 16), m.cell_count)
    assert open_wire == [bool(f & ChannelFlag.OPEN_WIRE) for f in reading.cell_flags]
    faults = decode_mask(
        span(m.sensor_fault_address, (m.temperature_count + 15) // 16), m.temperature_count
    )
    assert faults == [bool(f) for f in reading.temp_flags]


def test_the_plant_map_fits_the_largest_module() -> None:
    m = board_map(196, 64)  # MAX_CELLS_PER_MODULE, MAX_TEMPS_PER_MODULE
    assert table_sizes(m)["input"] == m.sensor_fault_address + 4  # type: ignore[operator]
