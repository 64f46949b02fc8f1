"""The master's snapshot and cycle cost for one system of 196 cells (14 modules x 14, 2
sensors each), in process: no broker, no clock but a simulated one (issue 19).

Telemetry of every module arrives at 10 Hz, all modules of a sample together as the slave
agent publishes them, and the master cycles every 25 ms (about the 40 cycles/s measured on the
running master: fresh telemetry starts a cycle, the fixed grid the others). Prints, in µs per call:
- `snapshot`: `PackAggregator.snapshot` at the loop's pattern (a sample or none since the last
  cycle), and the same picture from scratch (`tests/master_core/pack_reference.py`, the
  aggregator before it became incremental), both on the same samples;
- `cycle`: `MasterCore.cycle` (aggregate, estimate, protect, publish on an in-memory bus);
- `pack_soc_pct`: one read of the estimator's pack SOC.
Times are the thread's CPU time (`time.thread_time`), not wall time: on a shared machine the
time the thread waits for a core is not the master's cost. Figures only: no pass/fail.
`--cycles N` (default 4000).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from time import thread_time as cpu_clock

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.master_core.service import MasterCore  # noqa: E402
from services.master_core.settings import MasterCoreSettings  # noqa: E402
from services.master_core.stores import Store  # noqa: E402
from services.plant.in_process import in_process_factory  # noqa: E402
from shared.bus import InMemoryBroker, InMemoryBus  # noqa: E402
from shared.config import SystemConfig  # noqa: E402
from shared.messages import CellTelemetry, ConfigMessage  # noqa: E402
from shared.topics import CONFIG, SLAVE_TELEMETRY  # noqa: E402

MODULES, CELLS, SENSORS = 14, 14, 2
CYCLE_S = 0.025
SAMPLE_S = 0.1


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=4000)
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
    with tempfile.TemporaryDirectory() as tmp:
        core = MasterCore(
            MasterCoreSettings(auto_close=True), bus, Store(Path(tmp) / "m.sqlite"),
            in_process_factory(bus, load_profile="constant:0"), monotonic=clock, wall=clock,
        )  # fmt: skip
        bus.start()
        peer = InMemoryBus(broker, system="bench", service="slave_agent", kind="bench")
        peer.start()
        peer.publish(CONFIG, ConfigMessage(config=config))
        bus.process()
        assert core.rt is not None
        latest: dict[int, CellTelemetry] = {}
        seq = [0] * MODULES
        snap_s = ref_s = 0.0
        snaps = 0
        cycle_s = {True: 0.0, False: 0.0}
        cycles = {True: 0, False: 0}
        """By whether a sample arrived since the last cycle."""
        warmup = 400  # past the start-up grace: contactors closed, estimator running
        next_due = [clock.now] * MODULES  # one agent sends every module of a sample at once
        for k in range(warmup + args.cycles):
            arrived = False
            for m in range(MODULES):
                if clock.now >= next_due[m]:
                    seq[m] += 1
                    msg = telemetry(rng, m, seq[m], clock.now)
                    latest[m] = msg
                    peer.publish(SLAVE_TELEMETRY, msg, module=m)
                    next_due[m] += SAMPLE_S
                    arrived = True
            bus.process()
            agg, stale = core.rt.aggregator, core.supervisor.module_status(clock.now).stale_modules
            measured = k >= warmup
            if measured:  # the snapshot alone, at the loop's pattern, then the cycle
                t0 = cpu_clock()
                agg.snapshot(stale)
                t1 = cpu_clock()
                if reference_snapshot is not None:
                    reference_snapshot(config.topology, latest, stale)
                t2 = cpu_clock()
                snap_s += t1 - t0
                ref_s += t2 - t1
                snaps += 1
            t0 = cpu_clock()
            core.cycle()
            if measured:
                cycle_s[arrived] += cpu_clock() - t0
                cycles[arrived] += 1
            peer.process()
            clock.now += CYCLE_S
        state = core.supervisor.contactor_state
        est = core.rt.estimator
        reads = 20_000
        t0 = cpu_clock()
        for _ in range(reads):
            est.pack_soc_pct  # noqa: B018
        soc_us = (cpu_clock() - t0) / reads * 1e6
    n = args.cycles
    computed = getattr(core.rt.aggregator, "snapshots_computed", None)
    print(
        f"master, 1 system of {MODULES * CELLS} cells ({MODULES} x {CELLS}), telemetry 10 Hz "
        f"per module, a cycle every {1000 * CYCLE_S:.0f} ms; contactors {state}"
    )
    afresh = f"  ({computed} computed afresh in {snaps + warmup + n} calls)" if computed else ""
    print(f"  snapshot      {1e6 * snap_s / snaps:7.1f} µs/call{afresh}")
    if reference_snapshot is not None:
        print(f"  from scratch  {1e6 * ref_s / snaps:7.1f} µs/call (the aggregator before)")
    print(
        f"  cycle         {1e6 * sum(cycle_s.values()) / n:7.1f} µs/call; with a new sample "
        f"{1e6 * cycle_s[True] / max(cycles[True], 1):.1f}, without "
        f"{1e6 * cycle_s[False] / max(cycles[False], 1):.1f}"
    )
    print(f"  pack_soc_pct  {soc_us:7.2f} µs/read")


if __name__ == "__main__":
    main()
