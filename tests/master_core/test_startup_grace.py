"""Start-up: a module is supervised from its first sample after the configuration, never from
the process start. In a container stack the configuration may come long after the master
starts, slaves only sample once they have it, and racks on other machines boot later still: a
module not yet seen is waited for (stale, not lost), and once seen its timeout applies."""

from __future__ import annotations

from pathlib import Path

from services.master_core.service import MasterCore
from services.master_core.settings import MasterCoreSettings
from services.master_core.stores import Store
from services.plant.in_process import in_process_factory
from shared.bus import InMemoryBroker, InMemoryBus
from shared.config import SystemConfig
from shared.messages import CellTelemetry, ConfigMessage
from shared.topics import CONFIG, SLAVE_TELEMETRY


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def latched(core: MasterCore) -> set[str]:
    assert core.rt is not None
    return set(core.supervisor.d.protection.latched_state()["faults"])


def master(tmp_path: Path) -> tuple[MasterCore, InMemoryBus, Clock, SystemConfig]:
    broker = InMemoryBroker()
    clock = Clock()
    bus = InMemoryBus(broker, system="demo", service="master_core", kind="master_core")
    core = MasterCore(
        MasterCoreSettings(),
        bus,
        Store(tmp_path / "m.sqlite"),
        in_process_factory(bus, load_profile="cycle:30:40:20:80"),
        monotonic=clock,
        wall=clock,
    )
    bus.start()
    ui = InMemoryBus(broker, system="demo", service="config_ui", kind="test")
    ui.start()
    config = SystemConfig.from_preset("NMC", system_id="demo", modules=2, cells_per_module=4)
    return core, ui, clock, config


def sample(ui: InMemoryBus, module: int, now: float) -> None:
    ui.publish(
        SLAVE_TELEMETRY,
        CellTelemetry(module=module, mode="working", sample_ts=now, cell_mv=[3700] * 4,
                      cell_flags=[0] * 4, balancing=[False] * 4, temp_c=[25.0, 25.0],
                      temp_flags=[0, 0], seq=1),
        module=module,
    )  # fmt: skip


def test_a_late_configuration_waits_for_its_modules_and_then_supervises(tmp_path: Path) -> None:
    core, ui, clock, config = master(tmp_path)
    clock.now += 600.0  # the configuration comes late
    ui.publish(CONFIG, ConfigMessage(config=config))
    core.bus.process()
    for _ in range(120):  # two minutes without a sample: the racks are still booting
        clock.now += 1.0
        core.cycle()
    assert "communication_loss" not in latched(core)
    sample(ui, 0, clock.now)
    core.bus.process()
    core.cycle()
    clock.now += 0.6  # module 0 was seen and is silent longer than 5 x 0.1 s
    core.cycle()
    assert "communication_loss" in latched(core)
