"""One process hosting several systems (`host.py`): a failure in one system's cycle stays in
that system. Three masters on one in-memory broker, each with its own bus, store and in-process
plant; the test plays their slaves and cycles them as their loops would."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from services.master_core.host import (
    FAIL_SAFE_AFTER_S,
    GuardedIo,
    HostedMaster,
    HostedSystem,
    MasterHost,
    MasterHostSettings,
    parse_systems,
)
from services.master_core.settings import MasterCoreSettings
from services.master_core.stores import Store
from services.plant.in_process import InProcessPlant, in_process_factory
from shared.bus import Delivery, InMemoryBroker, InMemoryBus
from shared.config import SystemConfig
from shared.messages import CellTelemetry, ConfigMessage, Event, PackState
from shared.topics import CONFIG, EVENTS, PACK_STATE, SLAVE_TELEMETRY

SYSTEMS = ("a", "b", "c")
WALL_OFFSET_S = 1.7e9


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + WALL_OFFSET_S


class Rig:
    """Three hosted masters; `step` is a wake-up of every loop: take the inbox, cycle."""

    def __init__(self, tmp_path: Path) -> None:
        self.broker = InMemoryBroker()
        self.clock = Clock()
        self.masters: dict[str, HostedMaster] = {}
        self.slaves: dict[str, InMemoryBus] = {}
        self.states: dict[str, list[PackState]] = {s: [] for s in SYSTEMS}
        self.events: dict[str, list[Event]] = {s: [] for s in SYSTEMS}
        self.seq = 0
        for s in SYSTEMS:
            bus = InMemoryBus(self.broker, system=s, service="master_core", kind="master_core")
            bus.start()
            self.masters[s] = HostedMaster(
                MasterCoreSettings(system=s, load_profile="constant:0", auto_close=True),
                bus, Store(tmp_path / f"master_core-{s}.sqlite"),
                in_process_factory(bus, load_profile="constant:0"),
                monotonic=self.clock, wall=self.clock.wall,
            )  # fmt: skip
            slaves = InMemoryBus(self.broker, system=s, service="slaves", kind="test")
            slaves.start()
            slaves.subscribe(PACK_STATE, lambda d, s=s: self.states[s].append(d.message))
            slaves.subscribe(EVENTS, lambda d, s=s: self._event(s, d))
            config = SystemConfig.from_preset("NMC", system_id=s, modules=2, cells_per_module=4)
            slaves.publish(CONFIG, ConfigMessage(config=config))
            self.slaves[s] = slaves
        self.take()

    def _event(self, system: str, d: Delivery[Event]) -> None:
        self.events[system].append(d.message)

    def take(self) -> None:
        for s in SYSTEMS:
            self.masters[s].bus.process()
            self.slaves[s].process()

    def step(self, dt_s: float = 0.1) -> None:
        self.clock.now += dt_s
        self.seq += 1
        for s in SYSTEMS:
            for module in (0, 1):
                self.slaves[s].publish(
                    SLAVE_TELEMETRY,
                    CellTelemetry(
                        module=module, mode="working", sample_ts=self.clock.wall(),
                        cell_mv=[3700] * 4, cell_flags=[0] * 4, balancing=[False] * 4,
                        temp_c=[25.0, 25.0], temp_flags=[0, 0], seq=self.seq, boot_id="0123abcd",
                    ),
                    module=module,
                )  # fmt: skip
        self.take()
        for s in SYSTEMS:
            self.masters[s]._cycle_counted()  # what the loop calls
        self.take()

    def contactors(self, system: str) -> str:
        return self.masters[system].supervisor.contactor_state

    def plant(self, system: str) -> InProcessPlant:
        rt = self.masters[system].rt
        assert rt is not None and isinstance(rt.io, GuardedIo)
        assert isinstance(rt.io.io, InProcessPlant)
        return rt.io.io

    def coils_on(self, system: str) -> bool:
        return any(self.plant(system)._coils.on.values())


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    r = Rig(tmp_path)
    for _ in range(60):
        r.step()
    assert all(r.contactors(s) == "closed" for s in SYSTEMS), [r.contactors(s) for s in SYSTEMS]
    return r


def test_a_failing_cycle_stays_in_its_own_system(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """System b's cycle raises at every step for 2 s: b counts every failure, logs one line,
    reports a cycle_failed event (warning, then fault), switches its coils off after
    FAIL_SAFE_AFTER_S; a and c publish their pack state at every step with their contactors
    closed, no error counted, no event."""
    b = rig.masters["b"]
    assert b.rt is not None

    def broken(*_args: object) -> None:
        raise RuntimeError("a bug in system b's aggregation")

    monkeypatch.setattr(b.rt.aggregator, "snapshot", broken)
    published = {s: len(rig.states[s]) for s in SYSTEMS}
    events = {s: len(rig.events[s]) for s in SYSTEMS}
    caplog.set_level(logging.ERROR, logger="master_core")
    steps = 20
    for k in range(steps):
        rig.step()
        failing_s = 0.1 * k  # since the first failure, at k = 0
        if failing_s < FAIL_SAFE_AFTER_S - 0.05:
            assert not b.fail_safe.latched and rig.coils_on("b"), k
        elif failing_s > FAIL_SAFE_AFTER_S + 0.05:
            assert b.fail_safe.latched and not rig.coils_on("b"), k
    assert b.bus.counters["cycle_errors"] == steps
    assert b.bus.counters["fail_safe"] == 1
    assert not rig.coils_on("b")
    assert [(e.code, e.level) for e in rig.events["b"][events["b"] :]] == [
        ("cycle_failed", "warning"),
        ("cycle_failed", "fault"),
    ]
    failure_lines = [r for r in caplog.records if "cycle failed" in r.getMessage()]
    assert len(failure_lines) == 1  # rate-limited: 20 failures, one line
    assert "system b" in failure_lines[0].getMessage()
    for s in ("a", "c"):
        m = rig.masters[s]
        assert m.bus.counters["cycle_errors"] == 0
        assert not m.fail_safe.latched and m.failing_since_s is None
        assert rig.contactors(s) == "closed" and rig.coils_on(s)
        assert len(rig.states[s]) - published[s] >= steps // 2  # 10 Hz, every other 0.1 s step
        assert rig.states[s][-1].contactors == "closed" and not rig.states[s][-1].faults
        assert rig.events[s][events[s] :] == []


def test_after_the_fail_safe_the_coils_stay_off_until_the_supervisor_opens(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """b's cycles succeed again after its fail-safe: its supervisor still says closed, but the
    coils stay off until it commands them off itself (here: it sees the contacts open and
    faults), so no close skips the precharge."""
    b = rig.masters["b"]
    assert b.rt is not None
    with monkeypatch.context() as patch:
        patch.setattr(b.rt.aggregator, "snapshot", lambda *_: (_ for _ in ()).throw(KeyError()))
        for _ in range(8):
            rig.step()
    assert b.fail_safe.latched
    for _ in range(30):
        rig.step()
        assert b.failing_since_s is None
        if b.fail_safe.latched:
            assert not rig.coils_on("b")
    assert not b.fail_safe.latched, rig.contactors("b")
    assert rig.contactors("b") != "closed"
    assert all(rig.contactors(s) == "closed" for s in ("a", "c"))


def test_a_loop_that_ends_with_an_exception_starts_again_alone(tmp_path: Path) -> None:
    """System a's loop raises outside its cycle: it is counted and started again; b's loop
    runs on meanwhile (its thread is never stopped)."""
    broker = InMemoryBroker()
    hosted = []
    for s in ("a", "b"):
        bus = InMemoryBus(broker, system=s, service="master_core", kind="master_core")
        bus.start()
        master = HostedMaster(
            MasterCoreSettings(system=s), bus, Store(tmp_path / f"{s}.sqlite"),
            in_process_factory(bus, load_profile="constant:0"),
        )  # fmt: skip
        hosted.append(HostedSystem(s, bus, master.store, master))
    runs = {"a": 0, "b": 0}
    b_alive = threading.Event()

    def a_run(should_stop: object) -> None:
        runs["a"] += 1
        raise RuntimeError("a bug in a's loop")

    def b_run(should_stop: object) -> None:
        runs["b"] += 1
        assert callable(should_stop)
        while not should_stop():
            b_alive.set()
            time.sleep(0.01)

    hosted[0].master.run = a_run  # type: ignore[method-assign]
    hosted[1].master.run = b_run  # type: ignore[method-assign]
    host = MasterHost(hosted)
    import services.master_core.host as host_module

    old = host_module.LOOP_RESTART_S
    host_module.LOOP_RESTART_S = 0.05
    try:
        host.start()
        deadline = time.monotonic() + 10
        while runs["a"] < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert runs["a"] >= 3 and b_alive.is_set() and runs["b"] == 1
        assert hosted[0].bus.counters["loop_errors"] >= 3
        assert hosted[1].bus.counters["loop_errors"] == 0
    finally:
        host.stop()
        host_module.LOOP_RESTART_S = old
    assert hosted[1].thread is not None and not hosted[1].thread.is_alive()


def test_each_system_gets_its_own_settings(tmp_path: Path) -> None:
    """Per system: its id, its broker user and password file (a master user per system), a
    client id of its own; the rest as given."""
    (tmp_path / "master_core-s1").write_text("pw1\n")
    (tmp_path / "master_core-s2").write_text("pw2\n")
    settings = MasterHostSettings(
        systems="s1, s2", mqtt_password_dir=str(tmp_path), mqtt_client_id="m", seed=3
    )
    assert settings.system_list() == ["s1", "s2"]
    one = settings.for_system("s2")
    assert (one.system, one.seed, one.mqtt_client_id) == ("s2", 3, "m.s2")
    assert (one.endpoint.username, one.endpoint.password) == ("master_core-s2", "pw2")
    plain = MasterHostSettings(systems="x").for_system("x")
    assert plain.endpoint.username is None


@pytest.mark.parametrize("text", ["a,a", "a,B", "a,,b/c"])
def test_a_bad_list_of_systems_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_systems(text)


def test_metrics_label_each_hosted_systems_counters() -> None:
    """One /metrics for the process: every bus family and counter once per system, with its
    `system` label (the same names twice would be one series)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from services.master_core.host import SystemsCollector

    broker = InMemoryBroker()
    buses = [InMemoryBus(broker, system=s, service="master_core", kind="master_core")
             for s in ("a", "b")]  # fmt: skip
    buses[0].counters["overruns"] = 3
    buses[1].counters["cycle_errors"] = 2
    registry = CollectorRegistry(auto_describe=True)
    registry.register(SystemsCollector(buses))
    text = generate_latest(registry).decode()
    assert 'bms_bus_overruns_total{kind="master_core",service="master_core",system="a"} 3.0' in text
    assert 'bms_bus_overruns_total{kind="master_core",service="master_core",system="b"} 0.0' in text
    assert (
        'bms_service_counter_total{counter="cycle_errors",kind="master_core",'
        'service="master_core",system="b"} 2.0'
    ) in text
    assert 'counter="cycle_errors",kind="master_core",service="master_core",system="a"' not in text


def test_a_cycle_failing_every_other_time_reports_once_per_ten_seconds(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """b's cycle fails at every other step for 12 s: each failure counted, but a
    cycle_failed event only every 10 s (two), and no fail-safe (good cycles between)."""
    b = rig.masters["b"]
    assert b.rt is not None
    real = b.rt.aggregator.snapshot
    calls = [0]

    def flaky(*args: object) -> object:
        calls[0] += 1
        if calls[0] % 2:
            raise RuntimeError("every other time")
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(b.rt.aggregator, "snapshot", flaky)
    events = len(rig.events["b"])
    for _ in range(120):
        rig.step()
    assert b.bus.counters["cycle_errors"] == 60
    assert [e.code for e in rig.events["b"][events:]] == ["cycle_failed", "cycle_failed"]
    assert not b.fail_safe.latched and rig.contactors("b") == "closed"
