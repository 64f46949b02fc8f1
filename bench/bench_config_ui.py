"""Web application load: /api/state latency, and live-stream delivery, CPU and memory with 1,
10 and 50 dashboards open at once.

The UI runs as a real process on a real broker, fed a 196-cell system the way the master
feeds it (pack state at 10 Hz, all cells at 1 Hz). Figures only: no pass/fail.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from shared.broker import MosquittoBroker, find_mosquitto, free_port  # noqa: E402
from shared.bus import MqttBus  # noqa: E402
from shared.config import SystemConfig  # noqa: E402
from shared.messages import CellSnapshot, ConfigMessage, ModuleCells  # noqa: E402
from shared.settings import parse_mqtt_url  # noqa: E402
from shared.topics import CONFIG, PACK_CELLS, PACK_STATE  # noqa: E402
from tests.factories import pack_state  # noqa: E402

SYSTEM = "bench-ui"
PASSWORD = "bench-password-1"
CELLS = 196
LIVE_PERIOD_S = 0.25  # the default: four updates a second
STREAM_S = 5.0
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def feed(url: str, stop: threading.Event) -> None:
    bus = MqttBus(parse_mqtt_url(url), system=SYSTEM, service="master_core", kind="master_core")
    bus.start(wait_s=5)
    config = SystemConfig.from_preset("LFP", system_id=SYSTEM, modules=14, cells_per_module=14)
    bus.publish(CONFIG, ConfigMessage(config=config))
    cells = CellSnapshot(
        modules=[
            ModuleCells(
                module=m,
                fresh=True,
                cell_v=[3.3 + 0.001 * ((14 * m + i) % 50) for i in range(14)],
                cell_flags=[0] * 14,
                balancing=[(14 * m + i) % 9 == 0 for i in range(14)],
                temp_c=[25.0 + 0.1 * (4 * m + k) for k in range(4)],
                temp_flags=[0] * 4,
            )
            for m in range(CELLS // 14)
        ]
    )
    n = 0
    while not stop.is_set():
        bus.publish(PACK_STATE, pack_state(soc=50.0 + (n % 100) / 100))
        if n % 10 == 0:
            bus.publish(PACK_CELLS, cells)
        n += 1
        time.sleep(0.1)
    bus.stop()


def stream(base: str, cookies: httpx.Cookies, counts: list[int], i: int, until: float) -> None:
    with (
        httpx.Client(base_url=base, cookies=cookies, timeout=10) as client,
        client.stream("GET", "/api/live") as r,
    ):
        for line in r.iter_lines():
            if line.startswith("event: state"):
                counts[i] += 1
            if time.monotonic() >= until:
                return


def main() -> int:
    if find_mosquitto() is None:
        print("mosquitto is not installed: skipped")
        return 0
    with MosquittoBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        secret = Path(tmp) / "pw"
        secret.write_text(PASSWORD)
        port = free_port()
        env = dict(os.environ, BMS_MQTT_URL=broker.url, BMS_SYSTEM=SYSTEM, BMS_DATA_DIR=tmp,
                   BMS_UI_PORT=str(port), BMS_UI_ADMIN_PASSWORD_FILE=str(secret),
                   BMS_UI_LIVE_PERIOD_S=str(LIVE_PERIOD_S), PYTHONPATH=str(ROOT))  # fmt: skip
        proc = subprocess.Popen([sys.executable, "-m", "services.config_ui"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        stop = threading.Event()
        feeder = threading.Thread(target=feed, args=(broker.url, stop), daemon=True)
        feeder.start()
        base = f"http://127.0.0.1:{port}"
        try:
            http = httpx.Client(base_url=base, timeout=10)
            deadline = time.monotonic() + 30
            while True:
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    print("the UI did not start")
                    return 1
                time.sleep(0.2)
            r = http.post("/api/session", json={"username": "admin", "password": PASSWORD})
            r.raise_for_status()
            http.headers["X-CSRF-Token"] = r.json()["csrf_token"]
            change = {"current_password": PASSWORD, "new_password": "bench-own-password-2"}
            http.post("/api/account/password", json=change).raise_for_status()
            while http.get("/api/state").json()["cells"] is None:
                time.sleep(0.2)
            size = len(http.get("/api/state").content)
            idle_rss = rss_mb(proc.pid)
            lat = []
            for _ in range(300):
                t0 = time.perf_counter()
                http.get("/api/state").raise_for_status()
                lat.append(1000 * (time.perf_counter() - t0))
            q = statistics.quantiles(lat, n=100)
            print(f"GET /api/state, {CELLS} cells ({size / 1024:.1f} KiB): "
                  f"p50 {q[49]:.2f} ms, p99 {q[98]:.2f} ms")  # fmt: skip
            target = 1 / LIVE_PERIOD_S
            print(f"live stream, {target:.0f} updates/s configured (2/s required), "
                  f"{STREAM_S:.0f} s each; UI process idle RSS {idle_rss:.0f} MB")  # fmt: skip
            for clients in (1, 10, 50):
                counts = [0] * clients
                until = time.monotonic() + STREAM_S
                c0 = cpu_s(proc.pid)
                threads = [
                    threading.Thread(target=stream, args=(base, http.cookies, counts, i, until))
                    for i in range(clients)
                ]
                for t in threads:
                    t.start()
                time.sleep(STREAM_S * 0.8)
                rss = rss_mb(proc.pid)
                for t in threads:
                    t.join(STREAM_S + 10)
                cpu = 100 * (cpu_s(proc.pid) - c0) / STREAM_S
                rates = [c / STREAM_S for c in counts]
                print(f"  {clients:3d} clients: {min(rates):.2f}-{max(rates):.2f} updates/s each "
                      f"(worst {min(rates) / target:.2f}x of configured), UI CPU {cpu:.0f}% "
                      f"of a core, RSS {rss:.0f} MB")  # fmt: skip
        finally:
            stop.set()
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
