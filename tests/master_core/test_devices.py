"""The master on devices: `DevicePackIo` against the simulated IVT-S on python-can (virtual and
udp_multicast) and the simulated relay module over Modbus TCP and RTU (socat pty), the device
factory across configuration changes, and a `MasterCore` closing its contactors through them."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import can
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.master_core.contactors import ContactorFeedback, ContactorOutputs
from services.master_core.devices import (
    CONFIG_ATTEMPTS,
    CONFIG_RETRY_S,
    CYCLIC,
    RELEASE_ATTEMPTS,
    CanBuses,
    DevicePackIo,
    InsulationSample,
    RelayWorker,
    device_factory,
    ivt_s_cycles,
    relay_sample,
    sensor_errors,
)
from services.master_core.drivers.contactor_io import CONTACTORS, ContactorIoFeedback
from services.master_core.drivers.ivt_s import COMMAND_ID, Quantity, TriggerMode
from services.master_core.hardware import (
    CONTACTOR_IO,
    CURRENT_SENSOR,
    INSULATION_MONITOR,
    HardwareReading,
)
from services.master_core.service import MasterCore
from services.master_core.settings import MasterCoreSettings
from services.master_core.stores import Store
from services.plant.devices.ivt_s import SimulatedIvtS, send
from services.plant.devices.relay import RelayModule
from shared.bus import InMemoryBroker, InMemoryBus
from shared.config import CurrentSensorConfig, SystemConfig
from shared.config.devices import bit_rate_conflicts
from shared.config.errors import explain_errors
from shared.messages import CellTelemetry, ConfigMessage, PackState
from shared.ports import free_port
from shared.topics import CONFIG, PACK_STATE, SLAVE_TELEMETRY
from tests.slave_agent.test_modbus_driver import SOCAT, SocatLink

CYCLE_MS = 10
BAUD = 115200
MCAST_GROUP = "239.74.163.2"
"""Only for the multicast probe; each test's rig takes a group of its own."""
_groups = itertools.count(os.getpid())
_channels = itertools.count()


def wait_for(what: str, check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.01)


class IvtSRunner:
    """The simulated IVT-S on its own bus and thread: answers commands, sends each cycle.

    `update(sim)` runs before each cycle (a physics stub); `silent` stops the results."""

    def __init__(
        self, bus: can.BusABC, *, update: Callable[[SimulatedIvtS], None] | None = None
    ) -> None:
        self.bus = bus
        self.sim = SimulatedIvtS()
        self.update = update
        self.silent = False
        self.answer = True
        self.commands = 0
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ivt-s-sim", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_s = time.monotonic()
        while not self._stop.is_set():
            msg = self.bus.recv(timeout=max(next_s - time.monotonic(), 0.0))
            if msg is not None and msg.arbitration_id == COMMAND_ID:
                with self.lock:
                    response = self.sim.command(bytes(msg.data))
                    self.commands += 1
                if response is not None and self.answer:
                    send(self.bus, [response])
                continue
            if time.monotonic() >= next_s:
                next_s += CYCLE_MS / 1000.0
                with self.lock:
                    if self.update is not None:
                        self.update(self.sim)
                    frames = [] if self.silent else self.sim.round()
                send(self.bus, frames)

    def set(self, **values: float) -> None:
        with self.lock:
            for name, value in values.items():
                self.sim.values[Quantity[name.upper()]] = value

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.bus.shutdown()


def multicast_works() -> bool:
    try:
        a = can.Bus(interface="udp_multicast", channel=MCAST_GROUP)
        b = can.Bus(interface="udp_multicast", channel=MCAST_GROUP)
    except OSError:
        return False
    try:
        a.send(can.Message(arbitration_id=1, data=b"x", is_extended_id=False))
        return b.recv(timeout=1.0) is not None
    finally:
        a.shutdown()
        b.shutdown()


@dataclass
class Rig:
    config: SystemConfig
    relay: RelayModule
    ivt: IvtSRunner
    ios: list[DevicePackIo]

    def make(self, config: SystemConfig | None = None, **kw: Any) -> DevicePackIo:
        io = DevicePackIo(config or self.config, **kw)
        self.ios.append(io)
        return io


