"""Capacity: how many systems of 196 cells this machine carries at 10 Hz on one mosquitto.

    python bench/bench_capacity.py [--max-systems 64] [--seconds 20] [--warmup 5]

Steps N = 1, 2, 4, ... --max-systems systems; each system is 14 modules x 14 cells with 2
sensors each (NMC), run as the stack runs it: a slave agent (simulated cells), a master
(`BMS_HARDWARE=simulated`) and a Modbus gateway (TCP), each its own process, as
bench/bench_fault_reaction.py starts them. The systems of a step stay for the next one, which
adds as many again. After the new systems publish, a warm-up, then a window of --seconds over
which every figure is taken:

- CPU (% of one core) and RSS per process, by service kind (the mean over the step's
  processes), the broker's, the total of the stack (services + broker) and the services'
  share per system;
- broker messages/s in and out (mosquitto's own `$SYS/broker/messages/received|sent`);
- sequence gaps (the masters' `telemetry_gaps`), slave and master overruns (their bus
  counter `overruns`: loop slots missed), each read from the service's /metrics;
- telemetry inter-arrival p99 (per agent: one message a sample with every module) and
  telemetry latency p99 (the last module's sample time to arrival), and
  the pack state's inter-arrival p99, at an observer on the broker.

The knee is the largest N with 0 gaps, 0 overruns and a telemetry inter-arrival p99 below
150 ms; stepping stops after the first N past it. Then the same message volume (the broker's
received messages per system of the N = 1 step, at their mean size) goes through a plain paho
publisher and subscriber with msgpack payloads, doubling N until that pair loses a message or
its publisher falls behind (more than 1 % of its 100 ms ticks late): the raw ceiling, and the
ratio of the stack's knee to it. `--max-systems 0 --raw-volume MSG_S,BYTES` runs the raw pair
alone.

Runs in a network namespace of its own (`unshare --net`, as bench/chaos.py). Figures only, no
pass/fail. The observer (`bench%`) and the raw pair share the cores with the stack, and so does
whatever else runs on the machine (`others%`: the machine's busy time beyond the stack and the
bench, % of one core): a knee measured while others% is high is the machine's, not the stack's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from fault_matrix import EXIT_SKIP, enter_netns, skip  # noqa: E402

from shared.broker import MosquittoBroker, find_mosquitto, free_port  # noqa: E402
from shared.bus import MqttBus  # noqa: E402
from shared.config import SystemConfig  # noqa: E402
from shared.messages import ConfigMessage  # noqa: E402
from shared.settings import parse_mqtt_url  # noqa: E402
from shared.topics import CONFIG  # noqa: E402
from shared.topics import ROOT as TOPIC_ROOT  # noqa: E402

NETNS_ENV = "BMS_CAPACITY_NETNS"
MODULES, CELLS, SENSORS = 14, 14, 2
KINDS = ("slave_agent", "master_core", "modbus_gateway")
KNEE_INTERARRIVAL_S = 0.150
SAMPLE_PERIOD_S = 0.1
TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") / 1024
READY_TIMEOUT_S = 60.0
READY_PER_SYSTEM_S = 10.0
"""A step waits this long, and this much more per system it starts, for every system to
publish (three interpreters start per system, on cores others share)."""


# --- processes ---------------------------------------------------------------------------------
def cpu_s(pid: int) -> float:
    """utime + stime of a process (s); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB / 1024
    except OSError:
        return 0.0


