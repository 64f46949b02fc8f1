"""Settings of the integrations bridge (flags or BMS_* variables).

Everything here changes per site (which integrations run, their rates, ports and prefixes),
so none of it is in the system configuration.
"""

from __future__ import annotations

import socket
from dataclasses import replace
from typing import Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.integrations.alerts import AlertRule
from services.integrations.sparkplug import ID_FORBIDDEN, check_id
from shared.config import SYSTEM_ID_RE
from shared.settings import MqttEndpoint, ServiceSettings, read_secret
from shared.topics import HA_DISCOVERY_PREFIX, SPARKPLUG_GROUP

DEFAULT_METRICS_PORT = 9108


class IntegrationsSettings(ServiceSettings):
    model_config = SettingsConfigDict(cli_prog_name="python -m services.integrations")

    all_systems: bool = Field(
        True, description="bridge every system on the broker (false: BMS_SYSTEM only)"
    )
    site: str | None = Field(
        None,
        description="bridge this site as well (its site state under the site id: the JSON "
        "mirror, a Home Assistant device, Prometheus gauges and the Sparkplug edge node's own "
        "metrics); its strings stay the systems they are",
    )
    json_mirror: bool = Field(True, description="mirror pack state, cells, events, status as JSON")
    json_state_period_s: float = Field(
        1.0, ge=0.0, le=3600.0, description="least time between two JSON pack states (0: all)"
    )
    json_cells_period_s: float = Field(
        1.0, ge=0.0, le=3600.0, description="least time between two JSON cell snapshots (0: all)"
    )
    events_state_file: str | None = Field(
        None,
        description="where the bridge keeps its place in the event streams, so that events "
        "logged while it was down are fetched at start (alerts and the JSON mirror lose none); "
        "empty: only gaps seen while running are fetched",
    )
    ha_discovery: bool = Field(False, description="publish Home Assistant MQTT discovery")
    ha_prefix: str = Field(
        HA_DISCOVERY_PREFIX,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Home Assistant's discovery prefix (the broker ACL grants 'homeassistant')",
    )
    ha_cell_sensors: bool = Field(False, description="one Home Assistant sensor per cell")
    ha_commands: bool = Field(
        False, description="a Reset faults button and a Mode select in Home Assistant"
    )
    ha_commands_username: str | None = Field(
        None, description="broker user sending those commands (default: the bridge's own)"
    )
    ha_commands_password_file: str | None = Field(
        None, description="file holding that user's password"
    )
    ha_availability_service: str = Field(
        "master_core",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$",
        description="the service whose presence makes the entities available",
    )
    ha_expire_after_s: int = Field(
        30, ge=0, le=86400, description="entities go unavailable without a state this long"
    )
    sparkplug: bool = Field(
        False,
        description="a Sparkplug B edge node (spBv1.0/{group}/N*/{edge_node}) with a device "
        "per system (spBv1.0/{group}/D*/{edge_node}/{system})",
    )
    sparkplug_group: str = Field(
        SPARKPLUG_GROUP,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$",
        description="Sparkplug group id (the broker ACL grants 'bms')",
    )
    sparkplug_edge_node: str | None = Field(
        None,
        max_length=64,
        description="Sparkplug edge node id: the site (default: the host name; no '/', '+', "
        "'#'). Set it where the host name changes, as in a container",
    )
    sparkplug_modules: bool = Field(
        True, description="each module's cells and temperatures on its system's Sparkplug device"
    )
    metrics_port: int = Field(
        DEFAULT_METRICS_PORT, ge=0, le=65535, description="Prometheus /metrics port (0: off)"
    )

    alert_rules: list[AlertRule] = Field(
        default_factory=list,
        description='alert notifications, JSON: [{"urls": ["mailto://..."], "min_level": '
        '"alarm", "codes": [], "quiet_period_s": 300, "notify_clear": true}]',
    )

    @field_validator("site", mode="before")
    @classmethod
    def _site(cls, value: object) -> object:
        if value == "":
            return None  # compose files pass `${BMS_SITE:-}`
        if isinstance(value, str) and not SYSTEM_ID_RE.fullmatch(value):
            raise ValueError("must be 1-32 lower-case letters, digits, '-' or '_'")
        return value

    @model_validator(mode="after")
    def _discovery_needs_the_mirror(self) -> Self:
        if self.ha_discovery and not self.json_mirror:
            raise ValueError("ha_discovery reads the JSON mirror: set json_mirror as well")
        if self.ha_commands and not self.ha_discovery:
            raise ValueError("ha_commands announces its entities: set ha_discovery as well")
        if self.sparkplug_edge_node is not None:
            check_id("edge node id", self.sparkplug_edge_node)
        if self.ha_commands:
            self.commands_endpoint  # noqa: B018 - an unreadable secret fails at start-up
        return self

    @property
    def edge_node(self) -> str:
        """The Sparkplug edge node id: BMS_SPARKPLUG_EDGE_NODE, else the host's short name."""
        if self.sparkplug_edge_node:
            return self.sparkplug_edge_node
        host = socket.gethostname().split(".")[0]
        return "".join(c for c in host if c not in ID_FORBIDDEN and c.isprintable()) or "bms"

    @property
    def commands_endpoint(self) -> MqttEndpoint:
        """The command user's login: its own user name and password when set (the broker
        lets only `integrations_commands` send commands), else the bridge's."""
        if not self.ha_commands_username:
            return self.endpoint
        password = (
            read_secret(self.ha_commands_password_file) if self.ha_commands_password_file else None
        )
        return replace(self.endpoint, username=self.ha_commands_username, password=password)
