"""Settings of the CAN gateway (flags or BMS_* variables); the CAN channel itself comes from
the system configuration unless set here."""

from __future__ import annotations

from typing import Literal

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
    pylon_hv_byte_order: Literal["little", "big"] = Field(
        "little", description="Pylontech HV: byte order of 16-bit fields"
    )
    pylon_hv_current_offset_a: float = Field(
        3000.0, ge=0, le=10000, description="Pylontech HV: current offset (0: signed current)"
    )