def machine_busy_s() -> tuple[float, float]:
    """(busy, total) CPU time of the whole machine (s, summed over cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / TICKS, sum(fields) / TICKS


@dataclass
class Service:
    kind: str
    system: str
    proc: subprocess.Popen[bytes]
    metrics_port: int


METRIC_LINE = re.compile(r"^(\w+)\{([^}]*)\}\s+(\S+)$")


def scrape(port: int) -> dict[str, float]:
    """`overruns` and `telemetry_gaps` from a service's /metrics, summed over the systems it
    serves (one master process may host several; absent: 0)."""
    out: dict[str, float] = defaultdict(float)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {"unreachable": 1.0}
    for line in text.splitlines():
        m = METRIC_LINE.match(line)
        if m is None:
            continue
        name, labels, value = m.groups()
        if name == "bms_bus_overruns_total":
            out["overruns"] += float(value)
        elif name == "bms_service_counter_total" and 'counter="telemetry_gaps"' in labels:
            out["telemetry_gaps"] += float(value)
    return out


def system_config(system: str) -> SystemConfig:
    return SystemConfig.from_preset(
        "NMC", system_id=system, modules=MODULES, cells_per_module=CELLS,
        temp_sensors_per_module=SENSORS,
    )  # fmt: skip


def start_system(url: str, system: str, tmp: Path, publisher: MqttBus) -> list[Service]:
    publisher.publish(CONFIG, ConfigMessage(config=system_config(system)), system=system)
    services = []
    for kind in KINDS:
        port = free_port()
        env = dict(
            os.environ, BMS_MQTT_URL=url, BMS_SYSTEM=system, PYTHONPATH=str(ROOT),
            BMS_DATA_DIR=str(tmp / system), BMS_LOAD_PROFILE="constant:0",
            BMS_HARDWARE="simulated", BMS_METRICS_PORT=str(port), BMS_LOG_LEVEL="WARNING",
            BMS_TCP_PORT=str(free_port()),
        )  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{kind}"], cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=(tmp / f"{system}-{kind}.log").open("wb"),
        )  # fmt: skip
        services.append(Service(kind, system, proc, port))
    return services


# --- the observer ------------------------------------------------------------------------------
class Observer:
    """Telemetry of the first and last module and the pack state of every system, and the
    broker's message counters, on one paho client (its own thread)."""

    def __init__(self, host: str, port: int) -> None:
        self.lock = threading.Lock()
        self.seen: set[tuple[str, str]] = set()
        self.sys: dict[str, int] = {}
        self._reset()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="capacity-observer")
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()

    def _reset(self) -> None:
        self.arrivals: dict[tuple[str, str], list[float]] = defaultdict(list)
        self.latency_s: dict[str, list[float]] = defaultdict(list)

    def _on_connect(self, client: mqtt.Client, *_args: Any) -> None:
        client.subscribe(f"{TOPIC_ROOT}/+/slaves/+/telemetry", qos=0)
        client.subscribe(f"{TOPIC_ROOT}/+/pack/state", qos=0)
        for counter in ("messages/received", "messages/sent", "bytes/received"):
            client.subscribe(f"$SYS/broker/{counter}", qos=0)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        topic = msg.topic
        if topic.startswith("$SYS/"):
            with self.lock:
                self.sys[topic.removeprefix("$SYS/broker/")] = int(msg.payload)
            return
        parts = topic.split("/")  # bms/v1/<system>/slaves/<range>/telemetry | .../pack/state
        system = parts[2]
        what = "state" if parts[3] == "pack" else "rack"
        try:
            data = msgpack.unpackb(msg.payload)
        except ValueError:
            return
        if what == "state":
            stamp = data.get("ts")
        else:  # the sample of the last module (each agent samples its modules in turn)
            samples = data.get("samples") or [{}]
            stamp = samples[-1].get("sample_ts")
        with self.lock:
            self.seen.add((system, what))
            self.arrivals[(system, what)].append(now)
            if isinstance(stamp, float | int):
                self.latency_s["state" if what == "state" else "telemetry"].append(now - stamp)

    def ready(self, systems: list[str]) -> bool:
        with self.lock:
            return all((s, w) in self.seen for s in systems for w in ("state", "rack"))

    def start_window(self) -> None:
        with self.lock:
            self._reset()

    def window(self) -> dict[str, float]:
        """p99 inter-arrival (telemetry, state) and p99 latency over the window (s)."""
        with self.lock:
            arrivals, latency = dict(self.arrivals), dict(self.latency_s)
        gaps: dict[str, list[float]] = defaultdict(list)
        for (_system, what), times in arrivals.items():
            kind = "state" if what == "state" else "telemetry"
            gaps[kind] += np.diff(times).tolist()
        return {
            "tele_ia_p99": p99(gaps["telemetry"]),
            "tele_lat_p99": p99(latency.get("telemetry", [])),
            "state_ia_p99": p99(gaps["state"]),
        }

    def broker_counts(self) -> tuple[int, int, int]:
        """Messages received and sent, bytes received, since the broker started."""
        with self.lock:
            s = self.sys
            return (
                s.get("messages/received", 0),
                s.get("messages/sent", 0),
                s.get("bytes/received", 0),
            )

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def p99(values: list[float]) -> float:
    return float(np.percentile(values, 99)) if values else float("nan")


