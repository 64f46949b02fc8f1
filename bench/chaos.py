"""The chaos suite: break the running stack on purpose, each scenario bounded in time.

    python bench/chaos.py [--quick] [--only NAME[,NAME]] [--out FILE] [--list]

A real stack in a network namespace of its own (`unshare --net`, as bench/fault_matrix.py):
mosquitto with persistence, the slave agent, the master (`BMS_HARDWARE=simulated`, the load
profile cycling at 80 A), the Modbus gateway on TCP and the CAN gateway on an slcan adapter
(a socat pty pair whose far end the bench writes). Every service reaches the broker through a
fault proxy of its own (`shared/netfault.py`), so a network cut hits one service only.

The scenarios are the table `SCENARIOS` (name, function, full and `--quick` counts, time
bound); each starts from closed contactors with no fault and reports one `ScenarioResult`
(`shared/chaos.py`): time back online, events lost, duplicated commands executed, the longest
pack-state gap under fuzz, the SOC error after a master kill, crashes and Modbus replies out
of specification. Results go to docs/data/chaos.json; `python -m shared.docgen` renders
docs/chaos.md.

Exit code 2: a must-hold figure did not hold (listed); 77: the stack cannot run here (no
mosquitto, no socat, no network namespace), with the reason on stderr.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from fault_matrix import enter_netns, setup_loopback, skip  # noqa: E402

from services.modbus_gateway.conformance import SERVED, refusal  # noqa: E402
from shared.broker import MosquittoBroker, find_mosquitto  # noqa: E402
from shared.bus import Delivery, MqttBus  # noqa: E402
from shared.chaos import DATA_FILE, ChaosResults, ScenarioResult, dump  # noqa: E402
from shared.codec import decode  # noqa: E402
from shared.commands import CommandClient  # noqa: E402
from shared.config import SystemConfig  # noqa: E402
from shared.messages import (  # noqa: E402
    CommandArgs,
    CommandReply,
    CommandRequest,
    ContactorsArgs,
    Event,
    PackState,
    ResetFaultsArgs,
    ServiceStatus,
    SetModeArgs,
)
from shared.netfault import TcpFaultProxy  # noqa: E402
from shared.settings import parse_mqtt_url  # noqa: E402
from shared.topics import (  # noqa: E402
    BROKER_MESSAGE_SIZE_LIMIT,
    COMMAND,
    COMMAND_REPLY,
    EVENTS,
    PACK_STATE,
    RACK_TELEMETRY,
    SERVICE_STATUS,
    SLAVE_TELEMETRY,
    TOPICS,
)
from tests.system.agents import ServiceProcess, publish_config, wait_until  # noqa: E402

SYSTEM = "chaos"
NETNS_ENV = "BMS_CHAOS_NETNS"
MODBUS_PORT = 5502
MODBUS_UNIT = 1
LOAD_PROFILE = "cycle:80:80:30:70"
"""The simulated inverter charges and discharges at 80 A between 30 and 70 % SOC."""
SERVICES = ("slave_agent", "master_core", "modbus_gateway", "can_gateway")
READY_TIMEOUT_S = 40.0
RESET_AFTER_S = 10.0
"""A fault still latched this long after the fault ended gets an operator's reset (the
hourly budget of automatic recoveries, comm_loss.auto_recoveries_per_hour, may be spent)."""
VICTRON_KEEPALIVE_ID = 0x305


def chaos_config() -> SystemConfig:
    base = SystemConfig.from_preset("NMC", system_id=SYSTEM, modules=2, cells_per_module=4)
    data = base.model_dump(mode="json")
    data["comm_loss"]["auto_recoveries_per_hour"] = 20  # the most the schema allows
    # the maximum current is the over-current warning: above 80 A, so the derated limits
    # (SOC and temperature tables) still let the load draw its 80 A
    for name in ("charge_overcurrent", "discharge_overcurrent"):
        data["protection"][name] |= {
            "warning": {"threshold": 95.0, "delay_s": 5.0, "release": 90.0},
            "alarm": {"threshold": 98.0, "delay_s": 2.0, "release": 93.0},
        }
    data["interfaces"]["modbus"] |= {"tcp_host": "127.0.0.1", "tcp_port": MODBUS_PORT}
    return SystemConfig.model_validate(data)


# --- what a third party sees --------------------------------------------------------------------
class Observer:
    """Pack states (with arrival times), events and service status, straight on the broker."""

    def __init__(self, url: str) -> None:
        self.bus = MqttBus(parse_mqtt_url(url), system=SYSTEM, service="chaos", kind="bench")
        self.client = CommandClient(self.bus)
        self.lock = threading.Lock()
        self.states: list[tuple[float, PackState]] = []
        self.status: dict[str, list[tuple[float, ServiceStatus]]] = defaultdict(list)
        self.bus.subscribe(PACK_STATE, self._on_state)
        self.bus.subscribe(SERVICE_STATUS, self._on_status)
        self._stop = threading.Event()
        if not self.bus.start(wait_s=10):
            raise RuntimeError(f"no broker at {url}")
        self._pump = threading.Thread(target=self._run, name="chaos-bus", daemon=True)
        self._pump.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.bus.process(timeout_s=0.02)

    def _on_state(self, d: Delivery[PackState]) -> None:
        with self.lock:
            self.states.append((time.monotonic(), d.message))
            del self.states[:-20000]

    def _on_status(self, d: Delivery[ServiceStatus]) -> None:
        with self.lock:
            self.status[d.params["service"]].append((time.monotonic(), d.message))
            del self.status[d.params["service"]][:-200]

    def latest(self) -> PackState | None:
        with self.lock:
            return self.states[-1][1] if self.states else None

    def arrivals_since(self, t: float) -> list[tuple[float, PackState]]:
        with self.lock:
            return [(a, s) for a, s in self.states if a >= t]

    def online_since(self, service: str, t: float) -> bool:
        with self.lock:
            return any(a >= t and s.state == "online" for a, s in self.status.get(service, []))

    def counters(self) -> dict[str, dict[str, int]]:
        with self.lock:
            return {k: dict(v[-1][1].counters) for k, v in self.status.items() if v}

    def command(self, name: str, args: CommandArgs | None = None) -> CommandReply | None:
        return self.client.request_pumped(name, args)

    def close(self) -> None:
        self._stop.set()
        self.bus.stop(timeout_s=0.5)


class EventSubscriber:
    """A persistent subscriber of the event topics: MQTT 5, no clean start, a session that
    outlives disconnects and broker restarts (the broker persists it), QoS 1."""

    def __init__(self, host: str, port: int) -> None:
        self.received: set[tuple[str, str, float]] = set()
        self.lock = threading.Lock()
        self.filter = EVENTS.filter(SYSTEM)  # events/+: every source
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="chaos-persistent-events",
            protocol=mqtt.MQTTv5,
        )  # fmt: skip
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 2)
        self.connected = threading.Event()
        self.client.connect_async(host, port, keepalive=5, clean_start=False, properties=props)
        self.client.loop_start()
        if not self.connected.wait(10):
            raise RuntimeError("the persistent subscriber cannot connect")

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.subscribe(self.filter, qos=1)
            self.connected.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            event = decode(Event, msg.topic, bytes(msg.payload))
        except ValueError:
            return
        with self.lock:
            self.received.add((event.code, event.kind, round(event.ts or 0.0, 6)))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# --- the stack ----------------------------------------------------------------------------------
class Stack:
    def __init__(self, tmp: Path, *, persist_period_s: float = 1.0) -> None:
        self.tmp = tmp
        self.persist_period_s = persist_period_s
        self.config = chaos_config()
        self.broker = MosquittoBroker(
            persistence_dir=tmp / "mosquitto", extra_config="autosave_interval 1"
        )
        self.broker.start()
        self.proxies = {
            name: TcpFaultProxy(self.broker.host, self.broker.port) for name in SERVICES
        }
        self.ui = publish_config(self.broker.url, self.config)
        self.events = EventSubscriber(self.broker.host, self.broker.port)
        self.obs = Observer(self.broker.url)
        self.data_dir = tmp / "master"
        self.db_path = self.data_dir / f"master_core-{SYSTEM}.sqlite"
        self.gw_end, self.inv_end = tmp / "can-gw", tmp / "can-inv"
        self.socat = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={self.gw_end}",
             f"pty,raw,echo=0,link={self.inv_end}"],
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        if not wait_until(lambda: self.gw_end.exists() and self.inv_end.exists(), 10):
            raise RuntimeError("socat made no pty pair")
        self.inverter = SlcanEnd(self.inv_end)
        self.procs: dict[str, ServiceProcess] = {}
        self.starts = itertools.count()
        self.killed: set[str] = set()
        """Services the bench killed and has not restarted yet."""
        self.crashes: dict[str, int] = defaultdict(int)
        for name in SERVICES:
            self.start(name)

    def env(self, name: str) -> dict[str, str]:
        return {
            "slave_agent": {"initial_soc_pct": "50"},
            "master_core": {"hardware": "simulated", "data_dir": str(self.data_dir),
                            "load_profile": LOAD_PROFILE,
                            "persist_period_s": str(self.persist_period_s)},
            "modbus_gateway": {},
            "can_gateway": {"can_interface": "slcan", "can_channel": str(self.gw_end),
                            "keepalive_timeout_s": "3"},
        }[name]  # fmt: skip

    def start(self, name: str) -> None:
        self.procs[name] = ServiceProcess(
            name, self.proxies[name].url, SYSTEM, self.tmp, label=f"-{next(self.starts)}",
            **self.env(name),
        )  # fmt: skip
        self.killed.discard(name)

    def kill(self, name: str) -> None:
        self.killed.add(name)
        proc = self.procs[name].proc
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        self.procs[name].stop()

    def check_crashes(self) -> int:
        """Services that exited without the bench killing them (restarted, so the run goes on)."""
        found = 0
        for name, p in list(self.procs.items()):
            if name not in self.killed and p.proc.poll() is not None:
                found += 1
                self.crashes[name] += 1
                print(f"  CRASH {name} exited {p.proc.returncode}:\n{p.log()[-3000:]}", flush=True)
                p.stop()
                self.start(name)
        return found

    def ready(self, since_wall: float = 0.0) -> bool:
        """The latest pack state, stamped after `since_wall`: contactors closed, no fault."""
        s = self.obs.latest()
        return (
            s is not None
            and (s.ts or 0.0) >= since_wall
            and s.contactors == "closed"
            and not s.faults
            and not s.stale_modules
        )

    def wait_ready(
        self, timeout_s: float = READY_TIMEOUT_S, since_wall: float = 0.0
    ) -> tuple[bool, int]:
        """Until contactors closed with no fault in a pack state stamped after `since_wall`;
        the operator steps in when needed (a mode left in standby, a latch the automatic
        recovery no longer lifts). Returns (ready, operator resets)."""
        resets = 0
        t0 = time.monotonic()
        last_nudge = t0
        bad_since: float | None = None
        """When the fresh pack states (stamped after `since_wall`) began to show it not ready:
        the operator waits RESET_AFTER_S of that, never of the silence before."""
        while time.monotonic() - t0 < timeout_s:
            if self.ready(since_wall):
                return True, resets
            s = self.obs.latest()
            now = time.monotonic()
            fresh = s is not None and (s.ts or 0.0) >= since_wall
            bad_since = (bad_since or now) if fresh else None
            if (
                s is not None
                and bad_since is not None
                and now - bad_since > RESET_AFTER_S
                and now - last_nudge > RESET_AFTER_S
            ):
                last_nudge = now
                if s.mode == "standby":
                    self.obs.command("set_mode", SetModeArgs(mode="working"))
                elif s.faults or s.contactors == "fault":
                    self.obs.command("reset_faults", ResetFaultsArgs())
                    resets += 1
                elif s.contactors == "standby":
                    self.obs.command("contactors", ContactorsArgs(action="close"))
            time.sleep(0.05)
        return self.ready(since_wall), resets

    def db_events(self, since_ts: float, until_ts: float) -> list[tuple[str, str, float]]:
        db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
        try:
            rows = db.execute(
                "SELECT code, kind, ts FROM events WHERE ts >= ? AND ts <= ? ORDER BY id",
                (since_ts, until_ts),
            ).fetchall()
        finally:
            db.close()
        return [(str(c), str(k), round(float(t), 6)) for c, k, t in rows]

    def close(self) -> None:
        for p in self.procs.values():
            p.stop()
        self.obs.close()
        self.events.close()
        self.ui.stop()
        self.inverter.close()
        self.socat.kill()
        self.socat.wait()
        for proxy in self.proxies.values():
            proxy.close()
        self.broker.stop()


class SlcanEnd:
    """The inverter's end of the serial link: writes raw slcan lines, keeps the frames the
    gateway sends (identifiers with arrival times)."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        os.set_blocking(self.fd, False)
        self.frames: list[tuple[float, int]] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        buf = b""
        while not self._stop.is_set():
            try:
                chunk = os.read(self.fd, 4096)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            except OSError:
                return
            buf += chunk
            *lines, buf = buf.split(b"\r")
            now = time.monotonic()
            with self.lock:
                for line in lines:
                    if line[:1] == b"t" and len(line) >= 4:
                        self.frames.append((now, int(line[1:4], 16)))
                    elif line[:1] == b"T" and len(line) >= 9:
                        self.frames.append((now, int(line[1:9], 16)))
                del self.frames[:-5000]

    def frame_since(self, t: float) -> float | None:
        with self.lock:
            return next((a for a, _ in self.frames if a >= t), None)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                time.sleep(0.005)
                continue
            view = view[n:]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        os.close(self.fd)


