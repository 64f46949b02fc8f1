"""Settings of the site controller (flags or BMS_* variables)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class SiteControllerSettings(ServiceSettings):
    """BMS_SYSTEM is the site id: the site's topics are `bms/v1/{site}/site/...`."""

    model_config = SettingsConfigDict(cli_prog_name="python -m services.site_controller")

    data_dir: str = Field("var", description="directory of the SQLite file (the site's events)")
    events_retention_days: float = Field(
        365.0, gt=0, le=3650, description="events older than this are forgotten (hourly)"
    )
    events_max_rows: int = Field(
        100_000, ge=100, le=10_000_000, description="at most this many events are kept"
    )
    state_period_s: float = Field(
        0.1, ge=0.05, le=10.0, description="period of site/state (the strings' 10 Hz)"
    )
    summary_period_s: float = Field(
        10.0, ge=1.0, le=600.0, description="period of site/summary (sooner on a change)"
    )
    command_ttl_s: float = Field(
        5.0, ge=1.0, le=30.0, description="lifetime of a set_mode sent to a string's master"
    )