# --- one step ----------------------------------------------------------------------------------
@dataclass
class Row:
    n: int
    cpu_pct: dict[str, float] = field(default_factory=dict)
    """Mean per process, by kind; 'broker' the broker; 'total' services + broker."""
    rss_mb: dict[str, float] = field(default_factory=dict)
    msgs_in_s: float = 0.0
    msgs_out_s: float = 0.0
    bytes_in_s: float = 0.0
    gaps: int = 0
    slave_overruns: int = 0
    master_overruns: int = 0
    unreachable: int = 0
    window: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            self.gaps == 0
            and self.slave_overruns == 0
            and self.master_overruns == 0
            and self.unreachable == 0
            and self.window.get("tele_ia_p99", 1e9) < KNEE_INTERARRIVAL_S
        )


def counters(services: list[Service]) -> dict[tuple[str, str], dict[str, float]]:
    return {
        (s.kind, s.system): scrape(s.metrics_port)
        for s in services
        if s.kind in ("slave_agent", "master_core")
    }


def measure(n: int, services: list[Service], broker_pid: int, obs: Observer, seconds: float) -> Row:
    pids = {s.proc.pid: s.kind for s in services}
    pids[broker_pid] = "broker"
    c0, b0 = counters(services), obs.broker_counts()
    cpu0 = {pid: cpu_s(pid) for pid in pids}
    m0, me0 = machine_busy_s(), cpu_s(os.getpid())
    t0 = time.monotonic()
    obs.start_window()
    time.sleep(seconds)
    window = obs.window()
    elapsed = time.monotonic() - t0
    cpu1 = {pid: cpu_s(pid) for pid in pids}
    m1, me1 = machine_busy_s(), cpu_s(os.getpid())
    c1, b1 = counters(services), obs.broker_counts()
    row = Row(n=n, window=window)
    by_kind: dict[str, list[float]] = defaultdict(list)
    rss: dict[str, list[float]] = defaultdict(list)
    for pid, kind in pids.items():
        by_kind[kind].append(100.0 * (cpu1[pid] - cpu0[pid]) / elapsed)
        rss[kind].append(rss_mb(pid))
    row.cpu_pct = {k: float(np.mean(v)) for k, v in by_kind.items()}
    row.cpu_pct["total"] = float(sum(sum(v) for v in by_kind.values()))
    row.rss_mb = {k: float(np.mean(v)) for k, v in rss.items()}
    row.cpu_pct["bench"] = 100.0 * (me1 - me0) / elapsed  # the observer
    machine = 100.0 * (m1[0] - m0[0]) / elapsed
    row.cpu_pct["others"] = machine - row.cpu_pct["total"] - row.cpu_pct["bench"]
    # $SYS comes every second: the counts are a second's resolution over the window
    row.msgs_in_s = (b1[0] - b0[0]) / elapsed
    row.msgs_out_s = (b1[1] - b0[1]) / elapsed
    row.bytes_in_s = (b1[2] - b0[2]) / elapsed
    for key, after in c1.items():
        before = c0.get(key, {})
        row.unreachable += int(after.get("unreachable", 0) + before.get("unreachable", 0))
        delta = {k: int(after.get(k, 0) - before.get(k, 0)) for k in ("overruns", "telemetry_gaps")}
        if key[0] == "slave_agent":
            row.slave_overruns += delta["overruns"]
        else:
            row.master_overruns += delta["overruns"]
            row.gaps += max(delta["telemetry_gaps"], 0)
    return row


