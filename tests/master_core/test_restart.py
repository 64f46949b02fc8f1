"""The master across a restart and a configuration change, on a real SQLite file: SOC, SOH,
throughput, cycles and latched faults come back; a stored record that does not fit is refused,
logged and counted, and a latch that cannot be read keeps the master from running."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from services.master_core.estimator import SOH_PRIOR_PCT
from services.master_core.persisted import CommRecoveryRecord, LatchesRecord, SohRecord, load
from services.master_core.service import MasterCore
from services.master_core.settings import MasterCoreSettings
from services.master_core.stores import Store
from services.plant.in_process import in_process_factory
from shared.bus import Delivery, InMemoryBroker, InMemoryBus
from shared.config import SystemConfig
from shared.messages import CellTelemetry, ConfigAck, ConfigMessage, PackState
from shared.topics import CONFIG, CONFIG_ACK, EVENTS, PACK_STATE, SLAVE_TELEMETRY

CONFIG_8 = SystemConfig.from_preset("NMC", system_id="demo", modules=2, cells_per_module=4)
SOH_92 = SohRecord(
    nominal_capacity_ah=100.0, capacity_num=[92.0 * 100.0] * 8, capacity_den=[100.0] * 8,
    capacity_samples=[3] * 8, resistance_ohm=[0.002] * 8, resistance_ref_ohm=[0.0018] * 8,
    resistance_samples=[60] * 8,
)  # fmt: skip
"""A measured capacity of 92 ± 0.1 Ah on 100 Ah cells: SOH 92 % (the generic table's 10 % prior
on the rated capacity moves it by 0.001 %)."""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Rig:
    """A master on an in-memory bus with a slave's telemetry and a watcher; the store is a
    real SQLite file that outlives each master."""

    def __init__(self, db: Path, **settings: str) -> None:
        self.broker = InMemoryBroker()
        self.clock = Clock()
        self.db = db
        self.settings = MasterCoreSettings(load_profile="constant:-10", **settings)  # type: ignore[arg-type]
        self.slave = InMemoryBus(self.broker, system="demo", service="slave", kind="test")
        self.slave.start()
        self.states: list[PackState] = []
        self.acks: list[ConfigAck] = []
        self.slave.subscribe(PACK_STATE, lambda d: self.states.append(d.message))
        self.slave.subscribe(CONFIG_ACK, self._ack)
        self.seq = 0
        self.core = self.start_master()

    def _ack(self, d: Delivery[ConfigAck]) -> None:
        self.acks.append(d.message)

    def start_master(self) -> MasterCore:
        bus = InMemoryBus(self.broker, system="demo", service="master_core", kind="master_core")
        core = MasterCore(
            self.settings, bus, Store(self.db),
            in_process_factory(bus, load_profile=self.settings.load_profile),
            monotonic=self.clock, wall=self.clock,
        )  # fmt: skip
        bus.start()
        return core

    def configure(self, config: SystemConfig) -> None:
        self.slave.publish(CONFIG, ConfigMessage(config=config))
        self.core.bus.process()
        self.slave.process()

    def run(self, seconds: float, cells: int = 4, modules: int = 2) -> None:
        for _ in range(round(seconds / 0.05)):
            self.clock.now += 0.05
            for m in range(modules):
                msg = CellTelemetry(
                    module=m, mode="working", sample_ts=self.clock.now, cell_mv=[3700] * cells,
                    cell_flags=[0] * cells, balancing=[False] * cells, temp_c=[25.0, 25.0],
                    temp_flags=[0, 0], seq=self.seq,
                )  # fmt: skip
                self.slave.publish(SLAVE_TELEMETRY, msg, module=m)
            self.seq += 1
            self.core.bus.process()
            self.core.cycle()
            self.slave.process()

    def restart(self) -> None:
        self.core.stop()
        self.core.store.close()
        self.core = self.start_master()
        self.states.clear()


def published(state: PackState) -> tuple[object, ...]:
    return (
        state.soc, state.soh, state.energy_in_wh, state.energy_out_wh, state.equivalent_cycles,
        tuple(state.faults),
    )  # fmt: skip


def test_a_restart_brings_back_every_persisted_field(tmp_path: Path) -> None:
    seed = Store(tmp_path / "m.sqlite")
    seed.put(SohRecord.KEY, SOH_92.model_dump(mode="json"), ts=1.0)
    seed.close()
    rig = Rig(tmp_path / "m.sqlite")
    rig.configure(CONFIG_8)
    rig.run(5.0)
    before = rig.states[-1]
    assert before.soh == pytest.approx(92.0, abs=0.01)
    # the SOC's uncertainty is published with it; no anchor was seen in this run
    assert before.soc is not None and before.soc_std is not None and before.soc_std > 0.0
    assert before.since_anchor_s is None
    assert before.energy_out_wh and before.energy_out_wh > 0.1  # discharging at 10 A
    assert before.equivalent_cycles and before.equivalent_cycles > 0
    est = rig.core.rt.estimator  # type: ignore[union-attr]
    # a latched fault that needs a service reset
    latched = {"version": 1, "faults": {"deep_discharge": {"value": 2.4}}}
    rig.core.supervisor.d.protection.restore(latched)  # type: ignore[union-attr,arg-type]
    rig.run(0.2)
    before = rig.states[-1]
    assert "deep_discharge" in before.faults and before.contactors != "closed"

    rig.restart()
    assert rig.states == []
    rig.configure(CONFIG_8)
    again = rig.core.rt.estimator  # type: ignore[union-attr]
    assert again.started  # restored, before any telemetry
    assert np.array_equal(again.counter.soc_std_pct, est.counter.soc_std_pct)
    assert np.array_equal(again.counter.soc_pct, est.counter.soc_pct)
    rig.run(0.1)  # open contactors: nothing more is counted
    after = rig.states[-1]
    assert published(after) == published(before)
    assert rig.core.bus.counters["persisted_refused"] == 0


def test_a_configuration_change_keeps_what_was_counted_since_the_last_persist(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path / "m.sqlite", persist_period_s="1000")
    rig.configure(CONFIG_8)
    rig.run(5.0)
    before = rig.states[-1]
    assert before.energy_out_wh and before.energy_out_wh > 0.1
    rig.configure(CONFIG_8.model_copy(update={"config_version": 2}))
    est = rig.core.rt.estimator  # type: ignore[union-attr]
    assert est.started
    assert est.soh.energy_out_wh >= before.energy_out_wh
    assert est.pack_soc_pct == pytest.approx(before.soc, abs=0.01)


def test_a_stored_soh_of_other_cells_is_refused_and_kept_until_the_new_layout_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seed = Store(tmp_path / "m.sqlite")
    seed.put(SohRecord.KEY, SOH_92.model_dump(mode="json"), ts=1.0)
    seed.close()
    rig = Rig(tmp_path / "m.sqlite", persist_period_s="1")
    config_12 = SystemConfig.from_preset("NMC", system_id="demo", modules=3, cells_per_module=4)
    with caplog.at_level(logging.WARNING, logger="master_core"):
        rig.configure(config_12)
    assert "stored soh refused (SOH of 8 cells, the configuration has 12)" in caplog.text
    assert rig.core.bus.counters["persisted_refused"] == 1
    assert rig.acks[-1].accepted
    rig.run(3.0, modules=2)  # module 2 never reports: the estimator does not start
    assert rig.states[-1].soh is None
    assert rig.core.writer.flush()
    assert load(rig.core.store, SohRecord, CONFIG_8).record == SOH_92  # still stored
    rig.run(3.0, modules=3)
    assert rig.core.rt.estimator.started  # type: ignore[union-attr]
    # the new cells hold their configured capacity until the estimator measures one
    assert rig.states[-1].soh == SOH_PRIOR_PCT
    assert rig.core.writer.flush()
    assert load(rig.core.store, SohRecord, config_12).record is not None


@pytest.mark.parametrize(
    ("stored", "why"),
    [
        ({"version": 2, "faults": {"deep_discharge": {}}}, "version: Input should be 1"),
        ({"version": 1, "faults": {"no_such_fault": {}}}, "unknown fault codes"),
    ],
)
def test_latched_faults_that_cannot_be_read_keep_the_master_from_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, stored: object, why: str
) -> None:
    seed = Store(tmp_path / "m.sqlite")
    seed.put(LatchesRecord.KEY, stored, ts=1.0)
    seed.close()
    rig = Rig(tmp_path / "m.sqlite")
    with caplog.at_level(logging.ERROR, logger="master_core"):
        rig.configure(CONFIG_8)
    assert rig.core.rt is None  # no runtime: contactors never close
    assert not rig.acks[-1].accepted and why in rig.acks[-1].errors[0]
    assert "stored protection_latched refused" in caplog.text and "refusing to run" in caplog.text
    assert rig.core.bus.counters["persisted_refused"] == 1
    rig.run(1.0)
    assert rig.states == []
    assert rig.core.writer.flush()
    assert Store(tmp_path / "m.sqlite").get(LatchesRecord.KEY) == stored  # not overwritten


def test_a_failing_save_is_counted_and_stops_neither_the_loop_nor_a_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = Rig(tmp_path / "m.sqlite", persist_period_s="1")
    rig.configure(CONFIG_8)
    rig.run(1.0)

    def disk_full(*_args: object, **_kwargs: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(rig.core.store, "put", disk_full)
    monkeypatch.setattr(rig.core.store, "put_many", disk_full)
    rig.run(2.5)  # a cycle that raised would end this run
    assert not rig.core.writer.flush()  # the writer thread has tried what was handed over
    first = rig.core.bus.counters["persist_errors"]
    assert first >= 1
    # the next save tries again (with the records kept from the failed one), and fails again
    # (hand-overs made faster than the thread writes are one write: the clock here is fast)
    rig.run(1.5)
    assert not rig.core.writer.flush()
    assert rig.core.bus.counters["persist_errors"] > first
    rig.configure(CONFIG_8.model_copy(update={"config_version": 2}))
    assert rig.acks[-1].accepted and rig.acks[-1].config_version == 2


def comm_loss_and_back(rig: Rig, events: list[str]) -> list[str]:
    """Every module silent past its timeout, then back for a while: the events this raised."""
    before = len(events)
    rig.run(3.0, modules=0)
    assert "communication_loss" in rig.states[-1].faults
    rig.run(3.0)
    return events[before:]


def test_the_hours_automatic_recoveries_outlive_a_restart(tmp_path: Path) -> None:
    """A restart loop must not buy more recoveries than `auto_recoveries_per_hour` (3)."""
    rig = Rig(tmp_path / "m.sqlite")
    events: list[str] = []
    rig.slave.subscribe(EVENTS, lambda d: events.append(d.message.code))
    rig.configure(CONFIG_8)
    rig.run(3.0)
    for n in range(2):
        assert "communication_loss_recovered" in comm_loss_and_back(rig, events), n
    rig.restart()
    rig.configure(CONFIG_8)
    rig.run(1.0)
    assert "communication_loss_recovered" in comm_loss_and_back(rig, events)  # the third
    rig.restart()
    rig.configure(CONFIG_8)
    rig.run(1.0)
    fourth = comm_loss_and_back(rig, events)
    assert "communication_loss_recovered" not in fourth
    assert "communication_loss_recovery_exhausted" in fourth
    assert "communication_loss" in rig.states[-1].faults
    rig.restart()  # the latch is the operator's now, also after a restart
    rig.configure(CONFIG_8)
    rig.clock.now += 3600.0
    rig.run(3.0)
    assert "communication_loss" in rig.states[-1].faults
    assert rig.core.bus.counters["persisted_refused"] == 0


def test_the_recoveries_of_an_hour_ago_are_forgotten_after_a_restart(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "m.sqlite")
    events: list[str] = []
    rig.slave.subscribe(EVENTS, lambda d: events.append(d.message.code))
    rig.configure(CONFIG_8)
    rig.run(3.0)
    for _ in range(3):
        comm_loss_and_back(rig, events)
    rig.restart()
    rig.clock.now += 3600.0
    rig.configure(CONFIG_8)
    rig.run(1.0)
    assert "communication_loss_recovered" in comm_loss_and_back(rig, events)


def test_a_store_of_an_older_master_starts_the_count_at_zero(tmp_path: Path) -> None:
    """A store without the record (an older master wrote it) loads, the others with it."""
    seed = Store(tmp_path / "m.sqlite")
    seed.put(SohRecord.KEY, SOH_92.model_dump(mode="json"), ts=1.0)
    seed.close()
    rig = Rig(tmp_path / "m.sqlite")
    events: list[str] = []
    rig.slave.subscribe(EVENTS, lambda d: events.append(d.message.code))
    rig.configure(CONFIG_8)
    rig.run(3.0)
    assert rig.states[-1].soh == pytest.approx(92.0, abs=0.01)
    assert "communication_loss_recovered" in comm_loss_and_back(rig, events)
    assert rig.core.bus.counters["persisted_refused"] == 0
    assert rig.core.writer.flush()
    stored = load(rig.core.store, CommRecoveryRecord, CONFIG_8).record
    assert stored is not None and len(stored.recoveries_wall_s) == 1


def test_an_unreadable_count_takes_the_hour_as_used_up(tmp_path: Path) -> None:
    seed = Store(tmp_path / "m.sqlite")
    seed.put(CommRecoveryRecord.KEY, {"version": 9, "recoveries_wall_s": "?"}, ts=1.0)
    seed.close()
    rig = Rig(tmp_path / "m.sqlite")
    events: list[str] = []
    rig.slave.subscribe(EVENTS, lambda d: events.append(d.message.code))
    rig.configure(CONFIG_8)
    rig.run(3.0)
    assert rig.core.bus.counters["persisted_refused"] == 1
    assert "communication_loss_recovery_exhausted" in comm_loss_and_back(rig, events)
