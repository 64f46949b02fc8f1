"""The master on real devices: a `PackIo` from the configured drivers (`hardware=devices`).

- Current sensor (`current_sensor`): an Isabellenhütte IVT-S on a python-can bus
  (drivers/ivt_s_can.py). At start it is stopped, set to send current, U1 (battery side of the
  contactors) and U2 (DC link) cyclically every `cycle_time_ms` with the other results
  disabled, and run again; unacknowledged commands are sent again a few times.
- Contactors (`contactors.io`): a Modbus relay module (drivers/contactor_io.py), driven by a
  worker thread so a silent module (timeouts) never blocks the control cycle: `write_coils`
  hands over the commanded coils, the worker writes them at once when they change (and again
  every `COIL_REFRESH_S`, so a module that restarted gets them back) and polls the auxiliary
  contacts.
- Insulation monitor (`insulation_monitor`): a driver from `INSULATION_MONITORS`; `none` means
  no monitor is installed.

Truth (see hardware.py): a value is None while its device is stale, erroring or unopened;
`device_errors` names what is wrong now, per device. The IVT-S invalidates per result: an error
bit on U2 makes U2 None and lists `u2_v:channel_error`, the current stays valid (the over-current
detection bit is a condition, not an error: the value is real and protection needs it).

Threads: python-can's Notifier thread feeds the IVT-S driver (which locks), the relay worker
owns its Modbus client; `read`, `write_coils`, `apply` and `close` run on the master's thread.

`device_factory` builds a `PackIoFactory`: for a new configuration it reopens only the device
whose section changed and keeps the others, so a threshold change never drops a coil.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

import can

from services.master_core.contactors import CONTACTORS, ContactorFeedback, ContactorName
from services.master_core.drivers.contactor_io import ContactorIo, ModbusContactorIo
from services.master_core.drivers.ivt_s import (
    COMMAND_ID,
    SET_CONFIG_RESULT,
    SET_MODE,
    Quantity,
    TriggerMode,
)
from services.master_core.drivers.ivt_s_can import IvtSCanDriver
from services.master_core.hardware import (
    CONTACTOR_IO,
    CURRENT_SENSOR,
    INSULATION_MONITOR,
    CoilCommands,
    HardwareReading,
    PackIo,
    PackIoFactory,
)
from shared.can_bus import ClearLineAfterError, open_can
from shared.config import ContactorIoConfig, CurrentSensorConfig, SystemConfig
from shared.config.devices import DeviceCanConfig
from shared.log_limit import LimitedLog

log = logging.getLogger(__name__)

Clock = Callable[[], float]
OpenCan = Callable[[DeviceCanConfig], can.BusABC]
OpenRelay = Callable[[ContactorIoConfig], ContactorIo]

CYCLIC: Final = (Quantity.CURRENT_A, Quantity.U1_V, Quantity.U2_V)
"""What the master reads from the IVT-S; the other results are disabled (bus load)."""
CONFIG_RETRY_S: Final = 1.0
"""An unacknowledged IVT-S configuration is sent again after this long ..."""
CONFIG_ATTEMPTS: Final = 3
"""... at most this many times in all (then logged; freshness still says whether values flow)."""
RELEASE_ATTEMPTS: Final = 3
"""Writes of every coil off when the master stops, while the module reports errors."""
REOPEN_S: Final = 5.0
"""A CAN bus that failed to open is tried again this often."""
COIL_REFRESH_S: Final = 1.0
"""The commanded coils are written again this often even when they did not change."""
ALL_OFF: Final[dict[ContactorName, bool]] = dict.fromkeys(CONTACTORS, False)
RELAY_WIRING: Final = frozenset(ContactorIoConfig.model_fields) - {"poll_period_s", "timeout_s"}
"""`contactors.io` fields that move the coils elsewhere: the old outputs are switched off first.
A change of timing alone reopens the same outputs and keeps them as they are."""


def open_can_bus(config: DeviceCanConfig) -> can.BusABC:
    """The python-can bus of a device section (`shared.can_bus.open_can`)."""
    return open_can(config.interface, config.channel, config.bitrate)


@dataclass
class _SharedBus:
    bus: can.BusABC
    notifier: can.Notifier
    bitrate: int
    listeners: list[can.Listener]


class CanBuses:
    """One python-can bus and one Notifier per CAN channel, shared by the devices on it: a
    serial adapter (slcan) cannot be opened twice, and two readers of one bus would split its
    frames between them. Used from the master's thread only; the Notifier thread calls the
    listeners, which lock their own state."""

    def __init__(self, open_can: OpenCan) -> None:
        self._open_can = open_can
        self._buses: dict[tuple[str, str], _SharedBus] = {}
        self.opened = 0
        """Buses opened since start (for tests and logs)."""

    @staticmethod
    def _key(config: DeviceCanConfig) -> tuple[str, str]:
        return (config.interface, config.channel)

    def bus(self, config: DeviceCanConfig) -> can.BusABC:
        """The channel's bus, opened now if no device uses it yet (python-can errors pass)."""
        shared = self._buses.get(self._key(config))
        if shared is None:
            bus = self._open_can(config)
            self.opened += 1
            shared = _SharedBus(
                bus, can.Notifier(bus, [ClearLineAfterError(bus)], timeout=0.1), config.bitrate, []
            )
            self._buses[self._key(config)] = shared
        elif shared.bitrate != config.bitrate:  # refused by the configuration's validation
            raise ValueError(
                f"CAN {config.interface} {config.channel} is open at {shared.bitrate} bit/s, "
                f"not {config.bitrate}"
            )
        return shared.bus

    def listen(self, config: DeviceCanConfig, listener: can.Listener) -> None:
        """Feed `listener` from the channel's Notifier (after `bus`)."""
        shared = self._buses[self._key(config)]
        shared.listeners.append(listener)
        shared.notifier.add_listener(listener)

    def release(self, config: DeviceCanConfig, listener: can.Listener | None) -> None:
        """`listener` stops listening; the last device on a channel closes its bus."""
        shared = self._buses.get(self._key(config))
        if shared is None:
            return
        if listener is not None and listener in shared.listeners:
            shared.listeners.remove(listener)
            shared.notifier.remove_listener(listener)
        if not shared.listeners:
            shared.notifier.stop()
            shared.bus.shutdown()
            del self._buses[self._key(config)]


