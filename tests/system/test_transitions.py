"""Commissioning transitions, end to end: a live stack on a real mosquitto, read from outside.

The whole stack runs as processes (the plant, slave agents reading its boards over Modbus TCP,
the master on its devices: the plant's IVT-S, iso165C and relay module; Modbus gateway, CAN
gateway on an slcan link over a socat pty, web application), and is driven through the
transitions an integrator meets: cold start with modules appearing one by one, configuration
applies (same and new topology), standby and back, sensor faults, over-temperature, and
restarts of the master, a slave and the broker. In every state it is read through independent
clients: pysunspec2 over Modbus TCP, python-can with cantools and each profile's DBC, the REST
API and MQTT. Each checkpoint asserts that

- no fault latches without its physical cause;
- no unknown is presented as a number (SunSpec unimplemented, CAN frame withheld, JSON null);
- no value is clamped (what the clients read equals the pack state within scaling);
- every sensor stays at its own place;
- the contactors return to closed without an operator where no fault needs one.

The plant has no inverter here (the CAN gateway talks to this test's slcan reader): it draws
5 A whenever the contactors are closed. Faults are injected into the plant.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import can
import pytest
import sunspec2.modbus.client as sunspec
from sunspec2.modbus.modbus import ModbusClientError

from services.can_gateway.codec import load_dbc
from shared.broker import MosquittoBroker, free_port
from shared.bus import Delivery, MqttBus
from shared.config import SystemConfig
from shared.config.system import COMM_LOSS_RIDE_THROUGH_MAX_S
from shared.messages import CellSnapshot, CellTelemetry, Event, PackState
from shared.module_samples import subscribe_module_samples
from shared.protection_codes import EVT1_COMMUNICATION_ERROR
from shared.settings import parse_mqtt_url
from shared.topics import EVENTS, PACK_CELLS, PACK_STATE

from .agents import ServiceProcess, WireStack, wait_until
from .test_config_ui import Ui

pytestmark = [
    pytest.mark.broker,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not Path("/usr/bin/socat").exists(), reason="socat is not installed"),
]

MODULES = 3
CELLS = 4
TEMPS = 2
CAN_PROFILES = ("victron_0x35x", "native")
STEADY_S = 60.0
"""Longest a step may take to settle (the UI's fast paths are well under this)."""


def system_config(
    system_id: str,
    modules: int = MODULES,
    version: int = 1,
    can_profiles: tuple[str, ...] = CAN_PROFILES,
    cells: int = CELLS,
) -> dict[str, Any]:
    config = SystemConfig.from_preset(
        "NMC", system_id=system_id, modules=modules, cells_per_module=cells
    )
    data = config.model_dump(mode="json")
    data["config_version"] = version
    data["topology"]["temp_sensors_per_module"] = TEMPS
    data["interfaces"]["can"]["enabled"] = True
    data["interfaces"]["can"]["profiles"] = list(can_profiles)
    return data


class Watch:
    """Everything a third party on MQTT sees: pack state, cells, events and telemetry."""

    def __init__(self, url: str, system: str) -> None:
        self.bus = MqttBus(parse_mqtt_url(url), system=system, service="watch", kind="test")
        self.lock = threading.Lock()
        self.states: list[PackState] = []
        self.cells: CellSnapshot | None = None
        self.events: list[Event] = []
        self.telemetry: dict[int, CellTelemetry] = {}
        self.refused: list[str] = []
        self.recent: dict[int, deque[CellTelemetry]] = defaultdict(lambda: deque(maxlen=40))
        """The last 4 s of samples of each module (a snapshot is up to 0.5 s old)."""
        self.bus.subscribe(PACK_STATE, self._on_state)
        self.bus.subscribe(PACK_CELLS, self._on_cells)
        self.bus.subscribe(EVENTS, self._on_event)
        subscribe_module_samples(self.bus, self._on_telemetry, self._on_refused)
        self._stop = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()
        assert self.bus.start(wait_s=10)

    def _pump(self) -> None:
        while not self._stop.is_set():
            self.bus.process(0.05)

    def _on_state(self, d: Delivery[PackState]) -> None:
        with self.lock:
            self.states.append(d.message)

    def _on_cells(self, d: Delivery[CellSnapshot]) -> None:
        with self.lock:
            self.cells = d.message

    def _on_event(self, d: Delivery[Event]) -> None:
        with self.lock:
            self.events.append(d.message)

    def _on_telemetry(self, sample: CellTelemetry) -> None:
        with self.lock:
            self.telemetry[sample.module] = sample
            self.recent[sample.module].append(sample)

    def _on_refused(self, kind: str, why: str) -> None:
        with self.lock:
            self.refused.append(f"{kind}: {why}")

    def latest(self) -> PackState | None:
        with self.lock:
            return self.states[-1] if self.states else None

    def mark(self) -> int:
        with self.lock:
            return len(self.states)

    def states_since(self, mark: int) -> list[PackState]:
        with self.lock:
            return self.states[mark:]

    def faults_raised_since(self, mark_ts: float) -> set[str]:
        with self.lock:
            return {
                e.code
                for e in self.events
                if e.level == "fault" and e.kind == "raise" and (e.ts or 0) >= mark_ts
            }

    def close(self) -> None:
        self._stop.set()
        self.bus.stop(timeout_s=0.5)


class Inverter:
    """The CAN side: an slcan adapter on the far end of the pty, frames decoded by the DBCs."""

    def __init__(self, channel: Path) -> None:
        self.bus = can.Bus(interface="slcan", channel=str(channel), sleep_after_open=0)
        self.lock = threading.Lock()
        self.frames: dict[int, list[tuple[float, bytes]]] = defaultdict(list)
        self.dbcs = {p: load_dbc(p) for p in CAN_PROFILES}
        self.notifier = can.Notifier(self.bus, [self._on])

    def _on(self, msg: can.Message) -> None:
        with self.lock:
            self.frames[msg.arbitration_id].append((time.monotonic(), bytes(msg.data)))

    def decoded_since(self, profile: str, frame_id: int, t0: float) -> list[dict[str, Any]]:
        db = self.dbcs[profile]
        with self.lock:
            raw = [data for t, data in self.frames.get(frame_id, []) if t >= t0]
        return [dict(db.decode_message(frame_id, d, decode_choices=False)) for d in raw]

    def close(self) -> None:
        self.notifier.stop()
        self.bus.shutdown()


class Stack:
    def __init__(self, broker: MosquittoBroker, system_id: str, tmp: Path) -> None:
        self.broker, self.system, self.tmp = broker, system_id, tmp
        self.modbus_port = free_port()
        gw_end, inv_end = tmp / "can-gw", tmp / "can-inv"
        self.socat = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={gw_end}", f"pty,raw,echo=0,link={inv_end}"],
            stderr=subprocess.DEVNULL,
        )
        assert wait_until(lambda: gw_end.exists() and inv_end.exists(), 5)
        self.gw_end = gw_end
        self.procs: dict[str, ServiceProcess] = {}
        self.wire = WireStack(broker.url, system_id, tmp, load_profile="constant:-5")
        self.ui = Ui(broker.url, system_id, tmp)
        self.ui.start()
        self.watch = Watch(broker.url, system_id)
        self.inverter = Inverter(inv_end)
        self.version = 0

    # --- processes ----------------------------------------------------------------------------
    def start(self, name: str, **env: str) -> None:
        settings: dict[str, str] = {
            "master_core": {"data_dir": str(self.tmp / "master")},
            "modbus_gateway": {"tcp_port": str(self.modbus_port)},
            "can_gateway": {
                "can_interface": "slcan",
                "can_channel": str(self.gw_end),
                "stale_after_s": "2",
            },
        }.get(name.partition(":")[0], {})
        service, _, label = name.partition(":")
        if service == "master_core":
            self.procs[name] = self.wire.master(label=label, **settings, **env)
        elif service == "slave_agent":
            self.procs[name] = self.wire.agent(label=label, **settings, **env)
        else:
            self.procs[name] = ServiceProcess(
                service, self.broker.url, self.system, self.tmp, label=label, **settings, **env
            )

    def inject(self, *args: str) -> None:
        """A fault into the plant (`python -m services.plant inject`)."""
        self.wire.inject(*args)

    def stop(self, name: str) -> None:
        self.procs.pop(name).stop()

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        os.kill(proc.proc.pid, signal.SIGKILL)
        proc.stop()

    def logs(self) -> str:
        procs = {"plant": self.wire.plant, **self.procs}
        return "\n".join(f"--- {n}\n{p.log()[-3000:]}" for n, p in procs.items())

    # --- configuration through the REST API ------------------------------------------------
    def apply(self, config: dict[str, Any]) -> int:
        """Applies `config` with its devices where this test's plant serves them."""
        wired = self.wire.wire(config)
        r = self.ui.http.post("/api/config", json={"config": wired, "comment": "transition"})
        assert r.status_code == 201, r.text
        self.version = int(r.json()["version"])
        return self.version

    def close(self) -> None:
        self.watch.close()
        self.inverter.close()
        for name in sorted(self.procs, key=lambda n: not n.startswith("master_core")):
            self.stop(name)  # the master first: it releases the relay module's coils
        self.wire.stop()
        self.ui.stop()
        self.socat.kill()