# --- scenario plumbing --------------------------------------------------------------------------
@dataclass
class Run:
    """What one scenario gathers while it runs."""

    stack: Stack
    deadline: float
    online_s: list[float] = field(default_factory=list)
    resets: int = 0
    notes: list[str] = field(default_factory=list)

    def left(self) -> bool:
        return time.monotonic() < self.deadline

    def back_online(self, t_end_fault: float, extra: Callable[[], bool] | None = None) -> None:
        """Time from the end of the fault (monotonic) to ready (and `extra`), noted."""
        since_wall = time.time() - (time.monotonic() - t_end_fault)
        ready, resets = self.stack.wait_ready(since_wall=since_wall)
        if extra is not None:
            wait_until(extra, 30)
        self.resets += resets
        if ready:
            self.online_s.append(time.monotonic() - t_end_fault)
        else:
            self.notes.append(f"not back online within {READY_TIMEOUT_S:g} s")


Scenario = Callable[[Run, int], dict[str, Any]]


@dataclass(frozen=True)
class Spec:
    name: str
    what: str
    run: Scenario
    full: int
    quick: int
    bound_s: float
    quick_bound_s: float


def kill_broker(stack: Stack) -> float:
    """SIGKILL, then start again on the same port; the moment it accepts again."""
    stack.broker.kill()
    time.sleep(0.5)
    stack.broker.start()
    return time.monotonic()


