"""`RecordWriter` on a real SQLite file: the loop hands records over and never waits for
SQLite; a stop writes what was handed over; a failed write is logged once per interval and
counted, kept for the next write, and never raises into the loop."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from services.master_core.persisted import (
    WRITE_ERRORS,
    CyclesRecord,
    LatchesRecord,
    RecordWriter,
    SocRecord,
)
from services.master_core.service import MasterCore
from services.master_core.settings import MasterCoreSettings
from services.master_core.stores import Store
from services.plant.in_process import in_process_factory
from shared.bus import InMemoryBroker, InMemoryBus
from shared.config import SystemConfig
from shared.messages import CellTelemetry, ConfigMessage
from shared.topics import CONFIG, SLAVE_TELEMETRY


def soc(pct: float) -> SocRecord:
    return SocRecord(soc_pct=[pct] * 4, soc_std_pct=[1.0] * 4)


class HeldStore(Store):
    """A real store whose writes wait until `release` is set (a slow disk, a long checkpoint)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.release = threading.Event()
        self.writing = threading.Event()

    def put_many(self, items: list[tuple[str, Any]], *, ts: float) -> None:
        self.writing.set()
        assert self.release.wait(30.0), "never released"
        super().put_many(items, ts=ts)


def failing(store: Store) -> None:
    """Every write to the state table fails inside SQLite, as a full disk would."""
    store._db.execute(
        "CREATE TRIGGER full BEFORE INSERT ON state BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    )


def test_a_hand_over_does_not_wait_for_a_slow_write_and_the_newest_wins(tmp_path: Path) -> None:
    store = HeldStore(tmp_path / "m.sqlite")
    writer = RecordWriter(store)
    writer.submit([soc(10.0)], ts=1.0)
    assert store.writing.wait(10.0)  # the thread is stuck in SQLite
    started = time.monotonic()
    for k in range(100):
        writer.submit([soc(11.0 + k / 10), CyclesRecord(equivalent_cycles=k)], ts=2.0 + k)
    assert time.monotonic() - started < 1.0  # a lock and a notification each, however slow
    store.release.set()
    assert writer.close()
    again = Store(tmp_path / "m.sqlite")
    assert again.get(SocRecord.KEY)["soc_pct"] == [20.9] * 4
    assert again.get(SocRecord.KEY)["saved_wall_s"] == 101.0  # stamped with its own hand-over
    assert again.get(CyclesRecord.KEY)["equivalent_cycles"] == 99
    assert writer.writes == 2  # the first, then the newest of the 100 in one transaction
    assert writer.errors == 0


def test_close_writes_what_was_handed_over(tmp_path: Path) -> None:
    store = Store(tmp_path / "m.sqlite")
    writer = RecordWriter(store)
    for k in range(50):
        writer.submit([soc(float(k)), LatchesRecord(faults={})], ts=float(k))
    assert writer.close()  # no flush before: close alone must write the last
    store.close()
    again = Store(tmp_path / "m.sqlite")
    assert again.get(SocRecord.KEY)["soc_pct"] == [49.0] * 4
    assert again.get(LatchesRecord.KEY) == {"version": 1, "faults": {}}


def test_after_close_a_hand_over_is_written_at_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "m.sqlite")
    writer = RecordWriter(store)
    assert writer.close()
    writer.submit([soc(42.0)], ts=5.0)
    assert store.get(SocRecord.KEY)["soc_pct"] == [42.0] * 4


