"""Settings of the plant service (flags or BMS_* variables).

Where each device is comes from the system configuration (contactors.io, current_sensor.can,
insulation_monitor.can, interfaces.can), the one source both the master and the plant read;
here is only what the configuration does not hold (the slave boards' port and register map,
the physics)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from services.plant.load_profiles import parse_profile
from shared.settings import ServiceSettings

DEFAULT_BOARD_MAP: Final = str(Path(__file__).with_name("data") / "board_map.json")
"""The register map the simulated boards serve; give the same file to the agent's
`--modbus-map-file`."""


class PlantSettings(ServiceSettings):
    model_config = SettingsConfigDict(cli_prog_name="python -m services.plant")

    devices: str = Field(
        "boards,relay,ivt_s,iso165c",
        description="simulated devices to serve, comma separated (see services/plant/registry.py); "
        "each at the address the system configuration gives it",
    )
    inverter: bool = Field(
        True,
        description="an inverter on the configured inverter bus (interfaces.can) reads the BMS "
        "limits and keeps the load within them; false: the load profile alone, unclipped",
    )
    modbus_host: str = Field("127.0.0.1", description="address the Modbus TCP servers bind")
    boards_port: int = Field(
        5120, ge=1, le=65535, description="Modbus TCP port of the slave boards (one unit/module)"
    )
    board_map_file: str = Field(
        DEFAULT_BOARD_MAP, description="JSON register map of the boards (as the agent's)"
    )
    ivt_cycle_ms: int = Field(20, ge=1, le=10_000, description="IVT-S cyclic result period")
    step_period_s: float = Field(0.01, gt=0, le=1.0, description="physics step period")
    cell_period_s: float = Field(0.1, gt=0, le=10.0, description="cell model step period")
    board_period_s: float = Field(0.1, gt=0, le=10.0, description="board register refresh")
    truth_period_s: float = Field(1.0, gt=0, description="ground truth period")
    load_profile: str = Field(
        "cycle:30:40:20:80",
        description="what the inverter draws: constant:A, pulses:A:A:period_s[:duty], "
        "cycle:charge_A:discharge_A[:soc_low:soc_high] or csv:file (time_s,current_a)",
    )
    seed: int = Field(0, ge=0, description="random seed of cells and sensors")
    initial_soc_pct: float = Field(50.0, ge=0, le=100, description="initial SOC of the cells")
    ambient_c: float = Field(25.0, ge=-40, le=80, description="ambient temperature")
    current_offset_a: float = Field(0.0, description="zero error of the current sensor")
    current_noise_a: float = Field(0.05, ge=0, description="current sensor noise (± A)")
    insulation_ohm: float = Field(10e6, gt=0, description="insulation resistance to earth")
    u3_v: float = Field(0.0, description="IVT-S U3 input")
    ivt_temperature_c: float = Field(25.0, description="IVT-S shunt temperature")

    @field_validator("load_profile")
    @classmethod
    def _profile(cls, value: str) -> str:
        parse_profile(value)
        return value

    @field_validator("devices")
    @classmethod
    def _devices(cls, value: str) -> str:
        from services.plant.registry import DEVICE_FACTORIES

        unknown = set(device_names(value)) - DEVICE_FACTORIES.keys()
        if unknown:
            raise ValueError(
                f"unknown devices {sorted(unknown)}; known: {', '.join(DEVICE_FACTORIES)}"
            )
        return value

    def device_list(self) -> list[str]:
        return device_names(self.devices)


def device_names(spec: str) -> list[str]:
    return [name.strip() for name in spec.split(",") if name.strip()]