# --- current sensor --------------------------------------------------------------------------


@dataclass(frozen=True)
class CurrentSample:
    current_a: float | None
    u1_v: float | None
    u2_v: float | None
    errors: tuple[str, ...]


def ivt_s_cycles(cycle_time_ms: int) -> list[tuple[Quantity, TriggerMode, int]]:
    """SET_CONFIG_RESULT for every result: the master's three cyclic, the rest disabled."""
    return [
        (q, TriggerMode.CYCLIC, cycle_time_ms) if q in CYCLIC else (q, TriggerMode.DISABLED, 0)
        for q in Quantity
    ]


def sensor_errors(errors: tuple[str, ...]) -> tuple[str, ...]:
    """The IVT-S conditions that are errors of the master's quantities (not OCS)."""
    names = {q.name.lower() for q in CYCLIC}
    return tuple(
        e
        for e in errors
        if e.split(":", 1)[0] in names and not e.endswith(":over_current_detected")
    )


class IvtSCurrentSensor:
    """The IVT-S of `current_sensor`: opened, configured, read; reopened after a failed open."""

    def __init__(self, config: CurrentSensorConfig, buses: CanBuses, clock: Clock) -> None:
        self.config = config
        self._buses = buses
        self._clock = clock
        self.driver: IvtSCanDriver | None = None
        self._open_error = ""
        self._opened_at_s: float | None = None
        self._attempts = 0
        self._sent_at_s: float | None = None
        self._acks_before: dict[int, int] = {}
        self.configured = False
        self.send_errors = 0
        self._log = LimitedLog(log)
        self._open(clock())

    def _open(self, now_s: float) -> None:
        self._opened_at_s = now_s
        c = self.config.can
        try:
            bus = self._buses.bus(c)
        except Exception as exc:  # python-can raises many kinds (CanError, OSError, ImportError)
            self._open_error = f"cannot open CAN {c.interface}:{c.channel}: {exc}"
            self._log.warning("open", "current sensor: %s; retrying every %g s", exc, REOPEN_S)
            return
        self._open_error = ""
        self.driver = IvtSCanDriver(
            bus, c.stale_after_s, self._clock, expected=CYCLIC, own_notifier=False
        )
        self._buses.listen(c, self.driver)
        self._configure(now_s)

    def _commands(self) -> list[int]:
        return [SET_MODE, *(SET_CONFIG_RESULT + q.value for q in Quantity)]

    def _configure(self, now_s: float) -> None:
        assert self.driver is not None
        self._attempts += 1
        self._sent_at_s = now_s
        self._acks_before = {c: self.driver.acknowledged(c) for c in self._commands()}
        try:
            self.driver.configure(ivt_s_cycles(self.config.cycle_time_ms))
        except can.CanError as exc:
            self.send_errors += 1
            self._log.warning("send", "current sensor: configuration not sent: %s", exc)

    def _pending(self) -> list[int]:
        """Commands of the last configuration not acknowledged yet (stop and run: 2 SET_MODE)."""
        assert self.driver is not None
        want = {c: 1 for c in self._commands()} | {SET_MODE: 2}
        return [
            c for c in self._commands()
            if self.driver.acknowledged(c) - self._acks_before[c] < want[c]
        ]  # fmt: skip

    def _check_configuration(self, now_s: float) -> None:
        if self.configured or self._sent_at_s is None:
            return
        pending = self._pending()
        if not pending:
            self.configured = True
            log.info("current sensor: IVT-S configured (%d ms cycle)", self.config.cycle_time_ms)
        elif now_s - self._sent_at_s >= CONFIG_RETRY_S:
            if self._attempts < CONFIG_ATTEMPTS:
                self._configure(now_s)
            else:
                self._sent_at_s = None  # give up; the values' freshness tells the rest
                self._log.warning(
                    "ack",
                    "current sensor: commands %s to 0x%X not acknowledged after %d attempts",
                    ", ".join(f"0x{c:02X}" for c in pending),
                    COMMAND_ID,
                    self._attempts,
                )

    def sample(self, now_s: float) -> CurrentSample:
        if self.driver is None:
            if self._opened_at_s is None or now_s - self._opened_at_s >= REOPEN_S:
                self._open(now_s)
            if self.driver is None:
                return CurrentSample(None, None, None, (self._open_error,))
        self._check_configuration(now_s)
        r = self.driver.reading(now_s)
        return CurrentSample(r.current_a, r.u1_v, r.u2_v, sensor_errors(r.errors))

    def close(self) -> None:
        if self.driver is not None:
            self._buses.release(self.config.can, self.driver)


