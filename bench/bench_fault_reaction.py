"""Fault-reaction latency: injected cell over-voltage -> contactors open, for 1, 8 and 16 systems.

Each system runs a real slave agent (simulated cells) and a real master with its devices
simulated in its process (`BMS_HARDWARE=simulated`: the contactors close without a plant, so
the trip measured is the protection's, not a missing device's) on one mosquitto. A cell is
driven over its fault threshold at 0.5 V/s; the trip is the first pack state with the
contactors in fault by cell_overvoltage alone (a round that tripped on another code, or
measured nothing, is counted and left out). Figures only: no pass/fail.

The overhead beyond the configured delay is measured from the crossing itself: the instant the
simulated cell's true voltage (the agent's ground truth, published with every sample here)
crossed the threshold, interpolated between the two truth samples around it. It is split into
what the sampling costs and what the master costs (all times are time stamps on one machine's
wall clock: the agent's `sample_ts`, the pack state's `ts`):

* sampling: the crossing to the first telemetry sample beyond the threshold (up to one sample
  period, 100 ms);
* rounding: the delay counted in sample time ends at the first sample at least `delay_s`
  after that one (`level_monitor.py`): up to one more period past the delay;
* master: that sample's time stamp to the trip (judgement, coil write, pack state): the
  master's own reaction, which is what the loop timing decides.

`--systems N` (repeatable; default 1, 8 and 16): the systems run together. BENCH_ROUNDS trips
per system (default 5).

`--bridge [--systems N]` (default 1): the same figure with the integrations bridge off, then on
with everything that costs (JSON mirror, Home Assistant discovery with per-cell sensors,
Sparkplug B with module folders, /metrics), its own process on the same broker and cores as
the master; prints both and their ratio (issue 16: turning the bridge on must not change the
master's fault reaction). Off and on alternate BENCH_BLOCKS times (default 2), BENCH_ROUNDS
trips per system each time (default 5).
"""

from __future__ import annotations

import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.broker import MosquittoBroker, find_mosquitto  # noqa: E402
from shared.bus import Delivery, MqttBus  # noqa: E402
from shared.commands import CommandClient  # noqa: E402
from shared.config import SystemConfig  # noqa: E402
from shared.messages import (  # noqa: E402
    CellTelemetry,
    ConfigMessage,
    GroundTruth,
    PackState,
    ResetFaultsArgs,
    SimControl,
)
from shared.module_samples import subscribe_module_samples  # noqa: E402
from shared.settings import parse_mqtt_url  # noqa: E402
from shared.topics import CONFIG, PACK_STATE, SIM_CONTROL, SIM_TRUTH  # noqa: E402

DRIFT_V_PER_S = 0.5
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
BLOCKS = int(os.environ.get("BENCH_BLOCKS", "2"))
"""With --bridge: off and on alternate this many times, BENCH_ROUNDS trips each."""
MODULE, CHANNEL = 1, 2
"""The drifting cell."""
TIME_TOLERANCE_S = 1e-6
"""As `level_monitor.TIME_TOLERANCE_S`: the delay ends at a sample this close to it."""


@dataclass(frozen=True)
class Trip:
    """One measured trip, wall-clock time stamps (s)."""

    crossed_s: float
    """The true voltage crossed the threshold (interpolated between truth samples)."""
    first_sample_s: float
    """The first telemetry sample beyond the threshold."""
    completing_sample_s: float | None
    """The first sample at least the delay after that one, every sample since beyond; None
    when the trip came before any such sample (an early trip)."""
    tripped_s: float

    def parts(self, delay_s: float) -> dict[str, float]:
        """Overhead beyond the delay from the crossing, and its parts (s)."""
        out = {
            "from the crossing": self.tripped_s - self.crossed_s - delay_s,
            "from the first sample": self.tripped_s - self.first_sample_s - delay_s,
            "sampling": self.first_sample_s - self.crossed_s,
        }
        if self.completing_sample_s is not None:
            out["rounding"] = self.completing_sample_s - self.first_sample_s - delay_s
            out["master"] = self.tripped_s - self.completing_sample_s
        return out


