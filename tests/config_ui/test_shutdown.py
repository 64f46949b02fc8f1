"""SIGTERM (`docker stop`, systemd, the launcher) stops the user access application cleanly:
exit status 0, its presence set offline by itself and a DISCONNECT sent, so the broker does
not have to fire the last will of a vanished client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from shared.broker import MosquittoBroker, find_mosquitto, free_port
from shared.codec import decode
from shared.messages import ServiceStatus
from shared.topics import SERVICE_STATUS

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = "shutdown"
CLIENT_ID = "config-ui-under-test"
START_S = 60.0  # two busy cores: imports and the first admin's hash take a while
STOP_S = 20.0


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    # connection messages tell a DISCONNECT from a dropped socket
    with MosquittoBroker(extra_config="connection_messages true\nlog_type all") as broker:
        yield broker


class StatusWatch:
    """The states published on config_ui's presence topic, in order."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.states: list[str] = []
        self.cond = threading.Condition()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.c.on_message = self._on_message
        self.c.connect(broker.host, broker.port)
        self.c.subscribe(SERVICE_STATUS.topic(SYSTEM, service="config_ui"), qos=1)
        self.c.loop_start()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        if not msg.payload:
            return
        status = decode(ServiceStatus, msg.topic, bytes(msg.payload))
        with self.cond:
            self.states.append(status.state)
            self.cond.notify_all()

    def wait_for(self, state: str, timeout_s: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: state in self.states, timeout_s)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def ui_env(broker: MosquittoBroker, tmp_path: Path) -> dict[str, str]:
    secret = tmp_path / "admin"
    secret.write_text("a-long-enough-admin-password\n")
    return {
        **os.environ,
        "BMS_MQTT_URL": broker.url,
        "BMS_MQTT_CLIENT_ID": CLIENT_ID,
        "BMS_SYSTEM": SYSTEM,
        "BMS_DATA_DIR": str(tmp_path),
        "BMS_UI_PORT": str(free_port()),
        "BMS_UI_ADMIN_PASSWORD_FILE": str(secret),
        "BMS_UI_SEED_CONFIG": "",
    }


def test_sigterm_exits_0_after_saying_offline_and_disconnecting(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    env = ui_env(broker, tmp_path)
    watch = StatusWatch(broker)
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.config_ui"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert watch.wait_for("online", START_S), broker.log_tail()
        time.sleep(1.0)  # let uvicorn finish starting: a signal during start-up is another case
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=STOP_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        watch.close()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    assert watch.wait_for("offline", 5.0), text
    log = broker.log_path.read_text(errors="replace")
    assert f"Client {CLIENT_ID} disconnected" in log, log[-2000:]
    assert f"Client {CLIENT_ID} closed its connection" not in log
    assert "Traceback" not in text, text


def test_sigterm_while_uvicorn_starts_stops_it(broker: MosquittoBroker, tmp_path: Path) -> None:
    """SIGTERM just before uvicorn takes the stop signals over (as the launcher's, or the
    kernel's when the launcher dies, may come): uvicorn is told, and stops once started."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.config_ui"], cwd=ROOT, env=ui_env(broker, tmp_path),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    lines: list[bytes] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # printed just before uvicorn starts
            lines.append(line)
            if line.startswith(b"UI at "):
                break
        time.sleep(0.02)  # past the check before uvicorn: into its start
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=STOP_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    text = b"".join(lines).decode(errors="replace") + out.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "Traceback" not in text, text
