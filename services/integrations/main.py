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
    bridge = IntegrationsBridge(bus, settings)
    bridge.attach()
    metrics = MetricsServer(bridge.registry, settings.metrics_host, settings.metrics_port)
    metrics.start()

    def cleanup() -> None:
        bridge.close()
        metrics.stop()

    return run_until_signalled(bus, bridge.run, cleanup)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return run(CliApp.run(IntegrationsSettings, cli_args=args))
