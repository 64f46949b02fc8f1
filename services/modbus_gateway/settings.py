"""Settings of the Modbus gateway (flags or BMS_* variables).

The protocol parameters come from the system configuration (`interfaces.modbus`). A BMS_*
setting of the same name only names the device on this host (`tcp_host`, `rtu_port`) or
overrides the configured value; every one that is set is logged as such.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import SettingsConfigDict

from shared.config import SYSTEM_ID_RE
from shared.config.interfaces import MODBUS_BAUDRATES, ModbusConfig
from shared.config.system import SystemConfig
from shared.host_settings import HostSetting, in_use
from shared.messages import FieldInUse
from shared.settings import ServiceSettings

DEVICE_NAMES = frozenset({"tcp_host", "rtu_port"})
"""Settings that name the device on this host rather than change the protocol."""

HOST_SETTINGS: tuple[HostSetting, ...] = tuple(
    HostSetting(name, f"interfaces.modbus.{name}", device=name in DEVICE_NAMES)
    for name in (
        "tcp_host",
        "rtu_port",
        "tcp_enabled",
        "tcp_port",
        "rtu_enabled",
        "rtu_baudrate",
        "rtu_parity",
        "rtu_stop_bits",
        "unit_id",
    )
)
"""The settings that stand in for `interfaces.modbus` fields (same name on both sides); the
acknowledgement reports each one that differs from the configuration (`ConfigAck.in_use`)."""


class ModbusGatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(cli_prog_name="python -m services.modbus_gateway")

    tcp_host: str | None = Field(
        None, description="Modbus TCP listen address (default: interfaces.modbus.tcp_host)"
    )
    rtu_port: str | None = Field(
        None, description="serial device for Modbus RTU (default: interfaces.modbus.rtu_port)"
    )
    tcp_enabled: bool | None = Field(None, description="override interfaces.modbus.tcp_enabled")
    tcp_port: int | None = Field(
        None, ge=1, le=65535, description="override interfaces.modbus.tcp_port"
    )
    rtu_enabled: bool | None = Field(None, description="override interfaces.modbus.rtu_enabled")
    rtu_baudrate: int | None = Field(None, description="override interfaces.modbus.rtu_baudrate")
    rtu_parity: Literal["N", "E", "O"] | None = Field(
        None, description="override interfaces.modbus.rtu_parity"
    )
    rtu_stop_bits: Literal[1, 2] | None = Field(
        None, description="override interfaces.modbus.rtu_stop_bits"
    )
    unit_id: int | None = Field(
        None, ge=1, le=247, description="override interfaces.modbus.unit_id"
    )
    site: str | None = Field(
        None,
        description="serve this site (its strings in parallel as one battery: 802 the site, "
        "one 804 per string) instead of the system; the Modbus interface still comes from "
        "the system's configuration (the site's first string's when BMS_SYSTEM is the site)",
    )
    stale_after_s: float = Field(
        3.0, gt=0, le=60, description="pack data older than this reads 'not implemented'"
    )
    command_timeout_s: float = Field(2.0, gt=0, le=30, description="wait for the master's reply")

    @field_validator("site", mode="before")
    @classmethod
    def _site(cls, value: object) -> object:
        if value == "":
            return None  # compose files pass `${BMS_SITE:-}`
        if isinstance(value, str) and not SYSTEM_ID_RE.match(value):
            raise ValueError("must be 1-32 lower-case letters, digits, '-' or '_'")
        return value

    @field_validator("rtu_baudrate")
    @classmethod
    def _baudrate(cls, value: int | None) -> int | None:
        if value is not None and value not in MODBUS_BAUDRATES:
            choices = ", ".join(str(b) for b in MODBUS_BAUDRATES)
            raise ValueError(f"Modbus RTU baud rate {value} is not supported; use one of {choices}")
        return value

    def overrides(self) -> dict[str, object]:
        """The `interfaces.modbus` fields this host sets, by field name."""
        names = sorted(row.setting for row in HOST_SETTINGS)
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def in_use(self, config: SystemConfig, host: str) -> dict[str, FieldInUse]:
        """The `interfaces.modbus` fields this host runs with another value than `config`
        says, by dotted path (for the acknowledgement)."""
        return in_use(HOST_SETTINGS, self.overrides(), config, host)

    def resolve(self, configured: ModbusConfig) -> tuple[ModbusConfig, list[str]]:
        """The interface parameters in effect, and one line per setting that changed one.

        Raises ValueError naming the setting when an override is not a valid value.
        """
        overrides = self.overrides()
        try:
            effective = ModbusConfig.model_validate(configured.model_dump() | overrides)
        except ValidationError as exc:
            problems = "; ".join(
                f"BMS_{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
                for e in exc.errors()
            )
            raise ValueError(f"Modbus settings on this host are not valid: {problems}") from exc
        notes = []
        for name, value in overrides.items():
            was = getattr(configured, name)
            if value == was:
                continue
            kind = "names the device" if name in DEVICE_NAMES else "overrides"
            notes.append(
                f"BMS_{name.upper()}={value} {kind}: interfaces.modbus.{name} is {was!r} in the "
                f"system configuration"
            )
        return effective, notes

    def pinned(self, old: ModbusConfig, new: ModbusConfig) -> list[str]:
        """One line per field that the configuration changes from `old` to `new` while a
        BMS_* setting of this host keeps it: the change does not take effect here."""
        lines = []
        for name, value in self.overrides().items():
            before, after = getattr(old, name), getattr(new, name)
            if before != after:
                lines.append(
                    f"the configuration changes interfaces.modbus.{name} from {before!r} to "
                    f"{after!r}, but BMS_{name.upper()}={value} on this host keeps {value!r}"
                )
        return lines