HEADER = (
    "    N  total%  a sys%  slave% / MB  master% / MB  modbus% / MB  broker%   msg/s in    out  "
    "gaps  s.ovr  m.ovr  tele ia p99  lat p99  state ia p99  bench%  others%"
)


def show(row: Row) -> str:
    c, r, w = row.cpu_pct, row.rss_mb, row.window
    cells = "  ".join(f"{c.get(k, float('nan')):6.1f}/{r.get(k, float('nan')):4.0f}" for k in KINDS)
    broker = c.get("broker", 0.0)
    per_system = (c["total"] - broker) / row.n
    flag = "" if row.ok else "  past the knee"
    if row.unreachable:
        flag += f" ({row.unreachable} /metrics unreachable)"
    return (
        f"  {row.n:3d}  {c['total']:6.1f}  {per_system:6.1f}  {cells}  {broker:7.1f}  "
        f"{row.msgs_in_s:9.0f} {row.msgs_out_s:6.0f}  {row.gaps:4d}  {row.slave_overruns:5d}  "
        f"{row.master_overruns:5d}  {1000 * w['tele_ia_p99']:8.0f} ms  "
        f"{1000 * w['tele_lat_p99']:4.0f} ms  {1000 * w['state_ia_p99']:9.0f} ms  "
        f"{c['bench']:6.1f}  {c['others']:7.1f}{flag}"
    )


def stack_steps(
    broker: MosquittoBroker, tmp: Path, max_systems: int, seconds: float, warmup_s: float
) -> list[Row]:
    rows: list[Row] = []
    obs = Observer(broker.host, broker.port)
    publisher = MqttBus(parse_mqtt_url(broker.url), system="cap0", service="bench", kind="bench")
    publisher.start(wait_s=10)
    services: list[Service] = []
    systems: list[str] = []
    n = 1
    try:
        print(HEADER, flush=True)
        while n <= max_systems:
            added = n - len(systems)
            for i in range(len(systems), n):
                systems.append(f"cap{i}")
                services += start_system(broker.url, systems[-1], tmp, publisher)
            wait_s = READY_TIMEOUT_S + READY_PER_SYSTEM_S * added
            deadline = time.monotonic() + wait_s
            while not obs.ready(systems) and time.monotonic() < deadline:
                publisher.process()
                time.sleep(0.2)
            dead = [f"{s.kind}:{s.system}" for s in services if s.proc.poll() is not None]
            if not obs.ready(systems) or dead:
                print(f"  {n:3d}  not every system publishes within {wait_s:.0f} s"
                      f"{' (exited: ' + ', '.join(dead) + ')' if dead else ''}")  # fmt: skip
                break
            time.sleep(warmup_s)
            row = measure(n, services, broker.pid or 0, obs, seconds)
            rows.append(row)
            print(show(row), flush=True)
            if not row.ok:
                break  # the first N past the knee
            n *= 2
    finally:
        for s in services:
            s.proc.terminate()
        for s in services:
            try:
                s.proc.wait(15)
            except subprocess.TimeoutExpired:
                s.proc.kill()
        obs.close()
        publisher.stop()
    return rows


# --- the raw pair ------------------------------------------------------------------------------
RAW_TOPIC = "raw"
RAW_LATE_SHARE = 0.01
"""The raw publisher keeps its rate while at most this share of its ticks start late."""