def broker_kill(run: Run, n: int) -> dict[str, Any]:
    s = run.stack
    t_wall = time.time()
    done = 0
    for _ in range(n):
        if not run.left():
            break
        back = kill_broker(s)
        run.back_online(back)
        done += 1
    # QoS 1 events queued while the broker was down arrive after the last reconnect
    time.sleep(3.0)
    logged = s.db_events(t_wall, time.time() - 1.0)
    with s.events.lock:
        got = set(s.events.received)
    lost = [e for e in logged if e not in got]
    if lost:
        run.notes.append(f"lost (code, kind, ts): {lost[:5]}")
    run.notes.append(f"{len(logged)} events logged by the master during the kills")
    return {"done": done, "events_lost": len(lost)}


def slave_kill(run: Run, n: int) -> dict[str, Any]:
    s = run.stack
    done = 0
    for _ in range(n):
        if not run.left():
            break
        s.kill("slave_agent")
        time.sleep(1.0)
        s.start("slave_agent")
        run.back_online(time.monotonic())
        done += 1
    return {"done": done}


def restarted(state: PackState, wall_kill: float) -> bool:
    """A pack state with a SOC, stamped after the kill (by the new master)."""
    return state.soc is not None and (state.ts or 0.0) > wall_kill


def master_kill(run: Run, n: int) -> dict[str, Any]:
    s = run.stack
    errors: list[float] = []
    currents: list[float] = []
    done = 0
    for _ in range(n):
        if not run.left():
            break
        at_80 = wait_until(
            lambda: (st := s.obs.latest()) is not None and abs(st.current or 0.0) >= 79.0, 30
        )
        before = s.obs.latest()
        if not at_80 or before is None or before.soc is None:
            run.notes.append(f"no 80 A before the kill: {before and before.current}")
        s.kill("master_core")
        t_kill, wall_kill = time.monotonic(), time.time()
        if before is not None:
            currents.append(abs(before.current or 0.0))
        s.start("master_core")
        if not wait_until(
            lambda t=t_kill, w=wall_kill: any(
                restarted(st, w) for _, st in s.obs.arrivals_since(t)
            ),
            30,
        ):
            run.notes.append("no SOC published after the restart")
            continue
        after = next(st for _, st in s.obs.arrivals_since(t_kill) if restarted(st, wall_kill))
        if before is not None and before.soc is not None and after.soc is not None:
            errors.append(abs(after.soc - before.soc))
        run.back_online(t_kill)
        done += 1
    if currents:
        run.notes.append(f"current at the kills {min(currents):.1f}-{max(currents):.1f} A")
    return {"done": done, "soc_error_max_pct": round(max(errors), 5) if errors else None}


