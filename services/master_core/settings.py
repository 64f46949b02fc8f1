"""Settings of the master core (flags or BMS_* variables)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from services.plant.load_profiles import parse_profile
from shared.settings import ServiceSettings


class MasterCoreSettings(ServiceSettings):
    model_config = SettingsConfigDict(cli_prog_name="python -m services.master_core")

    data_dir: str = Field("var", description="directory of the SQLite file (events, SOC, latches)")
    hardware: Literal["devices", "simulated"] = Field(
        "devices",
        description="the master's devices: 'devices' opens the drivers the configuration "
        "names (current_sensor, contactors.io, insulation_monitor); 'simulated' runs the "
        "plant in this process (current sensor, voltages, insulation monitor, relay module "
        "and the inverter), for demos and tests only",
    )
    load_profile: str = Field(
        "cycle:30:40:20:80",
        description="hardware=simulated: the simulated inverter: constant:A, "
        "pulses:A:A:period_s[:duty], cycle:charge_A:discharge_A[:soc_low:soc_high] "
        "or csv:file (time_s,current_a)",
    )
    auto_close: bool = Field(
        True,
        description="close the contactors by themselves at start, back in working mode and "
        "after the reset of a trip; never after an operator's open command",
    )
    cells_period_s: float = Field(0.5, gt=0, le=10, description="period of pack/cells")
    balancing_period_s: float = Field(1.0, gt=0, le=60, description="period of balancing commands")
    persist_period_s: float = Field(
        1.0,
        ge=0.5,
        le=3600,
        description="period of saving SOC, SOH, throughput, cycles, latches and the OCV capture "
        "in one transaction (a power cut loses what was counted since; latched faults are also "
        "saved at once; over 30 s, a power cut aborts a running OCV capture: its gap rule)",
    )
    heartbeat_timeout_s: float = Field(
        0.0, ge=0, description="fall back to safe limits without a controller heartbeat (0: off)"
    )
    seed: int = Field(
        0, ge=0, description="hardware=simulated: random seed of the simulated sensors"
    )

    @field_validator("load_profile")
    @classmethod
    def _profile(cls, value: str) -> str:
        parse_profile(value)
        return value
