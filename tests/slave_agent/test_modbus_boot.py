"""The boards' register map against the configuration: the agent refuses a configuration its
boards cannot serve, in words naming both numbers and the map file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.slave_agent.__main__ import make_driver
from services.slave_agent.driver import DriverError
from services.slave_agent.modbus_boot import board_map_problems, load_board_map, make_modbus_driver
from services.slave_agent.modbus_driver import ModbusBoardDriver
from services.slave_agent.service import SlaveAgent
from services.slave_agent.settings import SlaveAgentSettings
from shared.bus import InMemoryBroker, InMemoryBus
from shared.config import SystemConfig
from shared.messages import ConfigAck, ConfigMessage
from shared.topics import CONFIG, CONFIG_ACK

NMC_2X4 = SystemConfig.from_preset("NMC", modules=2, cells_per_module=4)  # 2 sensors per module
# The boards answer on a TCP port nothing listens on: the driver connects on first use only.
NOWHERE = "tcp://127.0.0.1:9"


def map_file(tmp_path: Path, **fields: Any) -> Path:
    path = tmp_path / "board.json"
    path.write_text(json.dumps({"temperature_address": 100, "balancing_coil_address": 0} | fields))
    return path


def config_with(config: SystemConfig, **topology: Any) -> SystemConfig:
    data = config.model_dump(mode="json")
    data["topology"].update(topology)
    return SystemConfig.model_validate(data)


def settings_for(path: Path) -> SlaveAgentSettings:
    return SlaveAgentSettings(driver="modbus", modbus_port=NOWHERE, modbus_map_file=str(path))


def test_a_map_without_counts_takes_the_topology(tmp_path: Path) -> None:
    path = map_file(tmp_path)
    board = load_board_map(path, NMC_2X4)
    assert (board.cell_count, board.temperature_count) == (4, 2)
    assert board_map_problems(board, NMC_2X4, [0, 1], path) == []
    driver = make_modbus_driver(settings_for(path), NMC_2X4, [0, 1])
    assert isinstance(driver, ModbusBoardDriver)
    driver.close()


def test_fewer_temperature_channels_than_the_configuration_asks_for(tmp_path: Path) -> None:
    path = map_file(tmp_path, temperature_count=4)
    config = config_with(NMC_2X4, temp_sensors_per_module=6)
    with pytest.raises(DriverError) as info:
        make_modbus_driver(settings_for(path), config, [0, 1])
    assert str(info.value) == (
        f"the boards' register map {path} has 4 temperature channels; the configuration asks "
        f"for 6 per module (topology.temp_sensors_per_module)"
    )


def test_more_channels_than_the_configuration_has_are_refused_too(tmp_path: Path) -> None:
    """The driver reads every channel of the map; the master refuses a sample with more."""
    path = map_file(tmp_path, cell_count=16, temperature_count=4)
    problems = board_map_problems(load_board_map(path, NMC_2X4), NMC_2X4, [0, 1], path)
    assert problems == [
        f"the boards' register map {path} has 4 temperature channels; the configuration asks "
        f"for 2 per module (topology.temp_sensors_per_module)",
        f"the boards' register map {path} has 16 cell channels; the configuration asks for 4 "
        f"per module (topology.cells_per_module)",
    ]


def test_modules_of_other_sizes_are_named(tmp_path: Path) -> None:
    # the pack levels derived for the 56 cells in series
    config = config_with(
        SystemConfig.from_preset("LFP", modules=1, cells_per_module=56),
        modules=4,
        cells_per_module=16,
        module_cell_counts=[16, 12, 16, 12],
    )
    path = map_file(tmp_path)  # cell_count from cells_per_module: 16
    board = load_board_map(path, config)
    assert board_map_problems(board, config, [0, 1, 2, 3], path) == [
        f"the boards' register map {path} has 16 cell channels; the configuration asks for 12 "
        f"for modules 1, 3 (topology.module_cell_counts)"
    ]
    # an agent hosting only the 16-cell modules is served
    assert board_map_problems(board, config, [0, 2], path) == []
    assert board_map_problems(board, config, [3], path)[0].endswith(
        "asks for 12 for module 3 (topology.module_cell_counts)"
    )


@given(
    cells=st.integers(1, 24),
    sensors=st.integers(1, 8),
    board_cells=st.integers(1, 24),
    board_sensors=st.integers(0, 8),
)
def test_a_map_serves_exactly_the_matching_topology(
    cells: int, sensors: int, board_cells: int, board_sensors: int
) -> None:
    from services.slave_agent.modbus_map import BoardRegisterMap

    config = SystemConfig.from_preset(
        "LFP", modules=2, cells_per_module=cells, temp_sensors_per_module=sensors
    )
    board = BoardRegisterMap(
        cell_count=board_cells,
        temperature_count=board_sensors,
        temperature_address=200,
        balancing_coil_address=0,
    )
    problems = board_map_problems(board, config, [0, 1], "map.json")
    assert (problems == []) == (cells == board_cells and sensors == board_sensors)
    assert len(problems) == (cells != board_cells) + (sensors != board_sensors)
    assert all("map.json" in p for p in problems)


def test_the_agent_refuses_the_configuration_with_the_reasons(tmp_path: Path) -> None:
    path = map_file(tmp_path, cell_count=16, temperature_count=4)
    settings = settings_for(path)
    broker = InMemoryBroker()
    bus = InMemoryBus(broker, system="demo", service="slave_agent", kind="slave_agent")
    agent = SlaveAgent(
        settings, bus, lambda config, modules: make_driver(settings, config, modules)
    )
    ui = InMemoryBus(broker, system="demo", service="config_ui", kind="test")
    acks: list[ConfigAck] = []
    ui.subscribe(CONFIG_ACK, lambda d: acks.append(d.message))
    bus.start()
    ui.start()

    config = config_with(NMC_2X4, temp_sensors_per_module=6)
    ui.publish(CONFIG, ConfigMessage(config=config))
    bus.process()
    ui.process()
    assert agent.driver is None and agent.config is None  # nothing runs on a refused config
    assert [(a.accepted, a.errors) for a in acks] == [
        (
            False,
            [
                f"the boards' register map {path} has 4 temperature channels; the configuration "
                f"asks for 6 per module (topology.temp_sensors_per_module)",
                f"the boards' register map {path} has 16 cell channels; the configuration asks "
                f"for 4 per module (topology.cells_per_module)",
            ],
        )
    ]

    # the configuration the boards serve is accepted
    fits = SystemConfig.from_preset(
        "NMC", modules=2, cells_per_module=16, temp_sensors_per_module=4, config_version=2
    )
    ui.publish(CONFIG, ConfigMessage(config=fits))
    bus.process()
    ui.process()
    assert (acks[-1].config_version, acks[-1].accepted, acks[-1].errors) == (2, True, [])
    assert isinstance(agent.driver, ModbusBoardDriver)
    agent.stop()


def test_an_unreadable_or_malformed_map_is_a_driver_error(tmp_path: Path) -> None:
    with pytest.raises(DriverError, match=r"register map .*missing\.json"):
        load_board_map(tmp_path / "missing.json", NMC_2X4)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(DriverError, match="a JSON object is expected"):
        load_board_map(listed, NMC_2X4)
