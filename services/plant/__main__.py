"""`python -m services.plant [--help]` runs the plant of one system (software in the loop);
`python -m services.plant inject FAULT ...` injects a fault into it;
`python -m services.plant board-map` prints the path of the boards' register map (JSON) to give
the slave agent as `--modbus-map-file`."""

from __future__ import annotations

import sys

from pydantic_settings import CliApp

from services.plant.inject import inject_main
from services.plant.registry import CanInverter
from services.plant.service import PlantService
from services.plant.settings import DEFAULT_BOARD_MAP, PlantSettings
from shared.bus import MqttBus
from shared.metrics import serve_metrics
from shared.runtime import run_until_signalled
from shared.settings import configure_logging

KIND = "plant"


def run(settings: PlantSettings) -> int:
    configure_logging(settings.log_level)
    settings = settings.model_copy(update={"instance": settings.instance or KIND})
    bus = MqttBus.from_settings(settings, kind=KIND)
    plant = PlantService(settings, bus, inverter=CanInverter if settings.inverter else None)
    metrics = serve_metrics(bus, settings)

    def cleanup() -> None:
        plant.stop()
        metrics.stop()

    return run_until_signalled(bus, plant.run, cleanup)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["inject"]:
        return inject_main(args[1:])
    if args[:1] == ["board-map"]:
        print(DEFAULT_BOARD_MAP)
        return 0
    return run(CliApp.run(PlantSettings, cli_args=args))


if __name__ == "__main__":
    sys.exit(main())
