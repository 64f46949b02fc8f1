"""The Modbus server edge: pymodbus devices whose registers come from the register map.

Every read refreshes the requested window from the latest pack data (pull pattern), so a TCP
and an RTU server share one truth. Writes become master commands (a site's: the site
controller's `site_operation`); a refused or unanswered command returns exception 04.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import Histogram
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.simulator import DataType, SimData, SimDevice

from services.modbus_gateway.conformance import SERVED
from services.modbus_gateway.register_map import (
    Command,
    Identity,
    WriteError,
    build_image,
    decode_write,
    layout_matches,
)
from services.modbus_gateway.site_map import StringData, build_site_image
from shared.config import SystemConfig
from shared.config.site import SiteConfig
from shared.messages import CellSnapshot, PackState
from shared.messages.site import SiteState

log = logging.getLogger("modbus_gateway")

WRITE_CODES = frozenset(fc for fc, layout in SERVED.items() if layout.writes)

CommandSender = Callable[[Command], Awaitable[str | None]]
"""Sends a command to the master; returns None when accepted, else why not."""
WriteDecoder = Callable[[int, Sequence[int]], list[Command] | WriteError]
"""A write (0-based address, values) to its commands, or the Modbus exception."""


@dataclass
class GatewayData:
    """The configuration, the latest pack data and the register image built from them.

    The image is always built from one configuration and data that belong to it: after a
    topology change the pack data is dropped and nothing measured is served until a cell
    snapshot of the new layout arrives (the master then runs the new topology).
    """

    config: SystemConfig
    identity: Identity
    stale_after_s: float
    monotonic: Callable[[], float] = time.monotonic
    pack: PackState | None = None
    cells: CellSnapshot | None = None
    pack_s: float | None = None
    awaiting_layout: bool = False
    """True after a topology change until the master reports the new layout."""
    counters: Counter[str] = field(default_factory=Counter)
    """Health counters (the bus's, in the service): `cell_snapshots_of_another_layout`,
    `values_refused` (values that did not fit their registers, once per new point)."""
    _image: dict[int, int] = field(default_factory=dict)
    _image_stale: bool | None = None
    _dirty: bool = True
    _refused: frozenset[str] = frozenset()
    _foreign_said: bool = False

    def update_pack(self, pack: PackState) -> None:
        if self.awaiting_layout:
            return
        self.pack, self.pack_s, self._dirty = pack, self.monotonic(), True

    def update_cells(self, cells: CellSnapshot) -> None:
        if not layout_matches(self.config, cells):
            self.counters["cell_snapshots_of_another_layout"] += 1
            if not self._foreign_said:
                self._foreign_said = True
                log.log(
                    logging.INFO if self.awaiting_layout else logging.WARNING,
                    "cell snapshot with %d cells and %d sensors does not match the configured "
                    "topology (%d cells, %d sensors): not served (%d so far)",
                    cells.cell_count,
                    cells.temp_count,
                    self.config.topology.total_cells,
                    self.config.topology.total_temp_sensors,
                    self.counters["cell_snapshots_of_another_layout"],
                )
            if self.cells is not None:
                self.cells, self._dirty = None, True
            return
        if self.awaiting_layout:
            log.info("the master reports the new layout: serving its data")
        self.cells, self.awaiting_layout, self._dirty = cells, False, True
        self._foreign_said = False

    def replace_config(self, config: SystemConfig, identity: Identity) -> None:
        """A new configuration; with another topology the register layout changes at once."""
        relayout = config.topology != self.config.topology
        self.config, self.identity, self._dirty = config, identity, True
        if relayout:
            self.pack = self.cells = self.pack_s = None
            self.awaiting_layout = True
            log.info(
                "new topology (%d cells, %d sensors): the register layout changes now; values "
                "read 'not available' until the master reports it",
                config.topology.total_cells,
                config.topology.total_temp_sensors,
            )

    @property
    def stale(self) -> bool:
        return self.pack_s is None or self.monotonic() - self.pack_s > self.stale_after_s

    def image(self) -> dict[int, int]:
        stale = self.stale
        if self._dirty or stale != self._image_stale:
            refused: list[str] = []
            self._image = build_image(
                self.config,
                self.pack,
                self.cells,
                stale=stale,
                identity=self.identity,
                refused=refused,
            )
            self._image_stale, self._dirty = stale, False
            if new := frozenset(refused) - self._refused:
                self.counters["values_refused"] += len(new)
                log.warning(
                    "values that do not fit their registers read 'not available': %s",
                    ", ".join(refused),
                )
            self._refused = frozenset(refused)
        return self._image


@dataclass
class SiteData:
    """A site's latest state, each string's configuration and data, and the register image of
    the site chain built from them (`site_map`).

    Each input keeps its own age: a site state or a string's pack state older than
    `stale_after_s` is served as unknown, its cell snapshot with it. Only the strings of the
    site configuration are kept.
    """

    site_id: str
    identity: Identity
    stale_after_s: float
    monotonic: Callable[[], float] = time.monotonic
    site_config: SiteConfig | None = None
    site: SiteState | None = None
    site_s: float | None = None
    configs: dict[str, SystemConfig] = field(default_factory=dict)
    packs: dict[str, tuple[PackState, float]] = field(default_factory=dict)
    cells: dict[str, CellSnapshot] = field(default_factory=dict)
    counters: Counter[str] = field(default_factory=Counter)
    """Health counters: `values_refused` (values that did not fit their registers)."""
    _image: dict[int, int] = field(default_factory=dict)
    _key: tuple[object, ...] | None = None
    _dirty: bool = True
    _refused: frozenset[str] = frozenset()

    def wants(self, system: str) -> bool:
        """True for a system that is a string of the site."""
        return self.site_config is not None and system in self.site_config.system_ids

    def update_site_config(self, config: SiteConfig) -> None:
        if config == self.site_config:
            return
        self.site_config, self._dirty = config, True
        keep = set(config.system_ids)
        for table in (self.packs, self.cells):
            for system in set(table) - keep:
                del table[system]
        log.info("site %s: strings %s", config.site, ", ".join(config.system_ids))

    def set_identity(self, identity: Identity) -> None:
        if identity != self.identity:
            self.identity, self._dirty = identity, True

    def update_site(self, site: SiteState) -> None:
        self.site, self.site_s, self._dirty = site, self.monotonic(), True

    def update_config(self, system: str, config: SystemConfig) -> None:
        """Every system's configuration is kept: it is retained, so it may arrive before the
        site configuration that names the system a string."""
        if self.configs.get(system) != config:
            old = self.configs.get(system)
            self.configs[system], self._dirty = config, True
            if old is not None and old.topology != config.topology:
                self.packs.pop(system, None)  # data of the old layout is never served
                self.cells.pop(system, None)

    def update_pack(self, system: str, pack: PackState) -> None:
        if self.wants(system):
            self.packs[system], self._dirty = (pack, self.monotonic()), True

    def update_cells(self, system: str, cells: CellSnapshot) -> None:
        if self.wants(system):
            self.cells[system], self._dirty = cells, True

    def _fresh(self, since_s: float | None) -> bool:
        return since_s is not None and self.monotonic() - since_s <= self.stale_after_s

    def strings(self) -> list[StringData]:
        """Every string of the site in order, with only what is fresh."""
        out = []
        for system in () if self.site_config is None else self.site_config.system_ids:
            entry = self.packs.get(system)
            fresh = entry is not None and self._fresh(entry[1])
            out.append(
                StringData(
                    system,
                    self.configs.get(system),
                    entry[0] if fresh and entry is not None else None,
                    self.cells.get(system) if fresh else None,
                )
            )
        return out

    def image(self) -> dict[int, int]:
        strings = self.strings()
        site = self.site if self._fresh(self.site_s) else None
        key = (site is None, tuple(s.pack is None for s in strings))
        if self._dirty or key != self._key:
            refused: list[str] = []
            self._image = build_site_image(site, strings, identity=self.identity, refused=refused)
            self._key, self._dirty = key, False
            if new := frozenset(refused) - self._refused:
                self.counters["values_refused"] += len(new)
                log.warning(
                    "values that do not fit their registers read 'not implemented': %s",
                    ", ".join(refused),
                )
            self._refused = frozenset(refused)
        return self._image


class ImageSource(Protocol):
    def image(self) -> dict[int, int]: ...


ADDRESS_SPACE = 0x10000
REQUEST_SECONDS = Histogram(
    "bms_modbus_request_seconds",
    "Time to answer one Modbus request (a write includes the master's reply to its command).",
    buckets=(0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0),
    registry=None,
)
"""Served by `python -m services.modbus_gateway` on BMS_METRICS_PORT."""


def make_device(
    data: ImageSource,
    unit_id: int,
    send: CommandSender | None,
    decode: WriteDecoder = decode_write,
) -> SimDevice:
    """`unit_id` 0 answers every unit id (TCP); a number answers only that one (RTU). `send`
    None: nothing is writable, every write answers exception 02. `decode` turns a write into
    commands (a single system's: `decode_write`; a site's: `site_map.decode_site_write`), each
    answered only once `send` has its reply.

    The device spans the whole address space and the action answers from the current image,
    so the layout can change while the server runs; an address outside the image answers
    exception 02. The server's guard (`guard.guard_server`) refuses every function code
    `conformance.SERVED` does not list before the action runs; the action refuses them too,
    so a device without the guard never serves them.
    """

    async def action(
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        started = time.perf_counter()
        try:
            return await answer(function_code, start_address, address, count, registers,
                                set_values)  # fmt: skip
        finally:
            REQUEST_SECONDS.observe(time.perf_counter() - started)

    async def answer(
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if function_code not in SERVED:
            return ExcCodes.ILLEGAL_FUNCTION
        if set_values is not None and function_code in WRITE_CODES:
            if send is None:
                log.warning("write to %d refused: nothing is writable here", address)
                return ExcCodes.ILLEGAL_ADDRESS
            return await _write(address, [int(v) for v in set_values], send, decode)
        image = data.image()  # one image for the whole request: never a mix of two layouts
        if any(a not in image for a in range(address, address + count)):
            return ExcCodes.ILLEGAL_ADDRESS
        for i in range(count):
            registers[address - start_address + i] = image[address + i]
        return None

    simdata = [
        SimData(
            address=0, count=ADDRESS_SPACE, values=0, datatype=DataType.REGISTERS, readonly=False
        )
    ]
    return SimDevice(id=unit_id, simdata=simdata, action=action)


async def _write(
    address: int, values: Sequence[int], send: CommandSender, decode: WriteDecoder
) -> ExcCodes | None:
    decoded = decode(address, values)
    if isinstance(decoded, WriteError):
        log.warning("write to %d refused: %s", address, decoded.reason)
        return ExcCodes(decoded.code)
    for command in decoded:
        refusal = await send(command)
        if refusal is not None:
            log.warning("command %s refused: %s", command.name, refusal)
            return ExcCodes.DEVICE_FAILURE
    return None


@dataclass
class ForeignUnits:
    """RTU: requests for other unit ids on a shared RS-485 line get no answer and no log
    flood, only a counter and one debug line each."""

    unit_ids: frozenset[int]
    counters: Counter[str] = field(default_factory=Counter)

    def trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
        if sending or pdu.dev_id == 0 or pdu.dev_id in self.unit_ids:
            return pdu
        self.counters["rtu_requests_for_other_units"] += 1
        log.debug(
            "RTU request for unit id %d ignored (%d so far)",
            pdu.dev_id,
            self.counters["rtu_requests_for_other_units"],
        )
        return None  # pymodbus then handles nothing and sends nothing