def test_a_failed_write_is_logged_once_counted_and_kept_for_the_next(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(tmp_path / "m.sqlite")
    failing(store)
    counters: Counter[str] = Counter()
    writer = RecordWriter(store, counters=counters)
    with caplog.at_level(logging.WARNING, logger="master_core.persisted"):
        writer.submit([soc(10.0), CyclesRecord(equivalent_cycles=3.0)], ts=1.0)
        assert not writer.flush()  # it failed: the records are still pending
        writer.submit([soc(11.0)], ts=2.0)
        assert not writer.flush()
    assert writer.errors == 2 and counters[WRITE_ERRORS] == 2
    lines = [r for r in caplog.records if "disk full" in r.getMessage()]
    assert len(lines) == 1  # once per LOG_EVERY_S
    assert "equivalent_cycles" in lines[0].getMessage()
    store._db.execute("DROP TRIGGER full")  # the disk has room again
    writer.submit([soc(12.0)], ts=3.0)
    assert writer.flush()
    assert store.get(SocRecord.KEY)["soc_pct"] == [12.0] * 4
    assert store.get(CyclesRecord.KEY)["equivalent_cycles"] == 3.0  # kept from the failure
    assert writer.close()


def test_a_failed_write_is_not_retried_in_a_loop_and_close_gives_up(tmp_path: Path) -> None:
    store = Store(tmp_path / "m.sqlite")
    failing(store)
    writer = RecordWriter(store)
    writer.submit([soc(10.0)], ts=1.0)
    assert not writer.flush()
    time.sleep(0.2)  # the thread waits for a new hand-over: no retries meanwhile
    assert writer.errors == 1
    assert not writer.close(timeout_s=10.0)  # one last try at the stop, failed: no hang
    assert writer.errors == 2


SYSTEM = SystemConfig.from_preset("NMC", system_id="demo", modules=2, cells_per_module=4)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def master(store: Store, clock: Clock) -> tuple[MasterCore, InMemoryBus]:
    broker = InMemoryBroker()
    bus = InMemoryBus(broker, system="demo", service="master_core", kind="master_core")
    bus.start()
    core = MasterCore(
        MasterCoreSettings(auto_close=True, persist_period_s=1.0), bus, store,
        in_process_factory(bus, load_profile="constant:-10"), monotonic=clock, wall=clock,
    )  # fmt: skip
    slaves = InMemoryBus(broker, system="demo", service="slaves", kind="test")
    slaves.start()
    slaves.publish(CONFIG, ConfigMessage(config=SYSTEM))
    bus.process()
    return core, slaves


def run(core: MasterCore, slaves: InMemoryBus, clock: Clock, seconds: float) -> None:
    for k in range(round(seconds / 0.05)):
        clock.now += 0.05
        if k % 2 == 0:
            for m in (0, 1):
                slaves.publish(
                    SLAVE_TELEMETRY,
                    CellTelemetry(
                        module=m, mode="working", sample_ts=clock.now, cell_mv=[3700] * 4,
                        cell_flags=[0] * 4, balancing=[False] * 4, temp_c=[25.0, 25.0],
                        temp_flags=[0, 0], seq=round(clock.now * 10),
                    ),
                    module=m,
                )  # fmt: skip
        core.bus.process()
        core.serve()
        slaves.process()


def test_the_master_cycles_on_while_sqlite_is_stuck_and_its_stop_saves_the_last(
    tmp_path: Path,
) -> None:
    """The periodic save of the master is handed over: its loop goes on for seconds while the
    write hangs; the stop writes the records of the stop itself."""
    store = HeldStore(tmp_path / "m.sqlite")
    clock = Clock()
    core, slaves = master(store, clock)
    loop = threading.Thread(target=run, args=(core, slaves, clock, 8.0), daemon=True)
    loop.start()
    loop.join(60.0)
    assert not loop.is_alive()  # 8 s of cycles, each second's save handed over
    assert store.writing.is_set()
    assert core.supervisor.contactor_state == "closed"
    assert core.rt is not None and core.rt.estimator.started
    store.release.set()
    core.stop()
    stopped_at = clock.now
    store.close()
    again = Store(tmp_path / "m.sqlite")
    record = again.get(SocRecord.KEY)
    assert record is not None and record["saved_wall_s"] == stopped_at
    assert again.get(LatchesRecord.KEY) == {"version": 1, "faults": {}}
    assert core.bus.counters[WRITE_ERRORS] == 0


def test_an_ocv_capture_that_cannot_be_saved_stops_no_other_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The capture's records are built apart: one that cannot be built is counted and logged
    once a minute, and the SOC and the latches are saved all the same."""
    store = Store(tmp_path / "m.sqlite")
    clock = Clock()
    core, slaves = master(store, clock)

    def broken(now_s: float) -> list[Any]:
        raise ValueError("a non-finite charge in a kept update")

    monkeypatch.setattr(core.ocv, "records", broken)
    with caplog.at_level(logging.ERROR, logger="master_core"):
        run(core, slaves, clock, 5.0)
        assert core.writer.flush()
    assert store.get(SocRecord.KEY) is not None
    assert store.get(LatchesRecord.KEY) == {"version": 1, "faults": {}}
    assert core.bus.counters["persist_build_errors"] >= 4  # each save of the 5 s
    failed = [r for r in caplog.records if "saving the ocv capture failed" in r.getMessage()]
    assert len(failed) == 1
    core.stop()
    store.close()
