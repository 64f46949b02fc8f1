"""Settings of the slave agent (flags or BMS_* variables)."""

from __future__ import annotations

import socket
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from shared.endpoint import MqttEndpoint, parse_mqtt_url, with_credentials
from shared.racks import (
    module_range_level,
    rack_credentials,
    rack_index,
    rack_instance,
    rack_modules,
)
from shared.settings import ServiceSettings


def parse_modules(spec: str) -> list[int]:
    """'0-6', '1,3,5' or '0-2,7' -> sorted module indices."""
    out: set[int] = set()
    for part in spec.replace(" ", "").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ValueError(f"modules: {spec!r} is not like '0-6' or '0,2,4'")
        a, b = int(lo), int(hi) if hi else int(lo)
        if a > b:
            raise ValueError(f"modules: range {part!r} runs backwards")
        out.update(range(a, b + 1))
    if not out or max(out) > 195:
        raise ValueError(f"modules: {spec!r} must name modules 0 to 195")
    return sorted(out)


class SlaveAgentSettings(ServiceSettings):
    model_config = SettingsConfigDict(cli_prog_name="python -m services.slave_agent")

    modules: str = Field("all", description="modules hosted here: 'all', '0-6' or '0,2,4'")
    rack: str | None = Field(
        None,
        description="rack number (hosts modules rack*modules_per_rack onwards), or 'ordinal': "
        "the number ending the host name (a Kubernetes StatefulSet pod)",
    )
    modules_per_rack: int = Field(0, ge=0, le=196, description="modules per rack, with --rack")
    driver: Literal["simulated", "modbus"] = Field("simulated", description="hardware driver")
    master_silence_timeout_s: float = Field(
        3.0, gt=0, le=60, description="stop balancing when the master is silent this long"
    )
    truth_period_s: float = Field(1.0, gt=0, description="ground truth period (simulation)")
    seed: int = Field(0, ge=0, description="random seed of the simulated cells")
    initial_soc_pct: float = Field(50.0, ge=0, le=100, description="initial SOC (simulation)")
    ambient_c: float = Field(25.0, ge=-40, le=80, description="ambient temperature (simulation)")
    modbus_port: str = Field(
        "/dev/ttyUSB0",
        description="link to the boards (modbus): a serial port for RTU, or tcp://host:port "
        "for Modbus TCP (e.g. the plant simulation)",
    )
    modbus_baudrate: int = Field(115200, description="serial baud rate (modbus)")
    modbus_parity: Literal["N", "E", "O"] = Field("N", description="serial parity (modbus)")
    modbus_stopbits: Literal[1, 2] = Field(1, description="serial stop bits (modbus)")
    modbus_map_file: str | None = Field(None, description="JSON register map of the boards")

    mqtt_password_dir: str | None = Field(
        None,
        description="with --rack: a directory holding every rack's broker password, each in a "
        "file named after its user (the rack's instance name, also the default user name); "
        "one Kubernetes Secret serves a whole StatefulSet",
    )

    @property
    def endpoint(self) -> MqttEndpoint:
        if self.rack is None or not self.mqtt_password_dir:
            return super().endpoint
        user, password_file = rack_credentials(
            self.rack, self.mqtt_password_dir, socket.gethostname()
        )
        return with_credentials(parse_mqtt_url(self.mqtt_url), user, password_file)

    @field_validator("modules")
    @classmethod
    def _modules(cls, value: str) -> str:
        if value != "all":
            parse_modules(value)
        return value

    @model_validator(mode="after")
    def _rack(self) -> Self:
        """A rack setting becomes the module range and the instance name."""
        if self.rack is None:
            return self
        if self.modules != "all":
            raise ValueError("set either modules or rack, not both")
        index = rack_index(self.rack, socket.gethostname())
        self.modules = rack_modules(index, self.modules_per_rack)
        self.rack = str(index)
        if self.instance is None:
            self.instance = rack_instance(index)
        return self

    def instance_name(self) -> str:
        """The instance on `service/{instance}/status`: set, per rack, or per module range."""
        if self.instance is not None:
            return self.instance
        if self.modules == "all":
            return "slave_agent"
        return "slave_agent-" + self.modules.replace(",", "_")

    def module_list(self, total_modules: int) -> list[int]:
        if self.modules == "all":
            return list(range(total_modules))
        return [m for m in parse_modules(self.modules) if m < total_modules]

    def telemetry_range(self, total_modules: int) -> str:
        """The `{modules}` level of the agent's telemetry topic: the range it is set to host,
        whole, as the broker ACL grants a rack (a short last rack keeps its nominal range)."""
        if self.modules == "all":
            return module_range_level(range(total_modules))
        return module_range_level(parse_modules(self.modules))