class System:
    def __init__(self, url: str, system: str, tmp: Path) -> None:
        self.id = system
        self.config = SystemConfig.from_preset(
            "NMC", system_id=system, modules=2, cells_per_module=4
        )
        self.fault = self.config.protection.cell_overvoltage.fault
        self.bus = MqttBus(parse_mqtt_url(url), system=system, service="bench", kind="bench")
        self.delay_s = self.fault.delay_s
        self.threshold_v = self.fault.threshold
        self.truth: list[tuple[float, float]] = []
        """(sample_ts, true voltage) of the drifting cell this round."""
        self.samples: list[tuple[float, float]] = []
        """(sample_ts, reading V) of the drifting cell this round."""
        self.crossed: float | None = None
        self.tripped: float | None = None
        self.other_trips = 0
        """Trips by another code than cell_overvoltage (not a measurement of its delay)."""
        self.state: PackState | None = None
        subscribe_module_samples(self.bus, self._telemetry, lambda _kind, _why: None)
        self.bus.subscribe(SIM_TRUTH, self._truth, module=MODULE)
        self.bus.subscribe(PACK_STATE, self._state)
        self.client = CommandClient(self.bus)
        self.bus.start(wait_s=10)
        self.bus.publish(CONFIG, ConfigMessage(config=self.config))
        env = dict(os.environ, BMS_MQTT_URL=url, BMS_SYSTEM=system, PYTHONPATH=str(ROOT),
                   BMS_DATA_DIR=str(tmp / system), BMS_LOAD_PROFILE="constant:0",
                   BMS_HARDWARE="simulated", BMS_TRUTH_PERIOD_S="0.01")  # fmt: skip
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for name in ("slave_agent", "master_core")
        ]

    def start_round(self) -> None:
        self.truth, self.samples = [], []
        self.crossed = self.tripped = None

    def _telemetry(self, sample: CellTelemetry) -> None:
        if sample.module != MODULE:
            return
        self.samples.append((sample.sample_ts, sample.cell_mv[CHANNEL] / 1000.0))
        if self.crossed is None and sample.cell_mv[CHANNEL] > self.threshold_v * 1000:
            self.crossed = sample.sample_ts

    def _truth(self, d: Delivery[GroundTruth]) -> None:
        self.truth.append((d.message.sample_ts, d.message.cell_v[CHANNEL]))

    def measured(self) -> Trip | None:
        """This round's trip, or None when it measured nothing."""
        if self.tripped is None or self.tripped < 0 or self.crossed is None:
            return None
        crossed = true_crossing(self.truth, self.threshold_v)
        if crossed is None:
            return None
        first = self.crossed
        completing = None
        for ts, v in sorted(self.samples):
            if ts < first:
                continue
            if not v > self.threshold_v:
                break  # a dip restarts the delay: this round measures nothing clean
            if ts - first >= self.delay_s - TIME_TOLERANCE_S:
                completing = ts
                break
        return Trip(crossed, first, completing, self.tripped)

    def _state(self, d: Delivery[PackState]) -> None:
        self.state = d.message
        if self.crossed is not None and self.tripped is None and d.message.contactors == "fault":
            if set(d.message.faults) == {"cell_overvoltage"}:
                self.tripped = d.message.ts
            else:
                self.other_trips += 1
                self.tripped = -1.0  # ends the round, measures nothing

    def inject(self, fault: str, value: float | None = None) -> None:
        control = SimControl(fault=fault, module=MODULE, channel=CHANNEL, value=value)  # type: ignore[arg-type]
        self.bus.publish(SIM_CONTROL, control)

    def close(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:  # an overloaded machine: never leave it running
                p.kill()
                p.wait()
        self.bus.stop()


def true_crossing(truth: list[tuple[float, float]], threshold_v: float) -> float | None:
    """When the true voltage first went above `threshold_v`: linear between the last truth
    sample at or below it and the next (the drift is linear in time)."""
    ordered = sorted(truth)
    for (t0, v0), (t1, v1) in itertools.pairwise(ordered):
        if v0 <= threshold_v < v1:
            return t0 + (threshold_v - v0) / (v1 - v0) * (t1 - t0)
    return None


def pump(systems: list[System], seconds: float, until: object = None) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for s in systems:
            s.bus.process()
        if callable(until) and until():
            return
        time.sleep(0.005)


BRIDGE_ENV = {
    "BMS_JSON_MIRROR": "true",
    "BMS_HA_DISCOVERY": "true",
    "BMS_HA_CELL_SENSORS": "true",
    "BMS_SPARKPLUG": "true",
    "BMS_SPARKPLUG_MODULES": "true",
    "BMS_SPARKPLUG_EDGE_NODE": "bench-site",
    "BMS_METRICS_PORT": "0",
    "BMS_LOG_LEVEL": "WARNING",
}
"""The bridge with every integration on (alerts need a receiver: left out)."""


def start_bridge(url: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, BMS_MQTT_URL=url, BMS_SYSTEM="bench0", PYTHONPATH=str(ROOT),
               **BRIDGE_ENV)  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "services.integrations"], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def run(n: int, url: str, tmp: Path, bridge: bool = False) -> list[Trip]:
    proc = start_bridge(url) if bridge else None
    systems = [System(url, f"bench{i}", tmp) for i in range(n)]
    latencies: list[Trip] = []
    missed = 0
    try:
        pump(systems, 60, lambda: all(s.state and s.state.contactors == "closed" for s in systems))
        for _ in range(ROUNDS):
            for s in systems:
                s.start_round()
                # 0.5 V/s: 50 mV a sample, so the crossing is a sample's time; slow enough that
                # the cell is still in its measurement range when the delay ends (a faster
                # drift reaches 4.95 V first and measures the instant out-of-range trip)
                s.inject("cell_drift", DRIFT_V_PER_S)
            pump(systems, 10, lambda: all(s.tripped for s in systems))
            pump(systems, 0.3)  # the samples sent around the trip, for the parts
            measured = [t for t in (s.measured() for s in systems) if t is not None]
            missed += len(systems) - len(measured)
            latencies += measured
            for s in systems:
                s.inject("clear")
            pump(systems, 1.5)
            # a reset is refused while a cell is still above its release (10 masters on two
            # cores take longer): ask again every 2 s until every system has closed again, or
            # the next round would start on open contactors and measure nothing
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                open_ = [s for s in systems if not (s.state and s.state.contactors == "closed")]
                if not open_:
                    break
                for s in open_:
                    s.client.send("reset_faults", ResetFaultsArgs())
                pump(systems, 2.0, lambda: all(
                    s.state and s.state.contactors == "closed" for s in systems
                ))  # fmt: skip
    finally:
        others = sum(s.other_trips for s in systems)
        if missed:
            print(f"  ({missed} round(s) without a measurement, {others} of them a trip by "
                  f"another code than cell_overvoltage)")  # fmt: skip
        for s in systems:
            s.close()
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    return latencies