def raw_publisher(host: str, port: int, per_tick: int, size: int, seconds: float) -> None:
    """Publish `per_tick` messages (each on its own topic) every 100 ms; print the count and
    the ticks that started late (a publisher that cannot keep up)."""
    cpu0 = time.process_time()  # after the imports
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="capacity-raw-pub")
    client.connect(host, port)
    client.loop_start()
    pad = b"x" * max(size - 40, 0)
    sent = late = 0
    start = time.monotonic()
    tick = 0
    while time.monotonic() - start < seconds:
        due = start + tick * SAMPLE_PERIOD_S
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)
        elif now - due > SAMPLE_PERIOD_S / 2:
            late += 1
        for k in range(per_tick):
            payload = msgpack.packb({"ts": time.time(), "seq": tick, "pad": pad})
            client.publish(f"{RAW_TOPIC}/{k}", payload, qos=0)
            sent += 1
        tick += 1
    time.sleep(0.5)
    client.loop_stop()
    client.disconnect()
    cpu = time.process_time() - cpu0
    print(json.dumps({"sent": sent, "late_ticks": late, "ticks": tick, "pub_cpu_s": cpu}))


def raw_subscriber(host: str, port: int) -> None:
    """Count and time what arrives on raw/# until stdin closes; print the figures."""
    arrivals: dict[str, list[float]] = defaultdict(list)
    latency: list[float] = []

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        arrivals[msg.topic].append(now)
        latency.append(now - msgpack.unpackb(msg.payload)["ts"])

    cpu0 = time.process_time()  # after the imports
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="capacity-raw-sub")
    client.on_message = on_message
    client.on_connect = lambda c, *_a: c.subscribe(f"{RAW_TOPIC}/#", qos=0)
    client.connect(host, port)
    client.loop_start()
    time.sleep(1.0)
    print("ready", flush=True)
    sys.stdin.read()
    client.loop_stop()
    cpu = time.process_time() - cpu0
    gaps = [g for times in arrivals.values() for g in np.diff(times).tolist()]
    print(json.dumps({
        "received": sum(len(t) for t in arrivals.values()),
        "ia_p99": p99(gaps), "lat_p99": p99(latency), "sub_cpu_s": cpu,
    }), flush=True)  # fmt: skip


