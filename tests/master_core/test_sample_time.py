"""The master judges telemetry in sample time: the delay of a telemetry code counts from the
time stamp of the first sample beyond its threshold, the trip (coils off) comes in the cycle
of the sample that completes the delay, and a fresh sample is judged at once by the loop.

The master runs on an in-memory bus with its devices in process; the test plays the slaves,
choosing each sample's time stamp and when it arrives. The master's wall clock runs far from
its monotonic one, as on a real machine: sample times are mapped between the two.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from services.master_core import service
from services.master_core.service import MasterCore
from services.master_core.settings import MasterCoreSettings
from services.master_core.stores import Store
from services.plant.in_process import in_process_factory
from shared.bus import InMemoryBroker, InMemoryBus
from shared.config import SystemConfig
from shared.messages import (
    CellTelemetry,
    ChannelFlag,
    ConfigMessage,
    Event,
    PackState,
    RackTelemetry,
)
from shared.schedule import FixedRateSchedule
from shared.topics import CONFIG, EVENTS, PACK_STATE, RACK_TELEMETRY, SLAVE_TELEMETRY

HEALTHY_MV = 3700
WALL_OFFSET_S = 1.7e9
"""The wall clock minus the monotonic one."""
CONFIG_NMC = SystemConfig.from_preset("NMC", system_id="demo", modules=2, cells_per_module=4)
FAULT = CONFIG_NMC.protection.cell_overvoltage.fault
OVER_MV = round(FAULT.threshold * 1000) + 50
UNDER_MV = round(CONFIG_NMC.protection.cell_undervoltage.fault.threshold * 1000) - 50


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + WALL_OFFSET_S


class Master:
    """A master fed by the test, cycled by the test (`judge`) as its loop would."""

    def __init__(
        self,
        tmp_path: Path,
        monotonic: Callable[[], float] | None = None,
        wall: Callable[[], float] | None = None,
    ) -> None:
        broker = InMemoryBroker()
        self.clock = Clock()
        self.bus = InMemoryBus(broker, system="demo", service="master_core", kind="master_core")
        self.bus.start()
        self.core = MasterCore(
            MasterCoreSettings(load_profile="constant:0", auto_close=True),
            self.bus, Store(tmp_path / "master.sqlite"),
            in_process_factory(self.bus, load_profile="constant:0"),
            monotonic=monotonic or self.clock, wall=wall or self.clock.wall,
        )  # fmt: skip
        self.slaves = InMemoryBus(broker, system="demo", service="slaves", kind="test")
        self.slaves.start()
        self.slaves.publish(CONFIG, ConfigMessage(config=CONFIG_NMC))
        self.bus.process()
        self.seq = {0: 0, 1: 0}
        self.wall = wall or self.clock.wall

    def send(
        self, module: int, sample_wall_s: float, cell_mv: int = HEALTHY_MV, flag: int = 0
    ) -> None:
        self.seq[module] += 1
        self.slaves.publish(
            SLAVE_TELEMETRY,
            CellTelemetry(
                module=module, mode="working", sample_ts=sample_wall_s,
                cell_mv=[HEALTHY_MV, HEALTHY_MV, cell_mv, HEALTHY_MV],
                cell_flags=[0, 0, flag, 0], balancing=[False] * 4, temp_c=[25.0, 25.0],
                temp_flags=[0, 0], seq=self.seq[module], boot_id="0123abcd",
            ),
            module=module,
        )  # fmt: skip

    def send_rack(self, sample_wall_s: float, cell_mv: dict[int, int], level: str) -> None:
        """One message with a sample of each module in `cell_mv`, as an agent publishes."""
        samples = []
        for module, mv in sorted(cell_mv.items()):
            self.seq[module] += 1
            samples.append(
                CellTelemetry(
                    module=module, mode="working", sample_ts=sample_wall_s,
                    cell_mv=[HEALTHY_MV, HEALTHY_MV, mv, HEALTHY_MV], cell_flags=[0] * 4,
                    balancing=[False] * 4, temp_c=[25.0, 25.0], temp_flags=[0, 0],
                    seq=self.seq[module], boot_id="0123abcd",
                )
            )  # fmt: skip
        self.slaves.publish(RACK_TELEMETRY, RackTelemetry(samples=samples), modules=level)

    def judge(self) -> None:
        """What the loop does on a wake-up: take what waits, then one cycle."""
        self.bus.process()
        self.core.cycle()

    def healthy(self, seconds: float) -> None:
        """Healthy samples every 0.1 s, judged at once, until the contactors are closed."""
        for _ in range(round(seconds / 0.1)):
            self.clock.now += 0.1
            for m in (0, 1):
                self.send(m, self.clock.wall())
            self.judge()

    @property
    def tripped(self) -> bool:
        return self.tripped_by("cell_overvoltage")

    def tripped_by(self, code: str) -> bool:
        out = self.core.last
        return (
            out is not None
            and code in out.protection.faults
            and out.coils.all_off
            and self.core.supervisor.contactor_state == "fault"
        )


@pytest.fixture
def master(tmp_path: Path) -> Master:
    m = Master(tmp_path)
    m.healthy(6.0)
    assert m.core.supervisor.contactor_state == "closed"
    return m


def test_the_delay_counts_from_the_samples_time_stamps_not_from_their_arrival(
    master: Master,
) -> None:
    """Module 1's samples, 0.1 s apart, arrive late by 0.3 s, then 0.02 s, then 0.25 s: the
    trip comes with the sample stamped 0.5 s after the first one beyond, in the cycle that
    judges it (coils off there), never at a cycle counted from the first arrival."""
    t0 = master.clock.wall() + 0.1
    lags = [0.3, 0.02, 0.02, 0.25, 0.25, 0.02]
    for k, lag in enumerate(lags):
        sample_wall = t0 + 0.1 * k
        master.clock.now = max(master.clock.now, sample_wall - WALL_OFFSET_S + lag)
        master.send(0, sample_wall)
        master.send(1, sample_wall, OVER_MV)
        master.judge()
        # by the cycle's clock 0.5 s have passed since the first arrival from k = 4 on (the
        # 4th sample arrives at t0 + 0.65); by sample time only at k = 5
        assert master.tripped == (k == 5), (k, master.core.last)
        if k < 5:
            assert master.core.supervisor.contactor_state == "closed", k
    master.clock.now += 0.05
    master.judge()  # a periodic cycle: the trip stays
    assert master.tripped


def test_an_agents_message_is_judged_as_the_samples_of_its_modules(master: Master) -> None:
    """Both modules in one message a sample: the trip comes with the sample stamped 0.5 s
    after the first one beyond, in the cycle that judges it."""
    t0 = master.clock.wall() + 0.1
    for k in range(7):
        master.clock.now = t0 + 0.1 * k - WALL_OFFSET_S + 0.02
        master.send_rack(t0 + 0.1 * k, {0: HEALTHY_MV, 1: OVER_MV}, "0-1")
        master.judge()
        assert master.tripped == (k >= 5), (k, master.core.last)
    assert master.bus.counters["telemetry_outside_range"] == 0


@pytest.mark.parametrize(
    ("code", "beyond_mv", "out_of_range_mv"),
    [
        ("cell_overvoltage", OVER_MV, lambda k: 5100 + 100 * k),
        ("cell_undervoltage", UNDER_MV, lambda k: 900 - 100 * k),
    ],
)
def test_a_cell_read_beyond_the_measurement_range_still_completes_its_delay(
    master: Master, code: str, beyond_mv: int, out_of_range_mv: Callable[[int], int]
) -> None:
    """A cell running away at 1 V/s (a failing cell, or a test's drift) passes its limit,
    then reads beyond the 1.00-4.95 V measurement range 0.2 s later: flagged out of range, its
    reading is no value to publish, but it is beyond every voltage threshold (they lie within
    the range). The delay runs on and trips with the sample 0.5 s after the first beyond: the
    other cells' extreme (3.7 V) must not restart it and leave the trip to
    measurement_out_of_range 0.5 s after the cell left the range. Deep discharge (latched for a
    service reset) still reads measured cells only."""
    events: list[Event] = []
    master.slaves.subscribe(EVENTS, lambda d: events.append(d.message))
    t0 = master.clock.wall() + 0.1
    out = int(ChannelFlag.OUT_OF_RANGE)
    for k in range(7):
        master.clock.now = t0 + 0.1 * k - WALL_OFFSET_S + 0.02
        mv, flag = (beyond_mv, 0) if k < 2 else (out_of_range_mv(k), out)
        master.send(0, t0 + 0.1 * k)
        master.send(1, t0 + 0.1 * k, mv, flag)
        master.judge()
        assert master.tripped_by(code) == (k >= 5), (k, master.core.last)
    last = master.core.last
    assert last is not None
    assert {"measurement_out_of_range", "deep_discharge"}.isdisjoint(last.protection.faults)
    master.slaves.process()
    raised = [e for e in events if e.code == code and e.kind == "raise"]
    assert [(e.level, e.values["module"], e.values["index"]) for e in raised][-1] == ("fault", 1, 2)
    assert raised[-1].values["value"] == out_of_range_mv(5) / 1000  # the reading at the trip


def test_a_module_outside_the_messages_range_is_refused_and_counted(master: Master) -> None:
    """Module 1's cells over the threshold, on the topic of a range that holds module 0 only
    (another rack's broker user could publish it): refused, counted, never judged."""
    t0 = master.clock.wall() + 0.1
    for k in range(8):
        master.clock.now = t0 + 0.1 * k - WALL_OFFSET_S + 0.02
        master.send_rack(t0 + 0.1 * k, {0: HEALTHY_MV, 1: OVER_MV}, "0-0")
        master.send(1, t0 + 0.1 * k)  # module 1's own, healthy, on its per-module topic
        master.judge()
    assert not master.tripped
    assert master.core.supervisor.contactor_state == "closed"
    assert master.bus.counters["telemetry_outside_range"] == 8
    assert master.bus.counters["telemetry_refused"] == 8


def test_a_dip_between_two_samples_taken_together_restarts_the_delay(master: Master) -> None:
    """The loop fell behind: module 1's samples at +0.3 s (below the threshold) and +0.4 s
    (beyond) wait in the inbox together. The dip is judged before the next sample is taken,
    so the delay restarts at +0.4 s: no trip at +0.5 s, one at +0.9 s."""
    t0 = master.clock.wall() + 0.1
    beyond = {0.0, 0.1, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9}
    for k in range(10):
        offset_s = round(0.1 * k, 1)
        master.clock.now = t0 + offset_s - WALL_OFFSET_S + 0.01
        master.send(0, t0 + offset_s)
        master.send(1, t0 + offset_s, OVER_MV if offset_s in beyond else HEALTHY_MV)
        if offset_s == 0.3:
            continue  # taken with the next one
        master.judge()
        assert master.tripped == (offset_s >= 0.9), offset_s
        assert master.core.supervisor.contactor_state == ("fault" if offset_s >= 0.9 else "closed")
    assert master.bus.counters["telemetry_judged_in_catch_up"] == 1  # one cycle for both


def test_a_periodic_cycle_does_not_advance_a_telemetry_delay(master: Master) -> None:
    """Samples beyond for 0.4 s of sample time, then none for a second of periodic cycles:
    no trip (no sample has shown the condition for the delay)."""
    t0 = master.clock.wall() + 0.1
    for k in range(5):
        master.clock.now = t0 + 0.1 * k - WALL_OFFSET_S + 0.01
        master.send(0, t0 + 0.1 * k)
        master.send(1, t0 + 0.1 * k, OVER_MV)
        master.judge()
    for _ in range(4):  # within the module timeout: the module is still fresh
        master.clock.now += 0.05
        master.judge()
        assert not master.tripped
        assert master.core.supervisor.contactor_state == "closed"
    master.clock.now = t0 + 0.5 - WALL_OFFSET_S + 0.01
    master.send(0, t0 + 0.5)
    master.send(1, t0 + 0.5, OVER_MV)
    master.judge()
    assert master.tripped


def test_a_slave_clock_ahead_then_corrected_does_not_hold_the_delay_back(master: Master) -> None:
    """Module 1's clock runs 3 s ahead (within the admitted age), then is corrected: its samples
    count at their arrival (0.01 s after they were taken) while ahead, so the delay ends with
    the sample 0.6 s after the first beyond (the first 0.5 s after that one's arrival), not 3 s
    later when the master's clock reaches the stamps of the future."""
    t0 = master.clock.wall() + 0.1
    for k in range(7):
        sample_wall = t0 + 0.1 * k
        master.clock.now = sample_wall - WALL_OFFSET_S + 0.01
        master.send(0, sample_wall)
        master.send(1, sample_wall + (3.0 if k < 3 else 0.0), OVER_MV)
        master.judge()
        assert master.tripped == (k >= 6), k


def test_a_sample_between_grid_slots_runs_the_protection_judgement_alone(
    master: Master, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wake-up for fresh telemetry with no grid slot due (`serve`) judges the sample and does
    nothing else: no estimator, no limits, no publishing. The sample that completes the delay
    trips there, coils off, and the whole cycle follows at once (the state goes out at once)."""
    core = master.core
    assert core.rt is not None
    estimator = core.rt.estimator
    steps: list[float] = []
    update = estimator.update
    monkeypatch.setattr(
        estimator, "update", lambda *a, **kw: (steps.append(master.clock.now), update(*a, **kw))
    )
    states: list[PackState] = []
    master.slaves.subscribe(PACK_STATE, lambda d: states.append(d.message))
    master.slaves.process()
    states.clear()  # the retained one
    core.schedule = FixedRateSchedule(service.PERIOD_S, master.clock.now + 10.0)  # none due
    t0 = master.clock.wall() + 0.1
    for k in range(6):
        master.clock.now = t0 + 0.1 * k - WALL_OFFSET_S + 0.01
        master.send(0, t0 + 0.1 * k)
        master.send(1, t0 + 0.1 * k, OVER_MV)
        master.bus.process()
        assert core.serve() == "judge"
        master.slaves.process()
        if k < 5:
            assert (steps, states) == ([], []), k
            assert core.supervisor.contactor_state == "closed"
    assert master.tripped
    assert steps == [master.clock.now]  # the one whole cycle, right after the trip
    assert [s.contactors for s in states] == ["fault"]
    assert "cell_overvoltage" in states[0].faults


def test_a_level_a_sample_raises_is_published_at_once(master: Master) -> None:
    """An alarm (no trip) raised by the judgement of a sample between grid slots: the state
    goes out at once with it, though the last went out 20 ms before (not 10 Hz apart)."""
    alarm = CONFIG_NMC.protection.cell_overvoltage.alarm
    alarm_mv = round(alarm.threshold * 1000) + 10
    states: list[PackState] = []
    master.slaves.subscribe(PACK_STATE, lambda d: states.append(d.message))
    master.slaves.process()
    states.clear()  # the retained one
    master.core.schedule = FixedRateSchedule(service.PERIOD_S, master.clock.now + 10.0)
    t0 = master.clock.wall() + 0.1
    samples = round(alarm.delay_s / 0.1) + 1
    for k in range(samples):
        master.clock.now = t0 + 0.1 * k - WALL_OFFSET_S + 0.01
        if k == samples - 1:  # a grid cycle 20 ms before publishes the state, no alarm yet
            master.clock.now -= 0.02
            master.core.cycle()
            master.slaves.process()
            assert [s.alarms for s in states] == [[]]
            master.clock.now += 0.02
        master.send(0, t0 + 0.1 * k)
        master.send(1, t0 + 0.1 * k, alarm_mv)
        master.bus.process()
        assert master.core.serve() == "judge"
        master.slaves.process()
        assert len(states) == (2 if k == samples - 1 else 0), k
    assert "cell_overvoltage" in states[-1].alarms and states[-1].contactors == "closed"


def test_the_loop_judges_a_fresh_sample_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the periodic cycle a minute apart, the loop on real clocks still trips on the
    sample that completes the delay: fresh telemetry starts its own cycle."""
    monkeypatch.setattr(service, "PERIOD_S", 60.0)
    m = Master(tmp_path, monotonic=time.monotonic, wall=time.time)
    stop = threading.Event()
    loop = threading.Thread(target=m.core.run, args=(stop.is_set,), daemon=True)
    loop.start()
    try:
        t0 = time.time()
        for k in range(5):  # 0.4 s of sample time: not yet
            m.send(1, t0 + 0.1 * k, OVER_MV)
            m.send(0, t0 + 0.1 * k)
        assert _within(10.0, lambda: m.core.last is not None)  # judged, with no slot due
        assert not _within(1.0, lambda: "cell_overvoltage" in _faults(m))
        m.send(1, t0 + 0.5, OVER_MV)
        assert _within(10.0, lambda: "cell_overvoltage" in _faults(m))
    finally:
        stop.set()
        loop.join(5.0)
    assert m.bus.counters["cycle_errors"] == 0


def _faults(m: Master) -> tuple[str, ...]:
    d = m.core.supervisor.d
    return () if d is None else d.protection.status().faults


def _within(seconds: float, condition: Callable[[], bool]) -> bool:
    """Whether `condition` holds within `seconds` (polled)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return condition()