@pytest.fixture
def stack(
    restartable_mosquitto: MosquittoBroker, system_id: str, tmp_path: Path
) -> Iterator[Stack]:
    s = Stack(restartable_mosquitto, system_id, tmp_path)
    try:
        yield s
        # through every transition, each sample the agents published is one a third party takes
        assert s.watch.refused == [], s.watch.refused[:5]
    finally:
        s.close()


# --- what the independent clients read -----------------------------------------------------


def sunspec_battery(port: int) -> dict[str, float | None]:
    d = sunspec.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=port)
    try:
        d.scan()
        battery = d.models[802][0]
        battery.read()
        return {
            name: getattr(battery, name).cvalue
            for name in ("SoC", "SoH", "V", "A", "CellVMin", "CellVMax", "CellVAvg", "Evt1")
        }
    finally:
        d.close()


def rest_pack(stack: Stack) -> dict[str, Any]:
    state = stack.ui.http.get("/api/state").json()
    pack: dict[str, Any] = state["pack"]
    return pack


SUNSPEC_OF: dict[str, tuple[str, float]] = {
    "soc": ("SoC", 0.1),
    "soh": ("SoH", 0.1),
    "voltage": ("V", 0.1),
    "current": ("A", 0.1),
    "cell_v_min": ("CellVMin", 0.001),
    "cell_v_max": ("CellVMax", 0.001),
}
"""PackState field -> SunSpec 802 point and the resolution of its scaling."""
DRIFT = {"soc": 0.2, "soh": 0.0, "voltage": 1.5, "current": 1.0, "cell_v_min": 0.01,
         "cell_v_max": 0.01}  # fmt: skip
