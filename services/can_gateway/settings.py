"""Settings of the CAN gateway (flags or BMS_* variables); the CAN channel itself comes from
the system configuration unless set here."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class CanGatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(cli_prog_name="python -m services.can_gateway")

    can_interface: str | None = Field(
        None, description="python-can interface: socketcan, slcan, virtual (default: config)"
    )
    can_channel: str | None = Field(None, description="CAN channel, e.g. can0 or /dev/ttyACM0")
    can_bitrate: int | None = Field(None, description="bit rate (default: config)")
    stale_after_s: float = Field(
        3.0, gt=0, le=60, description="pack state older than this is stale"
    )
    keepalive_timeout_s: float = Field(
        600.0, gt=0, description="raise an event when the inverter keep-alive stops this long"
    )
