"""Replayed telemetry on a real broker: a dead slave is not hidden by its own captured samples.

Found from outside: after the slave agent was killed, 50 captured messages per module replayed
at 10 Hz kept the contactors closed for 20 s with current flowing and no fault, and inflated
`telemetry_gaps` by 831,748. Here a third party captures the agent's telemetry with paho,
the agent is killed, and the capture is published again, byte for byte, at 10 Hz.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho

from shared.broker import MosquittoBroker
from shared.config import SystemConfig
from shared.settings import parse_mqtt_url

from .agents import Recorder, WireStack, publish_config, wait_until
from .test_master_core import Watch


def test_replayed_telemetry_of_a_killed_agent_does_not_keep_the_contactors_closed(
    mosquitto: MosquittoBroker, system_id: str, tmp_path: Path
) -> None:
    stack = WireStack(mosquitto.url, system_id, tmp_path, load_profile="constant:-10")
    config = stack.wire(
        SystemConfig.from_preset("NMC", system_id=system_id, modules=2, cells_per_module=4)
    )
    ui = publish_config(mosquitto.url, config)
    slaves = stack.agent()
    master = stack.master(data_dir=str(tmp_path / "data"))
    watch = Watch(mosquitto.url, system_id)
    rec = Recorder(mosquitto.url, system_id)
    address = parse_mqtt_url(mosquitto.url)
    captured: list[tuple[str, bytes]] = []
    lock = threading.Lock()
    spy = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"replay-{system_id}")

    def on_message(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
        with lock:
            captured.append((msg.topic, msg.payload))

    spy.on_message = on_message
    spy.connect(address.host, address.port)
    spy.subscribe(f"bms/v1/{system_id}/slaves/+/telemetry", qos=0)
    spy.loop_start()
    try:
        closed = wait_until(lambda: (s := watch.latest()) is not None and s.contactors == "closed",
                            30)  # fmt: skip
        assert closed, stack.logs()
        time.sleep(6.0)  # 60 samples of both modules captured
        with lock:
            capture = list(captured[-50:])
        assert {t for t, _ in capture} == {f"bms/v1/{system_id}/slaves/0-1/telemetry"}, {
            t for t, _ in capture
        }
        os.kill(slaves.proc.pid, signal.SIGKILL)
        killed_s = time.monotonic()
        stop = threading.Event()

        def replay() -> None:
            while not stop.is_set():
                for topic, payload in capture:  # both modules in each, 10 Hz
                    if stop.is_set():
                        return
                    spy.publish(topic, payload, qos=0)
                    time.sleep(0.1)

        replayer = threading.Thread(target=replay, daemon=True)
        replayer.start()
        try:
            periods = config.protection.module_timeout_periods
            timeout_s = periods * config.timing.sample_period_working_s + 3.0
            tripped = wait_until(
                lambda: (s := watch.latest()) is not None and s.contactors == "fault"
                and "communication_loss" in s.faults, timeout_s,
            )  # fmt: skip
            assert tripped, (time.monotonic() - killed_s, watch.latest(), master.log()[-3000:])

            def counters() -> dict[str, int]:
                statuses = rec.service_status.get("master_core") or []
                return statuses[-1].counters if statuses else {}

            def refused() -> int:
                # a capture replayed within max_sample_age_s is refused by its sequence
                # number, an older one by its age: both are counted, never as gaps
                c = counters()
                return c.get("telemetry_replayed", 0) + c.get("telemetry_too_old", 0)

            assert wait_until(lambda: refused() > 0, 15), counters()
            assert counters().get("telemetry_gaps", 0) < 100, counters()
            assert master.log().count("telemetry refused") < 20  # rate-limited, not a flood
        finally:
            stop.set()
            replayer.join(5)
    finally:
        spy.loop_stop()
        spy.disconnect()
        watch.close()
        rec.close()
        stack.stop()
        ui.stop()
