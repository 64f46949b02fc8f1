"""Settings of the CAN gateway (flags or BMS_* variables).

The protocol parameters (profiles, channel, bit rate, the Pylontech HV options) come from the
system configuration (`interfaces.can`). A setting here only names the device (interface,
channel) or overrides a configured value, and the log says so each time it does.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from shared.config import SYSTEM_ID_RE, SystemConfig
from shared.host_settings import HostSetting, in_use
from shared.messages import FieldInUse
from shared.settings import ServiceSettings

HOST_SETTINGS: tuple[HostSetting, ...] = (
    HostSetting("can_interface", "interfaces.can.interface", device=True),
    HostSetting("can_channel", "interfaces.can.channel", device=True),
    HostSetting("can_bitrate", "interfaces.can.bitrate"),
    HostSetting("pylon_hv_byte_order", "interfaces.can.pylon_hv_byte_order"),
    HostSetting("pylon_hv_current_offset_a", "interfaces.can.pylon_hv_current_offset_a"),
    HostSetting("pylon_hv_discharge_limit_sign", "interfaces.can.pylon_hv_discharge_limit_sign"),
)
"""The settings that stand in for `interfaces.can` fields; the acknowledgement reports each one
that differs from the configuration (`ConfigAck.in_use`). Interface and channel name the
adapter on this host; the bit rate and the Pylontech HV options change the protocol."""


class CanGatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(cli_prog_name="python -m services.can_gateway")

    can_interface: str | None = Field(
        None, description="python-can interface (socketcan, slcan, virtual); default: config"
    )
    can_channel: str | None = Field(
        None, description="CAN channel, e.g. can0 or /dev/ttyACM0; default: config"
    )
    can_bitrate: int | None = Field(None, description="override the configured bit rate")
    site: str | None = Field(
        None,
        description="send this site's values and limits (its strings in parallel as one "
        "battery) instead of the system's; the CAN interface still comes from the system's "
        "configuration",
    )
    stale_after_s: float = Field(
        3.0, gt=0, le=60, description="pack state older than this is stale"
    )
    keepalive_timeout_s: float = Field(
        600.0, gt=0, description="raise an event when the inverter keep-alive stops this long"
    )
    pylon_hv_byte_order: Literal["little", "big"] | None = Field(
        None, description="override interfaces.can.pylon_hv_byte_order"
    )
    pylon_hv_current_offset_a: float | None = Field(
        None, ge=0, le=6553.5, description="override interfaces.can.pylon_hv_current_offset_a"
    )
    pylon_hv_discharge_limit_sign: Literal["negative", "positive"] | None = Field(
        None, description="override interfaces.can.pylon_hv_discharge_limit_sign"
    )

    @field_validator("site", mode="before")
    @classmethod
    def _site(cls, value: object) -> object:
        if value == "":
            return None  # compose files pass `${BMS_SITE:-}`
        if isinstance(value, str) and not SYSTEM_ID_RE.match(value):
            raise ValueError("must be 1-32 lower-case letters, digits, '-' or '_'")
        return value

    def protocol_overrides(self) -> dict[str, object]:
        """The protocol options set here (they override the configuration)."""
        names = [n for n in type(self).model_fields if n.startswith("pylon_hv_")]
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def in_use(self, config: SystemConfig, host: str) -> dict[str, FieldInUse]:
        """The `interfaces.can` fields this host runs with another value than `config` says,
        by dotted path (for the acknowledgement)."""
        values = {row.setting: getattr(self, row.setting) for row in HOST_SETTINGS}
        return in_use(HOST_SETTINGS, values, config, host)