"""How far a value may move while the clients are read one after the other (noise, load)."""


def assert_truthful(stack: Stack, *, allowed_faults: frozenset[str] = frozenset()) -> None:
    """Every client says what MQTT says; unknown stays unknown everywhere.

    A gateway may lag the bus by a moment after a transition (it says "unknown" until it has
    the new data, which is truthful); a known value it keeps calling unknown is a failure."""
    state = stack.watch.latest()
    assert state is not None
    assert set(state.faults) <= allowed_faults, (state.faults, stack.logs())
    for _attempt in range(5):
        lagging = _compare_clients(stack)
        if not lagging:
            break
        time.sleep(1.0)
    assert not lagging, lagging
    _assert_can_truthful(stack)


def _compare_clients(stack: Stack) -> list[str]:
    """Reads REST and SunSpec between two MQTT states; asserts every mismatch except a client
    that still says unknown for a known value, which it returns (to be read again)."""
    state = stack.watch.latest()
    rest = rest_pack(stack)
    try:
        spec = sunspec_battery(stack.modbus_port)
    except ModbusClientError as exc:  # the gateway (re)starts its server for a new configuration
        return [f"SunSpec not reachable: {exc}"]
    again = stack.watch.latest()
    assert state is not None and again is not None
    lagging: list[str] = []
    for field, (point, tol) in SUNSPEC_OF.items():
        then, now = getattr(state, field), getattr(again, field)
        if (then is None) != (now is None):
            continue  # it became known (or unknown) while the clients were read
        for label, value in (("REST", rest[field]), ("SunSpec", spec[point])):
            if now is None:
                assert value is None, f"{label} shows {field}={value} while it is unknown"
                continue
            if value is None:
                lagging.append(f"{label} says {field} is unknown while it is {now}")
                continue
            lo, hi = sorted((then, now))
            slack = tol + DRIFT[field]
            assert lo - slack <= value <= hi + slack, (label, field, value, then, now)
    unknown = any(getattr(again, f) is None for f in SUNSPEC_OF) or bool(again.stale_modules)
    evt1 = int(spec["Evt1"] or 0)
    if unknown:
        assert evt1 >> EVT1_COMMUNICATION_ERROR & 1, "Evt1 must flag the unknown data"
    return lagging


