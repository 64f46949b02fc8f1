"""The simulated boards on a real Modbus TCP server, read by a pymodbus client."""

from __future__ import annotations

import socket

import numpy as np
from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

from services.plant.devices.boards import BoardServer
from services.plant.settings import DEFAULT_BOARD_MAP
from services.slave_agent.modbus_boot import load_board_map
from services.slave_agent.modbus_map import BoardRegisterMap
from services.slave_agent.sim import Reading
from shared.config import SystemConfig

CELLS, TEMPS = 14, 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cells_of(client: ModbusTcpClient, board_map: BoardRegisterMap, module: int) -> list[int] | None:
    """The board's cell voltages (mV); None when it answers nothing."""
    read = (
        client.read_holding_registers
        if board_map.cell_voltage_table == "holding"
        else client.read_input_registers
    )
    try:
        result = read(
            board_map.cell_voltage_address,
            count=board_map.cell_register_count,
            device_id=board_map.unit_id(module),
        )
    except ModbusException:
        return None
    assert not result.isError(), result
    return board_map.decode_cells(result.registers)


def test_a_board_answers_nothing_until_it_is_shown_a_reading() -> None:
    """Zeroed registers would read 0 mV, flagged out of range by the agent: no real board
    serves them, so a board stays silent until its first reading is written."""
    config = SystemConfig.from_preset(
        "NMC", modules=2, cells_per_module=CELLS, temp_sensors_per_module=TEMPS
    )
    board_map = load_board_map(DEFAULT_BOARD_MAP, config)
    port = free_port()
    server = BoardServer(board_map, [0, 1], "127.0.0.1", port)
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=0.5, retries=0)
    try:
        assert client.connect()
        assert cells_of(client, board_map, 0) is None
        cell_mv = np.arange(3600, 3600 + CELLS)
        reading = Reading(
            cell_mv=cell_mv,
            cell_flags=np.zeros(CELLS, np.uint8),
            temp_c=np.full(TEMPS, 25.0),
            temp_flags=np.zeros(TEMPS, np.uint8),
            balancing=np.zeros(CELLS, np.bool_),
        )
        server.publish({0: reading})
        client.close()  # a timed-out request leaves the connection's transaction behind
        assert client.connect()
        assert cells_of(client, board_map, 0) == cell_mv.tolist()
        assert cells_of(client, board_map, 1) is None  # not shown a reading yet
    finally:
        client.close()
        server.stop()
