"""The master's cost for one system of 196 cells (14 modules x 14, 2 sensors each), in process:
no broker, no clock but a simulated one (issue 19).

The master's loop is replayed on a simulated clock: the slave agent sends every module of a
sample in one message at 10 Hz (13 ms after a grid slot), and the loop wakes
for each message of fresh telemetry and for each slot of its 50 ms grid. Each wake-up does what
`MasterCore.run` does after taking its inbox (`MasterCore.serve`). Prints, in µs:
- `per sample`: a wake-up for fresh telemetry alone (no slot due): the protection judgement
  (`serve`), after taking the inbox (decoding the messages and writing the arrays; the
  simulated plant's own telemetry listener runs there too, as in `hardware=simulated`);
- `per grid cycle`: a wake-up for a due slot (timeouts, own readings, estimator, limits,
  balancing, publishing at their rates, the hand-over of the periodic save);
- `per second`: the loop's CPU per simulated second (taking the inbox and serving), and that
  of the process's other threads (the SQLite writer), with the wake-ups per second;
- `snapshot`: `PackAggregator.snapshot` after a sample, and the same picture from scratch
  (`tests/master_core/pack_reference.py`, the aggregator before it became incremental);
- `pack_soc_pct`: one read of the estimator's pack SOC.
A checkout from before `serve` (every wake-up a whole cycle) is replayed the way its loop ran.
Times are CPU time (`time.thread_time`, `time.process_time`), not wall time: on a shared
machine the time the thread waits for a core is not the master's cost. Figures only: no
pass/fail. `--seconds S` of simulated time (default 100), `--batches N` racks, each its own
message per sample (default 1).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from time import thread_time as cpu_clock

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.master_core import service  # noqa: E402
from services.master_core.service import MasterCore  # noqa: E402
from services.master_core.settings import MasterCoreSettings  # noqa: E402
from services.master_core.stores import Store  # noqa: E402
from services.plant.in_process import in_process_factory  # noqa: E402
from shared.bus import InMemoryBroker, InMemoryBus  # noqa: E402
from shared.config import SystemConfig  # noqa: E402
from shared.messages import CellTelemetry, ConfigMessage, RackTelemetry  # noqa: E402
from shared.topics import CONFIG, RACK_TELEMETRY  # noqa: E402

MODULES, CELLS, SENSORS = 14, 14, 2
SAMPLE_S = 0.1
SAMPLE_PHASE_S = 0.013
"""Telemetry arrives this long after a grid slot."""
BATCH_GAP_S = 0.001
"""With `--batches` racks, each an agent publishing its modules in one message a sample, the
racks' messages reach the loop this far apart (1: one agent hosts the whole system)."""
WARMUP_S = 20.0
"""Past the start-up grace: contactors closed, estimator running."""


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def telemetry(rng: np.random.Generator, module: int, seq: int, ts: float) -> CellTelemetry:
    n = CELLS
    return CellTelemetry(
        module=module, mode="working", sample_ts=ts,
        cell_mv=rng.integers(3690, 3711, n).tolist(), cell_flags=[0] * n,
        balancing=[False] * n, temp_c=rng.uniform(24.0, 26.0, SENSORS).round(1).tolist(),
        temp_flags=[0] * SENSORS, seq=seq, boot_id="0123456789abcdef",
    )  # fmt: skip


