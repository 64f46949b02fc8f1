"""Where the contactor coils and auxiliary feedback contacts are: a Modbus digital I/O module.

A generic industrial relay module (RTU on RS-485 or Modbus TCP): one coil per contactor (main
positive, main negative, precharge relay) and one discrete input per auxiliary contact. The
addresses are the module's wiring, so they live here and not in code.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from shared.config._base import ConfigModel, raise_problems

MODBUS_ADDRESS_MAX = 65535
"""Coil and discrete-input addresses are 16-bit (zero-based protocol addresses)."""


class ContactorIoConfig(ConfigModel):
    """The relay module driving the contactors (read by the master's contactor I/O driver)."""

    transport: Literal["tcp", "rtu"] = "tcp"
    host: str = Field("127.0.0.1", min_length=1, max_length=255)
    """Modbus TCP: the module's host name or address."""
    tcp_port: int = Field(502, ge=1, le=65535)
    serial_port: str = Field("/dev/ttyUSB1", min_length=1, max_length=255)
    """Modbus RTU: device path or pyserial URL."""
    baudrate: int = Field(19200, gt=0, le=4_000_000)
    parity: Literal["N", "E", "O"] = "E"
    unit_id: int = Field(1, ge=1, le=247)
    coil_main_positive: int = Field(0, ge=0, le=MODBUS_ADDRESS_MAX)
    coil_main_negative: int = Field(1, ge=0, le=MODBUS_ADDRESS_MAX)
    coil_precharge: int = Field(2, ge=0, le=MODBUS_ADDRESS_MAX)
    input_main_positive: int = Field(0, ge=0, le=MODBUS_ADDRESS_MAX)
    """Discrete input of the main positive contactor's auxiliary contact (closed = 1)."""
    input_main_negative: int = Field(1, ge=0, le=MODBUS_ADDRESS_MAX)
    input_precharge: int = Field(2, ge=0, le=MODBUS_ADDRESS_MAX)
    poll_period_s: float = Field(0.05, gt=0.0, le=5.0)
    """How often the feedback contacts are read."""
    timeout_s: float = Field(0.2, gt=0.0, le=5.0)
    """Time to wait for one reply; a feedback sample older than poll period + timeout is stale."""

    @model_validator(mode="after")
    def _distinct_addresses(self) -> Self:
        problems: list[str] = []
        for kind in ("coil", "input"):
            addresses = {
                name: getattr(self, f"{kind}_{name}")
                for name in ("main_positive", "main_negative", "precharge")
            }
            if len(set(addresses.values())) != len(addresses):
                listed = ", ".join(f"{n} {a}" for n, a in addresses.items())
                problems.append(
                    f"{kind}_*: two contactors share one {kind} address ({listed}); each "
                    f"contactor needs its own {kind}"
                )
        raise_problems(problems)
        return self