def raw_step(broker: MosquittoBroker, per_tick: int, size: int, seconds: float) -> dict[str, Any]:
    me = [sys.executable, str(Path(__file__).resolve())]
    where = ["--host", broker.host, "--port", str(broker.port)]
    sub = subprocess.Popen([*me, "--role", "raw-sub", *where], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert sub.stdout is not None and sub.stdin is not None
    sub.stdout.readline()  # ready
    pub_cmd = [*me, "--role", "raw-pub", *where, "--per-tick", str(per_tick), "--size",
               str(size), "--seconds", str(seconds)]  # fmt: skip
    b0 = cpu_s(broker.pid or 0)
    t0 = time.monotonic()
    pub = subprocess.Popen(pub_cmd, stdout=subprocess.PIPE, text=True)
    out, _ = pub.communicate(timeout=seconds + 60)
    elapsed = time.monotonic() - t0
    broker_pct = 100.0 * (cpu_s(broker.pid or 0) - b0) / elapsed
    time.sleep(1.0)
    sub_out, _ = sub.communicate("", timeout=60)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result |= json.loads(sub_out.strip().splitlines()[-1])
    result["broker_pct"] = broker_pct
    return result


def raw_ceiling(
    broker: MosquittoBroker, msgs_per_system_s: float, size: int, seconds: float, max_n: int
) -> int:
    """Double N until the raw pair loses a message or its publisher falls behind; the last N
    that passed (0: none)."""
    print(f"raw paho + msgpack pair: {msgs_per_system_s:.0f} msg/s per system of {size} B, "
          f"in bursts every {1000 * SAMPLE_PERIOD_S:.0f} ms")  # fmt: skip
    print("    N     msg/s  received  late ticks  ia p99   lat p99  broker%   pub%   sub%")
    ceiling, n = 0, 1
    while n <= max_n:
        per_tick = max(1, round(msgs_per_system_s * n * SAMPLE_PERIOD_S))
        r = raw_step(broker, per_tick, size, seconds)
        lost = r["sent"] - r["received"]
        # a ceiling of throughput: nothing lost and the publisher keeps its rate; its timing
        # (inter-arrival, latency) is shown beside, for comparison with the stack's
        ok = lost == 0 and r["late_ticks"] <= RAW_LATE_SHARE * r["ticks"]
        verdict = "" if ok else f"  fails ({lost} lost)"
        line = (
            f"  {n:4d}  {per_tick / SAMPLE_PERIOD_S:8.0f}  {r['received']:8d}  "
            f"{r['late_ticks']:10d}  {1000 * r['ia_p99']:4.0f} ms  "
            f"{1000 * r['lat_p99']:5.0f} ms  {r['broker_pct']:6.1f}  "
            f"{100 * r['pub_cpu_s'] / seconds:5.1f}  {100 * r['sub_cpu_s'] / seconds:5.1f}{verdict}"
        )
        print(line, flush=True)
        if not ok:
            break
        ceiling = n
        n *= 2
    return ceiling


# --- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-systems", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured per step")
    parser.add_argument("--warmup", type=float, default=5.0, help="after a step's start-up")
    parser.add_argument("--raw-seconds", type=float, default=10.0)
    parser.add_argument("--raw-volume", help="MSG_S,BYTES per system (with --max-systems 0)")
    parser.add_argument("--raw-max", type=int, default=1024, help="raw pair: largest N")
    parser.add_argument("--role", choices=("raw-pub", "raw-sub"), help=argparse.SUPPRESS)
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--per-tick", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(args_in)
    if args.role == "raw-pub":
        raw_publisher(args.host, args.port, args.per_tick, args.size, args.seconds)
        return 0
    if args.role == "raw-sub":
        raw_subscriber(args.host, args.port)
        return 0
    if find_mosquitto() is None:
        skip("mosquitto not installed")
        return 0
    rc = enter_netns(args_in, Path(__file__).resolve(), NETNS_ENV)
    if rc is not None:
        return 0 if rc == EXIT_SKIP else rc  # skipped (said why): `make bench` goes on
    subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
    print(f"capacity: systems of {MODULES * CELLS} cells ({MODULES} x {CELLS}, {SENSORS} "
          f"sensors a module) at 10 Hz on one mosquitto, {os.cpu_count()} cores; "
          f"{args.seconds:g} s a step; CPU in % of one core, per process; RSS in MB")  # fmt: skip
    with MosquittoBroker(extra_config="sys_interval 1") as broker, \
            tempfile.TemporaryDirectory() as tmp:  # fmt: skip
        if args.max_systems == 0 and args.raw_volume:
            rate, size = (float(x) for x in args.raw_volume.split(","))
            raw_ceiling(broker, rate, int(size), args.raw_seconds, args.raw_max)
            return 0
        rows = stack_steps(broker, Path(tmp), args.max_systems, args.seconds, args.warmup)
        if not rows:
            return 1
        passed = [r for r in rows if r.ok]
        knee = passed[-1].n if passed else 0
        cut = "" if not rows[-1].ok else f" (every step passed, up to {rows[-1].n})"
        print(f"knee: {knee} system(s){cut}")
        first = rows[0]
        msgs_per_system_s = first.msgs_in_s / first.n
        # the mean received size, MQTT framing included (600 B if the broker did not say)
        size = round(first.bytes_in_s / first.msgs_in_s) if first.msgs_in_s else 600
        ceiling = raw_ceiling(broker, msgs_per_system_s, size, args.raw_seconds, args.raw_max)
        if knee and ceiling:
            print(f"knee / raw ceiling: {knee} / {ceiling} systems = {knee / ceiling:.3f}")
        else:
            print(f"knee / raw ceiling: {knee} / {ceiling} systems")
    return 0


if __name__ == "__main__":
    sys.exit(main())
