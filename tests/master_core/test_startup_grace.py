"""The start-up grace for missing modules runs from the first configuration, not from the
process start: in a container stack the configuration may come long after the master starts,
and slaves only sample once they have it."""

from __future__ import annotations

from pathlib import Path

from services.master_core.comm_supervision import CommSupervisionConfig
from services.master_core.service import MasterCore
from services.master_core.settings import MasterCoreSettings
from services.master_core.stores import Store
from shared.bus import InMemoryBroker, InMemoryBus
from shared.config import SystemConfig
from shared.messages import ConfigMessage
from shared.topics import CONFIG


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def latched(core: MasterCore) -> set[str]:
    assert core.rt is not None
    return set(core.rt.protection.latched_state()["faults"])


def master(tmp_path: Path) -> tuple[MasterCore, InMemoryBus, Clock, SystemConfig]:
    broker = InMemoryBroker()
    clock = Clock()
    bus = InMemoryBus(broker, system="demo", service="master_core", kind="master_core")
    core = MasterCore(
        MasterCoreSettings(), bus, Store(tmp_path / "m.sqlite"), monotonic=clock, wall=clock
    )
    bus.start()
    ui = InMemoryBus(broker, system="demo", service="config_ui", kind="test")
    ui.start()
    config = SystemConfig.from_preset("NMC", system_id="demo", modules=2, cells_per_module=4)
    return core, ui, clock, config


def test_a_late_configuration_gets_the_full_grace(tmp_path: Path) -> None:
    core, ui, clock, config = master(tmp_path)
    grace_s = CommSupervisionConfig.from_system(config).join_grace_s
    clock.now += 3 * grace_s  # the configuration comes late
    ui.publish(CONFIG, ConfigMessage(config=config))
    core.bus.process()
    clock.now += grace_s / 2
    core.cycle()
    assert "communication_loss" not in latched(core)
    clock.now += grace_s
    core.cycle()
    assert "communication_loss" in latched(core)  # the grace still ends
