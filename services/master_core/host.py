"""One master process for several systems: `BMS_SYSTEMS=a,b,c python -m services.master_core`.

The way one slave-agent process hosts many modules, one master process can host many systems.
Each system keeps everything that is its own: a `MasterCore` with its own bus connection (its
client id, last will and retained presence under its own system id, and its own broker user
where the ACL has one per system, `master_core-<system>`, with `mqtt_password_dir`), its own
SQLite file (`master_core-<system>.sqlite`), its own devices and its own loop thread running
`MasterCore.run` unchanged. What they share is the interpreter and what it has imported
(numpy, pydantic, the code: most of a master's RSS), and one /metrics port (each system's
counters under a `system` label).

Isolation: a failure in one system's cycle stays in that system. `HostedMaster.cycle` catches
it, counts it (`cycle_errors` in that system's status, published at once), logs it at most once
per `FAILURE_LOG_EVERY_S` per system and emits a `cycle_failed` event; the other systems' loops
run on in their own threads. A system whose cycle has failed for `FAIL_SAFE_AFTER_S` without a
good cycle in between is judged unsupervised: its contactor coils are switched off
(`FailSafe`), and held off until its own supervisor commands every coil off (having noticed
the opened contacts, or an operator's open): a later close takes the normal path, precharge
first. A loop that ends with an exception (a bug outside the cycle) is counted
(`loop_errors`), logged and started again after `LOOP_RESTART_S`, as a process manager would
restart a process. A master process of one system runs a `HostedMaster` too, so a failing
cycle fails safe the same way in both layouts.

The trade-off (docs/deployment.md): a process per system isolates everything, memory and a
crash of the interpreter included, and costs an interpreter per system; one process costs one
interpreter, but shares its fate (an out-of-memory kill or a segfault stops every system in
it) and its global interpreter lock.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from services.master_core.contactors import ContactorName
from services.master_core.hardware import CoilCommands, HardwareReading, PackIo, PackIoFactory
from services.master_core.service import CYCLE_SECONDS, MasterCore
from services.master_core.settings import MasterCoreSettings
from services.master_core.stores import Store
from shared.bus import BusCore, MqttBus
from shared.config import SYSTEM_ID_RE, SystemConfig
from shared.deploy.acl import string_master
from shared.log_limit import LimitedLog
from shared.messages.events import EventLevel
from shared.metrics import BUS_COUNTERS, MetricsServer

log = logging.getLogger("master_core.host")

KIND = "master_core"
FAIL_SAFE_AFTER_S = 0.5
"""A cycle failing this long without a good one between: protection is not judging, so the
system's coils go off (ten periodic slots; a single failure among good cycles does not)."""
FAILURE_LOG_EVERY_S = 10.0
"""One log line per system and kind of failure at most this often; the counters are exact."""
LOOP_RESTART_S = 1.0
"""A loop that ended with an exception starts again after this long."""


def parse_systems(text: str) -> list[str]:
    """'a,b,c' -> ['a', 'b', 'c']: valid system ids, each once; a clear error otherwise."""
    systems = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in systems if not SYSTEM_ID_RE.match(s)]
    if bad:
        raise ValueError(f"systems {bad}: each must be 1-32 lower-case letters, digits, '-' or '_'")
    if len(set(systems)) != len(systems):
        raise ValueError(f"systems {systems}: a system is listed twice")
    return systems


class MasterHostSettings(MasterCoreSettings):
    """The master's settings, and the systems one process hosts."""

    model_config = SettingsConfigDict(cli_prog_name="python -m services.master_core")

    systems: str = Field(
        "",
        description="host several systems in this one process, e.g. 'a,b,c' (each with its "
        "own connection, store and loop; `system` is then unused); empty: the one `system`",
    )
    mqtt_password_dir: str | None = Field(
        None,
        description="with systems: a directory holding each system's broker password in a "
        "file named after its user, master_core-<system> (also its user name), for an ACL "
        "with a master user per system (a site's strings); unset: every system logs in with "
        "mqtt_username and mqtt_password_file",
    )

    @field_validator("systems")
    @classmethod
    def _systems(cls, value: str) -> str:
        parse_systems(value)
        return value

    def system_list(self) -> list[str]:
        return parse_systems(self.systems)

    def for_system(self, system: str) -> MasterCoreSettings:
        """One system's settings: its id, its broker user (with `mqtt_password_dir`) and a
        client id of its own (a fixed one gets the system appended)."""
        update: dict[str, object] = {"system": system}
        if self.mqtt_password_dir:
            user = string_master(system)  # the ACL's master user of one system
            update |= {
                "mqtt_username": user,
                "mqtt_password_file": str(Path(self.mqtt_password_dir) / user),
            }
        if self.mqtt_client_id:
            update["mqtt_client_id"] = f"{self.mqtt_client_id}.{system}"
        data = self.model_dump(exclude={"systems", "mqtt_password_dir"}) | update
        return MasterCoreSettings.model_validate(data)


