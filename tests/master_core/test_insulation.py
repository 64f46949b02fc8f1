"""The master supervises the insulation resistance its (simulated) plant measures."""

from __future__ import annotations

from pathlib import Path

from services.master_core.service import MasterCore
from services.plant.sensors import HEALTHY_INSULATION_OHM
from shared.config.protection import INSULATION_DELAYS_S
from shared.messages import ConfigMessage
from shared.topics import CONFIG
from tests.master_core.test_startup_grace import Clock, latched, master


def _cycles(core: MasterCore, clock: Clock, seconds: float) -> None:
    for _ in range(round(seconds / 0.1) + 1):
        clock.now += 0.1
        core.cycle()


def test_an_insulation_drop_in_the_plant_latches_insulation_low(tmp_path: Path) -> None:
    core, ui, clock, config = master(tmp_path)
    ui.publish(CONFIG, ConfigMessage(config=config))
    core.bus.process()
    assert core.rt is not None
    meas = core.rt.io.sensors.measure(clock.now)
    assert meas.insulation_ohm is not None
    assert abs(meas.insulation_ohm - HEALTHY_INSULATION_OHM) < 0.1 * HEALTHY_INSULATION_OHM
    _cycles(core, clock, 2.0)
    assert "insulation_low" not in latched(core)
    core.rt.io.sensors.insulation_ohm = config.protection.insulation_fault_ohm / 2
    _cycles(core, clock, INSULATION_DELAYS_S[1] + 0.5)
    assert "insulation_low" in latched(core)
    events = core.store.events(code="insulation_low")
    assert events, "the raise is in the event log"