def serve_legacy(core: MasterCore) -> str:
    """The loop before `serve`: every wake-up one whole cycle, the slot advanced when due."""
    due = core.monotonic() >= core.schedule.deadline_s
    core._cycle_counted()
    if due:
        core.schedule.advance(core.monotonic())
        return "cycle"
    return "judge"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=100.0)
    parser.add_argument("--batches", type=int, default=1, choices=range(1, MODULES + 1))
    args = parser.parse_args(argv)
    try:
        from tests.master_core.pack_reference import reference_snapshot
    except ImportError:  # a checkout from before the incremental aggregator
        reference_snapshot = None  # type: ignore[assignment]
    clock, rng = Clock(), np.random.default_rng(1)
    broker = InMemoryBroker()
    bus = InMemoryBus(broker, system="bench", service="master_core", kind="master_core")
    config = SystemConfig.from_preset(
        "NMC", system_id="bench", modules=MODULES, cells_per_module=CELLS,
        temp_sensors_per_module=SENSORS,
    )  # fmt: skip
    period_s = service.PERIOD_S
    with tempfile.TemporaryDirectory() as tmp:
        core = MasterCore(
            MasterCoreSettings(auto_close=True), bus, Store(Path(tmp) / "m.sqlite"),
            in_process_factory(bus, load_profile="constant:0"), monotonic=clock, wall=clock,
        )  # fmt: skip
        serve = getattr(core, "serve", None) or (lambda: serve_legacy(core))
        bus.start()
        peer = InMemoryBus(broker, system="bench", service="slave_agent", kind="bench")
        peer.start()
        peer.publish(CONFIG, ConfigMessage(config=config))
        bus.process()
        assert core.rt is not None
        seq = [0] * MODULES
        cost = {"cycle": 0.0, "judge": 0.0}
        inbox = {"cycle": 0.0, "judge": 0.0}
        """Taking the inbox before `serve` (decoding, the arrays; the simulated plant's own
        listener too, in this process), by what the wake-up served."""
        wakes = {"cycle": 0, "judge": 0}
        start = clock.now
        next_sample = start + SAMPLE_PHASE_S
        end = start + WARMUP_S + args.seconds
        thread0 = process0 = 0.0
        batches = np.array_split(np.arange(MODULES), args.batches)
        batch = 0
        while clock.now < end:
            # the next wake-up: a batch of telemetry or the grid's slot, whichever comes first
            clock.now = min(next_sample, core.schedule.deadline_s)
            if clock.now >= next_sample:
                rack = batches[batch].tolist()
                samples = []
                for m in rack:
                    seq[m] += 1
                    sampled = next_sample - batch * BATCH_GAP_S
                    samples.append(telemetry(rng, m, seq[m], sampled))
                peer.publish(RACK_TELEMETRY, RackTelemetry(samples=samples),
                             modules=f"{rack[0]}-{rack[-1]}")  # fmt: skip
                batch = (batch + 1) % args.batches
                next_sample += BATCH_GAP_S if batch else SAMPLE_S - (args.batches - 1) * BATCH_GAP_S
            measured = clock.now >= start + WARMUP_S
            if measured and not thread0:
                thread0, process0 = cpu_clock(), time.process_time()
            t0 = cpu_clock()
            bus.process()
            t1 = cpu_clock()
            kind = serve()
            if measured and kind is not None:
                t2 = cpu_clock()
                inbox[kind] += t1 - t0
                cost[kind] += t2 - t1
                wakes[kind] += 1
            peer.process()
        thread_s, process_s = cpu_clock() - thread0, time.process_time() - process0
        state = core.supervisor.contactor_state
        snap_s = ref_s = 0.0
        snaps = 500
        agg = core.rt.aggregator
        latest: dict[int, CellTelemetry] = {}
        for _ in range(snaps):
            clock.now += SAMPLE_S
            for m in range(MODULES):
                seq[m] += 1
                latest[m] = telemetry(rng, m, seq[m], clock.now)
                agg.on_telemetry(latest[m], clock.now)
            t0 = cpu_clock()
            agg.snapshot(())
            t1 = cpu_clock()
            if reference_snapshot is not None:
                reference_snapshot(config.topology, latest, ())
            snap_s += t1 - t0
            ref_s += cpu_clock() - t1
        est = core.rt.estimator
        reads = 20_000
        t0 = cpu_clock()
        for _ in range(reads):
            est.pack_soc_pct  # noqa: B018
        soc_us = (cpu_clock() - t0) / reads * 1e6
        core.stop()
    legacy = "" if hasattr(core, "serve") else " (before `serve`: every wake-up a whole cycle)"
    print(
        f"master, 1 system of {MODULES * CELLS} cells ({MODULES} x {CELLS}), telemetry 10 Hz "
        f"per module, grid {1000 * period_s:.0f} ms, {args.seconds:g} s; contactors {state}"
        f"{legacy}"
    )
    per = {k: 1e6 * cost[k] / max(wakes[k], 1) for k in cost}
    took = {k: 1e6 * inbox[k] / max(wakes[k], 1) for k in inbox}
    print(
        f"  per sample      {per['judge']:7.1f} µs judging, after {took['judge']:.1f} µs taking "
        f"its messages ({wakes['judge']} wake-ups for telemetry)"
    )
    print(f"  per grid cycle  {per['cycle']:7.1f} µs ({wakes['cycle']} slots)")
    loop_s = sum(inbox.values()) + sum(cost.values())
    print(
        f"  per second      {1e3 * loop_s / args.seconds:7.2f} ms the loop, "
        f"{1e3 * (process_s - thread_s) / args.seconds:.2f} ms other threads (the writer); "
        f"{sum(wakes.values()) / args.seconds:.0f} wake-ups/s"
    )
    print(f"  snapshot        {1e6 * snap_s / snaps:7.1f} µs/call after a sample")
    if reference_snapshot is not None:
        print(f"  from scratch    {1e6 * ref_s / snaps:7.1f} µs/call (the aggregator before)")
    print(f"  pack_soc_pct    {soc_us:7.2f} µs/read")


if __name__ == "__main__":
    main()
