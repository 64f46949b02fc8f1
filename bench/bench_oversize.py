"""Worst case of one message on the master's loop: decode time of the largest accepted payloads,
refusal time of oversize ones (the issue's 900 KB telemetry and 450,000-entry configuration),
and the stall of the master's cycle while they arrive.

Real codec and bus core (in-memory adapter), the real master with its in-process plant, on the
wall clock. Prints figures only: no pass/fail. `--quick` for a short run.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import msgpack  # noqa: E402

from services.master_core.service import PERIOD_S, MasterCore  # noqa: E402
from services.master_core.settings import MasterCoreSettings  # noqa: E402
from services.master_core.stores import Store  # noqa: E402
from services.plant.in_process import in_process_factory  # noqa: E402
from shared import SCHEMA_VERSION  # noqa: E402
from shared.bus import InMemoryBroker, InMemoryBus  # noqa: E402
from shared.bus.core import _Inbound  # noqa: E402
from shared.codec import PayloadError, decode  # noqa: E402
from shared.config import SystemConfig, get_preset  # noqa: E402
from shared.config.limits import (  # noqa: E402
    CELLS_IN_SERIES_MAX,
    OCV_TABLE_POINTS_MAX,
    TEMP_SENSORS_PER_MODULE_MAX,
)
from shared.messages import CellTelemetry, ConfigMessage  # noqa: E402
from shared.topics import CONFIG, PACK_STATE, SLAVE_TELEMETRY, TopicSpec  # noqa: E402

SYSTEM = "bench"
N, T = CELLS_IN_SERIES_MAX, TEMP_SENSORS_PER_MODULE_MAX
ENVELOPE = {"schema_version": SCHEMA_VERSION, "source": "bench", "seq": 1, "ts": 1.0}


def packed(data: dict[str, Any]) -> bytes:
    return bytes(msgpack.packb(data, use_bin_type=True))


def telemetry(module: int = 0, cells: int = N, temps: int = T, **fields: Any) -> dict[str, Any]:
    return {
        **ENVELOPE, "module": module, "mode": "working", "sample_ts": time.time(),
        "cell_mv": [3700] * cells, "cell_flags": [0] * cells, "balancing": [False] * cells,
        "temp_c": [25.0] * temps, "temp_flags": [0] * temps,
    } | fields  # fmt: skip


def largest_config() -> dict[str, Any]:
    """196 modules of one cell, listed in module_cell_counts, and a 101-point OCV table."""
    config = SystemConfig.from_preset("NMC", system_id=SYSTEM, modules=N, cells_per_module=1)
    data = config.model_dump(mode="json")
    data["topology"]["module_cell_counts"] = [1] * N
    nmc = get_preset("NMC")
    soc = [float(i) for i in range(OCV_TABLE_POINTS_MAX)]
    volts = [_interp(s, nmc.ocv_table_soc_pct, nmc.ocv_table_v) for s in soc]
    data["chemistry_overrides"] = {"ocv_table_soc_pct": soc, "ocv_table_v": volts}
    SystemConfig.model_validate(data)  # valid, or the figure would be a refusal's
    return {**ENVELOPE, "config": data}


def invalid_config() -> dict[str, Any]:
    """The largest configuration with every entry of its lists of the wrong type."""
    data = largest_config()
    config = data["config"]
    config["topology"]["module_cell_counts"] = ["x"] * N
    config["chemistry_overrides"] = {
        "ocv_table_soc_pct": ["x"] * OCV_TABLE_POINTS_MAX,
        "ocv_table_v": ["x"] * OCV_TABLE_POINTS_MAX,
    }
    return data


def _interp(x: float, xs: tuple[float, ...], ys: tuple[float, ...]) -> float:
    for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:], strict=False):
        if x0 <= x <= x1:
            return round(y0 + (y1 - y0) * (x - x0) / (x1 - x0), 4)
    raise ValueError(x)


def dispatch_timer(spec: TopicSpec[Any], raw: bytes) -> tuple[Callable[[], None], InMemoryBus]:
    """One message through the bus core as the master's loop handles it (limit, decode)."""
    bus = InMemoryBus(InMemoryBroker(), system=SYSTEM, service="bench", kind="bench")
    bus.subscribe(spec, lambda _d: None)
    topic = spec.topic(SYSTEM, **dict.fromkeys(spec.params, "0"))
    return (lambda: bus._dispatch(_Inbound(topic, raw, False))), bus


def time_ms(fn: Callable[[], None], runs: int) -> tuple[float, float]:
    fn()  # warm-up
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples), max(samples)