# --- contactor I/O ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Coils:
    """Coil commands as a plain mapping (`CoilCommands`)."""

    on: Mapping[ContactorName, bool]

    def commanded(self, name: ContactorName) -> bool:
        return self.on[name]


@dataclass(frozen=True)
class RelaySample:
    feedback: ContactorFeedback | None
    """None when any contact is unknown."""
    errors: tuple[str, ...]


def relay_sample(
    contacts: ContactorFeedback | None,
    sampled_at_s: float | None,
    errors: tuple[str, ...],
    now_s: float,
    max_age_s: float,
) -> RelaySample:
    """The worker's last turn as the master sees it at `now_s`: the contacts while at most
    `max_age_s` old, else None with a reason first (never the last value)."""
    if sampled_at_s is None:
        return RelaySample(None, errors or ("no feedback read yet",))
    # A sample stamped after the caller took `now_s` is a race between threads, not a clock
    # step: small negative ages are fresh.
    age_s = now_s - sampled_at_s
    if not -max_age_s <= age_s <= max_age_s:
        stale = f"feedback {age_s:.3f} s old (fresh for {max_age_s:g} s)"
        return RelaySample(None, (stale, *errors))
    if contacts is None:
        return RelaySample(None, errors or ("feedback unknown",))
    return RelaySample(contacts, errors)


