"""Helpers for system tests: run services as real processes and record what they publish."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.bus import Delivery, MqttBus
from shared.config import SystemConfig
from shared.messages import CellTelemetry, ConfigMessage, Event, ServiceStatus, SlaveStatus
from shared.settings import parse_mqtt_url
from shared.topics import CONFIG, EVENTS, SERVICE_STATUS, SLAVE_STATUS, SLAVE_TELEMETRY

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
        if name == "master_core":
            full_env.setdefault("BMS_HARDWARE", "simulated")  # the in-process plant
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
        self.bus.subscribe(SLAVE_TELEMETRY, self._on_telemetry)
        self.bus.subscribe(SLAVE_STATUS, self._on_slave_status)
        self.bus.subscribe(SERVICE_STATUS, self._on_service_status)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()
        assert self.bus.start(wait_s=10)

    def _pump(self) -> None:
        while not self._stop.is_set():
            self.bus.process(timeout_s=0.05)

    def _on_telemetry(self, d: Delivery[CellTelemetry]) -> None:
        with self.lock:
            self.telemetry[d.message.module].append(d.message)

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
