"""Bootstrap: `python -m services.integrations [--help]`."""

from __future__ import annotations

import sys

from pydantic_settings import CliApp

from services.integrations.service import IntegrationsBridge
from services.integrations.settings import IntegrationsSettings
from shared.bus import MqttBus
from shared.metrics import MetricsServer
from shared.runtime import run_until_signalled
from shared.settings import configure_logging

KIND = "integrations"


def run(settings: IntegrationsSettings) -> int:
    configure_logging(settings.log_level)
    bus = MqttBus.from_settings(settings, kind=KIND)
    commands = None
    if settings.ha_commands:
        commands = MqttBus(
            settings.commands_endpoint,
            system=settings.system,
            service=f"{settings.instance or KIND}-commands",
            kind="integrations_commands",
            protocol=settings.mqtt_protocol,
            keepalive_s=settings.mqtt_keepalive_s,
            tls_ca_file=settings.mqtt_ca_file,
            tls_cert_file=settings.mqtt_cert_file,
            tls_key_file=settings.mqtt_key_file,
            presence=False,  # the command user may publish nothing but its commands
        )
        commands.start()
    bridge = IntegrationsBridge(bus, settings, commands_bus=commands)
    bridge.attach()
    metrics = MetricsServer(bridge.registry, settings.metrics_host, settings.metrics_port)
    metrics.start()

    def cleanup() -> None:
        bridge.close()
        metrics.stop()
        if commands is not None:
            commands.stop()

    return run_until_signalled(bus, bridge.run, cleanup)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return run(CliApp.run(IntegrationsSettings, cli_args=args))
