"""Helpers for system tests: run services as real processes and record what they publish."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from services.plant.inject import inject_main
from services.plant.settings import DEFAULT_BOARD_MAP
from shared.broker import free_port
from shared.bus import Delivery, MqttBus
from shared.can_bus import multicast_problem
from shared.config import SystemConfig, plant_demo_config
from shared.config.system import PLANT_SYSTEMS_MAX
from shared.messages import CellTelemetry, ConfigMessage, Event, ServiceStatus, SlaveStatus
from shared.module_samples import subscribe_module_samples
from shared.settings import parse_mqtt_url
from shared.topics import CONFIG, EVENTS, SERVICE_STATUS, SLAVE_STATUS

ROOT = Path(__file__).resolve().parents[2]


def wait_until(predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return predicate()


class ServiceProcess:
    """`python -m services.<name>` as its own process, with BMS_* settings."""

    def __init__(
        self, name: str, url: str, system: str, log_dir: Path, *, label: str = "", **env: str
    ) -> None:
        """`label` tells apart the logs of several instances of one service (e.g. racks)."""
        self.log_path = log_dir / f"{name}{label}-{system}.log"
        self._log = self.log_path.open("wb")
        full_env = dict(os.environ, BMS_MQTT_URL=url, BMS_SYSTEM=system, PYTHONPATH=str(ROOT))
        # The master runs on its devices (its default) unless a test asks for `simulated`, the
        # in-process plant, and says why: system tests use the wire path (`PlantWiring`).
        full_env.update({f"BMS_{k.upper()}": v for k, v in env.items()})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"], cwd=ROOT, env=full_env,
            stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class Recorder:
    """Subscribes like a third party would and keeps everything it received."""

    def __init__(self, url: str, system: str) -> None:
        self.bus = MqttBus(parse_mqtt_url(url), system=system, service="recorder", kind="test")
        self.telemetry: dict[int, list[CellTelemetry]] = defaultdict(list)
        self.slave_status: dict[int, list[SlaveStatus]] = defaultdict(list)
        self.service_status: dict[str, list[ServiceStatus]] = defaultdict(list)
        self.lock = threading.Lock()
        self.refused: list[tuple[str, str]] = []
        subscribe_module_samples(self.bus, self._on_telemetry, self._on_refused)
        self.bus.subscribe(SLAVE_STATUS, self._on_slave_status)
        self.bus.subscribe(SERVICE_STATUS, self._on_service_status)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()
        assert self.bus.start(wait_s=10)

    def _pump(self) -> None:
        while not self._stop.is_set():
            self.bus.process(timeout_s=0.05)

    def _on_telemetry(self, sample: CellTelemetry) -> None:
        with self.lock:
            self.telemetry[sample.module].append(sample)

    def _on_refused(self, kind: str, why: str) -> None:
        with self.lock:
            self.refused.append((kind, why))

    def _on_slave_status(self, d: Delivery[SlaveStatus]) -> None:
        with self.lock:
            self.slave_status[d.message.module].append(d.message)

    def _on_service_status(self, d: Delivery[ServiceStatus]) -> None:
        with self.lock:
            self.service_status[d.params["service"]].append(d.message)

    def latest(self, module: int) -> CellTelemetry | None:
        with self.lock:
            samples = self.telemetry.get(module)
            return samples[-1] if samples else None

    def since(self, module: int, ts: float) -> list[CellTelemetry]:
        with self.lock:
            return [t for t in self.telemetry.get(module, []) if t.sample_ts >= ts]

    def close(self) -> None:
        self._stop.set()
        self.bus.stop(timeout_s=0.5)


def publish_config(url: str, config: SystemConfig) -> MqttBus:
    bus = MqttBus(parse_mqtt_url(url), system=config.system_id, service="ui", kind="test")
    assert bus.start(wait_s=10)
    bus.publish(CONFIG, ConfigMessage(config=config))
    return bus


def publish_and_wait(bus: MqttBus, spec: Any, message: Any, **params: Any) -> None:
    bus.publish(spec, message, **params)
    time.sleep(0.05)


def assert_event_crosses(sender: MqttBus, receiver: MqttBus, code: str) -> None:
    """An event published by `sender` reaches `receiver` (both started) within 5 s."""
    got: list[str] = []
    receiver.subscribe(EVENTS, lambda d: got.append(d.message.code))
    time.sleep(0.3)
    sender.publish(EVENTS, Event(level="info", kind="info", code=code))
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        receiver.process(0.1)
    assert got == [code]


# --- software in the loop: the plant on the wire -----------------------------------------------

ConfigT = TypeVar("ConfigT", SystemConfig, dict[str, Any])
PLANT_TEST_GROUP = "239.{first}.{hi}.{lo}"
"""udp_multicast groups of a test's plant: buses 1-3 (inverter, IVT-S, iso165C) on
239.81-83.x.y, x.y from the system id, away from `make run`'s 239.74.* and the probe group.
The CAN buses open with IP_MULTICAST_ALL off (`shared.can_bus`), so the group alone keeps a
test from hearing another test's (or a stale process's) frames."""


def skip_without_multicast() -> None:
    """The wire path needs udp_multicast frames to come back (a multicast route)."""
    problem = multicast_problem()
    if problem is not None:
        pytest.skip(f"{problem}: ip link set lo multicast on; ip route add 224.0.0.0/4 dev lo")


@dataclass(frozen=True)
class PlantWiring:
    """Where one test's plant serves its devices: free TCP ports, groups of its own.

    The same wiring as `shared.config.plant_demo_config` (boards and relay module on Modbus
    TCP, IVT-S and iso165C on udp_multicast, the inverter on `interfaces.can`), but per test,
    so consecutive tests and left-over processes never share a port or a CAN bus."""

    system_id: str
    boards_port: int
    relay_port: int
    inverter_group: str
    ivt_group: str
    iso_group: str

    @classmethod
    def for_system(cls, system_id: str) -> PlantWiring:
        digest = hashlib.sha256(system_id.encode()).digest()
        hi, lo = digest[0], digest[1]
        group = [PLANT_TEST_GROUP.format(first=80 + bus, hi=hi, lo=lo) for bus in (1, 2, 3)]
        boards, relay = free_port(), free_port()
        while relay == boards:
            relay = free_port()
        return cls(system_id, boards, relay, *group)

    @classmethod
    def demo_index(cls, system_id: str) -> tuple[PlantWiring, int]:
        """The wiring of `plant_demo_config(system_id, index)` (the UI's `plant` seed), at an
        index from the system id in the upper half of the range (away from `make run`'s
        systems) whose relay port is free; the boards on a free port."""
        config = None
        start = int(hashlib.sha256(system_id.encode()).hexdigest(), 16)
        half = PLANT_SYSTEMS_MAX // 2
        for k in range(half):
            index = half + (start + k) % half
            config = plant_demo_config(system_id, index)
            if _port_free(config.contactors.io.tcp_port):
                break
        assert config is not None
        wiring = cls(
            system_id, free_port(), config.contactors.io.tcp_port,
            config.interfaces.can.channel, config.current_sensor.can.channel,
            config.insulation_monitor.can.channel,
        )  # fmt: skip
        return wiring, index

    def wire(self, config: ConfigT, *, inverter_bus: bool = False) -> ConfigT:
        """`config` with every device where this plant serves it; `inverter_bus`: also put
        `interfaces.can` (the CAN gateway's bus) on the plant inverter's group."""
        data = config.model_dump(mode="json") if isinstance(config, SystemConfig) else config
        data = {**data}
        sensor = {**data["current_sensor"]}
        sensor["can"] = {**sensor["can"], "interface": "udp_multicast", "channel": self.ivt_group}
        data["current_sensor"] = sensor
        monitor = {**data["insulation_monitor"], "driver": "iso165c"}
        monitor["can"] = {**monitor["can"], "interface": "udp_multicast",
                          "channel": self.iso_group}  # fmt: skip
        data["insulation_monitor"] = monitor
        contactors = {**data["contactors"]}
        contactors["io"] = {**contactors["io"], "transport": "tcp", "host": "127.0.0.1",
                            "tcp_port": self.relay_port}  # fmt: skip
        data["contactors"] = contactors
        if inverter_bus:
            interfaces = {**data["interfaces"]}
            bus = {"enabled": True, "interface": "udp_multicast", "channel": self.inverter_group}
            interfaces["can"] = {**interfaces["can"], **bus}
            data["interfaces"] = interfaces
        if isinstance(config, SystemConfig):
            return SystemConfig.model_validate(data)
        return data

    def agent_env(self) -> dict[str, str]:
        """A slave agent reading the plant's boards (`--driver modbus`)."""
        return {
            "driver": "modbus",
            "modbus_port": f"tcp://127.0.0.1:{self.boards_port}",
            "modbus_map_file": DEFAULT_BOARD_MAP,
        }

    def plant_env(self) -> dict[str, str]:
        return {"boards_port": str(self.boards_port), "modbus_host": "127.0.0.1"}


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def inject_plant(url: str, system: str, *args: str) -> None:
    """`python -m services.plant inject ARGS` (its own code, without a fork per fault)."""
    assert inject_main([*args, "--mqtt-url", url, "--system", system]) == 0


class WireStack:
    """The master on the wire, as `make run` runs it: `python -m services.plant` (boards, relay
    module, IVT-S, iso165C; optionally an inverter), slave agents reading its boards over
    Modbus TCP, and `python -m services.master_core` with `BMS_HARDWARE=devices`.

    The caller publishes the configuration through `wiring.wire(config)`. `load_profile` is
    what the plant draws; with `inverter=False` (no CAN gateway on the plant's inverter bus)
    the plant draws it unclipped whenever the contactors are closed, as the in-process
    inverter drew it within the limits. Faults go to the plant (`inject`)."""

    def __init__(
        self,
        url: str,
        system_id: str,
        log_dir: Path,
        *,
        load_profile: str = "constant:0",
        inverter: bool = False,
        initial_soc_pct: float = 60.0,
        wiring: PlantWiring | None = None,
        **plant_env: str,
    ) -> None:
        skip_without_multicast()
        self.url, self.system, self.log_dir = url, system_id, log_dir
        self.wiring = wiring or PlantWiring.for_system(system_id)
        self.procs: dict[str, ServiceProcess] = {}
        env = self.wiring.plant_env() | {
            "load_profile": load_profile,
            "inverter": "true" if inverter else "false",
            "initial_soc_pct": str(initial_soc_pct),
        }
        self.plant = ServiceProcess("plant", url, system_id, log_dir, **(env | plant_env))

    def wire(self, config: ConfigT, *, inverter_bus: bool = False) -> ConfigT:
        return self.wiring.wire(config, inverter_bus=inverter_bus)

    def agent(self, label: str = "", **env: str) -> ServiceProcess:
        """A slave agent on the plant's boards (`modules="0-1"` for a rack of its own)."""
        proc = ServiceProcess("slave_agent", self.url, self.system, self.log_dir, label=label,
                              **(self.wiring.agent_env() | env))  # fmt: skip
        self.procs[f"slave_agent{label}"] = proc
        return proc

    def master(self, label: str = "", **env: str) -> ServiceProcess:
        proc = ServiceProcess("master_core", self.url, self.system, self.log_dir, label=label,
                              **({"hardware": "devices"} | env))  # fmt: skip
        self.procs[f"master_core{label}"] = proc
        return proc

    def service(self, name: str, label: str = "", **env: str) -> ServiceProcess:
        """Another service of the system (a gateway, the UI), stopped with the stack."""
        proc = ServiceProcess(name, self.url, self.system, self.log_dir, label=label, **env)
        self.procs[f"{name}{label}"] = proc
        return proc

    def inject(self, *args: str) -> None:
        inject_plant(self.url, self.system, *args)

    def logs(self, tail: int = 3000) -> str:
        procs = {**self.procs, "plant": self.plant}  # the plant last: a CI tail shows it
        return "\n".join(f"--- {n}\n{p.log()[-tail:]}" for n, p in procs.items())

    def stop(self) -> None:
        """Stops every process it started (the master first: it releases the coils)."""
        for name in sorted(self.procs, key=lambda n: not n.startswith("master_core")):
            self.procs[name].stop()
        self.plant.stop()
