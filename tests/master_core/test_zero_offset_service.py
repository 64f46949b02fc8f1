"""The master learns the current sensor's zero offset while the string is open, publishes it,
subtracts it from the current the SOC counts once the string closes (not from what protection
and the published current see), and keeps it across a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.master_core.persisted import OffsetsRecord, load
from services.master_core.service import MasterCore
from services.master_core.stores import Store
from services.plant.in_process import InProcessPlant
from shared.messages import CellTelemetry
from shared.topics import SLAVE_TELEMETRY
from tests.master_core.test_restart import CONFIG_8, Rig

OFFSET_A = 0.08
"""Within the sensor's specification (0.1 A): learned and subtracted."""
STEP_S = 0.5


def run(rig: Rig, seconds: float) -> None:
    """Cycles every STEP_S with a fresh sample of each module (fewer cycles than `Rig.run`:
    the learner needs minutes of samples)."""
    for _ in range(round(seconds / STEP_S)):
        rig.clock.now += STEP_S
        for m in range(2):
            msg = CellTelemetry(
                module=m, mode="working", sample_ts=rig.clock.now, cell_mv=[3700] * 4,
                cell_flags=[0] * 4, balancing=[False] * 4, temp_c=[25.0, 25.0],
                temp_flags=[0, 0], seq=rig.seq,
            )  # fmt: skip
            rig.slave.publish(SLAVE_TELEMETRY, msg, module=m)
        rig.seq += 1
        rig.core.bus.process()
        rig.core.cycle()
        rig.slave.process()


def plant(core: MasterCore) -> InProcessPlant:
    assert core.rt is not None and isinstance(core.rt.io, InProcessPlant)
    return core.rt.io


def test_the_zero_offset_is_learned_open_subtracted_closed_and_restored(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "m.sqlite", auto_close="false")
    rig.configure(CONFIG_8)
    plant(rig.core).sensors.current_offset_a = OFFSET_A
    run(rig, 300.0)
    assert rig.states[-1].contactors != "closed"
    assert rig.states[-1].current_zero_offset_a is None  # not yet 10 min of samples
    run(rig, 400.0)
    state = rig.states[-1]
    assert state.current_zero_offset_a == pytest.approx(OFFSET_A, abs=0.01)
    # the protection's own open-string estimate is published beside it, as before
    assert state.current_offset_a == pytest.approx(OFFSET_A, abs=0.03)
    # no full charge yet: no cell-voltage offset learned, and the state says so (not 0)
    assert state.cell_voltage_offset_max_v is None

    est = rig.core.rt.estimator  # type: ignore[union-attr]
    assert rig.core.supervisor.close(rig.clock.now, "command").ok
    run(rig, 10.0)
    assert rig.states[-1].contactors == "closed"
    out_before = est.soh.charge_out_ah
    run(rig, 200.0)  # the plant's load: 10 A discharge, read 10 - OFFSET_A A
    counted_a = (est.soh.charge_out_ah - out_before) * 3600.0 / 200.0
    assert counted_a == pytest.approx(10.0, abs=0.02)
    # protection and the published current see the sensor's reading, uncorrected
    published = [s.current for s in rig.states[-100:] if s.current is not None]
    assert sum(published) / len(published) == pytest.approx(-10.0 + OFFSET_A, abs=0.02)
    learned = est.zero.learned_a

    rig.restart()
    stored = load(Store(tmp_path / "m.sqlite"), OffsetsRecord, CONFIG_8)
    assert stored.refusal is None and stored.record is not None
    rig.configure(CONFIG_8)
    again = rig.core.rt.estimator  # type: ignore[union-attr]
    assert again.zero.learned_a == learned
    run(rig, 1.0)
    assert rig.states[-1].current_zero_offset_a == pytest.approx(OFFSET_A, abs=0.01)


def test_an_offset_learned_under_another_calibration_is_not_taken(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "m.sqlite", auto_close="false")
    rig.configure(CONFIG_8)
    plant(rig.core).sensors.current_offset_a = OFFSET_A
    run(rig, 700.0)
    assert rig.states[-1].current_zero_offset_a is not None
    rig.restart()
    recalibrated = CONFIG_8.model_copy(
        update={"current_sensor": CONFIG_8.current_sensor.model_copy(update={"offset_a": -0.08})}
    )
    rig.configure(recalibrated)
    assert rig.core.rt.estimator.zero.learned_a is None  # type: ignore[union-attr]
    assert rig.core.bus.counters["persisted_refused"] == 1
