"""The master's two layouts: a process per system against one process hosting every system.

    python bench/bench_master_layout.py [--systems 1,4,8] [--seconds 5] [--warmup 3]

For each layout (`process`: `python -m services.master_core` per system; `shared`: one
`python -m services.master_core` with BMS_SYSTEMS, services/master_core/host.py) and each N,
N systems of 196 cells (14 modules x 14 cells, 2 sensors a module, NMC, as
bench/bench_capacity.py) start afresh on one mosquitto: a slave agent per system (simulated
cells) and the masters (`BMS_HARDWARE=simulated`). Once every system publishes its pack state,
a warm-up, then a window of --seconds over which are taken:

- the masters' CPU (% of one core, utime + stime of their processes) and RSS (MB), in all and
  per system;
- the slowest system's pack-state rate (Hz, 10 expected) at an observer on the broker;
- the masters' loop overruns and telemetry gaps (their /metrics), a sign of a layout that
  does not keep up.

The slave agents' figures are left out: they are the same in both layouts. Figures only, no
pass/fail; the machine's other load (other helpers, CI) moves them. Runs in a network namespace
of its own (`unshare --net`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_capacity import CELLS, MODULES, cpu_s, rss_mb, scrape, system_config  # noqa: E402
from fault_matrix import EXIT_SKIP, enter_netns, skip  # noqa: E402

from shared.broker import MosquittoBroker, find_mosquitto, free_port  # noqa: E402
from shared.bus import MqttBus  # noqa: E402
from shared.messages import ConfigMessage  # noqa: E402
from shared.settings import parse_mqtt_url  # noqa: E402
from shared.topics import CONFIG  # noqa: E402

NETNS_ENV = "BMS_MASTER_LAYOUT_NETNS"
LAYOUTS = ("process", "shared")
READY_S = 30.0
READY_PER_SYSTEM_S = 8.0


@dataclass
class Row:
    layout: str
    n: int
    cpu_pct: float
    rss_mb: float
    min_state_hz: float
    overruns: float
    gaps: float

    def show(self) -> str:
        return (
            f"{self.layout:8} N={self.n:<2} masters CPU {self.cpu_pct:6.1f} %  "
            f"per system {self.cpu_pct / self.n:5.2f} %  |  RSS {self.rss_mb:6.0f} MB  "
            f"per system {self.rss_mb / self.n:5.1f} MB  |  slowest pack state "
            f"{self.min_state_hz:4.1f} Hz  overruns {self.overruns:.0f}  gaps {self.gaps:.0f}"
        )


class StateCounter:
    """Pack states per system, at a paho client of its own."""

    def __init__(self, host: str, port: int) -> None:
        self.counts: dict[str, int] = defaultdict(int)
        self.lock = threading.Lock()
        client_id = f"layout-{uuid.uuid4().hex[:8]}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.on_connect = lambda c, *_: c.subscribe("bms/v1/+/pack/state")
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.counts[msg.topic.split("/")[2]] += 1

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def spawn(kind: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", f"services.{kind}"], cwd=ROOT, env={**os.environ, **env},
        stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )  # fmt: skip


def step(
    broker: MosquittoBroker, tmp: Path, layout: str, n: int, seconds: float, warmup: float
) -> Row | None:
    systems = [f"{layout[0]}{n}s{k}" for k in range(n)]
    publisher = MqttBus(parse_mqtt_url(broker.url), system=systems[0], service="bench",
                        kind="bench")  # fmt: skip
    assert publisher.start(wait_s=10)
    for s in systems:
        publisher.publish(CONFIG, ConfigMessage(config=system_config(s)), system=s)
    base = {"BMS_MQTT_URL": broker.url, "PYTHONPATH": str(ROOT), "BMS_LOG_LEVEL": "WARNING",
            "BMS_DATA_DIR": str(tmp / layout), "BMS_HARDWARE": "simulated",
            "BMS_LOAD_PROFILE": "constant:0"}  # fmt: skip
    procs = [
        spawn("slave_agent", base | {"BMS_SYSTEM": s}, tmp / f"{s}-agent.log") for s in systems
    ]
    masters: list[tuple[subprocess.Popen[bytes], int]] = []
    groups = [[s] for s in systems] if layout == "process" else [systems]
    for group in groups:
        port = free_port()
        env = base | {"BMS_SYSTEM": group[0], "BMS_METRICS_PORT": str(port)}
        if layout == "shared":
            env["BMS_SYSTEMS"] = ",".join(group)
        masters.append((spawn("master_core", env, tmp / f"{group[0]}-master.log"), port))
    counter = StateCounter(broker.host, broker.port)
    try:
        deadline = time.monotonic() + READY_S + READY_PER_SYSTEM_S * n

        def published() -> int:  # this step's systems (the broker keeps earlier ones' states)
            return len(set(counter.snapshot()) & set(systems))

        while time.monotonic() < deadline and published() < n:
            time.sleep(0.2)
        if published() < n:
            print(f"{layout} N={n}: only {published()} systems published")
            return None
        time.sleep(warmup)
        pids = [p.pid for p, _ in masters]
        before_cpu, before_states = sum(cpu_s(p) for p in pids), counter.snapshot()
        before_metrics = [scrape(port) for _, port in masters]
        started = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - started
        cpu = (sum(cpu_s(p) for p in pids) - before_cpu) / elapsed * 100
        rss = sum(rss_mb(p) for p in pids)
        after_states = counter.snapshot()
        rates = [(after_states.get(s, 0) - before_states.get(s, 0)) / elapsed for s in systems]
        after_metrics = [scrape(port) for _, port in masters]
        pairs = list(zip(after_metrics, before_metrics, strict=True))
        delta = {
            k: sum(a.get(k, 0.0) - b.get(k, 0.0) for a, b in pairs)
            for k in ("overruns", "telemetry_gaps")
        }
        return Row(layout, n, cpu, rss, min(rates), delta["overruns"], delta["telemetry_gaps"])
    finally:
        counter.stop()
        for p in [*procs, *(m for m, _ in masters)]:
            p.terminate()
        for p in [*procs, *(m for m, _ in masters)]:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        publisher.stop(timeout_s=0.5)


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--systems", default="1,4,8", help="the N to measure, e.g. 1,4,8")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured per step")
    parser.add_argument("--warmup", type=float, default=3.0, help="after every system publishes")
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help="process,shared")
    args = parser.parse_args(args_in)
    if find_mosquitto() is None:
        skip("mosquitto not installed")
        return 0
    rc = enter_netns(args_in, Path(__file__).resolve(), NETNS_ENV)
    if rc is not None:
        return 0 if rc == EXIT_SKIP else rc
    subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
    counts = [int(x) for x in args.systems.split(",") if x.strip()]
    layouts = [x.strip() for x in args.layouts.split(",") if x.strip()]
    print(f"master layouts: systems of {MODULES * CELLS} cells at 10 Hz, {os.cpu_count()} "
          f"cores; {args.seconds:g} s a step; CPU in % of one core")  # fmt: skip
    rows: list[Row] = []
    with MosquittoBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            for layout in layouts:
                row = step(broker, Path(tmp), layout, n, args.seconds, args.warmup)
                if row is not None:
                    rows.append(row)
                    print(row.show(), flush=True)
    by = {(r.layout, r.n): r for r in rows}
    for n in counts:
        p, s = by.get(("process", n)), by.get(("shared", n))
        if p and s:
            print(f"N={n}: shared / process: CPU {s.cpu_pct / p.cpu_pct:.2f}, "
                  f"RSS {s.rss_mb / p.rss_mb:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