# --- the fail-safe ------------------------------------------------------------------------------


class _AllOff:
    """Every coil off."""

    def commanded(self, name: ContactorName) -> bool:
        return False


ALL_OFF: CoilCommands = _AllOff()


class FailSafe:
    """A latch: while set, the system's coils are held off whatever is commanded."""

    def __init__(self) -> None:
        self.latched = False


class GuardedIo:
    """A system's devices behind its `FailSafe`: reads pass through; while the latch is set,
    the coils are written off, and the latch is released once the supervisor itself commands
    every coil off (so that a close after it goes through the supervisor's sequence)."""

    def __init__(self, io: PackIo, guard: FailSafe) -> None:
        self.io = io
        self.guard = guard

    @property
    def has_insulation_monitor(self) -> bool:
        return self.io.has_insulation_monitor

    def read(self, now_s: float) -> HardwareReading:
        return self.io.read(now_s)

    def write_coils(self, coils: CoilCommands, now_s: float) -> None:
        if self.guard.latched:
            if any(coils.commanded(name) for name in _COILS):
                coils = ALL_OFF
            else:
                self.guard.latched = False
                log.warning("fail-safe released: the supervisor commands every coil off")
        self.io.write_coils(coils, now_s)

    def close(self) -> None:
        self.io.close()


_COILS: tuple[ContactorName, ...] = ("main_positive", "main_negative", "precharge")


def guarded_factory(make_io: PackIoFactory, guard: FailSafe) -> PackIoFactory:
    """`make_io` whose devices sit behind `guard`; the same wrapper while `make_io` keeps its
    devices across configurations (the master closes the old only when they change)."""

    def make(config: SystemConfig, previous: PackIo | None) -> PackIo:
        inner = previous.io if isinstance(previous, GuardedIo) else previous
        io = make_io(config, inner)
        if isinstance(previous, GuardedIo) and io is inner:
            return previous
        return GuardedIo(io, guard)

    return make


# --- one hosted system --------------------------------------------------------------------------


class HostedMaster(MasterCore):
    """A `MasterCore` whose cycle failures stay its own (module docstring)."""

    def __init__(
        self,
        settings: MasterCoreSettings,
        bus: BusCore,
        store: Store,
        make_io: PackIoFactory,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        fail_safe_after_s: float = FAIL_SAFE_AFTER_S,
    ) -> None:
        self.fail_safe = FailSafe()
        self.fail_safe_after_s = fail_safe_after_s
        self.failing_since_s: float | None = None
        """When the current stretch of failing cycles began; None while cycles succeed."""
        self._failures = LimitedLog(log, every_s=FAILURE_LOG_EVERY_S, clock=monotonic)
        self._last_report_s: float | None = None
        super().__init__(
            settings,
            bus,
            store,
            guarded_factory(make_io, self.fail_safe),
            monotonic=monotonic,
            wall=wall,
        )

    def cycle(self) -> None:
        try:
            super().cycle()
        except Exception as exc:  # confined to this system: see the module docstring
            self._cycle_failed(exc)
            return
        if self.failing_since_s is not None:
            self.failing_since_s = None
            log.warning("system %s: cycles succeed again", self.bus.system)

    def _cycle_failed(self, exc: Exception) -> None:
        now = self.monotonic()
        # the failed cycle may not have got as far as taking the fresh samples: they are
        # dropped, or the loop would cycle again at once, without waiting, for ever
        self._fresh = False
        self._unjudged.clear()
        counters = self.bus.counters
        counters["cycle_errors"] += 1
        first = self.failing_since_s is None
        if self.failing_since_s is None:
            self.failing_since_s = now
        self._failures.log(
            logging.ERROR, "cycle", "system %s: cycle failed (%d so far):\n%s",
            self.bus.system, counters["cycle_errors"],
            "".join(traceback.format_exception(exc)).rstrip(),
        )  # fmt: skip
        last = self._last_report_s
        if first and (last is None or now - last >= FAILURE_LOG_EVERY_S):
            # once a stretch, and not more often than the log: a cycle failing every other
            # time must not flood the event log
            self._last_report_s = now
            self._report("warning", f"cycle failed: {exc!r}")
            self.bus.publish_status()  # the counters now, not at the next status period
        if not self.fail_safe.latched and now - self.failing_since_s >= self.fail_safe_after_s:
            self._open_coils(now)

    def _open_coils(self, now: float) -> None:
        """Protection has not judged for `fail_safe_after_s`: the coils go off, and stay off
        until the supervisor commands them off itself (`GuardedIo`)."""
        self.fail_safe.latched = True
        self.bus.counters["fail_safe"] += 1
        log.error(
            "system %s: no good cycle for %.1f s: contactor coils switched off",
            self.bus.system, now - (self.failing_since_s or now),
        )  # fmt: skip
        if self.rt is not None:
            try:
                io = self.rt.io  # past the guard: through it, "all off" would release it
                (io.io if isinstance(io, GuardedIo) else io).write_coils(ALL_OFF, now)
            except Exception:
                self.bus.counters["fail_safe_errors"] += 1
                self._failures.log(logging.ERROR, "coils", "system %s: coils not written",
                                   self.bus.system)  # fmt: skip
        self._report("fault", "no good cycle: contactor coils switched off (fail-safe)")
        self.bus.publish_status()

    def _report(self, level: EventLevel, text: str) -> None:
        """The event, when it can be made: the failure may be the event log's own."""
        try:
            self.events.emit(level, "info", "cycle_failed", text)
        except Exception:
            self.bus.counters["report_errors"] += 1


