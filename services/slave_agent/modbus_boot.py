"""Build the `modbus` driver from the agent's settings and the system configuration."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.slave_agent.driver import Driver, DriverError
from services.slave_agent.modbus_driver import ModbusBoardDriver
from services.slave_agent.modbus_map import BoardRegisterMap, SerialSettings
from services.slave_agent.settings import SlaveAgentSettings
from shared.config import SystemConfig


def _read_map(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DriverError(f"register map {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise DriverError(f"register map {path}: a JSON object is expected")
    return data


def load_board_map(path: str | Path, config: SystemConfig) -> BoardRegisterMap:
    """The register map in the JSON file at `path`; cell and sensor counts default to the
    system topology. DriverError for an unreadable file, ValidationError for a bad map."""
    topo = config.topology
    data: dict[str, object] = {
        "cell_count": topo.cells_per_module,
        "temperature_count": topo.temp_sensors_per_module,
    }
    return BoardRegisterMap.model_validate(data | _read_map(path))


def board_map_problems(
    board: BoardRegisterMap, config: SystemConfig, modules: Sequence[int], path: str | Path
) -> list[str]:
    """Why the boards described by `board` (read from `path`) cannot serve `modules` of the
    configuration (empty: they can).

    The driver reads every channel of the map from every board and the master refuses a
    sample whose cell or sensor count differs from the topology's (master_core/pack.py), so
    the counts must agree exactly: a board with fewer channels cannot measure the cells asked
    for, one with more would report cells and sensors the configuration does not have.
    """
    topo = config.topology
    where = f"the boards' register map {path}"
    out: list[str] = []
    if board.temperature_count != topo.temp_sensors_per_module:
        out.append(
            f"{where} has {board.temperature_count} temperature channels; the configuration "
            f"asks for {topo.temp_sensors_per_module} per module "
            f"(topology.temp_sensors_per_module)"
        )
    by_count: dict[int, list[int]] = {}
    for m in modules:
        by_count.setdefault(topo.cells_in_module(m), []).append(m)
    field = (
        "topology.cells_per_module"
        if topo.module_cell_counts is None
        else ("topology.module_cell_counts")
    )
    for cells, hosted in sorted(by_count.items()):
        if cells != board.cell_count:
            which = (
                "per module"
                if topo.module_cell_counts is None
                else (f"for module{'s' if len(hosted) > 1 else ''} {_listed(hosted)}")
            )
            out.append(
                f"{where} has {board.cell_count} cell channels; the configuration asks for "
                f"{cells} {which} ({field})"
            )
    return out


def _listed(modules: list[int]) -> str:
    shown = ", ".join(str(m) for m in modules[:8])
    return shown if len(modules) <= 8 else f"{shown} and {len(modules) - 8} more"


def make_modbus_driver(
    settings: SlaveAgentSettings, config: SystemConfig, modules: list[int]
) -> Driver:
    """The register map comes from `--modbus-map-file` (JSON, see `load_board_map`).

    DriverError, one problem per line, when the map cannot serve the configuration
    (`board_map_problems`): the agent refuses the configuration with those words."""
    if not settings.modbus_map_file:
        raise DriverError("the modbus driver needs the boards' register map: --modbus-map-file")
    board_map = load_board_map(settings.modbus_map_file, config)
    problems = board_map_problems(board_map, config, modules, settings.modbus_map_file)
    if problems:
        raise DriverError("\n".join(problems))
    serial = SerialSettings(
        port=settings.modbus_port,
        baudrate=settings.modbus_baudrate,
        parity=settings.modbus_parity,
        stopbits=settings.modbus_stopbits,
    )
    return ModbusBoardDriver(serial, board_map, modules)
