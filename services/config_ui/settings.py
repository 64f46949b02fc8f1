"""Settings of the user access application (flags or BMS_* variables)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from shared.config import SYSTEM_ID_RE
from shared.config.system import PLANT_SYSTEMS_MAX
from shared.settings import ServiceSettings


class ConfigUiSettings(ServiceSettings):
    model_config = SettingsConfigDict(cli_prog_name="python -m services.config_ui")

    ui_host: str = Field("127.0.0.1", description="address to serve on (0.0.0.0: every interface)")
    ui_port: int = Field(8000, ge=0, le=65535, description="HTTP port (0: any free port)")
    data_dir: str = Field("var", description="directory of the SQLite file (configs, users)")
    ui_seed_config: Literal["", "demo", "plant"] = Field(
        "",
        description="publish this configuration when the store is empty: demo (simulated "
        "devices in the master) or plant (the demo wired to `python -m services.plant`)",
    )
    ui_seed_index: int = Field(
        0, ge=0, lt=PLANT_SYSTEMS_MAX, description="plant: which system of `make run` (its "
        "CAN groups and Modbus ports, shared.config.plant_demo_config)",
    )  # fmt: skip
    ui_admin_password_file: str | None = Field(
        None, description="file holding the first admin password (default: generate one)"
    )
    ui_secure_cookies: bool = Field(
        False, description="mark session cookies Secure (behind an HTTPS proxy)"
    )
    ui_live_period_s: float = Field(
        0.25, ge=0.05, le=5.0, description="period of the dashboard's live updates"
    )
    ui_history_s: float = Field(
        3600.0, ge=60.0, le=86400.0, description="span of the 1 s SOC and voltage history"
    )
    ui_history_retention_days: float = Field(
        30.0, gt=0.0, le=3660.0, description="days of the stored 10 s history"
    )
    ui_cell_history_days: float = Field(
        30.0, gt=0.0, le=3660.0, description="days of the stored per-cell minutes"
    )
    site: str | None = Field(
        None,
        description="the site this system is a string of: the site page shows its strings "
        "side by side, its values and limits, and its joins and leaves",
    )
    ui_site_config: bool = Field(
        False,
        description="keep the site configuration of BMS_SITE here: versioned in this "
        "application's store, edited on its Site configuration page and published retained "
        "(one web application per site)",
    )
    ui_seed_site_strings: str = Field(
        "",
        description="with ui_site_config: when no site configuration is stored and the broker "
        "has none, seed one with these strings (comma-separated system ids)",
    )
    ui_command_timeout_s: float = Field(
        5.0, gt=0.0, le=60.0, description="how long to wait for the master's reply"
    )

    @field_validator("site", mode="before")
    @classmethod
    def _site(cls, value: object) -> object:
        if value == "":
            return None  # compose files pass `${BMS_SITE:-}`
        if isinstance(value, str) and not SYSTEM_ID_RE.match(value):
            raise ValueError("must be 1-32 lower-case letters, digits, '-' or '_'")
        return value