# --- the process --------------------------------------------------------------------------------


@dataclass
class HostedSystem:
    """One system of the process: its bus, store and master, and the thread running it."""

    system: str
    bus: BusCore
    store: Store
    master: HostedMaster
    thread: threading.Thread | None = None
    restarts: int = 0
    errors: LimitedLog = field(default_factory=lambda: LimitedLog(log, every_s=FAILURE_LOG_EVERY_S))


class MasterHost:
    """Runs every hosted system's loop in a thread of its own until stopped."""

    def __init__(self, systems: list[HostedSystem]) -> None:
        self.systems = systems
        self.stopping = threading.Event()

    def start(self) -> None:
        for s in self.systems:
            s.thread = threading.Thread(
                target=self._loop, args=(s,), name=f"master-{s.system}", daemon=True
            )
            s.thread.start()

    def _loop(self, s: HostedSystem) -> None:
        while not self.stopping.is_set():
            try:
                s.master.run(self.stopping.is_set)
                return
            except Exception:  # a bug outside the cycle: this system's loop starts again
                s.bus.counters["loop_errors"] += 1
                s.restarts += 1
                s.errors.log(logging.ERROR, "loop", "system %s: loop failed (%d so far):\n%s",
                             s.system, s.restarts, traceback.format_exc().rstrip())  # fmt: skip
                self.stopping.wait(LOOP_RESTART_S)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stops the loops, then saves and releases each system (the coils, the store)."""
        self.stopping.set()
        for s in self.systems:
            if s.thread is not None:
                s.thread.join(timeout_s)
        for s in self.systems:
            try:
                s.master.stop()
            except Exception:
                log.exception("system %s: stopping failed", s.system)


class SystemsCollector(Collector):
    """The bus counters of every hosted system, with a `system` label (one process, one port)."""

    def __init__(self, buses: list[BusCore]) -> None:
        self.buses = buses

    def collect(self) -> Iterable[Metric]:
        labels = ["system", "service", "kind"]
        snapshots = [(b, dict(b.counters)) for b in self.buses]
        for name, (keys, text) in BUS_COUNTERS.items():
            family = CounterMetricFamily(name, text, labels=labels)
            for bus, counters in snapshots:
                total = float(sum(counters.get(k, 0) for k in keys))
                family.add_metric([bus.system, bus.service, bus.kind], total)
            yield family
        every = CounterMetricFamily(
            "bms_service_counter",
            "Every health counter of each hosted system, by name (as in its retained status).",
            labels=[*labels, "counter"],
        )
        for bus, counters in snapshots:
            for key in sorted(counters):
                every.add_metric([bus.system, bus.service, bus.kind, key], float(counters[key]))
        yield every


def build_system(
    settings: MasterCoreSettings, make_io: Callable[[MasterCoreSettings, BusCore], PackIoFactory]
) -> HostedSystem:
    bus = MqttBus.from_settings(settings, kind=KIND)
    store = Store(Path(settings.data_dir) / f"master_core-{settings.system}.sqlite")
    master = HostedMaster(settings, bus, store, make_io(settings, bus))
    return HostedSystem(settings.system, bus, store, master)


def run_host(
    settings: MasterHostSettings,
    make_io: Callable[[MasterCoreSettings, BusCore], PackIoFactory],
) -> int:
    """Every system of `settings.systems` in this process, until SIGTERM or SIGINT."""
    systems = [build_system(settings.for_system(s), make_io) for s in settings.system_list()]
    host = MasterHost(systems)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(SystemsCollector([s.bus for s in systems]))
    registry.register(CYCLE_SECONDS)
    metrics = MetricsServer(registry, settings.metrics_host, settings.metrics_port)
    metrics.start()
    signal.signal(signal.SIGTERM, lambda *_: host.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: host.stopping.set())
    log.info("hosting %d systems: %s", len(systems), ", ".join(s.system for s in systems))
    for s in systems:
        assert isinstance(s.bus, MqttBus)
        s.bus.start()
    try:
        host.start()
        while not host.stopping.wait(0.5):
            pass
    finally:
        host.stop()
        metrics.stop()
        for s in systems:
            assert isinstance(s.bus, MqttBus)
            s.bus.stop()
            s.store.close()
    return 0
