"""External interfaces: Modbus (TCP and RTU) and the inverter CAN bus."""

from __future__ import annotations

from typing import Literal, Self, get_args

from pydantic import Field, field_validator, model_validator

from shared.config._base import ConfigModel, raise_problems
from shared.config.can_ranges import PYLON_HV_DEFAULT_CURRENT_OFFSET_A

MODBUS_BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
CAN_BITRATES = (125_000, 250_000, 500_000, 1_000_000)

CanProfile = Literal["victron_0x35x", "pylon_v12", "pylon_hv", "native"]

# Profiles that send the same 11-bit IDs (0x351/0x355/0x356/0x35E) and so cannot share a bus.
_CONFLICTING_PROFILES = frozenset({"victron_0x35x", "pylon_v12"})
CAN_PROFILES_MAX = len(get_args(CanProfile)) - len(_CONFLICTING_PROFILES) + 1
"""Profiles one channel can run together."""


class ModbusConfig(ConfigModel):
    tcp_enabled: bool = True
    tcp_host: str = Field("0.0.0.0", min_length=1, max_length=255)
    tcp_port: int = Field(502, ge=1, le=65535)
    rtu_enabled: bool = False
    rtu_port: str = Field("/dev/ttyUSB0", min_length=1, max_length=255)
    rtu_baudrate: int = 9600
    rtu_parity: Literal["N", "E", "O"] = "N"
    rtu_stop_bits: Literal[1, 2] = 1
    unit_id: int = 1

    @field_validator("unit_id")
    @classmethod
    def _unit_id(cls, value: int) -> int:
        if not 1 <= value <= 247:
            raise ValueError(
                f"Modbus unit id {value} is not allowed: use 1 to 247 "
                f"(0 is the broadcast address, 248 to 255 are reserved)"
            )
        return value

    @field_validator("rtu_baudrate")
    @classmethod
    def _baudrate(cls, value: int) -> int:
        if value not in MODBUS_BAUDRATES:
            choices = ", ".join(str(b) for b in MODBUS_BAUDRATES)
            raise ValueError(f"Modbus RTU baud rate {value} is not supported; use one of {choices}")
        return value


class CanConfig(ConfigModel):
    enabled: bool = True
    interface: str = Field("socketcan", min_length=1, max_length=64)
    """python-can interface name."""
    channel: str = Field("can0", min_length=1, max_length=64)
    bitrate: int = 500_000
    profiles: tuple[CanProfile, ...] = Field(("pylon_hv",), max_length=CAN_PROFILES_MAX)
    """Each profile at most once; victron_0x35x and pylon_v12 exclude each other."""
    pylon_hv_byte_order: Literal["little", "big"] = "little"
    """Pylontech HV: byte order of the 16-bit fields (diyBMS and ai-republic send little-endian,
    Battery-Emulator big-endian by default)."""
    pylon_hv_current_offset_a: float = Field(PYLON_HV_DEFAULT_CURRENT_OFFSET_A, ge=0.0, le=6553.5)
    """Pylontech HV: raw current = (I + offset) x 10; 0 sends a signed 16-bit current."""
    pylon_hv_discharge_limit_sign: Literal["negative", "positive"] = "negative"
    """Pylontech HV 0x4220 discharge limit: negative = raw (offset - DCL) x 10 (diyBMS:
    30000 - DCL x 10); positive = raw (offset + DCL) x 10 (Battery-Emulator, ai-republic)."""

    @field_validator("bitrate")
    @classmethod
    def _bitrate(cls, value: int) -> int:
        if value not in CAN_BITRATES:
            choices = ", ".join(str(b) for b in CAN_BITRATES)
            raise ValueError(f"CAN bit rate {value} is not supported; use one of {choices}")
        return value

    @model_validator(mode="after")
    def _profiles(self) -> Self:
        problems: list[str] = []
        if len(set(self.profiles)) != len(self.profiles):
            problems.append(f"profiles: {list(self.profiles)} lists a profile more than once")
        if set(self.profiles) >= _CONFLICTING_PROFILES:
            problems.append(
                "profiles: victron_0x35x and pylon_v12 both send frames 0x351/0x355/0x356/0x35E "
                "and cannot run on the same CAN channel; choose one"
            )
        if self.enabled and not self.profiles:
            problems.append("profiles: CAN is enabled but no profile is selected")
        raise_problems(problems)
        return self


class InterfacesConfig(ConfigModel):
    modbus: ModbusConfig = ModbusConfig()
    can: CanConfig = CanConfig()
