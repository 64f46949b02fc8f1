"""Settings of the Modbus gateway (flags or BMS_* variables)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class ModbusGatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(cli_prog_name="python -m services.modbus_gateway")

    tcp_host: str = Field("0.0.0.0", description="Modbus TCP listen address")
    tcp_port: int = Field(5020, ge=0, le=65535, description="Modbus TCP port (0: TCP off)")
    rtu_port: str | None = Field(None, description="serial port for Modbus RTU (none: RTU off)")
    rtu_baudrate: int = Field(19200, description="RTU baud rate")
    rtu_parity: Literal["N", "E", "O"] = Field("E", description="RTU parity")
    rtu_stopbits: Literal[1, 2] = Field(1, description="RTU stop bits")
    unit_id: int = Field(1, ge=1, le=247, description="RTU unit id (others get no answer)")
    stale_after_s: float = Field(
        3.0, gt=0, le=60, description="pack data older than this reads 'not implemented'"
    )
    command_timeout_s: float = Field(2.0, gt=0, le=30, description="wait for the master's reply")