def _assert_can_truthful(stack: Stack) -> None:
    t0 = time.monotonic()
    time.sleep(2.2)  # every cyclic CAN frame at least twice
    soc_frames = stack.inverter.decoded_since("victron_0x35x", 0x355, t0)
    latest = stack.watch.latest()
    assert latest is not None
    if latest.soc is None:
        assert not soc_frames, f"0x355 sent SOC {soc_frames[-1]} while SOC is unknown"
    else:
        assert soc_frames, "no 0x355 frame although SOC is known"
        assert abs(soc_frames[-1]["StateOfCharge"] - latest.soc) <= 1.0
    limits = stack.inverter.decoded_since("victron_0x35x", 0x351, t0)
    assert limits, "0x351 limits must always be sent (fail-safe while unknown)"
    if latest.soc is None or latest.stale_modules:
        assert limits[-1]["ChargeCurrentLimit"] == 0
        assert limits[-1]["DischargeCurrentLimit"] == 0
    meas = stack.inverter.decoded_since("victron_0x35x", 0x356, t0)
    if latest.voltage is None:
        assert not meas, "0x356 sent a voltage while it is unknown"
    elif latest.current is not None:
        assert meas, "no 0x356 frame although voltage and current are known"
        assert meas[-1]["BatteryVoltage"] == pytest.approx(latest.voltage, abs=1.5)


def assert_sensors_in_place(stack: Stack) -> None:
    """The published snapshot holds each module's channels where its slave measured them: each
    known value is the value one of the module's recent samples had at that very place."""
    snap = stack.watch.cells
    assert snap is not None
    with stack.watch.lock:
        recent = {m: list(q) for m, q in stack.watch.recent.items()}
    for t in snap.temperatures():
        samples = recent.get(t.module)
        if not samples or t.temp_c is None:
            continue
        seen = {round(s.temp_c[t.index], 1) for s in samples if not s.temp_flags[t.index]}
        assert round(t.temp_c, 1) in seen, (t, seen)
    for c in snap.cells():
        samples = recent.get(c.module)
        if not samples:
            continue
        if c.voltage_v is None:
            continue
        seen = {s.cell_mv[c.index] for s in samples if not s.cell_flags[c.index]}
        assert round(c.voltage_v * 1000) in seen, (c, sorted(seen))
    for c in snap.cells():
        latest = stack.watch.telemetry.get(c.module)
        if latest is not None and all(s.cell_flags[c.index] for s in recent.get(c.module, [])):
            assert c.voltage_v is None, f"flagged cell {c} published as a number"


def reset_until_accepted(stack: Stack, timeout_s: float) -> None:
    """Press reset once a second, as an operator would, until the master accepts it."""
    replies: list[dict[str, Any]] = []

    def accepted() -> bool:
        replies.append(stack.ui.http.post("/api/commands/reset_faults", json={}).json())
        return replies[-1]["status"] == "accepted"

    assert wait_until(accepted, timeout_s, step_s=1.0), (replies[-1], stack.logs())


def closed(stack: Stack) -> bool:
    s = stack.watch.latest()
    return s is not None and s.contactors == "closed"


def no_fault_raised(stack: Stack, since_ts: float) -> None:
    raised = stack.watch.faults_raised_since(since_ts)
    assert not raised, (raised, stack.logs())


# --- the matrix ----------------------------------------------------------------------------


