"""CPU cost of one slave agent process hosting 196 cells (14 modules x 14) at 10 Hz.

Runs the real agent against a real mosquitto, publishing telemetry, and reads the process's
CPU time from /proc. Prints figures only: no pass/fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.broker import MosquittoBroker, find_mosquitto  # noqa: E402
from shared.bus import MqttBus  # noqa: E402
from shared.config import SystemConfig  # noqa: E402
from shared.messages import ConfigMessage  # noqa: E402
from shared.module_samples import subscribe_module_samples  # noqa: E402
from shared.settings import parse_mqtt_url  # noqa: E402
from shared.topics import CONFIG  # noqa: E402

MEASURE_S = 20.0
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def main() -> None:
    if find_mosquitto() is None:
        print("mosquitto not installed: skipped")
        return
    with MosquittoBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        config = SystemConfig.from_preset("NMC", system_id="bench", modules=14, cells_per_module=14)
        bus = MqttBus(parse_mqtt_url(broker.url), system="bench", service="bench", kind="bench")
        received = 0

        def count(_sample: object) -> None:
            nonlocal received
            received += 1

        subscribe_module_samples(bus, count, lambda _kind, _why: None)
        bus.start(wait_s=10)
        bus.publish(CONFIG, ConfigMessage(config=config))
        env = dict(os.environ, BMS_MQTT_URL=broker.url, BMS_SYSTEM="bench", PYTHONPATH=str(ROOT))
        log_path = Path(tmp, "agent.log")
        agent = subprocess.Popen(
            [sys.executable, "-m", "services.slave_agent"], cwd=ROOT, env=env,
            stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            time.sleep(3.0)  # start-up and imports are not the steady state
            bus.process()
            received = 0
            c0, t0 = cpu_s(agent.pid), time.monotonic()
            while time.monotonic() - t0 < MEASURE_S:
                bus.process(timeout_s=0.1)
            c1, t1 = cpu_s(agent.pid), time.monotonic()
        finally:
            agent.terminate()
            agent.wait(10)
            bus.stop()
        share = (c1 - c0) / (t1 - t0)
        rate = received / (t1 - t0) / 14
        print(f"slave agent, 196 cells (14 modules x 14), {t1 - t0:.1f} s")
        print(f"  telemetry rate per module : {rate:.2f} Hz (target 10)")
        print(f"  CPU                        : {100 * share:.1f} % of one core")
        per_cycle_ms = 1000 * (c1 - c0) / (rate * (t1 - t0))
        print(f"  CPU per 196 cells at 10 Hz : {per_cycle_ms:.2f} ms per cycle")


if __name__ == "__main__":
    main()
