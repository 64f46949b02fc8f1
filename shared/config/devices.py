"""Where the master's CAN devices are wired: the current sensor and the insulation monitor.

Each device names its driver and the python-can bus it sits on. The contactor relay module has
its own section (`contactors.io`, shared/config/contactor_io.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Self

from pydantic import Field, model_validator

from shared.config._base import ConfigModel

DEVICE_CAN_BITRATES = (125_000, 250_000, 500_000, 1_000_000)
"""Classic CAN rates; the IVT-S ships at 500 kbit/s, the iso165C at 500 kbit/s as well."""

MIN_CYCLES_BEFORE_STALE = 3
"""A value goes stale after at least this many missed cycles (one late frame is not a fault)."""


class DeviceCanConfig(ConfigModel):
    """The python-can bus a device sits on (`can.Bus(interface=..., channel=..., bitrate=...)`)."""

    interface: str = Field("socketcan", min_length=1, max_length=64)
    """python-can interface name (socketcan, slcan, pcan, virtual, udp_multicast, ...)."""
    channel: str = Field("can1", min_length=1, max_length=255)
    """Interface channel: can1, a serial port for slcan, a multicast group for udp_multicast."""
    bitrate: int = 500_000
    stale_after_s: float = Field(0.25, gt=0.0, le=10.0)
    """A value older than this reads as unknown, never as its last value."""

    @model_validator(mode="after")
    def _bitrate(self) -> Self:
        if self.bitrate not in DEVICE_CAN_BITRATES:
            choices = ", ".join(str(b) for b in DEVICE_CAN_BITRATES)
            raise ValueError(
                f"bitrate: {self.bitrate} bit/s is not a CAN bit rate these devices use; "
                f"use one of {choices}"
            )
        return self


CurrentSensorDriver = Literal["ivt_s"]
InsulationMonitorDriver = Literal["none", "iso165c"]
"""`none`: no insulation monitor is installed (its protection quantity is not built);
`iso165c`: a Bender iso165C on CAN."""
ISO165C_ERROR_THRESHOLD_OHM = (30_000.0, 1_000_000.0)
ISO165C_WARNING_THRESHOLD_OHM = (40_000.0, 2_000_000.0)
"""The iso165C's own threshold ranges (manual D00154, as foxBMS 2 encodes them); the master
sets the device's thresholds from `protection.insulation_fault_ohm` / `_warning_ohm`."""


def check_cycle(cycle_time_ms: int, can: DeviceCanConfig, device: str) -> list[str]:
    """The freshness window must hold several cycles of the device's cyclic messages."""
    needed_s = MIN_CYCLES_BEFORE_STALE * cycle_time_ms / 1000.0
    if can.stale_after_s < needed_s:
        return [
            f"can.stale_after_s: {can.stale_after_s:g} s is shorter than "
            f"{MIN_CYCLES_BEFORE_STALE} cycles of the {device} ({cycle_time_ms} ms each, "
            f"cycle_time_ms); raise it to at least {needed_s:g} s or shorten the cycle"
        ]
    return []


class InsulationMonitorConfig(ConfigModel):
    """The insulation monitor between the pack and earth (read by the master)."""

    driver: InsulationMonitorDriver = "none"
    can: DeviceCanConfig = DeviceCanConfig(stale_after_s=2.0)
    """Its CAN bus; an insulation measurement takes seconds, hence the longer freshness."""


def bit_rate_conflicts(buses: Mapping[str, tuple[str, str, int]]) -> list[str]:
    """Sections (`name -> (interface, channel, bitrate)`) on one CAN channel must agree on
    its bit rate: a channel runs at one rate, and the devices on it share one adapter."""
    seen: dict[tuple[str, str], tuple[str, int]] = {}
    out: list[str] = []
    for section, (interface, channel, bitrate) in buses.items():
        first, rate = seen.setdefault((interface, channel), (section, bitrate))
        if rate != bitrate:
            out.append(
                f"{section}.bitrate: {bitrate} bit/s on {interface} {channel}, where {first} "
                f"runs at {rate} bit/s; devices on one CAN channel share its bit rate"
            )
    return out
