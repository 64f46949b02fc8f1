"""Integrations bridge CPU at 1 and 10 systems: each system publishes pack state at 10 Hz and a
98-cell snapshot at 2 Hz (the demo system), with presence; the bridge (its own process, as
deployed) mirrors JSON at the default 1 Hz, announces Home Assistant discovery, serves
/metrics (scraped every second here, as a Prometheus would at its finest), on a real
mosquitto; then the same with Sparkplug B on (one edge node, a device per system with its modules).
CPU time from /proc. Figures only: no pass/fail. `--systems 1` measures one count only."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.broker import MosquittoBroker, find_mosquitto, free_port  # noqa: E402
from shared.bus import MqttBus  # noqa: E402
from shared.messages import CellSnapshot, Limits, ModuleCells, PackState  # noqa: E402
from shared.settings import parse_mqtt_url  # noqa: E402
from shared.topics import PACK_CELLS, PACK_STATE  # noqa: E402

MEASURE_S = 20.0
WARMUP_S = 4.0
HZ = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def state(i: int) -> PackState:
    return PackState(
        soc=50.0 + (i % 100) * 0.01, soh=99.0, voltage=350.0, current=-20.0 + i % 7,
        contactors="closed", mode="working", cell_v_min=3.55, cell_v_max=3.61, cell_v_avg=3.58,
        temp_min_c=21.0, temp_max_c=27.0, temp_avg_c=24.0, alarms=[], warnings=[],
        limits=Limits(charge_voltage_v=400.0, discharge_voltage_v=300.0, charge_current_a=100.0,
                      discharge_current_a=150.0),
    )  # fmt: skip


def cells(i: int) -> CellSnapshot:
    return CellSnapshot(
        modules=[
            ModuleCells(module=m, fresh=True,
                        cell_v=[3.55 + 0.0001 * ((i + c) % 60) for c in range(14)],
                        cell_flags=[0] * 14, balancing=[False] * 14, temp_c=[24.0, 25.0],
                        temp_flags=[0, 0])
            for m in range(7)
        ]
    )  # fmt: skip


def publish(url: str, systems: list[str], stop: threading.Event) -> tuple[int, int]:
    """Every system's master at 10 Hz (state) and 2 Hz (cells), from one thread per system."""
    counts = [0, 0]

    def run(system: str) -> None:
        bus = MqttBus(parse_mqtt_url(url), system=system, service="master_core", kind="bench")
        bus.start(wait_s=10)
        i, next_t = 0, time.monotonic()
        while not stop.is_set():
            bus.publish(PACK_STATE, state(i))
            counts[0] += 1
            if i % 5 == 0:
                bus.publish(PACK_CELLS, cells(i))
                counts[1] += 1
            i += 1
            next_t += 0.1
            time.sleep(max(0.0, next_t - time.monotonic()))
        bus.stop()

    threads = [threading.Thread(target=run, args=(s,), daemon=True) for s in systems]
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:
        t.join()
    return counts[0], counts[1]


def measure(url: str, n: int, sparkplug: bool) -> None:
    systems = [f"bench{k}" for k in range(n)]
    port = free_port()
    env = dict(os.environ, BMS_MQTT_URL=url, BMS_SYSTEM=systems[0], BMS_HA_DISCOVERY="true",
               BMS_METRICS_PORT=str(port), PYTHONPATH=str(ROOT), BMS_LOG_LEVEL="WARNING",
               BMS_SPARKPLUG=str(sparkplug).lower())  # fmt: skip
    bridge = subprocess.Popen([sys.executable, "-m", "services.integrations"], cwd=ROOT, env=env)
    stop = threading.Event()
    result: list[tuple[int, int]] = []
    pub = threading.Thread(target=lambda: result.append(publish(url, systems, stop)))
    pub.start()
    try:
        time.sleep(WARMUP_S)
        c0, t0 = cpu_s(bridge.pid), time.monotonic()
        scrape_bytes = 0
        while time.monotonic() - t0 < MEASURE_S:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                scrape_bytes = len(r.read())
            time.sleep(1.0)
        cpu = 100 * (cpu_s(bridge.pid) - c0) / (time.monotonic() - t0)
    finally:
        stop.set()
        pub.join()
        bridge.terminate()
        bridge.wait(10)
    states, snaps = result[0]
    label = "with Sparkplug B" if sparkplug else "without Sparkplug"
    print(f"{n:2d} system(s), {label}: bridge CPU {cpu:5.1f}% of one core; in: {states} states, "
          f"{snaps} cell snapshots over {WARMUP_S + MEASURE_S:.0f} s; "
          f"/metrics {scrape_bytes} bytes")  # fmt: skip


def main() -> None:
    if find_mosquitto() is None:
        print("mosquitto not installed: skipped")
        return
    counts = (1, 10)
    if "--systems" in sys.argv:
        counts = (int(sys.argv[sys.argv.index("--systems") + 1]),)
    with MosquittoBroker() as broker:
        for n in counts:
            for sparkplug in (False, True):
                measure(broker.url, n, sparkplug)


if __name__ == "__main__":
    main()
