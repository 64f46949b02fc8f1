"""Which CAN channel to open: the system configuration (`interfaces.can`) names interface,
channel and bit rate; a BMS_* setting may name the device instead, and the log says so."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import can

from shared.can_bus import open_can
from shared.config import CanConfig

log = logging.getLogger("can_gateway")


@dataclass(frozen=True)
class BusParams:
    interface: str
    channel: str
    bitrate: int

    def __str__(self) -> str:
        return f"{self.interface} {self.channel} at {self.bitrate} bit/s"


@dataclass(frozen=True)
class ChannelOpener:
    """Resolves the channel from the configuration and the device overrides, and opens it."""

    interface: str | None = None
    channel: str | None = None
    bitrate: int | None = None

    def params(self, cfg: CanConfig) -> BusParams:
        overridden = {
            name: (mine, theirs)
            for name, mine, theirs in (
                ("interface", self.interface, cfg.interface),
                ("channel", self.channel, cfg.channel),
                ("bitrate", self.bitrate, cfg.bitrate),
            )
            if mine is not None and mine != theirs
        }
        for name, (mine, theirs) in overridden.items():
            log.info(
                "BMS_CAN_%s=%s overrides interfaces.can.%s=%s",
                name.upper(),
                mine,
                name,
                theirs,
            )
        return BusParams(
            self.interface or cfg.interface,
            self.channel or cfg.channel,
            self.bitrate or cfg.bitrate,
        )

    def open(self, params: BusParams) -> can.BusABC:
        log.info("CAN on %s", params)
        return open_can(params.interface, params.channel, params.bitrate)
