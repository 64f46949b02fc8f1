"""Build the `modbus` driver from the agent's settings and the system configuration."""

from __future__ import annotations

import json
from pathlib import Path

from services.slave_agent.driver import Driver, DriverError
from services.slave_agent.modbus_driver import ModbusBoardDriver
from services.slave_agent.modbus_map import BoardRegisterMap, SerialSettings
from services.slave_agent.settings import SlaveAgentSettings
from shared.config import SystemConfig


def load_board_map(path: str | Path, config: SystemConfig) -> BoardRegisterMap:
    """The register map in the JSON file at `path`; cell and sensor counts default to the
    system topology. DriverError for an unreadable file, ValidationError for a bad map."""
    topo = config.topology
    data: dict[str, object] = {
        "cell_count": topo.cells_per_module,
        "temperature_count": topo.temp_sensors_per_module,
    }
    try:
        data |= json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DriverError(f"register map {path}: {exc}") from exc
    return BoardRegisterMap.model_validate(data)


def make_modbus_driver(
    settings: SlaveAgentSettings, config: SystemConfig, modules: list[int]
) -> Driver:
    """The register map comes from `--modbus-map-file` (JSON, see `load_board_map`)."""
    if not settings.modbus_map_file:
        raise DriverError("the modbus driver needs the boards' register map: --modbus-map-file")
    board_map = load_board_map(settings.modbus_map_file, config)
    serial = SerialSettings(
        port=settings.modbus_port,
        baudrate=settings.modbus_baudrate,
        parity=settings.modbus_parity,
        stopbits=settings.modbus_stopbits,
    )
    return ModbusBoardDriver(serial, board_map, modules)
