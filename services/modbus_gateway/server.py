"""The Modbus server edge: pymodbus devices whose registers come from the register map.

Every read refreshes the requested window from the latest pack data (pull pattern), so a TCP
and an RTU server share one truth. Writes become master commands; a refused or unanswered
command returns exception 04.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice

from services.modbus_gateway.register_map import (
    Command,
    Identity,
    WriteError,
    build_image,
    decode_write,
)
from shared.config import SystemConfig
from shared.messages import CellSnapshot, PackState

log = logging.getLogger("modbus_gateway")

WRITE_CODES = frozenset({5, 6, 15, 16, 22, 23})

CommandSender = Callable[[Command], Awaitable[str | None]]
"""Sends a command to the master; returns None when accepted, else why not."""


@dataclass
class GatewayData:
    """The latest pack data and the register image built from it."""

    config: SystemConfig
    identity: Identity
    stale_after_s: float
    monotonic: Callable[[], float] = time.monotonic
    pack: PackState | None = None
    cells: CellSnapshot | None = None
    pack_s: float | None = None
    _image: dict[int, int] = field(default_factory=dict)
    _image_stale: bool | None = None
    _dirty: bool = True

    def update_pack(self, pack: PackState) -> None:
        self.pack, self.pack_s, self._dirty = pack, self.monotonic(), True

    def update_cells(self, cells: CellSnapshot) -> None:
        self.cells, self._dirty = cells, True

    def replace_config(self, config: SystemConfig) -> None:
        """A new configuration with the same register layout (limits, names, thresholds)."""
        self.config, self._dirty = config, True

    @property
    def stale(self) -> bool:
        return self.pack_s is None or self.monotonic() - self.pack_s > self.stale_after_s

    def image(self) -> dict[int, int]:
        stale = self.stale
        if self._dirty or stale != self._image_stale:
            self._image = build_image(
                self.config, self.pack, self.cells, stale=stale, identity=self.identity
            )
            self._image_stale, self._dirty = stale, False
        return self._image


def blocks(image: dict[int, int]) -> list[tuple[int, int]]:
    """Contiguous (start, count) runs of the image: the addresses that exist."""
    runs: list[tuple[int, int]] = []
    for address in sorted(image):
        if runs and runs[-1][0] + runs[-1][1] == address:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((address, 1))
    return runs


def make_device(data: GatewayData, unit_id: int, send: CommandSender) -> SimDevice:
    """`unit_id` 0 answers every unit id (TCP); a number answers only that one (RTU)."""

    async def action(
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if set_values is not None and function_code in WRITE_CODES:
            return await _write(address, [int(v) for v in set_values], send)
        image = data.image()
        for i in range(count):
            registers[address - start_address + i] = image.get(address + i, 0)
        return None

    simdata = [
        SimData(address=start, count=count, values=0, datatype=DataType.REGISTERS, readonly=False)
        for start, count in blocks(data.image())
    ]
    return SimDevice(id=unit_id, simdata=simdata, action=action)


async def _write(address: int, values: Sequence[int], send: CommandSender) -> ExcCodes | None:
    decoded = decode_write(address, values)
    if isinstance(decoded, WriteError):
        log.warning("write to %d refused: %s", address, decoded.reason)
        return ExcCodes(decoded.code)
    for command in decoded:
        refusal = await send(command)
        if refusal is not None:
            log.warning("command %s refused: %s", command.name, refusal)
            return ExcCodes.DEVICE_FAILURE
    return None


def drop_foreign_units(unit_ids: frozenset[int]) -> Callable[[bool, bytes], bytes]:
    """RTU: stay silent for other unit ids on a shared RS-485 line (pymodbus would answer 04)."""

    def trace(sending: bool, packet: bytes) -> bytes:
        if sending and packet and packet[0] not in unit_ids:
            return b""
        return packet

    return trace