def test_cold_start_with_modules_appearing_one_by_one(stack: Stack) -> None:
    for name in ("master_core", "modbus_gateway", "can_gateway"):
        stack.start(name)
    t0 = time.time()
    stack.apply(system_config(stack.system))
    assert wait_until(lambda: stack.watch.latest() is not None, 20), stack.logs()
    # nothing measured yet: every edge says unknown
    assert stack.watch.latest().soc is None  # type: ignore[union-attr]
    assert_truthful(stack)
    for m in range(MODULES):
        stack.start(f"slave_agent:{m}", modules=str(m))
        time.sleep(1.5)
        state = stack.watch.latest()
        assert state is not None
        if m < MODULES - 1:
            assert state.soc is None and state.sum_of_cells_v is None
            assert_truthful(stack)
    assert wait_until(lambda: closed(stack), STEADY_S), stack.logs()
    assert_truthful(stack)
    assert_sensors_in_place(stack)
    no_fault_raised(stack, t0)


def _running(stack: Stack) -> float:
    for name in ("master_core", "modbus_gateway", "can_gateway", "slave_agent"):
        stack.start(name)
    stack.apply(system_config(stack.system))
    assert wait_until(lambda: closed(stack), STEADY_S), stack.logs()
    return time.time()


def test_config_apply_with_the_same_and_a_new_topology(stack: Stack) -> None:
    t0 = _running(stack)
    config = system_config(stack.system)
    config["cell_capacity_ah"] = config["cell_capacity_ah"] + 1.0
    version = stack.apply(config)
    assert wait_until(lambda: stack.ui.all_acked(version), 20), stack.ui.acks()
    assert closed(stack)
    assert_truthful(stack)

    # one module more, each of 3 cells: 12 cells still, as a 48 V inverter (victron_0x35x)
    # takes at most 63 V; the cells of every module move
    bigger = system_config(stack.system, modules=MODULES + 1, cells=CELLS - 1)
    version = stack.apply(bigger)
    assert wait_until(lambda: stack.ui.all_acked(version), 30), stack.ui.acks()
    assert wait_until(lambda: closed(stack), STEADY_S), stack.logs()
    assert wait_until(
        lambda: (c := stack.watch.cells) is not None and len(c.modules) == MODULES + 1, 10
    )
    spec = sunspec.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1",
                                                ipport=stack.modbus_port)  # fmt: skip
    try:
        spec.scan()
        assert len(spec.models[805]) == MODULES + 1, "the Modbus map follows the new topology"
    finally:
        spec.close()
    assert_truthful(stack)
    assert_sensors_in_place(stack)
    no_fault_raised(stack, t0)


def test_standby_and_working_ten_times(stack: Stack) -> None:
    t0 = _running(stack)
    for _ in range(10):
        for mode in ("standby", "working"):
            r = stack.ui.http.post("/api/commands/set_mode", json={"mode": mode})
            assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
            assert wait_until(lambda m=mode: stack.watch.latest().mode == m, 5)  # type: ignore[union-attr]
            time.sleep(0.5)
        # back to working: closes again by itself (auto-close), nothing latched
        assert wait_until(lambda: closed(stack), STEADY_S), stack.logs()
    no_fault_raised(stack, t0)
    assert_truthful(stack)
    slave_log = stack.procs["slave_agent"].log()
    assert "Traceback" not in slave_log and "ValueError" not in slave_log, slave_log[-3000:]


def test_open_wire_then_clear_and_reset(stack: Stack) -> None:
    t0 = _running(stack)
    stack.inject("open_wire", "--module", "2", "--channel", "3")
    assert wait_until(lambda: "open_wire" in stack.watch.latest().faults, 10), stack.logs()  # type: ignore[union-attr]
    assert_truthful(stack, allowed_faults=frozenset({"open_wire"}))
    snap = stack.watch.cells
    assert snap is not None
    cell = next(c for c in snap.cells() if (c.module, c.index) == (1, 2))
    assert cell.voltage_v is None and cell.flags, "the open channel is unknown at its own place"
    stack.inject("clear")
    assert wait_until(lambda: stack.watch.telemetry[1].cell_flags[2] == 0, 5)
    reset_until_accepted(stack, 10)
    assert wait_until(lambda: not stack.watch.latest().faults, 5)  # type: ignore[union-attr]
    # the reset is the only operator action the fault needs: the contactors close by themselves
    assert wait_until(lambda: closed(stack), STEADY_S), stack.logs()
    assert stack.watch.faults_raised_since(t0) == {"open_wire"}
    assert_truthful(stack)