CUTS: tuple[tuple[str, str], ...] = (
    ("slave_agent", "blackhole"), ("master_core", "reset"), ("modbus_gateway", "blackhole"),
    ("can_gateway", "reset"), ("slave_agent", "reset"), ("master_core", "blackhole"),
    ("modbus_gateway", "reset"), ("can_gateway", "blackhole"),
)  # fmt: skip
"""Every service once in the first four (both modes among them), both modes each in eight."""


def net_cuts(run: Run, n: int) -> dict[str, Any]:
    """n cuts of one service's broker link (blackhole for 3 s, or reset), then the restore."""
    s = run.stack
    done = 0
    for name, mode in (CUTS * (n // len(CUTS) + 1))[:n]:
        if not run.left():
            break
        proxy = s.proxies[name]
        proxy.blackhole() if mode == "blackhole" else proxy.reset()
        time.sleep(3.0)
        proxy.restore()
        t = time.monotonic()
        run.back_online(t, lambda name=name, t=t: s.obs.online_since(name, t))
        if not s.obs.online_since(name, t):
            run.notes.append(f"{name} not online again after {mode}")
        done += 1
    return {"done": done}


def _capture(stack: Stack, command: str, args: CommandArgs, ttl_s: float) -> tuple[str, bytes]:
    """The bytes of one command request, as a client would publish them."""
    req = CommandRequest(
        command=command, correlation_id=uuid.uuid4().hex,
        reply_to=COMMAND_REPLY.topic(SYSTEM, user="chaos", client="replay"),
        expires_at=time.time() + ttl_s, args=args.model_dump(mode="json"),
    )  # fmt: skip
    topic = COMMAND.topic(SYSTEM, command=command)
    return topic, stack.obs.bus.encode_for(topic, req)


def _publish_raw(stack: Stack, topic: str, payload: bytes, qos: int = 1) -> None:
    stack.obs.bus._client.publish(topic, payload, qos=qos)


def command_replay(run: Run, n: int) -> dict[str, Any]:
    """One `contactors close` captured and published again within its expiry: n times at once,
    after a broker kill and after a master kill. Before each replay a fresh `open` (another
    correlation id) opens the contactors, so an executed replay shows as a `close (command)`
    event in the master's log (and as closed contactors)."""
    s = run.stack
    topic, payload = _capture(s, "contactors", ContactorsArgs(action="close"), ttl_s=110.0)

    def executions(since_wall: float) -> int:
        return sum(
            1
            for code, text in _close_texts(s, since_wall)
            if code == "contactors_close" and text.startswith("close (command)")
        )

    def replay_phase(label: str, times: int) -> int:
        s.obs.command("contactors", ContactorsArgs(action="open"))
        wait_until(lambda: (st := s.obs.latest()) is not None and st.contactors != "closed", 10)
        t = time.time()
        for _ in range(times):
            _publish_raw(s, topic, payload)
        time.sleep(2.5)
        extra = executions(t)
        phases.append(f"{label} {extra}")
        s.obs.command("contactors", ContactorsArgs(action="close"))
        run.back_online(time.monotonic())
        return extra

    phases: list[str] = []
    first = replay_phase("first delivery (executes once)", 1)
    if first != 1:
        run.notes.append(f"the first delivery ran {first} times")
    dup = replay_phase("burst", n)
    back = kill_broker(s)
    run.back_online(back)
    dup += replay_phase("after a broker kill", 1)
    s.kill("master_core")
    s.start("master_core")
    run.back_online(time.monotonic())
    dup += replay_phase("after a master kill", 1)
    run.notes.append("executions: " + ", ".join(phases))
    return {"done": n, "duplicate_commands_executed": dup}


def _close_texts(stack: Stack, since_wall: float) -> list[tuple[str, str]]:
    db = sqlite3.connect(f"file:{stack.db_path}?mode=ro", uri=True, timeout=5)
    try:
        rows = db.execute("SELECT code, text FROM events WHERE ts >= ?", (since_wall,)).fetchall()
    finally:
        db.close()
    return [(str(c), str(t)) for c, t in rows]


def _fuzz_payload(rng: random.Random, spec_limit: int, replays: list[bytes]) -> bytes:
    kind = rng.random()
    if kind < 0.35:
        return rng.randbytes(rng.randint(0, 300))
    if kind < 0.55 and replays:
        return rng.choice(replays)  # captured telemetry, published again
    if kind < 0.70:  # msgpack maps with the envelope and junk fields
        import msgpack

        body = {"schema_version": rng.choice([1, 2, 99, "x"]), "source": "fuzz",
                "seq": rng.randint(-5, 2**40), "ts": rng.choice([time.time(), 0, -1, 1e12]),
                rng.choice(["module", "cells", "command", "config"]): rng.randbytes(8)}  # fmt: skip
        return bytes(msgpack.packb(body))
    if kind < 0.80 and replays:  # a replay cut short or with a flipped byte
        raw = bytearray(rng.choice(replays))
        raw[rng.randrange(len(raw))] ^= 0xFF
        return bytes(raw[: rng.randint(1, len(raw))])
    if kind < 0.95:  # just over the topic's limit, still under the broker's
        return rng.randbytes(min(spec_limit + rng.randint(1, 512), BROKER_MESSAGE_SIZE_LIMIT - 64))
    return rng.randbytes(BROKER_MESSAGE_SIZE_LIMIT + rng.randint(1, 4096))  # the broker drops it


def mqtt_fuzz(run: Run, n: int) -> dict[str, Any]:
    s = run.stack
    rng = random.Random(7)
    replays: list[bytes] = []
    replay_topics: set[str] = set()
    lock = threading.Lock()

    def capture(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with lock:
            if len(replays) < 200:
                replays.append(bytes(msg.payload))
                replay_topics.add(msg.topic)

    host, port = s.broker.host, s.broker.port
    fuzzer = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="chaos-fuzz")
    fuzzer.on_message = capture
    fuzzer.max_queued_messages_set(0)
    fuzzer.connect(host, port)
    fuzzer.loop_start()
    fuzzer.subscribe(RACK_TELEMETRY.filter(SYSTEM), qos=0)  # what the agent publishes
    wait_until(lambda: len(replays) >= 50, 10)
    fuzzer.unsubscribe(RACK_TELEMETRY.filter(SYSTEM))
    targets: list[tuple[str, int]] = []
    for spec in TOPICS:
        values: dict[str, str | int] = {}
        for p in spec.params:
            values[p] = {"module": 0, "command": "contactors", "service": "fuzz",
                         "client": "fuzz"}.get(p, "x")  # fmt: skip
        targets.append((spec.topic(SYSTEM, **values), spec.byte_limit))
    targets += [(SLAVE_TELEMETRY.topic(SYSTEM, module=1), SLAVE_TELEMETRY.byte_limit)] * 4
    with lock:  # the agent's own topic, where its captured messages are replays
        targets += [(t, RACK_TELEMETRY.byte_limit) for t in sorted(replay_topics)] * 4
    t0 = time.monotonic()
    sent = 0
    batch = 200
    while sent < n and run.left():
        for _ in range(min(batch, n - sent)):
            topic, limit = rng.choice(targets)
            fuzzer.publish(topic, _fuzz_payload(rng, limit, replays), qos=0)
            sent += 1
        time.sleep(0.08)  # about 2500 messages a second
        if sent % 20000 < batch:
            s.check_crashes()
    time.sleep(1.0)
    fuzzer.loop_stop()
    fuzzer.disconnect()
    seen = s.obs.arrivals_since(t0)
    # the master's cadence: its own stamps (the observer's arrival times also carry the fuzz
    # this process decodes on pack/state, and the broker's queueing: noted, not judged)
    stamps = [st.ts for _, st in seen if st.ts is not None]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    arrival_gaps = [b - a for (a, _), (b, _) in itertools.pairwise(seen)]
    if arrival_gaps:
        run.notes.append(f"longest gap between arrivals at the bench {max(arrival_gaps):.3f} s")
    faults = {c for _, st in s.obs.arrivals_since(t0) for c in st.faults}
    if faults:
        run.notes.append(f"faults during the fuzz: {sorted(faults)}")
    run.notes.append(f"{sent} messages in {time.monotonic() - t0:.0f} s")
    p = s.config.protection
    timeout_s = (
        p.module_timeout_periods * s.config.timing.sample_period_working_s
        + s.config.comm_loss.ride_through_s
    )
    return {
        "done": sent,
        "max_pack_state_gap_s": round(max(gaps), 4) if gaps else None,
        "comm_loss_timeout_s": timeout_s,
    }


# --- Modbus ---------------------------------------------------------------------------------
def _modbus_pdu(rng: random.Random) -> bytes:
    fc = rng.randrange(256) if rng.random() < 0.6 else rng.choice(sorted(SERVED))
    layout = SERVED.get(fc)
    if layout is None or rng.random() < 0.2:
        return bytes([fc]) + rng.randbytes(rng.choice([0, 1, 3, 4, 5, rng.randint(0, 252)]))
    address = rng.choice([0, 1, 100, rng.randrange(65536), rng.randrange(300)])
    if fc in (3, 4):
        qty = rng.choice([1, 2, 10, 125, 0, 126, rng.randrange(65536)])
        return struct.pack(">BHH", fc, address, qty)
    if fc == 6:
        return struct.pack(">BHH", fc, address, rng.randrange(65536))
    qty = rng.choice([1, 2, 10, 123, 0, 124])
    count = 2 * qty if rng.random() < 0.8 else rng.randrange(256)
    body = struct.pack(">BHHB", fc, address, qty, count & 0xFF)
    return body + rng.randbytes(min(count, 253 - 6))


def _reply_problem(req: bytes, reply: bytes) -> str | None:
    """Why `reply` (a PDU) is not what the specification allows for `req`; None if it is."""
    fc = req[0]
    r = refusal(req)
    if r is not None:
        if r.exception_code is None:
            return "a reply where none is due"
        if reply != bytes([fc | 0x80, r.exception_code]):
            return f"{r.reason}: expected exception {r.exception_code}, got {reply.hex()}"
        return None
    if reply[:1] == bytes([fc | 0x80]):
        return None if len(reply) == 2 and reply[1] in (2, 3, 4) else f"exception {reply.hex()}"
    if reply[:1] != bytes([fc]):
        return f"function code {reply[:1].hex()} for {fc}"
    if fc in (3, 4):
        qty = int.from_bytes(req[3:5], "big")
        ok = len(reply) == 2 + 2 * qty and reply[1] == 2 * qty
        return None if ok else f"read reply of {len(reply)} bytes for {qty} registers"
    if fc == 6:
        return None if reply == req else "write single: not an echo"
    return None if reply == req[:5] else "write multiple: not address and quantity"


class ModbusClient:
    def __init__(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", MODBUS_PORT), timeout=3)
        self.buf = b""

    def send(self, tid: int, pdu: bytes) -> None:
        self.sock.sendall(struct.pack(">HHHB", tid, 0, len(pdu) + 1, MODBUS_UNIT) + pdu)

    def recv(self, timeout_s: float) -> tuple[int, bytes, str | None] | None:
        """(transaction id, PDU, MBAP problem) of the next reply; None on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            if len(self.buf) >= 7:
                tid, pid, length, unit = struct.unpack(">HHHB", self.buf[:7])
                if len(self.buf) >= 6 + length:
                    pdu, self.buf = self.buf[7 : 6 + length], self.buf[6 + length :]
                    bad = None if pid == 0 and unit == MODBUS_UNIT and length >= 2 else "mbap"
                    return tid, pdu, bad
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(4096)
            except TimeoutError:
                return None
            if not chunk:
                raise ConnectionError("closed by the gateway")
            self.buf += chunk

    def close(self) -> None:
        self.sock.close()


PROBE = struct.pack(">BHH", 3, 0, 1)


def modbus_fuzz(run: Run, n: int) -> dict[str, Any]:
    rng = random.Random(11)
    bad: list[str] = []
    client = ModbusClient()
    tid = 0
    done = 0
    per_fc: dict[int, int] = defaultdict(int)
    try:
        while done < n and run.left():
            tid = (tid + 1) & 0xFFFF
            pdu = _modbus_pdu(rng)
            per_fc[pdu[0]] += 1
            r = refusal(pdu)
            silent = r is not None and r.exception_code is None
            try:
                client.send(tid, pdu)
                if silent:  # a probe behind it: its reply must come first
                    tid = (tid + 1) & 0xFFFF
                    client.send(tid, PROBE)
                got = client.recv(3.0)
                if got is None:
                    bad.append(f"no reply to {pdu.hex()}")
                else:
                    rtid, reply, mbap = got
                    want = pdu if not silent else PROBE
                    problem = mbap or (
                        "transaction id" if rtid != tid else _reply_problem(want, reply)
                    )
                    if problem:
                        bad.append(f"{pdu.hex()}: {problem} ({reply.hex()})")
            except (ConnectionError, OSError) as exc:
                bad.append(f"{pdu[:8].hex()}: {exc}")
                client.close()
                time.sleep(0.2)
                client = ModbusClient()
            done += 1
    finally:
        client.close()
    if bad:
        run.notes.append(f"out of spec, first: {bad[:5]}")
    run.notes.append(f"{len(per_fc)} distinct function codes")
    return {"done": done, "modbus_out_of_spec": len(bad)}


# --- CAN ------------------------------------------------------------------------------------
def _slcan_frame(rng: random.Random) -> bytes:
    if rng.random() < 0.3:
        return b"t305" + b"8" + b"00" * 8 + b"\r"  # the inverter's keep-alive
    data = rng.randbytes(rng.randint(0, 8))
    if rng.random() < 0.5:
        head = b"t%03X" % rng.randrange(0x800)
    else:
        head = b"T%08X" % rng.randrange(0x20000000)
    return head + str(len(data)).encode() + data.hex().upper().encode() + b"\r"


JUNK: tuple[Callable[[random.Random], bytes], ...] = (
    lambda r: b"\xff\r",
    lambda r: r.randbytes(r.randint(1, 40)) + b"\r",
    lambda r: b"t12" + b"Z" * r.randint(0, 30) + b"\r",  # not hex
    lambda r: b"t1239" + b"00" * 9 + b"\r",  # dlc 9
    lambda r: b"T" + b"F" * r.randint(0, 40) + b"\r",
    lambda r: r.randbytes(r.randint(100, 600)),  # no line end for a while
    lambda r: b"\x07\r\x07z\rF\rV\r",
)


def can_junk(run: Run, n: int) -> dict[str, Any]:
    s = run.stack
    rng = random.Random(13)
    inv = s.inverter
    sent = 0
    junk = 0
    while sent < n and run.left():
        chunk = bytearray()
        for _ in range(50):
            chunk += _slcan_frame(rng)
            sent += 1
            if rng.random() < 0.3:
                chunk += rng.choice(JUNK)(rng)
                junk += 1
        inv.write(bytes(chunk))
        time.sleep(0.02)
    inv.write(b"\r")  # end any line left open
    t = time.monotonic()
    for _ in range(60):  # keep-alives again: the gateway must hear them
        inv.write(b"t3058" + b"00" * 8 + b"\r")
        if inv.frame_since(t) is not None:
            break
        time.sleep(0.1)
    flowing = wait_until(lambda: inv.frame_since(t) is not None, 10)
    if flowing:
        first = inv.frame_since(t)
        assert first is not None
        run.online_s.append(first - t)
    else:
        run.notes.append("no frame from the gateway after the junk")
    run.notes.append(f"{sent} frames and {junk} junk lines")
    return {"done": sent}


SCENARIOS: tuple[Spec, ...] = (
    Spec("broker_kill", "mosquitto SIGKILL and restart", broker_kill, 20, 3, 600, 120),
    Spec("slave_kill", "slave agent SIGKILL and restart", slave_kill, 5, 2, 300, 120),
    Spec("master_kill", "master SIGKILL and restart at 80 A", master_kill, 5, 2, 400, 150),
    Spec("net_cuts", "broker link of each service: blackhole 3 s, or RST", net_cuts,
         8, 4, 400, 240),
    Spec("command_replay", "captured `contactors close` published again", command_replay,
         50, 10, 150, 120),
    Spec("mqtt_fuzz", "fuzzed MQTT on every topic: junk, oversize, replays", mqtt_fuzz,
         100_000, 10_000, 180, 60),
    Spec("modbus_fuzz", "Modbus TCP requests, every function code", modbus_fuzz,
         10_000, 2_000, 240, 90),
    Spec("can_junk", "slcan frames with junk serial lines", can_junk, 10_000, 2_000, 120, 60),
)  # fmt: skip


def counter_delta(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]
) -> dict[str, int]:
    """Counters that moved, summed over services (those restarted count from 0 again)."""
    moved: dict[str, int] = defaultdict(int)
    watched = ("payload_oversize", "telemetry_replayed", "telemetry_too_old", "commands_duplicate",
               "can_receive_errors", "can_reopens", "payload_invalid", "payload_undecodable",
               "inbox_dropped", "commands_refused", "commands_expired")  # fmt: skip
    for service, counters in after.items():
        for k, v in counters.items():
            if any(w in k for w in watched):
                d = v - before.get(service, {}).get(k, 0)
                if d > 0:
                    moved[k] += d
    return dict(moved)


def run_scenario(stack: Stack, spec: Spec, quick: bool) -> ScenarioResult:
    n = spec.quick if quick else spec.full
    bound = spec.quick_bound_s if quick else spec.bound_s
    print(f"== {spec.name}: {n} ({spec.what}), bound {bound:g} s", flush=True)
    if stack.procs["master_core"].proc.poll() is None:
        # a fresh master: each scenario starts with the hourly budget of automatic
        # recoveries unspent (comm_loss.auto_recoveries_per_hour, kept in memory)
        stack.killed.add("master_core")
        stack.procs["master_core"].stop()
        stack.start("master_core")
    ready, _ = stack.wait_ready(60, since_wall=time.time())
    run = Run(stack, time.monotonic() + bound)
    if not ready:
        run.notes.append("the stack was not ready at the start")
    crashes_before = sum(stack.crashes.values())
    counters_before = stack.obs.counters()
    t0 = time.monotonic()
    figures = spec.run(run, n)
    took = time.monotonic() - t0
    stack.check_crashes()
    crashes = sum(stack.crashes.values()) - crashes_before
    t_end = time.monotonic()  # the counters of a status sent after the end (every 10 s)
    wait_until(lambda: all(stack.obs.online_since(name, t_end) for name in SERVICES), 15)
    if run.resets:
        run.notes.append(f"operator resets: {run.resets}")
    seen = sorted({c for _, st in stack.obs.arrivals_since(t0) for c in st.faults})
    run.notes.append(f"faults seen: {', '.join(seen) or 'none'}")
    online = sorted(run.online_s)
    result = ScenarioResult(
        name=spec.name,
        what=spec.what,
        planned=n,
        bound_s=bound,
        took_s=round(took, 1),
        back_online_p50_s=round(statistics.median(online), 3) if online else None,
        back_online_max_s=round(online[-1], 3) if online else None,
        crashes=crashes,
        counters=counter_delta(counters_before, stack.obs.counters()),
        note="; ".join(run.notes),
        **figures,
    )
    print(f"   {result.model_dump(exclude={'what'})}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced counts (CI)")
    parser.add_argument("--only", help="comma-separated scenario names (see --list)")
    parser.add_argument("--out", type=Path, default=DATA_FILE, help="results JSON")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--no-netns", action="store_true", help="run in this network namespace")
    parser.add_argument(
        "--persist-period-s", type=float, default=1.0,
        help="the master's persist_period_s (10 was the old period: SOC after a kill shows it)",
    )  # fmt: skip
    args = parser.parse_args(args_in)
    specs = list(SCENARIOS)
    if args.list:
        for sp in specs:
            print(
                f"{sp.name:16} {sp.full:>7} ({sp.quick} quick)  bound {sp.bound_s:g} s  {sp.what}"
            )
        return 0
    if args.only:
        wanted = args.only.split(",")
        unknown = set(wanted) - {sp.name for sp in specs}
        if unknown:
            parser.error(f"unknown scenarios {sorted(unknown)}")
        specs = [sp for sp in specs if sp.name in wanted]
    if not args.no_netns:
        code = enter_netns(args_in, Path(__file__).resolve(), NETNS_ENV)
        if code is not None:
            return code
    if find_mosquitto() is None:
        return skip("mosquitto not installed")
    if shutil.which("socat") is None:
        return skip("socat not installed")
    if (why := setup_loopback()) is not None:
        return skip(why)
    start = time.monotonic()
    results: list[ScenarioResult] = []
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp), persist_period_s=args.persist_period_s)
        try:
            ready, _ = stack.wait_ready(90)
            if not ready:
                for p in stack.procs.values():
                    print(p.log()[-2000:], file=sys.stderr)
                print(f"the stack never closed: {stack.obs.latest()}", file=sys.stderr)
                return 1
            for spec in specs:
                results.append(run_scenario(stack, spec, args.quick))
        finally:
            stack.close()
    mode = " --quick" if args.quick else ""
    only = f" --only {args.only}" if args.only else ""
    out = ChaosResults(
        command=f"python bench/chaos.py{mode}{only}",
        setup=f"NMC preset, 2 modules x 4 cells, load {LOAD_PROFILE}, "
        f"persist every {args.persist_period_s:g} s, "
        "comm_loss.auto_recoveries_per_hour 20, over-current warning 95 A (limits allow 80 A)",
        duration_s=round(time.monotonic() - start),
        scenarios=results,
    )
    dump(out, args.out)
    failed = {r.name: r.failures() for r in results if r.failures()}
    print(f"{len(results)} scenarios in {out.duration_s:.0f} s; failed: {failed or 'none'}")
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
