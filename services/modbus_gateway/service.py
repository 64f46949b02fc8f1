"""Wiring of the gateway: bus subscriptions, command replies, and the TCP and RTU servers."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from services.modbus_gateway.register_map import Command, Identity
from services.modbus_gateway.server import GatewayData, blocks, drop_foreign_units, make_device
from services.modbus_gateway.settings import ModbusGatewaySettings
from shared.bus import BusCore, Delivery
from shared.commands import CommandClient
from shared.config_ack import acknowledge_config
from shared.messages import COMMAND_ARGS, CellSnapshot, ConfigMessage, PackState
from shared.topics import CONFIG, PACK_CELLS, PACK_STATE

log = logging.getLogger("modbus_gateway")


class ModbusGateway:
    def __init__(self, settings: ModbusGatewaySettings, bus: BusCore) -> None:
        self.settings = settings
        self.bus = bus
        self.client = CommandClient(bus)
        self.data: GatewayData | None = None
        self.servers: list[ModbusTcpServer | ModbusSerialServer] = []
        self.tcp_port: int | None = None
        self._configured = asyncio.Event()
        bus.subscribe(CONFIG, self._on_config)
        bus.subscribe(PACK_STATE, self._on_pack)
        bus.subscribe(PACK_CELLS, self._on_cells)

    def _on_config(self, d: Delivery[ConfigMessage]) -> None:
        config = d.message.config
        errors: list[str] = []
        if config.system_id != self.bus.system:
            errors = [f"configuration is for system {config.system_id!r}, not {self.bus.system!r}"]
        elif self.data is None:
            identity = Identity(serial=config.system_id, device_address=self.settings.unit_id)
            self.data = GatewayData(config, identity, self.settings.stale_after_s)
            self._configured.set()
        elif self.data.config != config:
            # the servers' register blocks are fixed once they listen; values may change freely
            new = GatewayData(config, self.data.identity, self.settings.stale_after_s)
            if blocks(new.image()) == blocks(self.data.image()):
                self.data.replace_config(config)
            else:
                errors = [
                    f"the register layout changes ({config.topology.total_cells} cells); restart "
                    f"the gateway to serve it (it still serves version "
                    f"{self.data.config.config_version})"
                ]
        acknowledge_config(self.bus, config.config_version, errors)

    def _on_pack(self, d: Delivery[PackState]) -> None:
        if self.data is not None:
            self.data.update_pack(d.message)

    def _on_cells(self, d: Delivery[CellSnapshot]) -> None:
        if self.data is not None:
            self.data.update_cells(d.message)

    async def send(self, command: Command) -> str | None:
        args = COMMAND_ARGS[command.name].model_validate(command.args)
        reply = await self.client.request_async(
            command.name, args, ttl_s=self.settings.command_timeout_s
        )
        if reply is None:
            return "no reply from the master"
        return None if reply.status == "accepted" else reply.reason or "refused"

    async def pump_bus(self, stop: asyncio.Event) -> None:
        """Run bus handlers in this loop; the network thread only wakes it."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def wakeup() -> None:
            loop.call_soon_threadsafe(wake.set)

        self.bus.set_wakeup(wakeup)
        while not stop.is_set():
            self.bus.process()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), 0.2)
            wake.clear()

    async def serve(self) -> None:
        await self._configured.wait()
        assert self.data is not None
        s = self.settings
        if s.tcp_port or (s.tcp_port == 0 and s.rtu_port is None):
            tcp = ModbusTcpServer(
                make_device(self.data, 0, self.send), address=(s.tcp_host, s.tcp_port)
            )
            await tcp.serve_forever(background=True)
            self.servers.append(tcp)
            self.tcp_port = s.tcp_port
            log.info(
                "Modbus TCP on %s:%s (SunSpec at 40000, unit id any)", s.tcp_host, self.tcp_port
            )
        if s.rtu_port:
            rtu = ModbusSerialServer(
                make_device(self.data, s.unit_id, self.send),
                framer=FramerType.RTU,
                port=s.rtu_port,
                baudrate=s.rtu_baudrate,
                parity=s.rtu_parity,
                stopbits=s.rtu_stopbits,
                broadcast_enable=True,
                trace_packet=drop_foreign_units(frozenset({s.unit_id})),
            )
            await rtu.serve_forever(background=True)
            self.servers.append(rtu)
            log.info(
                "Modbus RTU on %s, %d baud %s%d, unit id %d",
                s.rtu_port,
                s.rtu_baudrate,
                s.rtu_parity,
                s.rtu_stopbits,
                s.unit_id,
            )

    async def close(self) -> None:
        for server in self.servers:
            await server.shutdown()  # type: ignore[no-untyped-call]
