"""Wiring of the gateway: bus subscriptions, command replies, and the TCP and RTU servers.

With BMS_SITE the gateway serves that site (`site_map`): the site state, and each string's
configuration, pack state and cells under its own system id. SCADA's 802 `SetOp` write
becomes the site command `site_operation` to the site controller under the site id, answered
once the controller accepted it (exception 04 when it refuses or does not answer in time).
The interface still comes from the configuration of BMS_SYSTEM; in a site's own stack, where
BMS_SYSTEM is the site id, from that of the site's first string.

Every configuration is applied live: a new topology changes the register layout at once
(`GatewayData.replace_config`), and new interface parameters restart the affected server in
this process. The acknowledgement names every interface that could not be started, and lists
the changed fields that the field table (`shared.config.fields`) marks restart-required for
this gateway (none today), and every interface field that a setting of this host (flag or
BMS_* variable) runs with another value than the configured one (`ConfigAck.in_use`). A change
of a field that such a setting pins is said in the log.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, cast

from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from services.modbus_gateway.guard import RequestGuard, guard_server
from services.modbus_gateway.register_map import Command, Identity, decode_write
from services.modbus_gateway.server import ForeignUnits, GatewayData, SiteData, make_device
from services.modbus_gateway.settings import ModbusGatewaySettings
from services.modbus_gateway.site_map import decode_site_write
from shared.bus import BusCore, Delivery
from shared.commands import CommandClient
from shared.config.fields import MODBUS, restart_required
from shared.config.interfaces import ModbusConfig
from shared.config.system import SystemConfig
from shared.config_ack import acknowledge_config
from shared.log_limit import LimitedLog
from shared.messages import COMMAND_ARGS, CellSnapshot, ConfigMessage, FieldInUse, PackState
from shared.messages.site import SiteConfigMessage, SiteState
from shared.topics import CONFIG, PACK_CELLS, PACK_STATE, SITE_CONFIG, SITE_STATE

log = logging.getLogger("modbus_gateway")

Server = ModbusTcpServer | ModbusSerialServer

STATUS_PERIOD_S = 10.0
"""How often the service status (with its health counters) is refreshed."""


class NothingToServeError(RuntimeError):
    """Neither Modbus TCP nor RTU can be served."""


@dataclass(frozen=True)
class Endpoint:
    """One server: which interface, the parameters it runs with, and how to describe it."""

    name: str
    params: tuple[Any, ...]
    """The configuration fields it depends on; a change restarts it."""
    enabled: bool
    describe: str


def endpoints(modbus: ModbusConfig) -> dict[str, Endpoint]:
    """The TCP and RTU endpoints that `modbus` asks for."""
    m = modbus
    stop = "stop bit" if m.rtu_stop_bits == 1 else "stop bits"
    return {
        "tcp": Endpoint(
            "tcp",
            (m.tcp_enabled, m.tcp_host, m.tcp_port),
            m.tcp_enabled,
            f"Modbus TCP on {m.tcp_host}:{m.tcp_port}",
        ),
        "rtu": Endpoint(
            "rtu",
            (m.rtu_enabled, m.rtu_port, m.rtu_baudrate, m.rtu_parity, m.rtu_stop_bits, m.unit_id),
            m.rtu_enabled,
            f"Modbus RTU on {m.rtu_port} at {m.rtu_baudrate} baud, parity {m.rtu_parity}, "
            f"{m.rtu_stop_bits} {stop}, unit id {m.unit_id}",
        ),
    }


@dataclass
class _Pending:
    version: int
    modbus: ModbusConfig
    restart_required: list[str]
    in_use: dict[str, FieldInUse]


class ModbusGateway:
    def __init__(
        self, settings: ModbusGatewaySettings, bus: BusCore, *, host: str | None = None
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.host = socket.gethostname() if host is None else host
        """Named in the acknowledgement's fields in use."""
        self.client = CommandClient(bus)
        self.data: GatewayData | None = None
        self.servers: dict[str, tuple[Endpoint, Server]] = {}
        self.modbus: ModbusConfig | None = None
        """The interface parameters in effect."""
        self.foreign_units: ForeignUnits | None = None
        self.started_with: SystemConfig | None = None
        """The first accepted configuration: restart-required fields keep its values."""
        self._pending: _Pending | None = None
        self._changed = asyncio.Event()
        self._limited = LimitedLog(log)
        """One rate limit for what peers send, across restarts of the servers."""
        self.site_client: CommandClient | None = None
        """`site_operation` to the site controller, under the site id (BMS_SITE)."""
        self.site: SiteData | None = None
        """Set with BMS_SITE: the site chain is served instead of the system's."""
        if settings.site is None:
            bus.subscribe(CONFIG, self._on_config)
            bus.subscribe(PACK_STATE, self._on_pack)
            bus.subscribe(PACK_CELLS, self._on_cells)
            return
        self.site_client = CommandClient(bus, system=settings.site)
        self.site = SiteData(
            settings.site, Identity(serial=settings.site), settings.stale_after_s,
            counters=bus.counters,
        )  # fmt: skip
        # Every system's topics: the strings are the site configuration's, which may change.
        bus.subscribe(CONFIG, self._on_any_config, system="+")
        bus.subscribe(PACK_STATE, self._on_string_pack, system="+")
        bus.subscribe(PACK_CELLS, self._on_string_cells, system="+")
        bus.subscribe(SITE_CONFIG, self._on_site_config, system=settings.site)
        bus.subscribe(SITE_STATE, self._on_site_state, system=settings.site)
        log.info("serving site %s (its strings as one battery)", settings.site)

    # --- a site (BMS_SITE) ------------------------------------------------------------------
    def interface_system(self) -> str | None:
        """The system whose configuration gives the Modbus interface: this host's
        (BMS_SYSTEM); in a site's own stack (BMS_SYSTEM is the site id, which has no system
        configuration) the site's first string's, once the site configuration names it."""
        if self.site is None or self.bus.system != self.site.site_id:
            return self.bus.system
        config = self.site.site_config
        return None if config is None else config.system_ids[0]

    def _on_any_config(self, d: Delivery[ConfigMessage]) -> None:
        assert self.site is not None
        self.site.update_config(d.system, d.message.config)
        if d.system == self.interface_system():
            self._on_config(d)

    def _on_string_pack(self, d: Delivery[PackState]) -> None:
        assert self.site is not None
        self.site.update_pack(d.system, d.message)

    def _on_string_cells(self, d: Delivery[CellSnapshot]) -> None:
        assert self.site is not None
        self.site.update_cells(d.system, d.message)

    def _on_site_config(self, d: Delivery[SiteConfigMessage]) -> None:
        assert self.site is not None
        self.site.update_site_config(d.message.config)
        source = self.interface_system()
        config = None if source is None else self.site.configs.get(source)
        if config is not None and (self.data is None or self.data.config != config):
            self.apply_config(config)  # it came before the site configuration named it

    def _on_site_state(self, d: Delivery[SiteState]) -> None:
        assert self.site is not None
        self.site.update_site(d.message)

    # --- the system -------------------------------------------------------------------------
    def _on_config(self, d: Delivery[ConfigMessage]) -> None:
        self.apply_config(d.message.config)

    def apply_config(self, config: SystemConfig) -> None:
        """Apply the interface of `config` (the system's own, see `interface_system`)."""
        source = self.interface_system()
        if config.system_id != source:
            acknowledge_config(
                self.bus,
                config.config_version,
                [f"configuration is for system {config.system_id!r}, not {source!r}"],
            )
            return
        try:
            modbus, notes = self.settings.resolve(config.interfaces.modbus)
        except ValueError as exc:
            in_use = self.settings.in_use(config, self.host)
            acknowledge_config(self.bus, config.config_version, [str(exc)], in_use=in_use)
            return
        if self.data is not None:
            for line in self.settings.pinned(
                self.data.config.interfaces.modbus, config.interfaces.modbus
            ):
                log.warning("configuration %d: %s", config.config_version, line)
        if modbus != self.modbus:
            for note in notes:
                log.info("%s", note)
            if self.settings.rtu_port and not modbus.rtu_enabled:
                log.warning(
                    "BMS_RTU_PORT names %s, but Modbus RTU is disabled in the system "
                    "configuration (interfaces.modbus.rtu_enabled)",
                    self.settings.rtu_port,
                )
        identity = Identity(serial=config.system_id, device_address=modbus.unit_id)
        if self.site is not None:
            self.site.set_identity(replace(identity, serial=self.site.site_id))
        if self.data is None:
            self.data = GatewayData(
                config, identity, self.settings.stale_after_s, counters=self.bus.counters
            )
        elif self.data.config != config or self.data.identity != identity:
            self.data.replace_config(config, identity)
        if self.started_with is None:
            self.started_with = config
        restart = restart_required(MODBUS, self.started_with, config)
        in_use = self.settings.in_use(config, self.host)
        self._pending = _Pending(config.config_version, modbus, restart, in_use)
        self._changed.set()

    def _on_pack(self, d: Delivery[PackState]) -> None:
        if self.data is not None:
            self.data.update_pack(d.message)

    def _on_cells(self, d: Delivery[CellSnapshot]) -> None:
        if self.data is not None:
            self.data.update_cells(d.message)

    async def send(self, command: Command) -> str | None:
        """A command to the master; None when accepted, else why not."""
        return await self._request(self.client, command, "the master")

    async def send_site(self, command: Command) -> str | None:
        """A site command to the site controller; None when accepted, else why not."""
        assert self.site_client is not None  # served with BMS_SITE only
        return await self._request(self.site_client, command, "the site controller")

    async def _request(self, client: CommandClient, command: Command, whom: str) -> str | None:
        args = COMMAND_ARGS[command.name].model_validate(command.args)
        reply = await client.request_async(
            command.name, args, ttl_s=self.settings.command_timeout_s
        )
        if reply is None:
            return f"no reply from {whom}"
        return None if reply.status == "accepted" else reply.reason or "refused"

    async def pump_bus(self, stop: asyncio.Event) -> None:
        """Run bus handlers in this loop; the network thread only wakes it."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def wakeup() -> None:
            loop.call_soon_threadsafe(wake.set)

        self.bus.set_wakeup(wakeup)
        status_due = loop.time() + STATUS_PERIOD_S
        while not stop.is_set():
            self.bus.process()
            if loop.time() >= status_due:
                status_due = loop.time() + STATUS_PERIOD_S
                self.bus.publish_status()
            if not wake.is_set():
                # a timer, not asyncio.wait_for: that made a task (and loop passes) per message
                timer = loop.call_later(0.2, wake.set)
                try:
                    await wake.wait()
                finally:
                    timer.cancel()
            wake.clear()

    async def serve(self) -> None:
        """Apply each configuration's interface parameters and acknowledge it.

        Raises NothingToServeError when the first configuration leaves no server running.
        """
        first = True
        while True:
            await self._changed.wait()
            self._changed.clear()
            pending, self._pending = self._pending, None
            if pending is None:
                continue
            errors = await self._apply(pending.modbus)
            acknowledge_config(
                self.bus,
                pending.version,
                errors,
                restart_required=pending.restart_required,
                in_use=pending.in_use,
            )
            if first and not self.servers:
                raise NothingToServeError(
                    "; ".join(errors) or "Modbus TCP and RTU are both disabled"
                )
            first = False

    async def _apply(self, modbus: ModbusConfig) -> list[str]:
        """Start, restart or stop each server for `modbus`; the reasons any cannot run."""
        self.modbus = modbus
        errors: list[str] = []
        for name, wanted in endpoints(modbus).items():
            running = self.servers.get(name)
            if running is not None and running[0] == wanted:
                continue
            if running is not None:
                await running[1].shutdown()  # type: ignore[no-untyped-call]
                del self.servers[name]
                log.info("%s stopped", running[0].describe)
            if not wanted.enabled:
                continue
            try:
                self.servers[name] = (wanted, await self._start(name, modbus))
                log.info("%s (SunSpec at 40000)", wanted.describe)
            except Exception as exc:  # every cause is reported and none stops the other server
                self.bus.counters[f"{name}_start_failures"] += 1
                errors.append(_cannot_start(wanted, modbus, exc))
                log.error("%s", errors[-1])
        return errors

    async def _start(self, name: str, m: ModbusConfig) -> Server:
        assert self.data is not None
        source = self.data if self.site is None else self.site
        send = self.send if self.site is None else self.send_site
        decode = decode_write if self.site is None else decode_site_write
        server: Server
        if name == "tcp":
            server = ModbusTcpServer(
                make_device(source, 0, send, decode), address=(m.tcp_host, m.tcp_port)
            )
        else:
            self.foreign_units = ForeignUnits(frozenset({m.unit_id}), self.bus.counters)
            server = ModbusSerialServer(
                make_device(source, m.unit_id, send, decode),
                framer=FramerType.RTU,
                port=m.rtu_port,
                baudrate=m.rtu_baudrate,
                parity=m.rtu_parity,
                stopbits=m.rtu_stop_bits,
                broadcast_enable=True,
                trace_pdu=cast(
                    Callable[[bool, ModbusPDU], ModbusPDU], self.foreign_units.trace_pdu
                ),
            )
        guard_server(server, RequestGuard(name, self.bus.counters, self._limited))
        try:
            await server.serve_forever(background=True)
        except BaseException:
            await server.shutdown()  # type: ignore[no-untyped-call]
            raise
        return server

    async def close(self) -> None:
        for _, server in self.servers.values():
            await server.shutdown()  # type: ignore[no-untyped-call]
        self.servers.clear()


def _cannot_start(endpoint: Endpoint, m: ModbusConfig, exc: Exception) -> str:
    reason = str(exc) or type(exc).__name__
    if endpoint.name == "rtu":
        return (
            f"Modbus RTU cannot open serial port {m.rtu_port} with parity {m.rtu_parity} "
            f"({m.rtu_baudrate} baud, {m.rtu_stop_bits} stop bit(s)): {reason}. Choose a parity "
            f"the port supports (interfaces.modbus.rtu_parity or BMS_RTU_PARITY) or check the "
            f"device; the other interfaces keep serving"
        )
    return (
        f"Modbus TCP cannot listen on {m.tcp_host}:{m.tcp_port}: {reason}; the other "
        f"interfaces keep serving"
    )
