"""Bootstrap: `python -m services.modbus_gateway [--help]`."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from pydantic_settings import CliApp

from services.modbus_gateway.server import REQUEST_SECONDS
from services.modbus_gateway.service import ModbusGateway, NothingToServeError
from services.modbus_gateway.settings import ModbusGatewaySettings
from shared.bus import MqttBus
from shared.metrics import serve_metrics
from shared.settings import configure_logging

KIND = "modbus_gateway"
log = logging.getLogger("modbus_gateway")


async def run(settings: ModbusGatewaySettings) -> int:
    configure_logging(settings.log_level)
    bus = MqttBus.from_settings(settings, kind=KIND)
    gateway = ModbusGateway(settings, bus)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics = serve_metrics(bus, settings, REQUEST_SECONDS)
    bus.start()
    pump = asyncio.create_task(gateway.pump_bus(stop))
    serve = asyncio.create_task(gateway.serve())
    exit_code = 0

    def served(task: asyncio.Task[None]) -> None:
        nonlocal exit_code
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        if isinstance(exc, NothingToServeError):
            log.error("nothing to serve, stopping: %s", exc)
        else:
            log.error("cannot serve Modbus: %r", exc)
        exit_code = 1
        stop.set()

    serve.add_done_callback(served)
    try:
        await stop.wait()
    finally:
        serve.cancel()
        await gateway.close()
        await pump
        metrics.stop()
        bus.stop()
    return exit_code


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return asyncio.run(run(CliApp.run(ModbusGatewaySettings, cli_args=args)))
