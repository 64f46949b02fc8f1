"""Bootstrap: `python -m services.can_gateway [--help]`.

The CAN channel is opened once the system configuration is known (interface, channel and bit
rate come from it, unless a BMS_* setting names the device), and reopened when a new
configuration moves it.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable

import can
from pydantic_settings import CliApp

from services.can_gateway.channel import ChannelOpener
from services.can_gateway.service import CanGateway
from services.can_gateway.settings import CanGatewaySettings
from shared.bus import Delivery, MqttBus
from shared.config import SystemConfig
from shared.messages import ConfigMessage
from shared.messages.site import SiteConfigMessage
from shared.metrics import serve_metrics
from shared.settings import configure_logging
from shared.topics import CONFIG, SITE_CONFIG

KIND = "can_gateway"
log = logging.getLogger("can_gateway")


def run(settings: CanGatewaySettings) -> int:
    configure_logging(settings.log_level)
    bus = MqttBus.from_settings(settings, kind=KIND)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    first = first_config(bus, settings)
    bus.start()
    metrics = serve_metrics(bus, settings)
    opener = ChannelOpener(settings.can_interface, settings.can_channel, settings.can_bitrate)
    gateway: CanGateway | None = None
    try:
        while first() is None and not stop.is_set():
            bus.process(timeout_s=0.2)
        config = first()
        if config is None:
            return 0
        params = opener.params(config.interfaces.can)
        try:
            can_bus = opener.open(params)
        except (can.CanError, OSError, ValueError) as exc:
            log.error("cannot open the CAN channel %s: %s", params, exc)
            return 1
        gateway = CanGateway(
            bus,
            can_bus,
            opener=opener,
            stale_after_s=settings.stale_after_s,
            keepalive_timeout_s=settings.keepalive_timeout_s,
            protocol_overrides=settings.protocol_overrides(),
            in_use=lambda config: settings.in_use(config, socket.gethostname()),
            site=settings.site,
        )
        gateway.bus_params = params
        gateway.apply_config(config)
        gateway.run(stop.is_set)
    finally:
        if gateway is not None:
            gateway.close()
            gateway.can.shutdown()
        metrics.stop()
        bus.stop()
    return 0


def first_config(bus: MqttBus, settings: CanGatewaySettings) -> Callable[[], SystemConfig | None]:
    """The configuration that opens the channel, once it has arrived: the system's own; in a
    site's own stack (BMS_SYSTEM is BMS_SITE) the site's first string's."""
    configs: dict[str, SystemConfig] = {}

    def on_config(d: Delivery[ConfigMessage]) -> None:
        configs.setdefault(d.system, d.message.config)

    if settings.site is None or settings.site != settings.system:
        bus.subscribe(CONFIG, on_config)
        return lambda: configs.get(settings.system)
    strings: list[str] = []

    def on_site(d: Delivery[SiteConfigMessage]) -> None:
        strings[:] = d.message.config.system_ids

    bus.subscribe(CONFIG, on_config, system="+")
    bus.subscribe(SITE_CONFIG, on_site, system=settings.site)
    return lambda: configs.get(strings[0]) if strings else None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return run(CliApp.run(CanGatewaySettings, cli_args=args))