class RelayWorker:
    """Owns one `ContactorIo` in a thread: writes the commanded coils, polls the contacts."""

    def __init__(
        self,
        io: ContactorIo,
        config: ContactorIoConfig,
        clock: Clock,
        coils: Mapping[ContactorName, bool] | None = None,
    ) -> None:
        self.io = io
        self.config = config
        self._clock = clock
        # One turn of the worker: a write pass (one transaction per coil and a read-back), a
        # poll and the wait; a healthy but slow link must not look stale. A silent module is
        # caught sooner: its first transaction fails and the contacts become unknown.
        self._max_age_s = config.poll_period_s + (len(CONTACTORS) + 2) * config.timeout_s
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._wanted: dict[ContactorName, bool] | None = dict(coils) if coils else None
        self._contacts: ContactorFeedback | None = None
        self._sampled_at_s: float | None = None
        self._errors: tuple[str, ...] = ()
        self._log = LimitedLog(log)
        self.loops = 0
        self._thread = threading.Thread(target=self._run, name="contactor-io", daemon=True)
        self._thread.start()

    @property
    def wanted(self) -> dict[ContactorName, bool] | None:
        with self._lock:
            return None if self._wanted is None else dict(self._wanted)

    def command(self, coils: Mapping[ContactorName, bool]) -> None:
        with self._lock:
            changed = self._wanted != coils
            self._wanted = dict(coils)
        if changed:
            self._wake.set()

    def _run(self) -> None:
        written: dict[ContactorName, bool] | None = None
        written_at_s = 0.0
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                now = self._clock()
                wanted = self.wanted
                errors: list[str] = []
                if wanted is not None and (
                    wanted != written or now - written_at_s >= COIL_REFRESH_S
                ):
                    self.io.write(_Coils(wanted))
                    written, written_at_s = wanted, now
                # The driver polls when its period is due, else returns its sample of at most
                # one period ago (after a wake-up for new coils): stamped with this turn.
                now = self._clock()
                fb = self.io.read(now)
                errors.extend(fb.errors)
                if errors:
                    written = None  # write again next turn: a failed write must not stand
                    self._log.warning("io", "contactor I/O: %s", "; ".join(errors))
                with self._lock:
                    self._contacts = fb.to_feedback()
                    self._sampled_at_s = now
                    self._errors = tuple(errors)
                    self.loops += 1
            except Exception as exc:  # the worker must outlive any driver surprise
                self._log.warning("crash", "contactor I/O worker: %r", exc)
                with self._lock:
                    self._contacts = None
                    self._errors = (f"contactor I/O worker: {exc!r}",)
            self._wake.wait(self.config.poll_period_s)

    def sample(self, now_s: float) -> RelaySample:
        """The contacts of the last poll while fresh; errors of the last turn of the worker."""
        with self._lock:
            contacts, at_s, errors = self._contacts, self._sampled_at_s, self._errors
        return relay_sample(contacts, at_s, errors, now_s, self._max_age_s)

    def stop(self, *, release: bool) -> None:
        """End the thread; `release` switches every coil off first (the outputs move)."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=5.0 + 4 * self.config.timeout_s)
        if release:
            self._release()
        self.io.close()

    def _release(self) -> None:
        """Every coil off, tried again while the module reports an error: nobody supervises
        the pack after this (a slow serial line once missed the one write that was made)."""
        errors: tuple[str, ...] = ()
        for attempt in range(1, RELEASE_ATTEMPTS + 1):
            try:
                self.io.write(_Coils(ALL_OFF))
                errors = self.io.read(self._clock()).errors
            except Exception as exc:  # the last word must not be lost to a driver surprise
                errors = (repr(exc),)
            if not errors:
                return
            log.warning("contactor I/O: release attempt %d of %d failed: %s",
                        attempt, RELEASE_ATTEMPTS, "; ".join(errors))  # fmt: skip
        log.error("contactor I/O: the coils may still be on: %s", "; ".join(errors))


# --- insulation monitor ----------------------------------------------------------------------


@dataclass(frozen=True)
class InsulationSample:
    resistance_ohm: float | None
    """None while the monitor is stale, measuring its first value or in error."""
    errors: tuple[str, ...]


class InsulationSource(Protocol):
    """What the master reads from an insulation monitor driver (an adapter per driver)."""

    def sample(self, now_s: float) -> InsulationSample: ...

    def close(self) -> None: ...


OpenInsulation = Callable[[SystemConfig, CanBuses, Clock], "InsulationSource | None"]
"""Opens the monitor of `insulation_monitor` (the whole configuration: the device may also
take the protection thresholds)."""


def _no_monitor(config: SystemConfig, buses: CanBuses, clock: Clock) -> None:
    return None


def _iso165c(config: SystemConfig, buses: CanBuses, clock: Clock) -> InsulationSource:
    from services.master_core.insulation_sources import Iso165cInsulation

    return Iso165cInsulation(config, buses, clock)


INSULATION_MONITORS: dict[str, OpenInsulation] = {"none": _no_monitor, "iso165c": _iso165c}
"""`insulation_monitor.driver` -> how to open it (None: nothing installed). A new driver adds
an entry and its name to `InsulationMonitorDriver` (shared/config/devices.py). Its builder takes
`bus = buses.bus(config.can)` (shared with the current sensor when on the same channel),
builds its driver without a Notifier of its own, `buses.listen(config.can, driver)`, and wraps
it in an `InsulationSource` whose `close` calls `buses.release(config.can, driver)`; values
older than `config.can.stale_after_s` are None. A bus that fails to open must become an error
of `sample`, not an exception."""


# --- the PackIo ------------------------------------------------------------------------------


def current_section(c: SystemConfig) -> tuple[object, ...]:
    """What the current sensor is opened with (not its calibration: the master applies it)."""
    s = c.current_sensor
    return (s.driver, s.can, s.cycle_time_ms)


def insulation_section(c: SystemConfig) -> tuple[object, ...]:
    """What the insulation monitor is opened with: the device takes the thresholds too."""
    p = c.protection
    return (c.insulation_monitor, p.insulation_fault_ohm, p.insulation_warning_ohm)


class DevicePackIo:
    """`PackIo` over the configured devices; see the module docstring."""

    def __init__(
        self,
        config: SystemConfig,
        *,
        open_can: OpenCan = open_can_bus,
        open_relay: OpenRelay = ModbusContactorIo,
        clock: Clock = time.monotonic,
        insulation_monitors: Mapping[str, OpenInsulation] = INSULATION_MONITORS,
    ) -> None:
        self.buses = CanBuses(open_can)
        self._open_relay = open_relay
        self._clock = clock
        self._monitors = insulation_monitors
        self.config = config
        self.sensor = IvtSCurrentSensor(config.current_sensor, self.buses, clock)
        self.relay = RelayWorker(open_relay(config.contactors.io), config.contactors.io, clock)
        self.insulation = self._open_insulation(config)
        self.reopened: list[str] = []
        """Devices reopened by `apply`, in order (for logs and tests)."""

    def _open_insulation(self, config: SystemConfig) -> InsulationSource | None:
        return self._monitors[config.insulation_monitor.driver](config, self.buses, self._clock)

    def apply(self, config: SystemConfig) -> None:
        """Reopen only the devices whose section changed; the others keep running. The CAN
        devices are all closed before any reopens (a shared channel may change its rate)."""
        old, self.config = self.config, config
        sensor = current_section(old) != current_section(config)
        monitor = insulation_section(old) != insulation_section(config)
        if sensor:
            self.sensor.close()
        if monitor and self.insulation is not None:
            self.insulation.close()
        if sensor:
            self.sensor = IvtSCurrentSensor(config.current_sensor, self.buses, self._clock)
            self.reopened.append(CURRENT_SENSOR)
        if monitor:
            self.insulation = self._open_insulation(config)
            self.reopened.append(INSULATION_MONITOR)
        if old.contactors.io != config.contactors.io:
            moved = any(
                getattr(old.contactors.io, f) != getattr(config.contactors.io, f)
                for f in RELAY_WIRING
            )
            coils = self.relay.wanted
            self.relay.stop(release=moved)
            io = self._open_relay(config.contactors.io)
            self.relay = RelayWorker(io, config.contactors.io, self._clock, coils)
            self.reopened.append(CONTACTOR_IO)

    @property
    def has_insulation_monitor(self) -> bool:
        return self.insulation is not None

    def read(self, now_s: float) -> HardwareReading:
        current = self.sensor.sample(now_s)
        relay = self.relay.sample(now_s)
        errors: dict[str, tuple[str, ...]] = {}
        if current.errors:
            errors[CURRENT_SENSOR] = current.errors
        if relay.errors:
            errors[CONTACTOR_IO] = relay.errors
        insulation_ohm: float | None = None
        if self.insulation is not None:
            iso = self.insulation.sample(now_s)
            insulation_ohm = iso.resistance_ohm
            if iso.errors:
                errors[INSULATION_MONITOR] = iso.errors
        return HardwareReading(
            current_a=current.current_a,
            pack_voltage_v=current.u1_v,
            link_voltage_v=current.u2_v,
            feedback=relay.feedback,
            insulation_ohm=insulation_ohm,
            insulation_monitor=self.insulation is not None,
            device_errors=errors,
        )

    def write_coils(self, coils: CoilCommands, now_s: float) -> None:
        self.relay.command({name: bool(coils.commanded(name)) for name in CONTACTORS})

    def close(self) -> None:
        """Stop every device; the coils are switched off (nobody supervises the pack after)."""
        self.relay.stop(release=True)
        self.sensor.close()
        if self.insulation is not None:
            self.insulation.close()


def device_factory(
    *,
    open_can: OpenCan = open_can_bus,
    open_relay: OpenRelay = ModbusContactorIo,
    clock: Clock = time.monotonic,
    insulation_monitors: Mapping[str, OpenInsulation] = INSULATION_MONITORS,
) -> PackIoFactory:
    """A `PackIoFactory` over real devices: the previous `DevicePackIo` is kept and only the
    devices whose configuration section changed are reopened."""

    def make(config: SystemConfig, previous: PackIo | None) -> PackIo:
        if isinstance(previous, DevicePackIo):
            previous.apply(config)
            return previous
        return DevicePackIo(
            config,
            open_can=open_can,
            open_relay=open_relay,
            clock=clock,
            insulation_monitors=insulation_monitors,
        )

    return make