def decode_figures(runs: int) -> dict[str, bytes]:
    n_bad = N
    cases: list[tuple[str, TopicSpec[Any], bytes, str]] = [
        ("largest valid telemetry (196 cells, 64 sensors)", SLAVE_TELEMETRY,
         packed(telemetry()), "accepted"),
        ("largest telemetry, every flag invalid", SLAVE_TELEMETRY,
         packed(telemetry(cell_flags=[9] * n_bad)), "refused (1 error)"),
        ("largest valid configuration (196 modules, 101-point OCV)", CONFIG,
         packed(largest_config()), "accepted"),
        ("largest configuration, every list entry invalid", CONFIG,
         packed(invalid_config()), "refused (398 errors)"),
        ("issue: telemetry with 900,000 cell_flags", SLAVE_TELEMETRY,
         packed(telemetry(cells=14, temps=2, cell_flags=[9] * 900_000)), "refused unread"),
        ("issue: configuration with a 450,000-entry list", CONFIG,
         packed({**largest_config(), "config": {**largest_config()["config"], "topology": {
             "modules": 450_000, "cells_per_module": 1,
             "module_cell_counts": [1] * 450_000}}}), "refused unread"),
    ]  # fmt: skip
    print(f"{'payload':58} {'bytes':>8} {'limit':>7} {'median ms':>10} {'max ms':>8}  outcome")
    for name, spec, raw, outcome in cases:
        run, bus = dispatch_timer(spec, raw)
        med, worst = time_ms(run, runs)
        refused = bus.counters["payload_errors"] > 0
        assert refused == outcome.startswith("refused"), (name, dict(bus.counters))
        print(f"{name:58} {len(raw):>8} {spec.byte_limit:>7} {med:>10.3f} {worst:>8.3f}  {outcome}")
    print("without the byte limit (codec alone; the model's length bounds still apply):")
    for name, spec, raw, _ in cases[4:]:
        med, worst = time_ms(_decoder(spec, raw), runs)
        print(f"  {name:56} {len(raw):>8} {'-':>7} {med:>10.3f} {worst:>8.3f}")
    return {name: raw for name, _, raw, _ in cases}


def _decoder(spec: TopicSpec[Any], raw: bytes) -> Callable[[], None]:
    def run() -> None:
        with contextlib.suppress(PayloadError):
            decode(spec.payload, "bench", raw, max_bytes=len(raw))

    return run


class CycleRecorder:
    def __init__(self, core: MasterCore) -> None:
        self.starts: list[float] = []
        inner = core.cycle

        def cycle() -> None:
            self.starts.append(time.monotonic())
            inner()

        core.cycle = cycle  # type: ignore[method-assign]

    def worst_gap_ms(self, since: float) -> float:
        s = [t for t in self.starts if t >= since]
        return max((b - a for a, b in itertools.pairwise(s)), default=0.0) * 1000


def master_stall(phase_s: float, attack_hz: float) -> None:
    config = SystemConfig.from_preset("NMC", system_id=SYSTEM, modules=7, cells_per_module=14)
    broker = InMemoryBroker()
    bus = InMemoryBus(broker, system=SYSTEM, service="master_core", kind="master_core")
    bus.start()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "master.sqlite")
        core = MasterCore(
            MasterCoreSettings(load_profile="constant:0"), bus, store,
            in_process_factory(bus, load_profile="constant:0"),
        )  # fmt: skip
        rec = CycleRecorder(core)
        ui = InMemoryBus(broker, system=SYSTEM, service="ui", kind="bench")
        ui.start()
        states: list[float] = []
        ui.subscribe(PACK_STATE, lambda d: states.append(d.received_ts))
        ui.publish(CONFIG, ConfigMessage(config=config))
        stop = threading.Event()
        master = threading.Thread(target=core.run, args=(stop.is_set,), daemon=True)
        master.start()

        def feed() -> None:  # the slaves: 7 modules at 10 Hz
            slaves = InMemoryBus(broker, system=SYSTEM, service="slaves", kind="bench")
            slaves.start()
            while not stop.is_set():
                for m in range(7):
                    msg = CellTelemetry.model_validate(telemetry(m, 14, 2, seq=None, source=""))
                    slaves.publish(SLAVE_TELEMETRY, msg, module=m)
                stop.wait(0.1)

        def pump() -> None:  # a subscriber of pack/state, timing each arrival
            while not stop.is_set():
                ui.process(timeout_s=0.05)

        threading.Thread(target=feed, daemon=True).start()
        threading.Thread(target=pump, daemon=True).start()
        time.sleep(2.0)  # configuration applied, loop settled
        attacks = {
            "900 KB telemetry": (
                SLAVE_TELEMETRY.topic(SYSTEM, module=0),
                packed(telemetry(cells=14, temps=2, cell_flags=[9] * 900_000)),
            ),
            "450,000-entry configuration": (
                CONFIG.topic(SYSTEM),
                packed({**ENVELOPE, "config": {"topology": {"module_cell_counts": [1] * 450_000}}}),
            ),
            # last: once applied, the 7-module telemetry no longer matches (and is refused)
            "largest valid configuration (applied)": (
                CONFIG.topic(SYSTEM),
                packed(largest_config()),
            ),
        }
        print(f"\nmaster cycle (grid {PERIOD_S * 1000:.0f} ms), worst gap between cycle starts:")
        t0 = time.monotonic()
        time.sleep(phase_s)
        print(f"  {'no attack':40} {rec.worst_gap_ms(t0):8.1f} ms")
        for name, (topic, raw) in attacks.items():
            t0 = time.monotonic()
            n = 0
            while time.monotonic() - t0 < phase_s:
                broker.route(topic, raw, False)
                n += 1
                time.sleep(1.0 / attack_hz)
            print(f"  {name + f' x{n}':40} {rec.worst_gap_ms(t0):8.1f} ms")
        time.sleep(0.5)
        stop.set()
        master.join(5)
        store.close()
        oversize = {k: v for k, v in bus.counters.items() if k.startswith("payload_oversize")}
        print(f"  master counters: {oversize}, overruns {bus.counters['overruns']}")
        gaps = [b - a for a, b in itertools.pairwise(states)]
        print(
            f"  pack/state: {len(states)} received, worst gap {max(gaps, default=0) * 1000:.0f} ms"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the refusals' warnings are counted instead
    decode_figures(runs=5 if args.quick else 30)
    master_stall(phase_s=2.0 if args.quick else 5.0, attack_hz=20.0)


if __name__ == "__main__":
    main()