def test_one_faulted_temperature_sensor_keeps_the_others_in_place(stack: Stack) -> None:
    _running(stack)
    stack.inject("open_wire", "--module", "1", "--channel", "1",
           "--target", "temp")  # fmt: skip
    assert wait_until(
        lambda: (c := stack.watch.cells) is not None and next(c.temperatures()).flags != 0,
        10,
    ), stack.logs()
    snap = stack.watch.cells
    assert snap is not None
    temps = list(snap.temperatures())
    assert temps[0].temp_c is None and len(temps) == MODULES * TEMPS
    assert all(t.temp_c is not None for t in temps[1:])
    assert_sensors_in_place(stack)
    state = stack.watch.latest()
    assert state is not None
    assert_truthful(stack, allowed_faults=frozenset({"open_wire", "sensor_fault"}))


def test_over_temperature_then_cool_and_reset(stack: Stack) -> None:
    t0 = _running(stack)
    config = system_config(stack.system)
    fault_c = config["protection"]["cell_overtemp_discharge"]["fault"]["threshold"]
    stack.inject("over_temperature", "--module", "3", "--channel", "1",
           "--value", str(fault_c + 5))  # fmt: skip
    assert wait_until(lambda: "cell_overtemp_discharge" in stack.watch.latest().faults, 20)  # type: ignore[union-attr]
    assert_truthful(
        stack, allowed_faults=frozenset({"cell_overtemp_discharge", "cell_overtemp_charge"})
    )
    stack.inject("clear")  # the heat source is gone; now cool them
    stack.inject("under_temperature", "--module", "3", "--channel", "1",
           "--value", "25", "--duration-s", "30")  # fmt: skip
    reset_until_accepted(stack, 60)
    assert wait_until(lambda: closed(stack), STEADY_S), stack.logs()
    assert stack.watch.faults_raised_since(t0) <= {
        "cell_overtemp_discharge",
        "cell_overtemp_charge",
    }


def test_master_slave_and_broker_restarts(stack: Stack) -> None:
    t0 = _running(stack)
    before = stack.watch.latest()
    assert before is not None and before.soc is not None

    stack.stop("master_core")
    time.sleep(1.0)
    stack.start("master_core")
    assert wait_until(
        lambda: (s := stack.watch.latest()) is not None and (s.ts or 0) > time.time() - 1, 20
    )
    after = stack.watch.latest()
    assert after is not None
    assert after.soc is not None and abs(after.soc - before.soc) < 2.0
    assert after.soh == before.soh
    assert wait_until(lambda: closed(stack), STEADY_S), stack.logs()
    assert_truthful(stack)

    stack.kill("slave_agent")
    # a lost slave is a real loss: it must be reported and the unknowns must go out as unknown
    assert wait_until(lambda: "communication_loss" in stack.watch.latest().faults, 10)  # type: ignore[union-attr]
    assert wait_until(lambda: (s := stack.watch.latest()) is not None and s.cell_v_min is None, 5)
    assert_truthful(stack, allowed_faults=frozenset({"communication_loss"}))
    stack.start("slave_agent")
    reset_until_accepted(stack, 20)
    assert wait_until(lambda: closed(stack), STEADY_S), stack.logs()

    # a broker restart is a short loss of every module: with a ride-through policy the master
    # holds the contactors (limits 0 A meanwhile) and nothing latches once the bus is back
    riding = system_config(stack.system)
    riding["comm_loss"] = {"action": "ride_through", "ride_through_s": COMM_LOSS_RIDE_THROUGH_MAX_S}
    version = stack.apply(riding)
    assert wait_until(lambda: stack.ui.all_acked(version), 20), stack.ui.acks()
    assert closed(stack)
    t1 = time.time()
    stack.broker.kill()
    time.sleep(1.0)
    stack.broker.start()
    assert wait_until(lambda: (s := stack.watch.latest()) is not None and (s.ts or 0) > t1 + 2, 30)
    assert wait_until(lambda: closed(stack), STEADY_S), stack.logs()
    assert_truthful(stack)
    assert stack.watch.faults_raised_since(t0) == {"communication_loss"}
    assert not stack.watch.faults_raised_since(t1)
