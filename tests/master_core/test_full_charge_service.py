"""The master publishes the full-charge request and logs its start: an LFP pack whose last
anchor, restored with the downtime, is older than the preset's 5 days."""

from __future__ import annotations

from pathlib import Path

from services.master_core.full_charge import DAY_S
from services.master_core.persisted import SocRecord
from services.master_core.stores import Store
from shared.config import SystemConfig
from shared.messages import CellTelemetry, Event
from shared.topics import EVENTS, SLAVE_TELEMETRY
from tests.master_core.test_restart import Rig

LFP_8 = SystemConfig.from_preset("LFP", system_id="demo", modules=2, cells_per_module=4)


def run(rig: Rig, seconds: float, cell_mv: int = 3300) -> None:
    """As `Rig.run`, at an LFP cell voltage on the plateau."""
    for _ in range(round(seconds / 0.05)):
        rig.clock.now += 0.05
        for m in range(2):
            msg = CellTelemetry(
                module=m, mode="working", sample_ts=rig.clock.now, cell_mv=[cell_mv] * 4,
                cell_flags=[0] * 4, balancing=[False] * 4, temp_c=[25.0, 25.0],
                temp_flags=[0, 0], seq=rig.seq,
            )  # fmt: skip
            rig.slave.publish(SLAVE_TELEMETRY, msg, module=m)
        rig.seq += 1
        rig.core.bus.process()
        rig.core.cycle()
        rig.slave.process()


def seeded(tmp_path: Path, since_anchor_s: float) -> tuple[Rig, list[Event]]:
    db = tmp_path / "m.sqlite"
    seed = Store(db)
    record = SocRecord(soc_pct=[60.0] * 8, soc_std_pct=[3.0] * 8, since_anchor_s=since_anchor_s,
                       saved_wall_s=1000.0 - 3600.0)  # fmt: skip
    seed.put(SocRecord.KEY, record.model_dump(mode="json"), ts=1.0)
    seed.close()
    rig = Rig(db)
    events: list[Event] = []
    rig.slave.subscribe(EVENTS, lambda d: events.append(d.message))
    rig.configure(LFP_8)
    return rig, events


def test_an_old_anchor_requests_a_full_charge_and_logs_its_start(tmp_path: Path) -> None:
    rig, events = seeded(tmp_path, 5 * DAY_S - 1800.0)  # + 1 h down: 5 d 0.5 h old
    run(rig, 2.0)
    state = rig.states[-1]
    assert state.since_anchor_s is not None and state.since_anchor_s > 5 * DAY_S
    assert state.limits.charge_current_a > 0.0 and not state.faults
    assert state.full_charge_requested is True
    starts = [e for e in events if e.code == "full_charge_request"]
    assert [(e.kind, e.level) for e in starts] == [("raise", "info")]
    assert starts[0].values["interval_s"] == 5 * DAY_S
    # a fault holds it back, and ends it with an event
    rig.core.supervisor.d.protection.restore(  # type: ignore[union-attr]
        {"version": 1, "faults": {"deep_discharge": {"value": 2.0}}}
    )
    run(rig, 0.5)
    assert rig.states[-1].full_charge_requested is False
    kinds = [e.kind for e in events if e.code == "full_charge_request"]
    assert kinds == ["raise", "clear"]


def test_a_young_anchor_requests_nothing(tmp_path: Path) -> None:
    rig, events = seeded(tmp_path, 2 * DAY_S)
    run(rig, 2.0)
    assert rig.states[-1].full_charge_requested is False
    assert not [e for e in events if e.code == "full_charge_request"]
