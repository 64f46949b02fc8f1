"""`python -m services.master_core [--help]`: the master of one system, or of several in one
process (`--systems a,b,c` / BMS_SYSTEMS, see `host.py`)."""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic_settings import CliApp

from services.master_core.hardware import PackIoFactory
from services.master_core.host import HostedMaster, MasterHostSettings, run_host
from services.master_core.service import CYCLE_SECONDS
from services.master_core.settings import MasterCoreSettings
from shared.bus import BusCore, MqttBus
from shared.event_store import Store
from shared.metrics import serve_metrics
from shared.runtime import run_until_signalled
from shared.settings import configure_logging

KIND = "master_core"


def make_io(settings: MasterCoreSettings, bus: BusCore) -> PackIoFactory:
    """The hardware the settings choose; the simulation lives in the plant package."""
    if settings.hardware == "devices":
        from services.master_core.devices import device_factory

        return device_factory()
    from services.plant.in_process import in_process_factory

    return in_process_factory(bus, load_profile=settings.load_profile, seed=settings.seed)


def run(settings: MasterCoreSettings) -> int:
    configure_logging(settings.log_level)
    bus = MqttBus.from_settings(settings, kind=KIND)
    store = Store(Path(settings.data_dir) / f"master_core-{settings.system}.sqlite")
    # a failing cycle is confined and fails safe as in a process of several systems
    master = HostedMaster(settings, bus, store, make_io(settings, bus))
    metrics = serve_metrics(bus, settings, CYCLE_SECONDS)

    def cleanup() -> None:
        master.stop()
        metrics.stop()

    try:
        return run_until_signalled(bus, master.run, cleanup)
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    settings = CliApp.run(MasterHostSettings, cli_args=args)
    if settings.systems:
        # the loop thread's name (master-<system>) tells the systems' lines apart
        configure_logging(settings.log_level, prefix="[%(threadName)s]")
        return run_host(settings, make_io)
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