BOOTSTRAP_RESAMPLES = 10_000


def median_difference_ci(
    off: list[float], on: list[float], seed: int = 1
) -> tuple[float, float, float]:
    """The difference of medians on - off (s) and its 95 % bootstrap interval (percentile
    method, each group resampled with replacement): where the sample falls in the master's
    cycle spreads each trip by up to a period, so one median against another says little
    without the interval."""
    import numpy as np

    rng = np.random.default_rng(seed)
    a, b = np.asarray(off), np.asarray(on)
    ia = rng.integers(0, len(a), (BOOTSTRAP_RESAMPLES, len(a)))
    ib = rng.integers(0, len(b), (BOOTSTRAP_RESAMPLES, len(b)))
    diffs = np.median(b[ib], axis=1) - np.median(a[ia], axis=1)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(np.median(b) - np.median(a)), float(low), float(high)


def percentiles(latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def report(n: int, trips: list[Trip], delay_s: float, label: str = "") -> None:
    if not trips:
        print(f"{n:>2} system(s){label}: no trips measured")
        return
    early = sum(t.completing_sample_s is None for t in trips)
    note = f"; {early} before the delay had passed in sample time" if early else ""
    print(f"{n:>2} system(s){label}, {len(trips)} trips, overhead beyond the "
          f"{1000 * delay_s:.0f} ms delay (ms){note}:")  # fmt: skip
    names = ("from the crossing", "sampling", "rounding", "master", "from the first sample")
    for name in names:
        values = [p[name] for p in (t.parts(delay_s) for t in trips) if name in p]
        if values:
            p50, p99 = percentiles(values)
            print(f"    {name:<22} p50 {1000 * p50:6.1f}  p99 {1000 * p99:6.1f}  "
                  f"max {1000 * max(values):6.1f}")  # fmt: skip


def main() -> None:
    if find_mosquitto() is None:
        print("mosquitto not installed: skipped")
        return
    delay = SystemConfig.from_preset(
        "NMC", modules=2, cells_per_module=4
    ).protection.cell_overvoltage.fault.delay_s
    print("fault reaction: cell over-voltage -> contactors open (sample 0.1 s)")
    if "--bridge" in sys.argv:
        n = int(sys.argv[sys.argv.index("--systems") + 1]) if "--systems" in sys.argv else 1
        off: list[Trip] = []
        on: list[Trip] = []
        with MosquittoBroker() as broker, tempfile.TemporaryDirectory() as tmp:
            for block in range(BLOCKS):  # alternated, so a drift of the machine hits both
                off += run(n, broker.url, Path(tmp) / f"off{block}")
                on += run(n, broker.url, Path(tmp) / f"on{block}", bridge=True)
        report(n, off, delay, ", bridge off")
        report(n, on, delay, ", bridge on (JSON, HA with cells, Sparkplug with modules)")
        if off and on:
            off_s = [t.tripped_s - t.first_sample_s for t in off]
            on_s = [t.tripped_s - t.first_sample_s for t in on]
            (off50, off99), (on50, on99) = percentiles(off_s), percentiles(on_s)
            print(f"ratio on/off: p50 {on50 / off50:.3f}  p99 {on99 / off99:.3f}; overhead "
                  f"beyond the delay on/off: p50 {1000 * (on50 - delay):.0f} / "
                  f"{1000 * (off50 - delay):.0f} ms, p99 {1000 * (on99 - delay):.0f} / "
                  f"{1000 * (off99 - delay):.0f} ms")  # fmt: skip
            diff, low, high = median_difference_ci(off_s, on_s)
            print(f"p50 on - off: {1000 * diff:+.0f} ms, 95 % bootstrap interval "
                  f"[{1000 * low:+.0f}, {1000 * high:+.0f}] ms ({len(off)} / {len(on)} trips); "
                  f"an interval that holds 0 shows no change the trips can resolve")  # fmt: skip
        return
    counts = [int(sys.argv[i + 1]) for i, a in enumerate(sys.argv) if a == "--systems"]
    with MosquittoBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        for n in counts or [1, 8, 16]:
            report(n, run(n, broker.url, Path(tmp) / str(n)), delay)


if __name__ == "__main__":
    main()
