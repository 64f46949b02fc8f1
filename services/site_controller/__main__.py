"""`python -m services.site_controller [--help]`: a site of parallel strings as one battery.
BMS_SYSTEM is the site id; the strings come from the retained `site/config`."""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic_settings import CliApp

from services.site_controller.service import SiteService
from services.site_controller.settings import SiteControllerSettings
from shared.bus import MqttBus
from shared.event_store import Store
from shared.metrics import serve_metrics
from shared.runtime import run_until_signalled
from shared.settings import configure_logging

KIND = "site_controller"


def run(settings: SiteControllerSettings) -> int:
    configure_logging(settings.log_level)
    bus = MqttBus.from_settings(settings, kind=KIND)
    store = Store(Path(settings.data_dir) / f"{KIND}-{settings.system}.sqlite")
    service = SiteService(bus, settings, store=store)
    metrics = serve_metrics(bus, settings)

    def cleanup() -> None:
        service.stop()
        metrics.stop()
        store.close()

    return run_until_signalled(bus, service.run, cleanup)


def main(argv: list[str] | None = None) -> int:
    settings = CliApp.run(SiteControllerSettings, cli_args=sys.argv[1:] if argv is None else argv)
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