def system_config(
    can_interface: str, channel: str, io: dict[str, object], system_id: str = "demo"
) -> SystemConfig:
    base = SystemConfig.from_preset("NMC", system_id=system_id, modules=2, cells_per_module=4)
    data = base.model_dump(mode="json")
    data["current_sensor"] |= {
        "can": {"interface": can_interface, "channel": channel, "stale_after_s": 0.3},
        "cycle_time_ms": CYCLE_MS,
    }
    data["contactors"]["io"] = io | {"poll_period_s": 0.02, "timeout_s": 0.1}
    return SystemConfig.model_validate(data)


def changed(config: SystemConfig, path: str, value: object) -> SystemConfig:
    data = config.model_dump(mode="json")
    node = data
    *parents, leaf = path.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    return SystemConfig.model_validate(data)


@pytest.fixture(params=["virtual/tcp", "udp_multicast/tcp", "virtual/rtu"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    can_interface, transport = request.param.split("/")
    if can_interface == "udp_multicast":
        if not multicast_works():
            pytest.skip("no multicast route (ip link set lo multicast on; ip route add ...)")
        # a group per test: a frame of an earlier test's bus (or another run on this host)
        # must never count here (an extra configuration round was seen under load)
        channel = f"239.74.164.{next(_groups) % 250 + 1}"
    else:
        channel = f"devices-{next(_channels)}"
    relay = RelayModule(follow_delay_s=0.01)
    link: SocatLink | None = None
    if transport == "tcp":
        port = free_port()
        relay.start_tcp(port)
        io: dict[str, object] = {"transport": "tcp", "tcp_port": port}
    else:
        if SOCAT is None:
            relay.stop()
            pytest.skip("socat is needed for a pty pair")
        link = SocatLink(tmp_path)
        link.start()
        relay.start_rtu(link.board, BAUD)
        io = {"transport": "rtu", "serial_port": link.agent, "baudrate": BAUD, "parity": "N"}
    ivt = IvtSRunner(can.Bus(interface=can_interface, channel=channel))
    r = Rig(system_config(can_interface, channel, io), relay, ivt, [])
    try:
        yield r
    finally:
        for pack_io in r.ios:
            pack_io.close()
        ivt.stop()
        relay.stop()
        if link is not None:
            link.stop()


def outputs(positive: bool, negative: bool, precharge: bool) -> ContactorOutputs:
    return ContactorOutputs(positive, negative, precharge, state="precharge", reason="test")


def read_until(
    io: DevicePackIo, check: Callable[[HardwareReading], bool], timeout_s: float = 5.0
) -> HardwareReading:
    deadline = time.monotonic() + timeout_s
    while True:
        reading = io.read(time.monotonic())
        if check(reading):
            return reading
        if time.monotonic() > deadline:
            raise AssertionError(f"no such reading within {timeout_s} s; last: {reading}")
        time.sleep(0.01)


# --- pure parts ------------------------------------------------------------------------------


def test_the_sensor_is_set_to_send_what_the_master_reads_and_nothing_else() -> None:
    cycles = {q: (mode, ms) for q, mode, ms in ivt_s_cycles(25)}
    assert set(cycles) == set(Quantity)
    assert {q for q, (mode, _) in cycles.items() if mode is TriggerMode.CYCLIC} == set(CYCLIC)
    assert all(cycles[q] == (TriggerMode.CYCLIC, 25) for q in CYCLIC)


def test_over_current_detection_and_unused_results_are_not_sensor_errors() -> None:
    errors = (
        "current_a:over_current_detected",
        "u2_v:channel_error",
        "u3_v:measurement_error",
        "current_a:stale",
    )
    assert sensor_errors(errors) == ("u2_v:channel_error", "current_a:stale")


@given(
    contacts=st.none() | st.tuples(st.booleans(), st.booleans(), st.booleans()),
    sampled_at_s=st.none() | st.floats(0.0, 1e6),
    age_s=st.floats(-10.0, 10.0),
    max_age_s=st.floats(0.001, 5.0),
    errors=st.lists(st.text(min_size=1, max_size=5), max_size=2).map(tuple),
)
def test_relay_feedback_is_the_last_sample_while_fresh_and_unknown_with_a_reason_after(
    contacts: tuple[bool, bool, bool] | None,
    sampled_at_s: float | None,
    age_s: float,
    max_age_s: float,
    errors: tuple[str, ...],
) -> None:
    feedback = None if contacts is None else ContactorFeedback(*contacts)
    now_s = (sampled_at_s or 0.0) + age_s
    got = relay_sample(feedback, sampled_at_s, errors, now_s, max_age_s)
    fresh = sampled_at_s is not None and abs(now_s - sampled_at_s) <= max_age_s
    assert got.feedback == (feedback if fresh else None)
    if got.feedback is None:
        assert got.errors, "unknown feedback always says why"
    assert set(errors) <= set(got.errors)


def test_a_freshness_window_shorter_than_three_cycles_is_refused_readably() -> None:
    with pytest.raises(ValidationError) as info:
        CurrentSensorConfig.model_validate({"cycle_time_ms": 100, "can": {"stale_after_s": 0.2}})
    (line,) = explain_errors(info.value)
    assert "stale_after_s: 0.2 s is shorter than 3 cycles" in line
    assert "at least 0.3 s" in line


def test_defaults_keep_existing_configurations_valid() -> None:
    base = SystemConfig.from_preset("NMC", system_id="demo", modules=2, cells_per_module=4)
    data = base.model_dump(mode="json")
    for key in ("insulation_monitor",):
        del data[key]
    for key in ("driver", "can", "cycle_time_ms"):
        del data["current_sensor"][key]
    assert SystemConfig.model_validate(data) == base
    assert base.insulation_monitor.driver == "none"


# --- on the wire -----------------------------------------------------------------------------


def test_fresh_readings_after_configuring_the_sensor(rig: Rig) -> None:
    rig.ivt.set(current_a=-12.5, u1_v=29.6, u2_v=28.9)
    io = rig.make()
    # each result comes in its own frame: wait for the three, not the first of them
    reading = read_until(
        io,
        lambda r: None not in (r.current_a, r.pack_voltage_v, r.link_voltage_v, r.feedback),
    )
    assert reading.current_a == pytest.approx(-12.5, abs=1e-3)
    assert reading.pack_voltage_v == pytest.approx(29.6, abs=1e-3)
    assert reading.link_voltage_v == pytest.approx(28.9, abs=1e-3)
    assert reading.feedback == ContactorFeedback(False, False, False)
    assert reading.device_errors == {}
    assert reading.insulation_monitor is False and reading.insulation_ohm is None
    wait_for("configuration acknowledged", lambda: io.sensor.configured)
    with rig.ivt.lock:
        assert {q for q, m in rig.ivt.sim.trigger.items() if m is TriggerMode.CYCLIC} == set(CYCLIC)
        assert all(rig.ivt.sim.cycle_ms[q] == CYCLE_MS for q in CYCLIC)
        assert rig.ivt.sim.running


def test_an_unacknowledged_configuration_is_sent_again_a_few_times(rig: Rig) -> None:
    rig.ivt.answer = False
    rig.ivt.set(current_a=2.0, u1_v=29.6, u2_v=29.6)
    io = rig.make()
    per_attempt = 2 + len(Quantity)  # stop, one SET_CONFIG_RESULT per result, run
    deadline = time.monotonic() + CONFIG_RETRY_S * (CONFIG_ATTEMPTS + 2)
    while time.monotonic() < deadline:
        reading = io.read(time.monotonic())
        time.sleep(0.02)
    assert rig.ivt.commands == per_attempt * CONFIG_ATTEMPTS
    assert not io.sensor.configured
    assert reading.current_a == pytest.approx(2.0, abs=1e-3)  # values flow: no device error
    assert CURRENT_SENSOR not in reading.device_errors


def test_a_silent_sensor_reads_none_and_says_stale(rig: Rig) -> None:
    rig.ivt.set(current_a=3.0, u1_v=29.6, u2_v=29.6)
    io = rig.make()
    read_until(io, lambda r: r.current_a is not None)
    rig.ivt.silent = True
    # each result goes stale on its own, a stale time after its own last frame
    read_until(
        io, lambda r: r.current_a is None and r.pack_voltage_v is None and r.link_voltage_v is None
    )
    wait_for("stale named", lambda: "current_a:stale" in io.read(time.monotonic()).device_errors[
        CURRENT_SENSOR
    ])  # fmt: skip
    rig.ivt.silent = False
    # each result in its own frame: all three back before the sensor may read healthy
    back = read_until(io, lambda r: None not in (r.current_a, r.pack_voltage_v, r.link_voltage_v))
    assert back.current_a == pytest.approx(3.0, abs=1e-3)
    assert CURRENT_SENSOR not in back.device_errors


def test_error_bits_invalidate_their_value_only_and_ocs_is_no_error(rig: Rig) -> None:
    rig.ivt.set(current_a=150.0, u1_v=29.6, u2_v=10.0)
    io = rig.make()
    read_until(io, lambda r: r.link_voltage_v is not None)
    with rig.ivt.lock:
        rig.ivt.sim.state_bits[Quantity.U2_V] = {"ChannelError"}
        rig.ivt.sim.state_bits[Quantity.CURRENT_A] = {"OverCurrentDetected"}
    reading = read_until(io, lambda r: r.link_voltage_v is None)
    assert reading.device_errors[CURRENT_SENSOR] == ("u2_v:channel_error",)
    assert reading.current_a == pytest.approx(150.0, abs=1e-3)
    with rig.ivt.lock:
        rig.ivt.sim.state_bits[Quantity.CURRENT_A] = {"SystemError"}
    reading = read_until(io, lambda r: r.current_a is None)
    assert "current_a:system_error" in reading.device_errors[CURRENT_SENSOR]


def test_coils_are_written_and_the_contacts_follow(rig: Rig) -> None:
    io = rig.make()
    read_until(io, lambda r: r.feedback is not None)
    io.write_coils(outputs(True, False, True), time.monotonic())
    wait_for("coils set", lambda: rig.relay.coils()[:3] == [True, False, True])
    reading = read_until(io, lambda r: r.feedback == ContactorFeedback(True, False, True))
    assert CONTACTOR_IO not in reading.device_errors
    io.write_coils(outputs(False, False, False), time.monotonic())
    read_until(io, lambda r: r.feedback == ContactorFeedback(False, False, False))


def test_a_silent_relay_module_gives_unknown_feedback_and_an_error(rig: Rig) -> None:
    io = rig.make()
    read_until(io, lambda r: r.feedback is not None)
    rig.relay.silent = True
    reading = read_until(io, lambda r: r.feedback is None and CONTACTOR_IO in r.device_errors)
    assert reading.current_a is not None or reading.device_errors.get(CURRENT_SENSOR)
    rig.relay.silent = False
    read_until(io, lambda r: r.feedback is not None and CONTACTOR_IO not in r.device_errors)


def test_a_bus_that_cannot_open_is_an_error_not_a_crash(rig: Rig) -> None:
    def broken(_: object) -> can.BusABC:
        raise can.CanInterfaceNotImplementedError("no such adapter")

    io = rig.make(open_can=broken)
    reading = io.read(time.monotonic())
    assert reading.current_a is None and reading.pack_voltage_v is None
    assert "no such adapter" in reading.device_errors[CURRENT_SENSOR][0]


@dataclass
class FakeMonitor:
    """Stands in for an insulation monitor driver in the registry slot."""

    config: SystemConfig
    resistance_ohm: float | None = 2.0e6
    errors: tuple[str, ...] = ()
    closed: bool = False

    def sample(self, now_s: float) -> InsulationSample:
        return InsulationSample(self.resistance_ohm, self.errors)

    def close(self) -> None:
        self.closed = True


def test_the_insulation_slot_feeds_the_reading(rig: Rig) -> None:
    opened: list[FakeMonitor] = []

    def open_fake(config: SystemConfig, buses: CanBuses, clock: object) -> FakeMonitor:
        opened.append(FakeMonitor(config))
        return opened[-1]

    make = device_factory(insulation_monitors={"none": open_fake})
    io = make(rig.config, None)
    assert isinstance(io, DevicePackIo)
    rig.ios.append(io)
    reading = io.read(time.monotonic())
    assert reading.insulation_monitor and reading.insulation_ohm == 2.0e6
    assert INSULATION_MONITOR not in reading.device_errors
    opened[0].resistance_ohm, opened[0].errors = None, ("stale",)
    reading = io.read(time.monotonic())
    assert reading.insulation_ohm is None
    assert reading.device_errors[INSULATION_MONITOR] == ("stale",)
    sensor, relay = io.sensor, io.relay
    make(changed(rig.config, "insulation_monitor.can.stale_after_s", 3.0), io)
    assert opened[0].closed and len(opened) == 2
    assert opened[1].config.insulation_monitor.can.stale_after_s == 3.0
    assert (io.sensor, io.relay, io.reopened) == (sensor, relay, [INSULATION_MONITOR])


class Counting(can.Listener):
    def __init__(self) -> None:
        self.frames = 0

    def on_message_received(self, msg: can.Message) -> None:
        self.frames += 1


def test_devices_on_one_channel_share_one_bus_and_its_notifier(rig: Rig) -> None:
    rig.ivt.set(current_a=1.0, u1_v=29.6, u2_v=29.6)
    io = rig.make()
    read_until(io, lambda r: r.current_a is not None)
    other = Counting()
    can_config = rig.config.current_sensor.can
    assert io.buses.bus(can_config) is io.sensor.driver.bus  # type: ignore[union-attr]
    io.buses.listen(can_config, other)
    wait_for("the second device hears the channel", lambda: other.frames > 10)
    assert io.buses.opened == 1
    io.buses.release(can_config, other)
    seen = other.frames
    time.sleep(0.1)
    assert other.frames <= seen + 1  # released: at most one frame in flight
    assert io.read(time.monotonic()).current_a is not None  # the sensor still listens
    with pytest.raises(ValueError, match="is open at 500000 bit/s, not 250000"):
        io.buses.bus(can_config.model_copy(update={"bitrate": 250_000}))


def test_devices_on_one_channel_must_agree_on_its_bit_rate() -> None:
    problems = bit_rate_conflicts(
        {
            "current_sensor.can": ("socketcan", "can1", 500_000),
            "insulation_monitor.can": ("socketcan", "can1", 250_000),
            "other.can": ("socketcan", "can2", 250_000),
        }
    )
    assert problems == [
        "insulation_monitor.can.bitrate: 250000 bit/s on socketcan can1, where "
        "current_sensor.can runs at 500000 bit/s; devices on one CAN channel share its bit rate"
    ]


def test_the_factory_reopens_only_the_device_whose_section_changed(rig: Rig) -> None:
    make = device_factory()
    io = make(rig.config, None)
    assert isinstance(io, DevicePackIo)
    rig.ios.append(io)
    read_until(io, lambda r: r.feedback is not None and r.current_a is not None)
    io.write_coils(outputs(True, True, False), time.monotonic())
    wait_for("closed", lambda: rig.relay.coils()[:3] == [True, True, False])
    sensor, relay = io.sensor, io.relay
    mark = time.monotonic()

    # A threshold and a calibration change: nothing is reopened, no coil drops.
    config = changed(rig.config, "protection.cell_overvoltage.warning.threshold", 4.12)
    config = changed(config, "current_sensor.offset_a", 0.5)
    assert make(config, io) is io
    assert (io.sensor, io.relay, io.reopened) == (sensor, relay, [])

    # New relay timing: the relay is reopened on the same outputs, which stay on.
    config = changed(config, "contactors.io.timeout_s", 0.15)
    assert make(config, io) is io
    assert io.sensor is sensor and io.relay is not relay and io.reopened == [CONTACTOR_IO]
    read_until(io, lambda r: r.feedback == ContactorFeedback(True, True, False))
    time.sleep(0.2)
    assert all(v for t, c, v in list(rig.relay.coil_writes) if t >= mark and c in (0, 1))

    # A new current sensor section reopens the sensor only; the coils stay.
    config = changed(config, "current_sensor.cycle_time_ms", 20)
    make(config, io)
    assert io.sensor is not sensor and io.reopened[-1] == CURRENT_SENSOR
    read_until(io, lambda r: r.current_a is not None)
    wait_for("new cycle", lambda: rig.ivt.sim.cycle_ms[Quantity.CURRENT_A] == 20)
    assert all(v for t, c, v in list(rig.relay.coil_writes) if t >= mark and c in (0, 1))

    # The coils move to other outputs: the old ones are switched off, the new ones on.
    config = changed(config, "contactors.io.coil_main_positive", 5)
    make(config, io)
    wait_for("moved", lambda: rig.relay.coils()[:6] == [False, True, False, False, False, True])


# --- the master on devices --------------------------------------------------------------------

CELL_MV = 3700
PACK_V = 8 * CELL_MV / 1000.0
LOAD_A = -7.5


def test_the_master_closes_through_the_relay_module_and_publishes_the_sensor_current(
    rig: Rig, tmp_path: Path
) -> None:
    """The IVT-S's U2 follows the relay module's contacts (precharge through a resistor, then
    the mains), and the load flows while the mains are closed."""
    c = rig.config.contactors
    tau_s = c.precharge_resistor_ohm * c.dc_link_capacitance_f  # what precharge_failure expects

    def physics(sim: SimulatedIvtS) -> None:
        contacts = rig.relay.inputs()
        positive, negative, precharge = contacts[0], contacts[1], contacts[2]
        linked = negative and (positive or precharge)
        u2 = sim.values[Quantity.U2_V]
        target = PACK_V if linked else 0.0
        sim.values[Quantity.U2_V] = u2 + (target - u2) * min(CYCLE_MS / 1000.0 / tau_s, 1.0)
        sim.values[Quantity.U1_V] = PACK_V
        sim.values[Quantity.CURRENT_A] = LOAD_A if positive and negative else 0.0

    rig.ivt.update = physics
    broker = InMemoryBroker()
    bus = InMemoryBus(broker, system="demo", service="master_core", kind="master_core")
    bus.start()
    store = Store(tmp_path / "master.sqlite")
    core = MasterCore(MasterCoreSettings(hardware="devices"), bus, store, device_factory())
    others = InMemoryBus(broker, system="demo", service="test", kind="test")
    others.start()
    states: list[PackState] = []
    others.subscribe(PACK_STATE, lambda d: states.append(d.message))
    others.publish(CONFIG, ConfigMessage(config=rig.config))
    bus.process()
    try:
        assert isinstance(core.rt.io if core.rt else None, DevicePackIo)
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            for m in range(2):
                others.publish(
                    SLAVE_TELEMETRY,
                    CellTelemetry(
                        module=m, mode="working", sample_ts=time.time(),
                        cell_mv=[CELL_MV] * 4, cell_flags=[0] * 4, balancing=[False] * 4,
                        temp_c=[25.0, 25.0], temp_flags=[0, 0],
                    ),
                    module=m,
                )  # fmt: skip
            bus.process()
            core.cycle()
            others.process()
            if states and states[-1].contactors == "closed" and states[-1].current:
                break
            time.sleep(0.03)
        assert states, "no pack state published"
        last = states[-1]
        assert last.contactors == "closed", [s.contactors for s in states[-5:]]
        assert last.current == pytest.approx(LOAD_A, abs=0.01)
        assert last.voltage == pytest.approx(PACK_V, abs=0.01)
        assert rig.relay.coils()[:3] == [True, True, False]  # precharge relay open again
        seen = {s.contactors for s in states}
        assert "precharge" in seen
    finally:
        core.stop()
        store.close()
    assert rig.relay.coils()[:3] == [False, False, False]  # stopping releases the coils


@dataclass
class MissesWrites:
    """A relay module whose first `misses` coil writes get no answer (a slow serial line)."""

    misses: int
    writes: list[dict[str, bool]]
    error: str = ""

    def write(self, coils: Any) -> None:
        self.writes.append({n: bool(coils.commanded(n)) for n in CONTACTORS})
        if self.misses:
            self.misses -= 1
            self.error = "write coil 0 (main_positive): no valid reply within 0.1 s"

    def read(self, now_s: float) -> ContactorIoFeedback:
        errors, self.error = ((self.error,) if self.error else ()), ""
        return ContactorIoFeedback(False, False, False, stale=False, errors=errors)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("misses", [0, 1, RELEASE_ATTEMPTS - 1])
def test_stopping_writes_the_coils_off_again_until_the_module_answers(misses: int) -> None:
    module = MissesWrites(misses, [])
    config = SystemConfig.from_preset("NMC", modules=2, cells_per_module=4).contactors.io
    worker = RelayWorker(module, config, time.monotonic)  # type: ignore[arg-type]
    worker.stop(release=True)
    assert len(module.writes) == misses + 1
    assert all(not any(w.values()) for w in module.writes)


def test_stopping_gives_up_after_its_attempts_and_says_the_coils_may_be_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    module = MissesWrites(RELEASE_ATTEMPTS + 5, [])
    config = SystemConfig.from_preset("NMC", modules=2, cells_per_module=4).contactors.io
    worker = RelayWorker(module, config, time.monotonic)  # type: ignore[arg-type]
    worker.stop(release=True)
    assert len(module.writes) == RELEASE_ATTEMPTS
    assert "the coils may still be on" in caplog.text
